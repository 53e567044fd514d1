import { readFileSync } from 'node:fs'
import t from 'tap'
import { configTable, ConfigSchema, envExample } from '../../schemas/config.js'

const read = (file: string) => readFileSync(new URL(`../../${file}`, import.meta.url), 'utf8')

t.test('README carries the configuration table generated from the schema', async (t) => {
  const readme = read('README.md')
  const section = /<!-- config:start -->\n([\s\S]*?)\n<!-- config:end -->/.exec(readme)
  t.ok(section, 'README has the config markers')
  t.equal(section?.[1], configTable(), 'regenerate with: npm run cli -- config')
})

t.test('.env.example lists every variable, commented, as generated from the schema', async (t) => {
  const example = read('.env.example')
  t.equal(example, envExample(), 'regenerate with: npm run cli -- env > .env.example')
  for (const name of Object.keys(ConfigSchema.properties)) {
    t.match(example, new RegExp(`^#? ?${name}=`, 'm'), `${name} is listed`)
  }
})
