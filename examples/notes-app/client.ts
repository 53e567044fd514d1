/**
 * An app's side of the token lifecycle (docs/clients.md): sign in, call APIs
 * with the access token, refresh once (however many calls need it at the same
 * time) when one answers ACCESS_TOKEN_EXPIRED, and sign out with the refresh
 * token. Any other 401 means: sign in again.
 */
export interface Tokens { access_token: string, refresh_token: string, expires_at: number }

export class SignedOut extends Error {
  constructor (readonly code: string) { super(`signed out: ${code}`) }
}

/** The problem code of a 401: from the body, or from WWW-Authenticate when a gateway dropped the body. */
async function codeOf (res: Response): Promise<string> {
  const fromHeader = /code="([A-Z_]+)"/.exec(res.headers.get('www-authenticate') ?? '')?.[1]
  const body = await res.json().catch(() => ({})) as { code?: string }
  return body.code ?? fromHeader ?? 'UNKNOWN'
}

export class AuthClient {
  private tokens: Tokens | null = null
  private refreshing: Promise<Tokens> | null = null

  constructor (private readonly authUrl: string) {}

  private async post (path: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
    return fetch(`${this.authUrl}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) })
  }

  private async signedIn (res: Response): Promise<Tokens> {
    if (!res.ok) throw new SignedOut(await codeOf(res))
    this.tokens = await res.json() as Tokens
    return this.tokens
  }

  signUp (email: string, password: string) { return this.post('/api/v1/auth/signup', { email, password }).then((res) => this.signedIn(res)) }
  signIn (email: string, password: string) { return this.post('/api/v1/auth/login', { email, password }).then((res) => this.signedIn(res)) }

  /** One refresh at a time: every caller that needs a fresh token waits for the same one. */
  refresh (): Promise<Tokens> {
    if (!this.tokens) return Promise.reject(new SignedOut('AUTHENTICATION_REQUIRED'))
    this.refreshing ??= this.post('/api/v1/auth/refresh', { refresh_token: this.tokens.refresh_token })
      .then((res) => this.signedIn(res))
      .finally(() => { this.refreshing = null })
    return this.refreshing
  }

  /** Calls an API with the access token; on ACCESS_TOKEN_EXPIRED, refreshes and retries once. */
  async fetch (url: string, init: RequestInit = {}): Promise<Response> {
    for (let attempt = 0; ; attempt++) {
      if (!this.tokens) throw new SignedOut('AUTHENTICATION_REQUIRED')
      const res = await fetch(url, { ...init, headers: { ...init.headers, authorization: `Bearer ${this.tokens.access_token}` } })
      if (res.status !== 401) return res
      const code = await codeOf(res)
      if (code !== 'ACCESS_TOKEN_EXPIRED' || attempt > 0) throw new SignedOut(code)
      await this.refresh()
    }
  }

  /** Signs out with the refresh token (the access token may have expired meanwhile); the tokens are forgotten either way. */
  async signOut (): Promise<number> {
    const tokens = this.tokens
    this.tokens = null
    if (!tokens) return 204
    return (await this.post('/api/v1/auth/logout', { refresh_token: tokens.refresh_token })).status
  }

  /** For the example's test: what the app holds. */
  get current (): Tokens | null { return this.tokens }
}
