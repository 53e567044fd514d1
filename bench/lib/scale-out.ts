/**
 * Scale-out: two instances of the service (A and B) on one PostgreSQL
 * database and one Redis, on this one machine. It shows
 * - throughput: verify and me against A alone with every connection, then
 *   against A and B at once, the connections split between them;
 * - that verify makes no database or Redis round trip: PostgreSQL's
 *   transaction count for the database (pg_stat_database) and the Redis
 *   server's processed commands, before and after the pair's timed runs,
 *   per request; me is counted the same way, to show the method sees the
 *   round trips a request does make. PostgreSQL publishes a backend's counts
 *   up to 10 s late, so both snapshots wait 11 s for a quiet moment;
 * - that a revocation holds across both: sign in on A, log out on A, and the
 *   same access token is asked about on B at once (and again until 401);
 * - that rate limits hold across both: the per-account login throttle (on
 *   even with RATE_LIMIT_ENABLED=false) alternating wrong passwords between
 *   A and B; then the pair is restarted with RATE_LIMIT_ENABLED=true, a
 *   huge global limit and RATE_LIMIT_LOGIN_PER_MINUTE=4, and eight sign-ins
 *   alternate between A and B; there too, the Redis commands a verify costs
 *   with the rate limiter on are counted.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import type { Backing } from './backing.js'
import { measure, warmUp, type LoadOptions, type Measured, type Target } from './load.js'
import { call, login, makeUsers, PASSWORD, scenarios, type Connection } from './scenarios.js'
import { startService, type Algorithm, type Running } from './service.js'

/** PostgreSQL flushes a backend's statistics at most 10 s after it goes idle. */
const SETTLE_MS = 11_000
const LOGIN_LIMIT = 4
const THROTTLE_FREE_FAILURES = 5

export interface RoundTrips {
  requests: number
  dbTransactions: number
  redisCommands: number
  dbPerRequest: number
  redisPerRequest: number
  /** Redis commands a second while nothing of ours ran (other clients of a shared server). */
  redisIdlePerSecond: number
}

export interface ScaleOutResult {
  single: Record<'verify' | 'me', Measured>
  pair: Record<'verify' | 'me', Measured>
  roundTrips: Record<'verify' | 'me', RoundTrips>
  revocation: { trials: Array<{ firstStatus: number, firstCode: string | null, msUntil401: number | null }>, holds: boolean }
  loginThrottle: { statuses: number[], holds: boolean }
  loginRateLimit: { limitPerMinute: number, statuses: number[], holds: boolean }
  /** Redis commands per verify request with RATE_LIMIT_ENABLED=true (the global limit is counted in Redis). */
  rateLimitedVerify: RoundTrips
}

interface Pair { a: Running, b: Running }

async function startPair (store: Record<string, string>, algorithm: Algorithm, logDir: string, env: Record<string, string> = {}, tag = ''): Promise<Pair> {
  // One after the other: the first creates the signing key, the second finds it.
  const a = await startService({ name: `scale-a${tag}`, store, algorithm, logDir, env })
  const b = await startService({ name: `scale-b${tag}`, store, algorithm, logDir, env }).catch(async (err) => { await a.stop(); throw err })
  return { a, b }
}

const stopPair = async (p: Pair) => { await Promise.all([p.a.stop(), p.b.stop()]) }

/** Counts database transactions and Redis commands over `work`, with a quiet moment before and after. */
async function countRoundTrips (backing: Backing, database: string | null, work: () => Promise<number>, settle = true): Promise<RoundTrips> {
  const quiet0 = await backing.redisCommands() ?? 0
  const t0 = Date.now()
  if (settle) await sleep(SETTLE_MS)
  const redisIdlePerSecond = settle ? ((await backing.redisCommands() ?? 0) - quiet0 - 1) / ((Date.now() - t0) / 1000) : 0
  // NaN where there is nothing to count (no database given): shown as '-'.
  const db0 = await backing.transactions(database) ?? NaN
  const redis0 = await backing.redisCommands() ?? 0
  const requests = await work()
  if (settle) await sleep(SETTLE_MS)
  // Less the INFO command that takes the second reading.
  const redisCommands = (await backing.redisCommands() ?? 0) - redis0 - 1
  const dbTransactions = (await backing.transactions(database) ?? NaN) - db0
  return { requests, dbTransactions, redisCommands, dbPerRequest: dbTransactions / requests, redisPerRequest: redisCommands / requests, redisIdlePerSecond }
}

const responses = (m: Measured) => m.runs.reduce((s, r) => s + r.responses, 0)

/** Sign in on A, check on B, log out on A, then ask B at once and every millisecond until it answers 401 (2 s at most). */
async function revocationTrial ({ a, b }: Pair, email: string) {
  const { access } = await login(a.base, email)
  await call(b.base, 'GET', '/api/v1/auth/verify', { token: access, expect: 200 })
  await call(a.base, 'POST', '/api/v1/auth/logout', { token: access, expect: 204 })
  const t0 = performance.now()
  const first = await call(b.base, 'GET', '/api/v1/auth/verify', { token: access })
  let msUntil401: number | null = first.status === 401 ? performance.now() - t0 : null
  while (msUntil401 === null && performance.now() - t0 < 2000) {
    await sleep(1)
    if ((await call(b.base, 'GET', '/api/v1/auth/verify', { token: access })).status === 401) msUntil401 = performance.now() - t0
  }
  return { firstStatus: first.status, firstCode: (first.body.code as string | undefined) ?? null, msUntil401 }
}

