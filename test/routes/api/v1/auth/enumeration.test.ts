import { randomUUID } from 'node:crypto'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import t, { type Test } from 'tap'
import { build, databases, GOOD_PASSWORD, json, uniqueEmail } from '../../../../helper.js'
import { startMailbox, tokenIn } from '../../../../mailbox.js'

const SIGNUP = '/api/v1/auth/signup'
const LOGIN = '/api/v1/auth/login'
const FORGOT = '/api/v1/auth/password/forgot'
const RESEND = '/api/v1/auth/email/resend'
const VERIFY = '/api/v1/auth/email/verify'
const WRONG_PASSWORD = 'not the right password at all'

let clients = 0
/**
 * A client address no other request here uses. The service's defaults stay
 * on (rate limits included), and each request starts from a fresh per-client
 * state, so whatever differs between two answers is down to the address
 * asked about.
 */
function nextClient (): string {
  clients += 1
  return `10.${(clients >> 16) & 255}.${(clients >> 8) & 255}.${clients & 255}`
}

/**
 * Posts with a request id of our choosing, so that two answers that name
 * their request id can still be compared to the byte.
 */
const post = (app: FastifyInstance, url: string, payload: Record<string, unknown>, requestId?: string) =>
  app.inject({ method: 'POST', url, payload, remoteAddress: nextClient(), headers: requestId ? { 'x-request-id': requestId } : {} })

/** Every header but the date, which moves with the clock. */
function headersOf (res: LightMyRequestResponse) {
  const headers: Record<string, unknown> = { ...res.headers }
  delete headers.date
  return headers
}

/** Sends `payload` for a known and for an unknown case, with the same request id, and asserts the answers are identical. */
async function expectIndistinguishable (t: Test, app: FastifyInstance, url: string, known: Record<string, unknown>, unknown: Record<string, unknown>, what: string) {
  const requestId = `enum-${randomUUID()}`
  const a = await post(app, url, known, requestId)
  const b = await post(app, url, unknown, requestId)
  t.equal(a.headers['x-request-id'], requestId, `${what}: our request id is used`)
  t.equal(a.statusCode, b.statusCode, `${what}: same status (${a.statusCode})`)
  t.equal(a.body, b.body, `${what}: byte-identical body`)
  t.same(headersOf(a), headersOf(b), `${what}: same header names and values (date aside)`)
  t.same(Object.keys(a.headers).sort(), Object.keys(b.headers).sort(), `${what}: same header names`)
  return a
}

const box = await startMailbox(t)

/** Mails to `to` received and not yet taken (call after app.background.idle()). */
const mailsTo = (to: string) => box.received.filter((m) => m.to === to)

