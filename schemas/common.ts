import { Type, type Static } from 'typebox'

/** Input rules shared by several routes. Normalisation (trim, lower-case, NFKC) happens in the plugins. */
/** A character of an address: ASCII atext, or a letter, mark or decimal digit of any script (EAI, RFC 6531). */
const ADDRESS_CHAR = "[A-Za-z0-9!#$%&'*+/=?^_`{|}~\\p{L}\\p{M}\\p{Nd}-]"
const DOMAIN_CHAR = '[A-Za-z0-9\\p{L}\\p{M}\\p{Nd}-]'

/**
 * A plain addr-spec, dot-atom on both sides, the domain with a dot; nothing a
 * mailer could read as a name or a second recipient. Surrounding spaces are
 * trimmed later. Read with the `u` flag (Ajv's default).
 */
export const EMAIL_PATTERN = `^\\s*${ADDRESS_CHAR}+(\\.${ADDRESS_CHAR}+)*@${DOMAIN_CHAR}+(\\.${DOMAIN_CHAR}+)+\\s*$`

export const EmailInput = Type.String({
  maxLength: 320,
  pattern: EMAIL_PATTERN,
  description: 'A plain email address (no display name or angle brackets); trimmed, NFKC-normalized and lower-cased.',
  examples: ['ada@example.com']
})

export const UsernameInput = Type.String({
  maxLength: 64,
  // 3–42 of [a-z0-9_] once trimmed and lower-cased.
  pattern: '^\\s*[A-Za-z0-9_]{3,42}\\s*$',
  description: '3–42 letters a–z, digits or underscores after trimming; lower-cased.',
  examples: ['ada_l']
})

export const PasswordInput = Type.String({
  minLength: 1,
  maxLength: 1024,
  description: 'The password policy (length, common passwords) is checked after NFKC normalisation.',
  examples: ['correct horse battery staple']
})

export const UuidSchema = Type.String({ format: 'uuid' })

export const UserSchema = Type.Object({
  id: Type.String({ format: 'uuid' }),
  email: Type.String(),
  username: Type.Union([Type.String(), Type.Null()]),
  email_verified: Type.Boolean(),
  roles: Type.Array(Type.String()),
  created_at: Type.String({ format: 'date-time' }),
  updated_at: Type.String({ format: 'date-time' })
}, { $id: 'User', title: 'User', additionalProperties: false })

export type User = Static<typeof UserSchema>

export const TokenResponseSchema = Type.Object({
  access_token: Type.String({ description: 'A JWT to send as `Authorization: Bearer …`.' }),
  token_type: Type.Literal('Bearer'),
  expires_in: Type.Integer({ description: 'Seconds until the access token expires.' }),
  expires_at: Type.Integer({ description: 'When the access token expires: its `exp`, in seconds since 1970 (UTC).' }),
  refresh_token: Type.String({ description: 'Opaque; trade it at /api/v1/auth/refresh. Each use rotates it.' }),
  user: Type.Ref('User')
}, { $id: 'TokenResponse', title: 'TokenResponse', additionalProperties: false })

export type TokenResponse = Static<typeof TokenResponseSchema>

export const AcceptedSchema = Type.Object({
  message: Type.String()
}, { $id: 'Accepted', title: 'Accepted', additionalProperties: false, description: 'The request was taken; what follows happens by mail.' })

/** Shared schemas, added once with addSchema so OpenAPI names them. */
export const sharedSchemas = [UserSchema, TokenResponseSchema, AcceptedSchema]
