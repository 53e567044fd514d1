import { parseArgs } from 'node:util'
import Fastify from 'fastify'
import type { Kysely } from 'kysely'
import app, { serverOptions } from './app.js'
import { migrateToLatest, openDatabase } from './db/connect.js'
import type { Database } from './db/types.js'
import { ConfigError, loadConfig } from './plugins/config.js'
import { rotateKeys } from './plugins/tokens.js'
import { configTable, envExample, type Config } from './schemas/config.js'

const HELP = `auth-service command line

Usage: node dist/cli.js <command>   (from a checkout: npm run <command>)

Commands:
  migrate      bring the database named by DATABASE_URL up to date
  keys:rotate  add a new signing key: published now, signing after KEY_RELOAD_SECONDS;
               the old key verifies until its last token has expired
  admin:create --email <address>
               create an admin account (asking for its password on the terminal, or
               reading one line from standard input), or make an existing account admin
  openapi      print the OpenAPI document as JSON
  config       print the configuration reference (Markdown table, as in README.md)
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

const commands: Record<string, () => Promise<void>> = {
  migrate: () => withDatabase(async () => console.log('database up to date')),

  'keys:rotate': () => withDatabase(async (db, config) => {
    const kid = await rotateKeys(config, db, new Date())
    console.log(`new signing key ${kid}: in the JWKS now, signing in ${config.KEY_RELOAD_SECONDS} s; the previous key verifies until its tokens expire`)
  }),

  async 'admin:create' () {
    const email = typeof values.email === 'string' ? values.email : undefined
    if (!email) throw new UsageError('admin:create needs --email <address>')
    const config = loadConfig({ ...process.env, LOG_LEVEL: 'warn' })
    const server = Fastify(serverOptions(config))
    await server.register(app, { config })
    try {
      await server.ready()
      const existing = await server.db.selectFrom('users').select('id').where('email', '=', email.trim().toLowerCase()).executeTakeFirst()
      const password = existing ? '' : await askPassword(`Password for ${email}: `)
      const outcome = await server.accounts.ensureAdmin(email, password)
      console.log({ created: `created admin ${email}`, promoted: `${email} is now an admin`, unchanged: `${email} was already an admin` }[outcome])
    } finally {
      await server.close()
    }
  },

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

/** Reads a password: hidden, from the terminal; or the first line of standard input when it is not one. */
async function askPassword (prompt: string): Promise<string> {
  const { stdin, stdout } = process
  if (!stdin.isTTY) {
    let input = ''
    for await (const chunk of stdin) input += chunk
    return input.split(/\r?\n/)[0]
  }
  stdout.write(prompt)
  stdin.setRawMode(true)
  stdin.setEncoding('utf8')
  return new Promise((resolve, reject) => {
    let typed = ''
    const onData = (keys: string) => {
      for (const key of keys) {
        if (key === '\u0003') { finish(); reject(new UsageError('cancelled')); return }
        if (key === '\r' || key === '\n') { finish(); resolve(typed); return }
        typed = key === '\u007f' ? typed.slice(0, -1) : typed + key
      }
    }
    const finish = () => { stdin.off('data', onData); stdin.setRawMode(false); stdin.pause(); stdout.write('\n') }
    stdin.on('data', onData)
    stdin.resume()
  })
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
