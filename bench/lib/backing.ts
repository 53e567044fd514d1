/**
 * Where a benchmarked service keeps its data: a fresh SQLite file in a
 * temporary directory, or, given a PostgreSQL URL, a throwaway database
 * (bench_<pid>_<n>) created on that server and dropped at the end; given a
 * Redis URL, a key prefix of its own (bench-<pid>-<n>:) whose keys are
 * deleted at the end. Each start of a service gets a fresh one.
 */
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import pg from 'pg'
import { assertLoopback, atCleanup } from './guard.js'

export interface Store {
  /**
   * The service's environment for it: DATABASE_URL, REDIS_URL with
   * REDIS_KEY_PREFIX, and secrets every service on it must share
   * (KEY_ENCRYPTION_SECRET for the stored signing keys, JWT_SECRET for HS256).
   */
  env: Record<string, string>
  /** The database's name on the PostgreSQL server (null for SQLite). */
  database: string | null
}

export interface Backing {
  /** For the report: 'SQLite file', or 'PostgreSQL 15.2 + Redis 7.0.15'. */
  label: string
  kind: 'sqlite' | 'postgres'
  redis: boolean
  /** A fresh database (and Redis prefix) for one service, or for a pair of them. */
  fresh: () => Promise<Store>
  /** Transactions committed or rolled back in `database` so far (PostgreSQL's statistics; null without PostgreSQL). */
  transactions: (database: string | null) => Promise<number | null>
  /** Commands the Redis server has processed so far, from every client (null without Redis). */
  redisCommands: () => Promise<number | null>
}

/** Opens the backing named by the URLs (each optional) and removes everything it made at cleanup. */
export async function openBacking (urls: { database?: string, redis?: string }): Promise<Backing> {
  let n = 0
  const tag = `${process.pid}_${Date.now().toString(36)}`
  const labels: string[] = []

  let admin: pg.Client | null = null
  const databases: string[] = []
  let sqliteDir: string | null = null
  if (urls.database) {
    if (!/^postgres(ql)?:\/\//.test(urls.database)) throw new Error('the database URL must be postgres://… (SQLite is the default)')
    assertLoopback(urls.database, 'PostgreSQL')
    admin = new pg.Client({ connectionString: urls.database })
    await admin.connect()
    const { rows } = await admin.query<{ v: string }>("select current_setting('server_version') as v")
    labels.push(`PostgreSQL ${rows[0].v.split(' ')[0]}`)
    const client = admin
    atCleanup(async () => {
      for (const name of databases) await client.query(`drop database if exists "${name}" with (force)`)
      await client.end()
    })
  } else {
    sqliteDir = mkdtempSync(join(tmpdir(), 'auth-bench-'))
    const dir = sqliteDir
    labels.push('SQLite file')
    atCleanup(async () => rmSync(dir, { recursive: true, force: true }))
  }

  let redis: Redis | null = null
  const redisPrefix = `bench-${tag}-`
  if (urls.redis) {
    assertLoopback(urls.redis, 'Redis')
    redis = new Redis(urls.redis, { lazyConnect: true, maxRetriesPerRequest: 1 })
    await redis.connect()
    const version = /redis_version:(\S+)/.exec(await redis.info('server'))?.[1] ?? '?'
    labels.push(`Redis ${version}`)
    const client = redis
    atCleanup(async () => {
      // Everything the services wrote sits under this run's prefix.
      for await (const keys of client.scanStream({ match: `${redisPrefix}*`, count: 500 })) {
        if ((keys as string[]).length > 0) await client.del(...(keys as string[]))
      }
      await client.quit()
    })
  }

  return {
    label: labels.join(' + '),
    kind: admin ? 'postgres' : 'sqlite',
    redis: redis !== null,

    async fresh () {
      n++
      const secret = () => randomBytes(32).toString('base64url')
      const env: Record<string, string> = { KEY_ENCRYPTION_SECRET: secret(), JWT_SECRET: secret() }
      let database: string | null = null
      if (admin) {
        database = `bench_${tag}_${n}`
        await admin.query(`create database "${database}"`)
        databases.push(database)
        const url = new URL(urls.database!)
        url.pathname = `/${database}`
        env.DATABASE_URL = url.href
      } else {
        env.DATABASE_URL = `sqlite:${join(sqliteDir!, `auth-${n}.db`)}`
      }
      if (redis) {
        env.REDIS_URL = urls.redis!
        env.REDIS_KEY_PREFIX = `${redisPrefix}${n}:`
      }
      return { env, database }
    },

    async transactions (database) {
      if (!admin || !database) return null
      const { rows } = await admin.query<{ n: string }>('select xact_commit + xact_rollback as n from pg_stat_database where datname = $1', [database])
      return rows.length > 0 ? Number(rows[0].n) : null
    },

    async redisCommands () {
      if (!redis) return null
      return Number(/total_commands_processed:(\d+)/.exec(await redis.info('stats'))?.[1] ?? NaN)
    }
  }
}
