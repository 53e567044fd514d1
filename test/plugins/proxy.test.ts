import type { FastifyInstance } from 'fastify'
import t, { type Test } from 'tap'
import { bearer, build, GOOD_PASSWORD, json, uniqueEmail } from '../helper.js'

/** Sessions and events carry the client address; which one TRUST_PROXY decides. */
const QUIET = { MAX_EVENT_LOOP_DELAY_MS: '0' }

/**
 * Signs up and signs in (from 127.0.0.1, the default peer of inject) with these
 * headers, and returns the ip of the sessions and of the audit events they made.
 */
async function addressesSeen (app: FastifyInstance, headers: Record<string, string>) {
  const email = uniqueEmail('proxy')
  const signup = await app.inject({ method: 'POST', url: '/api/v1/auth/signup', headers, payload: { email, password: GOOD_PASSWORD } })
  if (signup.statusCode !== 201) throw new Error(`signup failed: ${signup.statusCode} ${signup.body}`)
  const login = await app.inject({ method: 'POST', url: '/api/v1/auth/login', headers, payload: { email, password: GOOD_PASSWORD } })
  if (login.statusCode !== 200) throw new Error(`login failed: ${login.statusCode} ${login.body}`)
  const token = json(login).access_token as string
  const sessions = await app.inject({ method: 'GET', url: '/api/v1/users/me/sessions', headers: bearer(token) })
  const events = await app.inject({ method: 'GET', url: '/api/v1/users/me/events', headers: bearer(token) })
  if (sessions.statusCode !== 200 || events.statusCode !== 200) throw new Error('cannot read sessions or events')
  return {
    sessions: (sessions.json() as Array<{ ip: string | null }>).map((s) => s.ip),
    events: (events.json() as Array<{ type: string, ip: string | null }>).filter((e) => e.type === 'signup' || e.type === 'login_succeeded').map((e) => e.ip)
  }
}

/** Asserts that both sessions and both events (signup, login) name `ip`. */
async function expectClient (t: Test, app: FastifyInstance, headers: Record<string, string>, ip: string) {
  const seen = await addressesSeen(app, headers)
  t.same(seen.sessions, [ip, ip], `both sessions have ip ${ip}`)
  t.same(seen.events, [ip, ip], `the signup and login events have ip ${ip}`)
}

t.test('TRUST_PROXY=false (the default): a forged X-Forwarded-For is ignored', async (t) => {
  const app = await build(t, { env: QUIET })
  t.equal(app.config.TRUST_PROXY, 'false', 'the default is false')
  await expectClient(t, app, { 'x-forwarded-for': '203.0.113.66' }, '127.0.0.1')
  await expectClient(t, app, { 'x-forwarded-for': '203.0.113.66, 198.51.100.4', 'x-real-ip': '203.0.113.67', forwarded: 'for=203.0.113.68' }, '127.0.0.1')
})

t.test('TRUST_PROXY=true: the X-Forwarded-For client is used', async (t) => {
  const app = await build(t, { env: { ...QUIET, TRUST_PROXY: 'true' } })
  await expectClient(t, app, { 'x-forwarded-for': '203.0.113.9' }, '203.0.113.9')
  // Every hop trusted: the left-most (the original client).
  await expectClient(t, app, { 'x-forwarded-for': '203.0.113.9, 198.51.100.4' }, '203.0.113.9')
  await expectClient(t, app, {}, '127.0.0.1')
})

t.test('TRUST_PROXY=1: one hop trusted, the entry it added is the client', async (t) => {
  const app = await build(t, { env: { ...QUIET, TRUST_PROXY: '1' } })
  await expectClient(t, app, { 'x-forwarded-for': '203.0.113.9, 198.51.100.4' }, '198.51.100.4')
  await expectClient(t, app, { 'x-forwarded-for': '198.51.100.5' }, '198.51.100.5')
})

t.test('TRUST_PROXY=2: two hops trusted', async (t) => {
  const app = await build(t, { env: { ...QUIET, TRUST_PROXY: '2' } })
  await expectClient(t, app, { 'x-forwarded-for': '192.0.2.1, 203.0.113.9, 198.51.100.4' }, '203.0.113.9')
})

