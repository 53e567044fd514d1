import { setTimeout as sleep } from 'node:timers/promises'
import t, { type Test } from 'tap'
import { GOOD_PASSWORD, uniqueEmail, unless } from '../helper.js'
import { postgresUnavailable, redisServerUnavailable, spawnService, startPostgres, startRedisServer, until, type Service } from './backing.js'

/**
 * Two real service processes on a PostgreSQL and a Redis of the test's own,
 * under a mixed load (signed-in reads, token checks, refreshes), while the
 * test restarts, freezes and kills PostgreSQL and kills Redis. Every answer
 * is a 2xx, a 4xx or a 503: never another 5xx, never a hang; both processes
 * live through it; and they serve again by themselves within a bound.
 */

/** The request timeout the services run with (DATABASE_TIMEOUT_SECONDS). */
const DB_TIMEOUT_S = 1
/** An answer later than this is a hang (the database bound plus the pool's wait, with room for a busy machine). */
const HANG_MS = (DB_TIMEOUT_S * 2 + 3) * 1000
/** Recovery within this after the dependency is back. */
const RECOVERY_MS = 10_000
const CLIENTS = 4

interface Client { service: Service, access: string, refresh: string }
type Kind = 'me' | 'verify' | 'refresh'
interface Tally { statuses: Map<string, number>, hangs: number, requests: number }

