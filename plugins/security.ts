import cors from '@fastify/cors'
import type { FastifyError } from 'fastify'
import fp from 'fastify-plugin'
import helmet, { type HelmetOptions } from 'helmet'
import secureJson from 'secure-json-parse'
import { Errors } from './errors.js'

function forbiddenKey (key: string): FastifyError {
  return Object.assign(new Error(`/body/${key} is not an accepted field`), {
    code: 'FST_ERR_VALIDATION',
    name: 'ValidationError',
    statusCode: 400,
    validationContext: 'body' as const,
    validation: [{ keyword: 'additionalProperties', instancePath: '', schemaPath: '#', params: { additionalProperty: key }, message: 'is not an accepted field' }]
  })
}

const HELMET_OPTIONS: HelmetOptions = {
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
 * whole helmet middleware, CSP parsing included, for each request: a tenth
 * of the CPU of a token check.
 */
function helmetHeaders (options: HelmetOptions): Record<string, string> {
  const headers: Record<string, string> = {}
  const response = { setHeader: (name: string, value: string) => { headers[name.toLowerCase()] = value }, removeHeader: () => {} }
  helmet(options)({} as never, response as never, () => {})
  return headers
}

const list = (value: string) => value.split(',').map((s) => s.trim()).filter(Boolean)

/** Security headers, the Host allow-list, CORS, and JSON as the only body type. */
export default fp(async function security (fastify) {
  const { config } = fastify

  const securityHeaders = helmetHeaders(HELMET_OPTIONS)
  fastify.addHook('onRequest', (_request, reply, done) => {
    reply.headers(securityHeaders)
    done()
  })

  const allowedHosts = list(config.ALLOWED_HOSTS).map((h) => h.toLowerCase())
  if (!allowedHosts.includes('*')) {
    const hosts = new Set(allowedHosts)
    fastify.addHook('onRequest', async (request) => {
      // request.hostname is the Host header (or a trusted proxy's X-Forwarded-Host) without the port.
      if (!hosts.has(request.hostname.toLowerCase())) throw new Errors.InvalidHost()
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
    try {
      done(null, secureJson.parse(body as string, undefined, { protoAction: 'error', constructorAction: 'error' }))
    } catch (err) {
      // `__proto__` and `constructor.prototype` are valid JSON but never an accepted field: say so, as validation does.
      const poisoned = /forbidden (prototype|constructor) property/.test((err as Error).message)
      done(poisoned ? forbiddenKey(/"__proto__"\s*:/.test(body as string) ? '__proto__' : 'constructor') : new Errors.MalformedJson(), undefined)
    }
  })
}, { name: 'security', dependencies: ['config', 'errors'] })
