/**
 * k6: traffic shaped like real use. Each virtual user is a signed-in client
 * that, request by request, verifies its token (60 %), reads its profile
 * (25 %), refreshes (10 %), signs in again (3 %) or signs a new user up
 * (2 %); a refresh or sign-in replaces the session it uses from then on.
 * The same mix as `npm run bench`'s mixed scenario.
 *
 *   k6 run -e BASE_URL=https://auth.staging.example.com -e VUS=50 -e DURATION=5m bench/k6/mixed.js
 *
 * Thresholds: no failed request, every check passing, and a p99 per endpoint.
 */
import { login, makeAccounts, me, myAccount, mySession, options as withThresholds, refresh, signup, verify, VUS } from './lib.js'

export const options = withThresholds({ verify: 10, me: 25, refresh: 50, login: 500, signup: 500 })

/** Cumulative shares, in percent. */
const MIX = [[60, 'verify'], [85, 'me'], [95, 'refresh'], [98, 'login'], [100, 'signup']]

export function setup () {
  return makeAccounts(VUS)
}

export default function (data) {
  const roll = Math.random() * 100
  const kind = MIX.find(([upTo]) => roll < upTo)[1]
  const session = mySession(data)
  if (kind === 'verify') verify(session.access)
  else if (kind === 'me') me(session.access)
  else if (kind === 'refresh') refresh()
  else if (kind === 'login') login(myAccount(data).email)
  else signup()
}
