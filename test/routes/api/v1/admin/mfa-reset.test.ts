import { randomUUID } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import { Secret, TOTP } from 'otpauth'
import t from 'tap'
import {
  bearer, build, buildLogged, claimsOf, databases, expectNoContent, expectProblem, GOOD_PASSWORD, json, login,
  metricValue, movableClock, signup, uniqueEmail
} from '../../../../helper.js'

/**
 * Issue 17: an admin resets a user's second factor (a lost phone), roles that
 * must enrol before any session (MFA_REQUIRED_ROLES), no secret or code in the
 * log, and the second-factor metrics. Codes are computed as an authenticator
 * app does, under a clock the test moves a time step at a time (a code is
 * accepted once per step).
 */

const LOGIN = '/api/v1/auth/login'
const REFRESH = '/api/v1/auth/refresh'
const FORWARD_AUTH = '/api/v1/auth/verify'
const MFA_VERIFY = '/api/v1/auth/mfa/verify'
const ME = '/api/v1/users/me'
const MFA = '/api/v1/users/me/mfa'
const ENROL = '/api/v1/users/me/mfa/totp'
const CONFIRM = '/api/v1/users/me/mfa/totp/confirm'
const USERS = '/api/v1/admin/users'
const ROLES = '/api/v1/admin/roles'
const EVENTS = '/api/v1/admin/audit-events'
const ISSUER = 'Reset Test'

type Clock = ReturnType<typeof movableClock>

/** What an authenticator app shows for `secret` at `at`. */
const codeAt = (secret: string, at: Date) =>
  new TOTP({ secret: Secret.fromBase32(secret), digits: 6, period: 30, algorithm: 'SHA1' }).generate({ timestamp: at.getTime() })

let roleCount = 0
const uniqueRoleName = () => `mfa-${process.pid.toString(36)}-${Date.now().toString(36)}-${++roleCount}`

/** The requests of these tests against one app, and every code and credential they sent or got (for the log test). */
function kit (app: FastifyInstance, clock: Clock) {
  const seen = { codes: [] as string[], secrets: [] as string[], recoveryCodes: [] as string[], tokens: [] as string[] }
  const keep = <T extends Record<string, any>>(body: T): T => {
    for (const key of ['access_token', 'refresh_token', 'mfa_token']) if (typeof body[key] === 'string') seen.tokens.push(body[key])
    if (Array.isArray(body.recovery_codes)) seen.recoveryCodes.push(...body.recovery_codes)
    if (typeof body.secret === 'string') seen.secrets.push(body.secret)
    return body
  }

  const post = async (url: string, payload: Record<string, unknown>, headers: Record<string, string> = {}) => {
    const res = await app.inject({ method: 'POST', url, payload, headers })
    if (String(res.headers['content-type']).startsWith('application/json')) keep(json(res))
    return res
  }

  /** The code of the next time step: the clock moves 30 s first, as a code is accepted once per step. */
  function nextCode (secret: string): string {
    clock.advance(30)
    const code = codeAt(secret, clock.now())
    seen.codes.push(code)
    return code
  }

  /** A well-formed code that is none of the steps accepted now (±1). */
  function wrongCode (secret: string): string {
    const now = clock.now().getTime()
    const accepted = new Set([-1, 0, 1].map((d) => codeAt(secret, new Date(now + d * 30_000))))
    let n = Number(codeAt(secret, clock.now()))
    let code: string
    do { n = (n + 1) % 1_000_000; code = String(n).padStart(6, '0') } while (accepted.has(code))
    seen.codes.push(code)
    return code
  }

  /** Enrols TOTP for a signed-in user (password, then a first code): the secret and the recovery codes. */
  async function enrol (accessToken: string) {
    const start = await post(ENROL, { password: GOOD_PASSWORD }, bearer(accessToken))
    if (start.statusCode !== 201) throw new Error(`enrol: ${start.statusCode} ${start.body}`)
    const secret = json(start).secret as string
    const done = await post(CONFIRM, { code: nextCode(secret) }, bearer(accessToken))
    if (done.statusCode !== 200) throw new Error(`confirm: ${done.statusCode} ${done.body}`)
    return { secret, recoveryCodes: json(done).recovery_codes as string[] }
  }

  /** A signed-up user with an active TOTP factor. */
  async function enrolledUser (prefix = 'mfa-user') {
    const email = uniqueEmail(prefix)
    const session = keep(await signup(app, { email }))
    return { email, id: session.user.id as string, session, ...await enrol(session.access_token) }
  }

  /** Password, then mfa_token; throws unless the sign-in stops at mfa_required. */
  async function passwordStep (email: string) {
    const body = keep(await login(app, email))
    if (body.mfa_required !== true) throw new Error(`expected mfa_required: ${JSON.stringify(body)}`)
    return body.mfa_token as string
  }

  /** The whole sign-in with a code: the token response. */
  async function signInWithCode (email: string, secret: string) {
    const res = await post(MFA_VERIFY, { mfa_token: await passwordStep(email), code: nextCode(secret) })
    if (res.statusCode !== 200) throw new Error(`mfa verify: ${res.statusCode} ${res.body}`)
    return json(res)
  }

  const status = async (accessToken: string) => {
    const res = await app.inject({ url: MFA, headers: bearer(accessToken) })
    if (res.statusCode !== 200) throw new Error(`mfa status: ${res.statusCode} ${res.body}`)
    return json(res)
  }

  return { seen, keep, post, nextCode, wrongCode, enrol, enrolledUser, passwordStep, signInWithCode, status }
}

