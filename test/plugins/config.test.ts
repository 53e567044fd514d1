import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { ConfigError, loadConfig } from '../../plugins/external/config.js'
import { ConfigSchema } from '../../schemas/config.js'
import { bearer, build, childEnv, signup, tempDir } from '../helper.js'

const ROOT = join(import.meta.dirname, '..', '..')
const REAL_SECRET = 'a-production-key-encryption-secret-0123456789'
const METRICS_TOKEN = 'a-metrics-token-0123456789'
const PRODUCTION = { NODE_ENV: 'production', KEY_ENCRYPTION_SECRET: REAL_SECRET, METRICS_TOKEN }

// The default DATABASE_URL is ./data/auth.db, and without KEY_ENCRYPTION_SECRET loadConfig keeps a
// generated secret beside it: run in a directory of this file's own, not in the checkout.
const WORK_DIR = mkdtempSync(join(tmpdir(), 'auth-config-test-'))
process.chdir(WORK_DIR)
// PostgreSQL's generated secrets go under the home directory: this file's own, too.
const HOME = process.env.HOME
process.env.HOME = WORK_DIR
t.teardown(() => { process.chdir(ROOT); process.env.HOME = HOME; rmSync(WORK_DIR, { recursive: true, force: true }) })

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

t.test('production needs KEY_ENCRYPTION_SECRET, and not the value this service once shipped', async (t) => {
  t.match(configError(t, { NODE_ENV: 'production', METRICS_TOKEN })?.message, /KEY_ENCRYPTION_SECRET/, 'unset: refused')
  const shipped = 'dev-only-key-encryption-secret-change-me'
  t.match(configError(t, { ...PRODUCTION, KEY_ENCRYPTION_SECRET: shipped })?.message, /KEY_ENCRYPTION_SECRET/, 'the old development default: refused')
  const dir = tempDir(t)
  const config = loadConfig({ ...PRODUCTION, DATABASE_URL: `sqlite:${join(dir, 'auth.db')}` })
  t.equal(config.NODE_ENV, 'production')
  t.equal(config.KEY_ENCRYPTION_SECRET, REAL_SECRET)
  t.same(readdirSync(dir), [], 'production writes no secret file')
})

t.test('production without METRICS_TOKEN refuses to start: /metrics would be open on the public port', async (t) => {
  const err = configError(t, { NODE_ENV: 'production', KEY_ENCRYPTION_SECRET: REAL_SECRET })
  t.match(err?.message, /METRICS_TOKEN/, 'the message names METRICS_TOKEN')
  t.match(err?.message, /\/metrics/, 'and says why')
  t.equal(loadConfig(PRODUCTION).METRICS_TOKEN, METRICS_TOKEN, 'with it, production starts')
  t.equal(loadConfig({ NODE_ENV: 'development', DATABASE_URL: 'sqlite::memory:' }).METRICS_TOKEN, undefined, 'development may leave it unset')
})

t.test('the timeouts: headers cannot take longer than the whole request', async (t) => {
  const config = loadConfig({ DATABASE_URL: 'sqlite::memory:' })
  t.match(config, { REQUEST_TIMEOUT_SECONDS: 30, HEADERS_TIMEOUT_SECONDS: 10, KEEP_ALIVE_TIMEOUT_SECONDS: 72 }, 'defaults')
  const err = configError(t, { DATABASE_URL: 'sqlite::memory:', HEADERS_TIMEOUT_SECONDS: '40' })
  t.match(err?.message, /HEADERS_TIMEOUT_SECONDS/)
  t.match(err?.message, /REQUEST_TIMEOUT_SECONDS/)
  t.match(configError(t, { REQUEST_TIMEOUT_SECONDS: '0' })?.message, /REQUEST_TIMEOUT_SECONDS/)
})

t.test('without KEY_ENCRYPTION_SECRET outside production: a random secret per database, kept beside it', async (t) => {
  const schema = (ConfigSchema.properties as Record<string, { default?: unknown }>).KEY_ENCRYPTION_SECRET
  t.equal(schema.default, undefined, 'the schema has no default secret')

  const dir = tempDir(t)
  const url = `sqlite:${join(dir, 'auth.db')}`
  const first = loadConfig({ DATABASE_URL: url }).KEY_ENCRYPTION_SECRET
  const file = join(dir, 'auth.db.secret')
  t.ok(existsSync(file), 'a file beside the database file')
  t.equal(statSync(file).mode & 0o777, 0o600, 'readable by its owner only (0600)')
  t.equal(readFileSync(file, 'utf8').trim(), first, 'holding the secret')
  t.ok(first.length >= 32, 'of at least 32 characters')
  t.equal(loadConfig({ DATABASE_URL: url, NODE_ENV: 'test' }).KEY_ENCRYPTION_SECRET, first, 'the next start reuses it')
  const other = loadConfig({ DATABASE_URL: `sqlite:${join(dir, 'other.db')}` }).KEY_ENCRYPTION_SECRET
  t.not(other, first, 'another database has another secret')
  t.equal(loadConfig({ DATABASE_URL: url, KEY_ENCRYPTION_SECRET: REAL_SECRET }).KEY_ENCRYPTION_SECRET, REAL_SECRET, 'a configured secret wins')

  const memory = loadConfig({ DATABASE_URL: 'sqlite::memory:' }).KEY_ENCRYPTION_SECRET
  t.ok(memory.length >= 32, 'sqlite::memory: gets a random secret too')
  t.not(memory, first)
  t.equal(loadConfig({ DATABASE_URL: 'sqlite::memory:' }).KEY_ENCRYPTION_SECRET, memory, 'one per process (nothing outlives it)')
  t.notOk(readdirSync(WORK_DIR, { recursive: true, encoding: 'utf8' }).some((f) => f.includes('memory')), 'and no file for it')

  // No source file holds any of them: no constant of the code can mint tokens.
  const sources = ['app.ts', 'server.ts', 'cli.ts', ...['plugins', 'schemas', 'db'].flatMap((d) => readdirSync(join(ROOT, d), { recursive: true, encoding: 'utf8' }).map((f) => join(d, f)))]
    .filter((f) => f.endsWith('.ts')).map((f) => readFileSync(join(ROOT, f), 'utf8'))
  for (const secret of [first, other, memory]) t.notOk(sources.some((text) => text.includes(secret)), 'the secret is in no source file')
})

