import { isIP } from 'node:net'
import type { FastifyRequest } from 'fastify'

/**
 * The client's address: the one TRUST_PROXY picks from X-Forwarded-For when
 * it is an IP address, else the peer's. A forwarded entry is text whoever is
 * upstream wrote (`<script>`, `unknown`): stored on sessions and audit events
 * or keying the rate limits, it would be a field the client fills in.
 */
export function clientIp (request: FastifyRequest): string | null {
  const ip = request.ip
  return isIP(ip) !== 0 ? ip : request.socket.remoteAddress ?? null
}
