import { Writable } from 'node:stream'
import pino from 'pino'
import t from 'tap'
import { requestLogger } from '../../plugins/external/logging.js'

/** A pino logger like the service's (redaction included) writing to an array, without the time. */
function capture (level = 'info') {
  const lines: Array<Record<string, unknown>> = []
  const stream = new Writable({ write (chunk, _encoding, done) { lines.push(JSON.parse(chunk.toString())); done() } })
  const logger = pino({ level, timestamp: false, base: undefined, redact: { paths: ['*.password', 'password'], censor: '[redacted]' } }, stream)
  return { logger, lines }
}

const bindings = { request_id: 'req-1' }

t.test('a request logger writes the very lines a pino child would', async (t) => {
  const ours = capture()
  const pinos = capture()
  const log = requestLogger(ours.logger, bindings)
  const child = pinos.logger.child(bindings)
  for (const target of [log, child]) {
    target.info({ route: '/x', status: 200 }, 'request')
    target.warn('plain %s', 'message')
    target.error(new Error('boom'), 'failed')
    target.info({ body: { password: 'secret' } }, 'redacted')
    target.debug('not written at info')
    target.child({ job: 'mail' }).info('from a child')
  }
  t.equal(ours.lines.length, 5, 'five lines (debug is below the level)')
  const withoutStack = (lines: Array<Record<string, any>>) => lines.map((l) => (l.err ? { ...l, err: { ...l.err, stack: undefined } } : l))
  t.same(withoutStack(ours.lines), withoutStack(pinos.lines), 'the same lines')
  t.match(ours.lines[0], { request_id: 'req-1', route: '/x', status: 200, msg: 'request' })
  t.match(ours.lines[2], { request_id: 'req-1', err: { message: 'boom', type: 'Error' }, msg: 'failed' }, 'an error is serialised under err')
  t.match(ours.lines[3], { body: { password: '[redacted]' } }, 'redaction holds')
  t.match(ours.lines[4], { request_id: 'req-1', job: 'mail', msg: 'from a child' }, 'a child keeps the request id')
})

t.test('its level is the parent\'s, and nothing is written below it', async (t) => {
  const { logger, lines } = capture('warn')
  const log = requestLogger(logger, bindings)
  t.equal(log.level, 'warn')
  log.info('dropped')
  log.trace('dropped')
  log.fatal('kept')
  log.silent('nothing')
  t.same(lines.map((l) => l.msg), ['kept'])
  log.level = 'info'
  log.info('now kept')
  t.equal(logger.level, 'info', 'setting it sets the parent\'s')
  t.same(lines.map((l) => l.msg), ['kept', 'now kept'])
})
