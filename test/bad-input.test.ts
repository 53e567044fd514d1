import { createHash, randomBytes, randomUUID } from 'node:crypto'
import AjvCompiler from '@fastify/ajv-compiler'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import type { Kysely } from 'kysely'
import pg from 'pg'
import t, { type Test } from 'tap'
import { bearer, build, databases, forwardAuth, json, uniqueEmail, uniqueUsername } from './helper.js'

/**
 * The bad-input suite: every operation of the service's own OpenAPI document,
 * sent requests generated from its schema to be wrong in every way we know.
 * For every answer: no 5xx, a problem+json body with a code for every 4xx;
 * and for the whole run: nothing changed in the database.
 */

/** At most this many requests per operation (chosen across every kind of bad input). */
const PER_OPERATION = 60
/** The whole file stops sending after this long (it normally takes a fraction of it). */
const BUDGET_MS = 80_000
const started = Date.now()

/** No per-address limits (the helper's default) and no load shedding: neither is what this is about. */
const QUIET = { MAX_EVENT_LOOP_DELAY_MS: '0' }

type Schema = Record<string, any>
type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE'

interface Param { name: string, in: 'path' | 'query', schema: Schema, required: boolean }

interface Operation {
  id: string
  method: Method
  path: string
  params: Param[]
  query: Param[]
  body: Schema | null
  auth: 'required' | 'optional' | 'none'
}

interface Probe {
  /** The kind of bad input; requests are picked across kinds. */
  kind: string
  label: string
  /** Raw path parameter values (already percent-encoded, or deliberately not). */
  params?: Record<string, string>
  /** Raw query string pairs, value already percent-encoded (or deliberately not). */
  query?: Array<[string, string]>
  headers?: Record<string, string>
  payload?: string | Buffer
  /** The JSON value the payload carries, when it parses. */
  body?: unknown
  /** The body parser refuses it before validation (wrong type, not JSON, too big…). */
  refusedByParser?: boolean
  /** Sent without a valid bearer token. */
  anonymous?: boolean
}

// ---------------------------------------------------------------------------
// Values

const SQL_AND_SCRIPT = ["' OR 1=1 --", "'; DROP TABLE users; --", '<script>alert(1)</script>']
/** The same, with no spaces: they still look like an email address to the pattern. */
const EMAIL_SHAPED_INJECTIONS = ["x'OR'1'='1'--@example.com", '<script>alert(1)</script>@example.com']
const UNICODE: Array<[string, string]> = [
  ['NUL', '\u0000'],
  ['lone high surrogate', '\ud800'],
  ['lone low surrogate', '\udfff'],
  ['RTL override and mark', '\u202e\u200f'],
  ['zero-width joiner', '\u200d'],
  ['emoji family', '\u{1F469}\u200d\u{1F469}\u200d\u{1F467}'],
  ['byte order mark', '\ufeff'],
  ['combining accent', 'e\u0301']
]
/** Raw URL encodings of the same troubles, some of them not valid UTF-8. */
const URL_TROUBLE: Array<[string, string]> = [
  ['NUL', '%00'],
  ['lone surrogate as UTF-8', '%ED%A0%80'],
  ['invalid UTF-8', '%FF%FE'],
  ['RTL override', '%E2%80%AE'],
  ['emoji', encodeURIComponent('\u{1F469}\u200d\u{1F469}')],
  ['malformed escape', '%zz'],
  ['lone percent', '%']
]
/** Tried in order for a string with a pattern; the first that fits is the sample. */
const PATTERN_CANDIDATES = ['no_such_role', 'ada@example.com', 'abc', 'AbC123', 'a1']

const HUGE = 'a'.repeat(100 * 1024)

/** A value that satisfies `schema` (as far as a probe needs): the starting point every bad input changes one thing of. */
function sample (schema: Schema): unknown {
  // A union of types: its first branch (an `anyOf` of `required` lists beside `properties` is not one).
  if (schema.anyOf && schema.type === undefined) return sample(schema.anyOf[0])
  if (schema.enum) return schema.enum[0]
  if (schema.const !== undefined) return schema.const
  if (schema.default !== undefined) return schema.default
  switch (schema.type) {
    case 'string': {
      if (schema.format === 'uuid') return randomUUID()
      if (schema.format === 'date-time') return new Date().toISOString()
      if (schema.examples?.length) return schema.examples[0]
      if (schema.pattern) {
        const re = new RegExp(schema.pattern, 'u')
        const found = PATTERN_CANDIDATES.find((c) => re.test(c))
        if (found) return found
      }
      return 'x'.repeat(Math.max(1, schema.minLength ?? 1))
    }
    case 'integer':
    case 'number': return schema.minimum ?? 1
    case 'boolean': return false
    case 'array': return []
    case 'object': return Object.fromEntries(Object.entries(schema.properties ?? {}).map(([k, s]) => [k, sample(s as Schema)]))
    default: return null
  }
}

