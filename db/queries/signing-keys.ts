import type { Insertable, Kysely } from 'kysely'
import type { Database, SigningKeyRow, SigningKeysTable } from '../types.js'

type Db = Kysely<Database>

/** Keys of an algorithm not retired, or retired after `retiredAfter`; newest first. */
export function listKeys (db: Db, algorithm: string, retiredAfter: string): Promise<SigningKeyRow[]> {
  return db.selectFrom('signing_keys').selectAll()
    .where('algorithm', '=', algorithm)
    .where((eb) => eb.or([eb('retired_at', 'is', null), eb('retired_at', '>', retiredAfter)]))
    .orderBy('created_at', 'desc')
    .orderBy('kid')
    .execute()
}

export async function insertKey (db: Db, key: Insertable<SigningKeysTable>): Promise<void> {
  await db.insertInto('signing_keys').values(key).execute()
}

/** Adds a key and sets every other live key of its algorithm to retire at `retireAt`. Two statements: run it in the caller's transaction. */
export async function insertKeyRetiringOthers (db: Db, key: Insertable<SigningKeysTable>, retireAt: string): Promise<void> {
  await db.updateTable('signing_keys').set({ retired_at: retireAt }).where('algorithm', '=', key.algorithm).where('retired_at', 'is', null).execute()
  await insertKey(db, key)
}
