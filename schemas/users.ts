import { Type } from 'typebox'
import { PasswordInput, UsernameInput } from './common.js'

export const ProfileUpdateBodySchema = Type.Object({
  username: Type.Union([UsernameInput, Type.Null()], { description: 'A new username, or null to remove it.' })
}, { additionalProperties: false })

export const AccountDeleteBodySchema = Type.Object({
  password: PasswordInput
}, { additionalProperties: false })
