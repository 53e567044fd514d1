import { Type } from 'typebox'

const Status = Type.Union([Type.Literal('ok'), Type.Literal('unavailable')])

export const HealthSchema = Type.Object({
  status: Type.Union([Type.Literal('ok'), Type.Literal('degraded'), Type.Literal('unavailable')], {
    description: '`ok`; `degraded` (ready, but Redis is away: limits count per instance); `unavailable` (not ready: the database is away).'
  }),
  service: Type.String(),
  version: Type.String(),
  database: Type.Optional(Status),
  redis: Type.Optional(Status)
}, { $id: 'Health', title: 'Health', additionalProperties: false })

export const JwksSchema = Type.Object({
  keys: Type.Array(Type.Object({
    kty: Type.String(),
    kid: Type.String(),
    use: Type.String(),
    alg: Type.String(),
    n: Type.Optional(Type.String()),
    e: Type.Optional(Type.String()),
    crv: Type.Optional(Type.String()),
    x: Type.Optional(Type.String()),
    y: Type.Optional(Type.String())
  }))
}, { additionalProperties: false })
