import { Type, type Static } from 'typebox'

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

/** A response schema entry for each listed status, all problem+json. */
export function problems (...statuses: number[]) {
  return Object.fromEntries(statuses.map((status) => [status, Type.Ref('Problem')]))
}
