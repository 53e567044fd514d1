import { createHash, randomBytes } from 'node:crypto'
import { existsSync, linkSync, mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { dirname, join } from 'node:path'
import fp from 'fastify-plugin'
import type { Static } from 'typebox'
import { Value } from 'typebox/value'
import { ConfigSchema, type Config } from '../../schemas/config.js'

declare module 'fastify' {
  interface FastifyInstance {
    config: Config
    /** The service's clock. Tests pass their own to move time. */
    now: () => Date
  }
}

export class ConfigError extends Error {
  override name = 'ConfigError'
}

/** Secrets an earlier .env.example and README published: whoever runs production on one has none. */
const PUBLISHED_SECRETS: Partial<Record<keyof Config, string>> = {
  KEY_ENCRYPTION_SECRET: 'dev-only-key-encryption-secret-change-me'
}

const randomSecret = () => randomBytes(32).toString('base64url')

/** The secret of an in-memory database: it dies with the process, and so may its secret. */
let memorySecret: string | undefined

/**
 * Where the generated KEY_ENCRYPTION_SECRET of a database is kept: beside the
 * SQLite file, or for PostgreSQL in ~/.auth-service, named by a hash of the
 * URL without its credentials (a changed password keeps the secret). Per user,
 * not per checkout: every clone on the machine that uses the database must
 * open the keys it sealed.
 */
export function secretFileOf (databaseUrl: string): string {
  if (databaseUrl.startsWith('sqlite:')) return `${databaseUrl.slice('sqlite:'.length)}.secret`
  const url = new URL(databaseUrl)
  url.username = ''
  url.password = ''
  for (const name of ['user', 'password']) url.searchParams.delete(name)
  return join(homedir(), '.auth-service', `postgres-${createHash('sha256').update(url.href).digest('hex').slice(0, 16)}.secret`)
}

/** The secret kept in `file`, made (mode 0600) if there is none. Linked into place, so processes starting at once agree on one. */
function keptSecret (file: string): string {
  if (!existsSync(file)) {
    mkdirSync(dirname(file), { recursive: true })
    const draft = `${file}.${process.pid}.${randomBytes(4).toString('hex')}`
    writeFileSync(draft, `${randomSecret()}\n`, { mode: 0o600, flag: 'wx' })
    try {
      linkSync(draft, file)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    } finally {
      unlinkSync(draft)
    }
  }
  return readFileSync(file, 'utf8').trim()
}

/** KEY_ENCRYPTION_SECRET when unset outside production: random, one per database, kept for the next start. */
function generatedSecret (databaseUrl: string): string {
  if (databaseUrl === 'sqlite::memory:') return (memorySecret ??= randomSecret())
  let file = 'a file under ./data' // never the URL: it may hold a password
  try {
    file = secretFileOf(databaseUrl)
    const secret = keptSecret(file)
    if (secret.length >= 32) return secret
  } catch (err) {
    throw new ConfigError(`Invalid configuration: KEY_ENCRYPTION_SECRET is unset and its generated secret cannot be kept in ${file} (${(err as Error).message}); set KEY_ENCRYPTION_SECRET.`)
  }
  throw new ConfigError(`Invalid configuration: ${file} holds no KEY_ENCRYPTION_SECRET of 32 characters or more; set KEY_ENCRYPTION_SECRET, or delete the file together with the database.`)
}

/**
 * Reads the configuration from `env`. Throws a ConfigError whose message is
 * one line naming the variable and what it expects.
 */
export function loadConfig (env: Record<string, string | undefined>): Config {
  const known = Object.keys(ConfigSchema.properties)
  const input: Record<string, unknown> = {}
  for (const key of known) {
    const value = env[key]
    // An empty variable means "unset", as in most .env tooling.
    if (value !== undefined && value !== '') input[key] = value
  }
  // Convert would truncate 8.5 to 8: a whole number must be written as one.
  for (const [key, value] of Object.entries(input)) {
    const schema = (ConfigSchema.properties as Record<string, { type?: string, description?: string }>)[key]
    if (schema.type === 'integer' && !/^-?\d+$/.test(String(value).trim())) {
      throw new ConfigError(`Invalid configuration: ${key} must be a whole number (got ${JSON.stringify(value)}). ${schema.description ?? ''}`.trim())
    }
  }
  const converted = Value.Convert(ConfigSchema, Value.Default(ConfigSchema, input))
  const [error] = Value.Errors(ConfigSchema, converted)
  if (error) {
    const name = error.instancePath.replace(/^\//, '') || Object.values(error.params as Record<string, string[]>)[0]?.[0] || 'configuration'
    const schema = (ConfigSchema.properties as Record<string, { description?: string }>)[name]
    const got = input[name] === undefined ? 'nothing' : JSON.stringify(input[name])
    throw new ConfigError(`Invalid configuration: ${name} ${error.message} (got ${got}). ${schema?.description ?? ''}`.trim())
  }
  const config = converted as Static<typeof ConfigSchema>
  if (config.JWT_PRIVATE_KEY && config.JWT_PRIVATE_KEY_FILE) {
    throw new ConfigError('Invalid configuration: set JWT_PRIVATE_KEY or JWT_PRIVATE_KEY_FILE, not both.')
  }
  if (config.JWT_ALGORITHM === 'HS256' && !config.JWT_SECRET) {
    throw new ConfigError('Invalid configuration: JWT_ALGORITHM=HS256 needs JWT_SECRET (at least 32 bytes).')
  }
  if (config.NODE_ENV === 'production' && config.REQUIRE_EMAIL_VERIFICATION && !config.SMTP_URL) {
    throw new ConfigError('Invalid configuration: REQUIRE_EMAIL_VERIFICATION=true needs SMTP_URL in production (users could never verify).')
  }
  if (config.HEADERS_TIMEOUT_SECONDS > config.REQUEST_TIMEOUT_SECONDS) {
    throw new ConfigError('Invalid configuration: HEADERS_TIMEOUT_SECONDS must not be more than REQUEST_TIMEOUT_SECONDS (the headers are part of the request).')
  }
  if (config.NODE_ENV === 'production') {
    if (!config.KEY_ENCRYPTION_SECRET) {
      throw new ConfigError('Invalid configuration: KEY_ENCRYPTION_SECRET is required in production (32 characters or more, e.g. `openssl rand -hex 32`); it encrypts the signing keys.')
    }
    // Refused rather than served openly: the port the service listens on is usually its public one.
    if (!config.METRICS_TOKEN) {
      throw new ConfigError('Invalid configuration: METRICS_TOKEN is required in production; without it GET /metrics would be open to anyone who reaches the port (16 characters or more; Prometheus sends it as a bearer token).')
    }
    for (const [name, published] of Object.entries(PUBLISHED_SECRETS)) {
      if (config[name as keyof Config] === published) {
        throw new ConfigError(`Invalid configuration: ${name} is a value this project once published; set a secret of your own in production.`)
      }
    }
  }
  return { ...config, KEY_ENCRYPTION_SECRET: config.KEY_ENCRYPTION_SECRET ?? generatedSecret(config.DATABASE_URL), PUBLIC_URL: config.PUBLIC_URL ?? defaultPublicUrl(config) }
}

/**
 * The default PUBLIC_URL (and so issuer and mail endpoints). In development,
 * where a client on this machine reaches the service, so a changed PORT or
 * HOST still works. Elsewhere a fixed one: replicas must agree on the issuer
 * whatever their ports (production sets PUBLIC_URL: see the checklist).
 */
function defaultPublicUrl ({ NODE_ENV: env, HOST: host, PORT: port }: { NODE_ENV: string, HOST: string, PORT: number }): string {
  if (env !== 'development') return 'http://localhost:8000'
  const anyAddress = ['0.0.0.0', '::', '127.0.0.1', '::1', 'localhost'].includes(host)
  return `http://${anyAddress ? 'localhost' : host.includes(':') ? `[${host}]` : host}:${port}`
}

export interface ConfigPluginOptions {
  config: Config
  now?: () => Date
}

export default fp<ConfigPluginOptions>(async function config (fastify, opts) {
  const { config } = opts
  fastify.decorate('config', config)
  fastify.decorate('now', opts.now ?? (() => new Date()))
  // What is in force, once, at start: the surprises of a first run (where links point, whether mail leaves) in one line.
  fastify.addHook('onReady', async () => {
    fastify.log.info({
      issuer: config.JWT_ISSUER ?? config.PUBLIC_URL,
      public_url: config.PUBLIC_URL,
      mail: config.SMTP_URL ? 'sent through SMTP_URL' : 'logged, not sent (no SMTP_URL)',
      mail_links: config.EMAIL_VERIFY_URL || config.PASSWORD_RESET_URL ? 'to your app' : 'none: mails carry the token',
      rate_limits: config.RATE_LIMIT_ENABLED,
      require_email_verification: config.REQUIRE_EMAIL_VERIFICATION
    }, 'settings in force')
  })
}, { name: 'config' })
