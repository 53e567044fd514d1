import t, { type Test } from 'tap'
import { API_SECURITY_HEADERS } from '../../plugins/external/errors.js'
import { buildLogged, listen } from '../helper.js'
import { parseResponse, rawExchange, type RawExchange } from '../raw-http.js'

/**
 * Requests Node's HTTP parser refuses before Fastify sees them (a bad request
 * line, oversized headers, a timeout) and those Fastify refuses early (an
 * oversized body, an over-long parameter) are answered alike, from a real
 * socket: problem+json with a code, a request_id that is the X-Request-Id
 * header, and the security headers of every JSON answer.
 */

/** The service listening on loopback with short timeouts and small bodies, its log in `lines`. */
async function serve (t: Test) {
  const { fastify, lines, text } = await buildLogged(t, { env: { HEADERS_TIMEOUT_SECONDS: '1', REQUEST_TIMEOUT_SECONDS: '1', BODY_LIMIT_BYTES: '1024' } })
  return { base: await listen(fastify), lines, log: text }
}

/** Asserts a problem+json answer with this status and code, the security headers, and the connection's end. */
function expectRawProblem (t: Test, exchange: RawExchange, status: number, code: string, closes: boolean) {
  const res = parseResponse(exchange.text)
  if (!t.ok(res, `an HTTP answer (got ${JSON.stringify(exchange.text.slice(0, 120))})`)) return null
  t.equal(res!.status, status, `status ${status}`)
  t.match(res!.headers['content-type'], /^application\/problem\+json/, 'application/problem+json')
  for (const [name, value] of Object.entries(API_SECURITY_HEADERS)) t.equal(res!.headers[name], value, `${name}`)
  let body: Record<string, any> = {}
  try {
    body = JSON.parse(res!.body)
  } catch {
    t.fail(`a JSON body (got ${JSON.stringify(res!.body.slice(0, 120))})`)
  }
  t.match(body, { type: 'about:blank', title: String, status, code, detail: String }, `a problem with code ${code}`)
  t.match(body.request_id, /^[0-9a-f-]{36}$/, 'a request_id')
  t.equal(res!.headers['x-request-id'], body.request_id, 'that is the X-Request-Id header')
  if (closes) t.ok(exchange.closedByServer, 'the connection is closed')
  return body
}

t.test('errors of the HTTP parser and the timeouts are problem+json', async (t) => {
  const { base, lines, log } = await serve(t)
  const secret = 'Bearer top-secret-in-an-oversized-request'
  const huge = 'x'.repeat(20_000)
  const cases: Array<[string, string, number, string]> = [
    ['a request line that is not HTTP', 'NOT A REQUEST\r\n\r\n', 400, 'BAD_REQUEST'],
    ['a header line without a colon', 'GET /api/health HTTP/1.1\r\nHost: localhost\r\nno colon here\r\n\r\n', 400, 'BAD_REQUEST'],
    ['Content-Length and Transfer-Encoding together (smuggling)', 'POST /api/v1/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 400, 'BAD_REQUEST'],
    ['headers sent, the body never', 'POST /api/v1/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{', 408, 'REQUEST_TIMEOUT'],
    ['chunk extensions beyond the parser\'s limit', `POST /api/v1/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2;${huge}\r\n{}\r\n0\r\n\r\n`, 413, 'PAYLOAD_TOO_LARGE'],
    ['a header over Node\'s limit', `GET /api/health HTTP/1.1\r\nHost: localhost\r\nAuthorization: ${secret}\r\nX-Big: ${huge}\r\n\r\n`, 431, 'HEADERS_TOO_LARGE'],
    ['a request line over Node\'s limit', `GET /api/health?q=${huge} HTTP/1.1\r\nHost: localhost\r\n\r\n`, 431, 'HEADERS_TOO_LARGE']
  ]
  for (const [what, request, status, code] of cases) {
    await t.test(what, async (t) => {
      const body = expectRawProblem(t, await rawExchange(base, request, 5_000), status, code, true)
      const logged = lines().filter((l) => l.request_id === body?.request_id)
      t.equal(logged.length, 1, 'one log line')
      t.match(logged[0], { msg: 'client error', status, code }, 'with its status and code')
    })
  }
  t.notOk(log().includes('top-secret'), 'the log holds nothing of the refused bytes')
})

t.test('what Fastify refuses early is the same problem+json on the wire', async (t) => {
  const { base } = await serve(t)
  const body = JSON.stringify({ email: 'a@example.com', password: 'p'.repeat(2000) })
  const cases: Array<[string, string, number, string]> = [
    ['a body over BODY_LIMIT_BYTES', `POST /api/v1/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`, 413, 'PAYLOAD_TOO_LARGE'],
    ['a path parameter over the router\'s limit', `DELETE /api/v1/users/me/sessions/${'a'.repeat(500)} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`, 414, 'URI_TOO_LONG'],
    ['a malformed percent-encoding', 'GET /api/v1/%E0%A4%A HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n', 400, 'MALFORMED_URL']
  ]
  for (const [what, request, status, code] of cases) {
    await t.test(what, async (t) => { expectRawProblem(t, await rawExchange(base, request, 5_000), status, code, false) })
  }
})
