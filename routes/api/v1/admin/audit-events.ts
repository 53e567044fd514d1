import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { AuditQuerySchema, page } from '../../../../schemas/admin.js'
import { problems } from '../../../../schemas/problem.js'
import { Errors } from '../../../../services/errors.js'

const auditEvents: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.get('/audit-events', {
    config: { auth: 'required', permission: 'audit:read' },
    schema: {
      operationId: 'adminListAuditEvents',
      tags: ['admin'],
      summary: 'The audit trail, newest first, a page at a time',
      description: 'Filters: `user_id`, `type`, `from` (inclusive), `to` (exclusive).',
      querystring: AuditQuerySchema,
      response: { 200: page(Type.Ref('AuditEvent'), 'A page of events'), ...problems(Errors.InvalidCursor) }
    }
  }, async (request) => {
    const { limit, cursor, user_id: userId, type, from, to } = request.query
    return fastify.admin.listEvents({ userId, type, from, to }, limit, cursor)
  })
}

export default auditEvents
