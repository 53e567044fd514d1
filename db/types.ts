import type { ColumnType, Insertable, Selectable, Updateable } from 'kysely'

/**
 * Times are written as ISO 8601 UTC strings and read back as a Date
 * (PostgreSQL timestamptz) or the same string (SQLite): `new Date(x)` reads both.
 * Flags are written as 0/1 (better-sqlite3 binds no booleans) and read as
 * boolean (PostgreSQL) or number (SQLite): `Boolean(x)` reads both.
 */
export type Timestamp = ColumnType<Date | string, string, string>
export type Flag = ColumnType<boolean | number, number | undefined, number>

export interface UsersTable {
  id: string
  email: string
  username: string | null
  password_hash: string
  email_verified: Flag
  disabled: Flag
  created_at: Timestamp
  updated_at: Timestamp
}

export interface SessionsTable {
  id: string
  user_id: string
  created_at: Timestamp
  last_used_at: Timestamp
  expires_at: Timestamp
  user_agent: string | null
  ip: string | null
  revoked_at: ColumnType<Date | string | null, string | null | undefined, string | null>
  revoke_reason: string | null
  /** The assurance level the session reached: 1 (a password), 2 (and a second factor). */
  aal: ColumnType<number, number | undefined, number>
  /** The methods used (RFC 8176), comma-separated: `pwd`, `pwd,otp`. */
  amr: ColumnType<string, string | undefined, string>
}

export interface RefreshTokensTable {
  token_hash: string
  session_id: string
  created_at: Timestamp
  expires_at: Timestamp
  rotated_at: ColumnType<Date | string | null, string | null | undefined, string | null>
}

export interface SigningKeysTable {
  kid: string
  algorithm: string
  public_jwk: string
  private_key: string
  created_at: Timestamp
  retired_at: ColumnType<Date | string | null, string | null | undefined, string | null>
}

export interface AuthEventsTable {
  id: string
  user_id: string | null
  session_id: string | null
  type: string
  ip: string | null
  user_agent: string | null
  created_at: Timestamp
  /** JSON text */
  detail: string
}

export interface RevokedSessionsTable {
  session_id: string
  revoked_at: Timestamp
  expires_at: Timestamp
}

export type TokenPurpose = 'verify_email' | 'change_email' | 'reset_password'

export interface OneTimeTokensTable {
  token_hash: string
  user_id: string
  purpose: TokenPurpose
  /** The address the token was mailed to (for change_email: the new address). */
  email: string
  created_at: Timestamp
  expires_at: Timestamp
  used_at: ColumnType<Date | string | null, string | null | undefined, string | null>
}

export interface RolesTable {
  name: string
  description: string
  created_at: Timestamp
}

export interface RolePermissionsTable {
  role: string
  permission: string
}

export interface UserRolesTable {
  user_id: string
  role: string
}

export interface MfaFactorsTable {
  id: string
  user_id: string
  kind: 'totp'
  /** Sealed with KEY_ENCRYPTION_SECRET, like the signing keys. */
  secret: string
  created_at: Timestamp
  confirmed_at: ColumnType<Date | string | null, string | null | undefined, string | null>
  last_used_at: ColumnType<Date | string | null, string | null | undefined, string | null>
  last_step: ColumnType<string | number | null, number | null | undefined, number | null>
}

export interface RecoveryCodesTable {
  code_hash: string
  user_id: string
  created_at: Timestamp
  used_at: ColumnType<Date | string | null, string | null | undefined, string | null>
}

export interface MfaChallengesTable {
  token_hash: string
  user_id: string
  purpose: 'verify' | 'enrol'
  password_tag: string
  created_at: Timestamp
  expires_at: Timestamp
  used_at: ColumnType<Date | string | null, string | null | undefined, string | null>
}

export interface Database {
  users: UsersTable
  sessions: SessionsTable
  refresh_tokens: RefreshTokensTable
  signing_keys: SigningKeysTable
  auth_events: AuthEventsTable
  revoked_sessions: RevokedSessionsTable
  one_time_tokens: OneTimeTokensTable
  roles: RolesTable
  role_permissions: RolePermissionsTable
  user_roles: UserRolesTable
  mfa_factors: MfaFactorsTable
  recovery_codes: RecoveryCodesTable
  mfa_challenges: MfaChallengesTable
}

export type UserRow = Selectable<UsersTable>
export type NewUser = Insertable<UsersTable>
export type UserUpdate = Updateable<UsersTable>
export type SessionRow = Selectable<SessionsTable>
export type RefreshTokenRow = Selectable<RefreshTokensTable>
export type SigningKeyRow = Selectable<SigningKeysTable>
export type AuthEventRow = Selectable<AuthEventsTable>
export type NewAuthEvent = Insertable<AuthEventsTable>
export type OneTimeTokenRow = Selectable<OneTimeTokensTable>
export type MfaFactorRow = Selectable<MfaFactorsTable>
export type MfaChallengeRow = Selectable<MfaChallengesTable>
