import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { clientOf } from '../../../../services/clients.js'
import { Errors } from '../../../../services/errors.js'
import { problems } from '../../../../schemas/problem.js'
import { AccountDeleteBodySchema, ProfileUpdateBodySchema } from '../../../../schemas/users.js'

const users: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.get('/me', {
    config: { auth: 'required' },
    schema: {
      operationId: 'getMe',
      tags: ['users'],
      summary: 'The signed-in user',
      response: { 200: Type.Ref('User', { description: 'The signed-in user' }) }
    }
  }, async (request) => fastify.accounts.profile(request.auth!.userId))

  // PATCH is the method; PUT stays for the original service's clients.
  for (const method of ['PATCH', 'PUT'] as const) {
    fastify.route({
      method,
      url: '/me',
      config: { auth: 'required' },
      schema: {
        operationId: method === 'PATCH' ? 'updateMe' : 'replaceMe',
        tags: ['users'],
        summary: method === 'PATCH' ? 'Change the username' : 'Change the username (as PATCH; kept for older clients)',
        body: ProfileUpdateBodySchema,
        response: { 200: Type.Ref('User', { description: 'Changed: the user as it is now' }), ...problems(Errors.UsernameTaken) }
      },
      handler: async (request) => fastify.accounts.updateProfile(request.auth!.userId, request.body)
    })
  }

  fastify.delete('/me', {
    config: { auth: 'required', stepUp: true },
    schema: {
      operationId: 'deleteMe',
      tags: ['users'],
      summary: 'Delete the account (the password is asked again)',
      body: AccountDeleteBodySchema,
      response: { 204: Type.Null({ description: 'Deleted' }), ...problems(Errors.InvalidCredentials) }
    }
  }, async (request, reply) => {
    await fastify.accounts.deleteAccount(request.auth!.userId, request.body.password, clientOf(request))
    return reply.code(204).send(null)
  })
}

export default users
