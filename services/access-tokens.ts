import { createHash, createHmac, createPrivateKey, randomUUID, sign } from 'node:crypto'
import { promisify } from 'node:util'
import { createDecoder, createVerifier } from 'fast-jwt'
import type { Kysely } from 'kysely'
import { LRUCache } from 'lru-cache'
import type { Database } from '../db/types.js'
import type { Config } from '../schemas/config.js'
import { Errors } from './errors.js'
import type { KeyStore, SigningKey } from './keys.js'

/** Access tokens: signed with the key store's signing key, verified (with a cache) against every key in play. */

/** What a request needs of a verified access token (the token carries jti, iss and aud too). */
export interface AccessClaims {
  sub: string
  sid: string
  roles: string[]
  /** How the session was authenticated (RFC 8176): `pwd`, then `otp` once a second factor passed. */
  amr: string[]
  /** The assurance level: `aal1` (a password) or `aal2` (and a second factor). */
  acr: 'aal1' | 'aal2'
  iat: number
  exp: number
}

/**
 * How far ahead of this instance's clock another instance's clock may be
 * (seconds). A token whose `iat` is later than now + this was signed on a
 * clock running fast, and would live that much longer than its lifetime
 * here: refused. NTP keeps clocks within milliseconds; a minute tolerates a
 * clock that drifted, not one that is wrong. The revocation list uses it too.
 */
export const CLOCK_SKEW_SECONDS = 60

/** The JOSE header `typ` of an access token (RFC 9068): no other JWT of ours can pass for one. */
const ACCESS_TOKEN_TYPE = 'at+jwt'

const sha256 = (value: string) => createHash('sha256').update(value).digest('base64url')
const decodeHeader = createDecoder({ complete: true })
const base64url = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url')
const signInThreadPool = promisify(sign)

/** Signature checks remembered: at most this many tokens (about 5 MB), each until it expires. */
const VERIFIED_CACHE_SIZE = 5_000

/**
 * Signs with the key's algorithm. Asymmetric signatures are computed in
 * libuv's thread pool (crypto.sign with a callback): an RS256 signature costs
 * about 0.5 ms of CPU, which on the event loop would cap sign-ins and
 * refreshes at one core.
 */
function signer (key: SigningKey, issuer: string, audience: string, ttlSeconds: number) {
  const header = base64url({ alg: key.algorithm, typ: ACCESS_TOKEN_TYPE, kid: key.kid })
  const privateKey = key.algorithm === 'HS256' ? null : createPrivateKey(key.privateKey)
  const options = key.algorithm === 'ES256' ? { key: privateKey!, dsaEncoding: 'ieee-p1363' as const } : privateKey!
  return async (claims: Record<string, unknown> & { iat: number }): Promise<string> => {
    const input = `${header}.${base64url({ ...claims, exp: claims.iat + ttlSeconds, iss: issuer, aud: audience })}`
    const signature = key.algorithm === 'HS256'
      ? createHmac('sha256', key.privateKey).update(input).digest()
      : await signInThreadPool(key.algorithm === 'EdDSA' ? null : 'sha256', Buffer.from(input), options)
    return `${input}.${signature.toString('base64url')}`
  }
}

type Verifier = (token: string) => AccessClaims

/** Signer, verifiers and JWKS for one set of keys; replaced whole when the keys change. */
function keyring (keys: SigningKey[], issuer: string, audience: string, ttlSeconds: number) {
  const [active] = keys
  // Sorted, so the ETag changes only when the set of keys does.
  const jwks = { keys: keys.flatMap((k) => (k.publicJwk ? [k.publicJwk] : [])).sort((a, b) => a.kid.localeCompare(b.kid)) }
  return {
    activeKid: active.kid,
    sign: signer(active, issuer, audience, ttlSeconds),
    // One verifier per key, each allowing exactly the configured algorithm: no `none`, no HS256 signed with a public key.
    // fast-jwt checks iss and aud only when present: requiredClaims makes them so.
    verifiers: new Map(keys.map((k) => [k.kid, createVerifier({
      key: k.publicKey,
      algorithms: [k.algorithm],
      checkTyp: ACCESS_TOKEN_TYPE,
      allowedIss: issuer,
      allowedAud: audience,
      requiredClaims: ['iss', 'aud', 'sub', 'sid', 'jti', 'iat', 'exp'],
      ignoreExpiration: true // checked against the service clock
    }) as Verifier])),
    jwks,
    etag: `"${sha256(JSON.stringify(jwks))}"`
  }
}

/** How much of a token's end keys the cache: signature bytes, random. */
const CACHE_KEY_LENGTH = 32

/**
 * A bounded map of verified tokens to their claims (least recently used go
 * first). Keyed by the token's last characters and compared whole on a hit:
 * hashing the whole 700-character token at each lookup cost more than the
 * rest of the lookup. Two tokens that share an ending just take turns.
 */
