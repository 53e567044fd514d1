// The container files, checked statically where no engine checks them: compose.yaml and
// deploy/prometheus.yml (no Compose engine runs in CI), and the few facts of the Dockerfile and
// .dockerignore that building and running the image cannot show.
// .ci/dockerfile-check (in CI) builds the Dockerfile with podman and runs the image, so what that
// proves is not repeated here: two stages on node:22-slim, the compiler and dev dependencies left
// in the build stage, /app holding only package.json, dist and node_modules, USER node (uid 1000),
// EXPOSE 8000, production with HOST 0.0.0.0, PORT 8000 and SQLite in the /data volume, the
// HEALTHCHECK on the container's port, PID 1 running npm start's node command and exiting 0 on
// SIGTERM, and every file the build needs in the build context.
// Every rule is a function that returns null when its file is right and a reason when not; the
// last test breaks each file in the way each rule is about and wants the rule to say so, so no
// rule here can pass whatever the file says.
import { existsSync, readFileSync } from 'node:fs'
import { join, posix } from 'node:path'
import t from 'tap'
import { parse } from 'yaml'
import { ConfigSchema } from '../schemas/config.js'

const ROOT = join(import.meta.dirname, '..')
const read = (file: string) => readFileSync(join(ROOT, file), 'utf8')

/** Our configuration variables: every name the service reads (schemas/config.ts). */
const CONFIG = new Set(Object.keys(ConfigSchema.properties))
/**
 * Variables the container files may set that are not ours, each with its reason. None for now;
 * add one here with a comment rather than loosening a rule.
 */
const ENV_EXCEPTIONS = new Set<string>([])
const SECRET_NAME = /SECRET|TOKEN|PASSWORD|PASSWD|PRIVATE_KEY|API_KEY|CREDENTIAL/i

type Doc = Record<string, any>
interface Rule<C> { id: string, what: string, check: (c: C) => string | null }
const problem = (ok: boolean, reason: string) => (ok ? null : reason)

// ---------------------------------------------------------------------------------------------
// compose.yaml and deploy/prometheus.yml

interface ComposeFiles { compose: Doc, prometheus: Doc, prometheusPath: string | null }

/** A Compose value with ${VAR}, ${VAR:-default} and ${VAR-default} resolved against an empty environment; ${VAR:?msg} becomes <VAR>. */
function interpolate (value: unknown): string {
  return String(value).replace(/\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}/g, (all, name: string, op?: string, arg?: string) => {
    if (all === '$$') return '$'
    if (op?.endsWith('-')) return arg ?? ''
    return `<${name}>`
  })
}

/** A service's environment as a map, from either of Compose's two forms. */
function environment (service: Doc | undefined): Record<string, string> {
  const env = service?.environment ?? {}
  if (!Array.isArray(env)) return Object.fromEntries(Object.entries(env).map(([k, v]) => [k, String(v ?? '')]))
  return Object.fromEntries(env.map((e: string) => [e.split('=')[0], e.split('=').slice(1).join('=')]))
}

/** The container ports a service publishes, from the short ("8000:8000") or the long ({ target }) syntax. */
function containerPorts (service: Doc | undefined): number[] {
  return (service?.ports ?? []).map((p: string | number | Doc) => typeof p === 'object' ? Number(p.target) : Number(String(p).split('/')[0].split(':').at(-1)))
}

const healthcheckText = (service: Doc | undefined) => [service?.healthcheck?.test ?? []].flat().join(' ')
const serviceBuildingHere = (compose: Doc) => Object.keys(compose.services ?? {}).find((name) => {
  const build = compose.services[name].build
  return build === '.' || build?.context === '.'
})
const authJob = (prometheus: Doc) => (prometheus.scrape_configs ?? []).find((job: Doc) =>
  (job.static_configs ?? []).some((s: Doc) => (s.targets ?? []).includes('auth:8000')))

