/**
 * k6: POST /api/v1/auth/refresh. Each virtual user starts from the session
 * setup() made for it and keeps rotating its own latest refresh token (the
 * service rotates on every refresh; presenting an old one after the grace
 * window would end the session as stolen).
 *
 *   k6 run -e BASE_URL=https://auth.staging.example.com -e VUS=20 -e DURATION=1m bench/k6/refresh.js
 *
 * Thresholds: no failed request, every check passing (each answer a new
 * pair), refresh p99 < 50 ms.
 */
import { makeAccounts, mySession, options as withThresholds, refresh, VUS } from './lib.js'

export const options = withThresholds({ refresh: 50 })

export function setup () {
  return makeAccounts(VUS)
}

export default function (data) {
  mySession(data)
  refresh()
}
