import { statSync } from 'node:fs'
import { createRequire } from 'node:module'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import t from 'tap'
import { build, databases, json } from '../helper.js'

const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k']

/** GET, following redirects (as a browser would) up to a few hops. */
async function follow (app: FastifyInstance, url: string): Promise<LightMyRequestResponse> {
  let res = await app.inject({ method: 'GET', url })
  for (let hops = 0; hops < 5 && res.statusCode >= 300 && res.statusCode < 400 && res.headers.location; hops++) {
    res = await app.inject({ method: 'GET', url: new URL(String(res.headers.location), `http://localhost${url}`).pathname })
  }
  return res
}

t.test('liveness: GET and HEAD /api/health', async (t) => {
  const app = await build(t)
  const res = await app.inject({ method: 'GET', url: '/api/health' })
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], /^application\/json/)
  const body = json(res)
  t.equal(body.status, 'ok')
  t.type(body.service, 'string')
  t.type(body.version, 'string')
  t.notOk('database' in body, 'liveness does not ask the database')

  const head = await app.inject({ method: 'HEAD', url: '/api/health' })
  t.equal(head.statusCode, 200)
  t.equal(head.body, '', 'HEAD has no body')
})

for (const db of databases) {
  t.test(`${db.name}: readiness`, async (t) => {
    const app = await build(t, { env: { DATABASE_URL: db.url } })
    for (const url of ['/api/health/ready', '/health']) {
      const res = await app.inject({ method: 'GET', url })
      t.equal(res.statusCode, 200, `${url} 200`)
      t.match(res.headers['content-type'], /^application\/json/)
      t.match(json(res), { status: 'ok', database: 'ok', service: String, version: String }, `${url} body`)
      t.same(Object.keys(json(res)).sort(), ['database', 'service', 'status', 'version'], `${url}: the same shape`)
    }
    t.same(json(await app.inject({ method: 'GET', url: '/health' })), json(await app.inject({ method: 'GET', url: '/api/health/ready' })), '/health is the same report')

    await app.db.destroy()
    for (const url of ['/api/health/ready', '/health']) {
      const res = await app.inject({ method: 'GET', url })
      t.equal(res.statusCode, 503, `${url} 503 without a database`)
      t.match(json(res), { status: 'unavailable', database: 'unavailable' })
    }
    const live = await app.inject({ method: 'GET', url: '/api/health' })
    t.equal(live.statusCode, 200, 'liveness stays 200')
    t.equal(json(live).status, 'ok')
  })
}

