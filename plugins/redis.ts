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