const typesOf = (schema: Schema): string[] => [...[schema.type].flat().filter(Boolean), ...(schema.anyOf ?? []).flatMap(typesOf)]

/** Values of other JSON types than the schema's. */
function wrongTypes (schema: Schema): Array<[string, unknown]> {
  const types = typesOf(schema)
  const all: Array<[string, unknown, string]> = [
    ['a number', 12345, 'number'], ['a boolean', true, 'boolean'], ['a string', 'text', 'string'],
    ['an array', ['x'], 'array'], ['an object', { a: 1 }, 'object'], ['null', null, 'null']
  ]
  return all.filter(([, , type]) => !types.includes(type) && !(type === 'number' && types.includes('integer'))).map(([name, value]) => [name, value])
}

/** `trouble` put inside a valid value, so that only the trouble is new (an email stays email-shaped). */
const embed = (valid: unknown, trouble: string) => typeof valid === 'string' && valid.includes('@') ? `${trouble}${valid}` : `${String(valid)}${trouble}`

/** Just longer than maxLength, shaped like the valid value where it has an @. */
function justTooLong (schema: Schema, valid: unknown): string {
  const length = schema.maxLength + 1
  if (typeof valid === 'string' && valid.includes('@')) {
    const domain = valid.slice(valid.indexOf('@'))
    return 'a'.repeat(length - domain.length) + domain
  }
  return 'a'.repeat(length)
}

const nested = (depth: number, open: string, close: string, inner = '1') => open.repeat(depth) + inner + close.repeat(depth)

// ---------------------------------------------------------------------------
// Requests from the document

function operationsOf (doc: Schema): Operation[] {
  const operations: Operation[] = []
  for (const [path, item] of Object.entries(doc.paths as Record<string, Record<string, Schema>>)) {
    for (const [method, op] of Object.entries(item)) {
      // HEAD is its GET without a body to read the code from: the GET's probes cover it.
      if (method === 'head') continue
      const parameters = (op.parameters ?? []) as Param[]
      const security = (op.security ?? doc.security ?? []) as Array<Record<string, unknown>>
      const auth = security.length === 0 ? 'none' : security.some((s) => Object.keys(s).length === 0) ? 'optional' : 'required'
      operations.push({
        id: op.operationId ?? `${method} ${path}`,
        method: method.toUpperCase() as Method,
        path,
        params: parameters.filter((p) => p.in === 'path'),
        query: parameters.filter((p) => p.in === 'query'),
        body: op.requestBody?.content?.['application/json']?.schema ?? null,
        auth
      })
    }
  }
  return operations
}

const objectOf = (params: Param[]): Schema => ({
  type: 'object',
  properties: Object.fromEntries(params.map((p) => [p.name, p.schema])),
  required: params.filter((p) => p.required && p.schema.default === undefined).map((p) => p.name),
  additionalProperties: false
})

const asJson = (value: unknown) => ({ payload: JSON.stringify(value), body: value, headers: { 'content-type': 'application/json' } })

