import type { FastifyInstance } from 'fastify'
import t, { type Test } from 'tap'
import {
  bearer, build, claimsOf, databases, expectNoContent, expectProblem, expectRefusal, expectUnauthorized, forwardAuth, json, login, movableClock, refresh, signup
} from '../../../../helper.js'

const REFRESH = '/api/v1/auth/refresh'
const LOGOUT = '/api/v1/auth/logout'

/** Asserts the access token is refused because its session has ended. */
async function expectAccessRevoked (t: Test, app: FastifyInstance, accessToken: string) {
  expectProblem(t, await forwardAuth(app, accessToken), 401, 'SESSION_REVOKED')
}

const DAY = 86_400

/** The session id an access token names (unverified read of its payload). */
const sessionOf = (accessToken: string): string => claimsOf(accessToken).sid

for (const db of databases) {
  t.test(db.name, async (t) => {
    const env = { DATABASE_URL: db.url }
    const app = await build(t, { env })

    t.test('refresh returns a new pair for the same user and session', async (t) => {
      const signed = await signup(app)
      const res = await refresh(app, signed.refresh_token)
      t.equal(res.statusCode, 200)
      t.match(res.headers['content-type'], /^application\/json/)
      const body = json(res)
      t.same(Object.keys(body).sort(), ['access_token', 'expires_at', 'expires_in', 'refresh_token', 'token_type', 'user'])
      t.equal(body.token_type, 'Bearer')
      t.equal(body.expires_in, 900)
      t.type(body.refresh_token, 'string')
      t.not(body.refresh_token, signed.refresh_token, 'a new refresh token')
      t.not(body.access_token, signed.access_token, 'a new access token')
      t.same(body.user, signed.user, 'the same user')
      t.equal(sessionOf(body.access_token), sessionOf(signed.access_token), 'the same session')
      t.equal((await refresh(app, body.refresh_token)).statusCode, 200, 'the new refresh token works')
    })

    t.test('a rotated refresh token within the grace window gets the session\'s current pair', async (t) => {
      const clock = movableClock()
      const timed = await build(t, { env, now: clock.now })
      const signed = await signup(timed)
      const rotated = json(await refresh(timed, signed.refresh_token))

      clock.goTo(timed.config.REFRESH_REUSE_GRACE_SECONDS)
      const again = await refresh(timed, signed.refresh_token)
      t.equal(again.statusCode, 200, 'a racing tab is not a thief')
      const body = json(again)
      t.equal(body.refresh_token, rotated.refresh_token, 'the session\'s current refresh token')
      t.equal(sessionOf(body.access_token), sessionOf(signed.access_token), 'the same session')
      t.equal((await refresh(timed, rotated.refresh_token)).statusCode, 200, 'the current token still works')
    })

    t.test('a rotated refresh token after the grace window is 401 REFRESH_TOKEN_REUSED and ends the session', async (t) => {
      const clock = movableClock()
      const timed = await build(t, { env, now: clock.now })
      const signed = await signup(timed)
      const rotated = json(await refresh(timed, signed.refresh_token))

      clock.goTo(timed.config.REFRESH_REUSE_GRACE_SECONDS + 1)
      expectRefusal(t, await refresh(timed, signed.refresh_token), 'REFRESH_TOKEN_REUSED')
      expectRefusal(t, await refresh(timed, rotated.refresh_token), 'SESSION_REVOKED')
      const session = await timed.db.selectFrom('sessions').select(['revoked_at', 'revoke_reason']).where('id', '=', sessionOf(signed.access_token)).executeTakeFirstOrThrow()
      t.not(session.revoked_at, null, 'the session is revoked')
      t.equal(session.revoke_reason, 'refresh_token_reused')
      await expectAccessRevoked(t, timed, rotated.access_token)
    })

    t.test('a garbage refresh token is 401 INVALID_REFRESH_TOKEN', async (t) => {
      expectRefusal(t, await refresh(app, 'not-a-refresh-token'), 'INVALID_REFRESH_TOKEN')
    })

    t.test('a missing refresh_token is 400 VALIDATION_FAILED', async (t) => {
      const body = expectProblem(t, await app.inject({ method: 'POST', url: REFRESH, payload: {} }), 400, 'VALIDATION_FAILED')
      t.ok((body.errors ?? []).some((e: { field: string }) => e.field === '/body/refresh_token'), 'errors name /body/refresh_token')
    })

    t.test('refresh after the user is deleted is 401', async (t) => {
      const signed = await signup(app)
      await app.db.deleteFrom('users').where('id', '=', signed.user.id).execute()
      expectRefusal(t, await refresh(app, signed.refresh_token), 'INVALID_REFRESH_TOKEN')
      const sessions = await app.db.selectFrom('sessions').select('id').where('user_id', '=', signed.user.id).execute()
      t.same(sessions, [], 'the sessions went with the user')
    })

    t.test('refresh for a disabled user is 401', async (t) => {
      const signed = await signup(app)
      await app.db.updateTable('users').set({ disabled: 1 }).where('id', '=', signed.user.id).execute()
      expectRefusal(t, await refresh(app, signed.refresh_token), 'INVALID_REFRESH_TOKEN')
    })

    t.test('the refresh token is stored only as a hash', async (t) => {
      const signed = await signup(app)
      const rotated = json(await refresh(app, signed.refresh_token))
      for (const token of [signed.refresh_token, rotated.refresh_token] as string[]) {
        const plain = await app.db.selectFrom('refresh_tokens').select('token_hash').where('token_hash', '=', token).execute()
        t.same(plain, [], 'no row holds the token itself')
        const hashed = await app.db.selectFrom('refresh_tokens').select('session_id').where('token_hash', '=', app.tokens.hashRefreshToken(token)).execute()
        t.equal(hashed.length, 1, 'one row holds its hash')
      }
    })

    t.test('an expired refresh token is 401; rotation renews the idle lifetime', async (t) => {
      const clock = movableClock()
      const timed = await build(t, { env, now: clock.now })
      const ttl = timed.config.REFRESH_TOKEN_TTL_SECONDS
      const first = await signup(timed)
      const second = await login(timed, first.user.email)

      clock.goTo(ttl - 1)
      const renewed = await refresh(timed, first.refresh_token)
      t.equal(renewed.statusCode, 200, 'just before the lifetime ends, it works')

      clock.goTo(ttl + 1)
      expectRefusal(t, await refresh(timed, second.refresh_token), 'INVALID_REFRESH_TOKEN')
      t.equal((await refresh(timed, json(renewed).refresh_token)).statusCode, 200, 'the token issued at rotation is still live')
    })

    t.test('a session past its absolute age is 401 though its refresh token is fresh', async (t) => {
      const clock = movableClock()
      const timed = await build(t, { env, now: clock.now })
      const ttl = timed.config.REFRESH_TOKEN_TTL_SECONDS
      const maxAge = timed.config.SESSION_MAX_AGE_SECONDS
      t.ok(maxAge > ttl, 'the session outlives one refresh token')

      let token = (await signup(timed)).refresh_token as string
      // Refresh often enough that no refresh token ever expires, up to just before the session's end.
      for (let at = ttl / 2; at < maxAge - 1; at += ttl / 2) {
        clock.goTo(at)
        const res = await refresh(timed, token)
        t.equal(res.statusCode, 200, `refresh at day ${Math.round(at / DAY)}`)
        token = json(res).refresh_token
      }
      clock.goTo(maxAge - 1)
      const last = await refresh(timed, token)
      t.equal(last.statusCode, 200, 'a second before the end, it works')
      token = json(last).refresh_token

      clock.goTo(maxAge + 1)
      expectRefusal(t, await refresh(timed, token), 'SESSION_EXPIRED')
    })

    t.test('logout with a refresh token is 204 and ends that session only', async (t) => {
      const signed = await signup(app)
      const other = await login(app, signed.user.email)
      expectNoContent(t, await app.inject({ method: 'POST', url: LOGOUT, payload: { refresh_token: signed.refresh_token } }))
      expectRefusal(t, await refresh(app, signed.refresh_token), 'SESSION_REVOKED')
      await expectAccessRevoked(t, app, signed.access_token)
      t.equal((await refresh(app, other.refresh_token)).statusCode, 200, 'the other session lives on')
      const sessions = await app.db.selectFrom('sessions').select(['revoked_at', 'revoke_reason']).where('user_id', '=', signed.user.id).execute()
      t.equal(sessions.filter((s) => s.revoked_at !== null).length, 1, 'one session revoked')
      t.same(sessions.filter((s) => s.revoked_at !== null).map((s) => s.revoke_reason), ['logout'])
    })

    t.test('logout with a bearer token is 204 and ends that session', async (t) => {
      const signed = await signup(app)
      const other = await login(app, signed.user.email)
      expectNoContent(t, await app.inject({ method: 'POST', url: LOGOUT, headers: bearer(signed.access_token) }))
      expectRefusal(t, await refresh(app, signed.refresh_token), 'SESSION_REVOKED')
      await expectAccessRevoked(t, app, signed.access_token)
      t.equal((await refresh(app, other.refresh_token)).statusCode, 200, 'the other session lives on')
      t.equal((await forwardAuth(app, other.access_token)).statusCode, 200, 'its access token too')
    })

    t.test('logout with nothing is 204', async (t) => {
      expectNoContent(t, await app.inject({ method: 'POST', url: LOGOUT }))
    })

    t.test('logout with an empty object is 204', async (t) => {
      expectNoContent(t, await app.inject({ method: 'POST', url: LOGOUT, payload: {} }))
    })

    t.test('logout with a garbage refresh token is 204', async (t) => {
      expectNoContent(t, await app.inject({ method: 'POST', url: LOGOUT, payload: { refresh_token: 'not-a-refresh-token' } }))
    })

    t.test('logout with an invalid bearer token is 401 INVALID_ACCESS_TOKEN and ends nothing', async (t) => {
      const signed = await signup(app)
      expectUnauthorized(t, await app.inject({ method: 'POST', url: LOGOUT, headers: bearer('not.a.jwt') }), 'INVALID_ACCESS_TOKEN')
      t.equal((await refresh(app, signed.refresh_token)).statusCode, 200, 'the session lives on')
    })

    t.test('logout with an invalid bearer token but a good refresh token is 204: the refresh token\'s session ends', async (t) => {
      const signed = await signup(app)
      expectNoContent(t, await app.inject({ method: 'POST', url: LOGOUT, headers: bearer('not.a.jwt'), payload: { refresh_token: signed.refresh_token } }))
      expectRefusal(t, await refresh(app, signed.refresh_token), 'SESSION_REVOKED')
    })

    t.test('logout with an expired bearer token (idle client) is 204 and ends its session', async (t) => {
      const clock = movableClock()
      const timed = await build(t, { env, now: clock.now })
      const signed = await signup(timed)
      clock.advance(3600)
      expectUnauthorized(t, await forwardAuth(timed, signed.access_token), 'ACCESS_TOKEN_EXPIRED')
      expectNoContent(t, await timed.inject({ method: 'POST', url: LOGOUT, headers: bearer(signed.access_token) }))
      expectRefusal(t, await refresh(timed, signed.refresh_token), 'SESSION_REVOKED')
      t.same((await timed.db.selectFrom('sessions').select('revoke_reason').where('user_id', '=', signed.user.id).execute()).map((s) => s.revoke_reason), ['logout'])
    })

    t.test('logout with the bearer of a session already ended is 401 SESSION_REVOKED', async (t) => {
      const signed = await signup(app)
      expectNoContent(t, await app.inject({ method: 'POST', url: LOGOUT, headers: bearer(signed.access_token) }))
      expectUnauthorized(t, await app.inject({ method: 'POST', url: LOGOUT, headers: bearer(signed.access_token) }), 'SESSION_REVOKED')
    })

    t.test('logout with a bearer and an empty JSON body is 204', async (t) => {
      const signed = await signup(app)
      expectNoContent(t, await app.inject({ method: 'POST', url: LOGOUT, headers: { ...bearer(signed.access_token), 'content-type': 'application/json' }, payload: '' }))
    })

    t.test('logout with an unknown field is 400 VALIDATION_FAILED', async (t) => {
      const body = expectProblem(t, await app.inject({ method: 'POST', url: LOGOUT, payload: { token: 'x' } }), 400, 'VALIDATION_FAILED')
      t.ok((body.errors ?? []).some((e: { field: string }) => e.field === '/body/token'), 'errors name /body/token')
    })
  })
}
