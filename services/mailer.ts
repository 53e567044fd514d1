import type { Background } from './background.js'
import type { Base } from './context.js'
import type { Mail } from './mail-templates.js'

export interface Mailer {
  /** Queues a mail and returns at once; sending, retries and failures happen off the caller's path (counted in auth_mails_total). */
  send: (to: string, mail: Mail) => void
  close: () => void
}

/** ms: to connect, for the greeting, and of silence on an open connection. */
const SMTP_TIMEOUTS = { connectionTimeout: 10_000, greetingTimeout: 10_000, socketTimeout: 30_000 }

/** Waits before each retry: three more tries over about 7 seconds. */
const RETRY_DELAYS_MS = [500, 2000, 5000]

const curlOf = ({ url, body }: NonNullable<Mail['request']>) =>
  `curl -X POST ${url} -H 'content-type: application/json' -d '${JSON.stringify(body)}'`

/** Mail delivery over SMTP_URL; without it, development logs each mail (link included) instead. */
export async function createMailer ({ config, log, background, counted }: Pick<Base, 'config' | 'log'> & {
  background: Background
  /** Told each delivery's outcome. */
  counted: (result: 'sent' | 'failed') => void
}): Promise<Mailer> {
  // Loaded only when there is a server to send to.
  // Bounded waits (nodemailer waits up to 2 minutes to connect and 10 of silence): a hung mail server
  // holds a mail's retries, never the shutdown's or anything else.
  const transport = config.SMTP_URL ? (await import('nodemailer')).default.createTransport({ url: config.SMTP_URL, ...SMTP_TIMEOUTS }) : null
  if (!transport && config.NODE_ENV === 'production') log.warn('SMTP_URL is not set: mails are not sent')

  async function deliver (to: string, { request, ...mail }: Mail) {
    // Development: what the mail asks for, as a command to paste (until an app answers its link).
    if (request && config.NODE_ENV === 'development') log.info({ curl: curlOf(request) }, 'the request this mail asks for')
    if (!transport) {
      // Development: the mail, link included, as one log line a developer can click.
      if (config.NODE_ENV === 'production') log.warn({ mail: { subject: mail.subject } }, 'mail not sent: no SMTP_URL')
      else log.info({ mail: { to, subject: mail.subject, text: mail.text } }, 'mail (not sent: no SMTP_URL)')
      return
    }
    for (let attempt = 0; ; attempt++) {
      try {
        // An address object, never a string nodemailer would parse for names and more recipients.
        await transport.sendMail({ from: config.MAIL_FROM, to: { name: '', address: to }, ...mail })
        counted('sent')
        return
      } catch (err) {
        if (attempt >= RETRY_DELAYS_MS.length) {
          counted('failed')
          log.error({ err, mail: { subject: mail.subject } }, 'mail failed')
          return
        }
        log.warn({ err, attempt: attempt + 1, mail: { subject: mail.subject } }, 'mail failed; retrying')
        await new Promise((resolve) => setTimeout(resolve, RETRY_DELAYS_MS[attempt]))
      }
    }
  }

  return {
    send: (to, mail) => background.run('mail', () => deliver(to, mail)),
    close: () => transport?.close()
  }
}