/** Every bad request for one operation, grouped by kind. */
function probesFor (op: Operation, base: Record<string, unknown> | null, baseQuery: Array<[string, string]>): Probe[] {
  const probes: Probe[] = []
  const add = (probe: Probe) => probes.push(probe)

  if (op.body && base) {
    const properties = Object.entries((op.body.properties ?? {}) as Record<string, Schema>)
    const required = new Set<string>(op.body.required ?? [])
    const withField = (name: string, value: unknown) => ({ ...base, [name]: value })
    for (const [name, schema] of properties) {
      for (const [what, value] of wrongTypes(schema)) add({ kind: 'wrong type', label: `body.${name} is ${what}`, ...asJson(withField(name, value)) })
      if (required.has(name)) {
        const { [name]: _, ...rest } = base
        add({ kind: 'missing', label: `body.${name} missing`, ...asJson(rest) })
      }
      const strings = schema.anyOf?.find((s: Schema) => s.type === 'string') ?? (schema.type === 'string' ? schema : null)
      if (strings) {
        const valid = base[name]
        add({ kind: 'huge', label: `body.${name} is 100 KB`, ...asJson(withField(name, HUGE)), refusedByParser: true })
        if (strings.maxLength !== undefined) add({ kind: 'too long', label: `body.${name} is maxLength + 1`, ...asJson(withField(name, justTooLong(strings, valid))) })
        for (const [what, trouble] of UNICODE) add({ kind: 'unicode', label: `body.${name} with ${what}`, ...asJson(withField(name, embed(valid, trouble))) })
        for (const injection of SQL_AND_SCRIPT) add({ kind: 'injection', label: `body.${name} = ${JSON.stringify(injection)}`, ...asJson(withField(name, injection)) })
        if (typeof valid === 'string' && valid.includes('@')) {
          for (const injection of EMAIL_SHAPED_INJECTIONS) add({ kind: 'injection', label: `body.${name} = ${JSON.stringify(injection)}`, ...asJson(withField(name, injection)) })
        }
      }
      if (schema.type === 'array') {
        if (schema.maxItems !== undefined) add({ kind: 'too long', label: `body.${name} has maxItems + 1`, ...asJson(withField(name, Array.from({ length: schema.maxItems + 1 }, (_, i) => `item_${i}`))) })
        add({ kind: 'injection', label: `body.${name} holds an injection`, ...asJson(withField(name, [SQL_AND_SCRIPT[1]])) })
        add({ kind: 'unicode', label: `body.${name} holds a NUL`, ...asJson(withField(name, ['a\u0000b'])) })
      }
    }
    add({ kind: 'extra', label: 'an extra property', ...asJson({ ...base, unexpected_field: 'x' }) })
    add({ kind: 'extra', label: 'an extra `constructor` property', ...asJson({ ...base, constructor: 1 }) })
  }

  if (op.method !== 'GET') {
    const json = JSON.stringify(base ?? {})
    /** The body with `member` first. */
    const withFirst = (member: string) => json === '{}' ? `{${member}}` : `{${member},${json.slice(1)}`
    const raw = (kind: string, label: string, payload: string | Buffer, contentType: string, refusedByParser = true): Probe =>
      ({ kind, label, payload, headers: { 'content-type': contentType }, refusedByParser })
    const firstField = Object.keys(op.body?.properties ?? { field: 1 })[0]
    add(raw('prototype', '`__proto__` key', withFirst('"__proto__":{"admin":true}'), 'application/json'))
    add(raw('prototype', '`constructor.prototype` keys', withFirst('"constructor":{"prototype":{"admin":true}}'), 'application/json'))
    add(raw('prototype', 'nested `__proto__` key', `{"${firstField}":{"__proto__":{"admin":true}}}`, 'application/json'))
    add(raw('nesting', 'an object nested 10,000 levels', nested(10_000, '{"a":', '}'), 'application/json'))
    // The same, small enough to pass the body limit and reach the parser.
    const deepObject = nested(2_500, '{"a":', '}')
    add({ ...raw('nesting', 'an object nested 2,500 levels (under the body limit)', deepObject, 'application/json', false), body: JSON.parse(deepObject) })
    const deepArray = nested(8_000, '[', ']')
    add({ ...raw('nesting', 'arrays nested 8,000 levels (under the body limit)', deepArray, 'application/json', false), body: JSON.parse(deepArray) })
    add({ ...raw('nesting', `body.${firstField} nested 2,500 levels`, `{"${firstField}":${deepObject}}`, 'application/json', false), body: { [firstField]: JSON.parse(deepObject) } })
    add(raw('utf-8', 'bytes 0xff 0xfe', Buffer.from([0xff, 0xfe]), 'application/json'))
    for (const [what, bytes] of [['0xff 0xfe', [0xff, 0xfe]], ['an overlong "/"', [0xc0, 0xaf]], ['a surrogate as UTF-8', [0xed, 0xa0, 0x80]]] as Array<[string, number[]]>) {
      const payload = Buffer.concat([Buffer.from(`{"${firstField}":"`), Buffer.from(bytes), Buffer.from('"}')])
      add({ ...raw('utf-8', `body.${firstField} with ${what}`, payload, 'application/json', false), body: JSON.parse(payload.toString('utf8')) })
    }
    add(raw('content type', 'JSON as text/plain', json, 'text/plain'))
    add(raw('content type', 'a form', 'email=a%40example.com&password=x', 'application/x-www-form-urlencoded'))
    add(raw('content type', 'multipart', '--b\r\nContent-Disposition: form-data; name="email"\r\n\r\na@example.com\r\n--b--\r\n', 'multipart/form-data; boundary=b'))
    add(raw('content type', 'XML', '<email>a@example.com</email>', 'application/xml'))
    add(raw('content type', 'JSON in UTF-16', Buffer.from(json, 'utf16le'), 'application/json; charset=utf-16'))
    add({ kind: 'shape', label: 'an array body', ...asJson([]) })
    add({ kind: 'shape', label: 'the valid body in an array', ...asJson([base ?? {}]) })
    add({ kind: 'shape', label: 'null', ...asJson(null) })
    add({ kind: 'shape', label: 'a string', ...asJson('text') })
    add({ kind: 'shape', label: 'a number', ...asJson(42) })
    add({ ...raw('shape', 'an empty JSON body (taken as an empty object)', '', 'application/json', false), body: {} })
    add({ kind: 'shape', label: 'no body at all' })
    add(raw('shape', 'truncated JSON', json.slice(0, -1), 'application/json'))
    add(raw('shape', 'single-quoted JSON', "{'a': 1}", 'application/json'))
  }

  const queryWith = (name: string, value: string): Array<[string, string]> => [...baseQuery.filter(([k]) => k !== name), [name, value]]
  for (const param of op.query) {
    const { name, schema } = param
    const types = typesOf(schema)
    const wrong = types.includes('integer') || types.includes('number')
      ? ['abc', '1.5', '-1', '0', '101', '1e309', '']
      : types.includes('boolean')
        ? ['maybe', '2', '']
        : schema.format === 'uuid' ? ['not-a-uuid', '12345'] : schema.format === 'date-time' ? ['yesterday', '2024-13-45T99:99:99Z'] : ['']
    for (const value of wrong) add({ kind: 'query', label: `?${name}=${value} (wrong type)`, query: queryWith(name, value) })
    add({ kind: 'query', label: `?${name} twice`, query: [...queryWith(name, '1'), [name, '2']] })
    if (schema.maxLength !== undefined) add({ kind: 'query', label: `?${name} maxLength + 1`, query: queryWith(name, 'a'.repeat(schema.maxLength + 1)) })
    add({ kind: 'query', label: `?${name} 4,000 characters`, query: queryWith(name, 'a'.repeat(4000)) })
    for (const injection of SQL_AND_SCRIPT) add({ kind: 'query', label: `?${name}=${JSON.stringify(injection)}`, query: queryWith(name, encodeURIComponent(injection)) })
    for (const [what, encoded] of URL_TROUBLE) add({ kind: 'query', label: `?${name} with ${what}`, query: queryWith(name, `a${encoded}b`) })
  }
  add({ kind: 'query', label: 'an unknown query parameter', query: [...baseQuery, ['unexpected', '1']] })
  add({ kind: 'query', label: '`__proto__` and `constructor` query parameters', query: [...baseQuery, ['__proto__', 'x'], ['constructor', 'y'], ['__proto__[admin]', 'true']] })
  add({ kind: 'query', label: 'an injection in an unknown query parameter', query: [...baseQuery, ['q', encodeURIComponent(SQL_AND_SCRIPT[1])]] })

  for (const param of op.params) {
    const values: Array<[string, string]> = [
      ['not a uuid', 'not-a-uuid'], ['a number', '12345'], ['upper case', 'ADMIN'],
      ['100 characters', 'a'.repeat(100)], ['201 characters (over the router\'s limit)', 'a'.repeat(201)],
      ['dot dot', '..'], ['encoded dot dot', '%2e%2e'], ['an encoded slash', 'a%2Fb'],
      ...SQL_AND_SCRIPT.map((s): [string, string] => [JSON.stringify(s), encodeURIComponent(s)]),
      ...URL_TROUBLE.map(([what, encoded]): [string, string] => [what, `a${encoded}b`])
    ]
    for (const [what, value] of values) add({ kind: 'path', label: `{${param.name}} ${what}`, params: { [param.name]: value } })
  }

  if (op.auth === 'required') {
    add({ kind: 'auth', label: 'no bearer token', anonymous: true, headers: {} })
    add({ kind: 'auth', label: 'a malformed bearer token', anonymous: true, headers: { authorization: 'Bearer not.a.jwt' } })
    add({ kind: 'auth', label: 'an injection as the token', anonymous: true, headers: { authorization: `Bearer ${"' OR 1=1 --"}` } })
    add({ kind: 'auth', label: 'another scheme', anonymous: true, headers: { authorization: 'Basic YWRtaW46YWRtaW4=' } })
  }
  return probes
}

