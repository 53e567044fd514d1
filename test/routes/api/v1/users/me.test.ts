import { createHmac, createPublicKey, createSign, generateKeyPairSync, randomUUID, type KeyObject } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import t from 'tap'
import {
  bearer, build, databases, expectNoContent, expectProblem, expectUnauthorized, GOOD_PASSWORD, json, movableClock,
  refresh, signup, tempSqliteUrl, uniqueEmail, uniqueUsername
} from '../../../../helper.js'

const ME = '/api/v1/users/me'
/** A deleted user's access token is dead; either code says so. */
const DEAD_TOKEN = ['INVALID_ACCESS_TOKEN', 'SESSION_REVOKED']

const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url')
const decode = (part: string) => JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as Record<string, any>

/** The header and payload of a JWT, unverified. */
function parts (token: string) {
  const [header, payload] = token.split('.')
  return { header: decode(header), payload: decode(payload) }
}

/** A JWT signed with an RSA key of the test's own (the service never saw it). */
function signRs256 (header: Record<string, unknown>, payload: Record<string, unknown>, privateKey: KeyObject): string {
  const input = `${b64({ typ: 'JWT', ...header, alg: 'RS256' })}.${b64(payload)}`
  const signature = createSign('RSA-SHA256').update(input).sign(privateKey).toString('base64url')
  return `${input}.${signature}`
}

const me = (app: FastifyInstance, token: string) => app.inject({ method: 'GET', url: ME, headers: bearer(token) })

async function userRow (app: FastifyInstance, id: string) {
  return app.db.selectFrom('users').selectAll().where('id', '=', id).executeTakeFirst()
}

