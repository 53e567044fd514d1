import { spawnSync } from 'node:child_process'
import { createHash, createHmac, createPrivateKey, createPublicKey, generateKeyPairSync, verify, type JsonWebKey, type KeyObject } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import t from 'tap'
import { ConfigError, loadConfig } from '../../plugins/external/config.js'
import { bearer, build, childEnv, databases, json, login, signup, tempDir, tempSqliteUrl, uniqueEmail } from '../helper.js'

const ROOT = join(import.meta.dirname, '..', '..')
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
const SECRET = 'a-test-secret-that-is-long-enough-0123456789'
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi']

const decode = (part: string) => JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as Record<string, any>
function parts (token: string) {
  const [header, payload, signature] = token.split('.')
  return { header: decode(header), payload: decode(payload), input: `${header}.${payload}`, signature: Buffer.from(signature, 'base64url') }
}

/** RFC 7638, computed here independently of the service. */
function rfc7638 (jwk: JsonWebKey): string {
  const required: Record<string, string[]> = { RSA: ['e', 'kty', 'n'], EC: ['crv', 'kty', 'x', 'y'], OKP: ['crv', 'kty', 'x'] }
  const members = required[jwk.kty!].map((name) => `"${name}":"${(jwk as Record<string, string>)[name]}"`).join(',')
  return createHash('sha256').update(`{${members}}`).digest('base64url')
}

/** Verifies a JWT's signature offline, as another service would, with a key from the JWKS. */
function verifiesOffline (token: string, jwk: JsonWebKey): boolean {
  const { header, input, signature } = parts(token)
  const key = createPublicKey({ key: jwk, format: 'jwk' })
  if (header.alg === 'RS256') return verify('RSA-SHA256', Buffer.from(input), key, signature)
  if (header.alg === 'ES256') return verify('SHA256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' }, signature)
  if (header.alg === 'EdDSA') return verify(null, Buffer.from(input), key, signature)
  return false
}

const pemOf = (key: KeyObject) => key.export({ type: 'pkcs8', format: 'pem' }).toString()

async function jwksOf (app: FastifyInstance) {
  const res = await app.inject({ method: 'GET', url: '/.well-known/jwks.json' })
  if (res.statusCode !== 200) throw new Error(`jwks: ${res.statusCode}`)
  return json(res) as { keys: Array<JsonWebKey & { kid: string, alg: string, use: string, kty: string }> }
}

t.test('the claims and header of an access token', async (t) => {
  const clock = new Date('2030-01-02T03:04:05.678Z')
  const app = await build(t, { now: () => clock })
  const signed = await signup(app)
  const { header, payload } = parts(signed.access_token)

  t.equal(header.alg, 'RS256')
  t.equal(header.typ, 'at+jwt', 'typ at+jwt (RFC 9068)')
  t.type(header.kid, 'string')
  t.equal(payload.iss, 'http://localhost:8000', 'iss defaults to PUBLIC_URL')
  t.equal(payload.aud, 'auth-service', 'aud is JWT_AUDIENCE')
  t.equal(payload.sub, signed.user.id, 'sub is the user id')
  t.match(payload.sid, UUID, 'sid is a uuid')
  t.match(payload.jti, UUID, 'jti is a uuid')
  t.equal(payload.iat, Math.floor(clock.getTime() / 1000), 'iat from the service clock')
  t.equal(payload.exp, payload.iat + 900, 'exp = iat + 900')
  t.same(payload.roles, ['user'])
  t.equal(signed.expires_in, 900)
  t.equal(signed.token_type, 'Bearer')

  const session = await app.db.selectFrom('sessions').selectAll().where('id', '=', payload.sid).executeTakeFirst()
  t.ok(session, 'sid names a stored session')
  t.equal(session?.user_id, signed.user.id)

  const jwks = await jwksOf(app)
  const jwk = jwks.keys.find((k) => k.kid === header.kid)
  t.ok(jwk, 'the kid is in the JWKS')
  t.equal(jwk?.alg, 'RS256')
  t.ok(jwk && verifiesOffline(signed.access_token, jwk), 'verifies offline with the JWKS key')

  // Every token has its own jti.
  const second = parts((await login(app, signed.user.email)).access_token).payload
  t.not(second.jti, payload.jti, 'a fresh jti')
  t.not(second.sid, payload.sid, 'a new session')
})

