// `inProcess`: the same `Peer`, answered by the napi addon's `Responder` (the Rust core) in this
// process. The addon answers within the call, so there is nothing in flight and no timer: the
// fast path is one `handle(object)` call (json) or one `handleFrameInto(body, out)` call
// (msgpack) plus an id and a check of the reply.

import { loadNativeAddon, NATIVE_PATH } from '../engine.js';
import { FRAME_HEADER_BYTES } from '../frame.js';
import { decodeCommonEnvelope, decodeMsgpackEnvelope, type EnvelopeMessage } from '../msgpack.js';
import { decodeEnvelope } from '../protocol.js';
import { checkGraceMs, checkSignal, checkTimeout, PeerCore } from './core.js';
import { encodeFrameBody, encodeLine, FramePool } from './encode.js';
import { abortedError, checkMsgType, closedError, describeRequest, errorReply, PeerError, PeerErrorCode } from './errors.js';
import type {
  CloseOptions,
  Encoding,
  ExitStatus,
  JsonValue,
  Message,
  MessageListener,
  Peer,
  PeerStats,
  RequestOptions,
} from './types.js';

/**
 * Options of `inProcess`: `encoding`, and those of the addon's `new Responder(options)`. Every
 * other field is passed to the addon as given, so options it gains are usable before this type
 * names them.
 */
export interface InProcessOptions {
  /**
   * How each message is handed to the addon: `'json'` (the default; a message object, or an
   * NDJSON line for data that is not a string) or `'msgpack'` (a MessagePack frame body through
   * `handleFrameInto`, exactly as `spawnPeer(..., { encoding: 'msgpack' })` writes it: `data` may be a
   * `Buffer`/`Uint8Array`, sent as `bin`, and `bin` replies arrive as a `Buffer`).
   */
  encoding?: Encoding;
  /** End the conversation after this many `data` messages; 0 = never. Default 5. */
  exitAfter?: number;
  /** Who says hello and goodbye (`Hello from {name}!`). Default `TypeScript`. */
  name?: string;
  /** Under json: lines longer than this many bytes get an `error` reply. Default 16 MiB. */
  maxLineBytes?: number;
  /** Under msgpack: frame bodies longer than this many bytes get an `error` reply. Default 16 MiB. */
  maxFrameBytes?: number;
  /**
   * The services answered: `demo`, `markdown` and `bytes` (an echo of bytes; msgpack only).
   * Default: demo and markdown under json, all three under msgpack (as `rust-ts-ipc serve`).
   */
  services?: ('demo' | 'markdown' | 'bytes')[];
  /** Any other option of the addon's `Responder`, passed through. */
  [option: string]: unknown;
}

/** A peer answered in this process by the Rust core, through the napi addon (`D`: what reply data may be). */
export interface InProcessPeer<D = JsonValue> extends Peer<D> {
  /**
   * `request` without the Promise: returns the reply, or throws the `PeerError` `request` would
   * reject with. Other messages the call produced (the demo's `exit` after the fifth `ack`) go to
   * the `message` listeners before it returns. An argument the addon refuses (its `TypeError`,
   * code `InvalidArg`) is `INVALID_ARGUMENT`, as in `request` and `notify`; the addon's other
   * failures are no reply and fit no `PeerError` code, so all three throw (or reject with) the
   * addon's own `Error`: code `ReplyTooLong` for a reply longer than Node can hold (the message
   * is then not counted), `GenericFailure` for a panic in the addon (a bug).
   */
  requestSync(msgType: string, data: unknown): Message<D>;
}

/** The part of the addon's `Responder` this peer uses (see `native/index.d.ts`). */
interface AddonResponder {
  handle(msg: { msg_type: string; data: string; id?: number }): Message[];
  handleLine(line: string): string;
  handleFrameInto(body: Uint8Array, out: Uint8Array): number | Buffer;
}

/** How one message reaches the addon and its replies come back: one call, its replies in order. */
type Exchange = (msgType: unknown, data: unknown, id: number | undefined) => Message[];

