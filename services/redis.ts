import type { Redis } from 'ioredis'
import type { Log } from './context.js'

/** What falls back to this instance's memory while Redis is away. */
export type SharedUse = 'rate_limit' | 'login_throttle' | 'revocation_publish'

export type Shared = ReturnType<typeof createShared>

/** Closes a connection: politely (QUIT) when Redis answers, else by dropping it, so shutdown never fails on a Redis outage. */
export async function closeRedis (client: Redis): Promise<void> {
  await client.quit().catch(() => client.disconnect())
}

/**
 * Redis as an accelerator, not a single point of failure: work that needs
 * it runs on it while it answers within REDIS_TIMEOUT_MS, and on this
 * instance's memory otherwise (counted, per use). The log says once that
 * Redis is gone and once that it is back.
 */
export function createShared (redis: Redis | null, log: Log) {
  const fallbacks = new Map<SharedUse, number>()
  // Logged on a change only: ioredis reports every failed reconnection, several a second.
  let state: 'starting' | 'up' | 'down' | 'closing' = 'starting'
  redis?.on('ready', () => {
    if (state === 'down') log.info('Redis is back: rate limits, the login throttle and revocations are shared again')
    if (state !== 'closing') state = 'up'
  })
  redis?.on('close', () => {
    if (state === 'up') log.error('Redis is gone: rate limits and the login throttle count per instance until it is back; revocations still apply here at once and reach the other replicas through the database')
    if (state !== 'closing') state = 'down'
  })
  const fellBack = (use: SharedUse) => { fallbacks.set(use, (fallbacks.get(use) ?? 0) + 1) }

  return {
    /** Redis could not be reached at start. */
    unreachable () {
      state = 'down'
      log.error('Redis cannot be reached at start: serving with per-instance rate limits and login throttle until it can')
    },
    /** Shutting down: a closed connection is no outage. */
    closing () { state = 'closing' },
    /** True while Redis answers (always false without REDIS_URL). */
    up: () => redis !== null && redis.status === 'ready',
    fellBack,
    /** How often each use fell back to memory since start. */
    fallbacks: (): ReadonlyMap<SharedUse, number> => fallbacks,

    /** `remote` on Redis while it is up; `local` when it is not or `remote` fails (a timeout included). */
    async run<T> (use: SharedUse, remote: (redis: Redis) => Promise<T>, local: () => T | Promise<T>): Promise<T> {
      if (redis?.status === 'ready') {
        try {
          return await remote(redis)
        } catch {}
      }
      if (redis) fellBack(use)
      return local()
    }
  }
}

/**
 * A connection of its own (one in subscriber mode can do nothing else) that
 * hands each message on `channel` to `onMessage`. It subscribes at every
 * (re)connection itself, with the failure handled (ioredis' own
 * resubscription leaves its promise unhandled: a connection lost at that
 * moment would end the process), then calls `onSubscribed`, so the listener
 * catches up on what was published while it was not listening. It does not
 * wait for Redis: the service starts and serves without it.
 */
export function listen (redis: Redis, channel: string, log: Log,
  onMessage: (message: string) => void, onSubscribed: () => Promise<void>): Redis {
  const subscriber = redis.duplicate({ autoResubscribe: false, commandTimeout: undefined })
  subscriber.on('error', () => {}) // the shared connection logs Redis going and coming back
  subscriber.on('message', (_channel, message: string) => onMessage(message))
  subscriber.on('ready', () => {
    subscriber.subscribe(channel).then(onSubscribed)
      .catch((err) => log.warn({ err, channel }, 'redis subscription failed; tried again at the next reconnect'))
  })
  subscriber.connect().catch(() => {}) // retried by ioredis until it connects
  return subscriber
}
