import { simpleParser, type ParsedMail } from 'mailparser'
import { SMTPServer } from 'smtp-server'
import type { Test } from 'tap'

export interface ReceivedMail {
  to: string
  /** The envelope's recipients (RCPT TO): where the mail really goes. */
  rcpt: string[]
  subject: string
  text: string
  html: string
}

/**
 * A real SMTP server on loopback that keeps every mail it receives.
 * `SMTP_URL` points the service at it; `next(to)` waits for the next mail to an address.
 */
export async function startMailbox (t: Test) {
  const received: ReceivedMail[] = []
  const waiting: Array<{ to: string, resolve: (mail: ReceivedMail) => void }> = []
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS'],
    logger: false,
    onData (stream, session, callback) {
      simpleParser(stream).then((parsed: ParsedMail) => {
        const to = [parsed.to].flat().flatMap((a) => a?.value.map((v) => v.address ?? '') ?? [])[0] ?? ''
        const mail = { to, rcpt: session.envelope.rcptTo.map((r) => r.address), subject: parsed.subject ?? '', text: parsed.text ?? '', html: typeof parsed.html === 'string' ? parsed.html : '' }
        const waiter = waiting.findIndex((w) => w.to === to)
        if (waiter >= 0) waiting.splice(waiter, 1)[0].resolve(mail)
        else received.push(mail)
        callback()
      }, callback)
    }
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  const { port } = server.server.address() as { port: number }

  return {
    url: `smtp://127.0.0.1:${port}`,
    /** Mails received and not yet taken by next(). */
    received,
    /** The next mail to `to` (already received, or the next to arrive; fails after 10 s). */
    next (to: string): Promise<ReceivedMail> {
      const index = received.findIndex((m) => m.to === to)
      if (index >= 0) return Promise.resolve(received.splice(index, 1)[0])
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no mail to ${to} within 10 s`)), 10_000)
        waiting.push({ to, resolve: (mail) => { clearTimeout(timer); resolve(mail) } })
      })
    }
  }
}

/** The token in a mail's link (`…?token=<token>`). */
export function tokenIn (mail: ReceivedMail): string {
  const match = /(?:[?&]token=|this token: )([A-Za-z0-9_-]+)/.exec(mail.text)
  if (!match) throw new Error(`no token in mail "${mail.subject}"`)
  return match[1]
}
