import { createHash, randomBytes } from 'node:crypto'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import t, { type Test } from 'tap'
import { build, databases, expectIdentical, expectProblem, GOOD_PASSWORD, json, uniqueEmail } from '../../../../helper.js'
import { startMailbox, tokenIn, type ReceivedMail } from '../../../../mailbox.js'

const SIGNUP = '/api/v1/auth/signup'
const LOGIN = '/api/v1/auth/login'
const VERIFY = '/api/v1/auth/email/verify'
const RESEND = '/api/v1/auth/email/resend'
const VERIFY_URL = 'https://app.example.com/verify?token={token}'
const TTL = 86400
const INTERVAL = 60
const SUBJECT = 'Confirm your email address'
const ATTEMPT_SUBJECT = 'Someone tried to sign up with your address'

/** Per-client rate limits are not what these tests are about (their many requests all come from one address). */
const NO_RATE_LIMIT = { RATE_LIMIT_ENABLED: 'false' }

const post = (app: FastifyInstance, url: string, payload: Record<string, unknown>) => app.inject({ method: 'POST', url, payload })
const sha256 = (token: string) => createHash('sha256').update(token).digest('base64url')
const linkFor = (token: string) => VERIFY_URL.replace('{token}', token)

const box = await startMailbox(t)

/** Mails to `to` received and not yet taken (call after app.background.idle()). */
const mailsTo = (to: string) => box.received.filter((m) => m.to === to)

