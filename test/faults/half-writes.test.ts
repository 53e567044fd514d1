import pg from 'pg'
import t, { type Test } from 'tap'
import { uniqueEmail } from '../helper.js'
import { postgresUnavailable, spawnService, startPostgres, until, type Postgres } from './backing.js'
import { bearer, codeOf, get, newPassword, post, readPostgres, statusOf, type Answer } from './writes.js'

/**
 * A write of several statements, killed between two of them (issue 14). A
 * SIGKILL lands anywhere; the load test (sigkill.test.ts) can only hope to
 * land between two statements of one write. Here PostgreSQL is made to hold
 * the write there: a table lock that the next statement needs. The service is
 * then SIGKILLed and the statement it was waiting on is cancelled with it (its
 * backend terminated before the lock is released: as if the service had died
 * just before sending it). After a restart the write must be whole or absent.
 */

/**
 * Starts the service, runs `prepare`, locks `table`, sends `request`, waits
 * (at most 10 s) until the service waits on the lock with a statement matching
 * `statement`, then SIGKILLs the service, terminates that statement's backend,
 * releases the lock and starts the service again on the same database.
 */
async function killBetween<T> (t: Test, cluster: Postgres, table: string, statement: RegExp,
  prepare: (base: string) => Promise<T>, request: (base: string, prepared: T) => Promise<Answer | 'lost'>) {
  const env = { DATABASE_URL: cluster.url }
  const first = await spawnService(t, env)
  const prepared = await prepare(first.base)
  const admin = new pg.Client({ connectionString: cluster.url })
  const locker = new pg.Client({ connectionString: cluster.url })
  await admin.connect()
  await locker.connect()
  t.teardown(async () => { await admin.end(); await locker.end() })
  await locker.query('begin')
  await locker.query(`lock table ${table} in exclusive mode`)
  const answer = request(first.base, prepared)
  let waiting: Array<{ pid: number, query: string }> = []
  await until(`the service waits on the lock of ${table}`, async () => {
    waiting = (await admin.query("select pid, query from pg_stat_activity where wait_event_type = 'Lock' and pid <> pg_backend_pid()")).rows
    return waiting.some((w) => statement.test(w.query))
  }, 10_000)
  t.equal(await first.kill('SIGKILL'), 137, `the service died waiting on: ${waiting.map((w) => w.query).join('; ')}`)
  for (const { pid } of waiting) await admin.query('select pg_terminate_backend($1, 5000)', [pid])
  await locker.query('rollback')
  t.equal(await answer, 'lost', 'the request was never answered')
  return { prepared, second: await spawnService(t, env) }
}

const login = (base: string, email: string, password: string) => post(base, '/api/v1/auth/login', { email, password })

if (postgresUnavailable && process.env.CI === 'true') t.fail(`CI must run the fault tests on PostgreSQL: ${postgresUnavailable}`)

t.test('postgres', { skip: postgresUnavailable ?? false }, async (t) => {
  const cluster = await startPostgres(t)

  /** An account with two sessions: the one that changes the password, and another that the change must end. */
  async function twoSessions (base: string) {
    const email = uniqueEmail('half')
    const before = newPassword()
    const signedUp = await post(base, '/api/v1/auth/signup', { email, password: before })
    const other = await login(base, email, before)
    if (signedUp === 'lost' || signedUp.status !== 201 || other === 'lost' || other.status !== 200) throw new Error('could not set the account up')
    return { email, before, after: newPassword(), mine: signedUp.body, other: other.body }
  }

  for (const [table, statement] of [['sessions', /^update "sessions"/], ['revoked_sessions', /^insert into "revoked_sessions"/]] as const) {
    t.test(`a password change killed before it writes ${table}: whole or absent`, async (t) => {
      const { prepared: a, second } = await killBetween(t, cluster, table, statement, twoSessions, (base, a) =>
        post(base, '/api/v1/auth/password/change', { current_password: a.before, new_password: a.after }, bearer(a.mine.access_token)))
      const newSignsIn = statusOf(await login(second.base, a.email, a.after)) === 200
      const oldSignsIn = statusOf(await login(second.base, a.email, a.before)) === 200
      t.not(newSignsIn, oldSignsIn, `one password signs in: the ${newSignsIn ? 'new' : 'old'} one`)
      const otherAccess = await get(second.base, '/api/v1/auth/verify', bearer(a.other.access_token))
      const otherRefresh = await post(second.base, '/api/v1/auth/refresh', { refresh_token: a.other.refresh_token })
      if (newSignsIn) {
        t.equal(codeOf(otherAccess), 'SESSION_REVOKED', 'the change applied, so the other session\'s access token is refused')
        t.equal(statusOf(otherRefresh), 401, 'and its refresh token')
      } else {
        t.equal(statusOf(otherAccess), 200, 'the change did not apply, so the other session\'s access token works')
        t.equal(statusOf(otherRefresh), 200, 'and its refresh token')
      }
    })
  }

  t.test('a signup killed before it writes its audit event: whole or absent', async (t) => {
    const email = uniqueEmail('half-signup')
    const password = newPassword()
    const { second } = await killBetween(t, cluster, 'auth_events', /^insert into "auth_events"/, async () => null, (base) =>
      post(base, '/api/v1/auth/signup', { email, password }))
    const rows = await readPostgres(cluster.url)
    const user = rows.users.find((u) => u.email === email)
    if (user) {
      t.same(rows.roles.filter((r) => r.user_id === user.id).map((r) => r.role), ['user'], 'the account exists with its role')
      t.equal(statusOf(await login(second.base, email, password)), 200, 'it signs in')
      t.ok(rows.events.some((e) => e.type === 'signup' && e.user_id === user.id), 'and has its signup event (the audit event of a change is in its transaction)')
    } else {
      t.pass('the account is absent')
    }
  })
})
