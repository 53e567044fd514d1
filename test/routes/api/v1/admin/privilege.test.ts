import { randomUUID } from 'node:crypto'
import Fastify from 'fastify'
import t, { type Test } from 'tap'
import app, { serverOptions } from '../../../../../app.js'
import { insertSession } from '../../../../../db/queries/sessions.js'
import { findUserById, insertUser } from '../../../../../db/queries/users.js'
import { loadConfig } from '../../../../../plugins/external/config.js'
import { PERMISSIONS, type Permission } from '../../../../../schemas/permissions.js'
import { bearer, build, databases, expectProblem, json, tempSqliteUrl, uniqueEmail } from '../../../../helper.js'

/**
 * Issue 13: an actor acts only within what it holds itself. Walks actors
 * (each permission alone as a custom role, some pairs, admin) over every
 * admin operation and target, and checks each answer against the rules
 * written out in `expect` below, and that a refusal changed nothing.
 */

const ADMIN = '/api/v1/admin'
const FORWARD_AUTH = '/api/v1/auth/verify'
const QUIET = { RATE_LIMIT_ENABLED: 'false', MAX_EVENT_LOOP_DELAY_MS: '0' }

interface ActorSpec { name: string, permissions: readonly Permission[] }
const ACTORS: ActorSpec[] = [
  ...PERMISSIONS.map((p) => ({ name: p, permissions: [p] })),
  { name: 'users:read + users:write', permissions: ['users:read', 'users:write'] },
  { name: 'users:write + sessions:revoke', permissions: ['users:write', 'sessions:revoke'] },
  { name: 'users:read + roles:write', permissions: ['users:read', 'roles:write'] },
  { name: 'admin', permissions: PERMISSIONS }
]

interface Outcome { status: number, code?: string }
const ok = (status: number): Outcome => ({ status })
const REFUSED: Outcome = { status: 403, code: 'INSUFFICIENT_PRIVILEGE' }
const FORBIDDEN: Outcome = { status: 403, code: 'FORBIDDEN' }
const PROTECTED: Outcome = { status: 400, code: 'ROLE_PROTECTED' }
const NOT_SELF: Outcome = { status: 400, code: 'CANNOT_MODIFY_SELF' }

/** The actor of one row of the matrix, as the rules see it. */
interface Actor {
  id: string
  /** Its one role: a custom role of its permissions, or admin. */
  role: string
  permissions: ReadonlySet<Permission>
  admin: boolean
  /** The first permission the actor does not hold (undefined for admin). */
  lacking?: Permission
}

const holdsAll = (actor: Actor, permissions: readonly Permission[]) => permissions.every((p) => actor.permissions.has(p))
/** The actor's permissions plus one it lacks. */
const beyond = (actor: Actor): Permission[] => [...actor.permissions, ...(actor.lacking ? [actor.lacking] : [])]

type UserTargetKind = 'plain' | 'admin' | 'stronger' | 'peer' | 'self'
interface UserTarget { kind: UserTargetKind, id: string, roles: string[], permissions: Permission[], self: boolean, token: string }

type RoleTargetKind = 'fresh' | 'own' | 'user' | 'admin' | 'beyond' | 'held by an admin' | 'held by a plain user'
interface RoleTarget {
  kind: RoleTargetKind
  name: string
  builtIn: boolean
  own: boolean
  /** What an actor must hold to change it: its permissions and its holders'. */
  needs: Permission[]
}

interface UserOp { name: string, permission: Permission, method: 'GET' | 'PATCH' | 'DELETE', path: (id: string) => string, payload?: (target: UserTarget) => object, expect: (actor: Actor, target: UserTarget) => Outcome }
interface RoleOp { name: string, method: 'PUT' | 'DELETE', payload?: (actor: Actor) => object, expect: (actor: Actor, role: RoleTarget) => Outcome }
interface PlainOp { name: string, permission: Permission, method: 'GET' | 'POST', url: (name: string) => string, payload?: (actor: Actor, name: string) => object, expect: (actor: Actor) => Outcome }

/** A role that grants nothing: anyone with users:write may hand it to an account it may change. */
const EMPTY_ROLE = `px-empty-${process.pid.toString(36)}`