t.test('/openapi.json documents every route', async (t) => {
  const app = await build(t)
  const res = await app.inject({ method: 'GET', url: '/openapi.json' })
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], /^application\/json/)
  const doc = json(res)
  t.match(doc.openapi, /^3\.\d+\.\d+$/, 'OpenAPI 3')
  t.type(doc.info?.title, 'string')
  t.type(doc.info?.version, 'string')
  t.notOk(res.body.includes('"required":[]'), 'no empty required lists (they make the document invalid)')

  const paths = doc.paths as Record<string, Record<string, any>>
  const healthPath = Object.keys(paths).find((p) => /^\/api\/health\/?$/.test(p))
  const expected: Array<[string, string | undefined]> = [
    ['post', '/api/v1/auth/signup'],
    ['post', '/api/v1/auth/login'],
    ['post', '/api/v1/auth/refresh'],
    ['post', '/api/v1/auth/logout'],
    ['post', '/api/v1/auth/password/change'],
    ['get', '/api/v1/users/me'],
    ['patch', '/api/v1/users/me'],
    ['put', '/api/v1/users/me'],
    ['delete', '/api/v1/users/me'],
    ['get', '/.well-known/jwks.json'],
    ['get', healthPath],
    ['get', '/api/health/ready'],
    ['get', '/health']
  ]
  for (const [method, path] of expected) {
    t.ok(path && paths[path]?.[method], `${method.toUpperCase()} ${path ?? '/api/health'} is documented`)
  }
  t.notOk(paths['/openapi.json'] || paths['/redoc'] || paths['/docs'], 'the docs routes themselves are hidden')

  const declaredTags = new Set((doc.tags ?? []).map((tag: { name: string }) => tag.name))
  for (const [path, operations] of Object.entries(paths)) {
    for (const [method, op] of Object.entries(operations)) {
      if (!['get', 'put', 'post', 'delete', 'patch', 'head', 'options'].includes(method)) continue
      const name = `${method.toUpperCase()} ${path}`
      t.ok(Array.isArray(op.tags) && op.tags.length > 0, `${name}: tags`)
      for (const tag of op.tags ?? []) t.ok(declaredTags.has(tag), `${name}: tag ${tag} is declared`)
      t.ok(typeof op.summary === 'string' && op.summary.length > 0, `${name}: summary`)
      t.ok(op.responses && Object.keys(op.responses).length > 0, `${name}: responses`)
    }
  }

  for (const [method, path] of [['post', '/api/v1/auth/password/change'], ['get', '/api/v1/users/me'], ['patch', '/api/v1/users/me'], ['put', '/api/v1/users/me'], ['delete', '/api/v1/users/me']]) {
    const op = paths[path]?.[method]
    const name = `${method.toUpperCase()} ${path}`
    t.ok(op?.security?.some((s: Record<string, unknown>) => 'bearerAuth' in s), `${name}: security bearerAuth`)
    t.notOk(op?.security?.some((s: Record<string, unknown>) => Object.keys(s).length === 0), `${name}: the bearer is not optional`)
    t.ok(op?.responses?.['401'], `${name}: a 401 response`)
    // Shared answers are in components.responses.
    const unauthorized = op?.responses?.['401']?.$ref ? doc.components.responses[op.responses['401'].$ref.split('/').pop()] : op?.responses?.['401']
    t.match(JSON.stringify(unauthorized ?? {}), /#\/components\/schemas\/Problem/, `${name}: the 401 is a Problem`)
  }
  for (const [method, path] of [['post', '/api/v1/auth/signup'], ['post', '/api/v1/auth/login'], ['get', '/.well-known/jwks.json']]) {
    const security = paths[path]?.[method]?.security as Array<Record<string, unknown>> | undefined
    t.ok(!security || security.length === 0 || security.some((s) => Object.keys(s).length === 0), `${method.toUpperCase()} ${path} needs no bearer`)
  }

  const schemas = doc.components?.schemas ?? {}
  for (const name of ['Problem', 'User', 'TokenResponse']) t.ok(schemas[name], `components.schemas.${name}`)
  t.notOk(Object.keys(schemas.User?.properties ?? {}).some((p) => /password|hash/i.test(p)), 'User has no password field')
  t.ok(schemas.Problem?.properties?.errors, 'Problem keeps its errors list')
  t.match(JSON.stringify(paths['/api/v1/auth/signup']?.post?.responses?.['201'] ?? {}), /#\/components\/schemas\/TokenResponse/, 'signup answers a TokenResponse')
  t.match(JSON.stringify(paths['/api/v1/users/me']?.get?.responses?.['200'] ?? {}), /#\/components\/schemas\/User/, '/me answers a User')
  t.match(doc.components?.securitySchemes?.bearerAuth, { type: 'http', scheme: 'bearer' }, 'securitySchemes.bearerAuth')
})

t.test('/docs serves Swagger UI', async (t) => {
  const app = await build(t)
  const res = await follow(app, '/docs')
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], /^text\/html/)
  t.match(res.body, /swagger-ui/i)
  const scripts = [...res.body.matchAll(/<script[^>]+src="([^"]+)"/g)].map((m) => m[1])
  t.ok(scripts.length > 0, 'loads scripts')
  for (const src of scripts) {
    t.notMatch(src, /^(https?:)?\/\//, `${src} is served here, not from a CDN`)
    const script = await app.inject({ method: 'GET', url: new URL(src, 'http://localhost/docs/').pathname })
    t.equal(script.statusCode, 200, `${src} is served`)
  }
})

t.test('/redoc serves ReDoc from this service', async (t) => {
  const app = await build(t)
  const res = await follow(app, '/redoc')
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], /^text\/html/)
  t.match(res.body, /<script[^>]+src="\/redoc\/redoc\.standalone\.js"/, 'references the local bundle')
  t.match(res.body, /\/openapi\.json/, 'points at the document')
  t.notMatch(res.body, /https?:\/\/|cdn\./i, 'no CDN or other remote URL')

  const bundle = await app.inject({ method: 'GET', url: '/redoc/redoc.standalone.js' })
  t.equal(bundle.statusCode, 200)
  t.match(bundle.headers['content-type'], /^(application|text)\/javascript/, 'served as JavaScript')
  t.ok(bundle.body.length > 100_000, 'the whole bundle')
  t.equal(bundle.rawPayload.length, statSync(createRequire(import.meta.url).resolve('redoc/bundles/redoc.standalone.js')).size, 'every byte of the file, streamed from disk')
  t.equal(bundle.headers['cache-control'], 'public, max-age=86400', 'and browsers keep it a day')
})

t.test('JWKS', async (t) => {
  const app = await build(t)
  const res = await app.inject({ method: 'GET', url: '/.well-known/jwks.json' })
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], /^application\/json/)
  t.match(res.headers['cache-control'], /(^|[ ,])max-age=300\b/, 'Cache-Control max-age (JWKS_MAX_AGE_SECONDS)')
  t.match(res.headers['cache-control'], /public/)
  const { keys } = json(res)
  t.ok(Array.isArray(keys) && keys.length >= 1, 'at least one key')
  for (const key of keys) {
    t.type(key.kid, 'string')
    t.type(key.kty, 'string')
    t.equal(key.use, 'sig')
    t.type(key.alg, 'string')
    for (const member of PRIVATE_MEMBERS) t.notOk(member in key, `no private member ${member}`)
  }

  const custom = await build(t, { env: { JWKS_MAX_AGE_SECONDS: '60' } })
  const customRes = await custom.inject({ method: 'GET', url: '/.well-known/jwks.json' })
  t.match(customRes.headers['cache-control'], /(^|[ ,])max-age=60\b/, 'follows JWKS_MAX_AGE_SECONDS')
})
