import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import SQLite from 'better-sqlite3'
import { Kysely, Migrator, PostgresDialect, SqliteDialect, sql, type SqliteDatabase } from 'kysely'
import { LRUCache } from 'lru-cache'
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
export function withPreparedStatements (sqlite: SQLite.Database, limit = STATEMENT_CACHE_SIZE): SqliteDatabase {
  // Past the bound, the statement used least recently is dropped (and prepared again if it comes back).
  const statements = new LRUCache<string, SQLite.Statement>({ max: limit })
  return {
    prepare (text: string) {
      let statement = statements.get(text)
      if (!statement) {
        statement = sqlite.prepare(text)
        statements.set(text, statement)
      }
      return statement
    },
    close: () => sqlite.close()
  }
}

export interface DatabaseOptions {
  /**
   * The longest wait, in ms: for a pooled connection and for one statement
   * (PostgreSQL), for a lock (SQLite). Unset: no limit on PostgreSQL (migrations).
   */
  timeoutMs?: number
  /** Told of an error on a connection no query is waiting on (a restart, a failover, a proxy's idle cut). */
  onConnectionError?: (err: Error) => void
}

/** Error codes and messages by which the drivers say the database is away, not that the query is wrong. */
const UNAVAILABLE_CODES = /^(08...|57P0[123]|53300|57014|ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|EHOSTUNREACH|ENETUNREACH|EAI_AGAIN|SQLITE_BUSY.*|SQLITE_LOCKED.*|SQLITE_IOERR.*|SQLITE_FULL|SQLITE_CANTOPEN)$/
const UNAVAILABLE_MESSAGES = /^(Connection terminated|timeout exceeded when trying to connect|Query read timeout|Client has encountered a connection error|Client was closed|Cannot use a pool after calling end)/

/**
 * True when `err` says the database cannot be reached or answered too late
 * (PostgreSQL restarting or failing over, a lost connection, a statement or
 * pool timeout; SQLite locked or unwritable): the request may succeed if
 * retried, unlike a query the database refused.
 */
export function databaseUnavailable (err: unknown): boolean {
  const e = err as { code?: unknown, message?: unknown } | null
  return (typeof e?.code === 'string' && UNAVAILABLE_CODES.test(e.code)) ||
    (typeof e?.message === 'string' && UNAVAILABLE_MESSAGES.test(e.message))
}

/**
 * Opens Kysely on the database DATABASE_URL names: `sqlite:<file>`,
 * `sqlite::memory:` or `postgres://…`. The PostgreSQL driver is loaded only
 * when it is used, so the embedded default does not carry it.
 */
export async function openDatabase (url: string, opts: DatabaseOptions = {}): Promise<{ db: Kysely<Database>, kind: DatabaseKind }> {
  if (url.startsWith('sqlite:')) {
    const file = url.slice('sqlite:'.length)
    if (file !== ':memory:') mkdirSync(dirname(file), { recursive: true })
    const sqlite = new SQLite(file)
    sqlite.pragma('journal_mode = WAL')
    sqlite.pragma('foreign_keys = ON')
    sqlite.pragma(`busy_timeout = ${opts.timeoutMs ?? 5000}`)
    sqlite.pragma('synchronous = NORMAL')
    return { db: new Kysely<Database>({ dialect: new SqliteDialect({ database: withPreparedStatements(sqlite) }) }), kind: 'sqlite' }
  }
  const { default: pg } = await import('pg')
  const timeouts = opts.timeoutMs === undefined ? {} : { connectionTimeoutMillis: opts.timeoutMs, query_timeout: opts.timeoutMs, statement_timeout: opts.timeoutMs }
  const pool = new pg.Pool({ connectionString: url, max: 10, keepAlive: true, ...timeouts })
  // A client that loses its server emits 'error': the pool listens on idle ones, but one checked
  // out (between a transaction's queries, or while its query fails) would end the process.
  // Every client gets a listener for its whole life; the pool drops a broken one on release.
  const onError = opts.onConnectionError ?? (() => {})
  pool.on('error', onError)
  pool.on('connect', (client) => { client.on('error', onError) })
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
