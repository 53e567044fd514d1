import { randomUUID } from 'node:crypto'
import { hash } from '@node-rs/argon2'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import t, { type Test } from 'tap'
import { build, databases, expectProblem, expectUnauthorized, GOOD_PASSWORD, json, signup, uniqueEmail, uniqueUsername } from '../../../../helper.js'

const LOGIN = '/api/v1/auth/login'
const ARGON2ID_OWASP = /^\$argon2id\$v=19\$m=19456,t=2,p=1\$/

const login = (app: FastifyInstance, payload: Record<string, unknown>) => app.inject({ method: 'POST', url: LOGIN, payload })

/** Asserts a 200 token response for this user. */
function expectSignedIn (t: Test, res: LightMyRequestResponse, userId: string) {
  t.equal(res.statusCode, 200, 'status 200')
  const body = json(res)
  t.equal(body.token_type, 'Bearer')
  t.type(body.access_token, 'string')
  t.type(body.refresh_token, 'string')
  t.equal(body.user.id, userId, 'the right user')
  return body
}

/** The body of a problem with its request id blanked: what must be identical between refusals. */
const withoutRequestId = (res: LightMyRequestResponse) => res.body.replace(json(res).request_id, '<request-id>')

for (const db of databases) {
  t.test(db.name, async (t) => {
    const app = await build(t, { env: { DATABASE_URL: db.url } })

    /** A fresh account with both an email and a username. */
    async function account () {
      const email = uniqueEmail('Login')
      const username = uniqueUsername()
      const signed = await signup(app, { email, username })
      return { email: email.toLowerCase(), username, id: signed.user.id as string }
    }

    t.test('by email, in any case and with spaces', async (t) => {
      const user = await account()
      expectSignedIn(t, await login(app, { email: user.email, password: GOOD_PASSWORD }), user.id)
      expectSignedIn(t, await login(app, { email: `  ${user.email.toUpperCase()}  `, password: GOOD_PASSWORD }), user.id)
    })

    t.test('by username, in any case and with spaces', async (t) => {
      const user = await account()
      expectSignedIn(t, await login(app, { username: user.username, password: GOOD_PASSWORD }), user.id)
      expectSignedIn(t, await login(app, { username: ` ${user.username.toUpperCase()} `, password: GOOD_PASSWORD }), user.id)
    })

    t.test('by email sent in the username field, as the original clients do', async (t) => {
      const user = await account()
      expectSignedIn(t, await login(app, { username: user.email, password: GOOD_PASSWORD }), user.id)
      expectSignedIn(t, await login(app, { username: ` ${user.email.toUpperCase()} `, password: GOOD_PASSWORD }), user.id)
    })

    t.test('each login starts a new session', async (t) => {
      const user = await account()
      const first = expectSignedIn(t, await login(app, { email: user.email, password: GOOD_PASSWORD }), user.id)
      const second = expectSignedIn(t, await login(app, { email: user.email, password: GOOD_PASSWORD }), user.id)
      t.not(first.refresh_token, second.refresh_token)
      const sessions = await app.db.selectFrom('sessions').select('id').where('user_id', '=', user.id).execute()
      t.equal(sessions.length, 3, 'signup and two logins')
    })

    t.test('wrong password, unknown email, unknown username and disabled user: the same 401', async (t) => {
      const user = await account()
      const disabled = await account()
      await app.db.updateTable('users').set({ disabled: 1 }).where('id', '=', disabled.id).execute()

      const refusals: Array<[string, Record<string, unknown>]> = [
        ['wrong password', { email: user.email, password: 'not the right password' }],
        ['wrong password by username', { username: user.username, password: 'not the right password' }],
        ['unknown email', { email: uniqueEmail('nobody'), password: GOOD_PASSWORD }],
        ['unknown username', { username: uniqueUsername(), password: GOOD_PASSWORD }],
        ['disabled user, right password', { email: disabled.email, password: GOOD_PASSWORD }],
        ['disabled user by username, right password', { username: disabled.username, password: GOOD_PASSWORD }]
      ]
      const bodies: string[] = []
      for (const [name, payload] of refusals) {
        const res = await login(app, payload)
        t.test(name, async (t) => { expectUnauthorized(t, res, 'INVALID_CREDENTIALS') })
        bodies.push(withoutRequestId(res))
      }
      for (let i = 1; i < bodies.length; i++) {
        t.equal(bodies[i], bodies[0], `${refusals[i][0]}: body identical to ${refusals[0][0]} apart from request_id`)
      }
      const sessions = await app.db.selectFrom('sessions').select('id').where('user_id', 'in', [user.id, disabled.id]).execute()
      t.equal(sessions.length, 2, 'no session beyond the two signups')
    })

    t.test('neither email nor username is 400 VALIDATION_FAILED', async (t) => {
      const body = expectProblem(t, await login(app, { password: GOOD_PASSWORD }), 400, 'VALIDATION_FAILED')
      const fields = (body.errors ?? []).map((e: { field: string }) => e.field)
      t.ok(fields.includes('/body/email') || fields.includes('/body/username'), 'errors name the missing identifier', { found: fields })
    })

    t.test('missing password is 400 VALIDATION_FAILED', async (t) => {
      const user = await account()
      const body = expectProblem(t, await login(app, { email: user.email }), 400, 'VALIDATION_FAILED')
      t.ok((body.errors ?? []).some((e: { field: string }) => e.field === '/body/password'), 'errors name /body/password')
    })

    t.test('a hash made with other argon2 parameters is re-hashed at login', async (t) => {
      const email = uniqueEmail('rehash')
      const oldHash = await hash(GOOD_PASSWORD, { memoryCost: 19456 * 2, timeCost: 2, parallelism: 1 })
      t.notMatch(oldHash, ARGON2ID_OWASP, 'the old hash has other parameters')
      const now = new Date().toISOString()
      const id = randomUUID()
      await app.db.insertInto('users').values({
        id, email, username: null, password_hash: oldHash, email_verified: 0, disabled: 0, created_at: now, updated_at: now
      }).execute()

      expectSignedIn(t, await login(app, { email, password: GOOD_PASSWORD }), id)
      const row = await app.db.selectFrom('users').select('password_hash').where('id', '=', id).executeTakeFirstOrThrow()
      t.match(row.password_hash, ARGON2ID_OWASP, 'stored hash now has m=19456,t=2,p=1')
      t.not(row.password_hash, oldHash)
      expectSignedIn(t, await login(app, { email, password: GOOD_PASSWORD }), id)
    })

    t.test('a wrong password does not re-hash', async (t) => {
      const email = uniqueEmail('norehash')
      const oldHash = await hash(GOOD_PASSWORD, { memoryCost: 19456 * 2, timeCost: 2, parallelism: 1 })
      const now = new Date().toISOString()
      const id = randomUUID()
      await app.db.insertInto('users').values({
        id, email, username: null, password_hash: oldHash, email_verified: 0, disabled: 0, created_at: now, updated_at: now
      }).execute()
      expectProblem(t, await login(app, { email, password: 'not the right password' }), 401, 'INVALID_CREDENTIALS')
      const row = await app.db.selectFrom('users').select('password_hash').where('id', '=', id).executeTakeFirstOrThrow()
      t.equal(row.password_hash, oldHash, 'hash untouched')
    })
  })
}
