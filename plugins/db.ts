import fp from 'fastify-plugin'
import type { Kysely } from 'kysely'
import { migrateToLatest, openDatabase, type DatabaseKind } from '../db/connect.js'
import type { Database } from '../db/types.js'

declare module 'fastify' {
  interface FastifyInstance {
    db: Kysely<Database>
    dbKind: DatabaseKind
  }
}

export default fp(async function db (fastify) {
  const { db, kind } = await openDatabase(fastify.config.DATABASE_URL)
  fastify.addHook('onClose', () => db.destroy())
  const applied = await migrateToLatest(db, kind)
  if (applied.length > 0) fastify.log.info({ migrations: applied }, 'database migrated')
  fastify.decorate('db', db)
  fastify.decorate('dbKind', kind)
}, { name: 'db', dependencies: ['config'] })
