import { availableParallelism } from 'node:os'
import { setTimeout as sleep } from 'node:timers/promises'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import t, { type Test } from 'tap'
import { loadConfig } from '../../plugins/external/config.js'
import { createPasswords } from '../../services/passwords.js'
import { build, expectProblem, GOOD_PASSWORD, signup, uniqueEmail } from '../helper.js'

const LOGIN = '/api/v1/auth/login'
/** Routes that answer under pressure (`config: { shedLoad: false }`), so operators still see the truth. */
const HEALTH_ROUTES = ['/api/health', '/api/health/ready', '/health', '/metrics']

/** A whole number of seconds in a header, or NaN. */
const seconds = (value: unknown) => (typeof value === 'string' && /^\d+$/.test(value) ? Number(value) : NaN)

function expectOverloaded (t: Test, res: LightMyRequestResponse, what: string) {
  t.test(what, async (t) => {
    expectProblem(t, res, 503, 'OVERLOADED')
    const retryAfter = seconds(res.headers['retry-after'])
    t.ok(retryAfter >= 1, `Retry-After is a positive number of seconds (got ${res.headers['retry-after']})`)
    // The security hook runs before load shedding's, so a shed answer carries the headers too.
    t.equal(res.headers['cache-control'], 'no-store', 'Cache-Control no-store')
    t.equal(res.headers['x-frame-options'], 'DENY', 'X-Frame-Options DENY')
    t.equal(res.headers['x-content-type-options'], 'nosniff', 'X-Content-Type-Options nosniff')
  })
}

/** Keeps the event loop busy for `ms` milliseconds (a bounded busy loop). */
function blockFor (ms: number) {
  const until = performance.now() + ms
  let spins = 0
  while (performance.now() < until) spins++
  return spins
}

/**
 * Blocks the event loop in ~200 ms slices, letting it turn once between them,
 * until under-pressure's sampler (once a second) reports a delay above `limit`:
 * at most 12 slices (~2.4 s). Returns the delay it reported, or null.
 */
async function overloadEventLoop (app: FastifyInstance, limit: number): Promise<number | null> {
  for (let slice = 0; slice < 12; slice++) {
    blockFor(200)
    await sleep(1)
    const { eventLoopDelay } = app.memoryUsage()
    if (eventLoopDelay > limit) return eventLoopDelay
  }
  return null
}

t.test('event-loop delay above MAX_EVENT_LOOP_DELAY_MS: 503 OVERLOADED, health and metrics still answer', async (t) => {
  const app = await build(t, { env: { MAX_EVENT_LOOP_DELAY_MS: '10' } })
  const delay = await overloadEventLoop(app, 10)
  t.ok(delay, `under-pressure saw the delay (${delay?.toFixed(0)} ms)`)
  // The sampler runs once a second: these are answered before its next look.
  const login = await app.inject({ method: 'POST', url: LOGIN, payload: { email: uniqueEmail('busy'), password: GOOD_PASSWORD } })
  const health = await Promise.all(HEALTH_ROUTES.map((url) => app.inject({ method: 'GET', url })))
  expectOverloaded(t, login, 'login is shed')
  for (const [i, res] of health.entries()) t.equal(res.statusCode, 200, `${HEALTH_ROUTES[i]} still answers 200`)
})

t.test('heap above MAX_HEAP_USED_BYTES: every request but health and metrics is 503 OVERLOADED', async (t) => {
  const app = await build(t, { env: { MAX_HEAP_USED_BYTES: '1', MAX_EVENT_LOOP_DELAY_MS: '0' } })
  // Wait for the first sample (once a second), at most 3 s.
  for (let i = 0; i < 60 && app.memoryUsage().heapUsed === 0; i++) await sleep(50)
  t.ok(app.memoryUsage().heapUsed > 1, 'under-pressure has sampled the heap')

  const requests: Array<{ method: 'GET' | 'POST' | 'DELETE', url: string, payload?: Record<string, unknown> }> = [
    { method: 'POST', url: LOGIN, payload: { email: uniqueEmail('heap'), password: GOOD_PASSWORD } },
    { method: 'POST', url: '/api/v1/auth/signup', payload: { email: uniqueEmail('heap'), password: GOOD_PASSWORD } },
    { method: 'POST', url: '/api/v1/auth/refresh', payload: { refresh_token: 'whatever' } },
    { method: 'POST', url: '/api/v1/auth/password/forgot', payload: { email: uniqueEmail('heap') } },
    { method: 'GET', url: '/api/v1/users/me' },
    { method: 'GET', url: '/api/v1/auth/verify' },
    { method: 'DELETE', url: '/api/v1/users/me/sessions' },
    { method: 'GET', url: '/.well-known/jwks.json' },
    { method: 'GET', url: '/api/v1/admin/users' },
    { method: 'GET', url: '/no/such/route' }
  ]
  for (const request of requests) {
    expectOverloaded(t, await app.inject(request), `${request.method} ${request.url} is shed`)
  }
  const users = await app.db.selectFrom('users').select('id').execute()
  t.equal(users.length, 0, 'the shed signup created nobody')
  for (const url of HEALTH_ROUTES) t.equal((await app.inject({ method: 'GET', url })).statusCode, 200, `${url} still answers 200`)
})

t.test('HASH_CONCURRENCY: one hash per CPU core by default (at most 4), or the number set', async (t) => {
  t.equal(createPasswords(loadConfig({ DATABASE_URL: 'sqlite::memory:' })).concurrency, Math.min(4, availableParallelism()), `${availableParallelism()} cores`)
  t.equal(createPasswords(loadConfig({ DATABASE_URL: 'sqlite::memory:', HASH_CONCURRENCY: '3' })).concurrency, 3)
})

t.test('password hashing is bounded: beyond HASH_QUEUE_LIMIT waiting, 503 at once', async (t) => {
  const app = await build(t, { env: { HASH_CONCURRENCY: '1', HASH_QUEUE_LIMIT: '2', MAX_EVENT_LOOP_DELAY_MS: '0' } })
  const { user } = await signup(app)
  // Half the right password of a real account, half unknown accounts.
  const attempts = Array.from({ length: 10 }, (_, i) => i % 2
    ? { email: user.email, password: GOOD_PASSWORD }
    : { email: uniqueEmail('flood'), password: 'not the password at all' })
  const answers = await Promise.all(attempts.map((payload) => app.inject({ method: 'POST', url: LOGIN, payload })))

  const statuses = answers.map((r) => r.statusCode)
  t.comment(`statuses: ${statuses.join(' ')}`)
  const shed = answers.filter((r) => r.statusCode === 503)
  const answered = answers.filter((r, i) => (attempts[i].email === user.email ? r.statusCode === 200 : r.statusCode === 401))
  t.ok(shed.length >= 1, `some logins were shed (${shed.length})`)
  t.equal(answered.length + shed.length, 10, 'every other login got its normal answer (200 for the right password, 401 for an unknown account)')
  t.notOk(statuses.some((s) => s >= 500 && s !== 503), 'no 5xx but 503')
  for (const [i, res] of shed.entries()) expectOverloaded(t, res, `shed login ${i + 1} is 503 OVERLOADED with Retry-After`)

  // The queue frees its slots: after the flood, sign-ins work again, one after another.
  for (let i = 1; i <= 3; i++) {
    const res = await app.inject({ method: 'POST', url: LOGIN, payload: { email: user.email, password: GOOD_PASSWORD } })
    t.equal(res.statusCode, 200, `login ${i} after the flood succeeds`)
  }
})
