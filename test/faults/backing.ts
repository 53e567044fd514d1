import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { appendFileSync, chownSync, closeSync, existsSync, mkdtempSync, openSync, readFileSync, readdirSync, readlinkSync, realpathSync, rmSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import pg from 'pg'
import type { Test } from 'tap'
import { childEnv, freePort } from '../helper.js'

/**
 * Backing services a fault test owns and may break: a PostgreSQL cluster and
 * a Redis of its own, and the real service (server.ts) as a child process.
 * Each is on loopback, on a free port, in a fresh temporary folder; every wait
 * is bounded, and everything is stopped and removed when the test ends, also
 * when it fails midway (a frozen process is continued first).
 *
 * Linux only: the processes of a cluster are found through /proc.
 */

const ROOT = join(import.meta.dirname, '..', '..')

// ---------------------------------------------------------------- processes

/** A process's state letter from /proc (R, S, D, T, t, Z, …), or null when it does not exist. */
function stateOf (pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.charAt(stat.lastIndexOf(')') + 2)
  } catch {
    return null
  }
}

/** Alive: it exists and is not a zombie waiting to be reaped. */
const isAlive = (pid: number) => { const state = stateOf(pid); return state !== null && state !== 'Z' && state !== 'X' }
const isStopped = (pid: number) => { const state = stateOf(pid); return state === 'T' || state === 't' }

function parentOf (pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
  } catch {
    return null
  }
}

const pids = () => readdirSync('/proc').filter((name) => /^\d+$/.test(name)).map(Number)

/** Every live process whose working directory is `dir`: all of a PostgreSQL cluster's processes sit in its data directory. */
function processesIn (dir: string): number[] {
  return pids().filter((pid) => {
    try {
      return readlinkSync(`/proc/${pid}/cwd`) === dir && isAlive(pid)
    } catch {
      return false
    }
  })
}

/** Sends a signal; false when there is no such process. */
function signal (pid: number, name: NodeJS.Signals): boolean {
  try {
    process.kill(pid, name)
    return true
  } catch {
    return false
  }
}

/** Polls `check` every `every` ms until it holds; throws after `ms` (every wait in these tests is bounded). */
export async function until (what: string, check: () => boolean | Promise<boolean>, ms: number, every = 50): Promise<void> {
  const deadline = performance.now() + ms
  for (;;) {
    if (await check()) return
    if (performance.now() >= deadline) throw new Error(`timed out after ${ms} ms waiting until ${what}`)
    await sleep(every)
  }
}

