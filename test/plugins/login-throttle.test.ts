import type { LightMyRequestResponse } from 'fastify'
import t, { type Test } from 'tap'
import { build, databases, expectProblem, GOOD_PASSWORD, json, movableClock, uniqueEmail, uniqueUsername } from '../helper.js'
import { startMailbox, tokenIn } from '../mailbox.js'

const LOGIN = '/api/v1/auth/login'
const WRONG = 'not the right password'
/** Failures allowed before the throttle answers. */
const FREE = 5
/** The longest wait, in seconds. */
const MAX_WAIT = 900
const HOUR = 3600

/**
 * The per-address rate limits are off (the helper's default): the throttle
 * under test is the per-account one, which is always on, and it must hold
 * against an attacker who spreads attempts over many addresses.
 */
const QUIET = { MAX_EVENT_LOOP_DELAY_MS: '0' }

type Identifier = { email: string } | { username: string }

const box = await startMailbox(t)

/** A whole number of seconds in a header, or NaN. */
const seconds = (value: unknown) => (typeof value === 'string' && /^\d+$/.test(value) ? Number(value) : NaN)

function expectThrottled (t: Test, res: LightMyRequestResponse, retryAfter?: number) {
  const body = expectProblem(t, res, 429, 'RATE_LIMITED')
  const wait = seconds(res.headers['retry-after'])
  t.ok(wait >= 1 && wait <= MAX_WAIT, `Retry-After is 1–${MAX_WAIT} s (got ${res.headers['retry-after']})`)
  if (retryAfter !== undefined) t.equal(wait, retryAfter, `Retry-After ${retryAfter}`)
  t.notOk(body.access_token, 'no token')
  return wait
}

