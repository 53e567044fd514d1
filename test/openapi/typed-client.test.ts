import { execFile } from 'node:child_process'
import { symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import openapiTS, { astToString, type OpenAPI3 } from 'openapi-typescript'
import t from 'tap'
import { build, tempDir } from '../helper.js'

/**
 * The document is the contract an app's typed client is made from (issue 16):
 * openapi-typescript turns /openapi.json into types, and a client written with
 * openapi-fetch against them must compile: every operation called by its path
 * and method, every error handled by its `code`. The switches are exhaustive,
 * so the compile fails when the document drops a code a client handles, and
 * when it adds one the client does not (both shown below, on a changed document).
 */

const run = promisify(execFile)
const ROOT = join(import.meta.dirname, '../..')
const TSC = join(ROOT, 'node_modules/typescript/bin/tsc')
const METHODS = ['get', 'put', 'post', 'delete', 'patch', 'head'] as const

type Json = Record<string, any>

const app = await build(t)
const document = (await app.inject({ method: 'GET', url: '/openapi.json' })).json() as Json

/** A response, through its `$ref` to components.responses if it has one. */
const resolved = (response: Json): Json => response.$ref ? document.components.responses[String(response.$ref).split('/').pop()!] : response

/** The codes an operation's problem answers declare, all statuses together. */
function codesOf (operation: Json): string[] {
  const codes = Object.values(operation.responses as Record<string, Json>).flatMap((response) =>
    resolved(response).content?.['application/problem+json']?.schema?.allOf?.[1]?.properties?.code?.enum ?? [])
  return [...new Set<string>(codes)].sort()
}

/** The error answers of an operation that are not problems (readiness's 503 is its Health body), said for the client. */
function otherErrors (operation: Json): string {
  return Object.entries(operation.responses as Record<string, Json>)
    .filter(([status, response]) => Number(status) >= 400 && Object.keys(resolved(response).content ?? {}).some((media) => media !== 'application/problem+json'))
    .map(([status]) => `${status} answers another body`).join(', ')
}

const operations = Object.entries(document.paths as Record<string, Json>).flatMap(([path, item]) =>
  METHODS.filter((method) => item[method]).map((method) => ({ path, method, operation: item[method] as Json })))

/**
 * A function per operation, made from the document: calls it, and switches
 * on its error's `code` with a case for every code the document declares for
 * it and `never` in the default.
 */
function generatedClient (): string {
  return operations.map(({ path, method, operation }) => {
    const name = `call_${String(operation.operationId).replace(/\W/g, '_')}`
    const call = `client.${method.toUpperCase()}('${path}', init)`
    const init = `MaybeOptionalInit<paths['${path}'], '${method}'>`
    // HEAD answers have no body to read a code from.
    if (method === 'head') return `export async function ${name} (init: ${init}): Promise<number> {\n  return (await ${call}).response.status\n}\n`
    return `export async function ${name} (init: ${init}): Promise<string> {
  const { error, response } = await ${call}
  if (!error) return String(response.status)${otherErrors(operation) ? `\n  // ${otherErrors(operation)}\n  if (!('code' in error)) return String(response.status)` : ''}
  const { code } = error
  switch (code) {
    ${codesOf(operation).map((code) => `case '${code}':`).join('\n    ')}
      return code
    default:
      return unhandled(code)
  }
}
`
  }).join('\n')
}

/**
 * What an app writes by hand: the codes it acts on, for the operations it
 * uses. It fails to compile when the document loses one of them.
 */
const INTEGRATOR = `
type Next = 'done' | 'refresh' | 'sign-in' | 'signed-out' | 'retry-later' | 'fix-input' | 'second-factor' | 'enrol'

export async function signIn (email: string, password: string): Promise<Next> {
  const { data, error } = await client.POST('/api/v1/auth/login', { body: { email, password } })
  if (data) {
    // A right password may not sign in yet: the second factor, or its enrolment, comes next.
    if ('mfa_required' in data) return data.methods.includes('totp') && data.mfa_token ? 'second-factor' : 'sign-in'
    if ('mfa_enrolment_required' in data) return data.mfa_token ? 'enrol' : 'sign-in'
    const expiresAt: number = data.expires_at
    const refreshToken: string = data.refresh_token
    return expiresAt > 0 && refreshToken ? 'done' : 'sign-in'
  }
  switch (error.code) {
    case 'INVALID_CREDENTIALS': return 'sign-in'
    case 'EMAIL_NOT_VERIFIED': return 'fix-input'
    case 'RATE_LIMITED': case 'OVERLOADED': case 'DATABASE_UNAVAILABLE': return 'retry-later'
    default: return 'fix-input'
  }
}

export async function refresh (refreshToken: string): Promise<Next> {
  const { data, error } = await client.POST('/api/v1/auth/refresh', { body: { refresh_token: refreshToken } })
  if (data) return 'done'
  switch (error.code) {
    case 'SESSION_REVOKED': return 'signed-out'
    case 'INVALID_REFRESH_TOKEN': case 'REFRESH_TOKEN_REUSED': case 'SESSION_EXPIRED': return 'sign-in'
    case 'RATE_LIMITED': case 'OVERLOADED': case 'DATABASE_UNAVAILABLE': return 'retry-later'
    default: return 'sign-in'
  }
}

export async function me (accessToken: string): Promise<Next> {
  const { data, error, response } = await client.GET('/api/v1/users/me', { headers: { authorization: \`Bearer \${accessToken}\` } })
  if (data) return data.email_verified ? 'done' : 'fix-input'
  // The 401's challenge is declared: a client behind a proxy that drops the body reads it.
  const challenge: paths['/api/v1/users/me']['get']['responses'][401]['headers']['WWW-Authenticate'] = response.headers.get('www-authenticate') ?? ''
  if (error.code === 'ACCESS_TOKEN_EXPIRED') return 'refresh'
  if (error.code === 'SESSION_REVOKED' || error.code === 'INVALID_ACCESS_TOKEN' || error.code === 'AUTHENTICATION_REQUIRED') return challenge ? 'sign-in' : 'signed-out'
  return 'retry-later'
}

export async function signUp (email: string, password: string): Promise<Next> {
  const { error } = await client.POST('/api/v1/auth/signup', { body: { email, password } })
  if (!error) return 'done'
  if (error.code === 'EMAIL_TAKEN' || error.code === 'USERNAME_TAKEN' || error.code === 'WEAK_PASSWORD') return 'fix-input'
  if (error.code === 'VALIDATION_FAILED') return error.errors?.length ? 'fix-input' : 'retry-later'
  return 'retry-later'
}

export async function signOut (accessToken: string): Promise<Next> {
  const { error } = await client.POST('/api/v1/auth/logout', { headers: { authorization: \`Bearer \${accessToken}\` } })
  return !error || error.code === 'SESSION_REVOKED' ? 'signed-out' : 'retry-later'
}

/** A gateway's forward auth: the identity headers are declared on the 200. */
export async function forwardAuth (accessToken: string): Promise<string | null> {
  const { response } = await client.HEAD('/api/v1/auth/verify', { headers: { authorization: \`Bearer \${accessToken}\` } })
  type Identity = paths['/api/v1/auth/verify']['head']['responses'][200]['headers']
  const user: Identity['X-User-Id'] = response.headers.get('x-user-id') ?? ''
  const roles: Identity['X-User-Roles'] = response.headers.get('x-user-roles') ?? ''
  const session: Identity['X-Session-Id'] = response.headers.get('x-session-id') ?? ''
  return response.status === 200 ? [user, roles, session].join(' ') : null
}

/** Paged admin lists: \`limit\` has a default, so the query may be left out. */
export async function firstUsers (accessToken: string): Promise<number> {
  const { data } = await client.GET('/api/v1/admin/users', { headers: { authorization: \`Bearer \${accessToken}\` } })
  return data?.items.length ?? 0
}

export async function issuer (): Promise<string | null> {
  const { data } = await client.GET('/.well-known/openid-configuration')
  return data?.issuer ?? null
}
`

const PREAMBLE = `import createClient, { type MaybeOptionalInit } from 'openapi-fetch'
import type { paths } from './api.js'

const client = createClient<paths>({ baseUrl: 'http://localhost:8000' })

/** The default of an exhaustive switch: a code the client does not handle fails to compile here. */
const unhandled = (code: never): never => { throw new Error(\`unhandled code \${String(code)}\`) }
`

const CLIENT = `${PREAMBLE}\n${INTEGRATOR}\n${generatedClient()}`

/** Generates the types of `doc` into a fresh directory beside the client, and type-checks the client; returns tsc's outcome. */
async function compile (doc: Json, client = CLIENT): Promise<{ ok: boolean, output: string }> {
  const dir = tempDir(t)
  // openapi-fetch and its types, from this checkout.
  symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'), 'dir')
  writeFileSync(join(dir, 'api.d.ts'), astToString(await openapiTS(doc as OpenAPI3)))
  writeFileSync(join(dir, 'client.ts'), client)
  writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({
    compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', lib: ['ES2023', 'DOM'], types: [], strict: true, noEmit: true, skipLibCheck: true },
    files: ['client.ts']
  }))
  try {
    const { stdout } = await run(process.execPath, [TSC, '-p', join(dir, 'tsconfig.json')])
    return { ok: true, output: stdout }
  } catch (err) {
    return { ok: false, output: String((err as { stdout?: string }).stdout ?? err) }
  }
}

/** A copy of the document in which `change` edits the problem answer `status` of one operation (made its own first). */
function changed (path: string, method: string, status: string, change: (codes: string[]) => string[]): Json {
  const copy = structuredClone(document)
  const operation = copy.paths[path][method]
  const response = structuredClone(operation.responses[status].$ref ? copy.components.responses[operation.responses[status].$ref.split('/').pop()] : operation.responses[status])
  const code = response.content['application/problem+json'].schema.allOf[1].properties.code
  code.enum = change(code.enum)
  operation.responses[status] = response
  return copy
}

t.test('the document lists operations with codes to switch on', async (t) => {
  t.ok(operations.length >= 40, `${operations.length} operations, HEAD included`)
  for (const { path, method, operation } of operations.filter((o) => o.method !== 'head')) {
    t.ok(codesOf(operation).length > 0, `${method.toUpperCase()} ${path}: ${codesOf(operation).join(', ')}`)
  }
})

t.test('a client typed from the document compiles: every operation called, every code handled', async (t) => {
  const { ok, output } = await compile(document)
  t.ok(ok, ok ? 'tsc --noEmit passes' : `tsc --noEmit fails:\n${output}`)
})

t.test('the compile fails when the document drops a code the client handles', async (t) => {
  const { ok, output } = await compile(changed('/api/v1/auth/refresh', 'post', '401', (codes) => codes.filter((c) => c !== 'SESSION_REVOKED')))
  t.notOk(ok, 'tsc --noEmit fails')
  t.match(output, /"SESSION_REVOKED"/, 'on SESSION_REVOKED')
  t.match(output, /client\.ts\(\d+,\d+\): error TS2678/, 'as a case the type cannot hold (TS2678)')
})

t.test('the compile fails when the document adds a code the client does not handle', async (t) => {
  const doc = changed('/api/v1/auth/login', 'post', '401', (codes) => [...codes, 'SOMETHING_NEW'])
  // A new code is in the catalogue, and so in Problem's list of every code, as well.
  doc.components.schemas.Problem.properties.code.enum.push('SOMETHING_NEW')
  const { ok, output } = await compile(doc)
  t.notOk(ok, 'tsc --noEmit fails')
  t.match(output, /"SOMETHING_NEW"' is not assignable to parameter of type 'never'/, 'in the exhaustive switch of login')
})
