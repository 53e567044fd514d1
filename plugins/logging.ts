import type { FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'

/** The one log line of a request: never the raw URL, a body, or a header value. */
export function logRequest (request: FastifyRequest, reply: FastifyReply) {
  request.log.info({
    method: request.method,
    route: request.routeOptions.url ?? null,
    status: reply.statusCode,
    duration_ms: Math.round(reply.elapsedTime * 100) / 100,
    user_id: request.auth?.userId ?? null,
    ip: request.ip
  }, 'request')
}

/** One JSON line per request, in place of Fastify's two (turned off in the server options). */
export default fp(async function logging (fastify) {
  fastify.addHook('onResponse', (request, reply, done) => {
    logRequest(request, reply)
    done()
  })
}, { name: 'logging', dependencies: ['config', 'authenticate'] })
