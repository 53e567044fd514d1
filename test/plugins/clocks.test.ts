import type { FastifyInstance } from 'fastify'
import t, { type Test } from 'tap'
import { build, claimsOf, expectProblem, forwardAuth, movableClock, signup, tempSqliteUrl } from '../helper.js'

/** How far the fast instance's clock runs ahead: 20 minutes, in seconds. */
const AHEAD = 1200
/** The skew a verifier allows a token's iat ahead of its clock (services/access-tokens.ts CLOCK_SKEW_SECONDS). */
const SKEW = 60
/** How long the database keeps a revocation after its end (plugins/revocations.ts). */
const KEEP_IN_DATABASE = 3600

interface Instance { name: string, app: FastifyInstance, clock: ReturnType<typeof movableClock> }

/** The databases two instances can share: a SQLite file, and PostgreSQL when TEST_DATABASE_URL is set. */
function sharedDatabases (t: Test): Array<{ name: string, url: string }> {
  return [
    { name: 'sqlite file', url: tempSqliteUrl(t) },
    ...(process.env.TEST_DATABASE_URL ? [{ name: 'postgres', url: process.env.TEST_DATABASE_URL }] : [])
  ]
}

/** An instance whose clock reads `offset` seconds after `start`. */
async function instance (t: Test, name: string, url: string, start: number, offset: number): Promise<Instance> {
  const clock = movableClock(new Date(start + offset * 1000))
  return { name, app: await build(t, { env: { DATABASE_URL: url }, now: clock.now }), clock }
}

/** Real time passes: every clock moves by the same amount. */
function pass (instances: Instance[], seconds: number) {
  for (const { clock } of instances) clock.advance(seconds)
}

/** Seconds left before `token` expires by `instance`'s clock. */
const secondsLeft = (instance: Instance, token: string) => claimsOf(token).exp - instance.clock.now().getTime() / 1000

const endSession = (app: FastifyInstance, refreshToken: string) =>
  app.inject({ method: 'POST', url: '/api/v1/auth/logout', payload: { refresh_token: refreshToken } })

/**
 * `ended`'s session was revoked; `kept`, signed by the same instance at the
 * same moment, belongs to a live session. Where `kept` is accepted, `ended`
 * must be SESSION_REVOKED; where `kept` is refused, `ended` is refused alike.
 */
async function expectRefused (t: Test, verifier: Instance, ended: string, kept: string, when: string) {
  const control = await forwardAuth(verifier.app, kept)
  const res = await forwardAuth(verifier.app, ended)
  t.test(`on the ${verifier.name} instance, ${when}`, async (t) => {
    if (control.statusCode === 200) {
      t.pass('a token of a live session, signed at the same moment, is accepted there')
      expectProblem(t, res, 401, 'SESSION_REVOKED')
    } else {
      expectProblem(t, res, 401, control.json().code)
    }
  })
  return control.statusCode
}

