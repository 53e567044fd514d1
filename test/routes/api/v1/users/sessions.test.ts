import { randomUUID } from 'node:crypto'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import t, { type Test } from 'tap'
import {
  bearer, build, claimsOf, databases, expectNoContent, expectProblem, forwardAuth, GOOD_PASSWORD, json, movableClock,
  refresh, tempSqliteUrl, uniqueEmail
} from '../../../../helper.js'

const SESSIONS = '/api/v1/users/me/sessions'
const ME = '/api/v1/users/me'
const LOGIN = '/api/v1/auth/login'
const LOGOUT = '/api/v1/auth/logout'
const ISO_UTC = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

interface Signed { email: string, userId: string, access: string, refresh: string, sid: string }

function signedIn (res: LightMyRequestResponse, expected: number): Signed {
  if (res.statusCode !== expected) throw new Error(`sign-in failed: ${res.statusCode} ${res.body}`)
  const body = json(res)
  return { email: body.user.email, userId: body.user.id, access: body.access_token, refresh: body.refresh_token, sid: claimsOf(body.access_token).sid }
}

async function signup (app: FastifyInstance, userAgent = 'sessions-test/signup'): Promise<Signed> {
  return signedIn(await app.inject({ method: 'POST', url: '/api/v1/auth/signup', headers: { 'user-agent': userAgent }, payload: { email: uniqueEmail('sessions'), password: GOOD_PASSWORD } }), 201)
}

async function login (app: FastifyInstance, email: string, userAgent: string): Promise<Signed> {
  return signedIn(await app.inject({ method: 'POST', url: LOGIN, headers: { 'user-agent': userAgent }, payload: { email, password: GOOD_PASSWORD } }), 200)
}

/** A user with three sessions, each from its own user agent. */
async function threeSessions (app: FastifyInstance) {
  const a = await signup(app, 'sessions-test/A')
  const b = await login(app, a.email, 'sessions-test/B')
  const c = await login(app, a.email, 'sessions-test/C')
  return { a, b, c }
}

const me = (app: FastifyInstance, token: string) => app.inject({ url: ME, headers: bearer(token) })

/** The session's access token is refused at once on a route that reads the database and on one that does not; its refresh token too. */
async function expectEnded (t: Test, app: FastifyInstance, s: Signed) {
  expectProblem(t, await me(app, s.access), 401, 'SESSION_REVOKED')
  expectProblem(t, await forwardAuth(app, s.access), 401, 'SESSION_REVOKED')
  const res = await refresh(app, s.refresh)
  t.equal(res.statusCode, 401, 'its refresh token is refused')
}

/** The session still works: its access token and its refresh token. */
async function expectAlive (t: Test, app: FastifyInstance, s: Signed) {
  t.equal((await me(app, s.access)).statusCode, 200, 'its access token works on /me')
  t.equal((await forwardAuth(app, s.access)).statusCode, 200, 'its access token works on /auth/verify')
}