const user = (id: string) => `/users/${id}`
/** Whether the actor may change the account at all: it holds every permission the account holds. */
const over = (actor: Actor, target: UserTarget) => holdsAll(actor, target.permissions)
const changes = (target: UserTarget, roles: string[]) => [...new Set(['user', ...roles])].sort().join() !== [...target.roles].sort().join()

const USER_OPS: UserOp[] = [
  { name: 'get a user', permission: 'users:read', method: 'GET', path: user, expect: () => ok(200) },
  { name: 'set email_verified', permission: 'users:write', method: 'PATCH', path: user, payload: () => ({ email_verified: true }), expect: (a, t) => over(a, t) ? ok(200) : REFUSED },
  { name: 'disable', permission: 'users:write', method: 'PATCH', path: user, payload: () => ({ disabled: true }), expect: (a, t) => t.self ? NOT_SELF : over(a, t) ? ok(200) : REFUSED },
  {
    name: 'grant a role granting nothing',
    permission: 'users:write',
    method: 'PATCH',
    path: user,
    payload: (t) => ({ roles: [...t.roles, EMPTY_ROLE] }),
    expect: (a, t) => !over(a, t) || t.self ? REFUSED : ok(200)
  },
  {
    name: 'grant admin',
    permission: 'users:write',
    method: 'PATCH',
    path: user,
    payload: (t) => ({ roles: [...new Set([...t.roles, 'admin'])] }),
    expect: (a, t) => !over(a, t) ? REFUSED : !changes(t, [...t.roles, 'admin']) ? ok(200) : t.self || !a.admin ? REFUSED : ok(200)
  },
  {
    name: 'take every role away',
    permission: 'users:write',
    method: 'PATCH',
    path: user,
    payload: () => ({ roles: [] }),
    expect: (a, t) => !over(a, t) ? REFUSED : !changes(t, []) ? ok(200) : t.self ? REFUSED : ok(200)
  },
  { name: 'delete', permission: 'users:write', method: 'DELETE', path: user, expect: (a, t) => t.self ? NOT_SELF : over(a, t) ? ok(204) : REFUSED },
  { name: 'end sessions', permission: 'sessions:revoke', method: 'DELETE', path: (id) => `/users/${id}/sessions`, expect: (a, t) => over(a, t) ? ok(204) : REFUSED }
]

/** Editing or deleting a role: never a built-in one, never one the actor holds, and only with every permission it and its holders hold. */
const roleRule = (success: number) => (a: Actor, r: RoleTarget): Outcome => r.builtIn ? PROTECTED : r.own || !holdsAll(a, r.needs) ? REFUSED : ok(success)

const ROLE_OPS: RoleOp[] = [
  { name: 'set a role to one permission the actor holds', method: 'PUT', payload: (a) => ({ permissions: [[...a.permissions][0]] }), expect: roleRule(200) },
  {
    name: 'widen a role beyond the actor',
    method: 'PUT',
    payload: (a) => ({ permissions: beyond(a) }),
    expect: (a, r) => roleRule(200)(a, r).status === 200 && !a.admin ? REFUSED : roleRule(200)(a, r)
  },
  { name: 'delete a role', method: 'DELETE', expect: roleRule(204) }
]

const PLAIN_OPS: PlainOp[] = [
  { name: 'list users', permission: 'users:read', method: 'GET', url: () => '/users?limit=1', expect: () => ok(200) },
  { name: 'list roles', permission: 'users:read', method: 'GET', url: () => '/roles', expect: () => ok(200) },
  { name: 'create a role within the actor', permission: 'roles:write', method: 'POST', url: () => '/roles', payload: (a, name) => ({ name, permissions: [...a.permissions] }), expect: () => ok(201) },
  { name: 'create a role beyond the actor', permission: 'roles:write', method: 'POST', url: () => '/roles', payload: (a, name) => ({ name, permissions: beyond(a) }), expect: (a) => a.admin ? ok(201) : REFUSED },
  { name: 'rotate keys', permission: 'keys:rotate', method: 'POST', url: () => '/keys/rotate', expect: () => ok(200) },
  { name: 'read the audit trail', permission: 'audit:read', method: 'GET', url: () => '/audit-events?limit=1', expect: () => ok(200) }
]

