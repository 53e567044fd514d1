/**
 * Load runs with autocannon: a warm-up, then `runs` timed runs of
 * `duration` seconds, each bounded in time (duration + 15 s at most) and in
 * requests (200,000 a second of duration at most). Latencies are taken from
 * every response at 0.01 ms resolution (autocannon's own histogram has 1 ms
 * buckets); req/s is responses over the run's duration. Anything but a 2xx,
 * a connection error or a timeout is an error.
 */
import autocannon from 'autocannon'
import { assertLoopback } from './guard.js'
import { median } from './stats.js'
import type { Connection } from './scenarios.js'
import type { Running } from './service.js'

export interface LoadOptions {
  connections: number
  /** Seconds per timed run. */
  duration: number
  runs: number
  /** Seconds of the untimed warm-up run (0: none). */
  warmup: number
}

export interface RunStats {
  rps: number
  p50: number
  p99: number
  responses: number
  errors: number
  statusCodes: Record<string, number>
  seconds: number
}

export interface Measured {
  /** Medians over the timed runs. */
  rps: number
  p50: number
  p99: number
  /** Summed over the timed runs. */
  errors: number
  /** In the warm-up, which is not counted otherwise. */
  warmupErrors: number
  /** Highest over warm-up and timed runs, per process, in MB. */
  peakRssMb: Record<string, number>
  /**
   * CPU time (user + system, all threads) each process spent per response
   * over the timed runs, in ms: less sensitive than req/s to other work on a
   * busy machine, as long as the process gets a core at all.
   */
  cpuMsPerRequest: Record<string, number>
  runs: RunStats[]
  /** With several targets: each one's median req/s. */
  perTarget?: Record<string, number>
  /** When the timed runs ran, in µs of the monotonic clock (V8's CPU profiles use the same). */
  window: { fromUs: number, toUs: number }
}

/** A target of a load run: a running process and, made afresh before each run, its connections' requests. */
export interface Target {
  service: Running
  connections: number
  make: (connections: number) => Promise<Connection[]>
}

const MAX_RPS = 200_000
const MB = 1024 * 1024

/** A growable list of latencies in ms. */
class Samples {
  private data = new Float64Array(1 << 16)
  length = 0
  push (x: number) {
    if (this.length === this.data.length) {
      const bigger = new Float64Array(this.data.length * 2)
      bigger.set(this.data)
      this.data = bigger
    }
    this.data[this.length++] = x
  }

  sorted (): Float64Array { return this.data.slice(0, this.length).sort() }
}

/** Nearest-rank percentile of sorted values. */
const percentile = (sorted: Float64Array, p: number) => (sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))])

const monotonicUs = () => Number(process.hrtime.bigint() / 1000n)

/** One autocannon run against one process; latencies go into `samples`. */
async function blast (target: Running, connections: Connection[], seconds: number, samples: Samples): Promise<autocannon.Result> {
  assertLoopback(target.base, 'load')
  let next = 0
  const options: autocannon.Options = {
    url: target.base.origin,
    connections: connections.length,
    duration: seconds,
    maxOverallRequests: Math.max(connections.length, Math.ceil(seconds * MAX_RPS)),
    timeout: 10,
    // Each connection plays its own list, with its own state.
    setupClient: (client) => client.setRequests(connections[next++ % connections.length])
  }
  return await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon(options, (err: unknown, result: autocannon.Result) => (err ? reject(err) : resolve(result)))
    instance.on('response', (_client, _status, _bytes, ms) => samples.push(ms))
    // autocannon stops by itself at the duration; this is the backstop.
    const backstop = setTimeout(() => instance.stop(), (seconds + 15) * 1000)
    instance.on('done', () => clearTimeout(backstop))
  })
}

