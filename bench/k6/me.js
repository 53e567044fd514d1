/**
 * k6: GET /api/v1/users/me. Each virtual user reads its own profile with its
 * own session's access token (the service reads the user and their roles);
 * the token is refreshed a minute before it expires.
 *
 *   k6 run -e BASE_URL=https://auth.staging.example.com -e VUS=20 -e DURATION=1m bench/k6/me.js
 *
 * Thresholds: no failed request, every check passing, me p99 < 25 ms.
 */
import { makeAccounts, me, mySession, options as withThresholds, VUS } from './lib.js'

export const options = withThresholds({ me: 25 })

export function setup () {
  return makeAccounts(VUS)
}

export default function (data) {
  me(mySession(data).access)
}
