import Database from 'better-sqlite3'
import t from 'tap'
import { build, expectProblem, forwardAuth, GOOD_PASSWORD, metricValue, signup, tempSqliteUrl, uniqueEmail } from '../helper.js'

/**
 * SQLite held by another process (a backup tool, a second writer): a write
 * waits DATABASE_TIMEOUT_SECONDS for the lock, then answers 503
 * DATABASE_UNAVAILABLE with Retry-After, not a 500; token checks go on; the
 * write succeeds once the lock is let go.
 */
t.test('a locked SQLite database: 503 after the bound, then writes again', async (t) => {
  const url = tempSqliteUrl(t)
  const app = await build(t, { env: { DATABASE_URL: url, DATABASE_TIMEOUT_SECONDS: '1' } })
  const user = await signup(app)
  const other = new Database(url.slice('sqlite:'.length))
  t.teardown(() => other.close())
  other.exec('BEGIN EXCLUSIVE')

  const email = uniqueEmail('locked')
  const res = await app.inject({ method: 'POST', url: '/api/v1/auth/signup', payload: { email, password: GOOD_PASSWORD } })
  expectProblem(t, res, 503, 'DATABASE_UNAVAILABLE')
  t.ok(Number(res.headers['retry-after']) >= 1, 'with Retry-After')
  t.equal((await forwardAuth(app, user.access_token)).statusCode, 200, 'token checks need no database')
  t.equal(await metricValue(app, 'auth_database_unavailable_total', { route: '/api/v1/auth/signup' }), 1, 'counted')

  other.exec('COMMIT')
  t.equal((await app.inject({ method: 'POST', url: '/api/v1/auth/signup', payload: { email, password: GOOD_PASSWORD } })).statusCode, 201, 'the same signup succeeds once the lock is gone')
})