/** The environment of a backing process: a plain PATH, no PG*, REDIS* or NODE* variables of ours. */
const plainEnv = (): NodeJS.ProcessEnv => ({ PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C', LC_ALL: 'C' })

interface OsUser { uid: number, gid: number }

function osUser (name: string): OsUser | null {
  try {
    const line = readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.startsWith(`${name}:`))
    if (!line) return null
    const [, , uid, gid] = line.split(':')
    return { uid: Number(uid), gid: Number(gid) }
  } catch {
    return null
  }
}

/** Runs a command to its end (at most `timeoutMs`, then SIGKILL); its exit code and everything it printed. */
async function run (file: string, args: string[], opts: { as?: OsUser | null, cwd?: string, timeoutMs?: number } = {}): Promise<{ code: number | null, output: string }> {
  const child = spawn(file, args, {
    cwd: opts.cwd,
    env: plainEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: opts.timeoutMs ?? 20_000,
    killSignal: 'SIGKILL',
    ...(opts.as && { uid: opts.as.uid, gid: opts.as.gid })
  })
  let output = ''
  child.stdout!.on('data', (chunk) => { output += chunk })
  child.stderr!.on('data', (chunk) => { output += chunk })
  const [code] = await once(child, 'close') as [number | null]
  return { code, output }
}

// ---------------------------------------------------------------- PostgreSQL

/** The bin directory of the newest PostgreSQL under /usr/lib/postgresql, or null. */
export const postgresBin: string | null = (() => {
  const root = '/usr/lib/postgresql'
  try {
    const versions = readdirSync(root)
      .filter((v) => ['initdb', 'postgres', 'pg_isready'].every((b) => existsSync(join(root, v, 'bin', b))))
      .sort((a, b) => Number.parseFloat(b) - Number.parseFloat(a))
    return versions.length > 0 ? join(root, versions[0], 'bin') : null
  } catch {
    return null
  }
})()

/** initdb refuses root: as root, the cluster runs as the `postgres` OS user. */
const clusterUser: OsUser | null = process.getuid?.() === 0 ? osUser('postgres') : null

/** Why startPostgres cannot run here, or null when it can. */
export const postgresUnavailable: string | null =
  postgresBin === null
    ? 'no PostgreSQL server binaries (initdb, postgres, pg_isready) under /usr/lib/postgresql/*/bin'
    : process.getuid?.() === 0 && clusterUser === null
      ? 'running as root, which initdb refuses, and there is no `postgres` OS user to run the cluster as'
      : null

export type StopMode = 'smart' | 'fast' | 'immediate'
const STOP_SIGNALS: Record<StopMode, NodeJS.Signals> = { smart: 'SIGTERM', fast: 'SIGINT', immediate: 'SIGQUIT' }

export interface PostgresOptions {
  /** fsync (and full-page writes) on, for tests of durability; off by default, for speed. */
  fsync?: boolean
  /** The database `url` names, created at start (default `auth`). */
  database?: string
}

export interface Postgres {
  /** postgres://postgres@127.0.0.1:<port>/<database>, trust authentication. */
  url: string
  /** The same server's `postgres` database, for administration (locks, pg_stat_activity). */
  adminUrl: string
  port: number
  dataDir: string
  /** The postmaster's pid while it runs. */
  pid: () => number | null
  /** The server's log so far (its last 20 000 characters). */
  log: () => string
  /** Asks the postmaster to stop (`fast` by default) and waits until every process of the cluster is gone. */
  stop: (mode?: StopMode) => Promise<void>
  /** Starts the cluster (crash recovery included) and waits until it accepts connections. */
  start: () => Promise<void>
  /** stop(mode) then start(). */
  restart: (mode?: StopMode) => Promise<void>
  /** SIGKILL of the postmaster; waits until it and its orphaned children are gone. */
  kill: () => Promise<void>
  /** SIGSTOP of the postmaster and every child; waits until all are stopped (connections stay open and hang). */
  freeze: () => Promise<void>
  /** SIGCONT of them all; waits until the cluster accepts connections again. */
  thaw: () => Promise<void>
}

/**
 * A PostgreSQL cluster of the test's own: initdb in a fresh folder, on a free
 * loopback port, its Unix socket inside the folder, trust authentication,
 * one database. Stopped (immediately) and removed when the test ends.
 */
export async function startPostgres (t: Test, opts: PostgresOptions = {}): Promise<Postgres> {
  if (postgresUnavailable) throw new Error(`cannot start PostgreSQL: ${postgresUnavailable}`)
  const bin = postgresBin!
  const fsync = opts.fsync ?? false
  const database = opts.database ?? 'auth'
  const dir = realpathSync(mkdtempSync(join(tmpdir(), 'auth-pg-')))
  if (clusterUser) chownSync(dir, clusterUser.uid, clusterUser.gid)
  const dataDir = join(dir, 'data')
  const logFile = join(dir, 'postgres.log')
  const port = await freePort()
  let postmaster: ChildProcess | null = null

  const running = () => postmaster !== null && postmaster.exitCode === null && postmaster.signalCode === null
  const log = () => { try { return readFileSync(logFile, 'utf8').slice(-20_000) } catch { return '' } }
  const gone = () => !running() && processesIn(dataDir).length === 0

  // Last resort if the test process exits without its teardown: no cluster outlives it.
  const onExit = () => {
    for (const pid of processesIn(dataDir)) signal(pid, 'SIGKILL')
    rmSync(dir, { recursive: true, force: true })
  }
  process.on('exit', onExit)
  t.teardown(async () => {
    process.removeListener('exit', onExit)
    for (const pid of processesIn(dataDir)) signal(pid, 'SIGCONT')
    if (running()) signal(postmaster!.pid!, 'SIGQUIT')
    try {
      await until('the cluster is gone', gone, 10_000)
    } catch {
      for (const pid of processesIn(dataDir)) signal(pid, 'SIGKILL')
      await until('the cluster is gone after SIGKILL', gone, 5_000).catch(() => {})
    }
    rmSync(dir, { recursive: true, force: true })
  })

  const ready = async () => (await run(join(bin, 'pg_isready'), ['-h', '127.0.0.1', '-p', String(port), '-d', 'postgres', '-t', '1'], { timeoutMs: 5000 })).code === 0

  async function waitReady (ms: number) {
    await until(`PostgreSQL on ${port} accepts connections`, async () => {
      if (!running()) throw new Error(`PostgreSQL exited (${postmaster?.exitCode ?? postmaster?.signalCode}):\n${log()}`)
      return ready()
    }, ms, 100)
  }

  /** Waits until every process of the cluster is gone; after `ms`, kills what is left. */
  async function waitGone (ms: number) {
    try {
      await until('every process of the cluster has exited', gone, ms)
    } catch {
      for (const pid of processesIn(dataDir)) signal(pid, 'SIGKILL')
      await until('every process of the cluster has exited after SIGKILL', gone, 5000)
    }
  }

  async function start () {
    if (running()) return
    const fd = openSync(logFile, 'a')
    try {
      postmaster = spawn(join(bin, 'postgres'), ['-D', dataDir], {
        cwd: dir,
        env: plainEnv(),
        stdio: ['ignore', fd, fd],
        ...(clusterUser && { uid: clusterUser.uid, gid: clusterUser.gid })
      })
    } finally {
      closeSync(fd)
    }
    postmaster.on('error', () => {}) // reported through exitCode and the log
    await waitReady(30_000)
  }

  async function stop (mode: StopMode = 'fast') {
    for (const pid of processesIn(dataDir)) signal(pid, 'SIGCONT')
    if (running()) signal(postmaster!.pid!, STOP_SIGNALS[mode])
    await waitGone(15_000)
  }

  const init = await run(join(bin, 'initdb'), ['-D', dataDir, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--no-locale', ...(fsync ? [] : ['--no-sync'])], { as: clusterUser, cwd: dir, timeoutMs: 60_000 })
  if (init.code !== 0) throw new Error(`initdb exited ${init.code}:\n${init.output}`)
  appendFileSync(join(dataDir, 'postgresql.conf'), [
    '',
    '# test/faults/backing.ts',
    "listen_addresses = '127.0.0.1'",
    `port = ${port}`,
    `unix_socket_directories = '${dir}'`,
    `fsync = ${fsync ? 'on' : 'off'}`,
    `full_page_writes = ${fsync ? 'on' : 'off'}`,
    'synchronous_commit = on',
    'max_connections = 60',
    'shared_buffers = 16MB',
    'log_min_messages = warning',
    ''
  ].join('\n'))
  await start()
  const adminUrl = `postgres://postgres@127.0.0.1:${port}/postgres`
  const admin = new pg.Client({ connectionString: adminUrl })
  await admin.connect()
  try {
    await admin.query(`create database "${database}"`)
  } finally {
    await admin.end()
  }

  return {
    url: `postgres://postgres@127.0.0.1:${port}/${database}`,
    adminUrl,
    port,
    dataDir,
    pid: () => (running() ? postmaster!.pid! : null),
    log,
    stop,
    start,
    async restart (mode: StopMode = 'fast') {
      await stop(mode)
      await start()
    },
    async kill () {
      if (running()) signal(postmaster!.pid!, 'SIGKILL')
      // Its children notice the postmaster's death and exit; a new postmaster cannot start while any of them lives.
      await waitGone(10_000)
    },
    async freeze () {
      if (!running()) throw new Error('freeze: PostgreSQL is not running')
      const pid = postmaster!.pid!
      // The postmaster first, so it forks no one new; then every process of the cluster.
      signal(pid, 'SIGSTOP')
      await until('the postmaster is stopped', () => isStopped(pid), 5000, 10)
      for (const child of processesIn(dataDir)) signal(child, 'SIGSTOP')
      await until('every process of the cluster is stopped', () => processesIn(dataDir).every(isStopped), 5000, 10)
    },
    async thaw () {
      const stopped = processesIn(dataDir)
      for (const pid of stopped) signal(pid, 'SIGCONT')
      await until('every process of the cluster runs again', () => processesIn(dataDir).every((pid) => !isStopped(pid)), 5000, 10)
      await waitReady(15_000)
    }
  }
}

// ---------------------------------------------------------------- Redis

/** Whether redis-server is installed. */
export const redisServerUnavailable: string | null = (() => {
  const dirs = (process.env.PATH ?? '').split(':')
  return dirs.some((d) => d !== '' && existsSync(join(d, 'redis-server'))) ? null : 'redis-server is not on the PATH'
})()

/** Whether something answers PING with +PONG on the port within `ms`. */
async function pong (port: number, ms = 500): Promise<boolean> {
  const socket = connect(port, '127.0.0.1')
  socket.setTimeout(ms)
  try {
    return await new Promise<boolean>((resolve) => {
      let received = ''
      socket.once('connect', () => socket.write('PING\r\n'))
      socket.on('data', (chunk) => { received += chunk; if (received.includes('\r\n')) resolve(received.startsWith('+PONG')) })
      socket.once('timeout', () => resolve(false))
      socket.once('error', () => resolve(false))
      socket.once('close', () => resolve(false))
    })
  } finally {
    socket.destroy()
  }
}

export interface RedisServer {
  /** redis://127.0.0.1:<port> */
  url: string
  port: number
  pid: () => number | null
  /** What redis-server printed (its last 20 000 characters). */
  output: () => string
  /** SIGKILL; waits until it has exited. */
  kill: () => Promise<void>
  /** Kills it if it runs, starts a new one on the same port (empty: no persistence), waits for PONG. */
  restart: () => Promise<void>
  /** SIGSTOP: connections stay open and hang. Waits until it is stopped. */
  freeze: () => Promise<void>
  /** SIGCONT; waits for PONG. */
  thaw: () => Promise<void>
}

/** A redis-server of the test's own on a free loopback port, no persistence; killed when the test ends. */
export async function startRedisServer (t: Test): Promise<RedisServer> {
  if (redisServerUnavailable) throw new Error(`cannot start Redis: ${redisServerUnavailable}`)
  const dir = mkdtempSync(join(tmpdir(), 'auth-redis-'))
  const port = await freePort()
  let server: ChildProcess | null = null
  let output = ''
  const running = () => server !== null && server.exitCode === null && server.signalCode === null

  const onExit = () => {
    if (running()) signal(server!.pid!, 'SIGKILL')
    rmSync(dir, { recursive: true, force: true })
  }
  process.on('exit', onExit)
  t.teardown(async () => {
    process.removeListener('exit', onExit)
    if (running()) {
      const exited = once(server!, 'exit')
      signal(server!.pid!, 'SIGKILL')
      await Promise.race([exited, sleep(5000)])
    }
    rmSync(dir, { recursive: true, force: true })
  })

  async function start () {
    const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--daemonize', 'no'], {
      cwd: dir, env: plainEnv(), stdio: ['ignore', 'pipe', 'pipe']
    })
    server = child
    const keep = (chunk: Buffer) => { output = (output + chunk).slice(-20_000) }
    child.stdout!.on('data', keep)
    child.stderr!.on('data', keep)
    child.on('error', () => {})
    await until(`redis-server on ${port} answers PING`, async () => {
      if (!running()) throw new Error(`redis-server exited (${child.exitCode ?? child.signalCode}):\n${output}`)
      return pong(port)
    }, 10_000)
  }

  async function kill () {
    if (!running()) return
    const child = server!
    signal(child.pid!, 'SIGKILL')
    await until('redis-server has exited', () => child.exitCode !== null || child.signalCode !== null, 5000, 10)
  }

  await start()
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    pid: () => (running() ? server!.pid! : null),
    output: () => output,
    kill,
    async restart () {
      await kill()
      await start()
    },
    async freeze () {
      if (!running()) throw new Error('freeze: redis-server is not running')
      const pid = server!.pid!
      signal(pid, 'SIGSTOP')
      await until('redis-server is stopped', () => isStopped(pid), 5000, 10)
    },
    async thaw () {
      if (!running()) throw new Error('thaw: redis-server is not running')
      signal(server!.pid!, 'SIGCONT')
      await until(`redis-server on ${port} answers PING again`, () => pong(port), 10_000)
    }
  }
}

