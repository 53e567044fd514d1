import Fastify, { type FastifyError } from 'fastify'
import t from 'tap'
import { serverOptions } from '../app.js'
import { loadConfig } from '../plugins/external/config.js'
import { bearer, build, expectProblem, GOOD_PASSWORD, json, signup, uniqueEmail } from './helper.js'

/**
 * Text that is not well-formed UTF-16 (a lone surrogate) has no UTF-8 form:
 * hashing or storing it replaces the surrogate with U+FFFD, so "\ud800x",
 * "\udfffx" and "\ufffdx" would be one password. Every string input is
 * refused instead, by the schema layer (app.ts), naming the field.
 */
const LONE = { 'a lone high surrogate': '\ud800', 'a lone low surrogate': '\udfff', 'a reversed pair': '\udc00\ud800' }

t.test('a password that only differs by a lone surrogate from U+FFFD is refused, not taken for it', async (t) => {
  const app = await build(t)
  const email = uniqueEmail('surrogate')
  const password = `\ufffd${GOOD_PASSWORD}`
  t.equal((await app.inject({ method: 'POST', url: '/api/v1/auth/signup', payload: { email, password } })).statusCode, 201, 'U+FFFD itself is a character like any other')
  for (const [what, lone] of Object.entries(LONE)) {
    const res = await app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email, password: `${lone}${GOOD_PASSWORD}` } })
    const body = expectProblem(t, res, 400, 'VALIDATION_FAILED')
    t.same(body.errors?.map((e: { field: string }) => e.field), ['/body/password'], `${what}: the password is named`)
    t.notOk(body.access_token, `${what}: no sign-in`)
  }
  t.equal((await app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email, password } })).statusCode, 200, 'the real password still signs in')
})

t.test('every string field of the account routes refuses lone surrogates, naming the field', async (t) => {
  const app = await build(t)
  const signed = await signup(app)
  const cases: Array<[string, string, Record<string, unknown>, string, Record<string, string>?]> = [
    ['signup', '/api/v1/auth/signup', { email: uniqueEmail(), password: `${GOOD_PASSWORD}\ud800` }, '/body/password'],
    ['signup', '/api/v1/auth/signup', { email: uniqueEmail(), password: GOOD_PASSWORD, username: 'name\udfff' }, '/body/username'],
    ['signup', '/api/v1/auth/signup', { email: `a\ud800${uniqueEmail()}`, password: GOOD_PASSWORD }, '/body/email'],
    ['login', '/api/v1/auth/login', { username: 'someone\ud800', password: GOOD_PASSWORD }, '/body/username'],
    ['refresh', '/api/v1/auth/refresh', { refresh_token: `${signed.refresh_token}\ud800` }, '/body/refresh_token'],
    ['password change', '/api/v1/auth/password/change', { current_password: `${GOOD_PASSWORD}\udfff`, new_password: `${GOOD_PASSWORD} new` }, '/body/current_password', bearer(signed.access_token)],
    ['password change', '/api/v1/auth/password/change', { current_password: GOOD_PASSWORD, new_password: `\ud800${GOOD_PASSWORD} new` }, '/body/new_password', bearer(signed.access_token)],
    ['password reset', '/api/v1/auth/password/reset', { token: 'a'.repeat(43), new_password: `${GOOD_PASSWORD}\ud800` }, '/body/new_password']
  ]
  for (const [what, url, payload, field, headers] of cases) {
    const res = await app.inject({ method: 'POST', url, payload, headers })
    const body = expectProblem(t, res, 400, 'VALIDATION_FAILED')
    t.ok(body.errors?.some((e: { field: string }) => e.field === field), `${what}: ${field} is named (${body.detail})`)
  }
  t.equal((await app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email: signed.user.email, password: GOOD_PASSWORD } })).statusCode, 200, 'the password was not changed')
})

t.test('a raw JSON body with \\ud800 escapes is refused', async (t) => {
  const app = await build(t)
  const email = uniqueEmail('escape')
  for (const escaped of ['\\ud800', '\\uDFFF', '\\udbff\\u0041']) {
    const res = await app.inject({
      method: 'POST',
      url: '/api/v1/auth/signup',
      headers: { 'content-type': 'application/json' },
      payload: `{"email":"${email}","password":"${escaped}${GOOD_PASSWORD}"}`
    })
    const body = expectProblem(t, res, 400, 'VALIDATION_FAILED')
    t.match(body.detail, /\/body\/password/, `${escaped}: the password is named`)
  }
  const pair = await app.inject({ method: 'POST', url: '/api/v1/auth/signup', headers: { 'content-type': 'application/json' }, payload: `{"email":"${email}","password":"\\ud83d\\ude00${GOOD_PASSWORD}"}` })
  t.equal(pair.statusCode, 201, 'an escaped surrogate pair (an emoji) is well-formed and accepted')
})

t.test('the schema layer checks querystrings and params too', async (t) => {
  // No URL decodes to a lone surrogate today (the router and the query parser refuse or keep the escapes);
  // a hook puts one there, as a future decoder could.
  const config = loadConfig({ DATABASE_URL: 'sqlite::memory:', LOG_LEVEL: 'silent', NODE_ENV: 'test' })
  const fastify = Fastify(serverOptions(config))
  t.teardown(() => fastify.close())
  fastify.setErrorHandler((error: FastifyError, _request, reply) => reply.code(error.statusCode ?? 500).send({ validation: error.validation, context: error.validationContext }))
  fastify.addHook('preValidation', async (request) => {
    const { part, value } = request.headers as Record<string, string>
    const text = JSON.parse(`"${value}"`) as string
    if (part === 'query') request.query = { q: text }
    if (part === 'params') request.params = { id: text }
  })
  const schema = {
    params: { type: 'object', properties: { id: { type: 'string' } } },
    querystring: { type: 'object', properties: { q: { type: 'string' } } }
  }
  fastify.get('/things/:id', { schema }, async () => ({ ok: true }))
  for (const part of ['query', 'params']) {
    const refused = await fastify.inject({ method: 'GET', url: '/things/x', headers: { part, value: '\\ud800' } })
    t.equal(refused.statusCode, 400, `${part}: a lone surrogate is refused`)
    t.match(json(refused), { context: part === 'query' ? 'querystring' : 'params', validation: [{ instancePath: part === 'query' ? '/q' : '/id' }] }, `${part}: the field is named`)
    t.equal((await fastify.inject({ method: 'GET', url: '/things/x', headers: { part, value: '\\ud83d\\ude00' } })).statusCode, 200, `${part}: a pair is fine`)
  }
})
