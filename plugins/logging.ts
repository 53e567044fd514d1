import fp from 'fastify-plugin'

/**
 * One JSON line per request (Fastify's own two are turned off in the server
 * options) and the request id echoed on every response, errors included.
 */
export default fp(async function logging (fastify) {
  fastify.addHook('onRequest', async (request, reply) => {
    reply.header('x-request-id', request.id)
  })

  fastify.addHook('onResponse', async (request, reply) => {
    request.log.info({
      method: request.method,
      route: request.routeOptions.url ?? null,
      status: reply.statusCode,
      duration_ms: Math.round(reply.elapsedTime * 100) / 100,
      user_id: request.auth?.userId ?? null,
      ip: request.ip
    }, 'request')
  })
}, { name: 'logging', dependencies: ['config', 'authenticate'] })
