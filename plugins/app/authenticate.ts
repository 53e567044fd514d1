import type { FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { withProblems } from '../../schemas/problem.js'
import { bearerToken } from '../../services/access-tokens.js'
import { Errors } from '../../services/errors.js'

declare module 'fastify' {
  interface FastifyRequest {
    /** Who made the request, once a bearer token has been verified. */
    auth: Auth | null
  }
  interface FastifyContextConfig {
    /**
     * `required`: 401 without a valid bearer token. `bearer-or-mfa-token`: a
     * valid bearer token, or the body's `mfa_token` of a sign-in's second
     * step (checked by the route's service); neither is a 401 before the body
     * is validated, and a token sent and refused is a 401 too.
     */
    auth?: 'required' | 'bearer-or-mfa-token'
  }
}

export interface Auth {
  userId: string
  sessionId: string
  roles: string[]
  /** The session's assurance level: 1 (a password), 2 (and a second factor). */
  aal: 1 | 2
}

/** What a protected route answers a caller without a valid bearer token (401, with WWW-Authenticate). */
const REFUSALS = [Errors.AuthenticationRequired, Errors.InvalidAccessToken, Errors.AccessTokenExpired, Errors.SessionRevoked]

export default fp(async function authenticate (fastify) {
  fastify.decorateRequest('auth', null)

  function verify (request: FastifyRequest): Auth {
    const header = request.headers.authorization
    if (!header) throw new Errors.AuthenticationRequired()
    const token = bearerToken(header)
    if (!token) throw new Errors.InvalidAccessToken()
    const claims = fastify.tokens.verifyAccessToken(token)
    // In memory, no I/O: a session ended anywhere stops its access tokens at once.
    if (fastify.revocations.has(claims.sid, claims.exp)) throw new Errors.SessionRevoked()
    return { userId: claims.sub, sessionId: claims.sid, roles: claims.roles, aal: claims.acr === 'aal2' ? 2 : 1 }
  }

  // Routes ask for authentication in their config; this wires the hook and documents it.
  fastify.addHook('onRoute', (route) => {
    const mode = route.config?.auth
    if (!mode) {
      // Public (unless the route declares its own scheme, as /metrics does): say so, so the document does not inherit a requirement.
      route.schema = { ...route.schema, security: route.schema?.security ?? [] }
      return
    }
    // An empty requirement makes the bearer optional in the document.
    route.schema = { ...route.schema, security: mode === 'required' ? [{ bearerAuth: [] }] : [{}, { bearerAuth: [] }] }
    route.schema = withProblems(route.schema, mode === 'required' ? REFUSALS : REFUSALS.slice(1))
    // A callback, not a promise: it runs on every protected request. A token sent and refused is refused
    // whatever the mode (an expired one must say so, for the client to refresh).
    const hook = (request: FastifyRequest, _reply: FastifyReply, done: (err?: Error) => void) => {
      if (mode !== 'required' && request.headers.authorization === undefined) return done()
      try {
        request.auth = verify(request)
      } catch (err) {
        return done(err as Error)
      }
      done()
    }
    route.onRequest = [hook, ...[route.onRequest ?? []].flat()]
    if (mode === 'required') return
    // The body is parsed, not yet validated: a caller with neither credential is told so before anything else.
    const eitherCredential = (request: FastifyRequest, _reply: FastifyReply, done: (err?: Error) => void) => {
      if (request.auth || typeof (request.body as { mfa_token?: unknown } | null)?.mfa_token === 'string') return done()
      done(new Errors.AuthenticationRequired())
    }
    route.preValidation = [eitherCredential, ...[route.preValidation ?? []].flat()]
  })
}, { name: 'authenticate', dependencies: ['services'] })
