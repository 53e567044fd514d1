/**
 * The load benchmark: the service's production build under autocannon, next
 * to two ceilings measured in the same run on the same machine.
 *
 *   npm run bench                       # full: scenarios + algorithms + enumeration (about 14 min)
 *   npm run bench -- --quick            # scenarios only, 1 × 3 s each (about 2 min)
 *   npm run bench -- --only=verify,me --runs=5 --duration=20
 *   npm run bench -- --algorithms       # RS256, ES256, EdDSA, HS256: verify, verify-cold, me, refresh
 *   BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test BENCH_REDIS_URL=redis://127.0.0.1:6379 npm run bench -- --scale-out
 *   npm run bench -- --profile          # CPU profiles of verify, verify-cold, me and refresh, summarised
 *   npm run bench -- --enumeration      # bench/enumeration.ts alone
 *
 * `npm run bench` builds first (npm run build), then runs this file. Modes:
 * --scenarios, --algorithms, --scale-out, --enumeration, --profile; with none,
 * scenarios, algorithms and enumeration (what needs no PostgreSQL); --quick
 * alone means --scenarios. Options: --duration=<s> (10), --runs=<n> (3, the
 * median is reported), --warmup=<s> (3), --connections=<n> (20),
 * --only=<scenario,…> (signup, login, refresh, me, verify, verify-cold,
 * mixed), --quick (1 run of 3 s, 1 s warm-up), --database-url / --redis-url
 * (default BENCH_DATABASE_URL / BENCH_REDIS_URL: without them SQLite and no
 * Redis).
 *
 * What it measures, per scenario: req/s, p50 and p99 latency, errors (any
 * non-2xx, connection error or timeout) and the service's peak RSS; and in
 * the same run the framework ceiling (a bare Fastify route started the same
 * way, bench/bare-server.mjs) and the hash ceiling (argon2id verifies a
 * second with the service's parameters), with each scenario's ratio to its
 * ceiling and the issue's targets. See bench/README.md.
 *
 * What bounds it: each load run stops after its duration (autocannon, with a
 * backstop 15 s later) or 200,000 requests a second of duration; the whole
 * run has a time budget (1.5 × its estimate + 2 min) after which it stops;
 * only 127.0.0.0/8, localhost or ::1 are targets (a non-loopback database
 * or Redis URL is refused too). Every child process is killed and the
 * throwaway database, Redis keys and temporary files are removed on any way
 * out, Ctrl-C included. Results: bench/results/<time>.json and .md, and
 * latest.json / latest.md (git-ignored); service logs in
 * bench/results/logs/<time>/.
 */
import { existsSync, readdirSync, writeFileSync } from 'node:fs'
import { loadavg } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { summarise, summaryMarkdown, type ProfileSummary } from './cpuprofile.js'
import { openBacking, type Backing } from './lib/backing.js'
import { enumerationTable, runEnumeration, type EnumerationSummary } from './lib/enumeration.js'
import { cleanup, installExitHandlers } from './lib/guard.js'
import { hashCeiling, type HashCeiling } from './lib/hash-ceiling.js'
import { measure, type LoadOptions, type Measured } from './lib/load.js'
import { cpuOf, fixed, machine, machineLine, markdownTable, percent, RESULTS_DIR, row, scenarioTable, writeResults, type Ceilings, type Machine, type Row } from './lib/report.js'
import { scaleOut, type ScaleOutResult } from './lib/scale-out.js'
import { bareConnections, makeUsers, MIX, scenarios, SCENARIOS, type ScenarioName } from './lib/scenarios.js'
import { ALGORITHMS, BENCH_ENV, passedThrough, productionNodeArgs, ROOT, startBare, startService, type Algorithm, type Running } from './lib/service.js'

