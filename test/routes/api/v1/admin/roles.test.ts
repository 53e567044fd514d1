import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { findUserById } from '../../../../../db/queries/users.js'
import t, { type Test } from 'tap'
import { PERMISSIONS } from '../../../../../schemas/permissions.js'
import { bearer, build, databases, expectProblem, GOOD_PASSWORD, json, signup, uniqueEmail } from '../../../../helper.js'

const ROLES = '/api/v1/admin/roles'
const USERS = '/api/v1/admin/users'
const LOGIN = '/api/v1/auth/login'
const FORWARD_AUTH = '/api/v1/auth/verify'
const ADMIN_PERMISSIONS = ['users:read', 'users:write', 'sessions:revoke', 'roles:write', 'audit:read', 'keys:rotate']

/** Rate limits and load shedding are not what these tests are about. */
const QUIET = { RATE_LIMIT_ENABLED: 'false', MAX_EVENT_LOOP_DELAY_MS: '0' }

const claimsOf = (token: string) => JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8')) as Record<string, any>

let roleCount = 0
const uniqueRoleName = () => `rt-${process.pid.toString(36)}-${Date.now().toString(36)}-${++roleCount}`

/** An app with an admin signed in, and helpers for the role routes. Roles made through it are removed at the end. */
async function adminApp (t: Test, url: string, adminEmail = uniqueEmail('roles-admin')) {
  const app = await build(t, { env: { DATABASE_URL: url, ...QUIET, ADMIN_EMAIL: adminEmail, ADMIN_PASSWORD: GOOD_PASSWORD } })
  const made: string[] = []
  // Teardowns run last-added first: this runs before the app closes. PostgreSQL is shared: leave no roles behind.
  t.teardown(async () => {
    for (const name of made) await app.roles.remove(name).catch(() => {})
  })
  const login = async (email: string) => {
    const res = await app.inject({ method: 'POST', url: LOGIN, payload: { email, password: GOOD_PASSWORD } })
    if (res.statusCode !== 200) throw new Error(`login failed: ${res.statusCode} ${res.body}`)
    return json(res)
  }
  const admin = await login(adminEmail)
  const headers = bearer(admin.access_token)
  return {
    app,
    admin,
    headers,
    login,
    /** A new role name, removed at the end if it gets created. */
    name () {
      const name = uniqueRoleName()
      made.push(name)
      return name
    },
    list: async () => json(await app.inject({ url: ROLES, headers })) as unknown as Array<{ name: string, description: string, permissions: string[] }>,
    create: (payload: unknown) => app.inject({ method: 'POST', url: ROLES, headers, payload: payload as Record<string, unknown> }),
    update: (name: string, payload: unknown) => app.inject({ method: 'PUT', url: `${ROLES}/${name}`, headers, payload: payload as Record<string, unknown> }),
    remove: (name: string) => app.inject({ method: 'DELETE', url: `${ROLES}/${name}`, headers }),
    give: (userId: string, roles: string[]) => app.inject({ method: 'PATCH', url: `${USERS}/${userId}`, headers, payload: { roles } }),
    user: async (userId: string) => json(await app.inject({ url: `${USERS}/${userId}`, headers }))
  }
}

const sorted = (list: readonly string[]) => [...list].sort()

