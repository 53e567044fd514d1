import { randomUUID } from 'node:crypto'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import type { Kysely } from 'kysely'
import { findRefreshToken, insertSession, listLiveSessions, revokeSessions, rotateRefreshToken, touchSession, type RefreshTokenWithSession } from '../db/queries/sessions.js'
import { voidAllOneTimeTokens } from '../db/queries/one-time-tokens.js'
import { findUserById, type Account } from '../db/queries/users.js'
import type { Database, SessionRow } from '../db/types.js'
import { clientIp } from './client-ip.js'
import { Errors } from '../services/errors.js'
import type { Revoked } from './revocations.js'

declare module 'fastify' {
  interface FastifyInstance {
    sessions: Sessions
  }
}

export type Sessions = ReturnType<typeof createSessions>

/** Sessions ended within a change, to announce once it has committed. */
export type Ended = Revoked & { reason: string }

/** Where a request came from, kept on its session and in audit events. */
export interface ClientInfo {
  ip: string | null
  userAgent: string | null
}

export interface IssuedTokens {
  access_token: string
  token_type: 'Bearer'
  expires_in: number
  refresh_token: string
}

export const clientOf = (request: FastifyRequest): ClientInfo => ({
  ip: clientIp(request),
  // Without control characters (C0, DEL, C1): they would reach whoever reads the sessions and events in a terminal or a log viewer.
  userAgent: request.headers['user-agent']?.replace(/[\u0000-\u001f\u007f-\u009f]/g, '').slice(0, 512) ?? null // eslint-disable-line no-control-regex
})

const later = (from: Date, seconds: number) => new Date(from.getTime() + seconds * 1000).toISOString()
const isPast = (time: Date | string, now: Date) => new Date(time).getTime() <= now.getTime()
/** How many rotations a racing request may follow to reach the session's current token. */
const MAX_GRACE_HOPS = 8

