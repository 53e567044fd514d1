/**
 * What keeps a benchmark on this machine and tidy: targets must be loopback
 * addresses, every child process is killed on any way out (normal end, an
 * error, Ctrl-C, the time budget), and what was made for the run (a temporary
 * directory, a throwaway database, Redis keys) is removed.
 */
import type { ChildProcess } from 'node:child_process'

const children = new Set<ChildProcess>()
const cleanups: Array<() => Promise<void>> = []

/** Refuses anything but 127.0.0.0/8, localhost and ::1: benchmarks send load to this machine only. */
export function assertLoopback (url: string | URL, what: string): void {
  const host = new URL(url).hostname.replace(/^\[|\]$/g, '')
  const loopback = host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host)
  if (!loopback) throw new Error(`refusing ${what} at ${host}: benchmarks only target loopback addresses (127.0.0.0/8, localhost, ::1)`)
}

/** Kills `child` (SIGKILL) if it is still running when this process ends, however it ends. */
export function track (child: ChildProcess): void {
  children.add(child)
  child.once('exit', () => children.delete(child))
}

/** Runs `fn` once at the end (last registered, first run), also after an error, Ctrl-C or the budget. */
export function atCleanup (fn: () => Promise<void>): void {
  cleanups.push(fn)
}

let cleaning: Promise<void> | null = null

/** Stops every child and runs the cleanups; safe to call more than once. */
export function cleanup (): Promise<void> {
  cleaning ??= (async () => {
    for (const child of children) child.kill('SIGKILL')
    for (const fn of cleanups.reverse()) {
      await fn().catch((err) => console.error(`cleanup: ${(err as Error).message}`))
    }
  })()
  return cleaning
}

/**
 * Ctrl-C, SIGTERM, an uncaught error and the time budget all end the same
 * way: children killed, cleanups run (at most 15 s), then exit.
 */
export function installExitHandlers (budgetMs: number): void {
  const bail = (code: number, why: string) => {
    console.error(`\nbench: ${why}; stopping`)
    const hard = setTimeout(() => process.exit(code), 15_000)
    hard.unref()
    cleanup().finally(() => process.exit(code))
  }
  process.once('SIGINT', () => bail(130, 'interrupted'))
  process.once('SIGTERM', () => bail(143, 'terminated'))
  process.once('uncaughtException', (err) => { console.error(err); bail(1, 'uncaught error') })
  process.once('unhandledRejection', (err) => { console.error(err); bail(1, 'unhandled rejection') })
  // The last resort: whatever else happened, no child outlives this process.
  process.once('exit', () => { for (const child of children) child.kill('SIGKILL') })
  const timer = setTimeout(() => bail(2, `time budget of ${Math.round(budgetMs / 1000)} s used up`), budgetMs)
  timer.unref()
}
