import { randomUUID } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { deleteUser, findUserByEmail, findUserById, findUserByUsername, insertUser, uniqueViolation, updateUser } from '../db/queries/users.js'
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
export function toPublicUser (row: UserRow): User {
  return {
    id: row.id,
    email: row.email,
    username: row.username,
    email_verified: Boolean(row.email_verified),
    roles: ['user'],
    created_at: new Date(row.created_at).toISOString(),
    updated_at: new Date(row.updated_at).toISOString()
  }
}

function createAccounts (fastify: FastifyInstance) {
  const { db, passwords, sessions, emails, config } = fastify

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

  async function signedIn (user: UserRow, client: ClientInfo): Promise<TokenResponse> {
    return { ...await sessions.start(user, client), user: toPublicUser(user) }
  }

  /** The user behind a verified access token; a deleted or disabled one is no longer anyone. */
  async function current (userId: string): Promise<UserRow> {
    const user = await findUserById(db, userId)
    if (!user || user.disabled) throw new Errors.InvalidAccessToken()
    return user
  }

  return {
    current,

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
      let user: UserRow
      try {
        user = await unique(passwords.hash(input.password).then((passwordHash) => insertUser(db, {
          id: randomUUID(), email, username, password_hash: passwordHash, email_verified: 0, disabled: 0, created_at: now, updated_at: now
        })))
      } catch (err) {
        if (!(err instanceof Errors.EmailTaken) || !config.REQUIRE_EMAIL_VERIFICATION) throw err
        emails.signupAttempted(email)
        return null
      }
      emails.welcome(user)
      return config.REQUIRE_EMAIL_VERIFICATION ? null : signedIn(user, client)
    },

    /**
     * Unknown account, wrong password and disabled account all fail the same
     * way after the same work: one argon2 verify.
     */
    async login (input: { email?: string, username?: string, password: string }, client: ClientInfo): Promise<TokenResponse> {
      const identifier = (input.email ?? input.username ?? '').trim()
      const user = identifier.includes('@') ? await findUserByEmail(db, normalizeEmail(identifier)) : await findUserByUsername(db, normalizeUsername(identifier))
      const ok = await passwords.verify(user?.password_hash, input.password)
      if (!ok || !user || user.disabled) throw new Errors.InvalidCredentials()
      // Only after the right password: the 403 tells nothing to someone who does not know it.
      if (config.REQUIRE_EMAIL_VERIFICATION && !user.email_verified) throw new Errors.EmailNotVerified()
      if (passwords.needsRehash(user.password_hash)) {
        await updateUser(db, user.id, { password_hash: await passwords.hash(input.password) })
      }
      return signedIn(user, client)
    },

    /** Changes the password and ends every other session of the user. */
    async changePassword (userId: string, sessionId: string, currentPassword: string, newPassword: string): Promise<void> {
      const user = await current(userId)
      if (!await passwords.verify(user.password_hash, currentPassword)) throw new Errors.InvalidCredentials()
      if (currentPassword.normalize('NFKC') === newPassword.normalize('NFKC')) throw new Errors.SamePassword()
      passwords.enforce(newPassword, user)
      await updateUser(db, user.id, { password_hash: await passwords.hash(newPassword), updated_at: fastify.now().toISOString() })
      await sessions.endAll(user.id, 'password_changed', sessionId)
    },

    async updateProfile (userId: string, changes: { username: string | null }): Promise<User> {
      await current(userId)
      const username = changes.username === null ? null : normalizeUsername(changes.username)
      const user = await unique(updateUser(db, userId, { username, updated_at: fastify.now().toISOString() }))
      if (!user) throw new Errors.InvalidAccessToken()
      return toPublicUser(user)
    },

    /** Deletes the account after re-authentication; sessions and tokens go with it. */
    async deleteAccount (userId: string, password: string): Promise<void> {
      const user = await current(userId)
      if (!await passwords.verify(user.password_hash, password)) throw new Errors.InvalidCredentials()
      // Revoke first: the revocation list outlives the session rows the delete removes.
      await sessions.endAll(user.id, 'account_deleted')
      await deleteUser(db, user.id)
    }
  }
}

export default fp(async function accounts (fastify) {
  fastify.decorate('accounts', createAccounts(fastify))
}, { name: 'accounts', dependencies: ['config', 'db', 'passwords', 'sessions', 'emails'] })
