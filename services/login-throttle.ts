import { createHash } from 'node:crypto'
import type { Redis } from 'ioredis'
import { LRUCache } from 'lru-cache'
import type { Base, Clock } from './context.js'
import { retryLater } from './errors.js'
import type { Shared } from './redis.js'

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
  /** Applies `decide` to the key atomically, on the store's own clock; returns the wait. */
  attempt: (key: string) => Promise<number>
  delete: (key: string) => Promise<void>
}

export function memoryStore (now: () => Date, limit = MEMORY_LIMIT): Store {
  // Past the limit, the account whose failure was counted longest ago is forgotten:
  // `peek` reads without refreshing, so only a counted failure (`set`) makes an account recent.
  const entries = new LRUCache<string, Failures>({ max: limit })
  return {
    async attempt (key) {
      // Synchronous from read to write: nothing can run in between.
      const { wait, next } = decide(entries.peek(key) ?? null, now().getTime())
      if (next) entries.set(key, next)
      return wait
    },
    delete: async (key) => { entries.delete(key) }
  }
}

/**
 * `decide`, as a Lua script: Redis runs it atomically, on Redis' own clock
 * (TIME), so replicas whose clocks disagree still count on one timeline.
 */
const ATTEMPT_SCRIPT = `
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local free, maxDelay, window, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
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
    async attempt (key) {
      return Number(await redis.eval(ATTEMPT_SCRIPT, 1, prefix + key, FREE_FAILURES, MAX_DELAY_MS, WINDOW_MS, WINDOW_MS + 2 * MAX_DELAY_MS))
    },
    async delete (key) { await redis.del(prefix + key) }
  }
}

/** Runs tasks of one key one after another (tasks of other keys run freely); the map holds only keys with work queued. */
function perKeyQueue () {
  const tails = new Map<string, Promise<unknown>>()
  return async function serially<T> (key: string, task: () => Promise<T>): Promise<T> {
    const run = (tails.get(key) ?? Promise.resolve()).then(task, task)
    const tail = run.catch(() => {})
    tails.set(key, tail)
    tail.then(() => { if (tails.get(key) === tail) tails.delete(key) })
    return run
  }
}

/** The throttle key of an account: its id once known; else what was typed, hashed (so an unknown name is throttled alike). */
export const throttleKey = (account: { id: string } | undefined, typed: string) =>
  account ? `account:${account.id}` : `name:${createHash('sha256').update(typed).digest('base64url')}`

/**
 * Distributed guessing: every check of an account's password (sign-in,
 * password change, change of address, deletion; later second factors) is
 * counted per account, known or not (so throttling tells nothing), whatever
 * address it comes from. After 5 failures the account waits 1 s, 2 s, 4 s …
 * up to 15 minutes between tries, right password or not; 15 quiet minutes, a
 * right password or a password reset forget the failures. Nobody can lock an
 * account for longer than that, and it sees at most about 10 failed tries an
 * hour once throttled.
 *
 * A try is counted before its check (atomically, in Redis across replicas),
 * so a burst of simultaneous guesses cannot all slip past; a right one then
 * clears the count. Checks of one account run one at a time in an instance,
 * so concurrent right passwords never see each other's pending count: only
 * failures add up.
 */
export function createLoginThrottle ({ config, clock, redis, shared }: Pick<Base, 'config'> & { clock: Clock, redis: Redis | null, shared: Shared }) {
  const memory = memoryStore(clock)
  const remote = redis && redisStore(redis, `${config.REDIS_KEY_PREFIX}login-failures:`)
  // With Redis away the count goes on in this instance's memory: per replica, but never unthrottled.
  const store: Store = remote
    ? {
        attempt: (key) => shared.run('login_throttle', () => remote.attempt(key), () => memory.attempt(key)),
        delete: async (key) => {
          await memory.delete(key)
          await shared.run('login_throttle', () => remote.delete(key), () => {})
        }
      }
    : memory
  const serially = perKeyQueue()

  return {
    /**
     * Runs `check` (true: the secret was right) for the account under the
     * throttle. Throws 429 RATE_LIMITED with Retry-After, without running it,
     * while the account must wait.
     */
    guard (key: string, check: () => Promise<boolean>): Promise<boolean> {
      return serially(key, async () => {
        const wait = await store.attempt(key)
        if (wait > 0) throw retryLater('RateLimited', wait / 1000)
        const ok = await check()
        if (ok) await store.delete(key)
        return ok
      })
    },

    /** Forgets the account's failures: its password was reset. */
    forget: (key: string) => store.delete(key)
  }
}
