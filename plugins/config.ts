import fp from 'fastify-plugin'
import { Value } from 'typebox/value'
import { ConfigSchema, type Config } from '../schemas/config.js'

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

/** Secrets that must not run in production on the value .env.example or the code ships. */
const DEVELOPMENT_SECRETS: Partial<Record<keyof Config, string>> = {
  KEY_ENCRYPTION_SECRET: 'dev-only-key-encryption-secret-change-me'
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
  const config = converted as Config
  if (config.JWT_PRIVATE_KEY && config.JWT_PRIVATE_KEY_FILE) {
    throw new ConfigError('Invalid configuration: set JWT_PRIVATE_KEY or JWT_PRIVATE_KEY_FILE, not both.')
  }
  if (config.JWT_ALGORITHM === 'HS256' && !config.JWT_SECRET) {
    throw new ConfigError('Invalid configuration: JWT_ALGORITHM=HS256 needs JWT_SECRET (at least 32 bytes).')
  }
  if (config.NODE_ENV === 'production' && config.REQUIRE_EMAIL_VERIFICATION && !config.SMTP_URL) {
    throw new ConfigError('Invalid configuration: REQUIRE_EMAIL_VERIFICATION=true needs SMTP_URL in production (users could never verify).')
  }
  if (config.NODE_ENV === 'production') {
    for (const [name, devValue] of Object.entries(DEVELOPMENT_SECRETS)) {
      if (config[name as keyof Config] === devValue) {
        throw new ConfigError(`Invalid configuration: ${name} is the development default; set a secret of your own in production.`)
      }
    }
  }
  return config
}

export interface ConfigPluginOptions {
  config: Config
  now?: () => Date
}

export default fp<ConfigPluginOptions>(async function config (fastify, opts) {
  fastify.decorate('config', opts.config)
  fastify.decorate('now', opts.now ?? (() => new Date()))
}, { name: 'config' })
