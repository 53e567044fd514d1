import { PostgresAdapter, sql, type Kysely } from 'kysely'
import { prepared } from '../prepared.js'
import type { Database, NewUser, UserRow, UserUpdate } from '../types.js'

type Db = Kysely<Database>

/** A user with the names of their roles, sorted: what most reads of a user need, in one query. */
export type Account = UserRow & { roles: string[] }

function accountQuery (db: Db) {
  // string_agg with ORDER BY: PostgreSQL, and SQLite since 3.44 (better-sqlite3 bundles a newer one). Role names have no commas.
  return db.selectFrom('users').selectAll('users')
    .select(sql<string | null>`(select string_agg(role, ',' order by role) from user_roles where user_roles.user_id = users.id)`.as('role_names'))
}

function toAccount (row: (UserRow & { role_names: string | null }) | undefined): Account | undefined {
  if (!row) return undefined
  const { role_names: names, ...user } = row
  return { ...user, roles: names ? names.split(',') : [] }
}

const accountById = prepared((db: Db, id: string) => accountQuery(db).where('id', '=', id))
const accountByEmail = prepared((db: Db, email: string) => accountQuery(db).where(sql`lower(email)`, '=', email))
const accountByUsername = prepared((db: Db, username: string) => accountQuery(db).where(sql`lower(username)`, '=', username))

export async function findUserById (db: Db, id: string): Promise<Account | undefined> {
  return toAccount((await accountById(db, id))[0])
}

export async function findUserByEmail (db: Db, email: string): Promise<Account | undefined> {
  return toAccount((await accountByEmail(db, email.toLowerCase()))[0])
}

export async function findUserByUsername (db: Db, username: string): Promise<Account | undefined> {
  return toAccount((await accountByUsername(db, username.toLowerCase()))[0])
}

/** Creates a user with their roles. Two statements: run it in the caller's transaction. */
export async function insertUser (db: Db, user: NewUser, roles: string[]): Promise<Account> {
  const row = await db.insertInto('users').values(user).returningAll().executeTakeFirstOrThrow()
  if (roles.length > 0) await db.insertInto('user_roles').values(roles.map((role) => ({ user_id: row.id, role }))).execute()
  return { ...row, roles: [...roles].sort() }
}

/**
 * The account, read in `trx` so that no change of it lands between this read
 * and the commit: on PostgreSQL its row is share-locked (a change of it waits
 * for the commit, and one under way is waited for and then seen); SQLite runs
 * one transaction at a time.
 */
export async function findUserLocked (trx: Db, id: string): Promise<Account | undefined> {
  const locks = trx.getExecutor().adapter instanceof PostgresAdapter
  return toAccount(await (locks ? accountQuery(trx).where('id', '=', id).forShare() : accountQuery(trx).where('id', '=', id)).executeTakeFirst())
}

export interface UserFilters {
  emailPrefix?: string
  role?: string
  disabled?: boolean
}

/** Users in a stable order (created_at, id), after the `after` position; keyset pagination, so inserts never shift a page. */
export function listUsers (db: Db, filters: UserFilters, after: [string, string] | null, limit: number): Promise<UserRow[]> {
  let query = db.selectFrom('users').selectAll()
  if (filters.emailPrefix !== undefined) {
    // LIKE with the prefix's own % and _ escaped.
    const escaped = filters.emailPrefix.toLowerCase().replace(/[\\%_]/g, (c) => `\\${c}`)
    query = query.where(sql<boolean>`lower(email) like ${escaped + '%'} escape '\\'`)
  }
  if (filters.role !== undefined) {
    const role = filters.role
    query = query.where(({ exists, selectFrom }) => exists(selectFrom('user_roles').select('role').whereRef('user_roles.user_id', '=', 'users.id').where('user_roles.role', '=', role)))
  }
  if (filters.disabled !== undefined) query = query.where('disabled', '=', filters.disabled ? 1 : 0)
  if (after) query = query.where((eb) => eb(eb.refTuple('created_at', 'id'), '>', eb.tuple(after[0], after[1])))
  return query.orderBy('created_at').orderBy('id').limit(limit).execute()
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
