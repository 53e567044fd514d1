import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { MfaVerifyBodySchema } from '../../../../../schemas/mfa.js'
import { problems } from '../../../../../schemas/problem.js'
import { clientOf } from '../../../../../services/clients.js'
import { Errors } from '../../../../../services/errors.js'

const mfa: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.post('/verify', {
    config: { auth: 'bearer-or-mfa-token', rateLimit: fastify.limits.login, outcome: 'logins' },
    schema: {
      operationId: 'mfaVerify',
      tags: ['auth'],
      summary: 'The second step: a code (or a recovery code) gives the tokens, at aal2',
      description: 'After a sign-in that answered `mfa_required`: `{mfa_token, code}` or `{mfa_token, recovery_code}` gives the usual token response. Without mfa_token, with the bearer token of a signed-in session: step-up, the session is raised to aal2 and new tokens come back.',
      body: MfaVerifyBodySchema,
      response: { 200: Type.Ref('TokenResponse'), ...problems(Errors.AuthenticationRequired, Errors.InvalidMfaCode, Errors.InvalidMfaToken, Errors.MfaNotEnrolled) }
    }
  }, async (request) => {
    const { mfa_token: mfaToken, code, recovery_code: recoveryCode } = request.body
    const proof = code !== undefined ? { code } : { recovery_code: recoveryCode! }
    const client = clientOf(request)
    if (mfaToken !== undefined) return fastify.assurance.verify(mfaToken, proof, client)
    return fastify.assurance.stepUp(request.auth!, proof, client)
  })
}

export default mfa