const MODES = ['scenarios', 'algorithms', 'scale-out', 'enumeration', 'profile'] as const
type Mode = typeof MODES[number]
/** The modes that put the service under load (the footer describes how it ran). */
const LOADING_MODES: Mode[] = ['scenarios', 'algorithms', 'scale-out', 'profile']
/** Light scenarios first: the argon2 ones raise the RSS the later ones start from. */
const ORDER: ScenarioName[] = ['verify', 'verify-cold', 'me', 'refresh', 'login', 'signup', 'mixed']
const PER_ALGORITHM: ScenarioName[] = ['verify', 'verify-cold', 'me', 'refresh']
const PROFILED: ScenarioName[] = ['verify', 'verify-cold', 'me', 'refresh']

interface Options {
  load: LoadOptions
  only: ScenarioName[] | null
  modes: Set<Mode>
  quick: boolean
  databaseUrl?: string
  redisUrl?: string
}

function parseOptions (): Options {
  const { values } = parseArgs({
    options: {
      duration: { type: 'string' },
      runs: { type: 'string' },
      warmup: { type: 'string' },
      connections: { type: 'string' },
      only: { type: 'string' },
      quick: { type: 'boolean', default: false },
      'database-url': { type: 'string', default: process.env.BENCH_DATABASE_URL || undefined },
      'redis-url': { type: 'string', default: process.env.BENCH_REDIS_URL || undefined },
      help: { type: 'boolean', default: false },
      scenarios: { type: 'boolean', default: false },
      algorithms: { type: 'boolean', default: false },
      'scale-out': { type: 'boolean', default: false },
      enumeration: { type: 'boolean', default: false },
      profile: { type: 'boolean', default: false }
    }
  })
  if (values.help) {
    console.log('usage: npm run bench -- [--quick] [--scenarios] [--algorithms] [--scale-out] [--enumeration] [--profile]\n' +
      '  [--duration=10] [--runs=3] [--warmup=3] [--connections=20] [--only=signup,login,refresh,me,verify,verify-cold,mixed]\n' +
      '  [--database-url=postgres://…] [--redis-url=redis://…]   (see bench/README.md)')
    process.exit(0)
  }
  const number = (name: string, value: string | undefined, fallback: number, min: number, max: number) => {
    const n = value === undefined ? fallback : Number(value)
    if (!Number.isFinite(n) || n < min || n > max) throw new Error(`--${name} must be a number from ${min} to ${max}`)
    return n
  }
  const quick = values.quick
  const only = values.only === undefined ? null : values.only.split(',').map((s) => s.trim()) as ScenarioName[]
  for (const name of only ?? []) if (!SCENARIOS.includes(name)) throw new Error(`--only: unknown scenario ${name} (known: ${SCENARIOS.join(', ')})`)
  const modes = new Set(MODES.filter((m) => values[m]))
  if (modes.size === 0) for (const m of quick ? ['scenarios'] as const : ['scenarios', 'algorithms', 'enumeration'] as const) modes.add(m)
  return {
    load: {
      connections: Math.round(number('connections', values.connections, 20, 1, 1000)),
      duration: number('duration', values.duration, quick ? 3 : 10, 1, 300),
      runs: Math.round(number('runs', values.runs, quick ? 1 : 3, 1, 20)),
      warmup: number('warmup', values.warmup, quick ? 1 : 3, 0, 60)
    },
    only,
    modes,
    quick,
    databaseUrl: values['database-url'],
    redisUrl: values['redis-url']
  }
}

const selected = (opts: Options, from: ScenarioName[]) => from.filter((s) => opts.only === null || opts.only.includes(s))

/** Seconds the plan should take, for the time budget. */
function estimateSeconds (opts: Options): number {
  const { warmup, runs, duration } = opts.load
  const phase = warmup + runs * duration + 10
  let s = 30
  if (opts.modes.has('scenarios')) s += (selected(opts, ORDER).length + 2) * phase
  if (opts.modes.has('algorithms')) s += ALGORITHMS.length * (selected(opts, PER_ALGORITHM).length * phase + 10)
  if (opts.modes.has('scale-out')) s += 4 * phase + 4 * 11 + 60
  if (opts.modes.has('enumeration')) s += 90
  if (opts.modes.has('profile')) s += PROFILED.length * (warmup + duration + 30)
  return s
}

