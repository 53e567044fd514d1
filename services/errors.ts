import createError from '@fastify/error'

/** The service's own errors: each has a stable code, a status and a message safe to show. */
export const Errors = {
  InvalidCredentials: createError('INVALID_CREDENTIALS', 'The email, username or password is not right.', 401),
  AuthenticationRequired: createError('AUTHENTICATION_REQUIRED', 'This needs a bearer access token.', 401),
  InvalidAccessToken: createError('INVALID_ACCESS_TOKEN', 'The access token is not valid.', 401),
  AccessTokenExpired: createError('ACCESS_TOKEN_EXPIRED', 'The access token has expired; refresh it.', 401),
  InvalidRefreshToken: createError('INVALID_REFRESH_TOKEN', 'The refresh token is not valid.', 401),
  RefreshTokenReused: createError('REFRESH_TOKEN_REUSED', 'This refresh token was already used; the session has been ended. Sign in again.', 401),
  SessionExpired: createError('SESSION_EXPIRED', 'The session has reached its maximum age. Sign in again.', 401),
  SessionRevoked: createError('SESSION_REVOKED', 'The session of this access token has ended.', 401),
  SessionNotFound: createError('SESSION_NOT_FOUND', 'No such session.', 404),
  Forbidden: createError('FORBIDDEN', 'You are signed in but not allowed to do this.', 403),
  InsufficientPrivilege: createError('INSUFFICIENT_PRIVILEGE', 'You cannot do this: %s.', 403),
  EmailTaken: createError('EMAIL_TAKEN', 'An account with this email address already exists.', 409),
  UsernameTaken: createError('USERNAME_TAKEN', 'This username is taken.', 409),
  WeakPassword: createError('WEAK_PASSWORD', 'The password does not meet the policy: %s.', 400),
  SamePassword: createError('SAME_PASSWORD', 'The new password is the same as the current one.', 400),
  InvalidHost: createError('INVALID_HOST', 'This host name is not served here.', 400),
  InvalidToken: createError('INVALID_TOKEN', 'The token is not valid: unknown, already used, or expired.', 400),
  SameEmail: createError('SAME_EMAIL', 'This is already the account\'s address.', 400),
  EmailNotVerified: createError('EMAIL_NOT_VERIFIED', 'Confirm your email address first: follow the link in the mail we sent (or ask for a new one).', 403),
  MalformedJson: createError('MALFORMED_JSON', 'The body is not valid JSON.', 400),
  UnknownPermission: createError('UNKNOWN_PERMISSION', 'Unknown permission: %s. Known: %s.', 400),
  UnknownRole: createError('UNKNOWN_ROLE', 'Unknown role: %s.', 400),
  RoleExists: createError('ROLE_EXISTS', 'A role with this name exists.', 409),
  RoleNotFound: createError('ROLE_NOT_FOUND', 'No such role.', 404),
  RoleProtected: createError('ROLE_PROTECTED', 'The built-in roles (user, admin) cannot be edited or deleted.', 400),
  UserNotFound: createError('USER_NOT_FOUND', 'No such user.', 404),
  CannotModifySelf: createError('CANNOT_MODIFY_SELF', 'You cannot disable or delete yourself here.', 400),
  InvalidCursor: createError('INVALID_CURSOR', 'The cursor is not one this service gave out.', 400),
  RateLimited: createError('RATE_LIMITED', 'Too many requests; try again in %s seconds.', 429),
  MetricsTokenRequired: createError('METRICS_TOKEN_REQUIRED', 'The metrics need the bearer token the operator configured (METRICS_TOKEN).', 401),
  Overloaded: createError('OVERLOADED', 'The service is busy; try again in a moment.', 503),
  DatabaseUnavailable: createError('DATABASE_UNAVAILABLE', 'The database cannot be reached just now; try again in a moment.', 503)
}

/** A 429 or 503 that tells the client when to come back (Retry-After, in seconds). */
export function retryLater (kind: 'RateLimited' | 'Overloaded' | 'DatabaseUnavailable', seconds: number) {
  const error = kind === 'RateLimited' ? new Errors.RateLimited(seconds) : new Errors[kind]()
  return Object.assign(error, { retryAfter: Math.max(1, Math.ceil(seconds)) })
}
