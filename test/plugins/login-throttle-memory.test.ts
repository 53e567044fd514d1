import t from 'tap'
import { memoryStore } from '../../services/login-throttle.js'

/** Failures allowed before the throttle answers. */
const FREE = 5

/** A store remembering at most `limit` accounts, on a clock that stands still unless moved. */
function store (limit: number) {
  let now = Date.parse('2026-01-01T00:00:00Z')
  return { store: memoryStore(() => new Date(now), limit), advance: (ms: number) => { now += ms } }
}

/** Counts `count` failures of the account; each must be let through (wait 0). */
async function fail (s: ReturnType<typeof memoryStore>, key: string, count = FREE) {
  for (let i = 0; i < count; i++) if (await s.attempt(key) !== 0) throw new Error(`${key}: try ${i + 1} was throttled`)
}

t.test('the in-memory store stays bounded: past the limit the oldest account is forgotten, the newest kept', async (t) => {
  const { store: s } = store(3)
  for (const key of ['a', 'b', 'c']) await fail(s, key)
  for (const key of ['a', 'b', 'c']) t.equal(await s.attempt(key), 1000, `${key} is remembered: it waits 1 s`)

  await fail(s, 'd') // a fourth account: the oldest, a, makes room
  t.equal(await s.attempt('d'), 1000, 'the newest account is remembered')
  t.equal(await s.attempt('b'), 1000, 'b is still remembered')
  t.equal(await s.attempt('c'), 1000, 'c is still remembered')
  t.equal(await s.attempt('a'), 0, 'the oldest account was forgotten: it starts again with free tries')
})

t.test('a refused try does not make an account recent: the order is that of counted failures', async (t) => {
  const { store: s } = store(2)
  await fail(s, 'a')
  await fail(s, 'b')
  for (let i = 0; i < 10; i++) t.equal(await s.attempt('a'), 1000, 'a waits (not counted)')
  await fail(s, 'c', 1)
  // Remembered ones first: a forgotten account's try is counted, and makes room in its turn.
  t.equal(await s.attempt('b'), 1000, 'b is remembered')
  t.equal(await s.attempt('a'), 0, 'a, whose last counted failure is the oldest, was forgotten')
})

t.test('a counted failure makes an account recent again', async (t) => {
  const { store: s, advance } = store(2)
  await fail(s, 'a')
  await fail(s, 'b')
  advance(1000)
  t.equal(await s.attempt('a'), 0, 'after its wait, a tries again (counted)')
  await fail(s, 'c', 1)
  t.equal(await s.attempt('a'), 2000, 'a is remembered, its wait doubled')
  t.equal(await s.attempt('b'), 0, 'b, now the oldest, was forgotten')
})

t.test('three times the limit of accounts: exactly the last ones are remembered', async (t) => {
  const limit = 1000
  const { store: s } = store(limit)
  for (let i = 0; i < 3 * limit; i++) await fail(s, `account:${i}`)
  // A refused try changes nothing, so the remembered ones can be checked one by one.
  let remembered = 0
  for (let i = 2 * limit; i < 3 * limit; i++) if (await s.attempt(`account:${i}`) === 1000) remembered++
  t.equal(remembered, limit, `the last ${limit} accounts wait`)
  t.equal(await s.attempt(`account:${2 * limit - 1}`), 0, 'the one before them was forgotten')
  t.equal(await s.attempt('account:0'), 0, 'and so was the first')
})
