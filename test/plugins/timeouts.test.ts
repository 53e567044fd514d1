import t from 'tap'
import { build, listen } from '../helper.js'
import { parseResponse, rawExchange } from '../raw-http.js'

/**
 * Slow clients (slowloris) must not hold sockets: a request has
 * HEADERS_TIMEOUT_SECONDS to send its headers and REQUEST_TIMEOUT_SECONDS to
 * send all of it, and an idle keep-alive connection is closed after
 * KEEP_ALIVE_TIMEOUT_SECONDS. Node checks the first two once a second here.
 */
const SMALL = { HEADERS_TIMEOUT_SECONDS: '1', REQUEST_TIMEOUT_SECONDS: '2', KEEP_ALIVE_TIMEOUT_SECONDS: '1' }
/** Well past any of the timeouts above, Node's checking interval and its keep-alive grace second; Node's own request timeout is 300 s. */
const WAIT_MS = 10_000

t.test('the defaults reach the HTTP server', async (t) => {
  const app = await build(t)
  t.equal(app.server.requestTimeout, 30_000, 'REQUEST_TIMEOUT_SECONDS defaults to 30')
  t.equal(app.server.headersTimeout, 10_000, 'HEADERS_TIMEOUT_SECONDS defaults to 10')
  t.equal(app.server.keepAliveTimeout, 72_000, 'KEEP_ALIVE_TIMEOUT_SECONDS defaults to 72 (above the 60 s idle timeout of common load balancers)')
})

t.test('a slow client loses its socket', async (t) => {
  const app = await build(t, { env: SMALL })
  const base = await listen(app)
  const [oneBodyByte, partialHeaders, silent, keptAlive] = await Promise.all([
    rawExchange(base, 'POST /api/v1/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{', WAIT_MS),
    rawExchange(base, 'GET /api/health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ', WAIT_MS),
    rawExchange(base, '', WAIT_MS),
    rawExchange(base, 'GET /api/health HTTP/1.1\r\nHost: localhost\r\n\r\n', WAIT_MS)
  ])

  t.ok(oneBodyByte.closedByServer, `headers and one body byte: closed after ${oneBodyByte.ms} ms`)
  t.ok(oneBodyByte.ms >= 1_500 && oneBodyByte.ms < 6_000, 'after REQUEST_TIMEOUT_SECONDS (2 s), within a few seconds')
  t.equal(parseResponse(oneBodyByte.text)?.status, 408, 'with a 408')

  t.ok(partialHeaders.closedByServer, `half the headers: closed after ${partialHeaders.ms} ms`)
  t.ok(partialHeaders.ms < 5_000, 'within a few seconds of HEADERS_TIMEOUT_SECONDS (1 s)')
  t.equal(parseResponse(partialHeaders.text)?.status, 408, 'with a 408')

  t.ok(silent.closedByServer, `a connection that sends nothing: closed after ${silent.ms} ms`)
  t.ok(silent.ms < 5_000, 'within a few seconds of HEADERS_TIMEOUT_SECONDS (1 s)')

  t.equal(parseResponse(keptAlive.text)?.status, 200, 'a whole request is answered')
  t.ok(keptAlive.closedByServer, `then the idle keep-alive connection is closed after ${keptAlive.ms} ms`)
  t.ok(keptAlive.ms < 6_000, 'within a few seconds of KEEP_ALIVE_TIMEOUT_SECONDS (1 s, plus Node\'s grace second)')
})
