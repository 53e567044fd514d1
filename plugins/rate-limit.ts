import rateLimit from '@fastify/rate-limit'
import fp from 'fastify-plugin'
import { clientIp } from './client-ip.js'
import { retryLater } from './errors.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Per-route limits, for route options: `config: { rateLimit: fastify.limits.login }`. */
    limits: Record<'login' | 'signup' | 'mail' | 'refresh', { max: number, timeWindow: number }>
  }
}

const MINUTE = 60_000

/**
 * Requests per client address (TRUST_PROXY decides what that is, see client-ip.ts): a global
 * limit, and tighter ones on the routes that cost a password hash or a mail.
 * With REDIS_URL the counters are shared by every replica. 429 RATE_LIMITED
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
  if (!config.RATE_LIMIT_ENABLED) return
  await fastify.register(rateLimit, {
    global: true,
    max: config.RATE_LIMIT_GLOBAL_PER_MINUTE,
    timeWindow: MINUTE,
    ...(fastify.redis && { redis: fastify.redis, nameSpace: `${config.REDIS_KEY_PREFIX}rate-limit:` }),
    // The address sessions and audit events record: a forwarded entry that is no IP address buys no budget of its own.
    keyGenerator: (request) => clientIp(request) ?? 'unknown',
    // A Redis outage must not take sign-in down with it; the per-account throttle still holds.
    skipOnError: true,
    enableDraftSpec: true,
    errorResponseBuilder: (_request, context) => retryLater('RateLimited', context.ttl / 1000)
  })
}, { name: 'rate-limit', dependencies: ['config', 'redis', 'errors'] })