for (const db of sharedDatabases(t)) {
  t.test(`${db.name}: two instances ${AHEAD / 60} minutes apart`, async (t) => {
    const start = Date.now()
    const slow = await instance(t, 'slow', db.url, start, 0)
    const fast = await instance(t, 'fast', db.url, start, AHEAD)
    const both = [slow, fast]
    const reset = () => { for (const { clock } of both) clock.goTo(0) }

    t.test('a token signed on a clock ahead by more than the skew is refused until the clocks agree within it', async (t) => {
      reset()
      const signed = await signup(fast.app)
      t.equal((await forwardAuth(fast.app, signed.access_token)).statusCode, 200, 'the fast instance accepts its own token')
      expectProblem(t, await forwardAuth(slow.app, signed.access_token), 401, 'INVALID_ACCESS_TOKEN')
      pass(both, AHEAD - SKEW - 1)
      expectProblem(t, await forwardAuth(slow.app, signed.access_token), 401, 'INVALID_ACCESS_TOKEN')
      pass(both, 1)
      t.equal((await forwardAuth(slow.app, signed.access_token)).statusCode, 200, 'accepted once its iat is within the skew of the slow clock')

      reset()
      const near = await instance(t, 'near', db.url, start, SKEW / 2)
      const nearly = await signup(near.app)
      t.equal((await forwardAuth(slow.app, nearly.access_token)).statusCode, 200, `a token of a clock ${SKEW / 2} s ahead is accepted`)
    })

    for (const issuer of both) {
      for (const revoker of both) {
        t.test(`signed on the ${issuer.name} clock, its session ended on the ${revoker.name} one: refused everywhere for the token's whole life`, async (t) => {
          reset()
          const ended = await signup(issuer.app)
          const kept = await signup(issuer.app)
          t.equal((await endSession(revoker.app, ended.refresh_token)).statusCode, 204, `logout on the ${revoker.name} instance`)
          // No Redis: each instance learns of it from the database, as its timer would have it.
          for (const { app } of both) await app.revocations.resync()

          for (const verifier of both) {
            reset()
            await expectRefused(t, verifier, ended.access_token, kept.access_token, 'at once')
            const left = secondsLeft(verifier, ended.access_token)
            if (left <= 0) continue // Signed on the slow clock: already expired on the fast one.
            pass(both, left - 1)
            await verifier.app.revocations.resync()
            t.equal(await expectRefused(t, verifier, ended.access_token, kept.access_token, 'a second before the token expires there, after a pruning pass'), 200, 'the token is alive there then')
            pass(both, 2)
            expectProblem(t, await forwardAuth(verifier.app, ended.access_token), 401, 'ACCESS_TOKEN_EXPIRED')
          }
        })
      }
    }

    t.test('a session started on the slow clock, refreshed on the fast one, ended on the slow one: refused by the fast one until the token expires', async (t) => {
      reset()
      const started = await signup(slow.app)
      const refreshed = await fast.app.inject({ method: 'POST', url: '/api/v1/auth/refresh', payload: { refresh_token: started.refresh_token } })
      t.equal(refreshed.statusCode, 200, 'refreshed on the fast instance')
      const ended = refreshed.json().access_token as string
      const kept = (await signup(fast.app)).access_token as string
      t.equal((await endSession(slow.app, refreshed.json().refresh_token)).statusCode, 204, 'logout on the slow instance')
      await fast.app.revocations.resync()
      pass(both, secondsLeft(fast, ended) - 1)
      await fast.app.revocations.resync()
      t.equal(await expectRefused(t, fast, ended, kept, 'a second before the token expires'), 200, 'the token is alive there then')
    })

    t.test('an instance on the fast clock started after the revocation loads it from the database', async (t) => {
      reset()
      const ended = await signup(fast.app)
      const kept = await signup(fast.app)
      t.equal((await endSession(slow.app, ended.refresh_token)).statusCode, 204, 'logout on the slow instance')
      pass(both, secondsLeft(fast, ended.access_token) - 1)
      const late = await instance(t, 'late', db.url, fast.clock.now().getTime(), 0)
      t.equal(await expectRefused(t, late, ended.access_token, kept.access_token, 'a second before the token expires'), 200, 'the token is alive there then')
    })
  })
}

t.test('a revocation leaves memory once its tokens have expired, and the database an hour later', async (t) => {
  const url = tempSqliteUrl(t)
  const slow = await instance(t, 'slow', url, Date.now(), 0)
  const fast = await instance(t, 'fast', url, Date.now(), AHEAD)
  const both = [slow, fast]
  const signed = await signup(fast.app)
  const { sid, exp } = claimsOf(signed.access_token)
  t.equal((await endSession(slow.app, signed.refresh_token)).statusCode, 204)
  for (const { app } of both) await app.revocations.resync()
  const row = await slow.app.db.selectFrom('revoked_sessions').selectAll().where('session_id', '=', sid).executeTakeFirstOrThrow()
  const until = new Date(row.expires_at).getTime() / 1000
  t.ok(until >= exp, 'the revocation lasts at least as long as the token, on the clock that signed it')
  t.ok(until <= exp + 2 * SKEW, 'and not much longer')

  const stored = async () => (await slow.app.db.selectFrom('revoked_sessions').select('session_id').where('session_id', '=', sid).execute()).length
  for (const verifier of both) {
    verifier.clock.goTo(0)
    verifier.clock.advance(until - verifier.clock.now().getTime() / 1000 - 1)
    await verifier.app.revocations.resync()
    t.ok(verifier.app.revocations.has(sid, 0), `kept on the ${verifier.name} instance until its end by that clock`)
    verifier.clock.advance(2)
    await verifier.app.revocations.resync()
    t.notOk(verifier.app.revocations.has(sid, 0), `dropped by the ${verifier.name} instance after it`)
    t.equal(await stored(), 1, 'still in the database')
  }
  fast.clock.advance(KEEP_IN_DATABASE - 2)
  await fast.app.revocations.resync()
  t.equal(await stored(), 1, 'in the database until an hour after its end')
  fast.clock.advance(2)
  await fast.app.revocations.resync()
  t.equal(await stored(), 0, 'then pruned')
})
