import { spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, request, type IncomingHttpHeaders } from 'node:http'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import type { FastifyReply } from 'fastify'
import t, { type Test } from 'tap'
import { build, claimsOf, freePort, GOOD_PASSWORD, listen, movableClock, uniqueEmail, unless } from '../helper.js'

/**
 * deploy/gateway/nginx.conf run by a real nginx (Debian's package) between a
 * client and two upstreams on loopback: the service, and a stub application
 * that echoes the request it got. What the application sees is what the
 * snippet promises: identity headers from the service's answer only, never
 * from the client.
 */

const TEMPLATE = join(import.meta.dirname, '..', '..', 'deploy', 'gateway', 'nginx.conf')
const NGINX = '/usr/sbin/nginx'
/** The service's only ALLOWED_HOSTS entry, and the template's PUBLIC_HOST. */
const PUBLIC_HOST = 'api.example.test'
const ORIGIN = 'https://app.example.test'
const ACCESS_TOKEN_TTL_SECONDS = 900

/** Why nginx cannot run here, or null. */
const nginxMissing = ((): string | null => {
  if (!existsSync(NGINX)) return `nginx is not installed (${NGINX}; Debian: apt-get install nginx)`
  const built = spawnSync(NGINX, ['-V'], { encoding: 'utf8' })
  return built.stderr.includes('--with-http_auth_request_module') ? null : `${NGINX} has no auth_request module`
})()

interface Answer { status: number, headers: IncomingHttpHeaders, body: string }

/**
 * One HTTP/1.1 request on a connection of its own (node:http, not fetch: the
 * Host header and repeated headers are sent as given).
 */
function send (port: number, opts: { method?: string, path: string, headers?: Record<string, string | string[]>, body?: string }): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method: opts.method ?? 'GET', path: opts.path, headers: opts.headers, agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk) => { body += chunk })
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }))
    })
    req.setTimeout(10_000, () => req.destroy(new Error(`${opts.method ?? 'GET'} ${opts.path} on ${port}: no answer in 10 s`)))
    req.on('error', reject)
    req.end(opts.body)
  })
}

interface Seen { method: string, url: string, headers: IncomingHttpHeaders, body: string }

