import { Type } from 'typebox'
import { PasswordInput, TokenResponseSchema } from './common.js'

/** A TOTP code as an authenticator app shows it. */
export const TotpCodeInput = Type.String({ minLength: 6, maxLength: 6, pattern: '^[0-9]{6}$', description: 'The 6-digit code the authenticator app shows now.', examples: ['123456'] })
/** A recovery code as printed (any case; spaces and dashes ignored). */
export const RecoveryCodeInput = Type.String({ minLength: 12, maxLength: 20, pattern: '^[0-9A-Za-z -]+$', description: 'One of the recovery codes, e.g. `7KQ2-M9XD-4TWP`.', examples: ['7KQ2-M9XD-4TWP'] })
/** The opaque token between a sign-in's password step and its second step. */
export const MfaTokenInput = Type.String({ minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9_-]+$' })

export const MfaVerifyBodySchema = Type.Object({
  mfa_token: Type.Optional(MfaTokenInput),
  code: Type.Optional(TotpCodeInput),
  recovery_code: Type.Optional(RecoveryCodeInput)
}, {
  additionalProperties: false,
  // Exactly one proof, a TOTP code or a recovery code: with both, both branches hold and oneOf fails.
  oneOf: [{ required: ['code'] }, { required: ['recovery_code'] }]
})

export const MfaEnrolBodySchema = Type.Object({
  password: Type.Optional(PasswordInput),
  mfa_token: Type.Optional(MfaTokenInput)
}, { additionalProperties: false, oneOf: [{ required: ['password'] }, { required: ['mfa_token'] }] })

export const MfaConfirmBodySchema = Type.Object({
  code: TotpCodeInput,
  mfa_token: Type.Optional(MfaTokenInput)
}, { additionalProperties: false })

export const MfaEnrolmentSchema = Type.Object({
  factor_id: Type.String({ format: 'uuid' }),
  secret: Type.String({ description: 'The TOTP secret, base32: for apps that cannot scan the QR code.' }),
  otpauth_uri: Type.String({ description: 'The `otpauth://totp/…` URI the QR code holds.' }),
  qr_svg: Type.String({ description: 'The QR code of `otpauth_uri`, as SVG.' })
}, { additionalProperties: false })

export const RecoveryCodesSchema = Type.Object({
  recovery_codes: Type.Array(Type.String(), { description: 'Shown this once: each works once, in place of a code.' })
}, { additionalProperties: false })

export const MfaStatusSchema = Type.Object({
  factors: Type.Array(Type.Object({
    type: Type.Literal('totp'),
    created_at: Type.String({ format: 'date-time' }),
    last_used_at: Type.Union([Type.String({ format: 'date-time' }), Type.Null()])
  }, { additionalProperties: false })),
  recovery_codes_left: Type.Integer({ minimum: 0 })
}, { additionalProperties: false })

/** The password was right and the account has a second factor: no tokens yet. */
export const MfaRequiredSchema = Type.Object({
  mfa_required: Type.Literal(true),
  mfa_token: Type.String({ description: 'Send it with a code to POST /api/v1/auth/mfa/verify within 5 minutes; it works once.' }),
  methods: Type.Array(Type.Union([Type.Literal('totp'), Type.Literal('recovery_code')]))
}, { $id: 'MfaRequired', title: 'MfaRequired', additionalProperties: false })

/** The password was right and the account's role must have a second factor first (MFA_REQUIRED_ROLES). */
export const MfaEnrolmentRequiredSchema = Type.Object({
  mfa_enrolment_required: Type.Literal(true),
  mfa_token: Type.String({ description: 'Accepted only by the enrolment routes (POST /api/v1/users/me/mfa/totp and …/confirm), for 5 minutes.' })
}, { $id: 'MfaEnrolmentRequired', title: 'MfaEnrolmentRequired', additionalProperties: false })

/** The enrolment confirmed: the recovery codes and, when it finished a sign-in (an enrolment mfa_token), the tokens. */
export const MfaConfirmedSchema = Type.Object({
  recovery_codes: RecoveryCodesSchema.properties.recovery_codes,
  ...Type.Partial(Type.Omit(TokenResponseSchema, ['user'])).properties,
  user: Type.Optional(Type.Ref('User'))
}, { additionalProperties: false })
