import { createReadStream } from 'node:fs'
import { createRequire } from 'node:module'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import fp from 'fastify-plugin'
import pkg from '../../package.json' with { type: 'json' }
import { documented, PROBLEM_JSON } from '../../schemas/problem.js'
import { Errors, Refusals } from '../../services/errors.js'

const require = createRequire(import.meta.url)

// ReDoc's own bundle from the redoc package, served here: no CDN.
const REDOC_BUNDLE = require.resolve('redoc/bundles/redoc.standalone.js')
const REDOC_PAGE = `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>auth-service API</title><meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><redoc spec-url="/openapi.json"></redoc><script src="/redoc/redoc.standalone.js"></script></body>
</html>`

type Json = Record<string, unknown>
interface Operation { operationId?: string, summary?: string, parameters?: Json[], requestBody?: Json & { content?: Record<string, { schema?: Json }> }, responses: Record<string, Json & { headers?: Record<string, Json>, content?: Json }> }
interface Document { info: Json & { description?: string }, paths: Record<string, Record<string, Operation>>, components: Json & { schemas: Record<string, Json>, headers?: Record<string, Json>, responses?: Record<string, Json> } }

/** Every code the service answers with, and what it means: the catalogue (services/errors.ts). */
const CATALOGUE = new Map([...Object.values(Errors), ...Object.values(Refusals)].map((E) => {
  const error = new E()
  return [error.code, { status: error.statusCode ?? 500, message: error.message.replaceAll('%s', '…') }]
}))

const operationsOf = (document: Document) => Object.values(document.paths).flatMap((item) => Object.values(item))

/** The codes an operation's problem answers declare. */
const declaredCodes = (operation: Operation) => Object.values(operation.responses).flatMap((response) => {
  const schema = (response.content?.[PROBLEM_JSON] as { schema?: { allOf?: Array<{ properties?: { code?: { enum?: string[] } } }> } } | undefined)?.schema
  return schema?.allOf?.[1]?.properties?.code?.enum ?? []
})

/**
 * What the route schemas cannot say, said once for the whole document:
 * - every code in `Problem` (the catalogue), and the answers that belong to no
 *   operation (404, 405, the HTTP parser's) in the description;
 * - HEAD beside each GET, as Fastify answers it: the same answers, no body;
 * - a query parameter with a default is optional; a body whose schema
 *   takes `{}` may be left out;
 * - each response header defined once, in `components.headers`, and each
 *   problem answer that several operations share once, in
 *   `components.responses`, named after its codes.
 */
function finish (document: Document): Document {
  const problem = document.components.schemas.Problem as { properties: { code: Json } }
  problem.properties.code = { ...problem.properties.code, enum: [...CATALOGUE.keys()].sort() }

  const declared = new Set(operationsOf(document).flatMap(declaredCodes))
  const elsewhere = [...CATALOGUE].filter(([code]) => !declared.has(code)).sort(([, a], [, b]) => a.status - b.status)
  document.info.description = `${document.info.description ?? ''}

Every error is an RFC 9457 problem, \`application/problem+json\`: branch on its \`code\`. Each operation lists, for each status, the codes it may answer. Every answer carries \`X-Request-Id\`, the problem's \`request_id\`.

Answers of the server rather than of an operation (a path no route has, a method the path does not take, a request the HTTP parser refuses):

${elsewhere.map(([code, { status, message }]) => `- ${status} \`${code}\`: ${message}`).join('\n')}`

  for (const item of Object.values(document.paths)) {
    for (const operation of Object.values(item)) {
      for (const parameter of operation.parameters ?? []) {
        if (parameter.in === 'query' && (parameter.schema as Json | undefined)?.default !== undefined) parameter.required = false
      }
      // A body whose schema takes `{}` may be left out (logout: a bearer alone); test/openapi/answers.test.ts checks each.
      const body = operation.requestBody?.content?.['application/json']?.schema
      const takesEmpty = body && !(body.required as unknown[] | undefined)?.length && !body.minProperties && !body.anyOf && !body.oneOf
      if (operation.requestBody && takesEmpty) operation.requestBody.required = false
    }
    // Fastify answers HEAD for every GET (exposeHeadRoutes): the same hooks, statuses and headers, no body.
    if (item.get && !item.head) {
      const { get } = item
      item.head = {
        ...get,
        operationId: `${get.operationId}Head`,
        summary: `${get.summary} (headers only)`,
        responses: Object.fromEntries(Object.entries(get.responses).map(([status, { content: _content, ...response }]) => [status, response]))
      }
    }
  }

  const headers = (document.components.headers ??= {})
  for (const operation of operationsOf(document)) {
    for (const response of Object.values(operation.responses)) {
      if (!response.headers) continue
      if (Object.keys(response.headers).length === 0) delete response.headers
      for (const [name, header] of Object.entries(response.headers ?? {})) {
        // schemas/problem.ts `always`: a header every such answer carries.
        const schema = header.schema as Json | undefined
        if (schema?.required === true) {
          delete schema.required
          header.required = true
        }
        headers[name] ??= header
        if (JSON.stringify(headers[name]) === JSON.stringify(header)) response.headers![name] = { $ref: `#/components/headers/${name}` }
      }
    }
  }

  const pascal = (code: string) => code.toLowerCase().replace(/(^|_)([a-z0-9])/g, (_, _sep, c: string) => c.toUpperCase())
  const shared = new Map<string, { name: string, uses: Json[] }>()
  for (const operation of operationsOf(document)) {
    for (const response of Object.values(operation.responses)) {
      const content = Object.keys(response.content ?? {})
      if (content.length !== 1 || content[0] !== PROBLEM_JSON) continue
      const key = JSON.stringify(response)
      const name = declaredCodes({ responses: { response } }).map(pascal).join('Or')
      shared.set(key, { name, uses: [...(shared.get(key)?.uses ?? []), response] })
    }
  }
  const responses = (document.components.responses ??= {})
  for (const [key, { name, uses }] of shared) {
    if (uses.length < 2 || (responses[name] && JSON.stringify(responses[name]) !== key)) continue
    responses[name] = JSON.parse(key)
    for (const use of uses) {
      for (const field of Object.keys(use)) delete use[field]
      use.$ref = `#/components/responses/${name}`
    }
  }
  return document
}

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
        { name: 'mfa', description: 'The signed-in user\'s second factors (TOTP, recovery codes)' },
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
    refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => (typeof json.$id === 'string' ? json.$id : `def-${i}`) },
    // Each route's declared answers (schemas/problem.ts), made response entries for the document only.
    transform: ({ schema, url }) => ({ schema: documented(schema), url }),
    transformObject: (documentObject) => finish((documentObject as unknown as { openapiObject: Document }).openapiObject) as never
  })

  await fastify.register(swaggerUi, { routePrefix: '/docs', uiConfig: { deepLinking: true } })

  fastify.get('/openapi.json', { schema: { hide: true } }, async () => fastify.swagger())

  fastify.get('/redoc', { schema: { hide: true } }, async (_request, reply) => reply.type('text/html').send(REDOC_PAGE))

  // Read at each request (browsers keep it a day): held in memory it would be 1 MB for a page seldom opened.
  fastify.get('/redoc/redoc.standalone.js', { schema: { hide: true } }, async (_request, reply) =>
    reply.type('application/javascript').header('cache-control', 'public, max-age=86400').send(createReadStream(REDOC_BUNDLE)))
}, { name: 'docs', dependencies: ['config', 'rate-limit'] })