/** The stub application: answers 200 with the request it got as JSON, and keeps it. */
async function startApplication (t: Test) {
  const seen: Seen[] = []
  const server = createServer((req, res) => {
    let body = ''
    req.setEncoding('utf8')
    req.on('data', (chunk) => { body += chunk })
    req.on('end', () => {
      const got: Seen = { method: req.method!, url: req.url!, headers: req.headers, body }
      seen.push(got)
      res.writeHead(200, { 'content-type': 'application/json', 'x-stub': 'application' })
      res.end(JSON.stringify(got))
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => {
    server.closeAllConnections() // nginx keeps idle connections to its upstreams
    server.close()
  })
  return { port: (server.address() as { port: number }).port, seen }
}

/** Whether something accepts connections on the loopback port. */
const accepts = (port: number) => new Promise<boolean>((resolve) => {
  const socket = connect(port, '127.0.0.1')
  socket.once('connect', () => { socket.destroy(); resolve(true) })
  socket.once('error', () => resolve(false))
})

/**
 * nginx in the foreground, one process, everything (pid, logs, temporary
 * files) in a fresh folder: the http {} block only sets those paths and
 * includes the template with its placeholders filled. Stopped when the test ends.
 */
async function startNginx (t: Test, vars: { AUTH_SERVICE: string, APP_UPSTREAM: string, PUBLIC_HOST: string }) {
  const dir = mkdtempSync(join(tmpdir(), 'auth-nginx-'))
  const port = await freePort()
  let gateway = readFileSync(TEMPLATE, 'utf8')
  for (const [name, value] of Object.entries({ GATEWAY_LISTEN: `127.0.0.1:${port}`, ...vars })) gateway = gateway.replaceAll(`\${${name}}`, value)
  const unfilled = /\$\{[A-Za-z_]+\}/.exec(gateway)
  if (unfilled) throw new Error(`deploy/gateway/nginx.conf has a placeholder the test does not fill: ${unfilled[0]}`)
  writeFileSync(join(dir, 'gateway.conf'), gateway)
  writeFileSync(join(dir, 'nginx.conf'), [
    'daemon off;',
    'master_process off;',
    'worker_processes 1;',
    `pid ${dir}/nginx.pid;`,
    `error_log ${dir}/error.log info;`,
    'events { worker_connections 64; }',
    'http {',
    `  access_log ${dir}/access.log;`,
    ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((kind) => `  ${kind}_temp_path ${dir}/${kind};`),
    `  include ${dir}/gateway.conf;`,
    '}',
    ''
  ].join('\n'))
  // -e: the error log before the configuration is read (else /var/log/nginx/error.log).
  const nginx = spawn(NGINX, ['-p', `${dir}/`, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'error.log')], { stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  nginx.stdout!.on('data', (chunk) => { output += chunk })
  nginx.stderr!.on('data', (chunk) => { output += chunk })
  nginx.on('error', () => {}) // reported through exitCode
  const exited = once(nginx, 'exit')
  const running = () => nginx.exitCode === null && nginx.signalCode === null
  const log = () => { try { return `${output}${readFileSync(join(dir, 'error.log'), 'utf8').slice(-20_000)}` } catch { return output } }
  t.teardown(async () => {
    if (running()) {
      nginx.kill('SIGTERM')
      await Promise.race([exited, sleep(5000)])
      if (running()) nginx.kill('SIGKILL')
    }
    rmSync(dir, { recursive: true, force: true })
  })
  for (let i = 0; !(await accepts(port)); i++) {
    if (!running()) throw new Error(`nginx exited (${nginx.exitCode ?? nginx.signalCode}):\n${log()}`)
    if (i === 100) throw new Error(`nginx does not accept connections on ${port} after 10 s:\n${log()}`)
    await sleep(100)
  }
  return { port, log }
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` })
const json = (answer: Answer) => JSON.parse(answer.body) as Record<string, any>

unless(nginxMissing, () => {
  t.test('nginx with deploy/gateway/nginx.conf in front of the service and an application', async (t) => {
    const clock = movableClock()
    // What reached the service, through nginx or not: the check's subrequests among them.
    const serviceSaw: Array<{ method: string, url: string, headers: IncomingHttpHeaders }> = []
    // A change to the service's answers to the checks, for the cases it cannot produce by itself.
    let alterCheck: ((reply: FastifyReply) => void) | null = null
    const service = await build(t, {
      env: { ALLOWED_HOSTS: PUBLIC_HOST, CORS_ORIGINS: ORIGIN },
      now: clock.now,
      before: (fastify) => {
        fastify.addHook('onRequest', (request, _reply, done) => {
          serviceSaw.push({ method: request.method, url: request.url, headers: request.headers })
          done()
        })
        fastify.addHook('onSend', (request, reply, payload, done) => {
          if (alterCheck && request.url === '/api/v1/auth/verify') alterCheck(reply)
          done(null, payload)
        })
      }
    })
    const servicePort = Number(new URL(await listen(service)).port)
    const application = await startApplication(t)
    const nginx = await startNginx(t, { AUTH_SERVICE: `127.0.0.1:${servicePort}`, APP_UPSTREAM: `127.0.0.1:${application.port}`, PUBLIC_HOST })

    const viaNginx = (opts: Parameters<typeof send>[1]) => send(nginx.port, { ...opts, headers: { host: PUBLIC_HOST, ...opts.headers } })
    /** The service's own answer to a check of these headers, asked directly. */
    const verifyDirectly = (headers: Record<string, string> = {}) => send(servicePort, { path: '/api/v1/auth/verify', headers: { host: PUBLIC_HOST, ...headers } })
    const lastCheck = () => serviceSaw.findLast((r) => r.url === '/api/v1/auth/verify')!

    /** A new account, signed up through nginx; its access token and claims. */
    async function signUp () {
      const res = await viaNginx({ method: 'POST', path: '/api/v1/auth/signup', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email: uniqueEmail('gateway'), password: GOOD_PASSWORD }) })
      if (res.status !== 201) throw new Error(`signup through nginx: ${res.status} ${res.body}\n${nginx.log()}`)
      const token = json(res).access_token as string
      return { token, claims: claimsOf(token) }
    }

    /** Asserts nginx's refusal: 401, the service's WWW-Authenticate for the same headers, and the application not reached. */
    async function expectRefusedLikeTheService (t: Test, headers: Record<string, string>, what: string) {
      const direct = await verifyDirectly(headers)
      t.equal(direct.status, 401, `${what}: the service itself answers 401`)
      t.ok(direct.headers['www-authenticate'], `${what}: the service sends WWW-Authenticate`)
      const before = application.seen.length
      const res = await viaNginx({ path: '/orders/1', headers })
      t.equal(res.status, 401, `${what}: 401 through nginx`)
      // Compared, not hard-coded: whatever the service says (Bearer, or Bearer error="invalid_token", …)
      // reaches the client verbatim, once (a second copy would read "Bearer, Bearer" here).
      t.equal(res.headers['www-authenticate'], direct.headers['www-authenticate'], `${what}: WWW-Authenticate is the service's, verbatim and once`)
      t.match(res.headers['content-type'], /^application\/problem\+json/, `${what}: problem+json`)
      t.match(json(res), { status: 401, request_id: res.headers['x-request-id'] }, `${what}: a problem with the request id`)
      t.equal(res.headers['x-request-id'], lastCheck().headers['x-request-id'], `${what}: the request id the service had for the check`)
      t.notOk(res.headers['x-stub'], `${what}: not the application's answer`)
      t.equal(application.seen.length, before, `${what}: the application was not reached`)
    }

    t.test('(a) no token: 401 with the service\'s WWW-Authenticate; the application is not reached', async (t) => {
      await expectRefusedLikeTheService(t, {}, 'no Authorization')
      await expectRefusedLikeTheService(t, { authorization: 'Bearer' }, 'an empty bearer')
    })

    t.test('(a) a WWW-Authenticate with parameters (RFC 6750) passes verbatim too', async (t) => {
      const challenge = 'Bearer realm="api", error="invalid_token", error_description="The access token expired, refresh it"'
      alterCheck = (reply) => { if (reply.statusCode === 401) reply.header('www-authenticate', challenge) }
      t.teardown(() => { alterCheck = null })
      t.equal((await verifyDirectly(bearer('not.a.token'))).headers['www-authenticate'], challenge, 'the service sends it (altered here)')
      await expectRefusedLikeTheService(t, bearer('not.a.token'), 'with parameters')
    })

    t.test('(b) a valid token: the application gets the identity of the token, the check is a bare GET', async (t) => {
      const { token, claims } = await signUp()
      const res = await viaNginx({ path: '/orders/1?page=2', headers: bearer(token) })
      t.equal(res.status, 200, 'passed to the application')
      t.equal(res.headers['x-stub'], 'application', 'the application answered')
      const got = json(res)
      t.equal(got.url, '/orders/1?page=2', 'the path and query unchanged')
      t.equal(got.headers['x-user-id'], claims.sub, 'X-User-Id is the token\'s sub')
      t.equal(got.headers['x-user-roles'], claims.roles.join(','), 'X-User-Roles are the token\'s roles')
      t.equal(got.headers['x-session-id'], claims.sid, 'X-Session-Id is the token\'s sid')
      t.equal(got.headers.authorization, `Bearer ${token}`, 'the application gets the bearer too')

      const body = JSON.stringify({ item: 'tea', quantity: 2 })
      const posted = await viaNginx({ method: 'POST', path: '/orders', headers: { ...bearer(token), 'content-type': 'application/json', cookie: 'theme=dark' }, body })
      t.equal(posted.status, 200, 'a POST passes too')
      t.match(json(posted), { method: 'POST', body, headers: { 'x-user-id': claims.sub, 'x-session-id': claims.sid } }, 'the application gets the method, the body and the identity')
      const check = lastCheck()
      t.equal(check.method, 'GET', 'the check is a GET whatever the client\'s method')
      t.equal(check.headers.authorization, `Bearer ${token}`, 'the check carries the client\'s Authorization')
      t.notOk(check.headers['content-length'] ?? check.headers['transfer-encoding'], 'the check has no body')
      t.notOk(check.headers.cookie ?? check.headers['content-type'], 'nor the client\'s other headers')
      t.equal(check.headers['x-request-id'], json(posted).headers['x-request-id'], 'the check and the application share nginx\'s request id')
    })

    t.test('(c) client-sent identity headers never reach the application', async (t) => {
      const { token, claims } = await signUp()
      const forged = { 'x-user-id': 'admin', 'x-user-roles': ['admin', 'root'], 'x-session-id': 'forged' }
      const res = await viaNginx({ path: '/orders/1', headers: { ...bearer(token), ...forged } })
      t.equal(res.status, 200)
      t.match(json(res).headers, { 'x-user-id': claims.sub, 'x-user-roles': claims.roles.join(','), 'x-session-id': claims.sid }, 'the token\'s identity, not the forged one (the repeated X-User-Roles included)')

      const before = application.seen.length
      const refused = await viaNginx({ path: '/orders/1', headers: forged })
      t.equal(refused.status, 401, 'forged headers without a token: 401')
      t.equal(application.seen.length, before, 'and the application is not reached')

      // An answer of the service without an identity header (it always sends the three today):
      // the client's header of that name still does not pass.
      alterCheck = (reply) => { reply.removeHeader('x-session-id') }
      t.teardown(() => { alterCheck = null })
      const partial = await viaNginx({ path: '/orders/1', headers: { ...bearer(token), ...forged } })
      alterCheck = null
      t.equal(partial.status, 200)
      t.equal(json(partial).headers['x-user-id'], claims.sub, 'the identity the check sent')
      t.notOk(json(partial).headers['x-session-id'], 'no X-Session-Id when the check sent none, not the client\'s')

      const checks = serviceSaw.filter((r) => r.url === '/api/v1/auth/verify').slice(-2)
      t.ok(checks.every((r) => !r.headers['x-user-id'] && !r.headers['x-user-roles'] && !r.headers['x-session-id']), 'the check does not see them either')
      const health = await viaNginx({ path: '/api/health', headers: forged })
      t.equal(health.status, 200, 'the service\'s own routes pass through')
      t.notOk(serviceSaw.at(-1)!.headers['x-user-id'] ?? serviceSaw.at(-1)!.headers['x-user-roles'], 'without the forged headers')
    })

    t.test('(d) a CORS preflight passes without a token; other OPTIONS are checked', async (t) => {
      const preflight = { origin: ORIGIN, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type' }
      const res = await viaNginx({ method: 'OPTIONS', path: '/orders', headers: { ...preflight, 'x-user-id': 'admin' } })
      t.equal(res.status, 200, 'the preflight reaches the application')
      t.equal(res.headers['x-stub'], 'application', 'which answers it')
      const got = json(res)
      t.equal(got.method, 'OPTIONS')
      t.equal(got.headers.origin, ORIGIN, 'with its CORS headers')
      t.notOk(got.headers['x-user-id'] ?? got.headers['x-user-roles'] ?? got.headers['x-session-id'], 'and no identity header, the client\'s stripped')

      const plain = await viaNginx({ method: 'OPTIONS', path: '/orders', headers: { origin: ORIGIN } })
      t.equal(plain.status, 401, 'an OPTIONS that is not a preflight is checked like any request')

      const own = await viaNginx({ method: 'OPTIONS', path: '/api/v1/auth/login', headers: preflight })
      t.equal(own.status, 204, 'a preflight of the service\'s own API: the service\'s CORS answers')
      t.equal(own.headers['access-control-allow-origin'], ORIGIN, 'allowing the origin')
      t.match(own.headers['access-control-allow-headers'], /Authorization/i, 'and the Authorization header')
    })

    t.test('(e) the Host: the check always sends the one ALLOWED_HOSTS expects, the service\'s routes get the client\'s', async (t) => {
      const elsewhere = await send(servicePort, { path: '/api/health', headers: { host: `127.0.0.1:${servicePort}` } })
      t.equal(elsewhere.status, 400, 'the service refuses a Host not in ALLOWED_HOSTS (checked directly)')

      const { token, claims } = await signUp()
      // Host: 127.0.0.1:<port>, what a client that dials the address sends.
      const res = await send(nginx.port, { path: '/orders/1', headers: bearer(token) })
      t.equal(res.status, 200, 'a client sending another Host still passes the check')
      t.equal(json(res).headers['x-user-id'], claims.sub)
      t.equal(lastCheck().headers.host, PUBLIC_HOST, `the check was sent with Host: ${PUBLIC_HOST}`)
      t.equal(json(res).headers.host, '127.0.0.1', 'the application gets the client\'s Host (without the port: $host)')

      t.equal((await viaNginx({ path: '/.well-known/jwks.json' })).status, 200, 'the key set with the public Host')
      const wrong = await send(nginx.port, { path: '/api/health', headers: { host: 'other.example.test' } })
      t.equal(wrong.status, 400, 'the service\'s own routes get the client\'s Host, so its ALLOWED_HOSTS check still applies')
      t.equal(json(wrong).code, 'INVALID_HOST')
    })

    t.test('(f) an expired, a garbage, a revoked token: 401 with the service\'s WWW-Authenticate', async (t) => {
      t.teardown(() => clock.goTo(0))
      const { token } = await signUp()
      await expectRefusedLikeTheService(t, bearer('not.a.token'), 'garbage')
      await expectRefusedLikeTheService(t, { authorization: 'Basic dXNlcjpwYXNz' }, 'another scheme')
      clock.goTo(ACCESS_TOKEN_TTL_SECONDS + 1)
      t.equal(json(await verifyDirectly(bearer(token))).code, 'ACCESS_TOKEN_EXPIRED', 'the service says expired')
      await expectRefusedLikeTheService(t, bearer(token), 'expired')
      clock.goTo(0)

      const live = await signUp()
      t.equal((await viaNginx({ path: '/orders/1', headers: bearer(live.token) })).status, 200, 'alive')
      const logout = await viaNginx({ method: 'POST', path: '/api/v1/auth/logout', headers: bearer(live.token) })
      t.equal(logout.status, 204, 'signed out through nginx')
      await expectRefusedLikeTheService(t, bearer(live.token), 'revoked')
    })
  })
})