t.test('JWT_ISSUER and JWT_AUDIENCE set the claims; PUBLIC_URL is the default issuer', async (t) => {
  const byUrl = await build(t, { env: { PUBLIC_URL: 'https://auth.example.com' } })
  t.equal(parts((await signup(byUrl)).access_token).payload.iss, 'https://auth.example.com')
  const byIssuer = await build(t, { env: { PUBLIC_URL: 'https://auth.example.com', JWT_ISSUER: 'urn:example:auth', JWT_AUDIENCE: 'api.example.com' } })
  const claims = parts((await signup(byIssuer)).access_token).payload
  t.equal(claims.iss, 'urn:example:auth')
  t.equal(claims.aud, 'api.example.com')
})

for (const db of databases) {
  t.test(db.name, async (t) => {
    const env = { DATABASE_URL: db.url }

    for (const [algorithm, kty, crv] of [['ES256', 'EC', 'P-256'], ['EdDSA', 'OKP', 'Ed25519'], ['RS256', 'RSA', undefined]] as const) {
      t.test(`JWT_ALGORITHM=${algorithm}: tokens, /me and the JWKS`, async (t) => {
        const app = await build(t, { env: { ...env, JWT_ALGORITHM: algorithm } })
        const signed = await signup(app)
        const { header } = parts(signed.access_token)
        t.equal(header.alg, algorithm, 'header alg')
        const me = await app.inject({ method: 'GET', url: '/api/v1/users/me', headers: bearer(signed.access_token) })
        t.equal(me.statusCode, 200, '/me works')
        t.equal(json(me).id, signed.user.id)

        const jwks = await jwksOf(app)
        t.ok(jwks.keys.length >= 1)
        for (const key of jwks.keys) {
          t.equal(key.kty, kty, 'kty')
          t.equal(key.alg, algorithm, 'alg')
          t.equal(key.use, 'sig')
          if (crv) t.equal(key.crv, crv, 'crv')
          for (const member of PRIVATE_MEMBERS) t.notOk(member in key, `no private member ${member}`)
        }
        const jwk = jwks.keys.find((k) => k.kid === header.kid)
        t.ok(jwk, 'the signing key is published')
        t.ok(jwk && verifiesOffline(signed.access_token, jwk), 'verifies offline')
        t.equal(jwk && rfc7638(jwk), header.kid, 'a generated key is named by its RFC 7638 thumbprint')
      })
    }

    t.test('HS256 with JWT_SECRET: tokens work and the JWKS is empty', async (t) => {
      const app = await build(t, { env: { ...env, JWT_ALGORITHM: 'HS256', JWT_SECRET: SECRET } })
      const signed = await signup(app)
      const { header, input, signature } = parts(signed.access_token)
      t.equal(header.alg, 'HS256')
      t.ok(createHmac('sha256', SECRET).update(input).digest().equals(signature), 'HMAC-SHA256 with the secret')
      const me = await app.inject({ method: 'GET', url: '/api/v1/users/me', headers: bearer(signed.access_token) })
      t.equal(me.statusCode, 200)
      t.same(await jwksOf(app), { keys: [] })

      // A token made with another secret is refused.
      const forged = `${input}.${createHmac('sha256', `${SECRET}-other`).update(input).digest('base64url')}`
      const refused = await app.inject({ method: 'GET', url: '/api/v1/users/me', headers: bearer(forged) })
      t.equal(refused.statusCode, 401)
      t.equal(json(refused).code, 'INVALID_ACCESS_TOKEN')
    })

    t.test('a configured JWT_PRIVATE_KEY signs, is named by its thumbprint and is not stored', async (t) => {
      for (const [algorithm, pair] of [
        ['RS256', generateKeyPairSync('rsa', { modulusLength: 2048 })],
        ['ES256', generateKeyPairSync('ec', { namedCurve: 'P-256' })],
        ['EdDSA', generateKeyPairSync('ed25519')]
      ] as const) {
        const app = await build(t, { env: { ...env, JWT_ALGORITHM: algorithm, JWT_PRIVATE_KEY: pemOf(pair.privateKey) } })
        const expectedKid = rfc7638(pair.publicKey.export({ format: 'jwk' }))
        const signed = await signup(app)
        const { header } = parts(signed.access_token)
        t.equal(header.kid, expectedKid, `${algorithm}: kid is the RFC 7638 thumbprint`)
        t.equal(header.alg, algorithm)
        const jwks = await jwksOf(app)
        t.same(jwks.keys.map((k) => k.kid), [expectedKid], 'the JWKS has exactly that key')
        const published = jwks.keys[0]
        const own = pair.publicKey.export({ format: 'jwk' }) as Record<string, string>
        for (const member of ['n', 'e', 'x', 'y', 'crv']) t.equal((published as Record<string, string>)[member], own[member], `${algorithm}: ${member} is the configured key's`)
        t.ok(verify(algorithm === 'EdDSA' ? null : 'SHA256', Buffer.from(parts(signed.access_token).input), algorithm === 'ES256' ? { key: pair.publicKey, dsaEncoding: 'ieee-p1363' } : pair.publicKey, parts(signed.access_token).signature), `${algorithm}: signed by the configured key`)
        const stored = await app.db.selectFrom('signing_keys').select('kid').where('kid', '=', expectedKid).execute()
        t.same(stored, [], `${algorithm}: not written to signing_keys`)
        if (db.name === 'sqlite') {
          const all = await app.db.selectFrom('signing_keys').select('kid').execute()
          t.same(all, [], 'no key generated either')
        }
        t.equal((await app.inject({ method: 'GET', url: '/api/v1/users/me', headers: bearer(signed.access_token) })).statusCode, 200)
      }
    })

    t.test('JWT_PRIVATE_KEY_FILE works as JWT_PRIVATE_KEY does', async (t) => {
      const pair = generateKeyPairSync('rsa', { modulusLength: 2048 })
      const file = join(tempDir(t), 'key.pem')
      writeFileSync(file, pemOf(pair.privateKey))
      const app = await build(t, { env: { ...env, JWT_PRIVATE_KEY_FILE: file } })
      const signed = await signup(app)
      t.equal(parts(signed.access_token).header.kid, rfc7638(pair.publicKey.export({ format: 'jwk' })))
      t.equal((await app.inject({ method: 'GET', url: '/api/v1/users/me', headers: bearer(signed.access_token) })).statusCode, 200)
    })

    t.test('under TZ=America/New_York the service works and times stay UTC', async (t) => {
      const result = spawnSync('npx', ['tsx', join('test', 'fixtures', 'tz-me.ts')], {
        cwd: ROOT,
        env: { ...childEnv(), TZ: 'America/New_York', DATABASE_URL: db.url },
        encoding: 'utf8',
        timeout: 60_000
      })
      t.equal(result.status, 0, `child exits 0 ${result.stderr}`)
      const line = result.stdout.trim().split('\n').pop() ?? ''
      const out = JSON.parse(line)
      t.equal(out.tz, 'America/New_York', 'the child ran in New York time')
      t.not(out.offsetMinutes, 0, 'and that is not UTC')
      t.equal(out.signup.status, 201)
      t.equal(out.me.status, 200, '/me answers 200')
      t.equal(out.me.body.email, out.email)
      const now = Date.parse(out.now)
      for (const field of ['created_at', 'updated_at']) {
        t.match(out.me.body[field], /Z$/, `${field} is UTC`)
        t.ok(Math.abs(Date.parse(out.me.body[field]) - now) < 60_000, `${field} is now, not hours off`)
      }
      const claims = parts(out.signup.body.access_token).payload
      t.ok(Math.abs(claims.iat * 1000 - now) < 60_000, 'iat is now')
      t.equal(claims.exp - claims.iat, 900)
    })
  })
}

