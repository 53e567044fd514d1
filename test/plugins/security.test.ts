import type { InjectOptions, LightMyRequestResponse } from 'fastify'
import t, { type Test } from 'tap'
import { bearer, build, buildLogged, databases, GOOD_PASSWORD, json, uniqueEmail } from '../helper.js'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

function helmetHeaders (t: Test, res: LightMyRequestResponse, what: string) {
  t.equal(res.headers['x-frame-options'], 'DENY', `${what}: X-Frame-Options DENY`)
  t.equal(res.headers['x-content-type-options'], 'nosniff', `${what}: X-Content-Type-Options nosniff`)
  const csp = String(res.headers['content-security-policy'] ?? '')
  t.match(csp, /default-src '(self|none)'/, `${what}: a Content-Security-Policy`)
  t.match(csp, /frame-ancestors 'none'/, `${what}: CSP frame-ancestors 'none'`)
  t.notMatch(csp, /script-src[^;]*'unsafe-inline'/, `${what}: no inline scripts allowed`)
}

t.test('X-Request-Id', async (t) => {
  const app = await build(t)

  t.test('a well-formed id from the caller is echoed and used as request_id', async (t) => {
    for (const id of ['abc-123', 'trace.ID_42-x', 'a'.repeat(128), '0f8fad5b-d9cb-469f-a165-70867728950e']) {
      const health = await app.inject({ method: 'GET', url: '/api/health', headers: { 'x-request-id': id } })
      t.equal(health.headers['x-request-id'], id, `echoed on a 200: ${id.slice(0, 20)}`)
      const refused = await app.inject({ method: 'GET', url: '/api/v1/users/me', headers: { 'x-request-id': id } })
      t.equal(refused.headers['x-request-id'], id, 'echoed on a 401')
      t.equal(json(refused).request_id, id, 'and is the request_id of the problem')
    }
  })

  t.test('an invalid id is replaced with a fresh one', async (t) => {
    for (const id of ['a'.repeat(129), 'has space', 'semi;colon', '<script>', 'é', 'a/b', 'a,b']) {
      const res = await app.inject({ method: 'GET', url: '/api/v1/users/me', headers: { 'x-request-id': id } })
      const given = res.headers['x-request-id']
      t.not(given, id, `not echoed: ${JSON.stringify(id.slice(0, 20))}`)
      t.match(given, UUID, 'a generated uuid instead')
      t.equal(json(res).request_id, given, 'used as request_id')
    }
    const empty = await app.inject({ method: 'GET', url: '/api/health', headers: { 'x-request-id': '' } })
    t.match(empty.headers['x-request-id'], UUID, 'an empty id is replaced')
  })

  t.test('every response has one, each its own', async (t) => {
    const ids = new Set<string>()
    const cases: Array<[string, InjectOptions]> = [
      ['200', { method: 'GET', url: '/api/health' }],
      ['404', { method: 'GET', url: '/no/such/route' }],
      ['405', { method: 'DELETE', url: '/api/v1/auth/login' }],
      ['400 validation', { method: 'POST', url: '/api/v1/auth/signup', payload: { email: 'nope' } }],
      ['400 malformed JSON', { method: 'POST', url: '/api/v1/auth/login', headers: { 'content-type': 'application/json' }, payload: '{' }],
      ['415', { method: 'POST', url: '/api/v1/auth/login', headers: { 'content-type': 'text/plain' }, payload: 'x' }],
      ['401', { method: 'GET', url: '/api/v1/users/me' }],
      ['400 malformed URL', { method: 'GET', url: '/api/v1/%E0%A4%A' }]
    ]
    for (const [what, request] of cases) {
      const res = await app.inject(request)
      const id = res.headers['x-request-id']
      t.match(id, UUID, `${what} (${res.statusCode}): X-Request-Id present`)
      if (res.statusCode >= 400) t.equal(json(res).request_id, id, `${what}: the problem names it`)
      ids.add(String(id))
    }
    t.equal(ids.size, cases.length, 'all different')
  })
})

