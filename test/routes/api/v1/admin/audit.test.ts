import { randomUUID } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import t, { type Test } from 'tap'
import { bearer, build, databases, expectProblem, GOOD_PASSWORD, json, uniqueEmail } from '../../../../helper.js'
import { startMailbox, tokenIn } from '../../../../mailbox.js'

const EVENTS = '/api/v1/admin/audit-events'
const USERS = '/api/v1/admin/users'
const SIGNUP = '/api/v1/auth/signup'
const LOGIN = '/api/v1/auth/login'
const REFRESH = '/api/v1/auth/refresh'
const LOGOUT = '/api/v1/auth/logout'
const MY_EVENTS = '/api/v1/users/me/events'
const LOCALHOST = '127.0.0.1'
const DAY = 86_400_000
const NEW_PASSWORD = 'a brand new passphrase for the trail'
const RESET_PASSWORD = 'yet another passphrase from the reset'

/** Rate limits and load shedding are not what these tests are about. */
const QUIET = { RATE_LIMIT_ENABLED: 'false', MAX_EVENT_LOOP_DELAY_MS: '0' }

type Event = Record<string, any>

const agent = () => `audit-test/${randomUUID()}`
const sidOf = (token: string): string => JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8')).sid
/** A password no other row can hold by chance. */
const secret = () => `pw-${randomUUID()}-secret`

const box = await startMailbox(t)

