// `serveStdio`: write a Node child service. Handlers map a `msg_type` to a function of the
// request's data; this module turns each line (or MessagePack frame) into a handler call and
// each result into a reply line (or frame), and engine.ts's `serveLines` (the loop the demo
// child uses too) owns the pipes: framing, batching, backpressure, EPIPE and EOF.

import { isUtf8 } from 'node:buffer';
import type { Readable, Writable } from 'node:stream';

import { type LineService, ReplyParts, serveLines } from './engine.js';
import {
  DEFAULT_MAX_FRAME_BYTES,
  FRAME_HEADER_BYTES,
  FrameDecoder,
  frameCutText,
  frameTooLongText,
  type Packet,
} from './frame.js';
import { DEFAULT_MAX_LINE_BYTES, type Frame } from './framing.js';
import { decodeMsgpackEnvelope, EncodeProblem, textFrame, Writer, writeFrame } from './msgpack.js';
import { FramePool } from './peer/encode.js';
import type { Encoding, JsonValue, Message } from './peer/types.js';
import { decodeEnvelope, excerpt, invalidUtf8Offset, MAX_SAFE_ID, tooLongReply } from './protocol.js';

/**
 * Answers one request. Returns (or resolves to) the reply's `data`: any value `JSON.stringify`
 * encodes (`undefined` is sent as `null`), or `reply(msgType, data)` to answer with another
 * `msg_type`; under msgpack also bytes (a `Buffer`/`Uint8Array`, sent as `bin`). A throw or a
 * rejection becomes an `error` reply carrying the error's message. `D` is what `data` may be:
 * under msgpack, `bin` data arrives as a `Buffer` (a view of the input, not a copy). Bytes
 * returned are copied into the reply at once (the handler may reuse them), except the `data`
 * received (or part of it), which is written from where it is: do not change received `data`
 * after returning it.
 */
export type Handler<D = JsonValue> = (data: D, message: Message<D>) => unknown;

/**
 * The handlers, by `msg_type`: an object (its own enumerable string keys only, so inherited
 * names like `constructor` or `__proto__` are unknown types) or a `Map`. Read once, when
 * `serveStdio` is called; its key order is the order unknown-type errors list them in.
 */
export type Handlers<D = JsonValue> = Readonly<Record<string, Handler<D>>> | ReadonlyMap<string, Handler<D>>;

/** Options of `serveStdio`; every field is optional. */
export interface ServeOptions {
  /**
   * How messages travel: `'json'` (NDJSON lines, the default) or `'msgpack'` (MessagePack
   * frames: a 4-byte little-endian length, then one map; `data` may be bytes both ways). The
   * parent must use the same (`spawnPeer(..., { encoding })`).
   */
  encoding?: Encoding;
  /** Under json: longer lines get an `error` reply and are never buffered. Default 16 MiB. */
  maxLineBytes?: number;
  /** Under msgpack: longer frames get an `error` reply and are never buffered. Default 16 MiB. */
  maxFrameBytes?: number;
  /**
   * At most this many handlers' Promises pending at once; reading stops until one settles.
   * Synchronous handlers finish before the next line is read and never count. Default 1024.
   */
  maxConcurrent?: number;
  /**
   * Where requests come from. Default stdin: under msgpack, when fd 0 is a pipe or a socket,
   * read by a socket of `serveStdio`'s own straight into the frames, which becomes
   * `process.stdin` (nothing else may read from it meanwhile; a `process.stdin` taken before
   * is not the one reading); otherwise `process.stdin`.
   */
  input?: Readable;
  /** Where replies go (protocol only: log to stderr). Default `process.stdout`. */
  output?: Writable;
}

/** The default bound on pending asynchronous handlers. */
export const DEFAULT_MAX_CONCURRENT = 1024;

/** A handler's result that answers with its own `msg_type`; made by `reply()`. */
export class Reply {
  /** The reply's `msg_type`. */
  readonly msgType: string;
  /** The reply's `data`, as a handler may return it. */
  readonly data: unknown;

  /** Prefer `reply(msgType, data)`. */
  constructor(msgType: string, data: unknown) {
    if (typeof msgType !== 'string') throw new TypeError(`reply: msgType must be a string, got ${typeof msgType}`);
    this.msgType = msgType;
    this.data = data;
  }
}

/**
 * A handler's result answering with `msgType` instead of the request's type, e.g.
 * `markdown: (d) => reply('html', render(String(d)))`.
 */