/** One run against every target at once (the scale-out plays two processes together). */
async function runOnce (targets: Target[], seconds: number): Promise<{ combined: RunStats, each: RunStats[], cpuMs: number[], peakRss: number[], fromUs: number, toUs: number }> {
  // Untimed: users' sessions and whatever else the connections need.
  const lists = await Promise.all(targets.map((t) => t.make(t.connections)))
  // The peak is the load's, not the preparation's: its sign-ins are password hashes.
  for (const t of targets) t.service.resetPeak()
  const all = new Samples()
  const eachSamples = targets.map(() => new Samples())
  const cpu0 = targets.map((t) => t.service.cpuMs())
  const fromUs = monotonicUs()
  const results = await Promise.all(targets.map((t, i) => blast(t.service, lists[i], seconds, eachSamples[i])))
  const toUs = monotonicUs()
  const cpuMs = targets.map((t, i) => t.service.cpuMs() - cpu0[i])
  const peakRss = targets.map((t) => t.service.peakRss())
  for (const s of eachSamples) for (const x of s.sorted()) all.push(x)
  const each = results.map((r, i) => stats([r], eachSamples[i]))
  return { combined: stats(results, all), each, cpuMs, peakRss, fromUs, toUs }
}

function stats (results: autocannon.Result[], samples: Samples): RunStats {
  const sorted = samples.sorted()
  const statusCodes: Record<string, number> = {}
  let errors = 0
  for (const r of results) {
    for (const [code, { count }] of Object.entries(r.statusCodeStats ?? {})) statusCodes[code] = (statusCodes[code] ?? 0) + Number(count ?? 0)
    errors += r.non2xx + r.errors + r.mismatches
    if (r.errors > 0) statusCodes.connection_errors = (statusCodes.connection_errors ?? 0) + r.errors
    if (r.timeouts > 0) statusCodes.timeouts = (statusCodes.timeouts ?? 0) + r.timeouts
  }
  const seconds = Math.max(...results.map((r) => r.duration))
  return {
    // Responses over the run's length, all targets together.
    rps: results.reduce((s, r) => s + r['1xx'] + r['2xx'] + r['3xx'] + r['4xx'] + r['5xx'], 0) / seconds,
    p50: percentile(sorted, 0.5),
    p99: percentile(sorted, 0.99),
    responses: sorted.length,
    errors,
    statusCodes,
    seconds
  }
}

/** An untimed run of `seconds` (JIT, caches, connection pools); returns its errors. */
export async function warmUp (targets: Target[], seconds: number): Promise<number> {
  return seconds > 0 ? (await runOnce(targets, seconds)).combined.errors : 0
}

/** Warm-up, then the timed runs; medians of req/s, p50 and p99, errors summed, peak RSS of each process (under load, warm-up included). */
export async function measure (targets: Target[], opts: LoadOptions): Promise<Measured> {
  const peaks = targets.map(() => 0)
  const notePeaks = (run: { peakRss: number[] }) => run.peakRss.forEach((bytes, j) => { peaks[j] = Math.max(peaks[j], bytes) })
  // Untimed (JIT, caches, connection pools).
  const warmup = opts.warmup > 0 ? await runOnce(targets, opts.warmup) : null
  if (warmup) notePeaks(warmup)
  const warmupErrors = warmup?.combined.errors ?? 0
  const runs: RunStats[] = []
  const each: RunStats[][] = []
  const window = { fromUs: Infinity, toUs: 0 }
  const cpuMs = targets.map(() => 0)
  for (let i = 0; i < opts.runs; i++) {
    const run = await runOnce(targets, opts.duration)
    notePeaks(run)
    run.cpuMs.forEach((ms, j) => { cpuMs[j] += ms })
    runs.push(run.combined)
    each.push(run.each)
    window.fromUs = Math.min(window.fromUs, run.fromUs)
    window.toUs = run.toUs
  }
  const cpuMsPerRequest = Object.fromEntries(targets.map((t, j) => [t.service.name, cpuMs[j] / each.reduce((s, e) => s + e[j].responses, 0)]))
  const peakRssMb = Object.fromEntries(targets.map((t, j) => [t.service.name, peaks[j] / MB]))
  return {
    rps: median(runs.map((r) => r.rps)),
    p50: median(runs.map((r) => r.p50)),
    p99: median(runs.map((r) => r.p99)),
    errors: runs.reduce((s, r) => s + r.errors, 0),
    warmupErrors,
    peakRssMb,
    cpuMsPerRequest,
    runs,
    window,
    ...(targets.length > 1 && { perTarget: Object.fromEntries(targets.map((t, i) => [t.service.name, median(each.map((e) => e[i].rps))])) })
  }
}
