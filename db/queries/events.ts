import type { Kysely } from 'kysely'
import type { AuthEventRow, Database, NewAuthEvent } from '../types.js'

type Db = Kysely<Database>

export async function insertEvent (db: Db, event: NewAuthEvent): Promise<void> {
  await db.insertInto('auth_events').values(event).execute()
}

export interface EventFilters {
  userId?: string
  type?: string
  from?: string
  to?: string
}

/** Events newest first, before the `before` position (keyset pagination on created_at, id). */
export function listEvents (db: Db, filters: EventFilters, before: [string, string] | null, limit: number): Promise<AuthEventRow[]> {
  let query = db.selectFrom('auth_events').selectAll()
  if (filters.userId !== undefined) query = query.where('user_id', '=', filters.userId)
  if (filters.type !== undefined) query = query.where('type', '=', filters.type)
  if (filters.from !== undefined) query = query.where('created_at', '>=', filters.from)
  if (filters.to !== undefined) query = query.where('created_at', '<', filters.to)
  if (before) query = query.where((eb) => eb(eb.refTuple('created_at', 'id'), '<', eb.tuple(before[0], before[1])))
  return query.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(limit).execute()
}

export async function pruneEvents (db: Db, olderThan: string): Promise<number> {
  const result = await db.deleteFrom('auth_events').where('created_at', '<', olderThan).executeTakeFirst()
  return Number(result.numDeletedRows)
}
