import { randomUUID } from 'node:crypto'
import { STATUS_CODES } from 'node:http'
import type { Socket } from 'node:net'
import type { ConnectionError, FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { databaseUnavailable } from '../../db/connect.js'
import FindMyWay, { type HTTPMethod } from 'find-my-way'
import { Errors, Refusals, retryLater } from '../../services/errors.js'
import { logRequest } from './logging.js'
import { withProblems, type ErrorClass, type Problem } from '../../schemas/problem.js'

declare module 'fastify' {
  interface FastifyRequest {
    /** The `code` of the problem this request was answered with, if any (for the metrics). */
    problemCode: string | null
  }
}

/** What a 503 DATABASE_UNAVAILABLE tells the client to wait: a restart or a failover takes seconds. */
const DATABASE_RETRY_AFTER_SECONDS = 2

/** Fastify's own client errors, under the service's codes. */
const FRAMEWORK_CODES: Record<string, string> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'PAYLOAD_TOO_LARGE',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'INVALID_CONTENT_LENGTH',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'MALFORMED_JSON',
  FST_ERR_CTP_INVALID_JSON_BODY: 'MALFORMED_JSON',
  FST_ERR_BAD_URL: 'MALFORMED_URL',
  FST_ERR_MAX_PARAM_LENGTH: 'URI_TOO_LONG',
  FST_ERR_ASYNC_CONSTRAINT: 'BAD_REQUEST'
}

const OWN_CODES = new Set<string>(Object.values(Errors).map((E) => new E().code))

function problem (request: FastifyRequest, status: number, code: string, detail: string, errors?: Problem['errors']): Problem {
  return { type: 'about:blank', title: STATUS_CODES[status] ?? 'Error', status, detail, code, request_id: request.id, ...(errors && { errors }) }
}

/** Turns any error into a problem. Client errors say what went wrong; server errors say nothing of internals. */
/** 401s about the bearer token itself: RFC 6750's `invalid_token`, so a client or gateway that drops the body still knows. */
const BEARER_FAILURES = new Set(['INVALID_ACCESS_TOKEN', 'ACCESS_TOKEN_EXPIRED', 'SESSION_REVOKED'])

/**
 * The WWW-Authenticate of a 401 (RFC 6750). A refused bearer token gets
 * `error="invalid_token"`, the detail, and the problem code as an extension
 * parameter (`code`): ACCESS_TOKEN_EXPIRED means refresh and retry, the
 * others sign in again. No token, or another credential refused (a password,
 * a refresh token), gets the bare challenge with its code.
 */
export function challenge ({ code, detail }: Pick<Problem, 'code' | 'detail'>): string {
  // A quoted-string may hold neither `"` nor `\\`, and RFC 6750 keeps error_description to printable ASCII.
  const quoted = (text: string) => `"${text.replace(/[^\x20-\x7e]|["\\]/g, '')}"`
  if (code === 'AUTHENTICATION_REQUIRED') return 'Bearer realm="auth-service"'
  // RFC 9470 (step-up): the token is good, the session has not passed its second factor.
  if (code === 'MFA_REQUIRED') return `Bearer realm="auth-service", error="insufficient_user_authentication", error_description=${quoted(detail)}, acr_values="aal2", code="MFA_REQUIRED"`
  if (!BEARER_FAILURES.has(code)) return `Bearer realm="auth-service", code=${quoted(code)}`
  return `Bearer realm="auth-service", error="invalid_token", error_description=${quoted(detail)}, code=${quoted(code)}`
}

export function toProblem (error: FastifyError, request: FastifyRequest): Problem {
  if (error.validation) {
    const errors = error.validation.map((v) => {
      const missing = (v.params as { missingProperty?: string })?.missingProperty
      const extra = (v.params as { additionalProperty?: string })?.additionalProperty
      const path = v.instancePath + (missing ? `/${missing}` : extra ? `/${extra}` : '')
      const message = extra ? 'is not an accepted field' : v.keyword === 'pattern' ? 'is not in the accepted format' : v.message ?? 'is not valid'
      return { field: `/${error.validationContext ?? 'body'}${path}`, message }
    })
    const detail = errors.map((e) => `${e.field} ${e.message}`).join('; ')
    return problem(request, 400, 'VALIDATION_FAILED', detail, errors)
  }
  const status = error.statusCode ?? 500
  if ((status >= 400 && status < 500) || (status === 503 && OWN_CODES.has(error.code))) {
    if (OWN_CODES.has(error.code)) return problem(request, status, error.code, error.message)
    const code = FRAMEWORK_CODES[error.code] ?? 'BAD_REQUEST'
    return problem(request, status, code, error.message)
  }
  return problem(request, 500, 'INTERNAL_ERROR', 'Something went wrong on our side. Quote the request id if you report it.')
}

