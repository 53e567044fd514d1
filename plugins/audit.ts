import { randomUUID } from 'node:crypto'
import fp from 'fastify-plugin'
import type { Kysely } from 'kysely'
import { insertEvent, pruneEvents } from '../db/queries/events.js'
import type { Database } from '../db/types.js'
import type { ClientInfo } from './sessions.js'

declare module 'fastify' {
  interface FastifyInstance {
    audit: {
      /**
       * Writes the event. Given the transaction of the change it records, it is
       * part of that change: written with it, or not at all (its failure fails
       * the change). Alone, a failed write is logged, never the caller's failure.
       */
      record: (event: AuditEvent, trx?: Kysely<Database>) => Promise<void>
      /** Deletes events older than AUDIT_RETENTION_DAYS; returns how many. */
      prune: () => Promise<number>
    }
  }
}

export interface AuditEvent {
  type: string
  userId?: string | null
  sessionId?: string | null
  client?: ClientInfo
  /** Never a password or a token. */
  detail?: Record<string, unknown>
}

const PRUNE_EVERY_MS = 3_600_000

/** The security trail in auth_events. A failed write is logged, never the caller's failure. */
export default fp(async function audit (fastify) {
  fastify.decorate('audit', {
    async record (event: AuditEvent, trx?: Kysely<Database>) {
      const row = {
        id: randomUUID(),
        type: event.type,
        user_id: event.userId ?? null,
        session_id: event.sessionId ?? null,
        ip: event.client?.ip ?? null,
        user_agent: event.client?.userAgent ?? null,
        created_at: fastify.now().toISOString(),
        detail: JSON.stringify(event.detail ?? {})
      }
      if (trx) return insertEvent(trx, row)
      try {
        await insertEvent(fastify.db, row)
      } catch (err) {
        fastify.log.error({ err, event: event.type }, 'audit event not written')
      }
    },
    prune: () => pruneEvents(fastify.db, new Date(fastify.now().getTime() - fastify.config.AUDIT_RETENTION_DAYS * 86_400_000).toISOString())
  })

  const prune = () => { fastify.audit.prune().catch((err) => fastify.log.warn({ err }, 'audit prune failed')) }
  fastify.addHook('onReady', async () => prune())
  const timer = setInterval(prune, PRUNE_EVERY_MS)
  timer.unref()
  fastify.addHook('onClose', async () => clearInterval(timer))
}, { name: 'audit', dependencies: ['config', 'db'] })
