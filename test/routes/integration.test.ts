import { createRemoteJWKSet, jwtVerify } from 'jose'
import t from 'tap'
import { loadConfig } from '../../plugins/external/config.js'
import { bearer, build, buildLogged, claimsOf, databases, expectUnauthorized, json, listen, signup, uniqueEmail } from '../helper.js'
import { startMailbox, tokenIn } from '../mailbox.js'

// What an app developer meets first (issue 16): discovery, forward auth as gateways ask, defaults that work.

for (const db of databases) {
  t.test(`${db.name}: discovery configures jose from the issuer alone`, async (t) => {
    const app = await build(t, { env: { DATABASE_URL: db.url } })
    const base = await listen(app)
    const issuer = app.config.PUBLIC_URL
    const res = await app.inject({ url: '/.well-known/openid-configuration' })
    t.equal(res.statusCode, 200)
    const discovery = json(res)
    t.same(discovery, {
      issuer,
      jwks_uri: `${issuer}/.well-known/jwks.json`,
      id_token_signing_alg_values_supported: [app.config.JWT_ALGORITHM],
      subject_types_supported: ['public'],
      response_types_supported: []
    })
    t.match(res.headers['cache-control'], /^public, max-age=\d+$/)
    // The document names PUBLIC_URL; the test's server listens elsewhere, so follow the path on it.
    const JWKS = createRemoteJWKSet(new URL(new URL(discovery.jwks_uri).pathname, base))
    const signed = await signup(app)
    const { payload } = await jwtVerify(signed.access_token, JWKS, { issuer: discovery.issuer, algorithms: discovery.id_token_signing_alg_values_supported, typ: 'at+jwt' })
    t.equal(payload.sub, signed.user.id, 'a token verifies with what discovery says')
  })

  t.test(`${db.name}: forward auth answers the methods a gateway forwards as they came`, async (t) => {
    const app = await build(t, { env: { DATABASE_URL: db.url } })
    const signed = await signup(app)
    for (const method of ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'] as const) {
      const ok = await app.inject({ method, url: '/api/v1/auth/verify', headers: bearer(signed.access_token) })
      t.equal(ok.statusCode, 200, `${method}: 200`)
      t.equal(ok.headers['x-user-id'], signed.user.id, `${method}: X-User-Id`)
      t.equal(ok.headers['x-session-id'], claimsOf(signed.access_token).sid, `${method}: X-Session-Id`)
      if (method !== 'HEAD') expectUnauthorized(t, await app.inject({ method, url: '/api/v1/auth/verify', headers: bearer('not.a.jwt') }), 'INVALID_ACCESS_TOKEN')
    }
    expectUnauthorized(t, await app.inject({ url: '/api/v1/auth/verify' }), 'AUTHENTICATION_REQUIRED')
  })
}

t.test('PUBLIC_URL, when unset, is where the service listens in development: only PORT or HOST changed still works', (t) => {
  const config = (env: Record<string, string>) => loadConfig({ DATABASE_URL: 'sqlite::memory:', NODE_ENV: 'development', ...env })
  t.equal(config({}).PUBLIC_URL, 'http://localhost:8000')
  t.equal(config({ PORT: '9000' }).PUBLIC_URL, 'http://localhost:9000')
  t.equal(config({ HOST: '127.0.0.1', PORT: '9001' }).PUBLIC_URL, 'http://localhost:9001')
  t.equal(config({ HOST: '10.1.2.3' }).PUBLIC_URL, 'http://10.1.2.3:8000')
  t.equal(config({ HOST: 'fd00::5' }).PUBLIC_URL, 'http://[fd00::5]:8000')
  t.equal(config({ PUBLIC_URL: 'https://auth.example.com', PORT: '9000' }).PUBLIC_URL, 'https://auth.example.com', 'a set one wins')
  // Replicas on several ports must agree on the issuer: outside development the default is fixed.
  t.equal(config({ NODE_ENV: 'test', PORT: '9000' }).PUBLIC_URL, 'http://localhost:8000')
  t.end()
})

t.test('the start says which settings are in force: issuer, mail, links, rate limits, verification', async (t) => {
  const { lines } = await buildLogged(t, { env: { PORT: '9000', NODE_ENV: 'development' } })
  const settings = lines().find((l) => l.msg === 'settings in force')
  t.match(settings, {
    issuer: 'http://localhost:9000',
    public_url: 'http://localhost:9000',
    mail: 'logged, not sent (no SMTP_URL)',
    mail_links: 'none: mails carry the token',
    rate_limits: false,
    require_email_verification: false
  })
})

t.test('with no app URL configured, a mail carries the token and development logs the request to make', async (t) => {
  const box = await startMailbox(t)
  const { fastify: app, lines } = await buildLogged(t, { env: { NODE_ENV: 'development', SMTP_URL: box.url, PORT: '9000' } })
  const email = uniqueEmail('no-link')
  await signup(app, { email })
  await app.background.idle()
  const mail = await box.next(email)
  t.notMatch(mail.text, /https?:\/\//, 'no link the service itself cannot answer')
  const token = tokenIn(mail)
  const curl = lines().find((l) => l.msg === 'the request this mail asks for')?.curl
  t.equal(curl, `curl -X POST http://localhost:9000/api/v1/auth/email/verify -H 'content-type: application/json' -d '{"token":"${token}"}'`)
  const verified = await app.inject({ method: 'POST', url: '/api/v1/auth/email/verify', payload: { token } })
  t.equal(verified.statusCode, 200, 'the request it names works')
})