t.test('keys kept in a database file survive a restart, encrypted', async (t) => {
  const url = tempSqliteUrl(t)
  const first = await build(t, { env: { DATABASE_URL: url } })
  const email = uniqueEmail('restart')
  const signed = await signup(first, { email })
  const rows = await first.db.selectFrom('signing_keys').selectAll().execute()
  t.equal(rows.length, 1, 'one generated key')
  t.equal(rows[0].kid, parts(signed.access_token).header.kid)
  t.equal(rows[0].algorithm, 'RS256')
  t.match(rows[0].private_key, /^v1\./, 'stored sealed (v1.)')
  t.notOk(rows[0].private_key.includes('PRIVATE KEY'), 'not a PEM')
  t.throws(() => createPrivateKey({ key: Buffer.from(rows[0].private_key.slice(3), 'base64url'), format: 'der', type: 'pkcs8' }), 'not base64 DER either')
  const publicJwk = JSON.parse(rows[0].public_jwk)
  for (const member of PRIVATE_MEMBERS) t.notOk(member in publicJwk, `public_jwk has no ${member}`)
  await first.close()

  const second = await build(t, { env: { DATABASE_URL: url } })
  const me = await second.inject({ method: 'GET', url: '/api/v1/users/me', headers: bearer(signed.access_token) })
  t.equal(me.statusCode, 200, 'the old access token still works')
  t.equal(json(me).email, email)
  const fresh = await signup(second)
  t.equal(parts(fresh.access_token).header.kid, rows[0].kid, 'the same key signs after the restart')
  const refreshed = await second.inject({ method: 'POST', url: '/api/v1/auth/refresh', payload: { refresh_token: signed.refresh_token } })
  t.equal(refreshed.statusCode, 200, 'the old refresh token still works')
  await second.close()

  await t.rejects(build(t, { env: { DATABASE_URL: url, KEY_ENCRYPTION_SECRET: 'another-key-encryption-secret-of-32-chars-or-more' } }),
    /KEY_ENCRYPTION_SECRET/, 'another KEY_ENCRYPTION_SECRET cannot start on these keys')
})

