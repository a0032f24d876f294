// Encoding a message for the wire, refusing data the JSON encoding cannot carry faithfully
// before anything is sent. Strings (the built-in services' data) take a fast path.

import { FRAME_HEADER_BYTES } from '../frame.js';
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

/** Room for a frame's header, map, keys, `data`'s header and the largest id (42 bytes), with margin. */
const FRAME_ENVELOPE_BYTES = 64;

let lastType: string | undefined;
let lastHead = '';

/**
 * One MessagePack frame holding `{msg_type, data, id?}` in the canonical forms: its 4-byte
 * little-endian length header, then the map, in a new `Buffer` (or one taken from `pool`).
 * `data` may be bytes (a `Uint8Array` or `Buffer`, sent as `bin`) or anything `encodeData`
 * takes; a `PeerError` (`INVALID_ARGUMENT`) says what in it cannot be sent.
 */
export function encodeFrame(msgType: string, data: unknown, id: number | undefined, pool?: FramePool): Buffer {
  const bound = commonBound(msgType, data, id);
  if (bound < 0) return encodeFrameGenerally(msgType, data, id, pool);
  // The usual message, a string or bytes: written straight into its buffer.
  const h = bodyHead(msgType);
  const capacity = FRAME_HEADER_BYTES + 1 + h.length + bound;
  if (capacity <= SLAB_FRAME_BYTES) {
    if (capacity > SLAB_BYTES - slabUsed) {
      slab = new ArrayBuffer(SLAB_BYTES);
      slabView = Buffer.from(slab);
      slabUsed = 0;
    }
    const start = slabUsed;
    const end = writeCommonBody(slabView, start + FRAME_HEADER_BYTES, h, data as string | Uint8Array, id, bound);
    slabView.writeUInt32LE(end - start - FRAME_HEADER_BYTES, start);
    // Eight-byte aligned, as Node's own pool.
    slabUsed = (end + 7) & ~7;
    return Buffer.from(slab, start, end - start);
  }
  const buf = pool?.take(capacity) ?? Buffer.allocUnsafe(capacity);
  const end = writeCommonBody(buf, FRAME_HEADER_BYTES, h, data as string | Uint8Array, id, bound);
  buf.writeUInt32LE(end - FRAME_HEADER_BYTES, 0);
  return buf.subarray(0, end);
}

/**
 * Small frames are cut from a slab, as `Buffer.allocUnsafe` cuts small buffers from Node's
 * pool, but as one `Buffer` of the frame's exact length: a buffer of the most it could take,
 * then a view of what it did take, cost twice as much (≈150 ns against ≈45 ns) as the rest of
 * writing a 64-byte message. A slab is never reused; it is freed with the last frame cut from
 * it. Smaller than `FramePool.MIN_BYTES`, so a pool never takes a slab for its own.
 */
const SLAB_BYTES = 16 * 1024;
const SLAB_FRAME_BYTES = 2 * 1024;
let slab = new ArrayBuffer(SLAB_BYTES);
let slabView = Buffer.from(slab);
let slabUsed = 0;

