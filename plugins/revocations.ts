import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { insertRevocations, listRevocations, pruneRevocations } from '../db/queries/revocations.js'
import { closeRedis } from './redis.js'

declare module 'fastify' {
  interface FastifyInstance {
    revocations: Revocations
  }
}

export type Revocations = Awaited<ReturnType<typeof createRevocations>>

/** Extra life for a revocation beyond the access-token lifetime: clock skew and in-flight refreshes. */
const MARGIN_MS = 60_000
/** How often the list is pruned and re-read from the database (catching anything Redis did not deliver). */
const RESYNC_MS = 30_000

/**
 * The list of revoked sessions whose access tokens may still be alive. Every
 * protected request asks `has(sid)`: a Map lookup, no I/O. Revocations are
 * written to the database (so a restart or a late replica reloads them) and,
 * with Redis, published to every replica at once.
 */
async function createRevocations (fastify: FastifyInstance) {
  const { db, config, redis } = fastify
  const channel = `${config.REDIS_KEY_PREFIX}revocations`
  const revoked = new Map<string, number>() // session id -> when its last access token has expired (ms)
  const lifetimeMs = config.ACCESS_TOKEN_TTL_SECONDS * 1000 + MARGIN_MS

  function remember (ids: string[], until: number) {
    for (const id of ids) revoked.set(id, Math.max(until, revoked.get(id) ?? 0))
  }

  async function loadFromDatabase (since?: Date) {
    const rows = await listRevocations(db, fastify.now().toISOString(), since?.toISOString())
    for (const row of rows) remember([row.session_id], new Date(row.expires_at).getTime())
  }

  // Subscribe before loading, so nothing revoked in between is missed.
  const subscriber = redis?.duplicate()
  if (subscriber) {
    subscriber.on('error', (err) => fastify.log.warn({ err }, 'redis subscriber error'))
    subscriber.on('message', (_channel, message) => {
      try {
        const { ids, until } = JSON.parse(message) as { ids: unknown, until: unknown }
        if (Array.isArray(ids) && typeof until === 'number') remember(ids.filter((id) => typeof id === 'string'), until)
      } catch (err) {
        fastify.log.warn({ err }, 'ignored a malformed revocation message')
      }
    })
    await subscriber.subscribe(channel)
  }
  await loadFromDatabase()

  let lastSync = fastify.now()
  const timer = setInterval(() => {
    const now = fastify.now()
    for (const [id, until] of revoked) if (until <= now.getTime()) revoked.delete(id)
    const since = new Date(lastSync.getTime() - RESYNC_MS)
    lastSync = now
    Promise.all([loadFromDatabase(since), pruneRevocations(db, now.toISOString())])
      .catch((err) => fastify.log.warn({ err }, 'revocation resync failed'))
  }, RESYNC_MS)
  timer.unref()

  fastify.addHook('onClose', async () => {
    clearInterval(timer)
    if (subscriber) await closeRedis(subscriber)
  })

  return {
    /** True when the session was ended while its access tokens may still be alive. */
    has (sessionId: string): boolean {
      const until = revoked.get(sessionId)
      return until !== undefined && until > fastify.now().getTime()
    },

    /** Puts sessions on the list here, in the database and, with Redis, on every replica. */
    async add (sessionIds: string[]): Promise<void> {
      if (sessionIds.length === 0) return
      const now = fastify.now()
      const until = now.getTime() + lifetimeMs
      remember(sessionIds, until)
      await insertRevocations(db, sessionIds, now.toISOString(), new Date(until).toISOString())
      // The database has it now: a Redis outage delays other replicas (to their next resync), it does not fail the request.
      await redis?.publish(channel, JSON.stringify({ ids: sessionIds, until }))
        .catch((err) => fastify.log.warn({ err }, 'revocation not published; replicas pick it up at their next resync'))
    }
  }
}

export default fp(async function revocations (fastify) {
  fastify.decorate('revocations', await createRevocations(fastify))
}, { name: 'revocations', dependencies: ['config', 'db', 'redis'] })