for (const db of databases) {
  t.test(db.name, async (t) => {
    /** An app on this database with a clock the test can move. */
    async function setup (t: Test, env: Record<string, string> = {}) {
      let clock = new Date()
      const app = await build(t, { env: { ...NO_RATE_LIMIT, DATABASE_URL: db.url, SMTP_URL: box.url, EMAIL_VERIFY_URL: VERIFY_URL, ...env }, now: () => clock })
      return {
        app,
        advance (seconds: number) { clock = new Date(clock.getTime() + seconds * 1000) }
      }
    }

    /** Signs up `email` and returns the answer and the verification mail. */
    async function signupWithMail (app: FastifyInstance, email = uniqueEmail('verify')): Promise<{ res: LightMyRequestResponse, email: string, mail: ReceivedMail }> {
      const res = await post(app, SIGNUP, { email, password: GOOD_PASSWORD })
      await app.background.idle()
      return { res, email, mail: await box.next(email) }
    }

    const tokenRows = (app: FastifyInstance, userId: string) =>
      app.db.selectFrom('one_time_tokens').selectAll().where('user_id', '=', userId).orderBy('created_at').execute()
    const userRow = (app: FastifyInstance, email: string) =>
      app.db.selectFrom('users').selectAll().where('email', '=', email).executeTakeFirstOrThrow()

    const { app } = await setup(t)

    t.test('signup mails a verification link in the text and the html body', async (t) => {
      const { res, email, mail } = await signupWithMail(app)
      t.equal(res.statusCode, 201)
      t.equal(mail.to, email)
      t.equal(mail.subject, SUBJECT)
      const token = tokenIn(mail)
      t.ok(mail.text.includes(linkFor(token)), 'the text body has the link built from EMAIL_VERIFY_URL', { text: mail.text })
      t.ok(mail.html.includes(`href="${linkFor(token)}"`), 'the html body links to it', { html: mail.html })
      t.equal(/href="([^"]+)"/.exec(mail.html)?.[1], linkFor(token), 'the first link of the html is that link')
      t.notOk(res.body.includes(token), 'the token is not in the signup answer')
      t.equal(mailsTo(email).length, 0, 'one mail only')
    })

    t.test('the token has at least 128 bits and is stored only as its SHA-256', async (t) => {
      const { res, mail } = await signupWithMail(app)
      const user = json(res).user
      const token = tokenIn(mail)
      t.match(token, /^[A-Za-z0-9_-]{22,}$/, 'base64url, at least 22 characters')
      t.ok(Buffer.from(token, 'base64url').length >= 16, 'at least 16 random bytes')

      const plain = await app.db.selectFrom('one_time_tokens').select('token_hash').where('token_hash', '=', token).execute()
      t.equal(plain.length, 0, 'no row holds the token itself')
      const rows = await tokenRows(app, user.id)
      t.equal(rows.length, 1, 'one token row for the user')
      t.equal(rows[0].token_hash, sha256(token), 'the row holds the SHA-256 of the token, base64url')
      t.equal(rows[0].purpose, 'verify_email')
      t.equal(rows[0].email, user.email)
      t.equal(rows[0].used_at, null, 'unused')
      const lifetime = new Date(rows[0].expires_at).getTime() - new Date(rows[0].created_at).getTime()
      t.equal(lifetime, TTL * 1000, 'valid 24 hours')
    })

    t.test('verify answers 200 with the verified user; the token works once', async (t) => {
      const { res, email, mail } = await signupWithMail(app)
      const user = json(res).user
      t.equal(user.email_verified, false, 'unverified after signup')
      const token = tokenIn(mail)

      const ok = await post(app, VERIFY, { token })
      t.equal(ok.statusCode, 200)
      t.match(ok.headers['content-type'], /^application\/json/)
      const body = json(ok)
      t.equal(body.id, user.id)
      t.equal(body.email, email)
      t.equal(body.email_verified, true)
      t.same(Object.keys(body).sort(), ['created_at', 'email', 'email_verified', 'id', 'roles', 'updated_at', 'username'], 'the public user, nothing more')
      t.ok(Boolean((await userRow(app, email)).email_verified), 'stored as verified')
      const [row] = await tokenRows(app, user.id)
      t.not(row.used_at, null, 'the token is marked used')
      const events = await app.db.selectFrom('auth_events').select('type').where('user_id', '=', user.id).where('type', '=', 'email_verified').execute()
      t.equal(events.length, 1, 'an email_verified event is written')

      const login = await post(app, LOGIN, { email, password: GOOD_PASSWORD })
      t.equal(login.statusCode, 200)
      t.equal(json(login).user.email_verified, true, 'login shows the address verified')

      // Idempotent: the same link followed again (a second tab, a mail scanner first) says the address is verified.
      const again = await post(app, VERIFY, { token })
      t.equal(again.statusCode, 200, 'the same token again: 200')
      t.same(json(again), json(ok), 'the same answer')
      t.equal((await app.db.selectFrom('auth_events').select('type').where('user_id', '=', user.id).where('type', '=', 'email_verified').execute()).length, 1, 'no second event')
    })

    t.test('the same token posted several times at once verifies once, and answers 200 each time', async (t) => {
      const { mail, res } = await signupWithMail(app)
      const user = json(res).user
      const token = tokenIn(mail)
      const answers = await Promise.all(Array.from({ length: 5 }, () => post(app, VERIFY, { token })))
      t.same(answers.map((a) => a.statusCode), [200, 200, 200, 200, 200])
      t.equal((await app.db.selectFrom('auth_events').select('type').where('user_id', '=', user.id).where('type', '=', 'email_verified').execute()).length, 1, 'one event')
    })

    t.test('a spent token is refused once the account no longer has that address verified', async (t) => {
      const { mail, email } = await signupWithMail(app)
      const token = tokenIn(mail)
      t.equal((await post(app, VERIFY, { token })).statusCode, 200)
      await app.db.updateTable('users').set({ email_verified: 0 }).where('email', '=', email).execute()
      expectProblem(t, await post(app, VERIFY, { token }), 400, 'INVALID_TOKEN')
    })

    t.test('an expired token is 400 INVALID_TOKEN and verifies nothing', async (t) => {
      const { app, advance } = await setup(t)
      const { email, mail } = await signupWithMail(app)
      advance(TTL + 1)
      expectProblem(t, await post(app, VERIFY, { token: tokenIn(mail) }), 400, 'INVALID_TOKEN')
      t.notOk(Boolean((await userRow(app, email)).email_verified), 'still unverified')
    })

    t.test('EMAIL_VERIFICATION_TTL_SECONDS sets the lifetime', async (t) => {
      const { app, advance } = await setup(t, { EMAIL_VERIFICATION_TTL_SECONDS: '600' })
      const early = await signupWithMail(app)
      const late = await signupWithMail(app)
      advance(599)
      t.equal((await post(app, VERIFY, { token: tokenIn(early.mail) })).statusCode, 200, 'works a second before the end')
      advance(2)
      expectProblem(t, await post(app, VERIFY, { token: tokenIn(late.mail) }), 400, 'INVALID_TOKEN')
      t.notOk(Boolean((await userRow(app, late.email)).email_verified), 'still unverified')
    })

    t.test('unknown and malformed tokens are refused with 400', async (t) => {
      const cases: Array<[string, unknown, string]> = [
        ['unknown, well-formed', randomBytes(32).toString('base64url'), 'INVALID_TOKEN'],
        ['unknown, 128 characters', 'A'.repeat(128), 'INVALID_TOKEN'],
        ['empty', '', 'VALIDATION_FAILED'],
        ['too long (129 characters)', 'A'.repeat(129), 'VALIDATION_FAILED'],
        ['very long (10,000 characters)', 'A'.repeat(10_000), 'VALIDATION_FAILED'],
        ['with + / =', 'abc+def/ghi=', 'VALIDATION_FAILED'],
        ['with a space', 'abc def', 'VALIDATION_FAILED'],
        ['with a quote', "abc'def", 'VALIDATION_FAILED'],
        ['not a string', 12345, 'VALIDATION_FAILED'],
        ['null', null, 'VALIDATION_FAILED']
      ]
      for (const [name, token, code] of cases) {
        const body = expectProblem(t, await post(app, VERIFY, { token }), 400, code)
        if (code === 'VALIDATION_FAILED') t.ok(body.errors.some((e: { field: string }) => e.field === '/body/token'), `${name}: names /body/token`)
        else t.notOk(body.errors, `${name}: no field errors`)
      }
      expectProblem(t, await post(app, VERIFY, {}), 400, 'VALIDATION_FAILED')
      expectProblem(t, await post(app, VERIFY, { token: 'A'.repeat(43), extra: 1 }), 400, 'VALIDATION_FAILED')
    })

    t.test('resend answers 202 with identical answers for unverified, verified and unknown addresses', async (t) => {
      const unverified = await signupWithMail(app)
      const verified = await signupWithMail(app)
      t.equal((await post(app, VERIFY, { token: tokenIn(verified.mail) })).statusCode, 200)

      const answers = [
        await post(app, RESEND, { email: unverified.email }),
        await post(app, RESEND, { email: verified.email }),
        await post(app, RESEND, { email: uniqueEmail('nobody') })
      ]
      await app.background.idle()
      t.equal(answers[0].statusCode, 202)
      t.match(answers[0].headers['content-type'], /^application\/json/)
      t.same(Object.keys(json(answers[0])), ['message'], 'only a message')
      t.type(json(answers[0]).message, 'string')
      expectIdentical(t, answers[0], answers[1], 'unverified vs verified')
      expectIdentical(t, answers[0], answers[2], 'unverified vs unknown')
    })

    t.test('resend mails a new token only to a known unverified address, once per interval', async (t) => {
      const { app, advance } = await setup(t)
      const unverified = await signupWithMail(app)
      const verified = await signupWithMail(app)
      t.equal((await post(app, VERIFY, { token: tokenIn(verified.mail) })).statusCode, 200)
      const unknown = uniqueEmail('nobody')
      advance(INTERVAL + 1)

      for (const email of [unverified.email, verified.email, unknown]) t.equal((await post(app, RESEND, { email })).statusCode, 202)
      await app.background.idle()
      t.equal(mailsTo(unverified.email).length, 1, 'the unverified address gets one mail')
      const [mail] = mailsTo(unverified.email)
      t.equal(mail?.subject, SUBJECT)
      t.not(tokenIn(mail), tokenIn(unverified.mail), 'with a new token')
      t.equal(mailsTo(verified.email).length, 0, 'the verified address gets none')
      t.equal(mailsTo(unknown).length, 0, 'the unknown address gets none')
      await box.next(unverified.email)

      advance(INTERVAL - 2)
      t.equal((await post(app, RESEND, { email: unverified.email })).statusCode, 202)
      await app.background.idle()
      t.equal(mailsTo(unverified.email).length, 0, 'a second resend within the interval mails nothing')

      advance(3)
      t.equal((await post(app, RESEND, { email: ` ${unverified.email.toUpperCase()} ` })).statusCode, 202, 'the address in another case, with spaces')
      await app.background.idle()
      t.equal(mailsTo(unverified.email).length, 1, 'after the interval, another mail')
      const again = await box.next(unverified.email)
      t.equal((await post(app, VERIFY, { token: tokenIn(again) })).statusCode, 200, 'the latest token verifies')
    })

    t.test('a resend right after signup mails nothing (the signup mail counts)', async (t) => {
      const { app, advance } = await setup(t)
      const { email } = await signupWithMail(app)
      advance(10)
      t.equal((await post(app, RESEND, { email })).statusCode, 202)
      await app.background.idle()
      t.equal(mailsTo(email).length, 0, 'no second mail within the interval')
    })

    t.test('resends sent at the same moment mail once per interval', async (t) => {
      const { app, advance } = await setup(t)
      const { email, res } = await signupWithMail(app)
      const burst = 5
      // Several rounds: the first burst of a fresh app can be serialised by the connection pool opening.
      for (let round = 1; round <= 5; round++) {
        advance(INTERVAL + 1)
        const answers = await Promise.all(Array.from({ length: burst }, () => post(app, RESEND, { email })))
        t.same(answers.map((a) => a.statusCode), Array(burst).fill(202), `round ${round}: every resend is 202`)
        await app.background.idle()
        const mails = mailsTo(email)
        t.equal(mails.length, 1, `round ${round}: one mail for ${burst} resends at once`)
        for (const mail of mails) await box.next(mail.to)
        const live = (await tokenRows(app, json(res).user.id)).filter((r) => r.used_at === null)
        t.equal(live.length, 1, `round ${round}: one live token`)
      }
    })

    t.test('a newer verification token voids the older', async (t) => {
      const { app, advance } = await setup(t)
      const { email, mail } = await signupWithMail(app)
      advance(INTERVAL + 1)
      t.equal((await post(app, RESEND, { email })).statusCode, 202)
      await app.background.idle()
      const newer = await box.next(email)
      expectProblem(t, await post(app, VERIFY, { token: tokenIn(mail) }), 400, 'INVALID_TOKEN')
      t.notOk(Boolean((await userRow(app, email)).email_verified), 'the older token verified nothing')
      t.equal((await post(app, VERIFY, { token: tokenIn(newer) })).statusCode, 200, 'the newer one works')
    })

    t.test('REQUIRE_EMAIL_VERIFICATION=true', async (t) => {
      const { app } = await setup(t, { REQUIRE_EMAIL_VERIFICATION: 'true' })

      t.test('signup of a new address is 202 with a message and no tokens', async (t) => {
        const email = uniqueEmail('required')
        const res = await post(app, SIGNUP, { email, password: GOOD_PASSWORD })
        t.equal(res.statusCode, 202)
        t.same(Object.keys(json(res)), ['message'], 'only a message')
        t.type(json(res).message, 'string')
        t.notMatch(res.body, /access_token|refresh_token|"user"/, 'no tokens, no user')
        await app.background.idle()
        const mail = await box.next(email)
        t.equal(mail.subject, SUBJECT, 'the verification mail goes out')
        t.notOk(res.body.includes(tokenIn(mail)), 'the token is not in the body')
      })

      t.test('signup with a taken address answers the same and tells the owner', async (t) => {
        const email = uniqueEmail('owner')
        const first = await post(app, SIGNUP, { email, password: GOOD_PASSWORD })
        await app.background.idle()
        t.equal((await box.next(email)).subject, SUBJECT)
        const hashBefore = (await userRow(app, email)).password_hash

        const taken = await post(app, SIGNUP, { email: email.toUpperCase(), password: 'another good passphrase' })
        const fresh = await post(app, SIGNUP, { email: uniqueEmail('fresh'), password: GOOD_PASSWORD })
        expectIdentical(t, first, taken, 'new vs taken')
        expectIdentical(t, fresh, taken, 'another new vs taken')
        await app.background.idle()
        const mail = await box.next(email)
        t.equal(mail.subject, ATTEMPT_SUBJECT, 'the owner is told')
        t.notMatch(mail.text, /token=/, 'with no link in it')
        t.equal(mailsTo(email).length, 0, 'and nothing else')
        const rows = await app.db.selectFrom('users').select(['id', 'password_hash']).where('email', '=', email).execute()
        t.equal(rows.length, 1, 'still one account')
        t.equal(rows[0].password_hash, hashBefore, 'its password is untouched')
      })

      t.test('login waits for the address to be verified', async (t) => {
        const email = uniqueEmail('login')
        t.equal((await post(app, SIGNUP, { email, password: GOOD_PASSWORD })).statusCode, 202)
        await app.background.idle()
        const mail = await box.next(email)

        expectProblem(t, await post(app, LOGIN, { email, password: GOOD_PASSWORD }), 403, 'EMAIL_NOT_VERIFIED')
        expectProblem(t, await post(app, LOGIN, { email, password: 'not the right password' }), 401, 'INVALID_CREDENTIALS')
        const sessions = await app.db.selectFrom('sessions').innerJoin('users', 'users.id', 'sessions.user_id').select('sessions.id').where('users.email', '=', email).execute()
        t.equal(sessions.length, 0, 'no session was started')

        t.equal((await post(app, VERIFY, { token: tokenIn(mail) })).statusCode, 200)
        const login = await post(app, LOGIN, { email, password: GOOD_PASSWORD })
        t.equal(login.statusCode, 200, 'after verifying, login works')
        t.equal(json(login).user.email_verified, true)
        expectProblem(t, await post(app, LOGIN, { email, password: 'not the right password' }), 401, 'INVALID_CREDENTIALS')
      })
    })
  })
}
