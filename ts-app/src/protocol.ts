// The protocol: the message type, the validation of one line, the reply encoding, and the
// responder state machine. The TypeScript twin of the Rust core (`message.rs`, `error.rs`,
// `responder.rs`): same rules, byte-identical replies, and every rule is a case in
// `tests/conformance.json`. Its API is the napi addon's, so benchmarks can swap the two.

import { isUtf8 } from 'node:buffer';

import { DEFAULT_MAX_FRAME_BYTES, frameCutText, frameTooLongText, type Packet } from './frame.js';
import { DEFAULT_MAX_LINE_BYTES, type Frame, isBlank } from './framing.js';
import { decodePayload, hexExcerpt, textFrame, Writer, writeFrame } from './msgpack.js';

/** One protocol message, with the wire's field names. */
export interface Message {
  /** `greeting`, `data`, `exit` (to the responder); `response`, `ack`, `exit`, `error` (from it). */
  msg_type: string;
  /** The payload. */
  data: string;
  /** Correlation id (an integer from 0 to `Number.MAX_SAFE_INTEGER`), echoed on replies. */
  id?: number;
}

/** Options for `new Responder(options)`; every field is optional. */
export interface ResponderOptions {
  /** End the conversation after this many `data` messages; 0 = never. Default 5. */
  exitAfter?: number;
  /** Who says hello and goodbye (`Hello from {name}!`). Default `TypeScript`. */
  name?: string;
  /** Lines longer than this many bytes get an `error` reply. Default 16 MiB. */
  maxLineBytes?: number;
  /** MessagePack frames longer than this many bytes get an `error` reply. Default 16 MiB. */
  maxFrameBytes?: number;
}

/** The largest `id` a JavaScript peer can represent exactly. */
export const MAX_SAFE_ID = Number.MAX_SAFE_INTEGER;
/** After this many `data` messages the responder says goodbye (the seed's five). */
export const DEFAULT_EXIT_AFTER = 5;
/** Who says hello: the seed's child is TypeScript, and every path answers the same. */
export const DEFAULT_NAME = 'TypeScript';

/** How many characters of an offending line an error quotes. */
const EXCERPT_CHARS = 40;

/** The kind of a JSON value, as error messages name it. */
export type JsonKind = 'null' | 'boolean' | 'number' | 'string' | 'array' | 'object';

/** The kind of a value `JSON.parse` returned. */
export function jsonKind(value: unknown): JsonKind {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  switch (typeof value) {
    case 'boolean':
      return 'boolean';
    case 'number':
      return 'number';
    case 'string':
      return 'string';
    default:
      return 'object';
  }
}

/** The first 40 characters (code points, not UTF-16 units) of `s`, then `…` if there was more. */
export function excerpt(s: string): string {
  // 40 code points take at least 40 UTF-16 units, so a short string needs no counting.
  if (s.length <= EXCERPT_CHARS) return s;
  let count = 0;
  let cut = 0;
  for (const ch of s) {
    if (count === EXCERPT_CHARS) return `${s.slice(0, cut)}…`;
    count++;
    cut += ch.length;
  }
  return s;
}

/**
 * The offset of the first byte of the first invalid UTF-8 sequence in `bytes` (what Rust's
 * `Utf8Error::valid_up_to()` reports), or -1 if it is all valid. Strict like Rust: overlong
 * forms, surrogates (ED A0..BF), code points above U+10FFFF and truncated sequences are
 * invalid. Only the error path runs it; `isUtf8` answers the common case.
 */
export function invalidUtf8Offset(bytes: Uint8Array): number {
  const n = bytes.length;
  const cont = (j: number): boolean => j < n && ((bytes[j] ?? 0) & 0xc0) === 0x80;
  const within = (j: number, lo: number, hi: number): boolean => {
    const b = bytes[j];
    return j < n && b !== undefined && b >= lo && b <= hi;
  };
  let i = 0;
  while (i < n) {
    const b = bytes[i] ?? 0;
    if (b < 0x80) {
      i++;
    } else if (b >= 0xc2 && b <= 0xdf) {
      if (!cont(i + 1)) return i;
      i += 2;
    } else if (b >= 0xe0 && b <= 0xef) {
      // The second byte's range excludes overlongs (E0) and surrogates (ED).
      const [lo, hi] = b === 0xe0 ? [0xa0, 0xbf] : b === 0xed ? [0x80, 0x9f] : [0x80, 0xbf];
      if (!within(i + 1, lo, hi) || !cont(i + 2)) return i;
      i += 3;
    } else if (b >= 0xf0 && b <= 0xf4) {
      // The second byte's range excludes overlongs (F0) and code points above U+10FFFF (F4).
      const [lo, hi] = b === 0xf0 ? [0x90, 0xbf] : b === 0xf4 ? [0x80, 0x8f] : [0x80, 0xbf];
      if (!within(i + 1, lo, hi) || !cont(i + 2) || !cont(i + 3)) return i;
      i += 4;
    } else {
      // A stray continuation byte, C0/C1 (always overlong) or F5..FF.
      return i;
    }
  }
  return -1;
}

