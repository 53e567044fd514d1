import { listEvents, type EventFilters } from '../db/queries/events.js'
import { voidAllOneTimeTokens } from '../db/queries/one-time-tokens.js'
import { rolesOfUsers, setUserRoles, usersWithRole, type RoleWithPermissions } from '../db/queries/roles.js'
import { findUserById, listUsers, updateUser, type Account, type UserFilters } from '../db/queries/users.js'
import type { AccessTokens } from './access-tokens.js'
import type { Accounts } from './accounts.js'
import type { Audit } from './audit.js'
import { clientOf, type ClientInfo, type RequestLike } from './clients.js'
import type { Base } from './context.js'
import { Errors } from './errors.js'
import type { Mfa } from './mfa.js'
import { cursor, iso, paged } from './pages.js'
import { privilegeOf, refuse, requireHeld, type Operation, type Refusal } from './privileges.js'
import { BUILT_IN, type Roles } from './roles.js'
import type { Sessions } from './sessions.js'
import { adminUserView as view, eventView } from './views.js'

export type Admin = ReturnType<typeof createAdmin>

/** Who acts, from where: every admin action is on the trail under the actor's id. */
export interface Actor {
  userId: string
  /** The roles its access token names. */
  roles: readonly string[]
  client: ClientInfo
}

/** The signed-in caller making the request (authenticated: its `auth` is set). */
export const actorOf = (request: RequestLike & { auth: { userId: string, roles: string[] } | null }): Actor =>
  ({ userId: request.auth!.userId, roles: request.auth!.roles, client: clientOf(request) })

/** Disabling an account, or taking a role away, ends its sessions: their tokens carry what was taken. */
const endsSessions = (disabled: boolean | undefined, removed: string[]) => disabled === true || removed.length > 0

/**
 * The admin operations, and the privilege rules they obey, all here. Routes
 * check only the permission of the operation (config.permission); what the
 * target allows is decided below:
 * - an account is changed, disabled, deleted or signed out only by an actor
 *   holding every permission it holds (so only an admin touches an admin);
 * - a role is granted or taken away only by an actor holding its permissions;
 *   nobody changes their own roles;
 * - a role is created, edited or deleted only within the actor's permissions,
 *   never one the actor holds, and never a built-in one;
 * - editing or deleting a role changes its holders: the actor must hold what they hold.
 */
