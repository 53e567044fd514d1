/**
 * The hash ceiling: how many argon2id verifies a second this machine does
 * with the service's parameters (ARGON2_* as the service would read them
 * from this environment, its defaults otherwise), through @node-rs/argon2 as
 * the service calls it, as many verifies in flight as the service allows
 * (HASH_CONCURRENCY; 0, the default, is one per core, at most 4, as
 * plugins/passwords.ts reads it), in this process while it does nothing
 * else. Bounded: warm-up plus runs × duration seconds.
 */
import { availableParallelism } from 'node:os'
import { hash, verify } from '@node-rs/argon2'
import { loadConfig } from '../../plugins/external/config.js'
import { median } from './stats.js'
import { PASSWORD } from './scenarios.js'

export interface HashCeiling {
  params: { memoryKib: number, iterations: number, parallelism: number }
  concurrency: number
  /** Median of the runs. */
  perSecond: number
  runs: number[]
  /** CPU time of this process (every thread) per verify, over the runs, in ms. */
  cpuMsPerVerify: number
}

/** The argon2 settings the service would use with this environment. */
export function serviceHashSettings () {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => /^(ARGON2_|HASH_)/.test(k)))
  const c = loadConfig(env)
  // The same rule as plugins/passwords.ts.
  const concurrency = c.HASH_CONCURRENCY || Math.min(4, availableParallelism())
  return { memoryCost: c.ARGON2_MEMORY_KIB, timeCost: c.ARGON2_ITERATIONS, parallelism: c.ARGON2_PARALLELISM, concurrency }
}

/** Verifies for `seconds`, `concurrency` at a time; verifies a second, and how many. */
async function verifyFor (stored: string, concurrency: number, seconds: number): Promise<{ perSecond: number, done: number }> {
  const start = performance.now()
  const end = start + seconds * 1000
  let done = 0
  const worker = async () => {
    while (performance.now() < end) {
      if (!await verify(stored, PASSWORD)) throw new Error('argon2 verify failed on the right password')
      done++
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  return { perSecond: done / ((performance.now() - start) / 1000), done }
}

export async function hashCeiling (opts: { runs: number, duration: number, warmup: number }): Promise<HashCeiling> {
  const { concurrency, ...params } = serviceHashSettings()
  const stored = await hash(PASSWORD, params)
  if (opts.warmup > 0) await verifyFor(stored, concurrency, opts.warmup)
  const runs: number[] = []
  let verifies = 0
  const cpu0 = process.cpuUsage()
  for (let i = 0; i < opts.runs; i++) {
    const run = await verifyFor(stored, concurrency, opts.duration)
    runs.push(run.perSecond)
    verifies += run.done
  }
  const cpu = process.cpuUsage(cpu0)
  return {
    params: { memoryKib: params.memoryCost, iterations: params.timeCost, parallelism: params.parallelism },
    concurrency,
    perSecond: median(runs),
    runs,
    cpuMsPerVerify: (cpu.user + cpu.system) / 1000 / verifies
  }
}
