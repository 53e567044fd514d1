import { readFileSync } from 'node:fs'
import { verify } from '@node-rs/argon2'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import t, { type Test } from 'tap'
import { build, claimsOf, databases, expectProblem, GOOD_PASSWORD, json, uniqueEmail, uniqueUsername } from '../../../../helper.js'

const SIGNUP = '/api/v1/auth/signup'
const LOGIN = '/api/v1/auth/login'
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/
const ARGON2ID_OWASP = /^\$argon2id\$v=19\$m=19456,t=2,p=1\$/

const post = (app: FastifyInstance, url: string, payload: unknown) => app.inject({ method: 'POST', url, payload: payload as Record<string, unknown> })

/** Asserts a 400 VALIDATION_FAILED whose `errors` name `field`. */
function expectInvalid (t: Test, res: LightMyRequestResponse, field: string) {
  const body = expectProblem(t, res, 400, 'VALIDATION_FAILED')
  const fields = (body.errors ?? []).map((e: { field: string }) => e.field)
  t.ok(fields.includes(field), `errors list ${field}`, { found: fields })
}

async function usersWithEmail (app: FastifyInstance, email: string) {
  return app.db.selectFrom('users').selectAll().where('email', '=', email.trim().toLowerCase()).execute()
}

/** A common password from the service's own list, at least 8 characters long, in upper case. */
const COMMON_UPPER = readFileSync(new URL('../../../../../services/common-passwords.txt', import.meta.url), 'utf8')
  .split('\n').filter((p) => p.length >= 8 && p !== 'password1').at(-1)!.toUpperCase()

