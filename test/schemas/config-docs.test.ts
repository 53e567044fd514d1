import { readdirSync, readFileSync } from 'node:fs'
import t from 'tap'
import { configTable, ConfigSchema, envExample } from '../../schemas/config.js'

const read = (file: string) => readFileSync(new URL(`../../${file}`, import.meta.url), 'utf8')
const MARKERS = /<!-- config:start -->\n([\s\S]*?)\n<!-- config:end -->/

t.test('docs/configuration.md carries the configuration table generated from the schema', async (t) => {
  const reference = read('docs/configuration.md')
  const section = MARKERS.exec(reference)
  t.ok(section, 'docs/configuration.md has the config markers')
  t.equal(section?.[1], configTable(), 'regenerate with: npm run cli -- config')
  for (const name of Object.keys(ConfigSchema.properties)) {
    t.match(section?.[1] ?? '', `| \`${name}\` |`, `${name} is in the table`)
  }
})

t.test('the table lives in one place only', async (t) => {
  // A second copy (README.md used to carry it) would go stale without a test noticing.
  const guides = readdirSync(new URL('../../docs/', import.meta.url)).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)
  for (const file of ['README.md', 'bench/README.md', ...guides].filter((f) => f !== 'docs/configuration.md')) {
    t.notMatch(read(file), /<!-- config:(start|end) -->/, `${file} has no config markers`)
  }
})

t.test('.env.example lists every variable, commented, as generated from the schema', async (t) => {
  const example = read('.env.example')
  t.equal(example, envExample(), 'regenerate with: npm run cli -- env > .env.example')
  for (const name of Object.keys(ConfigSchema.properties)) {
    t.match(example, new RegExp(`^#? ?${name}=`, 'm'), `${name} is listed`)
  }
})