/** Up to `cap` probes, taken in turn from each kind so that every kind is sent. */
function pick (probes: Probe[], cap: number): Probe[] {
  const kinds = new Map<string, Probe[]>()
  for (const probe of probes) kinds.set(probe.kind, [...(kinds.get(probe.kind) ?? []), probe])
  const queues = [...kinds.values()]
  const picked: Probe[] = []
  while (picked.length < cap && queues.some((q) => q.length > 0)) {
    for (const queue of queues) if (queue.length > 0 && picked.length < cap) picked.push(queue.shift()!)
  }
  return picked
}

// ---------------------------------------------------------------------------
// Which probes the service would act on (only those that fail validation may be sent to routes that change state)

const validatorFactory = AjvCompiler()
const bodyValidator = validatorFactory({}, { customOptions: { removeAdditional: false, useDefaults: true, allErrors: false, coerceTypes: false, strict: false } })
const textValidator = validatorFactory({}, { customOptions: { removeAdditional: false, useDefaults: true, allErrors: false, coerceTypes: 'array', strict: false } })

function decode (value: string): string {
  try {
    return decodeURIComponent(value)
  } catch {
    return value
  }
}

/** True when the service would take the request as valid and run the handler. */
function acceptable (op: Operation, probe: Probe, baseParams: Record<string, string>, baseQuery: Array<[string, string]>): boolean {
  if (probe.anonymous && op.auth === 'required') return false
  if (probe.refusedByParser) return false
  if (op.body) {
    // Not cloned (a deep probe would overflow the stack): the value is only ever read to classify it.
    const body = probe.payload === undefined ? undefined : probe.body
    if (!bodyValidator({ schema: op.body, method: op.method, url: op.path, httpPart: 'body' })(body)) return false
  }
  const query: Record<string, unknown> = {}
  for (const [k, v] of probe.query ?? baseQuery) {
    const value = decode(v)
    query[k] = k in query ? [query[k], value].flat() : value
  }
  if (op.query.length > 0 && !textValidator({ schema: objectOf(op.query), method: op.method, url: op.path, httpPart: 'querystring' })(query)) return false
  const params = { ...baseParams, ...probe.params }
  for (const param of op.params) {
    if (!textValidator({ schema: objectOf([param]), method: op.method, url: op.path, httpPart: 'params' })({ [param.name]: decode(params[param.name]) })) return false
  }
  return true
}

