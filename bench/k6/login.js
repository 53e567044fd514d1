/**
 * k6: POST /api/v1/auth/login. Each virtual user signs in as its own account
 * with the right password (one argon2id verify per request; the per-account
 * throttle counts only failures, and one user's sign-ins never overlap).
 *
 *   k6 run -e BASE_URL=https://auth.staging.example.com -e VUS=20 -e DURATION=1m bench/k6/login.js
 *
 * The target's per-address limit (RATE_LIMIT_LOGIN_PER_MINUTE, 10 by
 * default) must be raised for the test, or rate limits turned off.
 * Thresholds: no failed request, every check passing, login p99 < 500 ms.
 */
import { login, makeAccounts, myAccount, options as withThresholds, VUS } from './lib.js'

export const options = withThresholds({ login: 500 })

export function setup () {
  return makeAccounts(VUS)
}

export default function (data) {
  login(myAccount(data).email)
}
