import { Type, type Static } from 'typebox'
import { EMAIL_PATTERN } from './common.js'

/**
 * Every setting the service reads, with its default. Values arrive as strings
 * from the environment and are converted; anything that does not fit stops the
 * process with one line naming the variable (see plugins/config.ts).
 * The configuration table of docs/configuration.md is generated from the descriptions here.
 */
const Seconds = (def: number, description: string) =>
  Type.Integer({ minimum: 1, maximum: 31_536_000, default: def, description })

export const ConfigSchema = Type.Object({
  NODE_ENV: Type.Union([Type.Literal('development'), Type.Literal('production'), Type.Literal('test')], {
    default: 'development',
    description: 'development, production or test. production refuses development defaults for secrets.'
  }),
  HOST: Type.String({ default: '0.0.0.0', minLength: 1, description: 'Address to listen on.' }),
  PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 8000, description: 'Port to listen on.' }),
  LOG_LEVEL: Type.Union(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)), {
    default: 'info',
    description: 'pino log level: fatal, error, warn, info, debug, trace or silent.'
  }),
  DATABASE_URL: Type.String({
    default: 'sqlite:./data/auth.db',
    pattern: '^(sqlite:.+|postgres(ql)?://.+)$',
    description: '`sqlite:<file>`, `sqlite::memory:` or `postgres://user:pass@host:port/db`.'
  }),
  DATABASE_TIMEOUT_SECONDS: Type.Integer({ minimum: 1, maximum: 300, default: 5, description: 'The longest a request waits on the database: for a pooled connection and for one statement (PostgreSQL), for a lock (SQLite). Past it the request gets 503 DATABASE_UNAVAILABLE with Retry-After.' }),
  PUBLIC_URL: Type.Optional(Type.String({ pattern: '^https?://[^\\s]+$', description: 'The URL clients reach the service at (no trailing slash); the default token issuer. Unset: in development http://localhost:PORT (or http://HOST:PORT when HOST names one address), so a changed PORT still works; otherwise http://localhost:8000 (replicas must agree on it: set it in production).' })),
  JWT_ISSUER: Type.Optional(Type.String({ minLength: 1, description: 'The `iss` claim of access tokens (default: PUBLIC_URL).' })),
  JWT_AUDIENCE: Type.String({ default: 'auth-service', minLength: 1, description: 'The `aud` claim of access tokens; verifiers must expect it.' }),
  JWT_ALGORITHM: Type.Union([Type.Literal('RS256'), Type.Literal('ES256'), Type.Literal('EdDSA'), Type.Literal('HS256')], {
    default: 'RS256',
    description: 'Access-token signature: RS256, ES256, EdDSA, or HS256 (needs JWT_SECRET; the JWKS is then empty).'
  }),
  JWT_PRIVATE_KEY: Type.Optional(Type.String({ minLength: 1, description: 'PEM private key to sign with. Unset: a key is generated at first start and kept, encrypted, in the database.' })),
  JWT_PRIVATE_KEY_FILE: Type.Optional(Type.String({ minLength: 1, description: 'Path of a PEM private key file (instead of JWT_PRIVATE_KEY).' })),
  JWT_SECRET: Type.Optional(Type.String({ minLength: 32, description: 'Shared secret for HS256, at least 32 bytes.' })),
  KEY_ENCRYPTION_SECRET: Type.Optional(Type.String({
    minLength: 32,
    description: 'Encrypts the generated private signing keys at rest (AES-256-GCM), so a copy of the database cannot mint tokens; also keys the refresh-token successors. At least 32 characters; required in production. Unset elsewhere: a random one per database, kept in a file only its owner can read (0600), `<sqlite file>.secret` or `~/.auth-service/postgres-<hash of the URL without credentials>.secret`, and per process for `sqlite::memory:`. Delete that file only with its database.'
  })),
  ACCESS_TOKEN_TTL_SECONDS: Seconds(900, 'Access-token lifetime.'),
  REFRESH_TOKEN_TTL_SECONDS: Seconds(7 * 86400, 'Refresh-token idle lifetime, renewed at each rotation.'),
  SESSION_MAX_AGE_SECONDS: Seconds(30 * 86400, 'Absolute session lifetime; after it the user must sign in again.'),
  REFRESH_REUSE_GRACE_SECONDS: Type.Integer({ minimum: 0, maximum: 300, default: 10, description: 'A rotated refresh token presented again within this many seconds gets the same session\'s current pair (racing tabs); later it is theft and ends the session.' }),
  JWKS_MAX_AGE_SECONDS: Seconds(300, 'Cache-Control max-age of /.well-known/jwks.json.'),
  KEY_RELOAD_SECONDS: Seconds(60, 'How often each instance re-reads the signing keys from the database (to pick up a rotation).'),
  REDIS_URL: Type.Optional(Type.String({ pattern: '^rediss?://.+', description: 'redis:// or rediss:// URL. Set it when running several replicas: they then share the revocation list, role changes and rate-limit counters.' })),
  REDIS_TIMEOUT_MS: Type.Integer({ minimum: 10, maximum: 10_000, default: 100, description: 'The longest a request waits on one Redis command. Past it, or while Redis is away, rate limits and the login throttle count in this instance\'s memory instead (per replica until Redis is back).' }),
  REDIS_KEY_PREFIX: Type.String({ default: 'auth:', maxLength: 64, description: 'Prefix of every Redis key and channel this service uses.' }),
  METRICS_TOKEN: Type.Optional(Type.String({ minLength: 16, description: 'GET /metrics needs `Authorization: Bearer <METRICS_TOKEN>`. Required in production (the service refuses to start without it rather than publish its metrics); unset elsewhere, /metrics is open.' })),
  ARGON2_MEMORY_KIB: Type.Integer({ minimum: 19456, maximum: 4_194_304, default: 19456, description: 'argon2id memory cost in KiB (OWASP minimum 19456).' }),
  ARGON2_ITERATIONS: Type.Integer({ minimum: 2, maximum: 100, default: 2, description: 'argon2id time cost (OWASP minimum 2).' }),
  ARGON2_PARALLELISM: Type.Integer({ minimum: 1, maximum: 16, default: 1, description: 'argon2id parallelism.' }),
  PASSWORD_MIN_LENGTH: Type.Integer({ minimum: 8, maximum: 256, default: 8, description: 'Shortest accepted password, in characters (the longest is 256).' }),
  ALLOWED_HOSTS: Type.String({ default: '*', description: 'Comma-separated Host header values to accept (port ignored); `*` accepts any. Always the Host header the service received, never X-Forwarded-Host: behind a proxy, have it pass the Host on (nginx: `proxy_set_header Host $host`).' }),
  CORS_ORIGINS: Type.String({ default: '', description: 'Comma-separated origins allowed by CORS; empty allows none, `*` any.' }),
  TRUST_PROXY: Type.String({ default: 'false', description: '`false`, `true`, a hop count, or comma-separated addresses/CIDRs of trusted proxies; decides which X-Forwarded-For entry is the client. An entry that is not an IP address is ignored (the peer address is used).' }),
  SMTP_URL: Type.Optional(Type.String({ pattern: '^smtps?://.+', description: 'smtp:// or smtps:// URL of the mail server, credentials in the URL (smtps://user:pass@host:465). Unset in development: mails are written to the log.' })),
  MAIL_FROM: Type.String({ default: 'auth-service <no-reply@localhost>', minLength: 3, description: 'The From of every mail.' }),
  EMAIL_VERIFY_URL: Type.Optional(Type.String({ pattern: '\\{token\\}', description: 'Link in the verification mail; `{token}` is replaced. Point it at your app, which POSTs the token to /api/v1/auth/email/verify. Unset: the mail carries the token itself (and development logs a ready curl line).' })),
  PASSWORD_RESET_URL: Type.Optional(Type.String({ pattern: '\\{token\\}', description: 'Link in the reset mail; `{token}` is replaced. Your app POSTs the token and the new password to /api/v1/auth/password/reset. Unset: the mail carries the token itself (and development logs a ready curl line).' })),
  REQUIRE_EMAIL_VERIFICATION: Type.Boolean({ default: false, description: 'true: no sign-in before the address is verified, and signup answers 202 alike for new and taken addresses. Needs SMTP_URL in production.' }),
  EMAIL_VERIFICATION_TTL_SECONDS: Seconds(86400, 'Lifetime of an email verification token.'),
  PASSWORD_RESET_TTL_SECONDS: Seconds(1800, 'Lifetime of a password reset token.'),
  EMAIL_RESEND_INTERVAL_SECONDS: Type.Integer({ minimum: 0, maximum: 86400, default: 60, description: 'At most one verification or reset mail per address in this many seconds.' }),
  MFA_ISSUER: Type.String({ default: 'auth-service', minLength: 1, maxLength: 64, description: 'The name authenticator apps show beside a TOTP code (the otpauth issuer).' }),
  MFA_REQUIRED_ROLES: Type.String({ default: '', description: 'Comma-separated roles (e.g. `admin`) whose holders must enrol a second factor: their sign-in answers `mfa_enrolment_required` until they have one.' }),
  ADMIN_EMAIL: Type.Optional(Type.String({ pattern: EMAIL_PATTERN, description: 'With ADMIN_PASSWORD: at start, create this account as an admin when no account has the address (a later change of password is kept). An existing account is never promoted: an error is logged instead; use `cli admin:promote`.' })),
  ADMIN_PASSWORD: Type.Optional(Type.String({ minLength: 8, description: 'Password of the ADMIN_EMAIL account when it is created. It must meet the password policy.' })),
  AUDIT_RETENTION_DAYS: Type.Integer({ minimum: 1, maximum: 3650, default: 90, description: 'Audit events older than this are pruned (hourly).' }),
  RATE_LIMIT_ENABLED: Type.Boolean({ default: true, description: 'false turns every per-address rate limit off (benchmarks). The per-account login throttle stays.' }),
  RATE_LIMIT_GLOBAL_PER_MINUTE: Type.Integer({ minimum: 1, maximum: 1_000_000, default: 300, description: 'Requests per minute per client address, all routes together.' }),
  RATE_LIMIT_LOGIN_PER_MINUTE: Type.Integer({ minimum: 1, maximum: 100_000, default: 10, description: 'Sign-in attempts per minute per client address.' }),
  RATE_LIMIT_SIGNUP_PER_MINUTE: Type.Integer({ minimum: 1, maximum: 100_000, default: 5, description: 'Signups per minute per client address.' }),
  RATE_LIMIT_MAIL_PER_MINUTE: Type.Integer({ minimum: 1, maximum: 100_000, default: 5, description: 'password/forgot and email/resend requests per minute per client address (each).' }),
  RATE_LIMIT_REFRESH_PER_MINUTE: Type.Integer({ minimum: 1, maximum: 100_000, default: 60, description: 'Refreshes per minute per client address.' }),
  MAX_EVENT_LOOP_DELAY_MS: Type.Integer({ minimum: 0, maximum: 60_000, default: 1000, description: 'Above this event-loop delay new requests get 503 with Retry-After (0: off).' }),
  MAX_HEAP_USED_BYTES: Type.Integer({ minimum: 0, default: 0, description: 'Above this heap use new requests get 503 (0: off).' }),
  MAX_RSS_BYTES: Type.Integer({ minimum: 0, default: 0, description: 'Above this resident memory new requests get 503 (0: off).' }),
  HASH_CONCURRENCY: Type.Integer({ minimum: 0, maximum: 64, default: 0, description: 'Password hashes computed at once; each holds ARGON2_MEMORY_KIB of memory. 0: one per CPU core, at most 4 (libuv\'s thread pool size): more than the cores only adds memory and waiting.' }),
  HASH_QUEUE_LIMIT: Type.Integer({ minimum: 0, maximum: 100_000, default: 100, description: 'Password hashes allowed to wait; beyond, the request gets 503 at once instead of growing memory.' }),
  SHUTDOWN_TIMEOUT_SECONDS: Type.Integer({ minimum: 1, maximum: 300, default: 10, description: 'On SIGTERM or SIGINT, in-flight requests get this long to finish before the process exits anyway (exit code 1). Keep it under your orchestrator\'s kill timeout (Kubernetes: 30 s).' }),
  BODY_LIMIT_BYTES: Type.Integer({ minimum: 1024, maximum: 1_048_576, default: 16384, description: 'Largest accepted request body.' }),
  HEADERS_TIMEOUT_SECONDS: Type.Integer({ minimum: 1, maximum: 300, default: 10, description: 'A client has this long to send the request line and headers, a new connection too; then 408 REQUEST_TIMEOUT and the connection is closed. At most REQUEST_TIMEOUT_SECONDS.' }),
  REQUEST_TIMEOUT_SECONDS: Type.Integer({ minimum: 1, maximum: 300, default: 30, description: 'A client has this long to send a whole request, body included; then 408 REQUEST_TIMEOUT and the connection is closed, so slow clients cannot hold sockets. Answering is not limited by it.' }),
  KEEP_ALIVE_TIMEOUT_SECONDS: Type.Integer({ minimum: 1, maximum: 600, default: 72, description: 'An idle keep-alive connection is closed after this long. Keep it above the idle timeout of the load balancer in front (AWS ALB: 60 s), or it may send a request on a connection being closed.' })
}, { additionalProperties: true })

/** KEY_ENCRYPTION_SECRET is always set once loadConfig returns: configured, or generated and kept (plugins/config.ts). */
export type Config = Static<typeof ConfigSchema> & { KEY_ENCRYPTION_SECRET: string, PUBLIC_URL: string }

interface Described { default?: unknown, description?: string }
const entries = () => Object.entries(ConfigSchema.properties as Record<string, Described>)
const shown = (value: unknown) => (value === undefined ? '' : String(value))

/** The configuration reference in docs/configuration.md, made from the schema (a test keeps the two equal). */
export function configTable (): string {
  const rows = entries().map(([name, s]) => `| \`${name}\` | ${s.default === undefined ? '(unset)' : `\`${shown(s.default)}\``} | ${s.description ?? ''} |`)
  return ['| variable | default | meaning |', '|---|---|---|', ...rows].join('\n')
}

/** .env.example, made from the schema: every variable, commented, with its default. */
export function envExample (): string {
  return entries().map(([name, s]) => `# ${s.description ?? ''}\n${s.default === undefined ? `# ${name}=` : `${name}=${shown(s.default)}`}\n`).join('\n')
}