/** `{"msg_type":T,"data":D[,"id":N]}` and `\n`: the exact bytes the Rust core writes too. */
export function encodeMessage(msg: Message): string {
  // JSON.stringify escapes a well-formed string exactly as serde_json does (`"`, `\` and
  // control characters only, lowercase `\u00xx`); the responder only emits well-formed ones.
  const head = `{"msg_type":${JSON.stringify(msg.msg_type)},"data":${JSON.stringify(msg.data)}`;
  return msg.id === undefined ? `${head}}\n` : `${head},"id":${msg.id}}\n`;
}

/** A message object with `id` only when there is one (the shape `handle` returns). */
function message(msgType: string, data: string, id: number | undefined): Message {
  return id === undefined ? { msg_type: msgType, data } : { msg_type: msgType, data, id };
}

/** The `error` reply numbered `line`, as a line of NDJSON. */
function errorLine(line: number, text: string, id?: number): string {
  return encodeMessage(message('error', `line ${line}: ${text}`, id));
}

/** The text of the error for an over-long line. */
function tooLongText(length: number, limit: number): string {
  return `line of ${length} bytes exceeds the ${limit}-byte limit`;
}

/**
 * The `error` reply a responder gives for an over-long line: for a host whose responder
 * cannot take the frame itself (the native engine; see `engine.ts`).
 */
export function tooLongReply(line: number, length: number, limit: number): string {
  return errorLine(line, tooLongText(length, limit));
}

/** How a plain `data` request begins, up to its payload. */
const PLAIN_DATA_HEAD = '{"msg_type":"data","data":"';
/** How its `ack` begins, up to the payload. */
const ACK_HEAD = '{"msg_type":"ack","data":"Acknowledged: ';

/**
 * A `data` message exactly as the encoders write it, `{"msg_type":"data","data":"D"}` or
 * `{"msg_type":"data","data":"D","id":N}`: no whitespace, no escape and no control character
 * in `D`, `N` a canonical decimal integer of at most 15 digits (so at most `MAX_SAFE_ID`; a
 * 16-digit id takes the general path). A line it matches is valid JSON that `decodeMessage`
 * reads as the same message (a string without escapes is its own value), so matching it first
 * only saves the parse. The Rust core's `decode_canonical` is its twin.
 */
const PLAIN_DATA = /^\{"msg_type":"data","data":"[^"\\\u0000-\u001f]*"(?:,"id":(?:0|[1-9][0-9]{0,14}))?\}$/;

/** A line decoded: the message, or why it is not one (and its `id` if that much was valid). */
export type Decoded = { ok: true; message: Message } | { ok: false; error: string; id?: number };

const hasOwn = (object: object, key: string): boolean => Object.prototype.hasOwnProperty.call(object, key);

/**
 * Validates one line of JSON text with the protocol's exact error texts (without the
 * `line N: ` prefix). Checks run in the Rust core's order: JSON, object, `id`, `msg_type`,
 * `data`; unknown fields are ignored and a repeated key takes its last value (as JSON.parse
 * does). Fields are read only if they are own properties, so `"__proto__"` keys and a
 * polluted `Object.prototype` change nothing.
 */
export function decodeMessage(text: string): Decoded {
  const decoded = decodeFields(text);
  if (!decoded.ok) return decoded;
  const { msg_type: msgType, data, id } = decoded.message;
  if (typeof data !== 'string') {
    const error = `field \`data\` must be a string, got ${jsonKind(data)}: \`${excerpt(text)}\``;
    return id === undefined ? { ok: false, error } : { ok: false, error, id };
  }
  // An unpaired surrogate escape (`"\ud800"`) is valid JSON, but no Rust string can hold
  // it, so the core calls the line invalid JSON; so do we, to answer with the same bytes.
  if (!data.isWellFormed()) return { ok: false, error: `invalid JSON: \`${excerpt(text)}\`` };
  return { ok: true, message: message(msgType, data, id) };
}