for (const db of databases) {
  t.test(db.name, async (t) => {
    // One app for every test below (each uses fresh accounts; the clock only moves forward).
    // TRUST_PROXY=true only matters to the requests that send X-Forwarded-For.
    const clock = movableClock()
    const app = await build(t, { env: { ...QUIET, DATABASE_URL: db.url, SMTP_URL: box.url, TRUST_PROXY: 'true' }, now: clock.now })
    const attempt = (who: Identifier, password: string, headers: Record<string, string> = {}) =>
      app.inject({ method: 'POST', url: LOGIN, headers, payload: { ...who, password } })

    /** A fresh account (its verification mail taken from the mailbox). */
    async function account (withUsername = false) {
      const email = uniqueEmail('throttle')
      const username = withUsername ? uniqueUsername('th') : undefined
      const res = await app.inject({ method: 'POST', url: '/api/v1/auth/signup', payload: { email, password: GOOD_PASSWORD, ...(username && { username }) } })
      if (res.statusCode !== 201) throw new Error(`signup failed: ${res.statusCode} ${res.body}`)
      await app.background.idle()
      await box.next(email)
      return { email, username: username!, id: json(res).user.id as string }
    }

    /** `count` wrong passwords, each asserted to be a 401 (not yet throttled). */
    async function fail (t: Test, who: Identifier, count: number, headers: (i: number) => Record<string, string> = () => ({})) {
      for (let i = 1; i <= count; i++) {
        const res = await attempt(who, WRONG, headers(i))
        t.equal(res.statusCode, 401, `wrong password ${i}: 401`)
        t.equal(json(res).code, 'INVALID_CREDENTIALS')
      }
    }

    t.test('after 5 failures the 6th try is 429 with Retry-After, right password or not', async (t) => {
      const { email } = await account()
      await fail(t, { email }, FREE)
      expectThrottled(t, await attempt({ email }, WRONG), 1)
      expectThrottled(t, await attempt({ email }, GOOD_PASSWORD), 1)
      // Spelled differently, it is the same account.
      expectThrottled(t, await attempt({ email: `  ${email.toUpperCase()} ` }, GOOD_PASSWORD), 1)
      expectThrottled(t, await attempt({ username: email }, GOOD_PASSWORD), 1)
      const sessions = await app.db.selectFrom('sessions').select('sessions.id').innerJoin('users', 'users.id', 'sessions.user_id').where('users.email', '=', email).execute()
      t.equal(sessions.length, 1, 'no session was made by a throttled try (only the signup\'s)')
    })

    t.test('the wait doubles, and a try after exactly Retry-After is allowed', async (t) => {
      const { email } = await account()
      await fail(t, { email }, FREE)
      let wait = expectThrottled(t, await attempt({ email }, WRONG), 1)
      const waits = [wait]
      for (let i = 0; i < 12; i++) {
        clock.advance(wait - 1)
        expectThrottled(t, await attempt({ email }, WRONG), 1)
        clock.advance(1)
        const res = await attempt({ email }, WRONG)
        t.equal(res.statusCode, 401, `after waiting ${wait} s the try is allowed (and fails)`)
        const next = expectThrottled(t, await attempt({ email }, WRONG))
        t.equal(next, Math.min(wait * 2, MAX_WAIT), `the next wait is ${Math.min(wait * 2, MAX_WAIT)} s`)
        wait = next
        waits.push(wait)
      }
      t.same(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900, 900], 'waits: 1 s doubling up to 15 minutes')
    })

    t.test('no permanent lockout: after the longest wait the right password works', async (t) => {
      const { email } = await account()
      await fail(t, { email }, FREE)
      let wait = 1
      // 1 + 2 + … + 512 s, then 900 s: the longest wait is reached by the 11th; go a few beyond.
      for (let i = 0; i < 14; i++) {
        wait = expectThrottled(t, await attempt({ email }, WRONG))
        t.ok(wait <= MAX_WAIT, `wait ${wait} s is at most 15 minutes`)
        clock.advance(wait)
        t.equal((await attempt({ email }, WRONG)).statusCode, 401)
      }
      wait = expectThrottled(t, await attempt({ email }, GOOD_PASSWORD), MAX_WAIT)
      clock.advance(wait)
      const res = await attempt({ email }, GOOD_PASSWORD)
      t.equal(res.statusCode, 200, 'the owner signs in after the longest wait')
      t.ok(json(res).access_token, 'with tokens')
    })

    t.test('an unknown account is throttled exactly like a known one', async (t) => {
      const { email } = await account()
      const unknown = uniqueEmail('nobody')
      await fail(t, { email }, FREE)
      await fail(t, { email: unknown }, FREE)
      for (let round = 0; round < 3; round++) {
        const known = await attempt({ email }, WRONG)
        const other = await attempt({ email: unknown }, WRONG)
        t.equal(other.statusCode, known.statusCode, `round ${round}: same status (${known.statusCode})`)
        t.equal(other.headers['retry-after'], known.headers['retry-after'], `round ${round}: same Retry-After (${known.headers['retry-after']})`)
        const strip = (res: LightMyRequestResponse) => { const { request_id: _, ...rest } = json(res); return rest }
        t.same(strip(other), strip(known), `round ${round}: the same body`)
        expectThrottled(t, other)
        clock.advance(seconds(known.headers['retry-after']))
        t.equal((await attempt({ email }, WRONG)).statusCode, 401)
        t.equal((await attempt({ email: unknown }, WRONG)).statusCode, 401)
      }
      const username = uniqueUsername('nobody')
      await fail(t, { username }, FREE)
      expectThrottled(t, await attempt({ username }, WRONG), 1)
    })

    t.test('per account, not per address; other accounts are not affected', async (t) => {
      const victim = await account()
      const bystander = await account()
      const from = (i: number) => ({ 'x-forwarded-for': `198.51.100.${i}` })
      await fail(t, { email: victim.email }, FREE, from)
      expectThrottled(t, await attempt({ email: victim.email }, WRONG, from(77)), 1)
      expectThrottled(t, await attempt({ email: victim.email }, GOOD_PASSWORD, from(78)), 1)
      // Another account, from the very addresses that failed.
      t.equal((await attempt({ email: bystander.email }, WRONG, from(1))).statusCode, 401, 'another account may still try')
      t.equal((await attempt({ email: bystander.email }, GOOD_PASSWORD, from(2))).statusCode, 200, 'and sign in')
    })

    t.test('a successful sign-in resets the count', async (t) => {
      const { email } = await account()
      await fail(t, { email }, FREE)
      clock.advance(expectThrottled(t, await attempt({ email }, WRONG), 1))
      t.equal((await attempt({ email }, GOOD_PASSWORD)).statusCode, 200, 'the right password after the wait')
      await fail(t, { email }, FREE)
      expectThrottled(t, await attempt({ email }, WRONG), 1)
    })

    t.test('a password reset resets the count', async (t) => {
      const { email } = await account()
      await fail(t, { email }, FREE)
      expectThrottled(t, await attempt({ email }, GOOD_PASSWORD), 1)
      const forgot = await app.inject({ method: 'POST', url: '/api/v1/auth/password/forgot', payload: { email } })
      t.equal(forgot.statusCode, 202)
      await app.background.idle()
      const token = tokenIn(await box.next(email))
      const newPassword = 'a fresh passphrase after a reset'
      const reset = await app.inject({ method: 'POST', url: '/api/v1/auth/password/reset', payload: { token, new_password: newPassword } })
      t.equal(reset.statusCode, 204, 'the password is reset')
      // Same instant: without the reset the account would still wait.
      t.equal((await attempt({ email }, newPassword)).statusCode, 200, 'the new password works at once')
      await fail(t, { email }, FREE)
      expectThrottled(t, await attempt({ email }, WRONG), 1)
    })

    t.test('a password reset also clears the count of the account\'s username', async (t) => {
      const { email, username } = await account(true)
      await fail(t, { username }, FREE)
      expectThrottled(t, await attempt({ username }, GOOD_PASSWORD), 1)
      t.equal((await app.inject({ method: 'POST', url: '/api/v1/auth/password/forgot', payload: { email } })).statusCode, 202)
      await app.background.idle()
      const token = tokenIn(await box.next(email))
      const newPassword = 'another fresh passphrase after reset'
      t.equal((await app.inject({ method: 'POST', url: '/api/v1/auth/password/reset', payload: { token, new_password: newPassword } })).statusCode, 204)
      t.equal((await attempt({ username }, newPassword)).statusCode, 200, 'the username signs in at once')
    })

    t.test('15 quiet minutes forget the failures', async (t) => {
      const first = await account()
      await fail(t, { email: first.email }, FREE)
      // 14 minutes: still remembered, so one more failure is the 6th and brings a wait.
      clock.advance(14 * 60)
      t.equal((await attempt({ email: first.email }, WRONG)).statusCode, 401)
      expectThrottled(t, await attempt({ email: first.email }, WRONG), 2)

      const second = await account()
      await fail(t, { email: second.email }, FREE)
      const wait = expectThrottled(t, await attempt({ email: second.email }, WRONG), 1)
      // Quiet for 15 minutes once the wait is over: five free failures again.
      clock.advance(wait + 15 * 60)
      await fail(t, { email: second.email }, FREE)
      expectThrottled(t, await attempt({ email: second.email }, WRONG), 1)
    })

    t.test('one simulated hour of an attacker trying as often as allowed: at most 100 failures', async (t) => {
      const { email } = await account()
      const start = clock.now().getTime()
      const elapsed = () => (clock.now().getTime() - start) / 1000
      let failures = 0
      let throttled = 0
      let iterations = 0
      for (; iterations < 200 && elapsed() < HOUR; iterations++) {
        const res = await attempt({ email }, WRONG)
        if (res.statusCode === 401) failures++
        else if (res.statusCode === 429) {
          throttled++
          clock.advance(seconds(res.headers['retry-after']))
        } else t.fail(`unexpected ${res.statusCode}`)
      }
      t.ok(elapsed() >= HOUR, `the loop covered the hour (${iterations} tries, ${elapsed()} s)`)
      t.ok(failures <= 100, `at most 100 failures counted (got ${failures})`)
      t.ok(failures >= FREE, `the first ${FREE} failures were let through (got ${failures})`)
      t.ok(throttled > 0, 'the rest waited')
    })

    t.test('one simulated hour alternating the account\'s email and username: at most 100 failures', async (t) => {
      const { email, username } = await account(true)
      const start = clock.now().getTime()
      const elapsed = () => (clock.now().getTime() - start) / 1000
      let failures = 0
      let iterations = 0
      for (; iterations < 200 && elapsed() < HOUR; iterations++) {
        const a = await attempt({ email }, WRONG)
        const b = await attempt({ username }, WRONG)
        for (const res of [a, b]) if (res.statusCode === 401) failures++
        const waits = [a, b].filter((r) => r.statusCode === 429).map((r) => seconds(r.headers['retry-after']))
        if (waits.length === 2) clock.advance(Math.min(...waits))
      }
      t.ok(elapsed() >= HOUR, `the loop covered the hour (${iterations} rounds, ${elapsed()} s)`)
      t.ok(failures <= 100, `at most 100 failures counted (got ${failures})`)
    })

    t.test('keyed by the account, not by what was typed: email, username, capitals and full-width spellings share one count', async (t) => {
      const { email, username } = await account(true)
      const fullWidth = email.replace(/[a-z]/g, (c) => String.fromCharCode(c.charCodeAt(0) - 0x61 + 0xff41))
      await fail(t, { email }, 2)
      await fail(t, { username }, 1)
      await fail(t, { email: fullWidth }, 1)
      await fail(t, { username: email.toUpperCase() }, 1)
      expectThrottled(t, await attempt({ username }, GOOD_PASSWORD), 1)
      expectThrottled(t, await attempt({ email }, GOOD_PASSWORD), 1)
    })

    t.test('every password check counts: password change, change of address and deletion share the sign-in count', async (t) => {
      const { email } = await account()
      const token = json(await attempt({ email }, GOOD_PASSWORD)).access_token as string
      const headers = { authorization: `Bearer ${token}` }
      const checks = [
        () => app.inject({ method: 'POST', url: '/api/v1/auth/password/change', headers, payload: { current_password: WRONG, new_password: 'a brand new passphrase' } }),
        () => app.inject({ method: 'POST', url: '/api/v1/users/me/email', headers, payload: { new_email: uniqueEmail('new'), password: WRONG } }),
        () => app.inject({ method: 'DELETE', url: '/api/v1/users/me', headers, payload: { password: WRONG } })
      ]
      const statuses = []
      for (let i = 0; i < 12; i++) statuses.push((await checks[i % 3]()).statusCode)
      t.same(statuses, [401, 401, 401, 401, 401, 429, 429, 429, 429, 429, 429, 429], '5 wrong guesses, then 429 whatever the route')
      expectThrottled(t, await attempt({ email }, GOOD_PASSWORD), 1)
      expectThrottled(t, await app.inject({ method: 'DELETE', url: '/api/v1/users/me', headers, payload: { password: GOOD_PASSWORD } }), 1)
      t.equal((await app.inject({ url: '/api/v1/users/me', headers })).statusCode, 200, 'the account is still there')
    })

    t.test('only failures count: 12 right passwords at once all sign in', async (t) => {
      const { email } = await account()
      const answers = await Promise.all(Array.from({ length: 12 }, () => attempt({ email }, GOOD_PASSWORD)))
      t.same(answers.map((r) => r.statusCode), Array(12).fill(200), 'twelve 200s')
    })

    t.test('concurrent tries are counted: a burst gets no more than the 5 free failures', async (t) => {
      const { email } = await account()
      const burst = await Promise.all(Array.from({ length: 20 }, () => attempt({ email }, WRONG)))
      const statuses = burst.map((r) => r.statusCode)
      const failures = statuses.filter((s) => s === 401).length
      t.equal(failures + statuses.filter((s) => s === 429).length, 20, 'every answer is 401 or 429')
      t.ok(failures <= FREE, `at most ${FREE} of 20 simultaneous wrong passwords were checked (got ${failures})`)
    })

    t.test('one simulated hour of bursts as often as allowed: at most 100 failures', async (t) => {
      const { email } = await account()
      const start = clock.now().getTime()
      const elapsed = () => (clock.now().getTime() - start) / 1000
      let failures = 0
      let bursts = 0
      for (; bursts < 20 && elapsed() < HOUR; bursts++) {
        const answers = await Promise.all(Array.from({ length: 30 }, () => attempt({ email }, WRONG)))
        failures += answers.filter((r) => r.statusCode === 401).length
        t.equal(answers.filter((r) => r.statusCode === 429 || r.statusCode === 401).length, 30, `burst ${bursts + 1}: every answer is 401 or 429`)
        // Then wait as long as the service asks, and burst again.
        const after = await attempt({ email }, WRONG)
        if (after.statusCode === 401) failures++
        else clock.advance(seconds(after.headers['retry-after']))
      }
      t.ok(elapsed() >= HOUR, `the loop covered the hour (${bursts} bursts, ${elapsed()} s)`)
      t.ok(failures <= 100, `at most 100 failures counted in the hour (got ${failures})`)
    })
  })
}
