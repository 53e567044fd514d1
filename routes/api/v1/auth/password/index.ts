import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { clientOf } from '../../../../../services/clients.js'
import { EmailOnlyBodySchema, PasswordChangeBodySchema, PasswordResetBodySchema } from '../../../../../schemas/auth.js'
import { problems } from '../../../../../schemas/problem.js'
import { Errors } from '../../../../../services/errors.js'

const password: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.post('/change', {
    config: { auth: 'required', stepUp: true },
    schema: {
      operationId: 'changePassword',
      tags: ['auth'],
      summary: 'Change the password; every other session ends',
      description: 'A wrong current password is 401 INVALID_CREDENTIALS; the same password again is 400 SAME_PASSWORD.',
      body: PasswordChangeBodySchema,
      response: { 204: Type.Null({ description: 'Changed' }), ...problems(Errors.InvalidCredentials, Errors.SamePassword, Errors.WeakPassword) }
    }
  }, async (request, reply) => {
    const { userId, sessionId } = request.auth!
    await fastify.accounts.changePassword(userId, sessionId, request.body.current_password, request.body.new_password, clientOf(request))
    return reply.code(204).send(null)
  })

  fastify.post('/forgot', {
    config: { rateLimit: fastify.limits.mail },
    schema: {
      operationId: 'forgotPassword',
      tags: ['auth'],
      summary: 'Mail a password reset link',
      description: 'Always 202 with the same body, whether or not the address has an account. The link works once, for PASSWORD_RESET_TTL_SECONDS; a newer request voids it.',
      body: EmailOnlyBodySchema,
      response: { 202: Type.Ref('Accepted') }
    }
  }, async (request, reply) => {
    fastify.emails.forgot(request.body.email)
    return reply.code(202).send({ message: 'If this address has an account, a link to reset its password is on its way.' })
  })

  fastify.post('/reset', {
    schema: {
      operationId: 'resetPassword',
      tags: ['auth'],
      summary: 'Set a new password with the token from the reset mail; every session ends',
      description: 'An unknown, used or expired token is 400 INVALID_TOKEN. Only this POST spends the token, so mail scanners that follow links cannot.',
      body: PasswordResetBodySchema,
      response: { 204: Type.Null({ description: 'Password changed; sign in again' }), ...problems(Errors.InvalidToken, Errors.WeakPassword) }
    }
  }, async (request, reply) => {
    await fastify.emails.reset(request.body.token, request.body.new_password, clientOf(request))
    return reply.code(204).send(null)
  })
}

export default password
