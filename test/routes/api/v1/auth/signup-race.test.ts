import t from 'tap'
import { build, databases, GOOD_PASSWORD, listen, uniqueEmail } from '../../../../helper.js'

const RACERS = 20

/**
 * The per-address rate limits (off by default in the helper) and the load
 * shedding are not what this is about: 20 argon2 hashes at once must not be
 * answered 503 on a busy test machine.
 */
const QUIET = { MAX_EVENT_LOOP_DELAY_MS: '0' }

for (const db of databases) {
  t.test(`${db.name}: the same email signed up ${RACERS} times at once`, async (t) => {
    const app = await build(t, { env: { ...QUIET, DATABASE_URL: db.url } })
    const base = await listen(app)
    const email = uniqueEmail('race')

    // Real sockets, all in flight together; the addresses differ only in case and spaces.
    const spellings = (i: number) => (i % 3 === 0 ? email : i % 3 === 1 ? email.toUpperCase() : `  ${email} `)
    const answers = await Promise.all(Array.from({ length: RACERS }, async (_, i) => {
      const res = await fetch(`${base}/api/v1/auth/signup`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ email: spellings(i), password: GOOD_PASSWORD })
      })
      return { status: res.status, type: res.headers.get('content-type') ?? '', body: await res.json() as Record<string, any> }
    }))

    const statuses = answers.map((a) => a.status)
    t.comment(`statuses: ${statuses.join(' ')}`)
    const created = answers.filter((a) => a.status === 201)
    const taken = answers.filter((a) => a.status === 409)
    t.equal(created.length, 1, 'exactly one 201')
    t.equal(taken.length, RACERS - 1, `the other ${RACERS - 1} are 409`)
    t.notOk(statuses.some((s) => s >= 500), 'never a 5xx')
    t.ok(taken.every((a) => a.body.code === 'EMAIL_TAKEN' && /^application\/problem\+json/.test(a.type)), 'every 409 is problem+json EMAIL_TAKEN')
    t.equal(created[0]?.body.user.email, email, 'the account has the normalised address')

    const rows = await app.db.selectFrom('users').select(['id', 'email']).where('email', '=', email).execute()
    t.equal(rows.length, 1, 'exactly one user row with that email')
    t.equal(rows[0]?.id, created[0]?.body.user.id, 'and it is the one the 201 named')
    const roles = await app.db.selectFrom('user_roles').select('role').where('user_id', '=', rows[0]?.id ?? '').execute()
    t.same(roles.map((r) => r.role), ['user'], 'with its role once')
    const sessions = await app.db.selectFrom('sessions').select('id').where('user_id', '=', rows[0]?.id ?? '').execute()
    t.equal(sessions.length, 1, 'and one session, the winner\'s')
  })
}
