import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { problems } from '../../../../schemas/problem.js'
import { Errors } from '../../../../services/errors.js'
import { EmailChangeBodySchema } from '../../../../schemas/users.js'

const email: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.post('/me/email', {
    config: { auth: 'required', stepUp: true },
    schema: {
      operationId: 'changeEmail',
      tags: ['users'],
      summary: 'Change the email address (confirmed by mail)',
      description: 'Mails a link to the new address; the account keeps its old address until the token is posted to /api/v1/auth/email/verify, and the old address is then told of the change.',
      body: EmailChangeBodySchema,
      response: { 202: Type.Ref('Accepted'), ...problems(Errors.InvalidCredentials, Errors.SameEmail) }
    }
  }, async (request, reply) => {
    await fastify.emails.requestChange(request.auth!.userId, request.body.new_email, request.body.password)
    return reply.code(202).send({ message: 'Check the new address for a link to confirm it.' })
  })
}

export default email
