import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { existsSync } from 'node:fs'
import { connect, type Socket } from 'node:net'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'
import t, { type Test } from 'tap'
import { childEnv, freePort, GOOD_PASSWORD, hasRedisServer, startRedis, tempDir, uniqueEmail } from './helper.js'

/**
 * Graceful shutdown of the real server process (server.ts) with live
 * clients: an idle keep-alive connection and a request still in flight.
 */

const ROOT = join(import.meta.dirname, '..')

interface Server { child: ChildProcess, port: number, logs: Array<Record<string, any>>, exited: Promise<number | null> }

/** Starts `tsx server.ts` on a free port; resolves once it listens. */
async function startServer (t: Test, env: Record<string, string>): Promise<Server> {
  // tsx's CLI (which relays signals to the service) rather than --import tsx, which autoload does not recognise.
  const child = spawn(process.execPath, [join(ROOT, 'node_modules', 'tsx', 'dist', 'cli.mjs'), 'server.ts'], {
    cwd: ROOT,
    env: { ...childEnv(), NODE_ENV: 'test', LOG_LEVEL: 'info', HOST: '127.0.0.1', PORT: '0', RATE_LIMIT_ENABLED: 'false', MAX_EVENT_LOOP_DELAY_MS: '0', ...env },
    stdio: ['ignore', 'pipe', 'inherit']
  })
  t.teardown(() => { child.kill('SIGKILL') })
  const exited = once(child, 'exit').then(([code]) => code as number | null)
  const logs: Array<Record<string, any>> = []
  let pending = ''
  child.stdout!.on('data', (chunk) => {
    const lines = (pending + chunk).split('\n')
    pending = lines.pop()!
    for (const line of lines) logs.push(JSON.parse(line))
  })
  for (let i = 0; i < 300; i++) { // up to 30 s: tsx compiles the service first
    const listening = logs.find((l) => typeof l.msg === 'string' && l.msg.startsWith('Server listening at http://127.0.0.1:'))
    if (listening) return { child, port: Number(listening.msg.split(':').at(-1)), logs, exited }
    await sleep(100)
  }
  throw new Error('the server did not start within 30 s')
}

/** A raw HTTP/1.1 connection, so the test decides when each byte goes out. */
async function rawConnection (port: number) {
  const socket = connect(port, '127.0.0.1')
  await once(socket, 'connect')
  let received = ''
  socket.on('data', (chunk) => { received += chunk })
  const closed = once(socket, 'close').then(() => true)
  return {
    socket,
    closed,
    received: () => received,
    /** Waits (at most 10 s) until a whole response with a body has arrived. */
    async response (): Promise<{ status: number, body: string }> {
      for (let i = 0; i < 200 && !/\r\n\r\n[\s\S]*\}/.test(received); i++) await sleep(50)
      return { status: Number(received.split(' ')[1]), body: received.slice(received.indexOf('\r\n\r\n') + 4) }
    }
  }
}

/** Tries new connections every 50 ms (at most 100 times) until one is refused. */
async function refusesConnections (port: number): Promise<boolean> {
  for (let i = 0; i < 100; i++) {
    const socket: Socket = connect(port, '127.0.0.1')
    const outcome = await new Promise<string>((resolve) => {
      socket.once('connect', () => resolve('connected'))
      socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'))
    })
    socket.destroy()
    if (outcome === 'ECONNREFUSED') return true
    await sleep(50)
  }
  return false
}

const loginRequest = (body: string) =>
  `POST /api/v1/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n`

async function signUp (port: number, email: string) {
  const res = await fetch(`http://127.0.0.1:${port}/api/v1/auth/signup`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email, password: GOOD_PASSWORD }) })
  return res.status
}

if (!hasRedisServer && process.env.CI === 'true') {
  t.fail('redis-server is not installed: CI must test shutdown with a real Redis')
}

