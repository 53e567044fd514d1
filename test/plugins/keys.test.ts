import { spawnSync } from 'node:child_process'
import { resolve } from 'node:path'
import type { FastifyInstance } from 'fastify'
import t from 'tap'
import { build, childEnv, expectProblem, forwardAuth, movableClock, signup, tempSqliteUrl } from '../helper.js'

const ROOT = resolve(import.meta.dirname, '..', '..')
const JWKS = '/.well-known/jwks.json'
/** An hour, in seconds. */
const HOUR = 3600

const headerOf = (token: string) => JSON.parse(Buffer.from(token.split('.')[0], 'base64url').toString('utf8')) as Record<string, any>

async function jwks (app: FastifyInstance, etag?: string) {
  const res = await app.inject({ url: JWKS, headers: etag ? { 'if-none-match': etag } : {} })
  return { res, kids: res.statusCode === 200 ? (res.json() as { keys: Array<{ kid: string }> }).keys.map((k) => k.kid) : [], etag: res.headers.etag as string }
}

async function accessToken (app: FastifyInstance) {
  return (await signup(app)).access_token as string
}

/** Runs the CLI as an operator would: `npx tsx cli.ts …` from the checkout. */
function cli (args: string[], env: Record<string, string> = {}) {
  return spawnSync('npx', ['tsx', 'cli.ts', ...args], { cwd: ROOT, encoding: 'utf8', env: { ...childEnv(), LOG_LEVEL: 'silent', ...env } })
}

t.test('tokens.rotate(): published at once, signing after KEY_RELOAD_SECONDS, the old key verifying until its tokens expire', async (t) => {
  // The first key is made at the first start, an hour before the rotation.
  const clock = movableClock()
  clock.goTo(-HOUR)
  const app = await build(t, { env: { DATABASE_URL: tempSqliteUrl(t) }, now: clock.now })
  clock.goTo(0)
  await app.tokens.reload()

  const before = await jwks(app)
  t.equal(before.res.statusCode, 200)
  t.equal(before.res.headers['cache-control'], 'public, max-age=300', 'Cache-Control max-age')
  t.match(before.etag, /^"[^"]+"$/, 'an ETag')
  t.equal(before.kids.length, 1, 'one key before the rotation')
  const [oldKid] = before.kids
  t.equal((await jwks(app, before.etag)).res.statusCode, 304, 'If-None-Match with the current ETag is 304')
  const oldToken = await accessToken(app)
  t.equal(headerOf(oldToken).kid, oldKid, 'tokens are signed by the only key')

  const newKid = await app.tokens.rotate()
  t.type(newKid, 'string')
  t.not(newKid, oldKid, 'a new kid')

  const after = await jwks(app)
  t.equal(after.res.statusCode, 200)
  t.same(new Set(after.kids), new Set([oldKid, newKid]), 'the JWKS has both keys at once')
  t.not(after.etag, before.etag, 'a new ETag')
  const stale = await jwks(app, before.etag)
  t.equal(stale.res.statusCode, 200, 'the old ETag gets 200, not 304')
  t.same(new Set(stale.kids), new Set([oldKid, newKid]), 'and the new key set')

  t.equal(headerOf(await accessToken(app)).kid, oldKid, 'right after the rotation, the old key still signs')
  clock.goTo(59)
  await app.tokens.reload()
  t.equal(headerOf(await accessToken(app)).kid, oldKid, 'one second before KEY_RELOAD_SECONDS, the old key still signs')

  clock.goTo(60)
  await app.tokens.reload()
  const newToken = await accessToken(app)
  t.equal(headerOf(newToken).kid, newKid, 'after KEY_RELOAD_SECONDS the new key signs')
  t.equal(app.tokens.activeKid(), newKid)
  t.equal((await forwardAuth(app, newToken)).statusCode, 200, 'a token of the new key verifies')
  t.equal((await forwardAuth(app, oldToken)).statusCode, 200, 'a token of the old key still verifies')
  t.same(new Set((await jwks(app)).kids), new Set([oldKid, newKid]), 'both keys are still published')

  // The old key was retired at rotation + 60 s; it verifies for ACCESS_TOKEN_TTL_SECONDS + 60 s more.
  const retiredAt = 60
  clock.goTo(retiredAt + 900 + 60 - 1)
  await app.tokens.reload()
  t.same(new Set((await jwks(app)).kids), new Set([oldKid, newKid]), 'just before the end of its verification period, the old key is published')

  clock.goTo(retiredAt + 900 + 60 + 1)
  await app.tokens.reload()
  const last = await jwks(app)
  t.same(last.kids, [newKid], 'then the old key has left the JWKS')
  t.not(last.etag, after.etag, 'and the ETag changed again')
  expectProblem(t, await forwardAuth(app, oldToken), 401, ['INVALID_ACCESS_TOKEN', 'ACCESS_TOKEN_EXPIRED'])
  t.equal((await forwardAuth(app, await accessToken(app))).statusCode, 200, 'the new key goes on signing and verifying')
})