const composeRules: Array<Rule<ComposeFiles>> = [
  {
    id: 'services',
    what: 'services auth, postgres, redis and prometheus',
    check: ({ compose }) => {
      const missing = ['auth', 'postgres', 'redis', 'prometheus'].filter((s) => !compose.services?.[s])
      return problem(missing.length === 0, `missing services: ${missing.join(', ')}`)
    }
  },
  {
    id: 'build',
    what: 'auth is built from this directory (the Dockerfile)',
    check: ({ compose }) => problem(serviceBuildingHere(compose) === 'auth' && !compose.services.auth.image?.includes('/'),
      `auth's build is ${JSON.stringify(compose.services?.auth?.build)}`)
  },
  {
    id: 'ports',
    what: 'auth publishes the container port 8000',
    check: ({ compose }) => problem(containerPorts(compose.services?.auth).includes(8000), `auth publishes ${JSON.stringify(compose.services?.auth?.ports)}`)
  },
  {
    id: 'depends_on',
    what: 'auth waits for healthy postgres and redis',
    check: ({ compose }) => {
      const deps = compose.services?.auth?.depends_on ?? {}
      const unhealthy = ['postgres', 'redis'].filter((s) => Array.isArray(deps) || deps[s]?.condition !== 'service_healthy')
      return problem(unhealthy.length === 0, `not waited for as service_healthy: ${unhealthy.join(', ')}`)
    }
  },
  {
    id: 'healthchecks',
    what: 'postgres (pg_isready) and redis (redis-cli ping) have healthchecks, so service_healthy can happen',
    check: ({ compose }) => problem(/pg_isready/.test(healthcheckText(compose.services?.postgres)) && /redis-cli.*ping/.test(healthcheckText(compose.services?.redis)),
      `postgres: "${healthcheckText(compose.services?.postgres)}", redis: "${healthcheckText(compose.services?.redis)}"`)
  },
  {
    id: 'env-known',
    what: 'every variable auth is given is one of ours (schemas/config.ts)',
    check: ({ compose }) => {
      const unknown = Object.keys(environment(compose.services?.auth)).filter((k) => !CONFIG.has(k) && !ENV_EXCEPTIONS.has(k))
      return problem(unknown.length === 0, `not configuration variables: ${unknown.join(', ')}`)
    }
  },
  {
    id: 'database',
    what: "DATABASE_URL is the postgres service's database, with its user and password",
    check: ({ compose }) => {
      const url = interpolate(environment(compose.services?.auth).DATABASE_URL ?? '')
      const pg = Object.fromEntries(Object.entries(environment(compose.services?.postgres)).map(([k, v]) => [k, interpolate(v)]))
      const m = /^postgres(?:ql)?:\/\/([^:@/]+):([^@/]*)@([^:/]+):(\d+)\/([^?]+)/.exec(url)
      return problem(!!m && m[3] === 'postgres' && m[4] === '5432' && m[1] === (pg.POSTGRES_USER ?? 'postgres') &&
        m[2] === pg.POSTGRES_PASSWORD && m[5] === (pg.POSTGRES_DB ?? pg.POSTGRES_USER ?? 'postgres'),
      `DATABASE_URL ${url} against postgres's ${JSON.stringify(pg)}`)
    }
  },
  {
    id: 'redis',
    what: 'REDIS_URL is the redis service',
    check: ({ compose }) => {
      const url = interpolate(environment(compose.services?.auth).REDIS_URL ?? '')
      return problem(/^redis:\/\/redis(:6379)?(\/\d*)?$/.test(url), `REDIS_URL is ${url || 'unset'}`)
    }
  },
  {
    id: 'secrets',
    what: 'KEY_ENCRYPTION_SECRET, METRICS_TOKEN and every other secret come from the environment, required, never written here',
    check: ({ compose }) => {
      const env = environment(compose.services?.auth)
      const bad = [...new Set(['KEY_ENCRYPTION_SECRET', 'METRICS_TOKEN', ...Object.keys(env).filter((k) => SECRET_NAME.test(k))])]
        .filter((k) => !new RegExp(`^\\$\\{${k}:\\?[^}]+\\}$`).test(env[k] ?? ''))
      return problem(bad.length === 0, `not \${NAME:?message}: ${bad.map((k) => `${k}=${env[k] ?? '(unset)'}`).join(', ')}`)
    }
  },
  {
    id: 'postgres-volume',
    what: "postgres keeps its data in a named volume at the image's data directory",
    check: ({ compose }) => {
      const volumes: string[] = (compose.services?.postgres?.volumes ?? []).map(String)
      const named = volumes.map((v) => v.split(':')).find(([, target]) => target === '/var/lib/postgresql/data')?.[0]
      return problem(!!named && !named.startsWith('.') && !named.startsWith('/') && named in (compose.volumes ?? {}), `postgres volumes: ${volumes.join(', ') || 'none'}`)
    }
  },
  {
    id: 'prometheus-config',
    what: 'prometheus mounts deploy/prometheus.yml as its configuration',
    check: ({ compose, prometheusPath }) => problem(prometheusPath === 'deploy/prometheus.yml' && existsSync(join(ROOT, prometheusPath)),
      `prometheus's configuration is ${prometheusPath ?? 'not mounted'}; volumes ${JSON.stringify(compose.services?.prometheus?.volumes)}`)
  },
  {
    id: 'scrape',
    what: 'prometheus scrapes auth:8000 at /metrics',
    check: ({ compose, prometheus }) => {
      const job = authJob(prometheus)
      const [host, port] = ['auth', 8000]
      return problem(!!job && serviceBuildingHere(compose) === host && containerPorts(compose.services?.auth).includes(port) &&
        (job.metrics_path ?? '/metrics') === '/metrics' && (job.scheme ?? 'http') === 'http',
      `scrape jobs: ${JSON.stringify(prometheus.scrape_configs)}`)
    }
  },
  {
    id: 'metrics-token',
    what: "prometheus sends auth's METRICS_TOKEN: credentials_file is a Compose secret made from that variable",
    check: ({ compose, prometheus }) => {
      const authorization = authJob(prometheus)?.authorization ?? {}
      const file = /^\/run\/secrets\/([^/]+)$/.exec(authorization.credentials_file ?? '')
      const granted = (compose.services?.prometheus?.secrets ?? []).some((s: string | Doc) =>
        typeof s === 'string' ? s === file?.[1] : (s.target ?? s.source) === file?.[1])
      const source = Object.entries(compose.secrets ?? {}).find(([name]) => name === file?.[1])?.[1] as Doc | undefined
      const variable = /^\$\{([A-Z_]+):\?/.exec(environment(compose.services?.auth).METRICS_TOKEN ?? '')?.[1]
      return problem((authorization.type ?? 'Bearer') === 'Bearer' && !authorization.credentials && !!file && granted &&
        !!variable && source?.environment === variable,
      `authorization ${JSON.stringify(authorization)}, prometheus secrets ${JSON.stringify(compose.services?.prometheus?.secrets)}, top-level secrets ${JSON.stringify(compose.secrets)}`)
    }
  }
]

function composeFiles (): ComposeFiles {
  const compose = parse(read('compose.yaml')) as Doc
  const mount = (compose.services?.prometheus?.volumes ?? []).map(String).map((v: string) => v.split(':'))
    .find(([, target]: string[]) => target === '/etc/prometheus/prometheus.yml')
  const prometheusPath = mount ? posix.normalize(mount[0]) : null
  const prometheus = parse(read(prometheusPath ?? 'deploy/prometheus.yml')) as Doc
  return { compose, prometheus, prometheusPath }
}

// ---------------------------------------------------------------------------------------------
// Dockerfile

interface Instruction { keyword: string, args: string }
interface Stage { image: string, name: string, instructions: Instruction[] }

/** The stages of a Dockerfile: continuation lines joined, comments dropped. */
function stagesOf (text: string): Stage[] {
  const stages: Stage[] = []
  const joined = text.split('\n').filter((l) => !/^\s*#/.test(l) && l.trim() !== '').join('\n').replace(/\\\s*\n/g, '')
  for (const line of joined.split('\n')) {
    const [, keyword, args] = /^\s*(\S+)\s*(.*)$/.exec(line)!
    if (keyword.toUpperCase() === 'FROM') {
      const [image, as, name] = args.split(/\s+/)
      stages.push({ image, name: as?.toUpperCase() === 'AS' ? name : String(stages.length), instructions: [] })
    } else stages.at(-1)?.instructions.push({ keyword: keyword.toUpperCase(), args: args.trim() })
  }
  return stages
}

const of = (stage: Stage | undefined, keyword: string) => (stage?.instructions ?? []).filter((i) => i.keyword === keyword)
const envOf = (stage: Stage | undefined): Record<string, string> => Object.fromEntries(of(stage, 'ENV').flatMap((i) =>
  i.args.includes('=')
    ? [...i.args.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|'[^']*'|\S*)/g)].map((m) => [m[1], m[2].replace(/^["']|["']$/g, '')])
    : [[i.args.split(/\s+/)[0], i.args.split(/\s+/).slice(1).join(' ')]]))
const argsOf = (stage: Stage | undefined): Record<string, string> => Object.fromEntries(of(stage, 'ARG').map((i) => i.args.split('=')).map(([k, ...v]) => [k, v.join('=')]))

// What the engine cannot tell: the HEALTHCHECK passes on /api/health/ready as well while the
// database answers, every unknown variable is ignored, and a secret baked into the image works.
const dockerfileRules: Array<Rule<Stage[]>> = [
  {
    id: 'healthcheck',
    what: 'the HEALTHCHECK is liveness (/api/health), not readiness: a database outage must not get the container restarted',
    check: (stages) => {
      const hc = of(stages.at(-1), 'HEALTHCHECK').at(-1)?.args ?? ''
      return problem(/\/api\/health(?![\w/])/.test(hc), `HEALTHCHECK ${hc || '(none)'}`)
    }
  },
  {
    id: 'env-known',
    what: 'every ENV is one of our configuration variables',
    check: (stages) => {
      const unknown = stages.flatMap((s) => Object.keys(envOf(s))).filter((k) => !CONFIG.has(k) && !ENV_EXCEPTIONS.has(k))
      return problem(unknown.length === 0, `not configuration variables: ${unknown.join(', ')}`)
    }
  },
  {
    id: 'no-secrets',
    what: 'no secret-looking ENV or ARG has a value in the image',
    check: (stages) => {
      const baked = stages.flatMap((s) => Object.entries({ ...argsOf(s), ...envOf(s) })).filter(([k, v]) => SECRET_NAME.test(k) && v !== '').map(([k]) => k)
      return problem(baked.length === 0, `secrets in the image: ${baked.join(', ')}`)
    }
  }
]

// ---------------------------------------------------------------------------------------------
// .dockerignore, matched as Docker matches it (moby/patternmatcher): last matching pattern wins,
// `!` re-includes, a pattern that matches a directory takes what is in it. Kept here: what leaks
// into the build context shows nowhere in the image (the runtime stage copies only package.json,
// dist and node_modules), and the clone CI builds has no .env, keys or data to leak. (That every
// file the build reads gets in, the build itself shows.)

function ignoreMatcher (text: string) {
  const patterns = text.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#')).map((raw) => {
    const negate = raw.startsWith('!')
    const p = posix.normalize((negate ? raw.slice(1) : raw).trim()).replace(/^\/(?=.)/, '').replace(/\/$/, '')
    let re = '^'
    for (let i = 0; i < p.length; i++) {
      if (p[i] === '*' && p[i + 1] === '*') {
        i += p[i + 2] === '/' ? 2 : 1
        re += i + 1 >= p.length ? '.*' : '(.*/)?'
      } else if (p[i] === '*') re += '[^/]*'
      else if (p[i] === '?') re += '[^/]'
      else re += p[i].replace(/[.+()|{}$^\\]/, '\\$&')
    }
    return { negate, re: new RegExp(`${re}$`) }
  })
  return (path: string) => {
    const prefixes = path.split('/').map((_, i, parts) => parts.slice(0, i + 1).join('/'))
    let ignored = false
    for (const p of patterns) if (prefixes.some((prefix) => p.re.test(prefix))) ignored = !p.negate
    return ignored
  }
}

