import { randomUUID } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { findRefreshToken, insertSession, revokeSessions, rotateRefreshToken } from '../db/queries/sessions.js'
import { findUserById } from '../db/queries/users.js'
import type { UserRow } from '../db/types.js'
import { Errors } from './errors.js'

declare module 'fastify' {
  interface FastifyInstance {
    sessions: Sessions
  }
}

export type Sessions = ReturnType<typeof createSessions>

/** Where a request came from, kept on its session. */
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

const later = (from: Date, seconds: number) => new Date(from.getTime() + seconds * 1000).toISOString()
const isPast = (time: Date | string | null, now: Date) => time !== null && new Date(time).getTime() <= now.getTime()

function createSessions (fastify: FastifyInstance) {
  const { db, tokens, config } = fastify

  function issue (user: UserRow, sessionId: string, refreshToken: string): IssuedTokens {
    return {
      access_token: tokens.signAccessToken({ sub: user.id, sid: sessionId, roles: ['user'] }),
      token_type: 'Bearer',
      expires_in: tokens.accessTtl,
      refresh_token: refreshToken
    }
  }

  return {
    /** Signs a user in: a new session, its first refresh token and an access token. */
    async start (user: UserRow, client: ClientInfo): Promise<IssuedTokens> {
      const now = fastify.now()
      const id = randomUUID()
      const refresh = tokens.newRefreshToken()
      await insertSession(db,
        { id, userId: user.id, now: now.toISOString(), expiresAt: later(now, config.SESSION_MAX_AGE_SECONDS), userAgent: client.userAgent, ip: client.ip },
        { hash: refresh.hash, sessionId: id, now: now.toISOString(), expiresAt: later(now, config.REFRESH_TOKEN_TTL_SECONDS) })
      return issue(user, id, refresh.token)
    },

    /** Trades a refresh token for a new pair. The old token stops working. */
    async refresh (refreshToken: string): Promise<{ tokens: IssuedTokens, user: UserRow }> {
      const now = fastify.now()
      const row = await findRefreshToken(db, tokens.hashRefreshToken(refreshToken))
      if (!row || row.rotated_at !== null || row.revoked_at !== null || isPast(row.expires_at, now) || isPast(row.session_expires_at, now)) {
        throw new Errors.InvalidRefreshToken()
      }
      const user = await findUserById(db, row.user_id)
      if (!user || user.disabled) throw new Errors.InvalidRefreshToken()
      const next = tokens.newRefreshToken()
      const rotated = await rotateRefreshToken(db, row.token_hash, {
        hash: next.hash, sessionId: row.session_id, now: now.toISOString(), expiresAt: later(now, config.REFRESH_TOKEN_TTL_SECONDS)
      })
      if (!rotated) throw new Errors.InvalidRefreshToken()
      return { tokens: issue(user, row.session_id, next.token), user }
    },

    /** Ends one session of a user. */
    async end (userId: string, sessionId: string, reason: string): Promise<string[]> {
      return revokeSessions(db, userId, fastify.now().toISOString(), reason, { only: sessionId })
    },

    /** Ends every session of a user but `keep`. */
    async endOthers (userId: string, keep: string, reason: string): Promise<string[]> {
      return revokeSessions(db, userId, fastify.now().toISOString(), reason, { except: keep })
    },

    /** Ends the session a refresh token belongs to, if it is one of ours. */
    async endByRefreshToken (refreshToken: string, reason: string): Promise<string[]> {
      const row = await findRefreshToken(db, tokens.hashRefreshToken(refreshToken))
      return row ? revokeSessions(db, row.user_id, fastify.now().toISOString(), reason, { only: row.session_id }) : []
    }
  }
}

export default fp(async function sessions (fastify) {
  fastify.decorate('sessions', createSessions(fastify))
}, { name: 'sessions', dependencies: ['config', 'db', 'tokens'] })
