import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { LoginBodySchema, LogoutBodySchema, RefreshBodySchema, SignupBodySchema } from '../../../../schemas/auth.js'
import { problems } from '../../../../schemas/problem.js'
import { clientOf } from '../../../../services/clients.js'

const auth: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.post('/signup', {
    config: { rateLimit: fastify.limits.signup, outcome: 'signups' },
    schema: {
      operationId: 'signup',
      tags: ['auth'],
      summary: 'Create an account and sign in',
      description: 'With REQUIRE_EMAIL_VERIFICATION=true the answer is 202, the same for a new and a taken address; sign in once the address is confirmed.',
      body: SignupBodySchema,
      response: { 201: Type.Ref('TokenResponse'), 202: Type.Ref('Accepted'), ...problems(400, 409) }
    }
  }, async (request, reply) => {
    const signedIn = await fastify.accounts.signup(request.body, clientOf(request))
    if (signedIn) return reply.code(201).send(signedIn)
    return reply.code(202).send({ message: 'Check your mail to confirm your address, then sign in.' })
  })

  fastify.post('/login', {
    config: { rateLimit: fastify.limits.login, outcome: 'logins' },
    schema: {
      operationId: 'login',
      tags: ['auth'],
      summary: 'Sign in with email or username and password',
      description: 'A wrong password, an unknown account and a disabled account all get the same 401 INVALID_CREDENTIALS, in about the same time.',
      body: LoginBodySchema,
      response: { 200: Type.Ref('TokenResponse'), ...problems(400, 401, 403) }
    }
  }, async (request) => fastify.accounts.login(request.body, clientOf(request)))

  fastify.post('/refresh', {
    config: { rateLimit: fastify.limits.refresh, outcome: 'refreshes' },
    schema: {
      operationId: 'refresh',
      tags: ['auth'],
      summary: 'Trade a refresh token for a new pair (the old one stops working)',
      body: RefreshBodySchema,
      response: { 200: Type.Ref('TokenResponse'), ...problems(400, 401) }
    }
  }, async (request) => {
    const { tokens, user } = await fastify.sessions.refresh(request.body.refresh_token, clientOf(request))
    return { ...tokens, user: fastify.accounts.present(user) }
  })

  // Forward auth for gateways (nginx auth_request, Traefik ForwardAuth, Envoy ext_authz): no database read.
  fastify.get('/verify', {
    // No per-address limit: a gateway asks for every request it passes, all from its own address,
    // and the check touches no database and no Redis (a limit counter would be a Redis call each).
    config: { auth: 'required', rateLimit: false },
    schema: {
      operationId: 'verify',
      tags: ['auth'],
      summary: 'Check a bearer token: 200 with identity headers, or 401',
      description: 'Answers 200 with `X-User-Id`, `X-User-Roles` (comma-separated) and `X-Session-Id` for a valid, unrevoked access token. Checks the signature, expiry and the revocation list in memory; reads no database.',
      response: {
        200: Type.Object({
          user_id: Type.String({ format: 'uuid' }),
          session_id: Type.String({ format: 'uuid' }),
          roles: Type.Array(Type.String())
        }, { additionalProperties: false })
      }
    }
  }, async (request, reply) => {
    const { userId, sessionId, roles } = request.auth!
    reply.header('x-user-id', userId).header('x-user-roles', roles.join(',')).header('x-session-id', sessionId)
    return { user_id: userId, session_id: sessionId, roles }
  })

  fastify.post('/logout', {
    config: { auth: 'optional' },
    schema: {
      operationId: 'logout',
      tags: ['auth'],
      summary: 'End the session of a bearer token or of a refresh token',
      description: 'Send the bearer access token, or `{ "refresh_token": … }` as the original service\'s clients do. Always 204, whether or not anything was ended.',
      body: LogoutBodySchema,
      response: { 204: Type.Null({ description: 'Signed out' }), ...problems(400) }
    },
    // A bearer-only logout has no body at all.
    preValidation: async (request) => { request.body ??= {} }
  }, async (request, reply) => {
    const client = clientOf(request)
    if (request.auth) await fastify.sessions.end(request.auth.userId, request.auth.sessionId, 'logout', client)
    if (request.body?.refresh_token) await fastify.sessions.endByRefreshToken(request.body.refresh_token, 'logout', client)
    return reply.code(204).send(null)
  })
}

export default auth
