import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { stripVTControlCharacters } from 'node:util'
import type { FastifyInstance } from 'fastify'
import t, { type Test } from 'tap'
import { build, buildLogged, childEnv, databases, GOOD_PASSWORD, json, uniqueEmail, unless } from './helper.js'

const ROOT = join(import.meta.dirname, '..')
const LOGIN = '/api/v1/auth/login'
const OTHER_PASSWORD = 'a different passphrase entirely'

/** Rate limits and load shedding are not what these tests are about. */
const QUIET = { RATE_LIMIT_ENABLED: 'false', MAX_EVENT_LOOP_DELAY_MS: '0' }

/** A fresh SQLite file: the CLI and the apps built here open the same database. */
function sqliteFile (t: Test) {
  const dir = mkdtempSync(join(tmpdir(), 'cli-admin-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return `sqlite:${join(dir, 'auth.db')}`
}

/** `npx tsx cli.ts <command> …` with `input` piped on standard input. */
function cli (command: string, url: string, args: string[], input = '') {
  const env: NodeJS.ProcessEnv = { ...childEnv(), DATABASE_URL: url, NODE_ENV: 'test', LOG_LEVEL: 'warn' }
  delete env.ADMIN_EMAIL
  delete env.ADMIN_PASSWORD
  const run = spawnSync('npx', ['tsx', 'cli.ts', command, ...args], { cwd: ROOT, env, input, encoding: 'utf8', timeout: 60_000 })
  return { status: run.status, stdout: run.stdout, stderr: run.stderr }
}
const adminCreate = (url: string, args: string[], input = '') => cli('admin:create', url, args, input)

/** Whether util-linux's `script` is there to give the CLI a pseudo-terminal (Debian: bsdutils, an essential package). */
const hasScript = spawnSync('script', ['--version']).status === 0

/**
 * `tsx cli.ts admin:create --email <email>` on a pseudo-terminal: `script`
 * runs it on one and passes what we write on to it. The keys are typed one
 * write at a time once the prompt shows; the run is killed after 60 s.
 */
async function adminCreateOnTerminal (t: Test, url: string, email: string, keys: string[]) {
  const env: NodeJS.ProcessEnv = { ...childEnv(), DATABASE_URL: url, NODE_ENV: 'test', LOG_LEVEL: 'warn', TERM: 'xterm' }
  delete env.ADMIN_EMAIL
  delete env.ADMIN_PASSWORD
  // tsx itself rather than npx, whose spinner would write on the terminal too.
  const child = spawn('script', ['-qfec', `node_modules/.bin/tsx cli.ts admin:create --email '${email}'`, '/dev/null'], { cwd: ROOT, env })
  const killer = setTimeout(() => child.kill('SIGKILL'), 60_000)
  t.teardown(() => { clearTimeout(killer); child.kill('SIGKILL') })
  let transcript = ''
  let typing = false
  child.stdout.setEncoding('utf8').on('data', async (chunk: string) => {
    transcript += chunk
    if (typing || !transcript.includes('Password for')) return
    typing = true
    for (const key of keys) {
      child.stdin.write(key)
      await new Promise((resolve) => setTimeout(resolve, 30))
    }
  })
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => { transcript += chunk })
  const status = await new Promise<number | null>((resolve) => child.on('close', resolve))
  clearTimeout(killer)
  const lines = stripVTControlCharacters(transcript).split(/\r?\n/).map((l) => l.trim()).filter(Boolean)
  return { status, transcript, lines, typed: typing }
}

const login = (app: FastifyInstance, email: string, password: string) => app.inject({ method: 'POST', url: LOGIN, payload: { email, password } })

t.test('admin:create makes an admin who can sign in; run again, it changes nothing', async (t) => {
  const url = sqliteFile(t)
  const email = uniqueEmail('cli-admin')
  const created = adminCreate(url, ['--email', email], `${GOOD_PASSWORD}\n`)
  t.equal(created.status, 0, 'exit 0', created)
  t.match(created.stdout, `created admin ${email}`)

  const app = await build(t, { env: { DATABASE_URL: url, ...QUIET } })
  const res = await login(app, email, GOOD_PASSWORD)
  t.equal(res.statusCode, 200, 'the admin signs in with the password from stdin')
  t.same([...json(res).user.roles].sort(), ['admin', 'user'], 'roles user and admin')
  t.equal(json(res).user.email_verified, true, 'an admin made here needs no verification mail')
  const admin = await app.inject({ url: '/api/v1/admin/users', query: { email_prefix: email }, headers: { authorization: `Bearer ${json(res).access_token}` } })
  t.equal(admin.statusCode, 200, 'and reaches the admin API')

  const again = adminCreate(url, ['--email', email.toUpperCase()], `${OTHER_PASSWORD}\n`)
  t.equal(again.status, 2, 'exit 2 again', again)
  t.match(again.stderr, 'already has an account')
  t.equal((await login(app, email, GOOD_PASSWORD)).statusCode, 200, 'the password is unchanged')
  t.equal((await login(app, email, OTHER_PASSWORD)).statusCode, 401, 'the second password was not taken')
  t.equal((await app.db.selectFrom('users').select('id').where('email', '=', email).execute()).length, 1, 'one account')
})

t.test('admin:create never promotes an existing account; admin:promote does, on the trail', async (t) => {
  const url = sqliteFile(t)
  const app = await build(t, { env: { DATABASE_URL: url, ...QUIET } })
  const email = uniqueEmail('cli-plain')
  const signed = await app.inject({ method: 'POST', url: '/api/v1/auth/signup', payload: { email, password: GOOD_PASSWORD } })
  t.equal(signed.statusCode, 201)
  t.same(json(signed).user.roles, ['user'])
  const promotions = () => app.db.selectFrom('auth_events').select('detail').where('user_id', '=', json(signed).user.id).where('type', '=', 'role_changed').execute()

  const create = adminCreate(url, ['--email', email], `${OTHER_PASSWORD}\n`)
  t.equal(create.status, 2, 'admin:create refuses', create)
  t.match(create.stderr, 'admin:promote')
  t.same(json(await login(app, email, GOOD_PASSWORD)).user.roles, ['user'], 'still a plain user, with their own password')
  t.equal((await promotions()).length, 0, 'nothing on the trail')

  const run = cli('admin:promote', url, ['--email', email])
  t.equal(run.status, 0, 'exit 0', run)
  t.match(run.stdout, `${email} is now an admin`)
  const res = await login(app, email, GOOD_PASSWORD)
  t.equal(res.statusCode, 200, 'the password is the user\'s own')
  t.same([...json(res).user.roles].sort(), ['admin', 'user'], 'now admin')
  const promoted = await promotions()
  t.equal(promoted.length, 1, 'the promotion is on the trail')
  t.match(JSON.parse(promoted[0]?.detail ?? '{}'), { added: ['admin'], by: 'operator' })

  const again = cli('admin:promote', url, ['--email', email])
  t.equal(again.status, 0, 'exit 0 again', again)
  t.match(again.stdout, 'already an admin')
  const nobody = cli('admin:promote', url, ['--email', uniqueEmail('nobody')])
  t.equal(nobody.status, 2, 'an unknown address: exit 2', nobody)
  t.match(nobody.stderr, 'has no account')
})

t.test('ADMIN_EMAIL held by an account that signed up first: it is not promoted at start, and the log says so', async (t) => {
  const url = sqliteFile(t)
  const email = uniqueEmail('squatted')
  const first = await build(t, { env: { DATABASE_URL: url, ...QUIET } })
  const squatter = await first.inject({ method: 'POST', url: '/api/v1/auth/signup', payload: { email, password: OTHER_PASSWORD } })
  t.equal(squatter.statusCode, 201, 'someone signs up with the address first (unverified)')
  await first.close()

  const { fastify: app, lines } = await buildLogged(t, { env: { DATABASE_URL: url, ...QUIET, ADMIN_EMAIL: email, ADMIN_PASSWORD: GOOD_PASSWORD } })
  const errors = lines().filter((l) => l.level >= 50)
  t.equal(errors.length, 1, 'one error-level line')
  t.match(errors[0]?.msg, /NOT promoted.*admin:promote/, 'saying what to do')
  const res = await login(app, email, OTHER_PASSWORD)
  t.same(json(res).user.roles, ['user'], 'the squatter is no admin')
  t.equal((await login(app, email, GOOD_PASSWORD)).statusCode, 401, 'and ADMIN_PASSWORD was not applied')
})

t.test('admin:create refuses a weak password (exit 1, one line) and a missing --email (exit 2)', async (t) => {
  const url = sqliteFile(t)
  const email = uniqueEmail('cli-weak')
  const weak = adminCreate(url, ['--email', email], 'password\n')
  t.equal(weak.status, 1, 'exit 1', weak)
  const message = weak.stderr.trim()
  t.ok(message.length > 0, 'a message')
  t.notOk(message.includes('\n'), 'on one line', { message })
  t.match(message, /password/i, 'about the password')
  t.notMatch(message, /\bat .+:\d+:\d+/, 'no stack trace')

  const missing = adminCreate(url, [], `${GOOD_PASSWORD}\n`)
  t.equal(missing.status, 2, 'exit 2', missing)
  t.match(missing.stderr, '--email')

  const app = await build(t, { env: { DATABASE_URL: url, ...QUIET } })
  t.equal((await app.db.selectFrom('users').select('id').where('email', '=', email).execute()).length, 0, 'no account was made')
})

unless(hasScript ? null : 'util-linux script is not installed (Debian: bsdutils)', () => {
  t.test('admin:create on a terminal: the password is hidden, edited as a line, and arrow keys stay out of it', async (t) => {
    const url = sqliteFile(t)
    const email = uniqueEmail('cli-tty')
    const [start, end] = [GOOD_PASSWORD.slice(0, -1), GOOD_PASSWORD.slice(-1)]
    // A typo rubbed out, the last character typed, then left and right arrows (escape sequences) before Enter.
    const run = await adminCreateOnTerminal(t, url, email, [start, 'x', '\u007f', end, '\u001b[D', '\u001b[C', '\r'])
    t.ok(run.typed, 'the prompt showed')
    t.equal(run.status, 0, 'exit 0', { transcript: run.transcript })
    t.equal(run.lines.at(-1), `created admin ${email}`, 'created')
    t.notOk(run.transcript.includes(start), 'the password was not echoed', { transcript: run.transcript })

    const app = await build(t, { env: { DATABASE_URL: url, ...QUIET } })
    const res = await login(app, email, GOOD_PASSWORD)
    t.equal(res.statusCode, 200, 'the admin signs in with exactly the password typed, edits applied')
    t.same([...json(res).user.roles].sort(), ['admin', 'user'])
  })

  for (const [how, keys] of [
    ['Ctrl-C', ['half a pass', '\u0003']],
    ['Ctrl-D on an empty line', ['\u0004']],
    ['Ctrl-D after some typing', ['half a pass', '\u0004']]
  ] as const) {
    t.test(`admin:create on a terminal: ${how} cancels with exit 2 and one line`, async (t) => {
      const url = sqliteFile(t)
      const email = uniqueEmail('cli-cancel')
      const run = await adminCreateOnTerminal(t, url, email, [...keys])
      t.ok(run.typed, 'the prompt showed')
      t.equal(run.status, 2, 'exit 2', { transcript: run.transcript })
      t.equal(run.lines.at(-1), 'cancelled: nothing was changed', 'the last line says so')
      t.equal(run.lines.filter((l) => l.includes('cancelled')).length, 1, 'once')
      t.notMatch(run.transcript, /\bat .+:\d+:\d+/, 'no stack trace')

      const app = await build(t, { env: { DATABASE_URL: url, ...QUIET } })
      t.equal((await app.db.selectFrom('users').select('id').where('email', '=', email).execute()).length, 0, 'no account was made')
    })
  }
})

t.test('ADMIN_EMAIL and ADMIN_PASSWORD make the admin once; a later start keeps the password', async (t) => {
  const url = sqliteFile(t)
  const email = uniqueEmail('env-admin')
  const first = await build(t, { env: { DATABASE_URL: url, ...QUIET, ADMIN_EMAIL: email, ADMIN_PASSWORD: GOOD_PASSWORD } })
  const res = await login(first, email, GOOD_PASSWORD)
  t.equal(res.statusCode, 200, 'created at start')
  t.same([...json(res).user.roles].sort(), ['admin', 'user'])
  await first.close()

  const second = await build(t, { env: { DATABASE_URL: url, ...QUIET, ADMIN_EMAIL: email, ADMIN_PASSWORD: OTHER_PASSWORD } })
  t.equal((await login(second, email, GOOD_PASSWORD)).statusCode, 200, 'the first password still works')
  t.equal((await login(second, email, OTHER_PASSWORD)).statusCode, 401, 'the new ADMIN_PASSWORD was not applied')
  t.equal((await second.db.selectFrom('users').select('id').where('email', '=', email).execute()).length, 1, 'one account')
  const signups = await second.db.selectFrom('auth_events').select('id').where('user_id', '=', json(res).user.id).where('type', '=', 'signup').execute()
  t.equal(signups.length, 1, 'created once')
})

// Replicas share one database and one environment: they may all start at once.
for (const db of databases) {
  t.test(`${db.name}: instances starting together with the same ADMIN_EMAIL all start, and make one admin`, async (t) => {
    // SQLite in memory is a new database per app: use a file they all open.
    const url = db.name === 'sqlite' ? sqliteFile(t) : db.url
    // Migrated, keyed and seeded first: only the admin's creation races.
    await (await build(t, { env: { DATABASE_URL: url, ...QUIET } })).close()
    const email = uniqueEmail('race-admin')
    const env = { DATABASE_URL: url, ...QUIET, ADMIN_EMAIL: email, ADMIN_PASSWORD: GOOD_PASSWORD }
    const starts = await Promise.allSettled([1, 2, 3].map(() => build(t, { env })))
    t.same(starts.map((s) => s.status === 'rejected' ? String(s.reason?.message ?? s.reason) : 'started'), ['started', 'started', 'started'], 'every instance starts')
    const app = starts.find((s) => s.status === 'fulfilled')?.value ?? await build(t, { env: { DATABASE_URL: url, ...QUIET } })
    t.equal((await app.db.selectFrom('users').select('id').where('email', '=', email).execute()).length, 1, 'one account')
    const res = await login(app, email, GOOD_PASSWORD)
    t.equal(res.statusCode, 200, 'the admin signs in')
    t.same([...(json(res).user?.roles ?? [])].sort(), ['admin', 'user'])
  })
}
