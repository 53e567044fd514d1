import { STATUS_CODES } from 'node:http'
import { Type, type Static, type TSchema } from 'typebox'

/** RFC 9457 problem details, the body of every error answer. */
export const ProblemSchema = Type.Object({
  type: Type.String({ description: 'A URI naming the problem type; `about:blank` when only the status matters.' }),
  title: Type.String(),
  status: Type.Integer({ minimum: 400, maximum: 599 }),
  detail: Type.String(),
  code: Type.String({ pattern: '^[A-Z][A-Z0-9_]*$', description: 'Stable machine-readable code.' }),
  request_id: Type.String(),
  errors: Type.Optional(Type.Array(Type.Object({
    field: Type.String({ description: 'JSON pointer of the offending input, e.g. `/body/email`.' }),
    message: Type.String()
  })))
}, { $id: 'Problem', title: 'Problem', additionalProperties: false })

export type Problem = Static<typeof ProblemSchema>

/** The media type of every error answer (RFC 9457). */
export const PROBLEM_JSON = 'application/problem+json'

/**
 * An error class made by @fastify/error (services/errors.ts), as far as the
 * document needs it: its instances' code, status and message. Typed by its
 * shape, so this file imports nothing of the service.
 */
export type ErrorClass = new () => { code: string, statusCode?: number, message: string }

/**
 * The headers of an answer, by name, as the document shows them: the
 * schema's description is the header's, and `required: true` in it says
 * every such answer carries the header (plugins/external/docs.ts moves it
 * out of the schema, into the header).
 */
export type ResponseHeaders = Record<string, TSchema>

/** A header every such answer carries. */
export const always = <T extends TSchema>(header: T): T => ({ ...header, required: true })

const RetryAfter = always(Type.Integer({ minimum: 1, description: 'Seconds to wait before trying again.' }))

/** The headers the error handler (plugins/external/errors.ts) gives every problem of a status. */
const PROBLEM_HEADERS: Record<string, ResponseHeaders> = {
  401: {
    'WWW-Authenticate': always(Type.String({
      description: 'The RFC 6750 challenge, `Bearer …`. A refused access token adds `error="invalid_token"` and `error_description`, so a client or gateway that drops the body still knows to refresh or to sign in again.'
    }))
  },
  429: { 'Retry-After': RetryAfter },
  503: { 'Retry-After': RetryAfter }
}

type Entry = Record<string, unknown>
type Responses = Record<string, unknown>
type Codes = ReadonlyMap<string, string>

/** The codes (with their messages) of the problem answers built here; an entry is never changed, only replaced. */
const codesOf = new WeakMap<object, Codes>()

/** The message of an error class, its `%s` placeholders shown as `…`. */
const messageOf = (error: InstanceType<ErrorClass>) => error.message.replaceAll('%s', '…')

/** The problem+json answer of one status whose `code` is one of `codes`, with the headers that come with it. */
function problemAnswer (status: string, codes: Codes, headers: ResponseHeaders, others: Record<string, unknown> = {}, otherwise?: string): Entry {
  const sorted = [...codes.keys()].sort()
  const list = sorted.map((code) => `- \`${code}\`: ${codes.get(code)}`).join('\n')
  const description = `${otherwise ? `${otherwise}\n\nOr a problem: ` : ''}${STATUS_CODES[status] ?? 'Error'}, with one of these \`code\`s:\n\n${list}`
  const schema = {
    allOf: [Type.Ref('Problem'), { type: 'object', required: ['code'], properties: { code: { type: 'string', enum: sorted } } }]
  }
  const entry = { description, headers, content: { ...others, [PROBLEM_JSON]: { schema } } }
  codesOf.set(entry, codes)
  return entry
}

/** A response entry with more headers; a problem answer stays one. */
function withHeadersOf (entry: Entry, headers: ResponseHeaders): Entry {
  const updated = { ...entry, headers: { ...(entry.headers as ResponseHeaders | undefined), ...headers } }
  const codes = codesOf.get(entry)
  if (codes) codesOf.set(updated, codes)
  return updated
}

