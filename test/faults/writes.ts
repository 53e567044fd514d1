import { createHash, randomBytes } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import SQLite from 'better-sqlite3'
import pg from 'pg'
import { GOOD_PASSWORD, uniqueEmail } from '../helper.js'

/**
 * A write load over real HTTP, and a ledger of what the service acknowledged
 * (a 2xx answer) and what it never answered; and the rows of the database
 * read directly, to check the ledger against.
 */

export interface Answer { status: number, body: any }

/** POST a JSON body; the answer, or 'lost' when none came (the connection failed or 10 s passed). */
export async function post (base: string, path: string, body: unknown, headers: Record<string, string> = {}): Promise<Answer | 'lost'> {
  try {
    const res = await fetch(`${base}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(10_000)
    })
    const text = await res.text()
    return { status: res.status, body: text === '' ? null : JSON.parse(text) }
  } catch {
    return 'lost'
  }
}

/** GET; the answer, or 'lost'. */
export async function get (base: string, path: string, headers: Record<string, string> = {}): Promise<Answer | 'lost'> {
  try {
    const res = await fetch(`${base}${path}`, { headers, signal: AbortSignal.timeout(10_000) })
    const text = await res.text()
    return { status: res.status, body: text === '' ? null : JSON.parse(text) }
  } catch {
    return 'lost'
  }
}

export const bearer = (token: string) => ({ authorization: `Bearer ${token}` })
export const statusOf = (answer: Answer | 'lost') => (answer === 'lost' ? 'lost' : answer.status)
/** The problem code of an answer, if it has one. */
export const codeOf = (answer: Answer | 'lost') => (answer === 'lost' ? 'lost' : answer.body?.code)

/** The hash the database keeps of a refresh token (services/refresh-tokens.ts: SHA-256, base64url). */
export const refreshTokenHash = (token: string) => createHash('sha256').update(token).digest('base64url')
/** The session id (`sid`) of an access token, read without verifying it. */
export const sessionOf = (accessToken: string) => JSON.parse(Buffer.from(accessToken.split('.')[1], 'base64url').toString('utf8')).sid as string

export const newPassword = () => `${GOOD_PASSWORD} ${randomBytes(4).toString('hex')}`

export interface Account {
  email: string
  /** Acknowledged passwords, oldest first: the last is the current one. */
  passwords: string[]
  /** Whether the signup was answered 201 (else it was in flight when the service died). */
  signedUp: boolean
  userId?: string
  /** The newest acknowledged pair of the session the signup opened. */
  access?: string
  refresh?: string
  /** A refresh of `refresh` that was never answered. */
  refreshInFlight?: string
  /** The new password of a change that was never answered. */
  passwordInFlight?: string
  /** A second session (a sign-in after the signup), which an acknowledged password change must end. */
  other?: { access: string, refresh: string }
  /** Password changes acknowledged while `other` existed. */
  changesSinceOther: number
}

export interface Ledger {
  accounts: Account[]
  acked: { signups: number, logins: number, refreshes: number, changes: number }
  /** Requests the service never answered: in flight when it died. */
  lost: { signups: number, logins: number, refreshes: number, changes: number }
  /** Answers that were not the expected 2xx, and requests lost while the service was meant to be up. */
  unexpected: string[]
}

export interface Load {
  ledger: Ledger
  /** Stops sending; resolves when every client has stopped (each request is bounded to 10 s). */
  stop: () => Promise<void>
  /** Whether the load has stopped sending (set at once by stop()). */
  stopping: () => boolean
}

export interface LoadOptions {
  clients: number
  /** Operations on an account (refreshes and password changes) before its client signs a new one up. */
  opsPerAccount?: number
  /** A bound on each client's requests, whatever happens. */
  maxRequestsPerClient?: number
  /** A bound on the load's duration, whatever happens. */
  maxMs?: number
}

/**
 * Starts `clients` concurrent clients, each: sign up (201), sign in again
 * (a second session), then refreshes (rotating its refresh token) and a
 * password change every third operation, then a new account. Every answer is
 * written to the ledger; a request that gets no answer after stop() is
 * counted as lost, and ends that client.
 */
export function startLoad (base: string, opts: LoadOptions): Load {
  const ledger: Ledger = {
    accounts: [],
    acked: { signups: 0, logins: 0, refreshes: 0, changes: 0 },
    lost: { signups: 0, logins: 0, refreshes: 0, changes: 0 },
    unexpected: []
  }
  const state = { stopping: false }
  const deadline = performance.now() + (opts.maxMs ?? 30_000)
  const opsPerAccount = opts.opsPerAccount ?? 6

  /** Sends one request; the answer when it is the expected status, else null (and the client stops). */
  async function send (client: number, kind: keyof Ledger['lost'], expected: number, request: () => Promise<Answer | 'lost'>): Promise<Answer | null> {
    const answer = await request()
    if (answer === 'lost') {
      if (state.stopping) ledger.lost[kind] += 1
      else ledger.unexpected.push(`client ${client}: ${kind} got no answer while the service was up`)
      return null
    }
    if (answer.status !== expected) {
      ledger.unexpected.push(`client ${client}: ${kind} answered ${answer.status} ${JSON.stringify(answer.body)}`)
      return null
    }
    ledger.acked[kind] += 1
    return answer
  }

  async function client (n: number) {
    let account: Account | null = null
    let ops = 0
    for (let requests = 0; requests < (opts.maxRequestsPerClient ?? 500) && !state.stopping && performance.now() < deadline; requests++) {
      if (account === null || ops >= opsPerAccount) {
        const fresh: Account = { email: uniqueEmail(`sigkill-${n}`), passwords: [newPassword()], signedUp: false, changesSinceOther: 0 }
        ledger.accounts.push(fresh)
        const signedUp = await send(n, 'signups', 201, () => post(base, '/api/v1/auth/signup', { email: fresh.email, password: fresh.passwords[0] }))
        if (!signedUp) return
        Object.assign(fresh, { signedUp: true, userId: signedUp.body.user.id, access: signedUp.body.access_token, refresh: signedUp.body.refresh_token })
        account = fresh
        ops = 0
        if (state.stopping) return
        const other = await send(n, 'logins', 200, () => post(base, '/api/v1/auth/login', { email: fresh.email, password: fresh.passwords[0] }))
        if (!other) return
        fresh.other = { access: other.body.access_token, refresh: other.body.refresh_token }
        continue
      }
      const current: Account = account
      ops += 1
      if ((ops + n) % 3 === 0) {
        const next = newPassword()
        current.passwordInFlight = next
        const changed = await send(n, 'changes', 204, () => post(base, '/api/v1/auth/password/change',
          { current_password: current.passwords.at(-1), new_password: next }, bearer(current.access!)))
        if (!changed) return
        current.passwordInFlight = undefined
        current.passwords.push(next)
        current.changesSinceOther += 1
      } else {
        current.refreshInFlight = current.refresh
        const refreshed = await send(n, 'refreshes', 200, () => post(base, '/api/v1/auth/refresh', { refresh_token: current.refresh }))
        if (!refreshed) return
        current.refreshInFlight = undefined
        current.refresh = refreshed.body.refresh_token
        current.access = refreshed.body.access_token
      }
    }
  }

  const clients = Array.from({ length: opts.clients }, (_, n) => client(n))
  const all = Promise.all(clients).then(() => {})
  return {
    ledger,
    stopping: () => state.stopping,
    async stop () {
      state.stopping = true
      await Promise.race([all, sleep(15_000)])
    }
  }
}

/** The rows a check of the ledger needs, read directly from the database. */
export interface Snapshot {
  users: Array<{ id: string, email: string }>
  roles: Array<{ user_id: string, role: string }>
  sessions: Array<{ id: string, user_id: string, revoked_at: unknown }>
  tokens: Array<{ token_hash: string, session_id: string, rotated_at: unknown }>
  revoked: Array<{ session_id: string }>
  events: Array<{ type: string, user_id: string | null }>
}

const QUERIES: Record<keyof Snapshot, string> = {
  users: 'select id, email from users',
  roles: 'select user_id, role from user_roles',
  sessions: 'select id, user_id, revoked_at from sessions',
  tokens: 'select token_hash, session_id, rotated_at from refresh_tokens',
  revoked: 'select session_id from revoked_sessions',
  events: 'select type, user_id from auth_events'
}

/**
 * Opens the SQLite file (the service must be dead), checks it, and reads it:
 * `integrity` is PRAGMA integrity_check's answer, `foreignKeys` the rows of
 * PRAGMA foreign_key_check.
 */
export function readSqlite (file: string): Snapshot & { integrity: string, foreignKeys: unknown[] } {
  const db = new SQLite(file)
  try {
    const integrity = String(db.pragma('integrity_check', { simple: true }))
    const foreignKeys = db.pragma('foreign_key_check') as unknown[]
    const read = <K extends keyof Snapshot>(key: K) => db.prepare(QUERIES[key]).all() as Snapshot[K]
    return { integrity, foreignKeys, users: read('users'), roles: read('roles'), sessions: read('sessions'), tokens: read('tokens'), revoked: read('revoked'), events: read('events') }
  } finally {
    db.close()
  }
}

export async function readPostgres (url: string): Promise<Snapshot> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 })
  await client.connect()
  try {
    const read = async <K extends keyof Snapshot>(key: K) => (await client.query(QUERIES[key])).rows as Snapshot[K]
    return { users: await read('users'), roles: await read('roles'), sessions: await read('sessions'), tokens: await read('tokens'), revoked: await read('revoked'), events: await read('events') }
  } finally {
    await client.end()
  }
}

/** Runs `fn` over the items, `width` at a time. */
export async function inBatches<T> (items: T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  for (let i = 0; i < items.length; i += width) await Promise.all(items.slice(i, i + width).map(fn))
}
