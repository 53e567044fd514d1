import { Secret, TOTP } from 'otpauth'
import t from 'tap'
import { sealer } from '../../../../../services/keys.js'
import { bearer, build, claimsOf, databases, expectProblem, expectUnauthorized, GOOD_PASSWORD, json, movableClock, signup, uniqueEmail } from '../../../../helper.js'
import { startMailbox } from '../../../../mailbox.js'

/**
 * TOTP second factor, written as the attacks on it: a password alone never
 * gets a session, a code works once (also when two requests race), guesses
 * are throttled, recovery codes are spent once, and the assurance level
 * travels with the session.
 */
const box = await startMailbox(t)

/** What an app (or a test) computes: the code of the authenticator at a time. */
const codeAt = (secret: string, time: Date) => new TOTP({ secret: Secret.fromBase32(secret), digits: 6, period: 30, algorithm: 'SHA1' }).generate({ timestamp: time.getTime() })

for (const db of databases) {
  t.test(db.name, async (t) => {
    const clock = movableClock(new Date('2026-12-06T12:00:00Z'))
    const app = await build(t, { env: { DATABASE_URL: db.url, SMTP_URL: box.url }, now: clock.now })
    const post = (url: string, payload: object, headers: Record<string, string> = {}) => app.inject({ method: 'POST', url, payload, headers })
    const login = (email: string, password = GOOD_PASSWORD) => post('/api/v1/auth/login', { email, password })
    /** The next 30-second step: a code is accepted once per step. */
    const nextStep = () => clock.advance(30)

    /** A user with a confirmed TOTP factor: its secret, recovery codes and the session it enrolled in (aal1). */
    async function enrolled () {
      const email = uniqueEmail('mfa')
      const signed = await signup(app, { email })
      await app.background.idle()
      await box.next(email) // the verification mail
      const started = await post('/api/v1/users/me/mfa/totp', { password: GOOD_PASSWORD }, bearer(signed.access_token))
      t.equal(started.statusCode, 201, 'enrolment started')
      const { secret } = json(started)
      const confirmed = await post('/api/v1/users/me/mfa/totp/confirm', { code: codeAt(secret, clock.now()) }, bearer(signed.access_token))
      t.equal(confirmed.statusCode, 200, 'enrolment confirmed')
      nextStep()
      return { email, id: signed.user.id as string, secret: secret as string, recovery: json(confirmed).recovery_codes as string[], session: signed }
    }

    /** Signs in through both steps; returns the token response. */
    async function signIn (email: string, secret: string) {
      const first = json(await login(email))
      const second = await post('/api/v1/auth/mfa/verify', { mfa_token: first.mfa_token, code: codeAt(secret, clock.now()) })
      nextStep()
      return second
    }

    t.test('RFC 6238 appendix B (SHA-1, as 6 digits): the service accepts exactly the reference codes', async (t) => {
      const vectors: Array<[number, string]> = [[59, '287082'], [1111111109, '081804'], [1111111111, '050471'], [1234567890, '005924'], [2000000000, '279037'], [20000000000, '353130']]
      const reference = Secret.fromUTF8('12345678901234567890').base32
      const start = clock.now()
      for (const [seconds, code] of vectors) {
        const email = uniqueEmail('rfc')
        const signed = await signup(app, { email })
        t.equal((await post('/api/v1/users/me/mfa/totp', { password: GOOD_PASSWORD }, bearer(signed.access_token))).statusCode, 201)
        // The pending factor given the RFC's key, sealed as the service seals it.
        await app.db.updateTable('mfa_factors').set({ secret: sealer(app.config.KEY_ENCRYPTION_SECRET, 'totp-secret-encryption').seal(reference) }).where('user_id', '=', signed.user.id).execute()
        clock.goTo((seconds * 1000 - start.getTime()) / 1000)
        t.equal(codeAt(reference, clock.now()), code, `otpauth agrees at T=${seconds}`)
        // The service's own check, at the service (a bearer signed in 2026 is no good in 1970).
        const account = await app.accounts.current(signed.user.id)
        const wrong = String((Number(code) + 1) % 1_000_000).padStart(6, '0')
        await t.rejects(app.mfa.confirm(account, wrong, { ip: null, userAgent: null }), { code: 'INVALID_MFA_CODE' }, `T=${seconds}: ${wrong} refused`)
        t.equal((await app.mfa.confirm(account, code, { ip: null, userAgent: null })).length, 10, `T=${seconds}: ${code} accepted`)
      }
      clock.goTo(0)
    })

    t.test('with neither a bearer token nor an mfa_token: 401 before the body is looked at', async (t) => {
      for (const url of ['/api/v1/users/me/mfa/totp', '/api/v1/users/me/mfa/totp/confirm', '/api/v1/auth/mfa/verify']) {
        expectUnauthorized(t, await post(url, {}), 'AUTHENTICATION_REQUIRED')
        expectUnauthorized(t, await post(url, { code: 'not a code', mfa_token: 42 }), 'AUTHENTICATION_REQUIRED')
      }
      // An mfa_token, even malformed, is a credential presented: then the body is checked.
      expectProblem(t, await post('/api/v1/auth/mfa/verify', { mfa_token: 'x'.repeat(43) }), 400, 'VALIDATION_FAILED')
    })

    t.test('enrolment: secret, URI and QR code; the secret is sealed at rest; recovery codes shown once', async (t) => {
      const signed = await signup(app)
      const started = json(await post('/api/v1/users/me/mfa/totp', { password: GOOD_PASSWORD }, bearer(signed.access_token)))
      t.match(started.secret, /^[A-Z2-7]{32}$/, '160-bit base32 secret')
      t.match(started.otpauth_uri, new RegExp(`^otpauth://totp/auth-service:.+\\?.*secret=${started.secret}.*&algorithm=SHA1&digits=6&period=30`))
      t.match(started.qr_svg, /^<svg[\s\S]*<\/svg>\s*$/)
      const row = await app.db.selectFrom('mfa_factors').selectAll().where('user_id', '=', signed.user.id).executeTakeFirstOrThrow()
      t.notMatch(row.secret, started.secret, 'not stored in the clear')
      t.equal(row.confirmed_at, null, 'pending')
      expectUnauthorized(t, await post('/api/v1/users/me/mfa/totp', { password: 'not the password' }, bearer(signed.access_token)), 'INVALID_CREDENTIALS')
      expectUnauthorized(t, await post('/api/v1/users/me/mfa/totp/confirm', { code: '000000' }, bearer(signed.access_token)), 'INVALID_MFA_CODE')
      const confirmed = json(await post('/api/v1/users/me/mfa/totp/confirm', { code: codeAt(started.secret, clock.now()) }, bearer(signed.access_token)))
      t.equal(confirmed.recovery_codes.length, 10)
      t.equal(new Set(confirmed.recovery_codes).size, 10, 'all different')
      for (const code of confirmed.recovery_codes) t.match(code, /^[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}$/, 'XXXX-XXXX-XXXX, 60 bits')
      const stored = await app.db.selectFrom('recovery_codes').select('code_hash').where('user_id', '=', signed.user.id).execute()
      t.notOk(stored.some((r) => confirmed.recovery_codes.includes(r.code_hash)), 'stored only hashed')
      const status = json(await app.inject({ url: '/api/v1/users/me/mfa', headers: bearer(signed.access_token) }))
      t.match(status, { factors: [{ type: 'totp', created_at: String }], recovery_codes_left: 10 })
      expectProblem(t, await post('/api/v1/users/me/mfa/totp', { password: GOOD_PASSWORD }, bearer(signed.access_token)), 409, 'MFA_ALREADY_ENROLLED')
      nextStep()
    })

    t.test('a password alone never signs in an account with a factor; a wrong password answers as always', async (t) => {
      const u = await enrolled()
      const res = await login(u.email)
      t.equal(res.statusCode, 200)
      const body = json(res)
      t.same(Object.keys(body).sort(), ['methods', 'mfa_required', 'mfa_token'], 'no tokens')
      t.same(body.methods, ['totp', 'recovery_code'])
      const plain = await signup(app)
      const wrongWithFactor = await login(u.email, 'not the password')
      const wrongWithout = await login(plain.user.email, 'not the password')
      expectUnauthorized(t, wrongWithFactor, 'INVALID_CREDENTIALS')
      t.same(Object.keys(json(wrongWithFactor)).sort(), Object.keys(json(wrongWithout)).sort(), 'no hint that a factor exists')
      t.equal(json(wrongWithFactor).detail, json(wrongWithout).detail)
    })

    t.test('the second step: tokens at aal2; the mfa_token works once, only for its account and its password', async (t) => {
      const u = await enrolled()
      const { mfa_token: mfaToken } = json(await login(u.email))
      expectUnauthorized(t, await post('/api/v1/auth/mfa/verify', { mfa_token: 'x'.repeat(43), code: codeAt(u.secret, clock.now()) }), 'INVALID_MFA_TOKEN')
      expectProblem(t, await post('/api/v1/auth/mfa/verify', { mfa_token: mfaToken, code: codeAt(u.secret, clock.now()), recovery_code: u.recovery[0] }), 400, 'VALIDATION_FAILED')
      const ok = await post('/api/v1/auth/mfa/verify', { mfa_token: mfaToken, code: codeAt(u.secret, clock.now()) })
      t.equal(ok.statusCode, 200)
      const claims = claimsOf(json(ok).access_token)
      t.same([claims.acr, claims.amr], ['aal2', ['pwd', 'otp']])
      nextStep()
      expectUnauthorized(t, await post('/api/v1/auth/mfa/verify', { mfa_token: mfaToken, code: codeAt(u.secret, clock.now()) }), 'INVALID_MFA_TOKEN')
      // A password changed between the two steps voids the pending step.
      const pending = json(await login(u.email)).mfa_token
      const aal2 = json(ok).access_token
      t.equal((await post('/api/v1/auth/password/change', { current_password: GOOD_PASSWORD, new_password: 'another fine passphrase' }, bearer(aal2))).statusCode, 204)
      expectUnauthorized(t, await post('/api/v1/auth/mfa/verify', { mfa_token: pending, code: codeAt(u.secret, clock.now()) }), 'INVALID_MFA_TOKEN')
      // Five minutes, no more.
      nextStep()
      const late = json(await login(u.email, 'another fine passphrase')).mfa_token
      clock.advance(301)
      expectUnauthorized(t, await post('/api/v1/auth/mfa/verify', { mfa_token: late, code: codeAt(u.secret, clock.now()) }), 'INVALID_MFA_TOKEN')
      t.notOk(JSON.stringify(await app.db.selectFrom('mfa_challenges').selectAll().execute()).includes(mfaToken), 'stored only hashed')
    })

    t.test('drift: a code of the step before or after passes, two steps away fails', async (t) => {
      const u = await enrolled()
      for (const [steps, ok] of [[-1, true], [1, true], [-2, false], [2, false]] as const) {
        nextStep()
        const { mfa_token: mfaToken } = json(await login(u.email))
        const res = await post('/api/v1/auth/mfa/verify', { mfa_token: mfaToken, code: codeAt(u.secret, new Date(clock.now().getTime() + steps * 30_000)) })
        t.equal(res.statusCode, ok ? 200 : 401, `${steps} step(s): ${ok ? 'accepted' : 'refused'}`)
        if (ok) nextStep()
        await app.loginThrottle.forget(`account:${u.id}`)
      }
    })

    t.test('a code is good once: replayed later, or sent twice at once', async (t) => {
      const u = await enrolled()
      const code = codeAt(u.secret, clock.now())
      const a = json(await login(u.email)).mfa_token
      t.equal((await post('/api/v1/auth/mfa/verify', { mfa_token: a, code })).statusCode, 200)
      const b = json(await login(u.email)).mfa_token
      expectUnauthorized(t, await post('/api/v1/auth/mfa/verify', { mfa_token: b, code }), 'INVALID_MFA_CODE')
      // An earlier step's code once a later one was used: refused too.
      nextStep()
      const [c, d] = [json(await login(u.email)).mfa_token, json(await login(u.email)).mfa_token]
      const racing = codeAt(u.secret, clock.now())
      const answers = await Promise.all([c, d].map((token) => post('/api/v1/auth/mfa/verify', { mfa_token: token, code: racing })))
      t.same(answers.map((r) => r.statusCode).sort(), [200, 401], 'one of two racing requests passes')
      nextStep()
    })

    t.test('wrong codes go through the per-account throttle shared with passwords', async (t) => {
      const u = await enrolled()
      const { mfa_token: mfaToken } = json(await login(u.email))
      for (let i = 0; i < 5; i++) expectUnauthorized(t, await post('/api/v1/auth/mfa/verify', { mfa_token: mfaToken, code: '000000' }), 'INVALID_MFA_CODE')
      const throttled = await post('/api/v1/auth/mfa/verify', { mfa_token: mfaToken, code: codeAt(u.secret, clock.now()) })
      expectProblem(t, throttled, 429, 'RATE_LIMITED')
      t.ok(Number(throttled.headers['retry-after']) >= 1, 'with Retry-After')
      expectProblem(t, await login(u.email), 429, 'RATE_LIMITED')
      await app.loginThrottle.forget(`account:${u.id}`)
    })

    t.test('recovery codes: each once (also racing), typed loosely, the owner mailed; few left says so', async (t) => {
      const u = await enrolled()
      const [first, second, ...rest] = u.recovery
      const use = async (recoveryCode: string) => post('/api/v1/auth/mfa/verify', { mfa_token: json(await login(u.email)).mfa_token, recovery_code: recoveryCode })
      const ok = await use(` ${first.toLowerCase().replaceAll('-', ' ').replaceAll('0', 'o')} `)
      t.equal(ok.statusCode, 200, 'lower case, spaces, o for 0')
      t.same(claimsOf(json(ok).access_token).acr, 'aal2')
      expectUnauthorized(t, await use(first), 'INVALID_MFA_CODE')
      await app.background.idle()
      t.match((await box.next(u.email)).subject, /recovery code/i, 'the owner is told')
      const tokens = await Promise.all([json(await login(u.email)).mfa_token, json(await login(u.email)).mfa_token])
      const raced = await Promise.all(tokens.map((token) => post('/api/v1/auth/mfa/verify', { mfa_token: token, recovery_code: second })))
      t.same(raced.map((r) => r.statusCode).sort(), [200, 401], 'one of two racing uses passes')
      for (const code of rest.slice(0, 5)) t.equal((await use(code)).statusCode, 200)
      await app.background.idle()
      const mails = []
      for (let i = 0; i < 6; i++) mails.push(await box.next(u.email))
      t.match(mails.at(-1)!.text, /3 unused recovery codes are left[\s\S]*make a new set/, 'few left: make new ones')
      t.equal(json(await app.inject({ url: '/api/v1/users/me/mfa', headers: bearer(json(ok).access_token) })).recovery_codes_left, 3)
    })

    t.test('assurance travels with the session: refresh keeps aal2; step-up raises an aal1 session', async (t) => {
      const u = await enrolled()
      const signedIn = json(await signIn(u.email, u.secret))
      const refreshed = json(await post('/api/v1/auth/refresh', { refresh_token: signedIn.refresh_token }))
      t.same([claimsOf(refreshed.access_token).acr, claimsOf(refreshed.access_token).amr], ['aal2', ['pwd', 'otp']], 'refresh keeps aal2')

      // The session the user enrolled in passed only a password: sensitive changes need the second factor.
      const aal1 = u.session.access_token
      t.equal(claimsOf(aal1).acr, 'aal1')
      expectProblem(t, await post('/api/v1/auth/password/change', { current_password: GOOD_PASSWORD, new_password: 'yet another passphrase' }, bearer(aal1)), 403, 'MFA_REQUIRED')
      expectProblem(t, await post('/api/v1/users/me/email', { new_email: uniqueEmail(), password: GOOD_PASSWORD }, bearer(aal1)), 403, 'MFA_REQUIRED')
      expectProblem(t, await app.inject({ method: 'DELETE', url: '/api/v1/users/me', headers: bearer(aal1), payload: { password: GOOD_PASSWORD } }), 403, 'MFA_REQUIRED')
      expectProblem(t, await app.inject({ method: 'DELETE', url: '/api/v1/users/me/mfa/totp', headers: bearer(aal1) }), 403, 'MFA_REQUIRED')
      expectProblem(t, await post('/api/v1/users/me/mfa/recovery-codes', {}, bearer(aal1)), 403, 'MFA_REQUIRED')
      expectProblem(t, await post('/api/v1/auth/password/change', { current_password: 'x' }, bearer(aal1)), 403, 'MFA_REQUIRED')

      expectUnauthorized(t, await post('/api/v1/auth/mfa/verify', { code: '000000' }, bearer(aal1)), 'INVALID_MFA_CODE')
      expectUnauthorized(t, await post('/api/v1/auth/mfa/verify', { code: codeAt(u.secret, clock.now()) }, bearer('not.a.token')), 'INVALID_ACCESS_TOKEN')
      const raised = await post('/api/v1/auth/mfa/verify', { code: codeAt(u.secret, clock.now()) }, bearer(aal1))
      t.equal(raised.statusCode, 200, 'step-up')
      nextStep()
      const up = json(raised)
      t.equal(claimsOf(up.access_token).sid, claimsOf(aal1).sid, 'the same session')
      t.equal(claimsOf(up.access_token).acr, 'aal2')
      t.equal(claimsOf(json(await post('/api/v1/auth/refresh', { refresh_token: up.refresh_token })).access_token).acr, 'aal2', 'and stays so')
      const codes = await post('/api/v1/users/me/mfa/recovery-codes', {}, bearer(up.access_token))
      t.equal(codes.statusCode, 200)
      t.notSame(json(codes).recovery_codes, u.recovery, 'a new set')
      const old = await post('/api/v1/auth/mfa/verify', { mfa_token: json(await login(u.email)).mfa_token, recovery_code: u.recovery[0] })
      expectUnauthorized(t, old, 'INVALID_MFA_CODE')
      t.equal((await app.inject({ method: 'DELETE', url: '/api/v1/users/me/mfa/totp', headers: bearer(up.access_token) })).statusCode, 204, 'removed')
      t.ok(json(await login(u.email)).access_token, 'the password alone signs in again')
      await app.loginThrottle.forget(`account:${u.id}`)
    })

    t.test('forward auth with aal=2 (query or header): an aal1 token is 401 MFA_REQUIRED with an RFC 9470 challenge', async (t) => {
      const u = await enrolled()
      const aal1 = u.session.access_token
      for (const request of [{ url: '/api/v1/auth/verify?aal=2', headers: bearer(aal1) }, { url: '/api/v1/auth/verify', headers: { ...bearer(aal1), 'x-required-aal': '2' } }]) {
        const refused = await app.inject(request)
        expectProblem(t, refused, 401, 'MFA_REQUIRED')
        t.match(refused.headers['www-authenticate'], /^Bearer realm="auth-service", error="insufficient_user_authentication", error_description="[^"]+", acr_values="aal2", code="MFA_REQUIRED"$/)
      }
      expectProblem(t, await app.inject({ url: '/api/v1/auth/verify', headers: { ...bearer(aal1), 'x-required-aal': 'aal2' } }), 400, 'VALIDATION_FAILED')
      t.equal((await app.inject({ url: '/api/v1/auth/verify', headers: bearer(aal1) })).headers['x-user-aal'], '1', 'without a demand, aal1 passes and says so')
      const aal2 = json(await signIn(u.email, u.secret)).access_token
      const ok = await app.inject({ url: '/api/v1/auth/verify?aal=2', headers: bearer(aal2) })
      t.equal(ok.statusCode, 200)
      t.equal(ok.headers['x-user-aal'], '2')
    })
  })
}
