// Links in the Markdown guides: README.md, every docs/*.md and bench/README.md. Every relative
// link must reach a file or folder of the repository, and every #anchor (in the same file or in
// `file.md#anchor`) a heading of its target, named as GitHub names it. Code (fenced blocks and
// inline spans) is neither a link nor a heading. The last tests feed the checker documents broken
// in each of these ways and want it to say so, so it cannot pass whatever the files say.
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join, posix } from 'node:path'
import t from 'tap'

const ROOT = join(import.meta.dirname, '..')

/** The documents checked, as paths from the repository root. */
const DOCUMENTS = [
  'README.md',
  ...readdirSync(join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).sort().map((f) => `docs/${f}`),
  'bench/README.md'
]

/** Where links point: a repository on disk, or a set of files in memory for the checker's own tests. */
interface Site {
  exists: (path: string) => boolean
  read: (path: string) => string
}

const disk: Site = {
  exists: (path) => existsSync(join(ROOT, path)),
  read: (path) => readFileSync(join(ROOT, path), 'utf8')
}

/** The lines of a Markdown text with fenced code blocks blanked, so line numbers stay right. */
function outsideFences (text: string): string[] {
  let fence: string | null = null
  return text.split('\n').map((line) => {
    const marker = /^ {0,3}(`{3,}|~{3,})/.exec(line)?.[1]
    if (fence === null && marker) {
      fence = marker
      return ''
    }
    if (fence !== null) {
      if (marker && marker[0] === fence[0] && marker.length >= fence.length && line.trim() === marker) fence = null
      return ''
    }
    return line
  })
}

/** A line with its inline code spans blanked (`[x](y)` inside backticks is not a link). */
const withoutCodeSpans = (line: string) => line.replace(/(`+).+?\1/g, (span) => ' '.repeat(span.length))

/**
 * GitHub's anchor for a heading: its text without markup, lower-cased, punctuation dropped
 * (letters, digits, `_`, `-` and spaces stay), each space a `-`.
 */
export function slug (heading: string): string {
  return heading
    .replace(/!?\[([^\]]*)\]\([^)]*\)/g, '$1')
    .replace(/<[^>]+>/g, '')
    .toLowerCase()
    .replace(/[^\p{L}\p{M}\p{N}\p{Pc}\- ]/gu, '')
    .replace(/ /g, '-')
}