const progress = (line: string) => console.error(`[${new Date().toISOString().slice(11, 19)}] ${line}`)

interface Context {
  opts: Options
  backing: Backing
  logDir: string
  stamp: string
  results: Record<string, unknown>
  report: string[]
}

/** Prints a section of the report now, and keeps it for the .md file. */
function section (ctx: Context, title: string, ...body: string[]) {
  const text = [`## ${title}`, '', ...body, ''].join('\n')
  console.log(text)
  ctx.report.push(text)
}

/** A fresh service (fresh database), its users made, `fn` run against it, then stopped whatever happens. */
async function withService<T> (ctx: Context, name: string, algorithm: Algorithm, fn: (service: Running, users: string[]) => Promise<T>, profileDir?: string): Promise<T> {
  const store = await ctx.backing.fresh()
  progress(`starting ${name} (${algorithm}, ${ctx.backing.label})`)
  const service = await startService({ name, store: store.env, algorithm, logDir: ctx.logDir, profileDir })
  try {
    const users = await makeUsers(service.base, ctx.opts.load.connections)
    return await fn(service, users)
  } finally {
    await service.stop()
  }
}

const playOn = (service: Running, users: string[], name: ScenarioName, load: LoadOptions) =>
  measure([{ service, connections: load.connections, make: (n) => scenarios[name].connections(service.base, users.slice(0, n)) }], load)

async function bareCeiling (ctx: Context): Promise<Measured> {
  progress('ceiling: bare Fastify route')
  const bare = await startBare(ctx.logDir)
  try {
    return await measure([{ service: bare, connections: ctx.opts.load.connections, make: async (n) => bareConnections(n) }], ctx.opts.load)
  } finally {
    await bare.stop()
  }
}

async function ceilingsFor (ctx: Context, needBare: boolean, needHash: boolean): Promise<Ceilings & { hashDetail?: HashCeiling }> {
  const bare = needBare ? await bareCeiling(ctx) : undefined
  let hashDetail: HashCeiling | undefined
  if (needHash) {
    progress('ceiling: argon2id verifies a second')
    hashDetail = await hashCeiling(ctx.opts.load)
  }
  const lines: string[] = []
  if (bare) lines.push(`- Framework: bare Fastify 5 route (bench/bare-server.mjs), ${fixed(bare.rps)} req/s, p50 ${fixed(bare.p50, 2)} ms, p99 ${fixed(bare.p99, 2)} ms, ${bare.errors} errors, peak RSS ${fixed(Math.max(...Object.values(bare.peakRssMb)))} MB, ${fixed(cpuOf(bare), 3)} CPU ms/req.`)
  if (hashDetail) {
    const p = hashDetail.params
    lines.push(`- Hash: argon2id verify m=${p.memoryKib},t=${p.iterations},p=${p.parallelism}, ${hashDetail.concurrency} at a time: ${fixed(hashDetail.perSecond, 1)} verifies/s (${fixed(1000 / hashDetail.perSecond * hashDetail.concurrency, 1)} ms each with ${hashDetail.concurrency} in flight), ${fixed(hashDetail.cpuMsPerVerify, 1)} CPU ms each.`)
  }
  if (lines.length > 0) section(ctx, 'Ceilings', ...lines)
  return { bare, hash: hashDetail?.perSecond, hashCpuMs: hashDetail?.cpuMsPerVerify, hashDetail }
}