let roleCount = 0
const uniqueRoleName = () => `px-${process.pid.toString(36)}-${Date.now().toString(36)}-${++roleCount}`

/** The app, and fixtures made straight in the database: the matrix needs hundreds of accounts, and a password hash costs. */
async function world (t: Test, url: string, env: Record<string, string> = {}) {
  const app = await build(t, { env: { DATABASE_URL: url, ...QUIET, ...env } })
  const made: string[] = []
  // Teardowns run last-added first: this runs before the app closes. PostgreSQL is shared: leave no roles behind.
  t.teardown(async () => {
    for (const name of made.reverse()) await app.roles.remove(name).catch(() => {})
  })
  const permissionsOf = new Map<string, Permission[]>([['user', []], ['admin', [...PERMISSIONS]]])

  async function role (permissions: Permission[], name = uniqueRoleName()) {
    if (!app.roles.exists(name)) await app.roles.create({ name, description: 'privilege matrix', permissions })
    made.push(name)
    permissionsOf.set(name, permissions)
    return name
  }

  /** A live session of the account, and its access token. */
  async function session (id: string, roles: string[]) {
    const now = new Date()
    const later = new Date(now.getTime() + 3_600_000).toISOString()
    const sid = randomUUID()
    await insertSession(app.db, { id: sid, userId: id, now: now.toISOString(), expiresAt: later, userAgent: 'privilege-matrix', ip: null, aal: 1, amr: 'pwd' },
      { hash: randomUUID(), sessionId: sid, now: now.toISOString(), expiresAt: later })
    return app.tokens.signAccessToken({ sub: id, sid, roles })
  }

  /** An account holding these roles (and user), with one live session. */
  async function account (roles: string[]) {
    const now = new Date().toISOString()
    const held = [...new Set(['user', ...roles])].sort()
    const row = await insertUser(app.db, {
      id: randomUUID(), email: uniqueEmail('px'), username: null, password_hash: 'not a hash: never signs in', email_verified: 0, disabled: 0, created_at: now, updated_at: now
    }, held)
    return { id: row.id, roles: held, permissions: [...new Set(held.flatMap((r) => permissionsOf.get(r) ?? []))], token: await session(row.id, held) }
  }

  const call = async (method: string, url: string, token: string, payload?: object) =>
    app.inject({ method: method as 'GET', url: ADMIN + url, headers: bearer(token), ...(payload && { payload: payload as Record<string, unknown> }) })

  const userState = async (id: string) => {
    const row = await findUserById(app.db, id)
    return row && { roles: row.roles, disabled: row.disabled, email_verified: row.email_verified, updated_at: String(row.updated_at) }
  }
  const roleState = async (name: string) => ({
    role: (await app.roles.list()).find((r) => r.name === name),
    holders: (await app.db.selectFrom('user_roles').select('user_id').where('role', '=', name).orderBy('user_id').execute()).map((r) => r.user_id)
  })
  /** The privilege_refused events of this actor about this target, oldest first. */
  const refusals = async (actor: string, target: string) =>
    (await app.db.selectFrom('auth_events').select(['detail']).where('type', '=', 'privilege_refused').where('user_id', '=', actor).orderBy('created_at').execute())
      .map((e) => JSON.parse(e.detail) as Record<string, unknown>).filter((d) => d.target === target)
  const alive = async (token: string) => (await app.inject({ url: FORWARD_AUTH, headers: bearer(token) })).statusCode === 200

  return { app, role, session, account, call, userState, roleState, refusals, alive, permissionsOf }
}

function expectOutcome (t: Test, res: Awaited<ReturnType<Awaited<ReturnType<typeof world>>['call']>>, want: Outcome, what: string) {
  if (want.code) {
    t.equal(res.statusCode, want.status, `${what}: ${want.status} ${want.code}`, { body: res.body })
    t.equal(res.headers['content-type']?.toString().split(';')[0], 'application/problem+json', `${what}: problem+json`)
    t.equal(res.body === '' ? undefined : json(res).code, want.code, `${what}: code ${want.code}`)
  } else {
    t.equal(res.statusCode, want.status, `${what}: ${want.status}`, { body: res.body })
  }
}

