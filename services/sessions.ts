import { randomUUID } from 'node:crypto'
import type { Kysely } from 'kysely'
import { findRefreshToken, insertSession, listLiveSessions, raiseSession, revokeSessions, rotateRefreshToken, touchSession, type RefreshTokenWithSession } from '../db/queries/sessions.js'
import { voidAllOneTimeTokens } from '../db/queries/one-time-tokens.js'
import { findUserById, type Account } from '../db/queries/users.js'
import type { Database, SessionRow } from '../db/types.js'
import type { AccessTokens } from './access-tokens.js'
import type { Audit } from './audit.js'
import type { ClientInfo } from './clients.js'
import type { Base } from './context.js'
import { Errors } from './errors.js'
import type { RefreshTokens } from './refresh-tokens.js'
import type { Revocations, Revoked } from './revocations.js'

export type Sessions = ReturnType<typeof createSessions>

/** How a session was signed in: its assurance level and the methods used (RFC 8176). */
export interface Level { aal: number, amr: readonly string[] }
/** A password alone. */
export const AAL1: Level = { aal: 1, amr: ['pwd'] }
const levelOf = (row: { aal: number, amr: string }): Level => ({ aal: row.aal, amr: row.amr.split(',') })

/** Sessions ended within a change, to announce once it has committed. */
export type Ended = Revoked & { reason: string }

export interface IssuedTokens {
  access_token: string
  token_type: 'Bearer'
  expires_in: number
  expires_at: number
  refresh_token: string
}

const later = (from: Date, seconds: number) => new Date(from.getTime() + seconds * 1000).toISOString()
const isPast = (time: Date | string, now: Date) => new Date(time).getTime() <= now.getTime()
/** How many rotations a racing request may follow to reach the session's current token. */
const MAX_GRACE_HOPS = 8

