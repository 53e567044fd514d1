import fp from 'fastify-plugin'

declare module 'fastify' {
  interface FastifyInstance {
    background: Background
  }
}

export interface Background {
  /** Runs `task` after the current response, off its path; failures are logged. */
  run: (name: string, task: () => Promise<unknown>) => void
  /** Resolves when every task started so far has finished (tests, shutdown). */
  idle: () => Promise<void>
}

/**
 * Work that must not change a response's timing or outcome: what happens
 * after "if this address has an account, we have mailed it" is answered.
 * Shutdown waits for the tasks in flight.
 */
export default fp(async function background (fastify) {
  const running = new Set<Promise<unknown>>()

  fastify.decorate('background', {
    run (name, task) {
      const job: Promise<unknown> = new Promise((resolve) => setImmediate(resolve))
        .then(task)
        .catch((err) => fastify.log.error({ err, task: name }, 'background task failed'))
        .finally(() => running.delete(job))
      running.add(job)
    },
    async idle () {
      while (running.size > 0) await Promise.all(running)
    }
  })

  fastify.addHook('preClose', async () => fastify.background.idle())
}, { name: 'background' })