export function reply(msgType: string, data: unknown): Reply {
  return new Reply(msgType, data);
}

/**
 * Serves `handlers` on stdin/stdout until stdin ends; resolves once every handler has settled
 * and every reply has been handed to stdout, or at once when stdout's reader is gone (EPIPE, a
 * normal end). Rejects only on another stdin or stdout error. Throws a `TypeError` at once
 * for bad handlers or options.
 *
 * - `{"msg_type":T,"data":D,"id":N}` calls `handlers[T](D, message)`; its result R is sent as
 *   `{"msg_type":T,"data":R,"id":N}` (another type with `reply()`).
 * - A throw, a rejection, or a result the encoding cannot carry: `{"msg_type":"error","data":
 *   "<the error's message>","id":N}`. The service keeps serving.
 * - Without `id` (a notification) the handler runs and nothing is sent, except if it fails:
 *   then `{"msg_type":"error","data":"line L: <message>"}` names its input line L.
 * - A line that is not a request (bad JSON or UTF-8, not an object, a bad `id`, a missing
 *   field, an over-long line, an unknown `msg_type`) gets the protocol's `error` reply,
 *   `line L: …`, with the request's `id` when that much was valid; the next line is answered.
 *
 * With `encoding: 'msgpack'` the same holds frame by frame, errors saying `frame F` (counting
 * frames from 1) where JSON says `line L`; `bin` data reaches the handler as a `Buffer`, and a
 * handler may return bytes (a `Buffer`/`Uint8Array`, sent as `bin`). A frame over
 * `maxFrameBytes` is skipped as it arrives and answered with an error, as is a stream that ends
 * inside a frame.
 *
 * Synchronous handlers' replies are written in input order; a Promise's when it settles
 * (match replies by id). Stdin is paused while stdout is full or `maxConcurrent` Promises
 * are pending. The process is not exited: it ends by itself when nothing else keeps it alive.
 */
export function serveStdio(
  handlers: Handlers<JsonValue | Buffer>,
  options: ServeOptions & { encoding: 'msgpack' },
): Promise<void>;
export function serveStdio(handlers: Handlers, options?: ServeOptions & { encoding?: 'json' }): Promise<void>;
export function serveStdio(handlers: Handlers<JsonValue | Buffer>, options?: ServeOptions): Promise<void>;
export function serveStdio(handlers: unknown, options: ServeOptions = {}): Promise<void> {
  const table = readHandlers(handlers);
  const encoding: unknown = options.encoding ?? 'json';
  if (encoding !== 'json' && encoding !== 'msgpack') {
    const got = typeof encoding === 'string' ? `\`${excerpt(encoding)}\`` : kindOf(encoding);
    throw new TypeError(`serveStdio: option \`encoding\` must be 'json' or 'msgpack', got ${got}`);
  }
  const maxLineBytes = readCount(options.maxLineBytes, 'maxLineBytes', 0) ?? DEFAULT_MAX_LINE_BYTES;
  const maxFrameBytes = readCount(options.maxFrameBytes, 'maxFrameBytes', 0) ?? DEFAULT_MAX_FRAME_BYTES;
  const maxConcurrent = readCount(options.maxConcurrent, 'maxConcurrent', 1) ?? DEFAULT_MAX_CONCURRENT;
  const { input, output } = options;
  if (encoding === 'msgpack') {
    const decoder = new FrameDecoder({ maxFrameBytes });
    return serveLines(frameService(table, maxFrameBytes), { maxLineBytes, maxConcurrent, input, output, decoder });
  }
  return serveLines(handlerService(table, maxLineBytes), { maxLineBytes, maxConcurrent, input, output });
}

/** Any handler, as the table holds it (what `data` may be depends on the encoding). */
type AnyHandler = Handler<JsonValue | Buffer>;

function readHandlers(handlers: unknown): Map<string, AnyHandler> {
  let entries: [unknown, unknown][];
  if (handlers instanceof Map) entries = [...(handlers as Map<unknown, unknown>)];
  else if (typeof handlers === 'object' && handlers !== null && !Array.isArray(handlers)) {
    entries = Object.entries(handlers);
  } else {
    throw new TypeError(`serveStdio: expected an object or a Map of handlers, got ${kindOf(handlers)}`);
  }
  const table = new Map<string, AnyHandler>();
  for (const [msgType, handler] of entries) {
    if (typeof msgType !== 'string') {
      throw new TypeError(`serveStdio: a msg_type must be a string, got ${kindOf(msgType)}`);
    }
    if (typeof handler !== 'function') {
      throw new TypeError(`serveStdio: the handler for \`${msgType}\` must be a function, got ${kindOf(handler)}`);
    }
    table.set(msgType, handler as AnyHandler);
  }
  return table;
}

