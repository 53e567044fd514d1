import { randomUUID } from 'node:crypto'
import t from 'tap'
import { build, databases, expectProblem, GOOD_PASSWORD, json } from '../../../../helper.js'
import { startMailbox } from '../../../../mailbox.js'

/** What a mailer could read as a name, another recipient or a header: each must be refused as an address. */
const NOT_PLAIN = (victim: string) => [
  `x<${victim}>`,
  `Someone <${victim}>`,
  `${victim}, x@example.com`,
  `x@example.com;${victim}`,
  '"x"@example.com',
  'x y@example.com',
  `x@example.com\r\nBcc: ${victim}`,
  `x\uff1c${victim}`, // a full-width < becomes < under NFKC
  '(x)@example.com'
]

const box = await startMailbox(t)

for (const db of databases) {
  t.test(db.name, async (t) => {
    const app = await build(t, { env: { DATABASE_URL: db.url, SMTP_URL: box.url } })
    const tag = randomUUID().slice(0, 8)
    const post = (url: string, payload: Record<string, unknown>) => app.inject({ method: 'POST', url, payload })

    t.test('only a plain addr-spec is an address: signup, login, forgot and resend refuse the rest with 400', async (t) => {
      const victim = `victim-${tag}@example.com`
      for (const bad of NOT_PLAIN(victim)) {
        const body = expectProblem(t, await post('/api/v1/auth/signup', { email: bad, password: GOOD_PASSWORD }), 400, 'VALIDATION_FAILED')
        t.equal(body.errors[0].field, '/body/email', `signup ${JSON.stringify(bad)}: the field is named`)
        expectProblem(t, await post('/api/v1/auth/login', { email: bad, password: GOOD_PASSWORD }), 400, 'VALIDATION_FAILED')
        expectProblem(t, await post('/api/v1/auth/password/forgot', { email: bad }), 400, 'VALIDATION_FAILED')
        expectProblem(t, await post('/api/v1/auth/email/resend', { email: bad }), 400, 'VALIDATION_FAILED')
      }
      await app.background.idle()
      t.equal(box.received.filter((m) => m.rcpt.includes(victim)).length, 0, 'the victim was mailed nothing')
      t.equal((await app.db.selectFrom('users').select('id').where('email', 'like', `%victim-${tag}%`).execute()).length, 0, 'no account stored')
    })

    t.test('checked again after NFKC: a letter whose compatibility form is not an address character is refused', async (t) => {
      // U+013F (L with middle dot) is a letter; NFKC makes it "L" and U+00B7, which is punctuation.
      const body = expectProblem(t, await post('/api/v1/auth/signup', { email: `\u013f-${tag}@example.com`, password: GOOD_PASSWORD }), 400, 'VALIDATION_FAILED')
      t.equal(body.errors[0].field, '/body/email', 'the field is named')
      expectProblem(t, await post('/api/v1/auth/login', { username: `\u013f-${tag}@example.com`, password: GOOD_PASSWORD }), 400, 'VALIDATION_FAILED')
    })

    t.test('one address, one account: composed, decomposed and full-width spellings are the same address', async (t) => {
      const composed = `jos\u00e9-${tag}@example.com`
      const decomposed = `jose\u0301-${tag}@example.com`
      const created = await post('/api/v1/auth/signup', { email: decomposed, password: GOOD_PASSWORD })
      t.equal(created.statusCode, 201)
      t.equal(json(created).user.email, composed, 'stored composed (NFKC)')
      expectProblem(t, await post('/api/v1/auth/signup', { email: composed, password: GOOD_PASSWORD }), 409, 'EMAIL_TAKEN')
      t.equal((await post('/api/v1/auth/login', { email: composed, password: GOOD_PASSWORD })).statusCode, 200, 'signs in with the other spelling')

      const plain = `kate-${tag}@example.com`
      const fullWidth = plain.replace(/[a-z]/g, (c) => String.fromCharCode(c.charCodeAt(0) - 0x61 + 0xff41))
      const kate = await post('/api/v1/auth/signup', { email: fullWidth, password: GOOD_PASSWORD })
      t.equal(kate.statusCode, 201)
      t.equal(json(kate).user.email, plain, 'stored as the plain spelling')
      expectProblem(t, await post('/api/v1/auth/signup', { email: plain, password: GOOD_PASSWORD }), 409, 'EMAIL_TAKEN')
    })

    t.test('a mail goes to exactly the account\'s address', async (t) => {
      const email = `envelope-${tag}@example.com`
      t.equal((await post('/api/v1/auth/signup', { email, password: GOOD_PASSWORD })).statusCode, 201)
      await app.background.idle()
      const mail = await box.next(email)
      t.same(mail.rcpt, [email], 'one envelope recipient')
    })
  })
}
