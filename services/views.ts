import type { AuthEventRow, UserRow } from '../db/types.js'
import type { User } from '../schemas/common.js'
import { iso } from './pages.js'

/** The public face of a user: what the User schema lets out. */
export function toPublicUser (row: UserRow, roles: string[]): User {
  return {
    id: row.id,
    email: row.email,
    username: row.username,
    email_verified: Boolean(row.email_verified),
    roles,
    created_at: iso(row.created_at),
    updated_at: iso(row.updated_at)
  }
}

/** A user as the admin API shows them: the row's fields, with its roles. */
export const adminUserView = (row: UserRow, roles: string[]) => ({
  ...row, email_verified: Boolean(row.email_verified), disabled: Boolean(row.disabled), roles, created_at: iso(row.created_at), updated_at: iso(row.updated_at)
})

/** An audit event as the API shows it: its detail parsed. */
export function eventView (row: AuthEventRow) {
  let detail: Record<string, unknown> = {}
  try { detail = JSON.parse(row.detail) } catch {}
  return { ...row, created_at: iso(row.created_at), detail }
}
