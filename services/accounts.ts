import { randomUUID } from 'node:crypto'
import { deleteUser, findUserByEmail, findUserById, findUserByUsername, findUserLocked, insertUser, uniqueViolation, updateUser, type Account } from '../db/queries/users.js'
import type { User } from '../schemas/common.js'
import { addressOf, normalizeUsername } from './addresses.js'
import type { Audit, AuditEvent } from './audit.js'
import type { ClientInfo } from './clients.js'
import type { Base } from './context.js'
import type { Emails } from './emails.js'
import { Errors } from './errors.js'
import { throttleKey, type LoginThrottle } from './login-throttle.js'
import type { Passwords } from './passwords.js'
import { AAL1, type IssuedTokens, type Level, type Sessions } from './sessions.js'
import type { Mfa } from './mfa.js'
import type { Kysely } from 'kysely'
import type { Database } from '../db/types.js'
import { toPublicUser } from './views.js'

export type Accounts = ReturnType<typeof createAccounts>
export type TokenResponse = IssuedTokens & { user: User }
/** A right password that does not sign in yet: the second factor comes next, or its enrolment. */
export type SecondStep = { mfa_required: true, mfa_token: string, methods: Array<'totp' | 'recovery_code'> } | { mfa_enrolment_required: true, mfa_token: string }

interface SignInOptions {
  /** The password hash made again with the configured parameters. */
  renewedHash?: string | null
  level?: Level
  /** What the same change writes besides (spending the sign-in's mfa_token). */
  alongside?: ((trx: Kysely<Database>) => Promise<void>) | null
}

/** Runs a write that may hit the unique email or username index; a hit is a 409, not a 500. */
export async function unique<T> (write: Promise<T>): Promise<T> {
  try {
    return await write
  } catch (err) {
    const field = uniqueViolation(err)
    if (field === 'email') throw new Errors.EmailTaken()
    if (field === 'username') throw new Errors.UsernameTaken()
    throw err
  }
}