export function sendProblem (reply: FastifyReply, body: Problem, headers: Record<string, string> = {}) {
  reply.request.problemCode = body.code
  return reply.code(body.status).headers({ 'x-request-id': body.request_id, ...headers }).type('application/problem+json').send(body)
}

/**
 * The security headers of every JSON answer, the set OWASP's REST Security
 * Cheat Sheet gives (with Content-Type). plugins/security.ts adds them to
 * every answer; the docs pages get helmet's set for HTML pages on top. Here
 * for the answers made before any hook runs too (router errors).
 */
export const API_SECURITY_HEADERS: Readonly<Record<string, string>> = {
  // Tokens and profiles must not be kept by a browser or a proxy cache (RFC 6749, 5.1); Pragma for HTTP/1.0 caches,
  // which know no Cache-Control. plugins/security.ts drops it where a route makes its answer cacheable (the JWKS).
  'cache-control': 'no-store',
  pragma: 'no-cache',
  'content-security-policy': "default-src 'none'; frame-ancestors 'none'",
  'strict-transport-security': 'max-age=31536000; includeSubDomains',
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY'
}

/**
 * For the server option `frameworkErrors`: router errors (a malformed URL, an
 * over-long parameter) are answered before any hook runs, so this one adds the
 * security headers and writes the request's log line itself.
 */
export function frameworkErrorHandler (error: FastifyError, request: FastifyRequest, reply: FastifyReply) {
  reply.raw.once('finish', () => logRequest(request, reply))
  sendProblem(reply, toProblem(error, request), API_SECURITY_HEADERS)
}

/** Node's HTTP parser and timeout errors, by their code; any other is a 400 BAD_REQUEST. */
const CLIENT_ERRORS: Record<string, { status: number, code: string, detail: string }> = {
  ERR_HTTP_REQUEST_TIMEOUT: { status: 408, code: 'REQUEST_TIMEOUT', detail: 'The request was not received in time (REQUEST_TIMEOUT_SECONDS, HEADERS_TIMEOUT_SECONDS).' },
  HPE_HEADER_OVERFLOW: { status: 431, code: 'HEADERS_TOO_LARGE', detail: 'The request line and headers are larger than the server accepts.' },
  HPE_CHUNK_EXTENSIONS_OVERFLOW: { status: 413, code: 'PAYLOAD_TOO_LARGE', detail: 'The chunk extensions of the body are larger than the server accepts.' }
}
const MALFORMED_HTTP = { status: 400, code: 'BAD_REQUEST', detail: 'The request is not well-formed HTTP/1.1.' }

/**
 * For the server option `clientErrorHandler`: what Node's parser refuses (a
 * malformed request, headers over its limit) or gives up on (a timeout)
 * never reaches Fastify, so the problem is written here, on the socket, with
 * the security headers and a request id of its own. The log line has the
 * code, never the error itself: its `rawPacket` holds the refused bytes,
 * credentials included.
 */
