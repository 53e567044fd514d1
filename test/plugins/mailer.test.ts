import type { FastifyInstance } from 'fastify'
import { simpleParser } from 'mailparser'
import { SMTPServer } from 'smtp-server'
import t, { type Test } from 'tap'
import { ConfigError, loadConfig } from '../../plugins/external/config.js'
import { buildLogged, databases, freePort, GOOD_PASSWORD, json, metricValue, uniqueEmail } from '../helper.js'
import { tokenIn, type ReceivedMail } from '../mailbox.js'

const SIGNUP = '/api/v1/auth/signup'
const VERIFY = '/api/v1/auth/email/verify'
const FORGOT = '/api/v1/auth/password/forgot'
const VERIFY_URL = 'https://app.example.com/verify?token={token}'
const RESET_URL = 'https://app.example.com/reset?token={token}'
const LOGGED = 'mail (not sent: no SMTP_URL)'
const REAL_SECRET = 'a-production-key-encryption-secret-0123456789'
/** Production settings whose signing key is not one stored, under another secret, in a shared test database. */
const PRODUCTION_KEYS = { NODE_ENV: 'production', KEY_ENCRYPTION_SECRET: REAL_SECRET, METRICS_TOKEN: 'a-metrics-token-0123456789', JWT_ALGORITHM: 'HS256', JWT_SECRET: 'a-shared-hs256-secret-for-tests-0123456789' }

/** The service logging at info: `logs()` parsed, `raw()` one JSON line each. */
async function logged (t: Test, env: Record<string, string>) {
  const { fastify, lines, text } = await buildLogged(t, { env })
  return { app: fastify, logs: lines, raw: () => text().split('\n') }
}

/** A port on loopback that nothing listens on. */
/** auth_mails_total, as Prometheus would read it. */
async function mailCounts (app: FastifyInstance) {
  return { sent: await metricValue(app, 'auth_mails_total', { result: 'sent' }), failed: await metricValue(app, 'auth_mails_total', { result: 'failed' }) }
}

/** An SMTP server on loopback that refuses the first `failures` mails with a temporary error, then accepts. */
async function flakyMailServer (t: Test, failures: number) {
  const received: ReceivedMail[] = []
  let attempts = 0
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS'],
    logger: false,
    onData (stream, _session, callback) {
      attempts += 1
      const attempt = attempts
      const chunks: Buffer[] = []
      stream.on('data', (chunk: Buffer) => chunks.push(chunk))
      stream.on('end', () => {
        if (attempt <= failures) {
          callback(Object.assign(new Error('Try again later'), { responseCode: 451 }))
          return
        }
        simpleParser(Buffer.concat(chunks)).then((parsed) => {
          const to = [parsed.to].flat().flatMap((a) => a?.value.map((v) => v.address ?? '') ?? [])[0] ?? ''
          received.push({ to, rcpt: [to], subject: parsed.subject ?? '', text: parsed.text ?? '', html: typeof parsed.html === 'string' ? parsed.html : '' })
          callback()
        }, callback)
      })
    }
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  const { port } = server.server.address() as { port: number }
  return { url: `smtp://127.0.0.1:${port}`, received, attempts: () => attempts }
}

const signup = (app: FastifyInstance, email: string) => app.inject({ method: 'POST', url: SIGNUP, payload: { email, password: GOOD_PASSWORD } })