/** `encodeFrame` by the general writer (`Writer.value`), for any data. */
function encodeFrameGenerally(msgType: string, data: unknown, id: number | undefined, pool?: FramePool): Buffer {
  // Sized for the whole frame up front when data is a string or bytes: a big one is copied once.
  const size =
    typeof data === 'string' ? 3 * data.length : data instanceof Uint8Array ? data.length : 256 - FRAME_ENVELOPE_BYTES;
  const capacity = FRAME_ENVELOPE_BYTES + 3 * msgType.length + size;
  const w = new Writer(capacity, false, pool?.take(capacity));
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
 * Big frame buffers kept for reuse once written, for `encodeFrame`: a fresh buffer costs its
 * page faults, which at 1 MiB is ten times copying into a warm one (≈330 µs against ≈33 µs of
 * CPU here), and a peer streaming big messages would pay that for every one. Holds at most
 * `MAX_BUFFERS` buffers, each of at least `MIN_BYTES` (smaller frames come from Node's own
 * pool), so what it keeps is bounded by the biggest frames recently written.
 */
export class FramePool {
  static readonly MIN_BYTES = 64 * 1024;
  /**
   * The memory pools made (`take`): the only memory `give` keeps. A frame at the start of other
   * memory may not be its own (a `Buffer` from Node's shared pool, with a `Buffer.poolSize` of
   * 64 KiB or more, or the caller's), and writing a later frame there would overwrite it.
   */
  static readonly #made = new WeakSet<ArrayBuffer>();
  static readonly MAX_BUFFERS = 4;
  readonly #spare: Buffer[] = [];

  /**
   * A buffer of at least `bytes`, the pool's to take back: a spare one (taken out of the
   * pool) or a new one; undefined below `MIN_BYTES`.
   */
  take(bytes: number): Buffer | undefined {
    if (bytes < FramePool.MIN_BYTES) return undefined;
    const spare = this.#spare;
    for (let i = 0; i < spare.length; i++) {
      const b = spare[i] as Buffer;
      if (b.length >= bytes) {
        spare[i] = spare[spare.length - 1] as Buffer;
        spare.pop();
        return b;
      }
    }
    const made = Buffer.allocUnsafeSlow(bytes);
    FramePool.#made.add(made.buffer);
    return made;
  }

  /**
   * Takes back `frame`'s memory once it has been written and nothing else refers to it (the
   * caller's promise): only a frame at the start of memory a pool made (`take`), as
   * `encodeFrame` makes them with one; a full pool keeps its biggest buffers.
   */
  give(frame: Buffer): void {
    const memory = frame.buffer;
    if (frame.byteOffset !== 0 || !(memory instanceof ArrayBuffer) || !FramePool.#made.has(memory)) return;
    const spare = this.#spare;
    if (spare.length < FramePool.MAX_BUFFERS) {
      spare.push(Buffer.from(memory));
      return;
    }
    let smallest = 0;
    for (let i = 1; i < spare.length; i++) if ((spare[i] as Buffer).length < (spare[smallest] as Buffer).length) smallest = i;
    if ((spare[smallest] as Buffer).length < memory.byteLength) spare[smallest] = Buffer.from(memory);
  }

  /**
   * `give` for a frame body `encodeFrameBody` wrote (its frame starts at the header before it),
   * once nothing refers to it; a body in the scratch buffer, or in memory not its frame's own,
   * is left alone.
   */
  reclaimBody(body: Buffer): void {
    const memory = body.buffer;
    if (body.byteOffset !== FRAME_HEADER_BYTES || !(memory instanceof ArrayBuffer)) return;
    this.give(Buffer.from(memory, 0, FRAME_HEADER_BYTES + body.length));
  }

  /** How many buffers and bytes it holds (for tests). */
  get held(): { buffers: number; bytes: number } {
    return { buffers: this.#spare.length, bytes: this.#spare.reduce((n, b) => n + b.length, 0) };
  }
}

/** `encodeFrameBody`'s scratch buffer is kept while at most this big; bigger bodies get their own. */
const SCRATCH_BYTES = 64 * 1024;
let scratch = Buffer.allocUnsafeSlow(1024);
/** The last `msg_type` seen and its body head: `a8 "msg_type"`, its `str`, `a4 "data"`. */
let headType: string | undefined;
let head: Buffer = Buffer.alloc(0);

/** The head of a body for `msgType`, written by `writeFrame` itself (so canonical by construction). */
function bodyHead(msgType: string): Buffer {
  if (msgType !== headType) {
    const w = new Writer(64 + 3 * msgType.length);
    writeFrame(w, msgType, undefined, () => {});
    // Skip the 4-byte length and the map header: what is left is the same for any data and id.
    head = Buffer.from(w.view().subarray(5));
    headType = msgType;
  }
  return head;
}

/** The longest `bin` the common path writes: with the envelope, the body stays within a header's 2^32 − 1. */
const MAX_COMMON_BIN_BYTES = 0xffffffff - 1024;

/**
 * For the common message (a string `msgType`; `data` a string or bytes, as `Writer.value` tells
 * bytes; `id` absent or an integer from 0 to 2^32 − 1): the most bytes its `data` and `id` can
 * take, headers and key included. Otherwise −1: the general writer decides (and words any error).
 */
function commonBound(msgType: unknown, data: unknown, id: number | undefined): number {
  if (typeof msgType !== 'string' || (id !== undefined && !(Number.isInteger(id) && id >= 0 && id <= 0xffffffff))) return -1;
  if (typeof data === 'string') return COMMON_SLACK + 3 * data.length;
  // Bytes as `Writer.value` tells them (a proxy of a `Uint8Array` is not a view, say). Their
  // `length` is read here once, before any shared buffer is touched: in a subclass it is user
  // code, which may encode a message itself (a nested request) into the same slab or scratch.
  if (!(ArrayBuffer.isView(data) && data instanceof Uint8Array)) return -1;
  const n = data.length;
  return n <= MAX_COMMON_BIN_BYTES ? COMMON_SLACK + n : -1;
}

/** What `commonBound` adds to `data`'s bytes: its header (5), the `id` key (3) and a uint32 (5). */
const COMMON_SLACK = 13;

/** A `str` or `bin` header's size for `n` bytes. */
const strHeaderSize = (n: number): number => (n < 32 ? 1 : n <= 0xff ? 2 : n <= 0xffff ? 3 : 5);
const binHeaderSize = (n: number): number => (n <= 0xff ? 2 : n <= 0xffff ? 3 : 5);

/**
 * Writes the body of the common message (see `commonBound`, which returned `bound`) at `at` in
 * `buf`, which has room for `1 + h.length + bound` bytes there, exactly as the general writer
 * would: the map's header, `h` (`bodyHead(msgType)`), `data` as a `str` (made well-formed) or
 * `bin`, then `id`, each in its smallest form. Returns where the body ends. Runs no user code
 * (bytes' length is taken from `bound`), so nothing can claim `buf` meanwhile.
 */
function writeCommonBody(buf: Buffer, at: number, h: Buffer, data: string | Uint8Array, id: number | undefined, bound: number): number {
  buf[at++] = id === undefined ? 0x82 : 0x83;
  if (h.length <= 32) for (let i = 0; i < h.length; i++) buf[at + i] = h[i] as number;
  else h.copy(buf, at);
  at += h.length;
  if (typeof data === 'string') {
    const s = data.isWellFormed() ? data : data.toWellFormed();
    // The header is sized for the fewest bytes the string can take (one a unit) and moved
    // up if its UTF-8 takes more, so the length need not be counted first.
    const guess = strHeaderSize(s.length);
    const n = buf.write(s, at + guess, 'utf8');
    const hs = strHeaderSize(n);
    if (hs !== guess) buf.copyWithin(at + hs, at + guess, at + guess + n);
    if (hs === 1) buf[at] = 0xa0 | n;
    else if (hs === 2) {
      buf[at] = 0xd9;
      buf[at + 1] = n;
    } else if (hs === 3) {
      buf[at] = 0xda;
      buf.writeUInt16BE(n, at + 1);
    } else {
      buf[at] = 0xdb;
      buf.writeUInt32BE(n, at + 1);
    }
    at += hs + n;
  } else {
    const n = bound - COMMON_SLACK;
    const hs = binHeaderSize(n);
    if (hs === 2) {
      buf[at] = 0xc4;
      buf[at + 1] = n;
    } else if (hs === 3) {
      buf[at] = 0xc5;
      buf.writeUInt16BE(n, at + 1);
    } else {
      buf[at] = 0xc6;
      buf.writeUInt32BE(n, at + 1);
    }
    at += hs;
    if (n <= 64) for (let i = 0; i < n; i++) buf[at + i] = data[i] as number;
    else buf.set(data, at);
    at += n;
  }
  if (id !== undefined) {
    buf[at] = 0xa2;
    buf[at + 1] = 0x69; // i
    buf[at + 2] = 0x64; // d
    at += 3;
    if (id <= 0x7f) buf[at++] = id;
    else if (id <= 0xff) {
      buf[at] = 0xcc;
      buf[at + 1] = id;
      at += 2;
    } else if (id <= 0xffff) {
      buf[at] = 0xcd;
      buf.writeUInt16BE(id, at + 1);
      at += 3;
    } else {
      buf[at] = 0xce;
      buf.writeUInt32BE(id, at + 1);
      at += 5;
    }
  }
  return at;
}

/**
 * The body of the frame `encodeFrame(msgType, data, id)` makes (the bytes after its 4-byte
 * length header), byte for byte, with its errors. A `str` or `bin` `data` of a small frame is
 * written into a scratch buffer that the next call overwrites: the result is valid until then
 * (the addon's `handleFrameInto` copies it before it reads it). Other bodies are `encodeFrame`'s,
 * in memory from `pool` if given (`FramePool.reclaimBody` hands it back).
 */
export function encodeFrameBody(msgType: string, data: unknown, id: number | undefined, pool?: FramePool): Buffer {
  const bound = commonBound(msgType, data, id);
  if (bound < 0) return encodeFrameGenerally(msgType, data, id, pool).subarray(FRAME_HEADER_BYTES);
  const h = bodyHead(msgType);
  const need = 1 + h.length + bound;
  if (need > SCRATCH_BYTES) return encodeFrame(msgType, data, id, pool).subarray(FRAME_HEADER_BYTES);
  if (need > scratch.length) scratch = Buffer.allocUnsafeSlow(Math.min(Math.max(2 * scratch.length, need), SCRATCH_BYTES));
  return scratch.subarray(0, writeCommonBody(scratch, 0, h, data as string | Uint8Array, id, bound));
}
