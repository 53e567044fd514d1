import fp from 'fastify-plugin'
import { createAccessTokens } from '../services/access-tokens.js'
import { createKeyStore } from '../services/keys.js'
import { createRefreshTokens } from '../services/refresh-tokens.js'

declare module 'fastify' {
  interface FastifyInstance {
    tokens: Tokens
  }
}

export type Tokens = Awaited<ReturnType<typeof createAccessTokens>> & ReturnType<typeof createRefreshTokens>

/** Tokens, by job: the key store, access tokens signed and verified with its keys, and refresh tokens. */
export default fp(async function tokens (fastify) {
  const { config, db, now: clock, log } = fastify
  const access = await createAccessTokens({ config, keys: createKeyStore({ config, db, clock }), clock, log })
  fastify.decorate('tokens', { ...access, ...createRefreshTokens(config.KEY_ENCRYPTION_SECRET) })
  fastify.addHook('onClose', async () => access.close())
}, { name: 'tokens', dependencies: ['config', 'db'] })
