import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'

const health: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.get('/', {
    prefixTrailingSlash: 'no-slash',
    config: { shedLoad: false, database: false },
    schema: {
      operationId: 'liveness',
      tags: ['health'],
      summary: 'Liveness: the process answers (touches no database)',
      response: { 200: Type.Ref('Health', { description: 'The process answers' }) }
    }
  }, async () => fastify.health.liveness())

  fastify.get('/ready', {
    config: { shedLoad: false, database: false },
    schema: {
      operationId: 'readiness',
      tags: ['health'],
      summary: 'Readiness: 200 when the database (and Redis, when configured) answer, else 503',
      response: { 200: Type.Ref('Health', { description: 'Ready' }), 503: Type.Ref('Health', { description: 'Not ready: the database (or Redis) does not answer' }) }
    }
  }, async (_request, reply) => fastify.health.answerReadiness(reply))
}

export default health
