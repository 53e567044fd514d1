import { createCipheriv, createDecipheriv, createHash, createPrivateKey, createPublicKey, generateKeyPairSync, hkdfSync, randomBytes, randomUUID, type JsonWebKey, type KeyObject } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createDecoder, createSigner, createVerifier } from 'fast-jwt'
import fp from 'fastify-plugin'
import type { Kysely } from 'kysely'
import { insertKey, listLiveKeys } from '../db/queries/signing-keys.js'
import type { Database } from '../db/types.js'
import type { Config } from '../schemas/config.js'
import { Errors } from './errors.js'

declare module 'fastify' {
  interface FastifyInstance {
    tokens: Tokens
  }
}

export type Tokens = Awaited<ReturnType<typeof createTokens>>
type Algorithm = Config['JWT_ALGORITHM']

/** What a verified access token says. */
export interface AccessClaims {
  sub: string
  sid: string
  jti: string
  roles: string[]
  iat: number
  exp: number
}

export interface PublicJwk extends JsonWebKey {
  kty: string
  kid: string
  alg: Algorithm
  use: 'sig'
}

/** A key as fast-jwt takes it: PEM text, or the shared secret for HS256 (then there is no public JWK). */
interface SigningKey {
  kid: string
  algorithm: Algorithm
  privateKey: string | Buffer
  publicKey: string | Buffer
  publicJwk: PublicJwk | null
}

/** RFC 7638 thumbprint: a kid that names the key itself. */
function thumbprint (jwk: JsonWebKey): string {
  const members = jwk.kty === 'RSA' ? { e: jwk.e, kty: jwk.kty, n: jwk.n } : jwk.kty === 'EC' ? { crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y } : { crv: jwk.crv, kty: jwk.kty, x: jwk.x }
  return createHash('sha256').update(JSON.stringify(members)).digest('base64url')
}

function generatePrivateKey (algorithm: Exclude<Algorithm, 'HS256'>): KeyObject {
  if (algorithm === 'RS256') return generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey
  if (algorithm === 'ES256') return generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey
  return generateKeyPairSync('ed25519').privateKey
}

/** The algorithm a private key can sign with, or null. */
function algorithmOf (key: KeyObject): Algorithm | null {
  if (key.asymmetricKeyType === 'rsa' && (key.asymmetricKeyDetails?.modulusLength ?? 0) >= 2048) return 'RS256'
  if (key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1') return 'ES256'
  if (key.asymmetricKeyType === 'ed25519') return 'EdDSA'
  return null
}

function toSigningKey (privateKey: KeyObject, algorithm: Algorithm): SigningKey {
  const publicKey = createPublicKey(privateKey)
  const jwk = publicKey.export({ format: 'jwk' })
  const kid = thumbprint(jwk)
  return {
    kid,
    algorithm,
    privateKey: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
    publicKey: publicKey.export({ format: 'pem', type: 'spki' }).toString(),
    publicJwk: { ...jwk, kty: jwk.kty!, kid, alg: algorithm, use: 'sig' }
  }
}

/** Private keys are stored encrypted (AES-256-GCM) so a copy of the database cannot mint tokens. */
function keyCipher (secret: string) {
  const key = Buffer.from(hkdfSync('sha256', secret, 'auth-service', 'signing-key-encryption', 32))
  return {
    seal (plain: string): string {
      const iv = randomBytes(12)
      const cipher = createCipheriv('aes-256-gcm', key, iv)
      const body = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()])
      return `v1.${Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64url')}`
    },
    open (sealed: string): string {
      const raw = Buffer.from(sealed.replace(/^v1\./, ''), 'base64url')
      const decipher = createDecipheriv('aes-256-gcm', key, raw.subarray(0, 12))
      decipher.setAuthTag(raw.subarray(12, 28))
      return Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]).toString('utf8')
    }
  }
}

