/**
 * k6: POST /api/v1/auth/signup, a new address on every request (one argon2id
 * hash each). setup() makes no accounts: every iteration is one.
 *
 *   k6 run -e BASE_URL=https://auth.staging.example.com -e VUS=20 -e DURATION=1m bench/k6/signup.js
 *
 * Every request leaves an account behind: run it against a throwaway
 * database. The target's per-address limit (RATE_LIMIT_SIGNUP_PER_MINUTE, 5
 * by default) must be raised for the test, or rate limits turned off.
 * Thresholds: no failed request, every check passing, signup p99 < 500 ms.
 */
import { options as withThresholds, signup } from './lib.js'

export const options = withThresholds({ signup: 500 })

export default function () {
  signup()
}
