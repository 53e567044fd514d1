import neostandard from 'neostandard'

/**
 * Imports go one way: routes → plugins → services → db, schemas importing
 * none of them (docs/architecture.md). A backward import fails the lint.
 */
const layer = (files, forbidden, why) => ({
  files,
  rules: { 'no-restricted-imports': ['error', { patterns: [{ group: forbidden, message: why }] }] }
})

export default [
  ...neostandard({ ts: true, ignores: ['dist/**', 'coverage/**', '.tap/**', 'node_modules/**'] }),
  layer(['schemas/**/*.ts'], ['**/plugins/**', '**/services/**', '**/routes/**', '**/db/*', '**/db/**/*', 'fastify', 'fastify-plugin'], 'schemas describe the contract: they import no plugin, service, route or query.'),
  layer(['db/**/*.ts'], ['**/plugins/**', '**/services/**', '**/routes/**', '**/schemas/*', 'fastify', 'fastify-plugin'], 'a query knows no domain and no HTTP: db imports nothing of the service.'),
  layer(['services/**/*.ts'], ['**/plugins/**', '**/routes/**', 'fastify', 'fastify-plugin'], 'a service knows no HTTP: it imports nothing of fastify, no plugin and no route.'),
  layer(['plugins/**/*.ts'], ['**/routes/**'], 'plugins wire services; routes use them, not the other way.'),
  layer(['plugins/external/**/*.ts'], ['**/routes/**', '**/plugins/app/**', '../app/*'], 'the platform (plugins/external) knows nothing of the service\'s own plugins: they build on it.'),
  layer(['routes/**/*.ts'], ['**/db/*', '**/db/**/*'], 'a route never touches SQL: it calls a service.')
]
