import { randomUUID } from 'node:crypto'
import { Secret, TOTP } from 'otpauth'
import type { FastifyInstance } from 'fastify'
import t from 'tap'
import { findUserById } from '../../../../../db/queries/users.js'
import { PERMISSIONS, type Permission } from '../../../../../schemas/permissions.js'
import { bearer, build, databases, expectProblem, GOOD_PASSWORD, json, signup, uniqueEmail } from '../../../../helper.js'

const ADMIN = '/api/v1/admin'

/**
 * Many sign-ups from one address, under a test machine's load: the per-address
 * rate limits and the event-loop load shedding are not what these tests are about.
 */
const QUIET = { RATE_LIMIT_ENABLED: 'false', MAX_EVENT_LOOP_DELAY_MS: '0' }
type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE'

/** What a route needs to succeed: fresh targets, so a destructive route can succeed once per caller. */
interface Context {
  adminId: string
  /** A user made for this request. */
  victim: () => Promise<string>
  /** A user made for this request, with a confirmed second factor. */
  enrolled: () => Promise<string>
  /** A role made for this request. */
  role: () => Promise<string>
  /** A role name nobody has used. */
  roleName: () => string
}

interface Route {
  method: Method
  /** The path as the OpenAPI document names it, under /api/v1/admin. */
  path: string
  /** The permission the route asks for. */
  permission: Permission
  /** The status it answers someone allowed. */
  ok: number
  /** A request (URL under /api/v1/admin, body) that succeeds for someone allowed. */
  request: (ctx: Context) => Promise<{ url: string, payload?: Record<string, unknown> }>
  /** Requests whose path, query or body fails validation: 400 for someone allowed, 401/403 for anyone else. */
  bad: Array<{ url: string, payload?: unknown }>
}

/** Every admin route: adding a route is one line here (the first test fails until it is). */
const ROUTES: Route[] = [
  { method: 'GET', path: '/users', permission: 'users:read', ok: 200, request: async () => ({ url: '/users?limit=1' }), bad: [{ url: '/users?limit=0' }, { url: '/users?unknown=1' }] },
  { method: 'GET', path: '/users/{id}', permission: 'users:read', ok: 200, request: async (c) => ({ url: `/users/${c.adminId}` }), bad: [{ url: '/users/not-a-uuid' }] },
  {
    method: 'PATCH',
    path: '/users/{id}',
    permission: 'users:write',
    ok: 200,
    request: async (c) => ({ url: `/users/${await c.victim()}`, payload: { email_verified: true } }),
    bad: [{ url: '/users/not-a-uuid', payload: { roles: ['admin'] } }, { url: `/users/${randomUUID()}`, payload: { roles: 'admin' } }, { url: `/users/${randomUUID()}`, payload: {} }]
  },
  { method: 'DELETE', path: '/users/{id}', permission: 'users:write', ok: 204, request: async (c) => ({ url: `/users/${await c.victim()}` }), bad: [{ url: '/users/not-a-uuid' }] },
  { method: 'DELETE', path: '/users/{id}/sessions', permission: 'sessions:revoke', ok: 204, request: async (c) => ({ url: `/users/${await c.victim()}/sessions` }), bad: [{ url: '/users/not-a-uuid/sessions' }] },
  { method: 'DELETE', path: '/users/{id}/mfa', permission: 'users:write', ok: 204, request: async (c) => ({ url: `/users/${await c.enrolled()}/mfa` }), bad: [{ url: '/users/not-a-uuid/mfa' }] },
  { method: 'GET', path: '/roles', permission: 'users:read', ok: 200, request: async () => ({ url: '/roles' }), bad: [] },
  {
    method: 'POST',
    path: '/roles',
    permission: 'roles:write',
    ok: 201,
    request: async (c) => ({ url: '/roles', payload: { name: c.roleName(), permissions: ['users:read'] } }),
    bad: [{ url: '/roles', payload: { name: 'Bad Name', permissions: [] } }, { url: '/roles', payload: { name: 'fine-name', permissions: ['users:destroy'] } }, { url: '/roles', payload: ['admin'] }]
  },
  {
    method: 'PUT',
    path: '/roles/{name}',
    permission: 'roles:write',
    ok: 200,
    request: async (c) => ({ url: `/roles/${await c.role()}`, payload: { permissions: ['audit:read'] } }),
    bad: [{ url: '/roles/Bad%20Name', payload: { permissions: [] } }, { url: '/roles/user', payload: { permissions: 'users:write' } }, { url: '/roles/user', payload: {} }]
  },
  { method: 'DELETE', path: '/roles/{name}', permission: 'roles:write', ok: 204, request: async (c) => ({ url: `/roles/${await c.role()}` }), bad: [{ url: '/roles/Bad%20Name' }, { url: '/roles/x' }] },
  { method: 'POST', path: '/keys/rotate', permission: 'keys:rotate', ok: 200, request: async () => ({ url: '/keys/rotate' }), bad: [] },
  { method: 'GET', path: '/audit-events', permission: 'audit:read', ok: 200, request: async () => ({ url: '/audit-events?limit=1' }), bad: [{ url: '/audit-events?from=yesterday' }, { url: '/audit-events?user_id=nope' }] }
]

