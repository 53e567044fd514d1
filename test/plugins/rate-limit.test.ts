import { randomUUID } from 'node:crypto'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { Redis } from 'ioredis'
import t, { type Test } from 'tap'
import { build, expectProblem, GOOD_PASSWORD, uniqueEmail } from '../helper.js'

const LOGIN = '/api/v1/auth/login'
const SIGNUP = '/api/v1/auth/signup'
const REFRESH = '/api/v1/auth/refresh'
const FORGOT = '/api/v1/auth/password/forgot'
const RESEND = '/api/v1/auth/email/resend'
const READY = '/api/health/ready'
const JWKS = '/.well-known/jwks.json'

/**
 * Per-address limits on, the load shedding off (a busy test machine must not
 * answer 503 instead of the 429 under test). Each test sets its own limits.
 */
const LIMITS_ON = { RATE_LIMIT_ENABLED: 'true', MAX_EVENT_LOOP_DELAY_MS: '0' }

type Headers = Record<string, string>

/** A sign-in that fails (an unknown account, each time another, so the per-account throttle never answers). */
const failedLogin = (app: FastifyInstance, headers: Headers = {}) =>
  app.inject({ method: 'POST', url: LOGIN, headers, payload: { email: uniqueEmail('rl-unknown'), password: 'not the password at all' } })

const get = (app: FastifyInstance, url: string, headers: Headers = {}) => app.inject({ method: 'GET', url, headers })

/** A whole number of seconds in a header, or NaN. */
const seconds = (value: unknown) => (typeof value === 'string' && /^\d+$/.test(value) ? Number(value) : NaN)

/** Asserts the draft RateLimit headers of an answer within the limit. */
function expectWithinLimit (t: Test, res: LightMyRequestResponse, limit: number, remaining: number) {
  t.equal(res.headers['ratelimit-limit'], String(limit), `ratelimit-limit ${limit}`)
  t.equal(res.headers['ratelimit-remaining'], String(remaining), `ratelimit-remaining ${remaining}`)
  const reset = seconds(res.headers['ratelimit-reset'])
  t.ok(reset >= 0 && reset <= 60, `ratelimit-reset is 0–60 s (got ${res.headers['ratelimit-reset']})`)
}

/** Asserts a 429 RATE_LIMITED problem with Retry-After and the draft RateLimit headers. */
function expectRateLimited (t: Test, res: LightMyRequestResponse, limit: number) {
  const body = expectProblem(t, res, 429, 'RATE_LIMITED')
  const retryAfter = seconds(res.headers['retry-after'])
  t.ok(retryAfter >= 1 && retryAfter <= 60, `Retry-After is 1–60 s (got ${res.headers['retry-after']})`)
  t.equal(res.headers['ratelimit-limit'], String(limit), `ratelimit-limit ${limit}`)
  t.equal(res.headers['ratelimit-remaining'], '0', 'ratelimit-remaining 0')
  const reset = seconds(res.headers['ratelimit-reset'])
  t.ok(reset >= 1 && reset <= 60, `ratelimit-reset is 1–60 s (got ${res.headers['ratelimit-reset']})`)
  t.notOk(body.access_token, 'no token in a refusal')
  return body
}

t.test('login: beyond RATE_LIMIT_LOGIN_PER_MINUTE from one address is 429 RATE_LIMITED', async (t) => {
  const app = await build(t, { env: { ...LIMITS_ON, RATE_LIMIT_LOGIN_PER_MINUTE: '3' } })
  for (let i = 1; i <= 3; i++) {
    const res = await failedLogin(app)
    t.equal(res.statusCode, 401, `attempt ${i} is answered (401: unknown account)`)
    expectWithinLimit(t, res, 3, 3 - i)
  }
  const refused = await failedLogin(app)
  expectRateLimited(t, refused, 3)
  t.match(refused.headers['content-type'], /^application\/problem\+json/)

  // The right password does not get past the limit either: the limit is on the address, before any work.
  const { email } = await signupDirect(app)
  const res = await app.inject({ method: 'POST', url: LOGIN, payload: { email, password: GOOD_PASSWORD } })
  expectRateLimited(t, res, 3)
})

