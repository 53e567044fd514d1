/**
 * How long known and unknown addresses take to answer, for the three
 * endpoints that name an address: login (known address + wrong password vs
 * unknown address), password/forgot and email/resend.
 *
 *   npx tsx bench/enumeration.ts
 *
 * Starts the service in this process on 127.0.0.1 (port 0) over a SQLite file
 * in a temporary directory, sends at least 200 requests per side and
 * endpoint, interleaved (known, unknown, known, …), one at a time over real
 * HTTP with the global fetch, and prints a Markdown table per endpoint. The
 * figures also go to bench/results/enumeration.json. It stops after 60
 * seconds whatever happens.
 *
 * Two choices keep the figures about the response, as a client elsewhere
 * would see it:
 * - The client runs in a worker thread, with its own event loop. On the
 *   service's thread, background work (the lookups of forgot and resend; the
 *   SQLite driver is synchronous) can run after a response is written but
 *   before a same-thread client gets to read it, which would bill that work
 *   to the response.
 * - Between requests, outside the timed span, the client waits for the
 *   service's background work to finish, so every request meets an idle
 *   service, and the per-account login throttle is told to forget both
 *   addresses, so every login does the full work rather than a 429.
 * Each request is timed with performance.now() from just before fetch() to
 * the end of its body (the "client" figures). The service also notes its own
 * time for each, from the request's arrival to the response handed to the
 * socket (Fastify's reply.elapsedTime in an onResponse hook: the "server"
 * figures), which no other work on the machine can blur. On a busy machine
 * with few cores, background work that starts once a response is sent still
 * competes for the CPU with the client reading it: compare both.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { once } from 'node:events'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads'
import { throttleKey } from '../services/login-throttle.js'
import { PASSWORD } from './lib/scenarios.js'
import { median } from './lib/stats.js'

const BUDGET_MS = 60_000
/** Measuring stops here, leaving time to print, write and close before the hard stop. */
const MEASURE_MS = 55_000
const PER_SIDE = 200
const WARMUP_PER_SIDE = 10
const HOST = '127.0.0.1'
const WRONG_PASSWORD = 'not the right password at all'

interface Endpoint {
  name: string
  path: string
  what: string
  status: number
  known: Record<string, string>
  unknown: Record<string, string>
}

/** What the client thread sends back for one endpoint. */
interface Measured {
  name: string
  known: number[]
  unknown: number[]
  unexpected: number
  stoppedEarly: boolean
  error?: string
}

type ToClient = { type: 'drained' }
type FromClient = { type: 'drain' } | { type: 'done', measured: Measured[] }

/** The client, in a worker thread: one request at a time, each timed, the service drained between them. */
async function client () {
  const { base, endpoints, stopAt } = workerData as { base: string, endpoints: Endpoint[], stopAt: number }
  const port = parentPort!
  const measured: Measured[] = []
  for (const endpoint of endpoints) {
    const m: Measured = { name: endpoint.name, known: [], unknown: [], unexpected: 0, stoppedEarly: false }
    measured.push(m)
    const url = new URL(endpoint.path, base)
    if (url.hostname !== HOST) throw new Error(`refusing to target ${url.hostname}: only ${HOST}`)
    for (let i = 0; i < 2 * (WARMUP_PER_SIDE + PER_SIDE); i++) {
      const left = stopAt - Date.now()
      if (left <= 0) { m.stoppedEarly = true; break }
      const side = i % 2 === 0 ? 'known' : 'unknown'
      const body = JSON.stringify(endpoint[side])
      let status: number
      let took: number
      try {
        const t0 = performance.now()
        const headers = { 'content-type': 'application/json', 'x-bench': i < 2 * WARMUP_PER_SIDE ? 'warmup' : side }
        const res = await fetch(url, { method: 'POST', headers, body, signal: AbortSignal.timeout(Math.ceil(left)) })
        await res.arrayBuffer()
        took = performance.now() - t0
        status = res.status
      } catch (err) {
        m.stoppedEarly = true
        m.error = (err as Error).message
        break
      }
      if (status !== endpoint.status) m.unexpected++
      if (i >= 2 * WARMUP_PER_SIDE) m[side].push(took)
      // Outside the timed span: the service finishes this request's background work.
      port.postMessage({ type: 'drain' } satisfies FromClient)
      await once(port, 'message')
    }
    if (m.stoppedEarly) break
  }
  port.postMessage({ type: 'done', measured } satisfies FromClient)
}