for (const db of databases) {
  t.test(db.name, async (t) => {
    const app = await build(t, { env: { DATABASE_URL: db.url } })

    t.test('201 with a token response and the public user', async (t) => {
      const email = uniqueEmail('Signup')
      const username = uniqueUsername()
      const res = await post(app, SIGNUP, { email: `  ${email.toUpperCase()}  `, password: GOOD_PASSWORD, username: ` ${username.toUpperCase()} ` })
      t.equal(res.statusCode, 201)
      t.match(res.headers['content-type'], /^application\/json/)
      const body = json(res)
      t.same(Object.keys(body).sort(), ['access_token', 'expires_at', 'expires_in', 'refresh_token', 'token_type', 'user'])
      t.equal(body.token_type, 'Bearer')
      t.equal(body.expires_in, 900)
      t.equal(body.expires_at, claimsOf(body.access_token).exp, 'expires_at is the token\'s exp')
      t.match(body.access_token, /^[\w-]+\.[\w-]+\.[\w-]+$/, 'access token is a JWT')
      t.match(body.refresh_token, /^[\w-]{20,}$/, 'refresh token is opaque base64url')
      const user = body.user
      t.same(Object.keys(user).sort(), ['created_at', 'email', 'email_verified', 'id', 'roles', 'updated_at', 'username'])
      t.match(user.id, UUID)
      t.equal(user.email, email.toLowerCase(), 'email trimmed and lower-cased')
      t.equal(user.username, username, 'username trimmed and lower-cased')
      t.equal(user.email_verified, false)
      t.same(user.roles, ['user'])
      t.match(user.created_at, ISO_UTC)
      t.match(user.updated_at, ISO_UTC)

      const claims = claimsOf(body.access_token)
      t.equal(claims.sub, user.id, 'access token names the user')
      t.equal(claims.exp - claims.iat, 900, 'access token lives 15 minutes')

      const [row] = await usersWithEmail(app, email)
      t.equal(row.id, user.id, 'stored under the normalised email')
      t.equal(row.username, username, 'stored under the normalised username')
    })

    t.test('no password hash anywhere in the response', async (t) => {
      const email = uniqueEmail()
      const res = await post(app, SIGNUP, { email, password: GOOD_PASSWORD })
      t.equal(res.statusCode, 201)
      const [row] = await usersWithEmail(app, email)
      t.notOk(res.body.includes(row.password_hash), 'the stored hash is not in the body')
      t.notOk(res.body.includes('$argon2'), 'no argon2 string in the body')
      t.notOk(res.body.includes(GOOD_PASSWORD), 'the password is not in the body')
      t.notOk(/password/i.test(res.body), 'no password field in the body')
    })

    t.test('the password is stored as argon2id with m=19456,t=2,p=1', async (t) => {
      const email = uniqueEmail()
      t.equal((await post(app, SIGNUP, { email, password: GOOD_PASSWORD })).statusCode, 201)
      const [row] = await usersWithEmail(app, email)
      t.match(row.password_hash, ARGON2ID_OWASP)
      t.ok(await verify(row.password_hash, GOOD_PASSWORD), 'the hash verifies the password')
    })

    t.test('a taken email, in another case and with spaces, is 409 EMAIL_TAKEN', async (t) => {
      const email = uniqueEmail('Taken')
      t.equal((await post(app, SIGNUP, { email, password: GOOD_PASSWORD })).statusCode, 201)
      const res = await post(app, SIGNUP, { email: `  ${email.toUpperCase()} `, password: 'another good passphrase' })
      expectProblem(t, res, 409, 'EMAIL_TAKEN')
      t.equal((await usersWithEmail(app, email)).length, 1, 'still one account')
    })

    t.test('a taken username, in another case, is 409 USERNAME_TAKEN', async (t) => {
      const username = uniqueUsername()
      t.equal((await post(app, SIGNUP, { email: uniqueEmail(), password: GOOD_PASSWORD, username })).statusCode, 201)
      const email = uniqueEmail()
      const res = await post(app, SIGNUP, { email, password: GOOD_PASSWORD, username: username.toUpperCase() })
      expectProblem(t, res, 409, 'USERNAME_TAKEN')
      t.equal((await usersWithEmail(app, email)).length, 0, 'no account made')
    })

    t.test('weak passwords are 400 WEAK_PASSWORD and make no account', async (t) => {
      const cases: Array<[string, (email: string, username: string) => string]> = [
        ['7 characters', () => 'Ab1!xyz'],
        ['257 characters', () => 'Ab1!'.repeat(64) + 'x'],
        ['password1', () => 'password1'],
        ['PassWord1 (common, other case)', () => 'PassWord1'],
        [`${COMMON_UPPER} (another list entry, upper case)`, () => COMMON_UPPER],
        ['the email address', (email) => email],
        ['the username, in upper case', (_email, username) => username.toUpperCase()]
      ]
      for (const [name, password] of cases) {
        t.test(name, async (t) => {
          const email = uniqueEmail('Weak')
          const username = uniqueUsername()
          const res = await post(app, SIGNUP, { email, username, password: password(email, username) })
          expectProblem(t, res, 400, 'WEAK_PASSWORD')
          t.equal((await usersWithEmail(app, email)).length, 0, 'no account made')
        })
      }
    })

    t.test('a 256-character password is accepted and signs in', async (t) => {
      const email = uniqueEmail()
      const password = 'Ab1!'.repeat(64)
      t.equal([...password].length, 256)
      t.equal((await post(app, SIGNUP, { email, password })).statusCode, 201)
      t.equal((await post(app, LOGIN, { email, password })).statusCode, 200)
    })

    t.test('a 100-byte multibyte password is accepted and every byte counts', async (t) => {
      const email = uniqueEmail()
      const password = '😀'.repeat(25)
      t.equal(Buffer.byteLength(password, 'utf8'), 100)
      t.equal((await post(app, SIGNUP, { email, password })).statusCode, 201)
      t.equal((await post(app, LOGIN, { email, password })).statusCode, 200, 'signs in')
      const lastDiffers = '😀'.repeat(24) + '😁'
      expectProblem(t, await post(app, LOGIN, { email, password: lastDiffers }), 401, 'INVALID_CREDENTIALS')
    })

    t.test('passwords are NFKC-normalised: full-width at signup, ASCII at login', async (t) => {
      const fullWidth = 'ｐａｓｓｗｏｒｄ－ｆｏｒ－ｔｅｓｔｓ'
      const ascii = 'password-for-tests'
      t.not(fullWidth, ascii)
      t.equal(fullWidth.normalize('NFKC'), ascii)
      const email = uniqueEmail()
      t.equal((await post(app, SIGNUP, { email, password: fullWidth })).statusCode, 201)
      const res = await post(app, LOGIN, { email, password: ascii })
      t.equal(res.statusCode, 200)
      t.equal(json(res).user.email, email)
    })

    t.test('bad inputs are 400 VALIDATION_FAILED naming the field', async (t) => {
      const good = () => ({ email: uniqueEmail(), password: GOOD_PASSWORD })
      const cases: Array<[string, Record<string, unknown>, string]> = [
        ['missing email', { password: GOOD_PASSWORD }, '/body/email'],
        ['missing password', { email: uniqueEmail() }, '/body/password'],
        ['email without @', { ...good(), email: 'ada.example.com' }, '/body/email'],
        ['username of 2 characters', { ...good(), username: 'ab' }, '/body/username'],
        ['username of 43 characters', { ...good(), username: 'a'.repeat(43) }, '/body/username'],
        ['username with -', { ...good(), username: 'ada-lovelace' }, '/body/username'],
        ['username with unicode letters', { ...good(), username: 'jösé_ñandú' }, '/body/username'],
        ['username with a space inside', { ...good(), username: 'ada lovelace' }, '/body/username'],
        ['password as a number (no coercion)', { email: uniqueEmail(), password: 12345678 }, '/body/password'],
        ['email as a number', { email: 12345678, password: GOOD_PASSWORD }, '/body/email'],
        ['extra field', { ...good(), admin: true }, '/body/admin'],
        ['empty object', {}, '/body/email']
      ]
      for (const [name, payload, field] of cases) {
        t.test(name, async (t) => {
          const res = await post(app, SIGNUP, payload)
          expectInvalid(t, res, field)
          if (typeof payload.email === 'string') t.equal((await usersWithEmail(app, payload.email)).length, 0, 'no account made')
        })
      }
    })

    t.test('a __proto__ key is 400 VALIDATION_FAILED and pollutes nothing', async (t) => {
      const email = uniqueEmail()
      const res = await app.inject({
        method: 'POST',
        url: SIGNUP,
        headers: { 'content-type': 'application/json' },
        payload: `{"email":"${email}","password":"${GOOD_PASSWORD}","__proto__":{"roles":["admin"]}}`
      })
      expectInvalid(t, res, '/body/__proto__')
      t.equal((await usersWithEmail(app, email)).length, 0, 'no account made')
      t.equal(({} as Record<string, unknown>).roles, undefined, 'Object.prototype untouched')
    })

    t.test('a body that is not an object is 400 VALIDATION_FAILED', async (t) => {
      const cases: Array<[string, { payload?: string, headers?: Record<string, string> }]> = [
        ['array', { payload: JSON.stringify([{ email: uniqueEmail(), password: GOOD_PASSWORD }]), headers: { 'content-type': 'application/json' } }],
        ['null', { payload: 'null', headers: { 'content-type': 'application/json' } }],
        ['no body at all', {}]
      ]
      for (const [name, opts] of cases) {
        t.test(name, async (t) => {
          expectInvalid(t, await app.inject({ method: 'POST', url: SIGNUP, ...opts }), '/body')
        })
      }
    })

    t.test('an empty JSON body is an empty object: 400 VALIDATION_FAILED naming what is missing', async (t) => {
      const res = await app.inject({ method: 'POST', url: SIGNUP, headers: { 'content-type': 'application/json' }, payload: '' })
      expectProblem(t, res, 400, 'VALIDATION_FAILED')
      t.ok(json(res).errors.some((e: { field: string }) => e.field === '/body/email'), 'names /body/email')
    })

    t.test('malformed JSON is 400 MALFORMED_JSON', async (t) => {
      const email = uniqueEmail()
      const res = await app.inject({ method: 'POST', url: SIGNUP, headers: { 'content-type': 'application/json' }, payload: `{"email":"${email}","password":` })
      expectProblem(t, res, 400, 'MALFORMED_JSON')
      t.equal((await usersWithEmail(app, email)).length, 0, 'no account made')
    })

    t.test('text/plain is 415 UNSUPPORTED_MEDIA_TYPE', async (t) => {
      const email = uniqueEmail()
      const res = await app.inject({ method: 'POST', url: SIGNUP, headers: { 'content-type': 'text/plain' }, payload: JSON.stringify({ email, password: GOOD_PASSWORD }) })
      expectProblem(t, res, 415, 'UNSUPPORTED_MEDIA_TYPE')
      t.equal((await usersWithEmail(app, email)).length, 0, 'no account made')
    })

    t.test('a body over 16 KiB is 413 PAYLOAD_TOO_LARGE', async (t) => {
      const email = uniqueEmail()
      const payload = JSON.stringify({ email, password: 'x'.repeat(16 * 1024) })
      t.ok(Buffer.byteLength(payload) > 16 * 1024, 'the body is over 16 KiB')
      const res = await app.inject({ method: 'POST', url: SIGNUP, headers: { 'content-type': 'application/json' }, payload })
      expectProblem(t, res, 413, 'PAYLOAD_TOO_LARGE')
      t.equal((await usersWithEmail(app, email)).length, 0, 'no account made')
    })

    t.test('the same email signed up 10 times at once: one 201, nine 409', async (t) => {
      const email = uniqueEmail('Race')
      const all = await Promise.all(Array.from({ length: 10 }, () => post(app, SIGNUP, { email, password: GOOD_PASSWORD })))
      const statuses = all.map((r) => r.statusCode)
      t.equal(statuses.filter((s) => s === 201).length, 1, 'exactly one 201', { statuses })
      t.equal(statuses.filter((s) => s === 409).length, 9, 'the rest 409', { statuses })
      for (const res of all.filter((r) => r.statusCode === 409)) t.equal(json(res).code, 'EMAIL_TAKEN')
      t.equal((await usersWithEmail(app, email)).length, 1, 'one account stored')
    })
  })
}