t.test('SIGTERM: stops accepting, finishes the request in flight, closes idle connections, the database and Redis, exits 0', async (t) => {
  const redisPort = await freePort()
  const redis = hasRedisServer ? await startRedis(t, redisPort) : null
  const dir = tempDir(t)
  const server = await startServer(t, { DATABASE_URL: `sqlite:${join(dir, 'auth.db')}`, ...(redis && { REDIS_URL: `redis://127.0.0.1:${redisPort}` }) })
  const email = uniqueEmail('shutdown')
  t.equal(await signUp(server.port, email), 201, 'an account to sign in with')
  t.ok(existsSync(join(dir, 'auth.db-wal')), 'SQLite is in WAL mode, with a write-ahead log while open')

  const idle = await rawConnection(server.port)
  idle.socket.write('GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
  t.equal((await idle.response()).status, 200, 'a keep-alive client, now idle')

  const inFlight = await rawConnection(server.port)
  const body = JSON.stringify({ email, password: GOOD_PASSWORD })
  inFlight.socket.write(loginRequest(body) + body.slice(0, 10)) // headers and part of the body: the request has begun
  await sleep(200)

  server.child.kill('SIGTERM')
  t.ok(await refusesConnections(server.port), 'new connections are refused')
  t.ok(await Promise.race([idle.closed, sleep(5000, false)]), 'the idle keep-alive connection is closed by the server')
  t.equal(inFlight.received(), '', 'the request in flight is not answered early')

  inFlight.socket.write(body.slice(10))
  const answer = await inFlight.response()
  t.equal(answer.status, 200, 'the request in flight is answered in full')
  t.match(JSON.parse(answer.body), { token_type: 'Bearer', access_token: String }, 'with its tokens')
  t.match(inFlight.received(), /\r\nconnection: close\r\n/i, 'and tells its client to close the connection, which would otherwise hold the shutdown')
  t.ok(await Promise.race([inFlight.closed, sleep(5000, false)]), 'which closes')

  t.equal(await server.exited, 0, 'the process exits 0')
  const messages = server.logs.map((l) => l.msg)
  t.match(server.logs.find((l) => l.msg === 'closing'), { signal: 'SIGTERM' }, 'logs the signal')
  t.ok(messages.indexOf('closed') > messages.indexOf('closing'), 'and that it closed')
  t.ok(server.logs.some((l) => l.msg === 'request' && l.route === '/api/v1/auth/login' && l.status === 200), 'the login has its log line')
  t.notOk(existsSync(join(dir, 'auth.db-wal')), 'the database was closed cleanly (its write-ahead log folded in and removed)')
  if (redis) {
    const probe = new Redis(redisPort, '127.0.0.1')
    t.teardown(() => probe.disconnect())
    const stats = await probe.info('commandstats')
    const quits = Number(/cmdstat_quit:calls=(\d+)/.exec(stats)?.[1] ?? 0)
    t.ok(quits >= 1, `the Redis connections were closed with QUIT (${quits})`)
  }
})

t.test('SIGTERM with a request that never completes: exits 1 after SHUTDOWN_TIMEOUT_SECONDS, saying why', async (t) => {
  const server = await startServer(t, { DATABASE_URL: `sqlite:${join(tempDir(t), 'auth.db')}`, SHUTDOWN_TIMEOUT_SECONDS: '2' })
  const stuck = await rawConnection(server.port)
  stuck.socket.write(loginRequest('{"email":"a@example.com","password":"never finished"}') + '{"email":')
  await sleep(200)
  const started = performance.now()
  server.child.kill('SIGTERM')
  t.equal(await server.exited, 1, 'exit code 1')
  const waited = performance.now() - started
  t.ok(waited >= 1900 && waited < 10_000, `after the 2 s timeout (${waited.toFixed(0)} ms)`)
  t.match(server.logs.find((l) => l.level === 50), { msg: 'in-flight requests outlived the shutdown timeout; exiting', delay_ms: 2000 }, 'the reason is logged')
})
