import type { Kysely } from 'kysely'
import type { Database, NewAuthEvent } from '../types.js'

export async function insertEvent (db: Kysely<Database>, event: NewAuthEvent): Promise<void> {
  await db.insertInto('auth_events').values(event).execute()
}
