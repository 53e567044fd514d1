import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import t, { type Test } from 'tap'
import { bearer, build, databases, GOOD_PASSWORD, json, signup } from '../../../../helper.js'

const CHANGE = '/api/v1/auth/password/change'
const LOGIN = '/api/v1/auth/login'
const REFRESH = '/api/v1/auth/refresh'
const VERIFY = '/api/v1/auth/verify'
const NEW_PASSWORD = 'a brand new passphrase for tests'

const change = (app: FastifyInstance, accessToken: string | null, payload: Record<string, unknown>) =>
  app.inject({ method: 'POST', url: CHANGE, headers: accessToken ? bearer(accessToken) : {}, payload })
const login = (app: FastifyInstance, email: string, password: string) => app.inject({ method: 'POST', url: LOGIN, payload: { email, password } })
const verify = (app: FastifyInstance, accessToken: string) => app.inject({ method: 'GET', url: VERIFY, headers: bearer(accessToken) })
const refresh = (app: FastifyInstance, refreshToken: string) => app.inject({ method: 'POST', url: REFRESH, payload: { refresh_token: refreshToken } })

function expectProblem (t: Test, res: LightMyRequestResponse, status: number, code: string) {
  t.equal(res.statusCode, status, `status ${status}`)
  t.match(res.headers['content-type'], /^application\/problem\+json/, 'content-type is problem+json')
  const body = json(res)
  t.equal(body.code, code, `code ${code}`)
  t.equal(body.status, status, 'status in the body')
  t.equal(body.request_id, res.headers['x-request-id'], 'request_id is the request id')
  return body
}

for (const db of databases) {
  t.test(db.name, async (t) => {
    const app = await build(t, { env: { DATABASE_URL: db.url } })

    const storedHash = async (userId: string) =>
      (await app.db.selectFrom('users').select('password_hash').where('id', '=', userId).executeTakeFirstOrThrow()).password_hash

    t.test('without a bearer token it is 401 AUTHENTICATION_REQUIRED', async (t) => {
      const res = await change(app, null, { current_password: GOOD_PASSWORD, new_password: NEW_PASSWORD })
      expectProblem(t, res, 401, 'AUTHENTICATION_REQUIRED')
      t.equal(res.headers['www-authenticate'], 'Bearer', 'WWW-Authenticate: Bearer')
    })

    t.test('with an invalid bearer token it is 401 INVALID_ACCESS_TOKEN', async (t) => {
      const res = await change(app, 'not.a.jwt', { current_password: GOOD_PASSWORD, new_password: NEW_PASSWORD })
      expectProblem(t, res, 401, 'INVALID_ACCESS_TOKEN')
      t.equal(res.headers['www-authenticate'], 'Bearer', 'WWW-Authenticate: Bearer')
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
      t.equal(res.statusCode, 204)
      t.equal(res.body, '', 'no body')

      t.not(await storedHash(current.user.id), before, 'a new hash is stored')
      t.equal((await login(app, email, NEW_PASSWORD)).statusCode, 200, 'the new password signs in')
      expectProblem(t, await login(app, email, GOOD_PASSWORD), 401, 'INVALID_CREDENTIALS')

      expectProblem(t, await refresh(app, other.refresh_token), 401, 'INVALID_REFRESH_TOKEN')
      t.equal((await refresh(app, current.refresh_token)).statusCode, 200, 'the current session\'s refresh token still works')
      expectProblem(t, await verify(app, other.access_token), 401, 'SESSION_REVOKED')
      t.equal((await verify(app, current.access_token)).statusCode, 200, 'the current session\'s access token still works')

      const revoked = await app.db.selectFrom('sessions').select('revoke_reason').where('user_id', '=', current.user.id).where('revoked_at', 'is not', null).execute()
      t.same(revoked.map((r) => r.revoke_reason), ['password_changed'], 'the other session ended because of the change')
    })
  })
}