interface Figures { n: number, median_ms: number, p95_ms: number, mean_ms: number, min_ms: number, max_ms: number }

function figures (samples: number[]): Figures {
  const sorted = [...samples].sort((a, b) => a - b)
  const n = sorted.length
  return {
    n,
    median_ms: median(sorted),
    p95_ms: n === 0 ? NaN : sorted[Math.min(n - 1, Math.ceil(0.95 * n) - 1)], // nearest rank
    mean_ms: n === 0 ? NaN : sorted.reduce((s, x) => s + x, 0) / n,
    min_ms: sorted[0] ?? NaN,
    max_ms: sorted.at(-1) ?? NaN
  }
}

const ms = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : '-')
const signed = (x: number, digits: number) => (Number.isFinite(x) ? `${x >= 0 ? '+' : ''}${x.toFixed(digits)}` : '-')

async function main () {
  const started = performance.now()
  const elapsed = () => performance.now() - started
  setTimeout(() => {
    console.error(`enumeration bench: ${BUDGET_MS / 1000} s passed, stopping`)
    process.exit(2)
  }, BUDGET_MS).unref()

  const { default: app, serverOptions } = await import('../app.js')
  const { loadConfig } = await import('../plugins/external/config.js')
  const { default: Fastify } = await import('fastify')

  const dir = mkdtempSync(join(tmpdir(), 'auth-bench-'))
  const config = loadConfig({
    NODE_ENV: 'development',
    DATABASE_URL: `sqlite:${join(dir, 'bench.db')}`,
    LOG_LEVEL: 'silent',
    REQUIRE_EMAIL_VERIFICATION: 'false',
    // Per-client rate limits would refuse a benchmark's hundreds of requests from one address.
    RATE_LIMIT_ENABLED: 'false',
    HOST,
    PORT: '0'
  })
  const server = Fastify(serverOptions(config))
  await server.register(app, { config })
  // The service's own time for each measured request, by path and side.
  const serverTimes = new Map<string, number[]>()
  server.addHook('onResponse', async (request, reply) => {
    const side = request.headers['x-bench']
    if (side !== 'known' && side !== 'unknown') return
    const key = `${request.routeOptions.url} ${side}`
    serverTimes.set(key, [...(serverTimes.get(key) ?? []), reply.elapsedTime])
  })
  await server.listen({ host: HOST, port: 0 })
  const base = new URL(`http://${HOST}:${(server.server.address() as { port: number }).port}`)
  if (base.hostname !== HOST) throw new Error(`refusing to target ${base.hostname}: only ${HOST}`)

  async function signup (email: string): Promise<string> {
    const res = await fetch(new URL('/api/v1/auth/signup', base), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email, password: PASSWORD }) })
    const body = await res.json() as { user?: { id: string } }
    if (res.status !== 201 || !body.user) throw new Error(`signup of ${email} failed: ${res.status}`)
    return body.user.id
  }

  const known = 'known@bench.example.com'
  const unverified = 'unverified@bench.example.com'
  const unknown = 'nobody@bench.example.com'
  const knownId = await signup(known)
  await signup(unverified)
  // The known account is an ordinary, verified one; the other stays unverified for resend.
  await server.db.updateTable('users').set({ email_verified: 1 }).where('id', '=', knownId).execute()
  await server.background.idle()

  const endpoints: Endpoint[] = [
    { name: 'login', path: '/api/v1/auth/login', what: 'known address + wrong password vs unknown address', status: 401, known: { email: known, password: WRONG_PASSWORD }, unknown: { email: unknown, password: WRONG_PASSWORD } },
    { name: 'forgot', path: '/api/v1/auth/password/forgot', what: 'known (verified) vs unknown address', status: 202, known: { email: known }, unknown: { email: unknown } },
    { name: 'resend', path: '/api/v1/auth/email/resend', what: 'known unverified vs unknown address', status: 202, known: { email: unverified }, unknown: { email: unknown } }
  ]

  /**
   * Between two requests: the background work finishes, and the per-account
   * login throttle forgets both addresses' failures (it would otherwise
   * answer 429, alike for both, after five), so every login is a full one.
   */
  async function drain () {
    await server.background.idle()
    await Promise.all([throttleKey({ id: knownId }, ''), throttleKey(undefined, unknown)].map((key) => server.loginThrottle.forget(key)))
  }

  // The worker loads this very file through tsx, and runs client().
  const bootstrap = `import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then((tsx) => { tsx.register(); return import(${JSON.stringify(import.meta.url)}) })`
  const worker = new Worker(bootstrap, { eval: true, workerData: { base: base.href, endpoints, stopAt: Date.now() + Math.floor(MEASURE_MS - elapsed()) } })
  const measured = await new Promise<Measured[]>((resolve, reject) => {
    worker.on('message', (message: FromClient) => {
      if (message.type === 'done') resolve(message.measured)
      else drain().then(() => worker.postMessage({ type: 'drained' } satisfies ToClient), reject)
    })
    worker.on('error', reject)
    worker.on('exit', (code) => reject(new Error(`the client thread exited (${code}) before it was done`)))
  })
  await worker.terminate()

  const results = measured.map((m) => {
    const endpoint = endpoints.find((e) => e.name === m.name)!
    const k = figures(m.known)
    const u = figures(m.unknown)
    const diff = k.median_ms - u.median_ms
    const sk = figures(serverTimes.get(`${endpoint.path} known`) ?? [])
    const su = figures(serverTimes.get(`${endpoint.path} unknown`) ?? [])
    const serverDiff = sk.median_ms - su.median_ms
    return {
      endpoint,
      m,
      known: k,
      unknown: u,
      diff_ms: diff,
      diff_pct: (diff / u.median_ms) * 100,
      server: { known: sk, unknown: su, diff_ms: serverDiff, diff_pct: (serverDiff / su.median_ms) * 100 }
    }
  })
  const complete = results.length === endpoints.length && results.every((r) => !r.m.stoppedEarly)

  const lines: string[] = []
  for (const r of results) {
    lines.push(`### ${r.endpoint.name}: POST ${r.endpoint.path} (${r.endpoint.what})`, '')
    const { server: sv } = r
    lines.push('| address | n | median ms | p95 ms | server median ms | server p95 ms |', '|---|---:|---:|---:|---:|---:|')
    lines.push(`| known | ${r.known.n} | ${ms(r.known.median_ms)} | ${ms(r.known.p95_ms)} | ${ms(sv.known.median_ms)} | ${ms(sv.known.p95_ms)} |`)
    lines.push(`| unknown | ${r.unknown.n} | ${ms(r.unknown.median_ms)} | ${ms(r.unknown.p95_ms)} | ${ms(sv.unknown.median_ms)} | ${ms(sv.unknown.p95_ms)} |`)
    lines.push(`| difference of medians (known − unknown) | | ${signed(r.diff_ms, 2)} ms (${signed(r.diff_pct, 1)} %) | | ${signed(sv.diff_ms, 2)} ms (${signed(sv.diff_pct, 1)} %) | |`, '')
    if (r.m.unexpected > 0) lines.push(`**${r.m.unexpected} answers had another status than ${r.endpoint.status}.**`, '')
    if (r.m.stoppedEarly) lines.push(`**Stopped early (${r.m.error ?? 'time budget'}): fewer than ${PER_SIDE} tries per side.**`, '')
  }
  lines.push(`Node ${process.version}, ${process.platform}/${process.arch}; SQLite file database; one request at a time over HTTP on ${HOST}, ` +
    `client in a worker thread; ${WARMUP_PER_SIDE} warm-up requests per side not counted; ${(elapsed() / 1000).toFixed(1)} s in all.`)
  console.log(lines.join('\n'))

  const outDir = join(import.meta.dirname, 'results')
  mkdirSync(outDir, { recursive: true })
  writeFileSync(join(outDir, 'enumeration.json'), JSON.stringify({
    date: new Date().toISOString(),
    node: process.version,
    platform: `${process.platform}/${process.arch}`,
    database: 'sqlite (file)',
    per_side: PER_SIDE,
    warmup_per_side: WARMUP_PER_SIDE,
    complete,
    endpoints: Object.fromEntries(results.map((r) => [r.endpoint.name, {
      path: r.endpoint.path,
      compared: r.endpoint.what,
      expected_status: r.endpoint.status,
      unexpected_statuses: r.m.unexpected,
      known: r.known,
      unknown: r.unknown,
      median_difference_ms: r.diff_ms,
      median_difference_pct: r.diff_pct,
      server: {
        known: r.server.known,
        unknown: r.server.unknown,
        median_difference_ms: r.server.diff_ms,
        median_difference_pct: r.server.diff_pct
      }
    }]))
  }, null, 2) + '\n')

  await server.close()
  rmSync(dir, { recursive: true, force: true })
  if (!complete || results.some((r) => r.m.unexpected > 0)) process.exitCode = 1
}

if (isMainThread) await main()
else await client()
