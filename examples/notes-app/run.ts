import { randomUUID } from 'node:crypto'
import { AuthClient } from './client.js'
import { startNotesApi } from './notes-api.js'

/**
 * The whole example against a running auth-service (`npm start`, or
 * `AUTH_URL=…`): the notes API starts on a free port, and an app signs up,
 * writes and reads notes, and signs out.
 *
 *   npx tsx examples/notes-app/run.ts
 */
const authUrl = process.env.AUTH_URL ?? 'http://localhost:8000'
const notes = await startNotesApi({ issuer: process.env.ISSUER ?? authUrl })
try {
  const app = new AuthClient(authUrl)
  await app.signUp(`notes-${randomUUID().slice(0, 8)}@example.com`, 'correct horse battery staple')
  const written = await app.fetch(`${notes.url}/notes`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ text: 'buy milk' }) })
  console.log('POST /notes', written.status, await written.json())
  const read = await app.fetch(`${notes.url}/notes`)
  console.log('GET /notes', read.status, await read.json())
  console.log('sign out', await app.signOut())
} finally {
  await notes.close()
}
