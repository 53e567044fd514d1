import { connect } from 'node:net'

/** What came back on a raw connection: the bytes, whether the server closed it, and when. */
export interface RawExchange {
  text: string
  closedByServer: boolean
  ms: number
}

/**
 * Opens a TCP connection to `base` (http://127.0.0.1:port), writes `data`
 * (some of a request, or several), and reads until the server closes the
 * connection or `waitMs` have passed (then the test closes it).
 */
export function rawExchange (base: string, data: string | Buffer, waitMs: number): Promise<RawExchange> {
  const { hostname, port } = new URL(base)
  return new Promise((resolve, reject) => {
    const started = Date.now()
    const chunks: Buffer[] = []
    const socket = connect(Number(port), hostname, () => { socket.write(data) })
    const timer = setTimeout(() => { finish(false); socket.destroy() }, waitMs)
    let done = false
    function finish (closedByServer: boolean) {
      if (done) return
      done = true
      clearTimeout(timer)
      resolve({ text: Buffer.concat(chunks).toString('latin1'), closedByServer, ms: Date.now() - started })
    }
    socket.on('data', (chunk) => chunks.push(chunk))
    socket.on('end', () => finish(true))
    socket.on('close', () => finish(true))
    // A reset after the server has answered and closed is a close too.
    socket.on('error', (err: NodeJS.ErrnoException) => { if (err.code === 'ECONNRESET' || err.code === 'EPIPE') finish(true); else reject(err) })
  })
}

export interface RawResponse {
  status: number
  headers: Record<string, string>
  body: string
}

/** The first HTTP response in `text`: status, headers (lower-cased names), and the body its Content-Length says. */
export function parseResponse (text: string): RawResponse | null {
  const end = text.indexOf('\r\n\r\n')
  if (end === -1) return null
  const [statusLine, ...lines] = text.slice(0, end).split('\r\n')
  const status = Number(/^HTTP\/1\.1 (\d{3}) /.exec(statusLine)?.[1])
  const headers: Record<string, string> = {}
  for (const line of lines) {
    const colon = line.indexOf(':')
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim()
  }
  const length = Number(headers['content-length'] ?? 0)
  return { status, headers, body: Buffer.from(text.slice(end + 4), 'latin1').subarray(0, length).toString('utf8') }
}
