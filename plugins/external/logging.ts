import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { clientIp } from '../../services/clients.js'

type Level = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace'
type Bindings = Record<string, unknown>
/** Fastify's loggers are pino's, which can tell whether a level is written. */
type Parent = FastifyBaseLogger & { isLevelEnabled: (level: string) => boolean }

/**
 * A request's logger (the server option `childLoggerFactory`). Fastify would
 * make a pino child for every request, which costs more than the rest of a
 * token check; this one writes through the parent, with the request's
 * bindings (its `request_id`) merged into each line, so the lines are the
 * same and most requests, which log one line at most, make no child.
 */
class RequestLogger {
  constructor (private readonly parent: Parent, private readonly bindings: Bindings) {}

  get level () { return this.parent.level }
  set level (level: string) { this.parent.level = level }

  child (bindings: Bindings, options?: object) { return this.parent.child({ ...this.bindings, ...bindings }, options) }

  private write (level: Level, first: unknown, rest: unknown[]) {
    if (!this.parent.isLevelEnabled(level)) return
    const log = this.parent[level] as (obj: object, ...args: unknown[]) => void
    // pino's own forms: (object, message?), (error, message?) and (message, ...interpolation).
    if (first instanceof Error) log.call(this.parent, { ...this.bindings, err: first }, ...rest)
    else if (typeof first === 'object' && first !== null) log.call(this.parent, { ...this.bindings, ...first }, ...rest)
    else log.call(this.parent, this.bindings, first, ...rest)
  }

  fatal (first: unknown, ...rest: unknown[]) { this.write('fatal', first, rest) }
  error (first: unknown, ...rest: unknown[]) { this.write('error', first, rest) }
  warn (first: unknown, ...rest: unknown[]) { this.write('warn', first, rest) }
  info (first: unknown, ...rest: unknown[]) { this.write('info', first, rest) }
  debug (first: unknown, ...rest: unknown[]) { this.write('debug', first, rest) }
  trace (first: unknown, ...rest: unknown[]) { this.write('trace', first, rest) }
  silent () {}
}

export function requestLogger (parent: FastifyBaseLogger, bindings: Bindings): FastifyBaseLogger {
  return new RequestLogger(parent as Parent, bindings) as unknown as FastifyBaseLogger
}

/** The one log line of a request: never the raw URL, a body, or a header value. */
export function logRequest (request: FastifyRequest, reply: FastifyReply) {
  request.log.info({
    method: request.method,
    route: request.routeOptions.url ?? null,
    status: reply.statusCode,
    duration_ms: Math.round(reply.elapsedTime * 100) / 100,
    // Set by the service's authentication (plugins/app/authenticate.ts) when the route asked for it.
    user_id: request.auth?.userId ?? null,
    ip: clientIp(request)
  }, 'request')
}

/** One JSON line per request, in place of Fastify's two (turned off in the server options). */
export default fp(async function logging (fastify) {
  // Above info (LOG_LEVEL=warn and up) no request line is written: no hook to decide so on every request.
  if (!(fastify.log as Parent).isLevelEnabled('info')) return
  fastify.addHook('onResponse', (request, reply, done) => {
    logRequest(request, reply)
    done()
  })
}, { name: 'logging' })
