/* global __ENV, open */
/**
 * What the k6 scripts share: the target, the accounts and sessions made in
 * setup() (before the timed part), each virtual user's own session (it keeps
 * rotating its own refresh token), requests tagged by endpoint, and the
 * thresholds. See bench/README.md, "k6 against a deployment".
 *
 * Environment (k6 run -e NAME=value):
 *   BASE_URL   the service, e.g. https://auth.staging.example.com (default http://127.0.0.1:8000)
 *   VUS        virtual users, each with its own account and session (default 20)
 *   DURATION   how long the timed part runs (default 30s)
 *   PASSWORD   the password of the accounts setup() creates (default: a policy-abiding phrase)
 *   EMAIL_DOMAIN  the domain of their addresses (default bench.example.com)
 *   ACCOUNTS_FILE a JSON array of addresses of existing accounts, all with
 *              PASSWORD, to sign in instead of signing up (a deployment
 *              with REQUIRE_EMAIL_VERIFICATION=true); an absolute path
 *
 * Plain ES2017 on purpose: k6's JavaScript runtime is not Node's.
 */
import http from 'k6/http'
import { check, fail } from 'k6'
import exec from 'k6/execution'

export const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8000').replace(/\/+$/, '')
export const VUS = Number(__ENV.VUS || 20)
export const DURATION = __ENV.DURATION || '30s'
export const PASSWORD = __ENV.PASSWORD || 'correct horse battery staple'
const DOMAIN = __ENV.EMAIL_DOMAIN || 'bench.example.com'
const JSON_HEADERS = { 'Content-Type': 'application/json' }
// open() works only here, in the init context.
const PREMADE = __ENV.ACCOUNTS_FILE ? JSON.parse(open(__ENV.ACCOUNTS_FILE)) : null

/** Unique per test run (and per virtual user, each of which loads this module). */
const RUN = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`
let addresses = 0
export const newEmail = (what) => `k6-${what}-${RUN}-${exec.vu.idInTest}-${addresses++}@${DOMAIN}`

/**
 * The options of a script: VUS virtual users for DURATION, every request
 * answered 2xx, every check passing, and the p99 limits given per endpoint
 * (the `name` tag of its requests), in milliseconds; P99_<NAME>_MS in the
 * environment overrides one (e.g. -e P99_VERIFY_MS=25 across a network).
 */
export function options (p99ByEndpoint) {
  const thresholds = {
    http_req_failed: ['rate==0'],
    checks: ['rate==1']
  }
  Object.keys(p99ByEndpoint).forEach((name) => {
    const ms = __ENV[`P99_${name.toUpperCase()}_MS`] || p99ByEndpoint[name]
    thresholds[`http_req_duration{name:${name}}`] = [`p(99)<${ms}`]
  })
  return {
    scenarios: { main: { executor: 'constant-vus', vus: VUS, duration: DURATION } },
    thresholds,
    // setup() signs VUS accounts up and in: each is a password hash.
    setupTimeout: '5m',
    summaryTrendStats: ['avg', 'med', 'p(90)', 'p(99)', 'max']
  }
}

export function post (name, path, body) {
  return http.post(`${BASE_URL}${path}`, JSON.stringify(body), { headers: JSON_HEADERS, tags: { name } })
}

export function get (name, path, accessToken) {
  return http.get(`${BASE_URL}${path}`, { headers: { Authorization: `Bearer ${accessToken}` }, tags: { name } })
}

/** The pair of a 200/201 token response, or null. */
export function pairOf (res) {
  if (res.status !== 200 && res.status !== 201) return null
  const body = res.json()
  return { access: body.access_token, refresh: body.refresh_token, expiresIn: body.expires_in, at: Date.now() }
}

/** Signs up (or, with ACCOUNTS_FILE, signs in) these addresses, four at a time; fails the test on any refusal. */
function start (emails, path, expected) {
  const out = []
  for (let i = 0; i < emails.length; i += 4) {
    const batch = emails.slice(i, i + 4).map((email) => ['POST', `${BASE_URL}${path}`, JSON.stringify({ email, password: PASSWORD }), { headers: JSON_HEADERS, tags: { name: 'setup' } }])
    http.batch(batch).forEach((res, k) => {
      if (res.status === 429) fail(`setup: ${path} answered 429: raise the target's rate limits for the test, or turn them off (see bench/README.md)`)
      if (res.status !== expected) fail(`setup: ${path} answered ${res.status}, not ${expected}: ${res.body}`)
      out.push({ email: emails[i + k], session: pairOf(res) })
    })
  }
  return out
}

/** setup(): `n` accounts, each with a session of its own, before the timed part. */
export function makeAccounts (n) {
  if (PREMADE) {
    if (PREMADE.length < n) fail(`ACCOUNTS_FILE lists ${PREMADE.length} accounts; this test needs ${n}`)
    return { accounts: start(PREMADE.slice(0, n), '/api/v1/auth/login', 200) }
  }
  const emails = []
  for (let i = 0; i < n; i++) emails.push(`k6-${RUN}-${i}@${DOMAIN}`)
  return { accounts: start(emails, '/api/v1/auth/signup', 201) }
}

/** This virtual user's account: one of setup()'s, by its number in the test. */
export const myAccount = (data) => data.accounts[(exec.vu.idInTest - 1) % data.accounts.length]

/**
 * This virtual user's session, kept across its iterations (module state is
 * per virtual user): it starts from setup()'s, and every refresh or sign-in
 * replaces it, as a real client does; the access token is refreshed a
 * minute before it expires.
 */
let session = null

export function mySession (data) {
  if (session === null) session = Object.assign({}, myAccount(data).session)
  if (Date.now() - session.at > (session.expiresIn - 60) * 1000) refresh()
  return session
}

/** Trades this virtual user's refresh token for a new pair, and keeps it. */
export function refresh () {
  const res = post('refresh', '/api/v1/auth/refresh', { refresh_token: session.refresh })
  const next = pairOf(res)
  check(res, { 'refresh: 200 with a new pair': () => next !== null && next.refresh !== session.refresh })
  if (next) session = next
  return res
}

/** Signs this virtual user in again: a new session replaces the one it had. */
export function login (email) {
  const res = post('login', '/api/v1/auth/login', { email, password: PASSWORD })
  const next = pairOf(res)
  check(res, { 'login: 200 with a pair': () => next !== null })
  if (next) session = next
  return res
}

export function me (accessToken) {
  const res = get('me', '/api/v1/users/me', accessToken)
  check(res, { 'me: 200 with the user': (r) => r.status === 200 && typeof r.json('id') === 'string' })
  return res
}

export function verify (accessToken) {
  const res = get('verify', '/api/v1/auth/verify', accessToken)
  check(res, { 'verify: 200 with X-User-Id': (r) => r.status === 200 && Boolean(r.headers['X-User-Id']) })
  return res
}

export function signup () {
  const res = post('signup', '/api/v1/auth/signup', { email: newEmail('s'), password: PASSWORD })
  // 202 where the deployment requires email verification (no pair then).
  check(res, { 'signup: 201 with a pair, or 202': (r) => (r.status === 201 && pairOf(r) !== null) || r.status === 202 })
  return res
}
