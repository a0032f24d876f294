// The shared conformance vectors (`tests/conformance.json`), read the way its `description`
// says: each case feeds `input` to a fresh responder built with `options` (answering its
// `services`) and expects exactly `replies` and `done`.

import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import type { ResponderOptions } from '../protocol.js';

/** The repository root, from `ts-app/dist/test/`. */
export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/** One physical line: text, or raw bytes (possibly invalid UTF-8). */
export type InputLine = string | { base64: string };

export interface Case {
  name: string;
  options?: { exit_after?: number; name?: string; max_line_bytes?: number };
  input: InputLine[];
  replies: string[];
  done: boolean;
  /** False for cases only in-process responders see (lines after the conversation ended). */
  pipe?: boolean;
  /** The services the responder under test answers; absent = `['demo']`. */
  services?: string[];
}

interface Vectors {
  description: string;
  cases: Case[];
}

const vectors = JSON.parse(
  readFileSync(new URL('../../../tests/conformance.json', import.meta.url), 'utf8'),
) as Vectors;

export const cases: readonly Case[] = vectors.cases;

/** A case's options as `new Responder(...)` takes them. */
export function optionsOf(c: Case): ResponderOptions {
  const o = c.options ?? {};
  const options: ResponderOptions = {};
  if (o.exit_after !== undefined) options.exitAfter = o.exit_after;
  if (o.name !== undefined) options.name = o.name;
  if (o.max_line_bytes !== undefined) options.maxLineBytes = o.max_line_bytes;
  return options;
}

/** A case's options as `main.js` command-line flags. */
export function cliArgsOf(c: Case): string[] {
  const o = c.options ?? {};
  const args: string[] = [];
  if (o.exit_after !== undefined) args.push('--exit-after', String(o.exit_after));
  if (o.name !== undefined) args.push('--name', o.name);
  if (o.max_line_bytes !== undefined) args.push('--max-line-bytes', String(o.max_line_bytes));
  return args;
}

/** The bytes of one input line, without its `\n`. */
export function lineBytes(line: InputLine): Buffer {
  return typeof line === 'string' ? Buffer.from(line, 'utf8') : Buffer.from(line.base64, 'base64');
}

/** The whole byte stream: the lines joined with `\n`, plus a final `\n`. */
export function streamOf(c: Case): Buffer {
  return Buffer.concat(c.input.flatMap((line) => [lineBytes(line), Buffer.from('\n')]));
}

/** Everything the responder writes for a case: every reply line, each ending in `\n`. */
export function expectedText(c: Case): string {
  return c.replies.map((line) => `${line}\n`).join('');
}

/**
 * Why a case is skipped here, or `false` to run it: the TypeScript responder, and the Node
 * child with either engine, answer the demo service only (markdown-it's HTML is not
 * pulldown-cmark's). The Rust core, `serve` and the addon run those cases.
 */
export function skipUnlessDemo(c: Case): string | false {
  const services = c.services ?? ['demo'];
  return services.length === 1 && services[0] === 'demo'
    ? false
    : `needs services [${services.join(', ')}]; the TypeScript responder serves demo only (markdown-it's HTML is not pulldown-cmark's)`;
}

/** True if every input line is text (a JS string can carry it). */
export const isText = (c: Case): boolean => c.input.every((line) => typeof line === 'string');
