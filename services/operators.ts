import { randomUUID } from 'node:crypto'
import { addUserRole } from '../db/queries/roles.js'
import { findUserByEmail, insertUser } from '../db/queries/users.js'
import { unique } from './accounts.js'
import { addressOf, normalizeEmail } from './addresses.js'
import type { Audit } from './audit.js'
import type { Base } from './context.js'
import { Errors } from './errors.js'
import type { Passwords } from './passwords.js'

export type Operators = ReturnType<typeof createOperators>

/** What an operator does outside the API: the first admin (ADMIN_EMAIL, `cli admin:create`) and `cli admin:promote`. */
export function createOperators ({ db, clock, config, log, passwords, audit }: Base & { passwords: Passwords, audit: Audit }) {
  /**
   * Creates the admin of ADMIN_EMAIL (or `cli admin:create`). Never promotes:
   * an account that already has the address may be someone else's, signed up
   * first. Promoting is the operator's explicit act (`cli admin:promote`).
   */
  async function createAdmin (rawEmail: string, password: string): Promise<'created' | 'exists'> {
    const email = addressOf(rawEmail, 'email')
    if (await findUserByEmail(db, email)) return 'exists'
    passwords.enforce(password, { email })
    const now = clock().toISOString()
    try {
      const passwordHash = await passwords.hash(password)
      await unique(db.transaction().execute(async (trx) => {
        const user = await insertUser(trx, {
          id: randomUUID(), email, username: null, password_hash: passwordHash, email_verified: 1, disabled: 0, created_at: now, updated_at: now
        }, ['user', 'admin'])
        await audit.record({ type: 'signup', userId: user.id, detail: { by: 'bootstrap', roles: ['user', 'admin'] } }, trx)
      }))
    } catch (err) {
      // Replicas starting together: another one created it first.
      if (err instanceof Errors.EmailTaken) return 'exists'
      throw err
    }
    return 'created'
  }

  /** Gives an existing account the admin role: the operator's act, on the trail. */
  async function promoteAdmin (rawEmail: string): Promise<'promoted' | 'unchanged' | 'not_found'> {
    const user = await findUserByEmail(db, addressOf(rawEmail, 'email'))
    if (!user) return 'not_found'
    if (user.roles.includes('admin')) return 'unchanged'
    await db.transaction().execute(async (trx) => {
      await addUserRole(trx, user.id, 'admin')
      await audit.record({ type: 'role_changed', userId: user.id, detail: { added: ['admin'], removed: [], by: 'operator' } }, trx)
    })
    return 'promoted'
  }

  /** At start: the admin of ADMIN_EMAIL, if set. Never promotes someone else's account; says so loudly. */
  async function ensureFirstAdmin (): Promise<void> {
    const { ADMIN_EMAIL, ADMIN_PASSWORD } = config
    if (!ADMIN_EMAIL || !ADMIN_PASSWORD) return
    const outcome = await createAdmin(ADMIN_EMAIL, ADMIN_PASSWORD)
    if (outcome === 'created') log.info('first admin created from ADMIN_EMAIL')
    // Someone may have signed up with the address first: never promote it on our own.
    else if (!(await findUserByEmail(db, normalizeEmail(ADMIN_EMAIL)))?.roles.includes('admin')) {
      log.error('ADMIN_EMAIL belongs to an account that is not an admin; it was NOT promoted. If it is yours, run `cli admin:promote --email <address>`.')
    }
  }

  return { createAdmin, promoteAdmin, ensureFirstAdmin }
}
