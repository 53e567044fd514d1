import { createHash } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import t from 'tap'
import { bearer, build, databases, expectIdentical, expectProblem, GOOD_PASSWORD, json, uniqueEmail } from '../../../../helper.js'
import { startMailbox, tokenIn } from '../../../../mailbox.js'

const SIGNUP = '/api/v1/auth/signup'
const LOGIN = '/api/v1/auth/login'
const VERIFY = '/api/v1/auth/email/verify'
const CHANGE = '/api/v1/users/me/email'
const ME = '/api/v1/users/me'
const VERIFY_URL = 'https://app.example.com/verify?token={token}'
const CONFIRM_SUBJECT = 'Confirm your new email address'
const CHANGED_SUBJECT = 'Your email address was changed'
const TTL = 86400

/** Per-client rate limits are not what these tests are about (their many requests all come from one address). */
const NO_RATE_LIMIT = { RATE_LIMIT_ENABLED: 'false' }

const post = (app: FastifyInstance, url: string, payload: Record<string, unknown>, headers: Record<string, string> = {}) =>
  app.inject({ method: 'POST', url, payload, headers })
const login = (app: FastifyInstance, email: string, password = GOOD_PASSWORD) => post(app, LOGIN, { email, password })
const sha256 = (token: string) => createHash('sha256').update(token).digest('base64url')

const box = await startMailbox(t)

/** Mails to `to` received and not yet taken (call after app.background.idle()). */
const mailsTo = (to: string) => box.received.filter((m) => m.to === to)

