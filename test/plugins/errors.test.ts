import type { LightMyRequestResponse } from 'fastify'
import t, { type Test } from 'tap'
import { bearer, build, databases, json, signup } from '../helper.js'

const PROBLEM_FIELDS = ['code', 'detail', 'request_id', 'status', 'title', 'type']

/** Asserts `res` is an RFC 9457 problem with the service's fields, and returns its body. */
function problem (t: Test, res: LightMyRequestResponse, status: number | null, code: string | null) {
  if (status === null) {
    t.ok(res.statusCode >= 400 && res.statusCode < 500, `a 4xx (got ${res.statusCode})`)
  } else {
    t.equal(res.statusCode, status, `status ${status}`)
  }
  t.match(res.headers['content-type'], /^application\/problem\+json/, 'application/problem+json')
  const body = json(res)
  for (const field of PROBLEM_FIELDS) t.ok(field in body, `has ${field}`)
  t.type(body.type, 'string')
  t.type(body.title, 'string')
  t.ok(body.title.length > 0, 'a title')
  t.equal(body.status, res.statusCode, 'status in the body is the response status')
  t.type(body.detail, 'string')
  t.match(body.code, /^[A-Z][A-Z0-9_]*$/, 'an UPPER_SNAKE code')
  if (code !== null) t.equal(body.code, code, `code ${code}`)
  if (body.code === 'NOT_FOUND') t.equal(body.status, 404, 'NOT_FOUND is only said with 404')
  t.type(body.request_id, 'string')
  t.equal(body.request_id, res.headers['x-request-id'], 'request_id equals the X-Request-Id header')
  return body
}

t.test('an unknown route is 404 NOT_FOUND', async (t) => {
  const app = await build(t)
  for (const [method, url] of [['GET', '/nope'], ['POST', '/api/v1/nothing'], ['GET', '/api/v1/users/you'], ['DELETE', '/api/v1/auth']] as const) {
    const res = await app.inject({ method, url, ...(method === 'POST' ? { payload: {} } : {}) })
    const body = problem(t, res, 404, 'NOT_FOUND')
    t.equal(body.title, 'Not Found')
    t.equal(body.type, 'about:blank')
    t.equal(res.headers.allow, undefined, 'no Allow on a 404')
  }
})

t.test('a known path with the wrong method is 405 with Allow', async (t) => {
  const app = await build(t)
  const res = await app.inject({ method: 'DELETE', url: '/api/v1/auth/login' })
  const body = problem(t, res, 405, 'METHOD_NOT_ALLOWED')
  t.equal(body.title, 'Method Not Allowed')
  t.match(res.headers.allow, /\bPOST\b/, 'Allow names POST')
  t.notMatch(res.headers.allow, /\bDELETE\b/, 'but not DELETE')

  const health = await app.inject({ method: 'PUT', url: '/api/health', payload: {} })
  problem(t, health, 405, 'METHOD_NOT_ALLOWED')
  t.match(health.headers.allow, /\bGET\b/)

  const me = await app.inject({ method: 'POST', url: '/api/v1/users/me', payload: {} })
  problem(t, me, 405, 'METHOD_NOT_ALLOWED')
  for (const method of ['GET', 'PATCH', 'PUT', 'DELETE']) t.match(me.headers.allow, new RegExp(`\\b${method}\\b`), `Allow names ${method}`)
})

t.test('malformed JSON is 400 MALFORMED_JSON', async (t) => {
  const app = await build(t)
  for (const payload of ['{bad', '{"email": "a@example.com",}', '[']) {
    const res = await app.inject({ method: 'POST', url: '/api/v1/auth/login', headers: { 'content-type': 'application/json' }, payload })
    const body = problem(t, res, 400, 'MALFORMED_JSON')
    t.equal(body.title, 'Bad Request')
  }
})

t.test('a body over BODY_LIMIT_BYTES is 413', async (t) => {
  const app = await build(t)
  const payload = JSON.stringify({ email: 'big@example.com', password: 'x'.repeat(20_000) })
  const res = await app.inject({ method: 'POST', url: '/api/v1/auth/login', headers: { 'content-type': 'application/json' }, payload })
  problem(t, res, 413, 'PAYLOAD_TOO_LARGE')

  const small = await build(t, { env: { BODY_LIMIT_BYTES: '1024' } })
  const over = await small.inject({ method: 'POST', url: '/api/v1/auth/signup', headers: { 'content-type': 'application/json' }, payload: JSON.stringify({ email: 'a@example.com', password: 'y'.repeat(1100) }) })
  problem(t, over, 413, 'PAYLOAD_TOO_LARGE')
})

t.test('a body that is not JSON is 415', async (t) => {
  const app = await build(t)
  for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'application/xml']) {
    const res = await app.inject({ method: 'POST', url: '/api/v1/auth/login', headers: { 'content-type': type }, payload: 'email=a@example.com&password=x' })
    problem(t, res, 415, 'UNSUPPORTED_MEDIA_TYPE')
  }
})

t.test('validation problems keep their field list', async (t) => {
  const app = await build(t)
  const res = await app.inject({ method: 'POST', url: '/api/v1/auth/signup', payload: { email: 'not-an-email', password: 'correct horse battery staple' } })
  const body = problem(t, res, 400, 'VALIDATION_FAILED')
  t.match(body.errors, [{ field: '/body/email', message: String }])
  t.match(body.detail, /\/body\/email/)
})

t.test('bad URLs are 4xx problems, never 500', async (t) => {
  const app = await build(t)
  const urls = [
    '/api/v1/%E0%A4%A',
    '/api/v1/users/me/%E0%A4%A',
    '/%',
    '/api/v1/users/me/sessions/%E0%A4%A',
    `/api/v1/users/me/sessions/${'a'.repeat(500)}`,
    `/docs/static/${'b'.repeat(5000)}`,
    `/${'c'.repeat(20_000)}`
  ]
  for (const url of urls) {
    for (const method of ['GET', 'DELETE'] as const) {
      const res = await app.inject({ method, url })
      t.test(`${method} ${url.slice(0, 50)}`, async (t) => { problem(t, res, null, null) })
    }
  }
  const malformed = await app.inject({ method: 'GET', url: '/api/v1/%E0%A4%A' })
  problem(t, malformed, 400, 'MALFORMED_URL')
  const query = await app.inject({ method: 'GET', url: '/api/health?x=%E0%A4%A' })
  t.ok(query.statusCode < 500, `a malformed query string is no 500 (got ${query.statusCode})`)
})

for (const db of databases) {
  t.test(`${db.name}: a 5xx says nothing of internals`, async (t) => {
    const app = await build(t, { env: { DATABASE_URL: db.url } })
    const signed = await signup(app)
    await app.db.destroy()
    const res = await app.inject({ method: 'GET', url: '/api/v1/users/me', headers: bearer(signed.access_token) })
    t.ok(res.statusCode >= 500, `a 5xx (got ${res.statusCode})`)
    t.match(res.headers['content-type'], /^application\/problem\+json/)
    const body = json(res)
    t.equal(body.status, res.statusCode)
    t.equal(body.request_id, res.headers['x-request-id'])
    if (res.statusCode === 500) t.equal(body.code, 'INTERNAL_ERROR')
    t.notMatch(res.body, /destroy|driver|kysely|sqlite|postgres|stack|\bat \w+ \(|node_modules/i, 'no internals in the body')
    t.match(body.detail, /request id/i, 'tells the caller to quote the request id')
  })
}
