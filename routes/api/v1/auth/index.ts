import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { Type } from 'typebox'
import { LoginBodySchema, LogoutBodySchema, RefreshBodySchema, SignupBodySchema } from '../../../../schemas/auth.js'
import { always, problems } from '../../../../schemas/problem.js'
import { bearerToken } from '../../../../services/access-tokens.js'
import { clientOf } from '../../../../services/clients.js'
import { Errors } from '../../../../services/errors.js'

/**
 * The level `X-Required-AAL` demands (1 when absent). Read here rather than by a
 * headers schema, which would validate every header of every forward-auth
 * request; a value other than 1 or 2 is refused, never taken for 1.
 */
function requiredAal (header: string | string[] | undefined): number {
  if (header === undefined) return 1
  if (header === '1' || header === '2') return Number(header)
  throw Object.assign(new Error('headers/x-required-aal must be 1 or 2'), {
    statusCode: 400,
    validationContext: 'headers',
    validation: [{ keyword: 'enum', instancePath: '/x-required-aal', schemaPath: '#', params: {}, message: 'must be 1 or 2' }]
  })
}

const auth: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.post('/signup', {
    config: { rateLimit: fastify.limits.signup, outcome: 'signups' },
    schema: {
      operationId: 'signup',
      tags: ['auth'],
      summary: 'Create an account and sign in',
      description: 'With REQUIRE_EMAIL_VERIFICATION=true the answer is 202, the same for a new and a taken address; sign in once the address is confirmed.',
      body: SignupBodySchema,
      response: {
        201: Type.Ref('TokenResponse', { description: 'Signed up and signed in: the account and the tokens of its first session' }),
        202: Type.Ref('Accepted'),
        ...problems(Errors.WeakPassword, Errors.EmailTaken, Errors.UsernameTaken)
      }
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
      description: 'A wrong password, an unknown account and a disabled account all get the same 401 INVALID_CREDENTIALS, in about the same time. For an account with a second factor the right password gives no tokens yet: `mfa_required` and an `mfa_token` for POST /api/v1/auth/mfa/verify (or `mfa_enrolment_required` when its role must enrol one first, MFA_REQUIRED_ROLES).',
      body: LoginBodySchema,
      response: {
        200: Type.Union([Type.Ref('TokenResponse'), Type.Ref('MfaRequired'), Type.Ref('MfaEnrolmentRequired')], { description: 'Signed in (the tokens of a new session), or the second step comes next' }),
        ...problems(Errors.InvalidCredentials, Errors.EmailNotVerified)
      }
    }
  }, async (request) => fastify.accounts.login(request.body, clientOf(request)))

  fastify.post('/refresh', {
    config: { rateLimit: fastify.limits.refresh, outcome: 'refreshes' },
    schema: {
      operationId: 'refresh',
      tags: ['auth'],
      summary: 'Trade a refresh token for a new pair (the old one stops working)',
      body: RefreshBodySchema,
      response: {
        200: Type.Ref('TokenResponse', { description: 'A new pair: the refresh token sent no longer works' }),
        ...problems(Errors.InvalidRefreshToken, Errors.RefreshTokenReused, Errors.SessionExpired, Errors.SessionRevoked)
      }
    }
  }, async (request) => {
    const { tokens, user } = await fastify.sessions.refresh(request.body.refresh_token, clientOf(request))
    return { ...tokens, user: fastify.accounts.present(user) }
  })

  // Forward auth for gateways (nginx auth_request, Traefik ForwardAuth, Envoy ext_authz): no database read.
  const verified = {
    // No per-address limit: a gateway asks for every request it passes, all from its own address,
    // and the check touches no database and no Redis (a limit counter would be a Redis call each).
    config: { auth: 'required' as const, rateLimit: false as const, database: false as const },
    response: {
      200: Type.Object({
        user_id: Type.String({ format: 'uuid' }),
        session_id: Type.String({ format: 'uuid' }),
        roles: Type.Array(Type.String()),
        aal: Type.Integer({ minimum: 1, maximum: 2, description: 'The session\'s assurance level: 2 once it passed a second factor.' })
      }, {
        additionalProperties: false,
        description: 'A valid, unrevoked access token: who it is, in the body and in headers for the gateway to pass on',
        headers: {
          'X-User-Id': always(Type.String({ format: 'uuid', description: 'The user\'s id (`sub`).' })),
          'X-User-Roles': always(Type.String({ description: 'The user\'s roles, comma-separated.' })),
          'X-Session-Id': always(Type.String({ format: 'uuid', description: 'The session\'s id (`sid`).' })),
          'X-User-Aal': always(Type.String({ description: 'The session\'s assurance level, `1` or `2`.' }))
        }
      })
    },
    // A route may demand a second factor: `?aal=2`, or the header for gateways that cannot add a query.
    querystring: Type.Object({ aal: Type.Optional(Type.Integer({ minimum: 1, maximum: 2, description: '2: refuse (401 MFA_REQUIRED) a session that has not passed a second factor.' })) }),
    handler: async (request: FastifyRequest, reply: FastifyReply) => {
      const { userId, sessionId, roles, aal } = request.auth!
      const required = Math.max((request.query as { aal?: number }).aal ?? 1, requiredAal(request.headers['x-required-aal']))
      if (aal < required) throw new Errors.MfaRequiredHere()
      reply.header('x-user-id', userId).header('x-user-roles', roles.join(',')).header('x-session-id', sessionId).header('x-user-aal', String(aal))
      return { user_id: userId, session_id: sessionId, roles, aal }
    }
  }
  fastify.get('/verify', {
    config: verified.config,
    schema: {
      operationId: 'verify',
      tags: ['auth'],
      summary: 'Check a bearer token: 200 with identity headers, or 401',
      description: 'Answers 200 with `X-User-Id`, `X-User-Roles` (comma-separated) and `X-Session-Id` for a valid, unrevoked access token. Checks the signature, expiry and the revocation list in memory; reads no database. Every other method but OPTIONS answers the same (Envoy\'s ext_authz asks with the client\'s). `?aal=2`, or the header `X-Required-AAL: 2` for gateways that cannot add a query (any other value is 400), refuses a session that has not passed a second factor: 401 `MFA_REQUIRED`.',
      querystring: verified.querystring,
      response: { ...verified.response, ...problems(Errors.MfaRequiredHere) }
    }
  }, verified.handler)
  // The same check for the methods a gateway may forward as they came (not OPTIONS: CORS preflights); documented once, above.
  fastify.route({ method: ['POST', 'PUT', 'PATCH', 'DELETE'], url: '/verify', config: verified.config, schema: { hide: true, querystring: verified.querystring, response: verified.response }, handler: verified.handler })

  fastify.post('/logout', {
    schema: {
      operationId: 'logout',
      tags: ['auth'],
      summary: 'End the session of a bearer token (expired ones too) or of a refresh token',
      description: 'Send the bearer access token, even an expired one (clients sign out after being idle), and/or `{ "refresh_token": … }` as the original service\'s clients do; an empty body is fine. 204 once a session is ended. A bearer token that ends no session (not ours, or its session already over) is 401, unless the refresh token ended one; a refresh token alone is always 204, whether or not it ended anything.',
      // The bearer is optional here, and read by the handler itself: an expired one is accepted.
      security: [{}, { bearerAuth: [] }],
      body: LogoutBodySchema,
      response: { 204: Type.Null({ description: 'Signed out' }), ...problems(Errors.InvalidAccessToken, Errors.SessionRevoked) }
    },
    // A bearer-only logout has no body at all.
    preValidation: async (request) => { request.body ??= {} }
  }, async (request, reply) => {
    const header = request.headers.authorization
    const accessToken = header === undefined ? undefined : bearerToken(header) ?? ''
    await fastify.sessions.signOut({ accessToken, refreshToken: request.body?.refresh_token }, clientOf(request))
    return reply.code(204).send(null)
  })
}

export default auth
