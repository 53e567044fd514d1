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

/** Asks readiness every 100 ms until it answers `status`: at most 100 times (about 10 s plus the probes). */
async function readyUntil (app: FastifyInstance, status: number) {
  for (let i = 0; i < 100; i++) {
    const answer = await ready(app)
    if (answer.status === status) return answer
    await sleep(100)
  }
  return null
}

if (!hasRedisServer) {
  if (process.env.CI === 'true') t.fail('redis-server is not installed: CI must run readiness against a real Redis')
  else t.test('readiness with Redis', { skip: 'redis-server is not installed here' }, (t) => { t.ok(hasRedisServer) })
} else {
  t.test('readiness reports Redis; liveness never asks it', async (t) => {
    const port = await freePort()
    let redis = await startRedis(t, port)
    const app = await build(t, { env: { REDIS_URL: `redis://127.0.0.1:${port}` } })

    const up = await ready(app)
    t.equal(up.status, 200, 'ready with Redis up')
    t.same(up.body, { status: 'ok', service: 'auth-service', version: up.body.version, database: 'ok', redis: 'ok' }, 'both reported')
    t.same(json(await app.inject({ method: 'GET', url: '/health' })), up.body, '/health is the same report')

    t.test('a frozen Redis (the connection stays open, nothing answers): 503 within the short timeout', async (t) => {
      redis.kill('SIGSTOP')
      t.teardown(() => { redis.kill('SIGCONT') })
      const frozen = await ready(app)
      t.equal(frozen.status, 503)
      t.match(frozen.body, { status: 'unavailable', database: 'ok', redis: 'unavailable' })
      t.ok(frozen.ms >= 900 && frozen.ms < 3000, `answered after the 1 s timeout, not later (${frozen.ms.toFixed(0)} ms)`)
      const live = await app.inject({ method: 'GET', url: '/api/health' })
      t.equal(live.statusCode, 200, 'liveness still 200')
      t.notOk('redis' in json(live) || 'database' in json(live), 'liveness reports neither')
      redis.kill('SIGCONT')
      t.ok(await readyUntil(app, 200), 'ready again once Redis answers')
    })

    t.test('Redis gone: 503 at once; back when it comes back', async (t) => {
      redis.kill('SIGKILL')
      await once(redis, 'exit')
      const down = await readyUntil(app, 503)
      t.ok(down, 'not ready once Redis is gone')
      t.match(down?.body, { status: 'unavailable', database: 'ok', redis: 'unavailable' })
      t.equal((await app.inject({ method: 'GET', url: '/api/health' })).statusCode, 200, 'liveness still 200')
      redis = await startRedis(t, port)
      const back = await readyUntil(app, 200)
      t.ok(back, 'ready again after the restart (ioredis reconnects)')
      t.equal(back?.body.redis, 'ok')
    })
  })
}
