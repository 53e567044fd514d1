import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { MfaConfirmBodySchema, MfaConfirmedSchema, MfaEnrolBodySchema, MfaEnrolmentSchema, MfaStatusSchema, RecoveryCodesSchema } from '../../../../schemas/mfa.js'
import { problems } from '../../../../schemas/problem.js'
import { clientOf } from '../../../../services/clients.js'
import { Errors } from '../../../../services/errors.js'

/** The signed-in user's second factors. Enrolment also takes the mfa_token of a sign-in whose role must enrol first. */
const mfa: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.get('/me/mfa', {
    config: { auth: 'required' },
    schema: {
      operationId: 'mfaStatus',
      tags: ['mfa'],
      summary: 'The second factors of the account and how many recovery codes are left',
      response: { 200: MfaStatusSchema }
    }
  }, async (request) => fastify.mfa.status(request.auth!.userId))

  fastify.post('/me/mfa/totp', {
    config: { auth: 'bearer-or-mfa-token' },
    schema: {
      operationId: 'mfaEnrolTotp',
      tags: ['mfa'],
      summary: 'Start a TOTP enrolment: the secret, its otpauth URI and QR code',
      description: 'With a bearer token and `{password}`, or with `{mfa_token}` from a sign-in that answered `mfa_enrolment_required`. The factor is pending until confirmed with a code.',
      body: MfaEnrolBodySchema,
      response: { 201: MfaEnrolmentSchema, ...problems(Errors.AuthenticationRequired, Errors.InvalidCredentials, Errors.InvalidMfaToken, Errors.MfaAlreadyEnrolled) }
    }
  }, async (request, reply) => {
    const { password, mfa_token: mfaToken } = request.body
    // Without an mfa_token the caller is signed in (config.auth) and the schema asked for the password.
    return reply.code(201).send(await fastify.assurance.enrol(mfaToken !== undefined ? { mfaToken } : { userId: request.auth!.userId, password: password! }))
  })

  fastify.post('/me/mfa/totp/confirm', {
    config: { auth: 'bearer-or-mfa-token' },
    schema: {
      operationId: 'mfaConfirmTotp',
      tags: ['mfa'],
      summary: 'Confirm the TOTP enrolment with a code: the recovery codes, shown this once',
      description: 'With a bearer token, or with the enrolment `mfa_token`: then the answer also signs in (the token response, at aal2).',
      body: MfaConfirmBodySchema,
      response: {
        200: MfaConfirmedSchema,
        ...problems(Errors.AuthenticationRequired, Errors.InvalidMfaCode, Errors.InvalidMfaToken, Errors.MfaNotPending)
      }
    }
  }, async (request) => {
    const { code, mfa_token: mfaToken } = request.body
    return fastify.assurance.confirm(mfaToken !== undefined ? { mfaToken } : { userId: request.auth!.userId }, code, clientOf(request))
  })

  fastify.delete('/me/mfa/totp', {
    config: { auth: 'required', stepUp: true },
    schema: {
      operationId: 'mfaRemoveTotp',
      tags: ['mfa'],
      summary: 'Remove the TOTP factor and its recovery codes (needs an aal2 session)',
      response: { 204: Type.Null({ description: 'Removed' }), ...problems(Errors.MfaNotEnrolled) }
    }
  }, async (request, reply) => {
    await fastify.mfa.remove(request.auth!.userId, { type: 'mfa_removed', client: clientOf(request), detail: { type: 'totp' } })
    return reply.code(204).send(null)
  })

  fastify.post('/me/mfa/recovery-codes', {
    config: { auth: 'required', stepUp: true },
    schema: {
      operationId: 'mfaNewRecoveryCodes',
      tags: ['mfa'],
      summary: 'A new set of recovery codes; the old ones stop working (needs an aal2 session)',
      response: { 200: RecoveryCodesSchema, ...problems(Errors.MfaNotEnrolled) }
    }
  }, async (request) => ({ recovery_codes: await fastify.mfa.regenerate(request.auth!.userId, clientOf(request)) }))
}

export default mfa
