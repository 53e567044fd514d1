import { parseArgs } from 'node:util'
import password from '@inquirer/password'
import Fastify, { type FastifyInstance } from 'fastify'
import type { Kysely } from 'kysely'
import app, { serverOptions } from './app.js'
import { migrateToLatest, openDatabase } from './db/connect.js'
import type { Database } from './db/types.js'
import { findUserByEmail } from './db/queries/users.js'
import { normalizeEmail } from './services/addresses.js'
import { ConfigError, loadConfig } from './plugins/external/config.js'
import { createAudit } from './services/audit.js'
import { createKeyStore } from './services/keys.js'
import { configTable, envExample, type Config } from './schemas/config.js'

const HELP = `auth-service command line

Usage: node dist/cli.js <command>   (from a checkout: npm run <command>)

Commands:
  migrate      bring the database named by DATABASE_URL up to date
  keys:rotate  add a new signing key: published now, signing after KEY_RELOAD_SECONDS;
               the old key verifies until its last token has expired
  admin:create --email <address>
               create an admin account (asking for its password on the terminal, or
               reading one line from standard input); refused when the address has an account
  admin:promote --email <address>
               give the existing account of this address the admin role (on the audit trail)
  openapi      print the OpenAPI document as JSON
  config       print the configuration reference (Markdown table, as in docs/configuration.md)
  env          print a commented .env file with every variable and its default
  help         show this text

Configuration comes from the environment, as for the server (see .env.example).`

/** Runs `work` on the configured database, migrated, and closes it. */
async function withDatabase (work: (db: Kysely<Database>, config: Config) => Promise<void>) {
  const config = loadConfig(process.env)
  const { db, kind } = await openDatabase(config.DATABASE_URL)
  try {
    const applied = await migrateToLatest(db, kind)
    if (applied.length > 0) console.log(`migrations applied: ${applied.join(', ')}`)
    await work(db, config)
  } finally {
    await db.destroy()
  }
}

/** Runs `work` on the whole service (its accounts, audit trail and hooks) with the --email given, and closes it. */
async function withApp (work: (server: FastifyInstance, email: string) => Promise<void>) {
  const email = typeof values.email === 'string' ? values.email : undefined
  if (!email) throw new UsageError(`${positionals[0]} needs --email <address>`)
  const config = loadConfig({ ...process.env, LOG_LEVEL: 'warn' })
  const server = Fastify(serverOptions(config))
  await server.register(app, { config })
  try {
    await server.ready()
    await work(server, email)
  } finally {
    await server.close()
  }
}

const commands: Record<string, () => Promise<void>> = {
  migrate: () => withDatabase(async () => console.log('database up to date')),

  'keys:rotate': () => withDatabase(async (db, config) => {
    const clock = () => new Date()
    const audit = createAudit({ db, clock, config, log: console })
    const kid = await createKeyStore({ config, db, clock }).rotate((trx, kid) => audit.record({ type: 'key_rotated', detail: { kid, by: 'operator' } }, trx))
    console.log(`new signing key ${kid}: in the JWKS now, signing in ${config.KEY_RELOAD_SECONDS} s; the previous key verifies until its tokens expire`)
  }),

  'admin:create': () => withApp(async (server, email) => {
    // Asked before the password is: an account with the address is never turned into an admin here.
    const taken = `${email} already has an account; nothing was changed. If it is yours, run admin:promote --email ${email}`
    if (await findUserByEmail(server.db, normalizeEmail(email))) throw new UsageError(taken)
    if (await server.operators.createAdmin(email, await askPassword(`Password for ${email}: `)) === 'exists') throw new UsageError(taken)
    console.log(`created admin ${email}`)
  }),

  'admin:promote': () => withApp(async (server, email) => {
    const outcome = await server.operators.promoteAdmin(email)
    if (outcome === 'not_found') throw new UsageError(`${email} has no account`)
    console.log(outcome === 'promoted' ? `${email} is now an admin` : `${email} was already an admin`)
  }),

  async openapi () {
    // The document does not depend on the data: build the service on a throw-away database.
    const config = loadConfig({ ...process.env, DATABASE_URL: 'sqlite::memory:', LOG_LEVEL: 'silent' })
    const server = Fastify(serverOptions(config))
    await server.register(app, { config })
    const res = await server.inject({ url: '/openapi.json' })
    console.log(JSON.stringify(res.json(), null, 2))
    await server.close()
  },

  async config () {
    console.log(configTable())
  },

  async env () {
    process.stdout.write(envExample())
  },

  async help () {
    console.log(HELP)
  }
}

class UsageError extends Error {}

/**
 * Reads a password: hidden, from the terminal (@inquirer/password, on Node's
 * readline: arrow keys and the like edit the line instead of landing in it;
 * Ctrl-C or Ctrl-D cancels); or the first line of standard input when it is
 * not a terminal.
 */
async function askPassword (prompt: string): Promise<string> {
  const { stdin } = process
  if (!stdin.isTTY) {
    let input = ''
    for await (const chunk of stdin) input += chunk
    return input.split(/\r?\n/)[0]
  }
  // readline ends the prompt on Ctrl-D only when the line is empty (else it deletes forward): cancel on any.
  const ctrlD = new AbortController()
  const onKey = (_: string, key?: { ctrl?: boolean, name?: string }) => { if (key?.ctrl && key.name === 'd') ctrlD.abort() }
  stdin.on('keypress', onKey)
  try {
    return await password({ message: prompt.trimEnd(), toggleMask: false }, { signal: ctrlD.signal })
  } catch (err) {
    // Ctrl-C, Ctrl-D or a signal, as the prompt reports them.
    if (['ExitPromptError', 'AbortPromptError'].includes((err as Error).name)) throw new UsageError('cancelled: nothing was changed')
    throw err
  } finally {
    stdin.off('keypress', onKey)
  }
}

const { positionals, values } = parseArgs({ allowPositionals: true, strict: false, options: { help: { type: 'boolean', short: 'h' }, email: { type: 'string' } } })
const name = values.help ? 'help' : positionals[0] ?? 'help'
const command = commands[name]
if (!command) {
  console.error(`Unknown command "${name}".\n\n${HELP}`)
  process.exit(2)
}
try {
  await command()
} catch (err) {
  if (err instanceof UsageError) {
    console.error(err.message)
    process.exit(2)
  }
  // Known failures (a bad setting, a weak password) are one line; anything else is a bug: show it whole.
  console.error(err instanceof ConfigError || (err as { statusCode?: number }).statusCode ? (err as Error).message : err)
  process.exit(1)
}
