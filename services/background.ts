import type { Log } from './context.js'

export type Background = ReturnType<typeof createBackground>

/**
 * Work that must not change a response's timing or outcome: what happens
 * after "if this address has an account, we have mailed it" is answered.
 * Shutdown waits for the tasks in flight (`idle`).
 */
export function createBackground (log: Log) {
  const running = new Set<Promise<unknown>>()
  return {
    /** Runs `task` after the current response, off its path; failures are logged. */
    run (name: string, task: () => Promise<unknown>): void {
      const job: Promise<unknown> = new Promise((resolve) => setImmediate(resolve))
        .then(task)
        .catch((err) => log.error({ err, task: name }, 'background task failed'))
        .finally(() => running.delete(job))
      running.add(job)
    },

    /** Resolves when every task started so far has finished (tests, shutdown). */
    async idle (): Promise<void> {
      while (running.size > 0) await Promise.all(running)
    }
  }
}