for (const db of databases) {
  t.test(db.name, async (t) => {
    let clock = new Date()
    const adminEmail = uniqueEmail('audit-admin')
    const app = await build(t, { env: { DATABASE_URL: db.url, ...QUIET, SMTP_URL: box.url, ADMIN_EMAIL: adminEmail, ADMIN_PASSWORD: GOOD_PASSWORD }, now: () => clock })

    const post = (url: string, payload: Record<string, unknown>, headers: Record<string, string> = {}) => app.inject({ method: 'POST', url, payload, headers })

    // The admin signs in again when its token would expire under the moved clock.
    let admin = { token: '', at: 0, id: '' }
    async function asAdmin (headers: Record<string, string> = {}) {
      if (clock.getTime() - admin.at > 10 * 60_000 || clock.getTime() < admin.at) {
        const res = await post(LOGIN, { email: adminEmail, password: GOOD_PASSWORD })
        if (res.statusCode !== 200) throw new Error(`admin login: ${res.statusCode} ${res.body}`)
        admin = { token: json(res).access_token, at: clock.getTime(), id: json(res).user.id }
      }
      return { ...bearer(admin.token), ...headers }
    }
    await asAdmin()

    const listEvents = async (query: Record<string, string>) => app.inject({ url: EVENTS, query, headers: await asAdmin() })
    /** Every event of a user (optionally of a type), newest first, through the admin API. */
    async function eventsOf (userId: string, type?: string): Promise<Event[]> {
      const items: Event[] = []
      let cursor: string | null = null
      do {
        const res = await listEvents({ user_id: userId, limit: '100', ...(type && { type }), ...(cursor && { cursor }) })
        if (res.statusCode !== 200) throw new Error(`events: ${res.statusCode} ${res.body}`)
        items.push(...json(res).items)
        cursor = json(res).next_cursor
      } while (cursor)
      return items
    }
    const only = async (t: Test, userId: string, type: string) => {
      const found = await eventsOf(userId, type)
      t.equal(found.length, 1, `one ${type} event`)
      return found[0] ?? {}
    }
    function expectClient (t: Test, event: Event, userAgent: string, ip = LOCALHOST) {
      t.equal(event.ip, ip, `${event.type}: ip ${ip}`)
      t.equal(event.user_agent, userAgent, `${event.type}: the user agent`)
    }

    async function signup (email: string, headers: Record<string, string>, password = GOOD_PASSWORD) {
      const res = await post(SIGNUP, { email, password }, headers)
      if (res.statusCode !== 201) throw new Error(`signup: ${res.statusCode} ${res.body}`)
      return json(res)
    }
    async function login (email: string, headers: Record<string, string>, password = GOOD_PASSWORD) {
      const res = await post(LOGIN, { email, password }, headers)
      if (res.statusCode !== 200) throw new Error(`login: ${res.statusCode} ${res.body}`)
      return json(res)
    }

    t.test('a user\'s own actions are on the trail, each with ip and user agent', async (t) => {
      const ua = agent()
      const headers = { 'user-agent': ua }
      const email = uniqueEmail('trail')
      const signed = await signup(email, headers)
      const userId: string = signed.user.id

      await app.background.idle()
      const verification = await box.next(email)
      t.equal((await post('/api/v1/auth/email/verify', { token: tokenIn(verification) }, headers)).statusCode, 200, 'email verified')

      const first = await login(email, headers)
      t.equal((await post(LOGIN, { email, password: secret() }, headers)).statusCode, 401, 'a wrong password')

      t.equal((await post(REFRESH, { refresh_token: first.refresh_token }, headers)).statusCode, 200, 'rotated')
      clock = new Date(clock.getTime() + 11_000)
      expectProblem(t, await post(REFRESH, { refresh_token: first.refresh_token }, headers), 401, 'REFRESH_TOKEN_REUSED')

      const second = await login(email, headers)
      t.equal((await app.inject({ method: 'POST', url: LOGOUT, headers: { ...headers, ...bearer(second.access_token) } })).statusCode, 204, 'logged out')

      const third = await login(email, headers)
      const changed = await app.inject({ method: 'POST', url: '/api/v1/auth/password/change', headers: { ...headers, ...bearer(third.access_token) }, payload: { current_password: GOOD_PASSWORD, new_password: NEW_PASSWORD } })
      t.equal(changed.statusCode, 204, 'password changed')

      t.equal((await post('/api/v1/auth/password/forgot', { email }, headers)).statusCode, 202)
      await app.background.idle()
      const reset = await post('/api/v1/auth/password/reset', { token: tokenIn(await box.next(email)), new_password: RESET_PASSWORD }, headers)
      t.equal(reset.statusCode, 204, 'password reset')

      const events = await eventsOf(userId)
      const types = events.map((e) => e.type)
      for (const type of ['signup', 'email_verified', 'login_succeeded', 'login_failed', 'refresh_token_reused', 'logout', 'password_changed', 'password_reset']) {
        t.ok(types.includes(type), `${type} recorded`)
      }
      for (const event of events) {
        expectClient(t, event, ua)
        t.equal(event.user_id, userId, `${event.type}: the user's id`)
        t.match(event.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/, `${event.type}: ISO 8601 UTC`)
        t.type(event.detail, 'object', `${event.type}: detail is an object`)
      }
      t.equal(events.filter((e) => e.type === 'login_succeeded').length, 3, 'one login_succeeded per sign-in')
      t.same(events.find((e) => e.type === 'login_failed')?.detail, { reason: 'wrong_password' })
      t.equal(events.find((e) => e.type === 'refresh_token_reused')?.session_id, sidOf(first.access_token), 'reuse names the session')
      t.equal(events.find((e) => e.type === 'logout')?.session_id, sidOf(second.access_token), 'logout names the session')
      t.equal(events.find((e) => e.type === 'password_changed')?.session_id, sidOf(third.access_token), 'the change names the session kept')
      for (const password of [GOOD_PASSWORD, NEW_PASSWORD, RESET_PASSWORD]) {
        t.notOk(JSON.stringify(events).includes(password), 'no password anywhere in the events')
      }
    })

    t.test('login failures: a reason code, never the password', async (t) => {
      const ua = agent()
      const headers = { 'user-agent': ua }
      const rowsOf = (where: { userAgent: string, type: string }) =>
        app.db.selectFrom('auth_events').selectAll().where('user_agent', '=', where.userAgent).where('type', '=', where.type).execute()

      const unknownPassword = secret()
      t.equal((await post(LOGIN, { email: uniqueEmail('nobody'), password: unknownPassword }, headers)).statusCode, 401)
      const [unknown] = await rowsOf({ userAgent: ua, type: 'login_failed' })
      t.ok(unknown, 'recorded for an unknown account')
      t.equal(unknown?.user_id, null, 'no user')
      t.same(JSON.parse(unknown?.detail ?? '{}'), { reason: 'unknown_account' })
      t.equal(unknown?.ip, LOCALHOST)

      const email = uniqueEmail('failures')
      const user = await signup(email, headers)
      const wrong = secret()
      t.equal((await post(LOGIN, { email, password: wrong }, headers)).statusCode, 401)
      const wrongEvent = await only(t, user.user.id, 'login_failed')
      t.same(wrongEvent.detail, { reason: 'wrong_password' })
      expectClient(t, wrongEvent, ua)

      const disabledBy = await app.inject({ method: 'PATCH', url: `${USERS}/${user.user.id}`, headers: await asAdmin(), payload: { disabled: true } })
      t.equal(disabledBy.statusCode, 200)
      clock = new Date(clock.getTime() + 1000)
      expectProblem(t, await post(LOGIN, { email, password: GOOD_PASSWORD }, headers), 401, 'INVALID_CREDENTIALS')
      const failures = await eventsOf(user.user.id, 'login_failed')
      t.same(failures.map((e) => e.detail.reason), ['disabled', 'wrong_password'], 'newest first: disabled, then wrong_password')

      const rows = [...await rowsOf({ userAgent: ua, type: 'login_failed' })]
      t.equal(rows.length, 3, 'three failures from this client')
      for (const password of [unknownPassword, wrong, GOOD_PASSWORD]) {
        t.notOk(rows.some((row) => JSON.stringify(row).includes(password)), 'no row holds the password')
      }
      const anywhere = await app.db.selectFrom('auth_events').select('id')
        .where((eb) => eb.or([unknownPassword, wrong].map((p) => eb('detail', 'like', `%${p}%`)))).execute()
      t.same(anywhere, [], 'no event in the whole trail holds either password')
    })

    t.test('admin actions are on the trail under the admin\'s id, with ip and user agent', async (t) => {
      const ua = agent()
      const headers = await asAdmin({ 'user-agent': ua })
      const targetEmail = uniqueEmail('target')
      const target = await signup(targetEmail, {})
      const id: string = target.user.id
      // A second between changes, so newest-first is one order.
      const patch = (payload: Record<string, unknown>) => {
        clock = new Date(clock.getTime() + 1000)
        return app.inject({ method: 'PATCH', url: `${USERS}/${id}`, headers, payload })
      }

      t.equal((await patch({ roles: ['admin'] })).statusCode, 200)
      t.equal((await patch({ roles: [] })).statusCode, 200)
      t.equal((await patch({ disabled: true })).statusCode, 200)
      t.equal((await patch({ disabled: false })).statusCode, 200)
      await login(targetEmail, {})
      t.equal((await app.inject({ method: 'DELETE', url: `${USERS}/${id}/sessions`, headers })).statusCode, 204)
      const rotated = await app.inject({ method: 'POST', url: '/api/v1/admin/keys/rotate', headers })
      t.equal(rotated.statusCode, 200)
      t.equal((await app.inject({ method: 'DELETE', url: `${USERS}/${id}`, headers })).statusCode, 204)

      const changes = await eventsOf(id, 'role_changed')
      t.same(changes.map((e) => e.detail), [{ by: admin.id, added: [], removed: ['admin'] }, { by: admin.id, added: ['admin'], removed: [] }], 'role_changed, both ways')
      for (const event of changes) expectClient(t, event, ua)
      for (const type of ['user_disabled', 'user_enabled', 'user_deleted']) {
        const event = await only(t, id, type)
        t.same(event.detail, { by: admin.id }, `${type} by the admin`)
        expectClient(t, event, ua)
      }
      const ended = await only(t, id, 'sessions_ended')
      t.same(ended.detail, { by: admin.id, reason: 'ended_by_admin', sessions: 1 })
      expectClient(t, ended, ua)

      const keyEvents = (await eventsOf(admin.id, 'key_rotated')).filter((e) => e.detail.kid === json(rotated).kid)
      t.equal(keyEvents.length, 1, 'key_rotated names the new key, under the admin')
      if (keyEvents[0]) expectClient(t, keyEvents[0], ua)
    })

    t.test('the ip honours TRUST_PROXY', async (t) => {
      const forwarded = { 'x-forwarded-for': '203.0.113.7', 'user-agent': agent() }
      const proxied = await build(t, { env: { DATABASE_URL: db.url, ...QUIET, TRUST_PROXY: 'true' } })
      const ipOf = async (app: FastifyInstance) => {
        const res = await app.inject({ method: 'POST', url: SIGNUP, payload: { email: uniqueEmail('proxy'), password: GOOD_PASSWORD }, headers: forwarded })
        t.equal(res.statusCode, 201)
        const row = await app.db.selectFrom('auth_events').select(['ip', 'user_agent']).where('user_id', '=', json(res).user.id).where('type', '=', 'signup').executeTakeFirst()
        t.equal(row?.user_agent, forwarded['user-agent'])
        return row?.ip
      }
      t.equal(await ipOf(proxied), '203.0.113.7', 'TRUST_PROXY=true: the forwarded address')
      t.equal(await ipOf(app), LOCALHOST, 'by default X-Forwarded-For is ignored')
    })

    t.test('GET /admin/audit-events filters by user, type and time, a page at a time', async (t) => {
      const target = await signup(uniqueEmail('filters'), {})
      const id: string = target.user.id
      // Three sessions_ended events a minute apart, on whole seconds (so a time can be written without milliseconds).
      const base = Math.ceil(clock.getTime() / 1000) * 1000 + 60_000
      const at = [base, base + 60_000, base + 120_000].map((ms) => new Date(ms))
      for (const time of at) {
        clock = time
        t.equal((await app.inject({ method: 'DELETE', url: `${USERS}/${id}/sessions`, headers: await asAdmin() })).statusCode, 204)
      }
      const [t1, t2, t3] = at.map((d) => d.toISOString())
      const times = async (query: Record<string, string>) => {
        const res = await listEvents({ user_id: id, type: 'sessions_ended', ...query })
        t.equal(res.statusCode, 200, JSON.stringify(query))
        return (json(res).items as Event[]).map((e) => e.created_at)
      }

      const all = await eventsOf(id)
      t.ok(all.every((e) => e.user_id === id), 'user_id: only that user\'s events')
      t.same(all.map((e) => e.type).sort(), ['sessions_ended', 'sessions_ended', 'sessions_ended', 'signup'], 'and all of them')
      t.same((await eventsOf(id, 'signup')).map((e) => e.type), ['signup'], 'type: only that type')
      t.same(await times({}), [t3, t2, t1], 'newest first')

      t.same(await times({ from: t2 }), [t3, t2], 'from is inclusive')
      t.same(await times({ to: t2 }), [t1], 'to is exclusive')
      t.same(await times({ from: t1, to: t3 }), [t2, t1], 'from and to together')
      t.same(await times({ from: t3, to: t1 }), [], 'an empty range')

      // The same instants, written the other ways date-time allows.
      const plain = (iso: string) => iso.replace('.000Z', 'Z')
      const offset = (iso: string) => new Date(new Date(iso).getTime() + 2 * 3_600_000).toISOString().replace('Z', '+02:00')
      for (const [name, write] of [['without milliseconds', plain], ['with a +02:00 offset', offset]] as const) {
        t.test(`times ${name}`, async (t) => {
          t.same(await times({ from: write(t2) }), [t3, t2], `from=${write(t2)} is inclusive`)
          t.same(await times({ to: write(t2) }), [t1], `to=${write(t2)} is exclusive`)
          t.same(await times({ from: write(t1), to: write(t3) }), [t2, t1], 'from and to together')
        })
      }

      const pages: string[][] = []
      let cursor: string | null = null
      do {
        const res = await listEvents({ user_id: id, type: 'sessions_ended', limit: '1', ...(cursor && { cursor }) })
        t.equal(res.statusCode, 200)
        pages.push((json(res).items as Event[]).map((e) => e.created_at))
        cursor = json(res).next_cursor
      } while (cursor && pages.length < 10)
      t.same(pages, [[t3], [t2], [t1]], 'one event a page; next_cursor null after the last')
      const filtered = json(await listEvents({ user_id: id, type: 'sessions_ended', limit: '2', from: t2 }))
      t.equal(filtered.next_cursor, null, 'no next page when the filter leaves no more')
    })

    t.test('bad queries are 400', async (t) => {
      const cursors = ['abc', Buffer.from(JSON.stringify(['2026-01-01T00:00:00.000Z', 'not-a-uuid'])).toString('base64url'), Buffer.from(JSON.stringify(['yesterday', randomUUID()])).toString('base64url'), Buffer.from('null').toString('base64url')]
      for (const cursor of cursors) expectProblem(t, await listEvents({ cursor }), 400, 'INVALID_CURSOR')
      const bad: Array<Record<string, string>> = [
        { cursor: 'not+base64url' },
        { from: 'yesterday' },
        { to: '2026-13-40T00:00:00Z' },
        { from: '2026-01-01' },
        { user_id: 'someone' },
        { type: 'Login-Failed' },
        { limit: '0' },
        { limit: '101' },
        { since: '2026-01-01T00:00:00Z' }
      ]
      for (const query of bad) expectProblem(t, await listEvents(query), 400, 'VALIDATION_FAILED')
    })

    t.test('AUDIT_RETENTION_DAYS: prune removes the older events and keeps the newer', async (t) => {
      // Events are written with the clock set back, then pruned at the real time: moving the
      // clock forward instead would prune every other test's events on a shared database.
      for (const [days, env] of [[90, {}], [30, { AUDIT_RETENTION_DAYS: '30' }]] as const) {
        t.test(`${days} days`, async (t) => {
          const now = new Date()
          let time = now
          const app = await build(t, { env: { DATABASE_URL: db.url, ...QUIET, ...env }, now: () => time })
          t.equal(app.config.AUDIT_RETENTION_DAYS, days)
          const email = uniqueEmail('retention')
          time = new Date(now.getTime() - (days + 1) * DAY)
          const res = await app.inject({ method: 'POST', url: SIGNUP, payload: { email, password: GOOD_PASSWORD } })
          t.equal(res.statusCode, 201)
          const userId: string = json(res).user.id
          time = new Date(now.getTime() - (days - 1) * DAY)
          t.equal((await app.inject({ method: 'POST', url: LOGIN, payload: { email, password: secret() } })).statusCode, 401)
          const typesOf = async () => (await app.db.selectFrom('auth_events').select('type').where('user_id', '=', userId).execute()).map((r) => r.type).sort()
          // On a shared database another test's app may prune at the default 90 days as it starts, so there the
          // 91-day-old event can be gone already; the 30-day case below is out of their reach and always checks it.
          const before = await typesOf()
          if (db.name === 'sqlite' || days !== 90) t.same(before, ['login_failed', 'signup'], `events ${days + 1} and ${days - 1} days old`)
          else t.ok(before.includes('login_failed'), `the ${days - 1}-day-old event is there`)

          time = now
          const pruned = await app.audit.prune()
          t.type(pruned, 'number')
          // A private database: this prune removed it (on a shared one another app's start may have been first).
          if (db.name === 'sqlite') t.ok(pruned >= 1, `${pruned} pruned`)
          t.same(await typesOf(), ['login_failed'], `the ${days + 1}-day-old event is gone, the ${days - 1}-day-old one kept`)
        })
      }
    })

    t.test('GET /users/me/events: the caller\'s own events, without detail', async (t) => {
      const uaA = agent()
      const uaB = agent()
      const emailA = uniqueEmail('mine')
      const emailB = uniqueEmail('theirs')
      const a = await signup(emailA, { 'user-agent': uaA })
      clock = new Date(clock.getTime() + 1000)
      await post(LOGIN, { email: emailA, password: secret() }, { 'user-agent': uaA })
      clock = new Date(clock.getTime() + 1000)
      const signedA = await login(emailA, { 'user-agent': uaA })
      const b = await signup(emailB, { 'user-agent': uaB })
      clock = new Date(clock.getTime() + 1000)
      await login(emailB, { 'user-agent': uaB })

      const res = await app.inject({ url: MY_EVENTS, headers: bearer(signedA.access_token) })
      t.equal(res.statusCode, 200)
      const items = res.json() as Event[]
      const rows = await app.db.selectFrom('auth_events').selectAll().where('user_id', '=', a.user.id).orderBy('created_at', 'desc').orderBy('id', 'desc').execute()
      t.same(items, rows.map((r) => ({ type: r.type, session_id: r.session_id, ip: r.ip, user_agent: r.user_agent, created_at: new Date(r.created_at).toISOString() })), 'exactly the caller\'s events, newest first')
      t.same(items.map((e) => e.type), ['login_succeeded', 'login_failed', 'signup'])
      for (const item of items) t.same(Object.keys(item).sort(), ['created_at', 'ip', 'session_id', 'type', 'user_agent'], `${item.type}: no detail, no ids`)
      t.notOk(items.some((e) => e.user_agent === uaB), 'none of another user\'s')

      const theirs = (await app.inject({ url: MY_EVENTS, headers: bearer(b.access_token) })).json() as Event[]
      t.same(theirs.map((e) => e.type), ['login_succeeded', 'signup'], 'the other user sees their own')
      t.ok(theirs.every((e) => e.user_agent === uaB))
      expectProblem(t, await app.inject({ url: MY_EVENTS }), 401, 'AUTHENTICATION_REQUIRED')
    })
  })
}
