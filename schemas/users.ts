import { Type } from 'typebox'
import { EmailInput, PasswordInput, UsernameInput } from './common.js'

export const ProfileUpdateBodySchema = Type.Object({
  username: Type.Union([UsernameInput, Type.Null()], { description: 'A new username, or null to remove it.' })
}, { additionalProperties: false })

export const AccountDeleteBodySchema = Type.Object({
  password: PasswordInput
}, { additionalProperties: false })

export const SessionSchema = Type.Object({
  id: Type.String({ format: 'uuid' }),
  created_at: Type.String({ format: 'date-time' }),
  last_used_at: Type.String({ format: 'date-time' }),
  expires_at: Type.String({ format: 'date-time', description: 'When the session ends whatever happens (its absolute lifetime).' }),
  user_agent: Type.Union([Type.String(), Type.Null()]),
  ip: Type.Union([Type.String(), Type.Null()]),
  current: Type.Boolean({ description: 'True for the session of the access token making this request.' })
}, { $id: 'Session', title: 'Session', additionalProperties: false })

export const SessionParamsSchema = Type.Object({
  id: Type.String({ format: 'uuid' })
})

export const EndSessionsQuerySchema = Type.Object({
  include_current: Type.Boolean({ default: false, description: 'Also end the session making this request.' })
}, { additionalProperties: false })

export const EmailChangeBodySchema = Type.Object({
  new_email: EmailInput,
  password: PasswordInput
}, { additionalProperties: false })
