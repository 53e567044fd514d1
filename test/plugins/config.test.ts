import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { ConfigError, loadConfig } from '../../plugins/config.js'
import { childEnv } from '../helper.js'

const ROOT = join(import.meta.dirname, '..', '..')
const REAL_SECRET = 'a-production-key-encryption-secret-0123456789'

/** The ConfigError loadConfig throws for `env` (fails the test when it does not throw one). */
function configError (t: Test, env: Record<string, string>): ConfigError | undefined {
  let caught: unknown
  try {
    loadConfig(env)
  } catch (err) {
    caught = err
  }
  if (!t.ok(caught instanceof ConfigError, `${JSON.stringify(env).slice(0, 80)} throws a ConfigError`)) return undefined
  const err = caught as ConfigError
  t.notOk(err.message.includes('\n'), 'the message is one line')
  t.match(err.message, /^Invalid configuration: /)
  return err
}

t.test('defaults', async (t) => {
  const config = loadConfig({})
  t.match(config, {
    NODE_ENV: 'development',
    HOST: '0.0.0.0',
    PORT: 8000,
    LOG_LEVEL: 'info',
    DATABASE_URL: 'sqlite:./data/auth.db',
    PUBLIC_URL: 'http://localhost:8000',
    JWT_AUDIENCE: 'auth-service',
    JWT_ALGORITHM: 'RS256',
    ACCESS_TOKEN_TTL_SECONDS: 900,
    REFRESH_TOKEN_TTL_SECONDS: 7 * 86400,
    SESSION_MAX_AGE_SECONDS: 30 * 86400,
    JWKS_MAX_AGE_SECONDS: 300,
    ARGON2_MEMORY_KIB: 19456,
    ARGON2_ITERATIONS: 2,
    ARGON2_PARALLELISM: 1,
    PASSWORD_MIN_LENGTH: 8,
    ALLOWED_HOSTS: '*',
    CORS_ORIGINS: '',
    TRUST_PROXY: 'false',
    BODY_LIMIT_BYTES: 16384
  })
  t.equal(config.JWT_ISSUER, undefined)
  t.equal(config.JWT_PRIVATE_KEY, undefined)
  t.equal(config.JWT_SECRET, undefined)
  t.type(config.KEY_ENCRYPTION_SECRET, 'string')
})

t.test('values are read from the environment and converted', async (t) => {
  const config = loadConfig({ PORT: '3000', ACCESS_TOKEN_TTL_SECONDS: '60', LOG_LEVEL: 'warn', NODE_ENV: 'test', JWT_ALGORITHM: 'ES256', DATABASE_URL: 'postgres://u:p@db:5432/auth' })
  t.equal(config.PORT, 3000)
  t.equal(config.ACCESS_TOKEN_TTL_SECONDS, 60)
  t.equal(config.LOG_LEVEL, 'warn')
  t.equal(config.NODE_ENV, 'test')
  t.equal(config.JWT_ALGORITHM, 'ES256')
  t.equal(config.DATABASE_URL, 'postgres://u:p@db:5432/auth')
  t.equal(loadConfig({ PORT: '' }).PORT, 8000, 'an empty variable is unset')
})

t.test('PORT=abc throws a ConfigError naming PORT, on one line', async (t) => {
  const err = configError(t, { PORT: 'abc' })
  t.match(err?.message, /\bPORT\b/)
  t.match(err?.message, /abc/, 'says what it got')
})

t.test('PORT out of range or not a whole number throws', async (t) => {
  for (const value of ['70000', '-1', '8.5']) {
    const err = configError(t, { PORT: value })
    t.match(err?.message, /\bPORT\b/, `PORT=${value} is named`)
  }
})

