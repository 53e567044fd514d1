import type { Kysely } from 'kysely'

// Frozen. Roles, the permissions each grants, and who has which role.
export async function up (db: Kysely<any>): Promise<void> {
  await db.schema.createTable('roles')
    .addColumn('name', 'text', (c) => c.primaryKey())
    .addColumn('description', 'text', (c) => c.notNull().defaultTo(''))
    .addColumn('created_at', 'timestamptz', (c) => c.notNull())
    .execute()
  await db.schema.createTable('role_permissions')
    .addColumn('role', 'text', (c) => c.notNull().references('roles.name').onDelete('cascade'))
    .addColumn('permission', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('role_permissions_pk', ['role', 'permission'])
    .execute()
  await db.schema.createTable('user_roles')
    .addColumn('user_id', 'uuid', (c) => c.notNull().references('users.id').onDelete('cascade'))
    .addColumn('role', 'text', (c) => c.notNull().references('roles.name').onDelete('cascade'))
    .addPrimaryKeyConstraint('user_roles_pk', ['user_id', 'role'])
    .execute()
  await db.schema.createIndex('user_roles_role').on('user_roles').column('role').execute()
  await db.schema.createIndex('users_created_id').on('users').columns(['created_at', 'id']).execute()
  await db.schema.createIndex('auth_events_type_created').on('auth_events').columns(['type', 'created_at']).execute()
}

export async function down (db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('auth_events_type_created').execute()
  await db.schema.dropIndex('users_created_id').execute()
  for (const table of ['user_roles', 'role_permissions', 'roles']) await db.schema.dropTable(table).execute()
}
