import type { Compilable, CompiledQuery, Kysely } from 'kysely'
import type { Database } from './types.js'

type Db = Kysely<Database>

/** Stands for the i-th argument while the query is built; never a real value (it holds NUL characters). */
const slot = (i: number) => `\u0000argument ${i}\u0000`

/**
 * A query built and compiled once per database handle, then run with each
 * call's arguments bound in place of the placeholders it was built with.
 * Building and compiling with Kysely costs more than running a point query
 * on SQLite, and the hot reads (the user behind a token, the account at
 * sign-in) run on nearly every request. `build` must pass its arguments to
 * Kysely as values, untouched: an argument transformed or not used is an
 * error at the first call, not a wrong query.
 */
export function prepared<A extends string[], R> (build: (db: Db, ...args: A) => Compilable<R>) {
  const compiled = new WeakMap<Db, { query: CompiledQuery<R>, argumentAt: number[] }>()
  return async (db: Db, ...args: A): Promise<R[]> => {
    let entry = compiled.get(db)
    if (!entry) {
      const slots = args.map((_, i) => slot(i))
      const query = build(db, ...slots as A).compile()
      const argumentAt = query.parameters.map((p) => slots.indexOf(p as string))
      if (slots.some((_, i) => !argumentAt.includes(i))) throw new Error(`prepared query does not bind every argument as a value: ${query.sql}`)
      compiled.set(db, entry = { query, argumentAt })
    }
    const { query, argumentAt } = entry
    const parameters = query.parameters.map((p, i) => argumentAt[i] === -1 ? p : args[argumentAt[i]])
    return (await db.executeQuery<R>({ ...query, parameters })).rows
  }
}