t.test('helmet headers on success and on errors', async (t) => {
  const app = await build(t)
  helmetHeaders(t, await app.inject({ method: 'GET', url: '/api/health' }), '200')
  helmetHeaders(t, await app.inject({ method: 'GET', url: '/.well-known/jwks.json' }), 'jwks')
  helmetHeaders(t, await app.inject({ method: 'GET', url: '/nope' }), '404')
  helmetHeaders(t, await app.inject({ method: 'GET', url: '/api/v1/users/me' }), '401')
  helmetHeaders(t, await app.inject({ method: 'DELETE', url: '/api/v1/auth/login' }), '405')
  helmetHeaders(t, await app.inject({ method: 'POST', url: '/api/v1/auth/signup', payload: { email: 'x' } }), '400')
  helmetHeaders(t, await app.inject({ method: 'POST', url: '/api/v1/auth/login', headers: { 'content-type': 'text/plain' }, payload: 'x' }), '415')
  helmetHeaders(t, await app.inject({ method: 'GET', url: '/docs' }), 'docs')
})

t.test('JSON answers carry the REST set and no-store; the docs pages carry helmet\'s set for HTML', async (t) => {
  const app = await build(t)
  const HTML_ONLY = ['cross-origin-opener-policy', 'cross-origin-resource-policy', 'origin-agent-cluster', 'referrer-policy', 'x-dns-prefetch-control', 'x-download-options', 'x-permitted-cross-domain-policies', 'x-xss-protection']
  const signed = json(await app.inject({ method: 'POST', url: '/api/v1/auth/signup', payload: { email: uniqueEmail(), password: GOOD_PASSWORD } }))
  const answers: Array<[string, LightMyRequestResponse]> = [
    ['login', await app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email: signed.user.email, password: GOOD_PASSWORD } })],
    ['refresh', await app.inject({ method: 'POST', url: '/api/v1/auth/refresh', payload: { refresh_token: signed.refresh_token } })],
    ['me', await app.inject({ method: 'GET', url: '/api/v1/users/me', headers: bearer(signed.access_token) })],
    ['401', await app.inject({ method: 'GET', url: '/api/v1/users/me' })]
  ]
  answers.push(['signup', await app.inject({ method: 'POST', url: '/api/v1/auth/signup', payload: { email: uniqueEmail(), password: GOOD_PASSWORD } })])
  for (const [what, res] of answers) {
    t.ok(res.statusCode < 300 || what === '401', `${what}: answered (${res.statusCode})`)
    t.equal(res.headers['cache-control'], 'no-store', `${what}: Cache-Control no-store (tokens and profiles are not cached)`)
    t.equal(res.headers.pragma, 'no-cache', `${what}: Pragma no-cache (RFC 6749, 5.1, for HTTP/1.0 caches)`)
    t.equal(res.headers['strict-transport-security'], 'max-age=31536000; includeSubDomains', `${what}: HSTS`)
    t.equal(res.headers['content-security-policy'], "default-src 'none'; frame-ancestors 'none'", `${what}: the JSON policy`)
    for (const name of HTML_ONLY) t.notOk(name in res.headers, `${what}: no ${name}`)
  }
  const docs = await app.inject({ method: 'GET', url: '/docs' })
  const page = docs.statusCode === 302 ? await app.inject({ method: 'GET', url: docs.headers.location as string }) : docs
  for (const [what, res] of [['docs', page], ['redoc', await app.inject({ method: 'GET', url: '/redoc' })]] as const) {
    t.equal(res.statusCode, 200, `${what}: 200`)
    t.match(String(res.headers['content-security-policy']), /^default-src 'self'/, `${what}: the docs policy`)
    for (const name of HTML_ONLY) t.ok(name in res.headers, `${what}: ${name}`)
  }
  const jwks = await app.inject({ method: 'GET', url: '/.well-known/jwks.json' })
  t.match(jwks.headers['cache-control'], /^public, max-age=\d+$/, 'the JWKS is still cacheable')
  t.notOk('pragma' in jwks.headers, 'and says no Pragma: no-cache against it')
  const head = await app.inject({ method: 'HEAD', url: '/.well-known/jwks.json' })
  t.match(head.headers['cache-control'], /^public/, 'HEAD: cacheable')
  t.notOk('pragma' in head.headers, 'HEAD: no Pragma either')
  const bundle = await app.inject({ method: 'GET', url: '/redoc/redoc.standalone.js' })
  t.equal(bundle.statusCode, 200, 'the ReDoc bundle')
  t.match(bundle.headers['cache-control'], /^public/, 'is cacheable')
  t.notOk('pragma' in bundle.headers, 'with no Pragma against it')
})