const mustBeIgnored = ['node_modules/fastify/package.json', '.env', '.env.production', '.git/HEAD', 'dist/server.js', 'data/auth.db', 'coverage/lcov.info', '.tap/processinfo/x.json', 'certs/server.key', 'key.pem', '.npmrc', 'npm-debug.log']
const dockerignoreRules: Array<Rule<string>> = [
  {
    id: 'excludes',
    what: 'node_modules, .env files, .git, dist, data, coverage, keys and logs stay out of the build context',
    check: (text) => {
      const ignored = ignoreMatcher(text)
      const letIn = mustBeIgnored.filter((p) => !ignored(p))
      return problem(letIn.length === 0, `these get into the build context: ${letIn.join(', ')}`)
    }
  }
]

// ---------------------------------------------------------------------------------------------

t.test('compose.yaml and deploy/prometheus.yml', async (t) => {
  const files = composeFiles()
  for (const rule of composeRules) t.equal(rule.check(files), null, rule.what)
})

t.test('Dockerfile', async (t) => {
  const stages = stagesOf(read('Dockerfile'))
  for (const rule of dockerfileRules) t.equal(rule.check(stages), null, rule.what)
})

t.test('.dockerignore', async (t) => {
  const text = read('.dockerignore')
  for (const rule of dockerignoreRules) t.equal(rule.check(text), null, rule.what)
})