/** After a refusal of this kind, the trail names the actor, the operation and the target. */
async function expectRefusalRecorded (t: Test, w: Awaited<ReturnType<typeof world>>, actorId: string, target: string, before: number, want: Outcome, what: string) {
  const after = await w.refusals(actorId, target)
  if (want.code !== 'INSUFFICIENT_PRIVILEGE') return t.equal(after.length, before, `${what}: no privilege_refused event`)
  t.equal(after.length, before + 1, `${what}: one privilege_refused event`)
  t.match(after[after.length - 1], { actor: actorId, target, operation: String, reason: String }, `${what}: the event names actor, target and operation`)
}

for (const db of databases) {
  t.test(db.name, async (t) => {
    const w = await world(t, db.url)
    await w.role([], EMPTY_ROLE)

    for (const spec of ACTORS) {
      t.test(`actor: ${spec.name}`, async (t) => {
        const admin = spec.name === 'admin'
        const role = admin ? 'admin' : await w.role([...spec.permissions])
        const actorAccount = await w.account([role])
        const lacking = PERMISSIONS.find((p) => !spec.permissions.includes(p))
        const actor: Actor = { id: actorAccount.id, role, permissions: new Set(spec.permissions), admin, lacking }
        // A fresh session per request: ending one's own sessions is on the list.
        const token = () => w.session(actor.id, actorAccount.roles)
        const extra = lacking && await w.role([lacking])

        const userTarget = async (kind: UserTargetKind): Promise<UserTarget> => {
          if (kind === 'self') {
            const own = await token()
            return { kind, id: actor.id, roles: actorAccount.roles, permissions: [...spec.permissions], self: true, token: own }
          }
          const roles = { plain: [], admin: ['admin'], stronger: [role, extra!], peer: [role] }[kind]
          return { kind, self: false, ...await w.account(roles) }
        }
        const userKinds: UserTargetKind[] = admin ? ['plain', 'admin', 'peer', 'self'] : ['plain', 'admin', 'stronger', 'peer', 'self']

        for (const op of USER_OPS) {
          t.test(op.name, async (t) => {
            for (const kind of userKinds) {
              const target = await userTarget(kind)
              const own = kind === 'self' ? target.token : await token()
              const want = actor.permissions.has(op.permission) ? op.expect(actor, target) : FORBIDDEN
              const what = `${op.name} on ${kind}`
              const before = await w.userState(target.id)
              const events = (await w.refusals(actor.id, target.id)).length
              const res = await w.call(op.method, op.path(target.id), own, op.payload?.(target))
              expectOutcome(t, res, want, what)
              if (res.statusCode >= 300) {
                t.same(await w.userState(target.id), before, `${what}: the account is unchanged`)
                t.ok(await w.alive(target.token), `${what}: its session is alive`)
              }
              await expectRefusalRecorded(t, w, actor.id, target.id, events, want, what)
            }
          })
        }

        const roleTarget = async (kind: RoleTargetKind): Promise<RoleTarget> => {
          const within: Permission[] = [[...spec.permissions][0]]
          if (kind === 'user' || kind === 'admin') return { kind, name: kind, builtIn: true, own: kind === role, needs: w.permissionsOf.get(kind)! }
          if (kind === 'own') return { kind, name: role, builtIn: admin, own: true, needs: [...spec.permissions] }
          if (kind === 'beyond') return { kind, name: await w.role([lacking!]), builtIn: false, own: false, needs: [lacking!] }
          const name = await w.role(within)
          if (kind === 'fresh') return { kind, name, builtIn: false, own: false, needs: within }
          const holder = await w.account(kind === 'held by an admin' ? ['admin', name] : [name])
          return { kind, name, builtIn: false, own: false, needs: [...new Set([...within, ...holder.permissions])] }
        }
        const roleKinds: RoleTargetKind[] = ['fresh', 'own', 'user', 'admin', ...(admin ? [] : ['beyond' as const]), 'held by an admin', 'held by a plain user']

        for (const op of ROLE_OPS) {
          t.test(op.name, async (t) => {
            for (const kind of roleKinds) {
              const target = await roleTarget(kind)
              const want = actor.permissions.has('roles:write') ? op.expect(actor, target) : FORBIDDEN
              const what = `${op.name}: ${kind}`
              const before = await w.roleState(target.name)
              const events = (await w.refusals(actor.id, target.name)).length
              const res = await w.call(op.method, `/roles/${target.name}`, await token(), op.payload?.(actor))
              expectOutcome(t, res, want, what)
              // Other test files add holders of user and admin meanwhile: only the role itself is compared for those.
              if (res.statusCode >= 300 && target.builtIn) t.same((await w.roleState(target.name)).role, before.role, `${what}: the role is unchanged`)
              if (res.statusCode >= 300 && !target.builtIn) t.same(await w.roleState(target.name), before, `${what}: the role and its holders are unchanged`)
              if (!target.builtIn) await expectRefusalRecorded(t, w, actor.id, target.name, events, want, what)
            }
          })
        }

        for (const op of PLAIN_OPS) {
          t.test(op.name, async (t) => {
            const name = uniqueRoleName()
            const want = actor.permissions.has(op.permission) ? op.expect(actor) : FORBIDDEN
            const res = await w.call(op.method, op.url(name), await token(), op.payload?.(actor, name))
            if (res.statusCode === 201) await w.role([], name) // removed at the end
            expectOutcome(t, res, want, op.name)
            if (op.method === 'POST' && op.url(name) === '/roles' && res.statusCode >= 300) t.notOk(w.app.roles.exists(name), 'no role made')
          })
        }
      })
    }

    t.test('issue 13: a users:write holder neither makes itself admin nor touches an admin', async (t) => {
      const writer = await w.account([await w.role(['users:write'])])
      const admin = await w.account(['admin'])
      const self = expectProblem(t, await w.call('PATCH', user(writer.id), writer.token, { roles: [...writer.roles, 'admin'] }), 403, 'INSUFFICIENT_PRIVILEGE')
      t.match(self.detail, /^You cannot do this: .+\.$/, 'the message says why')
      t.same((await w.userState(writer.id))?.roles, writer.roles, 'not admin')
      for (const [method, path, payload] of [['PATCH', user(admin.id), { roles: [] }], ['PATCH', user(admin.id), { disabled: true }], ['DELETE', user(admin.id)]] as const) {
        expectProblem(t, await w.call(method, path, writer.token, payload), 403, 'INSUFFICIENT_PRIVILEGE')
      }
      const after = await w.userState(admin.id)
      t.same(after?.roles, ['admin', 'user'], 'the admin is still an admin')
      t.notOk(after?.disabled, 'and enabled')
      t.ok(await w.alive(admin.token), 'with its session')
      const events = await w.refusals(writer.id, writer.id)
      t.equal(events.length, 1)
      t.match(events[0], { actor: writer.id, operation: 'update_user', target: writer.id, reason: 'you cannot change your own roles' }, 'the refusal is on the trail')
    })

    t.test('issue 13: the user role is not editable, so no permission reaches every account', async (t) => {
      const writer = await w.account([await w.role(['roles:write'])])
      const admin = await w.account(['admin'])
      for (const token of [writer.token, admin.token]) {
        expectProblem(t, await w.call('PUT', '/roles/user', token, { permissions: [...PERMISSIONS] }), 400, 'ROLE_PROTECTED')
        expectProblem(t, await w.call('PUT', '/roles/user', token, { permissions: [] }), 400, 'ROLE_PROTECTED')
      }
      t.same((await w.roleState('user')).role?.permissions, [], 'user grants nothing')
      for (const p of PERMISSIONS) t.notOk(w.app.roles.grants(['user'], p), `user does not grant ${p}`)
    })

    t.test('a token naming a role its account no longer holds gives no privilege in the service', async (t) => {
      const plain = await w.account([])
      const victim = await w.account([])
      // Signed with admin in it, as a token issued before the role was taken away (whose revocation has not reached this replica).
      const stale = await w.app.tokens.signAccessToken({ sub: plain.id, sid: randomUUID(), roles: ['user', 'admin'] })
      expectProblem(t, await w.call('PATCH', user(victim.id), stale, { disabled: true }), 403, 'INSUFFICIENT_PRIVILEGE')
      expectProblem(t, await w.call('PATCH', user(plain.id), stale, { roles: ['admin'] }), 403, 'INSUFFICIENT_PRIVILEGE')
      expectProblem(t, await w.call('POST', '/roles', stale, { name: uniqueRoleName(), permissions: ['users:read'] }), 403, 'INSUFFICIENT_PRIVILEGE')
      t.notOk((await w.userState(victim.id))?.disabled, 'the victim is enabled')
      t.same((await w.userState(plain.id))?.roles, ['user'], 'the holder is not admin again')
    })

    t.test('a role change voids the account\'s pending one-time tokens; other changes do not', async (t) => {
      const admin = await w.account(['admin'])
      const target = await w.account([])
      const token = async () => {
        const hash = randomUUID()
        const now = new Date()
        await w.app.db.insertInto('one_time_tokens').values({ token_hash: hash, user_id: target.id, purpose: 'reset_password', email: 'x@example.com', created_at: now.toISOString(), expires_at: new Date(now.getTime() + 3_600_000).toISOString() }).execute()
        return hash
      }
      const usedAt = async (hash: string) => (await w.app.db.selectFrom('one_time_tokens').select('used_at').where('token_hash', '=', hash).executeTakeFirstOrThrow()).used_at
      const kept = await token()
      t.equal((await w.call('PATCH', user(target.id), admin.token, { email_verified: true })).statusCode, 200)
      t.equal(await usedAt(kept), null, 'email_verified alone leaves it')
      t.equal((await w.call('PATCH', user(target.id), admin.token, { roles: [EMPTY_ROLE] })).statusCode, 200)
      t.not(await usedAt(kept), null, 'a role added voids it')
      const second = await token()
      t.equal((await w.call('PATCH', user(target.id), admin.token, { roles: [] })).statusCode, 200)
      t.not(await usedAt(second), null, 'a role removed voids it')
      const third = await token()
      expectProblem(t, await w.call('PATCH', user(target.id), (await w.account([await w.role(['users:write'])])).token, { roles: ['admin'] }), 403, 'INSUFFICIENT_PRIVILEGE')
      t.equal(await usedAt(third), null, 'a refused change voids nothing')
    })
  })
}

