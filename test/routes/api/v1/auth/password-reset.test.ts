import { createHash, randomBytes } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import t, { type Test } from 'tap'
import { bearer, build, comparableHeaders, databases, expectProblem, GOOD_PASSWORD, json, uniqueEmail } from '../../../../helper.js'
import { startMailbox, tokenIn, type ReceivedMail } from '../../../../mailbox.js'

const SIGNUP = '/api/v1/auth/signup'
const LOGIN = '/api/v1/auth/login'
const REFRESH = '/api/v1/auth/refresh'
const FORWARD_AUTH = '/api/v1/auth/verify'
const FORGOT = '/api/v1/auth/password/forgot'
const RESET = '/api/v1/auth/password/reset'
const EMAIL_VERIFY = '/api/v1/auth/email/verify'
const RESET_URL = 'https://app.example.com/reset-password?token={token}'
const SUBJECT = 'Reset your password'
const NEW_PASSWORD = 'a brand new passphrase for tests'
const TTL = 1800
const INTERVAL = 60

/** Per-client rate limits are not what these tests are about (their many requests all come from one address). */
const NO_RATE_LIMIT = { RATE_LIMIT_ENABLED: 'false' }

const post = (app: FastifyInstance, url: string, payload: Record<string, unknown>) => app.inject({ method: 'POST', url, payload })
const login = (app: FastifyInstance, email: string, password: string) => post(app, LOGIN, { email, password })
const sha256 = (token: string) => createHash('sha256').update(token).digest('base64url')
const linkFor = (token: string) => RESET_URL.replace('{token}', token)

const box = await startMailbox(t)

/** Mails to `to` received and not yet taken (call after app.background.idle()). */
const mailsTo = (to: string) => box.received.filter((m) => m.to === to)

