import type { Kysely } from 'kysely'
import type { Database } from '../types.js'

type Db = Kysely<Database>

/**
 * Records revoked sessions until `expiresAt`, a bound on their access tokens'
 * `exp` (see plugins/revocations.ts). Idempotent; a second record never shortens the first.
 */
export async function insertRevocations (db: Db, sessionIds: string[], revokedAt: string, expiresAt: string): Promise<void> {
  if (sessionIds.length === 0) return
  await db.insertInto('revoked_sessions')
    .values(sessionIds.map((id) => ({ session_id: id, revoked_at: revokedAt, expires_at: expiresAt })))
    .onConflict((oc) => oc.column('session_id').doUpdateSet({ expires_at: expiresAt }).where('revoked_sessions.expires_at', '<', expiresAt))
    .execute()
}

/**
 * Revocations still in force on a clock reading `now`: the rule a token's `exp` follows,
 * since `expires_at` bounds the `exp` of the session's tokens.
 */
export function listRevocations (db: Db, now: string): Promise<Array<{ session_id: string, expires_at: Date | string }>> {
  return db.selectFrom('revoked_sessions').select(['session_id', 'expires_at']).where('expires_at', '>', now).execute()
}

export async function pruneRevocations (db: Db, before: string): Promise<void> {
  await db.deleteFrom('revoked_sessions').where('expires_at', '<=', before).execute()
}

/**
 * The last time an access token of these sessions was signed, on the clock of
 * the instance that signed it, or null. Both columns are written with each
 * token; the latest of the two, because two instances touching one session
 * can write last_used_at out of order.
 */
export async function lastSignedAt (db: Db, sessionIds: string[]): Promise<Date | null> {
  const row = await db.selectNoFrom((eb) => [
    eb.selectFrom('sessions').select((s) => s.fn.max('last_used_at').as('at')).where('id', 'in', sessionIds).as('touched'),
    eb.selectFrom('refresh_tokens').select((r) => r.fn.max('created_at').as('at')).where('session_id', 'in', sessionIds).as('issued')
  ]).executeTakeFirstOrThrow()
  const times = [row.touched, row.issued].filter((at) => at !== null).map((at) => new Date(at).getTime())
  return times.length > 0 ? new Date(Math.max(...times)) : null
}
