import fp from 'fastify-plugin'
import type { Kysely } from 'kysely'
import { migrateToLatest, openDatabase } from '../../db/connect.js'
import type { Database } from '../../db/types.js'
import { withProblems } from '../../schemas/problem.js'
import { Errors } from '../../services/errors.js'

declare module 'fastify' {
  interface FastifyInstance {
    db: Kysely<Database>
  }
  interface FastifyContextConfig {
    /**
     * false: the route never answers 503 DATABASE_UNAVAILABLE (it reads no
     * database, or says itself that it is away, as readiness does). Only the
     * document reads it.
     */
    database?: false
  }
}

/**
 * The database, migrated. Every wait on it is bounded (DATABASE_TIMEOUT_SECONDS):
 * a database that is away or frozen costs a request a 503, never a hang, and
 * a lost connection is replaced, never the end of the process.
 */
export default fp(async function db (fastify) {
  const { DATABASE_URL: url, DATABASE_TIMEOUT_SECONDS: timeout } = fastify.config
  const { db, kind } = await openDatabase(url, {
    timeoutMs: timeout * 1000,
    onConnectionError: (err) => fastify.log.warn({ err: { message: err.message, code: (err as { code?: string }).code } }, 'database connection lost; it is replaced at the next query')
  })
  fastify.addHook('onClose', () => db.destroy())
  // Migrations may wait on another replica's lock, and a large one runs longer than a request may:
  // on PostgreSQL they run on a connection of their own without the request timeouts.
  const migrator = kind === 'postgres' ? (await openDatabase(url)).db : db
  try {
    const applied = await migrateToLatest(migrator, kind)
    if (applied.length > 0) fastify.log.info({ migrations: applied }, 'database migrated')
  } finally {
    if (migrator !== db) await migrator.destroy()
  }
  fastify.decorate('db', db)
  // For the document: a route that reads the database may find it away (plugins/external/errors.ts answers so).
  fastify.addHook('onRoute', (route) => {
    if (route.config?.database !== false) route.schema = withProblems(route.schema, [Errors.DatabaseUnavailable])
  })
}, { name: 'db', dependencies: ['config'] })