/** `existing` (a problem answer, a plain `Problem` reference, or another schema of the status) with `errors` among its codes. */
function merged (status: string, existing: unknown, errors: ReadonlyArray<InstanceType<ErrorClass>>, headers: ResponseHeaders): Entry {
  const entry = (existing ?? {}) as Entry
  const codes = new Map(codesOf.get(entry))
  for (const error of errors) codes.set(error.code, messageOf(error))
  const allHeaders = { ...(entry.headers as ResponseHeaders | undefined), ...PROBLEM_HEADERS[status], ...headers }
  if (existing === undefined || codesOf.has(entry) || entry.$ref === 'Problem') return problemAnswer(status, codes, allHeaders)
  // Another answer of the same status (a JSON body): both, told apart by their media type.
  const { headers: _headers, description: _description, ...plain } = entry
  const content = (entry.content as Record<string, unknown> | undefined) ?? { 'application/json': { schema: plain } }
  const { [PROBLEM_JSON]: _previous, ...others } = content
  return problemAnswer(status, codes, allHeaders, others, entry.description as string | undefined)
}

/**
 * Where declared answers wait for the document: a key of the route's
 * `response` that Fastify does not see (it reads string keys), so it compiles
 * no serializer for them. A problem needs none: the error handler builds it
 * field by field, and it is sent as built.
 */
const DECLARED = Symbol('declared answers')

/** Errors among a route's answers (with their headers), or headers on the answers of the statuses `which` accepts. */
interface Declaration { errors: readonly ErrorClass[], headers: ResponseHeaders, which?: (status: number) => boolean }
type Declared = Responses & { [DECLARED]?: readonly Declaration[] }

function declare<S extends object | undefined> (schema: S, declaration: Declaration): S {
  const route = (schema ?? {}) as { hide?: boolean, response?: Declared }
  if (route.hide) return schema
  const response: Declared = route.response ?? {}
  return { ...route, response: { ...response, [DECLARED]: [...(response[DECLARED] ?? []), declaration] } } as S
}

/**
 * A route schema with these errors among its answers, for the document: for
 * each of their statuses, a problem+json answer whose `code` is one of the
 * codes declared for that status (by the route and by every plugin that
 * answers on it), with the headers that come with them. Hidden routes are
 * left as they are.
 */
export function withProblems<S extends object | undefined> (schema: S, errors: readonly ErrorClass[], headers: ResponseHeaders = {}): S {
  return errors.length === 0 ? schema : declare(schema, { errors, headers })
}

/** A route schema whose answers of the statuses `which` accepts carry these headers too, for the document. */
export function withHeaders<S extends object | undefined> (schema: S, headers: ResponseHeaders, which: (status: number) => boolean): S {
  return declare(schema, { errors: [], headers, which })
}

/**
 * The answers of the errors a route's own code throws, spread into its
 * schema's `response`: `...problems(Errors.EmailTaken, Errors.WeakPassword)`.
 * The plugins add what they answer themselves (validation and the body
 * parser, authentication, permissions, rate limits, load shedding, the
 * database away).
 */
export function problems (...errors: ErrorClass[]): Responses {
  return { [DECLARED]: [{ errors, headers: {} }] } as Declared
}

/**
 * The route schema as the document shows it (plugins/external/docs.ts): its
 * declared answers made response entries, each problem+json answer listing
 * its codes, with their headers.
 */
export function documented<S extends object | undefined> (schema: S): S {
  const route = (schema ?? {}) as { response?: Declared }
  const declarations = route.response?.[DECLARED] ?? []
  if (declarations.length === 0) return schema
  const { [DECLARED]: _declared, ...answers } = route.response!
  let response: Responses = answers
  for (const { errors, headers, which } of declarations) {
    if (which) {
      response = Object.fromEntries(Object.entries(response).map(([status, entry]) => [status, which(Number(status)) ? withHeadersOf(entry as Entry, headers) : entry]))
      continue
    }
    const byStatus = new Map<string, Array<InstanceType<ErrorClass>>>()
    for (const ErrorOf of errors) {
      const error = new ErrorOf()
      const status = String(error.statusCode ?? 500)
      byStatus.set(status, [...(byStatus.get(status) ?? []), error])
    }
    for (const [status, those] of byStatus) response[status] = merged(status, response[status], those, headers)
  }
  return { ...route, response } as S
}
