import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { Type } from 'typebox'
import { deleteRole, insertRole, listRoles, seedRoles, updateRole, type Alongside, type RoleWithPermissions } from '../db/queries/roles.js'
import { Errors } from '../services/errors.js'
import { PERMISSIONS, type Permission } from '../schemas/permissions.js'
import { closeRedis, listen } from './redis.js'

declare module 'fastify' {
  interface FastifyInstance {
    roles: Roles
  }
  interface FastifyContextConfig {
    /**
     * The permission a caller needs (one of its token's roles must grant it):
     * 403 before the body, path or query is validated. Needs `auth: 'required'`.
     * Rules about the target (only an admin changes an admin) are the admin service's.
     */
    permission?: Permission
  }
}

/** Seeded at every start, permissions and all; neither can be edited or deleted, user grants nothing and admin everything. */
export const DEFAULT_ROLES: RoleWithPermissions[] = [
  { name: 'user', description: 'Every account has it', permissions: [] },
  { name: 'admin', description: 'Administers users, roles, sessions, keys and the audit trail', permissions: [...PERMISSIONS] }
]
export const BUILT_IN = new Set(DEFAULT_ROLES.map((r) => r.name))

export type Roles = Awaited<ReturnType<typeof createRoles>>

/** How often each instance re-reads the roles (another replica may have changed them). */
const RELOAD_MS = 30_000

/**
 * Roles and their permissions. Access tokens carry role names; what a role
 * grants is looked up in memory, never in the database per request. The cache
 * is reloaded when roles change here, when another replica says so over
 * Redis, and every 30 s.
 */
async function createRoles (fastify: FastifyInstance) {
  const { db, redis, config } = fastify
  const channel = `${config.REDIS_KEY_PREFIX}roles`
  let grants = new Map<string, Set<string>>()

  async function reload () {
    grants = new Map((await listRoles(db)).map((r) => [r.name, new Set(r.permissions)]))
  }

  async function changed () {
    await reload()
    await redis?.publish(channel, 'changed').catch((err) => fastify.log.warn({ err }, 'role change not published'))
  }

  const reset = await seedRoles(db, DEFAULT_ROLES, fastify.now().toISOString())
  for (const role of BUILT_IN) {
    const removed = reset.filter((l) => l.role === role).map((l) => l.permission)
    if (removed.length === 0) continue
    // A built-in role granted more than its definition: someone changed it (issue 13). Say so loudly.
    fastify.log.warn({ role, removed }, 'built-in role reset to its definition')
    await fastify.audit.record({ type: 'built_in_role_reset', detail: { role, removed } })
  }
  const subscriber = redis && listen(redis, channel, fastify.log, () => {
    reload().catch((err) => fastify.log.warn({ err }, 'roles reload failed'))
  }, reload)
  await reload()
  const timer = setInterval(() => { reload().catch((err) => fastify.log.warn({ err }, 'roles reload failed')) }, RELOAD_MS)
  timer.unref()
  fastify.addHook('onClose', async () => {
    clearInterval(timer)
    if (subscriber) await closeRedis(subscriber)
  })

  function checkPermissions (permissions: string[]) {
    const unknown = permissions.filter((p) => !(PERMISSIONS as readonly string[]).includes(p))
    if (unknown.length > 0) throw new Errors.UnknownPermission(unknown.join(', '), PERMISSIONS.join(', '))
  }

  return {
    /** True when one of `roles` grants `permission`. */
    grants: (roles: string[], permission: string) => roles.some((r) => grants.get(r)?.has(permission) ?? false),
    exists: (role: string) => grants.has(role),
    list: () => listRoles(db),

    async create (role: RoleWithPermissions, alongside?: Alongside) {
      checkPermissions(role.permissions)
      if (grants.has(role.name)) throw new Errors.RoleExists()
      try {
        await insertRole(db, role, fastify.now().toISOString(), alongside)
      } catch (err) {
        // A replica may have created it since the cache was read.
        if ((await listRoles(db)).some((r) => r.name === role.name)) throw new Errors.RoleExists()
        throw err
      }
      await changed()
    },

    async update (role: RoleWithPermissions, alongside?: Alongside) {
      checkPermissions(role.permissions)
      if (BUILT_IN.has(role.name)) throw new Errors.RoleProtected()
      if (!await updateRole(db, role, alongside)) throw new Errors.RoleNotFound()
      await changed()
    },

    /** Deletes a role, with what `alongside` writes in the same change (its holders' sessions ended, the audit event). */
    async remove<T> (name: string, alongside: Alongside<T> = async () => undefined as T): Promise<T> {
      if (BUILT_IN.has(name)) throw new Errors.RoleProtected()
      const done = await deleteRole(db, name, async (trx) => ({ value: await alongside(trx) }))
      if (!done) throw new Errors.RoleNotFound()
      await changed()
      return done.value
    },

    reload
  }
}

export default fp(async function roles (fastify) {
  const roles = await createRoles(fastify)
  fastify.decorate('roles', roles)

  // Routes declare their permission in config; this guards them before validation and documents the 403.
  fastify.addHook('onRoute', (route) => {
    const permission = route.config?.permission
    if (!permission) return
    if (route.config?.auth !== 'required') throw new Error(`${route.method} ${route.url}: a permission needs auth: 'required'`)
    route.schema = { ...route.schema, response: { 403: Type.Ref('Problem'), ...(route.schema?.response as object) } }
    // A callback, not a promise: it runs on every guarded request. Authentication ran in onRequest.
    const guard = (request: FastifyRequest, _reply: FastifyReply, done: (err?: Error) => void) => {
      if (roles.grants(request.auth?.roles ?? [], permission)) return done()
      done(new Errors.Forbidden())
    }
    // First of the preValidation hooks: nothing about the input is looked at before the caller is allowed.
    route.preValidation = [guard, ...[route.preValidation ?? []].flat()]
  })
}, { name: 'roles', dependencies: ['config', 'db', 'redis', 'audit'] })