/** Sign-ins for one account or one address, alternating between A and B; their statuses in order. */
async function alternateLogins ({ a, b }: Pair, email: string, password: string, n: number): Promise<number[]> {
  const statuses: number[] = []
  for (let i = 0; i < n; i++) {
    statuses.push((await call(i % 2 === 0 ? a.base : b.base, 'POST', '/api/v1/auth/login', { body: { email, password } })).status)
  }
  return statuses
}

export async function scaleOut (backing: Backing, opts: LoadOptions, algorithm: Algorithm, logDir: string, progress: (line: string) => void): Promise<ScaleOutResult> {
  if (backing.kind !== 'postgres' || !backing.redis) {
    throw new Error('--scale-out needs a PostgreSQL URL and a Redis URL: set BENCH_DATABASE_URL and BENCH_REDIS_URL (or --database-url, --redis-url)')
  }
  const store = await backing.fresh()
  const half = Math.max(1, Math.floor(opts.connections / 2))
  const single = {} as ScaleOutResult['single']
  const pairResults = {} as ScaleOutResult['pair']
  const roundTrips = {} as ScaleOutResult['roundTrips']
  let verifyLists: Connection[][] = []

  let pair = await startPair(store.env, algorithm, logDir)
  let result: Omit<ScaleOutResult, 'loginRateLimit' | 'rateLimitedVerify'>
  try {
    const { a, b } = pair
    const users = await makeUsers(a.base, opts.connections + 2)
    const [revoked, throttled] = users.slice(opts.connections)
    for (const name of ['verify', 'me'] as const) {
      progress(`scale-out: ${name} on A alone, ${opts.connections} connections`)
      single[name] = await measure([{ service: a, connections: opts.connections, make: (n) => scenarios[name].connections(a.base, users.slice(0, n)) }], opts)
      // The pair's sessions are made first, so that the counted span holds the load and nothing else.
      const lists = [await scenarios[name].connections(a.base, users.slice(0, half)), await scenarios[name].connections(b.base, users.slice(half, opts.connections))]
      if (name === 'verify') verifyLists = lists
      const targets: Target[] = [{ service: a, connections: half, make: async () => lists[0] }, { service: b, connections: opts.connections - half, make: async () => lists[1] }]
      progress(`scale-out: ${name} on A and B at once, ${half} + ${opts.connections - half} connections, counting round trips`)
      await warmUp(targets, opts.warmup)
      roundTrips[name] = await countRoundTrips(backing, store.database, async () => {
        pairResults[name] = await measure(targets, { ...opts, warmup: 0 })
        return responses(pairResults[name])
      })
    }
    progress('scale-out: revocation on A, seen from B')
    const trials = []
    for (let i = 0; i < 5; i++) trials.push(await revocationTrial(pair, revoked))
    progress('scale-out: per-account login throttle across A and B')
    const throttleStatuses = await alternateLogins(pair, throttled, 'not the right password', THROTTLE_FREE_FAILURES + 2)
    result = {
      single,
      pair: pairResults,
      roundTrips,
      revocation: { trials, holds: trials.every((t) => t.firstStatus === 401 && t.firstCode === 'SESSION_REVOKED') },
      loginThrottle: {
        statuses: throttleStatuses,
        holds: throttleStatuses.slice(0, THROTTLE_FREE_FAILURES).every((s) => s === 401) && throttleStatuses.slice(THROTTLE_FREE_FAILURES).every((s) => s === 429)
      }
    }
  } finally {
    await stopPair(pair)
  }

  progress(`scale-out: A and B again with RATE_LIMIT_ENABLED=true, RATE_LIMIT_LOGIN_PER_MINUTE=${LOGIN_LIMIT}`)
  pair = await startPair(store.env, algorithm, logDir, {
    RATE_LIMIT_ENABLED: 'true',
    RATE_LIMIT_GLOBAL_PER_MINUTE: '1000000',
    RATE_LIMIT_LOGIN_PER_MINUTE: String(LOGIN_LIMIT)
  }, '-limited')
  try {
    // The access tokens of the first pair still hold: same database, same keys.
    const lists = verifyLists
    const targets: Target[] = [{ service: pair.a, connections: half, make: async () => lists[0] }, { service: pair.b, connections: opts.connections - half, make: async () => lists[1] }]
    const seconds = Math.min(5, opts.duration)
    const rateLimitedVerify = await countRoundTrips(backing, null, async () => responses(await measure(targets, { ...opts, runs: 1, duration: seconds, warmup: 0 })), false)
    const email = (await makeUsers(pair.a.base, 1))[0]
    const statuses = await alternateLogins(pair, email, PASSWORD, 2 * LOGIN_LIMIT)
    return {
      ...result,
      loginRateLimit: {
        limitPerMinute: LOGIN_LIMIT,
        statuses,
        holds: statuses.slice(0, LOGIN_LIMIT).every((s) => s === 200) && statuses.slice(LOGIN_LIMIT).every((s) => s === 429)
      },
      rateLimitedVerify
    }
  } finally {
    await stopPair(pair)
  }
}
