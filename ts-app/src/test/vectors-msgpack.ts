// The stored MessagePack conformance vectors (`tests/conformance-msgpack.json`), read the way
// its `description` says: each case feeds `input` (frame bodies in hex, each sent behind its
// 4-byte little-endian length) then `tail` (raw hex, a cut frame) to a fresh responder built
// with `options`, and expects exactly the reply frames `replies[].hex`, then `done`.

import { readFileSync } from 'node:fs';

import type { ResponderOptions } from '../protocol.js';

export interface MsgpackCase {
  name: string;
  options?: { exit_after?: number; name?: string; max_frame_bytes?: number };
  input: string[];
  tail?: string;
  replies: { hex: string; json: Record<string, unknown> }[];
  done: boolean;
  /** The services the responder under test answers; absent = `['demo']`. */
  services?: string[];
}

const stored = JSON.parse(
  readFileSync(new URL('../../../tests/conformance-msgpack.json', import.meta.url), 'utf8'),
) as { description: string; cases: MsgpackCase[] };

export const msgpackCases: readonly MsgpackCase[] = stored.cases;

/** `body` behind its 4-byte little-endian length: one frame of the stream. */
export function framed(body: Uint8Array): Buffer {
  const header = Buffer.alloc(4);
  header.writeUInt32LE(body.length);
  return Buffer.concat([header, body]);
}

/** The case's frame bodies. */
export const bodiesOf = (c: MsgpackCase): Buffer[] => c.input.map((h) => Buffer.from(h, 'hex'));

/** The whole input stream: every frame, then the tail. */
export const msgpackStreamOf = (c: MsgpackCase): Buffer =>
  Buffer.concat([...bodiesOf(c).map(framed), Buffer.from(c.tail ?? '', 'hex')]);

/** Everything the responder writes for the case, as hex. */
export const expectedHex = (c: MsgpackCase): string => c.replies.map((r) => r.hex).join('');

/** A case's options as `new Responder(...)` takes them. */
export function msgpackOptionsOf(c: MsgpackCase): ResponderOptions {
  const o = c.options ?? {};
  const options: ResponderOptions = {};
  if (o.exit_after !== undefined) options.exitAfter = o.exit_after;
  if (o.name !== undefined) options.name = o.name;
  if (o.max_frame_bytes !== undefined) options.maxFrameBytes = o.max_frame_bytes;
  return options;
}

/** A case's options as `main.js` flags (with `--encoding msgpack`). */
export function msgpackCliArgsOf(c: MsgpackCase): string[] {
  const o = c.options ?? {};
  const args = ['--encoding', 'msgpack'];
  if (o.exit_after !== undefined) args.push('--exit-after', String(o.exit_after));
  if (o.name !== undefined) args.push('--name', o.name);
  if (o.max_frame_bytes !== undefined) args.push('--max-frame-bytes', String(o.max_frame_bytes));
  return args;
}