function readCount(value: unknown, name: string, min: number): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > MAX_SAFE_ID) {
    throw new TypeError(
      `serveStdio: option \`${name}\` must be an integer from ${min} to ${MAX_SAFE_ID}, got ${kindOf(value)}`,
    );
  }
  return value;
}

function kindOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  return typeof value === 'number' ? `number ${String(value)}` : typeof value;
}

/** `expected a`, `expected a or b`, `expected a, b or c`: the types this service answers. */
function expectedTypes(types: readonly string[]): string {
  if (types.length === 0) return 'no msg_type is answered'; // as the Rust Handlers say it
  if (types.length === 1) return `expected ${types[0] ?? ''}`;
  return `expected ${types.slice(0, -1).join(', ')} or ${types[types.length - 1] ?? ''}`;
}

/** One reply line, keys in the protocol's order; `data` is JSON text already. */
function replyLine(msgType: string, dataJson: string, id: number | undefined): string {
  const head = `{"msg_type":${JSON.stringify(msgType)},"data":${dataJson}`;
  return id === undefined ? `${head}}\n` : `${head},"id":${id}}\n`;
}

/** An `error` reply; numbered by line when it has no id (nothing else names the request). */
function errorReply(text: string, id: number | undefined, line?: number): string {
  const numbered = line === undefined ? text : `line ${line}: ${text}`;
  return replyLine('error', JSON.stringify(numbered), id);
}

/** What a handler threw, as text: always a string (an `Error`'s `message` may be anything). */
function messageOf(e: unknown): string {
  try {
    const text: unknown = e instanceof Error ? e.message : e;
    // An unpaired surrogate becomes U+FFFD: an error text must reach the peer whatever it holds.
    return (typeof text === 'string' ? text : String(text)).toWellFormed();
  } catch {
    return 'a handler threw a value that has no string form';
  }
}

/** The reply line for a handler's result (or its error), `''` for a notification that succeeded. */
function resultLine(msgType: string, result: unknown, id: number | undefined, line: number): string {
  if (id === undefined) return '';
  let type = msgType;
  let data = result;
  if (result instanceof Reply) {
    type = result.msgType;
    data = result.data;
  }
  if (data instanceof Uint8Array || data instanceof ArrayBuffer) {
    const what = data instanceof ArrayBuffer ? 'an ArrayBuffer' : `a ${data.constructor.name}`;
    return failureLine(
      new Error(`the reply to \`${excerpt(msgType)}\` is ${what}: bytes need the binary encoding, not JSON`),
      id,
      line,
    );
  }
  const unencodable = (why: string): string =>
    failureLine(new Error(`the reply to \`${excerpt(msgType)}\` cannot be encoded as JSON: ${why}`), id, line);
  // No Rust peer can read an unpaired surrogate (the protocol calls it invalid JSON), and
  // replacing it would change the handler's data behind its back.
  if (!type.isWellFormed()) return unencodable('it holds an unpaired surrogate');
  let json: string | undefined;
  try {
    json = data === undefined ? 'null' : (JSON.stringify(data) as string | undefined);
  } catch (e) {
    return unencodable(messageOf(e));
  }
  if (json === undefined) return unencodable(`it is a ${typeof data}`);
  // JSON.stringify escapes an unpaired surrogate as `\udXXX` (a pair stays raw): an
  // escape not itself escaped (`\\udXXX` is a backslash and text) is one.
  if (json.includes('\\ud') && UNPAIRED_ESCAPE.test(json)) return unencodable('it holds an unpaired surrogate');
  try {
    return replyLine(type, json, id);
  } catch (e) {
    // The JSON fits in a string, the line around it does not (V8's longest string).
    return unencodable(messageOf(e));
  }
}

/** `\ud800`–`\udfff` after an even number of backslashes, in JSON.stringify's output. */
const UNPAIRED_ESCAPE = /(?<!\\)(?:\\\\)*\\ud[89a-f]/;