// ---------------------------------------------------------------------------
// The database, before and after

const TABLES: Record<string, string[]> = {
  users: ['id'],
  sessions: ['id'],
  refresh_tokens: ['token_hash'],
  roles: ['name'],
  role_permissions: ['role', 'permission'],
  user_roles: ['user_id', 'role'],
  signing_keys: ['kid'],
  one_time_tokens: ['token_hash'],
  revoked_sessions: ['session_id']
}

async function snapshot (db: Kysely<any>) {
  const tables: Record<string, { rows: number, hash: string }> = {}
  for (const [table, keys] of Object.entries(TABLES)) {
    let query = db.selectFrom(table).selectAll()
    for (const key of keys) query = query.orderBy(key)
    const rows = await query.execute()
    tables[table] = { rows: rows.length, hash: createHash('sha256').update(JSON.stringify(rows)).digest('hex') }
  }
  const events = await db.selectFrom('auth_events').select(['type', db.fn.countAll().as('count')]).groupBy('type').execute()
  return { tables, events: Object.fromEntries(events.map((e) => [e.type, Number(e.count)])) as Record<string, number> }
}

/** A database of this run only: SQLite in memory, or a fresh schema of the PostgreSQL database. */
async function databaseFor (url: string): Promise<{ url: string, drop: () => Promise<void> }> {
  if (!url.startsWith('postgres')) return { url, drop: async () => {} }
  const schema = `bad_input_${process.pid}_${Date.now().toString(36)}_${randomUUID().slice(0, 8)}`
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  await client.query(`create schema "${schema}"`)
  return {
    url: `${url}${url.includes('?') ? '&' : '?'}options=-c%20search_path%3D${schema}`,
    drop: async () => {
      await client.query(`drop schema "${schema}" cascade`)
      await client.end()
    }
  }
}