async function runScenarios (ctx: Context, ceilings: Ceilings): Promise<Record<string, Measured>> {
  const names = selected(ctx.opts, ORDER)
  const measured: Record<string, Measured> = {}
  let lifetimePeakMb = 0
  await withService(ctx, 'service', 'RS256', async (service, users) => {
    for (const name of names) {
      progress(`scenario ${name}: ${scenarios[name].what}`)
      measured[name] = await playOn(service, users, name, ctx.opts.load)
    }
    lifetimePeakMb = service.lifetimePeakRss() / (1024 * 1024)
  })
  const rows: Row[] = names.map((name) => row(name, measured[name], ceilings))
  const { connections, runs, duration, warmup } = ctx.opts.load
  section(ctx, `Scenarios (RS256, ${ctx.backing.label})`,
    scenarioTable(rows), '',
    `${connections} connections; medians of ${runs} × ${duration} s after a ${warmup} s warm-up; errors summed over the timed runs; peak RSS of the service under the scenario's load (warm-up and timed runs; not the untimed preparation, whose sign-ins are password hashes); ` +
    'CPU ms/req: the service\'s CPU time (all threads) per response; ratio by CPU: the ceiling\'s CPU per request over the scenario\'s, less swayed (not unswayed) by other work on the machine. ' +
    `Every row also has to show 0 errors and a peak RSS under 150 MB. Mixed: ${Object.entries(MIX).map(([k, v]) => `${k} ${v} %`).join(', ')}.`, '',
    `The service's peak RSS over the whole run, start and preparation included: ${fixed(lifetimePeakMb)} MB.`)
  ctx.results.servicePeakRssMb = lifetimePeakMb
  ctx.results.scenarios = Object.fromEntries(names.map((name, i) => [name, { what: scenarios[name].what, ...measured[name], ratio: rows[i].ratio, target: rows[i].target, missed: rows[i].missed }]))
  return measured
}

async function runAlgorithms (ctx: Context, ceilings: Ceilings, rs256?: Record<string, Measured>) {
  const names = selected(ctx.opts, PER_ALGORITHM)
  if (names.length === 0) return
  const byAlgorithm: Partial<Record<Algorithm, Record<string, Measured>>> = {}
  for (const algorithm of ALGORITHMS) {
    // RS256 is the default: the scenarios of this same run already measured it.
    if (algorithm === 'RS256' && rs256 && names.every((n) => rs256[n])) {
      byAlgorithm.RS256 = Object.fromEntries(names.map((n) => [n, rs256[n]]))
      continue
    }
    byAlgorithm[algorithm] = await withService(ctx, `service-${algorithm}`, algorithm, async (service, users) => {
      const out: Record<string, Measured> = {}
      for (const name of names) {
        progress(`${algorithm}: ${name}`)
        out[name] = await playOn(service, users, name, ctx.opts.load)
      }
      return out
    })
  }
  const rows = ALGORITHMS.flatMap((algorithm) => names.map((name) => {
    const m = byAlgorithm[algorithm]![name]
    const r = row(name, m, ceilings)
    return [algorithm, name, fixed(m.rps), fixed(m.p50, 2), fixed(m.p99, 2), fixed(r.cpuMs, 3), r.ratio ? percent(r.ratio.value) : '-', r.ratio ? percent(r.ratio.byCpu) : '-', m.errors, fixed(r.rssMb)]
  }))
  const head = ['algorithm', 'scenario', 'req/s', 'p50 ms', 'p99 ms', 'CPU ms/req', 'of bare route', 'of bare route by CPU', 'errors', 'peak RSS MB']
  section(ctx, `Signing algorithms (${ctx.backing.label})`, markdownTable(head, rows, ['---', '---', ...head.slice(2).map(() => '---:')]),
    '', `Each algorithm on a fresh service and database; ${ctx.opts.load.connections} connections, medians of ${ctx.opts.load.runs} × ${ctx.opts.load.duration} s; HS256 with a generated JWT_SECRET.`)
  ctx.results.algorithms = byAlgorithm
}

