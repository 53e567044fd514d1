import SQLite from 'better-sqlite3'
import t from 'tap'
import { withPreparedStatements } from '../../db/connect.js'

/** An in-memory SQLite database whose `prepare` calls are counted. */
function countingSqlite () {
  const sqlite = new SQLite(':memory:')
  const prepared: string[] = []
  const counting = new Proxy(sqlite, {
    get (target, name) {
      if (name === 'prepare') return (text: string) => { prepared.push(text); return target.prepare(text) }
      const value = Reflect.get(target, name, target)
      return typeof value === 'function' ? value.bind(target) : value
    }
  })
  return { sqlite: counting, prepared }
}

t.test('statements are prepared once and reused, within a bound where the least recently used one goes', async (t) => {
  const { sqlite, prepared } = countingSqlite()
  const db = withPreparedStatements(sqlite, 3)
  t.teardown(() => db.close())
  const select = (n: number) => `select ${n} as n`
  const run = (n: number) => (db.prepare(select(n)) as unknown as SQLite.Statement).get()

  t.same(run(1), { n: 1 })
  t.same(run(1), { n: 1 }, 'run again')
  t.same(prepared, [select(1)], 'prepared once')

  run(2)
  run(3)
  run(1) // 1 is now the most recently used; 2 the least
  run(4) // past the bound: 2 goes
  t.same(prepared, [1, 2, 3, 4].map(select), 'four texts, each prepared once')
  run(1)
  run(3)
  run(4)
  t.equal(prepared.length, 4, 'the three kept are reused')
  t.same(run(2), { n: 2 }, 'the dropped one still runs')
  t.same(prepared.slice(4), [select(2)], 'prepared again')

  for (let n = 10; n < 1000; n++) run(n)
  t.equal(prepared.length, 5 + 990, 'a thousand more distinct texts, each prepared once')
  run(999)
  t.equal(prepared.length, 995, 'the newest is kept')
  run(10)
  t.equal(prepared.length, 996, 'an old one was dropped')
})