/** Signs a user up (signup has its own budget, not the login one). */
async function signupDirect (app: FastifyInstance) {
  const email = uniqueEmail('rl')
  const res = await app.inject({ method: 'POST', url: SIGNUP, payload: { email, password: GOOD_PASSWORD } })
  if (res.statusCode !== 201) throw new Error(`signup failed: ${res.statusCode} ${res.body}`)
  return { email }
}

t.test('signup: the sixth signup within a minute from one address is 429', async (t) => {
  const app = await build(t, { env: { ...LIMITS_ON } })
  t.equal(app.config.RATE_LIMIT_SIGNUP_PER_MINUTE, 5, 'the default signup limit is 5 a minute')
  for (let i = 1; i <= 5; i++) {
    const res = await app.inject({ method: 'POST', url: SIGNUP, payload: { email: uniqueEmail('rl-signup'), password: GOOD_PASSWORD } })
    t.equal(res.statusCode, 201, `signup ${i} succeeds`)
    expectWithinLimit(t, res, 5, 5 - i)
  }
  const email = uniqueEmail('rl-signup')
  const refused = await app.inject({ method: 'POST', url: SIGNUP, payload: { email, password: GOOD_PASSWORD } })
  expectRateLimited(t, refused, 5)
  const row = await app.db.selectFrom('users').select('id').where('email', '=', email).executeTakeFirst()
  t.notOk(row, 'the refused signup created no account')
})

t.test('password/forgot and email/resend: 5 a minute each, counted apart', async (t) => {
  const app = await build(t, { env: { ...LIMITS_ON } })
  t.equal(app.config.RATE_LIMIT_MAIL_PER_MINUTE, 5, 'the default mail limit is 5 a minute')
  for (const url of [FORGOT, RESEND]) {
    for (let i = 1; i <= 5; i++) {
      const res = await app.inject({ method: 'POST', url, payload: { email: uniqueEmail('rl-mail') } })
      t.equal(res.statusCode, 202, `${url} request ${i} is accepted`)
      expectWithinLimit(t, res, 5, 5 - i)
    }
    expectRateLimited(t, await app.inject({ method: 'POST', url, payload: { email: uniqueEmail('rl-mail') } }), 5)
  }
  await app.background.idle()
})

t.test('refresh: beyond RATE_LIMIT_REFRESH_PER_MINUTE is 429', async (t) => {
  const app = await build(t, { env: { ...LIMITS_ON, RATE_LIMIT_REFRESH_PER_MINUTE: '2' } })
  for (let i = 1; i <= 2; i++) {
    const res = await app.inject({ method: 'POST', url: REFRESH, payload: { refresh_token: `not-a-token-${i}` } })
    t.equal(res.statusCode, 401, `refresh ${i} is answered (401: unknown token)`)
    expectWithinLimit(t, res, 2, 2 - i)
  }
  expectRateLimited(t, await app.inject({ method: 'POST', url: REFRESH, payload: { refresh_token: 'not-a-token-3' } }), 2)
})

t.test('the global limit covers the routes without their own, together', async (t) => {
  const app = await build(t, { env: { ...LIMITS_ON, RATE_LIMIT_GLOBAL_PER_MINUTE: '3' } })
  const first = await get(app, READY)
  t.equal(first.statusCode, 200, 'readiness answers')
  expectWithinLimit(t, first, 3, 2)
  t.equal((await get(app, JWKS)).statusCode, 200, 'the JWKS answers')
  t.equal((await get(app, READY)).statusCode, 200, 'readiness answers a second time')
  expectRateLimited(t, await get(app, JWKS), 3)
  expectRateLimited(t, await get(app, READY), 3)

  // The routes with their own limit keep their own budget.
  const login = await failedLogin(app)
  t.equal(login.statusCode, 401, 'login has its own budget, not the global one')
})

