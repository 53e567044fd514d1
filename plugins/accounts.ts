import { randomUUID } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { addUserRole } from '../db/queries/roles.js'
import { deleteUser, findUserByEmail, findUserById, findUserByUsername, insertUser, uniqueViolation, updateUser, type Account } from '../db/queries/users.js'
import type { UserRow } from '../db/types.js'
import type { User } from '../schemas/common.js'
import { Errors } from './errors.js'
import type { ClientInfo, IssuedTokens } from './sessions.js'

declare module 'fastify' {
  interface FastifyInstance {
    accounts: Accounts
  }
}

export type Accounts = ReturnType<typeof createAccounts>
export type TokenResponse = IssuedTokens & { user: User }

export const normalizeEmail = (email: string) => email.trim().toLowerCase()
export const normalizeUsername = (username: string) => username.trim().toLowerCase()

/** The public face of a user: what the User schema lets out. */
export function toPublicUser (row: UserRow, roles: string[]): User {
  return {
    id: row.id,
    email: row.email,
    username: row.username,
    email_verified: Boolean(row.email_verified),
    roles,
    created_at: new Date(row.created_at).toISOString(),
    updated_at: new Date(row.updated_at).toISOString()
  }
}

function createAccounts (fastify: FastifyInstance) {
  const { db, passwords, sessions, emails, config, audit, loginThrottle } = fastify

  /** A user as the API shows them, with their roles as they were read with the row. */
  const present = (account: Account): User => toPublicUser(account, account.roles)

  /** Runs a write that may hit the unique email or username index; a hit is a 409, not a 500. */
  async function unique<T> (write: Promise<T>): Promise<T> {
    try {
      return await write
    } catch (err) {
      const field = uniqueViolation(err)
      if (field === 'email') throw new Errors.EmailTaken()
      if (field === 'username') throw new Errors.UsernameTaken()
      throw err
    }
  }

  async function signedIn (user: Account, client: ClientInfo): Promise<TokenResponse> {
    return { ...await sessions.start(user, client), user: present(user) }
  }

  /** The user behind a verified access token; a deleted or disabled one is no longer anyone. */
  async function current (userId: string): Promise<Account> {
    const user = await findUserById(db, userId)
    if (!user || user.disabled) throw new Errors.InvalidAccessToken()
    return user
  }

  /** Deletes a user. Revokes first: the revocation list outlives the session rows the delete removes. */
  async function remove (userId: string, reason: string): Promise<boolean> {
    await sessions.endAll(userId, reason)
    return deleteUser(db, userId)
  }

  /** Creates the admin of ADMIN_EMAIL (or `npm run admin:create`), or gives an existing account the admin role. */
  async function ensureAdmin (rawEmail: string, password: string): Promise<'created' | 'promoted' | 'unchanged'> {
    const email = normalizeEmail(rawEmail)
    const existing = await findUserByEmail(db, email)
    if (existing) {
      if (existing.roles.includes('admin')) return 'unchanged'
      await addUserRole(db, existing.id, 'admin')
      await audit.record({ type: 'role_changed', userId: existing.id, detail: { added: ['admin'], by: 'bootstrap' } })
      return 'promoted'
    }
    passwords.enforce(password, { email })
    const now = fastify.now().toISOString()
    let user: Account
    try {
      user = await unique(passwords.hash(password).then((passwordHash) => insertUser(db, {
        id: randomUUID(), email, username: null, password_hash: passwordHash, email_verified: 1, disabled: 0, created_at: now, updated_at: now
      }, ['user', 'admin'])))
    } catch (err) {
      // Replicas starting together: another one created it first.
      if (err instanceof Errors.EmailTaken) return ensureAdmin(email, password)
      throw err
    }
    await audit.record({ type: 'signup', userId: user.id, detail: { by: 'bootstrap', roles: ['user', 'admin'] } })
    return 'created'
  }

  return {
    current,
    present,
    ensureAdmin,

    /** The signed-in user's own profile. */
    profile: async (userId: string) => present(await current(userId)),

    /**
     * Creates an account and mails its verification link. Signed in at once,
     * unless REQUIRE_EMAIL_VERIFICATION: then null, for a new and a taken
     * address alike (the owner of a taken one is told by mail).
     */
    async signup (input: { email: string, password: string, username?: string }, client: ClientInfo): Promise<TokenResponse | null> {
      const email = normalizeEmail(input.email)
      const username = input.username === undefined ? null : normalizeUsername(input.username)
      passwords.enforce(input.password, { email, username })
      const now = fastify.now().toISOString()
      let user: Account
      try {
        user = await unique(passwords.hash(input.password).then((passwordHash) => insertUser(db, {
          id: randomUUID(), email, username, password_hash: passwordHash, email_verified: 0, disabled: 0, created_at: now, updated_at: now
        }, ['user'])))
      } catch (err) {
        if (!(err instanceof Errors.EmailTaken) || !config.REQUIRE_EMAIL_VERIFICATION) throw err
        emails.signupAttempted(email)
        return null
      }
      await audit.record({ type: 'signup', userId: user.id, client })
      emails.welcome(user)
      return config.REQUIRE_EMAIL_VERIFICATION ? null : signedIn(user, client)
    },

    /**
     * Unknown account, wrong password and disabled account all fail the same
     * way after the same work: one argon2 verify.
     */
    async login (input: { email?: string, username?: string, password: string }, client: ClientInfo): Promise<TokenResponse> {
      const identifier = (input.email ?? input.username ?? '').trim()
      // Throttled accounts wait, right password or not: counted before any password work.
      await loginThrottle.attempt(identifier)
      const user = identifier.includes('@') ? await findUserByEmail(db, normalizeEmail(identifier)) : await findUserByUsername(db, normalizeUsername(identifier))
      const ok = await passwords.verify(user?.password_hash, input.password)
      const refusal = !user ? 'unknown_account' : !ok ? 'wrong_password' : user.disabled ? 'disabled' : null
      if (refusal) {
        // The reason is for the trail only; the caller gets the same answer for all three.
        await audit.record({ type: 'login_failed', userId: user?.id ?? null, client, detail: { reason: refusal } })
        throw new Errors.InvalidCredentials()
      }
      // Only after the right password: the 403 tells nothing to someone who does not know it.
      if (config.REQUIRE_EMAIL_VERIFICATION && !user!.email_verified) {
        await audit.record({ type: 'login_failed', userId: user!.id, client, detail: { reason: 'email_not_verified' } })
        throw new Errors.EmailNotVerified()
      }
      if (passwords.needsRehash(user!.password_hash)) {
        await updateUser(db, user!.id, { password_hash: await passwords.hash(input.password) })
      }
      await loginThrottle.succeeded(identifier)
      await audit.record({ type: 'login_succeeded', userId: user!.id, client })
      return signedIn(user!, client)
    },

    /** Changes the password and ends every other session of the user. */
    async changePassword (userId: string, sessionId: string, currentPassword: string, newPassword: string, client: ClientInfo): Promise<void> {
      const user = await current(userId)
      if (!await passwords.verify(user.password_hash, currentPassword)) throw new Errors.InvalidCredentials()
      if (currentPassword.normalize('NFKC') === newPassword.normalize('NFKC')) throw new Errors.SamePassword()
      passwords.enforce(newPassword, user)
      await updateUser(db, user.id, { password_hash: await passwords.hash(newPassword), updated_at: fastify.now().toISOString() })
      await sessions.endAll(user.id, 'password_changed', sessionId)
      await audit.record({ type: 'password_changed', userId: user.id, sessionId, client })
    },

    async updateProfile (userId: string, changes: { username: string | null }): Promise<User> {
      const { roles } = await current(userId)
      const username = changes.username === null ? null : normalizeUsername(changes.username)
      const user = await unique(updateUser(db, userId, { username, updated_at: fastify.now().toISOString() }))
      if (!user) throw new Errors.InvalidAccessToken()
      return present({ ...user, roles })
    },

    /** Deletes the account after re-authentication; sessions and tokens go with it. */
    async deleteAccount (userId: string, password: string, client: ClientInfo): Promise<void> {
      const user = await current(userId)
      if (!await passwords.verify(user.password_hash, password)) throw new Errors.InvalidCredentials()
      await remove(user.id, 'account_deleted')
      await audit.record({ type: 'user_deleted', userId: user.id, client, detail: { by: 'self' } })
    },

    remove
  }
}

export default fp(async function accounts (fastify) {
  const accounts = createAccounts(fastify)
  fastify.decorate('accounts', accounts)
  const { ADMIN_EMAIL, ADMIN_PASSWORD } = fastify.config
  if (ADMIN_EMAIL && ADMIN_PASSWORD) {
    const outcome = await accounts.ensureAdmin(ADMIN_EMAIL, ADMIN_PASSWORD)
    if (outcome !== 'unchanged') fastify.log.info({ outcome }, 'first admin from ADMIN_EMAIL')
  }
}, { name: 'accounts', dependencies: ['config', 'db', 'passwords', 'sessions', 'emails', 'roles', 'audit', 'login-throttle'] })
