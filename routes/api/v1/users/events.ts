import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'

const events: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.get('/me/events', {
    config: { auth: 'required' },
    schema: {
      operationId: 'listMyEvents',
      tags: ['users'],
      summary: 'Your recent security events (sign-ins, failures, password and session changes)',
      response: {
        200: Type.Array(Type.Object({
          type: Type.String(),
          session_id: Type.Union([Type.String(), Type.Null()]),
          ip: Type.Union([Type.String(), Type.Null()]),
          user_agent: Type.Union([Type.String(), Type.Null()]),
          created_at: Type.String({ format: 'date-time' })
        }, { additionalProperties: false }), { description: 'The 50 latest events, newest first' })
      }
    }
  }, async (request) => (await fastify.admin.listEvents({ userId: request.auth!.userId }, 50)).items)
}

export default events