async function runScaleOut (ctx: Context) {
  const r: ScaleOutResult = await scaleOut(ctx.backing, ctx.opts.load, 'RS256', ctx.logDir, progress)
  const peaks = (m: Measured) => Object.values(m.peakRssMb).map((x) => fixed(x)).join(' / ')
  const throughput = markdownTable(
    ['scenario', 'one instance req/s', 'A + B req/s', 'A req/s', 'B req/s', 'A + B p99 ms', 'errors', 'peak RSS MB (A / B)'],
    (['verify', 'me'] as const).map((n) => [n, fixed(r.single[n].rps), fixed(r.pair[n].rps), fixed(r.pair[n].perTarget?.['scale-a']), fixed(r.pair[n].perTarget?.['scale-b']), fixed(r.pair[n].p99, 2), r.single[n].errors + r.pair[n].errors, peaks(r.pair[n])]))
  const trips = markdownTable(
    ['scenario', 'requests', 'PostgreSQL transactions', 'per request', 'Redis commands', 'per request', 'Redis idle rate /s'],
    [...(['verify', 'me'] as const).map((n) => [n, r.roundTrips[n]] as const), ['verify, rate limits on', r.rateLimitedVerify] as const].map(([n, t]) => [n, fixed(t.requests), fixed(t.dbTransactions), fixed(t.dbPerRequest, 4), fixed(t.redisCommands), fixed(t.redisPerRequest, 4), fixed(t.redisIdlePerSecond, 1)]))
  const worst = Math.max(...r.revocation.trials.map((t) => t.msUntil401 ?? Infinity))
  section(ctx, `Scale-out: two instances on one ${ctx.backing.label}`, throughput, '',
    'Round trips, counted over the pair\'s timed runs (PostgreSQL: xact_commit + xact_rollback of the throwaway database; Redis: total_commands_processed of the whole server, which other clients may add to; both read after 11 s of quiet):', '',
    trips, '',
    `- Revocation: ${r.revocation.trials.filter((t) => t.firstStatus === 401).length}/${r.revocation.trials.length} trials answered 401 on B at the first request after logout on A (${r.revocation.trials.map((t) => `${t.firstStatus} ${t.firstCode ?? ''}`.trim()).join(', ')}); the slowest of these answers took ${fixed(worst, 1)} ms. ${r.revocation.holds ? 'Holds.' : '**Does not hold.**'}`,
    `- Per-account login throttle, wrong password alternating A, B: ${r.loginThrottle.statuses.join(', ')}. ${r.loginThrottle.holds ? 'Holds (5 failures, then 429 on either).' : '**Does not hold.**'}`,
    `- Per-address login limit (RATE_LIMIT_LOGIN_PER_MINUTE=${r.loginRateLimit.limitPerMinute}), right password alternating A, B: ${r.loginRateLimit.statuses.join(', ')}. ${r.loginRateLimit.holds ? `Holds (${r.loginRateLimit.limitPerMinute} in all, then 429 on either).` : '**Does not hold.**'}`)
  ctx.results.scaleOut = r
}

async function runProfiles (ctx: Context) {
  const summaries: Record<string, ProfileSummary> = {}
  const lines: string[] = []
  for (const name of selected(ctx.opts, PROFILED)) {
    const dir = join(RESULTS_DIR, 'profiles', ctx.stamp, name)
    const m = await withService(ctx, `profile-${name}`, 'RS256', async (service, users) => {
      progress(`profiling ${name}`)
      return await playOn(service, users, name, { ...ctx.opts.load, runs: 1 })
    }, dir)
    const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'))
    if (!file) throw new Error(`no .cpuprofile in ${dir}`)
    summaries[name] = summarise(join(dir, file), 15, m.window)
    lines.push(`### ${name} (${fixed(m.rps)} req/s under the profiler)`, '', `${join(dir, file)}`, '', summaryMarkdown(summaries[name]), '')
  }
  section(ctx, 'CPU profiles of the service (node --cpu-prof, self time during the timed run)', ...lines)
  ctx.results.profiles = summaries
}

async function runEnumerationMode (ctx: Context) {
  progress('enumeration timing: bench/enumeration.ts (about 60 s)')
  const e: EnumerationSummary = await runEnumeration()
  section(ctx, 'Enumeration timing (bench/enumeration.ts)', enumerationTable(e), '',
    `Median of known − unknown address, ${e.complete ? 'complete' : '**incomplete**'} (exit ${e.exitCode}); details in bench/results/enumeration.json.`)
  ctx.results.enumeration = e
}

