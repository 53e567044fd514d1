import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { actorOf } from '../../../../services/admin.js'
import { AdminUserPatchSchema, page, UserIdParamsSchema, UserListQuerySchema } from '../../../../schemas/admin.js'
import { problems } from '../../../../schemas/problem.js'
import { Errors } from '../../../../services/errors.js'

const users: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.get('/users', {
    config: { auth: 'required', permission: 'users:read' },
    schema: {
      operationId: 'adminListUsers',
      tags: ['admin'],
      summary: 'List users, oldest first, a page at a time',
      description: 'Filters: `email_prefix`, `role`, `disabled`. The order (created_at, id) is stable, and pages follow a cursor, so rows added meanwhile neither shift nor repeat a page.',
      querystring: UserListQuerySchema,
      response: { 200: page(Type.Ref('AdminUser'), 'A page of users'), ...problems(Errors.InvalidCursor) }
    }
  }, async (request) => {
    const { limit, cursor, email_prefix: emailPrefix, role, disabled } = request.query
    return fastify.admin.listUsers({ emailPrefix, role, disabled }, limit, cursor)
  })

  fastify.get('/users/:id', {
    config: { auth: 'required', permission: 'users:read' },
    schema: {
      operationId: 'adminGetUser',
      tags: ['admin'],
      summary: 'One user',
      params: UserIdParamsSchema,
      response: { 200: Type.Ref('AdminUser', { description: 'The user' }), ...problems(Errors.UserNotFound) }
    }
  }, async (request) => fastify.admin.getUser(request.params.id))

  fastify.patch('/users/:id', {
    config: { auth: 'required', permission: 'users:write' },
    schema: {
      operationId: 'adminUpdateUser',
      tags: ['admin'],
      summary: 'Change a user\'s roles, disabled flag or email_verified',
      description: 'Disabling a user, or taking a role away, ends all their sessions at once (access tokens included). ' +
        'You change only an account whose every permission you hold, and grant or take away only roles whose permissions you hold; ' +
        'nobody changes their own roles (403 `INSUFFICIENT_PRIVILEGE`). You cannot disable yourself (400 `CANNOT_MODIFY_SELF`).',
      params: UserIdParamsSchema,
      body: AdminUserPatchSchema,
      response: {
        200: Type.Ref('AdminUser', { description: 'Changed: the user as it is now' }),
        ...problems(Errors.CannotModifySelf, Errors.UnknownRole, Errors.InsufficientPrivilege, Errors.UserNotFound)
      }
    }
  }, async (request) => fastify.admin.updateUser(actorOf(request), request.params.id, request.body))

  fastify.delete('/users/:id', {
    config: { auth: 'required', permission: 'users:write' },
    schema: {
      operationId: 'adminDeleteUser',
      tags: ['admin'],
      summary: 'Delete a user and end their sessions at once',
      description: 'Only an account whose every permission you hold (else 403 `INSUFFICIENT_PRIVILEGE`); not yourself (400 `CANNOT_MODIFY_SELF`).',
      params: UserIdParamsSchema,
      response: { 204: Type.Null({ description: 'Deleted' }), ...problems(Errors.CannotModifySelf, Errors.InsufficientPrivilege, Errors.UserNotFound) }
    }
  }, async (request, reply) => {
    await fastify.admin.deleteUser(actorOf(request), request.params.id)
    return reply.code(204).send(null)
  })

  fastify.delete('/users/:id/sessions', {
    config: { auth: 'required', permission: 'sessions:revoke' },
    schema: {
      operationId: 'adminEndUserSessions',
      tags: ['admin'],
      summary: 'End every session of a user, at once',
      description: 'Only an account whose every permission you hold (else 403 `INSUFFICIENT_PRIVILEGE`).',
      params: UserIdParamsSchema,
      response: { 204: Type.Null({ description: 'Ended' }), ...problems(Errors.InsufficientPrivilege, Errors.UserNotFound) }
    }
  }, async (request, reply) => {
    await fastify.admin.endSessions(actorOf(request), request.params.id)
    return reply.code(204).send(null)
  })

  fastify.delete('/users/:id/mfa', {
    config: { auth: 'required', permission: 'users:write' },
    schema: {
      operationId: 'adminResetUserMfa',
      tags: ['admin'],
      summary: 'Remove a user\'s second factors and recovery codes (a lost phone); their sessions end',
      description: 'Only an account whose every permission you hold (else 403 `INSUFFICIENT_PRIVILEGE`). The user then signs in with the password alone, and can enrol again.',
      params: UserIdParamsSchema,
      response: { 204: Type.Null({ description: 'Reset' }), ...problems(Errors.CannotModifySelf, Errors.InsufficientPrivilege, Errors.UserNotFound, Errors.MfaNotEnrolled) }
    }
  }, async (request, reply) => {
    await fastify.admin.resetMfa(actorOf(request), request.params.id)
    return reply.code(204).send(null)
  })
}

export default users