t.test('a key that does not fit JWT_ALGORITHM stops the build', async (t) => {
  const cases: Array<[string, KeyObject]> = [
    ['RS256', generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey],
    ['RS256', generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey],
    ['ES256', generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey],
    ['ES256', generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey],
    ['EdDSA', generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey],
    ['EdDSA', generateKeyPairSync('ed448').privateKey]
  ]
  for (const [algorithm, key] of cases) {
    await t.rejects(build(t, { env: { JWT_ALGORITHM: algorithm, JWT_PRIVATE_KEY: pemOf(key) } }),
      { message: new RegExp(`JWT_PRIVATE_KEY is not a key for ${algorithm}`) }, `${algorithm} with ${key.asymmetricKeyType} ${key.asymmetricKeyDetails?.namedCurve ?? key.asymmetricKeyDetails?.modulusLength ?? ''}`)
  }
  await t.rejects(build(t, { env: { JWT_PRIVATE_KEY: 'not a pem at all' } }), 'a non-PEM value stops it too')
})

t.test('HS256 needs JWT_SECRET of 32 or more characters', async (t) => {
  const err = t.throws(() => loadConfig({ JWT_ALGORITHM: 'HS256' }), { message: /JWT_SECRET/ })
  t.ok(err instanceof ConfigError, 'a ConfigError')
  t.throws(() => loadConfig({ JWT_ALGORITHM: 'HS256', JWT_SECRET: 'x'.repeat(31) }), { message: /JWT_SECRET/ })
  t.equal(loadConfig({ JWT_ALGORITHM: 'HS256', JWT_SECRET: 'x'.repeat(32) }).JWT_SECRET, 'x'.repeat(32))
})
