import { createHash, randomBytes } from 'node:crypto'
import { consumeOneTimeToken, findLiveOneTimeToken, findUnexpiredOneTimeToken, replaceOneTimeToken, voidOneTimeTokens } from '../db/queries/one-time-tokens.js'
import { findUserByEmail, findUserById, uniqueViolation, updateUser } from '../db/queries/users.js'
import type { TokenPurpose, UserRow } from '../db/types.js'
import { addressOf, normalizeEmail } from './addresses.js'
import type { Audit } from './audit.js'
import type { Background } from './background.js'
import type { ClientInfo } from './clients.js'
import type { Base } from './context.js'
import { Errors } from './errors.js'
import { throttleKey, type LoginThrottle } from './login-throttle.js'
import { templates, type Action } from './mail-templates.js'
import type { Mailer } from './mailer.js'
import type { Passwords } from './passwords.js'
import type { Sessions } from './sessions.js'
import { toPublicUser } from './views.js'

export type Emails = ReturnType<typeof createEmails>

const hashToken = (token: string) => createHash('sha256').update(token).digest('base64url')

/**
 * The email channel: verifying an address, resetting a password, changing the
 * address. Tokens are 256 random bits, single-use, stored only as a hash; the
 * newest of a kind voids the older. Requests that name an address answer the
 * same whether or not it has an account: their work runs in the background.
 */
