import type { Accounts, TokenResponse } from './accounts.js'
import type { ClientInfo } from './clients.js'
import type { Mfa, SecondFactorProof } from './mfa.js'
import type { Sessions } from './sessions.js'

export type Assurance = ReturnType<typeof createAssurance>

/** A session that passed a password and a one-time code (RFC 8176 methods; NIST AAL2). */
export const AAL2 = { aal: 2, amr: ['pwd', 'otp'] } as const

/** Who may enrol: a signed-in user (with its password again), or a sign-in whose role must enrol first (its mfa_token). */
export type Enroller = { userId: string, password: string } | { mfaToken: string }

/**
 * The second step, wherever it comes: finishing a sign-in that stopped at
 * `mfa_required`, raising a signed-in session to aal2 (step-up), and the
 * enrolment a role may require before any session at all.
 */
export function createAssurance ({ accounts, mfa, sessions }: { accounts: Accounts, mfa: Mfa, sessions: Sessions }) {
  /** The account enrolling, and (for a sign-in's enrolment token) how to spend the token in the change it leads to. */
  async function enrollerOf (who: Enroller) {
    if ('mfaToken' in who) return mfa.redeem(who.mfaToken, 'enrol')
    const user = await accounts.current(who.userId)
    await accounts.reauthenticate(user, who.password)
    return { user, spend: null }
  }

  return {
    /** A sign-in's second step: its mfa_token and a code give the usual token response, at aal2. The token works once. */
    async verify (mfaToken: string, proof: SecondFactorProof, client: ClientInfo): Promise<TokenResponse> {
      const { user, spend } = await mfa.redeem(mfaToken, 'verify')
      await mfa.prove(user, proof, client)
      return accounts.signIn(user, client, { level: AAL2, alongside: spend })
    },

    /** Step-up: the caller's session proves the second factor and is raised to aal2, with new tokens. */
    async stepUp (auth: { userId: string, sessionId: string }, proof: SecondFactorProof, client: ClientInfo): Promise<TokenResponse> {
      const user = await accounts.current(auth.userId)
      await mfa.prove(user, proof, client)
      return { ...await sessions.raise(user, auth.sessionId, AAL2), user: accounts.present(user) }
    },

    /** Starts a TOTP enrolment. */
    enrol: async (who: Enroller) => mfa.enrol((await enrollerOf(who)).user),

    /**
     * Confirms the enrolment with a first code: the recovery codes, and for a
     * sign-in that had to enrol first, its session (at aal2).
     */
    async confirm (who: { userId: string } | { mfaToken: string }, code: string, client: ClientInfo): Promise<{ recovery_codes: string[] } & Partial<TokenResponse>> {
      if (!('mfaToken' in who)) return { recovery_codes: await mfa.confirm(await accounts.current(who.userId), code, client) }
      const { user, spend } = await mfa.redeem(who.mfaToken, 'enrol')
      const codes = await mfa.confirm(user, code, client)
      return { recovery_codes: codes, ...await accounts.signIn(user, client, { level: AAL2, alongside: spend }) }
    }
  }
}
