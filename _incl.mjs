import { readFileSync } from 'node:fs'
const p = JSON.parse(readFileSync(process.argv[2], 'utf8'))
const byId = new Map(p.nodes.map(n => [n.id, n]))
const parent = new Map(); for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
const self = new Map(); const dt = p.timeDeltas
for (let i = 0; i < p.samples.length; i++) self.set(p.samples[i], (self.get(p.samples[i]) ?? 0) + (dt[i] ?? 0))
const incl = new Map()
for (const [id, t] of self) {
  const seen = new Set(); let cur = id
  while (cur !== undefined) { const n = byId.get(cur); const key = `${n.callFrame.functionName || '(anon)'} ${n.callFrame.url.replace(/.*node_modules\//, '').replace(/.*\/dist\//, 'dist/')}:${n.callFrame.lineNumber + 1}`; if (!seen.has(key)) { seen.add(key); incl.set(key, (incl.get(key) ?? 0) + t) } cur = parent.get(cur) }
}
const total = [...self.values()].reduce((a, b) => a + b, 0)
const rows = [...incl].sort((a, b) => b[1] - a[1]).filter(([k]) => !/^\((root|program|idle)/.test(k)).slice(0, Number(process.argv[3] ?? 60))
for (const [k, t] of rows) console.log((t / 1000).toFixed(0).padStart(7), 'ms', (100 * t / total).toFixed(1).padStart(5), '%', k)
