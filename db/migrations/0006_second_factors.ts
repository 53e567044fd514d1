import { sql, type Kysely } from 'kysely'

// Frozen. Second factors (issue 17): a TOTP factor per account (the kind column takes passkeys
// next), its recovery codes, the short-lived challenges between the password and the second
// step, and the assurance level each session reached. Secrets are sealed, codes and challenge
// tokens kept only as hashes.
export async function up (db: Kysely<any>): Promise<void> {
  await db.schema.createTable('mfa_factors')
    .addColumn('id', 'uuid', (c) => c.primaryKey())
    .addColumn('user_id', 'uuid', (c) => c.notNull().references('users.id').onDelete('cascade'))
    .addColumn('kind', 'text', (c) => c.notNull())
    .addColumn('secret', 'text', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull())
    .addColumn('confirmed_at', 'timestamptz')
    .addColumn('last_used_at', 'timestamptz')
    // The last TOTP time step accepted: a code is good once.
    .addColumn('last_step', 'bigint')
    .execute()
  await db.schema.createIndex('mfa_factors_user_kind').unique().on('mfa_factors').columns(['user_id', 'kind']).execute()

  await db.schema.createTable('recovery_codes')
    .addColumn('code_hash', 'text', (c) => c.primaryKey())
    .addColumn('user_id', 'uuid', (c) => c.notNull().references('users.id').onDelete('cascade'))
    .addColumn('created_at', 'timestamptz', (c) => c.notNull())
    .addColumn('used_at', 'timestamptz')
    .execute()
  await db.schema.createIndex('recovery_codes_user').on('recovery_codes').column('user_id').execute()

  await db.schema.createTable('mfa_challenges')
    .addColumn('token_hash', 'text', (c) => c.primaryKey())
    .addColumn('user_id', 'uuid', (c) => c.notNull().references('users.id').onDelete('cascade'))
    // 'verify' (the account has a factor) or 'enrol' (its role must have one first).
    .addColumn('purpose', 'text', (c) => c.notNull())
    // A hash of the password hash the first step checked: a password changed since voids it.
    .addColumn('password_tag', 'text', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull())
    .addColumn('expires_at', 'timestamptz', (c) => c.notNull())
    .addColumn('used_at', 'timestamptz')
    .execute()

  await db.schema.alterTable('sessions').addColumn('aal', 'integer', (c) => c.notNull().defaultTo(1)).execute()
  await db.schema.alterTable('sessions').addColumn('amr', 'text', (c) => c.notNull().defaultTo(sql`'pwd'`)).execute()
}

export async function down (db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('sessions').dropColumn('amr').execute()
  await db.schema.alterTable('sessions').dropColumn('aal').execute()
  await db.schema.dropTable('mfa_challenges').execute()
  await db.schema.dropTable('recovery_codes').execute()
  await db.schema.dropTable('mfa_factors').execute()
}
