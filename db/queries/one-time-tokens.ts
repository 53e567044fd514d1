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

/**
 * Stores a token and voids every earlier unused one of the same user and
 * purpose: the newest request wins. With `notSince`, does nothing (false) when
 * one was made after that time. The user's row is locked first (a no-op
 * update), so concurrent requests for one user run one after the other on
 * PostgreSQL too, and the check sees what the others wrote.
 */
export function replaceOneTimeToken (db: Db, t: NewOneTimeToken, notSince?: string): Promise<boolean> {
  return db.transaction().execute(async (trx) => {
    await trx.updateTable('users').set((eb) => ({ id: eb.ref('id') })).where('id', '=', t.userId).execute()
    if (notSince !== undefined) {
      const recent = await trx.selectFrom('one_time_tokens').select('token_hash')
        .where('user_id', '=', t.userId).where('purpose', '=', t.purpose).where('created_at', '>', notSince)
        .limit(1).executeTakeFirst()
      if (recent) return false
    }
    await voidOneTimeTokens(trx, t.userId, t.purpose, t.now)
    await trx.insertInto('one_time_tokens').values({
      token_hash: t.hash, user_id: t.userId, purpose: t.purpose, email: t.email, created_at: t.now, expires_at: t.expiresAt
    }).execute()
    return true
  })
}

/** Voids the user's unused tokens of a purpose. */
export async function voidOneTimeTokens (db: Db, userId: string, purpose: TokenPurpose, now: string): Promise<void> {
  await db.updateTable('one_time_tokens').set({ used_at: now })
    .where('user_id', '=', userId).where('purpose', '=', purpose).where('used_at', 'is', null)
    .execute()
}

/**
 * Voids the user's unused tokens that change credentials (a change of address,
 * a reset): the credentials changed or are in doubt, and what was asked for
 * before must not outlive that. A pending verification of the account's own
 * address changes nothing and stays.
 */
export async function voidAllOneTimeTokens (db: Db, userId: string, now: string): Promise<void> {
  await db.updateTable('one_time_tokens').set({ used_at: now })
    .where('user_id', '=', userId).where('purpose', 'in', ['change_email', 'reset_password']).where('used_at', 'is', null)
    .execute()
}

/** The unused, unexpired token with this hash and purpose, if any (without spending it). */
export function findLiveOneTimeToken (db: Db, hash: string, purpose: TokenPurpose, now: string): Promise<OneTimeTokenRow | undefined> {
  return db.selectFrom('one_time_tokens').selectAll()
    .where('token_hash', '=', hash).where('purpose', '=', purpose).where('used_at', 'is', null).where('expires_at', '>', now)
    .executeTakeFirst()
}

/** The unexpired token with this hash and one of `purposes`, used or not. */
export function findUnexpiredOneTimeToken (db: Db, hash: string, purposes: TokenPurpose[], now: string): Promise<OneTimeTokenRow | undefined> {
  return db.selectFrom('one_time_tokens').selectAll()
    .where('token_hash', '=', hash).where('purpose', 'in', purposes).where('expires_at', '>', now)
    .executeTakeFirst()
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