// ---------------------------------------------------------------- the service

/** The KEY_ENCRYPTION_SECRET of every service these tests spawn: a restart on the same database must find the same one. */
export const SERVICE_SECRET = 'fault-tests-key-encryption-secret-0123456789'

export interface Service {
  /** http://127.0.0.1:<port> */
  base: string
  port: number
  /** The pid of the process that runs server.ts (tsx's CLI runs it as its child). */
  pid: number
  /**
   * Sends `signal` (SIGKILL by default) to the process that runs server.ts, not
   * to tsx's CLI (a SIGKILL of the CLI would leave the service running), and
   * waits (at most 15 s) until it has exited; resolves to `exited`'s value.
   */
  kill: (signal?: NodeJS.Signals) => Promise<number | null>
  /** The exit code, as a shell tells it: 128 + the signal's number when a signal ended the service (137: SIGKILL). */
  exited: Promise<number | null>
  /** What it printed, stdout and stderr (its last 50 000 characters). */
  output: () => string
}

/**
 * The real service, `node <tsx cli> server.ts` (as test/server-shutdown.test.ts
 * runs it), on a free loopback port, once GET /api/health answers 200 (at most
 * 30 s: tsx compiles the service first). Killed when the test ends.
 */
export async function spawnService (t: Test, env: Record<string, string>): Promise<Service> {
  const port = await freePort()
  const child = spawn(process.execPath, [join(ROOT, 'node_modules', 'tsx', 'dist', 'cli.mjs'), 'server.ts'], {
    cwd: ROOT,
    env: {
      ...childEnv(),
      NODE_ENV: 'test',
      LOG_LEVEL: 'warn',
      HOST: '127.0.0.1',
      PORT: String(port),
      RATE_LIMIT_ENABLED: 'false',
      MAX_EVENT_LOOP_DELAY_MS: '0',
      KEY_ENCRYPTION_SECRET: SERVICE_SECRET,
      ...env
    },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let output = ''
  const keep = (chunk: Buffer) => { output = (output + chunk).slice(-50_000) }
  child.stdout!.on('data', keep)
  child.stderr!.on('data', keep)
  child.on('error', () => {})
  const exited = once(child, 'exit').then(([code]) => code as number | null)
  let servicePid: number | null = null
  const ended = () => child.exitCode !== null || child.signalCode !== null
  // The service first: a SIGKILL of tsx's CLI alone would leave it running, orphaned.
  const killAll = () => {
    if (servicePid !== null) signal(servicePid, 'SIGKILL')
    if (!ended()) {
      for (const pid of pids().filter((p) => parentOf(p) === child.pid)) signal(pid, 'SIGKILL')
      signal(child.pid!, 'SIGKILL')
    }
  }
  process.on('exit', killAll)
  t.teardown(async () => {
    process.removeListener('exit', killAll)
    killAll()
    await Promise.race([exited, sleep(5000)])
  })

  const base = `http://127.0.0.1:${port}`
  await until(`the service answers GET ${base}/api/health with 200`, async () => {
    if (ended()) throw new Error(`the service exited (${child.exitCode ?? child.signalCode}) before it was ready:\n${output}`)
    try {
      const res = await fetch(`${base}/api/health`, { signal: AbortSignal.timeout(1000) })
      await res.arrayBuffer()
      return res.status === 200
    } catch {
      return false
    }
  }, 30_000, 100)
  const children = pids().filter((pid) => parentOf(pid) === child.pid && isAlive(pid))
  if (children.length !== 1) throw new Error(`expected tsx's CLI (${child.pid}) to run one child, found ${children.length}`)
  servicePid = children[0]
  const pid = servicePid

  return {
    base,
    port,
    pid,
    exited,
    output: () => output,
    async kill (name: NodeJS.Signals = 'SIGKILL') {
      signal(pid, name)
      await until(`the service (${pid}) has exited after ${name}`, () => !isAlive(pid) && ended(), 15_000, 10)
      return exited
    }
  }
}