t.test('forward auth (/auth/verify) and /metrics have no per-address limit: a gateway or Prometheus asks from one address for everyone', async (t) => {
  const app = await build(t, { env: { ...LIMITS_ON, RATE_LIMIT_GLOBAL_PER_MINUTE: '2' } })
  const signed = await app.inject({ method: 'POST', url: SIGNUP, payload: { email: uniqueEmail('rl-verify'), password: GOOD_PASSWORD } })
  t.equal(signed.statusCode, 201)
  const auth = { authorization: `Bearer ${signed.json().access_token}` }
  for (let i = 1; i <= 5; i++) {
    const res = await get(app, '/api/v1/auth/verify', auth)
    t.equal(res.statusCode, 200, `verify ${i} answers 200`)
    t.notOk(res.headers['ratelimit-limit'], 'no rate-limit headers')
  }
  for (let i = 1; i <= 3; i++) t.equal((await get(app, '/metrics')).statusCode, 200, `scrape ${i} answers 200`)
  t.equal((await get(app, '/api/v1/users/me', auth)).statusCode, 200, 'me has the global budget')
  t.equal((await get(app, '/api/v1/users/me', auth)).statusCode, 200)
  expectRateLimited(t, await get(app, '/api/v1/users/me', auth), 2)
})

t.test('the global limit covers the documentation routes too', async (t) => {
  const app = await build(t, { env: { ...LIMITS_ON, RATE_LIMIT_GLOBAL_PER_MINUTE: '2' } })
  // The ReDoc bundle is over a megabyte: unlimited, it is the cheapest way to make the service send a lot.
  for (const [n, url] of ['/openapi.json', '/redoc/redoc.standalone.js', '/docs'].entries()) {
    t.test(url, async (t) => {
      // A peer address of its own for each route: the global budget is shared by every route.
      const remoteAddress = `127.0.0.${n + 2}`
      const statuses: number[] = []
      for (let i = 0; i < 3; i++) statuses.push((await app.inject({ method: 'GET', url, remoteAddress })).statusCode)
      t.equal(statuses[0], 200, 'answers within the limit')
      t.equal(statuses[2], 429, `the third request in a minute is refused (statuses: ${statuses.join(' ')})`)
    })
  }
})

t.test('the limit is per client address', async (t) => {
  t.test('TRUST_PROXY=true: two forwarded clients have a budget each', async (t) => {
    const app = await build(t, { env: { ...LIMITS_ON, TRUST_PROXY: 'true', RATE_LIMIT_LOGIN_PER_MINUTE: '3' } })
    const first = { 'x-forwarded-for': '198.51.100.1' }
    const second = { 'x-forwarded-for': '198.51.100.2' }
    for (let i = 1; i <= 3; i++) t.equal((await failedLogin(app, first)).statusCode, 401, `198.51.100.1 attempt ${i} is answered`)
    expectRateLimited(t, await failedLogin(app, first), 3)
    for (let i = 1; i <= 3; i++) {
      const res = await failedLogin(app, second)
      t.equal(res.statusCode, 401, `198.51.100.2 attempt ${i} is answered`)
      expectWithinLimit(t, res, 3, 3 - i)
    }
    expectRateLimited(t, await failedLogin(app, second), 3)
  })

  t.test('TRUST_PROXY=false: a forged X-Forwarded-For buys no new budget', async (t) => {
    const app = await build(t, { env: { ...LIMITS_ON, RATE_LIMIT_LOGIN_PER_MINUTE: '3' } })
    for (let i = 1; i <= 3; i++) {
      t.equal((await failedLogin(app, { 'x-forwarded-for': `198.51.100.${i}` })).statusCode, 401, `attempt ${i} is answered`)
    }
    expectRateLimited(t, await failedLogin(app, { 'x-forwarded-for': '198.51.100.99' }), 3)
  })

  t.test('TRUST_PROXY=false: another peer address has its own budget', async (t) => {
    const app = await build(t, { env: { ...LIMITS_ON, RATE_LIMIT_GLOBAL_PER_MINUTE: '2' } })
    const from = (remoteAddress: string) => app.inject({ method: 'GET', url: READY, remoteAddress })
    t.equal((await from('127.0.0.1')).statusCode, 200)
    t.equal((await from('127.0.0.1')).statusCode, 200)
    expectRateLimited(t, await from('127.0.0.1'), 2)
    const other = await from('127.0.0.2')
    t.equal(other.statusCode, 200, 'a second peer is not limited by the first')
    expectWithinLimit(t, other, 2, 1)
  })
})