async function call (base: string, method: string, path: string, headers: Record<string, string> = {}, body?: unknown) {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { ...headers, ...(body !== undefined && { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(HANG_MS)
  })
  return { status: res.status, body: await res.json().catch(() => null) as Record<string, any> | null, retryAfter: res.headers.get('retry-after') }
}

async function signIn (service: Service, email: string): Promise<Client> {
  const res = await call(service.base, 'POST', '/api/v1/auth/login', {}, { email, password: GOOD_PASSWORD })
  if (res.status !== 200) throw new Error(`login failed: ${res.status}`)
  return { service, access: res.body!.access_token, refresh: res.body!.refresh_token }
}

/** One request of a client's mix; a refresh that succeeds moves the client to the new pair. */
async function step (client: Client, kind: Kind): Promise<string> {
  const { base } = client.service
  const auth = { authorization: `Bearer ${client.access}` }
  const res = kind === 'me'
    ? await call(base, 'GET', '/api/v1/users/me', auth)
    : kind === 'verify'
      ? await call(base, 'GET', '/api/v1/auth/verify', auth)
      : await call(base, 'POST', '/api/v1/auth/refresh', {}, { refresh_token: client.refresh })
  if (kind === 'refresh' && res.status === 200) Object.assign(client, { access: res.body!.access_token, refresh: res.body!.refresh_token })
  if (res.status === 503 && kind !== 'verify' && (res.body?.code !== 'DATABASE_UNAVAILABLE' || !res.retryAfter)) return `${kind} 503 ${res.body?.code} retry-after ${res.retryAfter}`
  return `${kind} ${res.status}`
}

/** Runs the mix from every client until `stop` resolves (and at most 30 s); tallies the answers. */
async function load (clients: Client[], stop: Promise<unknown>): Promise<Tally> {
  const tally: Tally = { statuses: new Map(), hangs: 0, requests: 0 }
  const run = { stopped: false }
  stop.finally(() => { run.stopped = true }).catch(() => {})
  const deadline = performance.now() + 30_000
  await Promise.all(clients.map(async (client, i) => {
    const kinds: Kind[] = ['me', 'verify', 'refresh', 'verify']
    for (let n = i; !run.stopped && performance.now() < deadline; n++) {
      let outcome: string
      try {
        outcome = await step(client, kinds[n % kinds.length])
      } catch {
        tally.hangs++
        outcome = 'no answer'
      }
      tally.requests++
      tally.statuses.set(outcome, (tally.statuses.get(outcome) ?? 0) + 1)
      await sleep(5)
    }
  }))
  return tally
}

/** Asserts the tally: only 2xx, 4xx and 503; token checks (no database) always 200; nothing hung. */
function expectOnly503 (t: Test, tally: Tally, what: string) {
  const summary = Object.fromEntries(tally.statuses)
  t.ok(tally.requests > 20, `${what}: a load ran (${tally.requests} requests: ${JSON.stringify(summary)})`)
  t.equal(tally.hangs, 0, `${what}: no request hung or lost its connection`, { summary })
  const bad = [...tally.statuses.keys()].filter((s) => {
    const [kind, status] = s.split(' ')
    return Number(status) >= 500 ? s !== `${kind} 503` : kind === 'verify' ? status !== '200' : Number.isNaN(Number(status))
  })
  t.same(bad, [], `${what}: no 5xx but 503 DATABASE_UNAVAILABLE with Retry-After, token checks always 200`, { summary })
}

/** Waits until every service answers a signed-in read with 200 (recovered), within RECOVERY_MS. */
async function recovered (clients: Client[]) {
  await until('every service serves signed-in reads again', async () => {
    const answers = await Promise.all(clients.map((c) => call(c.service.base, 'GET', '/api/v1/users/me', { authorization: `Bearer ${c.access}` }).catch(() => null)))
    return answers.every((a) => a?.status === 200)
  }, RECOVERY_MS, 100)
}

unless(postgresUnavailable ?? redisServerUnavailable, () => {
  t.test('two replicas under load ride out PostgreSQL and Redis going away', async (t) => {
    const pg = await startPostgres(t)
    const redis = await startRedisServer(t)
    const env = { DATABASE_URL: pg.url, REDIS_URL: redis.url, DATABASE_TIMEOUT_SECONDS: String(DB_TIMEOUT_S) }
    const services = [await spawnService(t, env), await spawnService(t, env)]
    const email = uniqueEmail('outage')
    const signup = await call(services[0].base, 'POST', '/api/v1/auth/signup', {}, { email, password: GOOD_PASSWORD })
    t.equal(signup.status, 201, 'a user')
    const clients = await Promise.all(Array.from({ length: CLIENTS }, (_, i) => signIn(services[i % 2], email)))
    const alive = () => services.every((s) => s.output().length >= 0 && process.kill(s.pid, 0))

    t.test('PostgreSQL restarted', async (t) => {
      const fault = (async () => { await sleep(500); await pg.restart('fast'); await recovered(clients) })()
      expectOnly503(t, await load(clients, fault), 'restart')
      await fault
      t.ok(alive(), 'both services still run')
    })

    t.test('PostgreSQL stopped: readiness 503, signed-in reads 503, token checks and liveness 200; back without a restart', async (t) => {
      await pg.stop('fast')
      const [service] = services
      const auth = { authorization: `Bearer ${clients[0].access}` }
      const me = await call(clients[0].service.base, 'GET', '/api/v1/users/me', auth)
      t.equal(me.status, 503)
      t.equal(me.body?.code, 'DATABASE_UNAVAILABLE')
      t.ok(Number(me.retryAfter) >= 1, 'with Retry-After')
      t.equal((await call(service.base, 'GET', '/api/health/ready')).status, 503, 'not ready')
      t.equal((await call(service.base, 'GET', '/api/health')).status, 200, 'alive')
      t.equal((await call(service.base, 'GET', '/.well-known/jwks.json')).status, 200, 'JWKS')
      t.equal((await call(clients[0].service.base, 'GET', '/api/v1/auth/verify', auth)).status, 200, 'token check')
      await pg.start()
      await recovered(clients)
      t.equal((await call(service.base, 'GET', '/api/health/ready')).status, 200, 'ready again')
    })

    t.test('PostgreSQL frozen (SIGSTOP): 503 after the bound, not a hang', async (t) => {
      const fault = (async () => { await sleep(500); await pg.freeze(); await sleep(3000); await pg.thaw(); await recovered(clients) })()
      expectOnly503(t, await load(clients, fault), 'freeze')
      await fault
      t.ok(alive(), 'both services still run')
    })

    t.test('PostgreSQL killed (SIGKILL) and started again', async (t) => {
      const fault = (async () => { await sleep(500); await pg.kill(); await sleep(1000); await pg.start(); await recovered(clients) })()
      expectOnly503(t, await load(clients, fault), 'kill')
      await fault
      t.ok(alive(), 'both services still run')
    })

    t.test('Redis killed for a few seconds: no 5xx at all', async (t) => {
      const fault = (async () => { await sleep(500); await redis.kill(); await sleep(3000); await redis.restart(); await sleep(1000) })()
      const tally = await load(clients, fault)
      await fault
      expectOnly503(t, tally, 'redis')
      t.same([...tally.statuses.keys()].filter((s) => s.endsWith(' 503')), [], 'not even a 503: the database is there', { summary: Object.fromEntries(tally.statuses) })
      t.ok(alive(), 'both services still run')
    })
  })
})
