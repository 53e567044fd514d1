/**
 * Runs bench/enumeration.ts (known vs unknown addresses on login, forgot and
 * resend; it starts its own service in-process and stops itself after 60 s)
 * as a child process, killed at 90 s if it has not ended, and reads the
 * summary it writes to bench/results/enumeration.json.
 */
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { track } from './guard.js'
import { fixed, markdownTable, RESULTS_DIR } from './report.js'
import { ROOT } from './service.js'

const HARD_STOP_MS = 90_000
const FILE = join(RESULTS_DIR, 'enumeration.json')

interface Side { median_ms: number }
interface EndpointResult {
  path: string
  compared: string
  unexpected_statuses: number
  known: Side
  unknown: Side
  median_difference_ms: number
  median_difference_pct: number
  server: { known: Side, unknown: Side, median_difference_ms: number, median_difference_pct: number }
}

export interface EnumerationSummary {
  exitCode: number | null
  complete: boolean
  endpoints: Record<string, EndpointResult>
}

export async function runEnumeration (): Promise<EnumerationSummary> {
  const started = Date.now()
  // As `npx tsx bench/enumeration.ts` runs it (autoload recognises tsx's CLI, not `node --import tsx`).
  const tsx = fileURLToPath(import.meta.resolve('tsx/cli'))
  const child = spawn(process.execPath, [tsx, join('bench', 'enumeration.ts')], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] })
  track(child)
  const timer = setTimeout(() => child.kill('SIGKILL'), HARD_STOP_MS)
  const [exitCode] = await once(child, 'exit') as [number | null]
  clearTimeout(timer)
  // A file from an earlier run says nothing about this one.
  if ((statSync(FILE, { throwIfNoEntry: false })?.mtimeMs ?? 0) < started) throw new Error(`bench/enumeration.ts wrote no ${FILE} (exit ${exitCode})`)
  const data = JSON.parse(readFileSync(FILE, 'utf8')) as { complete: boolean, endpoints: Record<string, EndpointResult> }
  return { exitCode, complete: data.complete, endpoints: data.endpoints }
}

const signed = (x: number, digits: number) => `${x >= 0 ? '+' : ''}${fixed(x, digits)}`

export function enumerationTable (s: EnumerationSummary): string {
  return markdownTable(
    ['endpoint', 'compared', 'known median ms', 'unknown median ms', 'difference (client)', 'difference (server)', 'unexpected statuses'],
    Object.entries(s.endpoints).map(([name, e]) => [
      name,
      e.compared,
      fixed(e.known.median_ms, 2),
      fixed(e.unknown.median_ms, 2),
      `${signed(e.median_difference_ms, 2)} ms (${signed(e.median_difference_pct, 1)} %)`,
      `${signed(e.server.median_difference_ms, 2)} ms (${signed(e.server.median_difference_pct, 1)} %)`,
      e.unexpected_statuses
    ]),
    ['---', '---', '---:', '---:', '---:', '---:', '---:']
  )
}