t.test('a rotation soon after the first start: the first key goes on signing until the new one is published', async (t) => {
  // A fresh deployment rotated at once (or within KEY_RELOAD_SECONDS of its first start): replicas that have not
  // reloaded yet do not know the new key, so it must not sign before KEY_RELOAD_SECONDS either.
  const clock = movableClock()
  const app = await build(t, { env: { DATABASE_URL: 'sqlite::memory:' }, now: clock.now })
  const [firstKid] = (await jwks(app)).kids
  clock.goTo(10)
  const newKid = await app.tokens.rotate()
  t.equal(headerOf(await accessToken(app)).kid, firstKid, 'right after the rotation, the first key still signs')
  clock.goTo(69)
  await app.tokens.reload()
  t.equal(headerOf(await accessToken(app)).kid, firstKid, 'until KEY_RELOAD_SECONDS after the rotation')
  clock.goTo(70)
  await app.tokens.reload()
  t.equal(headerOf(await accessToken(app)).kid, newKid, 'then the new key signs')
})

t.test('KEY_RELOAD_SECONDS is configurable', async (t) => {
  const clock = movableClock()
  clock.goTo(-HOUR)
  const app = await build(t, { env: { DATABASE_URL: 'sqlite::memory:', KEY_RELOAD_SECONDS: '5' }, now: clock.now })
  clock.goTo(0)
  const oldKid = app.tokens.activeKid()
  const newKid = await app.tokens.rotate()
  clock.goTo(4)
  await app.tokens.reload()
  t.equal(headerOf(await accessToken(app)).kid, oldKid, 'at 4 s the old key signs')
  clock.goTo(5)
  await app.tokens.reload()
  t.equal(headerOf(await accessToken(app)).kid, newKid, 'at 5 s the new key signs')
})

t.test('a second instance on the same database picks up a rotation at its reload', async (t) => {
  const clock = movableClock()
  clock.goTo(-HOUR)
  const url = tempSqliteUrl(t)
  const one = await build(t, { env: { DATABASE_URL: url }, now: clock.now })
  const two = await build(t, { env: { DATABASE_URL: url }, now: clock.now })
  clock.goTo(0)
  const [kid] = (await jwks(one)).kids
  t.same((await jwks(two)).kids, [kid], 'both instances share the first key')

  const newKid = await one.tokens.rotate()
  t.same((await jwks(two)).kids, [kid], 'before its reload, the second instance does not know the new key')
  await two.tokens.reload()
  const both = await jwks(two)
  t.same(new Set(both.kids), new Set([kid, newKid]), 'after its reload it publishes both keys')
  t.equal(both.etag, (await jwks(one)).etag, 'with the same ETag as the first instance')

  clock.goTo(60)
  await one.tokens.reload()
  await two.tokens.reload()
  const fromOne = await accessToken(one)
  const fromTwo = await accessToken(two)
  t.equal(headerOf(fromOne).kid, newKid, 'the first instance signs with the new key')
  t.equal(headerOf(fromTwo).kid, newKid, 'the second instance signs with the new key')
  t.equal((await forwardAuth(two, fromOne)).statusCode, 200, 'the second instance verifies the first one\'s tokens')
  t.equal((await forwardAuth(one, fromTwo)).statusCode, 200, 'and the other way round')
})

t.test('npx tsx cli.ts keys:rotate adds a key to the database', async (t) => {
  const url = tempSqliteUrl(t)
  const app = await build(t, { env: { DATABASE_URL: url } })
  const [kid] = (await jwks(app)).kids
  const countKeys = async () => (await app.db.selectFrom('signing_keys').select('kid').execute()).map((r) => r.kid)
  t.same(await countKeys(), [kid], 'one key before')

  const run = cli(['keys:rotate'], { DATABASE_URL: url })
  t.equal(run.status, 0, `exits 0 (stderr: ${run.stderr})`)
  const kids = await countKeys()
  t.equal(kids.length, 2, 'a row was added')
  const [newKid] = kids.filter((k) => k !== kid)
  t.match(run.stdout, newKid, 'it names the new key')
  const rows = await app.db.selectFrom('signing_keys').selectAll().execute()
  t.not(rows.find((r) => r.kid === kid)?.retired_at, null, 'the old key is set to retire')
  t.equal(rows.find((r) => r.kid === newKid)?.retired_at, null, 'the new key is live')

  await app.tokens.reload()
  t.same(new Set((await jwks(app)).kids), new Set([kid, newKid]), 'the running instance publishes it after a reload')
})

t.test('with JWT_SECRET (HS256) rotate() is refused', async (t) => {
  const app = await build(t, { env: { JWT_ALGORITHM: 'HS256', JWT_SECRET: 'a-shared-secret-of-at-least-32-bytes!' } })
  const rows = async () => (await app.db.selectFrom('signing_keys').select('kid').execute()).length
  const before = await rows()
  await t.rejects(app.tokens.rotate(), /JWT_SECRET/, 'rotate() rejects, naming where the key comes from')
  t.equal(await rows(), before, 'no key was added')
  t.same((await jwks(app)).res.json(), { keys: [] }, 'the JWKS stays empty')
  t.equal((await forwardAuth(app, await accessToken(app))).statusCode, 200, 'the secret still signs and verifies')
})

t.test('npx tsx cli.ts --help lists keys:rotate and exits 0', async (t) => {
  const run = cli(['--help'])
  t.equal(run.status, 0, 'exits 0')
  t.match(run.stdout, /keys:rotate/, 'lists keys:rotate')
})

t.test('npx tsx cli.ts with an unknown command exits 2', async (t) => {
  const run = cli(['no-such-command'])
  t.equal(run.status, 2, 'exits 2')
  t.match(run.stderr, /Unknown command "no-such-command"/, 'says so on stderr')
  t.match(run.stderr, /keys:rotate/, 'and shows the commands')
})
