import { createRequire } from 'node:module'
import rateLimit, { type FastifyRateLimitStoreCtor } from '@fastify/rate-limit'
import fp from 'fastify-plugin'
import type { Redis } from 'ioredis'
import { clientIp } from '../../services/clients.js'
import { Type } from 'typebox'
import { withHeaders, withProblems } from '../../schemas/problem.js'
import { Errors, retryLater } from '../../services/errors.js'
import type { Shared } from '../../services/redis.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Per-route limits, for route options: `config: { rateLimit: fastify.limits.login }`. */
    limits: Record<'login' | 'signup' | 'mail' | 'refresh', { max: number, timeWindow: number }>
  }
}

const MINUTE = 60_000

/** The RateLimit headers of the IETF draft (`enableDraftSpec`), on the answers of every limited route. */
const RATE_LIMIT_HEADERS = {
  'RateLimit-Limit': Type.Integer({ description: 'Requests allowed per window on this route, from this address.' }),
  'RateLimit-Remaining': Type.Integer({ description: 'Requests left in the current window.' }),
  'RateLimit-Reset': Type.Integer({ description: 'Seconds until the window resets.' })
}

type Result = { current: number, ttl: number }
interface Store {
  incr: (key: string, done: (err: Error | null, result?: Result) => void, timeWindow: number, max: number) => void
  child: (routeOptions: StoreOptions) => Store
}
interface StoreOptions { continueExceeding: boolean, exponentialBackoff: boolean }

// The plugin's own two stores (its types do not export them): counting in this instance, and in Redis.
const require = createRequire(import.meta.url)
const LocalStore = require('@fastify/rate-limit/store/LocalStore.js') as new (continueExceeding: boolean, exponentialBackoff: boolean) => Store
const RedisStore = require('@fastify/rate-limit/store/RedisStore.js') as new (continueExceeding: boolean, exponentialBackoff: boolean, redis: Redis, key: string) => Store

/** Counts in Redis while it answers in time, in this instance's memory otherwise (counted as a fallback). */
function sharedStore (local: Store, remote: Store, shared: Shared): Store {
  return {
    incr (key, done, timeWindow, max) {
      const locally = () => {
        shared.fellBack('rate_limit')
        local.incr(key, done, timeWindow, max)
      }
      if (!shared.up()) return locally()
      remote.incr(key, (err, result) => (err ? locally() : done(null, result)), timeWindow, max)
    },
    child: (options) => sharedStore(local.child(options), remote.child(options), shared)
  }
}

/** The store the plugin builds (it calls `new` on it): Redis with a per-instance fallback. */
function sharedStoreOf (redis: Redis, nameSpace: string, shared: Shared): FastifyRateLimitStoreCtor {
  return function (options: StoreOptions) {
    const { continueExceeding, exponentialBackoff } = options
    return sharedStore(new LocalStore(continueExceeding, exponentialBackoff), new RedisStore(continueExceeding, exponentialBackoff, redis, nameSpace), shared)
  } as unknown as FastifyRateLimitStoreCtor
}

/**
 * Requests per client address (TRUST_PROXY decides what that is, see client-ip.ts): a global
 * limit, and tighter ones on the routes that cost a password hash or a mail.
 * With REDIS_URL the counters are shared by every replica, and counted per
 * instance while Redis is away. 429 RATE_LIMITED
 * with Retry-After and the RateLimit-* headers of the IETF draft.
 */
export default fp(async function limits (fastify) {
  const { config } = fastify
  fastify.decorate('limits', {
    login: { max: config.RATE_LIMIT_LOGIN_PER_MINUTE, timeWindow: MINUTE },
    signup: { max: config.RATE_LIMIT_SIGNUP_PER_MINUTE, timeWindow: MINUTE },
    mail: { max: config.RATE_LIMIT_MAIL_PER_MINUTE, timeWindow: MINUTE },
    refresh: { max: config.RATE_LIMIT_REFRESH_PER_MINUTE, timeWindow: MINUTE }
  })
  // For the document, whether or not the limits are on (RATE_LIMIT_ENABLED): a limited route may answer 429, and
  // its answers tell the budget left. The per-account sign-in throttle answers 429 too (Retry-After only).
  fastify.addHook('onRoute', (route) => {
    if (route.config?.rateLimit === false) return
    route.schema = withHeaders(withProblems(route.schema, [Errors.RateLimited], RATE_LIMIT_HEADERS), RATE_LIMIT_HEADERS, (status) => status < 400)
  })
  if (!config.RATE_LIMIT_ENABLED) return
  await fastify.register(rateLimit, {
    global: true,
    max: config.RATE_LIMIT_GLOBAL_PER_MINUTE,
    timeWindow: MINUTE,
    ...(fastify.redis && { store: sharedStoreOf(fastify.redis, `${config.REDIS_KEY_PREFIX}rate-limit:`, fastify.shared) }),
    // The address sessions and audit events record: a forwarded entry that is no IP address buys no budget of its own.
    keyGenerator: (request) => clientIp(request) ?? 'unknown',
    // Nothing left to fail on (the store falls back to memory), but never refuse a request for a counting error.
    skipOnError: true,
    enableDraftSpec: true,
    errorResponseBuilder: (_request, context) => retryLater('RateLimited', context.ttl / 1000)
  })
}, { name: 'rate-limit', dependencies: ['config', 'redis', 'errors', 'security'] })
