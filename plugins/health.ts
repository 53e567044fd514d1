import fp from 'fastify-plugin'
import pkg from '../package.json' with { type: 'json' }

declare module 'fastify' {
  interface FastifyInstance {
    health: {
      /** Alive: touches nothing outside the process. */
      liveness: () => HealthReport
      /** Ready: the database answers within a short timeout. */
      readiness: () => Promise<HealthReport>
      /** Answers a readiness request: 200 when ready, else 503, with the report. */
      answerReadiness: (reply: FastifyReply) => Promise<FastifyReply>
    }
  }
}

export interface HealthReport {
  status: 'ok' | 'unavailable'
  service: string
  version: string
  database?: 'ok' | 'unavailable'
}

const READINESS_TIMEOUT_MS = 1000

export default fp(async function health (fastify) {
  const base = { service: pkg.name, version: pkg.version }
  fastify.decorate('health', {
    liveness: () => ({ status: 'ok' as const, ...base }),
    async readiness () {
      const database = await fastify.dbReady(READINESS_TIMEOUT_MS) ? 'ok' as const : 'unavailable' as const
      return { status: database, ...base, database }
    },
    async answerReadiness (reply) {
      const report = await fastify.health.readiness()
      return reply.code(report.status === 'ok' ? 200 : 503).send(report)
    }
  })
}, { name: 'health', dependencies: ['db'] })