for (const db of databases) {
  t.test(db.name, async (t) => {
    /** An app on this database with a clock the test can move. */
    async function setup (t: Test) {
      let clock = new Date()
      const app = await build(t, { env: { ...NO_RATE_LIMIT, DATABASE_URL: db.url, SMTP_URL: box.url, PASSWORD_RESET_URL: RESET_URL }, now: () => clock })
      return {
        app,
        advance (seconds: number) { clock = new Date(clock.getTime() + seconds * 1000) }
      }
    }

    /** A signed-up user whose verification mail has been taken from the mailbox. */
    async function newUser (app: FastifyInstance) {
      const email = uniqueEmail('reset')
      const res = await post(app, SIGNUP, { email, password: GOOD_PASSWORD })
      if (res.statusCode !== 201) throw new Error(`signup failed: ${res.statusCode} ${res.body}`)
      await app.background.idle()
      const verification = await box.next(email)
      return { email, signup: json(res), verification }
    }

    /** Asks for a reset of `email` and returns the mail it brings. */
    async function forgot (app: FastifyInstance, email: string): Promise<ReceivedMail> {
      const res = await post(app, FORGOT, { email })
      if (res.statusCode !== 202) throw new Error(`forgot failed: ${res.statusCode} ${res.body}`)
      await app.background.idle()
      return box.next(email)
    }

    const { app } = await setup(t)

    t.test('forgot answers 202 alike for known and unknown addresses; the known one gets a link', async (t) => {
      const { email, signup } = await newUser(app)
      const unknown = uniqueEmail('nobody')
      const known = await post(app, FORGOT, { email })
      const other = await post(app, FORGOT, { email: unknown })
      t.equal(known.statusCode, 202)
      t.match(known.headers['content-type'], /^application\/json/)
      t.same(Object.keys(json(known)), ['message'], 'only a message')
      t.equal(other.statusCode, known.statusCode, 'same status')
      t.equal(other.body, known.body, 'byte-identical body')
      t.same(comparableHeaders(other), comparableHeaders(known), 'same headers')

      await app.background.idle()
      t.equal(mailsTo(unknown).length, 0, 'nothing is mailed to the unknown address')
      const mail = await box.next(email)
      t.equal(mail.subject, SUBJECT)
      const token = tokenIn(mail)
      t.ok(mail.text.includes(linkFor(token)), 'the text body has the link built from PASSWORD_RESET_URL', { text: mail.text })
      t.ok(mail.html.includes(`href="${linkFor(token)}"`), 'the html body links to it', { html: mail.html })
      t.match(token, /^[A-Za-z0-9_-]{22,}$/, 'at least 128 bits, base64url')
      t.notOk(known.body.includes(token), 'the token is not in the answer')

      const plain = await app.db.selectFrom('one_time_tokens').select('token_hash').where('token_hash', '=', token).execute()
      t.equal(plain.length, 0, 'no row holds the token itself')
      const rows = await app.db.selectFrom('one_time_tokens').selectAll().where('user_id', '=', signup.user.id).where('purpose', '=', 'reset_password').execute()
      t.equal(rows.length, 1, 'one reset token')
      t.equal(rows[0].token_hash, sha256(token), 'stored as its SHA-256')
      t.equal(new Date(rows[0].expires_at).getTime() - new Date(rows[0].created_at).getTime(), TTL * 1000, 'valid 30 minutes')
    })

    t.test('reset sets the new password, ends every session and works once', async (t) => {
      const { email, signup } = await newUser(app)
      const second = json(await login(app, email, GOOD_PASSWORD))
      t.equal((await app.inject({ url: FORWARD_AUTH, headers: bearer(second.access_token) })).statusCode, 200, 'the session works before')
      const token = tokenIn(await forgot(app, email))

      const res = await post(app, RESET, { token, new_password: NEW_PASSWORD })
      t.equal(res.statusCode, 204)
      t.equal(res.body, '', 'no body')

      const fresh = await login(app, email, NEW_PASSWORD)
      t.equal(fresh.statusCode, 200, 'the new password signs in')
      expectProblem(t, await login(app, email, GOOD_PASSWORD), 401, 'INVALID_CREDENTIALS')

      for (const [name, tokens] of [['signup session', signup], ['login session', second]] as const) {
        expectProblem(t, await app.inject({ url: FORWARD_AUTH, headers: bearer(tokens.access_token) }), 401, 'SESSION_REVOKED')
        const refreshed = await post(app, REFRESH, { refresh_token: tokens.refresh_token })
        t.equal(refreshed.statusCode, 401, `${name}: its refresh token is refused`)
        t.equal(json(refreshed).code, 'SESSION_REVOKED', 'the app can say "you were signed out"')
      }
      const sessions = await app.db.selectFrom('sessions').select(['id', 'revoked_at', 'revoke_reason']).where('user_id', '=', signup.user.id).execute()
      const ended = sessions.filter((s) => s.revoked_at !== null)
      t.equal(ended.length, 2, 'both earlier sessions are ended in the database')
      t.ok(ended.every((s) => s.revoke_reason === 'password_reset'), 'for password_reset')
      t.equal((await app.inject({ url: FORWARD_AUTH, headers: bearer(json(fresh).access_token) })).statusCode, 200, 'the session made after the reset works')

      const events = await app.db.selectFrom('auth_events').selectAll().where('user_id', '=', signup.user.id).where('type', '=', 'password_reset').execute()
      t.equal(events.length, 1, 'a password_reset event is written')
      t.notOk(events[0].detail.includes(token), 'without the token')
      t.notOk(events[0].detail.includes(NEW_PASSWORD), 'without the password')

      expectProblem(t, await post(app, RESET, { token, new_password: 'yet another passphrase here' }), 400, 'INVALID_TOKEN')
      t.equal((await login(app, email, NEW_PASSWORD)).statusCode, 200, 'the second use changed nothing')
    })

    t.test('an expired token is 400 INVALID_TOKEN', async (t) => {
      const { app, advance } = await setup(t)
      const { email } = await newUser(app)
      const token = tokenIn(await forgot(app, email))
      advance(31 * 60)
      expectProblem(t, await post(app, RESET, { token, new_password: NEW_PASSWORD }), 400, 'INVALID_TOKEN')
      t.equal((await login(app, email, GOOD_PASSWORD)).statusCode, 200, 'the password is unchanged')
      expectProblem(t, await login(app, email, NEW_PASSWORD), 401, 'INVALID_CREDENTIALS')
    })

    t.test('one mail per interval; a newer forgot voids the older token', async (t) => {
      const { app, advance } = await setup(t)
      const { email } = await newUser(app)
      const older = tokenIn(await forgot(app, email))

      advance(INTERVAL - 1)
      t.equal((await post(app, FORGOT, { email })).statusCode, 202)
      await app.background.idle()
      t.equal(mailsTo(email).length, 0, 'a second forgot within the interval mails nothing')

      advance(2)
      const newer = tokenIn(await forgot(app, email))
      t.not(newer, older, 'a new token')
      expectProblem(t, await post(app, RESET, { token: older, new_password: NEW_PASSWORD }), 400, 'INVALID_TOKEN')
      t.equal((await login(app, email, GOOD_PASSWORD)).statusCode, 200, 'the older token changed nothing')
      t.equal((await post(app, RESET, { token: newer, new_password: NEW_PASSWORD })).statusCode, 204, 'the newer one works')
      t.equal((await login(app, email, NEW_PASSWORD)).statusCode, 200)
    })

    t.test('forgots sent at the same moment mail once per interval', async (t) => {
      const { app, advance } = await setup(t)
      const { email, signup } = await newUser(app)
      const burst = 5
      // Several rounds: the first burst of a fresh app can be serialised by the connection pool opening.
      for (let round = 1; round <= 5; round++) {
        advance(INTERVAL + 1)
        const answers = await Promise.all(Array.from({ length: burst }, () => post(app, FORGOT, { email })))
        t.same(answers.map((a) => a.statusCode), Array(burst).fill(202), `round ${round}: every forgot is 202`)
        await app.background.idle()
        const mails = mailsTo(email)
        t.equal(mails.length, 1, `round ${round}: one mail for ${burst} forgots at once`)
        for (const mail of mails) await box.next(mail.to)
        const live = await app.db.selectFrom('one_time_tokens').select('token_hash')
          .where('user_id', '=', signup.user.id).where('purpose', '=', 'reset_password').where('used_at', 'is', null).execute()
        t.equal(live.length, 1, `round ${round}: one live reset token`)
      }
    })

    t.test('the same token posted several times at once resets once', async (t) => {
      const { email } = await newUser(app)
      const token = tokenIn(await forgot(app, email))
      const passwords = Array.from({ length: 5 }, (_, i) => `${NEW_PASSWORD} number ${i}`)
      const answers = await Promise.all(passwords.map((p) => post(app, RESET, { token, new_password: p })))
      t.same(answers.map((a) => a.statusCode).sort(), [204, 400, 400, 400, 400], 'one 204, four 400')
      for (const refused of answers.filter((a) => a.statusCode === 400)) t.equal(json(refused).code, 'INVALID_TOKEN')
      const winner = passwords[answers.findIndex((a) => a.statusCode === 204)]
      t.equal((await login(app, email, winner)).statusCode, 200, 'the password of the accepted request is the one set')
    })

    t.test('a weak new password is 400 WEAK_PASSWORD and the token still works', async (t) => {
      const { email } = await newUser(app)
      const token = tokenIn(await forgot(app, email))
      for (const weak of ['short', 'password1', email]) {
        expectProblem(t, await post(app, RESET, { token, new_password: weak }), 400, 'WEAK_PASSWORD')
      }
      t.equal((await login(app, email, GOOD_PASSWORD)).statusCode, 200, 'the password is unchanged')
      t.equal((await post(app, RESET, { token, new_password: NEW_PASSWORD })).statusCode, 204, 'a good password with the same token works')
      t.equal((await login(app, email, NEW_PASSWORD)).statusCode, 200)
    })

    t.test('a GET on the reset path does not spend the token', async (t) => {
      const { email } = await newUser(app)
      const token = tokenIn(await forgot(app, email))
      for (const method of ['GET', 'HEAD'] as const) {
        const res = await app.inject({ method, url: `${RESET}?token=${token}` })
        t.ok([404, 405].includes(res.statusCode), `${method} is 404 or 405`, { status: res.statusCode })
      }
      const get = await app.inject({ url: `${RESET}?token=${token}` })
      t.notOk(get.body.includes(token), 'the answer does not echo the token')
      t.equal((await post(app, RESET, { token, new_password: NEW_PASSWORD })).statusCode, 204, 'the POST still works')
    })

    t.test('unknown and malformed tokens are refused with 400', async (t) => {
      expectProblem(t, await post(app, RESET, { token: randomBytes(32).toString('base64url'), new_password: NEW_PASSWORD }), 400, 'INVALID_TOKEN')
      expectProblem(t, await post(app, RESET, { token: randomBytes(32).toString('base64url'), new_password: 'short' }), 400, 'INVALID_TOKEN')
      for (const token of ['', 'A'.repeat(129), 'abc+def/ghi=', 42]) {
        expectProblem(t, await post(app, RESET, { token, new_password: NEW_PASSWORD }), 400, 'VALIDATION_FAILED')
      }
      expectProblem(t, await post(app, RESET, { token: 'A'.repeat(43) }), 400, 'VALIDATION_FAILED')
      expectProblem(t, await post(app, RESET, { new_password: NEW_PASSWORD }), 400, 'VALIDATION_FAILED')
    })

    t.test('tokens serve only their own purpose', async (t) => {
      const { email, verification } = await newUser(app)
      expectProblem(t, await post(app, RESET, { token: tokenIn(verification), new_password: NEW_PASSWORD }), 400, 'INVALID_TOKEN')
      t.equal((await login(app, email, GOOD_PASSWORD)).statusCode, 200, 'a verification token resets nothing')

      const token = tokenIn(await forgot(app, email))
      expectProblem(t, await post(app, EMAIL_VERIFY, { token }), 400, 'INVALID_TOKEN')
      t.equal((await post(app, RESET, { token, new_password: NEW_PASSWORD })).statusCode, 204, 'the reset token still resets')
    })
  })
}
