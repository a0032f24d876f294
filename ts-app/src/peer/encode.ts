// Encoding a message for the wire, refusing data the JSON encoding cannot carry faithfully
// before anything is sent. Strings (the built-in services' data) take a fast path.

import { EncodeProblem, Writer, writeFrame } from '../msgpack.js';
import { PeerError, PeerErrorCode } from './errors.js';

/** Why `value` at `path` cannot be encoded, or undefined if it can. */
type Problem = { path: string; what: string; hint: string } | undefined;

const BINARY_HINT =
  "the JSON encoding has no bytes: send them as a string (e.g. base64), or use encoding: 'msgpack' (spawnPeer or inProcess), which carries them as bytes";

function keyPath(path: string, key: string): string {
  return /^[A-Za-z_$][\w$]*$/.test(key) ? `${path}.${key}` : `${path}[${JSON.stringify(key)}]`;
}

/**
 * Walks `value` as `JSON.stringify` would (honouring `toJSON`, called with `key` and not again
 * on what it returned), and returns the first thing it cannot encode faithfully: a BigInt, a
 * symbol, a function, `undefined` (except as an object property, which JSON omits), a
 * non-finite number, binary data, or a cycle.
 */
function findProblem(value: unknown, path: string, key: string, ancestors: Set<object>, inObject: boolean, askToJSON = true): Problem {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return undefined;
    case 'number':
      return Number.isFinite(value)
        ? undefined
        : { path, what: `the number ${String(value)}`, hint: 'JSON has no NaN or Infinity; send null or a string' };
    case 'bigint':
      return { path, what: 'a BigInt', hint: 'convert it to a string (or a number if it is safe) first' };
    case 'symbol':
      return { path, what: 'a symbol', hint: 'send a string instead' };
    case 'function':
      return { path, what: 'a function', hint: 'only data can be sent' };
    case 'undefined':
      return inObject ? undefined : { path, what: 'undefined', hint: 'send null instead' };
    default:
      break;
  }
  if (value === null) return undefined;
  const object = value as object;
  if (ArrayBuffer.isView(object) || object instanceof ArrayBuffer || object instanceof SharedArrayBuffer) {
    return { path, what: `binary data (a ${object.constructor.name})`, hint: BINARY_HINT };
  }
  const toJSON = askToJSON ? (object as { toJSON?: unknown }).toJSON : undefined;
  if (typeof toJSON === 'function') {
    return findProblem((toJSON as (key: string) => unknown).call(object, key), path, key, ancestors, inObject, false);
  }
  if (ancestors.has(object)) return { path, what: 'a cycle (a value that contains itself)', hint: 'send a tree' };
  ancestors.add(object);
  try {
    if (Array.isArray(object)) {
      for (let i = 0; i < object.length; i++) {
        const problem = findProblem(object[i] as unknown, `${path}[${i}]`, String(i), ancestors, false);
        if (problem !== undefined) return problem;
      }
    } else {
      for (const key of Object.keys(object)) {
        const problem = findProblem((object as Record<string, unknown>)[key], keyPath(path, key), key, ancestors, true);
        if (problem !== undefined) return problem;
      }
    }
  } finally {
    ancestors.delete(object);
  }
  return undefined;
}

/** What JSON.stringify escapes in a well-formed string: `"`, `\\` and control characters. */
const NEEDS_ESCAPE = /["\\\u0000-\u001f]/;

/**
 * `data` as JSON text, or a `PeerError` (`INVALID_ARGUMENT`) saying what in it cannot be sent and
 * what to send instead. Strings are made well-formed first (an unpaired surrogate becomes U+FFFD),
 * as the addon does with every string it is given, so both transports see the same text.
 */
export function encodeData(data: unknown, msgType: string): string {
  if (typeof data === 'string') {
    // Nothing to escape: quoting is all JSON.stringify would do, at a fraction of its cost
    // (≈70 ns instead of ≈170 ns for 64 characters).
    if (!NEEDS_ESCAPE.test(data) && data.isWellFormed()) return `"${data}"`;
    return JSON.stringify(data.isWellFormed() ? data : data.toWellFormed());
  }
  let problem: Problem;
  let text: string;
  try {
    problem = findProblem(data, 'data', '', new Set(), false);
    // Every value findProblem accepts is plain data, but a getter, a toJSON or a boxed BigInt
    // can still throw here, and nesting can be too deep for either walk.
    text = problem === undefined ? JSON.stringify(data) : '';
  } catch (e) {
    throw new PeerError(
      PeerErrorCode.INVALID_ARGUMENT,
      `cannot send \`${msgType}\`: encoding data threw: ${e instanceof Error ? e.message : String(e)}`,
      { msgType, cause: e },
    );
  }
  if (problem !== undefined) {
    throw new PeerError(
      PeerErrorCode.INVALID_ARGUMENT,
      `cannot send \`${msgType}\`: ${problem.path} is ${problem.what}, which JSON cannot encode; ${problem.hint}`,
      { msgType },
    );
  }
  return text;
}

/** One NDJSON line: `{"msg_type":…,"data":…[,"id":N]}\n`, the key order every implementation writes. */
export function encodeLine(msgType: string, data: unknown, id: number | undefined): string {
  // A caller sends the same few types over and over: the last one's line head is kept.
  if (msgType !== lastType) {
    lastHead = `{"msg_type":${JSON.stringify(msgType.isWellFormed() ? msgType : msgType.toWellFormed())},"data":`;
    lastType = msgType;
  }
  const head = lastHead;
  const json = encodeData(data, msgType);
  return id === undefined ? `${head}${json}}\n` : `${head}${json},"id":${id}}\n`;
}

let lastType: string | undefined;
let lastHead = '';

/**
 * One MessagePack frame holding `{msg_type, data, id?}` in the canonical forms: its 4-byte
 * little-endian length header, then the map, in a new `Buffer`. `data` may be bytes (a
 * `Uint8Array` or `Buffer`, sent as `bin`) or anything `encodeData` takes; a `PeerError`
 * (`INVALID_ARGUMENT`) says what in it cannot be sent.
 */
export function encodeFrame(msgType: string, data: unknown, id: number | undefined): Buffer {
  const w = new Writer(typeof data === 'string' ? 32 + msgType.length + 3 * data.length : 256);
  try {
    writeFrame(w, msgType, id, (w) => w.value(data));
  } catch (e) {
    if (e instanceof EncodeProblem) {
      throw new PeerError(
        PeerErrorCode.INVALID_ARGUMENT,
        `cannot send \`${msgType}\`: ${e.path} is ${e.what}, which the msgpack envelope cannot hold; ${e.hint}`,
        { msgType },
      );
    }
    throw new PeerError(
      PeerErrorCode.INVALID_ARGUMENT,
      `cannot send \`${msgType}\`: encoding data threw: ${e instanceof Error ? e.message : String(e)}`,
      { msgType, cause: e },
    );
  }
  return w.view();
}

/**
 * `encodeFrame` as a latin1 string (one character per byte), so that the core, which queues
 * wire text, carries frames and lines alike.
 */
export function encodeFrameText(msgType: string, data: unknown, id: number | undefined): string {
  return encodeFrame(msgType, data, id).toString('latin1');
}