// ---------------------------------------------------------------------------
// Assertions

function expectSafe (t: Test, res: LightMyRequestResponse, label: string) {
  let code: unknown
  try {
    code = JSON.parse(res.body).code
  } catch {}
  t.ok(res.statusCode < 500, `${label}: ${res.statusCode}${code ? ` ${String(code)}` : ''}, not a 5xx`)
  if (res.statusCode >= 400) {
    t.match(res.headers['content-type'], /^application\/problem\+json/, `${label}: problem+json`)
    t.match(code, /^[A-Z][A-Z0-9_]*$/, `${label}: a code`)
  }
}

/** Every string in a request schema that has no length cap (no maxLength, enum, const, or uuid / date-time format). */
function uncapped (schema: Schema | undefined, where: string, out: string[]) {
  if (!schema || typeof schema !== 'object') return
  const types = [schema.type].flat()
  const capped = schema.maxLength !== undefined || schema.enum !== undefined || schema.const !== undefined || ['uuid', 'date-time'].includes(schema.format)
  if (types.includes('string') && !capped) out.push(where)
  for (const [name, s] of Object.entries((schema.properties ?? {}) as Record<string, Schema>)) uncapped(s, `${where}.${name}`, out)
  if (schema.items) uncapped(schema.items, `${where}[]`, out)
  if (typeof schema.additionalProperties === 'object') uncapped(schema.additionalProperties, `${where}.*`, out)
  for (const key of ['anyOf', 'oneOf', 'allOf']) for (const s of (schema[key] ?? []) as Schema[]) uncapped(s, where, out)
}

// ---------------------------------------------------------------------------

const normalized = (value: unknown) => typeof value === 'string' ? value.trim().toLowerCase() : undefined

/**
 * Operations that change state when given valid input, and how to tell a
 * harmless valid request from one that would change something (most have
 * none: their valid requests are not sent).
 */
const CHANGES_STATE: Record<string, (body: Record<string, any> | undefined, ctx: { adminEmail: string, adminUsername: string }) => boolean> = {
  // The base body takes the admin's address and username: a valid signup that keeps either is a 409 that changes nothing.
  signup: (body, ctx) => !(normalized(body?.email) === ctx.adminEmail || normalized(body?.username) === ctx.adminUsername),
  // The base body names the built-in admin role: 409.
  adminCreateRole: (body) => body?.name !== 'admin',
  adminRotateKeys: () => true,
  updateMe: () => true,
  replaceMe: () => true,
  endSessions: () => true
}

/** Starting values that make a valid request harmless: unknown targets, wrong passwords. */
function baseFor (op: Operation, ctx: { adminEmail: string, adminUsername: string }): Record<string, unknown> | null {
  if (!op.body) return null
  const base = sample(op.body) as Record<string, unknown>
  if (op.id === 'signup') return { ...base, email: ctx.adminEmail, username: ctx.adminUsername, password: 'an uncommon passphrase for probes' }
  if (op.id === 'adminCreateRole') return { ...base, name: 'admin' }
  return base
}

const docsApp = await build(t, { env: QUIET })
const docRes = await docsApp.inject({ method: 'GET', url: '/openapi.json' })
const doc = docRes.json() as Schema
const operations = operationsOf(doc)

t.test('the document lists the operations', async (t) => {
  t.equal(docRes.statusCode, 200, 'GET /openapi.json')
  t.ok(operations.length >= 30, `${operations.length} operations`)
  for (const route of ['POST /api/v1/auth/signup', 'POST /api/v1/auth/login', 'PATCH /api/v1/admin/users/{id}', 'DELETE /api/v1/users/me/sessions/{id}']) {
    t.ok(operations.some((op) => `${op.method} ${op.path}` === route), `${route} is in it`)
  }
})

t.test('every string in every request schema has a length cap', async (t) => {
  const missing: string[] = []
  for (const op of operations) {
    uncapped(op.body ?? undefined, `${op.method} ${op.path} body`, missing)
    for (const param of [...op.params, ...op.query]) uncapped(param.schema, `${op.method} ${op.path} ${param.in} ${param.name}`, missing)
  }
  t.same(missing, [], `strings without maxLength (or enum, const, uuid, date-time): ${missing.length ? missing.join('; ') : 'none'}`)
})

