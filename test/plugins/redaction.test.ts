import type { InjectOptions } from 'fastify'
import t from 'tap'
import { buildLogged, GOOD_PASSWORD, json, uniqueEmail } from '../helper.js'

/**
 * The redaction of app.ts's logger, as configured: the service with its own
 * server options, its log captured at debug, and one line per request that
 * writes what a careless debugging line would (every header, the body, the
 * query). No secret sent may reach the log, on success or on error paths.
 * Emptying the redact paths in serverOptions makes this test fail.
 */
t.test('no secret sent to the service reaches its log', async (t) => {
  const { fastify, text } = await buildLogged(t, {
    env: { LOG_LEVEL: 'debug' },
    // Before the app, so every route of it has the hook; onResponse, so refused requests are written too.
    before: (fastify) => fastify.addHook('onResponse', (request, _reply, done) => {
      request.log.debug({ headers: request.headers, body: request.body, query: request.query }, 'request dump')
      done()
    })
  })

  const email = uniqueEmail('redact')
  const password = `${GOOD_PASSWORD} signup-secret`
  const newPassword = `${GOOD_PASSWORD} changed-secret`
  const cookie = 'session=cookie-secret-0123456789'
  const mailToken = 'MailTokenSecret0123456789abcdefghijklmnopqr'
  const unknownRefreshToken = 'UnknownRefreshTokenSecret0123456789'
  const send = (request: InjectOptions) => fastify.inject({ ...request, headers: { cookie, ...request.headers } })

  const signup = await send({ method: 'POST', url: '/api/v1/auth/signup', payload: { email, password } })
  t.equal(signup.statusCode, 201)
  const { access_token: accessToken, refresh_token: refreshToken } = json(signup)
  const authorization = `Bearer ${accessToken}`
  const refreshed = await send({ method: 'POST', url: '/api/v1/auth/refresh', payload: { refresh_token: refreshToken } })
  t.equal(refreshed.statusCode, 200)
  const wrongPassword = `${GOOD_PASSWORD} wrong-secret`
  const current = json(refreshed)
  const login = await send({ method: 'POST', url: '/api/v1/auth/login', payload: { email, password } })
  const cases: Array<[number, InjectOptions]> = [
    [401, { method: 'POST', url: '/api/v1/auth/login', payload: { email, password: wrongPassword } }],
    [400, { method: 'POST', url: '/api/v1/auth/login', payload: { email: 'not-an-email', password: wrongPassword } }],
    [200, { method: 'GET', url: '/api/v1/users/me', headers: { authorization: `Bearer ${current.access_token}` } }],
    [401, { method: 'GET', url: '/api/v1/users/me', headers: { authorization: `${authorization}x` } }],
    [401, { method: 'POST', url: '/api/v1/auth/password/change', headers: { authorization: current.access_token }, payload: { current_password: password, new_password: newPassword } }],
    [400, { method: 'POST', url: '/api/v1/auth/refresh', payload: { refresh_token: current.refresh_token, access_token: current.access_token } }],
    [204, { method: 'POST', url: '/api/v1/auth/logout', payload: { refresh_token: json(login).refresh_token } }],
    [204, { method: 'POST', url: '/api/v1/auth/password/change', headers: { authorization: `Bearer ${current.access_token}` }, payload: { current_password: password, new_password: newPassword } }],
    [401, { method: 'POST', url: '/api/v1/auth/refresh', payload: { refresh_token: unknownRefreshToken } }],
    [400, { method: 'POST', url: '/api/v1/auth/email/verify', payload: { token: mailToken } }],
    [400, { method: 'POST', url: '/api/v1/auth/password/reset', payload: { token: mailToken, new_password: newPassword } }],
    [400, { method: 'POST', url: '/api/v1/auth/password/reset', payload: { token: `${mailToken}!`, new_password: newPassword } }]
  ]
  t.equal(login.statusCode, 200)
  for (const [status, request] of cases) {
    const res = await send(request)
    t.equal(res.statusCode, status, `${request.method} ${request.url}: ${status} (${res.statusCode === 204 ? 'no content' : json(res).code ?? 'success'})`)
  }

  const log = text()
  const dumps = log.split('\n').filter((line) => line.includes('"request dump"'))
  t.equal(dumps.length, cases.length + 3, 'the dump line ran for every request')
  t.match(log, /\[redacted\]/, 'and redacted something')
  const secrets: Record<string, string> = {
    'signup password': password,
    'wrong password': wrongPassword,
    'new password': newPassword,
    'access token': accessToken,
    'refreshed access token': current.access_token,
    'refresh token': refreshToken,
    'rotated refresh token': current.refresh_token,
    'second session\'s refresh token': json(login).refresh_token,
    'mail token': mailToken,
    'unknown refresh token': unknownRefreshToken,
    cookie: 'cookie-secret'
  }
  for (const [what, secret] of Object.entries(secrets)) {
    t.notOk(log.includes(secret), `the log never holds the ${what}`)
    if (secret.includes('.')) t.notOk(log.includes(secret.split('.').at(-1)!), `nor the signature of the ${what}`)
  }
})
