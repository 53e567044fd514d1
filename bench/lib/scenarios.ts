/**
 * The scenarios, as autocannon plays them: each connection gets its own list
 * of requests, with its own state (its user, its tokens) kept in closures,
 * so that for example every connection keeps rotating its own refresh token.
 * Users and sessions are made before the timed part, over plain HTTP.
 */
import { randomBytes } from 'node:crypto'
import type autocannon from 'autocannon'

export const PASSWORD = 'correct horse battery staple'
export const SCENARIOS = ['signup', 'login', 'refresh', 'me', 'verify', 'verify-cold', 'mixed'] as const
export type ScenarioName = typeof SCENARIOS[number]

/** The mixed scenario's shares of requests, in percent (real traffic: mostly verify and me). */
export const MIX = { verify: 60, me: 25, refresh: 10, login: 3, signup: 2 } as const
type Kind = keyof typeof MIX

const PATHS: Record<Kind, string> = {
  verify: '/api/v1/auth/verify',
  me: '/api/v1/users/me',
  refresh: '/api/v1/auth/refresh',
  login: '/api/v1/auth/login',
  signup: '/api/v1/auth/signup'
}

export interface Pair { access: string, refresh: string }
/** What one connection sends, in a loop. */
export type Connection = autocannon.Request[]

/** One request outside any measurement; throws unless it answers `expect`. */
export async function call (base: URL, method: string, path: string, opts: { body?: unknown, token?: string, expect?: number } = {}): Promise<{ status: number, body: Record<string, unknown> }> {
  const headers: Record<string, string> = {}
  if (opts.body !== undefined) headers['content-type'] = 'application/json'
  if (opts.token) headers.authorization = `Bearer ${opts.token}`
  const res = await fetch(new URL(path, base), { method, headers, body: opts.body === undefined ? undefined : JSON.stringify(opts.body), signal: AbortSignal.timeout(30_000) })
  const text = await res.text()
  const body = text ? JSON.parse(text) as Record<string, unknown> : {}
  if (opts.expect !== undefined && res.status !== opts.expect) throw new Error(`${method} ${path} answered ${res.status}, not ${opts.expect}: ${text.slice(0, 200)}`)
  return { status: res.status, body }
}

const pairOf = (body: Record<string, unknown>): Pair => ({ access: body.access_token as string, refresh: body.refresh_token as string })

export const login = async (base: URL, email: string): Promise<Pair> =>
  pairOf((await call(base, 'POST', PATHS.login, { body: { email, password: PASSWORD }, expect: 200 })).body)

/** An address no run has used: this process's random tag and a counter. */
const RUN_TAG = randomBytes(4).toString('hex')
let addresses = 0
export const newEmail = (what = 'u') => `${what}-${RUN_TAG}-${(addresses++).toString(36)}@bench.example.com`

/** Runs `fn` on every item, `limit` at a time (each login or signup is a password hash). */
async function inBatches<T, R> (items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = []
  for (let i = 0; i < items.length; i += limit) out.push(...await Promise.all(items.slice(i, i + limit).map(fn)))
  return out
}

/** `n` accounts, one per connection, made once per service. */
export async function makeUsers (base: URL, n: number): Promise<string[]> {
  const emails = Array.from({ length: n }, () => newEmail())
  await inBatches(emails, 4, (email) => call(base, 'POST', PATHS.signup, { body: { email, password: PASSWORD }, expect: 201 }))
  return emails
}

/** A fresh session per user (untimed): each load run starts its refresh chains anew. */
export const freshSessions = (base: URL, users: string[]) => inBatches(users, 4, (email) => login(base, email))

const bearer = (path: string, access: string): autocannon.Request => ({ method: 'GET', path, headers: { authorization: `Bearer ${access}` } })
const posting = (path: string, body: unknown): autocannon.Request => ({ method: 'POST', path, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })

/** The new pair in a 200 token response, or null (a failed request is counted by the load generator). */
function pairFrom (status: number, body: string): Pair | null {
  if (status !== 200) return null
  try { return pairOf(JSON.parse(body) as Record<string, unknown>) } catch { return null }
}