/** The `error` reply for a handler that failed: with its id, or numbered by line if none. */
function failureLine(e: unknown, id: number | undefined, line: number): string {
  return id === undefined ? errorReply(messageOf(e), undefined, line) : errorReply(messageOf(e), id);
}

const isThenable = (value: unknown): value is PromiseLike<unknown> =>
  (typeof value === 'object' || typeof value === 'function') &&
  value !== null &&
  typeof (value as { then?: unknown }).then === 'function';

/**
 * Calls `handler` and puts its result through `settled`, or its failure through `failed`; a
 * Promise of that if the handler returned one. Everything the result is put through runs user
 * code (getters, `then`, `toJSON`) or can outgrow a string, so it all sits inside a try: a
 * failure there is this request's error reply, never the service's end.
 */
function callHandler<T>(
  handler: AnyHandler,
  message: Message<JsonValue | Buffer>,
  settled: (value: unknown) => T,
  failed: (e: unknown) => T,
): T | Promise<T> {
  const settle = (value: unknown): T => {
    try {
      return settled(value);
    } catch (e) {
      return failed(e);
    }
  };
  try {
    const result = handler(message.data, message);
    if (!isThenable(result)) return settle(result);
    return Promise.resolve(result).then(settle, failed);
  } catch (e) {
    return failed(e);
  }
}

/** The handlers as a line-level service for `serveLines`. Never done: it serves until EOF. */
function handlerService(handlers: ReadonlyMap<string, AnyHandler>, maxLineBytes: number): LineService {
  const expected = expectedTypes([...handlers.keys()]);
  return {
    done: false,
    answer(frame: Frame): string | Promise<string> {
      const line = frame.line;
      if (frame.kind === 'too_long') return tooLongReply(line, frame.length, maxLineBytes);
      // `toString`, not a TextDecoder: it keeps a leading BOM, which then makes the JSON
      // invalid, as in Rust.
      if (!isUtf8(frame.bytes)) {
        return errorReply(`invalid UTF-8 at byte ${invalidUtf8Offset(frame.bytes)}`, undefined, line);
      }
      const decoded = decodeEnvelope(frame.bytes.toString('utf8'));
      if (!decoded.ok) return errorReply(decoded.error, decoded.id, line);
      const message = decoded.message as Message<JsonValue | Buffer>;
      const { msg_type: msgType, id } = message;
      const handler = handlers.get(msgType);
      if (handler === undefined) return errorReply(`unknown msg_type \`${excerpt(msgType)}\`; ${expected}`, id, line);
      return callHandler(
        handler,
        message,
        (value) => resultLine(msgType, value, id, line),
        (e) => failureLine(e, id, line),
      );
    },
  };
}

const NO_FRAMES = Buffer.alloc(0);

/** An `error` frame; numbered by frame when it has no id (nothing else names the request). */
function errorFrame(text: string, id: number | undefined, frame?: number): Buffer {
  return textFrame('error', frame === undefined ? text : `frame ${frame}: ${text}`, id);
}

/** The `error` frame for a handler that failed: with its id, or numbered by frame if none. */
function failureFrame(e: unknown, id: number | undefined, frame: number): Buffer {
  return id === undefined ? errorFrame(messageOf(e), undefined, frame) : errorFrame(messageOf(e), id);
}

/** The reply frame for a handler's result (or its error), empty for a notification that succeeded. */
function resultFrame(
  msgType: string,
  result: unknown,
  id: number | undefined,
  frame: number,
  pool: FramePool,
  request: Buffer,
): Buffer | ReplyParts {
  if (id === undefined) return NO_FRAMES;
  let type = msgType;
  let data = result;
  if (result instanceof Reply) {
    type = result.msgType;
    data = result.data;
  }
  const unencodable = (why: string): Buffer =>
    failureFrame(new Error(`the reply to \`${excerpt(msgType)}\` cannot be encoded as MessagePack: ${why}`), id, frame);
  if (!type.isWellFormed()) return unencodable('its msg_type holds an unpaired surrogate');
  // Refusing, not replacing, a lone surrogate: as under JSON, the handler's data is sent as it is or not at all.
  // Big bytes from the request's own frame (an echo of its `data`, or part of it) are not
  // copied at all: the frame goes out as its head, the bytes, and its tail, in one vectored
  // write. That memory is the request's alone (the decoder never reads into it again). Any
  // other bytes are the handler's, which it may fill anew for the next request or change once
  // returned (it cannot know when a reply has been written): they are copied now, as always.
  if (data instanceof Uint8Array && data.length >= VECTORED_BIN_BYTES && isViewOf(data, request)) {
    try {
      return binFrameParts(type, data, id);
    } catch (e) {
      return unencodable(messageOf(e));
    }
  }
  // Other bytes are copied into a pooled frame (given back once written), not a fresh one
  // whose page faults cost more than the copy; anything else starts small and grows.
  const reuse = data instanceof Uint8Array ? pool.take(data.length + FRAME_SLACK + 3 * type.length) : undefined;
  const w = new Writer(256, true, reuse);
  try {
    writeFrame(w, type, id, (w) => w.value(data === undefined ? null : data));
  } catch (e) {
    return unencodable(e instanceof EncodeProblem ? e.message : messageOf(e));
  }
  return w.view();
}

