/** Every permission a role can grant: part of the contract (role schemas list them), so a leaf of its own. */
export const PERMISSIONS = ['users:read', 'users:write', 'sessions:revoke', 'roles:write', 'audit:read', 'keys:rotate'] as const
export type Permission = typeof PERMISSIONS[number]
