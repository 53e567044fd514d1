import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { clientOf } from '../../../../../services/clients.js'
import { EmailOnlyBodySchema, EmailVerifyBodySchema } from '../../../../../schemas/auth.js'
import { problems } from '../../../../../schemas/problem.js'
import { Errors } from '../../../../../services/errors.js'

const email: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.post('/verify', {
    schema: {
      operationId: 'verifyEmail',
      tags: ['auth'],
      summary: 'Confirm an email address with the token from the mail',
      description: 'Confirms the account\'s address after signup, or a new address asked for at /api/v1/users/me/email (the account then changes to it and the old address is told). The token works once.',
      body: EmailVerifyBodySchema,
      response: { 200: Type.Ref('User', { description: 'The address is confirmed: the account as it is now' }), ...problems(Errors.InvalidToken, Errors.EmailTaken) }
    }
  }, async (request) => fastify.emails.verify(request.body.token, clientOf(request)))

  fastify.post('/resend', {
    config: { rateLimit: fastify.limits.mail },
    schema: {
      operationId: 'resendVerification',
      tags: ['auth'],
      summary: 'Send the verification mail again',
      description: 'Always 202 with the same body, whether or not the address has an account; at most one mail per address per EMAIL_RESEND_INTERVAL_SECONDS.',
      body: EmailOnlyBodySchema,
      response: { 202: Type.Ref('Accepted') }
    }
  }, async (request, reply) => {
    fastify.emails.resend(request.body.email)
    return reply.code(202).send({ message: 'If this address has an account waiting for confirmation, a new link is on its way.' })
  })
}

export default email