/** The library's message: any `msg_type`, any JSON `data` (see `decodeEnvelope`). */
export interface Envelope {
  msg_type: string;
  data: unknown;
  id?: number;
}

/** A line decoded as an `Envelope`, or why it is not one (and its `id` if that was valid). */
export type DecodedEnvelope = { ok: true; message: Envelope } | { ok: false; error: string; id?: number };

/**
 * Validates one line as the library's envelope, with the protocol's exact error texts
 * (without the `line N: ` prefix) and the Rust core's `decode_envelope` rules: JSON, object,
 * `id`, `msg_type` (a string), `data` (present, any JSON value). Fields are read only if they
 * are own properties, so `"__proto__"` keys and a polluted `Object.prototype` change nothing.
 * An unpaired surrogate escape in `msg_type`, or anywhere in `data` (a string or a key at any
 * depth), is invalid JSON, as in Rust (where no string can hold one), with the `id`.
 */
export function decodeEnvelope(text: string): DecodedEnvelope {
  const decoded = decodeFields(text);
  if (!decoded.ok || !SURROGATE_ESCAPE.test(text) || isWellFormedJson(decoded.message.data)) return decoded;
  const error = `invalid JSON: \`${excerpt(text)}\``;
  const { id } = decoded.message;
  return id === undefined ? { ok: false, error } : { ok: false, error, id };
}

/**
 * `decodeEnvelope`'s message for a line it accepts, without its error texts: undefined for
 * anything it might refuse (then `decodeEnvelope` gives the verdict). The reader's fast path:
 * one `JSON.parse` and a few checks, no result wrapper.
 */
export function parseEnvelope(text: string): Envelope | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const object = value as Record<string, unknown>;
  // Own properties only, as `decodeFields` reads them.
  if (!hasOwn(object, 'msg_type') || !hasOwn(object, 'data')) return undefined;
  const msgType = object['msg_type'];
  const data = object['data'];
  if (typeof msgType !== 'string' || !msgType.isWellFormed()) return undefined;
  if (typeof data === 'string' ? !data.isWellFormed() : SURROGATE_ESCAPE.test(text) && !isWellFormedJson(data)) return undefined;
  const rawId = hasOwn(object, 'id') ? object['id'] : null;
  if (rawId === null) return { msg_type: msgType, data };
  if (typeof rawId !== 'number' || !Number.isInteger(rawId) || rawId < 0 || rawId > MAX_SAFE_ID) return undefined;
  return { msg_type: msgType, data, id: rawId === 0 ? 0 : rawId };
}

/** A `\uD800`–`\uDFFF` escape, maybe unpaired: only then is `data` walked. */
const SURROGATE_ESCAPE = /\\u[dD][89a-fA-F]/;

/** Whether every string and key in a parsed JSON value is well-formed; a loop, for any depth. */
function isWellFormedJson(value: unknown): boolean {
  const stack = [value];
  while (stack.length > 0) {
    const v = stack.pop();
    if (typeof v === 'string') {
      if (!v.isWellFormed()) return false;
    } else if (typeof v === 'object' && v !== null) {
      for (const [key, item] of Object.entries(v)) {
        if (!key.isWellFormed()) return false;
        stack.push(item);
      }
    }
  }
  return true;
}

/** `decodeEnvelope` without its rule on `data`, which `decodeMessage` words its own way. */
function decodeFields(text: string): DecodedEnvelope {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    // JSON.parse only throws for text it refuses (it has no depth limit to hit).
    return { ok: false, error: `invalid JSON: \`${excerpt(text)}\`` };
  }
  const kind = jsonKind(value);
  if (kind !== 'object') return { ok: false, error: `expected a JSON object, got ${kind}: \`${excerpt(text)}\`` };
  const object = value as Record<string, unknown>;

  let id: number | undefined;
  const rawId = hasOwn(object, 'id') ? object['id'] : null;
  if (rawId !== null) {
    if (typeof rawId !== 'number' || !Number.isInteger(rawId) || rawId < 0 || rawId > MAX_SAFE_ID) {
      const error = `field \`id\` must be an integer from 0 to ${MAX_SAFE_ID}, got ${jsonKind(rawId)}`;
      return { ok: false, error: `${error}: \`${excerpt(text)}\`` };
    }
    id = rawId === 0 ? 0 : rawId; // `-0` is 0, as in Rust.
  }
  const refuse = (error: string): DecodedEnvelope => (id === undefined ? { ok: false, error } : { ok: false, error, id });

  if (!hasOwn(object, 'msg_type')) return refuse(`missing field \`msg_type\`: \`${excerpt(text)}\``);
  const msgType = object['msg_type'];
  if (typeof msgType !== 'string') {
    return refuse(`field \`msg_type\` must be a string, got ${jsonKind(msgType)}: \`${excerpt(text)}\``);
  }
  if (!msgType.isWellFormed()) return { ok: false, error: `invalid JSON: \`${excerpt(text)}\`` };
  if (!hasOwn(object, 'data')) return refuse(`missing field \`data\`: \`${excerpt(text)}\``);
  const data = object['data'];
  return { ok: true, message: id === undefined ? { msg_type: msgType, data } : { msg_type: msgType, data, id } };
}