function createSessions (fastify: FastifyInstance) {
  const { db, tokens, config, revocations, audit, metrics } = fastify

  /** The pair for a session; the access token carries the roles read with the user's row. */
  async function issue (user: Account, sessionId: string, refreshToken: string): Promise<IssuedTokens> {
    return {
      access_token: await tokens.signAccessToken({ sub: user.id, sid: sessionId, roles: user.roles }),
      token_type: 'Bearer',
      expires_in: tokens.accessTtl,
      refresh_token: refreshToken
    }
  }

  /**
   * Ends sessions as part of the change that ends them, in its transaction
   * `trx`: the rows, their revocation (so their access tokens stop), and,
   * given the client (a request asked for it), a `logout` or
   * `sessions_ended` event. `announce` the result once `trx` has committed.
   */
  async function endWithin (trx: Kysely<Database>, userId: string, reason: string, opts: { only?: string, except?: string } = {}, client?: ClientInfo): Promise<Ended> {
    const now = fastify.now().toISOString()
    // Every session at once means the credentials changed or are in doubt: a change of address or a
    // reset asked for before must not outlive that (someone who knew the old password may have asked).
    if (opts.only === undefined) await voidAllOneTimeTokens(trx, userId, now)
    const ids = await revokeSessions(trx, userId, now, reason, opts)
    if (client && ids.length > 0) {
      await audit.record({ type: reason === 'logout' ? 'logout' : 'sessions_ended', userId, sessionId: opts.only ?? null, client, detail: { reason, sessions: ids.length } }, trx)
    }
    return { reason, ...await revocations.write(trx, ids) }
  }

  /** Once the change that ended them has committed: the sessions' tokens stop here and on every replica. */
  async function announce (ended: Ended): Promise<void> {
    await revocations.announce(ended)
    metrics.revocations.inc({ reason: ended.reason }, ended.ids.length)
  }

  /** Ends sessions in a change of their own (see endWithin); returns their ids. */
  async function revoke (userId: string, reason: string, opts: { only?: string, except?: string } = {}, client?: ClientInfo): Promise<string[]> {
    const ended = await db.transaction().execute((trx) => endWithin(trx, userId, reason, opts, client))
    await announce(ended)
    return ended.ids
  }

  /**
   * A rotated token presented again. Within the grace window it is a racing
   * tab: follow the rotations to the session's current token and hand that out
   * (the successor of a token is derived from it, so no plaintext is stored).
   * Later, it is a stolen token: the whole session ends.
   */
  async function replay (row: RefreshTokenWithSession, presented: string, user: Account, client: ClientInfo, now: Date): Promise<IssuedTokens> {
    const rotatedAt = new Date(row.rotated_at!)
    // Theft when rotated more than the grace ago; with a grace of 0, any replay at all.
    const grace = config.REFRESH_REUSE_GRACE_SECONDS * 1000
    if (grace === 0 || now.getTime() - rotatedAt.getTime() > grace) {
      metrics.refreshReuse.inc()
      await announce(await db.transaction().execute(async (trx) => {
        const ended = await endWithin(trx, row.user_id, 'refresh_token_reused', { only: row.session_id })
        await audit.record({ type: 'refresh_token_reused', userId: row.user_id, sessionId: row.session_id, client, detail: { rotated_at: rotatedAt.toISOString(), session_ended: ended.ids.length > 0 } }, trx)
        return ended
      }))
      throw new Errors.RefreshTokenReused()
    }
    let token = presented
    for (let hop = 0; hop < MAX_GRACE_HOPS; hop++) {
      const next = tokens.successorOf(token)
      const successor = await findRefreshToken(db, next.hash)
      if (!successor) break
      if (successor.rotated_at === null) {
        if (isPast(successor.expires_at, now)) break
        await touchSession(db, row.session_id, now.toISOString())
        return issue(user, row.session_id, next.token)
      }
      token = next.token
    }
    throw new Errors.InvalidRefreshToken()
  }

  return {
    revoke,
    endWithin,
    announce,

    /**
     * Signs a user in: a new session, its first refresh token and an access
     * token. `confirm`, given the new session's id, reads the user again (or
     * throws) once the session exists; the token carries what it returns.
     */
    async start (user: Account, client: ClientInfo, confirm: (sessionId: string) => Promise<Account> = async () => user): Promise<{ tokens: IssuedTokens, user: Account }> {
      const now = fastify.now()
      const id = randomUUID()
      const refresh = tokens.newRefreshToken()
      await insertSession(db,
        { id, userId: user.id, now: now.toISOString(), expiresAt: later(now, config.SESSION_MAX_AGE_SECONDS), userAgent: client.userAgent, ip: client.ip },
        { hash: refresh.hash, sessionId: id, now: now.toISOString(), expiresAt: later(now, config.REFRESH_TOKEN_TTL_SECONDS) })
      const confirmed = await confirm(id)
      return { tokens: await issue(confirmed, id, refresh.token), user: confirmed }
    },

    /** Trades a refresh token for a new pair. The old token stops working (see `replay` for racing tabs and theft). */
    async refresh (refreshToken: string, client: ClientInfo): Promise<{ tokens: IssuedTokens, user: Account }> {
      const hash = tokens.hashRefreshToken(refreshToken)
      // Two passes at most: a request that loses the race to rotate reads the token again and is treated as a replay.
      for (let attempt = 0; attempt < 2; attempt++) {
        const now = fastify.now()
        const row = await findRefreshToken(db, hash)
        if (!row || row.revoked_at !== null) throw new Errors.InvalidRefreshToken()
        if (isPast(row.session_expires_at, now)) throw new Errors.SessionExpired()
        const user = await findUserById(db, row.user_id)
        if (!user || user.disabled) throw new Errors.InvalidRefreshToken()
        if (row.rotated_at !== null) return { tokens: await replay(row, refreshToken, user, client, now), user }
        if (isPast(row.expires_at, now)) throw new Errors.InvalidRefreshToken()
        const next = tokens.successorOf(refreshToken)
        const rotated = await rotateRefreshToken(db, hash, {
          hash: next.hash, sessionId: row.session_id, now: now.toISOString(), expiresAt: later(now, config.REFRESH_TOKEN_TTL_SECONDS)
        })
        if (rotated) return { tokens: await issue(user, row.session_id, next.token), user }
      }
      throw new Errors.InvalidRefreshToken()
    },

    /** The user's sessions that can still be refreshed. */
    list (userId: string): Promise<SessionRow[]> {
      return listLiveSessions(db, userId, fastify.now().toISOString())
    },

    /** Ends one session of the user; false when they have no such live session. */
    async end (userId: string, sessionId: string, reason: string, client?: ClientInfo): Promise<boolean> {
      return (await revoke(userId, reason, { only: sessionId }, client)).length > 0
    },

    /** Ends every session of the user, or every one but `keep`. */
    endAll (userId: string, reason: string, keep?: string, client?: ClientInfo): Promise<string[]> {
      return revoke(userId, reason, { except: keep }, client)
    },

    /** Ends the session a refresh token belongs to, if it is one of ours. */
    async endByRefreshToken (refreshToken: string, reason: string, client?: ClientInfo): Promise<void> {
      const row = await findRefreshToken(db, tokens.hashRefreshToken(refreshToken))
      if (row) await revoke(row.user_id, reason, { only: row.session_id }, client)
    }
  }
}

export default fp(async function sessions (fastify) {
  fastify.decorate('sessions', createSessions(fastify))
}, { name: 'sessions', dependencies: ['config', 'db', 'tokens', 'revocations', 'audit', 'metrics'] })
