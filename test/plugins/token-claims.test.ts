import { createDecipheriv, createHmac, createPrivateKey, generateKeyPairSync, hkdfSync, sign, type KeyObject } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import t, { type Test } from 'tap'
import { build, databases, expectProblem, forwardAuth, signup } from '../helper.js'

type Claims = Record<string, unknown>
type Signer = (header: Claims, payload: Claims) => string

const SECRET = 'a-test-secret-that-is-long-enough-0123456789'
/** The skew a verifier allows a token's iat ahead of its clock (services/access-tokens.ts CLOCK_SKEW_SECONDS). */
const SKEW = 60

const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url')
const decode = (part: string) => JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as Claims

/** A JWT of this header and payload, signed with `key` as the service signs. */
function signerOf (algorithm: string, key: KeyObject | string): Signer {
  return (header, payload) => {
    const input = `${b64(header)}.${b64(payload)}`
    const signature = algorithm === 'HS256'
      ? createHmac('sha256', key as string).update(input).digest()
      : sign(algorithm === 'EdDSA' ? null : 'sha256', Buffer.from(input), algorithm === 'ES256' ? { key: key as KeyObject, dsaEncoding: 'ieee-p1363' } : key as KeyObject)
    return `${input}.${signature.toString('base64url')}`
  }
}

/**
 * The private key a token of the service was signed with, read from the
 * database and opened with KEY_ENCRYPTION_SECRET as anyone holding both could
 * (AES-256-GCM under an HKDF of the secret), written here apart from services/keys.ts.
 */
async function storedKey (app: FastifyInstance, kid: string): Promise<KeyObject> {
  const row = await app.db.selectFrom('signing_keys').select('private_key').where('kid', '=', kid).executeTakeFirstOrThrow()
  const key = Buffer.from(hkdfSync('sha256', app.config.KEY_ENCRYPTION_SECRET, 'auth-service', 'signing-key-encryption', 32))
  const raw = Buffer.from(row.private_key.replace(/^v1\./, ''), 'base64url')
  const decipher = createDecipheriv('aes-256-gcm', key, raw.subarray(0, 12))
  decipher.setAuthTag(raw.subarray(12, 28))
  return createPrivateKey(Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]).toString('utf8'))
}

type Change = (header: Claims, payload: Claims) => void
const without = (claim: string): Change => (_h, p) => { delete p[claim] }
const claim = (name: string, value: unknown): Change => (_h, p) => { p[name] = value }
const typ = (value: unknown): Change => (h) => { h.typ = value }
/** iat `seconds` ahead of the verifier's clock, exp the lifetime after it, as a fast clock would sign. */
const ahead = (seconds: number): Change => (_h, p) => { p.iat = (p.iat as number) + seconds; p.exp = (p.exp as number) + seconds }

const REFUSED: Array<[string, Change]> = [
  ['typ JWT', typ('JWT')],
  ['no typ', (h) => { delete h.typ }],
  ['typ a number', typ(1)],
  ['no iss', without('iss')],
  ['another iss', claim('iss', 'https://other.example.com')],
  ['iss a number', claim('iss', 42)],
  ['no aud', without('aud')],
  ['another aud', claim('aud', 'another-service')],
  ['aud a list without ours', claim('aud', ['another-service'])],
  ['aud a number', claim('aud', 42)],
  ['no iat', without('iat')],
  ['iat a string', (_h, p) => { p.iat = String(p.iat) }],
  [`iat ${SKEW + 1} s ahead of the clock`, ahead(SKEW + 1)],
  ['iat an hour ahead of the clock', ahead(3600)],
  ['no exp', without('exp')],
  ['no sub', without('sub')],
  ['no sid', without('sid')],
  ['no jti', without('jti')]
]

const ACCEPTED: Array<[string, Change]> = [
  ['the claims as issued', () => {}],
  // RFC 9068 names the type application/at+jwt; the prefix may be left out, and media types ignore case.
  ['typ application/at+jwt', typ('application/at+jwt')],
  ['typ AT+JWT', typ('AT+JWT')],
  // RFC 7519: aud may be a list; it is ours when it holds our audience.
  ['aud a list holding ours', (_h, p) => { p.aud = [p.aud, 'another-service'] }],
  ['iat 30 s ahead of the clock', ahead(30)],
  [`iat ${SKEW} s ahead of the clock (the skew allowed)`, ahead(SKEW)]
]

/** Signs variants of a real token with the real key; each refused one is a 401 INVALID_ACCESS_TOKEN, never a 500. */
async function checkClaims (t: Test, app: FastifyInstance, signer: (kid: string) => Promise<Signer>) {
  const issued = (await signup(app)).access_token as string
  const [headerPart, payloadPart] = issued.split('.')
  const header = decode(headerPart)
  const payload = decode(payloadPart)
  t.equal(header.typ, 'at+jwt', 'the service signs typ at+jwt')
  const signWithRealKey = await signer(header.kid as string)
  const variant = (change: Change) => {
    const h = structuredClone(header)
    const p = structuredClone(payload)
    change(h, p)
    return signWithRealKey(h, p)
  }
  // ES256 signatures are randomised; the others are the very bytes the service signed.
  if (header.alg !== 'ES256') t.equal(variant(() => {}), issued, 'the test signs exactly as the service does')

  for (const [what, change] of ACCEPTED) {
    const res = await forwardAuth(app, variant(change))
    t.equal(res.statusCode, 200, `${what}: accepted`)
    t.equal(res.headers['x-user-id'], payload.sub, `${what}: as its subject`)
  }
  for (const [what, change] of REFUSED) {
    const res = await forwardAuth(app, variant(change))
    t.test(what, async (t) => {
      expectProblem(t, res, 401, 'INVALID_ACCESS_TOKEN')
      t.notOk(res.headers['x-user-id'], 'no identity')
    })
  }
}

// Each app runs on a clock standing still at a real moment, so "ahead of the clock" is exact.
const stillClock = () => {
  const at = new Date()
  return () => at
}

for (const db of databases) {
  t.test(`${db.name}: a generated RS256 key kept in the database (the default)`, async (t) => {
    const app = await build(t, { env: { DATABASE_URL: db.url }, now: stillClock() })
    await checkClaims(t, app, async (kid) => signerOf('RS256', await storedKey(app, kid)))
  })
}

t.test('a generated ES256 key kept in the database', async (t) => {
  const app = await build(t, { env: { JWT_ALGORITHM: 'ES256' }, now: stillClock() })
  await checkClaims(t, app, async (kid) => signerOf('ES256', await storedKey(app, kid)))
})

t.test('HS256 with JWT_SECRET', async (t) => {
  const app = await build(t, { env: { JWT_ALGORITHM: 'HS256', JWT_SECRET: SECRET }, now: stillClock() })
  await checkClaims(t, app, async () => signerOf('HS256', SECRET))
})

t.test('EdDSA with JWT_PRIVATE_KEY', async (t) => {
  const { privateKey } = generateKeyPairSync('ed25519')
  const app = await build(t, { env: { JWT_ALGORITHM: 'EdDSA', JWT_PRIVATE_KEY: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() }, now: stillClock() })
  await checkClaims(t, app, async () => signerOf('EdDSA', privateKey))
})
