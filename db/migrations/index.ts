import type { Migration } from 'kysely'
import * as m0001 from './0001_initial.js'
import * as m0002 from './0002_events_and_revocations.js'
import * as m0003 from './0003_one_time_tokens.js'
import * as m0004 from './0004_roles.js'
import * as m0005 from './0005_normalized_emails.js'
import * as m0006 from './0006_second_factors.js'

/** Every migration, in order. Kysely's Migrator reads them from here (no file-system scan). */
export const migrations: Record<string, Migration> = {
  '0001_initial': m0001,
  '0002_events_and_revocations': m0002,
  '0003_one_time_tokens': m0003,
  '0004_roles': m0004,
  '0005_normalized_emails': m0005,
  '0006_second_factors': m0006
}
