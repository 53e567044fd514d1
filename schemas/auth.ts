import { Type } from 'typebox'
import { EmailInput, PasswordInput, UsernameInput } from './common.js'

export const SignupBodySchema = Type.Object({
  email: EmailInput,
  password: PasswordInput,
  username: Type.Optional(UsernameInput)
}, { additionalProperties: false })

// Either identifier signs in; the original service's clients send `username`.
export const LoginBodySchema = Type.Object({
  email: Type.Optional(EmailInput),
  username: Type.Optional(Type.String({ minLength: 1, maxLength: 320, description: 'A username, or an email address.' })),
  password: PasswordInput
}, {
  additionalProperties: false,
  anyOf: [{ required: ['email'] }, { required: ['username'] }]
})

export const RefreshTokenInput = Type.String({ minLength: 1, maxLength: 512 })

export const RefreshBodySchema = Type.Object({
  refresh_token: RefreshTokenInput
}, { additionalProperties: false })

export const LogoutBodySchema = Type.Object({
  refresh_token: Type.Optional(RefreshTokenInput)
}, { additionalProperties: false })

export const PasswordChangeBodySchema = Type.Object({
  current_password: PasswordInput,
  new_password: PasswordInput
}, { additionalProperties: false })

/** A token from a mail: 256 bits in base64url (43 characters). */
export const MailTokenInput = Type.String({ minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9_-]+$' })

export const EmailVerifyBodySchema = Type.Object({
  token: MailTokenInput
}, { additionalProperties: false })

export const EmailOnlyBodySchema = Type.Object({
  email: EmailInput
}, { additionalProperties: false })

export const PasswordResetBodySchema = Type.Object({
  token: MailTokenInput,
  new_password: PasswordInput
}, { additionalProperties: false })
