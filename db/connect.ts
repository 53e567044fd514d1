import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import SQLite from 'better-sqlite3'
import { Kysely, Migrator, PostgresDialect, SqliteDialect, sql } from 'kysely'
import pg from 'pg'
import { migrations } from './migrations/index.js'
import type { Database } from './types.js'

export type DatabaseKind = 'sqlite' | 'postgres'

/** Opens Kysely on the database DATABASE_URL names: `sqlite:<file>`, `sqlite::memory:` or `postgres://…`. */
export function openDatabase (url: string): { db: Kysely<Database>, kind: DatabaseKind } {
  if (url.startsWith('sqlite:')) {
    const file = url.slice('sqlite:'.length)
    if (file !== ':memory:') mkdirSync(dirname(file), { recursive: true })
    const sqlite = new SQLite(file)
    sqlite.pragma('journal_mode = WAL')
    sqlite.pragma('foreign_keys = ON')
    sqlite.pragma('busy_timeout = 5000')
    sqlite.pragma('synchronous = NORMAL')
    return { db: new Kysely<Database>({ dialect: new SqliteDialect({ database: sqlite }) }), kind: 'sqlite' }
  }
  const pool = new pg.Pool({ connectionString: url, max: 10, connectionTimeoutMillis: 5000 })
  // An idle client that loses its server must not crash the process.
  pool.on('error', () => {})
  return { db: new Kysely<Database>({ dialect: new PostgresDialect({ pool }) }), kind: 'postgres' }
}

/** Brings the schema up to date; safe to run at every start and from several replicas (Kysely locks). */
export async function migrateToLatest (db: Kysely<Database>, kind: DatabaseKind): Promise<string[]> {
  // On PostgreSQL, keep Kysely's own tables in the schema the service uses (search_path), not wherever it finds some.
  const migrationTableSchema = kind === 'postgres'
    ? (await sql<{ schema: string }>`select current_schema() as schema`.execute(db)).rows[0].schema
    : undefined
  const migrator = new Migrator({ db, provider: { getMigrations: async () => migrations }, migrationTableSchema })
  const { error, results } = await migrator.migrateToLatest()
  if (error) throw error instanceof Error ? error : new Error(String(error))
  return (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName)
}
