import underPressure from '@fastify/under-pressure'
import fp from 'fastify-plugin'
import { withProblems } from '../../schemas/problem.js'
import { Errors, retryLater } from '../../services/errors.js'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** false: this route answers even under pressure (health, metrics). */
    shedLoad?: boolean
  }
}

/**
 * Sheds load before it topples the process: above the configured event-loop
 * delay, heap or RSS, new requests get 503 OVERLOADED with Retry-After.
 * Health and metrics routes are exempt (`config: { shedLoad: false }`), so
 * the orchestrator and Prometheus still see the truth.
 */
export default fp(async function loadShedding (fastify) {
  const { config } = fastify
  // For the document: a route that sheds load may answer 503 OVERLOADED (also when the password-hash queue is full).
  fastify.addHook('onRoute', (route) => {
    if (route.config?.shedLoad !== false) route.schema = withProblems(route.schema, [Errors.Overloaded])
  })
  await fastify.register(underPressure, {
    maxEventLoopDelay: config.MAX_EVENT_LOOP_DELAY_MS,
    maxHeapUsedBytes: config.MAX_HEAP_USED_BYTES,
    maxRssBytes: config.MAX_RSS_BYTES,
    exposeStatusRoute: false,
    // Resolving lets the request through; throwing answers it through the error handler.
    pressureHandler: async (request) => {
      if (request.routeOptions.config?.shedLoad === false) return
      throw retryLater('Overloaded', 5)
    }
  })
}, { name: 'load-shedding', dependencies: ['config', 'errors', 'security'] })
