import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer, type AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { setTimeout as sleep } from 'node:timers/promises'
import { join } from 'node:path'
import Fastify, { type FastifyInstance, type LightMyRequestResponse } from 'fastify'
import tap, { type Test } from 'tap'
import app, { serverOptions } from '../app.js'
import { loadConfig } from '../plugins/external/config.js'

export interface BuildOptions {
  env?: Record<string, string>
  now?: () => Date
  /** Where the log goes (pino writes one JSON line per call); nowhere by default. */
  log?: { write: (line: string) => void }
  /** Runs on the bare instance before the service is registered (a hook every route then has). */
  before?: (fastify: FastifyInstance) => void
}

/** The database the tests run on: PostgreSQL when TEST_DATABASE_URL is set, else SQLite in memory. */
export const databases: Array<{ name: string, url: string }> = [
  { name: 'sqlite', url: 'sqlite::memory:' },
  ...(process.env.TEST_DATABASE_URL ? [{ name: 'postgres', url: process.env.TEST_DATABASE_URL }] : [])
]

/** Builds the service with the very options server.ts uses, and closes it when the test ends. */
export async function build (t: Test, opts: BuildOptions = {}): Promise<FastifyInstance> {
  // Per-address rate limits and load shedding off: the suite signs many users up from 127.0.0.1 on a
  // busy machine. Their own tests turn them on.
  const config = loadConfig({ DATABASE_URL: 'sqlite::memory:', LOG_LEVEL: 'silent', NODE_ENV: 'test', RATE_LIMIT_ENABLED: 'false', MAX_EVENT_LOOP_DELAY_MS: '0', ...opts.env })
  const options = serverOptions(config)
  const fastify = Fastify(opts.log ? { ...options, logger: { ...(options.logger as object), stream: opts.log } } : options)
  opts.before?.(fastify)
  await fastify.register(app, { config, now: opts.now })
  t.teardown(() => fastify.close())
  await fastify.ready()
  return fastify
}

export interface LogLine { level: number, msg: string, [key: string]: any }

/** Builds the service as `build` does, its log kept (at LOG_LEVEL info unless `env` says): `text()` as written, `lines()` parsed. */
export async function buildLogged (t: Test, opts: BuildOptions = {}) {
  const chunks: string[] = []
  const fastify = await build(t, { ...opts, env: { LOG_LEVEL: 'info', ...opts.env }, log: { write: (line) => { chunks.push(line) } } })
  const text = () => chunks.join('')
  return { fastify, text, lines: () => text().split('\n').filter(Boolean).map((line) => JSON.parse(line) as LogLine) }
}

/** Starts a built app listening on a free loopback port (build closes it) and returns its base URL. */
export async function listen (fastify: FastifyInstance): Promise<string> {
  await fastify.listen({ port: 0, host: '127.0.0.1' })
  const { port } = fastify.server.address() as AddressInfo
  return `http://127.0.0.1:${port}`
}

/**
 * A clock the test moves: `build(t, { now: clock.now })`, then `clock.advance(seconds)`,
 * or `clock.goTo(seconds)` to stand that many seconds after the clock's start.
 */
export function movableClock (start = new Date()) {
  let current = start
  return {
    now: () => current,
    advance (seconds: number) { current = new Date(current.getTime() + seconds * 1000) },
    goTo (seconds: number) { current = new Date(start.getTime() + seconds * 1000) }
  }
}