/** The replies of a `handleLine` call, one message per line. */
function parseLines(text: string): Message[] {
  const replies: Message[] = [];
  for (const line of text.split('\n')) {
    if (line.length === 0) continue;
    const decoded = decodeEnvelope(line);
    // The addon writes valid messages only; a broken one is shown as what it is.
    replies.push(decoded.ok ? (decoded.message as Message) : { msg_type: 'error', data: decoded.error });
  }
  return replies;
}

/**
 * The replies of a `handleFrameInto` (or `handleFrame`) call: the frames in `out[0..end]`, each behind its 4-byte
 * little-endian length, decoded with the TypeScript codec. `bin` data is a `Buffer`: a view of
 * `out` if the caller gives `out` away (`owned`), else a copy (`out` is reused).
 */
function parseFrames(out: Buffer, end: number, owned: boolean): Message[] {
  const replies: Message[] = [];
  let pos = 0;
  while (pos < end) {
    const length = end - pos >= FRAME_HEADER_BYTES ? out.readUInt32LE(pos) : undefined;
    if (length === undefined || length > end - pos - FRAME_HEADER_BYTES) {
      // The addon writes whole frames only; a broken reply is shown as what it is.
      const data = `the addon's reply ends inside a frame, at byte ${pos} of ${end}`;
      replies.push({ msg_type: 'error', data });
      break;
    }
    const start = pos + FRAME_HEADER_BYTES;
    pos = start + length;
    // The usual reply, read in place; any other frame by the general reader.
    let reply: EnvelopeMessage | undefined = decodeCommonEnvelope(out, start, pos);
    if (reply === undefined) {
      const decoded = decodeMsgpackEnvelope(out.subarray(start, pos));
      reply = decoded.ok ? decoded.message : { msg_type: 'error', data: decoded.error };
    }
    // Only `data` itself can be bytes (the codec refuses them below the top).
    if (!owned && Buffer.isBuffer(reply.data)) reply.data = copyOf(reply.data);
    replies.push(reply as Message);
  }
  return replies;
}

/** A copy of `bytes` in memory of its own (small ones from Node's pool). */
function copyOf(bytes: Buffer): Buffer {
  const copy = Buffer.allocUnsafe(bytes.length);
  bytes.copy(copy);
  return copy;
}

/**
 * The reply buffer `handleFrameInto` writes into starts at this size and grows to the longest
 * reply seen, up to `REPLY_BUFFER_MAX_BYTES`; a longer reply comes back as a `Buffer` of its
 * own. A warm buffer spares a 64-byte reply a `Buffer` made and freed (a third of the addon
 * call) and a big one the page faults of fresh memory (1 MiB string: ≈590 µs against ≈760 µs
 * of CPU a request here).
 */
const REPLY_BUFFER_BYTES = 4 * 1024;
const REPLY_BUFFER_MAX_BYTES = 2 * 1024 * 1024;
/**
 * A request carrying bytes is offered only this much of the reply buffer: its reply is likely
 * bytes as long, which are copied out of the buffer (the caller keeps them), and once they are
 * big, writing them into it and copying them out costs more than a fresh `Buffer` does
 * (1 MiB echo: ≈430 µs against ≈370 µs).
 */
const BYTES_REPLY_BUFFER_MAX_BYTES = 128 * 1024;

/** Json: strings take the addon's object fast path; other data goes as a line, as over the pipe. */
function jsonExchange(responder: AddonResponder): Exchange {
  return (msgType, data, id) => {
    if (typeof data === 'string' && typeof msgType === 'string') {
      return responder.handle(id === undefined ? { msg_type: msgType, data } : { msg_type: msgType, data, id });
    }
    // Data the addon's `handle` cannot take goes as a line, exactly as it would over the pipe,
    // so both transports give the same reply (an `error` for the demo).
    checkMsgType(msgType);
    return parseLines(responder.handleLine(encodeLine(msgType, data, id)));
  };
}

/**
 * Msgpack: every message as the frame body the pipe peer would write, through
 * `handleFrameInto`, its replies written into a buffer this exchange reuses.
 */
