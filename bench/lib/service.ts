/**
 * Starting and stopping what is benchmarked, each as its own `node` process
 * on 127.0.0.1 and a free port: the service's production build
 * (dist/server.js) and the bare Fastify route (bench/bare-server.mjs). Their
 * output goes to a log file; their resident memory is watched.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdirSync, openSync, closeSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { assertLoopback, track } from './guard.js'

export const HOST = '127.0.0.1'
export const ROOT = join(import.meta.dirname, '..', '..')
const READY_TIMEOUT_MS = 60_000
const STOP_TIMEOUT_MS = 15_000

export const ALGORITHMS = ['RS256', 'ES256', 'EdDSA', 'HS256'] as const
export type Algorithm = typeof ALGORITHMS[number]

/** Service settings a caller may pass through from its own environment (see bench/README.md). */
const PASSED_THROUGH = /^(ARGON2_|HASH_|UV_THREADPOOL_SIZE$|ACCESS_TOKEN_TTL_SECONDS$)/

export interface Running {
  name: string
  base: URL
  pid: number
  logFile: string
  /** Peak resident memory since the last `resetPeak`, in bytes. */
  peakRss: () => number
  resetPeak: () => void
  /** Peak resident memory since the start, resets or not, in bytes. */
  lifetimePeakRss: () => number
  /** CPU time the process has used so far (user + system, every thread), in ms. */
  cpuMs: () => number
  /** SIGTERM, then SIGKILL after 15 s; resolves once the process is gone. */
  stop: () => Promise<void>
}

/** Clock ticks a second of /proc/<pid>/stat's times (USER_HZ: 100 on Linux). */
const TICKS_PER_SECOND = 100

/** utime + stime of /proc/<pid>/stat (fields 14 and 15, after the parenthesised name), in ms. */
function cpuMsOf (pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / TICKS_PER_SECOND
  } catch {
    return NaN
  }
}

/** A port nobody listens on right now (the child binds it a moment later). */
async function freePort (): Promise<number> {
  const server = createServer().listen(0, HOST)
  await once(server, 'listening')
  const { port } = server.address() as { port: number }
  server.close()
  await once(server, 'close')
  return port
}

const statusField = (pid: number, field: string): number => {
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return match ? Number(match[1]) * 1024 : 0
}

/**
 * Peak RSS of a process: the kernel's own high-water mark (VmHWM), which
 * `resetPeak` sets back to the current RSS by writing 5 to
 * /proc/<pid>/clear_refs; where that is not allowed, the highest of samples
 * of VmRSS taken every 50 ms.
 */
function rssWatch (pid: number) {
  let sampled = 0
  let exact = false
  let lifetime = 0
  const sample = () => { try { sampled = Math.max(sampled, statusField(pid, 'VmRSS')) } catch { /* gone */ } }
  const timer = setInterval(sample, 50)
  timer.unref()
  return {
    resetPeak () {
      lifetime = Math.max(lifetime, this.peakRss())
      sampled = 0
      try { writeFileSync(`/proc/${pid}/clear_refs`, '5'); exact = true } catch { exact = false }
      sample()
    },
    peakRss () {
      sample()
      let hwm = 0
      try { hwm = statusField(pid, 'VmHWM') } catch { /* gone */ }
      return exact ? Math.max(hwm, sampled) : sampled
    },
    lifetimePeakRss () { return Math.max(lifetime, this.peakRss()) },
    close: () => clearInterval(timer)
  }
}

async function waitReady (child: ChildProcess, url: URL, logFile: string): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`${url.host} exited (${child.exitCode ?? child.signalCode}) before it was ready; see ${logFile}:\n${tail(logFile)}`)
    }
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2000) })
      await res.arrayBuffer()
      if (res.ok) return
    } catch { /* not listening yet */ }
    await sleep(100)
  }
  throw new Error(`${url.host} was not ready within ${READY_TIMEOUT_MS / 1000} s; see ${logFile}:\n${tail(logFile)}`)
}

const tail = (file: string) => readFileSync(file, 'utf8').split('\n').slice(-15).join('\n')

interface StartOptions {
  name: string
  script: string
  env: Record<string, string>
  readyPath: string
  logDir: string
  nodeArgs?: string[]
}

