import { createReadStream } from 'node:fs'
import { createRequire } from 'node:module'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import fp from 'fastify-plugin'
import pkg from '../../package.json' with { type: 'json' }

const require = createRequire(import.meta.url)

// ReDoc's own bundle from the redoc package, served here: no CDN.
const REDOC_BUNDLE = require.resolve('redoc/bundles/redoc.standalone.js')
const REDOC_PAGE = `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>auth-service API</title><meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><redoc spec-url="/openapi.json"></redoc><script src="/redoc/redoc.standalone.js"></script></body>
</html>`

/** OpenAPI 3 generated from the route schemas, Swagger UI at /docs, ReDoc at /redoc, the document at /openapi.json. */
export default fp(async function docs (fastify) {
  await fastify.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'auth-service', version: pkg.version, description: pkg.description, license: { name: 'MIT', url: 'https://opensource.org/licenses/MIT' } },
      servers: [{ url: fastify.config.PUBLIC_URL }],
      tags: [
        { name: 'auth', description: 'Sign up, sign in, tokens' },
        { name: 'users', description: 'The signed-in user' },
        { name: 'sessions', description: 'The signed-in user\'s sessions' },
        { name: 'keys', description: 'Public keys to verify access tokens' },
        { name: 'admin', description: 'Administration: users, roles, sessions, keys, the audit trail (permissions required)' },
        { name: 'health', description: 'Liveness and readiness' },
        { name: 'operations', description: 'Prometheus metrics' }
      ],
      components: {
        securitySchemes: {
          bearerAuth: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' },
          metricsToken: { type: 'http', scheme: 'bearer', description: 'METRICS_TOKEN, when the operator set one' }
        }
      }
    },
    // Shared schemas keep their $id as their name in components.schemas.
    refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => (typeof json.$id === 'string' ? json.$id : `def-${i}`) }
  })

  await fastify.register(swaggerUi, { routePrefix: '/docs', uiConfig: { deepLinking: true } })

  fastify.get('/openapi.json', { schema: { hide: true } }, async () => fastify.swagger())

  fastify.get('/redoc', { schema: { hide: true } }, async (_request, reply) => reply.type('text/html').send(REDOC_PAGE))

  // Read at each request (browsers keep it a day): held in memory it would be 1 MB for a page seldom opened.
  fastify.get('/redoc/redoc.standalone.js', { schema: { hide: true } }, async (_request, reply) =>
    reply.type('application/javascript').header('cache-control', 'public, max-age=86400').send(createReadStream(REDOC_BUNDLE)))
}, { name: 'docs', dependencies: ['config', 'rate-limit'] })