const label = (route: Route) => `${route.method} ${route.path}`

let roles = 0
const uniqueRoleName = () => `mx-${process.pid.toString(36)}-${Date.now().toString(36)}-${++roles}`

for (const db of databases) {
  t.test(db.name, async (t) => {
    const adminEmail = uniqueEmail('matrix-admin')
    const app = await build(t, { env: { DATABASE_URL: db.url, ...QUIET, ADMIN_EMAIL: adminEmail, ADMIN_PASSWORD: GOOD_PASSWORD } })

    const made: string[] = []
    // Runs before the app closes (teardowns run last-added first): PostgreSQL is shared, leave no roles behind.
    t.teardown(async () => {
      for (const name of made) await app.roles.remove(name).catch(() => {})
    })

    const login = async (email: string) => {
      const res = await app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email, password: GOOD_PASSWORD } })
      if (res.statusCode !== 200) throw new Error(`login failed: ${res.statusCode} ${res.body}`)
      return json(res)
    }
    const admin = await login(adminEmail)
    const adminHeaders = bearer(admin.access_token)

    const ctx: Context = {
      adminId: admin.user.id,
      victim: async () => (await signup(app, { email: uniqueEmail('matrix-victim') })).user.id,
      enrolled: async () => {
        const signed = await signup(app, { email: uniqueEmail('matrix-enrolled') })
        const { secret } = (await app.inject({ method: 'POST', url: '/api/v1/users/me/mfa/totp', headers: bearer(signed.access_token), payload: { password: GOOD_PASSWORD } })).json()
        await app.inject({ method: 'POST', url: '/api/v1/users/me/mfa/totp/confirm', headers: bearer(signed.access_token), payload: { code: new TOTP({ secret: Secret.fromBase32(secret) }).generate() } })
        return signed.user.id
      },
      role: async () => {
        const name = uniqueRoleName()
        await app.roles.create({ name, description: 'matrix target', permissions: ['users:read'] })
        made.push(name)
        return name
      },
      roleName: () => {
        const name = uniqueRoleName()
        made.push(name)
        return name
      }
    }

    async function call (app: FastifyInstance, route: Route, headers: Record<string, string>, method: Method | 'HEAD' = route.method) {
      const { url, payload } = await route.request(ctx)
      return app.inject({ method, url: ADMIN + url, headers, ...(payload && { payload }) })
    }

    const plain = await signup(app, { email: uniqueEmail('matrix-plain') })

    // A custom role granting users:read only, held by a user who signed in after receiving it.
    const readerRole = ctx.roleName()
    const created = await app.inject({ method: 'POST', url: `${ADMIN}/roles`, headers: adminHeaders, payload: { name: readerRole, permissions: ['users:read'] } })
    if (created.statusCode !== 201) throw new Error(`role not created: ${created.body}`)
    const readerEmail = uniqueEmail('matrix-reader')
    const reader = await signup(app, { email: readerEmail })
    const given = await app.inject({ method: 'PATCH', url: `${ADMIN}/users/${reader.user.id}`, headers: adminHeaders, payload: { roles: [readerRole] } })
    if (given.statusCode !== 200) throw new Error(`role not given: ${given.body}`)
    const readerToken = (await login(readerEmail)).access_token

    t.test('the table holds every admin route the service serves', async (t) => {
      const doc = json(await app.inject({ url: '/openapi.json' }))
      const served = Object.entries(doc.paths as Record<string, Record<string, unknown>>)
        .filter(([path]) => path.startsWith(`${ADMIN}/`) || path === ADMIN)
        // HEAD is its GET without the body: the GET's row covers it.
        .flatMap(([path, operations]) => Object.keys(operations).filter((method) => method !== 'head').map((method) => `${method.toUpperCase()} ${path.slice(ADMIN.length)}`))
        .sort()
      t.same(ROUTES.map(label).sort(), served, 'one row per admin route')
    })

    const badCall = (route: Route, bad: Route['bad'][number], headers: Record<string, string>) =>
      app.inject({ method: route.method, url: ADMIN + bad.url, headers, ...(bad.payload !== undefined && { payload: bad.payload as Record<string, unknown> }) })

    t.test('the bad inputs really are bad: an admin gets 400 for each', async (t) => {
      for (const route of ROUTES) {
        for (const bad of route.bad) expectProblem(t, await badCall(route, bad, adminHeaders), 400, ['VALIDATION_FAILED'])
      }
    })

    t.test('no token: 401 on every admin route, before its input is validated', async (t) => {
      for (const route of ROUTES) {
        t.test(label(route), async (t) => {
          expectProblem(t, await call(app, route, {}), 401, 'AUTHENTICATION_REQUIRED')
          expectProblem(t, await call(app, route, bearer('not.a.token')), 401, 'INVALID_ACCESS_TOKEN')
          for (const bad of route.bad) expectProblem(t, await badCall(route, bad, {}), 401, 'AUTHENTICATION_REQUIRED')
        })
      }
    })

    t.test('a plain user: 403 FORBIDDEN on every admin route, before its input is validated', async (t) => {
      t.same(plain.user.roles, ['user'], 'the caller has only the user role')
      for (const route of ROUTES) {
        t.test(label(route), async (t) => {
          expectProblem(t, await call(app, route, bearer(plain.access_token)), 403, 'FORBIDDEN')
          for (const bad of route.bad) expectProblem(t, await badCall(route, bad, bearer(plain.access_token)), 403, 'FORBIDDEN')
          if (route.method === 'GET') {
            const head = await call(app, route, bearer(plain.access_token), 'HEAD')
            t.equal(head.statusCode, 403, 'HEAD is refused too')
          }
        })
      }
    })

    t.test('each permission alone: 403 FORBIDDEN on the routes needing another, before their input is validated', async (t) => {
      for (const permission of PERMISSIONS) {
        // A token naming a role of that one permission: the guard reads the role, not the database.
        const role = ctx.roleName()
        await app.roles.create({ name: role, description: 'one permission', permissions: [permission] })
        const headers = bearer(await app.tokens.signAccessToken({ sub: randomUUID(), sid: randomUUID(), roles: ['user', role] }))
        for (const route of ROUTES.filter((r) => r.permission !== permission)) {
          for (const bad of route.bad) expectProblem(t, await badCall(route, bad, headers), 403, 'FORBIDDEN')
        }
        for (const route of ROUTES.filter((r) => r.permission === permission)) {
          for (const bad of route.bad) expectProblem(t, await badCall(route, bad, headers), 400, 'VALIDATION_FAILED')
        }
      }
    })

    t.test('a plain user changed nothing', async (t) => {
      const victim = await ctx.victim()
      const role = await ctx.role()
      const user = bearer(plain.access_token)
      t.equal((await app.inject({ method: 'DELETE', url: `${ADMIN}/users/${victim}`, headers: user })).statusCode, 403)
      t.equal((await app.inject({ method: 'PATCH', url: `${ADMIN}/users/${victim}`, headers: user, payload: { roles: ['admin'] } })).statusCode, 403)
      t.equal((await app.inject({ method: 'PATCH', url: `${ADMIN}/users/${plain.user.id}`, headers: user, payload: { roles: ['admin'] } })).statusCode, 403, 'not even on themselves')
      t.equal((await app.inject({ method: 'DELETE', url: `${ADMIN}/roles/${role}`, headers: user })).statusCode, 403)
      const after = json(await app.inject({ url: `${ADMIN}/users/${victim}`, headers: adminHeaders }))
      t.same(after.roles, ['user'], 'the victim still exists with its roles')
      t.same((await findUserById(app.db, plain.user.id))?.roles, ['user'], 'the caller did not make themselves admin')
      t.ok((await app.roles.list()).some((r) => r.name === role), 'the role still exists')
    })

    t.test('an admin: 2xx on every admin route', async (t) => {
      for (const route of ROUTES) {
        t.test(label(route), async (t) => {
          const res = await call(app, route, adminHeaders)
          t.equal(res.statusCode, route.ok, `status ${route.ok}`, { body: res.body })
          if (route.ok === 204) t.equal(res.body, '', 'no body')
          else t.match(res.headers['content-type'], /^application\/json/, 'JSON')
        })
      }
    })

    t.test('a role with users:read only: 2xx on the read routes, 403 on the others', async (t) => {
      for (const route of ROUTES) {
        t.test(label(route), async (t) => {
          const res = await call(app, route, bearer(readerToken))
          if (route.permission === 'users:read') t.equal(res.statusCode, route.ok, `status ${route.ok}`, { body: res.body })
          else expectProblem(t, res, 403, 'FORBIDDEN')
        })
      }
    })

    t.test('permissions are looked up, not stored in the token: a role change applies to the same token', async (t) => {
      const patch = ROUTES.find((r) => r.method === 'PATCH' && r.path === '/users/{id}')!
      const remove = ROUTES.find((r) => r.method === 'DELETE' && r.path === '/users/{id}')!
      expectProblem(t, await call(app, patch, bearer(readerToken)), 403, 'FORBIDDEN')

      const widened = await app.inject({ method: 'PUT', url: `${ADMIN}/roles/${readerRole}`, headers: adminHeaders, payload: { permissions: ['users:read', 'users:write'] } })
      t.equal(widened.statusCode, 200, 'the role now grants users:write')
      const res = await call(app, patch, bearer(readerToken))
      t.equal(res.statusCode, 200, 'the same token may PATCH', { body: res.body })
      t.equal((await call(app, remove, bearer(readerToken))).statusCode, 204, 'and DELETE users')
      expectProblem(t, await call(app, ROUTES.find((r) => r.path === '/audit-events')!, bearer(readerToken)), 403, 'FORBIDDEN')

      const narrowed = await app.inject({ method: 'PUT', url: `${ADMIN}/roles/${readerRole}`, headers: adminHeaders, payload: { permissions: ['users:read'] } })
      t.equal(narrowed.statusCode, 200, 'users:write taken back')
      expectProblem(t, await call(app, patch, bearer(readerToken)), 403, 'FORBIDDEN')
      t.equal((await call(app, ROUTES[0], bearer(readerToken))).statusCode, 200, 'users:read still works')
    })

    t.test('an unknown user id with an admin token is a 404, not a 2xx', async (t) => {
      for (const route of ROUTES.filter((r) => r.path.includes('{id}'))) {
        const res = await app.inject({ method: route.method, url: ADMIN + route.path.replace('{id}', randomUUID()), headers: adminHeaders, ...(route.method === 'PATCH' && { payload: { email_verified: true } }) })
        expectProblem(t, res, 404, 'USER_NOT_FOUND')
      }
    })
  })
}
