import { Errors } from './errors.js'

/** Keyset pages: a stable order (created_at, id) and an opaque cursor, so rows added meanwhile neither shift nor repeat a page. */

export const iso = (time: Date | string) => new Date(time).toISOString()
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

/** A page position: the (created_at, id) of the last row served, opaque to clients. */
export const cursor = {
  encode: (row: { created_at: Date | string, id: string }) => Buffer.from(JSON.stringify([iso(row.created_at), row.id])).toString('base64url'),
  decode (value: string | undefined): [string, string] | null {
    if (value === undefined) return null
    try {
      const [at, id] = JSON.parse(Buffer.from(value, 'base64url').toString('utf8')) as unknown[]
      if (typeof at === 'string' && typeof id === 'string' && UUID.test(id) && iso(at) === at) return [at, id]
    } catch {}
    throw new Errors.InvalidCursor()
  }
}

/** One more row than asked tells whether there is a next page. */
export function paged<Row extends { created_at: Date | string, id: string }, Item> (rows: Row[], limit: number, map: (rows: Row[]) => Item[]) {
  const items = rows.slice(0, limit)
  return { items: map(items), next_cursor: rows.length > limit ? cursor.encode(items[items.length - 1]) : null }
}
