import type { Kysely } from 'kysely'
import type { Database } from '../types.js'

type Db = Kysely<Database>

/** Records revoked sessions until their last access token has expired. Idempotent. */
export async function insertRevocations (db: Db, sessionIds: string[], revokedAt: string, expiresAt: string): Promise<void> {
  if (sessionIds.length === 0) return
  await db.insertInto('revoked_sessions')
    .values(sessionIds.map((id) => ({ session_id: id, revoked_at: revokedAt, expires_at: expiresAt })))
    .onConflict((oc) => oc.column('session_id').doUpdateSet({ expires_at: expiresAt }))
    .execute()
}

/** Revocations still in force at `now`, or recorded since `since`. */
export function listRevocations (db: Db, now: string, since?: string): Promise<Array<{ session_id: string, expires_at: Date | string }>> {
  let query = db.selectFrom('revoked_sessions').select(['session_id', 'expires_at']).where('expires_at', '>', now)
  if (since !== undefined) query = query.where('revoked_at', '>=', since)
  return query.execute()
}

export async function pruneRevocations (db: Db, now: string): Promise<void> {
  await db.deleteFrom('revoked_sessions').where('expires_at', '<=', now).execute()
}
