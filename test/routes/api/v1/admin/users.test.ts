import { randomUUID } from 'node:crypto'
import t from 'tap'
import { bearer, build, databases, expectProblem, GOOD_PASSWORD, json, signup, uniqueEmail } from '../../../../helper.js'

const USERS = '/api/v1/admin/users'
const ROLES = '/api/v1/admin/roles'
const EVENTS = '/api/v1/admin/audit-events'
const LOGIN = '/api/v1/auth/login'
const REFRESH = '/api/v1/auth/refresh'
const FORWARD_AUTH = '/api/v1/auth/verify'

/**
 * Many sign-ups from one address, under a test machine's load: the per-address
 * rate limits and the event-loop load shedding are not what these tests are about.
 */
const QUIET = { RATE_LIMIT_ENABLED: 'false', MAX_EVENT_LOOP_DELAY_MS: '0' }

let prefixes = 0
/** An email prefix no other test (or run sharing PostgreSQL) uses. */
const uniquePrefix = (name: string) => `${name}-${process.pid.toString(36)}-${Date.now().toString(36)}-${++prefixes}-`

let roleCount = 0
const uniqueRoleName = () => `ut-${process.pid.toString(36)}-${Date.now().toString(36)}-${++roleCount}`

for (const db of databases) {
  t.test(db.name, async (t) => {
    let clock = new Date()
    const tick = (ms = 1000) => { clock = new Date(clock.getTime() + ms) }
    const adminEmail = uniqueEmail('users-admin')
    const app = await build(t, { env: { DATABASE_URL: db.url, ...QUIET, ADMIN_EMAIL: adminEmail, ADMIN_PASSWORD: GOOD_PASSWORD }, now: () => clock })

    const made: string[] = []
    t.teardown(async () => {
      for (const name of made) await app.roles.remove(name).catch(() => {})
    })

    const login = (email: string, password = GOOD_PASSWORD) => app.inject({ method: 'POST', url: LOGIN, payload: { email, password } })
    const signedIn = async (email: string) => {
      const res = await login(email)
      if (res.statusCode !== 200) throw new Error(`login failed: ${res.statusCode} ${res.body}`)
      return json(res)
    }
    const forwardAuth = (token: string) => app.inject({ url: FORWARD_AUTH, headers: bearer(token) })
    const refresh = (token: string) => app.inject({ method: 'POST', url: REFRESH, payload: { refresh_token: token } })

    // The admin signs in again when its token would expire under the moved clock.
    let adminToken = ''
    let adminTokenAt = 0
    let adminId = ''
    async function asAdmin () {
      if (clock.getTime() - adminTokenAt > 10 * 60_000) {
        const admin = await signedIn(adminEmail)
        adminToken = admin.access_token
        adminTokenAt = clock.getTime()
        adminId = admin.user.id
      }
      return bearer(adminToken)
    }
    await asAdmin()

    const list = async (query: Record<string, string | number | boolean>) => app.inject({ url: USERS, query: Object.fromEntries(Object.entries(query).map(([k, v]) => [k, String(v)])), headers: await asAdmin() })
    const get = async (id: string) => app.inject({ url: `${USERS}/${id}`, headers: await asAdmin() })
    const patch = async (id: string, payload: unknown) => app.inject({ method: 'PATCH', url: `${USERS}/${id}`, headers: await asAdmin(), payload: payload as Record<string, unknown> })
    const remove = async (id: string) => app.inject({ method: 'DELETE', url: `${USERS}/${id}`, headers: await asAdmin() })
    const endSessions = async (id: string) => app.inject({ method: 'DELETE', url: `${USERS}/${id}/sessions`, headers: await asAdmin() })
    const events = async (userId: string, type: string) => {
      const res = await app.inject({ url: EVENTS, query: { user_id: userId, type, limit: '100' }, headers: await asAdmin() })
      if (res.statusCode !== 200) throw new Error(`events: ${res.statusCode} ${res.body}`)
      return json(res).items as Array<Record<string, any>>
    }
    async function newRole (permissions: string[] = []) {
      const name = uniqueRoleName()
      made.push(name)
      const res = await app.inject({ method: 'POST', url: ROLES, headers: await asAdmin(), payload: { name, permissions } })
      if (res.statusCode !== 201) throw new Error(`role: ${res.statusCode} ${res.body}`)
      return name
    }

    /** Pages through the list with these filters; returns every item and the pages' sizes. */
    async function all (query: Record<string, string | number | boolean>) {
      const items: Array<Record<string, any>> = []
      const sizes: number[] = []
      let cursor: string | null = null
      for (let page = 0; page < 50; page++) {
        const res = await list({ ...query, ...(cursor && { cursor }) })
        if (res.statusCode !== 200) throw new Error(`list: ${res.statusCode} ${res.body}`)
        const body = json(res)
        items.push(...body.items)
        sizes.push(body.items.length)
        cursor = body.next_cursor
        if (cursor === null) break
      }
      return { items, sizes }
    }

    t.test('pages follow the cursor; next_cursor is null on the last page', async (t) => {
      const prefix = uniquePrefix('page')
      const ids: string[] = []
      for (let i = 0; i < 5; i++) {
        tick()
        ids.push((await signup(app, { email: `${prefix}${i}@example.com` })).user.id)
      }

      const first = json(await list({ email_prefix: prefix, limit: 2 }))
      t.equal(first.items.length, 2, 'limit rows')
      t.type(first.next_cursor, 'string', 'a cursor to the next page')
      const { items, sizes } = await all({ email_prefix: prefix, limit: 2 })
      t.same(sizes, [2, 2, 1], 'pages of 2, 2 and 1')
      t.same(items.map((u) => u.id), ids, 'every user once, oldest first')

      const exact = json(await list({ email_prefix: prefix, limit: 5 }))
      t.equal(exact.items.length, 5)
      t.equal(exact.next_cursor, null, 'no next page when the page holds the last row')
      const whole = json(await list({ email_prefix: prefix }))
      t.equal(whole.items.length, 5, 'the default limit holds them all')
      t.equal(whole.next_cursor, null)

      const item = first.items[0]
      t.same(Object.keys(item).sort(), ['created_at', 'disabled', 'email', 'email_verified', 'id', 'roles', 'updated_at', 'username'], 'the AdminUser fields, no password hash')
      t.same(item.roles, ['user'])
      t.equal(item.email, `${prefix}0@example.com`)

      for (const limit of [0, 101, 'x']) expectProblem(t, await list({ email_prefix: prefix, limit }), 400, 'VALIDATION_FAILED')
      expectProblem(t, await list({ email_prefix: prefix, cursor: Buffer.from('["nope","nope"]').toString('base64url') }), 400, 'INVALID_CURSOR')
      expectProblem(t, await list({ email_prefix: prefix, unknown: 1 }), 400, 'VALIDATION_FAILED')
    })

    t.test('email_prefix matches % and _ literally, and ignores case', async (t) => {
      const base = uniquePrefix('lit')
      const underscore = (await signup(app, { email: `${base}_a@example.com` })).user.id
      const letter = (await signup(app, { email: `${base}xa@example.com` })).user.id
      const percent = (await signup(app, { email: `${base}%a@example.com` })).user.id
      const longer = (await signup(app, { email: `${base}yya@example.com` })).user.id
      const ids = async (prefix: string) => (await all({ email_prefix: prefix })).items.map((u) => u.id).sort()

      t.same(await ids(`${base}_`), [underscore], '_ is not a one-character wildcard')
      t.same(await ids(`${base}%`), [percent], '% is not a wildcard')
      t.same(await ids(`${base}%a@`), [percent])
      t.same(await ids(`${base}x`), [letter])
      t.same(await ids(base), [underscore, letter, percent, longer].sort(), 'the plain prefix matches all four')
      t.same(await ids(base.toUpperCase()), [underscore, letter, percent, longer].sort(), 'case is ignored')
      t.same(await ids(`${base}\\`), [], 'a backslash is literal too')
    })

    t.test('role and disabled filters', async (t) => {
      const prefix = uniquePrefix('filter')
      const role = await newRole()
      const plain = (await signup(app, { email: `${prefix}plain@example.com` })).user.id
      const holder = (await signup(app, { email: `${prefix}holder@example.com` })).user.id
      const off = (await signup(app, { email: `${prefix}off@example.com` })).user.id
      t.equal((await patch(holder, { roles: [role] })).statusCode, 200)
      t.equal((await patch(off, { disabled: true })).statusCode, 200)
      const ids = async (query: Record<string, string | boolean>) => (await all({ email_prefix: prefix, ...query })).items.map((u) => u.id).sort()

      t.same(await ids({ role }), [holder], 'role=custom')
      t.same(await ids({ role: 'user' }), [plain, holder, off].sort(), 'everyone has user')
      t.same(await ids({ role: 'admin' }), [], 'no admin among them')
      t.same(await ids({ disabled: true }), [off], 'disabled=true')
      t.same(await ids({ disabled: false }), [plain, holder].sort(), 'disabled=false')
      t.same(await ids({ role, disabled: false }), [holder], 'filters combine')
      t.same(await ids({ role, disabled: true }), [], 'filters combine (none)')
      const admins = await all({ role: 'admin', email_prefix: adminEmail })
      t.same(admins.items.map((u) => u.id), [adminId], 'role=admin finds the admin')
      t.same(admins.items[0].roles, ['admin', 'user'])
      expectProblem(t, await list({ role: 'Not A Role' }), 400, 'VALIDATION_FAILED')
      expectProblem(t, await list({ disabled: 'maybe' }), 400, 'VALIDATION_FAILED')
    })

    t.test('the order is stable: (created_at, id), ties broken by id', async (t) => {
      const prefix = uniquePrefix('order')
      tick()
      // Three at the same instant, two later.
      for (let i = 0; i < 3; i++) await signup(app, { email: `${prefix}same${i}@example.com` })
      tick()
      for (let i = 0; i < 2; i++) { tick(); await signup(app, { email: `${prefix}later${i}@example.com` }) }

      const once = (await all({ email_prefix: prefix, limit: 2 })).items
      const again = (await all({ email_prefix: prefix, limit: 3 })).items
      t.equal(once.length, 5)
      t.same(again.map((u) => u.id), once.map((u) => u.id), 'the same order whatever the page size')
      const keys = once.map((u) => [new Date(u.created_at).toISOString(), u.id] as const)
      const sorted = [...keys].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0))
      t.same(keys, sorted, 'ascending by created_at, then id')
      t.equal(new Set(keys.slice(0, 3).map((k) => k[0])).size, 1, 'the first three share a created_at')
    })

    t.test('GET one: 200, 404 USER_NOT_FOUND for an unknown id, 400 for a non-uuid', async (t) => {
      const email = uniqueEmail('one')
      const user = (await signup(app, { email, username: `one_${process.pid.toString(36)}_${Date.now().toString(36)}` })).user
      const res = await get(user.id)
      t.equal(res.statusCode, 200)
      const body = json(res)
      t.same({ id: body.id, email: body.email, username: body.username, email_verified: body.email_verified, disabled: body.disabled, roles: body.roles },
        { id: user.id, email, username: user.username, email_verified: false, disabled: false, roles: ['user'] })
      t.match(body.created_at, /Z$/, 'ISO 8601 UTC')
      t.notOk('password_hash' in body, 'no password hash')

      expectProblem(t, await get(randomUUID()), 404, 'USER_NOT_FOUND')
      expectProblem(t, await get('not-a-uuid'), 400, 'VALIDATION_FAILED')
    })

    t.test('PATCH roles: unknown role 400, user always kept, removing a role ends the sessions at once', async (t) => {
      const role = await newRole(['users:read'])
      const email = uniqueEmail('roles')
      const user = (await signup(app, { email })).user

      expectProblem(t, await patch(user.id, { roles: [role, 'no-such-role'] }), 400, 'UNKNOWN_ROLE')
      t.same(json(await get(user.id)).roles, ['user'], 'nothing changed')

      tick()
      const given = await patch(user.id, { roles: [role] })
      t.equal(given.statusCode, 200)
      t.same(json(given).roles, [role, 'user'].sort(), 'user is kept without being named')
      const session = await signedIn(email)
      t.equal((await forwardAuth(session.access_token)).statusCode, 200, 'the new session works')

      tick()
      const taken = await patch(user.id, { roles: [] })
      t.equal(taken.statusCode, 200)
      t.same(json(taken).roles, ['user'], 'an empty list leaves user')
      expectProblem(t, await forwardAuth(session.access_token), 401, 'SESSION_REVOKED')
      t.equal((await refresh(session.refresh_token)).statusCode, 401, 'the refresh token is dead too')
      t.equal((await login(email)).statusCode, 200, 'the user can sign in again')

      const changes = await events(user.id, 'role_changed')
      t.equal(changes.length, 2, 'one event per change')
      t.same(changes.map((e) => e.detail), [
        { by: adminId, added: [], removed: [role] },
        { by: adminId, added: [role], removed: [] }
      ], 'newest first, by the admin, with what changed')
    })

    t.test('PATCH disabled: sessions end at once, login refused; enabled again, login works', async (t) => {
      const email = uniqueEmail('disable')
      const first = await signup(app, { email })
      const second = await signedIn(email)

      const res = await patch(first.user.id, { disabled: true })
      t.equal(res.statusCode, 200)
      t.equal(json(res).disabled, true)
      for (const session of [first, second]) {
        expectProblem(t, await forwardAuth(session.access_token), 401, 'SESSION_REVOKED')
        t.equal((await refresh(session.refresh_token)).statusCode, 401, 'refresh refused')
      }
      expectProblem(t, await login(email), 401, 'INVALID_CREDENTIALS')
      t.equal((await app.inject({ url: '/api/v1/users/me', headers: bearer(first.access_token) })).statusCode, 401)

      const disabled = await events(first.user.id, 'user_disabled')
      t.equal(disabled.length, 1)
      t.same(disabled[0].detail, { by: adminId })

      const back = await patch(first.user.id, { disabled: false })
      t.equal(back.statusCode, 200)
      t.equal(json(back).disabled, false)
      const again = await login(email)
      t.equal(again.statusCode, 200, 'login works again')
      t.equal((await forwardAuth(json(again).access_token)).statusCode, 200)
      t.equal((await patch(first.user.id, { disabled: false })).statusCode, 200, 'enabling an enabled user is a no-op')
      t.equal((await events(first.user.id, 'user_disabled')).length, 1, 'no second user_disabled')
    })

    t.test('PATCH email_verified', async (t) => {
      const user = (await signup(app)).user
      t.equal(user.email_verified, false)
      const on = await patch(user.id, { email_verified: true })
      t.equal(on.statusCode, 200)
      t.equal(json(on).email_verified, true)
      t.equal(json(await get(user.id)).email_verified, true, 'stored')
      const off = await patch(user.id, { email_verified: false })
      t.equal(json(off).email_verified, false)
      t.equal(json(await get(user.id)).email_verified, false, 'stored')
      t.same(json(off).roles, ['user'], 'roles untouched')
    })

    t.test('an admin cannot disable themselves, change their own roles or delete themselves', async (t) => {
      const role = await newRole([])
      expectProblem(t, await patch(adminId, { disabled: true }), 400, 'CANNOT_MODIFY_SELF')
      expectProblem(t, await patch(adminId, { roles: [] }), 403, 'INSUFFICIENT_PRIVILEGE')
      expectProblem(t, await patch(adminId, { roles: ['user'], email_verified: true }), 403, 'INSUFFICIENT_PRIVILEGE')
      expectProblem(t, await patch(adminId, { roles: ['admin', role] }), 403, 'INSUFFICIENT_PRIVILEGE')
      expectProblem(t, await remove(adminId), 400, 'CANNOT_MODIFY_SELF')
      const self = json(await get(adminId))
      t.same(self.roles, ['admin', 'user'], 'still admin')
      t.equal(self.disabled, false, 'still enabled')
      t.equal((await forwardAuth(adminToken)).statusCode, 200, 'the admin session still works')
      t.equal((await patch(adminId, { roles: ['admin'] })).statusCode, 200, 'keeping admin is fine')
      t.equal((await forwardAuth(adminToken)).statusCode, 200, 'and ends nothing')
    })

    t.test('DELETE a user: 204, then 404; their token stops at once', async (t) => {
      const email = uniqueEmail('delete')
      const user = await signup(app, { email })
      const res = await remove(user.user.id)
      t.equal(res.statusCode, 204)
      t.equal(res.body, '', 'no body')
      expectProblem(t, await get(user.user.id), 404, 'USER_NOT_FOUND')
      expectProblem(t, await remove(user.user.id), 404, 'USER_NOT_FOUND')
      expectProblem(t, await forwardAuth(user.access_token), 401, 'SESSION_REVOKED')
      t.equal((await refresh(user.refresh_token)).statusCode, 401, 'refresh refused')
      expectProblem(t, await login(email), 401, 'INVALID_CREDENTIALS')
      const deleted = await events(user.user.id, 'user_deleted')
      t.equal(deleted.length, 1)
      t.same(deleted[0].detail, { by: adminId })
    })

    t.test('DELETE /users/:id/sessions: every token stops at once; the user can sign in again', async (t) => {
      const email = uniqueEmail('sessions')
      const first = await signup(app, { email })
      const second = await signedIn(email)
      const res = await endSessions(first.user.id)
      t.equal(res.statusCode, 204)
      t.equal(res.body, '')
      for (const session of [first, second]) {
        expectProblem(t, await forwardAuth(session.access_token), 401, 'SESSION_REVOKED')
        t.equal((await refresh(session.refresh_token)).statusCode, 401, 'refresh refused')
      }
      const again = await login(email)
      t.equal(again.statusCode, 200, 'sign in again')
      t.equal((await forwardAuth(json(again).access_token)).statusCode, 200, 'the new session works')
      t.equal(json(await get(first.user.id)).disabled, false, 'the account is untouched')

      const ended = await events(first.user.id, 'sessions_ended')
      t.equal(ended.length, 1)
      t.same(ended[0].detail, { by: adminId, reason: 'ended_by_admin', sessions: 2 })
      expectProblem(t, await endSessions(randomUUID()), 404, 'USER_NOT_FOUND')
      expectProblem(t, await endSessions('nope'), 400, 'VALIDATION_FAILED')
    })

    t.test('bad PATCH bodies are 400 and change nothing', async (t) => {
      const user = (await signup(app)).user
      const bodies: Array<[string, unknown]> = [
        ['empty', {}],
        ['an extra field', { email_verified: true, email: 'x@example.com' }],
        ['roles not an array', { roles: 'admin' }],
        ['a role name out of pattern', { roles: ['Admin Role'] }],
        ['a repeated role', { roles: ['admin', 'admin'] }],
        ['disabled as text', { disabled: 'true' }],
        ['email_verified as a number', { email_verified: 1 }],
        ['not an object', ['admin']]
      ]
      for (const [name, body] of bodies) {
        t.test(name, async (t) => {
          expectProblem(t, await patch(user.id, body), 400, 'VALIDATION_FAILED')
        })
      }
      const after = json(await get(user.id))
      t.same({ roles: after.roles, disabled: after.disabled, email_verified: after.email_verified }, { roles: ['user'], disabled: false, email_verified: false }, 'unchanged')
      expectProblem(t, await patch('not-a-uuid', { disabled: true }), 400, 'VALIDATION_FAILED')
      expectProblem(t, await patch(randomUUID(), { disabled: true }), 404, 'USER_NOT_FOUND')
    })

    t.test('the admin routes answer the admin only (spot check with a plain user)', async (t) => {
      const plain = await signup(app)
      const res = await app.inject({ url: USERS, headers: bearer(plain.access_token) })
      expectProblem(t, res, 403, 'FORBIDDEN')
    })
  })
}
