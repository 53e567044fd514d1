/**
 * The framework ceiling: Fastify 5 with one route and nothing else, started
 * by bench/run.ts as `node bench/bare-server.mjs` exactly as the service is
 * started (its own process, 127.0.0.1, the port in PORT). GET /ping answers
 * a small JSON body, about the size of /api/v1/auth/verify's.
 *
 * Plain JavaScript so that node runs it as is, like the service's build.
 */
import Fastify from 'fastify'

const app = Fastify({ logger: false })

app.get('/ping', async () => ({ user_id: '00000000-0000-4000-8000-000000000000', session_id: '00000000-0000-4000-8000-000000000000', roles: ['user'] }))

await app.listen({ host: process.env.HOST ?? '127.0.0.1', port: Number(process.env.PORT ?? 0) })

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.once(signal, () => { app.close().then(() => process.exit(0)) })
}
