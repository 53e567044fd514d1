import t from 'tap'
import {
  bearer, build, databases, expectProblem, GOOD_PASSWORD, json, metricValue, movableClock,
  parseMetrics, refresh, scrape, signup, uniqueEmail, type Sample
} from '../helper.js'
import type { FastifyInstance } from 'fastify'

const METRICS_TOKEN = 'a-metrics-token-for-the-tests-0123'
const OUR_METRICS = [
  'auth_http_request_duration_seconds', 'auth_signups_total', 'auth_logins_total', 'auth_refreshes_total',
  'auth_refresh_token_reuse_total', 'auth_sessions_revoked_total', 'auth_mails_total', 'auth_rate_limited_total',
  'auth_password_hash_duration_seconds', 'auth_active_sessions', 'auth_database_unavailable_total', 'auth_redis_up',
  'auth_redis_fallbacks_total'
]

const post = (app: FastifyInstance, url: string, payload: Record<string, unknown>) => app.inject({ method: 'POST', url, payload })
const signUp = (app: FastifyInstance, email: string, password = GOOD_PASSWORD) => post(app, '/api/v1/auth/signup', { email, password })
const logIn = (app: FastifyInstance, email: string, password = GOOD_PASSWORD) => post(app, '/api/v1/auth/login', { email, password })

const find = (samples: Sample[], name: string, labels: Record<string, string> = {}) =>
  samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))

t.test('the text format: every metric of ours described, process metrics alongside, parseable line by line', async (t) => {
  const app = await build(t)
  const res = await app.inject({ method: 'GET', url: '/metrics' })
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], /^text\/plain; version=0\.0\.4/, 'the Prometheus content type')
  for (const name of OUR_METRICS) {
    t.match(res.body, new RegExp(`^# HELP ${name} \\S`, 'm'), `${name} has help`)
    t.match(res.body, new RegExp(`^# TYPE ${name} (counter|gauge|histogram)$`, 'm'), `${name} has a type`)
  }
  const samples = parseMetrics(res.body)
  t.ok(find(samples, 'process_cpu_user_seconds_total'), 'process CPU')
  t.ok(find(samples, 'process_resident_memory_bytes'), 'process memory')
  t.ok(find(samples, 'nodejs_eventloop_lag_seconds'), 'event-loop lag')
  t.equal(find(samples, 'auth_active_sessions')?.value, 0, 'no sessions yet')
  t.throws(() => parseMetrics('auth_x{broken 1'), /not a sample line/, 'the parser refuses what it cannot read')
})

t.test('HTTP durations are labelled by method, route pattern and status, never by the raw URL', async (t) => {
  const app = await build(t)
  const body = await signup(app)
  const sessionId = '0b6f6c5e-1d7a-4c3e-9f0a-7d1c2e3f4a5b'
  const ended = await app.inject({ method: 'DELETE', url: `/api/v1/users/me/sessions/${sessionId}`, headers: bearer(body.access_token) })
  t.equal(ended.statusCode, 404, 'an unknown session')
  t.equal((await app.inject({ method: 'GET', url: '/no/such/path/secret-looking-123' })).statusCode, 404)

  const text = (await app.inject({ method: 'GET', url: '/metrics' })).body
  t.notOk(text.includes(sessionId), 'no id from a URL')
  t.notOk(text.includes('secret-looking-123'), 'no unmatched path')
  const samples = parseMetrics(text)
  const count = (labels: Record<string, string>) => find(samples, 'auth_http_request_duration_seconds_count', labels)?.value
  t.equal(count({ method: 'POST', route: '/api/v1/auth/signup', status: '201' }), 1, 'the signup')
  t.equal(count({ method: 'DELETE', route: '/api/v1/users/me/sessions/:id', status: '404' }), 1, 'the pattern of a route with a parameter')
  t.equal(count({ method: 'GET', route: 'unmatched', status: '404' }), 1, 'an unknown path is "unmatched"')
  const buckets = samples.filter((s) => s.name === 'auth_http_request_duration_seconds_bucket' && s.labels.route === '/api/v1/auth/signup')
  t.ok(buckets.length > 5, 'with buckets')
  t.equal(buckets.find((s) => s.labels.le === '+Inf')?.value, 1, 'the +Inf bucket holds the request')
  const sum = find(samples, 'auth_http_request_duration_seconds_sum', { route: '/api/v1/auth/signup' })!.value
  t.ok(sum > 0 && sum < 60, `a duration in seconds (${sum})`)
})

