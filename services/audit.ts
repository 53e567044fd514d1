import { randomUUID } from 'node:crypto'
import type { Kysely } from 'kysely'
import { insertEvent, pruneEvents } from '../db/queries/events.js'
import type { Database } from '../db/types.js'
import type { ClientInfo } from './clients.js'
import type { Base } from './context.js'

export interface AuditEvent {
  type: string
  userId?: string | null
  sessionId?: string | null
  client?: ClientInfo
  /** Never a password or a token. */
  detail?: Record<string, unknown>
}

export type Audit = ReturnType<typeof createAudit>

/** The security trail in auth_events. */
export function createAudit ({ db, clock, config, log }: Base) {
  return {
    /**
     * Writes the event. Given the transaction of the change it records, it is
     * part of that change: written with it, or not at all (its failure fails
     * the change). Alone, a failed write is logged, never the caller's failure.
     */
    async record (event: AuditEvent, trx?: Kysely<Database>): Promise<void> {
      const row = {
        id: randomUUID(),
        type: event.type,
        user_id: event.userId ?? null,
        session_id: event.sessionId ?? null,
        ip: event.client?.ip ?? null,
        user_agent: event.client?.userAgent ?? null,
        created_at: clock().toISOString(),
        detail: JSON.stringify(event.detail ?? {})
      }
      if (trx) return insertEvent(trx, row)
      try {
        await insertEvent(db, row)
      } catch (err) {
        log.error({ err, event: event.type }, 'audit event not written')
      }
    },

    /** Deletes events older than AUDIT_RETENTION_DAYS; returns how many. */
    prune: () => pruneEvents(db, new Date(clock().getTime() - config.AUDIT_RETENTION_DAYS * 86_400_000).toISOString())
  }
}
