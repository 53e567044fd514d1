/**
 * The report: the targets of the issue and how a scenario meets them,
 * Markdown tables, the machine's description, and the results file
 * (bench/results/<time>.json and bench/results/latest.json).
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { availableParallelism, cpus, loadavg, release, totalmem, type } from 'node:os'
import { join } from 'node:path'
import type { Measured } from './load.js'
import type { ScenarioName } from './scenarios.js'
import { ROOT } from './service.js'

export const RESULTS_DIR = join(ROOT, 'bench', 'results')

/** The issue's targets, for a 2-core machine, as ratios measured in one run. */
export const TARGETS = {
  verifyOfBare: 0.6,
  verifyP99Ms: 10,
  meOfBare: 0.4,
  loginOfHash: 0.9,
  refreshRps: 1500,
  rssMb: 150,
  errors: 0
}

export interface Ceilings {
  bare?: Measured
  /** argon2id verifies a second. */
  hash?: number
  /** CPU ms an argon2id verify takes. */
  hashCpuMs?: number
}

export interface Row {
  scenario: string
  rps: number
  p50: number
  p99: number
  errors: number
  rssMb: number
  /** The service's CPU time per request (every thread), in ms. */
  cpuMs: number
  /** The scenario's req/s over its ceiling's; `byCpu`: the ceiling's CPU per request over the scenario's. */
  ratio: { value: number, byCpu: number, of: 'bare route' | 'hash ceiling' } | null
  target: string
  /** The targets it misses; empty when it meets them all. */
  missed: string[]
}

const peak = (m: Measured) => Math.max(...Object.values(m.peakRssMb))
/** CPU ms per request of a single-process measurement. */
export const cpuOf = (m: Measured) => Object.values(m.cpuMsPerRequest)[0]

/** A scenario's row: its figures, its ratio to its ceiling, and which targets it misses. */
export function row (scenario: ScenarioName | string, m: Measured, ceilings: Ceilings): Row {
  const missed: string[] = []
  const targets: string[] = []
  const against = (of: 'bare route' | 'hash ceiling', ceiling: number | undefined, ceilingCpuMs: number | undefined, min?: number): Row['ratio'] => {
    if (ceiling === undefined) return null
    const value = m.rps / ceiling
    if (min !== undefined) {
      targets.push(`≥ ${min * 100} % of ${of}`)
      if (value < min) missed.push('ratio')
    }
    return { value, byCpu: (ceilingCpuMs ?? NaN) / cpuOf(m), of }
  }
  const bare = (min?: number) => against('bare route', ceilings.bare?.rps, ceilings.bare && cpuOf(ceilings.bare), min)
  const hash = (min?: number) => against('hash ceiling', ceilings.hash, ceilings.hashCpuMs, min)
  let ratio: Row['ratio'] = null
  if (scenario === 'verify') {
    ratio = bare(TARGETS.verifyOfBare)
    targets.push(`p99 < ${TARGETS.verifyP99Ms} ms`)
    if (!(m.p99 < TARGETS.verifyP99Ms)) missed.push('p99')
  } else if (scenario === 'verify-cold') {
    ratio = bare()
  } else if (scenario === 'me') {
    ratio = bare(TARGETS.meOfBare)
  } else if (scenario === 'login') {
    ratio = hash(TARGETS.loginOfHash)
  } else if (scenario === 'signup') {
    ratio = hash()
  } else if (scenario === 'refresh') {
    targets.push(`≥ ${TARGETS.refreshRps.toLocaleString('en')} req/s`)
    if (m.rps < TARGETS.refreshRps) missed.push('req/s')
  }
  if (m.errors > TARGETS.errors) missed.push('errors')
  if (peak(m) >= TARGETS.rssMb) missed.push('RSS')
  return { scenario, rps: m.rps, p50: m.p50, p99: m.p99, errors: m.errors, rssMb: peak(m), cpuMs: cpuOf(m), ratio, target: targets.join(', ') || '-', missed }
}

export const fixed = (x: number | null | undefined, digits = 0) => (x === null || x === undefined || !Number.isFinite(x) ? '-' : x.toLocaleString('en', { minimumFractionDigits: digits, maximumFractionDigits: digits }))
export const percent = (x: number | null | undefined) => (x === null || x === undefined || !Number.isFinite(x) ? '-' : `${(x * 100).toFixed(0)} %`)

export function markdownTable (head: string[], rows: Array<Array<string | number>>, align?: string[]): string {
  const sep = align ?? head.map((_, i) => (i === 0 ? '---' : '---:'))
  return [`| ${head.join(' | ')} |`, `| ${sep.join(' | ')} |`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n')
}

/** The main table: every scenario with its ratio, target and verdict (errors and RSS count for every row). */
export function scenarioTable (rows: Row[]): string {
  return markdownTable(
    ['scenario', 'req/s', 'p50 ms', 'p99 ms', 'errors', 'peak RSS MB', 'CPU ms/req', 'ratio', 'ratio by CPU', 'target', 'result'],
    rows.map((r) => [r.scenario, fixed(r.rps), fixed(r.p50, 2), fixed(r.p99, 2), r.errors, fixed(r.rssMb), fixed(r.cpuMs, 3),
      r.ratio ? `${percent(r.ratio.value)} of ${r.ratio.of}` : '-', r.ratio ? percent(r.ratio.byCpu) : '-', r.target, r.missed.length === 0 ? 'pass' : `**miss** (${r.missed.join(', ')})`]),
    ['---', '---:', '---:', '---:', '---:', '---:', '---:', '---:', '---:', '---', '---']
  )
}

export interface Machine {
  cpu: string
  cores: number
  memoryGb: number
  node: string
  os: string
  loadavgAtStart: number[]
  loadavgAtEnd?: number[]
}

export function machine (): Machine {
  return {
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: availableParallelism(),
    memoryGb: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    os: `${type()} ${release()} ${process.arch}`,
    loadavgAtStart: loadavg().map((x) => Math.round(x * 100) / 100)
  }
}

export const machineLine = (m: Machine) =>
  `${m.cpu}, ${m.cores} cores, ${m.memoryGb} GiB; Node ${m.node.slice(1)}; ${m.os}; load average ${m.loadavgAtStart.join(' / ')} at start${m.loadavgAtEnd ? `, ${m.loadavgAtEnd.join(' / ')} at end` : ''}`

/** bench/results/<stamp>.json and latest.json; returns the first path. */
export function writeResults (stamp: string, results: unknown): string {
  mkdirSync(RESULTS_DIR, { recursive: true })
  const text = JSON.stringify(results, null, 2) + '\n'
  const file = join(RESULTS_DIR, `${stamp}.json`)
  writeFileSync(file, text)
  writeFileSync(join(RESULTS_DIR, 'latest.json'), text)
  return file
}
