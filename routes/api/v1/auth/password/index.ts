import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { PasswordChangeBodySchema } from '../../../../../schemas/auth.js'
import { problems } from '../../../../../schemas/problem.js'

const password: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.post('/change', {
    config: { auth: 'required' },
    schema: {
      operationId: 'changePassword',
      tags: ['auth'],
      summary: 'Change the password; every other session ends',
      description: 'A wrong current password is 401 INVALID_CREDENTIALS; the same password again is 400 SAME_PASSWORD.',
      body: PasswordChangeBodySchema,
      response: { 204: Type.Null({ description: 'Changed' }), ...problems(400) }
    }
  }, async (request, reply) => {
    const { userId, sessionId } = request.auth!
    await fastify.accounts.changePassword(userId, sessionId, request.body.current_password, request.body.new_password)
    return reply.code(204).send(null)
  })
}

export default password
