import Fastify, { type FastifyInstance, type LightMyRequestResponse } from 'fastify'
import type { Test } from 'tap'
import app, { serverOptions } from '../app.js'
import { loadConfig } from '../plugins/config.js'

export interface BuildOptions {
  env?: Record<string, string>
  now?: () => Date
}

/** The database the tests run on: PostgreSQL when TEST_DATABASE_URL is set, else SQLite in memory. */
export const databases: Array<{ name: string, url: string }> = [
  { name: 'sqlite', url: 'sqlite::memory:' },
  ...(process.env.TEST_DATABASE_URL ? [{ name: 'postgres', url: process.env.TEST_DATABASE_URL }] : [])
]

/** Builds the service with the very options server.ts uses, and closes it when the test ends. */
export async function build (t: Test, opts: BuildOptions = {}): Promise<FastifyInstance> {
  const config = loadConfig({ DATABASE_URL: 'sqlite::memory:', LOG_LEVEL: 'silent', NODE_ENV: 'test', ...opts.env })
  const fastify = Fastify(serverOptions(config))
  await fastify.register(app, { config, now: opts.now })
  t.teardown(() => fastify.close())
  await fastify.ready()
  return fastify
}

let counter = 0
/** An email address no other test uses, so tests can share a PostgreSQL database. */
export function uniqueEmail (prefix = 'user'): string {
  counter += 1
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${counter}@example.com`
}

export const json = (res: LightMyRequestResponse) => res.json() as Record<string, any>

export const GOOD_PASSWORD = 'correct horse battery staple'

/** Signs up a fresh user and returns the token response. */
export async function signup (fastify: FastifyInstance, body: Record<string, unknown> = {}) {
  const res = await fastify.inject({ method: 'POST', url: '/api/v1/auth/signup', payload: { email: uniqueEmail(), password: GOOD_PASSWORD, ...body } })
  if (res.statusCode !== 201) throw new Error(`signup failed: ${res.statusCode} ${res.body}`)
  return json(res)
}

export const bearer = (token: string) => ({ authorization: `Bearer ${token}` })