function msgpackExchange(responder: AddonResponder): Exchange {
  let out = Buffer.allocUnsafeSlow(REPLY_BUFFER_BYTES);
  /** What of `out` a request carrying bytes is offered. */
  let forBytes = out;
  // Big bodies' buffers: fresh ones cost their page faults on every call.
  const pool = new FramePool();
  return (msgType, data, id) => {
    checkMsgType(msgType);
    // A view of a scratch buffer (or of one from the pool), which the addon copies before it reads.
    const body = encodeFrameBody(msgType, data, id, pool);
    const into = data instanceof Uint8Array ? forBytes : out;
    const reply = responder.handleFrameInto(body, into);
    pool.reclaimBody(body);
    if (typeof reply === 'number') return parseFrames(into, reply, false);
    // Too long for the buffer: the next one that long will fit, if it may.
    if (reply.length <= (into === forBytes ? BYTES_REPLY_BUFFER_MAX_BYTES : REPLY_BUFFER_MAX_BYTES) && reply.length > out.length) {
      out = Buffer.allocUnsafeSlow(Math.min(REPLY_BUFFER_MAX_BYTES, Math.max(reply.length, 2 * out.length)));
      forBytes = out.length <= BYTES_REPLY_BUFFER_MAX_BYTES ? out : out.subarray(0, BYTES_REPLY_BUFFER_MAX_BYTES);
    }
    return parseFrames(reply, reply.length, true);
  };
}

class InProcessPeerImpl implements InProcessPeer {
  readonly #core = new PeerCore();
  readonly #exchange: Exchange;
  #closed: Promise<ExitStatus> | undefined;

  constructor(exchange: Exchange) {
    this.#exchange = exchange;
  }

