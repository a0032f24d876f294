// The `msgpack` encoding's envelope: one MessagePack map per frame. The TypeScript twin of the
// Rust core's `msgpack.rs`, written by hand for the same reasons: every error names what is
// wrong with the protocol's exact texts and in the core's order of checks, ignored values are
// skipped with a loop (no depth limit), and every message is written in the one canonical form
// (smallest headers, non-negative integers unsigned, integral numbers as integers) that both
// sides produce byte for byte. msgpackr (a devDependency) cross-checks this codec in the tests:
// it cannot be the codec itself, because with any options it writes integers beyond 32 bits
// as float64, `undefined` as an extension and BigInts as int64, and reads invalid UTF-8 as
// U+FFFD, integer map keys as strings and `__proto__` as `__proto_`.

import { isAscii, isUtf8 } from 'node:buffer';

import { FRAME_HEADER_BYTES } from './frame.js';
import { invalidUtf8Offset } from './protocol.js';

/** The largest id (2^53 − 1), as in `protocol.ts`; repeated here to keep imports one-way at load. */
const MAX_SAFE_ID = Number.MAX_SAFE_INTEGER;
/** What `id` must be, as its error says (the same words as the JSON error's). */
const ID_EXPECTED = `an integer from 0 to ${MAX_SAFE_ID}`;
/** How deep `data` may nest when it is read as a value (serde_json's own limit, as in Rust). */
const MAX_DEPTH = 128;
/** How many bytes of an offending frame an error quotes. */
const HEX_EXCERPT_BYTES = 16;

/** The first 16 bytes of `frame` in lowercase hex, then `…` if there was more (`91a178`). */
export function hexExcerpt(frame: Uint8Array): string {
  const head = Buffer.from(frame.buffer, frame.byteOffset, Math.min(frame.length, HEX_EXCERPT_BYTES)).toString('hex');
  return frame.length > HEX_EXCERPT_BYTES ? `${head}…` : head;
}

/** The kind of a MessagePack value, as error messages name it (JSON's words plus two). */
export type Kind = 'null' | 'boolean' | 'number' | 'string' | 'bytes' | 'array' | 'map' | 'extension';

/** The first piece of one value: a scalar whole, or a container's header (children follow). */
type Item =
  | { kind: 'null' }
  | { kind: 'boolean'; value: boolean }
  | { kind: 'number'; value: number }
  | { kind: 'string' | 'bytes'; start: number; end: number }
  | { kind: 'array' | 'map'; count: number }
  | { kind: 'extension' };

const NIL: Item = { kind: 'null' };
const TRUE: Item = { kind: 'boolean', value: true };
const FALSE: Item = { kind: 'boolean', value: false };
const EXT: Item = { kind: 'extension' };

/** How many values follow an item as its children. */
const children = (item: Item): number =>
  item.kind === 'array' ? item.count : item.kind === 'map' ? 2 * item.count : 0;

/** The bytes end before the value does, or hold the reserved byte `c1`. */
class Invalid extends Error {}
const INVALID = new Invalid('invalid MessagePack');

/** A cursor over one frame. */
class Reader {
  constructor(
    readonly buf: Buffer,
    public pos: number,
  ) {}