/** A `TypeError` like the addon's (code `InvalidArg`), for a caller passing the wrong thing. */
function invalidArg(text: string): TypeError {
  return Object.assign(new TypeError(text), { code: 'InvalidArg' });
}

/** `typeof`, except that `null` and arrays are named as such (as the addon names them). */
function kindOf(value: unknown): string {
  if (value === null) return 'null';
  return Array.isArray(value) ? 'array' : typeof value;
}

/** `kind` plus, for a number, its value: `number -1`, `number 1.5`, `string`. */
function describe(value: unknown): string {
  return typeof value === 'number' ? `number ${String(value)}` : kindOf(value);
}

const isSafeCount = (value: unknown): value is number =>
  typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= MAX_SAFE_ID;

/** A string as it would arrive in Rust: napi turns unpaired surrogates into U+FFFD. */
const wellFormed = (s: string): string => (s.isWellFormed() ? s : s.toWellFormed());

function readOptions(options: unknown): Required<ResponderOptions> {
  const read = {
    exitAfter: DEFAULT_EXIT_AFTER,
    name: DEFAULT_NAME,
    maxLineBytes: DEFAULT_MAX_LINE_BYTES,
    maxFrameBytes: DEFAULT_MAX_FRAME_BYTES,
  };
  if (options === undefined || options === null) return read;
  if (typeof options !== 'object') throw invalidArg(`Responder: expected an options object, got ${kindOf(options)}`);
  const { exitAfter, name, maxLineBytes, maxFrameBytes } = options as Record<string, unknown>;
  for (const [key, value] of [
    ['exitAfter', exitAfter],
    ['maxLineBytes', maxLineBytes],
    ['maxFrameBytes', maxFrameBytes],
  ] as const) {
    if (value !== undefined && !isSafeCount(value)) {
      throw invalidArg(
        `Responder: option \`${key}\` must be an integer from 0 to ${MAX_SAFE_ID}, got ${describe(value)}`,
      );
    }
  }
  if (name !== undefined && typeof name !== 'string') {
    throw invalidArg(`Responder: option \`name\` must be a string, got ${kindOf(name)}`);
  }
  return {
    exitAfter: (exitAfter as number | undefined) ?? read.exitAfter,
    name: name === undefined ? read.name : wellFormed(name),
    maxLineBytes: (maxLineBytes as number | undefined) ?? read.maxLineBytes,
    maxFrameBytes: (maxFrameBytes as number | undefined) ?? read.maxFrameBytes,
  };
}

/** Reads a message object as the addon's `handle` does, or throws the addon's `TypeError`. */
function readMessage(msg: unknown): { msgType: string; data: string; id: number | undefined } {
  if (typeof msg !== 'object' || msg === null || Array.isArray(msg)) {
    throw invalidArg(`handle: expected a message object, got ${kindOf(msg)}`);
  }
  const fields = msg as Record<string, unknown>;
  const string = (name: string): string => {
    const value = fields[name];
    if (value === undefined) throw invalidArg(`handle: missing field \`${name}\``);
    if (typeof value !== 'string') throw invalidArg(`handle: field \`${name}\` must be a string, got ${kindOf(value)}`);
    return wellFormed(value);
  };
  const msgType = string('msg_type');
  const data = string('data');
  const rawId = fields['id'];
  if (rawId === undefined || rawId === null) return { msgType, data, id: undefined };
  if (!isSafeCount(rawId)) {
    throw invalidArg(`handle: field \`id\` must be an integer from 0 to ${MAX_SAFE_ID}, got ${describe(rawId)}`);
  }
  return { msgType, data, id: rawId === 0 ? 0 : rawId };
}

