import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import type { FastifyRequest } from 'fastify'
import { actorOf } from '../../../../plugins/admin.js'
import { RoleCreateSchema, RoleParamsSchema, RoleUpdateSchema } from '../../../../schemas/admin.js'
import { problems } from '../../../../schemas/problem.js'

const roles: FastifyPluginAsyncTypebox = async (fastify) => {
  const record = (request: FastifyRequest, type: string, role: string, detail: Record<string, unknown> = {}) => {
    const { userId, client } = actorOf(request)
    return fastify.audit.record({ type, userId, client, detail: { role, ...detail } })
  }

  fastify.get('/roles', {
    config: { auth: 'required' },
    preHandler: fastify.requirePermission('users:read'),
    schema: {
      operationId: 'adminListRoles',
      tags: ['admin'],
      summary: 'Roles and the permissions each grants',
      response: { 200: Type.Array(Type.Ref('Role')), ...problems(403) }
    }
  }, async () => fastify.roles.list())

  fastify.post('/roles', {
    config: { auth: 'required' },
    preHandler: fastify.requirePermission('roles:write'),
    schema: {
      operationId: 'adminCreateRole',
      tags: ['admin'],
      summary: 'Create a role',
      body: RoleCreateSchema,
      response: { 201: Type.Ref('Role'), ...problems(400, 403, 409) }
    }
  }, async (request, reply) => {
    const role = { name: request.body.name, description: request.body.description ?? '', permissions: [...request.body.permissions].sort() }
    await fastify.roles.create(role)
    await record(request, 'role_created', role.name, { permissions: role.permissions })
    return reply.code(201).send(role)
  })

  fastify.put('/roles/:name', {
    config: { auth: 'required' },
    preHandler: fastify.requirePermission('roles:write'),
    schema: {
      operationId: 'adminUpdateRole',
      tags: ['admin'],
      summary: 'Replace a role\'s description and permissions',
      description: 'Takes effect for every holder within seconds: permissions are looked up from the role, not stored in tokens. `admin` keeps every permission.',
      params: RoleParamsSchema,
      body: RoleUpdateSchema,
      response: { 200: Type.Ref('Role'), ...problems(400, 403, 404) }
    }
  }, async (request) => {
    const role = { name: request.params.name, description: request.body.description ?? '', permissions: [...request.body.permissions].sort() }
    await fastify.roles.update(role)
    await record(request, 'role_updated', role.name, { permissions: role.permissions })
    return role
  })

  fastify.delete('/roles/:name', {
    config: { auth: 'required' },
    preHandler: fastify.requirePermission('roles:write'),
    schema: {
      operationId: 'adminDeleteRole',
      tags: ['admin'],
      summary: 'Delete a role (not `user` or `admin`); its holders lose it and their sessions end',
      params: RoleParamsSchema,
      response: { 204: Type.Null({ description: 'Deleted' }), ...problems(400, 403, 404) }
    }
  }, async (request, reply) => {
    await fastify.admin.deleteRole(actorOf(request), request.params.name)
    return reply.code(204).send(null)
  })
}

export default roles