for (const db of databases) {
  t.test(db.name, async (t) => {
    let clock = new Date()
    const app = await build(t, { env: { ...NO_RATE_LIMIT, DATABASE_URL: db.url, SMTP_URL: box.url, EMAIL_VERIFY_URL: VERIFY_URL }, now: () => clock })

    /** A signed-up user whose verification mail has been taken from the mailbox. */
    async function newUser (prefix = 'change') {
      const email = uniqueEmail(prefix)
      const res = await post(app, SIGNUP, { email, password: GOOD_PASSWORD })
      if (res.statusCode !== 201) throw new Error(`signup failed: ${res.statusCode} ${res.body}`)
      await app.background.idle()
      const verification = await box.next(email)
      const body = json(res)
      return { email, id: body.user.id as string, accessToken: body.access_token as string, verification }
    }

    const change = (accessToken: string, payload: Record<string, unknown>) => post(app, CHANGE, payload, bearer(accessToken))
    const me = async (accessToken: string) => json(await app.inject({ url: ME, headers: bearer(accessToken) }))
    const accountsWith = (email: string) => app.db.selectFrom('users').select('id').where('email', '=', email).execute()

    t.test('202 and a mail to the new address; nothing changes until it is confirmed', async (t) => {
      const user = await newUser()
      const newEmail = uniqueEmail('new')
      const res = await change(user.accessToken, { new_email: newEmail, password: GOOD_PASSWORD })
      t.equal(res.statusCode, 202)
      t.match(res.headers['content-type'], /^application\/json/)
      t.same(Object.keys(json(res)), ['message'], 'only a message')
      await app.background.idle()

      const mail = await box.next(newEmail)
      t.equal(mail.subject, CONFIRM_SUBJECT)
      const token = tokenIn(mail)
      t.ok(mail.text.includes(VERIFY_URL.replace('{token}', token)), 'the link is built from EMAIL_VERIFY_URL')
      t.ok(mail.html.includes(`href="${VERIFY_URL.replace('{token}', token)}"`), 'the html body links to it')
      t.equal(mailsTo(user.email).length, 0, 'the old address is not mailed yet')
      t.notOk(res.body.includes(token), 'the token is not in the answer')

      const rows = await app.db.selectFrom('one_time_tokens').selectAll().where('user_id', '=', user.id).where('purpose', '=', 'change_email').execute()
      t.equal(rows.length, 1)
      t.equal(rows[0].token_hash, sha256(token), 'stored as its SHA-256')
      t.equal(rows[0].email, newEmail, 'for the new address')

      t.equal((await me(user.accessToken)).email, user.email, 'the account keeps its old address')
      t.equal((await login(app, user.email)).statusCode, 200, 'the old address still signs in')
      expectProblem(t, await login(app, newEmail), 401, 'INVALID_CREDENTIALS')
    })

    t.test('verifying switches the account to the new address and tells the old one', async (t) => {
      const user = await newUser()
      const newEmail = uniqueEmail('new')
      t.equal((await change(user.accessToken, { new_email: ` ${newEmail.toUpperCase()} `, password: GOOD_PASSWORD })).statusCode, 202)
      await app.background.idle()
      const token = tokenIn(await box.next(newEmail))

      const res = await post(app, VERIFY, { token })
      t.equal(res.statusCode, 200)
      const body = json(res)
      t.equal(body.id, user.id)
      t.equal(body.email, newEmail, 'the new address, normalised')
      t.equal(body.email_verified, true)
      t.equal((await me(user.accessToken)).email, newEmail, 'the profile shows it')

      await app.background.idle()
      const notice = await box.next(user.email)
      t.equal(notice.subject, CHANGED_SUBJECT, 'the old address is told')
      t.ok(notice.text.includes(newEmail), 'naming the new address')
      t.notMatch(notice.text, /token=/, 'with no link to act on')
      t.equal(mailsTo(newEmail).length, 0, 'nothing more to the new address')

      const signedIn = await login(app, newEmail)
      t.equal(signedIn.statusCode, 200, 'the new address signs in')
      t.equal(json(signedIn).user.email, newEmail)
      expectProblem(t, await login(app, user.email), 401, 'INVALID_CREDENTIALS')
      const events = await app.db.selectFrom('auth_events').select('type').where('user_id', '=', user.id).where('type', '=', 'email_changed').execute()
      t.equal(events.length, 1, 'an email_changed event is written')

      t.equal((await post(app, VERIFY, { token })).statusCode, 200, 'the same link again: 200, the address is verified (idempotent)')
      t.equal((await app.db.selectFrom('auth_events').select('type').where('user_id', '=', user.id).where('type', '=', 'email_changed').execute()).length, 1, 'and no second change')
      expectProblem(t, await post(app, VERIFY, { token: tokenIn(user.verification) }), 400, 'INVALID_TOKEN')
      t.equal((await me(user.accessToken)).email, newEmail, 'an old link for the old address changes nothing')
    })

    t.test('a wrong password is 401 and mails nothing', async (t) => {
      const user = await newUser()
      const newEmail = uniqueEmail('new')
      expectProblem(t, await change(user.accessToken, { new_email: newEmail, password: 'not the right password' }), 401, 'INVALID_CREDENTIALS')
      await app.background.idle()
      t.equal(mailsTo(newEmail).length, 0, 'no mail')
      const rows = await app.db.selectFrom('one_time_tokens').select('token_hash').where('user_id', '=', user.id).where('purpose', '=', 'change_email').execute()
      t.equal(rows.length, 0, 'no token')
    })

    t.test('the same address is 400 SAME_EMAIL', async (t) => {
      const user = await newUser()
      for (const same of [user.email, ` ${user.email.toUpperCase()} `]) {
        expectProblem(t, await change(user.accessToken, { new_email: same, password: GOOD_PASSWORD }), 400, 'SAME_EMAIL')
      }
      await app.background.idle()
      t.equal(mailsTo(user.email).length, 0, 'no mail')
    })

    t.test('an address of another account answers as a free one; its owner is told, nothing is sent that could be used', async (t) => {
      const user = await newUser()
      const other = await newUser('other')
      const taken = await change(user.accessToken, { new_email: other.email.toUpperCase(), password: GOOD_PASSWORD })
      clock = new Date(clock.getTime() + 61_000) // past the resend interval
      const free = await change(user.accessToken, { new_email: uniqueEmail('free'), password: GOOD_PASSWORD })
      expectIdentical(t, taken, free, 'taken and free address')
      t.equal(taken.statusCode, 202)
      await app.background.idle()
      const notice = await box.next(other.email)
      t.equal(notice.subject, 'Someone tried to move an account to your address', 'the owner of the taken address is told')
      t.notMatch(notice.text, /token=/, 'with no link')
      t.equal(mailsTo(other.email).length, 0, 'and nothing else')
      t.equal((await me(user.accessToken)).email, user.email, 'unchanged')
    })

    t.test('one change-of-address mail per resend interval', async (t) => {
      const user = await newUser()
      const first = uniqueEmail('first')
      const second = uniqueEmail('second')
      t.equal((await change(user.accessToken, { new_email: first, password: GOOD_PASSWORD })).statusCode, 202)
      t.equal((await change(user.accessToken, { new_email: second, password: GOOD_PASSWORD })).statusCode, 202, 'the second answers alike')
      await app.background.idle()
      t.ok(tokenIn(await box.next(first)), 'the first is mailed')
      t.equal(mailsTo(second).length, 0, 'the second, within the interval, is not')
    })

    t.test('plain addresses only: a display name, brackets, lists or line breaks are 400', async (t) => {
      const user = await newUser()
      for (const bad of ['x<victim@example.com>', 'Victim <victim@example.com>', 'a@example.com, b@example.com', 'a@example.com;b@example.com', '"a"@example.com', 'a b@example.com', 'a@example.com\r\nBcc: b@example.com', 'a\uff1cb@example.com']) {
        expectProblem(t, await change(user.accessToken, { new_email: bad, password: GOOD_PASSWORD }), 400, 'VALIDATION_FAILED')
      }
      await app.background.idle()
      t.equal(box.received.filter((m) => /victim|b@example/.test(m.to)).length, 0, 'nothing mailed')
    })

    t.test('wrong passwords are throttled per account, with sign-in: the 6th is 429', async (t) => {
      const user = await newUser()
      for (let i = 1; i <= 5; i++) {
        expectProblem(t, await change(user.accessToken, { new_email: uniqueEmail(), password: `wrong password ${i}` }), 401, 'INVALID_CREDENTIALS')
      }
      expectProblem(t, await change(user.accessToken, { new_email: uniqueEmail(), password: GOOD_PASSWORD }), 429, 'RATE_LIMITED')
      expectProblem(t, await login(app, user.email), 429, 'RATE_LIMITED')
    })

    for (const [what, act] of [
      ['a password reset', async (app: FastifyInstance, user: { email: string, accessToken: string }) => {
        await post(app, '/api/v1/auth/password/forgot', { email: user.email })
        await app.background.idle()
        const reset = await post(app, '/api/v1/auth/password/reset', { token: tokenIn(await box.next(user.email)), new_password: 'the owner takes it back' })
        if (reset.statusCode !== 204) throw new Error(`reset failed: ${reset.statusCode} ${reset.body}`)
      }],
      ['a password change', async (app: FastifyInstance, user: { accessToken: string }) => {
        const res = await post(app, '/api/v1/auth/password/change', { current_password: GOOD_PASSWORD, new_password: 'the owner takes it back' }, bearer(user.accessToken))
        if (res.statusCode !== 204) throw new Error(`change failed: ${res.statusCode} ${res.body}`)
      }],
      ['ending every session', async (app: FastifyInstance, user: { accessToken: string }) => {
        const res = await app.inject({ method: 'DELETE', url: '/api/v1/users/me/sessions', headers: bearer(user.accessToken) })
        if (res.statusCode !== 204) throw new Error(`end all failed: ${res.statusCode} ${res.body}`)
      }]
    ] as const) {
      t.test(`a pending change of address dies with ${what}`, async (t) => {
        const user = await newUser()
        const attacker = uniqueEmail('attacker')
        // Someone who knew the password asks to move the account to their address...
        t.equal((await change(user.accessToken, { new_email: attacker, password: GOOD_PASSWORD })).statusCode, 202)
        await app.background.idle()
        const token = tokenIn(await box.next(attacker))
        // ...the owner secures the account...
        clock = new Date(clock.getTime() + 61_000)
        await act(app, user)
        // ...and the old link changes nothing.
        expectProblem(t, await post(app, VERIFY, { token }), 400, 'INVALID_TOKEN')
        t.same((await accountsWith(attacker)).length, 0, 'the attacker\'s address has no account')
        const row = await app.db.selectFrom('users').select('email').where('id', '=', user.id).executeTakeFirstOrThrow()
        t.equal(row.email, user.email, 'the account keeps its address')
      })
    }

    t.test('the new address taken between request and verify: verify is 409 EMAIL_TAKEN', async (t) => {
      const user = await newUser()
      const newEmail = uniqueEmail('contested')
      t.equal((await change(user.accessToken, { new_email: newEmail, password: GOOD_PASSWORD })).statusCode, 202)
      await app.background.idle()
      const token = tokenIn(await box.next(newEmail))

      const other = await post(app, SIGNUP, { email: newEmail, password: GOOD_PASSWORD })
      t.equal(other.statusCode, 201, 'someone else signs up with it meanwhile')
      await app.background.idle()
      await box.next(newEmail)

      expectProblem(t, await post(app, VERIFY, { token }), 409, 'EMAIL_TAKEN')
      t.equal((await me(user.accessToken)).email, user.email, 'the account keeps its address')
      const owners = await accountsWith(newEmail)
      t.same(owners.map((o) => o.id), [json(other).user.id], 'the address stays with the other account')
      await app.background.idle()
      t.equal(mailsTo(user.email).length, 0, 'the old address is not told of a change that did not happen')
    })

    t.test('a newer request voids the older; the token expires', async (t) => {
      const user = await newUser()
      const first = uniqueEmail('first')
      const second = uniqueEmail('second')
      t.equal((await change(user.accessToken, { new_email: first, password: GOOD_PASSWORD })).statusCode, 202)
      clock = new Date(clock.getTime() + 61_000) // past the resend interval
      t.equal((await change(user.accessToken, { new_email: second, password: GOOD_PASSWORD })).statusCode, 202)
      await app.background.idle()
      const firstToken = tokenIn(await box.next(first))
      const secondToken = tokenIn(await box.next(second))
      expectProblem(t, await post(app, VERIFY, { token: firstToken }), 400, 'INVALID_TOKEN')
      t.equal((await me(user.accessToken)).email, user.email, 'the voided request changed nothing')

      clock = new Date(clock.getTime() + (TTL + 1) * 1000)
      expectProblem(t, await post(app, VERIFY, { token: secondToken }), 400, 'INVALID_TOKEN')
      const row = await app.db.selectFrom('users').select('email').where('id', '=', user.id).executeTakeFirstOrThrow()
      t.equal(row.email, user.email, 'the expired request changed nothing')
    })

    t.test('bad requests', async (t) => {
      const user = await newUser()
      expectProblem(t, await post(app, CHANGE, { new_email: uniqueEmail(), password: GOOD_PASSWORD }), 401, 'AUTHENTICATION_REQUIRED')
      expectProblem(t, await post(app, CHANGE, { new_email: uniqueEmail(), password: GOOD_PASSWORD }, { authorization: 'Bearer not.a.jwt' }), 401, 'INVALID_ACCESS_TOKEN')
      expectProblem(t, await change(user.accessToken, { new_email: 'not an address', password: GOOD_PASSWORD }), 400, 'VALIDATION_FAILED')
      expectProblem(t, await change(user.accessToken, { new_email: uniqueEmail() }), 400, 'VALIDATION_FAILED')
      expectProblem(t, await change(user.accessToken, { password: GOOD_PASSWORD }), 400, 'VALIDATION_FAILED')
      expectProblem(t, await change(user.accessToken, { new_email: uniqueEmail(), password: GOOD_PASSWORD, email_verified: true }), 400, 'VALIDATION_FAILED')
      t.equal((await me(user.accessToken)).email, user.email, 'unchanged')
    })
  })
}
