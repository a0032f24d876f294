// The demo conversation in-process: the Rust core's `Initiator`, inside the napi addon, drives
// the TypeScript `Responder` (protocol.ts) by calling it, and this prints what the initiator
// prints, which is exactly what `cargo run` prints over the pipe. Stdout carries the seed's
// output only; a failure is one line on stderr, prefixed `demo-inprocess: `, and exit code 1.

import { pathToFileURL } from 'node:url';

import { callsJs, type JsResponder, loadNativeAddon, NATIVE_PATH } from './engine.js';
import { Responder } from './protocol.js';

const USAGE = `\
Usage: node ts-app/dist/demo-inprocess.js [--mode sync|thread]
  Play the demo conversation in-process: the Rust core's Initiator, in the napi addon, calls
  the TypeScript responder and prints what it prints (the same lines as \`cargo run\`).
  --mode sync    Rust calls the responder back on the JS thread, inside one call (default)
  --mode thread  a Rust thread calls it through a ThreadsafeFunction and waits for each reply
Exit codes: 0 ok, 1 the conversation failed, 2 bad arguments or no native addon.`;

/** How Rust calls the responder. */
export type Mode = 'sync' | 'thread';

/** The mode the arguments ask for, `'help'`, or the one-line reason they are wrong. */
export function parseArgs(argv: readonly string[]): Mode | 'help' | { error: string } {
  let mode: Mode = 'sync';
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i] ?? '';
    if (flag === '-h' || flag === '--help') return 'help';
    if (flag !== '--mode') return { error: `unexpected argument \`${flag}\`` };
    const value = argv[++i];
    if (value === undefined) return { error: '--mode needs a value' };
    if (value !== 'sync' && value !== 'thread') return { error: `--mode expects sync or thread, got \`${value}\`` };
    mode = value;
  }
  return mode;
}

function fail(text: string): void {
  process.stderr.write(`demo-inprocess: ${text}\n`);
}

/**
 * Plays the demo with `responder` (default: a fresh TypeScript `Responder`) and returns the exit
 * code. What the demo printed before a failure is printed too, as the pipe demo would have.
 */
export async function runDemo(argv: readonly string[], responder: JsResponder = new Responder()): Promise<number> {
  const mode = parseArgs(argv);
  if (mode === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (typeof mode === 'object') {
    fail(mode.error);
    process.stderr.write(`\n${USAGE}\n`);
    return 2;
  }
  const loaded = loadNativeAddon();
  const addon = 'addon' in loaded ? callsJs(loaded.addon) : undefined;
  if (addon === undefined) {
    const why = 'why' in loaded ? loaded.why : 'it does not export playDemo';
    fail(`cannot load the native addon from ${NATIVE_PATH}: ${why}; build it with \`npm run build -w native\``);
    return 2;
  }
  try {
    const printed = mode === 'sync' ? addon.playDemo(responder) : await addon.playDemoOnThread(responder);
    process.stdout.write(`${printed.join('\n')}\n`);
    return 0;
  } catch (e) {
    const printed: unknown = e instanceof Error ? (e as Error & { printed?: unknown }).printed : undefined;
    if (Array.isArray(printed) && printed.length > 0) process.stdout.write(`${printed.join('\n')}\n`);
    fail(e instanceof Error ? e.message : String(e));
    return 1;
  }
}

// Run as a program, not when imported (the tests import `runDemo`). Exit codes are set, not
// forced with `process.exit()`: stdout to a pipe is written asynchronously.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.exitCode = await runDemo(process.argv.slice(2));
}