/** Every anchor a document offers: its headings' slugs (repeats get -1, -2, … as on GitHub) and HTML ids. */
export function anchors (text: string): Set<string> {
  const found = new Set<string>()
  const seen = new Map<string, number>()
  for (const line of outsideFences(text)) {
    const heading = /^ {0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$/.exec(line)?.[1]
    if (heading !== undefined) {
      const base = slug(heading.trim())
      const count = seen.get(base) ?? 0
      seen.set(base, count + 1)
      found.add(count === 0 ? base : `${base}-${count}`)
    }
    for (const m of line.matchAll(/<a\s[^>]*\b(?:name|id)="([^"]+)"/g)) found.add(m[1])
  }
  return found
}

interface Link { line: number, target: string }

/** The link targets of a document: inline links and images, reference definitions, HTML hrefs. */
export function links (text: string): Link[] {
  const found: Link[] = []
  outsideFences(text).forEach((raw, i) => {
    const line = withoutCodeSpans(raw)
    const add = (target: string) => found.push({ line: i + 1, target })
    for (const m of line.matchAll(/!?\[(?:[^[\]]|\[[^\]]*\])*\]\(\s*(<[^>]*>|[^)\s]*)(?:\s+"[^"]*")?\s*\)/g)) add(m[1].replace(/^<|>$/g, ''))
    for (const m of line.matchAll(/^ {0,3}\[[^\]]+\]:\s*<?([^\s>]+)>?/g)) add(m[1])
    for (const m of line.matchAll(/\bhref="([^"]+)"/g)) add(m[1])
  })
  return found
}

/** What is wrong with the links of one document (`file` is its path from the repository root). */
export function problems (file: string, site: Site): { checked: number, problems: string[] } {
  const found: string[] = []
  let checked = 0
  for (const { line, target } of links(site.read(file))) {
    if (/^[a-z][a-z0-9+.-]*:/i.test(target) || target.startsWith('//')) continue
    checked++
    const where = `${file}:${line}: ${target}`
    const hash = target.indexOf('#')
    const pathPart = decodeURIComponent(hash === -1 ? target : target.slice(0, hash))
    const anchor = hash === -1 ? null : decodeURIComponent(target.slice(hash + 1))
    const path = pathPart === ''
      ? file
      : posix.normalize(pathPart.startsWith('/') ? pathPart.slice(1) : posix.join(posix.dirname(file), pathPart)).replace(/\/$/, '')
    if (path === '..' || path.startsWith('../')) {
      found.push(`${where}: leaves the repository`)
      continue
    }
    if (!site.exists(path)) {
      found.push(`${where}: no such file`)
      continue
    }
    if (anchor === null || !path.endsWith('.md')) continue
    if (!anchors(site.read(path)).has(anchor)) found.push(`${where}: no heading #${anchor} in ${path}`)
  }
  return { checked, problems: found }
}

t.test('every relative link reaches a file and every anchor a heading', async (t) => {
  t.ok(DOCUMENTS.length >= 3, `documents: ${DOCUMENTS.join(', ')}`)
  let checked = 0
  for (const file of DOCUMENTS) {
    const result = problems(file, disk)
    checked += result.checked
    t.same(result.problems, [], `${file}: ${result.checked} relative links`)
  }
  // The guides link to each other and to the code all over: finding none means the reader broke.
  t.ok(checked >= 30, `${checked} relative links checked`)
})

t.test('anchors are named as GitHub names them', async (t) => {
  const cases: Array<[string, string]> = [
    ['Quick start', 'quick-start'],
    ['Forward auth (nginx, Traefik, Envoy)', 'forward-auth-nginx-traefik-envoy'],
    ['Enumeration: measured', 'enumeration-measured'],
    ['What the figures mean, and what bounds them', 'what-the-figures-mean-and-what-bounds-them'],
    ['`npm run bench`', 'npm-run-bench'],
    ['Scale-out (`--scale-out`)', 'scale-out---scale-out'],
    ['The [first](admin.md) admin', 'the-first-admin'],
    ['When PostgreSQL or Redis goes away', 'when-postgresql-or-redis-goes-away'],
    ['snake_case and Ünïcode', 'snake_case-and-ünïcode']
  ]
  for (const [heading, expected] of cases) t.equal(slug(heading), expected, heading)
  t.same([...anchors('# A\n## A\n### A\n```sh\n# Not a heading\n```\n<a name="here"></a>\n')], ['a', 'a-1', 'a-2', 'here'])
})

t.test('the checker finds each kind of broken link', async (t) => {
  const files: Record<string, string> = {
    'README.md': '# Guide\n\n## Start here\n\nSee [the guide](docs/guide.md).\n',
    'docs/guide.md': '# The guide\n\n## Keys and rotation\n\nText.\n',
    'db/migrations/0001_init.ts': ''
  }
  const site: Site = {
    exists: (path) => path in files || Object.keys(files).some((f) => f.startsWith(`${path}/`)),
    read: (path) => files[path]
  }
  const check = (text: string) => {
    files['docs/test.md'] = `# Test\n\n## Here\n\n${text}\n`
    return problems('docs/test.md', site)
  }

  const good = [
    '[up](../README.md)', '[anchor there](../README.md#start-here)', '[anchor](guide.md#keys-and-rotation)',
    '[here](#here)', '[folder](../db/migrations)', '[folder/](../db/migrations/)', '[web](https://example.com/x.md#nope)',
    '[mail](mailto:a@example.com)', '`[code](missing.md)`', '```md\n[fenced](missing.md)\n```', '[root](/README.md#guide)',
    '[ref]: guide.md#the-guide', '<a href="guide.md">html</a>', '[titled](guide.md "The guide")'
  ]
  for (const text of good) t.same(check(text).problems, [], `accepted: ${text}`)
  t.equal(check(good.join('\n\n')).checked, 10, 'relative links counted, external ones and code left out')

  const bad: Array<[string, RegExp]> = [
    ['[gone](missing.md)', /no such file/],
    ['[path from the root, not from docs/](docs/guide.md)', /no such file/],
    ['[not ../](README.md)', /no such file/],
    ['[anchor](#nowhere)', /no heading #nowhere in docs\/test\.md/],
    ['[anchor there](guide.md#sessions)', /no heading #sessions in docs\/guide\.md/],
    ['[anchor that moved](../README.md#keys-and-rotation)', /no heading #keys-and-rotation in README\.md/],
    ['[case](guide.md#Keys-and-rotation)', /no heading/],
    ['[a comment in a code block](../README.md#not-a-heading)', /no heading/],
    ['[out](../../elsewhere.md)', /leaves the repository/],
    ['![image](missing.png)', /no such file/],
    ['[ref]: missing.md', /no such file/],
    ['<a href="missing.md">html</a>', /no such file/]
  ]
  files['README.md'] += '\n```sh\n# Not a heading\n```\n'
  for (const [text, reason] of bad) {
    const found = check(text).problems
    t.equal(found.length, 1, `refused: ${text}`)
    t.match(found[0] ?? '', reason, `${text}: ${found[0]}`)
    t.match(found[0] ?? '', /^docs\/test\.md:5: /, 'names the file and the line')
  }
})