export function createAdmin ({ db, clock, roles, sessions, audit, accounts, tokens, mfa }: Pick<Base, 'db' | 'clock'> & {
  roles: Roles
  sessions: Sessions
  audit: Audit
  accounts: Accounts
  tokens: Pick<AccessTokens, 'rotate'>
  mfa: Mfa
}) {
  async function existing (id: string, from = db): Promise<Account> {
    const user = await findUserById(from, id)
    if (!user) throw new Errors.UserNotFound()
    return user
  }

  const getUser = async (id: string) => {
    const user = await existing(id)
    return view(user, user.roles)
  }

  /** Runs an operation; a refusal goes on the trail once any transaction it came from has rolled back (SQLite has one connection). */
  async function recorded<T> (actor: Actor, operation: () => Promise<T>): Promise<T> {
    try {
      return await operation()
    } catch (err) {
      const refusal = (err as Partial<Refusal>).refusal
      if (refusal) await audit.record({ type: 'privilege_refused', userId: actor.userId, client: actor.client, detail: { actor: actor.userId, ...refusal } })
      throw err
    }
  }

  /** The account, if the actor may act on it. */
  async function target (actor: Actor, id: string, operation: Operation, from = db) {
    const user = await existing(id, from)
    const power = await privilegeOf(from, actor, operation, id)
    requireHeld(power, power.of(user.roles), operation, id, 'the account holds')
    return { user, power }
  }

  /** The holders of a role the actor may edit (to `permissions`) or delete. */
  async function editableRole (actor: Actor, operation: Operation, name: string, permissions: string[] = []): Promise<string[]> {
    // Not a question of privilege: nobody edits these.
    if (BUILT_IN.has(name)) throw new Errors.RoleProtected()
    const power = await privilegeOf(db, actor, operation, name)
    const role = power.roles.get(name)
    if (!role) throw new Errors.RoleNotFound()
    if (power.held.has(name)) refuse(operation, name, `you hold the role ${name} yourself`)
    requireHeld(power, role.permissions, operation, name, 'the role carries')
    requireHeld(power, permissions, operation, name, 'the role would carry')
    const holders = await rolesOfUsers(db, await usersWithRole(db, name))
    requireHeld(power, power.of([...holders.values()].flat()), operation, name, 'a holder of the role holds')
    return [...holders.keys()]
  }

  return {
    async listUsers (filters: UserFilters, limit: number, after?: string) {
      const rows = await listUsers(db, filters, cursor.decode(after), limit + 1)
      const byUser = await rolesOfUsers(db, rows.slice(0, limit).map((r) => r.id))
      return paged(rows, limit, (items) => items.map((r) => view(r, byUser.get(r.id) ?? [])))
    },

    getUser,

    /** Changes roles, disabled and email_verified. Disabling, or taking a role away, ends every session at once. */
    updateUser: (actor: Actor, id: string, patch: { roles?: string[], disabled?: boolean, email_verified?: boolean }) => recorded(actor, async () => {
      const now = clock().toISOString()
      const { ended } = await db.transaction().execute(async (trx) => {
        // Touched first: the row stays locked, so changes of one account run one at a time, each checking what the last wrote.
        if (!await updateUser(trx, id, { updated_at: now })) throw new Errors.UserNotFound()
        const { user, power } = await target(actor, id, 'update_user', trx)
        const after = patch.roles && [...new Set(['user', ...patch.roles])].sort()
        const added = after ? after.filter((r) => !user.roles.includes(r)) : []
        const removed = after ? user.roles.filter((r) => !after.includes(r)) : []
        if (actor.userId === id && patch.disabled === true) throw new Errors.CannotModifySelf()
        if (actor.userId === id && added.length + removed.length > 0) refuse('update_user', id, 'you cannot change your own roles')
        const unknown = added.filter((r) => !power.roles.has(r))
        if (unknown.length > 0) throw new Errors.UnknownRole(unknown.join(', '))
        requireHeld(power, power.of([...added, ...removed]), 'update_user', id, 'the roles you grant or take away carry')

        const changes = {
          ...(patch.disabled !== undefined && { disabled: patch.disabled ? 1 as const : 0 as const }),
          ...(patch.email_verified !== undefined && { email_verified: patch.email_verified ? 1 as const : 0 as const })
        }
        if (Object.keys(changes).length > 0) await updateUser(trx, id, changes)
        if (after && added.length + removed.length > 0) {
          await setUserRoles(trx, id, after)
          // A change of privilege: a reset or change of address asked for before must not outlive it.
          await voidAllOneTimeTokens(trx, id, now)
          await audit.record({ type: 'role_changed', userId: id, client: actor.client, detail: { by: actor.userId, added, removed } }, trx)
        }
        if (patch.disabled !== undefined && patch.disabled !== Boolean(user.disabled)) {
          await audit.record({ type: patch.disabled ? 'user_disabled' : 'user_enabled', userId: id, client: actor.client, detail: { by: actor.userId } }, trx)
        }
        // Tokens carry roles: a role taken away, or a disabled account, must not outlive its access tokens.
        const ended = endsSessions(patch.disabled, removed) && await sessions.endWithin(trx, id, patch.disabled ? 'user_disabled' : 'roles_changed')
        return { ended }
      })
      // A sign-in racing this change holds the account's row until its session is written (accounts.signIn):
      // the row touched first above waited for it, so its session was among those ended, or it reads the change.
      if (ended) await sessions.announce(ended)
      return getUser(id)
    }),

    deleteUser: (actor: Actor, id: string) => recorded(actor, async () => {
      if (actor.userId === id) throw new Errors.CannotModifySelf()
      await target(actor, id, 'delete_user')
      await accounts.remove(id, 'deleted_by_admin', { type: 'user_deleted', userId: id, client: actor.client, detail: { by: actor.userId } })
    }),

    endSessions: (actor: Actor, id: string) => recorded(actor, async () => {
      await target(actor, id, 'end_sessions')
      await sessions.announce(await db.transaction().execute(async (trx) => {
        const ended = await sessions.endWithin(trx, id, 'ended_by_admin')
        await audit.record({ type: 'sessions_ended', userId: id, client: actor.client, detail: { by: actor.userId, reason: 'ended_by_admin', sessions: ended.ids.length } }, trx)
        return ended
      }))
    }),

    /** Removes a user's second factors and recovery codes (a lost phone), and ends their sessions: they sign in with the password alone. */
    resetMfa: (actor: Actor, id: string) => recorded(actor, async () => {
      // One's own factor goes through DELETE /users/me/mfa/totp, which asks for the factor first.
      if (actor.userId === id) throw new Errors.CannotModifySelf()
      await target(actor, id, 'reset_mfa')
      await sessions.announce(await db.transaction().execute(async (trx) => {
        // The row first: a sign-in under way commits its session before the sessions are ended, or fails after.
        await updateUser(trx, id, { updated_at: clock().toISOString() })
        await mfa.remove(id, { type: 'mfa_reset_by_admin', client: actor.client, detail: { by: actor.userId } }, trx)
        return sessions.endWithin(trx, id, 'mfa_reset')
      }))
    }),

    createRole: (actor: Actor, role: RoleWithPermissions) => recorded(actor, async () => {
      if (roles.exists(role.name)) throw new Errors.RoleExists()
      requireHeld(await privilegeOf(db, actor, 'create_role', role.name), role.permissions, 'create_role', role.name, 'the role would carry')
      await roles.create(role, (trx) => audit.record({ type: 'role_created', userId: actor.userId, client: actor.client, detail: { role: role.name, permissions: role.permissions } }, trx))
      return role
    }),

    /** Replaces a role's description and permissions; its holders' tokens carry its name, so the change applies at once. */
    updateRole: (actor: Actor, role: RoleWithPermissions) => recorded(actor, async () => {
      await editableRole(actor, 'update_role', role.name, role.permissions)
      await roles.update(role, (trx) => audit.record({ type: 'role_updated', userId: actor.userId, client: actor.client, detail: { role: role.name, permissions: role.permissions } }, trx))
      return role
    }),

    /** Deletes a role; its holders' sessions end at once, as their tokens carry the role. */
    deleteRole: (actor: Actor, name: string) => recorded(actor, async () => {
      const holders = await editableRole(actor, 'delete_role', name)
      const ended = await roles.remove(name, async (trx) => {
        const ended = []
        for (const userId of holders) ended.push(await sessions.endWithin(trx, userId, 'role_deleted'))
        await audit.record({ type: 'role_deleted', userId: actor.userId, client: actor.client, detail: { role: name, holders: holders.length } }, trx)
        return ended
      })
      for (const each of ended) await sessions.announce(each)
    }),

    rotateKeys: (actor: Actor) =>
      tokens.rotate((trx, kid) => audit.record({ type: 'key_rotated', userId: actor.userId, client: actor.client, detail: { kid } }, trx)),

    async listEvents (filters: EventFilters, limit: number, before?: string) {
      // Stored times are one ISO spelling; a query's "+02:00" or missing milliseconds must mean the same instant.
      const at = (time?: string) => time && iso(time)
      const rows = await listEvents(db, { ...filters, from: at(filters.from), to: at(filters.to) }, cursor.decode(before), limit + 1)
      return paged(rows, limit, (items) => items.map(eventView))
    }
  }
}