const LF = 0x0a;
const CR = 0x0d;

const asBuffer = (bytes: Uint8Array): Buffer =>
  Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);

/** Only spaces, tabs and carriage returns. */
function isBlankText(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c !== 0x20 && c !== 0x09 && c !== 0x0d) return false;
  }
  return true;
}

/**
 * One conversation's state: `greeting` → `response`, `data` X → `ack` "Acknowledged: X"
 * (after the `exitAfter`th also `exit`, and done), `exit` → `exit` (done); anything it cannot
 * answer gets an `error` reply naming the physical line, and the conversation goes on.
 */
export class Responder {
  readonly #exitAfter: number;
  readonly #name: string;
  readonly #maxLineBytes: number;
  readonly #maxFrameBytes: number;
  #dataSeen = 0;
  #done = false;
  /** Physical lines (or messages) handled so far: the number errors are reported against. */
  #line = 0;

  /** A fresh conversation. Throws a `TypeError` (code `InvalidArg`) for bad options. */
  constructor(options?: ResponderOptions | null) {
    const read = readOptions(options);
    this.#exitAfter = read.exitAfter;
    this.#name = read.name;
    this.#maxLineBytes = read.maxLineBytes;
    this.#maxFrameBytes = read.maxFrameBytes;
  }

  /** True once the conversation has ended (`exit` sent); later messages get an `error` reply. */
  get done(): boolean {
    return this.#done;
  }

  /** How many physical lines (or messages) this responder has been given. */
  get linesSeen(): number {
    return this.#line;
  }

