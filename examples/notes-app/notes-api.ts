import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createRemoteJWKSet, errors, jwtVerify } from 'jose'

/**
 * A small notes API that trusts auth-service's access tokens: it reads the
 * issuer's discovery document, verifies each bearer token offline against
 * the JWKS with jose, and answers a refused token exactly as auth-service
 * would (401 problem+json, the same codes and WWW-Authenticate), so its
 * clients handle one set of codes.
 */
export interface NotesApiOptions {
  /** auth-service's issuer (its PUBLIC_URL). */
  issuer: string
  /** JWT_AUDIENCE of auth-service. */
  audience?: string
  port?: number
  /** The clock tokens are checked against (tests move it). */
  now?: () => Date
}

type Refusal = { code: 'AUTHENTICATION_REQUIRED' | 'ACCESS_TOKEN_EXPIRED' | 'INVALID_ACCESS_TOKEN', detail: string }

export async function startNotesApi ({ issuer, audience = 'auth-service', port = 0, now = () => new Date() }: NotesApiOptions) {
  const discovery = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json() as {
    issuer: string, jwks_uri: string, id_token_signing_alg_values_supported: string[]
  }
  const jwks = createRemoteJWKSet(new URL(discovery.jwks_uri))
  const notes = new Map<string, string[]>()

  async function userOf (authorization: string | undefined): Promise<string | Refusal> {
    const token = /^Bearer (.+)$/i.exec(authorization ?? '')?.[1]
    if (!token) return { code: 'AUTHENTICATION_REQUIRED', detail: 'This needs a bearer access token.' }
    try {
      const { payload } = await jwtVerify(token, jwks, {
        issuer: discovery.issuer, audience, typ: 'at+jwt', algorithms: discovery.id_token_signing_alg_values_supported, currentDate: now()
      })
      return payload.sub!
    } catch (err) {
      return err instanceof errors.JWTExpired
        ? { code: 'ACCESS_TOKEN_EXPIRED', detail: 'The access token has expired; refresh it.' }
        : { code: 'INVALID_ACCESS_TOKEN', detail: 'The access token is not valid.' }
    }
  }

  function send (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) {
    res.writeHead(status, { 'content-type': status >= 400 ? 'application/problem+json' : 'application/json', ...headers })
    res.end(JSON.stringify(body))
  }

  function refuse (res: ServerResponse, { code, detail }: Refusal) {
    const challenge = code === 'AUTHENTICATION_REQUIRED'
      ? 'Bearer realm="notes"'
      : `Bearer realm="notes", error="invalid_token", error_description="${detail}", code="${code}"`
    send(res, 401, { type: 'about:blank', title: 'Unauthorized', status: 401, detail, code }, { 'www-authenticate': challenge })
  }

  async function bodyOf (req: IncomingMessage): Promise<{ text?: unknown }> {
    let raw = ''
    for await (const chunk of req) raw += chunk
    try { return JSON.parse(raw) } catch { return {} }
  }

  const server = createServer(async (req, res) => {
    if (req.url !== '/notes' || !['GET', 'POST'].includes(req.method!)) return send(res, 404, { status: 404, code: 'NOT_FOUND', detail: 'No such route.' })
    const user = await userOf(req.headers.authorization)
    if (typeof user !== 'string') return refuse(res, user)
    const mine = notes.get(user) ?? []
    if (req.method === 'GET') return send(res, 200, { notes: mine })
    const { text } = await bodyOf(req)
    if (typeof text !== 'string' || text.length === 0 || text.length > 1000) return send(res, 400, { status: 400, code: 'VALIDATION_FAILED', detail: 'text: 1 to 1000 characters.' })
    notes.set(user, [...mine, text])
    return send(res, 201, { notes: notes.get(user) })
  })
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve()))
  }
}
