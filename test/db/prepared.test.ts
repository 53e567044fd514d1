import { sql } from 'kysely'
import t from 'tap'
import { prepared } from '../../db/prepared.js'
import { addUserRole } from '../../db/queries/roles.js'
import { findUserByEmail, findUserById, findUserByUsername } from '../../db/queries/users.js'
import { build, databases, signup } from '../helper.js'

for (const db of databases) {
  t.test(db.name, async (t) => {
    const app = await build(t, { env: { DATABASE_URL: db.url } })

    t.test('each call binds its own arguments', async (t) => {
      const byEmail = prepared((db, email: string) => db.selectFrom('users').select(['id', 'email']).where('email', '=', email))
      const a = await signup(app)
      const b = await signup(app)
      t.same(await byEmail(app.db, a.user.email), [{ id: a.user.id, email: a.user.email }], 'the first user')
      t.same(await byEmail(app.db, b.user.email), [{ id: b.user.id, email: b.user.email }], 'then the second, from the same compiled query')
      t.same(await byEmail(app.db, 'nobody@example.com'), [], 'and no one')

      // Arguments in another order than the SQL's, one of them twice.
      const between = prepared((db, last: string, first: string) => db.selectFrom('users').select('email')
        .where('email', '>=', first).where('email', '<=', last).where(sql<boolean>`${first} <= ${last}`).orderBy('email'))
      const [low, high] = [a.user.email, b.user.email].sort()
      t.same((await between(app.db, high, low)).map((r) => r.email), [low, high], 'both, in order')
      t.same(await between(app.db, low, high), [], 'none when the bounds are swapped')
    })

    t.test('a query that does not bind an argument as given is refused at its first run', async (t) => {
      const lowered = prepared((db, email: string) => db.selectFrom('users').select('id').where('email', '=', email.toUpperCase()))
      await t.rejects(lowered(app.db, 'a@example.com'), /does not bind every argument/, 'a transformed argument')
      const unused = prepared((db, _email: string) => db.selectFrom('users').select('id'))
      await t.rejects(unused(app.db, 'a@example.com'), /does not bind every argument/, 'an argument not used')
    })

    t.test('the user finders return the user with their roles, sorted', async (t) => {
      const signed = await signup(app, { username: `u${Date.now()}` })
      await addUserRole(app.db, signed.user.id, 'admin')
      const expected = { id: signed.user.id, email: signed.user.email, roles: ['admin', 'user'] }
      for (const [how, found] of [
        ['id', await findUserById(app.db, signed.user.id)],
        ['email, in any case', await findUserByEmail(app.db, signed.user.email.toUpperCase())],
        ['username, in any case', await findUserByUsername(app.db, signed.user.username!.toUpperCase())]
      ] as const) {
        t.match(found, expected, `by ${how}`)
        t.type(found?.password_hash, 'string', `by ${how}: the whole row`)
        t.notOk(found && 'role_names' in found, `by ${how}: no helper column left`)
      }
      t.equal(await findUserById(app.db, '00000000-0000-4000-8000-000000000000'), undefined, 'an unknown id')
    })
  })
}
