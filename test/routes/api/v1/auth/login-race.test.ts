import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { bearer, build, claimsOf, databases, forwardAuth, GOOD_PASSWORD, json, login, signup, uniqueEmail } from '../../../../helper.js'

/**
 * A sign-in reads the account, checks the password (tens of milliseconds),
 * then makes the session. An admin's demotion or disable landing in between
 * must not leave the new session with what was taken away. The hash is made
 * slow (ARGON2_ITERATIONS) so the change lands inside it every time.
 */
const RUNS = 5
const INTO_THE_LOGIN_MS = 10

for (const db of databases) {
  t.test(db.name, async (t) => {
    const adminEmail = uniqueEmail('race-admin')
    const app = await build(t, { env: { DATABASE_URL: db.url, ADMIN_EMAIL: adminEmail, ADMIN_PASSWORD: GOOD_PASSWORD, ARGON2_ITERATIONS: '12' } })
    const admin = bearer((await login(app, adminEmail)).access_token)
    const patch = (id: string, payload: Record<string, unknown>) => app.inject({ method: 'PATCH', url: `/api/v1/admin/users/${id}`, headers: admin, payload })

    t.test('a demotion during a sign-in: the new token does not carry the role taken away', async (t) => {
      for (let run = 1; run <= RUNS; run++) {
        const email = uniqueEmail('demoted')
        const { user } = await signup(app, { email })
        t.equal((await patch(user.id, { roles: ['user', 'admin'] })).statusCode, 200, `run ${run}: made admin`)
        const signingIn = app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email, password: GOOD_PASSWORD } })
        await sleep(INTO_THE_LOGIN_MS)
        const demoted = await patch(user.id, { roles: ['user'] })
        t.equal(demoted.statusCode, 200, `run ${run}: demoted`)
        const res = await signingIn
        t.equal(res.statusCode, 200, `run ${run}: the sign-in succeeds`)
        const token = json(res).access_token as string
        const admitted = await app.inject({ url: '/api/v1/admin/users?limit=1', headers: bearer(token) })
        const verified = await forwardAuth(app, token)
        const stillAdmin = admitted.statusCode === 200 || (verified.statusCode === 200 && claimsOf(token).roles.includes('admin'))
        t.notOk(stillAdmin, `run ${run}: the fresh token is no admin's (admin API ${admitted.statusCode}, roles ${claimsOf(token).roles})`)
      }
    })

    t.test('a disable during a sign-in: no usable token comes out of it', async (t) => {
      for (let run = 1; run <= RUNS; run++) {
        const email = uniqueEmail('disabled')
        const { user } = await signup(app, { email })
        const signingIn = app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email, password: GOOD_PASSWORD } })
        await sleep(INTO_THE_LOGIN_MS)
        t.equal((await patch(user.id, { disabled: true })).statusCode, 200, `run ${run}: disabled`)
        const res = await signingIn
        if (res.statusCode === 200) {
          t.equal((await forwardAuth(app, json(res).access_token)).statusCode, 401, `run ${run}: the token is refused`)
          t.equal((await app.inject({ method: 'POST', url: '/api/v1/auth/refresh', payload: { refresh_token: json(res).refresh_token } })).statusCode, 401, `run ${run}: the refresh token too`)
        } else {
          t.equal(res.statusCode, 401, `run ${run}: the sign-in is refused`)
          t.equal(json(res).code, 'INVALID_CREDENTIALS')
        }
      }
    })
  })
}
