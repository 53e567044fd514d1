import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import type { FastifyInstance, InjectOptions } from 'fastify'
import t from 'tap'
import { bearer, build, buildLogged, forwardAuth, freePort, GOOD_PASSWORD, hasRedisServer, json, login, metricValue, signup, startRedis, tempSqliteUrl, uniqueEmail, unless } from '../helper.js'

/**
 * Redis is an accelerator, not a single point of failure: two replicas on
 * one database and a Redis of the test's own, which the test kills and
 * brings back. While it is away nothing answers 500 or waits long, limits
 * count per instance, revocations apply at once where they were made; when
 * it is back the other replica catches up within a second.
 */

/** A request slower than this is a hang, not a fallback (REDIS_TIMEOUT_MS is 100 ms). */
const HANG_MS = 1000
/** 20 polls 50 ms apart: within one second. */
const POLLS = 20

/** Polls `check` every 50 ms, at most POLLS times; how many polls it took, or null. */
async function pollsUntil (check: () => Promise<boolean>): Promise<number | null> {
  for (let poll = 1; poll <= POLLS; poll++) {
    if (await check()) return poll
    await sleep(50)
  }
  return null
}

/** Waits (bounded, 5 s) until the app sees Redis as `up`. */
async function redisSeen (app: FastifyInstance, up: boolean) {
  for (let i = 0; i < 100 && app.shared.up() !== up; i++) await sleep(50)
  return app.shared.up() === up
}