for (const db of databases) {
  t.test(`${db.name}: admin reset`, async (t) => {
    const clock = movableClock()
    const adminEmail = uniqueEmail('mfa-admin')
    // MFA_REQUIRED_ROLES unset: the admin signs in with the password alone.
    const app = await build(t, { env: { DATABASE_URL: db.url, ADMIN_EMAIL: adminEmail, ADMIN_PASSWORD: GOOD_PASSWORD, MFA_ISSUER: ISSUER }, now: clock.now })
    const k = kit(app, clock)

    const made: string[] = []
    t.teardown(async () => {
      for (const name of made) await app.roles.remove(name).catch(() => {})
    })

    /** A fresh admin session (the moved clock would expire an old token). */
    const asAdmin = async () => {
      const admin = await login(app, adminEmail)
      if (!admin.access_token) throw new Error(`admin login: ${JSON.stringify(admin)}`)
      return { headers: bearer(admin.access_token), id: admin.user.id as string }
    }
    const reset = (id: string, headers: Record<string, string>) => app.inject({ method: 'DELETE', url: `${USERS}/${id}/mfa`, headers })
    const events = async (userId: string, type: string) => {
      const res = await app.inject({ url: EVENTS, query: { user_id: userId, type, limit: '100' }, headers: (await asAdmin()).headers })
      if (res.statusCode !== 200) throw new Error(`events: ${res.statusCode} ${res.body}`)
      return json(res).items as Array<Record<string, any>>
    }
    const forwardAuth = (token: string) => app.inject({ url: FORWARD_AUTH, headers: bearer(token) })
    const refresh = (token: string) => app.inject({ method: 'POST', url: REFRESH, payload: { refresh_token: token } })

    t.test('an admin resets a lost factor: the sessions end, the password alone signs in', async (t) => {
      const user = await k.enrolledUser()
      t.equal(user.recoveryCodes.length, 10, 'ten recovery codes')
      const before = await k.status(user.session.access_token)
      t.equal(before.factors.length, 1, 'one factor')
      t.equal(before.factors[0].type, 'totp')
      t.equal(before.recovery_codes_left, 10)

      const res = await app.inject({ method: 'POST', url: LOGIN, payload: { email: user.email, password: GOOD_PASSWORD } })
      t.equal(res.statusCode, 200)
      const step = json(res)
      t.same(Object.keys(step).sort(), ['methods', 'mfa_required', 'mfa_token'], 'no tokens, only the second step')
      t.equal(step.mfa_required, true)
      t.same(step.methods, ['totp', 'recovery_code'])
      const verified = await k.post(MFA_VERIFY, { mfa_token: step.mfa_token, code: k.nextCode(user.secret) })
      t.equal(verified.statusCode, 200, 'the code gives the tokens')
      const session = json(verified)
      t.equal(session.user.id, user.id)
      t.equal(claimsOf(session.access_token).acr, 'aal2')
      t.same(claimsOf(session.access_token).amr, ['pwd', 'otp'])

      const admin = await asAdmin()
      expectNoContent(t, await reset(user.id, admin.headers))

      for (const [name, s] of [['the sign-up session', user.session], ['the second-factor session', session]] as const) {
        expectProblem(t, await refresh(s.refresh_token), 401, 'SESSION_REVOKED')
        const checked = await forwardAuth(s.access_token)
        t.equal(checked.statusCode, 401, `${name}: its access token is refused at once`)
        expectProblem(t, checked, 401, 'SESSION_REVOKED')
      }

      const again = await login(app, user.email)
      t.notOk(again.mfa_required, 'no second step any more')
      t.type(again.access_token, 'string', 'the password alone gives the tokens')
      t.equal(claimsOf(again.access_token).acr, 'aal1')
      t.same(claimsOf(again.access_token).amr, ['pwd'])
      const after = await k.status(again.access_token)
      t.same(after.factors, [], 'no factors left')
      t.equal(after.recovery_codes_left, 0, 'no recovery codes left')

      const trail = await events(user.id, 'mfa_reset_by_admin')
      t.equal(trail.length, 1, 'an mfa_reset_by_admin event')
      t.equal(trail[0].detail.by, admin.id, 'naming the admin')

      expectProblem(t, await reset(user.id, (await asAdmin()).headers), 404, 'MFA_NOT_ENROLLED')
      t.equal((await events(user.id, 'mfa_reset_by_admin')).length, 1, 'no second event')
      const enrolAgain = await k.post(ENROL, { password: GOOD_PASSWORD }, bearer(again.access_token))
      t.equal(enrolAgain.statusCode, 201, 'the user can enrol again')
    })

    t.test('404 MFA_NOT_ENROLLED without a factor, 404 USER_NOT_FOUND, 400 for a bad id', async (t) => {
      const { headers } = await asAdmin()
      const plain = await signup(app, { email: uniqueEmail('no-factor') })
      expectProblem(t, await reset(plain.user.id, headers), 404, 'MFA_NOT_ENROLLED')
      t.equal((await forwardAuth(plain.access_token)).statusCode, 200, 'the sessions of an account without a factor live on')
      t.equal((await events(plain.user.id, 'mfa_reset_by_admin')).length, 0, 'no event')
      expectProblem(t, await reset(randomUUID(), headers), 404, 'USER_NOT_FOUND')
      expectProblem(t, await reset('not-a-uuid', headers), 400, 'VALIDATION_FAILED')
    })

    t.test('an admin cannot reset their own factor here (that would skip the step-up DELETE /me/mfa/totp asks for)', async (t) => {
      const { headers, id } = await asAdmin()
      expectProblem(t, await reset(id, headers), 400, 'CANNOT_MODIFY_SELF')
    })

    t.test('without users:write: 403 FORBIDDEN before validation, and nothing changes', async (t) => {
      const victim = await k.enrolledUser('victim')
      const plain = await signup(app, { email: uniqueEmail('plain') })
      for (const id of [victim.id, plain.user.id, randomUUID(), 'not-a-uuid']) {
        expectProblem(t, await reset(id, bearer(plain.access_token)), 403, 'FORBIDDEN')
      }
      expectProblem(t, await reset(victim.id, bearer(victim.session.access_token)), 403, 'FORBIDDEN')
      expectProblem(t, await reset(victim.id, {}), 401, 'AUTHENTICATION_REQUIRED')

      t.equal((await k.status(victim.session.access_token)).factors.length, 1, 'the factor is still there')
      t.equal((await forwardAuth(victim.session.access_token)).statusCode, 200, 'the victim\'s session lives on')
      t.ok(await k.passwordStep(victim.email), 'the sign-in still asks for the second factor')
      t.equal((await events(victim.id, 'mfa_reset_by_admin')).length, 0, 'no event')
    })

    t.test('under the privilege rules: users:write resets a plain user, not an admin; an admin resets an admin', async (t) => {
      const admin = await asAdmin()
      const role = uniqueRoleName()
      made.push(role)
      t.equal((await app.inject({ method: 'POST', url: ROLES, headers: admin.headers, payload: { name: role, permissions: ['users:write'] } })).statusCode, 201)
      const writerEmail = uniqueEmail('writer')
      const writerId = (await signup(app, { email: writerEmail })).user.id
      t.equal((await app.inject({ method: 'PATCH', url: `${USERS}/${writerId}`, headers: admin.headers, payload: { roles: [role] } })).statusCode, 200)
      const writer = bearer((await login(app, writerEmail)).access_token)

      const other = await k.enrolledUser('other-admin')
      const promoted = await app.inject({ method: 'PATCH', url: `${USERS}/${other.id}`, headers: admin.headers, payload: { roles: ['admin'] } })
      t.equal(promoted.statusCode, 200)
      t.same(json(promoted).roles, ['admin', 'user'])
      const otherSession = await k.signInWithCode(other.email, other.secret)

      expectProblem(t, await reset(other.id, writer), 403, 'INSUFFICIENT_PRIVILEGE')
      t.equal((await k.status(otherSession.access_token)).factors.length, 1, 'the admin keeps the factor')
      t.equal((await forwardAuth(otherSession.access_token)).statusCode, 200, 'and the session')
      t.equal((await events(other.id, 'mfa_reset_by_admin')).length, 0, 'no reset event')

      const plain = await k.enrolledUser('writer-target')
      expectNoContent(t, await reset(plain.id, writer))
      t.type((await login(app, plain.email)).access_token, 'string', 'a plain user reset by users:write signs in with the password')
      const plainTrail = await events(plain.id, 'mfa_reset_by_admin')
      t.equal(plainTrail.length, 1)
      t.equal(plainTrail[0].detail.by, writerId)

      expectNoContent(t, await reset(other.id, (await asAdmin()).headers))
      expectProblem(t, await forwardAuth(otherSession.access_token), 401, 'SESSION_REVOKED')
      t.type((await login(app, other.email)).access_token, 'string', 'the reset admin signs in with the password')
    })

    t.test('auth_mfa_total counts otp, failed and recovery_code', async (t) => {
      const value = (result: string) => metricValue(app, 'auth_mfa_total', { result })
      const user = await k.enrolledUser('metrics')
      const otp = await value('otp')
      const failed = await value('failed')
      const recovery = await value('recovery_code')

      expectProblem(t, await k.post(MFA_VERIFY, { mfa_token: await k.passwordStep(user.email), code: k.wrongCode(user.secret) }), 401, 'INVALID_MFA_CODE')
      t.equal(await value('failed'), failed + 1, 'a wrong code: failed + 1')
      t.equal(await value('otp'), otp, 'otp unchanged')

      await k.signInWithCode(user.email, user.secret)
      t.equal(await value('otp'), otp + 1, 'a right code: otp + 1')
      t.equal(await value('failed'), failed + 1, 'failed unchanged')

      const byRecovery = await k.post(MFA_VERIFY, { mfa_token: await k.passwordStep(user.email), recovery_code: user.recoveryCodes[0] })
      t.equal(byRecovery.statusCode, 200)
      t.equal(await value('recovery_code'), recovery + 1, 'a recovery code: recovery_code + 1')
      t.equal(await value('otp'), otp + 1)
      t.equal((await events(user.id, 'mfa_failed')).length, 1, 'the failure is on the trail')
    })
  })

  t.test(`${db.name}: MFA_REQUIRED_ROLES=admin`, async (t) => {
    const clock = movableClock()
    const adminEmail = uniqueEmail('mfa-required-admin')
    const app = await build(t, {
      env: { DATABASE_URL: db.url, ADMIN_EMAIL: adminEmail, ADMIN_PASSWORD: GOOD_PASSWORD, MFA_REQUIRED_ROLES: 'admin', MFA_ISSUER: ISSUER },
      now: clock.now
    })
    const k = kit(app, clock)

    t.test('a plain user still signs in with the password', async (t) => {
      const email = uniqueEmail('plain')
      await signup(app, { email })
      const body = await login(app, email)
      t.type(body.access_token, 'string')
      t.notOk(body.mfa_enrolment_required)
    })

    t.test('an enrolment token expires after 5 minutes', async (t) => {
      const body = await login(app, adminEmail)
      t.equal(body.mfa_enrolment_required, true)
      clock.advance(5 * 60 + 1)
      expectProblem(t, await k.post(ENROL, { mfa_token: body.mfa_token }), 401, 'INVALID_MFA_TOKEN')
    })

    t.test('the admin enrols before any session, then signs in with a code', async (t) => {
      const res = await app.inject({ method: 'POST', url: LOGIN, payload: { email: adminEmail, password: GOOD_PASSWORD } })
      t.equal(res.statusCode, 200)
      const step = k.keep(json(res))
      t.same(Object.keys(step).sort(), ['mfa_enrolment_required', 'mfa_token'], 'no tokens, only enrolment')
      t.equal(step.mfa_enrolment_required, true)
      t.notOk(step.access_token ?? step.refresh_token, 'no access or refresh token')
      const mfaToken = step.mfa_token as string

      expectProblem(t, await k.post(MFA_VERIFY, { mfa_token: mfaToken, code: '123456' }), 401, 'INVALID_MFA_TOKEN')
      expectProblem(t, await k.post(MFA_VERIFY, { mfa_token: mfaToken, recovery_code: 'AAAA-BBBB-CCCC' }), 401, 'INVALID_MFA_TOKEN')

      const asBearer = bearer(mfaToken)
      const anywhere = [
        app.inject({ url: ME, headers: asBearer }),
        app.inject({ url: MFA, headers: asBearer }),
        app.inject({ url: FORWARD_AUTH, headers: asBearer }),
        app.inject({ url: USERS, headers: asBearer }),
        app.inject({ method: 'DELETE', url: `${USERS}/${randomUUID()}/mfa`, headers: asBearer }),
        app.inject({ method: 'POST', url: REFRESH, payload: { refresh_token: mfaToken } }),
        app.inject({ method: 'POST', url: MFA_VERIFY, headers: asBearer, payload: { code: '123456' } }),
        app.inject({ method: 'POST', url: ENROL, headers: asBearer, payload: { password: GOOD_PASSWORD } }),
        app.inject({ method: 'POST', url: CONFIRM, headers: asBearer, payload: { code: '123456' } })
      ]
      for (const refused of await Promise.all(anywhere)) {
        t.equal(refused.statusCode, 401, `${refused.raw.req.method} ${refused.raw.req.url}: the mfa_token is no bearer token (${String(json(refused).code)})`)
        t.notOk(json(refused).access_token, 'no tokens')
      }

      const enrolment = await k.post(ENROL, { mfa_token: mfaToken })
      t.equal(enrolment.statusCode, 201, 'the mfa_token enrols')
      const started = json(enrolment)
      t.same(Object.keys(started).sort(), ['factor_id', 'otpauth_uri', 'qr_svg', 'secret'])
      t.match(started.factor_id, /^[0-9a-f-]{36}$/)
      t.match(started.secret, /^[A-Z2-7]{16,}=*$/, 'a base32 secret')
      const uri = new URL(started.otpauth_uri)
      t.equal(uri.protocol, 'otpauth:')
      t.equal(uri.host, 'totp')
      t.equal(uri.searchParams.get('secret'), started.secret, 'the URI holds the secret')
      t.equal(uri.searchParams.get('issuer'), ISSUER, 'the issuer from MFA_ISSUER')
      t.match(started.qr_svg, /^(<\?xml[^>]*>\s*)?<svg[\s\S]*<\/svg>\s*$/, 'SVG markup')
      const secret = started.secret as string

      expectProblem(t, await k.post(CONFIRM, { code: k.wrongCode(secret), mfa_token: mfaToken }), 401, 'INVALID_MFA_CODE')
      const confirmed = await k.post(CONFIRM, { code: k.nextCode(secret), mfa_token: mfaToken })
      t.equal(confirmed.statusCode, 200, 'confirmed')
      const session = json(confirmed)
      t.equal(session.recovery_codes.length, 10, 'the recovery codes')
      t.type(session.access_token, 'string', 'and a session')
      t.type(session.refresh_token, 'string')
      t.ok(session.user?.id, 'with the user')
      t.same(session.user.roles, ['admin', 'user'])
      const claims = claimsOf(session.access_token)
      t.equal(claims.acr, 'aal2')
      t.same(claims.amr, ['pwd', 'otp'])
      t.equal((await app.inject({ url: FORWARD_AUTH, headers: bearer(session.access_token) })).statusCode, 200, 'the access token works')
      t.equal((await app.inject({ url: USERS, headers: bearer(session.access_token) })).statusCode, 200, 'the admin routes too')
      const refreshed = await k.post(REFRESH, { refresh_token: session.refresh_token })
      t.equal(refreshed.statusCode, 200)
      t.equal(claimsOf(json(refreshed).access_token).acr, 'aal2', 'refresh keeps aal2')

      expectProblem(t, await k.post(CONFIRM, { code: k.nextCode(secret), mfa_token: mfaToken }), 401, 'INVALID_MFA_TOKEN')
      expectProblem(t, await k.post(ENROL, { mfa_token: mfaToken }), 401, 'INVALID_MFA_TOKEN')
      expectProblem(t, await k.post(MFA_VERIFY, { mfa_token: mfaToken, code: k.nextCode(secret) }), 401, 'INVALID_MFA_TOKEN')

      const next = await login(app, adminEmail)
      t.equal(next.mfa_required, true, 'the next sign-in asks for the code')
      t.notOk(next.mfa_enrolment_required, 'not for enrolment')
      t.notOk(next.access_token)
      expectProblem(t, await k.post(ENROL, { mfa_token: next.mfa_token }), 401, 'INVALID_MFA_TOKEN')
      const verified = await k.post(MFA_VERIFY, { mfa_token: next.mfa_token, code: k.nextCode(secret) })
      t.equal(verified.statusCode, 200)
      t.equal(claimsOf(json(verified).access_token).acr, 'aal2')
    })
  })

  for (const level of ['info', 'debug']) {
    t.test(`${db.name}: no secret, code or token in the log (LOG_LEVEL ${level})`, async (t) => {
      const clock = movableClock()
      const { fastify: app, text, lines } = await buildLogged(t, { env: { DATABASE_URL: db.url, LOG_LEVEL: level }, now: clock.now })
      const k = kit(app, clock)

      const user = await k.enrolledUser('logged')
      expectProblem(t, await k.post(CONFIRM, { code: k.wrongCode(user.secret) }, bearer(user.session.access_token)), 409, 'MFA_NOT_PENDING')
      expectProblem(t, await k.post(MFA_VERIFY, { mfa_token: await k.passwordStep(user.email), code: k.wrongCode(user.secret) }), 401, 'INVALID_MFA_CODE')
      const session = await k.signInWithCode(user.email, user.secret)
      const byRecovery = await k.post(MFA_VERIFY, { mfa_token: await k.passwordStep(user.email), recovery_code: user.recoveryCodes[1] })
      t.equal(byRecovery.statusCode, 200)
      expectProblem(t, await k.post(MFA_VERIFY, { mfa_token: await k.passwordStep(user.email), recovery_code: user.recoveryCodes[1] }), 401, 'INVALID_MFA_CODE')
      const stepUp = await k.post(MFA_VERIFY, { code: k.nextCode(user.secret) }, bearer(json(await k.post(REFRESH, { refresh_token: session.refresh_token })).access_token))
      t.equal(stepUp.statusCode, 200, 'a step-up')
      t.equal((await app.inject({ method: 'DELETE', url: ENROL, headers: bearer(json(stepUp).access_token) })).statusCode, 204, 'the factor removed')
      await app.background.idle()

      const log = text()
      const parsed = lines()
      t.ok(parsed.length > 0, 'something was logged')
      t.ok(parsed.some((l) => JSON.stringify(l).includes(MFA_VERIFY)), 'the second-factor requests were logged')
      const { codes, secrets, recoveryCodes, tokens } = k.seen
      t.ok(codes.length >= 5 && secrets.length === 1 && recoveryCodes.length === 10 && tokens.length >= 8, 'what was sent and got is known')

      for (const secret of secrets) {
        t.notOk(log.includes(secret), 'the TOTP secret is not in the log')
        t.notOk(log.toLowerCase().includes(secret.toLowerCase()), 'nor in lower case')
      }
      for (const code of codes) t.notMatch(log, new RegExp(`(?<![0-9])${code}(?![0-9])`), `the code ${code} sent is not in the log`)
      for (const code of recoveryCodes) {
        t.notOk(log.includes(code), 'no recovery code in the log')
        t.notOk(log.includes(code.replace(/-/g, '')), 'nor without its dashes')
      }
      for (const token of tokens) t.notOk(log.includes(token), 'no mfa_token, access or refresh token in the log')
      for (const token of tokens.filter((x) => x.split('.').length === 3)) t.notOk(log.includes(token.split('.')[2]), 'nor a JWT\'s signature')
    })
  }
}
