import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { JwksSchema } from '../schemas/health.js'

const root: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.get('/.well-known/jwks.json', {
    schema: {
      operationId: 'jwks',
      tags: ['keys'],
      summary: 'Public keys that verify access tokens (JWKS)',
      description: 'Cache it for the time Cache-Control says (revalidate with If-None-Match); a token whose `kid` is unknown means the keys have rotated: fetch again.',
      response: { 200: JwksSchema, 304: Type.Null({ description: 'Not modified' }) }
    }
  }, async (request, reply) => {
    const { body, etag } = fastify.tokens.jwks()
    reply.header('cache-control', `public, max-age=${fastify.config.JWKS_MAX_AGE_SECONDS}`).header('etag', etag)
    if (request.headers['if-none-match'] === etag) return reply.code(304).send(null)
    return body
  })

  // The original service's health path: readiness, with its `database` field.
  fastify.get('/health', {
    config: { shedLoad: false },
    schema: {
      operationId: 'health',
      tags: ['health'],
      summary: 'Readiness, at the original service\'s path',
      response: { 200: Type.Ref('Health'), 503: Type.Ref('Health') }
    }
  }, async (_request, reply) => fastify.health.answerReadiness(reply))
}

export default root