t.test('the seed strips any permission put on the built-in user role', async (t) => {
  const url = tempSqliteUrl(t)
  const first = await build(t, { env: { DATABASE_URL: url, ...QUIET } })
  // What an attack through the old PUT /roles/user left behind.
  await first.db.insertInto('role_permissions').values([{ role: 'user', permission: 'users:write' }, { role: 'user', permission: 'roles:write' }]).execute()
  await first.db.updateTable('roles').set({ description: 'changed' }).where('name', '=', 'user').execute()
  const second = await build(t, { env: { DATABASE_URL: url, ...QUIET } })
  t.same((await second.roles.list()).find((r) => r.name === 'user'), { name: 'user', description: 'Every account has it', permissions: [] }, 'user is as defined again')
  t.notOk(second.roles.grants(['user'], 'users:write'), 'nor in the cache')
  t.same((await second.roles.list()).find((r) => r.name === 'admin')?.permissions, [...PERMISSIONS].sort(), 'admin keeps every permission')
  const events = await second.db.selectFrom('auth_events').select('detail').where('type', '=', 'built_in_role_reset').execute()
  t.equal(events.length, 1, 'the reset is on the trail')
  t.match(JSON.parse(events[0]?.detail ?? '{}'), { role: 'user', removed: ['roles:write', 'users:write'] })
})

t.test('permissions are declared in route config; the old preHandler decorators are gone', async (t) => {
  const w = await world(t, 'sqlite::memory:')
  t.notOk(w.app.hasDecorator('requirePermission'), 'no requirePermission')
  t.notOk(w.app.hasDecorator('requireRole'), 'no requireRole')

  const config = loadConfig({ DATABASE_URL: 'sqlite::memory:', LOG_LEVEL: 'silent', NODE_ENV: 'test' })
  const bare = Fastify(serverOptions(config))
  t.teardown(() => bare.close())
  await bare.register(app, { config })
  t.throws(() => bare.get('/unguarded', { config: { permission: 'users:read' } }, async () => 'no'), /auth: 'required'/, 'a permission without required authentication is refused when the route is added')
})
