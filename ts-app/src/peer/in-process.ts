// `inProcess`: the same `Peer`, answered by the napi addon's `Responder` (the Rust core) in this
// process. The addon answers within the call, so there is nothing in flight and no timer: the
// fast path is one `handle(object)` call plus an id and a check of the reply.

import { loadNativeAddon, NATIVE_PATH } from '../engine.js';
import { decodeEnvelope } from '../protocol.js';
import { checkSignal, checkTimeout, PeerCore } from './core.js';
import { encodeLine } from './encode.js';
import { abortedError, checkMsgType, closedError, errorReply, PeerError, PeerErrorCode } from './errors.js';
import type { CloseOptions, ExitStatus, Message, MessageListener, Peer, PeerStats, RequestOptions } from './types.js';

/**
 * Options of `inProcess`: those of the addon's `new Responder(options)`. Every field is passed to
 * it as given, so options the addon gains are usable before this type names them.
 */
export interface InProcessOptions {
  /**
   * Only `'json'` for now: `'msgpack'` needs the addon's MessagePack frame entry point (issue
   * 10), which this build does not have, and is refused with `INVALID_ARGUMENT`.
   */
  encoding?: 'json';
  /** End the conversation after this many `data` messages; 0 = never. Default 5. */
  exitAfter?: number;
  /** Who says hello and goodbye (`Hello from {name}!`). Default `TypeScript`. */
  name?: string;
  /** Lines longer than this many bytes get an `error` reply. Default 16 MiB. */
  maxLineBytes?: number;
  /** Any other option of the addon's `Responder`, passed through. */
  [option: string]: unknown;
}

/** A peer answered in this process by the Rust core, through the napi addon. */
export interface InProcessPeer extends Peer {
  /**
   * `request` without the Promise: returns the reply, or throws the `PeerError` `request` would
   * reject with. Other messages the call produced (the demo's `exit` after the fifth `ack`) go to
   * the `message` listeners before it returns.
   */
  requestSync(msgType: string, data: unknown): Message;
}

/** The part of the addon's `Responder` this peer uses (see `native/index.d.ts`). */
interface AddonResponder {
  handle(msg: { msg_type: string; data: string; id?: number }): Message[];
  handleLine(line: string): string;
}

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

class InProcessPeerImpl implements InProcessPeer {
  readonly #core = new PeerCore();
  readonly #responder: AddonResponder;
  #closed: Promise<ExitStatus> | undefined;

  constructor(responder: AddonResponder) {
    this.#responder = responder;
  }

  requestSync(msgType: string, data: unknown): Message {
    if (this.#closed !== undefined) throw closedError('this in-process peer', msgType);
    const id = this.#core.nextId();
    const replies =
      typeof data === 'string' && typeof msgType === 'string'
        ? this.#responder.handle({ msg_type: msgType, data, id })
        : this.#viaLine(msgType, data, id);
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
    const replies =
      typeof data === 'string' && typeof msgType === 'string'
        ? this.#responder.handle({ msg_type: msgType, data })
        : this.#viaLine(msgType, data, undefined);
    for (const reply of replies) this.#core.emit(reply);
  }

  on(event: 'message', listener: MessageListener): this {
    if (event === 'message') this.#core.on(listener);
    return this;
  }

  off(event: 'message', listener: MessageListener): this {
    if (event === 'message') this.#core.off(listener);
    return this;
  }

  close(_options?: CloseOptions): Promise<ExitStatus> {
    this.#closed ??= Promise.resolve({ code: 0, signal: null });
    return this.#closed;
  }

  stats(): PeerStats {
    return this.#core.stats();
  }

  /**
   * Data the addon's `handle` cannot take (anything but a string) goes as a line, exactly as it
   * would over the pipe, so both transports give the same reply (an `error` for the demo).
   */
  #viaLine(msgType: unknown, data: unknown, id: number | undefined): Message[] {
    checkMsgType(msgType);
    return parseLines(this.#responder.handleLine(encodeLine(msgType, data, id)));
  }

  /** Several replies, or one with another id: the first with `id` answers, the rest are unsolicited. */
  #sort(msgType: string, id: number, replies: readonly Message[]): Message {
    const answer = replies.find((r) => r.id === id);
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
 * interface as `spawnPeer`'s, plus `requestSync`. Throws an `Error` if the addon cannot be
 * loaded (build it with `npm run build -w native`) and a `PeerError` (`INVALID_ARGUMENT`) if the
 * addon refuses the options.
 */
export function inProcess(options: InProcessOptions = {}): InProcessPeer {
  const { encoding, ...addonOptions } = options;
  if (encoding !== undefined && encoding !== 'json') {
    throw new PeerError(
      PeerErrorCode.INVALID_ARGUMENT,
      `inProcess: encoding ${JSON.stringify(encoding) ?? String(encoding)} is not available in process: msgpack needs the addon's frame entry point (issue 10), which this build lacks; use spawnPeer(..., { encoding: 'msgpack' }) or encoding 'json'`,
    );
  }
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
  return new InProcessPeerImpl(responder);
}