for (const db of databases) {
  t.test(db.name, async (t) => {
    const api = await adminApp(t, db.url)
    const { app } = api

    t.test('the default roles are seeded: user with nothing, admin with every permission', async (t) => {
      t.same(sorted(PERMISSIONS), sorted(ADMIN_PERMISSIONS), 'the service knows exactly these permissions')
      const roles = await api.list()
      const user = roles.find((r) => r.name === 'user')
      const admin = roles.find((r) => r.name === 'admin')
      t.ok(user, 'user exists')
      t.ok(admin, 'admin exists')
      t.same(user?.permissions, [], 'user grants nothing')
      t.same(sorted(admin?.permissions ?? []), sorted(ADMIN_PERMISSIONS), 'admin grants every permission')
      t.equal(roles.filter((r) => r.name === 'user' || r.name === 'admin').length, 2, 'once each')
      for (const role of roles) t.same(Object.keys(role).sort(), ['description', 'name', 'permissions'], `${role.name}: the Role fields`)
    })

    t.test('seeding is idempotent: a second app on the same database adds nothing and removes nothing', async (t) => {
      // SQLite in memory is a new database per app: use a file that both apps open.
      let url = db.url
      if (db.name === 'sqlite') {
        const dir = mkdtempSync(join(tmpdir(), 'roles-seed-'))
        t.teardown(() => rmSync(dir, { recursive: true, force: true }))
        url = `sqlite:${join(dir, 'auth.db')}`
      }
      const adminEmail = uniqueEmail('seed-admin')
      const first = await adminApp(t, url, adminEmail)
      const name = first.name()
      t.equal((await first.create({ name, description: 'made by app 1', permissions: ['audit:read', 'users:read'] })).statusCode, 201)

      const second = await adminApp(t, url, adminEmail)
      const builtIn = await second.app.db.selectFrom('roles').select('name').where('name', 'in', ['user', 'admin']).execute()
      t.same(sorted(builtIn.map((r) => r.name)), ['admin', 'user'], 'one row each for user and admin')
      const links = await second.app.db.selectFrom('role_permissions').select(['role', 'permission']).where('role', 'in', ['user', 'admin']).execute()
      t.same(sorted(links.map((l) => `${l.role} ${l.permission}`)), sorted(ADMIN_PERMISSIONS.map((p) => `admin ${p}`)), 'admin\'s permissions once each, none for user')
      const survivor = (await second.list()).find((r) => r.name === name)
      t.same(survivor, { name, description: 'made by app 1', permissions: ['audit:read', 'users:read'] }, 'the role made by app 1 survives, permissions and all')
      t.ok(second.app.roles.exists(name), 'and app 2 knows it')
      t.same(sorted(second.admin.user.roles), ['admin', 'user'], 'the admin is still admin')
      t.equal((await second.app.db.selectFrom('users').select('id').where('email', '=', adminEmail).execute()).length, 1, 'one admin account')

      if (db.name === 'sqlite') {
        // A private file: a missing default link is put back at the next start.
        await second.app.db.deleteFrom('role_permissions').where('role', '=', 'admin').where('permission', '=', 'keys:rotate').execute()
        const third = await adminApp(t, url, adminEmail)
        const admin = (await third.list()).find((r) => r.name === 'admin')
        t.same(sorted(admin?.permissions ?? []), sorted(ADMIN_PERMISSIONS), 'the next start restores admin\'s permissions')
      }
    })

    t.test('create: 201, then 409 ROLE_EXISTS for the same name', async (t) => {
      const name = api.name()
      const res = await api.create({ name, description: 'Reads users', permissions: ['users:read', 'audit:read'] })
      t.equal(res.statusCode, 201)
      t.same(json(res), { name, description: 'Reads users', permissions: ['audit:read', 'users:read'] }, 'the role, permissions sorted')
      t.same((await api.list()).find((r) => r.name === name), json(res), 'listed')
      t.ok(app.roles.grants([name], 'users:read'), 'granted at once')
      t.notOk(app.roles.grants([name], 'users:write'), 'and nothing more')

      expectProblem(t, await api.create({ name, permissions: [] }), 409, 'ROLE_EXISTS')
      expectProblem(t, await api.create({ name: 'admin', permissions: [] }), 409, 'ROLE_EXISTS')
      expectProblem(t, await api.create({ name: 'user', permissions: [] }), 409, 'ROLE_EXISTS')
      const bare = api.name()
      const noDescription = await api.create({ name: bare, permissions: [] })
      t.equal(noDescription.statusCode, 201, 'description and permissions may be empty')
      t.same(json(noDescription), { name: bare, description: '', permissions: [] })
    })

    t.test('create: bad bodies are 400 and create nothing', async (t) => {
      const name = api.name()
      const bodies: Array<[string, unknown]> = [
        ['an unknown permission', { name, permissions: ['users:read', 'users:destroy'] }],
        ['a permission twice', { name, permissions: ['users:read', 'users:read'] }],
        ['permissions missing', { name }],
        ['permissions not an array', { name, permissions: 'users:read' }],
        ['an extra field', { name, permissions: [], grants: [] }],
        ['an upper-case name', { name: 'Readers', permissions: [] }],
        ['a name starting with a digit', { name: '1readers', permissions: [] }],
        ['a one-character name', { name: 'r', permissions: [] }],
        ['a name with a space', { name: 'read ers', permissions: [] }],
        ['a name of 43 characters', { name: `r${'e'.repeat(42)}`, permissions: [] }],
        ['no name', { permissions: [] }]
      ]
      for (const [label, body] of bodies) {
        t.test(label, async (t) => {
          expectProblem(t, await api.create(body), 400, ['VALIDATION_FAILED', 'UNKNOWN_PERMISSION'])
        })
      }
      t.notOk((await api.list()).some((r) => r.name === name), 'nothing created')
      await t.rejects(app.roles.create({ name, description: '', permissions: ['users:destroy'] }), { code: 'UNKNOWN_PERMISSION', statusCode: 400 }, 'the decorator refuses it too')
      t.notOk((await api.list()).some((r) => r.name === name), 'still nothing')
    })

    t.test('PUT replaces the description and permissions', async (t) => {
      const name = api.name()
      await api.create({ name, description: 'before', permissions: ['users:read', 'audit:read'] })
      const res = await api.update(name, { description: 'after', permissions: ['keys:rotate'] })
      t.equal(res.statusCode, 200)
      t.same(json(res), { name, description: 'after', permissions: ['keys:rotate'] })
      t.same((await api.list()).find((r) => r.name === name), { name, description: 'after', permissions: ['keys:rotate'] }, 'replaced, not merged')
      t.notOk(app.roles.grants([name], 'users:read'), 'the old permission is gone at once')
      t.ok(app.roles.grants([name], 'keys:rotate'), 'the new one granted at once')

      const emptied = await api.update(name, { permissions: [] })
      t.same(json(emptied), { name, description: '', permissions: [] }, 'an absent description is emptied')

      expectProblem(t, await api.update(api.name(), { permissions: [] }), 404, 'ROLE_NOT_FOUND')
      expectProblem(t, await api.update(name, { permissions: ['nope'] }), 400, ['VALIDATION_FAILED', 'UNKNOWN_PERMISSION'])
      expectProblem(t, await api.update(name, {}), 400, 'VALIDATION_FAILED')
      expectProblem(t, await api.update('Bad Name', { permissions: [] }), 400, 'VALIDATION_FAILED')
    })

    t.test('the built-in roles are protected', async (t) => {
      expectProblem(t, await api.update('admin', { permissions: ['users:read'] }), 400, 'ROLE_PROTECTED')
      expectProblem(t, await api.update('user', { permissions: ['users:read'] }), 400, 'ROLE_PROTECTED')
      expectProblem(t, await api.update('user', { description: 'changed', permissions: [] }), 400, 'ROLE_PROTECTED')
      t.same((await api.list()).find((r) => r.name === 'user'), { name: 'user', description: 'Every account has it', permissions: [] }, 'user is as seeded')
      t.same(sorted((await api.list()).find((r) => r.name === 'admin')?.permissions ?? []), sorted(ADMIN_PERMISSIONS), 'admin keeps every permission')
      for (const name of ['user', 'admin']) expectProblem(t, await api.remove(name), 400, 'ROLE_PROTECTED')
      const names = (await api.list()).map((r) => r.name)
      t.ok(names.includes('user') && names.includes('admin'), 'both still there')
      t.ok(app.roles.grants(['admin'], 'roles:write'), 'admin still grants')
    })

    t.test('DELETE: 204, then 404 ROLE_NOT_FOUND', async (t) => {
      const name = api.name()
      await api.create({ name, permissions: ['users:read'] })
      const res = await api.remove(name)
      t.equal(res.statusCode, 204)
      t.equal(res.body, '', 'no body')
      t.notOk((await api.list()).some((r) => r.name === name), 'gone from the list')
      t.notOk(app.roles.exists(name), 'gone from the cache')
      expectProblem(t, await api.remove(name), 404, 'ROLE_NOT_FOUND')
      expectProblem(t, await api.remove(api.name()), 404, 'ROLE_NOT_FOUND')
      expectProblem(t, await api.remove('Not-A-Name'), 400, 'VALIDATION_FAILED')
    })

    t.test('a deleted role disappears from its holders', async (t) => {
      const name = api.name()
      await api.create({ name, permissions: ['users:read'] })
      const holder = await signup(app)
      t.same((await api.give(holder.user.id, [name])).json().roles, sorted([name, 'user']))
      t.equal((await api.remove(name)).statusCode, 204)
      t.same((await api.user(holder.user.id)).roles, ['user'], 'GET /admin/users/:id no longer lists it')
      t.same((await findUserById(app.db, holder.user.id))?.roles, ['user'], 'no link left')
      const filtered = await app.inject({ url: USERS, query: { role: name }, headers: api.headers })
      t.same(json(filtered).items, [], 'nobody is listed under it')
    })

    t.test('a deleted role stops working for its former holders, even when a role of that name is made again', async (t) => {
      const name = api.name()
      await api.create({ name, permissions: ['users:read'] })
      const email = uniqueEmail('former-holder')
      const holder = await signup(app, { email })
      await api.give(holder.user.id, [name])
      const token = (await api.login(email)).access_token
      t.same(sorted(claimsOf(token).roles), sorted([name, 'user']), 'the token carries the role')
      t.equal((await app.inject({ url: USERS, headers: bearer(token) })).statusCode, 200, 'the role works')

      t.equal((await api.remove(name)).statusCode, 204)
      const refused = await app.inject({ url: USERS, headers: bearer(token) })
      t.ok([401, 403].includes(refused.statusCode), 'a deleted role grants nothing (its holders\' sessions ended: 401)', { status: refused.statusCode })
      const verify = await app.inject({ url: FORWARD_AUTH, headers: bearer(token) })
      t.ok(verify.statusCode === 401 || !String(verify.headers['x-user-roles']).split(',').includes(name),
        'forward auth no longer vouches for the deleted role', { status: verify.statusCode, roles: verify.headers['x-user-roles'] })

      // Another role under the old name: the former holder was never given it.
      t.equal((await api.create({ name, permissions: ['users:read'] })).statusCode, 201)
      t.same((await api.user(holder.user.id)).roles, ['user'], 'the former holder does not hold the new role')
      const after = await app.inject({ url: USERS, headers: bearer(token) })
      t.not(after.statusCode, 200, 'the old token does not get the new role\'s permissions', { body: after.body })
    })

    t.test('access tokens carry roles', async (t) => {
      const adminClaims = claimsOf(api.admin.access_token)
      t.same(sorted(adminClaims.roles), ['admin', 'user'], 'the admin\'s token')
      t.equal(adminClaims.sub, api.admin.user.id)
      const email = uniqueEmail('claims')
      const plain = await signup(app, { email })
      t.same(claimsOf(plain.access_token).roles, ['user'], 'a new user\'s token')
      t.same(plain.user.roles, ['user'], 'and the user in the answer')

      const name = api.name()
      await api.create({ name, permissions: [] })
      await api.give(plain.user.id, [name])
      const again = await api.login(email)
      t.same(sorted(claimsOf(again.access_token).roles), sorted([name, 'user']), 'a sign-in after a change carries the new role')
      t.same(sorted(again.user.roles), sorted([name, 'user']))
      const refreshed = await app.inject({ method: 'POST', url: '/api/v1/auth/refresh', payload: { refresh_token: plain.refresh_token } })
      t.equal(refreshed.statusCode, 200)
      t.same(sorted(claimsOf(json(refreshed).access_token).roles), sorted([name, 'user']), 'so does a refresh of an older session')
    })
  })
}
