import type { FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { deleteRole, insertRole, listRoles, seedRoles, updateRole, type RoleWithPermissions } from '../db/queries/roles.js'
import { Errors } from './errors.js'
import { closeRedis } from './redis.js'

declare module 'fastify' {
  interface FastifyInstance {
    roles: Roles
    /** A preHandler that lets through only signed-in users with the role. */
    requireRole: (role: string) => (request: FastifyRequest) => Promise<void>
    /** A preHandler that lets through only signed-in users one of whose roles grants the permission. */
    requirePermission: (permission: Permission) => (request: FastifyRequest) => Promise<void>
  }
}

export const PERMISSIONS = ['users:read', 'users:write', 'sessions:revoke', 'roles:write', 'audit:read', 'keys:rotate'] as const
export type Permission = typeof PERMISSIONS[number]

/** Seeded at every start, idempotently; neither can be deleted, and admin keeps every permission. */
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

  await seedRoles(db, DEFAULT_ROLES, fastify.now().toISOString())
  const subscriber = redis?.duplicate()
  if (subscriber) {
    subscriber.on('error', (err) => fastify.log.warn({ err }, 'redis subscriber error'))
    subscriber.on('message', () => { reload().catch((err) => fastify.log.warn({ err }, 'roles reload failed')) })
    await subscriber.subscribe(channel)
  }
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

    async create (role: RoleWithPermissions) {
      checkPermissions(role.permissions)
      if (grants.has(role.name)) throw new Errors.RoleExists()
      try {
        await insertRole(db, role, fastify.now().toISOString())
      } catch (err) {
        // A replica may have created it since the cache was read.
        if ((await listRoles(db)).some((r) => r.name === role.name)) throw new Errors.RoleExists()
        throw err
      }
      await changed()
    },

    async update (role: RoleWithPermissions) {
      checkPermissions(role.permissions)
      if (role.name === 'admin') throw new Errors.RoleProtected()
      if (!await updateRole(db, role)) throw new Errors.RoleNotFound()
      await changed()
    },

    async remove (name: string) {
      if (BUILT_IN.has(name)) throw new Errors.RoleProtected()
      if (!await deleteRole(db, name)) throw new Errors.RoleNotFound()
      await changed()
    },

    reload
  }
}

export default fp(async function roles (fastify) {
  const roles = await createRoles(fastify)
  fastify.decorate('roles', roles)

  const signedIn = (request: FastifyRequest) => {
    if (!request.auth) throw new Errors.AuthenticationRequired()
    return request.auth
  }
  fastify.decorate('requireRole', (role: string) => async (request: FastifyRequest) => {
    if (!signedIn(request).roles.includes(role)) throw new Errors.Forbidden()
  })
  fastify.decorate('requirePermission', (permission: Permission) => async (request: FastifyRequest) => {
    if (!roles.grants(signedIn(request).roles, permission)) throw new Errors.Forbidden()
  })
}, { name: 'roles', dependencies: ['config', 'db', 'redis'] })