/** Whether `bytes` lie within `frame`'s memory (the same bytes, or some of them). */
function isViewOf(bytes: Uint8Array, frame: Buffer): boolean {
  return (
    bytes.buffer === frame.buffer &&
    bytes.byteOffset >= frame.byteOffset &&
    bytes.byteOffset + bytes.byteLength <= frame.byteOffset + frame.byteLength
  );
}

/** Room in a pooled frame for all but `data`'s bytes: the length, the map, its keys, `bin`'s header and the id. */
const FRAME_SLACK = 64;

/** A request's own bytes at least this big are written from where they are (`binFrameParts`), not copied into a frame. */
const VECTORED_BIN_BYTES = 64 * 1024;

/**
 * The frame `writeFrame` makes for `bytes` as `bin` data, in three pieces: the frame up to and
 * including the `bin` header, `bytes` themselves (not copied), and the rest (the id).
 */
function binFrameParts(msgType: string, bytes: Uint8Array, id: number | undefined): ReplyParts {
  const n = bytes.length;
  const w = new Writer(64 + 3 * msgType.length, true);
  let split = 0;
  writeFrame(w, msgType, id, (w) => {
    // A `bin 32` header (the shortest form for n ≥ 64 KiB), as `Writer.bin` writes it (and
    // refuses n ≥ 2^32 with the same RangeError); the bytes themselves are not written here.
    const header = Buffer.allocUnsafe(5);
    header[0] = 0xc6;
    header.writeUInt32BE(n, 1);
    w.raw(header);
    split = w.length;
  });
  const frame = w.view();
  const length = frame.length - FRAME_HEADER_BYTES + n;
  if (length > 0xffffffff) throw new RangeError(`a frame of ${length} bytes is over the 4294967295 a header can announce`);
  frame.writeUInt32LE(length, 0);
  return new ReplyParts([frame.subarray(0, split), bytes, frame.subarray(split)]);
}

/** The handlers as a frame-level service for `serveLines` (`encoding: 'msgpack'`). Never done. */
function frameService(handlers: ReadonlyMap<string, AnyHandler>, maxFrameBytes: number): LineService<Packet> {
  const expected = expectedTypes([...handlers.keys()]);
  const pool = new FramePool();
  return {
    done: false,
    release(reply: Uint8Array): void {
      // Only what `resultFrame` made: a frame at the start of its own big buffer (the pool checks).
      if (reply instanceof Buffer) pool.give(reply);
    },
    answer(packet: Packet): Buffer | ReplyParts | Promise<Buffer | ReplyParts> {
      const n = packet.frame;
      if (packet.kind === 'too_long') return errorFrame(frameTooLongText(packet.length, maxFrameBytes), undefined, n);
      if (packet.kind === 'cut') return errorFrame(frameCutText(packet.received, packet.length), undefined, n);
      const decoded = decodeMsgpackEnvelope(packet.bytes);
      if (!decoded.ok) return errorFrame(decoded.error, decoded.id, n);
      const message = decoded.message as Message<JsonValue | Buffer>;
      const { msg_type: msgType, id } = message;
      const handler = handlers.get(msgType);
      if (handler === undefined) return errorFrame(`unknown msg_type \`${excerpt(msgType)}\`; ${expected}`, id, n);
      return callHandler(
        handler,
        message,
        (value) => resultFrame(msgType, value, id, n, pool, packet.bytes),
        (e) => failureFrame(e, id, n),
      );
    },
  };
}
