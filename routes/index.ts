import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { JwksSchema } from '../schemas/health.js'

const root: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.get('/.well-known/jwks.json', {
    config: { database: false },
    schema: {
      operationId: 'jwks',
      tags: ['keys'],
      summary: 'Public keys that verify access tokens (JWKS)',
      description: 'Cache it for the time Cache-Control says (revalidate with If-None-Match); a token whose `kid` is unknown means the keys have rotated: fetch again.',
      response: {
        200: { ...JwksSchema, description: 'The public keys, with Cache-Control and an ETag' },
        304: Type.Null({ description: 'Not modified: the keys are those of the ETag sent in If-None-Match' })
      }
    }
  }, async (request, reply) => {
    const { body, etag } = fastify.tokens.jwks()
    reply.header('cache-control', `public, max-age=${fastify.config.JWKS_MAX_AGE_SECONDS}`).header('etag', etag)
    if (request.headers['if-none-match'] === etag) return reply.code(304).send(null)
    return body
  })

  // Discovery: jose, openid-client and gateway plugins configure themselves from the issuer. The service signs access
  // tokens, not ID tokens, and has no OAuth endpoints yet: the document says only what is true (more as they come).
  fastify.get('/.well-known/openid-configuration', {
    config: { database: false },
    schema: {
      operationId: 'discovery',
      tags: ['keys'],
      summary: 'Discovery document: the issuer, where its keys are, and its signing algorithm',
      response: {
        200: Type.Object({
          issuer: Type.String({ description: 'The `iss` of every access token.' }),
          jwks_uri: Type.String({ description: 'The public keys (JWKS).' }),
          id_token_signing_alg_values_supported: Type.Array(Type.String(), { description: 'The algorithm access tokens are signed with (no ID tokens are issued; the field is what OpenID clients read).' }),
          subject_types_supported: Type.Array(Type.String()),
          response_types_supported: Type.Array(Type.String(), { description: 'Empty: no authorization endpoint yet.' })
        }, { additionalProperties: false, description: 'The discovery document (OpenID Connect Discovery 1.0)' })
      }
    }
  }, async (_request, reply) => {
    const { config } = fastify
    reply.header('cache-control', `public, max-age=${config.JWKS_MAX_AGE_SECONDS}`)
    return {
      issuer: config.JWT_ISSUER ?? config.PUBLIC_URL,
      jwks_uri: `${config.PUBLIC_URL}/.well-known/jwks.json`,
      id_token_signing_alg_values_supported: [config.JWT_ALGORITHM],
      subject_types_supported: ['public'],
      response_types_supported: []
    }
  })

  // The original service's health path: readiness, with its `database` field.
  fastify.get('/health', {
    config: { shedLoad: false, database: false },
    schema: {
      operationId: 'health',
      tags: ['health'],
      summary: 'Readiness, at the original service\'s path',
      response: { 200: Type.Ref('Health', { description: 'Ready' }), 503: Type.Ref('Health', { description: 'Not ready: `database` says what is away' }) }
    }
  }, async (_request, reply) => fastify.health.answerReadiness(reply))
}

export default root
