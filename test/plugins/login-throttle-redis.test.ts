import { randomUUID } from 'node:crypto'
import t from 'tap'
import { build, expectProblem, GOOD_PASSWORD, signup, tempSqliteUrl, uniqueEmail, unless } from '../helper.js'

const redisUrl = process.env.TEST_REDIS_URL ?? ''
const WRONG = 'not the right password'

unless(redisUrl ? null : 'TEST_REDIS_URL is not set (e.g. redis://127.0.0.1:6379)', () => {
  t.test('two replicas whose clocks are 20 minutes apart throttle one account on Redis\' clock', async (t) => {
    const env = { DATABASE_URL: tempSqliteUrl(t), REDIS_URL: redisUrl, REDIS_KEY_PREFIX: `test-${randomUUID()}:`, MAX_EVENT_LOOP_DELAY_MS: '0' }
    const ahead = new Date(Date.now() + 20 * 60_000)
    const a = await build(t, { env })
    const b = await build(t, { env, now: () => ahead })
    const email = uniqueEmail('skewed')
    await signup(a, { email })
    const attempt = (app: typeof a, password: string) => app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email, password } })

    const statuses = []
    for (let i = 0; i < 5; i++) statuses.push((await attempt(i % 2 === 0 ? a : b, WRONG)).statusCode)
    t.same(statuses, [401, 401, 401, 401, 401], 'five failures, alternating replicas')
    expectProblem(t, await attempt(a, GOOD_PASSWORD), 429, 'RATE_LIMITED')
    expectProblem(t, await attempt(b, GOOD_PASSWORD), 429, 'RATE_LIMITED')
  })

  t.test('right passwords at once through two replicas all sign in', async (t) => {
    const env = { DATABASE_URL: tempSqliteUrl(t), REDIS_URL: redisUrl, REDIS_KEY_PREFIX: `test-${randomUUID()}:`, MAX_EVENT_LOOP_DELAY_MS: '0' }
    const a = await build(t, { env })
    const b = await build(t, { env })
    const email = uniqueEmail('concurrent')
    await signup(a, { email })
    const answers = await Promise.all(Array.from({ length: 8 }, (_, i) => (i % 2 === 0 ? a : b).inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email, password: GOOD_PASSWORD } })))
    t.same(answers.map((r) => r.statusCode), Array(8).fill(200), 'eight 200s')
  })
})