  #need(n: number): number {
    const at = this.pos;
    if (n > this.buf.length - at) throw INVALID;
    this.pos = at + n;
    return at;
  }

  #span(kind: 'string' | 'bytes', n: number): Item {
    const start = this.#need(n);
    return { kind, start, end: start + n };
  }

  #ext(n: number): Item {
    this.#need(n + 1);
    return EXT;
  }

  #len(width: 1 | 2 | 4): number {
    const at = this.#need(width);
    return width === 1 ? (this.buf[at] ?? 0) : width === 2 ? this.buf.readUInt16BE(at) : this.buf.readUInt32BE(at);
  }

  /** The next item; throws `INVALID` when the bytes end before it does or hold `c1`. */
  next(): Item {
    const b = this.buf[this.#need(1)] ?? 0xc1;
    if (b <= 0x7f) return { kind: 'number', value: b };
    if (b >= 0xe0) return { kind: 'number', value: b - 0x100 };
    if (b <= 0x8f) return { kind: 'map', count: b & 0x0f };
    if (b <= 0x9f) return { kind: 'array', count: b & 0x0f };
    if (b <= 0xbf) return this.#span('string', b & 0x1f);
    const buf = this.buf;
    switch (b) {
      case 0xc0:
        return NIL;
      case 0xc2:
        return FALSE;
      case 0xc3:
        return TRUE;
      case 0xc4:
        return this.#span('bytes', this.#len(1));
      case 0xc5:
        return this.#span('bytes', this.#len(2));
      case 0xc6:
        return this.#span('bytes', this.#len(4));
      case 0xc7:
        return this.#ext(this.#len(1));
      case 0xc8:
        return this.#ext(this.#len(2));
      case 0xc9:
        return this.#ext(this.#len(4));
      case 0xca:
        return { kind: 'number', value: buf.readFloatBE(this.#need(4)) };
      case 0xcb:
        return { kind: 'number', value: buf.readDoubleBE(this.#need(8)) };
      case 0xcc:
        return { kind: 'number', value: this.#len(1) };
      case 0xcd:
        return { kind: 'number', value: this.#len(2) };
      case 0xce:
        return { kind: 'number', value: this.#len(4) };
      // Beyond 2^53 a number is approximate, but stays beyond it: ids are judged right.
      case 0xcf:
        return { kind: 'number', value: Number(buf.readBigUInt64BE(this.#need(8))) };
      case 0xd0:
        return { kind: 'number', value: buf.readInt8(this.#need(1)) };
      case 0xd1:
        return { kind: 'number', value: buf.readInt16BE(this.#need(2)) };
      case 0xd2:
        return { kind: 'number', value: buf.readInt32BE(this.#need(4)) };
      case 0xd3:
        return { kind: 'number', value: Number(buf.readBigInt64BE(this.#need(8))) };
      case 0xd4:
        return this.#ext(1);
      case 0xd5:
        return this.#ext(2);
      case 0xd6:
        return this.#ext(4);
      case 0xd7:
        return this.#ext(8);
      case 0xd8:
        return this.#ext(16);
      case 0xd9:
        return this.#span('string', this.#len(1));
      case 0xda:
        return this.#span('string', this.#len(2));
      case 0xdb:
        return this.#span('string', this.#len(4));
      case 0xdc:
        return { kind: 'array', count: this.#len(2) };
      case 0xdd:
        return { kind: 'array', count: this.#len(4) };
      case 0xde:
        return { kind: 'map', count: this.#len(2) };
      case 0xdf:
        return { kind: 'map', count: this.#len(4) };
      default:
        throw INVALID; // 0xc1, the reserved byte
    }
  }

  /** Skips the rest of a value whose first item was `first`: a counter, not recursion. */
  skipChildren(first: Item): void {
    let pending = children(first);
    while (pending > 0) pending = pending - 1 + children(this.next());
  }

  /** One whole value, skipped; its first item. */
  value(): Item {
    const first = this.next();
    this.skipChildren(first);
    return first;
  }
}

/** A frame refused: the error's text (without `frame N: `), and the id if it was read. */
export interface Rejected {
  ok: false;
  error: string;
  id?: number;
}

/** The envelope of one frame: `msg_type` checked, `data` located. */
interface Fields {
  ok: true;
  msgType: string;
  data: Item;
  /** Where `data`'s value starts in the frame. */
  dataAt: number;
  id: number | undefined;
}

const rejected = (error: string, id?: number): Rejected =>
  id === undefined ? { ok: false, error } : { ok: false, error, id };

/** Whether the `str` item is the key `name` (ASCII), compared as bytes. */
function isKey(buf: Buffer, item: Item, name: string): boolean {
  if (item.kind !== 'string' || item.end - item.start !== name.length) return false;
  for (let i = 0; i < name.length; i++) if (buf[item.start + i] !== name.charCodeAt(i)) return false;
  return true;
}

/** The `str` item's text, or the error naming the frame offset of its first bad byte. */
function utf8(buf: Buffer, start: number, end: number): string | Rejected {
  const bytes = buf.subarray(start, end);
  const text = longText(buf, bytes, start, end);
  if (text !== undefined) return text;
  return rejected(`invalid UTF-8 in a string at byte ${start + invalidUtf8Offset(bytes)}: \`${hexExcerpt(buf)}\``);
}

/** The id an item holds, if it is a valid one (`-0.0` is 0, as in Rust). */
function safeId(item: Item): number | undefined {
  if (item.kind !== 'number') return undefined;
  const v = item.value;
  return Number.isInteger(v) && v >= 0 && v <= MAX_SAFE_ID ? v + 0 : undefined;
}

const mistyped = (field: string, expected: string, kind: Kind, frame: Buffer): string =>
  `field \`${field}\` must be ${expected}, got ${kind}: \`${hexExcerpt(frame)}\``;

/**
 * Reads a frame's envelope, in the Rust core's order of checks (the first that fails is
 * reported): empty; not one whole MessagePack value; not a map; bytes after the map; a bad
 * `id`; a missing or mistyped (or not UTF-8) `msg_type`; a missing `data`. Keys are compared as
 * bytes, others (of any type) skipped, and a repeated key takes its last value. Errors found
 * after the id was read carry it.
 */
function decodeFields(frame: Buffer): Fields | Rejected {
  if (frame.length === 0) return rejected('empty frame');
  const invalid = (): Rejected => rejected(`invalid MessagePack: \`${hexExcerpt(frame)}\``);
  const r = new Reader(frame, 0);
  let msgType: Item | undefined;
  let data: Item | undefined;
  let dataAt = 0;
  let idItem: Item | undefined;
  try {
    const first = r.next();
    if (first.kind !== 'map') {
      r.skipChildren(first);
      return rejected(`not a map: \`${hexExcerpt(frame)}\``);
    }
    for (let i = 0; i < first.count; i++) {
      const key = r.value();
      const at = r.pos;
      const value = r.value();
      if (isKey(frame, key, 'msg_type')) msgType = value;
      else if (isKey(frame, key, 'data')) {
        data = value;
        dataAt = at;
      } else if (isKey(frame, key, 'id')) idItem = value;
    }
  } catch (e) {
    if (e instanceof Invalid) return invalid();
    throw e;
  }
  if (r.pos < frame.length) {
    const count = frame.length - r.pos;
    return rejected(`${count} ${count === 1 ? 'byte' : 'bytes'} left over after the map: \`${hexExcerpt(frame)}\``);
  }
  let id: number | undefined;
  if (idItem !== undefined && idItem.kind !== 'null') {
    id = safeId(idItem);
    if (id === undefined) return rejected(mistyped('id', ID_EXPECTED, idItem.kind, frame));
  }
  if (msgType === undefined) return rejected(`missing field \`msg_type\`: \`${hexExcerpt(frame)}\``, id);
  if (msgType.kind !== 'string') return rejected(mistyped('msg_type', 'a string', msgType.kind, frame), id);
  const text = utf8(frame, msgType.start, msgType.end);
  if (typeof text !== 'string') return rejected(text.error, id);
  if (data === undefined) return rejected(`missing field \`data\`: \`${hexExcerpt(frame)}\``, id);
  return { ok: true, msgType: text, data, dataAt, id };
}

/** A frame as the built-in services read it: `data` a string or bytes. */
export type DecodedPayload =
  | { ok: true; msgType: string; data: string | Buffer; id: number | undefined }
  | Rejected;

/**
 * Reads a frame for the built-in services: its envelope, then `data` as a `str` (valid UTF-8)
 * or a `bin`; anything else is the demo's `field \`data\` must be a string` error (with the id).
 */
export function decodePayload(frame: Buffer): DecodedPayload {
  const fields = decodeFields(frame);
  if (!fields.ok) return fields;
  const { data, id } = fields;
  if (data.kind === 'bytes') return { ok: true, msgType: fields.msgType, data: frame.subarray(data.start, data.end), id };
  if (data.kind !== 'string') return rejected(mistyped('data', 'a string', data.kind, frame), id);
  const text = utf8(frame, data.start, data.end);
  if (typeof text !== 'string') return rejected(text.error, id);
  return { ok: true, msgType: fields.msgType, data: text, id };
}

/** A decoded envelope's message: the same object `decodeMsgpackEnvelope` returns. */
export interface EnvelopeMessage {
  msg_type: string;
  data: unknown;
  id?: number;
}

/**
 * `str` bytes this short are checked for ASCII by a loop, not by `isAscii` on a view of them
 * (making the view costs more than the loop up to here: the ack of a 64-byte message is 78).
 */
const SHORT_STR_BYTES = 128;
/** The last `msg_type` read on the fast path, as bytes and as text (replies repeat a few types). */
let lastTypeBytes = Buffer.alloc(0);
let lastTypeText = '';

/** Whether the bytes at `start` (before `end`) begin with `key`. */
function bytesAre(buf: Buffer, start: number, end: number, key: Uint8Array): boolean {
  if (end - start < key.length) return false;
  for (let i = 0; i < key.length; i++) if (buf[start + i] !== key[i]) return false;
  return true;
}

/** The text of `buf[start..end]` if it is valid UTF-8, else undefined. */
function fastUtf8(buf: Buffer, start: number, end: number): string | undefined {
  if (end - start <= SHORT_STR_BYTES) {
    let any = 0;
    for (let i = start; i < end; i++) any |= buf[i] as number;
    // ASCII: Latin-1 is the same text, made without a UTF-8 decoder.
    if (any < 0x80) return buf.toString('latin1', start, end);
  }
  return longText(buf, buf.subarray(start, end), start, end);
}

/**
 * The text of `bytes` (= `buf[start..end]`) if it is valid UTF-8, else undefined. ASCII, the
 * usual case, is checked for first (as fast as the UTF-8 check) and made into a string as
 * Latin-1, the same text: Node's UTF-8 decoder takes twice as long (10 µs against 6 µs at
 * 64 KiB, 560 µs against 250 µs at 1 MiB here).
 */
function longText(buf: Buffer, bytes: Buffer, start: number, end: number): string | undefined {
  if (isAscii(bytes)) return buf.toString('latin1', start, end);
  return isUtf8(bytes) ? buf.toString('utf8', start, end) : undefined;
}

/**
 * The common envelope read without the general reader: the frame `buf[start..end]` is a map of
 * 2 or 3 keys in the canonical order every writer uses (`msg_type`: a `str` of up to 255
 * bytes; `data`: a `str` or `bin`; `id`: an unsigned integer of up to 32 bits), and nothing
 * after it. Its message exactly as `decodeMsgpackEnvelope` makes it (`bin` data a view of
 * `buf`); undefined for any other frame, valid or not, which the general reader then decides.
 */
export function decodeCommonEnvelope(buf: Buffer, start: number, end: number): EnvelopeMessage | undefined {
  if (end > buf.length || start >= end) return undefined;
  const count = buf[start];
  if (count !== 0x82 && count !== 0x83) return undefined;
  let p = start + 1;
  if (!bytesAre(buf, p, end, MSG_TYPE_KEY)) return undefined;
  p += MSG_TYPE_KEY.length;
  // msg_type
  if (end - p < 2) return undefined;
  let b = buf[p] as number;
  let n: number;
  if ((b & 0xe0) === 0xa0) {
    n = b & 0x1f;
    p += 1;
  } else if (b === 0xd9) {
    n = buf[p + 1] as number;
    p += 2;
  } else return undefined;
  if (p + n > end) return undefined;
  let msgType: string | undefined;
  if (n === lastTypeBytes.length && bytesAre(buf, p, end, lastTypeBytes)) msgType = lastTypeText;
  else {
    msgType = fastUtf8(buf, p, p + n);
    if (msgType === undefined) return undefined;
    lastTypeBytes = Buffer.from(buf.subarray(p, p + n));
    lastTypeText = msgType;
  }
  p += n;
  if (!bytesAre(buf, p, end, DATA_KEY)) return undefined;
  p += DATA_KEY.length;
  // data
  if (p >= end) return undefined;
  b = buf[p] as number;
  let bin = false;
  if ((b & 0xe0) === 0xa0) {
    n = b & 0x1f;
    p += 1;
  } else if (b === 0xd9 || b === 0xc4) {
    if (end - p < 2) return undefined;
    n = buf[p + 1] as number;
    p += 2;
    bin = b === 0xc4;
  } else if (b === 0xda || b === 0xc5) {
    if (end - p < 3) return undefined;
    n = buf.readUInt16BE(p + 1);
    p += 3;
    bin = b === 0xc5;
  } else if (b === 0xdb || b === 0xc6) {
    if (end - p < 5) return undefined;
    n = buf.readUInt32BE(p + 1);
    p += 5;
    bin = b === 0xc6;
  } else return undefined;
  if (n > end - p) return undefined;
  const data = bin ? buf.subarray(p, p + n) : fastUtf8(buf, p, p + n);
  if (data === undefined) return undefined;
  p += n;
  if (count === 0x82) return p === end ? { msg_type: msgType, data } : undefined;
  // id
  if (!bytesAre(buf, p, end, ID_KEY)) return undefined;
  p += ID_KEY.length;
  if (p >= end) return undefined;
  b = buf[p] as number;
  let id: number;
  if (b <= 0x7f) {
    id = b;
    p += 1;
  } else if (b === 0xcc && end - p >= 2) {
    id = buf[p + 1] as number;
    p += 2;
  } else if (b === 0xcd && end - p >= 3) {
    id = buf.readUInt16BE(p + 1);
    p += 3;
  } else if (b === 0xce && end - p >= 5) {
    id = buf.readUInt32BE(p + 1);
    p += 5;
  } else return undefined;
  return p === end ? { msg_type: msgType, data, id } : undefined;
}

/** A frame read as the library's envelope: `data` any JSON value, or bytes (a `Buffer`). */
export type DecodedMsgpackEnvelope =
  | { ok: true; message: { msg_type: string; data: unknown; id?: number } }
  | Rejected;

/**
 * Decodes one frame's body as the Rust core's `decode_msgpack_envelope` does: `data` that is
 * `bin` becomes a `Buffer` (a view of the frame), any other value a JSON value; refused, with
 * the core's texts, when JSON cannot hold it (bytes below the top, an extension, a map key that
 * is not a string, NaN or ±∞, more than 128 levels of nesting).
 */
export function decodeMsgpackEnvelope(frame: Buffer): DecodedMsgpackEnvelope {
  const common = decodeCommonEnvelope(frame, 0, frame.length);
  if (common !== undefined) return { ok: true, message: common };
  return readMsgpackEnvelope(frame);
}

/** `decodeMsgpackEnvelope` by the general reader alone, without the common envelope's fast path (for the tests). */
export function readMsgpackEnvelope(frame: Buffer): DecodedMsgpackEnvelope {
  const fields = decodeFields(frame);
  if (!fields.ok) return fields;
  const { data, id, msgType } = fields;
  let value: unknown;
  if (data.kind === 'bytes') value = frame.subarray(data.start, data.end);
  else {
    try {
      value = toValue(new Reader(frame, fields.dataAt), frame, 0);
    } catch (e) {
      if (e instanceof Refusal) return rejected(e.message, id);
      if (e instanceof Invalid) return rejected(`invalid MessagePack: \`${hexExcerpt(frame)}\``, id);
      throw e;
    }
  }
  return { ok: true, message: id === undefined ? { msg_type: msgType, data: value } : { msg_type: msgType, data: value, id } };
}

/** A value `data` holds that JSON cannot (its message is the protocol's text). */
class Refusal extends Error {}

/** The value at the reader (known to be whole) as JSON; recursion bounded by `MAX_DEPTH`. */
function toValue(r: Reader, frame: Buffer, depth: number): unknown {
  const refuse = (what: string): Refusal =>
    new Refusal(`field \`data\` holds ${what}, which JSON data cannot hold: \`${hexExcerpt(frame)}\``);
  const item = r.next();
  if (children(item) > 0 && depth >= MAX_DEPTH) throw refuse('nesting deeper than 128 levels');
  switch (item.kind) {
    case 'null':
      return null;
    case 'boolean':
      return item.value;
    case 'number':
      if (!Number.isFinite(item.value)) throw refuse('NaN or an infinite number');
      return item.value;
    case 'string': {
      const text = utf8(frame, item.start, item.end);
      if (typeof text !== 'string') throw new Refusal(text.error);
      return text;
    }
    case 'bytes':
      throw refuse('bytes inside an array or map');
    case 'extension':
      throw refuse('an extension');
    case 'array': {
      const items: unknown[] = [];
      for (let i = 0; i < item.count; i++) items.push(toValue(r, frame, depth + 1));
      return items;
    }
    case 'map': {
      const object: Record<string, unknown> = {};
      for (let i = 0; i < item.count; i++) {
        const key = r.next();
        if (key.kind !== 'string') throw refuse('a map key that is not a string');
        const name = utf8(frame, key.start, key.end);
        if (typeof name !== 'string') throw new Refusal(name.error);
        const value = toValue(r, frame, depth + 1);
        // An own property, as JSON.parse makes it: assigning `__proto__` would set the prototype.
        if (name === '__proto__') Object.defineProperty(object, name, { value, enumerable: true, writable: true, configurable: true });
        else object[name] = value;
      }
      return object;
    }
  }
}

// --- Writing -------------------------------------------------------------------------------

/** Why a value cannot be written as the envelope's `data`: where, what, and what to do. */
export class EncodeProblem extends Error {
  constructor(
    readonly path: string,
    readonly what: string,
    readonly hint: string,
  ) {
    super(`${path} is ${what}`);
  }
}

/** The size of a `str` header (marker and length) for `n` bytes of UTF-8. */
const strHeaderBytes = (n: number): number => (n < 32 ? 1 : n <= 0xff ? 2 : n <= 0xffff ? 3 : 5);

/** Appends MessagePack to a growing buffer, in the canonical forms. */
export class Writer {
  #buf: Buffer;
  #pos = 0;
  /** Whether `value` refuses a string holding an unpaired surrogate instead of writing U+FFFD. */
  readonly #refuseLoneSurrogates: boolean;

  /**
   * `refuseLoneSurrogates`: `value` throws an `EncodeProblem` for a string (or key) holding an
   * unpaired surrogate instead of writing it with U+FFFD (which changes the data behind its
   * sender's back: a service's replies refuse, as under JSON). `reuse`: a buffer to write into
   * instead of allocating one (its old bytes are overwritten; it is left for a bigger one if
   * it fills up), for a caller that recycles big buffers: a fresh MiB costs its page faults,
   * ten times what copying into a warm one does.
   */
  constructor(capacity = 256, refuseLoneSurrogates = false, reuse?: Buffer) {
    this.#buf = reuse ?? Buffer.allocUnsafe(capacity);
    this.#refuseLoneSurrogates = refuseLoneSurrogates;
  }

  /** `s` well-formed: as it is, U+FFFD for an unpaired surrogate, or refused (see the constructor). */
  #wellFormed(s: string, path: string): string {
    if (s.isWellFormed()) return s;
    if (this.#refuseLoneSurrogates) {
      throw new EncodeProblem(path, 'a string holding an unpaired surrogate', 'no peer can read one: fix the text, or send bytes');
    }
    return s.toWellFormed();
  }

  /** Bytes written so far. */
  get length(): number {
    return this.#pos;
  }

  /** What was written, as a view of the writer's buffer (valid until the next write). */
  view(): Buffer {
    return this.#buf.subarray(0, this.#pos);
  }

  #room(n: number): number {
    const at = this.#pos;
    if (at + n > this.#buf.length) {
      const bigger = Buffer.allocUnsafe(Math.max(2 * this.#buf.length, at + n));
      this.#buf.copy(bigger, 0, 0, at);
      this.#buf = bigger;
    }
    this.#pos = at + n;
    return at;
  }

  byte(b: number): void {
    // `#room` first: it may replace `#buf` (as `this.#buf[this.#room(1)]` would not see).
    const at = this.#room(1);
    this.#buf[at] = b;
  }

  raw(bytes: Uint8Array): void {
    const at = this.#room(bytes.length);
    this.#buf.set(bytes, at);
  }

  /** A marker then a big-endian length of `width` bytes. */
  #header(marker: number, width: 1 | 2 | 4, n: number): void {
    const at = this.#room(1 + width);
    this.#buf[at] = marker;
    if (width === 1) this.#buf[at + 1] = n;
    else if (width === 2) this.#buf.writeUInt16BE(n, at + 1);
    else this.#buf.writeUInt32BE(n, at + 1);
  }

  /** A non-negative integer below 2^64 in its smallest form. */
  uint(u: number): void {
    if (u <= 0x7f) this.byte(u);
    else if (u <= 0xff) this.#header(0xcc, 1, u);
    else if (u <= 0xffff) this.#header(0xcd, 2, u);
    else if (u <= 0xffffffff) this.#header(0xce, 4, u);
    else {
      const at = this.#room(9);
      this.#buf[at] = 0xcf;
      this.#buf.writeBigUInt64BE(BigInt(u), at + 1);
    }
  }

  /** A negative integer from −2^63 in its smallest form. */
  #negative(i: number): void {
    if (i >= -32) this.byte(i + 0x100);
    else if (i >= -128) {
      const at = this.#room(2);
      this.#buf[at] = 0xd0;
      this.#buf.writeInt8(i, at + 1);
    } else if (i >= -32768) {
      const at = this.#room(3);
      this.#buf[at] = 0xd1;
      this.#buf.writeInt16BE(i, at + 1);
    } else if (i >= -2147483648) {
      const at = this.#room(5);
      this.#buf[at] = 0xd2;
      this.#buf.writeInt32BE(i, at + 1);
    } else {
      const at = this.#room(9);
      this.#buf[at] = 0xd3;
      this.#buf.writeBigInt64BE(BigInt(i), at + 1);
    }
  }

  /** A finite number: integral values within −2^63..2^64 as integers, others as float64. */
  number(n: number): void {
    if (Number.isInteger(n) && n >= 0 && n < 2 ** 64) this.uint(n);
    else if (Number.isInteger(n) && n < 0 && n >= -(2 ** 63)) this.#negative(n);
    else {
      const at = this.#room(9);
      this.#buf[at] = 0xcb;
      this.#buf.writeDoubleBE(n, at + 1);
    }
  }

  /** A `str` (the caller makes it well-formed: a lone surrogate would be written as U+FFFD). */
  str(s: string): void {
    // Short strings: at most 3 bytes a UTF-16 unit, so the fixstr header can be decided first.
    if (s.length <= 10) {
      const at = this.#room(1 + 3 * s.length);
      const n = this.#buf.write(s, at + 1, 'utf8');
      this.#buf[at] = 0xa0 | n;
      this.#pos = at + 1 + n;
      return;
    }
    // Its UTF-8 length n is from s.length to 3 × s.length: room for the widest header that
    // range allows, the string written after it (counting its bytes first, Buffer.byteLength,
    // costs several times the write), then moved closer if n needs a narrower header
    // (only when the range spans two header sizes).
    const wide = strHeaderBytes(3 * s.length);
    const at = this.#room(wide + 3 * s.length);
    const buf = this.#buf;
    const n = buf.write(s, at + wide, 'utf8');
    const h = strHeaderBytes(n);
    if (h < wide) buf.copyWithin(at + h, at + wide, at + wide + n);
    if (h === 1) buf[at] = 0xa0 | n;
    else if (h === 2) {
      buf[at] = 0xd9;
      buf[at + 1] = n;
    } else if (h === 3) {
      buf[at] = 0xda;
      buf.writeUInt16BE(n, at + 1);
    } else {
      buf[at] = 0xdb;
      buf.writeUInt32BE(n, at + 1);
    }
    this.#pos = at + h + n;
  }

  /** A `bin`. */
  bin(bytes: Uint8Array): void {
    const n = bytes.length;
    if (n <= 0xff) this.#header(0xc4, 1, n);
    else if (n <= 0xffff) this.#header(0xc5, 2, n);
    else this.#header(0xc6, 4, n);
    this.raw(bytes);
  }

  /** An array or map header by count. */
  container(kind: 'array' | 'map', n: number): void {
    const [fix, m16, m32] = kind === 'array' ? [0x90, 0xdc, 0xdd] : [0x80, 0xde, 0xdf];
    if (n < 16) this.byte(fix | n);
    else if (n <= 0xffff) this.#header(m16, 2, n);
    else this.#header(m32, 4, n);
  }

  /**
   * Any value `JSON.stringify` encodes, with its semantics (`toJSON` asked with its key and not
   * again of what it returned; `undefined`, functions and symbols omitted as object properties;
   * boxed primitives unboxed), written canonically; object keys in the order of their UTF-8 bytes. Throws
   * an `EncodeProblem` for what JSON data cannot hold: a BigInt, a symbol, a function,
   * `undefined` elsewhere, NaN or ±∞, a cycle, or binary data (except at the top: `bin`).
   */
  value(value: unknown, path = 'data', key = '', top = true): void {
    this.#value(value, path, key, new Set(), top, true);
  }

  #value(value: unknown, path: string, key: string, ancestors: Set<object>, top: boolean, askToJSON: boolean): void {
    switch (typeof value) {
      case 'string':
        return this.str(this.#wellFormed(value, path));
      case 'boolean':
        return this.byte(value ? 0xc3 : 0xc2);
      case 'number':
        if (!Number.isFinite(value)) {
          throw new EncodeProblem(path, `the number ${String(value)}`, 'the envelope has no NaN or Infinity; send null or a string');
        }
        return this.number(value);
      case 'bigint':
        throw new EncodeProblem(path, 'a BigInt', 'convert it to a string (or a number if it is safe) first');
      case 'symbol':
        throw new EncodeProblem(path, 'a symbol', 'send a string instead');
      case 'function':
        throw new EncodeProblem(path, 'a function', 'only data can be sent');
      case 'undefined':
        throw new EncodeProblem(path, 'undefined', 'send null instead');
      default:
        break;
    }
    if (value === null) return this.byte(0xc0);
    const object = value as object;
    if (ArrayBuffer.isView(object) || object instanceof ArrayBuffer || object instanceof SharedArrayBuffer) {
      if (top && object instanceof Uint8Array) return this.bin(object);
      throw new EncodeProblem(
        path,
        `binary data (a ${object.constructor.name})`,
        top ? 'send it as a Buffer or Uint8Array' : 'bytes can only be the whole of data, not inside an array or object',
      );
    }
    const toJSON = askToJSON ? (object as { toJSON?: unknown }).toJSON : undefined;
    if (typeof toJSON === 'function') {
      return this.#value((toJSON as (key: string) => unknown).call(object, key), path, key, ancestors, false, false);
    }
    if (object instanceof Number || object instanceof String || object instanceof Boolean) {
      return this.#value(object.valueOf(), path, key, ancestors, false, false);
    }
    if (ancestors.has(object)) throw new EncodeProblem(path, 'a cycle (a value that contains itself)', 'send a tree');
    ancestors.add(object);
    if (Array.isArray(object)) {
      this.container('array', object.length);
      for (let i = 0; i < object.length; i++) {
        this.#value(object[i] as unknown, `${path}[${i}]`, String(i), ancestors, false, true);
      }
    } else {
      // [key as written, key, value]
      const entries: [string, string, unknown][] = [];
      let sorted = true;
      for (const k of Object.keys(object)) {
        const v = (object as Record<string, unknown>)[k];
        const t = typeof v;
        // JSON omits these as properties (after `toJSON`, which may turn one into something).
        if (t === 'undefined' || t === 'function' || t === 'symbol') continue;
        const written = this.#wellFormed(k, `${keyPath(path, k)} (its key)`);
        const last = entries[entries.length - 1];
        if (last !== undefined && compareUtf8(last[0], written) > 0) sorted = false;
        entries.push([written, k, v]);
      }
      // Canonical key order: by the keys' UTF-8 bytes, as the Rust core's map writes them
      // (`Object.keys` order is insertion order, with integer-like keys first).
      if (!sorted) entries.sort((a, b) => compareUtf8(a[0], b[0]));
      this.container('map', entries.length);
      for (const [written, k, v] of entries) {
        this.str(written);
        this.#value(v, keyPath(path, k), k, ancestors, false, true);
      }
    }
    ancestors.delete(object);
  }
}

/**
 * Orders two well-formed strings as their UTF-8 bytes compare (code point order). UTF-16 code
 * unit order differs only where a surrogate meets a unit from U+E000 to U+FFFF: the surrogate's
 * code point (U+10000 and up) is the greater, so surrogates are moved above that range.
 */
export function compareUtf8(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    if (x >= 0xd800 && y >= 0xd800) {
      x = x >= 0xe000 ? x - 0x800 : x + 0x2000;
      y = y >= 0xe000 ? y - 0x800 : y + 0x2000;
    }
    return x - y;
  }
  return a.length - b.length;
}

function keyPath(path: string, key: string): string {
  return /^[A-Za-z_$][\w$]*$/.test(key) ? `${path}.${key}` : `${path}[${JSON.stringify(key)}]`;
}

/** The most a frame's length header can announce. */
const MAX_HEADER_LENGTH = 0xffffffff;

/**
 * Appends one frame holding `{msg_type, data, id?}` (keys in that order, `data` by
 * `writeData`) to `w`: its 4-byte little-endian length, then the map. Throws a `RangeError`
 * for a body over 4 GiB − 1 (nothing is kept of it).
 */
export function writeFrame(w: Writer, msgType: string, id: number | undefined, writeData: (w: Writer) => void): void {
  const start = w.length;
  w.raw(FOUR_ZEROS);
  w.byte(id === undefined ? 0x82 : 0x83);
  w.raw(MSG_TYPE_KEY);
  w.str(msgType.isWellFormed() ? msgType : msgType.toWellFormed());
  w.raw(DATA_KEY);
  writeData(w);
  if (id !== undefined) {
    w.raw(ID_KEY);
    w.uint(id);
  }
  const length = w.length - start - FRAME_HEADER_BYTES;
  if (length > MAX_HEADER_LENGTH) throw new RangeError(`a frame of ${length} bytes is over the 4294967295 a header can announce`);
  w.view().writeUInt32LE(length, start);
}

const FOUR_ZEROS = new Uint8Array(4);
const MSG_TYPE_KEY = Buffer.from('\xa8msg_type', 'latin1');
const DATA_KEY = Buffer.from('\xa4data', 'latin1');
const ID_KEY = Buffer.from('\xa2id', 'latin1');

/** One frame whose `data` is the string `text` (the built-in services' replies). */
export function textFrame(msgType: string, text: string, id: number | undefined): Buffer {
  const w = new Writer(32 + 3 * msgType.length + Buffer.byteLength(text, 'utf8'));
  writeFrame(w, msgType, id, (w) => w.str(text));
  return w.view();
}