export function clientErrorHandler (this: FastifyInstance, error: ConnectionError, socket: Socket) {
  if (error.code === 'ECONNRESET' || socket.destroyed) return
  const { status, code, detail } = CLIENT_ERRORS[error.code] ?? MALFORMED_HTTP
  const requestId = randomUUID()
  this.log.info({ request_id: requestId, status, code, parser_code: error.code, ip: socket.remoteAddress }, 'client error')
  // As Node does: no answer in the middle of another one being written on this socket (keep-alive).
  const inFlight = (socket as Socket & { _httpMessage?: { headersSent: boolean } })._httpMessage
  if (socket.writable && !inFlight?.headersSent) {
    const title = STATUS_CODES[status]!
    const body = JSON.stringify({ type: 'about:blank', title, status, detail, code, request_id: requestId } satisfies Problem)
    const headers = { ...API_SECURITY_HEADERS, 'content-type': 'application/problem+json', 'content-length': Buffer.byteLength(body), 'x-request-id': requestId, connection: 'close' }
    socket.write(`HTTP/1.1 ${status} ${title}\r\n${Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`).join('')}\r\n${body}`)
  }
  socket.destroy(error)
}

const METHODS: HTTPMethod[] = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']

/** The methods whose requests' bodies Fastify reads: JSON only (plugins/external/security.ts), within BODY_LIMIT_BYTES. */
const BODY_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'])

/**
 * What the framework may answer on a route, for the document: the last
 * resort; its input refused by a schema; a body refused by the parser (any
 * method that has one, whether or not the route reads it: the parser runs
 * first); a path parameter over the router's limit. Not here, as no route's
 * own: 404 NOT_FOUND, 405 METHOD_NOT_ALLOWED, 400 MALFORMED_URL and what
 * Node's parser refuses (plugins/external/docs.ts describes them once).
 */
function frameworkRefusals (route: { method: string | string[], url: string, schema?: { body?: unknown, querystring?: unknown, params?: unknown } }): ErrorClass[] {
  const body = [route.method].flat().some((method) => BODY_METHODS.has(method))
  const input = body || route.schema?.body !== undefined || route.schema?.querystring !== undefined || route.schema?.params !== undefined
  return [
    Refusals.InternalError,
    ...(input ? [Refusals.ValidationFailed] : []),
    ...(body ? [Errors.MalformedJson, Refusals.InvalidContentLength, Refusals.PayloadTooLarge, Refusals.UnsupportedMediaType] : []),
    ...(route.url.includes(':') ? [Refusals.UriTooLong] : [])
  ]
}

export default fp(async function errors (fastify) {
  fastify.decorateRequest('problemCode', null)

  // The document: each route says what the framework may answer on it (the route and the other plugins add theirs).
  fastify.addHook('onRoute', (route) => {
    route.schema = withProblems(route.schema, frameworkRefusals(route))
  })

  // A router of every route's methods, only to tell 405 from 404.
  const methods = FindMyWay()
  fastify.addHook('onRoute', (route) => {
    if (route.url.endsWith('*')) return // catch-alls (CORS preflight) would match every path
    for (const method of [route.method].flat()) {
      if (METHODS.includes(method as HTTPMethod) && !methods.hasRoute(method as HTTPMethod, route.url)) {
        methods.on(method as HTTPMethod, route.url, () => {})
      }
    }
  })

  fastify.setErrorHandler(function (thrown: FastifyError, request, reply) {
    // The database away (restarting, failing over, frozen past the timeout): a 503 the client may retry, not a 500.
    const error: FastifyError = databaseUnavailable(thrown) ? retryLater('DatabaseUnavailable', DATABASE_RETRY_AFTER_SECONDS) : thrown
    if (error !== thrown) request.log.warn({ err: { message: thrown.message, code: thrown.code } }, 'database unavailable')
    const body = toProblem(error, request)
    if (body.status >= 500) request.log.error({ err: error }, 'request failed')
    else request.log.info({ code: body.code, status: body.status }, 'request refused')
    const headers: Record<string, string> = body.status === 401 ? { 'www-authenticate': challenge(body) } : {}
    const retryAfter = (error as { retryAfter?: number }).retryAfter
    if (retryAfter) headers['retry-after'] = String(retryAfter)
    return sendProblem(reply, body, headers)
  })

  fastify.setNotFoundHandler(function (request, reply) {
    const path = request.url.split('?')[0]
    const shown = path.length > 200 ? `${path.slice(0, 200)}…` : path
    const allowed = METHODS.filter((m) => methods.find(m, path) !== null)
    if (allowed.length > 0) {
      return sendProblem(reply, problem(request, 405, 'METHOD_NOT_ALLOWED', `${request.method} is not allowed here; use ${allowed.join(', ')}.`), { allow: allowed.join(', ') })
    }
    return sendProblem(reply, problem(request, 404, 'NOT_FOUND', `No route ${request.method} ${shown}.`))
  })
}, { name: 'errors', dependencies: ['config'] })
