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
  SessionRevoked: createError('SESSION_REVOKED', 'The session has ended (signed out, or ended by a change of the account); sign in again.', 401),
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
  CannotModifySelf: createError('CANNOT_MODIFY_SELF', 'You cannot do this to your own account here (disable it, delete it, reset its second factor).', 400),
  InvalidCursor: createError('INVALID_CURSOR', 'The cursor is not one this service gave out.', 400),
  RateLimited: createError('RATE_LIMITED', 'Too many requests; try again in %s seconds.', 429),
  MetricsTokenRequired: createError('METRICS_TOKEN_REQUIRED', 'The metrics need the bearer token the operator configured (METRICS_TOKEN).', 401),
  Overloaded: createError('OVERLOADED', 'The service is busy; try again in a moment.', 503),
  DatabaseUnavailable: createError('DATABASE_UNAVAILABLE', 'The database cannot be reached just now; try again in a moment.', 503),
  MfaRequired: createError('MFA_REQUIRED', 'This needs a session that passed its second factor: verify a code first (POST /api/v1/auth/mfa/verify with your bearer token).', 403),
  MfaRequiredHere: createError('MFA_REQUIRED', 'This needs a session that passed its second factor.', 401),
  InvalidMfaCode: createError('INVALID_MFA_CODE', 'The code is not right, or was already used.', 401),
  InvalidMfaToken: createError('INVALID_MFA_TOKEN', 'The mfa_token is not valid: unknown, already used, or expired. Sign in again.', 401),
  MfaAlreadyEnrolled: createError('MFA_ALREADY_ENROLLED', 'The account already has this second factor; remove it first.', 409),
  MfaNotPending: createError('MFA_NOT_PENDING', 'No second factor is waiting for confirmation: start the enrolment first.', 409),
  MfaNotEnrolled: createError('MFA_NOT_ENROLLED', 'The account has no second factor.', 404)
}

/**
 * The codes of the answers the framework makes rather than the service's own
 * code: input the schemas refuse, the body parser's and the router's
 * refusals, the last resort. plugins/external/errors.ts answers with these
 * codes; they are made here alike, so that the OpenAPI document describes
 * every code the same way (schemas/problem.ts).
 */
export const Refusals = {
  ValidationFailed: createError('VALIDATION_FAILED', 'The input does not match the schema; `errors` names the field and what is wrong with it.', 400),
  InvalidContentLength: createError('INVALID_CONTENT_LENGTH', 'Content-Length does not match the body.', 400),
  MalformedUrl: createError('MALFORMED_URL', 'The URL is not well-formed (a broken percent-encoding).', 400),
  BadRequest: createError('BAD_REQUEST', 'The request is not well-formed HTTP/1.1.', 400),
  NotFound: createError('NOT_FOUND', 'No route has this path.', 404),
  MethodNotAllowed: createError('METHOD_NOT_ALLOWED', 'The path exists with other methods, listed in `Allow`.', 405),
  RequestTimeout: createError('REQUEST_TIMEOUT', 'The request was not received in time.', 408),
  PayloadTooLarge: createError('PAYLOAD_TOO_LARGE', 'The body is larger than the service accepts (BODY_LIMIT_BYTES).', 413),
  UriTooLong: createError('URI_TOO_LONG', 'A path parameter is longer than 200 characters.', 414),
  UnsupportedMediaType: createError('UNSUPPORTED_MEDIA_TYPE', 'The body is not `application/json`.', 415),
  HeadersTooLarge: createError('HEADERS_TOO_LARGE', 'The request line and headers are larger than the server accepts.', 431),
  InternalError: createError('INTERNAL_ERROR', 'Something went wrong on our side; quote the request id if you report it.', 500)
}

/** A 429 or 503 that tells the client when to come back (Retry-After, in seconds). */
export function retryLater (kind: 'RateLimited' | 'Overloaded' | 'DatabaseUnavailable', seconds: number) {
  const error = kind === 'RateLimited' ? new Errors.RateLimited(seconds) : new Errors[kind]()
  return Object.assign(error, { retryAfter: Math.max(1, Math.ceil(seconds)) })
}