export function createEmails ({ db, clock, config, mailer, background, passwords, sessions, audit, loginThrottle }: Pick<Base, 'db' | 'clock' | 'config'> & {
  mailer: Mailer
  background: Background
  passwords: Passwords
  sessions: Sessions
  audit: Audit
  loginThrottle: LoginThrottle
}) {
  const verifyAt = `${config.PUBLIC_URL}/api/v1/auth/email/verify`
  const resetAt = `${config.PUBLIC_URL}/api/v1/auth/password/reset`
  /** The link to the app when its URL is configured; the request the app makes with the token either way. */
  const action = (template: string | undefined, token: string, url: string, body: Record<string, string> = {}): Action => ({
    link: template?.replace('{token}', encodeURIComponent(token)) ?? null, token, request: { url, body: { token, ...body } }
  })

  /** Makes a token for the user (voiding older ones of its purpose) and returns it, or null when one went out too recently. */
  async function issue (user: UserRow, purpose: TokenPurpose, email: string, ttl: number, throttle: boolean): Promise<string | null> {
    const now = clock()
    const token = randomBytes(32).toString('base64url')
    const notSince = throttle ? new Date(now.getTime() - config.EMAIL_RESEND_INTERVAL_SECONDS * 1000).toISOString() : undefined
    const made = await replaceOneTimeToken(db, { hash: hashToken(token), userId: user.id, purpose, email, now: now.toISOString(), expiresAt: new Date(now.getTime() + ttl * 1000).toISOString() }, notSince)
    return made ? token : null
  }

  async function sendVerification (user: UserRow, throttle: boolean) {
    const token = await issue(user, 'verify_email', user.email, config.EMAIL_VERIFICATION_TTL_SECONDS, throttle)
    if (token) mailer.send(user.email, templates.verifyEmail(action(config.EMAIL_VERIFY_URL, token, verifyAt), config.EMAIL_VERIFICATION_TTL_SECONDS))
  }

  return {
    /** After signup: the verification mail (in the background). */
    welcome (user: UserRow) {
      background.run('verification mail', () => sendVerification(user, false))
    },

    /** Signup with a taken address while verification is required: tell the owner, reveal nothing to the caller. */
    signupAttempted (email: string) {
      background.run('signup attempt mail', async () => {
        const user = await findUserByEmail(db, email)
        if (user) mailer.send(user.email, templates.signupAttempt())
      })
    },

    /** Resend the verification mail, if the address has an unverified account; at most one per interval. */
    resend (email: string) {
      background.run('verification resend', async () => {
        const user = await findUserByEmail(db, normalizeEmail(email))
        if (user && !user.email_verified && !user.disabled) await sendVerification(user, true)
      })
    },

    /** Verifies an address: the account's own (after signup) or a new one it asked for. */
    async verify (token: string, client: ClientInfo) {
      const now = clock().toISOString()
      // One change: the token spent, the account updated and the event written, or none of them.
      const { user, updated, changedFrom } = await db.transaction().execute(async (trx) => {
        const row = await consumeOneTimeToken(trx, hashToken(token), ['verify_email', 'change_email'], now)
        if (!row) {
          // The same link followed twice (a second tab, a mail scanner first): the address it verified is, so say so again.
          const spent = await findUnexpiredOneTimeToken(trx, hashToken(token), ['verify_email', 'change_email'], now)
          const owner = spent && await findUserById(trx, spent.user_id)
          if (owner && !owner.disabled && owner.email_verified && owner.email === spent.email) return { user: owner, updated: owner, changedFrom: null }
          throw new Errors.InvalidToken()
        }
        const user = await findUserById(trx, row.user_id)
        if (!user || user.disabled) throw new Errors.InvalidToken()
        if (row.purpose === 'verify_email') {
          // The token verifies the address it was sent to, and only while the account still has it.
          if (row.email !== user.email) throw new Errors.InvalidToken()
          const updated = await updateUser(trx, user.id, { email_verified: 1, updated_at: now })
          await audit.record({ type: 'email_verified', userId: user.id, client }, trx)
          return { user, updated, changedFrom: null }
        }
        let updated: UserRow | undefined
        try {
          updated = await updateUser(trx, user.id, { email: row.email, email_verified: 1, updated_at: now })
        } catch (err) {
          if (uniqueViolation(err) === 'email') throw new Errors.EmailTaken()
          throw err
        }
        // A reset link mailed to the old address must not outlive the change.
        await voidOneTimeTokens(trx, user.id, 'reset_password', now)
        await audit.record({ type: 'email_changed', userId: user.id, client }, trx)
        return { user, updated, changedFrom: user.email }
      })
      if (changedFrom) mailer.send(changedFrom, templates.emailChanged(updated!.email))
      return toPublicUser(updated!, user.roles)
    },

    /** Mails a reset link if the address has an account; the caller learns nothing either way. */
    forgot (email: string) {
      background.run('password reset mail', async () => {
        const user = await findUserByEmail(db, normalizeEmail(email))
        if (!user || user.disabled) return
        const token = await issue(user, 'reset_password', user.email, config.PASSWORD_RESET_TTL_SECONDS, true)
        if (token) mailer.send(user.email, templates.resetPassword(action(config.PASSWORD_RESET_URL, token, resetAt, { new_password: '<new password>' }), config.PASSWORD_RESET_TTL_SECONDS))
      })
    },

    /** Sets a new password with a reset token; every session of the user ends. */
    async reset (token: string, newPassword: string, client: ClientInfo): Promise<void> {
      const hash = hashToken(token)
      const pending = await findLiveOneTimeToken(db, hash, 'reset_password', clock().toISOString())
      const owner = pending && await findUserById(db, pending.user_id)
      if (!owner || owner.disabled) throw new Errors.InvalidToken()
      // The policy is checked before the token is spent, so a weak choice can be corrected with the same link.
      passwords.enforce(newPassword, owner)
      const passwordHash = await passwords.hash(newPassword)
      const now = clock().toISOString()
      // One change: a password set while the other sessions live on would leave a thief signed in.
      await sessions.announce(await db.transaction().execute(async (trx) => {
        const row = await consumeOneTimeToken(trx, hash, ['reset_password'], now)
        if (!row) throw new Errors.InvalidToken()
        // Following the link proved the mailbox is theirs: the address is verified too.
        await updateUser(trx, owner.id, { password_hash: passwordHash, email_verified: row.email === owner.email ? 1 : Number(owner.email_verified), updated_at: now })
        const ended = await sessions.endWithin(trx, owner.id, 'password_reset')
        await audit.record({ type: 'password_reset', userId: owner.id, client }, trx)
        return ended
      }))
      await loginThrottle.forget(throttleKey(owner, ''))
    },

    /**
     * Starts a change of address: mails the new address; nothing changes until
     * it is verified. A taken address answers like a free one (its owner is
     * told instead), and either mail goes at most once per resend interval.
     */
    async requestChange (userId: string, newEmail: string, password: string): Promise<void> {
      const user = await findUserById(db, userId)
      if (!user || user.disabled) throw new Errors.InvalidAccessToken()
      if (!await loginThrottle.guard(throttleKey(user, ''), () => passwords.verify(user.password_hash, password))) throw new Errors.InvalidCredentials()
      const email = addressOf(newEmail, 'new_email')
      if (email === user.email) throw new Errors.SameEmail()
      // The same writes either way; for a taken address the token is never sent, so it can never be used.
      const token = await issue(user, 'change_email', email, config.EMAIL_VERIFICATION_TTL_SECONDS, true)
      if (!token) return
      const owner = await findUserByEmail(db, email)
      if (owner) mailer.send(owner.email, templates.changeToTakenAddress())
      else mailer.send(email, templates.confirmNewEmail(action(config.EMAIL_VERIFY_URL, token, verifyAt), config.EMAIL_VERIFICATION_TTL_SECONDS))
    }
  }
}
