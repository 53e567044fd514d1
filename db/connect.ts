import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import SQLite from 'better-sqlite3'
import { Kysely, Migrator, PostgresDialect, SqliteDialect, sql, type SqliteDatabase } from 'kysely'
import { migrations } from './migrations/index.js'
import type { Database } from './types.js'

export type DatabaseKind = 'sqlite' | 'postgres'

/** Distinct SQL texts kept prepared; the service has about a hundred, so this bound is only a guard. */
const STATEMENT_CACHE_SIZE = 500

/**
 * Kysely asks better-sqlite3 to prepare every query it runs, and preparing
 * costs more than running the service's small queries. Statements are kept
 * by their SQL text (parameters are bound at each run) and reused: the
 * driver is synchronous, so one is never run twice at once.
 */
function withPreparedStatements (sqlite: SQLite.Database): SqliteDatabase {
  const statements = new Map<string, SQLite.Statement>()
  return {
    prepare (text: string) {
      let statement = statements.get(text)
      if (!statement) {
        if (statements.size >= STATEMENT_CACHE_SIZE) statements.delete(statements.keys().next().value!)
        statement = sqlite.prepare(text)
        statements.set(text, statement)
      }
      return statement
    },
    close: () => sqlite.close()
  }
}

/**
 * Opens Kysely on the database DATABASE_URL names: `sqlite:<file>`,
 * `sqlite::memory:` or `postgres://…`. The PostgreSQL driver is loaded only
 * when it is used, so the embedded default does not carry it.
 */
export async function openDatabase (url: string): Promise<{ db: Kysely<Database>, kind: DatabaseKind }> {
  if (url.startsWith('sqlite:')) {
    const file = url.slice('sqlite:'.length)
    if (file !== ':memory:') mkdirSync(dirname(file), { recursive: true })
    const sqlite = new SQLite(file)
    sqlite.pragma('journal_mode = WAL')
    sqlite.pragma('foreign_keys = ON')
    sqlite.pragma('busy_timeout = 5000')
    sqlite.pragma('synchronous = NORMAL')
    return { db: new Kysely<Database>({ dialect: new SqliteDialect({ database: withPreparedStatements(sqlite) }) }), kind: 'sqlite' }
  }
  const { default: pg } = await import('pg')
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
