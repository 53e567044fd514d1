import { createHash } from 'node:crypto'
import type { LightMyRequestResponse } from 'fastify'
import t, { type Test } from 'tap'
import {
  bearer, build, claimsOf, databases, expectRefusal, forwardAuth, GOOD_PASSWORD, json, listen, movableClock, refresh, signup
} from '../../../../helper.js'

const REFRESH = '/api/v1/auth/refresh'
const VERIFY = '/api/v1/auth/verify'
const ME = '/api/v1/users/me'
const DAY = 86_400 * 1000

/** How the service stores a refresh token: its SHA-256, base64url. */
const hashOf = (token: string) => createHash('sha256').update(token).digest('base64url')

function expectPair (t: Test, res: LightMyRequestResponse) {
  t.equal(res.statusCode, 200, 'status 200')
  const body = json(res)
  t.type(body.access_token, 'string', 'an access token')
  t.type(body.refresh_token, 'string', 'a refresh token')
  t.equal(body.token_type, 'Bearer')
  return body
}

/** A 401 refusal of a refresh token, whatever the reason given. */
const expectRefreshRefused = (t: Test, res: LightMyRequestResponse) =>
  expectRefusal(t, res, ['INVALID_REFRESH_TOKEN', 'REFRESH_TOKEN_REUSED', 'SESSION_REVOKED', 'SESSION_EXPIRED'])

