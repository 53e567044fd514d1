import type { Redis } from 'ioredis'
import type { Kysely } from 'kysely'
import { insertRevocations, lastSignedAt, listRevocations, pruneRevocations } from '../db/queries/revocations.js'
import type { Database } from '../db/types.js'
import { CLOCK_SKEW_SECONDS } from './access-tokens.js'
import { every, type Base } from './context.js'
import { closeRedis, listen, type Shared } from './redis.js'

/** Sessions whose revocation is written, and until when it must hold (ms, see `write`). */
export interface Revoked { ids: string[], until: number }

export type Revocations = Awaited<ReturnType<typeof createRevocations>>

/** How often the list is pruned and re-read from the database (catching anything Redis did not deliver). */
const RESYNC_MS = 30_000
/**
 * How long the database keeps a row after its end by the pruning instance's
 * clock: an instance whose clock is behind that one's by up to this still
 * finds the row (at start, or at a resync) while the session's tokens are
 * alive by its own clock. Rows are small.
 */
const KEEP_IN_DATABASE_MS = 3_600_000

/**
 * The list of revoked sessions whose access tokens may still be alive. Every
 * protected request asks `has(sid, exp)`: a Map lookup, no I/O. Revocations
 * are written to the database (so a restart or a late replica reloads them)
 * and, with Redis, published to every replica at once.
 *
 * How long an entry lasts, whatever the instances' clocks say. A token lives
 * on an instance until its own `exp`, read on that instance's clock; so its
 * session's revocation must last there at least as long. Each entry ends at
 * `until`: a bound on the `exp` of every token of the session, on the clocks
 * that wrote those `exp`s, and every instance compares it with its own clock
 * exactly as it compares a token's `exp`. So no instance drops a revocation
 * while it would still accept one of the session's tokens, however far apart
 * the clocks are. (Computed as the revoker's now + lifetime, as it once was,
 * it was no bound: a token signed on a clock ahead of the revoker's outlived
 * it, and an instance on that clock dropped the revocation at once.)
 *
 * `until` is the later of:
 * - the last time a token of the session was signed, as the signing instance
 *   wrote it (sessions.last_used_at and refresh_tokens.created_at go with each
 *   token) + the lifetime + one skew (the token is signed just after);
 * - the revoker's now + the lifetime + two skews: a refresh racing the
 *   revocation signs a token the database does not show yet, on a clock up to
 *   two skews ahead of the revoker's if each is within one of the true time.
 * A racing token on a clock further ahead than that outlives `until`; `has`
 * then keeps the entry until that token's `exp` (a token is nearly always
 * used at once, while the entry is alive).
 */
export async function createRevocations ({ db, clock, config, log, redis, shared }: Base & { redis: Redis | null, shared: Shared }) {
  const channel = `${config.REDIS_KEY_PREFIX}revocations`
  const revoked = new Map<string, number>() // session id -> until (ms), see above
  const lifetimeMs = config.ACCESS_TOKEN_TTL_SECONDS * 1000
  const skewMs = CLOCK_SKEW_SECONDS * 1000

  function remember (ids: string[], until: number) {
    for (const id of ids) revoked.set(id, Math.max(until, revoked.get(id) ?? 0))
  }

  // Every live row, not those revoked since the last pass: revoked_at is on the revoker's clock,
  // and a window on ours would miss the rows of a revoker whose clock is behind.
  async function loadFromDatabase (now: Date) {
    const rows = await listRevocations(db, now.toISOString())
    for (const row of rows) remember([row.session_id], new Date(row.expires_at).getTime())
  }

  async function resync () {
    const now = clock()
    for (const [id, until] of revoked) if (until <= now.getTime()) revoked.delete(id)
    await Promise.all([loadFromDatabase(now), pruneRevocations(db, new Date(now.getTime() - KEEP_IN_DATABASE_MS).toISOString())])
  }

  // Each (re)subscription is followed by a resync: nothing revoked before it, or published while
  // Redis was away, is missed (the database has it).
  const subscriber = redis && listen(redis, channel, log, (message) => {
    try {
      const { ids, until } = JSON.parse(message) as { ids: unknown, until: unknown }
      if (Array.isArray(ids) && typeof until === 'number') remember(ids.filter((id) => typeof id === 'string'), until)
    } catch (err) {
      log.warn({ err }, 'ignored a malformed revocation message')
    }
  }, resync)
  await loadFromDatabase(clock())

  const stop = every(RESYNC_MS, 'revocation resync', log, resync)

  return {
    /**
     * True when the session was ended. The caller has checked that the token
     * (expiring at `exp`, seconds) is alive: a token that outlives the entry
     * keeps it until the token's own end.
     */
    has (sessionId: string, exp: number): boolean {
      const until = revoked.get(sessionId)
      if (until === undefined) return false
      if (exp * 1000 > until) revoked.set(sessionId, exp * 1000)
      return true
    },

    /**
     * Writes the revocation of sessions ended in `trx`, the transaction of the
     * change that ends them; `announce` what it returns once that has committed.
     */
    async write (trx: Kysely<Database>, sessionIds: string[]): Promise<Revoked> {
      if (sessionIds.length === 0) return { ids: [], until: 0 }
      const now = clock()
      const signedAt = await lastSignedAt(trx, sessionIds)
      const until = Math.max(now.getTime() + lifetimeMs + 2 * skewMs, (signedAt?.getTime() ?? 0) + lifetimeMs + skewMs)
      await insertRevocations(trx, sessionIds, now.toISOString(), new Date(until).toISOString())
      return { ids: sessionIds, until }
    },

    /**
     * Puts committed revocations on the list here and, with Redis, on every
     * replica. The database has them: a Redis outage delays the other
     * replicas (to Redis' return or their next resync), it fails nothing.
     */
    async announce ({ ids, until }: Revoked): Promise<void> {
      if (ids.length === 0) return
      remember(ids, until)
      await shared.run('revocation_publish', (redis) => redis.publish(channel, JSON.stringify({ ids, until })), () => 0)
    },

    /** Prunes the list and re-reads the database now, as the timer does every RESYNC_MS. */
    resync,

    async close (): Promise<void> {
      stop()
      if (subscriber) await closeRedis(subscriber)
    }
  }
}