for (const db of databases) {
  t.test(`${db.name}: signups, logins, refreshes by result; reuse, revocations, hashing, active sessions`, async (t) => {
    const clock = movableClock()
    const app = await build(t, { env: { DATABASE_URL: db.url, REFRESH_REUSE_GRACE_SECONDS: '5' }, now: clock.now })
    const before = await scrape(app)
    const value = async (name: string, labels: Record<string, string> = {}) =>
      (await metricValue(app, name, labels)) - (find(before, name, labels)?.value ?? 0)
    const active = async () => (await scrape(app)).find((s) => s.name === 'auth_active_sessions')!.value
    const activeAtStart = await active()

    const email = uniqueEmail('metrics')
    t.equal((await signUp(app, email)).statusCode, 201)
    t.equal((await signUp(app, email)).statusCode, 409)
    t.equal((await signUp(app, uniqueEmail('weak'), 'short')).statusCode, 400)
    t.equal((await post(app, '/api/v1/auth/signup', { email: 'not an address' })).statusCode, 400)
    t.equal(await value('auth_signups_total', { result: 'success' }), 1, 'one signup')
    t.equal(await value('auth_signups_total', { result: 'email_taken' }), 1, 'one taken address')
    t.equal(await value('auth_signups_total', { result: 'weak_password' }), 1, 'one weak password')
    t.equal(await value('auth_signups_total', { result: 'validation_failed' }), 1, 'one refused body')

    const signedIn = await logIn(app, email)
    t.equal(signedIn.statusCode, 200)
    t.equal((await logIn(app, email, 'not the password at all')).statusCode, 401)
    t.equal(await value('auth_logins_total', { result: 'success' }), 1, 'one login')
    t.equal(await value('auth_logins_total', { result: 'invalid_credentials' }), 1, 'one wrong password')
    t.ok(await value('auth_password_hash_duration_seconds_count', { operation: 'hash' }) >= 1, 'hashes timed')
    t.equal(await value('auth_password_hash_duration_seconds_count', { operation: 'verify' }), 2, 'both verifies timed')

    const first = json(signedIn).refresh_token
    const rotated = await refresh(app, first)
    t.equal(rotated.statusCode, 200)
    t.equal((await refresh(app, 'not-a-refresh-token-at-all-0123456789abcdef')).statusCode, 401)
    clock.advance(60)
    t.equal((await refresh(app, first)).statusCode, 401, 'the rotated token again, after the grace')
    t.equal(await value('auth_refreshes_total', { result: 'success' }), 1, 'one refresh')
    t.equal(await value('auth_refreshes_total', { result: 'invalid_refresh_token' }), 1, 'one unknown token')
    t.equal(await value('auth_refreshes_total', { result: 'refresh_token_reused' }), 1, 'one reuse, by result')
    t.equal(await value('auth_refresh_token_reuse_total'), 1, 'and counted as theft')
    t.equal(await value('auth_sessions_revoked_total', { reason: 'refresh_token_reused' }), 1, 'its session revoked')

    t.equal((await app.inject({ method: 'GET', url: '/api/v1/auth/verify', headers: bearer(json(rotated).access_token) })).statusCode, 401, 'the stolen session is over')

    // The gauge is a query, run at most every 15 s: the clock decides when it is stale. Other test
    // files share the PostgreSQL database, so only SQLite, ours alone, can be counted exactly.
    clock.advance(20)
    const withOne = await active()
    if (db.name !== 'sqlite') {
      t.ok(Number.isInteger(withOne) && withOne >= 1, `PostgreSQL counts at least our session (${withOne})`)
      return
    }
    t.equal(withOne - activeAtStart, 1, 'the signup\'s session is active; the stolen one is not')
    const another = json(await logIn(app, email))
    t.equal(await active(), withOne, 'within 15 s the cached count is served')
    clock.advance(16)
    t.equal(await active(), withOne + 1, 'then counted again')
    t.equal((await app.inject({ method: 'POST', url: '/api/v1/auth/logout', headers: bearer(another.access_token) })).statusCode, 204)
    t.equal(await value('auth_sessions_revoked_total', { reason: 'logout' }), 1, 'a logout is a revocation')
    clock.advance(16)
    t.equal(await active(), withOne, 'and leaves the count')
  })
}

t.test('429s are counted by route, and the login outcome says rate_limited', async (t) => {
  const app = await build(t, { env: { RATE_LIMIT_ENABLED: 'true', RATE_LIMIT_LOGIN_PER_MINUTE: '1' } })
  const email = uniqueEmail('limited')
  await logIn(app, email)
  const refused = await logIn(app, email)
  expectProblem(t, refused, 429, 'RATE_LIMITED')
  t.equal(await metricValue(app, 'auth_rate_limited_total', { route: '/api/v1/auth/login' }), 1, 'one 429 on login')
  t.equal(await metricValue(app, 'auth_logins_total', { result: 'rate_limited' }), 1, 'the outcome')
  for (let i = 0; i < 3; i++) t.equal((await app.inject({ method: 'GET', url: '/metrics' })).statusCode, 200, 'scrapes are never rate limited')
})

t.test('METRICS_TOKEN: /metrics needs that bearer', async (t) => {
  const app = await build(t, { env: { METRICS_TOKEN } })
  const ask = (headers: Record<string, string>) => app.inject({ method: 'GET', url: '/metrics', headers })
  for (const [what, headers] of Object.entries<Record<string, string>>({
    'no header': {},
    'a wrong token': bearer('a-metrics-token-for-the-tests-0124'),
    'a prefix of it': bearer(METRICS_TOKEN.slice(0, -1)),
    'another scheme': { authorization: `Basic ${METRICS_TOKEN}` },
    'the token without a scheme': { authorization: METRICS_TOKEN }
  })) {
    const res = await ask(headers)
    expectProblem(t, res, 401, 'METRICS_TOKEN_REQUIRED')
    t.notOk(res.body.includes('auth_'), `${what}: no metric leaks`)
  }
  const res = await ask(bearer(METRICS_TOKEN))
  t.equal(res.statusCode, 200, 'the right token')
  t.ok(parseMetrics(res.body).length > 0, 'gets the metrics')
  t.ok(find(await scrape(app, METRICS_TOKEN), 'auth_http_request_duration_seconds_count', { route: '/metrics', status: '401' }), 'refused scrapes are counted too')
})

t.test('each app has its own registry: two apps in one process do not share counts', async (t) => {
  const a = await build(t)
  const b = await build(t)
  await signup(a)
  t.equal(await metricValue(a, 'auth_signups_total', { result: 'success' }), 1)
  t.equal(await metricValue(b, 'auth_signups_total', { result: 'success' }), 0)
  t.ok(find(await scrape(b), 'process_cpu_user_seconds_total'), 'both have the process metrics')
})
