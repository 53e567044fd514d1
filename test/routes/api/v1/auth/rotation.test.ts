import { createHash } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import t, { type Test } from 'tap'
import { bearer, build, databases, GOOD_PASSWORD, json, uniqueEmail } from '../../../../helper.js'

const SIGNUP = '/api/v1/auth/signup'
const REFRESH = '/api/v1/auth/refresh'
const VERIFY = '/api/v1/auth/verify'
const ME = '/api/v1/users/me'
const SECOND = 1000
const DAY = 86_400 * SECOND

/** The claims of a JWT, read without verifying it. */
const claims = (token: string) => JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8')) as Record<string, any>
/** How the service stores a refresh token: its SHA-256, base64url. */
const hashOf = (token: string) => createHash('sha256').update(token).digest('base64url')

async function signup (app: FastifyInstance, headers: Record<string, string> = {}) {
  const res = await app.inject({ method: 'POST', url: SIGNUP, headers, payload: { email: uniqueEmail('rotation'), password: GOOD_PASSWORD } })
  if (res.statusCode !== 201) throw new Error(`signup failed: ${res.statusCode} ${res.body}`)
  return json(res)
}

const refresh = (app: FastifyInstance, refreshToken: string, headers: Record<string, string> = {}) =>
  app.inject({ method: 'POST', url: REFRESH, headers, payload: { refresh_token: refreshToken } })

function expectProblem (t: Test, res: LightMyRequestResponse, status: number, code: string) {
  t.equal(res.statusCode, status, `status ${status}`)
  t.match(res.headers['content-type'], /^application\/problem\+json/, 'problem+json')
  const body = json(res)
  t.equal(body.code, code, `code ${code}`)
  t.notOk(body.access_token ?? body.refresh_token, 'no tokens in a refusal')
  return body
}

function expectPair (t: Test, res: LightMyRequestResponse) {
  t.equal(res.statusCode, 200, 'status 200')
  const body = json(res)
  t.type(body.access_token, 'string', 'an access token')
  t.type(body.refresh_token, 'string', 'a refresh token')
  t.equal(body.token_type, 'Bearer')
  return body
}

/** A 401 refusal of a refresh token, whatever the reason given. */
function expectRefreshRefused (t: Test, res: LightMyRequestResponse) {
  t.equal(res.statusCode, 401, 'status 401')
  t.ok(['INVALID_REFRESH_TOKEN', 'REFRESH_TOKEN_REUSED', 'SESSION_REVOKED', 'SESSION_EXPIRED'].includes(json(res).code), `code ${json(res).code} refuses the refresh`)
  t.notOk(json(res).refresh_token, 'no refresh token')
}