for (const db of databases) {
  t.test(db.name, async (t) => {
    t.test('with no SMTP_URL in development, each mail is one JSON log line with its link', async (t) => {
      const { app, logs, raw } = await logged(t, { NODE_ENV: 'development', DATABASE_URL: db.url, EMAIL_VERIFY_URL: VERIFY_URL, PASSWORD_RESET_URL: RESET_URL })
      const email = uniqueEmail('logged')
      t.equal((await signup(app, email)).statusCode, 201)
      await app.background.idle()

      const mails = logs().filter((l) => l.msg === LOGGED)
      t.equal(mails.length, 1, 'one line for the one mail')
      const line = mails[0]
      t.equal(line.level, 30, 'at info')
      t.equal(line.mail.to, email)
      t.equal(line.mail.subject, 'Confirm your email address')
      const token = tokenIn(line.mail)
      t.ok(line.mail.text.includes(VERIFY_URL.replace('{token}', token)), 'the text has the link', { text: line.mail.text })
      const rawLine = raw().find((l) => l.includes(LOGGED))!
      t.notOk(rawLine.includes('\n'), 'a single line')
      t.same(JSON.parse(rawLine), line, 'that is JSON')
      t.equal(await metricValue(app, 'auth_mails_total', { result: 'sent' }), 0, 'nothing counted as sent')
      t.equal((await app.inject({ method: 'POST', url: VERIFY, payload: { token } })).statusCode, 200, 'the logged link works')

      t.equal((await app.inject({ method: 'POST', url: FORGOT, payload: { email } })).statusCode, 202)
      await app.background.idle()
      const reset = logs().filter((l) => l.msg === LOGGED).at(-1)!
      t.equal(logs().filter((l) => l.msg === LOGGED).length, 2, 'another line for the reset mail')
      t.equal(reset.mail.subject, 'Reset your password')
      t.ok(reset.mail.text.includes(RESET_URL.replace('{token}', tokenIn(reset.mail))), 'with the reset link')
    })

    t.test('with no SMTP_URL in production, the log says a mail was not sent but holds no link', async (t) => {
      const { app, logs, raw } = await logged(t, { ...PRODUCTION_KEYS, DATABASE_URL: db.url, EMAIL_VERIFY_URL: VERIFY_URL })
      t.ok(logs().some((l) => l.level === 40 && /SMTP_URL/.test(l.msg)), 'a warning at start')
      const email = uniqueEmail('prod')
      t.equal((await signup(app, email)).statusCode, 201)
      await app.background.idle()
      t.equal(logs().filter((l) => l.msg === LOGGED).length, 0, 'no development mail line')
      const warned = logs().filter((l) => l.msg === 'mail not sent: no SMTP_URL')
      t.equal(warned.length, 1, 'one warning for the mail')
      t.equal(warned[0]?.level, 40, 'at warn')
      t.notOk(raw().some((l) => l.includes('token=')), 'no link, so no token, in the log')
    })

    t.test('a failed send does not fail the answer; it is retried, logged and counted', async (t) => {
      const port = await freePort()
      const { app, logs } = await logged(t, { NODE_ENV: 'test', DATABASE_URL: db.url, SMTP_URL: `smtp://127.0.0.1:${port}` })
      const email = uniqueEmail('unsent')
      const res = await signup(app, email)
      t.equal(res.statusCode, 201, 'signup answers 201')
      t.equal(json(res).user.email, email)
      t.same(await mailCounts(app), { sent: 0, failed: 0 }, 'the answer came before the send was given up')
      t.equal(logs().filter((l) => l.msg === 'mail failed').length, 0, 'nothing logged as failed yet')

      await app.background.idle()
      t.same(await mailCounts(app), { sent: 0, failed: 1 }, 'one mail failed in the end')
      const retries = logs().filter((l) => l.msg === 'mail failed; retrying')
      t.same(retries.map((l) => l.attempt), [1, 2, 3], 'three retries, logged')
      const failed = logs().filter((l) => l.msg === 'mail failed')
      t.equal(failed.length, 1, 'one final failure, logged')
      t.equal(failed[0]?.level, 50, 'at error')
      t.equal(failed[0]?.mail.subject, 'Confirm your email address')
      t.ok(failed[0]?.err, 'with the error')
      t.notOk(JSON.stringify(failed[0]).includes('token='), 'without the link')
      const rows = await app.db.selectFrom('users').select('id').where('email', '=', email).execute()
      t.equal(rows.length, 1, 'the account exists')
    })

    t.test('a send refused once is delivered on retry', async (t) => {
      const server = await flakyMailServer(t, 1)
      const { app, logs } = await logged(t, { NODE_ENV: 'test', DATABASE_URL: db.url, SMTP_URL: server.url, EMAIL_VERIFY_URL: VERIFY_URL })
      const email = uniqueEmail('retried')
      t.equal((await signup(app, email)).statusCode, 201)
      await app.background.idle()
      t.equal(server.attempts(), 2, 'two attempts')
      t.same(await mailCounts(app), { sent: 1, failed: 0 }, 'counted once as sent')
      t.equal(logs().filter((l) => l.msg === 'mail failed; retrying').length, 1, 'the refusal is logged')
      t.equal(server.received.length, 1, 'the mail arrives once')
      const mail = server.received[0]
      t.equal(mail?.to, email)
      t.equal(mail?.subject, 'Confirm your email address')
      t.equal((await app.inject({ method: 'POST', url: VERIFY, payload: { token: tokenIn(mail) } })).statusCode, 200, 'its token works')
    })
  })
}

t.test('production with REQUIRE_EMAIL_VERIFICATION needs SMTP_URL', async (t) => {
  let caught: unknown
  try {
    loadConfig({ NODE_ENV: 'production', KEY_ENCRYPTION_SECRET: REAL_SECRET, METRICS_TOKEN: 'a-metrics-token-0123456789', REQUIRE_EMAIL_VERIFICATION: 'true' })
  } catch (err) {
    caught = err
  }
  t.ok(caught instanceof ConfigError, 'throws a ConfigError')
  t.match((caught as Error).message, /SMTP_URL/, 'naming SMTP_URL')
  t.match((caught as Error).message, /REQUIRE_EMAIL_VERIFICATION/, 'and REQUIRE_EMAIL_VERIFICATION')

  const withSmtp = loadConfig({ NODE_ENV: 'production', KEY_ENCRYPTION_SECRET: REAL_SECRET, METRICS_TOKEN: 'a-metrics-token-0123456789', REQUIRE_EMAIL_VERIFICATION: 'true', SMTP_URL: 'smtps://user:pass@mail.example.com:465' })
  t.equal(withSmtp.SMTP_URL, 'smtps://user:pass@mail.example.com:465', 'accepted with SMTP_URL')
  t.equal(loadConfig({ NODE_ENV: 'production', KEY_ENCRYPTION_SECRET: REAL_SECRET, METRICS_TOKEN: 'a-metrics-token-0123456789' }).REQUIRE_EMAIL_VERIFICATION, false, 'accepted without verification')
  t.equal(loadConfig({ NODE_ENV: 'development', REQUIRE_EMAIL_VERIFICATION: 'true' }).REQUIRE_EMAIL_VERIFICATION, true, 'accepted in development (mails go to the log)')
})
