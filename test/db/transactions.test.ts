import { randomUUID } from 'node:crypto'
import { hash } from '@node-rs/argon2'
import { Secret, TOTP } from 'otpauth'
import type { FastifyInstance, InjectOptions } from 'fastify'
import { sql } from 'kysely'
import pg from 'pg'
import t, { type Test } from 'tap'
import { bearer, build, expectProblem, GOOD_PASSWORD, json, login, signup, tempSqliteUrl, uniqueEmail } from '../helper.js'
import { startMailbox, tokenIn } from '../mailbox.js'

/**
 * A change that writes more than once is one transaction: when its last
 * write (the audit event) fails, everything it wrote before is rolled back,
 * on SQLite and PostgreSQL. A trigger makes the database refuse audit events
 * while a change runs; the change answers 500, and the test checks that
 * nothing of it is left.
 */

const box = await startMailbox(t)
const KEY_SECRET = 'transaction-tests-key-encryption-secret-0123'

/** A database of the test's own: a SQLite file, or a fresh PostgreSQL schema (dropped at the end). */
async function databases (t: Test) {
  const list = [{ name: 'sqlite', url: tempSqliteUrl(t) }]
  const base = process.env.TEST_DATABASE_URL
  if (base) {
    const schema = `tx_${process.pid}_${randomUUID().slice(0, 8)}`
    const admin = new pg.Client({ connectionString: base })
    await admin.connect()
    await admin.query(`create schema "${schema}"`)
    t.teardown(async () => { await admin.query(`drop schema "${schema}" cascade`); await admin.end() })
    list.push({ name: 'postgres', url: `${base}${base.includes('?') ? '&' : '?'}options=-c%20search_path%3D${schema}` })
  }
  return list
}

/** Runs `change` while the database refuses every audit event. */
async function withAuditRefused<T> (app: FastifyInstance, postgres: boolean, change: () => Promise<T>): Promise<T> {
  if (postgres) {
    await sql`create or replace function refuse_audit() returns trigger language plpgsql as $$ begin raise exception 'audit refused by the test'; end $$`.execute(app.db)
    await sql`create trigger refuse_audit before insert on auth_events for each row execute function refuse_audit()`.execute(app.db)
  } else {
    await sql`create trigger refuse_audit before insert on auth_events begin select raise(abort, 'audit refused by the test'); end`.execute(app.db)
  }
  try {
    return await change()
  } finally {
    await sql`drop trigger refuse_audit${sql.raw(postgres ? ' on auth_events' : '')}`.execute(app.db)
  }
}

