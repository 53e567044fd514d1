import type { FastifyInstance } from 'fastify'
import t from 'tap'
import {
  bearer, build, databases, expectNoContent, expectProblem, expectUnauthorized, forwardAuth, GOOD_PASSWORD, json, refresh, signup
} from '../../../../helper.js'

const CHANGE = '/api/v1/auth/password/change'
const LOGIN = '/api/v1/auth/login'
const NEW_PASSWORD = 'a brand new passphrase for tests'

const change = (app: FastifyInstance, accessToken: string | null, payload: Record<string, unknown>) =>
  app.inject({ method: 'POST', url: CHANGE, headers: accessToken ? bearer(accessToken) : {}, payload })
const login = (app: FastifyInstance, email: string, password: string) => app.inject({ method: 'POST', url: LOGIN, payload: { email, password } })

for (const db of databases) {
  t.test(db.name, async (t) => {
    const app = await build(t, { env: { DATABASE_URL: db.url } })

    const storedHash = async (userId: string) =>
      (await app.db.selectFrom('users').select('password_hash').where('id', '=', userId).executeTakeFirstOrThrow()).password_hash

    t.test('without a bearer token it is 401 AUTHENTICATION_REQUIRED', async (t) => {
      const res = await change(app, null, { current_password: GOOD_PASSWORD, new_password: NEW_PASSWORD })
      expectUnauthorized(t, res, 'AUTHENTICATION_REQUIRED')
    })

    t.test('with an invalid bearer token it is 401 INVALID_ACCESS_TOKEN', async (t) => {
      const res = await change(app, 'not.a.jwt', { current_password: GOOD_PASSWORD, new_password: NEW_PASSWORD })
      expectUnauthorized(t, res, 'INVALID_ACCESS_TOKEN')
    })

    t.test('a wrong current password is 401 INVALID_CREDENTIALS and changes nothing', async (t) => {
      const signed = await signup(app)
      const before = await storedHash(signed.user.id)
      const res = await change(app, signed.access_token, { current_password: 'not the right password', new_password: NEW_PASSWORD })
      expectProblem(t, res, 401, 'INVALID_CREDENTIALS')
      t.equal(await storedHash(signed.user.id), before, 'hash untouched')
      t.equal((await login(app, signed.user.email, GOOD_PASSWORD)).statusCode, 200, 'the old password still works')
    })

    t.test('the same password again is 400 SAME_PASSWORD', async (t) => {
      const signed = await signup(app)
      const before = await storedHash(signed.user.id)
      expectProblem(t, await change(app, signed.access_token, { current_password: GOOD_PASSWORD, new_password: GOOD_PASSWORD }), 400, 'SAME_PASSWORD')
      t.equal(await storedHash(signed.user.id), before, 'hash untouched')
    })

    t.test('the same password in another Unicode form (NFKC) is 400 SAME_PASSWORD', async (t) => {
      const fullWidth = 'ｃｏｒｒｅｃｔ ｈｏｒｓｅ ｂａｔｔｅｒｙ ｓｔａｐｌｅ'
      t.equal(fullWidth.normalize('NFKC'), GOOD_PASSWORD)
      const signed = await signup(app)
      expectProblem(t, await change(app, signed.access_token, { current_password: GOOD_PASSWORD, new_password: fullWidth }), 400, 'SAME_PASSWORD')
    })

    t.test('a weak new password is 400 WEAK_PASSWORD and changes nothing', async (t) => {
      const signed = await signup(app)
      const before = await storedHash(signed.user.id)
      for (const weak of ['short', 'password1', signed.user.email]) {
        t.test(weak, async (t) => {
          expectProblem(t, await change(app, signed.access_token, { current_password: GOOD_PASSWORD, new_password: weak }), 400, 'WEAK_PASSWORD')
          t.equal(await storedHash(signed.user.id), before, 'hash untouched')
        })
      }
    })

    t.test('a missing field is 400 VALIDATION_FAILED', async (t) => {
      const signed = await signup(app)
      const body = expectProblem(t, await change(app, signed.access_token, { current_password: GOOD_PASSWORD }), 400, 'VALIDATION_FAILED')
      t.ok((body.errors ?? []).some((e: { field: string }) => e.field === '/body/new_password'), 'errors name /body/new_password')
    })

    t.test('success: 204, the new password signs in, other sessions end, this one lives', async (t) => {
      const current = await signup(app)
      const email = current.user.email as string
      const other = json(await login(app, email, GOOD_PASSWORD))
      const before = await storedHash(current.user.id)

      const res = await change(app, current.access_token, { current_password: GOOD_PASSWORD, new_password: NEW_PASSWORD })
      expectNoContent(t, res)

      t.not(await storedHash(current.user.id), before, 'a new hash is stored')
      t.equal((await login(app, email, NEW_PASSWORD)).statusCode, 200, 'the new password signs in')
      expectProblem(t, await login(app, email, GOOD_PASSWORD), 401, 'INVALID_CREDENTIALS')

      expectProblem(t, await refresh(app, other.refresh_token), 401, 'SESSION_REVOKED')
      t.equal((await refresh(app, current.refresh_token)).statusCode, 200, 'the current session\'s refresh token still works')
      expectProblem(t, await forwardAuth(app, other.access_token), 401, 'SESSION_REVOKED')
      t.equal((await forwardAuth(app, current.access_token)).statusCode, 200, 'the current session\'s access token still works')

      const revoked = await app.db.selectFrom('sessions').select('revoke_reason').where('user_id', '=', current.user.id).where('revoked_at', 'is not', null).execute()
      t.same(revoked.map((r) => r.revoke_reason), ['password_changed'], 'the other session ended because of the change')
    })
  })
}
