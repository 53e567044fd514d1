/**
 * Summarises a V8 CPU profile (a .cpuprofile file, as `node --cpu-prof`
 * writes) by self time: the functions the process spent the most time in
 * themselves (not counting their callees), and the same grouped by package.
 *
 *   npx tsx bench/cpuprofile.ts <file.cpuprofile> [top=20]
 *
 * bench/run.ts --profile uses it on the service's profiles, counting only
 * the samples taken during the timed load (a window in µs of the monotonic
 * clock, which V8's profile timestamps use too), so start-up work (module
 * loading, schema compilation) stays out. Percentages are of the busy time:
 * the sampled time less "(idle)".
 */
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

interface ProfileNode {
  id: number
  callFrame: { functionName: string, url: string, lineNumber: number }
  children?: number[]
}

interface Profile {
  startTime: number
  nodes: ProfileNode[]
  samples: number[]
  timeDeltas: number[]
}

export interface SelfTime { name: string, where: string, ms: number, pct: number }

export interface ProfileSummary {
  file: string
  sampledMs: number
  idleMs: number
  busyMs: number
  top: SelfTime[]
  byPackage: Array<{ name: string, ms: number, pct: number }>
}

/** A location short enough to read: a package's own path, the service's file, or node's module. */
function where (url: string, line: number): string {
  if (!url) return ''
  const path = url.replace(/^file:\/\//, '')
  const inModules = path.lastIndexOf('/node_modules/')
  const short = inModules >= 0 ? path.slice(inModules + '/node_modules/'.length) : path.replace(/^.*?\/(dist|bench)\//, '$1/')
  return `${short}:${line + 1}`
}

/** What a frame belongs to: an npm package, the service's code, node itself, or V8's own bookkeeping. */
function packageOf (name: string, url: string): string {
  if (!url) return name.startsWith('(') ? name : '(native)'
  if (url.startsWith('node:')) return 'node internals'
  const match = /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url.slice(url.lastIndexOf('/node_modules/')))
  if (match) return match[1]
  return /\/dist\//.test(url) ? 'the service (dist/)' : url
}

/** Samples within `window` (µs, monotonic clock) only, when given. */
export function summarise (file: string, top = 20, window?: { fromUs: number, toUs: number }): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile
  const byId = new Map(profile.nodes.map((n) => [n.id, n]))
  // A sample lasts until the next one; the last one, as long as the one before it.
  const selfUs = new Map<number, number>()
  const { samples, timeDeltas } = profile
  let at = profile.startTime
  for (let i = 0; i < samples.length; i++) {
    at += timeDeltas[i]
    if (window && (at < window.fromUs || at > window.toUs)) continue
    const us = timeDeltas[i + 1] ?? timeDeltas[i] ?? 0
    selfUs.set(samples[i], (selfUs.get(samples[i]) ?? 0) + Math.max(0, us))
  }
  const functions = new Map<string, { name: string, where: string, us: number }>()
  const packages = new Map<string, number>()
  let sampledUs = 0
  let idleUs = 0
  for (const [id, us] of selfUs) {
    const { functionName, url, lineNumber } = byId.get(id)!.callFrame
    const name = functionName || '(anonymous)'
    sampledUs += us
    if (name === '(idle)') { idleUs += us; continue }
    const key = `${name}\u0000${url}\u0000${lineNumber}`
    const entry = functions.get(key) ?? { name, where: where(url, lineNumber), us: 0 }
    entry.us += us
    functions.set(key, entry)
    const pkg = packageOf(name, url)
    packages.set(pkg, (packages.get(pkg) ?? 0) + us)
  }
  const busyUs = sampledUs - idleUs
  const pct = (us: number) => (busyUs > 0 ? (us / busyUs) * 100 : 0)
  return {
    file,
    sampledMs: sampledUs / 1000,
    idleMs: idleUs / 1000,
    busyMs: busyUs / 1000,
    top: [...functions.values()].sort((a, b) => b.us - a.us).slice(0, top).map((f) => ({ name: f.name, where: f.where, ms: f.us / 1000, pct: pct(f.us) })),
    byPackage: [...packages.entries()].sort((a, b) => b[1] - a[1]).slice(0, top).map(([name, us]) => ({ name, ms: us / 1000, pct: pct(us) }))
  }
}

/** The summary as Markdown: two tables. */
export function summaryMarkdown (s: ProfileSummary, packagesShown = 10): string {
  const lines = [
    `Busy ${(s.busyMs / 1000).toFixed(1)} s of ${(s.sampledMs / 1000).toFixed(1)} s sampled (the rest idle).`, '',
    '| self ms | self % | function | where |', '|---:|---:|---|---|',
    ...s.top.map((f) => `| ${f.ms.toFixed(0)} | ${f.pct.toFixed(1)} | \`${f.name}\` | ${f.where} |`), '',
    '| package | self ms | self % |', '|---|---:|---:|',
    ...s.byPackage.slice(0, packagesShown).map((p) => `| ${p.name} | ${p.ms.toFixed(0)} | ${p.pct.toFixed(1)} |`)
  ]
  return lines.join('\n')
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const [file, top] = process.argv.slice(2)
  if (!file) {
    console.error('usage: npx tsx bench/cpuprofile.ts <file.cpuprofile> [top=20]')
    process.exit(2)
  }
  console.log(summaryMarkdown(summarise(file, Number(top ?? 20))))
}