for (const db of await databases(t)) {
  t.test(db.name, async (t) => {
    const adminEmail = uniqueEmail('tx-admin')
    const app = await build(t, { env: { DATABASE_URL: db.url, KEY_ENCRYPTION_SECRET: KEY_SECRET, SMTP_URL: box.url, ADMIN_EMAIL: adminEmail, ADMIN_PASSWORD: GOOD_PASSWORD } })
    const postgres = db.name === 'postgres'
    const admin = bearer((await login(app, adminEmail)).access_token)
    const refused = (request: InjectOptions) => withAuditRefused(app, postgres, () => app.inject(request))

    /** A user with two sessions: `first` makes the requests, `other` is the one a change may end. */
    async function user () {
      const email = uniqueEmail('tx')
      const first = await signup(app, { email })
      const other = await login(app, email)
      await app.background.idle()
      await box.next(email)
      return { email, id: first.user.id as string, first, other }
    }
    const alive = async (session: Record<string, any>) => (await app.inject({ method: 'POST', url: '/api/v1/auth/refresh', payload: { refresh_token: session.refresh_token } })).statusCode === 200
    const signsIn = async (email: string, password: string) => (await app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email, password } })).statusCode === 200
    const events = async (userId: string, type: string) => (await app.db.selectFrom('auth_events').select('id').where('user_id', '=', userId).where('type', '=', type).execute()).length

    t.test('signup: no account without its event', async (t) => {
      const email = uniqueEmail('tx-signup')
      expectProblem(t, await refused({ method: 'POST', url: '/api/v1/auth/signup', payload: { email, password: GOOD_PASSWORD } }), 500, 'INTERNAL_ERROR')
      t.equal((await app.db.selectFrom('users').select('id').where('email', '=', email).execute()).length, 0, 'no account')
      t.equal((await app.inject({ method: 'POST', url: '/api/v1/auth/signup', payload: { email, password: GOOD_PASSWORD } })).statusCode, 201, 'the address is free')
    })

    t.test('password change: the password, the other sessions and the event together', async (t) => {
      const u = await user()
      const res = await refused({ method: 'POST', url: '/api/v1/auth/password/change', headers: bearer(u.first.access_token), payload: { current_password: GOOD_PASSWORD, new_password: 'a brand new passphrase' } })
      expectProblem(t, res, 500, 'INTERNAL_ERROR')
      t.ok(await signsIn(u.email, GOOD_PASSWORD), 'the old password still signs in')
      t.ok(await alive(u.other), 'the other session lives')
      t.equal(await events(u.id, 'password_changed'), 0)
    })

    t.test('password reset: the token, the password, the sessions and the event together', async (t) => {
      const u = await user()
      await app.inject({ method: 'POST', url: '/api/v1/auth/password/forgot', payload: { email: u.email } })
      await app.background.idle()
      const token = tokenIn(await box.next(u.email))
      const reset = { method: 'POST' as const, url: '/api/v1/auth/password/reset', payload: { token, new_password: 'a brand new passphrase' } }
      expectProblem(t, await refused(reset), 500, 'INTERNAL_ERROR')
      t.ok(await signsIn(u.email, GOOD_PASSWORD), 'the old password still signs in')
      t.ok(await alive(u.other), 'the other session lives')
      t.equal((await app.inject(reset)).statusCode, 204, 'the token was not spent: it works now')
    })

    t.test('account deletion: the account, its sessions and the event together', async (t) => {
      const u = await user()
      expectProblem(t, await refused({ method: 'DELETE', url: '/api/v1/users/me', headers: bearer(u.first.access_token), payload: { password: GOOD_PASSWORD } }), 500, 'INTERNAL_ERROR')
      t.ok(await signsIn(u.email, GOOD_PASSWORD), 'the account is there')
      t.ok(await alive(u.other), 'its sessions live')
    })

    t.test('change of address: the token, the address and the event together', async (t) => {
      const u = await user()
      const newEmail = uniqueEmail('tx-new')
      t.equal((await app.inject({ method: 'POST', url: '/api/v1/users/me/email', headers: bearer(u.first.access_token), payload: { new_email: newEmail, password: GOOD_PASSWORD } })).statusCode, 202)
      await app.background.idle()
      const verify = { method: 'POST' as const, url: '/api/v1/auth/email/verify', payload: { token: tokenIn(await box.next(newEmail)) } }
      expectProblem(t, await refused(verify), 500, 'INTERNAL_ERROR')
      t.ok(await signsIn(u.email, GOOD_PASSWORD), 'the old address still signs in')
      t.equal((await app.inject(verify)).statusCode, 200, 'the token was not spent: it works now')
    })

    t.test('signing out everywhere and a detected theft: the sessions and the event together', async (t) => {
      const u = await user()
      expectProblem(t, await refused({ method: 'DELETE', url: '/api/v1/users/me/sessions', headers: bearer(u.first.access_token) }), 500, 'INTERNAL_ERROR')
      t.ok(await alive(u.other), 'the other session lives')
    })

    t.test('sign-in: the renewed password hash, the session and the event together', async (t) => {
      const u = await user()
      // A hash made with other argon2 parameters: the sign-in renews it in its change.
      const oldHash = await hash(GOOD_PASSWORD, { memoryCost: 19456 * 2, timeCost: 2, parallelism: 1 })
      await app.db.updateTable('users').set({ password_hash: oldHash }).where('id', '=', u.id).execute()
      const sessions = async () => (await app.db.selectFrom('sessions').select('id').where('user_id', '=', u.id).execute()).length
      const before = await sessions()
      expectProblem(t, await refused({ method: 'POST', url: '/api/v1/auth/login', payload: { email: u.email, password: GOOD_PASSWORD } }), 500, 'INTERNAL_ERROR')
      t.equal(await sessions(), before, 'no session')
      const row = await app.db.selectFrom('users').select('password_hash').where('id', '=', u.id).executeTakeFirstOrThrow()
      t.equal(row.password_hash, oldHash, 'the hash is not renewed')
      t.ok(await signsIn(u.email, GOOD_PASSWORD), 'it signs in now')
      t.equal(await sessions(), before + 1, 'with one session more')
    })

    t.test('key rotation: the new key, the old keys\' retirement and the event together', async (t) => {
      const keys = () => app.db.selectFrom('signing_keys').select(['kid', 'retired_at']).orderBy('kid').execute()
      const before = await keys()
      expectProblem(t, await refused({ method: 'POST', url: '/api/v1/admin/keys/rotate', headers: admin }), 500, 'INTERNAL_ERROR')
      t.same(await keys(), before, 'no key added, none retired')
      t.equal((await app.inject({ method: 'POST', url: '/api/v1/admin/keys/rotate', headers: admin })).statusCode, 200, 'it rotates now')
      t.equal((await keys()).length, before.length + 1)
    })

    t.test('cli admin:promote: the role and the event together', async (t) => {
      const u = await user()
      await t.rejects(withAuditRefused(app, postgres, () => app.operators.promoteAdmin(u.email)), /audit refused/)
      t.same(json(await app.inject({ url: `/api/v1/admin/users/${u.id}`, headers: admin })).roles, ['user'], 'not promoted')
      t.equal(await app.operators.promoteAdmin(u.email), 'promoted', 'it promotes now')
    })

    t.test('the built-in roles\' reset at start, and its event, together', async (t) => {
      await app.db.insertInto('role_permissions').values({ role: 'user', permission: 'users:read' }).execute()
      const granted = async () => (await app.db.selectFrom('role_permissions').select('permission').where('role', '=', 'user').execute()).map((r) => r.permission)
      const env = { DATABASE_URL: db.url, KEY_ENCRYPTION_SECRET: KEY_SECRET }
      await t.rejects(withAuditRefused(app, postgres, () => build(t, { env })), /audit refused/, 'a start that cannot record the reset fails')
      t.same(await granted(), ['users:read'], 'the change was not half made: the permission is still there')
      await build(t, { env })
      t.same(await granted(), [], 'the next start resets it')
      t.equal((await app.db.selectFrom('auth_events').select('id').where('type', '=', 'built_in_role_reset').execute()).length, 1, 'with its event')
    })

    t.test('second factors: confirming, new recovery codes, removing and an admin reset write with their events, or not at all', async (t) => {
      const u = await user()
      const code = (secret: string, offset = 0) => new TOTP({ secret: Secret.fromBase32(secret) }).generate({ timestamp: Date.now() + offset * 30_000 })
      const started = json(await app.inject({ method: 'POST', url: '/api/v1/users/me/mfa/totp', headers: bearer(u.first.access_token), payload: { password: GOOD_PASSWORD } }))
      const confirm = { method: 'POST' as const, url: '/api/v1/users/me/mfa/totp/confirm', headers: bearer(u.first.access_token), payload: { code: code(started.secret, -1) } }
      expectProblem(t, await refused(confirm), 500, 'INTERNAL_ERROR')
      const factor = () => app.db.selectFrom('mfa_factors').select(['confirmed_at', 'last_step']).where('user_id', '=', u.id).executeTakeFirst()
      t.match(await factor(), { confirmed_at: null, last_step: null }, 'still pending, its code not spent')
      t.equal((await app.db.selectFrom('recovery_codes').select('code_hash').where('user_id', '=', u.id).execute()).length, 0, 'no recovery codes')
      const codes = json(await app.inject({ ...confirm, payload: { code: code(started.secret, -1) } })).recovery_codes as string[]
      t.equal(codes.length, 10, 'the same code confirms now')

      // A recovery code is spent with its event, or not at all.
      const mfaToken = () => app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email: u.email, password: GOOD_PASSWORD } }).then((r) => json(r).mfa_token)
      const byRecovery = async () => ({ method: 'POST' as const, url: '/api/v1/auth/mfa/verify', payload: { mfa_token: await mfaToken(), recovery_code: codes[0] } })
      expectProblem(t, await refused(await byRecovery()), 500, 'INTERNAL_ERROR')
      t.equal((await app.db.selectFrom('recovery_codes').select('code_hash').where('user_id', '=', u.id).where('used_at', 'is not', null).execute()).length, 0, 'the code is not spent')
      t.equal((await app.inject(await byRecovery())).statusCode, 200, 'it works now')

      const aal2 = json(await app.inject({ method: 'POST', url: '/api/v1/auth/mfa/verify', headers: bearer(u.first.access_token), payload: { code: code(started.secret, 0) } })).access_token
      expectProblem(t, await refused({ method: 'POST', url: '/api/v1/users/me/mfa/recovery-codes', headers: bearer(aal2) }), 500, 'INTERNAL_ERROR')
      const stored = async () => (await app.db.selectFrom('recovery_codes').select('code_hash').where('user_id', '=', u.id).orderBy('code_hash').execute()).map((r) => r.code_hash)
      const before = await stored()
      t.equal(before.length, 10, 'the old codes stay')
      expectProblem(t, await refused({ method: 'DELETE', url: '/api/v1/users/me/mfa/totp', headers: bearer(aal2) }), 500, 'INTERNAL_ERROR')
      t.ok(await factor(), 'the factor stays')
      t.same(await stored(), before, 'and its codes')
      expectProblem(t, await refused({ method: 'DELETE', url: `/api/v1/admin/users/${u.id}/mfa`, headers: admin }), 500, 'INTERNAL_ERROR')
      t.ok(await factor(), 'an admin reset refused: the factor stays')
      t.ok(await alive(u.other), 'and the sessions live')
      t.equal((await app.inject({ method: 'DELETE', url: `/api/v1/admin/users/${u.id}/mfa`, headers: admin })).statusCode, 204, 'it resets now')
      t.notOk(await factor())
      t.notOk(await alive(u.other), 'ending the sessions')
    })

    t.test('admin: a role change, its voided tokens, its ended sessions and its events together', async (t) => {
      const u = await user()
      t.equal((await app.inject({ method: 'PATCH', url: `/api/v1/admin/users/${u.id}`, headers: admin, payload: { roles: ['user', 'admin'] } })).statusCode, 200)
      await app.inject({ method: 'POST', url: '/api/v1/auth/password/forgot', payload: { email: u.email } })
      await app.background.idle()
      const token = tokenIn(await box.next(u.email))
      const session = await login(app, u.email)
      expectProblem(t, await refused({ method: 'PATCH', url: `/api/v1/admin/users/${u.id}`, headers: admin, payload: { roles: ['user'], disabled: true } }), 500, 'INTERNAL_ERROR')
      const now = json(await app.inject({ url: `/api/v1/admin/users/${u.id}`, headers: admin }))
      t.same([now.roles, now.disabled], [['admin', 'user'], false], 'roles and flag unchanged')
      t.ok(await alive(session), 'the session lives')
      t.equal((await app.inject({ method: 'POST', url: '/api/v1/auth/password/reset', payload: { token, new_password: 'a brand new passphrase' } })).statusCode, 204, 'the pending reset was not voided')
    })

    t.test('admin: ending a user\'s sessions, and a role\'s creation, change and deletion, with their events', async (t) => {
      const u = await user()
      expectProblem(t, await refused({ method: 'DELETE', url: `/api/v1/admin/users/${u.id}/sessions`, headers: admin }), 500, 'INTERNAL_ERROR')
      t.ok(await alive(u.other), 'the sessions live')
      const name = `tx-${randomUUID().slice(0, 8)}`
      expectProblem(t, await refused({ method: 'POST', url: '/api/v1/admin/roles', headers: admin, payload: { name, permissions: ['audit:read'] } }), 500, 'INTERNAL_ERROR')
      t.notOk(json(await app.inject({ url: '/api/v1/admin/roles', headers: admin })).some((r: { name: string }) => r.name === name), 'no role')
      t.equal((await app.inject({ method: 'POST', url: '/api/v1/admin/roles', headers: admin, payload: { name, permissions: ['audit:read'] } })).statusCode, 201)
      t.equal((await app.inject({ method: 'PATCH', url: `/api/v1/admin/users/${u.id}`, headers: admin, payload: { roles: ['user', name] } })).statusCode, 200)
      const holder = await login(app, u.email)
      expectProblem(t, await refused({ method: 'PUT', url: `/api/v1/admin/roles/${name}`, headers: admin, payload: { permissions: ['users:read'] } }), 500, 'INTERNAL_ERROR')
      expectProblem(t, await refused({ method: 'DELETE', url: `/api/v1/admin/roles/${name}`, headers: admin }), 500, 'INTERNAL_ERROR')
      const role = json(await app.inject({ url: '/api/v1/admin/roles', headers: admin })).find((r: { name: string }) => r.name === name)
      t.same(role?.permissions, ['audit:read'], 'the role is there, unchanged')
      t.ok(await alive(holder), 'its holder\'s session lives')
    })
  })
}