for (const db of databases) {
  t.test(db.name, async (t) => {
    const env = { DATABASE_URL: db.url }

    t.test('GET returns the signed-in user and no password hash', async (t) => {
      const app = await build(t, { env })
      const email = uniqueEmail('me')
      const signed = await signup(app, { email })
      const res = await me(app, signed.access_token)
      t.equal(res.statusCode, 200)
      t.match(res.headers['content-type'], /^application\/json/)
      const body = json(res)
      t.same(body, signed.user, 'the same user signup returned')
      t.equal(body.email, email)
      t.equal(body.username, null)
      t.equal(body.email_verified, false)
      t.same(body.roles, ['user'])
      t.match(body.id, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/)
      t.same(Object.keys(body).sort(), ['created_at', 'email', 'email_verified', 'id', 'roles', 'updated_at', 'username'])
      t.notOk(/password|hash|argon2/i.test(res.body), 'no password or hash in the body')
      t.match(body.created_at, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3})?Z$/, 'ISO 8601 UTC')
    })

    for (const method of ['PATCH', 'PUT'] as const) {
      t.test(`${method} {username} sets it trimmed and lower-cased; null removes it`, async (t) => {
        const app = await build(t, { env })
        const signed = await signup(app)
        const name = uniqueUsername('Mixed')
        const res = await app.inject({ method, url: ME, headers: bearer(signed.access_token), payload: { username: `  ${name.toUpperCase()}  ` } })
        t.equal(res.statusCode, 200)
        const body = json(res)
        t.equal(body.username, name.toLowerCase())
        t.equal(body.id, signed.user.id)
        t.equal((await userRow(app, signed.user.id))?.username, name.toLowerCase(), 'stored lower-cased')
        t.equal(json(await me(app, signed.access_token)).username, name.toLowerCase(), 'GET shows it')

        const cleared = await app.inject({ method, url: ME, headers: bearer(signed.access_token), payload: { username: null } })
        t.equal(cleared.statusCode, 200)
        t.equal(json(cleared).username, null)
        t.equal((await userRow(app, signed.user.id))?.username, null, 'removed in the database')

        // The name is free again: another user can take it.
        const other = await signup(app)
        const taken = await app.inject({ method, url: ME, headers: bearer(other.access_token), payload: { username: name } })
        t.equal(taken.statusCode, 200)
        t.equal(json(taken).username, name.toLowerCase())
      })
    }

    t.test('a username another user has (in any case) is 409 USERNAME_TAKEN', async (t) => {
      const app = await build(t, { env })
      const a = await signup(app)
      const b = await signup(app)
      const name = uniqueUsername('taken')
      t.equal((await app.inject({ method: 'PATCH', url: ME, headers: bearer(a.access_token), payload: { username: name } })).statusCode, 200)
      for (const method of ['PATCH', 'PUT'] as const) {
        const res = await app.inject({ method, url: ME, headers: bearer(b.access_token), payload: { username: name.toUpperCase() } })
        const body = expectProblem(t, res, 409, 'USERNAME_TAKEN')
        t.equal(body.title, 'Conflict')
      }
      t.equal((await userRow(app, b.user.id))?.username, null, 'b is unchanged')
      t.equal((await userRow(app, a.user.id))?.username, name, 'a keeps it')
      // Setting one's own current name again is no conflict.
      const same = await app.inject({ method: 'PATCH', url: ME, headers: bearer(a.access_token), payload: { username: name } })
      t.equal(same.statusCode, 200)
    })

    t.test('a bad username or body is 400 VALIDATION_FAILED and changes nothing', async (t) => {
      const app = await build(t, { env })
      const signed = await signup(app)
      const bad: unknown[] = ['ab', 'has space', 'dash-ed', 'x'.repeat(43), 'émile', '', 123, true, {}]
      for (const username of bad) {
        const res = await app.inject({ method: 'PATCH', url: ME, headers: bearer(signed.access_token), payload: { username } })
        const body = expectProblem(t, res, 400, 'VALIDATION_FAILED')
        t.ok(Array.isArray(body.errors) && body.errors.length > 0, `errors listed for ${JSON.stringify(username)}`)
        t.match(body.errors?.[0]?.field, /^\/body\/username/, 'names the field')
      }
      const missing = await app.inject({ method: 'PATCH', url: ME, headers: bearer(signed.access_token), payload: {} })
      t.match(expectProblem(t, missing, 400, 'VALIDATION_FAILED').errors, [{ field: '/body/username' }])
      t.equal((await userRow(app, signed.user.id))?.username, null, 'unchanged')
    })

    t.test('an extra field is 400', async (t) => {
      const app = await build(t, { env })
      const signed = await signup(app)
      for (const method of ['PATCH', 'PUT'] as const) {
        const res = await app.inject({ method, url: ME, headers: bearer(signed.access_token), payload: { username: uniqueUsername(), roles: ['admin'] } })
        const body = expectProblem(t, res, 400, 'VALIDATION_FAILED')
        t.match(body.errors, [{ field: '/body/roles', message: 'is not an accepted field' }])
      }
      t.equal((await userRow(app, signed.user.id))?.username, null, 'unchanged')
      const del = await app.inject({ method: 'DELETE', url: ME, headers: bearer(signed.access_token), payload: { password: GOOD_PASSWORD, force: true } })
      expectProblem(t, del, 400, 'VALIDATION_FAILED')
      t.ok(await userRow(app, signed.user.id), 'still there')
    })

    t.test('DELETE with a wrong password is 401 INVALID_CREDENTIALS and the user stays', async (t) => {
      const app = await build(t, { env })
      const signed = await signup(app)
      const res = await app.inject({ method: 'DELETE', url: ME, headers: bearer(signed.access_token), payload: { password: 'not the password at all' } })
      expectUnauthorized(t, res, 'INVALID_CREDENTIALS')
      t.ok(await userRow(app, signed.user.id), 'user still exists')
      t.equal((await me(app, signed.access_token)).statusCode, 200, 'token still works')
      const noBody = await app.inject({ method: 'DELETE', url: ME, headers: bearer(signed.access_token) })
      t.equal(noBody.statusCode, 400, 'no password: 400')
      t.ok(await userRow(app, signed.user.id), 'user still exists')
    })

    t.test('DELETE with the password removes the user, sessions and refresh tokens', async (t) => {
      const app = await build(t, { env })
      const signed = await signup(app)
      const userId = signed.user.id as string
      // A second session of the same user, and another user who must be untouched.
      const login = await app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email: signed.user.email, password: GOOD_PASSWORD } })
      t.equal(login.statusCode, 200)
      const second = json(login)
      const bystander = await signup(app)

      const sessionIds = (await app.db.selectFrom('sessions').select('id').where('user_id', '=', userId).execute()).map((r) => r.id)
      t.equal(sessionIds.length, 2, 'two sessions before')
      t.same(sessionIds.sort(), [parts(signed.access_token).payload.sid, parts(second.access_token).payload.sid].sort())
      const tokensBefore = await app.db.selectFrom('refresh_tokens').select('token_hash').where('session_id', 'in', sessionIds).execute()
      t.equal(tokensBefore.length, 2, 'two refresh tokens before')

      const res = await app.inject({ method: 'DELETE', url: ME, headers: bearer(signed.access_token), payload: { password: GOOD_PASSWORD } })
      expectNoContent(t, res)

      t.equal(await userRow(app, userId), undefined, 'user row gone')
      t.same(await app.db.selectFrom('sessions').select('id').where('user_id', '=', userId).execute(), [], 'sessions gone')
      t.same(await app.db.selectFrom('refresh_tokens').select('token_hash').where('session_id', 'in', sessionIds).execute(), [], 'refresh tokens gone')

      for (const token of [signed.access_token, second.access_token]) {
        expectUnauthorized(t, await me(app, token), DEAD_TOKEN)
      }
      for (const token of [signed.refresh_token, second.refresh_token]) {
        expectUnauthorized(t, await refresh(app, token), 'INVALID_REFRESH_TOKEN')
      }
      const again = await app.inject({ method: 'DELETE', url: ME, headers: bearer(signed.access_token), payload: { password: GOOD_PASSWORD } })
      expectUnauthorized(t, again, DEAD_TOKEN)
      const login2 = await app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email: signed.user.email, password: GOOD_PASSWORD } })
      expectUnauthorized(t, login2, 'INVALID_CREDENTIALS')

      t.equal((await me(app, bystander.access_token)).statusCode, 200, 'another user is untouched')
      t.ok(await userRow(app, bystander.user.id))
    })

    t.test("a deleted user's token never resolves to another user", async (t) => {
      const app = await build(t, { env })
      const a = await signup(app)
      t.equal((await app.inject({ method: 'DELETE', url: ME, headers: bearer(a.access_token), payload: { password: GOOD_PASSWORD } })).statusCode, 204)
      const bEmail = uniqueEmail('b')
      const b = await signup(app, { email: bEmail })
      t.not(b.user.id, a.user.id)
      const res = await me(app, a.access_token)
      expectUnauthorized(t, res, DEAD_TOKEN)
      t.notOk(res.body.includes(bEmail), "never B's profile")
      t.notOk(res.body.includes(b.user.id), "never B's id")
      const patch = await app.inject({ method: 'PATCH', url: ME, headers: bearer(a.access_token), payload: { username: uniqueUsername() } })
      expectUnauthorized(t, patch, DEAD_TOKEN)
      t.equal((await userRow(app, b.user.id))?.username, null, 'B unchanged')
    })

    t.test('no token is 401 AUTHENTICATION_REQUIRED with WWW-Authenticate: Bearer', async (t) => {
      const app = await build(t, { env })
      for (const method of ['GET', 'PATCH', 'PUT', 'DELETE'] as const) {
        const res = await app.inject({ method, url: ME, ...(method === 'GET' ? {} : { payload: method === 'DELETE' ? { password: GOOD_PASSWORD } : { username: 'someone' } }) })
        const body = expectUnauthorized(t, res, 'AUTHENTICATION_REQUIRED')
        t.equal(body.type, 'about:blank')
        t.equal(body.title, 'Unauthorized')
        t.type(body.detail, 'string')
      }
    })

    t.test('bad bearer tokens are all 401', async (t) => {
      const app = await build(t, { env })
      const signed = await signup(app)
      t.equal((await me(app, signed.access_token)).statusCode, 200, 'control: the real token works')
      const { header, payload } = parts(signed.access_token)
      const [h, p] = signed.access_token.split('.')

      const send = (authorization: string) => app.inject({ method: 'GET', url: ME, headers: { authorization } })

      expectUnauthorized(t, await send('Bearer garbage'), 'INVALID_ACCESS_TOKEN')
      expectUnauthorized(t, await send('Basic xyz'), 'INVALID_ACCESS_TOKEN')
      expectUnauthorized(t, await send('Bearer'), 'INVALID_ACCESS_TOKEN')
      expectUnauthorized(t, await send(`Bearer ${h}.${p}`), 'INVALID_ACCESS_TOKEN')
      expectUnauthorized(t, await send(`Bearer ${h}.${p}.`), 'INVALID_ACCESS_TOKEN')

      // alg none, naming the real key.
      const none = `${b64({ alg: 'none', typ: 'JWT', kid: header.kid })}.${p}.`
      expectUnauthorized(t, await send(`Bearer ${none}`), 'INVALID_ACCESS_TOKEN')
      const noneNoKid = `${b64({ alg: 'none', typ: 'JWT' })}.${p}.`
      expectUnauthorized(t, await send(`Bearer ${noneNoKid}`), 'INVALID_ACCESS_TOKEN')

      // HS256 with the service's public key (as PEM) as the HMAC secret.
      const jwks = json(await app.inject({ method: 'GET', url: '/.well-known/jwks.json' }))
      const jwk = jwks.keys.find((k: { kid: string }) => k.kid === header.kid)
      t.ok(jwk, 'the token kid is in the JWKS')
      const pem = createPublicKey({ key: jwk, format: 'jwk' }).export({ type: 'spki', format: 'pem' }).toString()
      for (const secret of [pem, pem.trim()]) {
        const input = `${b64({ alg: 'HS256', typ: 'JWT', kid: header.kid })}.${p}`
        const hs = `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`
        expectUnauthorized(t, await send(`Bearer ${hs}`), 'INVALID_ACCESS_TOKEN')
      }

      // A key of our own: unknown kid, and the real kid with the wrong key.
      const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
      const claims = { ...payload, jti: randomUUID() }
      expectUnauthorized(t, await send(`Bearer ${signRs256({ kid: 'not-a-known-kid' }, claims, privateKey)}`), 'INVALID_ACCESS_TOKEN')
      expectUnauthorized(t, await send(`Bearer ${signRs256({ kid: header.kid }, claims, privateKey)}`), 'INVALID_ACCESS_TOKEN')
      expectUnauthorized(t, await send(`Bearer ${signRs256({}, claims, privateKey)}`), 'INVALID_ACCESS_TOKEN')

      // The real token with its payload changed (sub of another user) keeps its signature no more.
      const other = await signup(app)
      const forged = `${h}.${b64({ ...payload, sub: other.user.id })}.${signed.access_token.split('.')[2]}`
      const forgedRes = await send(`Bearer ${forged}`)
      expectUnauthorized(t, forgedRes, 'INVALID_ACCESS_TOKEN')
      t.notOk(forgedRes.body.includes(other.user.email))
      // The forged token ends as the real one does, and the real one is in the verified-token cache: it must not stand in for it.
      const after = await send(`Bearer ${signed.access_token}`)
      t.equal(after.statusCode, 200, 'the real token still works after the forgery was refused')
      t.equal(json(after).id, signed.user.id, 'and is still its own user')

      // The scheme's case does not matter (RFC 7235); the separator is one space.
      t.equal((await send(`bearer ${signed.access_token}`)).statusCode, 200, 'bearer in lower case')
      t.equal((await send(`BEARER ${signed.access_token}`)).statusCode, 200, 'BEARER in upper case')
      expectUnauthorized(t, await send(`Bearer  ${signed.access_token}`), 'INVALID_ACCESS_TOKEN')
      expectUnauthorized(t, await send(`Bearer\t${signed.access_token}`), 'INVALID_ACCESS_TOKEN')
      expectUnauthorized(t, await send(`Bearer ${signed.access_token} `), 'INVALID_ACCESS_TOKEN')
    })

    t.test('a token from a service with another audience or issuer is refused, even with the same key', async (t) => {
      // The apps share one database, so a refusal can only come from the token itself.
      const url = db.url.startsWith('sqlite:') ? tempSqliteUrl(t) : db.url
      const pem = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()
      const main = await build(t, { env: { DATABASE_URL: url, JWT_PRIVATE_KEY: pem } })
      const twin = await build(t, { env: { DATABASE_URL: url, JWT_PRIVATE_KEY: pem } })
      const otherAud = await build(t, { env: { DATABASE_URL: url, JWT_PRIVATE_KEY: pem, JWT_AUDIENCE: 'another-service' } })
      const otherIss = await build(t, { env: { DATABASE_URL: url, JWT_PRIVATE_KEY: pem, JWT_ISSUER: 'https://evil.example.com' } })

      const fromMain = await signup(main)
      t.equal((await me(twin, fromMain.access_token)).statusCode, 200, 'control: same key and settings accept each other')

      const fromAud = await signup(otherAud)
      t.equal(parts(fromAud.access_token).payload.aud, 'another-service')
      t.equal(parts(fromAud.access_token).header.kid, parts(fromMain.access_token).header.kid, 'same key, same kid')
      t.equal((await me(otherAud, fromAud.access_token)).statusCode, 200, 'valid where it was issued')
      expectUnauthorized(t, await me(main, fromAud.access_token), 'INVALID_ACCESS_TOKEN')
      expectUnauthorized(t, await me(otherAud, fromMain.access_token), 'INVALID_ACCESS_TOKEN')

      const fromIss = await signup(otherIss)
      t.equal(parts(fromIss.access_token).payload.iss, 'https://evil.example.com')
      t.equal((await me(otherIss, fromIss.access_token)).statusCode, 200, 'valid where it was issued')
      expectUnauthorized(t, await me(main, fromIss.access_token), 'INVALID_ACCESS_TOKEN')
      expectUnauthorized(t, await me(otherIss, fromMain.access_token), 'INVALID_ACCESS_TOKEN')
    })

    t.test('an expired token is 401 ACCESS_TOKEN_EXPIRED', async (t) => {
      const clock = movableClock()
      const app = await build(t, { env, now: clock.now })
      const signed = await signup(app)
      t.equal((await me(app, signed.access_token)).statusCode, 200)
      clock.goTo(899)
      t.equal((await me(app, signed.access_token)).statusCode, 200, 'valid just before 900 s')
      clock.goTo(901)
      const body = expectUnauthorized(t, await me(app, signed.access_token), 'ACCESS_TOKEN_EXPIRED')
      t.type(body.detail, 'string')
      const patch = await app.inject({ method: 'PATCH', url: ME, headers: bearer(signed.access_token), payload: { username: uniqueUsername() } })
      expectUnauthorized(t, patch, 'ACCESS_TOKEN_EXPIRED')
      t.equal((await userRow(app, signed.user.id))?.username, null, 'nothing changed')
    })
  })
}
