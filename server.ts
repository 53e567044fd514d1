import { existsSync } from 'node:fs'
import closeWithGrace from 'close-with-grace'
import Fastify from 'fastify'
import app, { serverOptions } from './app.js'
import { ConfigError, loadConfig } from './plugins/external/config.js'

// A .env file in the working directory fills in what the environment does not set.
if (existsSync('.env')) process.loadEnvFile('.env')

let config
try {
  config = loadConfig(process.env)
} catch (err) {
  if (!(err instanceof ConfigError)) throw err
  console.error(err.message)
  process.exit(1)
}

const server = Fastify(serverOptions(config))
await server.register(app, { config })

// On SIGTERM/SIGINT: stop accepting, let in-flight requests finish, then close the database and Redis (onClose hooks).
closeWithGrace({
  delay: config.SHUTDOWN_TIMEOUT_SECONDS * 1000,
  onTimeout: (delay) => server.log.error({ delay_ms: delay }, 'in-flight requests outlived the shutdown timeout; exiting')
}, async ({ signal, err }) => {
  if (err) server.log.error({ err }, 'closing after an error')
  else server.log.info({ signal }, 'closing')
  await server.close()
  server.log.info('closed')
})

try {
  await server.listen({ port: config.PORT, host: config.HOST })
} catch (err) {
  server.log.fatal({ err }, 'could not start')
  process.exit(1)
}
