import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose'
import t from 'tap'
import { build, listen, movableClock, signup } from '../helper.js'

/** An hour, in seconds. */
const HOUR = 3600
const ISSUER = 'http://localhost:8000'
const AUDIENCE = 'auth-service'

// What docs/tokens.md promises: another service verifies our access tokens with `jose` and our JWKS alone.
for (const algorithm of ['RS256', 'ES256', 'EdDSA']) {
  t.test(`${algorithm}: jose verifies our tokens against the JWKS, before and after a key rotation`, async (t) => {
    // The first key was made an hour ago, so the rotation below follows the normal schedule.
    const clock = movableClock()
    clock.goTo(-HOUR)
    const app = await build(t, { env: { JWT_ALGORITHM: algorithm }, now: clock.now })
    clock.goTo(0)
    await app.tokens.reload()
    const base = await listen(app)

    const JWKS = createRemoteJWKSet(new URL(`${base}/.well-known/jwks.json`), { cooldownDuration: 0 })
    // The service runs on a clock the test moves; jose is told the same time. A verifier checks typ, as RFC 9068 asks.
    const verify = (token: string) => jwtVerify(token, JWKS, { issuer: ISSUER, audience: AUDIENCE, typ: 'at+jwt', currentDate: clock.now() })

    const first = await signup(app)
    const oldKid = decodeProtectedHeader(first.access_token).kid
    const { payload, protectedHeader } = await verify(first.access_token)
    t.equal(payload.sub, first.user.id, 'payload.sub is the user id')
    t.equal(protectedHeader.alg, algorithm, `signed with ${algorithm}`)
    t.equal(protectedHeader.typ, 'at+jwt', 'typ at+jwt')
    t.type(payload.sid, 'string', 'the session id is in the token')
    t.same(payload.roles, ['user'], 'the roles are in the token')

    const newKid = await app.tokens.rotate()
    t.not(newKid, oldKid, 'a new key')
    clock.goTo(60)
    await app.tokens.reload()
    const second = await signup(app)
    t.equal(decodeProtectedHeader(second.access_token).kid, newKid, 'new tokens carry the new kid')
    t.equal((await verify(second.access_token)).payload.sub, second.user.id, 'a token of the new key verifies')
    t.equal((await verify(first.access_token)).payload.sub, first.user.id, 'a token of the old key still verifies')

    const [head, body, signature] = second.access_token.split('.')
    const claims = JSON.parse(Buffer.from(body, 'base64url').toString('utf8'))
    const tampered = `${head}.${Buffer.from(JSON.stringify({ ...claims, sub: first.user.id })).toString('base64url')}.${signature}`
    await t.rejects(verify(tampered), { code: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' }, 'a token with a tampered payload fails')
    await t.rejects(jwtVerify(second.access_token, JWKS, { issuer: ISSUER, audience: 'another-service', currentDate: clock.now() }), { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED' }, 'a token for another audience fails')
    await t.rejects(jwtVerify(second.access_token, JWKS, { issuer: ISSUER, audience: AUDIENCE, typ: 'JWT', currentDate: clock.now() }), { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED', claim: 'typ' }, 'a verifier expecting another typ refuses it')
    clock.goTo(60 + 901)
    await t.rejects(verify(second.access_token), { code: 'ERR_JWT_EXPIRED' }, 'an expired token fails')
  })
}