function verifiedCache () {
  const entries = new LRUCache<string, { token: string, claims: AccessClaims }>({ max: VERIFIED_CACHE_SIZE })
  return {
    get (token: string): AccessClaims | undefined {
      const entry = entries.get(token.slice(-CACHE_KEY_LENGTH))
      return entry !== undefined && entry.token === token ? entry.claims : undefined
    },
    remember (token: string, claims: AccessClaims): AccessClaims {
      entries.set(token.slice(-CACHE_KEY_LENGTH), { token, claims })
      return claims
    },
    clear: () => entries.clear()
  }
}

/** The token of an `Authorization: Bearer <token>` header (the scheme in any case), or null. */
export function bearerToken (header: string): string | null {
  // No regular expression over the token: it is 700 characters, and the signature check refuses anything malformed.
  return header.length > 7 && header.charCodeAt(6) === 32 && header.slice(0, 6).toLowerCase() === 'bearer' ? header.slice(7) : null
}

export type AccessTokens = Awaited<ReturnType<typeof createAccessTokens>>

/** Signs and verifies access tokens with the key store's keys, re-read on its schedule. */
export async function createAccessTokens ({ config, keys, clock, log }: { config: Config, keys: KeyStore, clock: () => Date, log: { warn: (obj: object, msg: string) => void } }) {
  const issuer = config.JWT_ISSUER ?? config.PUBLIC_URL
  const load = async () => keyring(await keys.load(), issuer, config.JWT_AUDIENCE, config.ACCESS_TOKEN_TTL_SECONDS)
  let ring = await load()
  const verified = verifiedCache()

  async function reload () {
    const next = await load()
    // A key gone means its tokens must stop verifying: forget what was verified.
    if (next.etag !== ring.etag) verified.clear()
    ring = next
  }

  /** The claims of a token whose signature, algorithm, typ, issuer, audience and claims check out (not its times). */
  function checkSignature (token: string): AccessClaims {
    let claims: AccessClaims
    try {
      const kid = decodeHeader(token).header.kid
      claims = ring.verifiers.get(kid)!(token)
    } catch {
      // Malformed, unknown kid, wrong algorithm or typ, bad signature, wrong issuer or audience: all the same to the caller.
      throw new Errors.InvalidAccessToken()
    }
    if (typeof claims.exp !== 'number' || typeof claims.iat !== 'number') throw new Errors.InvalidAccessToken()
    // Frozen: cached claims are shared by every request that bears the token. Only what requests use is kept.
    const roles = Object.freeze(Array.isArray(claims.roles) ? [...claims.roles] : []) as string[]
    const amr = Object.freeze(Array.isArray(claims.amr) ? [...claims.amr] : ['pwd']) as string[]
    // Anything but aal2 is aal1: a token that says nothing (or something unknown) has passed no second factor.
    const acr = claims.acr === 'aal2' ? 'aal2' : 'aal1'
    return Object.freeze({ sub: claims.sub, sid: claims.sid, roles, amr, acr, iat: claims.iat, exp: claims.exp })
  }

  /** A token whose signature checks out (cached) and that was not signed on a clock too far ahead of ours. */
  function signed (token: string): AccessClaims {
    const claims = verified.get(token) ?? verified.remember(token, checkSignature(token))
    // Signed on a clock running ahead of ours: it would live here longer than an access token lives.
    if (claims.iat * 1000 > clock().getTime() + CLOCK_SKEW_SECONDS * 1000) throw new Errors.InvalidAccessToken()
    return claims
  }

  const timer = keys.reloadMs === null ? undefined : setInterval(() => { reload().catch((err) => log.warn({ err }, 'signing keys reload failed')) }, keys.reloadMs)
  timer?.unref()

  return {
    accessTtl: config.ACCESS_TOKEN_TTL_SECONDS,
    activeKid: () => ring.activeKid,

    signAccessToken (claims: { sub: string, sid: string, roles: string[], amr?: readonly string[], acr?: 'aal1' | 'aal2' }): Promise<string> {
      // iat from the service clock; exp = iat + the access-token lifetime.
      return ring.sign({ amr: ['pwd'], acr: 'aal1', ...claims, jti: randomUUID(), iat: Math.floor(clock().getTime() / 1000) })
    },

    /**
     * Verifies a bearer token; throws the service's 401 errors. A token whose
     * signature was checked before is taken from the cache (only the same
     * whole token is a hit, so a changed byte is a miss); its times are
     * checked on every use. The caller checks revocation on every use too.
     */
    verifyAccessToken (token: string): AccessClaims {
      const claims = signed(token)
      if (claims.exp * 1000 <= clock().getTime()) throw new Errors.AccessTokenExpired()
      return claims
    },

    /** Like `verifyAccessToken`, but an expired token is accepted: it still names its session (sign-out after being idle). */
    verifyIgnoringExpiry: (token: string): AccessClaims => signed(token),

    jwks: () => ({ body: ring.jwks, etag: ring.etag }),

    /** Re-reads the keys now (after a rotation in this process). */
    reload,

    /** Rotates the stored keys, with what `alongside` writes in the same change (its audit event), and reloads them here. */
    async rotate (alongside?: (trx: Kysely<Database>, kid: string) => Promise<void>): Promise<string> {
      const kid = await keys.rotate(alongside)
      await reload()
      return kid
    },

    close: () => clearInterval(timer)
  }
}
