import { createHash, randomBytes, randomInt, randomUUID } from 'node:crypto'
import type { Kysely } from 'kysely'
import { Secret, TOTP } from 'otpauth'
import QRCode from 'qrcode'
import {
  acceptStep, consumeChallenge, deleteFactors, findChallenge, findFactor, insertChallenge, listFactors,
  pruneChallenges, replacePendingFactor, replaceRecoveryCodes, unusedRecoveryCodes, useRecoveryCode
} from '../db/queries/mfa.js'
import { findUserById, type Account } from '../db/queries/users.js'
import type { Database, MfaChallengeRow, MfaFactorRow } from '../db/types.js'
import type { Audit } from './audit.js'
import type { ClientInfo } from './clients.js'
import type { Base } from './context.js'
import { Errors } from './errors.js'
import { sealer } from './keys.js'
import { throttleKey, type LoginThrottle } from './login-throttle.js'
import { templates } from './mail-templates.js'
import type { Mailer } from './mailer.js'
import { iso } from './pages.js'

export type Mfa = ReturnType<typeof createMfa>
export type SecondFactorProof = { code: string } | { recovery_code: string }

/** RFC 6238 as authenticator apps expect it: SHA-1, 6 digits, 30-second steps. */
const STEP_MS = 30_000
/** Codes of the step before and after are accepted too (clock drift, a code typed at the boundary). */
const DRIFT_STEPS = 1
const RECOVERY_CODES = 10
/** Crockford's base32 without I, L, O, U: 12 characters are 60 random bits, typed as XXXX-XXXX-XXXX. */
const RECOVERY_ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'
/** At this many unused recovery codes or fewer, the owner is told to make new ones. */
const FEW_RECOVERY_CODES = 3
/** How long the step between the password and the second factor may take. */
const CHALLENGE_TTL_MS = 5 * 60_000

const sha256 = (text: string) => createHash('sha256').update(text).digest('base64url')

/** A recovery code as typed (any case, spaces or dashes, O for 0, I or L for 1): its canonical form. */
export function canonicalRecoveryCode (typed: string): string {
  return typed.toUpperCase().replace(/[\s-]/g, '').replace(/O/g, '0').replace(/[IL]/g, '1')
}

function newRecoveryCode (): string {
  const chars = Array.from({ length: 12 }, () => RECOVERY_ALPHABET[randomInt(RECOVERY_ALPHABET.length)])
  return `${chars.slice(0, 4).join('')}-${chars.slice(4, 8).join('')}-${chars.slice(8).join('')}`
}

/**
 * Second factors: TOTP (RFC 6238) with recovery codes, and the challenge
 * that carries a sign-in from its password step to its second step. The
 * factor's secret is sealed at rest like the signing keys; recovery codes and
 * challenge tokens are kept only as hashes. A code is accepted once: the time
 * step it belongs to is recorded in the same conditional write that accepts
 * it. Every failed code goes through the per-account throttle, shared with
 * passwords.
 */
