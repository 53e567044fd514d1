import type { Kysely } from 'kysely'
import type { Database, RefreshTokenRow, SessionRow } from '../types.js'

type Db = Kysely<Database>

export interface NewSession {
  id: string
  userId: string
  now: string
  expiresAt: string
  userAgent: string | null
  ip: string | null
  /** The assurance level reached at sign-in, and how (RFC 8176 methods, comma-separated). */
  aal: number
  amr: string
}

export interface NewRefreshToken {
  hash: string
  sessionId: string
  now: string
  expiresAt: string
}

/** Creates a session and its first refresh token. Two statements: run it in the caller's transaction. */
export async function insertSession (db: Db, s: NewSession, token: NewRefreshToken): Promise<void> {
  await db.insertInto('sessions').values({
    id: s.id,
    user_id: s.userId,
    created_at: s.now,
    last_used_at: s.now,
    expires_at: s.expiresAt,
    user_agent: s.userAgent,
    ip: s.ip,
    aal: s.aal,
    amr: s.amr
  }).execute()
  await insertRefreshToken(db, token)
}

function insertRefreshToken (db: Db, t: NewRefreshToken) {
  return db.insertInto('refresh_tokens').values({
    token_hash: t.hash,
    session_id: t.sessionId,
    created_at: t.now,
    expires_at: t.expiresAt
  }).execute()
}

export type RefreshTokenWithSession = RefreshTokenRow & Pick<SessionRow, 'user_id' | 'revoked_at' | 'aal' | 'amr'> & { session_expires_at: SessionRow['expires_at'] }

export function findRefreshToken (db: Db, hash: string): Promise<RefreshTokenWithSession | undefined> {
  return db.selectFrom('refresh_tokens')
    .innerJoin('sessions', 'sessions.id', 'refresh_tokens.session_id')
    .selectAll('refresh_tokens')
    .select(['sessions.user_id', 'sessions.revoked_at', 'sessions.aal', 'sessions.amr', 'sessions.expires_at as session_expires_at'])
    .where('refresh_tokens.token_hash', '=', hash)
    .executeTakeFirst()
}

/**
 * Marks `oldHash` rotated and stores its successor, in one transaction. The
 * update is conditional on the token not being rotated yet and its session
 * not ended, so of concurrent rotations exactly one succeeds; the others get false.
 */
export function rotateRefreshToken (db: Db, oldHash: string, next: NewRefreshToken): Promise<boolean> {
  return db.transaction().execute(async (trx) => {
    const result = await trx.updateTable('refresh_tokens')
      .set({ rotated_at: next.now })
      .where('token_hash', '=', oldHash)
      .where('rotated_at', 'is', null)
      .where('session_id', 'in', trx.selectFrom('sessions').select('id').where('id', '=', next.sessionId).where('revoked_at', 'is', null))
      .executeTakeFirst()
    if (result.numUpdatedRows !== 1n) return false
    await insertRefreshToken(trx, next)
    await touchSession(trx, next.sessionId, next.now)
    return true
  })
}

/**
 * Raises a live session of the user to an assurance level (step-up), and
 * hands it a new refresh token in place of its current one. False when the
 * session has ended. Several statements: run it in the caller's transaction.
 */
export async function raiseSession (db: Db, userId: string, level: { aal: number, amr: string }, next: NewRefreshToken): Promise<boolean> {
  const raised = await db.updateTable('sessions').set({ aal: level.aal, amr: level.amr, last_used_at: next.now })
    .where('id', '=', next.sessionId).where('user_id', '=', userId).where('revoked_at', 'is', null).where('expires_at', '>', next.now)
    .executeTakeFirst()
  if (raised.numUpdatedRows !== 1n) return false
  await db.updateTable('refresh_tokens').set({ rotated_at: next.now }).where('session_id', '=', next.sessionId).where('rotated_at', 'is', null).execute()
  await insertRefreshToken(db, next)
  return true
}

export async function touchSession (db: Db, id: string, now: string): Promise<void> {
  await db.updateTable('sessions').set({ last_used_at: now }).where('id', '=', id).execute()
}

/** Revokes live sessions of a user (one, all, or all but one); returns the ids it revoked. */
export async function revokeSessions (db: Db, userId: string, now: string, reason: string, opts: { only?: string, except?: string } = {}): Promise<string[]> {
  let query = db.updateTable('sessions')
    .set({ revoked_at: now, revoke_reason: reason })
    .where('user_id', '=', userId)
    .where('revoked_at', 'is', null)
  if (opts.only !== undefined) query = query.where('id', '=', opts.only)
  if (opts.except !== undefined) query = query.where('id', '!=', opts.except)
  const rows = await query.returning('id').execute()
  return rows.map((r) => r.id)
}

/** A user's sessions that can still be refreshed, most recently used first. */
export function listLiveSessions (db: Db, userId: string, now: string): Promise<SessionRow[]> {
  return db.selectFrom('sessions').selectAll()
    .where('user_id', '=', userId)
    .where('revoked_at', 'is', null)
    .where('expires_at', '>', now)
    .where(({ exists, selectFrom }) => exists(selectFrom('refresh_tokens').select('token_hash')
      .whereRef('refresh_tokens.session_id', '=', 'sessions.id')
      .where('refresh_tokens.rotated_at', 'is', null)
      .where('refresh_tokens.expires_at', '>', now)))
    .orderBy('last_used_at', 'desc')
    .orderBy('id')
    .execute()
}

/** Sessions neither revoked nor past their absolute expiry, across all users (the metrics gauge). */
export async function countActiveSessions (db: Db, now: string): Promise<number> {
  const row = await db.selectFrom('sessions')
    .select((eb) => eb.fn.countAll<number | string | bigint>().as('count'))
    .where('revoked_at', 'is', null).where('expires_at', '>', now)
    .executeTakeFirstOrThrow()
  return Number(row.count)
}
