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
  openapi      print the OpenAPI document as JSON
  config       print the configuration reference (Markdown table, as in README.md)
  env          print a commented .env file with every variable and its default
  help         show this text

Configuration comes from the environment, as for the server (see .env.example).`

/** Runs `work` on the configured database, migrated, and closes it. */
async function withDatabase (work: (db: Kysely<Database>, config: Config) => Promise<void>) {
  const config = loadConfig(process.env)
  const { db, kind } = openDatabase(config.DATABASE_URL)
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

const { positionals, values } = parseArgs({ allowPositionals: true, strict: false, options: { help: { type: 'boolean', short: 'h' } } })
const name = values.help ? 'help' : positionals[0] ?? 'help'
const command = commands[name]
if (!command) {
  console.error(`Unknown command "${name}".\n\n${HELP}`)
  process.exit(2)
}
try {
  await command()
} catch (err) {
  console.error(err instanceof ConfigError ? err.message : err)
  process.exit(1)
}