export function createAccounts ({ db, clock, config, passwords, sessions, emails, audit, loginThrottle, mfa }: Pick<Base, 'db' | 'clock' | 'config'> & {
  mfa: Mfa
  passwords: Passwords
  sessions: Sessions
  emails: Emails
  audit: Audit
  loginThrottle: LoginThrottle
}) {
  /** A user as the API shows them, with their roles as they were read with the row. */
  const present = (account: Account): User => toPublicUser(account, account.roles)

  /**
   * Signs the user in, in one change: the account read again and held (a
   * change of its roles, status or password waits for the commit, or has
   * landed and is seen), the password hash renewed if it is outdated, the
   * session and its event. The token carries the roles read here.
   */
  async function signIn (user: Account, client: ClientInfo, { renewedHash = null, level = AAL1, alongside }: SignInOptions = {}): Promise<TokenResponse> {
    const { account, sessionId, refreshToken } = await db.transaction().execute(async (trx) => {
      const account = await findUserLocked(trx, user.id)
      // Disabled, or the password changed, since it was checked: the sign-in fails like a wrong password.
      if (!account || account.disabled || account.password_hash !== user.password_hash) throw new Errors.InvalidCredentials()
      if (renewedHash) await updateUser(trx, account.id, { password_hash: renewedHash })
      await alongside?.(trx)
      const started = await sessions.startWithin(trx, account.id, client, level)
      await audit.record({ type: 'login_succeeded', userId: account.id, sessionId: started.sessionId, client }, trx)
      return { account, ...started }
    })
    return { ...await sessions.issue(account, sessionId, refreshToken, level), user: present(account) }
  }

  /** The user behind a verified access token; a deleted or disabled one is no longer anyone. */
  async function current (userId: string): Promise<Account> {
    const user = await findUserById(db, userId)
    if (!user || user.disabled) throw new Errors.InvalidAccessToken()
    return user
  }

  /** Checks the password of a signed-in user, under the per-account throttle; 401 when wrong. */
  async function reauthenticate (user: Account, password: string): Promise<void> {
    if (!await loginThrottle.guard(throttleKey(user, ''), () => passwords.verify(user.password_hash, password))) throw new Errors.InvalidCredentials()
  }

  /**
   * Deletes a user, with its audit event, in one change. Revokes first: the
   * revocation list outlives the session rows the delete removes.
   */
  async function remove (userId: string, reason: string, event: AuditEvent): Promise<boolean> {
    const { ended, deleted } = await db.transaction().execute(async (trx) => {
      // The row locked first: a sign-in under way commits its session before the sessions are ended, or fails after.
      await updateUser(trx, userId, { updated_at: clock().toISOString() })
      const ended = await sessions.endWithin(trx, userId, reason)
      const deleted = await deleteUser(trx, userId)
      if (deleted) await audit.record(event, trx)
      return { ended, deleted }
    })
    await sessions.announce(ended)
    return deleted
  }

  return {
    current,
    present,

    /** The signed-in user's own profile. */
    profile: async (userId: string) => present(await current(userId)),

    /**
     * Creates an account and mails its verification link. Signed in at once,
     * unless REQUIRE_EMAIL_VERIFICATION: then null, for a new and a taken
     * address alike (the owner of a taken one is told by mail).
     */
    async signup (input: { email: string, password: string, username?: string }, client: ClientInfo): Promise<TokenResponse | null> {
      const email = addressOf(input.email, 'email')
      const username = input.username === undefined ? null : normalizeUsername(input.username)
      passwords.enforce(input.password, { email, username })
      // The username first, whatever the address: which unique index the database checks
      // first differs (PostgreSQL: email, SQLite: username), and must not tell whether the address is taken.
      if (username !== null && await findUserByUsername(db, username)) throw new Errors.UsernameTaken()
      const now = clock().toISOString()
      const passwordHash = await passwords.hash(input.password)
      let created: { user: Account, session: { sessionId: string, refreshToken: string } | null }
      try {
        // One change: the account, its roles, its first session (unless it must verify first) and the event.
        created = await unique(db.transaction().execute(async (trx) => {
          const user = await insertUser(trx, {
            id: randomUUID(), email, username, password_hash: passwordHash, email_verified: 0, disabled: 0, created_at: now, updated_at: now
          }, ['user'])
          const session = config.REQUIRE_EMAIL_VERIFICATION ? null : await sessions.startWithin(trx, user.id, client)
          await audit.record({ type: 'signup', userId: user.id, sessionId: session?.sessionId ?? null, client }, trx)
          return { user, session }
        }))
      } catch (err) {
        if (!(err instanceof Errors.EmailTaken) || !config.REQUIRE_EMAIL_VERIFICATION) throw err
        // Both taken, the username since the check above: answer for the username, as then.
        if (username !== null && await findUserByUsername(db, username)) throw new Errors.UsernameTaken()
        emails.signupAttempted(email)
        return null
      }
      const { user, session } = created
      emails.welcome(user)
      return session && { ...await sessions.issue(user, session.sessionId, session.refreshToken, AAL1), user: present(user) }
    },

    /**
     * Unknown account, wrong password and disabled account all fail the same
     * way after the same work: one argon2 verify.
     */
    async login (input: { email?: string, username?: string, password: string }, client: ClientInfo): Promise<TokenResponse | SecondStep> {
      const typed = (input.email ?? input.username ?? '').trim()
      const byEmail = typed.includes('@')
      const identifier = byEmail ? addressOf(typed, input.email === undefined ? 'username' : 'email') : normalizeUsername(typed)
      const user = byEmail ? await findUserByEmail(db, identifier) : await findUserByUsername(db, identifier)
      // Throttled per account, however it was named; an unknown name is throttled alike.
      // A disabled account counts as a failure, as it answers like one.
      let passwordOk = false
      const ok = await loginThrottle.guard(throttleKey(user, identifier), async () => {
        passwordOk = await passwords.verify(user?.password_hash, input.password)
        return passwordOk && !user!.disabled
      })
      if (!ok) {
        const reason = !user ? 'unknown_account' : !passwordOk ? 'wrong_password' : 'disabled'
        // The reason is for the trail only; the caller gets the same answer for all three.
        await audit.record({ type: 'login_failed', userId: user?.id ?? null, client, detail: { reason } })
        throw new Errors.InvalidCredentials()
      }
      // Only after the right password: the 403 tells nothing to someone who does not know it.
      if (config.REQUIRE_EMAIL_VERIFICATION && !user!.email_verified) {
        await audit.record({ type: 'login_failed', userId: user!.id, client, detail: { reason: 'email_not_verified' } })
        throw new Errors.EmailNotVerified()
      }
      // The password alone never signs in an account with a second factor, or one whose role must have one first.
      if (await mfa.has(user!.id)) return { mfa_required: true, mfa_token: await mfa.challenge(user!, 'verify'), methods: ['totp', 'recovery_code'] }
      if (mfa.requiredFor(user!.roles)) return { mfa_enrolment_required: true, mfa_token: await mfa.challenge(user!, 'enrol') }
      return signIn(user!, client, { renewedHash: passwords.needsRehash(user!.password_hash) ? await passwords.hash(input.password) : null })
    },

    /** Changes the password and ends every other session of the user (pending mail tokens die with them). */
    async changePassword (userId: string, sessionId: string, currentPassword: string, newPassword: string, client: ClientInfo): Promise<void> {
      const user = await current(userId)
      await reauthenticate(user, currentPassword)
      if (currentPassword.normalize('NFKC') === newPassword.normalize('NFKC')) throw new Errors.SamePassword()
      passwords.enforce(newPassword, user)
      const passwordHash = await passwords.hash(newPassword)
      // One change: a password changed while the other sessions live on would leave a thief signed in.
      await sessions.announce(await db.transaction().execute(async (trx) => {
        await updateUser(trx, user.id, { password_hash: passwordHash, updated_at: clock().toISOString() })
        const ended = await sessions.endWithin(trx, user.id, 'password_changed', { except: sessionId })
        await audit.record({ type: 'password_changed', userId: user.id, sessionId, client }, trx)
        return ended
      }))
    },

    async updateProfile (userId: string, changes: { username: string | null }): Promise<User> {
      const { roles } = await current(userId)
      const username = changes.username === null ? null : normalizeUsername(changes.username)
      const user = await unique(updateUser(db, userId, { username, updated_at: clock().toISOString() }))
      if (!user) throw new Errors.InvalidAccessToken()
      return present({ ...user, roles })
    },

    /** Deletes the account after re-authentication; sessions and tokens go with it. */
    async deleteAccount (userId: string, password: string, client: ClientInfo): Promise<void> {
      const user = await current(userId)
      await reauthenticate(user, password)
      await remove(user.id, 'account_deleted', { type: 'user_deleted', userId: user.id, client, detail: { by: 'self' } })
    },

    remove,
    reauthenticate,
    signIn
  }
}
