import type { Kysely } from 'kysely'
import type { Database, OneTimeTokenRow, TokenPurpose } from '../types.js'

type Db = Kysely<Database>

export interface NewOneTimeToken {
  hash: string
  userId: string
  purpose: TokenPurpose
  email: string
  now: string
  expiresAt: string
}

/** Stores a token and voids every earlier unused one of the same user and purpose: the newest request wins. */
export function replaceOneTimeToken (db: Db, t: NewOneTimeToken): Promise<void> {
  return db.transaction().execute(async (trx) => {
    await trx.updateTable('one_time_tokens').set({ used_at: t.now })
      .where('user_id', '=', t.userId).where('purpose', '=', t.purpose).where('used_at', 'is', null)
      .execute()
    await trx.insertInto('one_time_tokens').values({
      token_hash: t.hash, user_id: t.userId, purpose: t.purpose, email: t.email, created_at: t.now, expires_at: t.expiresAt
    }).execute()
  })
}

/**
 * Uses a token once: marks it used if it is unused, unexpired and of one of
 * `purposes`, in one conditional write, and returns it; otherwise undefined.
 */
export async function consumeOneTimeToken (db: Db, hash: string, purposes: TokenPurpose[], now: string): Promise<OneTimeTokenRow | undefined> {
  const result = await db.updateTable('one_time_tokens').set({ used_at: now })
    .where('token_hash', '=', hash)
    .where('purpose', 'in', purposes)
    .where('used_at', 'is', null)
    .where('expires_at', '>', now)
    .executeTakeFirst()
  if (result.numUpdatedRows !== 1n) return undefined
  return db.selectFrom('one_time_tokens').selectAll().where('token_hash', '=', hash).executeTakeFirst()
}

/** When the user was last sent a token of this purpose, if ever. */
export async function lastTokenSentAt (db: Db, userId: string, purpose: TokenPurpose): Promise<Date | undefined> {
  const row = await db.selectFrom('one_time_tokens').select('created_at')
    .where('user_id', '=', userId).where('purpose', '=', purpose)
    .orderBy('created_at', 'desc').limit(1).executeTakeFirst()
  return row ? new Date(row.created_at) : undefined
}
