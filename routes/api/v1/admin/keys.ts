import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { actorOf } from '../../../../services/admin.js'

const keys: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.post('/keys/rotate', {
    config: { auth: 'required', permission: 'keys:rotate' },
    schema: {
      operationId: 'adminRotateKeys',
      tags: ['admin'],
      summary: 'Add a new signing key (published now, signing after KEY_RELOAD_SECONDS)',
      response: {
        200: Type.Object({ kid: Type.String(), signs_after_seconds: Type.Integer() }, { additionalProperties: false, description: 'The new key: in the JWKS now, signing after `signs_after_seconds`' })
      }
    }
  }, async (request) => {
    const kid = await fastify.admin.rotateKeys(actorOf(request))
    return { kid, signs_after_seconds: fastify.config.KEY_RELOAD_SECONDS }
  })
}

export default keys
