import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import type { FastifyInstance } from 'fastify'
import t from 'tap'
import { build, freePort, hasRedisServer, json, startRedis } from '../helper.js'

/**
 * Readiness with Redis: a Redis of the test's own (redis-server on a free
 * loopback port), so it can be stopped, frozen and restarted without
 * disturbing the shared one.
 */

const ready = async (app: FastifyInstance) => {
  const started = performance.now()
  const res = await app.inject({ method: 'GET', url: '/api/health/ready' })
  return { status: res.statusCode, body: json(res), ms: performance.now() - started }
}

/** Asks readiness every 100 ms until it reports `status`: at most 100 times (about 10 s plus the probes). */
async function reportUntil (app: FastifyInstance, status: string) {
  for (let i = 0; i < 100; i++) {
    const answer = await ready(app)
    if (answer.body.status === status) return answer
    await sleep(100)
  }
  return null
}

if (!hasRedisServer) {
  if (process.env.CI === 'true') t.fail('redis-server is not installed: CI must run readiness against a real Redis')
  else t.test('readiness with Redis', { skip: 'redis-server is not installed here' }, (t) => { t.ok(hasRedisServer) })
} else {
  t.test('readiness reports Redis without depending on it; liveness never asks it', async (t) => {
    const port = await freePort()
    let redis = await startRedis(t, port)
    const app = await build(t, { env: { REDIS_URL: `redis://127.0.0.1:${port}` } })

    const up = await ready(app)
    t.equal(up.status, 200, 'ready with Redis up')
    t.same(up.body, { status: 'ok', service: 'auth-service', version: up.body.version, database: 'ok', redis: 'ok' }, 'both reported')
    t.same(json(await app.inject({ method: 'GET', url: '/health' })), up.body, '/health is the same report')

    t.test('a frozen Redis (the connection stays open, nothing answers): degraded within the short timeout, still ready', async (t) => {
      redis.kill('SIGSTOP')
      t.teardown(() => { redis.kill('SIGCONT') })
      const frozen = await ready(app)
      t.equal(frozen.status, 200, 'still ready: Redis is an accelerator')
      t.match(frozen.body, { status: 'degraded', database: 'ok', redis: 'unavailable' })
      t.ok(frozen.ms < 1500, `answered within the timeouts (REDIS_TIMEOUT_MS, at most the 1 s readiness bound), not later (${frozen.ms.toFixed(0)} ms)`)
      const live = await app.inject({ method: 'GET', url: '/api/health' })
      t.equal(live.statusCode, 200, 'liveness still 200')
      t.notOk('redis' in json(live) || 'database' in json(live), 'liveness reports neither')
      redis.kill('SIGCONT')
      t.ok(await reportUntil(app, 'ok'), 'ok again once Redis answers')
    })

    t.test('Redis gone: degraded at once; ok when it comes back', async (t) => {
      redis.kill('SIGKILL')
      await once(redis, 'exit')
      const down = await reportUntil(app, 'degraded')
      t.ok(down, 'degraded once Redis is gone')
      t.equal(down?.status, 200, 'and still ready')
      t.match(down?.body, { status: 'degraded', database: 'ok', redis: 'unavailable' })
      t.equal((await app.inject({ method: 'GET', url: '/api/health' })).statusCode, 200, 'liveness still 200')
      redis = await startRedis(t, port)
      const back = await reportUntil(app, 'ok')
      t.ok(back, 'ok again after the restart (ioredis reconnects)')
      t.equal(back?.body.redis, 'ok')
    })
  })
}
