import type { Kysely } from 'kysely'

// Frozen. auth_events: the security trail (refresh reuse now; more types later).
// revoked_sessions: the revocation list's durable copy. It has no foreign key,
// so it outlives a deleted user's sessions for as long as their access tokens can.
export async function up (db: Kysely<any>): Promise<void> {
  await db.schema.createTable('auth_events')
    .addColumn('id', 'uuid', (c) => c.primaryKey())
    .addColumn('user_id', 'uuid')
    .addColumn('session_id', 'uuid')
    .addColumn('type', 'text', (c) => c.notNull())
    .addColumn('ip', 'text')
    .addColumn('user_agent', 'text')
    .addColumn('created_at', 'timestamptz', (c) => c.notNull())
    .addColumn('detail', 'text', (c) => c.notNull().defaultTo('{}'))
    .execute()
  await db.schema.createIndex('auth_events_user_created').on('auth_events').columns(['user_id', 'created_at']).execute()
  await db.schema.createIndex('auth_events_created').on('auth_events').column('created_at').execute()

  await db.schema.createTable('revoked_sessions')
    .addColumn('session_id', 'uuid', (c) => c.primaryKey())
    .addColumn('revoked_at', 'timestamptz', (c) => c.notNull())
    .addColumn('expires_at', 'timestamptz', (c) => c.notNull())
    .execute()
  await db.schema.createIndex('revoked_sessions_expires').on('revoked_sessions').column('expires_at').execute()
}

export async function down (db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('revoked_sessions').execute()
  await db.schema.dropTable('auth_events').execute()
}
