import { createCipheriv, createDecipheriv, createHash, createHmac, createPrivateKey, createPublicKey, generateKeyPair, hkdfSync, randomBytes, randomUUID, sign, type JsonWebKey, type KeyObject } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { promisify } from 'node:util'
import { createDecoder, createVerifier } from 'fast-jwt'
import type { FastifyBaseLogger } from 'fastify'
import fp from 'fastify-plugin'
import type { Kysely } from 'kysely'
import { insertKey, insertKeyRetiringOthers, listKeys } from '../db/queries/signing-keys.js'
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

/** What a request needs of a verified access token (the token carries jti, iss and aud too). */
export interface AccessClaims {
  sub: string
  sid: string
  roles: string[]
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

const generateKeyPairAsync = promisify(generateKeyPair)

/** Off the event loop: an RSA key takes long enough to stall requests in flight. */
async function generatePrivateKey (algorithm: Exclude<Algorithm, 'HS256'>): Promise<KeyObject> {
  if (algorithm === 'RS256') return (await generateKeyPairAsync('rsa', { modulusLength: 2048 })).privateKey
  if (algorithm === 'ES256') return (await generateKeyPairAsync('ec', { namedCurve: 'P-256' })).privateKey
  return (await generateKeyPairAsync('ed25519', undefined)).privateKey
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

/**
 * How the stored keys are used over time. A rotation adds a key that every
 * instance learns at its next reload (every KEY_RELOAD_SECONDS / 2) and that
 * signs only once KEY_RELOAD_SECONDS have passed, so no instance ever meets a
 * token of a key it does not know yet. The key it replaces stops signing at
 * that moment and keeps verifying until its last token has expired.
 */
function keyTimes (config: Config) {
  const publishMs = config.KEY_RELOAD_SECONDS * 1000
  return { publishMs, reloadMs: publishMs / 2, verifyAfterRetiredMs: config.ACCESS_TOKEN_TTL_SECONDS * 1000 + 60_000 }
}

/** The configured key (HS256 secret or PEM), or null when keys live in the database. */
function configuredKey (config: Config): SigningKey | null {
  const algorithm = config.JWT_ALGORITHM
  if (algorithm === 'HS256') {
    const secret = Buffer.from(config.JWT_SECRET!, 'utf8')
    return { kid: `hs-${createHash('sha256').update(secret).digest('base64url').slice(0, 16)}`, algorithm, privateKey: secret, publicKey: secret, publicJwk: null }
  }
  const pem = config.JWT_PRIVATE_KEY ?? (config.JWT_PRIVATE_KEY_FILE && readFileSync(config.JWT_PRIVATE_KEY_FILE, 'utf8'))
  if (!pem) return null
  const privateKey = createPrivateKey(pem)
  if (algorithmOf(privateKey) !== algorithm) throw new Error(`JWT_PRIVATE_KEY is not a key for ${algorithm} (RS256: RSA of 2048 bits or more; ES256: P-256; EdDSA: Ed25519).`)
  return toSigningKey(privateKey, algorithm)
}

/** The database's keys for the configured algorithm, in play at `now`: the signing key first, then the others that still verify. */
async function storedKeys (config: Config, db: Kysely<Database>, now: Date): Promise<SigningKey[]> {
  const algorithm = config.JWT_ALGORITHM
  const { publishMs, verifyAfterRetiredMs } = keyTimes(config)
  const cipher = keyCipher(config.KEY_ENCRYPTION_SECRET)
  const read = async () => (await listKeys(db, algorithm, new Date(now.getTime() - verifyAfterRetiredMs).toISOString()))
  let rows = await read()
  if (!rows.some((r) => r.retired_at === null)) {
    await insertKey(db, sealedRow(await generatePrivateKey(algorithm as Exclude<Algorithm, 'HS256'>), algorithm, cipher, now))
    // Read back: replicas that raced to create a first key all settle on the same rows.
    rows = await read()
  }
  // Rows come newest first. The signer is the newest key that has not stopped signing and was
  // published long enough ago; failing that, the key a recent rotation is replacing (it has a
  // retirement date), or on a first start the only one.
  const t = now.getTime()
  const signing = rows.filter((r) => r.retired_at === null || new Date(r.retired_at).getTime() > t)
  const signer = signing.find((r) => new Date(r.created_at).getTime() <= t - publishMs) ??
    signing.find((r) => r.retired_at !== null) ?? signing.at(-1) ?? rows[0]
  return [signer, ...rows.filter((r) => r !== signer)].map((row) => {
    let pemText: string
    try {
      pemText = cipher.open(row.private_key)
    } catch {
      throw new Error(`Signing key ${row.kid} cannot be decrypted: KEY_ENCRYPTION_SECRET is not the one it was stored with (unset outside production, it is the generated one kept beside the database, or in ~/.auth-service for PostgreSQL).`)
    }
    return { ...toSigningKey(createPrivateKey(pemText), algorithm), kid: row.kid }
  })
}

function sealedRow (privateKey: KeyObject, algorithm: Algorithm, cipher: ReturnType<typeof keyCipher>, now: Date) {
  const key = toSigningKey(privateKey, algorithm)
  return { kid: key.kid, algorithm, public_jwk: JSON.stringify(key.publicJwk), private_key: cipher.seal(key.privateKey as string), created_at: now.toISOString() }
}

/**
 * Adds a new signing key. It is published at once and signs after
 * KEY_RELOAD_SECONDS; the keys it replaces stop signing then and verify until
 * their tokens have expired. Refused when the key comes from the configuration.
 */
export async function rotateKeys (config: Config, db: Kysely<Database>, now: Date): Promise<string> {
  if (configuredKey(config)) throw new Error('The signing key comes from JWT_SECRET or JWT_PRIVATE_KEY(_FILE): rotate it there.')
  const row = sealedRow(await generatePrivateKey(config.JWT_ALGORITHM as Exclude<Algorithm, 'HS256'>), config.JWT_ALGORITHM, keyCipher(config.KEY_ENCRYPTION_SECRET), now)
  await insertKeyRetiringOthers(db, row, new Date(now.getTime() + keyTimes(config).publishMs).toISOString())
  return row.kid
}

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
 * A bounded map of verified tokens to their claims; when full, the oldest
 * entry goes. Keyed by the token's last characters and compared whole on a
 * hit: hashing the whole 700-character token at each lookup cost more than
 * the rest of the lookup. Two tokens that share an ending just take turns.
 */
function verifiedCache () {
  const entries = new Map<string, { token: string, claims: AccessClaims }>()
  return {
    get (token: string): AccessClaims | undefined {
      const entry = entries.get(token.slice(-CACHE_KEY_LENGTH))
      return entry !== undefined && entry.token === token ? entry.claims : undefined
    },
    remember (token: string, claims: AccessClaims): AccessClaims {
      if (entries.size >= VERIFIED_CACHE_SIZE) entries.delete(entries.keys().next().value!)
      entries.set(token.slice(-CACHE_KEY_LENGTH), { token, claims })
      return claims
    },
    clear: () => entries.clear()
  }
}

export async function createTokens (config: Config, db: Kysely<Database>, now: () => Date, log: FastifyBaseLogger) {
  const issuer = config.JWT_ISSUER ?? config.PUBLIC_URL
  const configured = configuredKey(config)
  const load = async () => keyring(configured ? [configured] : await storedKeys(config, db, now()), issuer, config.JWT_AUDIENCE, config.ACCESS_TOKEN_TTL_SECONDS)
  let ring = await load()
  const verified = verifiedCache()
  // A successor is derived, not random, so a request racing the rotation of the same token gets the same successor.
  const successorKey = Buffer.from(hkdfSync('sha256', config.KEY_ENCRYPTION_SECRET, 'auth-service', 'refresh-token-successor', 32))

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
    return Object.freeze({ sub: claims.sub, sid: claims.sid, roles, iat: claims.iat, exp: claims.exp })
  }

  const timer = configured ? undefined : setInterval(() => { reload().catch((err) => log.warn({ err }, 'signing keys reload failed')) }, keyTimes(config).reloadMs)
  timer?.unref()

  return {
    accessTtl: config.ACCESS_TOKEN_TTL_SECONDS,
    activeKid: () => ring.activeKid,

    signAccessToken (claims: { sub: string, sid: string, roles: string[] }): Promise<string> {
      // iat from the service clock; exp = iat + the access-token lifetime.
      return ring.sign({ ...claims, jti: randomUUID(), iat: Math.floor(now().getTime() / 1000) })
    },

    /**
     * Verifies a bearer token; throws the service's 401 errors. A token whose
     * signature was checked before is taken from the cache (only the same
     * whole token is a hit, so a changed byte is a miss); its times are
     * checked on every use. The caller checks revocation on every use too.
     */
    verifyAccessToken (token: string): AccessClaims {
      const claims = verified.get(token) ?? verified.remember(token, checkSignature(token))
      const t = now().getTime()
      if (claims.exp * 1000 <= t) throw new Errors.AccessTokenExpired()
      // Signed on a clock running ahead of ours: it would live here longer than an access token lives.
      if (claims.iat * 1000 > t + CLOCK_SKEW_SECONDS * 1000) throw new Errors.InvalidAccessToken()
      return claims
    },

    jwks: () => ({ body: ring.jwks, etag: ring.etag }),

    /** Re-reads the keys now (after a rotation in this process). */
    reload,

    /** Rotates the stored keys and reloads them here. */
    async rotate (): Promise<string> {
      const kid = await rotateKeys(config, db, now())
      await reload()
      return kid
    },

    /** A new opaque refresh token (256 random bits) and the hash that is all the database keeps. */
    newRefreshToken (): { token: string, hash: string } {
      const token = randomBytes(32).toString('base64url')
      return { token, hash: sha256(token) }
    },

    /** The token that replaces `token` at rotation. */
    successorOf (token: string): { token: string, hash: string } {
      const next = createHmac('sha256', successorKey).update(token).digest('base64url')
      return { token: next, hash: sha256(next) }
    },

    hashRefreshToken: sha256,

    close: () => clearInterval(timer)
  }
}

export default fp(async function tokens (fastify) {
  const tokens = await createTokens(fastify.config, fastify.db, fastify.now, fastify.log)
  fastify.decorate('tokens', tokens)
  fastify.addHook('onClose', async () => tokens.close())
}, { name: 'tokens', dependencies: ['config', 'db'] })
