import type { FastifyReply } from 'fastify'
import fp from 'fastify-plugin'
import { sql } from 'kysely'
import pkg from '../../package.json' with { type: 'json' }

declare module 'fastify' {
  interface FastifyInstance {
    health: {
      /** Alive: touches nothing outside the process. */
      liveness: () => HealthReport
      /** Ready: the database answers within a short timeout; Redis, when configured, is reported (away, the service is degraded, not down). */
      readiness: () => Promise<HealthReport>
      /** Answers a readiness request: 200 when ready, else 503, with the report. */
      answerReadiness: (reply: FastifyReply) => Promise<FastifyReply>
    }
  }
}

type Status = 'ok' | 'unavailable'

export interface HealthReport {
  status: Status | 'degraded'
  service: string
  version: string
  database?: Status
  redis?: Status
}

/** Short: an orchestrator probes often, and a dependency slower than this is as good as down. */
const READINESS_TIMEOUT_MS = 1000

/** 'ok' when `check` settles successfully within the timeout. */
async function statusOf (check: () => Promise<unknown>): Promise<Status> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<Status>((resolve) => { timer = setTimeout(resolve, READINESS_TIMEOUT_MS, 'unavailable') })
  try {
    return await Promise.race([check().then(() => 'ok' as const, () => 'unavailable' as const), timeout])
  } finally {
    clearTimeout(timer)
  }
}

export default fp(async function health (fastify) {
  const { db, redis } = fastify
  const base = { service: pkg.name, version: pkg.version }
  // A disconnected client would queue the ping until it reconnects: not ready, at once.
  const redisStatus = async () => redis!.status === 'ready' ? statusOf(() => redis!.ping()) : 'unavailable' as const

  fastify.decorate('health', {
    liveness: () => ({ status: 'ok' as const, ...base }),
    async readiness () {
      const [database, redisReport] = await Promise.all([statusOf(() => sql`select 1`.execute(db)), redis ? redisStatus() : undefined])
      // Redis is an accelerator: without it every replica still serves, so it must not take them all out of rotation.
      const status = database !== 'ok' ? 'unavailable' : redisReport === 'unavailable' ? 'degraded' : 'ok'
      return { status, ...base, database, ...(redisReport && { redis: redisReport }) }
    },
    async answerReadiness (reply) {
      const report = await fastify.health.readiness()
      return reply.code(report.status === 'unavailable' ? 503 : 200).send(report)
    }
  })
}, { name: 'health', dependencies: ['db', 'redis'] })
