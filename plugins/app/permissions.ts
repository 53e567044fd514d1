import type { FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { withProblems } from '../../schemas/problem.js'
import { Errors } from '../../services/errors.js'
import type { Permission } from '../../schemas/permissions.js'

declare module 'fastify' {
  interface FastifyContextConfig {
    /**
     * The permission a caller needs (one of its token's roles must grant it):
     * 403 before the body, path or query is validated. Needs `auth: 'required'`.
     * Rules about the target (only an admin changes an admin) are the admin service's.
     */
    permission?: Permission
    /**
     * A sensitive change of the caller's own account: when the account has a
     * second factor, the session must have passed it (aal2), else 403
     * MFA_REQUIRED, before the input is looked at. Needs `auth: 'required'`.
     */
    stepUp?: boolean
  }
}

/** Routes declare their permission (and step-up) in config; this guards them before validation and documents the 403. */
export default fp(async function permissions (fastify) {
  const { roles, mfa } = fastify
  fastify.addHook('onRoute', (route) => {
    if (!route.config?.stepUp) return
    if (route.config.auth !== 'required') throw new Error(`${route.method} ${route.url}: a step-up needs auth: 'required'`)
    route.schema = withProblems(route.schema, [Errors.MfaRequired])
    const stepUp = async (request: FastifyRequest) => mfa.requireAssurance(request.auth!.userId, request.auth!.aal)
    route.preValidation = [stepUp, ...[route.preValidation ?? []].flat()]
  })
  fastify.addHook('onRoute', (route) => {
    const permission = route.config?.permission
    if (!permission) return
    if (route.config?.auth !== 'required') throw new Error(`${route.method} ${route.url}: a permission needs auth: 'required'`)
    route.schema = withProblems(route.schema, [Errors.Forbidden])
    // A callback, not a promise: it runs on every guarded request. Authentication ran in onRequest.
    const guard = (request: FastifyRequest, _reply: FastifyReply, done: (err?: Error) => void) => {
      if (roles.grants(request.auth?.roles ?? [], permission)) return done()
      done(new Errors.Forbidden())
    }
    // First of the preValidation hooks: nothing about the input is looked at before the caller is allowed.
    route.preValidation = [guard, ...[route.preValidation ?? []].flat()]
  })
}, { name: 'permissions', dependencies: ['services', 'authenticate'] })
