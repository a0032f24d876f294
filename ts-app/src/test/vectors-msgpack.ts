// The stored MessagePack conformance vectors (`tests/conformance-msgpack.json`), read the way
// its `description` says: each case feeds `input` (frame bodies in hex, each sent behind its
// 4-byte little-endian length) then `tail` (raw hex, a cut frame) to a fresh responder built
// with `options`, and expects exactly the reply frames `replies[].hex`, then `done`.

import { readFileSync } from 'node:fs';

import { textFrame, Writer, writeFrame } from '../msgpack.js';
import { decodeEnvelope, type ResponderOptions } from '../protocol.js';
import { cases, lineBytes } from './vectors.js';

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

/**
 * The semantic JSON vectors (`tests/conformance.json`) as msgpack cases, picked as
 * tests/conformance_msgpack.rs picks them: the demo only, no line limit, every line a message
 * whose data is a string, and no blank line (blank lines count as lines but are not frames).
 * Each line becomes the canonical frame of its message; each reply the frame of the same
 * message, its error text saying `frame` where JSON says `line`.
 */
export const semanticMsgpackCases: readonly MsgpackCase[] = cases.flatMap((c): MsgpackCase[] => {
  if (c.options?.max_line_bytes !== undefined || c.pipe === false) return [];
  const services = c.services ?? ['demo'];
  if (services.length !== 1 || services[0] !== 'demo') return [];
  const bodies: string[] = [];
  for (const line of c.input) {
    const bytes = lineBytes(line);
    if (/^[ \t\r]*$/.test(bytes.toString('latin1')) || !Buffer.from(bytes.toString('utf8')).equals(bytes)) return [];
    const d = decodeEnvelope(bytes.toString('utf8').replace(/\r$/, ''));
    if (!d.ok || typeof d.message.data !== 'string') return [];
    const w = new Writer();
    const { msg_type: msgType, id, data } = d.message;
    writeFrame(w, msgType, id, (w) => w.str(data as string));
    bodies.push(w.view().subarray(4).toString('hex'));
  }
  const replies = c.replies.map((line) => {
    const d = decodeEnvelope(line);
    if (!d.ok) throw new Error(`case ${c.name}: a stored reply is not a message: ${line}`);
    const { msg_type: msgType, id } = d.message;
    let data = d.message.data as string;
    if (msgType === 'error') data = data.replace(/^line /, 'frame ');
    const json: Record<string, unknown> = id === undefined ? { msg_type: msgType, data } : { msg_type: msgType, data, id };
    return { hex: textFrame(msgType, data, id).toString('hex'), json };
  });
  const options: MsgpackCase['options'] = {};
  if (c.options?.exit_after !== undefined) options.exit_after = c.options.exit_after;
  if (c.options?.name !== undefined) options.name = c.options.name;
  return [{ name: `${c.name} (as frames)`, options, input: bodies, replies, done: c.done }];
});