/** A fresh directory, removed when the test ends. */
export function tempDir (t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'auth-test-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** The DATABASE_URL of a fresh SQLite file, removed when the test ends: a database that outlives one app. */
export const tempSqliteUrl = (t: Test) => `sqlite:${join(tempDir(t), 'auth.db')}`

let counter = 0
/** An email address no other test uses, so tests can share a PostgreSQL database. */
export function uniqueEmail (prefix = 'user'): string {
  counter += 1
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${counter}@example.com`
}

let usernames = 0
/** A username no other test uses (3–42 of [a-z0-9_] once lower-cased, for a short prefix). */
export function uniqueUsername (prefix = 'u'): string {
  usernames += 1
  return `${prefix}_${process.pid.toString(36)}_${Date.now().toString(36)}_${usernames}`
}

export const json = (res: LightMyRequestResponse) => res.json() as Record<string, any>

/** The claims of a JWT, read without verifying it. */
export const claimsOf = (token: string) => JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8')) as Record<string, any>

export const GOOD_PASSWORD = 'correct horse battery staple'

/** Signs up a fresh user and returns the token response. */
export async function signup (fastify: FastifyInstance, body: Record<string, unknown> = {}) {
  const res = await fastify.inject({ method: 'POST', url: '/api/v1/auth/signup', payload: { email: uniqueEmail(), password: GOOD_PASSWORD, ...body } })
  if (res.statusCode !== 201) throw new Error(`signup failed: ${res.statusCode} ${res.body}`)
  return json(res)
}

/** Logs in (a new session of the user) and returns the token response. */
export async function login (fastify: FastifyInstance, email: string, password = GOOD_PASSWORD) {
  const res = await fastify.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email, password } })
  if (res.statusCode !== 200) throw new Error(`login failed: ${res.statusCode} ${res.body}`)
  return json(res)
}

export const bearer = (token: string) => ({ authorization: `Bearer ${token}` })

/** POST /api/v1/auth/refresh with this refresh token. */
export const refresh = (fastify: FastifyInstance, refreshToken: string, headers: Record<string, string> = {}) =>
  fastify.inject({ method: 'POST', url: '/api/v1/auth/refresh', headers, payload: { refresh_token: refreshToken } })

/** GET /api/v1/auth/verify (forward auth) with this access token. */
export const forwardAuth = (fastify: FastifyInstance, accessToken: string) =>
  fastify.inject({ method: 'GET', url: '/api/v1/auth/verify', headers: bearer(accessToken) })

/**
 * Asserts a problem+json answer with this status and code (or one of these codes),
 * its body's status, a detail, and the X-Request-Id header as its request_id; returns the body.
 */
export function expectProblem (t: Test, res: LightMyRequestResponse, status: number, code: string | readonly string[]) {
  t.equal(res.statusCode, status, `status ${status}`)
  t.match(res.headers['content-type'], /^application\/problem\+json/, 'content-type is problem+json')
  const body = json(res)
  if (typeof code === 'string') t.equal(body.code, code, `code ${code}`)
  else t.ok(code.includes(body.code), `code one of ${code.join(', ')} (got ${body.code})`)
  t.equal(body.status, status, 'status in the body')
  t.type(body.detail, 'string', 'has a detail')
  t.equal(body.request_id, res.headers['x-request-id'], 'request_id is the X-Request-Id header')
  return body
}

/**
 * Asserts a 401 problem with this code (or one of these) and its RFC 6750
 * challenge: bare without a token, `invalid_token` with the detail and the
 * code for a refused bearer token, the code alone for other credentials.
 */
export function expectUnauthorized (t: Test, res: LightMyRequestResponse, code: string | readonly string[]) {
  const body = expectProblem(t, res, 401, code)
  const expected = body.code === 'AUTHENTICATION_REQUIRED'
    ? 'Bearer realm="auth-service"'
    : ['INVALID_ACCESS_TOKEN', 'ACCESS_TOKEN_EXPIRED', 'SESSION_REVOKED'].includes(body.code)
        ? `Bearer realm="auth-service", error="invalid_token", error_description="${body.detail}", code="${body.code}"`
        : `Bearer realm="auth-service", code="${body.code}"`
  t.equal(res.headers['www-authenticate'], expected, `WWW-Authenticate: ${expected}`)
  return body
}

/** Asserts a 401 problem with this code (or one of these) that hands out no token; returns the body. */
export function expectRefusal (t: Test, res: LightMyRequestResponse, code: string | readonly string[]) {
  const body = expectProblem(t, res, 401, code)
  t.notOk(body.access_token ?? body.refresh_token, 'no tokens in a refusal')
  return body
}

/** Asserts a 204 with an empty body. */
export function expectNoContent (t: Test, res: LightMyRequestResponse) {
  t.equal(res.statusCode, 204, 'status 204')
  t.equal(res.body, '', 'no body')
}

/**
 * The environment for a child process of a test, with its coverage turned off
 * (tap records children too): a child compiled by tsx reports coverage
 * through other source maps and would garble the suite's figures.
 */
export function childEnv (): NodeJS.ProcessEnv {
  return { ...process.env, _TAPJS_PROCESSINFO_COV_EXCLUDE_: '/./' }
}

/** The headers two answers must share: all but the date and the request id. */
export function comparableHeaders (res: LightMyRequestResponse): Record<string, unknown> {
  const { date: _date, 'x-request-id': _id, ...headers } = res.headers
  return headers
}

/** Asserts two answers are the same to the byte: status, body, and headers but the date and request id. */
export function expectIdentical (t: Test, a: LightMyRequestResponse, b: LightMyRequestResponse, what: string) {
  t.equal(a.statusCode, b.statusCode, `${what}: same status`)
  t.equal(a.body, b.body, `${what}: byte-identical body`)
  t.same(comparableHeaders(a), comparableHeaders(b), `${what}: same headers`)
}

export interface Sample { name: string, labels: Record<string, string>, value: number }

const SAMPLE_LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g

/** Parses the Prometheus text exposition format; throws on a line it cannot read. */
export function parseMetrics (text: string): Sample[] {
  return text.split('\n').filter((line) => line !== '' && !line.startsWith('#')).map((line) => {
    const match = SAMPLE_LINE.exec(line)
    if (!match) throw new Error(`not a sample line: ${line}`)
    const labels: Record<string, string> = {}
    for (const [, key, raw] of (match[2] ?? '').matchAll(LABEL)) labels[key] = raw.replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c))
    return { name: match[1], labels, value: Number(match[3]) }
  })
}

/** Scrapes GET /metrics (with `token` as the bearer, if given) and parses it. */
export async function scrape (fastify: FastifyInstance, token?: string): Promise<Sample[]> {
  const res = await fastify.inject({ method: 'GET', url: '/metrics', headers: token ? bearer(token) : {} })
  if (res.statusCode !== 200) throw new Error(`GET /metrics answered ${res.statusCode}`)
  return parseMetrics(res.body)
}

/** The sum of a metric's samples whose labels include `labels`, from a fresh scrape. */
export async function metricValue (fastify: FastifyInstance, name: string, labels: Record<string, string> = {}): Promise<number> {
  return (await scrape(fastify))
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((sum, s) => sum + s.value, 0)
}

/**
 * Runs `tests` unless `missing` says why they cannot run here: then CI, which
 * must run them, fails, and elsewhere they are skipped with the reason.
 */
export function unless (missing: string | null, tests: () => void) {
  if (!missing) return tests()
  if (process.env.CI === 'true') tap.fail(`CI must run these tests: ${missing}`)
  else tap.test(missing, { skip: missing }, (t) => { t.fail(missing) })
}

/** Whether redis-server is installed, for tests that run a Redis of their own. */
export const hasRedisServer = spawnSync('redis-server', ['--version']).status === 0

/** A loopback port nobody listens on (at the moment of asking). */
export async function freePort (): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as { port: number }
  server.close()
  await once(server, 'close')
  return port
}

/** A Redis of the test's own on `port` (no persistence), killed when the test ends. */
export async function startRedis (t: Test, port: number): Promise<ChildProcess> {
  const redis = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { env: childEnv(), stdio: 'pipe' })
  t.teardown(() => { redis.kill('SIGKILL') })
  let output = ''
  redis.stdout!.on('data', (chunk) => { output += chunk })
  for (let i = 0; i < 100 && !output.includes('Ready to accept connections'); i++) await sleep(50)
  t.match(output, /Ready to accept connections/, `redis-server is up on ${port}`)
  return redis
}