t.test('RATE_LIMIT_ENABLED=false: no 429 however many requests', async (t) => {
  const app = await build(t, {
    env: { RATE_LIMIT_ENABLED: 'false', MAX_EVENT_LOOP_DELAY_MS: '0', RATE_LIMIT_GLOBAL_PER_MINUTE: '2', RATE_LIMIT_LOGIN_PER_MINUTE: '2', RATE_LIMIT_REFRESH_PER_MINUTE: '2' }
  })
  const statuses: number[] = []
  for (let i = 0; i < 30; i++) statuses.push((await get(app, i % 2 ? READY : JWKS)).statusCode)
  for (let i = 0; i < 10; i++) statuses.push((await failedLogin(app)).statusCode)
  for (let i = 0; i < 10; i++) statuses.push((await app.inject({ method: 'POST', url: REFRESH, payload: { refresh_token: `nope-${i}` } })).statusCode)
  t.equal(statuses.length, 50, '50 requests sent')
  t.notOk(statuses.includes(429), 'none answered 429')
  t.same([...new Set(statuses)].sort(), [200, 401], 'every answer is the route\'s own (200 or 401)')
  const res = await get(app, READY)
  t.notOk(res.headers['ratelimit-limit'], 'no RateLimit headers')
})

const redisUrl = process.env.TEST_REDIS_URL

if (!redisUrl) {
  if (process.env.CI === 'true') {
    t.fail('TEST_REDIS_URL is not set: CI must test the rate-limit counters shared through a real Redis (e.g. TEST_REDIS_URL=redis://127.0.0.1:6379)')
  } else {
    const why = 'TEST_REDIS_URL is not set: set it (e.g. redis://127.0.0.1:6379) to test rate-limit counters shared through Redis; CI sets it and fails without it'
    t.test('rate-limit counters shared through Redis', { skip: why }, (t) => { t.ok(redisUrl, 'TEST_REDIS_URL is set') })
  }
} else {
  t.test('with REDIS_URL two instances share the counters', async (t) => {
    // Keys of this run only, so parallel runs on the same Redis do not count each other's requests.
    const prefix = `test-rl-${process.pid}-${randomUUID().slice(0, 8)}:`
    const redis = new Redis(redisUrl)
    t.teardown(async () => {
      const keys = await redis.keys(`${prefix}*`)
      if (keys.length > 0) await redis.del(...keys)
      await redis.quit()
    })
    const env = { ...LIMITS_ON, REDIS_URL: redisUrl, REDIS_KEY_PREFIX: prefix, RATE_LIMIT_LOGIN_PER_MINUTE: '3', RATE_LIMIT_GLOBAL_PER_MINUTE: '4' }
    const a = await build(t, { env })
    const b = await build(t, { env })

    for (let i = 1; i <= 3; i++) {
      const res = await failedLogin(a)
      t.equal(res.statusCode, 401, `login ${i} on A is answered`)
      expectWithinLimit(t, res, 3, 3 - i)
    }
    expectRateLimited(t, await failedLogin(b), 3)
    expectRateLimited(t, await failedLogin(a), 3)

    // The global counter too: 2 on A, 2 on B, the fifth on either is refused.
    t.equal((await get(a, READY)).statusCode, 200)
    t.equal((await get(a, READY)).statusCode, 200)
    t.equal((await get(b, JWKS)).statusCode, 200)
    const fourth = await get(b, READY)
    t.equal(fourth.statusCode, 200)
    expectWithinLimit(t, fourth, 4, 0)
    expectRateLimited(t, await get(a, JWKS), 4)

    const keys = await redis.keys(`${prefix}rate-limit:*`)
    t.ok(keys.length >= 2, `the counters live in Redis under the instance's prefix (${keys.length} keys)`)
  })
}
