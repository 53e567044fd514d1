import { isIP } from 'node:net'

/** Where a request came from, kept on its session and in audit events. */
export interface ClientInfo {
  ip: string | null
  userAgent: string | null
}

/** What of an HTTP request these helpers read (a Fastify request has it): a service knows no Fastify type. */
export interface RequestLike {
  ip: string
  socket: { remoteAddress?: string }
  headers: { 'user-agent'?: string }
}

/**
 * The client's address: the one TRUST_PROXY picks from X-Forwarded-For when
 * it is an IP address, else the peer's. A forwarded entry is text whoever is
 * upstream wrote (`<script>`, `unknown`): stored on sessions and audit events
 * or keying the rate limits, it would be a field the client fills in.
 */
export function clientIp (request: RequestLike): string | null {
  const ip = request.ip
  return isIP(ip) !== 0 ? ip : request.socket.remoteAddress ?? null
}

export const clientOf = (request: RequestLike): ClientInfo => ({
  ip: clientIp(request),
  // Without control characters (C0, DEL, C1): they would reach whoever reads the sessions and events in a terminal or a log viewer.
  userAgent: request.headers['user-agent']?.replace(/[\u0000-\u001f\u007f-\u009f]/g, '').slice(0, 512) ?? null // eslint-disable-line no-control-regex
})