for (const db of databases) {
  t.test(db.name, async (t) => {
    const env = { DATABASE_URL: db.url }
    const app = await build(t, { env })

    t.test('GET /me/sessions lists the live sessions, marking the caller\'s', async (t) => {
      const { a, b, c } = await threeSessions(app)
      const res = await app.inject({ url: SESSIONS, headers: bearer(a.access) })
      t.equal(res.statusCode, 200)
      t.match(res.headers['content-type'], /^application\/json/)
      const list = res.json() as Array<Record<string, any>>
      t.equal(list.length, 3, 'three sessions')
      t.same(new Set(list.map((s) => s.id)), new Set([a.sid, b.sid, c.sid]), 'the sessions of the three tokens')
      for (const s of list) {
        t.same(Object.keys(s).sort(), ['created_at', 'current', 'expires_at', 'id', 'ip', 'last_used_at', 'user_agent'], 'exactly the documented fields')
        t.match(s.id, UUID)
        t.match(s.created_at, ISO_UTC, 'created_at is ISO 8601 UTC')
        t.match(s.last_used_at, ISO_UTC, 'last_used_at is ISO 8601 UTC')
        t.match(s.expires_at, ISO_UTC, 'expires_at is ISO 8601 UTC')
        t.ok(Date.parse(s.expires_at) > Date.parse(s.created_at), 'expires after it began')
        t.ok(Date.parse(s.last_used_at) >= Date.parse(s.created_at), 'last used after it began')
        t.equal(s.ip, '127.0.0.1', 'the client address')
        t.equal(s.current, s.id === a.sid, `current only for the caller's (${s.user_agent})`)
      }
      const byId = new Map(list.map((s) => [s.id, s]))
      t.equal(byId.get(a.sid)?.user_agent, 'sessions-test/A')
      t.equal(byId.get(b.sid)?.user_agent, 'sessions-test/B')
      t.equal(byId.get(c.sid)?.user_agent, 'sessions-test/C')

      const fromB = (await app.inject({ url: SESSIONS, headers: bearer(b.access) })).json() as Array<Record<string, any>>
      t.same(fromB.filter((s) => s.current).map((s) => s.id), [b.sid], 'asked with B\'s token, B is current')
    })

    t.test('GET /me/sessions shows only the caller\'s own sessions, and not ended ones', async (t) => {
      const { a, b } = await threeSessions(app)
      const stranger = await signup(app)
      expectNoContent(t, await app.inject({ method: 'DELETE', url: `${SESSIONS}/${b.sid}`, headers: bearer(a.access) }))
      const list = (await app.inject({ url: SESSIONS, headers: bearer(a.access) })).json() as Array<Record<string, any>>
      t.equal(list.length, 2, 'the ended session is gone')
      t.notOk(list.some((s) => s.id === b.sid), 'not the ended one')
      t.notOk(list.some((s) => s.id === stranger.sid), 'not another user\'s')
    })

    t.test('GET /me/sessions without a token is 401', async (t) => {
      expectProblem(t, await app.inject({ url: SESSIONS }), 401, 'AUTHENTICATION_REQUIRED')
    })

    t.test('DELETE /me/sessions/:id ends another session at once', async (t) => {
      const { a, b, c } = await threeSessions(app)
      expectNoContent(t, await app.inject({ method: 'DELETE', url: `${SESSIONS}/${b.sid}`, headers: bearer(a.access) }))
      await expectEnded(t, app, b)
      await expectAlive(t, app, a)
      await expectAlive(t, app, c)
      t.equal((await refresh(app, c.refresh)).statusCode, 200, 'another session can still refresh')
      expectProblem(t, await app.inject({ method: 'DELETE', url: `${SESSIONS}/${b.sid}`, headers: bearer(a.access) }), 404, 'SESSION_NOT_FOUND')
    })

    t.test('DELETE /me/sessions/:id of an unknown session is 404 SESSION_NOT_FOUND', async (t) => {
      const a = await signup(app)
      expectProblem(t, await app.inject({ method: 'DELETE', url: `${SESSIONS}/${randomUUID()}`, headers: bearer(a.access) }), 404, 'SESSION_NOT_FOUND')
      await expectAlive(t, app, a)
    })

    t.test('DELETE /me/sessions/:id of another user\'s session is 404 and that session still works', async (t) => {
      const a = await signup(app)
      const stranger = await signup(app)
      expectProblem(t, await app.inject({ method: 'DELETE', url: `${SESSIONS}/${stranger.sid}`, headers: bearer(a.access) }), 404, 'SESSION_NOT_FOUND')
      await expectAlive(t, app, stranger)
      t.equal((await refresh(app, stranger.refresh)).statusCode, 200, 'the stranger can still refresh')
    })

    t.test('DELETE /me/sessions/:id with an id that is not a uuid is 400', async (t) => {
      const a = await signup(app)
      expectProblem(t, await app.inject({ method: 'DELETE', url: `${SESSIONS}/not-a-uuid`, headers: bearer(a.access) }), 400, 'VALIDATION_FAILED')
      await expectAlive(t, app, a)
    })

    t.test('DELETE /me/sessions ends every session but the current one', async (t) => {
      const { a, b, c } = await threeSessions(app)
      const stranger = await signup(app)
      expectNoContent(t, await app.inject({ method: 'DELETE', url: SESSIONS, headers: bearer(a.access) }))
      await expectEnded(t, app, b)
      await expectEnded(t, app, c)
      await expectAlive(t, app, a)
      await expectAlive(t, app, stranger)
      const list = (await app.inject({ url: SESSIONS, headers: bearer(a.access) })).json() as Array<Record<string, any>>
      t.same(list.map((s) => s.id), [a.sid], 'only the current session is left')
      t.equal((await refresh(app, a.refresh)).statusCode, 200, 'the current session can still refresh')
    })

    t.test('DELETE /me/sessions?include_current=true ends every session, the caller\'s too', async (t) => {
      const { a, b, c } = await threeSessions(app)
      expectNoContent(t, await app.inject({ method: 'DELETE', url: `${SESSIONS}?include_current=true`, headers: bearer(a.access) }))
      await expectEnded(t, app, a)
      await expectEnded(t, app, b)
      await expectEnded(t, app, c)
    })

    t.test('DELETE /me/sessions?include_current=notabool is 400 and ends nothing', async (t) => {
      const { a, b } = await threeSessions(app)
      expectProblem(t, await app.inject({ method: 'DELETE', url: `${SESSIONS}?include_current=notabool`, headers: bearer(a.access) }), 400, 'VALIDATION_FAILED')
      await expectAlive(t, app, a)
      await expectAlive(t, app, b)
    })

    t.test('logout with a bearer token is 204 and that access token is refused at once', async (t) => {
      const { a, b } = await threeSessions(app)
      expectNoContent(t, await app.inject({ method: 'POST', url: LOGOUT, headers: bearer(a.access) }))
      await expectEnded(t, app, a)
      await expectAlive(t, app, b)
    })

    t.test('logout with a refresh token also stops that session\'s access token at once', async (t) => {
      const { a, b } = await threeSessions(app)
      expectNoContent(t, await app.inject({ method: 'POST', url: LOGOUT, payload: { refresh_token: a.refresh } }))
      await expectEnded(t, app, a)
      await expectAlive(t, app, b)
    })

    t.test('password change stops the other sessions\' access tokens at once', async (t) => {
      const { a, b, c } = await threeSessions(app)
      const res = await app.inject({ method: 'POST', url: '/api/v1/auth/password/change', headers: bearer(a.access), payload: { current_password: GOOD_PASSWORD, new_password: 'a brand new passphrase 42' } })
      expectNoContent(t, res)
      await expectEnded(t, app, b)
      await expectEnded(t, app, c)
      await expectAlive(t, app, a)
    })

    t.test('account deletion stops every access token of the user, on /auth/verify too', async (t) => {
      const { a, b } = await threeSessions(app)
      expectNoContent(t, await app.inject({ method: 'DELETE', url: ME, headers: bearer(a.access), payload: { password: GOOD_PASSWORD } }))
      expectProblem(t, await forwardAuth(app, a.access), 401, 'SESSION_REVOKED')
      expectProblem(t, await forwardAuth(app, b.access), 401, 'SESSION_REVOKED')
      t.equal((await me(app, a.access)).statusCode, 401, '/me refuses the deleted user')
      t.equal((await refresh(app, b.refresh)).statusCode, 401, 'the refresh token is refused')
    })
  })

  t.test(`${db.name}: the list follows the clock`, async (t) => {
    const clock = movableClock()
    const app = await build(t, { env: { DATABASE_URL: db.url, REFRESH_TOKEN_TTL_SECONDS: '60' }, now: clock.now })

    t.test('last_used_at moves when the session refreshes', async (t) => {
      clock.goTo(0)
      const began = clock.now()
      const a = await signup(app, 'sessions-test/A')
      clock.goTo(30)
      const res = await refresh(app, a.refresh)
      t.equal(res.statusCode, 200)
      const list = (await app.inject({ url: SESSIONS, headers: bearer(json(res).access_token) })).json() as Array<Record<string, any>>
      t.equal(list.length, 1)
      t.equal(list[0].created_at, began.toISOString(), 'created_at is when it began')
      t.equal(list[0].last_used_at, clock.now().toISOString(), 'last_used_at is the refresh')
    })

    t.test('a session that idled out, with every access token expired, is no longer listed', async (t) => {
      clock.goTo(0)
      const idle = await signup(app, 'sessions-test/idle')
      // Past the refresh token's idle lifetime (60 s) and the access token's (900 s): nothing of it works any more.
      clock.goTo(1000)
      t.equal((await refresh(app, idle.refresh)).statusCode, 401, 'its refresh token has idled out')
      expectProblem(t, await forwardAuth(app, idle.access), 401, 'ACCESS_TOKEN_EXPIRED')
      const fresh = await login(app, idle.email, 'sessions-test/fresh')
      const list = (await app.inject({ url: SESSIONS, headers: bearer(fresh.access) })).json() as Array<Record<string, any>>
      t.same(list.map((s) => s.id), [fresh.sid], 'only the session that can still be used')
    })
  })

  t.test(`${db.name}: a restart forgets no revocation`, async (t) => {
    const url = db.name === 'sqlite' ? tempSqliteUrl(t) : db.url
    const first = await build(t, { env: { DATABASE_URL: url } })
    const { a, b, c } = await threeSessions(first)
    expectNoContent(t, await first.inject({ method: 'DELETE', url: `${SESSIONS}/${b.sid}`, headers: bearer(a.access) }))
    expectNoContent(t, await first.inject({ method: 'POST', url: LOGOUT, headers: bearer(c.access) }))
    // A deleted user's sessions are gone from the sessions table; only the revocation list remembers them.
    const deleted = await signup(first)
    expectNoContent(t, await first.inject({ method: 'DELETE', url: ME, headers: bearer(deleted.access), payload: { password: GOOD_PASSWORD } }))
    await first.close()

    const second = await build(t, { env: { DATABASE_URL: url } })
    expectProblem(t, await forwardAuth(second, b.access), 401, 'SESSION_REVOKED')
    expectProblem(t, await forwardAuth(second, c.access), 401, 'SESSION_REVOKED')
    expectProblem(t, await me(second, b.access), 401, 'SESSION_REVOKED')
    expectProblem(t, await forwardAuth(second, deleted.access), 401, 'SESSION_REVOKED')
    t.equal((await forwardAuth(second, a.access)).statusCode, 200, 'a live session\'s token from before the restart still works')
  })
}
