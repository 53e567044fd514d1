import t from 'tap'
import { AuthClient, SignedOut } from '../examples/notes-app/client.js'
import { startNotesApi } from '../examples/notes-app/notes-api.js'
import { build, databases, freePort, GOOD_PASSWORD, movableClock, uniqueEmail } from './helper.js'

// examples/notes-app, as docs/clients.md tells an app developer to build it, against the real service over HTTP.

for (const db of databases) {
  t.test(`${db.name}: the notes app signs up, refreshes once when its token expires, and signs out`, async (t) => {
    const clock = movableClock()
    const port = await freePort()
    const issuer = `http://127.0.0.1:${port}`
    const auth = await build(t, { env: { DATABASE_URL: db.url, PUBLIC_URL: issuer }, now: clock.now })
    await auth.listen({ port, host: '127.0.0.1' })
    const notes = await startNotesApi({ issuer, now: clock.now })
    t.teardown(notes.close)
    const app = new AuthClient(issuer)
    const post = (text: string) => app.fetch(`${notes.url}/notes`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ text }) })

    const email = uniqueEmail('notes')
    await app.signUp(email, GOOD_PASSWORD)
    const first = app.current!
    const sid = JSON.parse(Buffer.from(first.access_token.split('.')[1], 'base64url').toString()).sid as string
    t.equal((await post('buy milk')).status, 201, 'a note written with the access token')

    // Past the access token's life: three calls at once, one refresh, every call retried and answered.
    clock.advance(first.expires_at - Math.floor(clock.now().getTime() / 1000) + 1)
    const direct = await fetch(`${notes.url}/notes`, { headers: { authorization: `Bearer ${first.access_token}` } })
    t.equal(direct.status, 401)
    t.match(direct.headers.get('www-authenticate'), /error="invalid_token".*code="ACCESS_TOKEN_EXPIRED"/, 'the notes API says why, as auth-service does')
    const answers = await Promise.all(['eggs', 'bread', 'tea'].map(post))
    t.same(answers.map((a) => a.status), [201, 201, 201], 'every call answered after the refresh')
    t.not(app.current!.refresh_token, first.refresh_token, 'the rotated refresh token is kept')
    const refreshes = await auth.db.selectFrom('refresh_tokens').select('token_hash').where('session_id', '=', sid).execute()
    t.equal(refreshes.length, 2, 'one refresh for the three calls: two refresh tokens in all')
    const list = await (await app.fetch(`${notes.url}/notes`)).json() as { notes: string[] }
    t.same([...list.notes].sort(), ['bread', 'buy milk', 'eggs', 'tea'])

    // Signed out: the session's old refresh token is SESSION_REVOKED (the app can say so), and signing in again works.
    const held = app.current!
    t.equal(await app.signOut(), 204, 'signed out with the refresh token')
    const other = new AuthClient(issuer)
    await other.signIn(email, GOOD_PASSWORD)
    t.ok(other.current, 'signing in again works')
    const replay = await fetch(`${issuer}/api/v1/auth/refresh`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ refresh_token: held.refresh_token }) })
    t.equal(((await replay.json()) as { code: string }).code, 'SESSION_REVOKED', 'the ended session\'s refresh token says so')
    await t.rejects(app.fetch(`${notes.url}/notes`), new SignedOut('AUTHENTICATION_REQUIRED'), 'the app holds no token after signing out')
    const forged = await fetch(`${notes.url}/notes`, { headers: { authorization: 'Bearer not.a.token' } })
    t.equal(forged.status, 401)
    t.equal(((await forged.json()) as { code: string }).code, 'INVALID_ACCESS_TOKEN')
  })
}
