/**
 * k6: forward auth. Each virtual user asks GET /api/v1/auth/verify with its
 * own session's access token (signature and revocation list, no I/O in the
 * service); the token is refreshed a minute before it expires.
 *
 *   k6 run -e BASE_URL=https://auth.staging.example.com -e VUS=20 -e DURATION=1m bench/k6/verify.js
 *
 * Thresholds: no failed request, every check passing, verify p99 < 10 ms.
 */
import { makeAccounts, mySession, options as withThresholds, verify, VUS } from './lib.js'

export const options = withThresholds({ verify: 10 })

export function setup () {
  return makeAccounts(VUS)
}

export default function (data) {
  verify(mySession(data).access)
}