for (const db of databases) {
  t.test(db.name, async (t) => {
    const env = { DATABASE_URL: db.url }

    t.test('20 concurrent refreshes of one token over real sockets: one rotation, the same new pair for all', async (t) => {
      const app = await build(t, { env })
      const base = await listen(app)
      const signed = await signup(app)
      const sid = claimsOf(signed.access_token).sid

      const responses = await Promise.all(Array.from({ length: 20 }, () => fetch(`${base}${REFRESH}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ refresh_token: signed.refresh_token })
      })))
      const bodies = await Promise.all(responses.map((r) => r.json() as Promise<Record<string, any>>))

      t.same(responses.map((r) => r.status), Array(20).fill(200), 'all 20 answered 200')
      const refreshTokens = new Set(bodies.map((b) => b.refresh_token))
      t.equal(refreshTokens.size, 1, 'all carry the same refresh token')
      const [next] = refreshTokens
      t.type(next, 'string')
      t.not(next, signed.refresh_token, 'a new refresh token')
      t.same(new Set(bodies.map((b) => claimsOf(b.access_token).sid)), new Set([sid]), 'every access token is for the same session')
      t.same(new Set(bodies.map((b) => b.user.id)), new Set([signed.user.id]), 'every answer is for the same user')

      const rows = await app.db.selectFrom('refresh_tokens').selectAll().where('session_id', '=', sid).execute()
      const rotated = rows.filter((r) => r.rotated_at !== null)
      const active = rows.filter((r) => r.rotated_at === null)
      t.equal(rows.length, 2, 'the original and one successor, nothing more')
      t.equal(rotated.length, 1, 'exactly one row rotated')
      t.equal(rotated[0]?.token_hash, hashOf(signed.refresh_token), 'the rotated row is the original token')
      t.equal(active.length, 1, 'exactly one active refresh token for the session')
      t.equal(active[0]?.token_hash, hashOf(next), 'the active row is the token every caller got')

      const again = await fetch(`${base}${REFRESH}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ refresh_token: next }) })
      t.equal(again.status, 200, 'the shared new refresh token works')
      const verified = await fetch(`${base}${VERIFY}`, { headers: bearer(bodies[0].access_token) })
      t.equal(verified.status, 200, 'the session was not ended by the race')
    })

    t.test('reuse inside the grace window gets the current pair of the same session', async (t) => {
      const clock = movableClock()
      const app = await build(t, { env, now: clock.now })
      const signed = await signup(app)
      const first = expectPair(t, await refresh(app, signed.refresh_token))

      clock.advance(5)
      const replay = expectPair(t, await refresh(app, signed.refresh_token))
      t.equal(claimsOf(replay.access_token).sid, claimsOf(signed.access_token).sid, 'same session (sid claim)')
      t.equal(replay.refresh_token, first.refresh_token, 'the session\'s current refresh token')
      t.not(replay.access_token, first.access_token, 'a new access token')
      t.equal((await forwardAuth(app, first.access_token)).statusCode, 200, 'the session is still alive')
      expectPair(t, await refresh(app, replay.refresh_token))
      const events = await app.db.selectFrom('auth_events').select('type').where('session_id', '=', claimsOf(signed.access_token).sid).execute()
      t.same(events, [{ type: 'signup' }], 'no theft recorded: the session\'s only event is its signup')
    })

    t.test('reuse inside the grace window follows several rotations to the current token', async (t) => {
      const clock = movableClock()
      const app = await build(t, { env, now: clock.now })
      const signed = await signup(app)
      const second = expectPair(t, await refresh(app, signed.refresh_token))
      clock.advance(2)
      const third = expectPair(t, await refresh(app, second.refresh_token))
      clock.advance(2)
      const replay = expectPair(t, await refresh(app, signed.refresh_token))
      t.equal(replay.refresh_token, third.refresh_token, 'the current refresh token')
      t.equal(claimsOf(replay.access_token).sid, claimsOf(signed.access_token).sid, 'same session')
    })

    t.test('reuse after the grace window is theft: 401 REFRESH_TOKEN_REUSED, session revoked, event written', async (t) => {
      const clock = movableClock()
      const app = await build(t, { env, now: clock.now })
      const signed = await signup(app)
      const sid = claimsOf(signed.access_token).sid
      const latest = expectPair(t, await refresh(app, signed.refresh_token))

      clock.advance(11)
      const userAgent = 'rotation-test/thief'
      expectRefusal(t, await refresh(app, signed.refresh_token, { 'user-agent': userAgent }), 'REFRESH_TOKEN_REUSED')

      const events = await app.db.selectFrom('auth_events').selectAll().where('session_id', '=', sid).where('type', '!=', 'signup').execute()
      t.equal(events.length, 1, 'one auth event for the session besides its signup')
      const [event] = events
      t.match(event, { type: 'refresh_token_reused', user_id: signed.user.id, session_id: sid, ip: '127.0.0.1', user_agent: userAgent })
      t.match(event.id, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/, 'a uuid id')
      t.equal(new Date(event.created_at).toISOString(), clock.now().toISOString(), 'created_at is the service clock')
      let detail: unknown
      t.doesNotThrow(() => { detail = JSON.parse(event.detail) }, 'detail is JSON')
      t.type(detail, 'object', 'detail is a JSON object')
      t.notOk(event.detail.includes(signed.refresh_token) || event.detail.includes(latest.refresh_token), 'no token in the detail')

      for (const [name, token] of [['first', signed.access_token], ['latest', latest.access_token]]) {
        expectRefusal(t, await forwardAuth(app, token), 'SESSION_REVOKED')
        expectRefusal(t, await app.inject({ url: ME, headers: bearer(token) }), 'SESSION_REVOKED')
        t.pass(`the ${name} access token of the session is refused`)
      }
      expectRefreshRefused(t, await refresh(app, latest.refresh_token))
      const session = await app.db.selectFrom('sessions').select(['revoked_at']).where('id', '=', sid).executeTakeFirstOrThrow()
      t.not(session.revoked_at, null, 'the session row is revoked')
    })

    t.test('theft ends only the session of the stolen token', async (t) => {
      const clock = movableClock()
      const app = await build(t, { env, now: clock.now })
      const signed = await signup(app)
      const login = await app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email: signed.user.email, password: GOOD_PASSWORD } })
      const other = expectPair(t, login)
      expectPair(t, await refresh(app, signed.refresh_token))
      clock.advance(11)
      expectRefusal(t, await refresh(app, signed.refresh_token), 'REFRESH_TOKEN_REUSED')
      t.equal((await forwardAuth(app, other.access_token)).statusCode, 200, 'the other session\'s access token works')
      expectPair(t, await refresh(app, other.refresh_token))
    })

    t.test('REFRESH_REUSE_GRACE_SECONDS=0 makes any replay theft', async (t) => {
      for (const [name, seconds] of [['an immediate replay (same instant)', 0], ['a replay one second later', 1]] as const) {
        t.test(name, async (t) => {
          const clock = movableClock()
          const app = await build(t, { env: { ...env, REFRESH_REUSE_GRACE_SECONDS: '0' }, now: clock.now })
          const signed = await signup(app)
          const latest = expectPair(t, await refresh(app, signed.refresh_token))
          clock.advance(seconds)
          expectRefusal(t, await refresh(app, signed.refresh_token), 'REFRESH_TOKEN_REUSED')
          expectRefusal(t, await forwardAuth(app, latest.access_token), 'SESSION_REVOKED')
          expectRefreshRefused(t, await refresh(app, latest.refresh_token))
        })
      }
    })

    t.test('idle expiry: past REFRESH_TOKEN_TTL_SECONDS the refresh token is 401 INVALID_REFRESH_TOKEN', async (t) => {
      const clock = movableClock()
      const app = await build(t, { env: { ...env, REFRESH_TOKEN_TTL_SECONDS: '60' }, now: clock.now })
      const signed = await signup(app)
      clock.goTo(61)
      expectRefusal(t, await refresh(app, signed.refresh_token), 'INVALID_REFRESH_TOKEN')
    })

    t.test('idle expiry: each rotation renews the idle deadline', async (t) => {
      const clock = movableClock()
      const app = await build(t, { env: { ...env, REFRESH_TOKEN_TTL_SECONDS: '60' }, now: clock.now })
      const signed = await signup(app)
      clock.goTo(50)
      const second = expectPair(t, await refresh(app, signed.refresh_token))
      clock.goTo(100)
      const third = expectPair(t, await refresh(app, second.refresh_token))
      t.equal(claimsOf(third.access_token).sid, claimsOf(signed.access_token).sid, 'still the same session at 100 s, past the first token\'s 60 s')
      clock.goTo(161)
      expectRefusal(t, await refresh(app, third.refresh_token), 'INVALID_REFRESH_TOKEN')
    })

    t.test('absolute expiry: past SESSION_MAX_AGE_SECONDS refresh is 401 SESSION_EXPIRED though the token is fresh', async (t) => {
      const clock = movableClock()
      const app = await build(t, { env: { ...env, REFRESH_TOKEN_TTL_SECONDS: '60', SESSION_MAX_AGE_SECONDS: '120' }, now: clock.now })
      const signed = await signup(app)
      clock.goTo(50)
      const second = expectPair(t, await refresh(app, signed.refresh_token))
      clock.goTo(100)
      const third = expectPair(t, await refresh(app, second.refresh_token))
      clock.goTo(121)
      expectRefusal(t, await refresh(app, third.refresh_token), 'SESSION_EXPIRED')
    })

    t.test('ACCESS_TOKEN_TTL_SECONDS=60: expires_in 60, exp - iat = 60, and the token expires then', async (t) => {
      const clock = movableClock()
      const app = await build(t, { env: { ...env, ACCESS_TOKEN_TTL_SECONDS: '60' }, now: clock.now })
      const signed = await signup(app)
      t.equal(signed.expires_in, 60, 'signup: expires_in 60')
      const c = claimsOf(signed.access_token)
      t.equal(c.exp - c.iat, 60, 'signup: exp - iat = 60')
      t.equal(c.iat, Math.floor(clock.now().getTime() / 1000), 'iat is the service clock')
      const next = expectPair(t, await refresh(app, signed.refresh_token))
      t.equal(next.expires_in, 60, 'refresh: expires_in 60')
      const n = claimsOf(next.access_token)
      t.equal(n.exp - n.iat, 60, 'refresh: exp - iat = 60')
      clock.advance(61)
      expectRefusal(t, await forwardAuth(app, next.access_token), 'ACCESS_TOKEN_EXPIRED')
    })

    t.test('default lifetimes: access 15 min, refresh idle 7 days, session 30 days', async (t) => {
      const clock = movableClock()
      const app = await build(t, { env, now: clock.now })
      const signed = await signup(app)
      t.equal(signed.expires_in, 900, 'expires_in 900')
      const c = claimsOf(signed.access_token)
      t.equal(c.exp - c.iat, 900, 'exp - iat = 900')
      const session = await app.db.selectFrom('sessions').selectAll().where('id', '=', c.sid).executeTakeFirstOrThrow()
      t.equal(new Date(session.expires_at).getTime() - new Date(session.created_at).getTime(), 30 * DAY, 'session ends 30 days after it began')
      const token = await app.db.selectFrom('refresh_tokens').selectAll().where('token_hash', '=', hashOf(signed.refresh_token)).executeTakeFirstOrThrow()
      t.equal(new Date(token.expires_at).getTime() - new Date(token.created_at).getTime(), 7 * DAY, 'refresh token idles out after 7 days')
    })
  })
}
