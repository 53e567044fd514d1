import type { AddressInfo } from 'node:net'
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose'
import t from 'tap'
import { build, signup } from '../helper.js'

const SECOND = 1000
const HOUR = 3600 * SECOND
const ISSUER = 'http://localhost:8000'
const AUDIENCE = 'auth-service'

// What README promises: another service verifies our access tokens with `jose` and our JWKS alone.
for (const algorithm of ['RS256', 'ES256', 'EdDSA']) {
  t.test(`${algorithm}: jose verifies our tokens against the JWKS, before and after a key rotation`, async (t) => {
    // The first key was made an hour ago, so the rotation below follows the normal schedule.
    let clock = new Date(Date.now() - HOUR)
    const app = await build(t, { env: { JWT_ALGORITHM: algorithm }, now: () => clock })
    const start = Date.now()
    clock = new Date(start)
    await app.tokens.reload()
    await app.listen({ port: 0, host: '127.0.0.1' })
    const { port } = app.server.address() as AddressInfo
    const base = `http://127.0.0.1:${port}`

    const JWKS = createRemoteJWKSet(new URL(`${base}/.well-known/jwks.json`), { cooldownDuration: 0 })
    // The service runs on a clock the test moves; jose is told the same time.
    const verify = (token: string) => jwtVerify(token, JWKS, { issuer: ISSUER, audience: AUDIENCE, currentDate: clock })

    const first = await signup(app)
    const oldKid = decodeProtectedHeader(first.access_token).kid
    const { payload, protectedHeader } = await verify(first.access_token)
    t.equal(payload.sub, first.user.id, 'payload.sub is the user id')
    t.equal(protectedHeader.alg, algorithm, `signed with ${algorithm}`)
    t.type(payload.sid, 'string', 'the session id is in the token')
    t.same(payload.roles, ['user'], 'the roles are in the token')

    const newKid = await app.tokens.rotate()
    t.not(newKid, oldKid, 'a new key')
    clock = new Date(start + 60 * SECOND)
    await app.tokens.reload()
    const second = await signup(app)
    t.equal(decodeProtectedHeader(second.access_token).kid, newKid, 'new tokens carry the new kid')
    t.equal((await verify(second.access_token)).payload.sub, second.user.id, 'a token of the new key verifies')
    t.equal((await verify(first.access_token)).payload.sub, first.user.id, 'a token of the old key still verifies')

    const [head, body, signature] = second.access_token.split('.')
    const claims = JSON.parse(Buffer.from(body, 'base64url').toString('utf8'))
    const tampered = `${head}.${Buffer.from(JSON.stringify({ ...claims, sub: first.user.id })).toString('base64url')}.${signature}`
    await t.rejects(verify(tampered), { code: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' }, 'a token with a tampered payload fails')
    await t.rejects(jwtVerify(second.access_token, JWKS, { issuer: ISSUER, audience: 'another-service', currentDate: clock }), { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED' }, 'a token for another audience fails')
    clock = new Date(start + 60 * SECOND + 901 * SECOND)
    await t.rejects(verify(second.access_token), { code: 'ERR_JWT_EXPIRED' }, 'an expired token fails')
  })
}
