import { randomUUID } from 'node:crypto'
import { join } from 'node:path'
import { Migrator, NO_MIGRATIONS, sql, type Kysely } from 'kysely'
import pg from 'pg'
import t, { type Test } from 'tap'
import { migrateToLatest, openDatabase } from '../../db/connect.js'
import { migrations } from '../../db/migrations/index.js'
import { uniqueViolation } from '../../db/queries/users.js'
import type { Database } from '../../db/types.js'
import { tempDir } from '../helper.js'

const TABLES = ['users', 'sessions', 'refresh_tokens', 'signing_keys']

interface Target {
  name: string
  /** Opens a fresh, empty database and closes (and removes) it when the test ends. */
  open: (t: Test) => Promise<Opened>
}

interface Opened {
  db: Kysely<Database>
  kind: 'sqlite' | 'postgres'
  /** The PostgreSQL schema the database lives in. */
  schema?: string
  tables: () => Promise<string[]>
}

function sqliteTables (db: Kysely<Database>) {
  return async () => (await sql<{ name: string }>`select name from sqlite_master where type = 'table'`.execute(db)).rows.map((r) => r.name)
}

const targets: Target[] = [
  {
    name: 'sqlite memory',
    async open (t) {
      const { db, kind } = await openDatabase('sqlite::memory:')
      t.teardown(() => db.destroy())
      return { db, kind, tables: sqliteTables(db) }
    }
  },
  {
    name: 'sqlite file',
    async open (t) {
      const { db, kind } = await openDatabase(`sqlite:${join(tempDir(t), 'nested', 'auth.db')}`)
      t.teardown(() => db.destroy())
      return { db, kind, tables: sqliteTables(db) }
    }
  }
]

if (process.env.TEST_DATABASE_URL) {
  const base = process.env.TEST_DATABASE_URL
  targets.push({
    name: 'postgres (fresh schema)',
    async open (t) {
      const schema = `migrations_${process.pid}_${Date.now().toString(36)}_${randomUUID().slice(0, 8)}`
      const admin = new pg.Client({ connectionString: base })
      await admin.connect()
      await admin.query(`create schema "${schema}"`)
      const { db, kind } = await openDatabase(`${base}${base.includes('?') ? '&' : '?'}options=-c%20search_path%3D${schema}`)
      t.teardown(async () => {
        await db.destroy()
        await admin.query(`drop schema "${schema}" cascade`)
        await admin.end()
      })
      const tables = async () => (await sql<{ table_name: string }>`select table_name from information_schema.tables where table_schema = ${schema}`.execute(db)).rows.map((r) => r.table_name)
      return { db, kind, schema, tables }
    }
  })
}

/**
 * Kysely's Migrator over the service's migrations, its own tables kept in the
 * database's schema (named explicitly on PostgreSQL, so that Kysely tables in
 * another schema of the same database are not taken for these).
 */
function migrator ({ db, schema }: Opened) {
  return new Migrator({ db, provider: { getMigrations: async () => migrations }, ...(schema ? { migrationTableSchema: schema } : {}) })
}

const now = () => new Date().toISOString()

function newUser (email: string, username: string | null = null) {
  return { id: randomUUID(), email, username, password_hash: '$argon2id$test', email_verified: 0, disabled: 0, created_at: now(), updated_at: now() }
}

/** The error `promise` rejects with (fails the test when it resolves). */
async function rejection (t: Test, promise: Promise<unknown>, message: string): Promise<unknown> {
  try {
    await promise
  } catch (err) {
    t.pass(message)
    return err
  }
  t.fail(`${message}: it succeeded`)
  return undefined
}

