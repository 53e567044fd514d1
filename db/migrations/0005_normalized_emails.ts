import type { Kysely } from 'kysely'

// Frozen. Addresses are now stored NFKC-normalized (one address, one account): bring the
// rows stored before up to that spelling. Only non-ASCII addresses can differ (they were
// already trimmed and lower-cased). One that would collide with an account already holding
// the normalized spelling is left as it is: it cannot be merged without a person deciding.
const BATCH = 1000
const normalized = (email: string) => email.trim().normalize('NFKC').toLowerCase()

export async function up (db: Kysely<any>): Promise<void> {
  let after: string | null = null
  for (;;) {
    let page = db.selectFrom('users').select(['id', 'email']).orderBy('id').limit(BATCH)
    if (after !== null) page = page.where('id', '>', after)
    const rows: Array<{ id: string, email: string }> = await page.execute()
    if (rows.length === 0) return
    after = rows[rows.length - 1].id
    for (const row of rows) {
      const email = normalized(row.email)
      if (email === row.email) continue
      const taken = await db.selectFrom('users').select('id').where('email', '=', email).executeTakeFirst()
      if (!taken) await db.updateTable('users').set({ email }).where('id', '=', row.id).execute()
    }
  }
}

// Nothing to undo: the normalized spelling is the same address.
export async function down (): Promise<void> {}
