import type { Redis } from 'ioredis'
import type { Kysely } from 'kysely'
import { deleteRole, insertRole, listRoles, seedRoles, updateRole, type RoleWithPermissions } from '../db/queries/roles.js'
import type { Database } from '../db/types.js'
import { PERMISSIONS } from '../schemas/permissions.js'
import type { Audit } from './audit.js'
import { every, type Base } from './context.js'
import { Errors } from './errors.js'
import { closeRedis, listen } from './redis.js'

/** What a change writes besides its own rows (its audit event, the sessions it ends), in its transaction. */
export type Alongside<T = void> = (trx: Kysely<Database>) => Promise<T>

/** Seeded at every start, permissions and all; neither can be edited or deleted, user grants nothing and admin everything. */
export const DEFAULT_ROLES: RoleWithPermissions[] = [
  { name: 'user', description: 'Every account has it', permissions: [] },
  { name: 'admin', description: 'Administers users, roles, sessions, keys and the audit trail', permissions: [...PERMISSIONS] }
]
export const BUILT_IN = new Set(DEFAULT_ROLES.map((r) => r.name))

export type Roles = Awaited<ReturnType<typeof createRoles>>

/** True when every built-in role is stored exactly as defined. */
const asDefined = (stored: RoleWithPermissions[]) => DEFAULT_ROLES.every((role) => {
  const found = stored.find((r) => r.name === role.name)
  return found?.description === role.description && [...found.permissions].sort().join() === [...role.permissions].sort().join()
})

/** How often each instance re-reads the roles (another replica may have changed them). */
const RELOAD_MS = 30_000

/**
 * Roles and their permissions. Access tokens carry role names; what a role
 * grants is looked up in memory, never in the database per request. The cache
 * is reloaded when roles change here, when another replica says so over
 * Redis, and every 30 s.
 */
export async function createRoles ({ db, clock, config, log, redis, audit }: Base & { redis: Redis | null, audit: Audit }) {
  const channel = `${config.REDIS_KEY_PREFIX}roles`
  let grants = new Map<string, Set<string>>()

  async function reload () {
    grants = new Map((await listRoles(db)).map((r) => [r.name, new Set(r.permissions)]))
  }

  async function changed () {
    await reload()
    await redis?.publish(channel, 'changed').catch((err) => log.warn({ err }, 'role change not published'))
  }

  // Written only when they differ (a start writes nothing, so replicas starting together do not queue on it), in
  // one change: the built-in roles as defined, and an event for each one that granted more (someone changed it).
  if (!asDefined(await listRoles(db))) {
    await db.transaction().execute(async (trx) => {
      const reset = await seedRoles(trx, DEFAULT_ROLES, clock().toISOString())
      for (const role of BUILT_IN) {
        const removed = reset.filter((l) => l.role === role).map((l) => l.permission)
        if (removed.length === 0) continue
        log.warn({ role, removed }, 'built-in role reset to its definition')
        await audit.record({ type: 'built_in_role_reset', detail: { role, removed } }, trx)
      }
    })
  }
  const subscriber = redis && listen(redis, channel, log, () => {
    reload().catch((err) => log.warn({ err }, 'roles reload failed'))
  }, reload)
  await reload()
  const stop = every(RELOAD_MS, 'roles reload', log, reload)

  function checkPermissions (permissions: string[]) {
    const unknown = permissions.filter((p) => !(PERMISSIONS as readonly string[]).includes(p))
    if (unknown.length > 0) throw new Errors.UnknownPermission(unknown.join(', '), PERMISSIONS.join(', '))
  }

  return {
    /** True when one of `roles` grants `permission`. */
    grants: (roles: string[], permission: string) => roles.some((r) => grants.get(r)?.has(permission) ?? false),
    exists: (role: string) => grants.has(role),
    list: () => listRoles(db),

    /** Creates a role, with what `alongside` writes in the same change. */
    async create (role: RoleWithPermissions, alongside: Alongside = async () => {}) {
      checkPermissions(role.permissions)
      if (grants.has(role.name)) throw new Errors.RoleExists()
      try {
        await db.transaction().execute(async (trx) => {
          await insertRole(trx, role, clock().toISOString())
          await alongside(trx)
        })
      } catch (err) {
        // A replica may have created it since the cache was read.
        if ((await listRoles(db)).some((r) => r.name === role.name)) throw new Errors.RoleExists()
        throw err
      }
      await changed()
    },

    /** Replaces a role's description and permissions, with what `alongside` writes in the same change. */
    async update (role: RoleWithPermissions, alongside: Alongside = async () => {}) {
      checkPermissions(role.permissions)
      if (BUILT_IN.has(role.name)) throw new Errors.RoleProtected()
      await db.transaction().execute(async (trx) => {
        if (!await updateRole(trx, role)) throw new Errors.RoleNotFound()
        await alongside(trx)
      })
      await changed()
    },

    /** Deletes a role, with what `alongside` writes in the same change (its holders' sessions ended, the audit event). */
    async remove<T> (name: string, alongside: Alongside<T> = async () => undefined as T): Promise<T> {
      if (BUILT_IN.has(name)) throw new Errors.RoleProtected()
      const done = await db.transaction().execute(async (trx) => {
        if (!await deleteRole(trx, name)) throw new Errors.RoleNotFound()
        return alongside(trx)
      })
      await changed()
      return done
    },

    reload,

    async close (): Promise<void> {
      stop()
      if (subscriber) await closeRedis(subscriber)
    }
  }
}
