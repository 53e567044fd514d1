import type { FastifyInstance } from 'fastify'
import t from 'tap'
import { bearer, build, databases, GOOD_PASSWORD, json, signup, uniqueEmail } from '../../../../helper.js'

const USERS = '/api/v1/admin/users'
const EVENTS = '/api/v1/admin/audit-events'
const ORIGINALS = 25
const LIMIT = 7
const INSERTED_PER_PAGE = 2
/** Far more pages than the rows can fill: the loop fails rather than spins. */
const MAX_PAGES = 40

/**
 * Many sign-ups from one address, under a test machine's load: the per-address
 * rate limits and the event-loop load shedding are not what these tests are about.
 */
const QUIET = { RATE_LIMIT_ENABLED: 'false', MAX_EVENT_LOOP_DELAY_MS: '0' }

type Key = readonly [createdAt: string, id: string]
const compare = (a: Key, b: Key) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0)
const keyOf = (row: { created_at: string, id: string }): Key => [new Date(row.created_at).toISOString(), row.id]

let prefixes = 0
const uniquePrefix = (name: string) => `${name}-${process.pid.toString(36)}-${Date.now().toString(36)}-${++prefixes}-`

/**
 * Pages through `url` with `query`, `LIMIT` rows a page, while `insert` adds
 * rows that match the same filter: it runs alongside each page request.
 */
async function pageWhileInserting (app: FastifyInstance, headers: Record<string, string>, url: string, query: Record<string, string>, insert: () => Promise<void>) {
  const rows: Array<{ id: string, created_at: string }> = []
  let cursor: string | null = null
  let pages = 0
  do {
    const [res] = await Promise.all([
      app.inject({ url, headers, query: { ...query, limit: String(LIMIT), ...(cursor && { cursor }) } }),
      insert()
    ])
    if (res.statusCode !== 200) throw new Error(`${url}: ${res.statusCode} ${res.body}`)
    const body = json(res)
    if (body.items.length > LIMIT) throw new Error(`a page of ${body.items.length} rows`)
    rows.push(...body.items)
    cursor = body.next_cursor
    pages++
  } while (cursor !== null && pages < MAX_PAGES)
  return { rows, pages, finished: cursor === null }
}

// Two clocks: a ticking one (new rows sort after the old ones), and a frozen
// one (every row has the same created_at, so new rows land between old ones by id).
const clocks = [
  { name: 'ticking clock', now: undefined },
  { name: 'frozen clock: ties broken by id', now: new Date() }
]

for (const db of databases) {
  t.test(db.name, async (t) => {
    for (const clock of clocks) {
      t.test(clock.name, async (t) => {
        const adminEmail = uniqueEmail('pagination-admin')
        const frozen = clock.now
        const app = await build(t, {
          env: { DATABASE_URL: db.url, ...QUIET, ADMIN_EMAIL: adminEmail, ADMIN_PASSWORD: GOOD_PASSWORD },
          ...(frozen && { now: () => frozen })
        })
        const login = await app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email: adminEmail, password: GOOD_PASSWORD } })
        const headers = bearer(json(login).access_token)

        t.test('users: every original row once, in (created_at, id) order, while users sign up', async (t) => {
          const prefix = uniquePrefix('pg')
          let n = 0
          const newUser = async () => (await signup(app, { email: `${prefix}${String(++n).padStart(3, '0')}@example.com` })).user.id as string
          const originals = await Promise.all(Array.from({ length: ORIGINALS }, newUser))

          const insert = async () => { for (let i = 0; i < INSERTED_PER_PAGE; i++) await newUser() }
          const { rows, pages, finished } = await pageWhileInserting(app, headers, USERS, { email_prefix: prefix }, insert)

          t.ok(finished, `reached the last page (after ${pages} pages)`)
          t.ok(pages >= Math.ceil(ORIGINALS / LIMIT), 'several pages')
          const ids = rows.map((r) => r.id)
          t.equal(new Set(ids).size, ids.length, 'no row twice')
          t.same(originals.filter((id) => !ids.includes(id)), [], 'every original row is there')
          const keys = rows.map(keyOf)
          t.ok(keys.every((key, i) => i === 0 || compare(keys[i - 1], key) < 0), 'strictly ascending by (created_at, id)')
          t.ok(n > ORIGINALS, `${n - ORIGINALS} users signed up meanwhile`)
          t.ok(rows.every((r) => (r as { email?: string }).email?.startsWith(prefix)), 'only rows of the filter')
        })

        t.test('audit events: every event that existed before the first page once, newest first, while events are written', async (t) => {
          const target = await signup(app, { email: uniqueEmail('pagination-target') })
          const userId: string = target.user.id
          // Each call writes one sessions_ended event for the target.
          const write = async () => {
            const res = await app.inject({ method: 'DELETE', url: `${USERS}/${userId}/sessions`, headers })
            if (res.statusCode !== 204) throw new Error(`end sessions: ${res.statusCode} ${res.body}`)
          }
          for (let i = 0; i < ORIGINALS; i++) await write()
          const before = (await app.db.selectFrom('auth_events').select('id').where('user_id', '=', userId).execute()).map((r) => r.id)
          t.ok(before.length >= ORIGINALS, `${before.length} events before the first page`)

          let written = 0
          const insert = async () => { for (let i = 0; i < INSERTED_PER_PAGE; i++) { await write(); written++ } }
          const { rows, pages, finished } = await pageWhileInserting(app, headers, EVENTS, { user_id: userId }, insert)

          t.ok(finished, `reached the last page (after ${pages} pages)`)
          const ids = rows.map((r) => r.id)
          t.equal(new Set(ids).size, ids.length, 'no event twice')
          t.same(before.filter((id) => !ids.includes(id)), [], 'every event that existed before appears')
          const keys = rows.map(keyOf)
          t.ok(keys.every((key, i) => i === 0 || compare(keys[i - 1], key) > 0), 'strictly descending by (created_at, id)')
          t.ok(rows.every((r) => (r as { user_id?: string }).user_id === userId), 'only the target\'s events')
          t.ok(written > 0, `${written} events written meanwhile`)
        })
      })
    }
  })
}