for (const target of targets) {
  t.test(target.name, async (t) => {
    t.test('migrateToLatest runs every migration once; running it again does nothing', async (t) => {
      const { db, kind, tables } = await target.open(t)
      t.same(await tables(), [], 'an empty database to start with')
      let applied: string[]
      try {
        applied = await migrateToLatest(db, kind)
      } catch (err) {
        // On PostgreSQL this fails when another schema of the database already has Kysely's tables.
        t.fail(`migrateToLatest failed: ${(err as Error).message}`)
        return
      }
      t.same(applied, Object.keys(migrations), 'every migration, in order')
      t.same(await migrateToLatest(db, kind).catch((err: Error) => err.message), [], 'the second run applies nothing')
      const names = await tables()
      for (const table of TABLES) t.ok(names.includes(table), `table ${table} exists`)
    })

    const opened = await target.open(t)
    const { db, kind, tables } = opened

    t.test('the migrations, through Kysely\'s Migrator, run and are recorded', async (t) => {
      const first = await migrator(opened).migrateToLatest()
      t.error(first.error, 'no error')
      t.same(first.results?.map((r) => [r.migrationName, r.status]), Object.keys(migrations).map((name) => [name, 'Success']))
      const second = await migrator(opened).migrateToLatest()
      t.error(second.error)
      t.same(second.results, [], 'twice is a no-op')
      const names = await tables()
      for (const table of TABLES) t.ok(names.includes(table), `table ${table} exists`)
      const status = await migrator(opened).getMigrations()
      t.ok(status.length > 0 && status.every((m) => m.executedAt instanceof Date), 'all recorded as executed')
    })

    if (kind === 'sqlite') {
      t.test('SQLite enforces foreign keys', async (t) => {
        const { rows } = await sql<{ foreign_keys: number }>`pragma foreign_keys`.execute(db)
        t.equal(rows[0]?.foreign_keys, 1)
      })
    }

    t.test('emails are unique whatever their case, in the database itself', async (t) => {
      const local = `case-${randomUUID().slice(0, 8)}`
      await db.insertInto('users').values(newUser(`${local}@example.com`)).execute()
      const err = await rejection(t, db.insertInto('users').values(newUser(`${local.toUpperCase()}@Example.COM`)).execute(), 'a second row differing in case is refused')
      t.equal(uniqueViolation(err), 'email', 'and recognised as the email index')
      const count = await db.selectFrom('users').select((eb) => eb.fn.countAll<number>().as('n')).where(sql`lower(email)`, '=', `${local}@example.com`).executeTakeFirstOrThrow()
      t.equal(Number(count.n), 1, 'one row stays')
    })

    t.test('usernames are unique whatever their case; many users may have none', async (t) => {
      const name = `name_${randomUUID().slice(0, 8)}`
      await db.insertInto('users').values(newUser(`${name}-1@example.com`, name)).execute()
      const err = await rejection(t, db.insertInto('users').values(newUser(`${name}-2@example.com`, name.toUpperCase())).execute(), 'the same username in another case is refused')
      t.equal(uniqueViolation(err), 'username', 'and recognised as the username index')
      await db.insertInto('users').values(newUser(`none-${name}-1@example.com`)).execute()
      await db.insertInto('users').values(newUser(`none-${name}-2@example.com`)).execute()
      const nulls = await db.selectFrom('users').select('id').where('email', 'like', `none-${name}-%`).execute()
      t.equal(nulls.length, 2, 'two users without a username')
    })

    t.test('deleting a user deletes their sessions and refresh tokens', async (t) => {
      const user = newUser(`cascade-${randomUUID().slice(0, 8)}@example.com`)
      const other = newUser(`keep-${randomUUID().slice(0, 8)}@example.com`)
      await db.insertInto('users').values([user, other]).execute()
      const sessions = [randomUUID(), randomUUID()]
      const kept = randomUUID()
      for (const [id, userId] of [[sessions[0], user.id], [sessions[1], user.id], [kept, other.id]]) {
        await db.insertInto('sessions').values({ id, user_id: userId, created_at: now(), last_used_at: now(), expires_at: now(), user_agent: null, ip: null }).execute()
        await db.insertInto('refresh_tokens').values({ token_hash: `hash-${id}`, session_id: id, created_at: now(), expires_at: now() }).execute()
      }
      await db.insertInto('refresh_tokens').values({ token_hash: `hash-2-${sessions[0]}`, session_id: sessions[0], created_at: now(), expires_at: now(), rotated_at: now() }).execute()

      await db.deleteFrom('users').where('id', '=', user.id).execute()

      t.same(await db.selectFrom('sessions').select('id').where('user_id', '=', user.id).execute(), [], 'sessions gone')
      t.same(await db.selectFrom('refresh_tokens').select('token_hash').where('session_id', 'in', sessions).execute(), [], 'refresh tokens gone')
      t.equal((await db.selectFrom('sessions').select('id').where('id', '=', kept).execute()).length, 1, "another user's session stays")
      t.equal((await db.selectFrom('refresh_tokens').select('token_hash').where('session_id', '=', kept).execute()).length, 1, 'and its refresh token')

      await rejection(t, db.insertInto('sessions').values({ id: randomUUID(), user_id: randomUUID(), created_at: now(), last_used_at: now(), expires_at: now(), user_agent: null, ip: null }).execute(), 'a session of no user is refused')
      await rejection(t, db.insertInto('refresh_tokens').values({ token_hash: `orphan-${randomUUID()}`, session_id: randomUUID(), created_at: now(), expires_at: now() }).execute(), 'a refresh token of no session is refused')
    })

    t.test('0005 stores addresses NFKC-normalized, leaving one that would collide as it was', async (t) => {
      const tag = randomUUID().slice(0, 8)
      await migrator(opened).migrateTo('0004_roles')
      const decomposed = newUser(`jose\u0301-${tag}@example.com`)
      const fullWidth = newUser(`\uff4b\uff41\uff54\uff45-${tag}@example.com`)
      const holder = newUser(`ann-${tag}@example.com`)
      const collider = newUser(`\uff41nn-${tag}@example.com`)
      await db.insertInto('users').values([decomposed, fullWidth, holder, collider]).execute()
      const up = await migrator(opened).migrateToLatest()
      t.error(up.error, 'migrated')
      const emailOf = async (id: string) => (await db.selectFrom('users').select('email').where('id', '=', id).executeTakeFirstOrThrow()).email
      t.equal(await emailOf(decomposed.id), `jos\u00e9-${tag}@example.com`, 'composed')
      t.equal(await emailOf(fullWidth.id), `kate-${tag}@example.com`, 'full-width made plain')
      t.equal(await emailOf(holder.id), `ann-${tag}@example.com`, 'the holder keeps its address')
      t.equal(await emailOf(collider.id), collider.email, 'the colliding row is left for a person to decide')
    })

    t.test('every migration goes down and up again', async (t) => {
      const down = await migrator(opened).migrateTo(NO_MIGRATIONS)
      t.error(down.error, 'down without error')
      const left = (await tables()).filter((name) => !name.startsWith('kysely_') && name !== 'sqlite_sequence')
      t.same(left, [], 'no table left')
      const up = await migrator(opened).migrateToLatest()
      t.error(up.error)
      t.same(up.results?.map((r) => r.migrationName), Object.keys(migrations), 'up again')
      for (const table of TABLES) t.ok((await tables()).includes(table), `table ${table} is back`)
    })
  })
}
