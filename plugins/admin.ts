import type { FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { listEvents, type EventFilters } from '../db/queries/events.js'
import { rolesOfUsers, setUserRoles, usersWithRole } from '../db/queries/roles.js'
import { findUserById, listUsers, updateUser, type Account, type UserFilters } from '../db/queries/users.js'
import type { AuthEventRow, UserRow } from '../db/types.js'
import { Errors } from './errors.js'
import { clientOf, type ClientInfo } from './sessions.js'

declare module 'fastify' {
  interface FastifyInstance {
    admin: Admin
  }
}

export type Admin = ReturnType<typeof createAdmin>

/** Who acts, from where: every admin action is on the trail under the admin's id. */
export interface Actor {
  userId: string
  client: ClientInfo
}

/** The signed-in admin making the request. */
export const actorOf = (request: FastifyRequest): Actor => ({ userId: request.auth!.userId, client: clientOf(request) })

const iso = (time: Date | string) => new Date(time).toISOString()
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

/** A page position: the (created_at, id) of the last row served, opaque to clients. */
export const cursor = {
  encode: (row: { created_at: Date | string, id: string }) => Buffer.from(JSON.stringify([iso(row.created_at), row.id])).toString('base64url'),
  decode (value: string | undefined): [string, string] | null {
    if (value === undefined) return null
    try {
      const [at, id] = JSON.parse(Buffer.from(value, 'base64url').toString('utf8')) as unknown[]
      if (typeof at === 'string' && typeof id === 'string' && UUID.test(id) && iso(at) === at) return [at, id]
    } catch {}
    throw new Errors.InvalidCursor()
  }
}

/** One more row than asked tells whether there is a next page. */
function paged<Row extends { created_at: Date | string, id: string }, Item> (rows: Row[], limit: number, map: (rows: Row[]) => Item[]) {
  const items = rows.slice(0, limit)
  return { items: map(items), next_cursor: rows.length > limit ? cursor.encode(items[items.length - 1]) : null }
}

function createAdmin (fastify: FastifyInstance) {
  const { db, roles, sessions, audit, accounts, tokens } = fastify

  const view = (row: UserRow, userRoles: string[]) => ({
    ...row, email_verified: Boolean(row.email_verified), disabled: Boolean(row.disabled), roles: userRoles, created_at: iso(row.created_at), updated_at: iso(row.updated_at)
  })

  async function existing (id: string): Promise<Account> {
    const user = await findUserById(db, id)
    if (!user) throw new Errors.UserNotFound()
    return user
  }

  return {
    async listUsers (filters: UserFilters, limit: number, after?: string) {
      const rows = await listUsers(db, filters, cursor.decode(after), limit + 1)
      const byUser = await rolesOfUsers(db, rows.slice(0, limit).map((r) => r.id))
      return paged(rows, limit, (items) => items.map((r) => view(r, byUser.get(r.id) ?? [])))
    },

    async getUser (id: string) {
      const user = await existing(id)
      return view(user, user.roles)
    },

    /** Changes roles, disabled and email_verified. Disabling, or taking a role away, ends every session at once. */
    async updateUser (actor: Actor, id: string, patch: { roles?: string[], disabled?: boolean, email_verified?: boolean }) {
      const user = await existing(id)
      const before = user.roles
      const after = patch.roles && [...new Set(['user', ...patch.roles])].sort()
      const unknown = after?.filter((r) => !roles.exists(r)) ?? []
      if (unknown.length > 0) throw new Errors.UnknownRole(unknown.join(', '))
      if (actor.userId === id && (patch.disabled === true || (after && before.includes('admin') && !after.includes('admin')))) throw new Errors.CannotModifySelf()
      const now = fastify.now().toISOString()
      const changes = {
        ...(patch.disabled !== undefined && { disabled: patch.disabled ? 1 : 0 }),
        ...(patch.email_verified !== undefined && { email_verified: patch.email_verified ? 1 : 0 })
      }
      await updateUser(db, id, { ...changes, updated_at: now })
      const removed = after ? before.filter((r) => !after.includes(r)) : []
      if (after) {
        await setUserRoles(db, id, after)
        const added = after.filter((r) => !before.includes(r))
        if (added.length + removed.length > 0) await audit.record({ type: 'role_changed', userId: id, client: actor.client, detail: { by: actor.userId, added, removed } })
      }
      if (patch.disabled !== undefined && patch.disabled !== Boolean(user.disabled)) {
        await audit.record({ type: patch.disabled ? 'user_disabled' : 'user_enabled', userId: id, client: actor.client, detail: { by: actor.userId } })
      }
      // Tokens carry roles: a role taken away, or a disabled account, must not outlive its access tokens.
      if (patch.disabled === true || removed.length > 0) await sessions.endAll(id, patch.disabled ? 'user_disabled' : 'roles_changed')
      return this.getUser(id)
    },

    async deleteUser (actor: Actor, id: string) {
      if (actor.userId === id) throw new Errors.CannotModifySelf()
      await existing(id)
      await accounts.remove(id, 'deleted_by_admin')
      await audit.record({ type: 'user_deleted', userId: id, client: actor.client, detail: { by: actor.userId } })
    },

    async endSessions (actor: Actor, id: string) {
      await existing(id)
      const ended = await sessions.endAll(id, 'ended_by_admin')
      await audit.record({ type: 'sessions_ended', userId: id, client: actor.client, detail: { by: actor.userId, reason: 'ended_by_admin', sessions: ended.length } })
    },

    /** Deletes a role; its holders' sessions end at once, as their tokens carry the role. */
    async deleteRole (actor: Actor, name: string) {
      const holders = await usersWithRole(db, name)
      await roles.remove(name)
      for (const userId of holders) await sessions.endAll(userId, 'role_deleted')
      await audit.record({ type: 'role_deleted', userId: actor.userId, client: actor.client, detail: { role: name, holders: holders.length } })
    },

    async rotateKeys (actor: Actor) {
      const kid = await tokens.rotate()
      await audit.record({ type: 'key_rotated', userId: actor.userId, client: actor.client, detail: { kid } })
      return kid
    },

    async listEvents (filters: EventFilters, limit: number, before?: string) {
      // Stored times are one ISO spelling; a query's "+02:00" or missing milliseconds must mean the same instant.
      const at = (time?: string) => time && iso(time)
      const rows = await listEvents(db, { ...filters, from: at(filters.from), to: at(filters.to) }, cursor.decode(before), limit + 1)
      return paged(rows, limit, (items) => items.map(eventView))
    }
  }
}

export function eventView (row: AuthEventRow) {
  let detail: Record<string, unknown> = {}
  try { detail = JSON.parse(row.detail) } catch {}
  return { ...row, created_at: iso(row.created_at), detail }
}

export default fp(async function admin (fastify) {
  fastify.decorate('admin', createAdmin(fastify))
}, { name: 'admin', dependencies: ['db', 'roles', 'sessions', 'audit', 'accounts', 'tokens'] })