for (const db of databases) {
  t.test(db.name, async (t) => {
    t.test('REQUIRE_EMAIL_VERIFICATION=false', async (t) => {
      const app = await build(t, { env: { DATABASE_URL: db.url, SMTP_URL: box.url } })

      async function account (verified: boolean) {
        const email = uniqueEmail('known')
        const res = await post(app, SIGNUP, { email, password: GOOD_PASSWORD })
        if (res.statusCode !== 201) throw new Error(`signup failed: ${res.statusCode} ${res.body}`)
        await app.background.idle()
        const mail = await box.next(email)
        if (verified && (await post(app, VERIFY, { token: tokenIn(mail) })).statusCode !== 200) throw new Error('verify failed')
        return { email, id: json(res).user.id as string }
      }
      const verified = await account(true)
      const unverified = await account(false)
      const disabled = await account(true)
      await app.db.updateTable('users').set({ disabled: 1 }).where('id', '=', disabled.id).execute()

      t.test('login: a wrong password and an unknown account answer alike', async (t) => {
        const res = await expectIndistinguishable(t, app, LOGIN,
          { email: verified.email, password: WRONG_PASSWORD }, { email: uniqueEmail('nobody'), password: WRONG_PASSWORD }, 'wrong password vs unknown')
        t.equal(res.statusCode, 401)
        t.equal(json(res).code, 'INVALID_CREDENTIALS')
        await expectIndistinguishable(t, app, LOGIN,
          { email: unverified.email, password: WRONG_PASSWORD }, { email: uniqueEmail('nobody'), password: WRONG_PASSWORD }, 'unverified account vs unknown')
        await expectIndistinguishable(t, app, LOGIN,
          { email: disabled.email, password: GOOD_PASSWORD }, { email: uniqueEmail('nobody'), password: GOOD_PASSWORD }, 'disabled account, right password, vs unknown')
        await expectIndistinguishable(t, app, LOGIN,
          { username: verified.email.toUpperCase(), password: WRONG_PASSWORD }, { username: uniqueEmail('nobody'), password: WRONG_PASSWORD }, 'address given as username')
        t.equal((await post(app, LOGIN, { email: verified.email, password: GOOD_PASSWORD })).statusCode, 200, 'the known account is real')
      })

      t.test('forgot: known and unknown addresses answer alike', async (t) => {
        const unknown = uniqueEmail('nobody')
        const res = await expectIndistinguishable(t, app, FORGOT, { email: verified.email }, { email: unknown }, 'verified vs unknown')
        t.equal(res.statusCode, 202)
        await expectIndistinguishable(t, app, FORGOT, { email: unverified.email }, { email: uniqueEmail('nobody') }, 'unverified vs unknown')
        await expectIndistinguishable(t, app, FORGOT, { email: disabled.email }, { email: uniqueEmail('nobody') }, 'disabled vs unknown')
        await app.background.idle()
        t.equal(mailsTo(verified.email).length, 1, 'the known address was really mailed')
        t.equal(mailsTo(unknown).length, 0, 'the unknown one was not')
        t.equal(mailsTo(disabled.email).length, 0, 'nor the disabled one')
      })

      t.test('resend: known and unknown addresses answer alike', async (t) => {
        const unknown = uniqueEmail('nobody')
        const fresh = await account(false)
        const res = await expectIndistinguishable(t, app, RESEND, { email: unverified.email }, { email: unknown }, 'unverified vs unknown')
        t.equal(res.statusCode, 202)
        await expectIndistinguishable(t, app, RESEND, { email: verified.email }, { email: uniqueEmail('nobody') }, 'verified vs unknown')
        await expectIndistinguishable(t, app, RESEND, { email: fresh.email }, { email: uniqueEmail('nobody') }, 'just signed up (throttled) vs unknown')
        await expectIndistinguishable(t, app, RESEND, { email: disabled.email }, { email: uniqueEmail('nobody') }, 'disabled vs unknown')
      })
    })

    t.test('REQUIRE_EMAIL_VERIFICATION=true', async (t) => {
      const app = await build(t, { env: { DATABASE_URL: db.url, SMTP_URL: box.url, REQUIRE_EMAIL_VERIFICATION: 'true' } })
      const taken = uniqueEmail('taken')
      t.equal((await post(app, SIGNUP, { email: taken, password: GOOD_PASSWORD })).statusCode, 202)
      await app.background.idle()
      await box.next(taken)

      t.test('signup: a new and a taken address answer alike', async (t) => {
        const fresh = uniqueEmail('fresh')
        const res = await expectIndistinguishable(t, app, SIGNUP,
          { email: taken, password: 'another good passphrase' }, { email: fresh, password: 'another good passphrase' }, 'taken vs new')
        t.equal(res.statusCode, 202)
        await expectIndistinguishable(t, app, SIGNUP,
          { email: ` ${taken.toUpperCase()} `, password: GOOD_PASSWORD }, { email: uniqueEmail('fresh'), password: GOOD_PASSWORD }, 'taken in another case vs new')
        await app.background.idle()
        t.equal(mailsTo(taken).length, 2, 'the owner was told twice')
        t.equal((await app.db.selectFrom('users').select('id').where('email', '=', taken).execute()).length, 1, 'one account with the taken address')
        t.equal((await app.db.selectFrom('users').select('id').where('email', '=', fresh).execute()).length, 1, 'the new address got its account')
      })

      t.test('signup with a taken username: the answer does not depend on whether the address is taken (either index may be checked first)', async (t) => {
        const username = `u${randomUUID().replaceAll('-', '').slice(0, 20)}`
        t.equal((await post(app, SIGNUP, { email: uniqueEmail('holder'), username, password: GOOD_PASSWORD })).statusCode, 202, 'someone holds the username')
        const res = await expectIndistinguishable(t, app, SIGNUP,
          { email: taken, username, password: GOOD_PASSWORD }, { email: uniqueEmail('fresh'), username, password: GOOD_PASSWORD }, 'taken username with a taken vs a new address')
        t.equal(json(res).code, 'USERNAME_TAKEN')
      })

      t.test('change of address: a taken and a free address answer alike', async (t) => {
        const email = uniqueEmail('mover')
        t.equal((await post(app, SIGNUP, { email, password: GOOD_PASSWORD })).statusCode, 202)
        await app.background.idle()
        t.equal((await post(app, VERIFY, { token: tokenIn(await box.next(email)) })).statusCode, 200)
        const { access_token: accessToken } = json(await post(app, LOGIN, { email, password: GOOD_PASSWORD }))
        const requestId = `enum-${randomUUID()}`
        const change = (newEmail: string) => app.inject({ method: 'POST', url: '/api/v1/users/me/email', headers: { authorization: `Bearer ${accessToken}`, 'x-request-id': requestId }, payload: { new_email: newEmail, password: GOOD_PASSWORD } })
        const a = await change(taken)
        await app.db.updateTable('one_time_tokens').set({ created_at: '2000-01-01T00:00:00.000Z' }).where('email', '=', taken).execute() // past the resend interval
        const b = await change(uniqueEmail('free'))
        t.equal(a.statusCode, 202)
        t.equal(a.body, b.body, 'byte-identical body')
        t.same(headersOf(a), headersOf(b), 'same headers')
      })

      t.test('login: an unverified account with a wrong password and an unknown account answer alike', async (t) => {
        const res = await expectIndistinguishable(t, app, LOGIN,
          { email: taken, password: WRONG_PASSWORD }, { email: uniqueEmail('nobody'), password: WRONG_PASSWORD }, 'unverified, wrong password vs unknown')
        t.equal(json(res).code, 'INVALID_CREDENTIALS')
      })
    })
  })
}
