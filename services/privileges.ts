import type { Kysely } from 'kysely'
import { listRoles } from '../db/queries/roles.js'
import { findUserById } from '../db/queries/users.js'
import type { Database } from '../db/types.js'
import type { Permission } from '../schemas/permissions.js'
import { Errors } from './errors.js'

/**
 * The privilege rules' arithmetic: what an actor holds, read live, and the
 * refusals (403 INSUFFICIENT_PRIVILEGE, with what the trail should say).
 * The admin operations (plugins/admin.ts) apply them.
 */

/** A refusal for want of privilege, with what the trail should say of it. */
export type Refusal = InstanceType<typeof Errors.InsufficientPrivilege> & { refusal: { operation: Operation, target: string, reason: string } }

export function refuse (operation: Operation, target: string, reason: string): never {
  const error = new Errors.InsufficientPrivilege(reason) as Refusal
  error.refusal = { operation, target, reason }
  throw error
}

/** Each operation with a target, and its permission: the route's guard asks for it too, here it is asked of the live roles. */
const NEEDS = {
  update_user: 'users:write',
  delete_user: 'users:write',
  reset_mfa: 'users:write',
  end_sessions: 'sessions:revoke',
  create_role: 'roles:write',
  update_role: 'roles:write',
  delete_role: 'roles:write'
} as const satisfies Record<string, Permission>
export type Operation = keyof typeof NEEDS

/** Refuses unless the actor holds every one of `needed`; `whose` begins the reason ("the account holds"). */
export function requireHeld (power: { permissions: ReadonlySet<string> }, needed: Iterable<string>, operation: Operation, target: string, whose: string) {
  const missing = [...new Set(needed)].filter((p) => !power.permissions.has(p)).sort()
  if (missing.length > 0) refuse(operation, target, `${whose} ${missing.join(', ')}, which you do not hold`)
}

/**
 * What the actor holds, and what roles grant, read from the database in the
 * caller's transaction (this replica's cache may lag behind another's change);
 * refuses unless the operation's permission is among it. It counts only the
 * roles the token names that the account still holds: a token can outlive a
 * role taken away until the revocation reaches every replica.
 */
export async function privilegeOf (db: Kysely<Database>, actor: { userId: string, roles: readonly string[] }, operation: Operation, target: string) {
  const [account, all] = await Promise.all([findUserById(db, actor.userId), listRoles(db)])
  const roles = new Map(all.map((r) => [r.name, r]))
  const of = (names: Iterable<string>) => new Set([...names].flatMap((name) => roles.get(name)?.permissions ?? []))
  const live = account && !account.disabled ? actor.roles.filter((r) => account.roles.includes(r)) : []
  const power = { held: new Set([...actor.roles, ...account?.roles ?? []]), permissions: of(live), of, roles }
  requireHeld(power, [NEEDS[operation]], operation, target, 'this needs')
  return power
}
