import fp from 'fastify-plugin'
import { createAccessTokens, type AccessTokens } from '../../services/access-tokens.js'
import { createAccounts, type Accounts } from '../../services/accounts.js'
import { createAdmin, type Admin } from '../../services/admin.js'
import { createAssurance, type Assurance } from '../../services/assurance.js'
import { createAudit, type Audit } from '../../services/audit.js'
import { createBackground, type Background } from '../../services/background.js'
import { every } from '../../services/context.js'
import { createEmails, type Emails } from '../../services/emails.js'
import { createKeyStore } from '../../services/keys.js'
import { createLoginThrottle, type LoginThrottle } from '../../services/login-throttle.js'
import { createMailer } from '../../services/mailer.js'
import { createMfa, type Mfa } from '../../services/mfa.js'
import { createOperators, type Operators } from '../../services/operators.js'
import { createPasswords } from '../../services/passwords.js'
import { createRefreshTokens, type RefreshTokens } from '../../services/refresh-tokens.js'
import { createRevocations, type Revocations } from '../../services/revocations.js'
import { createRoles, type Roles } from '../../services/roles.js'
import { createSessions, type Sessions } from '../../services/sessions.js'

declare module 'fastify' {
  interface FastifyInstance {
    accounts: Accounts
    admin: Admin
    assurance: Assurance
    audit: Audit
    background: Background
    emails: Emails
    loginThrottle: LoginThrottle
    mfa: Mfa
    operators: Operators
    revocations: Revocations
    roles: Roles
    sessions: Sessions
    tokens: AccessTokens & RefreshTokens
  }
}

/** How often old audit events (AUDIT_RETENTION_DAYS) and spent second-step challenges are pruned. */
const PRUNE_EVERY_MS = 3_600_000

/**
 * The domain (services/), built once and wired onto the instance: each
 * service is handed what it uses, the database, the clock, the log, the
 * configuration and the services it builds on. Routes and hooks reach them
 * as `fastify.accounts`, `fastify.sessions`, …; this plugin also runs their
 * schedules and closes them with the server.
 */
export default fp(async function services (fastify) {
  const { db, config, log, redis, shared, metrics } = fastify
  const base = { db, clock: fastify.now, config, log }

  const background = createBackground(log)
  const mailer = await createMailer({ ...base, background, counted: (result) => metrics.mails.inc({ result }) })
  const passwords = createPasswords(config, (operation, seconds) => metrics.passwordHashing.observe({ operation }, seconds))
  const loginThrottle = createLoginThrottle({ ...base, redis, shared })
  const audit = createAudit(base)
  const access = await createAccessTokens({ ...base, keys: createKeyStore(base) })
  const tokens = { ...access, ...createRefreshTokens(config.KEY_ENCRYPTION_SECRET) }
  const revocations = await createRevocations({ ...base, redis, shared })
  const sessions = createSessions({
    ...base,
    tokens,
    revocations,
    audit,
    counted: {
      revoked: (reason, count) => metrics.revocations.inc({ reason }, count),
      refreshReused: () => metrics.refreshReuse.inc()
    }
  })
  const roles = await createRoles({ ...base, redis, audit })
  const emails = createEmails({ ...base, mailer, background, passwords, sessions, audit, loginThrottle })
  const mfa = createMfa({ ...base, audit, loginThrottle, mailer, counted: (result) => metrics.mfa.inc({ result }) })
  const accounts = createAccounts({ ...base, passwords, sessions, emails, audit, loginThrottle, mfa })
  const assurance = createAssurance({ accounts, mfa, sessions })
  const admin = createAdmin({ ...base, roles, sessions, audit, accounts, tokens, mfa })
  const operators = createOperators({ ...base, passwords, audit })
  await operators.ensureFirstAdmin()

  const wired = { accounts, admin, assurance, audit, background, emails, loginThrottle, mfa, operators, revocations, roles, sessions, tokens }
  for (const [name, service] of Object.entries(wired)) fastify.decorate(name, service as unknown)

  const prune = () => Promise.all([audit.prune(), mfa.prune()])
  let stopPruning = () => {}
  fastify.addHook('onReady', async () => {
    await prune().catch((err) => log.warn({ err }, 'prune failed'))
    stopPruning = every(PRUNE_EVERY_MS, 'prune', log, prune)
  })
  // Mails and other work after an answer finish before the connections they need close.
  fastify.addHook('preClose', () => background.idle())
  fastify.addHook('onClose', async () => {
    stopPruning()
    access.close()
    mailer.close()
    await Promise.all([revocations.close(), roles.close()])
  })
}, { name: 'services', dependencies: ['config', 'db', 'redis', 'metrics'] })
