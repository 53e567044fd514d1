import { readFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { hash, verify } from '@node-rs/argon2'
import { Errors, retryLater } from './errors.js'
import type { Config } from '../schemas/config.js'

export type Passwords = ReturnType<typeof createPasswords>

/** The 10,000 most common passwords (docs/security.md, Passwords: where the list comes from). */
const COMMON_PASSWORDS = new Set(
  readFileSync(new URL('./common-passwords.txt', import.meta.url), 'utf8').split('\n').filter(Boolean)
)

export const MAX_PASSWORD_LENGTH = 256

export type PolicyViolation = 'too_short' | 'too_long' | 'too_common' | 'matches_identity'
type Identity = { email?: string | null, username?: string | null }

const POLICY_MESSAGES: Record<PolicyViolation, (min: number) => string> = {
  too_short: (min) => `use at least ${min} characters`,
  too_long: () => `use at most ${MAX_PASSWORD_LENGTH} characters`,
  too_common: () => 'it is one of the most common passwords; choose another',
  matches_identity: () => 'it must not be your email address or username'
}

/** Unicode normalisation first, so the same password typed on two keyboards hashes the same. */
export function normalizePassword (password: string): string {
  return password.normalize('NFKC')
}

/**
 * Runs at most `concurrency` tasks at once with at most `queueLimit` waiting;
 * beyond that, 503 at once: a flood of sign-ins cannot grow memory without end.
 */
function boundedQueue (concurrency: number, queueLimit: number) {
  let active = 0
  const waiting: Array<() => void> = []
  return async function run<T> (task: () => Promise<T>): Promise<T> {
    if (active < concurrency) active++
    else if (waiting.length < queueLimit) await new Promise<void>((resolve) => waiting.push(resolve))
    else throw retryLater('Overloaded', 1)
    try {
      return await task()
    } finally {
      // Hand the slot to the next in line, or free it.
      const next = waiting.shift()
      if (next) next()
      else active--
    }
  }
}

type HashTimer = (operation: 'hash' | 'verify', seconds: number) => void

/** Runs an argon2 call and tells `timed` how long it took. */
async function timedAs<T> (operation: 'hash' | 'verify', timed: HashTimer, work: () => Promise<T>): Promise<T> {
  const start = performance.now()
  try {
    return await work()
  } finally {
    timed(operation, (performance.now() - start) / 1000)
  }
}

export function createPasswords (config: Pick<Config, 'ARGON2_MEMORY_KIB' | 'ARGON2_ITERATIONS' | 'ARGON2_PARALLELISM' | 'PASSWORD_MIN_LENGTH' | 'HASH_CONCURRENCY' | 'HASH_QUEUE_LIMIT'>, timed: HashTimer = () => {}) {
  // @node-rs/argon2 hashes with argon2id unless told otherwise (its Algorithm is a const enum TS cannot import here).
  const params = {
    memoryCost: config.ARGON2_MEMORY_KIB,
    timeCost: config.ARGON2_ITERATIONS,
    parallelism: config.ARGON2_PARALLELISM
  }
  const paramString = `m=${params.memoryCost},t=${params.timeCost},p=${params.parallelism}`

  const concurrency = config.HASH_CONCURRENCY || Math.min(4, availableParallelism())
  const queued = boundedQueue(concurrency, config.HASH_QUEUE_LIMIT)

  function hashPassword (password: string): Promise<string> {
    return queued(() => timedAs('hash', timed, () => hash(normalizePassword(password), params)))
  }

  /** The policy: length in characters after NFKC, not common, not the account's own email or username. */
  function check (password: string, identity: Identity = {}): PolicyViolation | null {
    const normalized = normalizePassword(password)
    const length = [...normalized].length
    if (length < config.PASSWORD_MIN_LENGTH) return 'too_short'
    if (length > MAX_PASSWORD_LENGTH) return 'too_long'
    const lower = normalized.toLowerCase()
    if (COMMON_PASSWORDS.has(lower)) return 'too_common'
    if (lower === identity.email?.toLowerCase() || lower === identity.username?.toLowerCase()) return 'matches_identity'
    return null
  }

  // Hashed once at start: unknown accounts verify against it so they cost what known ones do.
  const dummyHash = hashPassword('dummy password for unknown accounts')

  return {
    /** Hashes computed at once. */
    concurrency,
    hash: hashPassword,

    /** Verifies against `stored`, or against a dummy hash when there is no account, so both take the same time. */
    async verify (stored: string | undefined, password: string): Promise<boolean> {
      const target = stored ?? await dummyHash
      const ok = await queued(() => timedAs('verify', timed, () => verify(target, normalizePassword(password)).catch(() => false)))
      return ok && stored !== undefined
    },

    /** True when `stored` was made with other parameters than the configured ones. */
    needsRehash (stored: string): boolean {
      return !stored.startsWith('$argon2id$') || !stored.includes(`$${paramString}$`)
    },

    /** Throws 400 WEAK_PASSWORD, saying why, when the password breaks the policy. */
    enforce (password: string, identity: Identity = {}): void {
      const violation = check(password, identity)
      if (violation) throw new Errors.WeakPassword(POLICY_MESSAGES[violation](config.PASSWORD_MIN_LENGTH))
    }
  }
}