/** Mulberry32: the same shuffle on every run, a different one per connection. */
function random (seed: number) {
  return () => {
    seed = (seed + 0x6D2B79F5) | 0
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** 100 requests in MIX's proportions, shuffled: a connection walks this plan round and round. */
function plan (seed: number): Kind[] {
  const kinds = (Object.entries(MIX) as Array<[Kind, number]>).flatMap(([kind, n]) => Array<Kind>(n).fill(kind))
  const next = random(seed)
  for (let i = kinds.length - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [kinds[i], kinds[j]] = [kinds[j], kinds[i]]
  }
  return kinds
}

/** One connection of the mixed scenario: a signed-in client that verifies, reads, refreshes, and sometimes signs in again or signs a new user up. */
function mixedConnection (email: string, pair: Pair, index: number): Connection {
  const kinds = plan(index + 1)
  let at = 0
  let kind: Kind = 'verify'
  let tokens = pair
  const requestFor = (k: Kind): autocannon.Request => {
    if (k === 'verify' || k === 'me') return bearer(PATHS[k], tokens.access)
    if (k === 'refresh') return posting(PATHS.refresh, { refresh_token: tokens.refresh })
    if (k === 'login') return posting(PATHS.login, { email, password: PASSWORD })
    return posting(PATHS.signup, { email: newEmail('m'), password: PASSWORD })
  }
  return [{
    setupRequest: (request) => {
      kind = kinds[at++ % kinds.length]
      // Replace what the last request set: a GET has no body.
      return Object.assign(request, { body: undefined }, requestFor(kind))
    },
    onResponse: (status, body) => {
      // A refresh or a new sign-in hands this client the pair it uses from now on.
      if (kind === 'refresh' || kind === 'login') tokens = pairFrom(status, body) ?? tokens
    }
  }]
}

/**
 * Distinct access tokens for verify-cold, more in all than the service keeps
 * in its cache of verified tokens (5,000, least recently used out first; see
 * services/access-tokens.ts): walked in a circle, every request is a miss.
 */
const COLD_TOKENS = 7_500
/** Access tokens live 15 minutes: a pool is made anew after 10. */
const COLD_POOL_MS = 10 * 60_000
const coldPools = new Map<string, { made: number, lists: string[][], cursors: number[] }>()

/** The connections' token lists for one service, made once (untimed, by refreshing), with each connection's place in its list kept across runs. */
async function coldPool (base: URL, users: string[]) {
  const kept = coldPools.get(base.href)
  if (kept && kept.lists.length === users.length && Date.now() - kept.made < COLD_POOL_MS) return kept
  const per = Math.ceil(COLD_TOKENS / users.length)
  const lists = await Promise.all(users.map(async (email) => {
    let pair = await login(base, email)
    const tokens = [pair.access]
    while (tokens.length < per) {
      pair = pairOf((await call(base, 'POST', PATHS.refresh, { body: { refresh_token: pair.refresh }, expect: 200 })).body)
      tokens.push(pair.access)
    }
    return tokens
  }))
  const pool = { made: Date.now(), lists, cursors: users.map(() => 0) }
  coldPools.set(base.href, pool)
  return pool
}

export interface Scenario {
  name: ScenarioName
  what: string
  /** Untimed, before each load run: the request list of each connection, one user per connection. */
  connections: (base: URL, users: string[]) => Promise<Connection[]>
}

export const scenarios: Record<ScenarioName, Scenario> = {
  signup: {
    name: 'signup',
    what: 'POST /api/v1/auth/signup, a new address every request (one argon2id hash each)',
    connections: async (_base, users) => users.map(() => [{
      ...posting(PATHS.signup, {}),
      setupRequest: (request) => Object.assign(request, { body: JSON.stringify({ email: newEmail('s'), password: PASSWORD }) })
    }])
  },
  login: {
    name: 'login',
    what: 'POST /api/v1/auth/login, each connection as its own user with the right password (one argon2id verify each)',
    connections: async (_base, users) => users.map((email) => [posting(PATHS.login, { email, password: PASSWORD })])
  },
  refresh: {
    name: 'refresh',
    what: 'POST /api/v1/auth/refresh, each connection rotating its own session\'s latest refresh token',
    connections: async (base, users) => (await freshSessions(base, users)).map((pair) => {
      let token = pair.refresh
      return [{
        ...posting(PATHS.refresh, {}),
        setupRequest: (request) => Object.assign(request, { body: JSON.stringify({ refresh_token: token }) }),
        onResponse: (status, body) => { token = pairFrom(status, body)?.refresh ?? token }
      }]
    })
  },
  me: {
    name: 'me',
    what: 'GET /api/v1/users/me with a bearer access token (reads the user and their roles)',
    connections: async (base, users) => (await freshSessions(base, users)).map((pair) => [bearer(PATHS.me, pair.access)])
  },
  verify: {
    name: 'verify',
    what: 'GET /api/v1/auth/verify with the connection\'s bearer access token (forward auth, no I/O; after the first request its signature check comes from the service\'s cache, as for a client that reuses its token)',
    connections: async (base, users) => (await freshSessions(base, users)).map((pair) => [bearer(PATHS.verify, pair.access)])
  },
  'verify-cold': {
    name: 'verify-cold',
    what: `GET /api/v1/auth/verify, every request a token the service has not verified lately (${COLD_TOKENS.toLocaleString('en')} tokens in a circle): the signature checked every time`,
    connections: async (base, users) => {
      const pool = await coldPool(base, users)
      return pool.lists.map((tokens, i) => [{
        method: 'GET',
        path: PATHS.verify,
        setupRequest: (request) => Object.assign(request, { headers: { authorization: `Bearer ${tokens[pool.cursors[i]++ % tokens.length]}` } })
      }])
    }
  },
  mixed: {
    name: 'mixed',
    what: `verify ${MIX.verify} %, me ${MIX.me} %, refresh ${MIX.refresh} %, login ${MIX.login} %, signup ${MIX.signup} % of requests, each connection a signed-in client`,
    connections: async (base, users) => (await freshSessions(base, users)).map((pair, i) => mixedConnection(users[i], pair, i))
  }
}

/** The bare route of bench/bare-server.mjs. */
export const bareConnections = (connections: number): Connection[] => Array.from({ length: connections }, () => [{ method: 'GET', path: '/ping' }])
