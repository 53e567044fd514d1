import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import type { FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import t, { type Test } from 'tap'
import { bearer, build, claimsOf, expectProblem, forwardAuth, json, login, movableClock, signup, tempSqliteUrl } from '../helper.js'

const POLL_EVERY_MS = 50
/** 20 polls 50 ms apart: the revocation must arrive within one second. */
const MAX_POLLS = 20

const redisUrl = process.env.TEST_REDIS_URL
/** How far the fast replica's clock runs ahead: 20 minutes, in seconds. */
const AHEAD = 1200

/**
 * Asks `app` about `token` every 50 ms, at most MAX_POLLS times, until it answers 401.
 * Returns how many polls that took, or null if it never did.
 */
async function pollsUntilRefused (app: FastifyInstance, token: string): Promise<{ polls: number, code: string } | null> {
  for (let poll = 1; poll <= MAX_POLLS; poll++) {
    const res = await forwardAuth(app, token)
    if (res.statusCode === 401) return { polls: poll, code: json(res).code }
    await sleep(POLL_EVERY_MS)
  }
  return null
}

/** The databases two instances can share: a SQLite file, and PostgreSQL when TEST_DATABASE_URL is set. */
function sharedDatabases (t: Test): Array<{ name: string, url: string }> {
  return [
    { name: 'sqlite file', url: tempSqliteUrl(t) },
    ...(process.env.TEST_DATABASE_URL ? [{ name: 'postgres', url: process.env.TEST_DATABASE_URL }] : [])
  ]
}

if (!redisUrl) {
  if (process.env.CI === 'true') {
    t.fail('TEST_REDIS_URL is not set: CI must run the shared revocation list against a real Redis (e.g. TEST_REDIS_URL=redis://127.0.0.1:6379)')
  } else {
    const why = 'TEST_REDIS_URL is not set: set it (e.g. redis://127.0.0.1:6379) to run these against a real Redis; CI sets it and fails without it'
    t.test('revocations shared through Redis', { skip: why }, (t) => { t.ok(redisUrl, 'TEST_REDIS_URL is set') })
  }
} else {
  for (const db of sharedDatabases(t)) {
    t.test(`${db.name}: replicas sharing one Redis share the revocation list`, async (t) => {
      // A channel of this run only, so parallel runs on the same Redis do not hear each other.
      const prefix = `test-${process.pid}-${randomUUID().slice(0, 8)}:`
      const env = { DATABASE_URL: db.url, REDIS_URL: redisUrl, REDIS_KEY_PREFIX: prefix }
      const a = await build(t, { env })
      const b = await build(t, { env })

      t.test('a session ended on A is refused by B within one second', async (t) => {
        const signed = await signup(a)
        t.equal((await forwardAuth(b, signed.access_token)).statusCode, 200, 'A\'s token works on B')
        t.equal((await a.inject({ method: 'POST', url: '/api/v1/auth/logout', headers: bearer(signed.access_token) })).statusCode, 204, 'logout on A')
        const refused = await pollsUntilRefused(b, signed.access_token)
        t.ok(refused, `B refused the token within ${MAX_POLLS} polls ${POLL_EVERY_MS} ms apart`)
        t.equal(refused?.code, 'SESSION_REVOKED', 'as a revoked session')

        // A replica that starts after the revocation learns it too.
        const c = await build(t, { env })
        const res = await forwardAuth(c, signed.access_token)
        t.equal(res.statusCode, 401, 'a late replica refuses the token')
        t.equal(json(res).code, 'SESSION_REVOKED')
        const other = await signup(a)
        t.equal((await forwardAuth(c, other.access_token)).statusCode, 200, 'and still accepts a live one')
      })

      t.test('sessions ended in bulk on B are refused by A', async (t) => {
        const first = await signup(b)
        const second = await login(b, first.user.email)
        t.equal((await forwardAuth(a, second.access_token)).statusCode, 200, 'B\'s token works on A')
        t.equal((await b.inject({ method: 'DELETE', url: '/api/v1/users/me/sessions', headers: bearer(first.access_token) })).statusCode, 204, 'end the other sessions on B')
        const refused = await pollsUntilRefused(a, second.access_token)
        t.ok(refused, `A refused the token within ${MAX_POLLS} polls`)
        t.equal(refused?.code, 'SESSION_REVOKED')
        t.equal((await forwardAuth(a, first.access_token)).statusCode, 200, 'the session kept on B still works on A')
      })

      t.test('a malformed message on the channel does not crash B', async (t) => {
        const publisher = new Redis(redisUrl)
        t.teardown(async () => { await publisher.quit() })
        const live = await signup(a)
        const target = await signup(a)
        t.equal((await forwardAuth(b, target.access_token)).statusCode, 200, 'the target works on B')

        const channel = `${prefix}revocations`
        for (const message of ['not json', 'null', '42', '[]', '{"ids":"x","until":1}', '{"ids":[1,{}],"until":"tomorrow"}', '{']) {
          await publisher.publish(channel, message)
        }
        // Redis delivers a channel's messages in order: once this one has taken effect, B has read the malformed ones.
        await publisher.publish(channel, JSON.stringify({ ids: [claimsOf(target.access_token).sid], until: Date.now() + 60_000 }))
        const refused = await pollsUntilRefused(b, target.access_token)
        t.ok(refused, 'B still reads the channel after the malformed messages')
        t.equal(refused?.code, 'SESSION_REVOKED')
        const res = await forwardAuth(b, live.access_token)
        t.equal(res.statusCode, 200, 'B still answers')
        t.equal(res.headers['x-user-id'], live.user.id)
        t.equal((await b.inject({ url: '/api/health' })).statusCode, 200, 'B is alive')
      })
    })

    t.test(`${db.name}: replicas ${AHEAD / 60} minutes apart: a revocation published by one holds on the other for the token's whole life`, async (t) => {
      const prefix = `test-${process.pid}-${randomUUID().slice(0, 8)}:`
      const env = { DATABASE_URL: db.url, REDIS_URL: redisUrl, REDIS_KEY_PREFIX: prefix }
      const start = Date.now()
      const slowClock = movableClock(new Date(start))
      const fastClock = movableClock(new Date(start + AHEAD * 1000))
      const slow = await build(t, { env, now: slowClock.now })
      const fast = await build(t, { env, now: fastClock.now })
      const listener = new Redis(redisUrl)
      t.teardown(async () => { await listener.quit() })
      const messages: Array<{ ids: string[], until: number }> = []
      listener.on('message', (_channel, message) => messages.push(JSON.parse(message)))
      await listener.subscribe(`${prefix}revocations`)

      /** Ends `token`'s session on `revoker`; `verifier` refuses it within a second, and a second before it expires by its clock. */
      async function check (t: Test, issuer: FastifyInstance, revoker: FastifyInstance, verifier: FastifyInstance) {
        slowClock.goTo(0)
        fastClock.goTo(0)
        const ended = await signup(issuer)
        const kept = await signup(issuer)
        t.equal((await forwardAuth(verifier, ended.access_token)).statusCode, 200, 'the token works on the verifier')
        t.equal((await revoker.inject({ method: 'POST', url: '/api/v1/auth/logout', payload: { refresh_token: ended.refresh_token } })).statusCode, 204, 'logout')
        const refused = await pollsUntilRefused(verifier, ended.access_token)
        t.ok(refused, `refused within ${MAX_POLLS} polls ${POLL_EVERY_MS} ms apart`)
        t.equal(refused?.code, 'SESSION_REVOKED', 'as a revoked session')

        const { sid, exp } = claimsOf(ended.access_token)
        const message = messages.find((m) => m.ids.includes(sid))
        t.ok(message && message.until >= exp * 1000, 'the message\'s until bounds the token\'s exp, on the clock that signed it')

        const left = exp - (verifier === fast ? fastClock : slowClock).now().getTime() / 1000
        slowClock.advance(left - 1)
        fastClock.advance(left - 1)
        await verifier.revocations.resync()
        t.equal((await forwardAuth(verifier, kept.access_token)).statusCode, 200, 'a second before the end, a token signed with it is alive')
        expectProblem(t, await forwardAuth(verifier, ended.access_token), 401, 'SESSION_REVOKED')
      }

      t.test('signed on the fast replica, ended on the slow one, refused by the fast one', (t) => check(t, fast, slow, fast))
      t.test('signed on the slow replica, ended on the fast one, refused by the slow one', (t) => check(t, slow, fast, slow))
    })
  }
}
