import fp from 'fastify-plugin'
import type { Mail } from './mail-templates.js'

declare module 'fastify' {
  interface FastifyInstance {
    mailer: Mailer
  }
}

export interface Mailer {
  /** Queues a mail and returns at once; sending, retries and failures happen off the caller's path (counted in auth_mails_total). */
  send: (to: string, mail: Mail) => void
}

/** ms: to connect, for the greeting, and of silence on an open connection. */
const SMTP_TIMEOUTS = { connectionTimeout: 10_000, greetingTimeout: 10_000, socketTimeout: 30_000 }

/** Waits before each retry: three more tries over about 7 seconds. */
const RETRY_DELAYS_MS = [500, 2000, 5000]

export default fp(async function mailer (fastify) {
  const { config } = fastify
  // Loaded only when there is a server to send to.
  // Bounded waits (nodemailer waits up to 2 minutes to connect and 10 of silence): a hung mail server
  // holds a mail's retries, never the shutdown's or anything else.
  const transport = config.SMTP_URL ? (await import('nodemailer')).default.createTransport({ url: config.SMTP_URL, ...SMTP_TIMEOUTS }) : null
  const { mails } = fastify.metrics
  if (!transport && config.NODE_ENV === 'production') fastify.log.warn('SMTP_URL is not set: mails are not sent')

  async function deliver (to: string, mail: Mail) {
    if (!transport) {
      // Development: the mail, link included, as one log line a developer can click.
      if (config.NODE_ENV === 'production') fastify.log.warn({ mail: { subject: mail.subject } }, 'mail not sent: no SMTP_URL')
      else fastify.log.info({ mail: { to, subject: mail.subject, text: mail.text } }, 'mail (not sent: no SMTP_URL)')
      return
    }
    for (let attempt = 0; ; attempt++) {
      try {
        // An address object, never a string nodemailer would parse for names and more recipients.
        await transport.sendMail({ from: config.MAIL_FROM, to: { name: '', address: to }, ...mail })
        mails.inc({ result: 'sent' })
        return
      } catch (err) {
        if (attempt >= RETRY_DELAYS_MS.length) {
          mails.inc({ result: 'failed' })
          fastify.log.error({ err, mail: { subject: mail.subject } }, 'mail failed')
          return
        }
        fastify.log.warn({ err, attempt: attempt + 1, mail: { subject: mail.subject } }, 'mail failed; retrying')
        await new Promise((resolve) => setTimeout(resolve, RETRY_DELAYS_MS[attempt]))
      }
    }
  }

  fastify.decorate('mailer', {
    send: (to, mail) => fastify.background.run('mail', () => deliver(to, mail))
  })

  fastify.addHook('onClose', async () => transport?.close())
}, { name: 'mailer', dependencies: ['config', 'background', 'metrics'] })
