import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import t, { type Test } from 'tap'
import { bearer, build, claimsOf, databases, expectProblem, movableClock, signup } from '../../../../helper.js'

const VERIFY = '/api/v1/auth/verify'

const sidOf = (token: string): string => claimsOf(token).sid

/** A 401 with no identity headers; a GET's is a problem with this code (a HEAD has no body). */
function expectRefused (t: Test, res: LightMyRequestResponse, code: string, method = 'GET') {
  if (method === 'GET') expectProblem(t, res, 401, code)
  else t.equal(res.statusCode, 401, 'status 401')
  t.match(res.headers['www-authenticate'], /^Bearer\b/, 'WWW-Authenticate: Bearer')
  t.notOk(res.headers['x-user-id'] ?? res.headers['x-user-roles'] ?? res.headers['x-session-id'], 'no identity headers')
}

const verify = (app: FastifyInstance, headers: Record<string, string> = {}, method: 'GET' | 'HEAD' = 'GET') => app.inject({ method, url: VERIFY, headers })

for (const db of databases) {
  t.test(db.name, async (t) => {
    const env = { DATABASE_URL: db.url }
    const clock = movableClock()
    const app = await build(t, { env, now: clock.now })

    t.test('a live token: 200 with the identity headers and body', async (t) => {
      const signed = await signup(app)
      const sid = sidOf(signed.access_token)
      const res = await verify(app, bearer(signed.access_token))
      t.equal(res.statusCode, 200)
      t.equal(res.headers['x-user-id'], signed.user.id, 'X-User-Id')
      t.equal(res.headers['x-user-roles'], 'user', 'X-User-Roles')
      t.equal(res.headers['x-session-id'], sid, 'X-Session-Id')
      t.match(res.headers['content-type'], /^application\/json/)
      t.equal(res.headers['x-user-aal'], '1', 'X-User-Aal: a password alone')
      t.same(res.json(), { user_id: signed.user.id, session_id: sid, roles: ['user'], aal: 1 })
    })

    t.test('several roles are comma-separated in X-User-Roles', async (t) => {
      const signed = await signup(app)
      const sid = sidOf(signed.access_token)
      const token = await app.tokens.signAccessToken({ sub: signed.user.id, sid, roles: ['user', 'admin'] })
      const res = await verify(app, bearer(token))
      t.equal(res.statusCode, 200)
      t.equal(res.headers['x-user-roles'], 'user,admin')
      t.same(res.json(), { user_id: signed.user.id, session_id: sid, roles: ['user', 'admin'], aal: 1 })
    })

    t.test('HEAD works too', async (t) => {
      const signed = await signup(app)
      const res = await verify(app, bearer(signed.access_token), 'HEAD')
      t.equal(res.statusCode, 200)
      t.equal(res.headers['x-user-id'], signed.user.id, 'X-User-Id')
      t.equal(res.headers['x-user-roles'], 'user', 'X-User-Roles')
      t.equal(res.headers['x-session-id'], sidOf(signed.access_token), 'X-Session-Id')
      t.equal(res.body, '', 'no body')
      expectRefused(t, await verify(app, {}, 'HEAD'), 'AUTHENTICATION_REQUIRED', 'HEAD')
      expectRefused(t, await verify(app, bearer('not.a.token'), 'HEAD'), 'INVALID_ACCESS_TOKEN', 'HEAD')
    })

    t.test('no token is 401 AUTHENTICATION_REQUIRED', async (t) => {
      expectRefused(t, await verify(app), 'AUTHENTICATION_REQUIRED')
    })

    t.test('a bad token is 401 INVALID_ACCESS_TOKEN', async (t) => {
      const signed = await signup(app)
      expectRefused(t, await verify(app, bearer('not.a.token')), 'INVALID_ACCESS_TOKEN')
      expectRefused(t, await verify(app, { authorization: 'Basic dXNlcjpwYXNz' }), 'INVALID_ACCESS_TOKEN')
      const [head, payload, signature] = signed.access_token.split('.')
      const forged = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'))
      forged.roles = ['admin']
      expectRefused(t, await verify(app, bearer(`${head}.${Buffer.from(JSON.stringify(forged)).toString('base64url')}.${signature}`)), 'INVALID_ACCESS_TOKEN')
    })

    t.test('an expired token is 401 ACCESS_TOKEN_EXPIRED', async (t) => {
      t.teardown(() => clock.goTo(0))
      const signed = await signup(app)
      clock.goTo(899)
      t.equal((await verify(app, bearer(signed.access_token))).statusCode, 200, 'alive at 899 s')
      clock.goTo(901)
      expectRefused(t, await verify(app, bearer(signed.access_token)), 'ACCESS_TOKEN_EXPIRED')
    })

    t.test('a token whose iat is ahead of the clock: accepted within the 60 s skew, 401 INVALID_ACCESS_TOKEN beyond it', async (t) => {
      t.teardown(() => clock.goTo(0))
      const signed = await signup(app)
      const iat = claimsOf(signed.access_token).iat
      // The clock put back to `seconds` before the token's iat: as if signed that far ahead of it.
      const behind = (seconds: number) => { clock.goTo(0); clock.advance(iat - clock.now().getTime() / 1000 - seconds) }
      behind(30)
      t.equal((await verify(app, bearer(signed.access_token))).statusCode, 200, '30 s ahead: accepted')
      behind(60)
      t.equal((await verify(app, bearer(signed.access_token))).statusCode, 200, '60 s ahead: accepted')
      behind(60.001)
      expectRefused(t, await verify(app, bearer(signed.access_token)), 'INVALID_ACCESS_TOKEN')
      behind(20 * 60)
      expectRefused(t, await verify(app, bearer(signed.access_token)), 'INVALID_ACCESS_TOKEN')
      behind(0)
      t.equal((await verify(app, bearer(signed.access_token))).statusCode, 200, 'accepted again once the clock reaches it (checked on every use, not cached)')
    })

    t.test('the cache of verified tokens: a token once verified is still checked for revocation and tampering', async (t) => {
      const signed = await signup(app)
      for (let i = 0; i < 3; i++) t.equal((await verify(app, bearer(signed.access_token))).statusCode, 200, `verified (${i === 0 ? 'then cached' : 'from the cache'})`)
      const [head, payload, signature] = signed.access_token.split('.')
      const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'))
      const forged = `${head}.${Buffer.from(JSON.stringify({ ...claims, roles: ['admin'] })).toString('base64url')}.${signature}`
      expectRefused(t, await verify(app, bearer(forged)), 'INVALID_ACCESS_TOKEN')
      t.equal((await app.inject({ method: 'POST', url: '/api/v1/auth/logout', headers: bearer(signed.access_token) })).statusCode, 204)
      expectRefused(t, await verify(app, bearer(signed.access_token)), 'SESSION_REVOKED')
    })

    t.test('a revoked session\'s token is 401 SESSION_REVOKED', async (t) => {
      const signed = await signup(app)
      t.equal((await app.inject({ method: 'POST', url: '/api/v1/auth/logout', headers: bearer(signed.access_token) })).statusCode, 204)
      expectRefused(t, await verify(app, bearer(signed.access_token)), 'SESSION_REVOKED')
    })
  })

  t.test(`${db.name}: /auth/verify reads no database`, async (t) => {
    const app = await build(t, { env: { DATABASE_URL: db.url } })
    const live = await signup(app)
    const revoked = await signup(app)
    t.equal((await app.inject({ method: 'POST', url: '/api/v1/auth/logout', headers: bearer(revoked.access_token) })).statusCode, 204)

    await app.db.destroy()
    await t.rejects(app.db.selectFrom('users').select('id').execute(), 'the database is closed')

    const res = await verify(app, bearer(live.access_token))
    t.equal(res.statusCode, 200, 'a live token still verifies')
    t.equal(res.headers['x-user-id'], live.user.id)
    t.equal(res.headers['x-session-id'], sidOf(live.access_token))
    expectRefused(t, await verify(app, bearer(revoked.access_token)), 'SESSION_REVOKED')
    expectRefused(t, await verify(app), 'AUTHENTICATION_REQUIRED')
  })
}