  /**
   * Answers one NDJSON line (a trailing `\n` or `\r\n` is tolerated) with the reply lines,
   * each ending in `\n`; "" for a blank line (within the limit), which still counts as a
   * line. The line is read as its UTF-8 encoding, so an unpaired surrogate is U+FFFD, as in
   * the addon.
   */
  handleLine(line: string): string {
    this.#line++;
    let end = line.length;
    if (end > 0 && line.charCodeAt(end - 1) === LF) end--;
    if (end > 0 && line.charCodeAt(end - 1) === CR) end--;
    const text = end === line.length ? line : line.slice(0, end);
    // Length before blankness, as the stream decoder must judge it. A UTF-16 unit is at most
    // 3 UTF-8 bytes: only a line that might be over the limit is measured.
    if (text.length * 3 > this.#maxLineBytes) {
      const length = Buffer.byteLength(text, 'utf8');
      if (length > this.#maxLineBytes) return errorLine(this.#line, tooLongText(length, this.#maxLineBytes));
    }
    if (isBlankText(text)) return '';
    return this.#answerText(wellFormed(text));
  }

  /**
   * `handleLine` on bytes, which may be anything, including invalid UTF-8 (answered with an
   * `error` reply). A trailing `\n` or `\r\n` is tolerated.
   */
  handleBuffer(bytes: Uint8Array): Buffer {
    this.#line++;
    let end = bytes.length;
    if (end > 0 && bytes[end - 1] === LF) end--;
    if (end > 0 && bytes[end - 1] === CR) end--;
    const line = asBuffer(bytes).subarray(0, end);
    if (line.length > this.#maxLineBytes) {
      return Buffer.from(errorLine(this.#line, tooLongText(line.length, this.#maxLineBytes)));
    }
    if (isBlank(line)) return Buffer.alloc(0);
    return Buffer.from(this.#answerBytes(line));
  }

  /** Answers a frame from a `LineDecoder`, numbering errors by its physical line. */
  handleFrame(frame: Frame): string {
    this.#line = frame.line;
    if (frame.kind === 'too_long') return errorLine(frame.line, tooLongText(frame.length, this.#maxLineBytes));
    return this.#answerBytes(frame.bytes);
  }

  /**
   * Answers a line that `LineDecoder.feed` handed to its sink's `text`: valid UTF-8, within
   * the limit, not blank, without its line ending, numbered `line`. The replies are those
   * `handleFrame` gives that line's frame, without a Buffer view, a UTF-8 check and a decode
   * per line.
   */
  handleText(line: number, text: string): string {
    this.#line = line;
    return this.#answerText(text);
  }

  /**
   * Answers a message object (counts as one line). Throws a `TypeError` (code `InvalidArg`)
   * if it is not one, as the addon does.
   */
  handle(msg: Message): Message[] {
    const { msgType, data, id } = readMessage(msg);
    this.#line++;
    return this.#respond(msgType, data, id);
  }

  /**
   * Answers one MessagePack packet from a `FrameDecoder` with the reply frames (each with its
   * length header), numbering errors by its frame number (`frame 3: not a map: \`91a178\``).
   */
  handlePacket(packet: Packet): Buffer {
    this.#line = packet.frame;
    if (packet.kind === 'frame') return this.#answerFrame(packet.bytes);
    const text =
      packet.kind === 'too_long'
        ? frameTooLongText(packet.length, this.#maxFrameBytes)
        : frameCutText(packet.received, packet.length);
    return textFrame('error', `frame ${packet.frame}: ${text}`, undefined);
  }

  /**
   * Answers one MessagePack frame's body (without its length header), numbered after the last
   * one given: the in-process way, without a decoder. Returns the reply frames.
   */
  handleFrameBody(body: Uint8Array): Buffer {
    this.#line++;
    if (body.length > this.#maxFrameBytes) {
      return textFrame('error', `frame ${this.#line}: ${frameTooLongText(body.length, this.#maxFrameBytes)}`, undefined);
    }
    return this.#answerFrame(asBuffer(body));
  }

  #answerFrame(frame: Buffer): Buffer {
    const decoded = decodePayload(frame);
    if (!decoded.ok) return textFrame('error', `frame ${this.#line}: ${decoded.error}`, decoded.id);
    const replies = this.#respond(decoded.msgType, decoded.data, decoded.id, 'frame', () => hexExcerpt(frame));
    const first = replies[0];
    if (replies.length === 1 && first !== undefined) return textFrame(first.msg_type, first.data, first.id);
    const w = new Writer();
    for (const reply of replies) writeFrame(w, reply.msg_type, reply.id, (w) => w.str(reply.data));
    return w.view();
  }

  #answerBytes(bytes: Buffer): string {
    if (!isUtf8(bytes)) return errorLine(this.#line, `invalid UTF-8 at byte ${invalidUtf8Offset(bytes)}`);
    // `toString`, not a TextDecoder: it keeps a leading BOM, which then makes the JSON invalid,
    // as in Rust.
    return this.#answerText(bytes.toString('utf8'));
  }

  #answerText(text: string): string {
    // A `data` message in the envelope as every encoder writes it, answered with its `ack`
    // alone: no JSON.parse, no message objects. The request's `D","id":N}` (or `D"}`) is the
    // reply's tail as it stands: `D` needs no escaping and `N` is canonical. The exit on the
    // last counted message, and everything else, goes the general way below.
    if (!this.#done && (this.#exitAfter === 0 || this.#dataSeen + 1 < this.#exitAfter) && PLAIN_DATA.test(text)) {
      this.#dataSeen++;
      return `${ACK_HEAD}${text.slice(PLAIN_DATA_HEAD.length)}\n`;
    }
    const decoded = decodeMessage(text);
    if (!decoded.ok) return errorLine(this.#line, decoded.error, decoded.id);
    const { msg_type: msgType, data, id } = decoded.message;
    let out = '';
    for (const reply of this.#respond(msgType, data, id)) out += encodeMessage(reply);
    return out;
  }

  /**
   * The replies to one message. `data` is bytes only from a frame (`bin`); `quote` renders the
   * message for an error about its data's type (the frame's first bytes in hex).
   */
  #respond(
    msgType: string,
    data: string | Buffer,
    id: number | undefined,
    unit: 'line' | 'frame' = 'line',
    quote: () => string = () => '',
  ): Message[] {
    const where = `${unit} ${this.#line}`;
    if (this.#done) return [message('error', `${where}: conversation has ended; message ignored`, id)];
    switch (msgType) {
      case 'greeting':
        return [message('response', `Hello from ${this.#name}!`, id)];
      case 'data': {
        if (typeof data !== 'string') {
          return [message('error', `${where}: field \`data\` must be a string, got bytes: \`${quote()}\``, id)];
        }
        this.#dataSeen++;
        const ack = message('ack', `Acknowledged: ${data}`, id);
        if (this.#exitAfter === 0 || this.#dataSeen < this.#exitAfter) return [ack];
        this.#done = true;
        return [ack, message('exit', `Goodbye from ${this.#name}!`, id)];
      }
      case 'exit':
        this.#done = true;
        return [message('exit', `Goodbye from ${this.#name}!`, id)];
      default: {
        const text = `unknown msg_type \`${excerpt(msgType)}\`; expected greeting, data or exit`;
        return [message('error', `${where}: ${text}`, id)];
      }
    }
  }
}
