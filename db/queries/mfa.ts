import { sql, type Kysely } from 'kysely'
import type { Database, MfaChallengeRow, MfaFactorRow } from '../types.js'

type Db = Kysely<Database>

/** The account's factor of this kind, pending or confirmed. */
export function findFactor (db: Db, userId: string, kind: MfaFactorRow['kind'] = 'totp'): Promise<MfaFactorRow | undefined> {
  return db.selectFrom('mfa_factors').selectAll().where('user_id', '=', userId).where('kind', '=', kind).executeTakeFirst()
}

/** The account's confirmed factors. */
export function listFactors (db: Db, userId: string): Promise<MfaFactorRow[]> {
  return db.selectFrom('mfa_factors').selectAll().where('user_id', '=', userId).where('confirmed_at', 'is not', null).orderBy('created_at').execute()
}

/** A new pending factor in place of a pending one. Two statements: run it in the caller's transaction. */
export async function replacePendingFactor (db: Db, factor: { id: string, userId: string, secret: string, now: string }): Promise<void> {
  await db.deleteFrom('mfa_factors').where('user_id', '=', factor.userId).where('kind', '=', 'totp').where('confirmed_at', 'is', null).execute()
  await db.insertInto('mfa_factors').values({ id: factor.id, user_id: factor.userId, kind: 'totp', secret: factor.secret, created_at: factor.now }).execute()
}

/**
 * Records that the factor accepted the code of time step `step`, only if no
 * later or equal step was accepted before (and confirms a pending factor): a
 * code is good once, however many requests race with it. False otherwise.
 */
export async function acceptStep (db: Db, factorId: string, step: number, now: string): Promise<boolean> {
  const result = await db.updateTable('mfa_factors')
    .set({ last_step: step, last_used_at: now, confirmed_at: sql<string>`coalesce(confirmed_at, ${now})` })
    .where('id', '=', factorId)
    .where((eb) => eb.or([eb('last_step', 'is', null), eb('last_step', '<', step)]))
    .executeTakeFirst()
  return result.numUpdatedRows === 1n
}

/** Deletes the account's factors and recovery codes; returns how many factors went. Run it in the caller's transaction. */
export async function deleteFactors (db: Db, userId: string): Promise<number> {
  const result = await db.deleteFrom('mfa_factors').where('user_id', '=', userId).executeTakeFirst()
  await db.deleteFrom('recovery_codes').where('user_id', '=', userId).execute()
  return Number(result.numDeletedRows)
}

/** The account's recovery codes, all new (the old ones void). Two statements: run it in the caller's transaction. */
export async function replaceRecoveryCodes (db: Db, userId: string, hashes: string[], now: string): Promise<void> {
  await db.deleteFrom('recovery_codes').where('user_id', '=', userId).execute()
  await db.insertInto('recovery_codes').values(hashes.map((hash) => ({ code_hash: hash, user_id: userId, created_at: now }))).execute()
}

/** Spends a recovery code of the account, once, in one conditional write; false when it is not an unused one. */
export async function useRecoveryCode (db: Db, userId: string, hash: string, now: string): Promise<boolean> {
  const result = await db.updateTable('recovery_codes').set({ used_at: now })
    .where('code_hash', '=', hash).where('user_id', '=', userId).where('used_at', 'is', null)
    .executeTakeFirst()
  return result.numUpdatedRows === 1n
}

export async function unusedRecoveryCodes (db: Db, userId: string): Promise<number> {
  const row = await db.selectFrom('recovery_codes').select((eb) => eb.fn.countAll<number>().as('n'))
    .where('user_id', '=', userId).where('used_at', 'is', null).executeTakeFirstOrThrow()
  return Number(row.n)
}

export async function insertChallenge (db: Db, challenge: Omit<MfaChallengeRow, 'used_at' | 'created_at' | 'expires_at'> & { created_at: string, expires_at: string }): Promise<void> {
  await db.insertInto('mfa_challenges').values(challenge).execute()
}

/** The unused, unexpired challenge with this hash and purpose. */
export function findChallenge (db: Db, hash: string, purpose: MfaChallengeRow['purpose'], now: string): Promise<MfaChallengeRow | undefined> {
  return db.selectFrom('mfa_challenges').selectAll()
    .where('token_hash', '=', hash).where('purpose', '=', purpose).where('used_at', 'is', null).where('expires_at', '>', now)
    .executeTakeFirst()
}

/** Spends a challenge once, in one conditional write; false when it was spent or has expired. */
export async function consumeChallenge (db: Db, hash: string, now: string): Promise<boolean> {
  const result = await db.updateTable('mfa_challenges').set({ used_at: now })
    .where('token_hash', '=', hash).where('used_at', 'is', null).where('expires_at', '>', now)
    .executeTakeFirst()
  return result.numUpdatedRows === 1n
}

/** Deletes challenges that ended before `before`. */
export async function pruneChallenges (db: Db, before: string): Promise<void> {
  await db.deleteFrom('mfa_challenges').where('expires_at', '<', before).execute()
}
