import type { Kysely } from 'kysely'
import type { Database } from '../db/types.js'
import type { Config } from '../schemas/config.js'

/** What a service logs with: the methods of the service's pino logger it uses, so a service needs no fastify type. */
export interface Log {
  debug: (obj: object | string, msg?: string) => void
  info: (obj: object | string, msg?: string) => void
  warn: (obj: object | string, msg?: string) => void
  error: (obj: object | string, msg?: string) => void
}

/** The clock every service reads (the tests move it). */
export type Clock = () => Date

/** What nearly every service takes. A change's transaction is passed down as `trx`, a handle of the same type as `db`. */
export interface Base {
  db: Kysely<Database>
  clock: Clock
  config: Config
  log: Log
}

/** Runs `task` every `ms` (not holding the process open); a failure is logged as `what failed`. Returns the stop. */
export function every (ms: number, what: string, log: Log, task: () => Promise<unknown>): () => void {
  const timer = setInterval(() => { task().catch((err) => log.warn({ err }, `${what} failed`)) }, ms)
  timer.unref()
  return () => clearInterval(timer)
}