/** Starts `node [nodeArgs] script` with exactly `env` (plus PATH and HOME), in the log directory, and waits until `readyPath` answers 2xx. */
export async function startNode (opts: StartOptions): Promise<Running> {
  const port = await freePort()
  const base = new URL(`http://${HOST}:${port}`)
  assertLoopback(base, opts.name)
  mkdirSync(opts.logDir, { recursive: true })
  const logFile = join(opts.logDir, `${opts.name}.log`)
  const fd = openSync(logFile, 'a')
  // The working directory is the log directory, so no .env of a developer's is read.
  const child = spawn(process.execPath, [...(opts.nodeArgs ?? []), opts.script], {
    cwd: opts.logDir,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...opts.env, HOST, PORT: String(port) },
    stdio: ['ignore', fd, fd]
  })
  closeSync(fd)
  track(child)
  const rss = rssWatch(child.pid!)
  const exited = once(child, 'exit')
  try {
    await waitReady(child, new URL(opts.readyPath, base), logFile)
  } catch (err) {
    child.kill('SIGKILL')
    rss.close()
    throw err
  }
  return {
    name: opts.name,
    base,
    pid: child.pid!,
    logFile,
    peakRss: rss.peakRss,
    resetPeak: () => rss.resetPeak(),
    lifetimePeakRss: () => rss.lifetimePeakRss(),
    cpuMs: () => cpuMsOf(child.pid!),
    async stop () {
      rss.close()
      if (child.exitCode !== null || child.signalCode !== null) return
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS)
      await exited
      clearTimeout(timer)
    }
  }
}

export interface ServiceOptions {
  name: string
  /** The Store's environment: DATABASE_URL, REDIS_*, and the secrets that go with that database. */
  store: Record<string, string>
  algorithm: Algorithm
  logDir: string
  /** Extra settings (the scale-out's rate limits). */
  env?: Record<string, string>
  /** Writes a V8 CPU profile of the whole process life into this directory. */
  profileDir?: string
}

/** How every benchmarked service runs: as production does, but with per-address rate limits and load shedding off. */
export const BENCH_ENV = {
  NODE_ENV: 'production',
  // Production refuses to start with /metrics open; the bench does not scrape it.
  METRICS_TOKEN: 'bench-metrics-token-not-scraped',
  LOG_LEVEL: 'warn',
  RATE_LIMIT_ENABLED: 'false',
  MAX_EVENT_LOOP_DELAY_MS: '0'
}

/** The settings passed through from this process's environment. */
export const passedThrough = () => Object.fromEntries(Object.entries(process.env).filter((e): e is [string, string] => PASSED_THROUGH.test(e[0]) && e[1] !== undefined))

/**
 * The node options production starts the service with: those before
 * dist/server.js in package.json's `start` script (the Dockerfile's CMD
 * says the same), e.g. ["--max-semi-space-size=4"].
 */
export function productionNodeArgs (): string[] {
  const { scripts } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }
  const match = /^node((?:\s+--?\S+)*)\s+dist\/server\.js\s*$/.exec(scripts.start ?? '')
  if (!match) throw new Error(`package.json's start script is not "node [options] dist/server.js": ${scripts.start}`)
  return match[1].trim().split(/\s+/).filter(Boolean)
}

/**
 * The service's production build, started as `npm start` does, with
 * BENCH_ENV, the passed-through settings, the store's and the caller's.
 */
export function startService (opts: ServiceOptions): Promise<Running> {
  // The store's JWT_SECRET signs only under HS256; the other algorithms keep their keys in the database.
  const { JWT_SECRET: jwtSecret, ...store } = opts.store
  return startNode({
    name: opts.name,
    script: join(ROOT, 'dist', 'server.js'),
    readyPath: '/api/health/ready',
    logDir: opts.logDir,
    nodeArgs: [...productionNodeArgs(), ...(opts.profileDir ? ['--cpu-prof', `--cpu-prof-dir=${opts.profileDir}`] : [])],
    env: {
      ...BENCH_ENV,
      JWT_ALGORITHM: opts.algorithm,
      ...(opts.algorithm === 'HS256' && { JWT_SECRET: jwtSecret }),
      ...passedThrough(),
      ...store,
      ...opts.env
    }
  })
}

/** A bare Fastify 5 route, started the same way (same node options): the framework's ceiling on this machine. */
export function startBare (logDir: string): Promise<Running> {
  return startNode({ name: 'bare', script: join(ROOT, 'bench', 'bare-server.mjs'), readyPath: '/ping', logDir, nodeArgs: productionNodeArgs(), env: { NODE_ENV: 'production' } })
}
