import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { problems } from '../../schemas/problem.js'
import { Errors } from '../../services/errors.js'

const metrics: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.get('/', {
    prefixTrailingSlash: 'no-slash',
    // Prometheus must see an overloaded or busy service too.
    config: { rateLimit: false, shedLoad: false, database: false },
    schema: {
      operationId: 'metrics',
      tags: ['operations'],
      summary: 'Prometheus metrics (text exposition format)',
      description: 'Needs `Authorization: Bearer <METRICS_TOKEN>`; production requires METRICS_TOKEN (in development, unset, it is open). docs/operations.md lists every metric.',
      security: [{}, { metricsToken: [] }],
      response: {
        200: { description: 'The metrics', content: { 'text/plain': { schema: Type.String() } } },
        ...problems(Errors.MetricsTokenRequired)
      }
    }
  }, async (request, reply) => {
    fastify.metrics.authorize(request)
    return reply.type(fastify.metrics.contentType).send(await fastify.metrics.text())
  })
}

export default metrics