for (const db of databases) {
  t.test(db.name, async (t) => {
    const env = { DATABASE_URL: db.url }

    t.test('20 concurrent refreshes of one token over real sockets: one rotation, the same new pair for all', async (t) => {
      const app = await build(t, { env })
      await app.listen({ port: 0, host: '127.0.0.1' })
      const { port } = app.server.address() as AddressInfo
      const base = `http://127.0.0.1:${port}`
      const signed = await signup(app)
      const sid = claims(signed.access_token).sid

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
      t.same(new Set(bodies.map((b) => claims(b.access_token).sid)), new Set([sid]), 'every access token is for the same session')
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
      let clock = new Date()
      const app = await build(t, { env, now: () => clock })
      const signed = await signup(app)
      const first = expectPair(t, await refresh(app, signed.refresh_token))

      clock = new Date(clock.getTime() + 5 * SECOND)
      const replay = expectPair(t, await refresh(app, signed.refresh_token))
      t.equal(claims(replay.access_token).sid, claims(signed.access_token).sid, 'same session (sid claim)')
      t.equal(replay.refresh_token, first.refresh_token, 'the session\'s current refresh token')
      t.not(replay.access_token, first.access_token, 'a new access token')
      t.equal((await app.inject({ url: VERIFY, headers: bearer(first.access_token) })).statusCode, 200, 'the session is still alive')
      expectPair(t, await refresh(app, replay.refresh_token))
      const events = await app.db.selectFrom('auth_events').selectAll().where('session_id', '=', claims(signed.access_token).sid).execute()
      t.same(events, [], 'no theft recorded')
    })

    t.test('reuse inside the grace window follows several rotations to the current token', async (t) => {
      let clock = new Date()
      const app = await build(t, { env, now: () => clock })
      const signed = await signup(app)
      const second = expectPair(t, await refresh(app, signed.refresh_token))
      clock = new Date(clock.getTime() + 2 * SECOND)
      const third = expectPair(t, await refresh(app, second.refresh_token))
      clock = new Date(clock.getTime() + 2 * SECOND)
      const replay = expectPair(t, await refresh(app, signed.refresh_token))
      t.equal(replay.refresh_token, third.refresh_token, 'the current refresh token')
      t.equal(claims(replay.access_token).sid, claims(signed.access_token).sid, 'same session')
    })

    t.test('reuse after the grace window is theft: 401 REFRESH_TOKEN_REUSED, session revoked, event written', async (t) => {
      let clock = new Date()
      const app = await build(t, { env, now: () => clock })
      const signed = await signup(app)
      const sid = claims(signed.access_token).sid
      const latest = expectPair(t, await refresh(app, signed.refresh_token))

      clock = new Date(clock.getTime() + 11 * SECOND)
      const userAgent = 'rotation-test/thief'
      expectProblem(t, await refresh(app, signed.refresh_token, { 'user-agent': userAgent }), 401, 'REFRESH_TOKEN_REUSED')

      const events = await app.db.selectFrom('auth_events').selectAll().where('session_id', '=', sid).execute()
      t.equal(events.length, 1, 'one auth event for the session')
      const [event] = events
      t.match(event, { type: 'refresh_token_reused', user_id: signed.user.id, session_id: sid, ip: '127.0.0.1', user_agent: userAgent })
      t.match(event.id, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/, 'a uuid id')
      t.equal(new Date(event.created_at).toISOString(), clock.toISOString(), 'created_at is the service clock')
      let detail: unknown
      t.doesNotThrow(() => { detail = JSON.parse(event.detail) }, 'detail is JSON')
      t.type(detail, 'object', 'detail is a JSON object')
      t.notOk(event.detail.includes(signed.refresh_token) || event.detail.includes(latest.refresh_token), 'no token in the detail')

      for (const [name, token] of [['first', signed.access_token], ['latest', latest.access_token]]) {
        expectProblem(t, await app.inject({ url: VERIFY, headers: bearer(token) }), 401, 'SESSION_REVOKED')
        expectProblem(t, await app.inject({ url: ME, headers: bearer(token) }), 401, 'SESSION_REVOKED')
        t.pass(`the ${name} access token of the session is refused`)
      }
      expectRefreshRefused(t, await refresh(app, latest.refresh_token))
      const session = await app.db.selectFrom('sessions').select(['revoked_at']).where('id', '=', sid).executeTakeFirstOrThrow()
      t.not(session.revoked_at, null, 'the session row is revoked')
    })

    t.test('theft ends only the session of the stolen token', async (t) => {
      let clock = new Date()
      const app = await build(t, { env, now: () => clock })
      const signed = await signup(app)
      const login = await app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email: signed.user.email, password: GOOD_PASSWORD } })
      const other = expectPair(t, login)
      expectPair(t, await refresh(app, signed.refresh_token))
      clock = new Date(clock.getTime() + 11 * SECOND)
      expectProblem(t, await refresh(app, signed.refresh_token), 401, 'REFRESH_TOKEN_REUSED')
      t.equal((await app.inject({ url: VERIFY, headers: bearer(other.access_token) })).statusCode, 200, 'the other session\'s access token works')
      expectPair(t, await refresh(app, other.refresh_token))
    })

    t.test('REFRESH_REUSE_GRACE_SECONDS=0 makes any replay theft', async (t) => {
      t.test('an immediate replay (same instant)', async (t) => {
        const clock = new Date()
        const app = await build(t, { env: { ...env, REFRESH_REUSE_GRACE_SECONDS: '0' }, now: () => clock })
        const signed = await signup(app)
        const latest = expectPair(t, await refresh(app, signed.refresh_token))
        expectProblem(t, await refresh(app, signed.refresh_token), 401, 'REFRESH_TOKEN_REUSED')
        expectProblem(t, await app.inject({ url: VERIFY, headers: bearer(latest.access_token) }), 401, 'SESSION_REVOKED')
        expectRefreshRefused(t, await refresh(app, latest.refresh_token))
      })

      t.test('a replay one second later', async (t) => {
        let clock = new Date()
        const app = await build(t, { env: { ...env, REFRESH_REUSE_GRACE_SECONDS: '0' }, now: () => clock })
        const signed = await signup(app)
        const latest = expectPair(t, await refresh(app, signed.refresh_token))
        clock = new Date(clock.getTime() + SECOND)
        expectProblem(t, await refresh(app, signed.refresh_token), 401, 'REFRESH_TOKEN_REUSED')
        expectProblem(t, await app.inject({ url: VERIFY, headers: bearer(latest.access_token) }), 401, 'SESSION_REVOKED')
        expectRefreshRefused(t, await refresh(app, latest.refresh_token))
      })
    })

    t.test('idle expiry: past REFRESH_TOKEN_TTL_SECONDS the refresh token is 401 INVALID_REFRESH_TOKEN', async (t) => {
      const start = Date.now()
      let clock = new Date(start)
      const app = await build(t, { env: { ...env, REFRESH_TOKEN_TTL_SECONDS: '60' }, now: () => clock })
      const signed = await signup(app)
      clock = new Date(start + 61 * SECOND)
      expectProblem(t, await refresh(app, signed.refresh_token), 401, 'INVALID_REFRESH_TOKEN')
    })

    t.test('idle expiry: each rotation renews the idle deadline', async (t) => {
      const start = Date.now()
      let clock = new Date(start)
      const app = await build(t, { env: { ...env, REFRESH_TOKEN_TTL_SECONDS: '60' }, now: () => clock })
      const signed = await signup(app)
      clock = new Date(start + 50 * SECOND)
      const second = expectPair(t, await refresh(app, signed.refresh_token))
      clock = new Date(start + 100 * SECOND)
      const third = expectPair(t, await refresh(app, second.refresh_token))
      t.equal(claims(third.access_token).sid, claims(signed.access_token).sid, 'still the same session at 100 s, past the first token\'s 60 s')
      clock = new Date(start + 161 * SECOND)
      expectProblem(t, await refresh(app, third.refresh_token), 401, 'INVALID_REFRESH_TOKEN')
    })

    t.test('absolute expiry: past SESSION_MAX_AGE_SECONDS refresh is 401 SESSION_EXPIRED though the token is fresh', async (t) => {
      const start = Date.now()
      let clock = new Date(start)
      const app = await build(t, { env: { ...env, REFRESH_TOKEN_TTL_SECONDS: '60', SESSION_MAX_AGE_SECONDS: '120' }, now: () => clock })
      const signed = await signup(app)
      clock = new Date(start + 50 * SECOND)
      const second = expectPair(t, await refresh(app, signed.refresh_token))
      clock = new Date(start + 100 * SECOND)
      const third = expectPair(t, await refresh(app, second.refresh_token))
      clock = new Date(start + 121 * SECOND)
      expectProblem(t, await refresh(app, third.refresh_token), 401, 'SESSION_EXPIRED')
    })

    t.test('ACCESS_TOKEN_TTL_SECONDS=60: expires_in 60, exp - iat = 60, and the token expires then', async (t) => {
      let clock = new Date()
      const app = await build(t, { env: { ...env, ACCESS_TOKEN_TTL_SECONDS: '60' }, now: () => clock })
      const signed = await signup(app)
      t.equal(signed.expires_in, 60, 'signup: expires_in 60')
      const c = claims(signed.access_token)
      t.equal(c.exp - c.iat, 60, 'signup: exp - iat = 60')
      t.equal(c.iat, Math.floor(clock.getTime() / 1000), 'iat is the service clock')
      const next = expectPair(t, await refresh(app, signed.refresh_token))
      t.equal(next.expires_in, 60, 'refresh: expires_in 60')
      const n = claims(next.access_token)
      t.equal(n.exp - n.iat, 60, 'refresh: exp - iat = 60')
      clock = new Date(clock.getTime() + 61 * SECOND)
      expectProblem(t, await app.inject({ url: VERIFY, headers: bearer(next.access_token) }), 401, 'ACCESS_TOKEN_EXPIRED')
    })

    t.test('default lifetimes: access 15 min, refresh idle 7 days, session 30 days', async (t) => {
      const clock = new Date()
      const app = await build(t, { env, now: () => clock })
      const signed = await signup(app)
      t.equal(signed.expires_in, 900, 'expires_in 900')
      const c = claims(signed.access_token)
      t.equal(c.exp - c.iat, 900, 'exp - iat = 900')
      const session = await app.db.selectFrom('sessions').selectAll().where('id', '=', c.sid).executeTakeFirstOrThrow()
      t.equal(new Date(session.expires_at).getTime() - new Date(session.created_at).getTime(), 30 * DAY, 'session ends 30 days after it began')
      const token = await app.db.selectFrom('refresh_tokens').selectAll().where('token_hash', '=', hashOf(signed.refresh_token)).executeTakeFirstOrThrow()
      t.equal(new Date(token.expires_at).getTime() - new Date(token.created_at).getTime(), 7 * DAY, 'refresh token idles out after 7 days')
    })
  })
}