unless(hasRedisServer ? null : 'redis-server is not installed here', () => {
  t.test('two replicas ride out a Redis outage and catch up when it is back', async (t) => {
    const port = await freePort()
    let redis = await startRedis(t, port)
    const adminEmail = uniqueEmail('outage-admin')
    const env = {
      DATABASE_URL: tempSqliteUrl(t),
      REDIS_URL: `redis://127.0.0.1:${port}`,
      ADMIN_EMAIL: adminEmail,
      ADMIN_PASSWORD: GOOD_PASSWORD,
      RATE_LIMIT_ENABLED: 'true',
      RATE_LIMIT_LOGIN_PER_MINUTE: '3'
    }
    const { fastify: a, lines } = await buildLogged(t, { env })
    const b = await build(t, { env })
    t.ok(await redisSeen(a, true) && await redisSeen(b, true), 'both replicas see Redis')

    // Before the outage: a signed-in user, and a role whose permission the user's token names.
    const admin = bearer((await login(a, adminEmail)).access_token)
    const user = await signup(a)
    const role = `outage-${Date.now().toString(36)}`
    t.equal((await a.inject({ method: 'POST', url: '/api/v1/admin/roles', headers: admin, payload: { name: role, permissions: ['audit:read'] } })).statusCode, 201)
    await pollsUntil(async () => b.roles.grants([role], 'audit:read'))
    t.ok(b.roles.grants([role], 'audit:read'), 'B knows the role')

    redis.kill('SIGKILL')
    await once(redis, 'exit')
    t.ok(await redisSeen(a, false) && await redisSeen(b, false), 'both replicas see Redis gone')

    t.test('while Redis is away: no 500, no hang, limits per instance', async (t) => {
      const timed = async (app: FastifyInstance, request: InjectOptions) => {
        const started = performance.now()
        const res = await app.inject(request)
        t.ok(performance.now() - started < HANG_MS, `${res.statusCode} within ${HANG_MS} ms`)
        t.ok(res.statusCode < 500, `no 5xx (got ${res.statusCode})`)
        return res
      }
      t.equal((await timed(b, { method: 'GET', url: '/api/v1/users/me', headers: bearer(user.access_token) })).statusCode, 200, 'a signed-in request')
      t.equal((await timed(b, { method: 'POST', url: '/api/v1/auth/refresh', payload: { refresh_token: user.refresh_token } })).statusCode, 200, 'a refresh')
      const ready = await timed(b, { method: 'GET', url: '/api/health/ready' })
      t.match(json(ready), { status: 'degraded', redis: 'unavailable' }, 'readiness reports Redis down, and stays ready')

      // The login limit (3 a minute per address) counts in memory: the 4th try from one address is refused.
      const victim = uniqueEmail('nobody')
      const tries = []
      for (let i = 0; i < 4; i++) tries.push((await timed(a, { method: 'POST', url: '/api/v1/auth/login', remoteAddress: '203.0.113.9', payload: { email: victim, password: 'a wrong password' } })).statusCode)
      t.same(tries, [401, 401, 401, 429], 'the per-address limit holds in memory')
      // The per-account throttle too: 5 failures from many addresses, then 429.
      const target = uniqueEmail('throttled')
      await signup(a, { email: target })
      const failures = []
      for (let i = 0; i < 6; i++) failures.push((await timed(a, { method: 'POST', url: '/api/v1/auth/login', remoteAddress: `198.51.100.${i + 1}`, payload: { email: target, password: 'a wrong password' } })).statusCode)
      t.same(failures, [401, 401, 401, 401, 401, 429], 'the login throttle holds in memory')
      t.ok(await metricValue(a, 'auth_redis_fallbacks_total', { use: 'rate_limit' }) > 0, 'rate-limit fallbacks counted')
      t.ok(await metricValue(a, 'auth_redis_fallbacks_total', { use: 'login_throttle' }) > 0, 'login-throttle fallbacks counted')
      t.equal(await metricValue(a, 'auth_redis_up'), 0, 'auth_redis_up is 0')
    })

    t.test('a session ended and a role changed during the outage reach the other replica within a second of Redis\' return', async (t) => {
      const session = await login(a, user.user.email)
      t.equal((await forwardAuth(b, session.access_token)).statusCode, 200, 'B accepts the token')
      const logout = await a.inject({ method: 'POST', url: '/api/v1/auth/logout', headers: bearer(session.access_token) })
      t.equal(logout.statusCode, 204, 'signed out on A while Redis is away')
      t.equal((await forwardAuth(a, session.access_token)).statusCode, 401, 'A refuses the token at once')
      t.equal((await a.inject({ method: 'PUT', url: `/api/v1/admin/roles/${role}`, headers: admin, payload: { permissions: ['users:read'] } })).statusCode, 200, 'the role changed on A')

      redis = await startRedis(t, port)
      const revoked = await pollsUntil(async () => (await forwardAuth(b, session.access_token)).statusCode === 401)
      t.ok(revoked, `B refuses the token within a second of Redis' return (${revoked} polls of 50 ms)`)
      const reloaded = await pollsUntil(async () => !b.roles.grants([role], 'audit:read'))
      t.ok(reloaded, `B knows the role's new permissions within a second (${reloaded} polls)`)
      t.ok(await redisSeen(a, true), 'A sees Redis back')
      t.equal(await metricValue(a, 'auth_redis_up'), 1, 'auth_redis_up is 1')
    })

    t.test('the log says once that Redis is gone and once that it is back', async (t) => {
      t.equal(lines().filter((l) => /^Redis is gone/.test(l.msg)).length, 1, 'gone: once')
      t.equal(lines().filter((l) => /^Redis is back/.test(l.msg)).length, 1, 'back: once')
    })
  })

  t.test('a replica starts while Redis is away, and shares once it is there', async (t) => {
    const port = await freePort()
    const env = { DATABASE_URL: tempSqliteUrl(t), REDIS_URL: `redis://127.0.0.1:${port}` }
    const { fastify: app, lines } = await buildLogged(t, { env })
    t.equal(lines().filter((l) => /Redis cannot be reached at start/.test(l.msg)).length, 1, 'it says so, once')
    const user = await signup(app)
    t.equal((await forwardAuth(app, user.access_token)).statusCode, 200, 'and serves')
    await startRedis(t, port)
    t.ok(await redisSeen(app, true), 'it connects when Redis comes')
    t.equal(lines().filter((l) => /^Redis is back/.test(l.msg)).length, 1, 'and says so')
  })
})
