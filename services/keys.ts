import { createCipheriv, createDecipheriv, createHash, createPrivateKey, createPublicKey, generateKeyPair, hkdfSync, randomBytes, type JsonWebKey, type KeyObject } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { promisify } from 'node:util'
import type { Kysely } from 'kysely'
import { insertKey, insertKeyRetiringOthers, listKeys } from '../db/queries/signing-keys.js'
import type { Database } from '../db/types.js'
import type { Config } from '../schemas/config.js'

/**
 * The key store: signing keys generated, kept encrypted at rest in the
 * database (or taken from the configuration), and used on a rotation
 * schedule that no instance can outrun.
 */

export type Algorithm = Config['JWT_ALGORITHM']

export interface PublicJwk extends JsonWebKey {
  kty: string
  kid: string
  alg: Algorithm
  use: 'sig'
}

/** A key as fast-jwt takes it: PEM text, or the shared secret for HS256 (then there is no public JWK). */
export interface SigningKey {
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

/**
 * Secrets at rest (private signing keys, TOTP secrets), so a copy of the
 * database cannot mint tokens or codes: AES-256-GCM under a key derived from
 * KEY_ENCRYPTION_SECRET for one `purpose`, so what is sealed for one purpose
 * does not open for another.
 */
export function sealer (secret: string, purpose: string) {
  const key = Buffer.from(hkdfSync('sha256', secret, 'auth-service', purpose, 32))
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

/** Private signing keys' sealer. */
const keyCipher = (secret: string) => sealer(secret, 'signing-key-encryption')

/**
 * How the stored keys are used over time. A rotation adds a key that every
 * instance learns at its next reload (every KEY_RELOAD_SECONDS / 2) and that
 * signs only once KEY_RELOAD_SECONDS have passed, so no instance ever meets a
 * token of a key it does not know yet. The key it replaces stops signing at
 * that moment and keeps verifying until its last token has expired.
 */
export function keyTimes (config: Config) {
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
 * Two writes: run it in a transaction.
 */
export async function rotateKeys (config: Config, db: Kysely<Database>, now: Date): Promise<string> {
  if (configuredKey(config)) throw new Error('The signing key comes from JWT_SECRET or JWT_PRIVATE_KEY(_FILE): rotate it there.')
  const row = sealedRow(await generatePrivateKey(config.JWT_ALGORITHM as Exclude<Algorithm, 'HS256'>), config.JWT_ALGORITHM, keyCipher(config.KEY_ENCRYPTION_SECRET), now)
  await insertKeyRetiringOthers(db, row, new Date(now.getTime() + keyTimes(config).publishMs).toISOString())
  return row.kid
}

/** The keys in play now, the signing key first; with `reload`, re-read on the schedule (none when configured). */
export function createKeyStore ({ config, db, clock }: { config: Config, db: Kysely<Database>, clock: () => Date }) {
  const configured = configuredKey(config)
  return {
    /** Every instance re-reads the stored keys this often; null when the key comes from the configuration. */
    reloadMs: configured ? null : keyTimes(config).reloadMs,
    load: async (): Promise<SigningKey[]> => configured ? [configured] : storedKeys(config, db, clock()),
    /** A new key, and what `alongside` writes with it, in one change. */
    rotate: (alongside: (trx: Kysely<Database>, kid: string) => Promise<void> = async () => {}) => db.transaction().execute(async (trx) => {
      const kid = await rotateKeys(config, trx, clock())
      await alongside(trx, kid)
      return kid
    })
  }
}

export type KeyStore = ReturnType<typeof createKeyStore>