t.test('helmet headers and X-Request-Id on router errors (bad URL)', async (t) => {
  const app = await build(t)
  for (const url of ['/api/v1/%E0%A4%A', `/api/v1/users/me/sessions/${'a'.repeat(500)}`]) {
    const res = await app.inject({ method: 'DELETE', url })
    t.ok(res.statusCode >= 400 && res.statusCode < 500, `4xx (got ${res.statusCode})`)
    t.equal(json(res).request_id, res.headers['x-request-id'], 'X-Request-Id is the request_id')
    helmetHeaders(t, res, `${res.statusCode} from the router`)
  }
})

t.test('ALLOWED_HOSTS', async (t) => {
  const app = await build(t, { env: { ALLOWED_HOSTS: 'api.example.com' } })
  for (const host of ['api.example.com', 'API.Example.COM', 'api.example.com:8443']) {
    const res = await app.inject({ method: 'GET', url: '/api/health', headers: { host } })
    t.equal(res.statusCode, 200, `Host ${host} is served`)
    t.same(json(res).status, 'ok')
  }
  for (const host of ['evil.com', 'api.example.com.evil.com', 'evil.com:443', 'localhost']) {
    const res = await app.inject({ method: 'GET', url: '/api/health', headers: { host } })
    t.equal(res.statusCode, 400, `Host ${host} is refused`)
    t.match(res.headers['content-type'], /^application\/problem\+json/)
    const body = json(res)
    t.equal(body.code, 'INVALID_HOST')
    t.equal(body.request_id, res.headers['x-request-id'], 'the refusal carries its X-Request-Id')
    helmetHeaders(t, res, 'INVALID_HOST')
  }
  const forwarded = await app.inject({ method: 'GET', url: '/api/health', headers: { host: 'evil.com', 'x-forwarded-host': 'api.example.com' } })
  t.equal(forwarded.statusCode, 400, 'X-Forwarded-Host from an untrusted client is ignored')
  const signup = await app.inject({ method: 'POST', url: '/api/v1/auth/signup', headers: { host: 'evil.com' }, payload: { email: uniqueEmail(), password: GOOD_PASSWORD } })
  t.equal(signup.statusCode, 400, 'no route runs for a refused host')
  t.equal(json(signup).code, 'INVALID_HOST')

  const any = await build(t)
  t.equal((await any.inject({ method: 'GET', url: '/api/health', headers: { host: 'whatever.example' } })).statusCode, 200, 'the default * takes any host')
})

t.test('ALLOWED_HOSTS behind a trusted proxy checks the Host header, never X-Forwarded-Host', async (t) => {
  const app = await build(t, { env: { ALLOWED_HOSTS: 'api.example.com', TRUST_PROXY: 'true' } })
  const health = (headers: Record<string, string>) => app.inject({ method: 'GET', url: '/api/health', headers })
  const forged = await health({ host: 'evil.com', 'x-forwarded-host': 'api.example.com' })
  t.equal(forged.statusCode, 400, 'a forged X-Forwarded-Host does not let another Host in')
  t.equal(json(forged).code, 'INVALID_HOST')
  t.equal((await health({ host: 'api.example.com', 'x-forwarded-host': 'evil.com' })).statusCode, 200, 'the Host asked for is served, whatever is forwarded')
  t.equal((await health({ host: 'api.example.com:8443', forwarded: 'host=evil.com' })).statusCode, 200, 'the port is ignored')
  const ipv6 = await build(t, { env: { ALLOWED_HOSTS: '[::1]', TRUST_PROXY: 'true' } })
  t.equal((await ipv6.inject({ method: 'GET', url: '/api/health', headers: { host: '[::1]:8000' } })).statusCode, 200, 'an IPv6 literal with a port')
  t.equal((await ipv6.inject({ method: 'GET', url: '/api/health', headers: { host: '[::2]:8000', 'x-forwarded-host': '[::1]' } })).statusCode, 400, 'another IPv6 literal')
})

