import { randomUUID } from 'node:crypto'
import { join } from 'node:path'
import AutoLoad from '@fastify/autoload'
import AjvCompiler from '@fastify/ajv-compiler'
import fp from 'fastify-plugin'
import { LogController, type FastifyHttpOptions, type FastifyInstance } from 'fastify'
import type { IncomingMessage, Server } from 'node:http'
import type { ConfigPluginOptions } from './plugins/external/config.js'
import { clientErrorHandler, frameworkErrorHandler } from './plugins/external/errors.js'
import { requestLogger } from './plugins/external/logging.js'
import type { Config } from './schemas/config.js'
import { sharedSchemas } from './schemas/common.js'
import { HealthSchema } from './schemas/health.js'
import { SessionSchema } from './schemas/users.js'
import { AdminUserSchema, AuditEventSchema, RoleSchema } from './schemas/admin.js'
import { ProblemSchema } from './schemas/problem.js'
import { MfaEnrolmentRequiredSchema, MfaRequiredSchema } from './schemas/mfa.js'

export type AppOptions = ConfigPluginOptions

const REQUEST_ID = /^[A-Za-z0-9._-]{1,128}$/

/** TRUST_PROXY as Fastify takes it: a boolean, the number of proxy hops to trust, or a list of addresses/CIDRs. */
export function trustProxy (value: string): boolean | string[] | ((address: string, hop: number) => boolean) {
  if (value === 'true' || value === 'false') return value === 'true'
  if (/^\d+$/.test(value)) {
    const hops = Number(value)
    return (_address, hop) => hop < hops
  }
  return value.split(',').map((s) => s.trim()).filter(Boolean)
}

/**
 * Bodies are validated without type coercion (a number is not a password);
 * querystrings and params, which arrive as text, are coerced.
 */
// Made once: each factory keeps a pool of Ajv instances by schemas and options, which a factory per call would not share.
const bodyCompilers = AjvCompiler()
const textCompilers = AjvCompiler()

function buildValidator (externalSchemas: Parameters<ReturnType<typeof AjvCompiler>>[0]) {
  const base = { removeAdditional: false as const, useDefaults: true, allErrors: false }
  const body = bodyCompilers(externalSchemas, { customOptions: { ...base, coerceTypes: false } })
  const text = textCompilers(externalSchemas, { customOptions: { ...base, coerceTypes: 'array' } })
  return (route: Parameters<typeof body>[0]) => refuseUnstorable(route.httpPart === 'body' ? body(route) : text(route))
}

// String.prototype.isWellFormed is Node 20's; TypeScript lists it from lib ES2024 on, and this project compiles with ES2023.
const wellFormed = (text: string) => (text as string & { isWellFormed: () => boolean }).isWellFormed()

/**
 * The first value no database column can hold, with its path: a NUL
 * character, a lone surrogate (UTF-8 has no form for it: it would be stored,
 * hashed and compared as U+FFFD, so "\ud800x" and "\ufffdx" would be one
 * password), or a number coerced to Infinity.
 */
function unstorable (value: unknown, path = ''): { path: string, message: string } | null {
  if (typeof value === 'string') {
    if (value.includes('\u0000')) return { path, message: 'must not contain a NUL character' }
    return wellFormed(value) ? null : { path, message: 'must be well-formed Unicode text (no lone surrogate)' }
  }
  if (typeof value === 'number') return Number.isFinite(value) ? null : { path, message: 'must be a finite number' }
  if (value && typeof value === 'object') {
    for (const [key, inner] of Object.entries(value)) {
      const found = unstorable(inner, `${path}/${key}`)
      if (found !== null) return found
    }
  }
  return null
}

/** Wraps a validator so that what passed the schema but cannot be stored is a validation error too. */
function refuseUnstorable (validate: ReturnType<ReturnType<ReturnType<typeof AjvCompiler>>>) {
  const checked = (data: unknown) => {
    const valid = validate(data)
    checked.errors = validate.errors
    const found = valid ? unstorable(data) : null
    if (found === null) return valid
    checked.errors = [{ keyword: 'format', instancePath: found.path, schemaPath: '#', params: {}, message: found.message }]
    return false
  }
  checked.errors = validate.errors
  return checked as unknown as typeof validate
}

/**
 * What the log never shows, wherever it sits in a logged object: the
 * credentials of a request's headers (logged whole, or as pino's `req`), and
 * the secrets of bodies, at the top of a log object or one level down (`body.password`).
 */
const REDACTED = [
  ...['authorization', 'cookie'].flatMap((name) => [`headers.${name}`, `*.headers.${name}`]),
  ...['password', 'current_password', 'new_password', 'refresh_token', 'access_token', 'token'].flatMap((name) => [name, `*.${name}`])
]

/** The server options, shared by server.ts and the tests so both run the same service. */
export function serverOptions (config: Config): FastifyHttpOptions<Server> {
  return {
    logger: {
      level: config.LOG_LEVEL,
      redact: { paths: REDACTED, censor: '[redacted]' }
    },
    // plugins/logging.ts writes one line per request instead of Fastify's two.
    logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: 'request_id' }),
    childLoggerFactory: requestLogger,
    genReqId: (req: IncomingMessage) => {
      const given = req.headers['x-request-id']
      return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID()
    },
    bodyLimit: config.BODY_LIMIT_BYTES,
    // Slow clients (slowloris) must not hold sockets: Node's own request timeout is five minutes, and its headers
    // timeout is checked only every 30 s. HEADERS_TIMEOUT_SECONDS is at most REQUEST_TIMEOUT_SECONDS (loadConfig).
    requestTimeout: config.REQUEST_TIMEOUT_SECONDS * 1000,
    keepAliveTimeout: config.KEEP_ALIVE_TIMEOUT_SECONDS * 1000,
    http: {
      headersTimeout: config.HEADERS_TIMEOUT_SECONDS * 1000,
      requestTimeout: config.REQUEST_TIMEOUT_SECONDS * 1000,
      connectionsCheckingInterval: Math.min(config.HEADERS_TIMEOUT_SECONDS * 1000, 5000)
    },
    // Node's parser errors and timeouts are answered by the error model too.
    clientErrorHandler,
    trustProxy: trustProxy(config.TRUST_PROXY),
    routerOptions: { maxParamLength: 200 },
    frameworkErrors: frameworkErrorHandler,
    schemaController: { compilersFactory: { buildValidator } }
  }
}

/**
 * The whole service as one plugin: the plugins first, then every route under
 * routes/. Not encapsulated, so its decorators (db, tokens, …) are reachable
 * from the instance that registers it: the tests and the CLI use them.
 */
async function app (fastify: FastifyInstance, opts: AppOptions) {
  for (const schema of [ProblemSchema, HealthSchema, SessionSchema, AdminUserSchema, RoleSchema, AuditEventSchema, MfaRequiredSchema, MfaEnrolmentRequiredSchema, ...sharedSchemas]) fastify.addSchema(schema)

  // The platform first (configuration, errors, security headers and CORS, load shedding, rate limits, Redis, the
  // database, docs, metrics), then the service's own (its domain wired, authentication, permissions, logging,
  // health, shutdown), then the routes. Within a folder, each plugin loads after those it declares as `dependencies`.
  await fastify.register(AutoLoad, { dir: join(import.meta.dirname, 'plugins/external'), options: opts })
  await fastify.register(AutoLoad, { dir: join(import.meta.dirname, 'plugins/app') })
  await fastify.register(AutoLoad, {
    dir: join(import.meta.dirname, 'routes'),
    autoHooks: true,
    cascadeHooks: true
  })
}

export default fp(app, { name: 'auth-service' })
