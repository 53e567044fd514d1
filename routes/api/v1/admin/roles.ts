import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { actorOf } from '../../../../services/admin.js'
import { RoleCreateSchema, RoleParamsSchema, RoleUpdateSchema } from '../../../../schemas/admin.js'
import { problems } from '../../../../schemas/problem.js'
import { Errors } from '../../../../services/errors.js'

const roles: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.get('/roles', {
    config: { auth: 'required', permission: 'users:read' },
    schema: {
      operationId: 'adminListRoles',
      tags: ['admin'],
      summary: 'Roles and the permissions each grants',
      response: { 200: Type.Array(Type.Ref('Role'), { description: 'Every role' }) }
    }
  }, async () => fastify.roles.list())

  fastify.post('/roles', {
    config: { auth: 'required', permission: 'roles:write' },
    schema: {
      operationId: 'adminCreateRole',
      tags: ['admin'],
      summary: 'Create a role',
      description: 'Only with permissions you hold yourself (else 403 `INSUFFICIENT_PRIVILEGE`).',
      body: RoleCreateSchema,
      response: { 201: Type.Ref('Role', { description: 'Created' }), ...problems(Errors.UnknownPermission, Errors.InsufficientPrivilege, Errors.RoleExists) }
    }
  }, async (request, reply) => {
    const role = { name: request.body.name, description: request.body.description ?? '', permissions: [...request.body.permissions].sort() }
    return reply.code(201).send(await fastify.admin.createRole(actorOf(request), role))
  })

  fastify.put('/roles/:name', {
    config: { auth: 'required', permission: 'roles:write' },
    schema: {
      operationId: 'adminUpdateRole',
      tags: ['admin'],
      summary: 'Replace a role\'s description and permissions',
      description: 'Takes effect for every holder within seconds: permissions are looked up from the role, not stored in tokens. ' +
        '`user` and `admin` cannot be edited (400 `ROLE_PROTECTED`). You edit only a role you do not hold, and only when you hold every permission it carries, ' +
        'before and after, and every permission its holders hold (else 403 `INSUFFICIENT_PRIVILEGE`).',
      params: RoleParamsSchema,
      body: RoleUpdateSchema,
      response: {
        200: Type.Ref('Role', { description: 'Replaced: the role as it is now' }),
        ...problems(Errors.RoleProtected, Errors.UnknownPermission, Errors.InsufficientPrivilege, Errors.RoleNotFound)
      }
    }
  }, async (request) => {
    const role = { name: request.params.name, description: request.body.description ?? '', permissions: [...request.body.permissions].sort() }
    return fastify.admin.updateRole(actorOf(request), role)
  })

  fastify.delete('/roles/:name', {
    config: { auth: 'required', permission: 'roles:write' },
    schema: {
      operationId: 'adminDeleteRole',
      tags: ['admin'],
      summary: 'Delete a role (not `user` or `admin`); its holders lose it and their sessions end',
      description: 'You delete only a role you do not hold, and only when you hold every permission it carries and every permission its holders hold (else 403 `INSUFFICIENT_PRIVILEGE`).',
      params: RoleParamsSchema,
      response: { 204: Type.Null({ description: 'Deleted' }), ...problems(Errors.RoleProtected, Errors.InsufficientPrivilege, Errors.RoleNotFound) }
    }
  }, async (request, reply) => {
    await fastify.admin.deleteRole(actorOf(request), request.params.name)
    return reply.code(204).send(null)
  })
}

export default roles