/** A deep copy of the parsed files, changed by `change`. */
const changed = (change: (f: ComposeFiles) => void) => {
  const files = structuredClone(composeFiles())
  change(files)
  return files
}

t.test('every rule fails on a file that breaks it', async (t) => {
  const compose: Array<[string, string, (f: ComposeFiles) => void]> = [
    ['services', 'no redis', (f) => { delete f.compose.services.redis }],
    ['build', 'auth pulls an image instead of building', (f) => { delete f.compose.services.auth.build; f.compose.services.auth.image = 'example/auth' }],
    ['ports', 'auth publishes 8080 only', (f) => { f.compose.services.auth.ports = ['8080:8080'] }],
    ['depends_on', 'redis is only started, not healthy', (f) => { f.compose.services.auth.depends_on.redis = { condition: 'service_started' } }],
    ['depends_on', 'the list form (no condition)', (f) => { f.compose.services.auth.depends_on = ['postgres', 'redis'] }],
    ['healthchecks', 'postgres without a healthcheck', (f) => { delete f.compose.services.postgres.healthcheck }],
    ['env-known', 'a misspelt variable', (f) => { f.compose.services.auth.environment.DATABASE_URI = 'postgres://x' }],
    ['database', 'DATABASE_URL on localhost', (f) => { f.compose.services.auth.environment.DATABASE_URL = 'postgres://auth:auth@localhost:5432/auth' }],
    ['database', 'the wrong password', (f) => { f.compose.services.postgres.environment.POSTGRES_PASSWORD = 'other' }],
    ['redis', 'REDIS_URL on localhost', (f) => { f.compose.services.auth.environment.REDIS_URL = 'redis://127.0.0.1:6379' }],
    ['secrets', 'a literal KEY_ENCRYPTION_SECRET', (f) => { f.compose.services.auth.environment.KEY_ENCRYPTION_SECRET = 'a-literal-secret-of-at-least-32-characters' }],
    ['secrets', 'METRICS_TOKEN with a default', (f) => { f.compose.services.auth.environment.METRICS_TOKEN = '$' + '{METRICS_TOKEN:-0123456789abcdef}' }],
    ['postgres-volume', 'postgres data in an anonymous volume', (f) => { f.compose.services.postgres.volumes = ['/var/lib/postgresql/data'] }],
    ['prometheus-config', 'another configuration file', (f) => { f.prometheusPath = 'deploy/other.yml' }],
    ['scrape', 'scraping /api/metrics', (f) => { authJob(f.prometheus).metrics_path = '/api/metrics' }],
    ['scrape', 'no job for auth:8000', (f) => { f.prometheus.scrape_configs[0].static_configs[0].targets = ['auth:9000'] }],
    ['metrics-token', 'no authorization', (f) => { delete authJob(f.prometheus).authorization }],
    ['metrics-token', 'the secret not granted to prometheus', (f) => { f.compose.services.prometheus.secrets = [] }],
    ['metrics-token', 'the secret made from another variable', (f) => { f.compose.secrets.metrics_token.environment = 'OTHER_TOKEN' }]
  ]
  for (const [id, what, change] of compose) {
    const rule = composeRules.find((r) => r.id === id)!
    t.not(rule.check(changed(change)), null, `compose ${id} catches: ${what}`)
  }

  const dockerfile = read('Dockerfile')
  const docker: Array<[string, string, string | RegExp, string]> = [
    ['healthcheck', 'the readiness route', '/api/health\'', '/api/health/ready\''],
    ['healthcheck', 'no HEALTHCHECK', /HEALTHCHECK[^\n]*\\\n[^\n]*\n/, ''],
    ['env-known', 'an unknown ENV', 'PORT=8000 \\', 'PORT=8000 LISTEN_PORT=8000 \\'],
    ['no-secrets', 'a baked KEY_ENCRYPTION_SECRET', 'PORT=8000 \\', 'PORT=8000 KEY_ENCRYPTION_SECRET=0123456789abcdef0123456789abcdef \\'],
    ['no-secrets', 'an ARG with a token', 'WORKDIR /app\nRUN apt-get', 'WORKDIR /app\nARG NPM_TOKEN=abc\nRUN apt-get']
  ]
  for (const [id, what, from, to] of docker) {
    const broken = dockerfile.replace(from, to)
    t.not(broken, dockerfile, `the Dockerfile change "${what}" applies`)
    t.not(dockerfileRules.find((r) => r.id === id)!.check(stagesOf(broken)), null, `Dockerfile ${id} catches: ${what}`)
  }

  const ignore = read('.dockerignore')
  const ignores: Array<[string, string, (text: string) => string]> = [
    ['excludes', 'node_modules let in', (text) => text.replace(/^node_modules$/m, '')],
    ['excludes', '.env re-included at the end', (text) => `${text}\n!.env\n`],
    ['excludes', '.git let in', (text) => text.replace(/^\.git$/m, '')]
  ]
  for (const [id, what, change] of ignores) {
    const broken = change(ignore)
    t.not(broken, ignore, `the .dockerignore change "${what}" applies`)
    t.not(dockerignoreRules.find((r) => r.id === id)!.check(broken), null, `.dockerignore ${id} catches: ${what}`)
  }

  const tried = new Set([...compose.map(([id]) => `compose:${id}`), ...docker.map(([id]) => `docker:${id}`), ...ignores.map(([id]) => `ignore:${id}`)])
  const rules = [...composeRules.map((r) => `compose:${r.id}`), ...dockerfileRules.map((r) => `docker:${r.id}`), ...dockerignoreRules.map((r) => `ignore:${r.id}`)]
  t.same(rules.filter((r) => !tried.has(r)), [], 'every rule is shown failing at least once')
})
