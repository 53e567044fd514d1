import { sql, type Kysely } from 'kysely'
import type { Database, NewUser, UserRow, UserUpdate } from '../types.js'

type Db = Kysely<Database>

export function findUserById (db: Db, id: string): Promise<UserRow | undefined> {
  return db.selectFrom('users').selectAll().where('id', '=', id).executeTakeFirst()
}

export function findUserByEmail (db: Db, email: string): Promise<UserRow | undefined> {
  return db.selectFrom('users').selectAll().where(sql`lower(email)`, '=', email.toLowerCase()).executeTakeFirst()
}

export function findUserByUsername (db: Db, username: string): Promise<UserRow | undefined> {
  return db.selectFrom('users').selectAll().where(sql`lower(username)`, '=', username.toLowerCase()).executeTakeFirst()
}

export async function insertUser (db: Db, user: NewUser): Promise<UserRow> {
  return db.insertInto('users').values(user).returningAll().executeTakeFirstOrThrow()
}

export function updateUser (db: Db, id: string, changes: UserUpdate): Promise<UserRow | undefined> {
  return db.updateTable('users').set(changes).where('id', '=', id).returningAll().executeTakeFirst()
}

/** Deletes the user; their sessions and refresh tokens go with them (ON DELETE CASCADE). */
export async function deleteUser (db: Db, id: string): Promise<boolean> {
  const result = await db.deleteFrom('users').where('id', '=', id).executeTakeFirst()
  return result.numDeletedRows > 0n
}

/**
 * Which unique index a failed insert or update hit, if any. SQLite names the
 * index in its message, PostgreSQL in `constraint`.
 */
export function uniqueViolation (err: unknown): 'email' | 'username' | null {
  const e = err as { code?: string, constraint?: string, message?: string }
  if (e?.code !== '23505' && e?.code !== 'SQLITE_CONSTRAINT_UNIQUE') return null
  const where = `${e.constraint ?? ''} ${e.message ?? ''}`
  if (where.includes('users_email_unique')) return 'email'
  if (where.includes('users_username_unique')) return 'username'
  return null
}