for (const database of databases) {
  t.test(`${database.name}: bad input to every operation`, async (t) => {
    const { url, drop } = await databaseFor(database.url)
    const adminEmail = uniqueEmail('bad-input-admin')
    const adminPassword = `Admin-${randomBytes(12).toString('base64url')}`
    // A secret of its own: the schema lives for this run only, and needs no generated secret file under ./data.
    const app: FastifyInstance = await build(t, { env: { ...QUIET, DATABASE_URL: url, ADMIN_EMAIL: adminEmail, ADMIN_PASSWORD: adminPassword, KEY_ENCRYPTION_SECRET: randomBytes(32).toString('hex') } })
    t.teardown(drop)

    const login = await app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email: adminEmail, password: adminPassword } })
    t.equal(login.statusCode, 200, 'the admin signs in')
    const token = json(login).access_token as string
    const adminUsername = uniqueUsername('adm')
    const named = await app.inject({ method: 'PATCH', url: '/api/v1/users/me', headers: bearer(token), payload: { username: adminUsername } })
    t.equal(named.statusCode, 200, 'the admin takes a username')
    const ctx = { adminEmail, adminUsername }

    const before = await snapshot(app.db as Kysely<any>)
    let sent = 0
    let outOfTime = false

    for (const op of operations) {
      if (Date.now() - started > BUDGET_MS) {
        outOfTime = true
        break
      }
      await t.test(`${op.method} ${op.path}`, async (t) => {
        const base = baseFor(op, ctx)
        const baseParams = Object.fromEntries(op.params.map((p) => [p.name, encodeURIComponent(String(sample(p.schema)))]))
        const baseQuery = op.query.filter((p) => p.required).map((p): [string, string] => [p.name, encodeURIComponent(String(sample(p.schema)))])
        const changes = CHANGES_STATE[op.id]
        const all = probesFor(op, base, baseQuery)
        // Never send a valid request to a route that would then change state.
        const harmless = all.filter((p) => !changes || !acceptable(op, p, baseParams, baseQuery) || !changes(p.body as Record<string, any> | undefined, ctx))
        const probes = pick(harmless, PER_OPERATION)
        const kinds = [...new Set(probes.map((p) => p.kind))].map((kind) => `${kind} ${probes.filter((p) => p.kind === kind).length}`).join(', ')
        t.ok(probes.length > 0, `${probes.length} of ${all.length} generated requests sent (${all.length - harmless.length} left out as valid input that would change state): ${kinds}`)

        const statuses: number[] = []
        for (const probe of probes) {
          const params = { ...baseParams, ...probe.params }
          const path = op.path.replace(/\{(\w+)\}/g, (_, name: string) => params[name])
          const query = (probe.query ?? baseQuery).map(([k, v]) => `${k}=${v}`).join('&')
          const headers = { ...(op.auth === 'required' && !probe.anonymous ? bearer(token) : {}), ...probe.headers }
          const res = await app.inject({ method: op.method, url: query ? `${path}?${query}` : path, headers, ...(probe.payload !== undefined && { payload: probe.payload }) })
          sent++
          statuses.push(res.statusCode)
          expectSafe(t, res, `${probe.kind}: ${probe.label}`)
        }
        if (op.body || op.params.length > 0 || op.query.length > 0) {
          t.ok(statuses.some((s) => s === 400), 'validation was reached (some answers are 400)')
        }
        t.equal((await forwardAuth(app, token)).statusCode, 200, 'the admin token still works')
      })
    }

    t.notOk(outOfTime, `all operations were probed within the time budget (${sent} requests sent)`)
    await app.background.idle()
    const after = await snapshot(app.db as Kysely<any>)
    for (const table of Object.keys(TABLES)) {
      t.same(after.tables[table], before.tables[table], `${table}: the same rows as before`)
    }
    const newEvents = Object.fromEntries(Object.entries(after.events)
      .filter(([type, count]) => count !== (before.events[type] ?? 0))
      .map(([type, count]) => [type, count - (before.events[type] ?? 0)]))
    t.same(Object.keys(newEvents).filter((type) => type !== 'login_failed'), [], `the only new audit events are failed sign-ins (${JSON.stringify(newEvents)})`)
  })
}
