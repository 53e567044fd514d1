import type { FastifyBaseLogger } from 'fastify'
import fp from 'fastify-plugin'
import type { Redis } from 'ioredis'

declare module 'fastify' {
  interface FastifyInstance {
    /** The shared Redis connection when REDIS_URL is set; null for a single instance. */
    redis: Redis | null
  }
}

/** Closes a connection: politely (QUIT) when Redis answers, else by dropping it, so shutdown never fails on a Redis outage. */
export async function closeRedis (client: Redis): Promise<void> {
  await client.quit().catch(() => client.disconnect())
}

/**
 * A connection of its own (one in subscriber mode can do nothing else) that
 * hands each message on `channel` to `onMessage`. It subscribes again itself
 * at every reconnect, with the failure handled (ioredis' own resubscription
 * leaves its promise unhandled: a connection lost at that moment would end
 * the process), then calls `onResubscribed`, so the listener can catch up on
 * what was published while it was away.
 */
export async function listen (redis: Redis, channel: string, log: FastifyBaseLogger,
  onMessage: (message: string) => void, onResubscribed: () => Promise<void>): Promise<Redis> {
  const subscriber = redis.duplicate({ autoResubscribe: false })
  subscriber.on('error', (err) => log.warn({ err, channel }, 'redis subscriber error'))
  subscriber.on('message', (_channel, message: string) => onMessage(message))
  let subscribed = false
  subscriber.on('ready', () => {
    if (!subscribed) return // the first subscription is awaited below
    subscriber.subscribe(channel).then(onResubscribed)
      .catch((err) => log.warn({ err, channel }, 'redis resubscription failed; retried at the next reconnect'))
  })
  await subscriber.subscribe(channel)
  subscribed = true
  return subscriber
}

export default fp(async function redis (fastify) {
  const url = fastify.config.REDIS_URL
  if (!url) {
    fastify.decorate('redis', null)
    return
  }
  // Loaded only when used: a single instance does without it.
  const { Redis } = await import('ioredis')
  const client = new Redis(url, { lazyConnect: true, connectTimeout: 2000, maxRetriesPerRequest: 2 })
  // ioredis reconnects by itself; an error event without a listener would crash the process.
  client.on('error', (err) => fastify.log.warn({ err }, 'redis connection error'))
  await client.connect()
  fastify.decorate('redis', client)
  fastify.addHook('onClose', () => closeRedis(client))
}, { name: 'redis', dependencies: ['config'] })