export function createSessions ({ db, clock, config, tokens, revocations, audit, counted }: Pick<Base, 'db' | 'clock' | 'config'> & {
  tokens: Pick<AccessTokens, 'signAccessToken' | 'verifyIgnoringExpiry' | 'accessTtl'> & RefreshTokens
  revocations: Revocations
  audit: Audit
  /** Told of ended sessions and of refresh-token theft (the metrics). */
  counted: { revoked: (reason: string, sessions: number) => void, refreshReused: () => void }
}) {
  /** The pair for a session; the access token carries the roles read with the user's row. */
  async function issue (user: Account, sessionId: string, refreshToken: string, level: Level): Promise<IssuedTokens> {
    const accessToken = await tokens.signAccessToken({ sub: user.id, sid: sessionId, roles: user.roles, amr: level.amr, acr: level.aal >= 2 ? 'aal2' : 'aal1' })
    return {
      access_token: accessToken,
      token_type: 'Bearer',
      expires_in: tokens.accessTtl,
      // The token's own exp, read back from it: exactly what verifiers compare.
      expires_at: (JSON.parse(Buffer.from(accessToken.split('.')[1], 'base64url').toString()) as { exp: number }).exp,
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
    const now = clock().toISOString()
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
    counted.revoked(ended.reason, ended.ids.length)
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
      counted.refreshReused()
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
        return issue(user, row.session_id, next.token, levelOf(row))
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
     * A new session of the user and its first refresh token, written in `trx`
     * (the sign-in's change); `issue` its tokens once that has committed.
     */
    async startWithin (trx: Kysely<Database>, userId: string, client: ClientInfo, level: Level = AAL1): Promise<{ sessionId: string, refreshToken: string }> {
      const now = clock()
      const id = randomUUID()
      const refresh = tokens.newRefreshToken()
      await insertSession(trx,
        { id, userId, now: now.toISOString(), expiresAt: later(now, config.SESSION_MAX_AGE_SECONDS), userAgent: client.userAgent, ip: client.ip, aal: level.aal, amr: level.amr.join(',') },
        { hash: refresh.hash, sessionId: id, now: now.toISOString(), expiresAt: later(now, config.REFRESH_TOKEN_TTL_SECONDS) })
      return { sessionId: id, refreshToken: refresh.token }
    },

    issue,

    /**
     * Step-up: the user's live session is raised to `level` (it passed a
     * second factor) with a new pair; its previous refresh token is superseded.
     */
    async raise (user: Account, sessionId: string, level: Level): Promise<IssuedTokens> {
      const now = clock()
      const refresh = tokens.newRefreshToken()
      const next = { hash: refresh.hash, sessionId, now: now.toISOString(), expiresAt: later(now, config.REFRESH_TOKEN_TTL_SECONDS) }
      const raised = await db.transaction().execute((trx) => raiseSession(trx, user.id, { aal: level.aal, amr: level.amr.join(',') }, next))
      if (!raised) throw new Errors.SessionRevoked()
      return issue(user, sessionId, refresh.token, level)
    },

    /** Trades a refresh token for a new pair. The old token stops working (see `replay` for racing tabs and theft). */
    async refresh (refreshToken: string, client: ClientInfo): Promise<{ tokens: IssuedTokens, user: Account }> {
      const hash = tokens.hashRefreshToken(refreshToken)
      // Two passes at most: a request that loses the race to rotate reads the token again and is treated as a replay.
      for (let attempt = 0; attempt < 2; attempt++) {
        const now = clock()
        const row = await findRefreshToken(db, hash)
        if (!row) throw new Errors.InvalidRefreshToken()
        // Signed out (here or elsewhere), ended by a change or by theft: the app can say "you were signed out".
        if (row.revoked_at !== null) throw new Errors.SessionRevoked()
        if (isPast(row.session_expires_at, now)) throw new Errors.SessionExpired()
        const user = await findUserById(db, row.user_id)
        if (!user || user.disabled) throw new Errors.InvalidRefreshToken()
        if (row.rotated_at !== null) return { tokens: await replay(row, refreshToken, user, client, now), user }
        if (isPast(row.expires_at, now)) throw new Errors.InvalidRefreshToken()
        const next = tokens.successorOf(refreshToken)
        const rotated = await rotateRefreshToken(db, hash, {
          hash: next.hash, sessionId: row.session_id, now: now.toISOString(), expiresAt: later(now, config.REFRESH_TOKEN_TTL_SECONDS)
        })
        // The session's level goes on with it: a refresh of an aal2 session is aal2.
        if (rotated) return { tokens: await issue(user, row.session_id, next.token, levelOf(row)), user }
      }
      throw new Errors.InvalidRefreshToken()
    },

    /** The user's sessions that can still be refreshed. */
    list (userId: string): Promise<SessionRow[]> {
      return listLiveSessions(db, userId, clock().toISOString())
    },

    /** Ends one session of the user; false when they have no such live session. */
    async end (userId: string, sessionId: string, reason: string, client?: ClientInfo): Promise<boolean> {
      return (await revoke(userId, reason, { only: sessionId }, client)).length > 0
    },

    /** Ends every session of the user, or every one but `keep`. */
    endAll (userId: string, reason: string, keep?: string, client?: ClientInfo): Promise<string[]> {
      return revoke(userId, reason, { except: keep }, client)
    },

    /**
     * Signs out: ends the session of the bearer access token (an expired one
     * too: clients sign out after being idle) and of the refresh token. With
     * an access token that ends no session (not ours, or its session already
     * over), the refusal is thrown unless the refresh token ended one.
     */
    async signOut ({ accessToken, refreshToken }: { accessToken?: string, refreshToken?: string }, client: ClientInfo): Promise<void> {
      let refusal: unknown = null
      let ended = false
      if (accessToken !== undefined) {
        try {
          const { sub, sid } = tokens.verifyIgnoringExpiry(accessToken)
          ended = (await revoke(sub, 'logout', { only: sid }, client)).length > 0
          if (!ended) refusal = new Errors.SessionRevoked()
        } catch (err) {
          refusal = err
        }
      }
      const row = refreshToken === undefined ? undefined : await findRefreshToken(db, tokens.hashRefreshToken(refreshToken))
      if (row) ended = (await revoke(row.user_id, 'logout', { only: row.session_id }, client)).length > 0 || ended
      if (refusal && !ended) throw refusal
    }
  }
}
