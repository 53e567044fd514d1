import fp from 'fastify-plugin'
import type { Redis } from 'ioredis'
import { closeRedis, createShared, type Shared } from '../../services/redis.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** The shared Redis connection when REDIS_URL is set; null for a single instance. */
    redis: Redis | null
    /** Runs work on Redis while it answers, else on this instance's memory; counts the fallbacks. */
    shared: Shared
  }
}

/** How often a lost connection is tried again: Redis back means replicas in step again within about this. */
const RECONNECT_MS = 250

export default fp(async function redis (fastify) {
  const { REDIS_URL: url, REDIS_TIMEOUT_MS: timeout } = fastify.config
  if (!url) {
    fastify.decorate('redis', null)
    fastify.decorate('shared', createShared(null, fastify.log))
    return
  }
  // Loaded only when used: a single instance does without it.
  const { Redis } = await import('ioredis')
  const client = new Redis(url, {
    lazyConnect: true,
    connectTimeout: 1000,
    commandTimeout: timeout,
    // While Redis is away a command fails at once (and its caller falls back) instead of waiting in a queue.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => RECONNECT_MS
  })
  // Every failed reconnection is an error event: the transitions are logged once each (createShared).
  client.on('error', () => {})
  const shared = createShared(client, fastify.log)
  await client.connect().catch(() => shared.unreachable())
  fastify.decorate('redis', client)
  fastify.decorate('shared', shared)
  fastify.addHook('onClose', () => {
    shared.closing()
    return closeRedis(client)
  })
}, { name: 'redis', dependencies: ['config'] })
