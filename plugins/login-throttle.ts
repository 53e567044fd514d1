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

/** How long the account must wait before its next try, in ms (0: it may try now). */
export function waitFor (failures: Failures | null, now: number): number {
  if (!failures || failures.count < FREE_FAILURES) return 0
  const delay = Math.min(1000 * 2 ** (failures.count - FREE_FAILURES), MAX_DELAY_MS)
  return Math.max(0, failures.last + delay - now)
}

/**
 * One attempt, decided and counted in one step: the wait (ms) if the account
 * must wait, else 0, and the attempt is counted as a failure until a success
 * clears it. Counting before the password is checked is what keeps a burst
 * of simultaneous guesses from all slipping past the check.
 */
function decide (failures: Failures | null, now: number): { wait: number, next?: Failures } {
  // Forgotten after 15 quiet minutes (counted from when the last wait ended).
  const known = failures && now - failures.last < WINDOW_MS + waitFor(failures, failures.last) ? failures : null
  const wait = waitFor(known, now)
  return wait > 0 ? { wait } : { wait: 0, next: { count: (known?.count ?? 0) + 1, last: now } }
}

interface Store {
  /** Applies `decide` to the key atomically; returns the wait. */
  attempt: (key: string, now: number) => Promise<number>
  delete: (key: string) => Promise<void>
}

function memoryStore (): Store {
  const entries = new Map<string, Failures>()
  return {
    async attempt (key, now) {
      // Synchronous from read to write: nothing can run in between.
      const { wait, next } = decide(entries.get(key) ?? null, now)
      if (next) {
        entries.delete(key) // re-insert: Map order is the eviction order
        entries.set(key, next)
        if (entries.size > MEMORY_LIMIT) entries.delete(entries.keys().next().value!)
      }
      return wait
    },
    delete: async (key) => { entries.delete(key) }
  }
}

/** `decide`, as a Lua script: Redis runs it atomically. */
const ATTEMPT_SCRIPT = `
local now, free, maxDelay, window, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local count, last = 0, 0
local stored = redis.call('GET', KEYS[1])
if stored then
  local c, l = string.match(stored, '(%d+):(%d+)')
  count, last = tonumber(c), tonumber(l)
end
local function delay (n) if n < free then return 0 end return math.min(1000 * 2 ^ (n - free), maxDelay) end
if count > 0 and now - last >= window + delay(count) then count = 0 end
local wait = last + delay(count) - now
if count >= free and wait > 0 then return wait end
redis.call('SET', KEYS[1], (count + 1) .. ':' .. now, 'PX', ttl)
return 0`

function redisStore (redis: Redis, prefix: string): Store {
  return {
    async attempt (key, now) {
      return Number(await redis.eval(ATTEMPT_SCRIPT, 1, prefix + key, now, FREE_FAILURES, MAX_DELAY_MS, WINDOW_MS, WINDOW_MS + 2 * MAX_DELAY_MS))
    },
    async delete (key) { await redis.del(prefix + key) }
  }
}

/**
 * Distributed guessing: sign-in attempts counted per account, known or not
 * (so throttling tells nothing), whatever address they come from. After 5
 * failures the account waits 1 s, 2 s, 4 s … up to 15 minutes between tries,
 * right password or not; 15 quiet minutes, a successful sign-in or a password
 * reset forget the failures. Nobody can lock an account for longer than that,
 * and it sees at most about 10 failed tries an hour once throttled.
 */
function createLoginThrottle (fastify: FastifyInstance) {
  const store = fastify.redis ? redisStore(fastify.redis, `${fastify.config.REDIS_KEY_PREFIX}login-failures:`) : memoryStore()
  const keyOf = (identifier: string) => createHash('sha256').update(identifier.trim().toLowerCase()).digest('base64url')

  return {
    /** Counts an attempt, or throws 429 RATE_LIMITED with Retry-After while the account must wait. */
    async attempt (identifier: string): Promise<void> {
      const wait = await store.attempt(keyOf(identifier), fastify.now().getTime())
      if (wait > 0) throw retryLater('RateLimited', wait / 1000)
    },

    /** Clears the count: the right password was given, or the password was reset. */
    async succeeded (...identifiers: Array<string | null>): Promise<void> {
      await Promise.all(identifiers.filter((i): i is string => Boolean(i)).map((i) => store.delete(keyOf(i))))
    }
  }
}

export default fp(async function loginThrottle (fastify) {
  fastify.decorate('loginThrottle', createLoginThrottle(fastify))
}, { name: 'login-throttle', dependencies: ['config', 'redis'] })
