import { Type } from 'typebox'
import { PERMISSIONS } from './permissions.js'

const RoleName = Type.String({ maxLength: 42, pattern: '^[a-z][a-z0-9_:-]{1,41}$', description: '2–42 of a-z, 0-9, _, :, - starting with a letter.' })
const Permission = Type.Union(PERMISSIONS.map((p) => Type.Literal(p)))
const Cursor = Type.String({ maxLength: 256, pattern: '^[A-Za-z0-9_-]+$', description: 'The `next_cursor` of the previous page.' })
const Limit = Type.Integer({ minimum: 1, maximum: 100, default: 20 })

export const AdminUserSchema = Type.Object({
  id: Type.String({ format: 'uuid' }),
  email: Type.String(),
  username: Type.Union([Type.String(), Type.Null()]),
  email_verified: Type.Boolean(),
  disabled: Type.Boolean(),
  roles: Type.Array(Type.String()),
  created_at: Type.String({ format: 'date-time' }),
  updated_at: Type.String({ format: 'date-time' })
}, { $id: 'AdminUser', title: 'AdminUser', additionalProperties: false })

export const UserListQuerySchema = Type.Object({
  limit: Limit,
  cursor: Type.Optional(Cursor),
  email_prefix: Type.Optional(Type.String({ minLength: 1, maxLength: 320 })),
  role: Type.Optional(RoleName),
  disabled: Type.Optional(Type.Boolean())
}, { additionalProperties: false })

export const UserIdParamsSchema = Type.Object({ id: Type.String({ format: 'uuid' }) })

export const AdminUserPatchSchema = Type.Object({
  roles: Type.Optional(Type.Array(RoleName, { maxItems: 32, uniqueItems: true, description: 'The complete set of roles; `user` is always kept.' })),
  disabled: Type.Optional(Type.Boolean({ description: 'true ends every session of the user at once.' })),
  email_verified: Type.Optional(Type.Boolean())
}, { additionalProperties: false, minProperties: 1 })

export const RoleSchema = Type.Object({
  name: RoleName,
  description: Type.String({ maxLength: 256 }),
  permissions: Type.Array(Permission, { maxItems: PERMISSIONS.length, uniqueItems: true })
}, { $id: 'Role', title: 'Role', additionalProperties: false })

export const RoleCreateSchema = Type.Object({
  name: RoleName,
  description: Type.Optional(Type.String({ maxLength: 256 })),
  permissions: Type.Array(Permission, { maxItems: PERMISSIONS.length, uniqueItems: true })
}, { additionalProperties: false })

export const RoleUpdateSchema = Type.Object({
  description: Type.Optional(Type.String({ maxLength: 256 })),
  permissions: Type.Array(Permission, { maxItems: PERMISSIONS.length, uniqueItems: true })
}, { additionalProperties: false })

export const RoleParamsSchema = Type.Object({ name: RoleName })

export const AuditEventSchema = Type.Object({
  id: Type.String({ format: 'uuid' }),
  type: Type.String(),
  user_id: Type.Union([Type.String(), Type.Null()]),
  session_id: Type.Union([Type.String(), Type.Null()]),
  ip: Type.Union([Type.String(), Type.Null()]),
  user_agent: Type.Union([Type.String(), Type.Null()]),
  created_at: Type.String({ format: 'date-time' }),
  detail: Type.Record(Type.String(), Type.Unknown())
}, { $id: 'AuditEvent', title: 'AuditEvent', additionalProperties: false })

export const AuditQuerySchema = Type.Object({
  limit: Limit,
  cursor: Type.Optional(Cursor),
  user_id: Type.Optional(Type.String({ format: 'uuid' })),
  type: Type.Optional(Type.String({ maxLength: 64, pattern: '^[a-z_]{1,64}$' })),
  from: Type.Optional(Type.String({ format: 'date-time', description: 'Events at or after this time.' })),
  to: Type.Optional(Type.String({ format: 'date-time', description: 'Events before this time.' }))
}, { additionalProperties: false })

export const page = <T extends Parameters<typeof Type.Array>[0]>(item: T, description: string) => Type.Object({
  items: Type.Array(item),
  next_cursor: Type.Union([Type.String(), Type.Null()], { description: 'Pass it as `cursor` for the next page; null on the last page.' })
}, { additionalProperties: false, description })
