import { createHash, timingSafeEqual } from 'node:crypto'
import type { FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'
import { countActiveSessions } from '../../db/queries/sessions.js'
import { bearerToken } from '../../services/access-tokens.js'
import { Errors } from '../../services/errors.js'
import type { Shared } from '../../services/redis.js'

declare module 'fastify' {
  interface FastifyInstance {
    metrics: Metrics
  }
  interface FastifyContextConfig {
    /** Counts this route's answers in `auth_<outcome>_total{result}`: `success`, or the problem code. */
    outcome?: Outcome
  }
}

export type Metrics = ReturnType<typeof createMetrics>
type Outcome = 'signups' | 'logins' | 'refreshes'

/** Seconds; from a cached verify (well under a millisecond) to a slow database. */
const HTTP_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]
/** Seconds; an argon2id at the OWASP minimum takes about 10 ms on one core. */
const HASH_BUCKETS = [0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1]
/** The active-sessions count is a query, so a burst of scrapes runs it at most this often. */
const ACTIVE_SESSIONS_CACHE_MS = 15_000

/**
 * Process metrics (CPU, memory, event loop, GC) describe the process, not an
 * app instance, and prom-client starts observers for them that never stop:
 * one registry for them per process, made on first use.
 */
let processRegistry: Registry | undefined
function processMetrics (): Registry {
  if (!processRegistry) {
    processRegistry = new Registry()
    collectDefaultMetrics({ register: processRegistry })
  }
  return processRegistry
}

function createMetrics (activeSessions: () => Promise<number>, now: () => number, metricsToken: string | undefined, shared: Shared) {
  const registry = new Registry()
  const expected = metricsToken ? digest(metricsToken) : null
  const counter = <L extends string>(name: string, help: string, labelNames: L[] = []) =>
    new Counter<L>({ name, help, labelNames, registers: [registry] })

  let cached = { value: 0, at: -Infinity }
  new Gauge({ // eslint-disable-line no-new -- registered; read at scrape time only
    name: 'auth_active_sessions',
    help: 'Sessions neither ended nor past their absolute age (counted at most every 15 s).',
    registers: [registry],
    async collect () {
      if (now() - cached.at >= ACTIVE_SESSIONS_CACHE_MS) cached = { value: await activeSessions(), at: now() }
      this.set(cached.value)
    }
  })

  new Gauge({ // eslint-disable-line no-new -- registered; read at scrape time only
    name: 'auth_redis_up',
    help: '1 while Redis answers; 0 while it is away (limits then count per instance) or without REDIS_URL.',
    registers: [registry],
    collect () { this.set(shared.up() ? 1 : 0) }
  })
  new Counter({ // eslint-disable-line no-new -- registered; read at scrape time only
    name: 'auth_redis_fallbacks_total',
    help: 'Work done on this instance\'s memory because Redis was away or too slow, by use (rate_limit, login_throttle, revocation_publish).',
    labelNames: ['use'],
    registers: [registry],
    collect () {
      this.reset()
      for (const [use, count] of shared.fallbacks()) this.inc({ use }, count)
    }
  })

  return {
    registry,
    databaseUnavailable: counter('auth_database_unavailable_total', 'Requests answered 503 DATABASE_UNAVAILABLE (the database away or past DATABASE_TIMEOUT_SECONDS), by route pattern.', ['route']),
    http: new Histogram({
      name: 'auth_http_request_duration_seconds',
      help: 'Time to answer an HTTP request, by method, route pattern and status.',
      labelNames: ['method', 'route', 'status'] as const,
      buckets: HTTP_BUCKETS,
      registers: [registry]
    }),
    outcomes: {
      signups: counter('auth_signups_total', 'Signup requests by result: success, or the problem code.', ['result']),
      logins: counter('auth_logins_total', 'Login requests by result: success, or the problem code.', ['result']),
      refreshes: counter('auth_refreshes_total', 'Refresh requests by result: success, or the problem code.', ['result'])
    } satisfies Record<Outcome, Counter<'result'>>,
    mfa: counter('auth_mfa_total', 'Second-factor checks by result: otp, recovery_code, or failed.', ['result']),
    refreshReuse: counter('auth_refresh_token_reuse_total', 'Rotated refresh tokens presented after the grace window (theft; the session was ended).'),
    revocations: counter('auth_sessions_revoked_total', 'Sessions ended before their time, by reason.', ['reason']),
    mails: counter('auth_mails_total', 'Mails handed to the SMTP server (sent), or given up after the retries (failed).', ['result']),
    rateLimited: counter('auth_rate_limited_total', 'Requests refused with 429, by route pattern.', ['route']),
    passwordHashing: new Histogram({
      name: 'auth_password_hash_duration_seconds',
      help: 'Time of one argon2id hash or verify, queue wait excluded.',
      labelNames: ['operation'] as const,
      buckets: HASH_BUCKETS,
      registers: [registry]
    }),

    /** The Prometheus text format: this app's metrics, then the process's. */
    async text (): Promise<string> {
      return `${await registry.metrics()}\n${await processMetrics().metrics()}`
    },
    contentType: registry.contentType,

    /** Throws 401 METRICS_TOKEN_REQUIRED unless METRICS_TOKEN is unset or the request bears it. */
    authorize (request: FastifyRequest): void {
      if (expected && !bearerMatches(request, expected)) throw new Errors.MetricsTokenRequired()
    }
  }
}

const digest = (value: string) => createHash('sha256').update(value).digest()

/** Compares digests, so the comparison takes the same time whatever the token's length or content. */
function bearerMatches (request: FastifyRequest, expected: Buffer): boolean {
  const token = bearerToken(request.headers.authorization ?? '') ?? ''
  return timingSafeEqual(digest(token), expected)
}

/**
 * Prometheus metrics on the app's own registry (routes/metrics/ serves
 * them). Plugins count their domain events on `fastify.metrics`; HTTP
 * timings, route outcomes and 429s are counted here, for every route.
 */
export default fp(async function metrics (fastify) {
  const { config, db } = fastify
  const metrics = createMetrics(() => countActiveSessions(db, fastify.now().toISOString()), () => fastify.now().getTime(), config.METRICS_TOKEN, fastify.shared)
  fastify.decorate('metrics', metrics)

  // The labelled series of each method, route and status, looked up once: prom-client would hash the labels on every observation.
  const series = new Map<string, ReturnType<typeof metrics.http.labels>>()
  fastify.addHook('onResponse', (request, reply, done) => {
    // routeOptions builds a frozen object at each read: read it once.
    const options = request.routeOptions
    const route = options.url ?? 'unmatched'
    const status = reply.statusCode
    const key = `${request.method} ${status} ${route}`
    let timer = series.get(key)
    if (!timer) series.set(key, timer = metrics.http.labels({ method: request.method, route, status }))
    timer.observe(reply.elapsedTime / 1000)
    const outcome = options.config?.outcome
    if (outcome) metrics.outcomes[outcome].inc({ result: request.problemCode?.toLowerCase() ?? 'success' })
    if (status === 429) metrics.rateLimited.inc({ route })
    else if (status === 503 && request.problemCode === 'DATABASE_UNAVAILABLE') metrics.databaseUnavailable.inc({ route })
    done()
  })
}, { name: 'metrics', dependencies: ['config', 'errors', 'db', 'redis'] })
