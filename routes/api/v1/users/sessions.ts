import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { problems } from '../../../../schemas/problem.js'
import { EndSessionsQuerySchema, SessionParamsSchema } from '../../../../schemas/users.js'
import { Errors } from '../../../../services/errors.js'
import { clientOf } from '../../../../services/clients.js'

const sessions: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.get('/me/sessions', {
    config: { auth: 'required' },
    schema: {
      operationId: 'listSessions',
      tags: ['sessions'],
      summary: 'The signed-in user\'s live sessions',
      response: { 200: Type.Array(Type.Ref('Session'), { description: 'The live sessions, this one marked `current`' }) }
    }
  }, async (request) => {
    const { userId, sessionId } = request.auth!
    const rows = await fastify.sessions.list(userId)
    return rows.map((s) => ({ ...s, current: s.id === sessionId }))
  })

  fastify.delete('/me/sessions/:id', {
    config: { auth: 'required' },
    schema: {
      operationId: 'endSession',
      tags: ['sessions'],
      summary: 'End one session; its tokens stop working at once',
      params: SessionParamsSchema,
      response: { 204: Type.Null({ description: 'Ended' }), ...problems(Errors.SessionNotFound) }
    }
  }, async (request, reply) => {
    if (!await fastify.sessions.end(request.auth!.userId, request.params.id, 'ended_by_user', clientOf(request))) throw new Errors.SessionNotFound()
    return reply.code(204).send(null)
  })

  fastify.delete('/me/sessions', {
    config: { auth: 'required' },
    schema: {
      operationId: 'endSessions',
      tags: ['sessions'],
      summary: 'End every other session (with include_current=true, this one too)',
      querystring: EndSessionsQuerySchema,
      response: { 204: Type.Null({ description: 'Ended' }) }
    }
  }, async (request, reply) => {
    const { userId, sessionId } = request.auth!
    await fastify.sessions.endAll(userId, 'ended_by_user', request.query.include_current ? undefined : sessionId, clientOf(request))
    return reply.code(204).send(null)
  })
}

export default sessions
