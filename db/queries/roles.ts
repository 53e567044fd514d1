import type { Kysely } from 'kysely'
import type { Database } from '../types.js'

type Db = Kysely<Database>

export interface RoleWithPermissions {
  name: string
  description: string
  permissions: string[]
}

/**
 * Creates the roles, or sets each one's description and permissions to
 * exactly those given: what a built-in role is, is code, not data, so a
 * permission put on one (by hand, or through an old bug) goes at the next
 * start. Returns the permission links it removed. Several statements: run it in the
 * caller's transaction.
 */
export async function seedRoles (trx: Db, roles: RoleWithPermissions[], now: string): Promise<Array<{ role: string, permission: string }>> {
  await trx.insertInto('roles').values(roles.map((r) => ({ name: r.name, description: r.description, created_at: now })))
    .onConflict((oc) => oc.column('name').doUpdateSet((eb) => ({ description: eb.ref('excluded.description') }))).execute()
  const removed: Array<{ role: string, permission: string }> = []
  for (const r of roles) {
    let extra = trx.deleteFrom('role_permissions').where('role', '=', r.name)
    if (r.permissions.length > 0) extra = extra.where('permission', 'not in', r.permissions)
    removed.push(...await extra.returning(['role', 'permission']).execute())
  }
  const links = roles.flatMap((r) => r.permissions.map((permission) => ({ role: r.name, permission })))
  if (links.length > 0) {
    await trx.insertInto('role_permissions').values(links).onConflict((oc) => oc.columns(['role', 'permission']).doNothing()).execute()
  }
  return removed.sort((a, b) => a.role.localeCompare(b.role) || a.permission.localeCompare(b.permission))
}

export async function listRoles (db: Db): Promise<RoleWithPermissions[]> {
  const [roles, links] = await Promise.all([
    db.selectFrom('roles').select(['name', 'description']).orderBy('name').execute(),
    db.selectFrom('role_permissions').select(['role', 'permission']).orderBy('permission').execute()
  ])
  return roles.map((r) => ({ ...r, permissions: links.filter((l) => l.role === r.name).map((l) => l.permission) }))
}

/** Creates a role with its permissions. Two statements: run it in the caller's transaction. */
export async function insertRole (db: Db, role: RoleWithPermissions, now: string): Promise<void> {
  await db.insertInto('roles').values({ name: role.name, description: role.description, created_at: now }).execute()
  if (role.permissions.length > 0) {
    await db.insertInto('role_permissions').values(role.permissions.map((permission) => ({ role: role.name, permission }))).execute()
  }
}

/** Replaces a role's description and permissions; false when there is no such role. Run it in the caller's transaction. */
export async function updateRole (db: Db, role: RoleWithPermissions): Promise<boolean> {
  const result = await db.updateTable('roles').set({ description: role.description }).where('name', '=', role.name).executeTakeFirst()
  if (result.numUpdatedRows !== 1n) return false
  await db.deleteFrom('role_permissions').where('role', '=', role.name).execute()
  if (role.permissions.length > 0) {
    await db.insertInto('role_permissions').values(role.permissions.map((permission) => ({ role: role.name, permission }))).execute()
  }
  return true
}

/** Deletes a role (its holders lose it, by the foreign keys); false when there is no such role. */
export async function deleteRole (db: Db, name: string): Promise<boolean> {
  const result = await db.deleteFrom('roles').where('name', '=', name).executeTakeFirst()
  return result.numDeletedRows > 0n
}

/** Replaces the user's roles. Two statements: run it in the caller's transaction. */
export async function setUserRoles (db: Db, userId: string, roles: string[]): Promise<void> {
  await db.deleteFrom('user_roles').where('user_id', '=', userId).execute()
  if (roles.length > 0) await db.insertInto('user_roles').values(roles.map((role) => ({ user_id: userId, role }))).execute()
}

export async function addUserRole (db: Db, userId: string, role: string): Promise<void> {
  await db.insertInto('user_roles').values({ user_id: userId, role }).onConflict((oc) => oc.columns(['user_id', 'role']).doNothing()).execute()
}

/** The roles of several users at once, by user id. */
export async function rolesOfUsers (db: Db, userIds: string[]): Promise<Map<string, string[]>> {
  const byUser = new Map<string, string[]>(userIds.map((id) => [id, []]))
  if (userIds.length === 0) return byUser
  const rows = await db.selectFrom('user_roles').select(['user_id', 'role']).where('user_id', 'in', userIds).orderBy('role').execute()
  for (const row of rows) byUser.get(row.user_id)?.push(row.role)
  return byUser
}

export async function usersWithRole (db: Db, role: string): Promise<string[]> {
  const rows = await db.selectFrom('user_roles').select('user_id').where('role', '=', role).execute()
  return rows.map((r) => r.user_id)
}
