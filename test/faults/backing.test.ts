import { existsSync, readdirSync, readlinkSync } from 'node:fs'
import { connect } from 'node:net'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'
import pg from 'pg'
import t from 'tap'
import { tempDir } from '../helper.js'
import { postgresUnavailable, redisServerUnavailable, spawnService, startPostgres, startRedisServer, type Postgres } from './backing.js'

/**
 * The harness the fault tests stand on does what it says: each state it
 * waits for is reached, and nothing is left behind when a test ends, however
 * it ends.
 */

if (process.env.CI === 'true') {
  if (postgresUnavailable) t.fail(`CI must run the fault tests on PostgreSQL: ${postgresUnavailable}`)
  if (redisServerUnavailable) t.fail(`CI must run the fault tests on Redis: ${redisServerUnavailable}`)
}

/** Every live process whose working directory is `dir` (a cluster's processes sit in its data directory). */
const processesIn = (dir: string) => readdirSync('/proc').filter((p) => /^\d+$/.test(p)).filter((p) => {
  try { return readlinkSync(`/proc/${p}/cwd`) === dir } catch { return false }
})

/** A query on a new connection; its rows, or the error's message. Bounded: 2 s to connect, 2 s to answer. */
async function query (url: string, text: string): Promise<unknown[] | string> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2000, query_timeout: 2000 })
  client.on('error', () => {})
  try {
    await client.connect()
    return (await client.query(text)).rows
  } catch (err) {
    return (err as Error).message
  } finally {
    client.end().catch(() => {})
  }
}

/** Whether a TCP connection to the port is refused. */
const refused = (port: number) => new Promise<boolean>((resolve) => {
  const socket = connect(port, '127.0.0.1')
  socket.once('connect', () => { socket.destroy(); resolve(false) })
  socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED'))
})

t.test('startPostgres', { skip: postgresUnavailable ?? false }, async (t) => {
  let cluster!: Postgres
  let frozenAtTheEnd!: Postgres

  t.test('a private cluster: kill, start, freeze, thaw, restart, stop', async (t) => {
    const started = performance.now()
    cluster = await startPostgres(t)
    t.ok(performance.now() - started < 10_000, `started in ${(performance.now() - started).toFixed(0)} ms`)
    t.match(cluster.url, /^postgres:\/\/postgres@127\.0\.0\.1:\d+\/auth$/, 'on loopback, its own database')
    t.same(await query(cluster.url, 'show fsync'), [{ fsync: 'off' }], 'fsync off unless asked for')
    t.same(await query(cluster.url, "select setting from pg_settings where name = 'listen_addresses'"), [{ setting: '127.0.0.1' }], 'listens on loopback only')
    t.same(await query(cluster.url, 'create table kept (n int)'), [], 'takes a table')
    t.same(await query(cluster.url, 'insert into kept values (1) returning n'), [{ n: 1 }], 'and a committed write')

    await cluster.kill()
    t.equal(cluster.pid(), null, 'kill: the postmaster is gone')
    t.same(processesIn(cluster.dataDir), [], 'kill: and every process of the cluster')
    t.match(await query(cluster.url, 'select 1'), /ECONNREFUSED/, 'kill: connections are refused')
    await cluster.start()
    t.same(await query(cluster.url, 'select n from kept'), [{ n: 1 }], 'start: recovered, with the committed write')

    const held = new pg.Client({ connectionString: cluster.url })
    held.on('error', () => {})
    await held.connect()
    await cluster.freeze()
    const pending = held.query('select 2 as n')
    t.equal(await Promise.race([pending.then(() => 'answered', () => 'failed'), sleep(500, 'hangs')]), 'hangs', 'freeze: a query on an open connection hangs')
    t.match(await query(cluster.url, 'select 1'), /timeout/i, 'freeze: a new connection times out')
    await cluster.thaw()
    t.same((await pending).rows, [{ n: 2 }], 'thaw: the hung query is answered')
    await held.end()

    const before = cluster.pid()
    await cluster.restart()
    t.not(cluster.pid(), before, 'restart: a new postmaster')
    t.same(await query(cluster.url, 'select n from kept'), [{ n: 1 }], 'restart: same data')

    await cluster.stop('smart')
    t.same(processesIn(cluster.dataDir), [], 'stop: every process is gone')
    await cluster.start()
    t.same(await query(cluster.url, 'select 1 as n'), [{ n: 1 }], 'start after stop')
  })

  t.test('fsync on, when asked for', async (t) => {
    const durable = await startPostgres(t, { fsync: true, database: 'other' })
    t.same(await query(durable.url, 'show fsync'), [{ fsync: 'on' }], 'fsync on')
    t.match(durable.url, /\/other$/, 'the database asked for')
  })

  t.test('a test that ends with its cluster frozen', async (t) => {
    frozenAtTheEnd = await startPostgres(t)
    await frozenAtTheEnd.freeze()
    t.match(await query(frozenAtTheEnd.url, 'select 1'), /timeout/i, 'frozen')
  })

  t.test('teardown leaves nothing behind', async (t) => {
    for (const c of [cluster, frozenAtTheEnd]) {
      t.same(processesIn(c.dataDir), [], `no process of the cluster on ${c.port} is left (frozen or not)`)
      t.notOk(existsSync(c.dataDir), 'its folder is removed')
      t.ok(await refused(c.port), 'its port is free')
    }
  })
})

t.test('startRedisServer: kill, restart on the same port, freeze, thaw', { skip: redisServerUnavailable ?? false }, async (t) => {
  const redis = await startRedisServer(t)
  const client = new Redis(redis.url, { maxRetriesPerRequest: 50, retryStrategy: () => 100, lazyConnect: true })
  client.on('error', () => {})
  t.teardown(() => client.disconnect())
  await client.connect()
  t.equal(await client.set('k', 'v'), 'OK', 'answers')

  await redis.freeze()
  t.equal(await Promise.race([client.get('k'), sleep(500, 'hangs')]), 'hangs', 'freeze: a command hangs')
  await redis.thaw()
  t.equal(await client.get('k'), 'v', 'thaw: answers again')

  await redis.kill()
  t.equal(redis.pid(), null, 'kill: gone')
  t.ok(await refused(redis.port), 'kill: the port refuses connections')
  await redis.restart()
  t.ok(redis.pid(), 'restart: running')
  t.equal(await client.get('k'), null, 'restart: on the same port, empty (no persistence); the client reconnected')
})

t.test('spawnService: the real service on a free port; kill(SIGKILL) kills it, not only tsx', async (t) => {
  const service = await spawnService(t, { DATABASE_URL: `sqlite:${join(tempDir(t), 'auth.db')}` })
  const res = await fetch(`${service.base}/api/health`)
  t.equal(res.status, 200, 'GET /api/health: 200')
  t.equal(await service.kill('SIGKILL'), 137, 'exit 137: SIGKILL')
  t.notOk(existsSync(`/proc/${service.pid}/cwd`), 'the process that ran server.ts is gone')
  t.ok(await refused(service.port), 'its port refuses connections')
})