t.test('a secret file that cannot be made or read is a ConfigError, never a stack trace or a password', async (t) => {
  const dir = tempDir(t)
  writeFileSync(join(dir, 'short.db.secret'), 'too short\n', { mode: 0o600 })
  t.match(configError(t, { DATABASE_URL: `sqlite:${join(dir, 'short.db')}` })?.message, /short\.db\.secret.*KEY_ENCRYPTION_SECRET/, 'a file holding less than 32 characters')
  writeFileSync(join(dir, 'plain-file'), '')
  t.match(configError(t, { DATABASE_URL: `sqlite:${join(dir, 'plain-file', 'auth.db')}` })?.message, /KEY_ENCRYPTION_SECRET is unset.*plain-file/, 'a directory that cannot be made')
  const err = configError(t, { DATABASE_URL: 'postgres://user:hunter2-password@[not-a-host/auth' })
  t.match(err?.message, /KEY_ENCRYPTION_SECRET/)
  t.notMatch(err?.message, /hunter2/, 'the database password is not in the message')
})

t.test('PostgreSQL outside production: a file under ~/.auth-service named by the database, not its credentials', async (t) => {
  const dir = join(WORK_DIR, '.auth-service')
  const postgresFiles = () => existsSync(dir) ? readdirSync(dir).filter((f) => f.startsWith('postgres-')) : []
  const before = postgresFiles()
  const secret = (url: string) => loadConfig({ DATABASE_URL: url }).KEY_ENCRYPTION_SECRET
  const a = secret('postgres://alice:one@db.example:5432/auth')
  t.equal(secret('postgres://bob:two@db.example:5432/auth'), a, 'the same database with other credentials: the same secret')
  t.not(secret('postgres://alice:one@db.example:5432/other'), a, 'another database: another secret')
  const files = postgresFiles().filter((f) => !before.includes(f))
  t.equal(files.length, 2, 'one file per database')
  for (const name of files) {
    t.match(name, /^postgres-[0-9a-f]{16}\.secret$/, `${name}: named by a hash`)
    t.notMatch(name, /alice|bob|one|two/, 'without the credentials')
    t.equal(statSync(join(dir, name)).mode & 0o777, 0o600, 'mode 0600')
  }
})

t.test('the generated secret outlives a restart: the stored signing keys still decrypt', async (t) => {
  const url = `sqlite:${join(tempDir(t), 'auth.db')}`
  const first = await build(t, { env: { DATABASE_URL: url } })
  const signed = await signup(first)
  const kid = first.tokens.activeKid()
  await first.close()
  const second = await build(t, { env: { DATABASE_URL: url } })
  t.equal(second.tokens.activeKid(), kid, 'the same signing key, read back and decrypted')
  t.equal((await second.inject({ method: 'GET', url: '/api/v1/users/me', headers: bearer(signed.access_token) })).statusCode, 200, 'a token of the first start verifies')
  t.equal((await second.inject({ method: 'POST', url: '/api/v1/auth/refresh', payload: { refresh_token: signed.refresh_token } })).statusCode, 200, 'and its refresh token rotates')
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

t.test('server.ts in production without METRICS_TOKEN exits 1 naming it, before it listens', async (t) => {
  const env: NodeJS.ProcessEnv = { ...childEnv(), NODE_ENV: 'production', KEY_ENCRYPTION_SECRET: REAL_SECRET, DATABASE_URL: 'sqlite::memory:', PORT: '0', HOST: '127.0.0.1' }
  delete env.METRICS_TOKEN
  const result = spawnSync('npx', ['tsx', 'server.ts'], { cwd: ROOT, env, encoding: 'utf8', timeout: 60_000 })
  t.equal(result.status, 1, 'exit code 1')
  t.match(result.stderr.trim(), /^Invalid configuration: METRICS_TOKEN is required in production[^\n]*\/metrics[^\n]*$/, 'one line naming METRICS_TOKEN and /metrics')
  t.equal(result.stdout.trim(), '', 'nothing on stdout (it never started)')
})