async function main () {
  const opts = parseOptions()
  const budget = (estimateSeconds(opts) * 1.5 + 120) * 1000
  installExitHandlers(budget)
  if (!existsSync(join(ROOT, 'dist', 'server.js'))) throw new Error('dist/server.js is missing: run `npm run build` (npm run bench does)')
  const stamp = new Date().toISOString().replace(/[:.]/g, '-')
  const m = machine()
  const backing = await openBacking({ database: opts.databaseUrl, redis: opts.redisUrl })
  const ctx: Context = { opts, backing, logDir: join(RESULTS_DIR, 'logs', stamp), stamp, report: [], results: {} }
  Object.assign(ctx.results, { date: new Date().toISOString(), machine: m, options: { ...opts.load, only: opts.only, modes: [...opts.modes] }, backing: backing.label, service: { nodeArgs: productionNodeArgs(), ...BENCH_ENV, ...passedThrough() } })
  progress(`bench: ${[...opts.modes].join(', ')}; ${machineLine(m)}; budget ${Math.round(budget / 60_000)} min`)

  try {
    await runModes(ctx)
  } catch (err) {
    // What was measured before the error is still written.
    ctx.results.error = (err as Error).message
    throw err
  } finally {
    m.loadavgAtEnd = loadavg().map((x) => Math.round(x * 100) / 100)
    finish(ctx, m)
  }
}

async function runModes (ctx: Context) {
  const { opts } = ctx
  if (opts.modes.has('scenarios') || opts.modes.has('algorithms')) {
    const main = opts.modes.has('scenarios') ? selected(opts, ORDER) : []
    const algorithms = opts.modes.has('algorithms') ? selected(opts, PER_ALGORITHM) : []
    const needs = (names: ScenarioName[]) => [...main, ...algorithms].some((n) => names.includes(n))
    const ceilings = await ceilingsFor(ctx, needs(['verify', 'verify-cold', 'me']), needs(['login', 'signup']))
    ctx.results.ceilings = { bare: ceilings.bare, hash: ceilings.hashDetail }
    const rs256 = main.length > 0 ? await runScenarios(ctx, ceilings) : undefined
    if (algorithms.length > 0) await runAlgorithms(ctx, ceilings, rs256)
  }
  if (opts.modes.has('scale-out')) await runScaleOut(ctx)
  if (opts.modes.has('profile')) await runProfiles(ctx)
  if (opts.modes.has('enumeration')) await runEnumerationMode(ctx)
}

/** The footer, then the results files. */
function finish (ctx: Context, m: Machine) {
  const loaded = LOADING_MODES.some((mode) => ctx.opts.modes.has(mode))
  const settings = Object.entries({ ...BENCH_ENV, ...passedThrough() }).map(([k, v]) => `${k}=${v}`).join(', ')
  const footer = `Machine: ${machineLine(m)}.${loaded ? ` Service: production build (node ${[...productionNodeArgs(), 'dist/server.js'].join(' ')}), ${settings}.` : ''}`
  console.log(footer)
  ctx.report.push(footer)
  const file = writeResults(ctx.stamp, ctx.results)
  writeFileSync(file.replace(/\.json$/, '.md'), ctx.report.join('\n') + '\n')
  writeFileSync(join(RESULTS_DIR, 'latest.md'), ctx.report.join('\n') + '\n')
  progress(`results: ${file} (and .md, latest.json, latest.md)`)
}

try {
  await main()
} catch (err) {
  // The message says what went wrong (a service's failure comes with its log's tail); BENCH_DEBUG=1 adds the stack.
  console.error(err instanceof Error ? (process.env.BENCH_DEBUG ? err.stack : `bench: ${err.message}`) : err)
  process.exitCode = 1
} finally {
  await cleanup()
}
// Anything still holding the event loop (a socket, a timer) must not keep a finished run alive.
process.exit()