  requestSync(msgType: string, data: unknown): Message {
    if (this.#closed !== undefined) throw closedError('this in-process peer', msgType);
    const id = this.#core.nextId();
    const replies = this.#call(msgType, data, id);
    const reply = replies[0];
    if (replies.length !== 1 || reply === undefined || reply.id !== id) return this.#sort(msgType, id, replies);
    this.#core.countAnswered();
    if (reply.msg_type === 'error') throw errorReply(msgType, id, reply);
    return reply;
  }

  request(msgType: string, data: unknown, options?: RequestOptions): Promise<Message> {
    try {
      if (options !== undefined) checkTimeout(options.timeoutMs, 'request: option `timeoutMs`');
      const signal = checkSignal(options?.signal, 'request: option `signal`');
      if (signal?.aborted === true) {
        checkMsgType(msgType);
        return Promise.reject(abortedError(msgType, this.#core.nextId(), signal.reason));
      }
      return Promise.resolve(this.requestSync(msgType, data));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  notify(msgType: string, data: unknown): void {
    if (this.#closed !== undefined) throw closedError('this in-process peer', String(msgType));
    for (const reply of this.#call(msgType, data, undefined)) this.#core.emit(reply);
  }

  on(event: 'message', listener: MessageListener): this {
    if (event === 'message') this.#core.on(listener);
    return this;
  }

  off(event: 'message', listener: MessageListener): this {
    if (event === 'message') this.#core.off(listener);
    return this;
  }

  close(options?: CloseOptions): Promise<ExitStatus> {
    // Nothing to wait for here, but a bad option is refused as the pipe peer refuses it.
    try {
      checkGraceMs(options?.graceMs, 'close: option `graceMs`');
    } catch (e) {
      return Promise.reject(e);
    }
    this.#closed ??= Promise.resolve({ code: 0, signal: null });
    return this.#closed;
  }

  stats(): PeerStats {
    return this.#core.stats();
  }

  /**
   * One exchange with the addon. An argument it refuses (its `TypeError`, code `InvalidArg`)
   * is `INVALID_ARGUMENT`. Its other failures (`ReplyTooLong`, a panic's `GenericFailure`) are
   * not replies, and no `PeerError` code fits them: they are thrown as the addon's own `Error`.
   */
  #call(msgType: string, data: unknown, id: number | undefined): Message[] {
    try {
      return this.#exchange(msgType, data, id);
    } catch (e) {
      if (e instanceof PeerError || (e as { code?: unknown } | null | undefined)?.code !== 'InvalidArg') throw e;
      const what = id === undefined ? `\`${msgType}\`` : describeRequest(msgType, id);
      throw new PeerError(
        PeerErrorCode.INVALID_ARGUMENT,
        `cannot send ${what}: the in-process addon refused it: ${e instanceof Error ? e.message : String(e)}`,
        { msgType, ...(id === undefined ? {} : { id }), cause: e },
      );
    }
  }

  /**
   * Several replies, or one with another id: the first with `id` answers, the rest are
   * unsolicited. One call carries one message, so an `error` without an id is about it (the
   * responder could not read its id: a frame or line over the limit, say) and answers it too.
   */
  #sort(msgType: string, id: number, replies: readonly Message[]): Message {
    const answer =
      replies.find((r) => r.id === id) ?? replies.find((r) => r.msg_type === 'error' && r.id === undefined);
    for (const reply of replies) if (reply !== answer) this.#core.emit(reply);
    if (answer === undefined) {
      throw new PeerError(
        PeerErrorCode.ERROR_REPLY,
        `request \`${msgType}\` #${id} got no reply with its id from the in-process responder (a bug in the addon); its replies went to the message listeners`,
        { msgType, id },
      );
    }
    this.#core.countAnswered();
    if (answer.msg_type === 'error') throw errorReply(msgType, id, answer);
    return answer;
  }
}

/**
 * A peer answered in this process by the Rust core through the napi addon (`native/`): the same
 * interface as `spawnPeer`'s, plus `requestSync`. With `encoding: 'msgpack'` each message goes
 * to the addon as the MessagePack frame the pipe would carry (`handleFrameInto`), `data` may be
 * bytes, and `bin` replies arrive as a `Buffer`; errors then say `frame N`, N counting this
 * peer's messages. Throws an `Error` if the addon cannot be loaded (build it with
 * `npm run build -w native`) and a `PeerError` (`INVALID_ARGUMENT`) for an unknown encoding or
 * options the addon refuses.
 */
export function inProcess(options: InProcessOptions & { encoding: 'msgpack' }): InProcessPeer<JsonValue | Buffer>;
export function inProcess(options?: InProcessOptions & { encoding?: 'json' }): InProcessPeer;
/** An encoding known only at run time: reply data may be a `Buffer`. */
export function inProcess(options?: InProcessOptions): InProcessPeer<JsonValue | Buffer>;
export function inProcess(options: InProcessOptions = {}): InProcessPeer<JsonValue | Buffer> {
  const { encoding = 'json', ...addonOptions } = options;
  if (encoding !== 'json' && encoding !== 'msgpack') {
    throw new PeerError(
      PeerErrorCode.INVALID_ARGUMENT,
      `inProcess: option \`encoding\` must be 'json' or 'msgpack', got ${String(encoding)}`,
    );
  }
  // As `rust-ts-ipc serve`: bytes is a default service only where bytes can travel.
  if (encoding === 'msgpack' && addonOptions.services === undefined) addonOptions.services = ['demo', 'markdown', 'bytes'];
  const loaded = loadNativeAddon();
  if ('why' in loaded) {
    throw new Error(
      `inProcess: cannot load the native addon from ${NATIVE_PATH}: ${loaded.why}; build it with \`npm run build -w native\``,
    );
  }
  let responder: AddonResponder;
  try {
    responder = new loaded.addon.Responder(addonOptions) as unknown as AddonResponder;
  } catch (e) {
    throw new PeerError(
      PeerErrorCode.INVALID_ARGUMENT,
      `inProcess: the addon refused the options: ${e instanceof Error ? e.message : String(e)}`,
      { cause: e },
    );
  }
  const peer = new InProcessPeerImpl(encoding === 'msgpack' ? msgpackExchange(responder) : jsonExchange(responder));
  // Reply data is a `Buffer` only under msgpack, which the overloads tell the caller.
  return peer as InProcessPeer<JsonValue | Buffer>;
}