t.test('ARGON2_MEMORY_KIB below the OWASP minimum throws', async (t) => {
  const err = configError(t, { ARGON2_MEMORY_KIB: '19455' })
  t.match(err?.message, /ARGON2_MEMORY_KIB/)
  t.equal(loadConfig({ ARGON2_MEMORY_KIB: '19456' }).ARGON2_MEMORY_KIB, 19456, 'the minimum itself is fine')
  t.match(configError(t, { ARGON2_ITERATIONS: '1' })?.message, /ARGON2_ITERATIONS/)
})

t.test('other bad values name their variable', async (t) => {
  const cases: Record<string, string> = {
    JWT_ALGORITHM: 'none',
    LOG_LEVEL: 'loud',
    NODE_ENV: 'staging',
    DATABASE_URL: 'mysql://localhost/auth',
    PUBLIC_URL: 'localhost:8000',
    KEY_ENCRYPTION_SECRET: 'too-short',
    BODY_LIMIT_BYTES: '10',
    ACCESS_TOKEN_TTL_SECONDS: '0',
    METRICS_TOKEN: 'short',
    SHUTDOWN_TIMEOUT_SECONDS: '0',
    HASH_CONCURRENCY: '-1'
  }
  for (const [name, value] of Object.entries(cases)) {
    t.match(configError(t, { [name]: value })?.message, new RegExp(`\\b${name}\\b`), `${name}=${value}`)
  }
})

t.test('production refuses the development KEY_ENCRYPTION_SECRET', async (t) => {
  const err = configError(t, { NODE_ENV: 'production' })
  t.match(err?.message, /KEY_ENCRYPTION_SECRET/)
  const explicit = loadConfig({}).KEY_ENCRYPTION_SECRET
  t.match(configError(t, { NODE_ENV: 'production', KEY_ENCRYPTION_SECRET: explicit })?.message, /KEY_ENCRYPTION_SECRET/, 'also when set explicitly to the default')
  const config = loadConfig({ NODE_ENV: 'production', KEY_ENCRYPTION_SECRET: REAL_SECRET })
  t.equal(config.NODE_ENV, 'production')
  t.equal(config.KEY_ENCRYPTION_SECRET, REAL_SECRET)
  t.equal(loadConfig({ NODE_ENV: 'development' }).KEY_ENCRYPTION_SECRET, explicit, 'development keeps its default')
})

t.test('JWT_PRIVATE_KEY and JWT_PRIVATE_KEY_FILE together throw', async (t) => {
  const err = configError(t, { JWT_PRIVATE_KEY: '-----BEGIN PRIVATE KEY-----', JWT_PRIVATE_KEY_FILE: '/run/secrets/key.pem' })
  t.match(err?.message, /JWT_PRIVATE_KEY\b/)
  t.match(err?.message, /JWT_PRIVATE_KEY_FILE/)
  t.equal(loadConfig({ JWT_PRIVATE_KEY_FILE: '/run/secrets/key.pem' }).JWT_PRIVATE_KEY_FILE, '/run/secrets/key.pem', 'either alone is fine')
})

t.test('HS256 without JWT_SECRET throws', async (t) => {
  t.match(configError(t, { JWT_ALGORITHM: 'HS256' })?.message, /JWT_SECRET/)
})

t.test('server.ts with PORT=abc exits 1 with one stderr line naming PORT', async (t) => {
  const result = spawnSync('npx', ['tsx', 'server.ts'], {
    cwd: ROOT,
    env: { ...childEnv(), PORT: 'abc', DATABASE_URL: 'sqlite::memory:', NODE_ENV: 'test' },
    encoding: 'utf8',
    timeout: 60_000
  })
  t.equal(result.status, 1, 'exit code 1')
  const lines = result.stderr.split('\n').filter((line) => line.trim() !== '')
  t.equal(lines.length, 1, `one stderr line: ${JSON.stringify(result.stderr)}`)
  t.match(lines[0], /\bPORT\b/)
  t.match(lines[0], /^Invalid configuration/)
  t.notMatch(lines[0], /\bat \S+ \(/, 'no stack trace')
  t.equal(result.stdout.trim(), '', 'nothing on stdout (it never started)')
})
