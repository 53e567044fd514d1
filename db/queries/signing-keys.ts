import type { Kysely } from 'kysely'
import type { Insertable } from 'kysely'
import type { Database, SigningKeyRow, SigningKeysTable } from '../types.js'

type Db = Kysely<Database>

/** Keys not yet retired, newest first: the first one signs. */
export function listLiveKeys (db: Db): Promise<SigningKeyRow[]> {
  return db.selectFrom('signing_keys').selectAll().where('retired_at', 'is', null).orderBy('created_at', 'desc').orderBy('kid').execute()
}

export async function insertKey (db: Db, key: Insertable<SigningKeysTable>): Promise<void> {
  await db.insertInto('signing_keys').values(key).execute()
}
