import { createHash } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import type { Redis } from 'ioredis'
import { retryLater } from './errors.js'

declare module 'fastify' {
  interface FastifyInstance {
    loginThrottle: LoginThrottle
  }
}

export type LoginThrottle = ReturnType<typeof createLoginThrottle>

/** Failures allowed before the backoff starts. */
const FREE_FAILURES = 5
/** Quiet time after which an account's failures are forgotten. */
const WINDOW_MS = 15 * 60_000
/** The backoff doubles from 1 s up to this. */
const MAX_DELAY_MS = 15 * 60_000
/** Accounts remembered in memory (no Redis); the oldest are dropped first. */
const MEMORY_LIMIT = 100_000

interface Failures { count: number, last: number }

interface Store {
  get: (key: string) => Promise<Failures | null>
  set: (key: string, value: Failures) => Promise<void>
  delete: (key: string) => Promise<void>
}

function memoryStore (): Store {
  const entries = new Map<string, Failures>()
  return {
    get: async (key) => entries.get(key) ?? null,
    async set (key, value) {
      entries.delete(key) // re-insert: Map order is the eviction order
      entries.set(key, value)
      if (entries.size > MEMORY_LIMIT) entries.delete(entries.keys().next().value!)
    },
    delete: async (key) => { entries.delete(key) }
  }
}

function redisStore (redis: Redis, prefix: string): Store {
  return {
    async get (key) {
      const value = await redis.get(prefix + key)
      return value ? JSON.parse(value) as Failures : null
    },
    async set (key, value) { await redis.set(prefix + key, JSON.stringify(value), 'PX', WINDOW_MS + MAX_DELAY_MS) },
    async delete (key) { await redis.del(prefix + key) }
  }
}

/** How long the account must wait before its next try, in ms (0: it may try now). */
export function waitFor (failures: Failures | null, now: number): number {
  if (!failures || failures.count < FREE_FAILURES) return 0
  const delay = Math.min(1000 * 2 ** (failures.count - FREE_FAILURES), MAX_DELAY_MS)
  return Math.max(0, failures.last + delay - now)
}

/**
 * Distributed guessing: failed sign-ins counted per account, known or not
 * (so throttling tells nothing), whatever address they come from. After 5
 * failures the account waits 1 s, 2 s, 4 s … up to 15 minutes between tries,
 * right password or not; 15 quiet minutes, a successful sign-in or a password
 * reset forget the failures. Nobody can lock an account for longer than that,
 * and it sees at most about 10 failed tries an hour once throttled.
 */
function createLoginThrottle (fastify: FastifyInstance) {
  const store = fastify.redis ? redisStore(fastify.redis, `${fastify.config.REDIS_KEY_PREFIX}login-failures:`) : memoryStore()
  const keyOf = (identifier: string) => createHash('sha256').update(identifier.trim().toLowerCase()).digest('base64url')
  const now = () => fastify.now().getTime()

  async function current (key: string): Promise<Failures | null> {
    const failures = await store.get(key)
    return failures && now() - failures.last >= WINDOW_MS + waitFor(failures, failures.last) ? null : failures
  }

  return {
    /** Throws 429 RATE_LIMITED with Retry-After while the account must wait. */
    async check (identifier: string): Promise<void> {
      const wait = waitFor(await current(keyOf(identifier)), now())
      if (wait > 0) throw retryLater('RateLimited', wait / 1000)
    },

    async failed (identifier: string): Promise<void> {
      const key = keyOf(identifier)
      const failures = await current(key)
      await store.set(key, { count: (failures?.count ?? 0) + 1, last: now() })
    },

    async succeeded (...identifiers: Array<string | null>): Promise<void> {
      await Promise.all(identifiers.filter((i): i is string => Boolean(i)).map((i) => store.delete(keyOf(i))))
    }
  }
}

export default fp(async function loginThrottle (fastify) {
  fastify.decorate('loginThrottle', createLoginThrottle(fastify))
}, { name: 'login-throttle', dependencies: ['config', 'redis'] })
