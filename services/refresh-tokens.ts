import { createHash, createHmac, hkdfSync, randomBytes } from 'node:crypto'

const sha256 = (value: string) => createHash('sha256').update(value).digest('base64url')

export type RefreshTokens = ReturnType<typeof createRefreshTokens>

/**
 * Refresh tokens: opaque, 256 random bits, of which only the SHA-256 hash is
 * stored. A token's successor at rotation is derived from it (an HMAC under a
 * key from KEY_ENCRYPTION_SECRET), not random, so a request racing the
 * rotation of the same token gets the same successor and no plaintext is kept.
 */
export function createRefreshTokens (secret: string) {
  const successorKey = Buffer.from(hkdfSync('sha256', secret, 'auth-service', 'refresh-token-successor', 32))
  return {
    /** A new refresh token and the hash that is all the database keeps. */
    newRefreshToken (): { token: string, hash: string } {
      const token = randomBytes(32).toString('base64url')
      return { token, hash: sha256(token) }
    },

    /** The token that replaces `token` at rotation. */
    successorOf (token: string): { token: string, hash: string } {
      const next = createHmac('sha256', successorKey).update(token).digest('base64url')
      return { token: next, hash: sha256(next) }
    },

    hashRefreshToken: sha256
  }
}
