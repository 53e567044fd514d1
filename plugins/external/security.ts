import cors from '@fastify/cors'
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import helmet, { type HelmetOptions } from 'helmet'
import secureJson from 'secure-json-parse'
import { Errors } from '../../services/errors.js'
import { API_SECURITY_HEADERS } from './errors.js'
import { withProblems } from '../../schemas/problem.js'

function forbiddenKey (key: string): FastifyError {
  return Object.assign(new Error(`/body/${key} is not an accepted field`), {
    code: 'FST_ERR_VALIDATION',
    name: 'ValidationError',
    statusCode: 400,
    validationContext: 'body' as const,
    validation: [{ keyword: 'additionalProperties', instancePath: '', schemaPath: '#', params: { additionalProperty: key }, message: 'is not an accepted field' }]
  })
}

/** For the docs pages (HTML): helmet's whole set, with a policy that lets Swagger UI and ReDoc work. */
const DOCS_HELMET_OPTIONS: HelmetOptions = {
  frameguard: { action: 'deny' },
  contentSecurityPolicy: {
    directives: {
      defaultSrc: ["'self'"],
      scriptSrc: ["'self'"],
      // Swagger UI and ReDoc set styles inline; ReDoc renders in a blob worker.
      styleSrc: ["'self'", "'unsafe-inline'"],
      imgSrc: ["'self'", 'data:'],
      workerSrc: ["'self'", 'blob:'],
      fontSrc: ["'self'", 'data:'],
      frameAncestors: ["'none'"],
      formAction: ["'self'"],
      upgradeInsecureRequests: null
    }
  }
}

/**
 * The headers helmet sets, worked out once. They are the same for every
 * response (no per-request nonces), and @fastify/helmet would rebuild the
 * whole helmet middleware, CSP parsing included, for each request.
 */
function helmetHeaders (options: HelmetOptions): Record<string, string> {
  const headers: Record<string, string> = {}
  const response = { setHeader: (name: string, value: string) => { headers[name.toLowerCase()] = value }, removeHeader: () => {} }
  helmet(options)({} as never, response as never, () => {})
  return headers
}

const list = (value: string) => value.split(',').map((s) => s.trim()).filter(Boolean)

const DOCS_PATH = /^\/(docs|redoc)(\/|$)/

/** A Host header's name, lower-cased, without the port: `API.example.com:8443` → `api.example.com`, `[::1]:8000` → `[::1]`. */
function hostName (host = ''): string {
  const lower = host.toLowerCase()
  return lower.startsWith('[') ? lower.slice(0, lower.indexOf(']') + 1) : lower.split(':')[0]
}

function dropPragmaIfCacheable (_request: FastifyRequest, reply: FastifyReply, payload: unknown, done: (err: null, payload: unknown) => void) {
  if (reply.getHeader('cache-control') !== 'no-store') reply.removeHeader('pragma')
  done(null, payload)
}

/** Security headers, the Host allow-list, CORS, and JSON as the only body type. */
export default fp(async function security (fastify) {
  const { config } = fastify

  // First hook of all, so every answer carries them, whichever hook refuses it. A callback,
  // not a promise, as every per-request hook here: it runs on every request, token checks included.
  // The headers that only matter to HTML pages (COOP, CORP, Referrer-Policy, X-XSS-Protection…) go on the docs pages only.
  fastify.addHook('onRequest', (request, reply, done) => {
    reply.headers(API_SECURITY_HEADERS).header('x-request-id', request.id)
    done()
  })
  const docsHeaders = helmetHeaders(DOCS_HELMET_OPTIONS)
  fastify.addHook('onRoute', (route) => {
    // For the document: any route refuses a Host that ALLOWED_HOSTS does not list (documented whatever it lists).
    route.schema = withProblems(route.schema, [Errors.InvalidHost])
    // Only a GET can be made cacheable (the JWKS, the docs' files): there, Pragma must not say otherwise.
    if ([route.method].flat().some((m) => m === 'GET' || m === 'HEAD')) route.onSend = [...[route.onSend ?? []].flat(), dropPragmaIfCacheable]
    if (!DOCS_PATH.test(route.url)) return
    const setDocsHeaders = (_request: FastifyRequest, reply: FastifyReply, done: () => void) => { reply.headers(docsHeaders); done() }
    route.onRequest = [setDocsHeaders, ...[route.onRequest ?? []].flat()]
  })

  const allowedHosts = list(config.ALLOWED_HOSTS).map((h) => h.toLowerCase())
  if (!allowedHosts.includes('*')) {
    const hosts = new Set(allowedHosts)
    fastify.addHook('onRequest', async (request) => {
      // The Host header itself: request.hostname would take a trusted proxy's X-Forwarded-Host, which its client may have written.
      if (!hosts.has(hostName(request.headers.host))) throw new Errors.InvalidHost()
    })
  }

  // No origins: no CORS headers at all, and no hook to run on every request to decide so.
  const origins = list(config.CORS_ORIGINS)
  if (origins.length > 0) {
    await fastify.register(cors, {
      origin: origins.includes('*') ? '*' : origins,
      methods: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'],
      allowedHeaders: ['Authorization', 'Content-Type', 'X-Request-Id'],
      exposedHeaders: ['X-Request-Id', 'WWW-Authenticate', 'Retry-After', 'RateLimit-Limit', 'RateLimit-Remaining', 'RateLimit-Reset'],
      maxAge: 600
    })
  }

  // JSON is the only contract: a text/plain body is a 415, not a string that fails validation.
  fastify.removeContentTypeParser(['text/plain', 'application/json'])
  fastify.addContentTypeParser('application/json', { parseAs: 'string' }, (_request, body, done) => {
    // An empty body sent as JSON (fetch with the header and no body) is an empty object: the schema says what is missing.
    if ((body as string).trim() === '') return done(null, {})
    try {
      done(null, secureJson.parse(body as string, undefined, { protoAction: 'error', constructorAction: 'error' }))
    } catch (err) {
      // `__proto__` and `constructor.prototype` are valid JSON but never an accepted field: say so, as validation does.
      const poisoned = /forbidden (prototype|constructor) property/.test((err as Error).message)
      done(poisoned ? forbiddenKey(/"__proto__"\s*:/.test(body as string) ? '__proto__' : 'constructor') : new Errors.MalformedJson(), undefined)
    }
  })
}, { name: 'security', dependencies: ['config', 'errors'] })