t.test('TRUST_PROXY as CIDRs: trusted only when the peer is in one', async (t) => {
  t.test('127.0.0.1/8 contains the peer: the forwarded client is used', async (t) => {
    const app = await build(t, { env: { ...QUIET, TRUST_PROXY: '127.0.0.1/8' } })
    await expectClient(t, app, { 'x-forwarded-for': '203.0.113.7' }, '203.0.113.7')
  })

  t.test('10.0.0.0/8 does not contain the peer: the header is ignored', async (t) => {
    const app = await build(t, { env: { ...QUIET, TRUST_PROXY: '10.0.0.0/8' } })
    await expectClient(t, app, { 'x-forwarded-for': '203.0.113.7' }, '127.0.0.1')
  })

  t.test('a list: 10.0.0.0/8, 127.0.0.0/8 trusts the peer, and only as far as the list goes', async (t) => {
    const app = await build(t, { env: { ...QUIET, TRUST_PROXY: '10.0.0.0/8, 127.0.0.0/8' } })
    // 10.1.2.3 is a trusted proxy too; 203.0.113.7 is the first untrusted address from the right.
    await expectClient(t, app, { 'x-forwarded-for': '198.51.100.9, 203.0.113.7, 10.1.2.3' }, '203.0.113.7')
  })
})

t.test('a forwarded "address" that is not an IP address is never taken for the client', async (t) => {
  for (const trust of ['true', '1', '127.0.0.1/8']) {
    t.test(`TRUST_PROXY=${trust}: sessions and audit events show the peer address`, async (t) => {
      const app = await build(t, { env: { ...QUIET, TRUST_PROXY: trust } })
      await expectClient(t, app, { 'x-forwarded-for': '<script>x</script>' }, '127.0.0.1')
      await expectClient(t, app, { 'x-forwarded-for': 'unknown' }, '127.0.0.1')
      await expectClient(t, app, { 'x-forwarded-for': '203.0.113.9 OR 1=1' }, '127.0.0.1')
      // A real address still counts.
      await expectClient(t, app, { 'x-forwarded-for': '2001:db8::7' }, '2001:db8::7')
    })
  }

  t.test('TRUST_PROXY=true: the rate limits are keyed by the peer address, whatever garbage is forwarded', async (t) => {
    const app = await build(t, { env: { RATE_LIMIT_ENABLED: 'true', MAX_EVENT_LOOP_DELAY_MS: '0', TRUST_PROXY: 'true', RATE_LIMIT_LOGIN_PER_MINUTE: '3' } })
    const attempt = (forwarded: string, remoteAddress = '192.0.2.10') => app.inject({
      method: 'POST',
      url: '/api/v1/auth/login',
      remoteAddress,
      headers: { 'x-forwarded-for': forwarded },
      payload: { email: uniqueEmail('garbage-ip'), password: 'not the password at all' }
    })
    for (let i = 1; i <= 3; i++) t.equal((await attempt(`<garbage ${i}>`)).statusCode, 401, `attempt ${i} with a new garbage address is answered`)
    const refused = await attempt('<garbage 4>')
    t.equal(refused.statusCode, 429, 'a fourth garbage address buys no new budget: it is the same peer')
    t.equal((await attempt('<garbage 5>', '192.0.2.11')).statusCode, 401, 'another peer has its own budget')
  })
})

t.test('the stored user agent carries no control characters (C0, DEL, C1)', async (t) => {
  const app = await build(t, { env: QUIET })
  const email = uniqueEmail('ua')
  const agent = 'Mozilla/5.0\u0085 (evil)\u009b[2J\u0080\u009f\u007f\tend'
  const signup = await app.inject({ method: 'POST', url: '/api/v1/auth/signup', headers: { 'user-agent': agent }, payload: { email, password: GOOD_PASSWORD } })
  t.equal(signup.statusCode, 201)
  const token = json(signup).access_token as string
  const sessions = (await app.inject({ method: 'GET', url: '/api/v1/users/me/sessions', headers: bearer(token) })).json() as Array<{ user_agent: string | null }>
  const events = (await app.inject({ method: 'GET', url: '/api/v1/users/me/events', headers: bearer(token) })).json() as Array<{ type: string, user_agent: string | null }>
  const stored = [sessions[0]?.user_agent, events.find((e) => e.type === 'signup')?.user_agent]
  t.same(stored, ['Mozilla/5.0 (evil)[2Jend', 'Mozilla/5.0 (evil)[2Jend'], 'the session and the signup event keep the text without the control characters')
})
