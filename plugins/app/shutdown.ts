import fp from 'fastify-plugin'

/**
 * Graceful shutdown, the part Fastify leaves out: it closes the keep-alive
 * connections that are idle when closing starts, and answers requests that
 * arrive later with `Connection: close`, but a request already in flight
 * would leave its connection open after its answer, holding the server (and
 * the shutdown) until the client lets go. Once closing has begun, every
 * answer closes its connection.
 */
export default fp(async function shutdown (fastify) {
  let closing = false
  fastify.addHook('preClose', async () => { closing = true })
  fastify.addHook('onSend', (_request, reply, payload, done) => {
    if (closing) reply.header('connection', 'close')
    done(null, payload)
  })
}, { name: 'shutdown' })