export function createMfa ({ db, clock, config, audit, loginThrottle, mailer, counted }: Pick<Base, 'db' | 'clock' | 'config'> & {
  audit: Audit
  loginThrottle: LoginThrottle
  mailer: Mailer
  /** Told each second-factor outcome (the metrics). */
  counted: (outcome: 'otp' | 'recovery_code' | 'failed') => void
}) {
  const secrets = sealer(config.KEY_ENCRYPTION_SECRET, 'totp-secret-encryption')
  const requiredRoles = new Set(config.MFA_REQUIRED_ROLES.split(',').map((r) => r.trim()).filter(Boolean))
  const totp = (secret: string, label: string) =>
    new TOTP({ issuer: config.MFA_ISSUER, label, algorithm: 'SHA1', digits: 6, period: STEP_MS / 1000, secret: Secret.fromBase32(secret) })
  const recoveryHash = (userId: string, code: string) => sha256(`${userId}:${canonicalRecoveryCode(code)}`)

  /** The time step of `code` for the factor (within the drift allowed), or null when it is no code of it. */
  function stepOf (factor: MfaFactorRow, label: string, code: string): number | null {
    const now = clock().getTime()
    const delta = totp(secrets.open(factor.secret), label).validate({ token: code, timestamp: now, window: DRIFT_STEPS })
    return delta === null ? null : Math.floor(now / STEP_MS) + delta
  }

  async function newRecoveryCodes (trx: Kysely<Database>, userId: string): Promise<string[]> {
    const codes = Array.from({ length: RECOVERY_CODES }, newRecoveryCode)
    await replaceRecoveryCodes(trx, userId, codes.map((code) => recoveryHash(userId, code)), clock().toISOString())
    return codes
  }

  async function confirmedFactor (userId: string): Promise<MfaFactorRow | undefined> {
    const factor = await findFactor(db, userId)
    return factor?.confirmed_at ? factor : undefined
  }

  /**
   * Spends a recovery code of the account, with its event, in one change;
   * false when it is not an unused one. The owner is then mailed, and told
   * to make new ones when few are left.
   */
  async function spendRecoveryCode (user: Account, code: string, client: ClientInfo): Promise<boolean> {
    const left = await db.transaction().execute(async (trx) => {
      if (!await useRecoveryCode(trx, user.id, recoveryHash(user.id, code), clock().toISOString())) return null
      const left = await unusedRecoveryCodes(trx, user.id)
      await audit.record({ type: 'recovery_code_used', userId: user.id, client, detail: { left } }, trx)
      return left
    })
    if (left === null) return false
    mailer.send(user.email, templates.recoveryCodeUsed(left, left <= FEW_RECOVERY_CODES))
    return true
  }

  return {
    /** True when the account has a confirmed second factor. */
    has: async (userId: string): Promise<boolean> => (await confirmedFactor(userId)) !== undefined,

    /** True when one of the roles must have a second factor (MFA_REQUIRED_ROLES). */
    requiredFor: (roles: string[]): boolean => roles.some((role) => requiredRoles.has(role)),

    /** Refuses (403 MFA_REQUIRED) a session below aal2 when the account has a second factor. */
    async requireAssurance (userId: string, aal: number): Promise<void> {
      if (aal < 2 && (await confirmedFactor(userId)) !== undefined) throw new Errors.MfaRequired()
    },

    /** The factors (without secrets) and how many recovery codes are left. */
    async status (userId: string) {
      const factors = await listFactors(db, userId)
      return {
        factors: factors.map((f) => ({ type: f.kind, created_at: iso(f.created_at), last_used_at: f.last_used_at === null ? null : iso(f.last_used_at) })),
        recovery_codes_left: await unusedRecoveryCodes(db, userId)
      }
    },

    /** Starts a TOTP enrolment: a new pending factor (replacing a pending one) and what an authenticator app needs. */
    async enrol (user: Account) {
      if (await confirmedFactor(user.id)) throw new Errors.MfaAlreadyEnrolled()
      const secret = new Secret({ size: 20 }).base32
      const id = randomUUID()
      await db.transaction().execute((trx) => replacePendingFactor(trx, { id, userId: user.id, secret: secrets.seal(secret), now: clock().toISOString() }))
      const uri = totp(secret, user.email).toString()
      return { factor_id: id, secret, otpauth_uri: uri, qr_svg: await QRCode.toString(uri, { type: 'svg', margin: 1 }) }
    },

    /** Confirms the pending factor with a code of it: it is active, with a first set of recovery codes (shown this once). */
    async confirm (user: Account, code: string, client: ClientInfo): Promise<string[]> {
      const factor = await findFactor(db, user.id)
      if (!factor || factor.confirmed_at) throw new Errors.MfaNotPending()
      let step: number | null = null
      if (!await loginThrottle.guard(throttleKey(user, ''), async () => (step = stepOf(factor, user.email, code)) !== null)) {
        counted('failed')
        throw new Errors.InvalidMfaCode()
      }
      return db.transaction().execute(async (trx) => {
        if (!await acceptStep(trx, factor.id, step!, clock().toISOString())) throw new Errors.InvalidMfaCode()
        const codes = await newRecoveryCodes(trx, user.id)
        await audit.record({ type: 'mfa_enrolled', userId: user.id, client, detail: { type: 'totp' } }, trx)
        return codes
      })
    },

    /**
     * Checks a second factor's proof (a TOTP code or a recovery code) under
     * the per-account throttle, spending it: each code is good once, also
     * when requests race. Throws 401 INVALID_MFA_CODE.
     */
    async prove (user: Account, proof: SecondFactorProof, client: ClientInfo): Promise<void> {
      const factor = await confirmedFactor(user.id)
      if (!factor) throw new Errors.MfaNotEnrolled()
      const now = clock().toISOString()
      const byRecovery = 'recovery_code' in proof
      const ok = await loginThrottle.guard(throttleKey(user, ''), async () => {
        if (byRecovery) return spendRecoveryCode(user, proof.recovery_code, client)
        const step = stepOf(factor, user.email, proof.code)
        return step !== null && acceptStep(db, factor.id, step, now)
      })
      counted(!ok ? 'failed' : byRecovery ? 'recovery_code' : 'otp')
      if (!ok) {
        await audit.record({ type: 'mfa_failed', userId: user.id, client, detail: { method: byRecovery ? 'recovery_code' : 'totp' } })
        throw new Errors.InvalidMfaCode()
      }
    },

    /** Removes the account's factors and recovery codes, with its event, in `trx` (the caller's change) or a change of its own. */
    async remove (userId: string, event: { type: string, client?: ClientInfo, detail?: Record<string, unknown> }, trx?: Kysely<Database>): Promise<void> {
      const work = async (trx: Kysely<Database>) => {
        if (await deleteFactors(trx, userId) === 0) throw new Errors.MfaNotEnrolled()
        await audit.record({ ...event, userId }, trx)
      }
      await (trx ? work(trx) : db.transaction().execute(work))
    },

    /** A new set of recovery codes; the old ones stop working. */
    async regenerate (userId: string, client: ClientInfo): Promise<string[]> {
      if (!await confirmedFactor(userId)) throw new Errors.MfaNotEnrolled()
      return db.transaction().execute(async (trx) => {
        const codes = await newRecoveryCodes(trx, userId)
        await audit.record({ type: 'recovery_codes_regenerated', userId, client }, trx)
        return codes
      })
    },

    /** The opaque token between a sign-in's password step and its second step: single-use, 5 minutes, bound to the password checked. */
    async challenge (user: Account, purpose: MfaChallengeRow['purpose']): Promise<string> {
      const token = randomBytes(32).toString('base64url')
      const now = clock()
      await insertChallenge(db, {
        token_hash: sha256(token),
        user_id: user.id,
        purpose,
        password_tag: sha256(user.password_hash),
        created_at: now.toISOString(),
        expires_at: new Date(now.getTime() + CHALLENGE_TTL_MS).toISOString()
      })
      return token
    },

    /** Deletes the challenges that ended an hour ago or more. */
    prune: () => pruneChallenges(db, new Date(clock().getTime() - 3_600_000).toISOString()),

    /**
     * The account behind a live challenge token of this purpose (not spent:
     * `spend` it in the change it leads to). Refused when the account was
     * disabled or its password changed since.
     */
    async redeem (token: string, purpose: MfaChallengeRow['purpose']): Promise<{ user: Account, spend: (trx: Kysely<Database>) => Promise<void> }> {
      const hash = sha256(token)
      const row = await findChallenge(db, hash, purpose, clock().toISOString())
      const user = row && await findUserById(db, row.user_id)
      if (!row || !user || user.disabled || sha256(user.password_hash) !== row.password_tag) throw new Errors.InvalidMfaToken()
      return {
        user,
        spend: async (trx) => { if (!await consumeChallenge(trx, hash, clock().toISOString())) throw new Errors.InvalidMfaToken() }
      }
    }
  }
}