/** Loads the configured key, or the database's keys (generating the first). The first key signs. */
async function loadKeys (config: Config, db: Kysely<Database>, now: Date): Promise<SigningKey[]> {
  const algorithm = config.JWT_ALGORITHM
  if (algorithm === 'HS256') {
    const secret = Buffer.from(config.JWT_SECRET!, 'utf8')
    return [{ kid: `hs-${createHash('sha256').update(secret).digest('base64url').slice(0, 16)}`, algorithm, privateKey: secret, publicKey: secret, publicJwk: null }]
  }
  const pem = config.JWT_PRIVATE_KEY ?? (config.JWT_PRIVATE_KEY_FILE && readFileSync(config.JWT_PRIVATE_KEY_FILE, 'utf8'))
  if (pem) {
    const privateKey = createPrivateKey(pem)
    if (algorithmOf(privateKey) !== algorithm) throw new Error(`JWT_PRIVATE_KEY is not a key for ${algorithm} (RS256: RSA of 2048 bits or more; ES256: P-256; EdDSA: Ed25519).`)
    return [toSigningKey(privateKey, algorithm)]
  }
  const cipher = keyCipher(config.KEY_ENCRYPTION_SECRET)
  let rows = (await listLiveKeys(db)).filter((r) => r.algorithm === algorithm)
  if (rows.length === 0) {
    const key = toSigningKey(generatePrivateKey(algorithm), algorithm)
    await insertKey(db, { kid: key.kid, algorithm, public_jwk: JSON.stringify(key.publicJwk), private_key: cipher.seal(key.privateKey as string), created_at: now.toISOString() })
    // Read back: replicas that raced to create a first key all settle on the same newest one.
    rows = (await listLiveKeys(db)).filter((r) => r.algorithm === algorithm)
  }
  return rows.map((row) => {
    let pemText: string
    try {
      pemText = cipher.open(row.private_key)
    } catch {
      throw new Error(`Signing key ${row.kid} cannot be decrypted: KEY_ENCRYPTION_SECRET is not the one it was stored with.`)
    }
    return { ...toSigningKey(createPrivateKey(pemText), algorithm), kid: row.kid }
  })
}

const sha256 = (value: string) => createHash('sha256').update(value).digest('base64url')
const decodeHeader = createDecoder({ complete: true })

export async function createTokens (config: Config, db: Kysely<Database>, now: () => Date) {
  const keys = await loadKeys(config, db, now())
  const issuer = config.JWT_ISSUER ?? config.PUBLIC_URL
  const audience = config.JWT_AUDIENCE
  const [active] = keys
  const sign = createSigner({ key: active.privateKey, algorithm: active.algorithm, kid: active.kid, iss: issuer, aud: audience, expiresIn: config.ACCESS_TOKEN_TTL_SECONDS * 1000 })
  // One verifier per key, each allowing exactly the configured algorithm: no `none`, no HS256 signed with a public key.
  const verifiers = new Map(keys.map((k) => [k.kid, createVerifier({
    key: k.publicKey,
    algorithms: [k.algorithm],
    allowedIss: issuer,
    allowedAud: audience,
    requiredClaims: ['sub', 'sid', 'jti', 'iat', 'exp'],
    ignoreExpiration: true // checked against the service clock below
  })]))
  const jwks = { keys: keys.flatMap((k) => (k.publicJwk ? [k.publicJwk] : [])) }

  return {
    accessTtl: config.ACCESS_TOKEN_TTL_SECONDS,
    activeKid: active.kid,

    signAccessToken (claims: { sub: string, sid: string, roles: string[] }): string {
      // iat from the service clock; fast-jwt adds exp = iat + the access-token lifetime.
      return sign({ ...claims, jti: randomUUID(), iat: Math.floor(now().getTime() / 1000) })
    },

    /** Verifies a bearer token; throws the service's 401 errors. */
    verifyAccessToken (token: string): AccessClaims {
      let claims: AccessClaims
      try {
        const kid = decodeHeader(token).header.kid
        claims = verifiers.get(kid)!(token)
      } catch {
        // Malformed, unknown kid, wrong algorithm, bad signature, wrong issuer or audience: all the same to the caller.
        throw new Errors.InvalidAccessToken()
      }
      if (typeof claims.exp !== 'number' || claims.exp * 1000 <= now().getTime()) throw new Errors.AccessTokenExpired()
      if (!Array.isArray(claims.roles)) claims.roles = []
      return claims
    },

    jwks: () => jwks,

    /** A new opaque refresh token (256 random bits) and the hash that is all the database keeps. */
    newRefreshToken (): { token: string, hash: string } {
      const token = randomBytes(32).toString('base64url')
      return { token, hash: sha256(token) }
    },

    hashRefreshToken: sha256
  }
}

export default fp(async function tokens (fastify) {
  fastify.decorate('tokens', await createTokens(fastify.config, fastify.db, fastify.now))
}, { name: 'tokens', dependencies: ['config', 'db'] })