t.test('CORS', async (t) => {
  t.test('CORS_ORIGINS unset allows no origin', async (t) => {
    const app = await build(t)
    const res = await app.inject({ method: 'GET', url: '/api/health', headers: { origin: 'https://app.example.com' } })
    t.equal(res.statusCode, 200)
    t.equal(res.headers['access-control-allow-origin'], undefined, 'no Access-Control-Allow-Origin')
    const preflight = await app.inject({ method: 'OPTIONS', url: '/api/v1/auth/login', headers: { origin: 'https://app.example.com', 'access-control-request-method': 'POST' } })
    t.equal(preflight.headers['access-control-allow-origin'], undefined, 'no preflight grant')
    t.not(preflight.statusCode, 500)
  })

  t.test('CORS_ORIGINS names the allowed origins', async (t) => {
    const app = await build(t, { env: { CORS_ORIGINS: 'https://app.example.com' } })
    const allowed = await app.inject({ method: 'GET', url: '/api/health', headers: { origin: 'https://app.example.com' } })
    t.equal(allowed.headers['access-control-allow-origin'], 'https://app.example.com')
    t.match(allowed.headers.vary, /Origin/i, 'Vary: Origin')
    t.match(allowed.headers['access-control-expose-headers'], /X-Request-Id/i, 'X-Request-Id is readable by the page')

    for (const origin of ['https://evil.example.com', 'http://app.example.com', 'https://app.example.com.evil.com']) {
      const other = await app.inject({ method: 'GET', url: '/api/health', headers: { origin } })
      t.equal(other.headers['access-control-allow-origin'], undefined, `${origin} is not allowed`)
    }

    const preflight = await app.inject({
      method: 'OPTIONS',
      url: '/api/v1/auth/login',
      headers: { origin: 'https://app.example.com', 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type' }
    })
    t.equal(preflight.statusCode, 204, 'preflight answered')
    t.equal(preflight.headers['access-control-allow-origin'], 'https://app.example.com')
    t.match(preflight.headers['access-control-allow-methods'], /\bPOST\b/)
    t.match(preflight.headers['access-control-allow-headers'], /Authorization/i)
    t.match(preflight.headers['access-control-allow-headers'], /Content-Type/i)
    t.ok(Number(preflight.headers['access-control-max-age']) > 0, 'cached')

    const denied = await app.inject({ method: 'OPTIONS', url: '/api/v1/auth/login', headers: { origin: 'https://evil.example.com', 'access-control-request-method': 'POST' } })
    t.equal(denied.headers['access-control-allow-origin'], undefined, 'no grant for another origin')

    // A real request from the allowed origin works end to end.
    const signup = await app.inject({ method: 'POST', url: '/api/v1/auth/signup', headers: { origin: 'https://app.example.com' }, payload: { email: uniqueEmail(), password: GOOD_PASSWORD } })
    t.equal(signup.statusCode, 201)
    t.equal(signup.headers['access-control-allow-origin'], 'https://app.example.com')
  })
})

t.test('LOG_LEVEL decides what is written: at warn, no request lines; at debug, they are there', async (t) => {
  const quiet = await buildLogged(t, { env: { LOG_LEVEL: 'warn' } })
  t.equal((await quiet.fastify.inject({ method: 'GET', url: '/api/health' })).statusCode, 200)
  t.equal((await quiet.fastify.inject({ method: 'GET', url: '/nope' })).statusCode, 404)
  t.equal(quiet.lines().filter((l) => l.msg === 'request').length, 0, 'no request lines at warn')
  t.ok(quiet.lines().every((l) => l.level >= 40), 'nothing below warn')
  const chatty = await buildLogged(t, { env: { LOG_LEVEL: 'debug' } })
  await chatty.fastify.inject({ method: 'GET', url: '/api/health' })
  t.equal(chatty.lines().filter((l) => l.msg === 'request').length, 1, 'the request line at debug')
})

t.test('refused and malformed requests are logged with one request line too', async (t) => {
  const { fastify, lines } = await buildLogged(t, { env: { ALLOWED_HOSTS: 'api.example.com' } })
  const cases: Array<[string, InjectOptions]> = [
    ['404', { method: 'GET', url: '/nope', headers: { host: 'api.example.com' } }],
    ['INVALID_HOST', { method: 'GET', url: '/api/health', headers: { host: 'evil.com' } }],
    ['bad URL', { method: 'GET', url: '/api/v1/%E0%A4%A', headers: { host: 'api.example.com' } }]
  ]
  for (const [what, request] of cases) {
    const res = await fastify.inject(request)
    const id = json(res).request_id
    const logged = lines().filter((line) => line.msg === 'request' && line.request_id === id)
    t.equal(logged.length, 1, `${what}: one request line`)
    t.equal(logged[0]?.status, res.statusCode, `${what}: with its status`)
  }
})

for (const db of databases) {
  t.test(`${db.name}: one log line per request, and no secrets in the log`, async (t) => {
    const { fastify, text, lines: readLines } = await buildLogged(t, { env: { DATABASE_URL: db.url } })

    const email = uniqueEmail('logs')
    const responses: LightMyRequestResponse[] = []
    const signup = await fastify.inject({ method: 'POST', url: '/api/v1/auth/signup', payload: { email, password: GOOD_PASSWORD } })
    responses.push(signup)
    t.equal(signup.statusCode, 201)
    const wrong = await fastify.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email, password: `${GOOD_PASSWORD} wrong` } })
    responses.push(wrong)
    t.equal(wrong.statusCode, 401)
    const login = await fastify.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email, password: GOOD_PASSWORD } })
    responses.push(login)
    t.equal(login.statusCode, 200)
    const me = await fastify.inject({ method: 'GET', url: '/api/v1/users/me', headers: bearer(json(login).access_token) })
    responses.push(me)
    t.equal(me.statusCode, 200)
    const refresh = await fastify.inject({ method: 'POST', url: '/api/v1/auth/refresh', payload: { refresh_token: json(login).refresh_token } })
    responses.push(refresh)
    t.equal(refresh.statusCode, 200)

    const lines = readLines()
    const requestLines = lines.filter((line) => line.msg === 'request')
    t.equal(requestLines.length, responses.length, 'one request line per request')
    const expected = [
      ['POST', '/api/v1/auth/signup', 201],
      ['POST', '/api/v1/auth/login', 401],
      ['POST', '/api/v1/auth/login', 200],
      ['GET', '/api/v1/users/me', 200],
      ['POST', '/api/v1/auth/refresh', 200]
    ] as const
    expected.forEach(([method, route, status], i) => {
      const line = requestLines[i] ?? {}
      t.equal(line.request_id, responses[i].headers['x-request-id'], `${route}: request_id`)
      t.equal(line.method, method)
      t.equal(line.route, route, 'route')
      t.equal(line.status, status, 'status')
      t.type(line.duration_ms, 'number')
      t.equal(lines.filter((l) => l.msg === 'request' && l.request_id === line.request_id).length, 1, 'exactly one request line for it')
    })
    t.equal(requestLines[3]?.user_id, json(login).user.id, '/me names the user')

    const log = text()
    const secrets: Record<string, string> = {
      password: GOOD_PASSWORD,
      'signup access token': json(signup).access_token,
      'signup refresh token': json(signup).refresh_token,
      'login access token': json(login).access_token,
      'login refresh token': json(login).refresh_token,
      'rotated access token': json(refresh).access_token,
      'rotated refresh token': json(refresh).refresh_token,
      'Authorization header': bearer(json(login).access_token).authorization
    }
    for (const [what, secret] of Object.entries(secrets)) {
      t.notOk(log.includes(secret), `the log never contains the ${what}`)
      t.notOk(log.includes(secret.split('.').slice(-1)[0]), `nor the signature part of the ${what}`)
    }
  })
}
