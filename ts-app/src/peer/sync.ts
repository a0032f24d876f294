// `spawnPeer(command, args, { mode: 'sync' })`: a child process whose pipes the addon creates
// and reads (native/src/pipe_peer.rs), so that `requestSync` can write a request and wait for
// its reply without the event loop. This file holds the bookkeeping (PeerCore, as the stream
// peer's) and turns what the addon read into messages with the stream peer's decoders and
// texts; the addon moves the bytes and owns the child.
//
// Who reads the child's stdout: the addon's background thread while JavaScript runs (its frames
// arrive as `items` events, routed like the stream peer's), or `requestSync` while it waits. The
// addon's one reader lock and one decoder make sure no byte is read twice or lost between them.
// Mixing: `requestSync` throws `BUSY` while async requests are in flight or queued (their
// replies would have to be read, and their promises settled, in the middle of a synchronous
// call); async requests made after a `requestSync` are fine.

import { isUtf8 } from 'node:buffer';

import { DEFAULT_MAX_FRAME_BYTES, frameCutText, frameTooLongText } from '../frame.js';
import { DEFAULT_MAX_LINE_BYTES } from '../framing.js';
import { decodeMsgpackEnvelope } from '../msgpack.js';
import { loadNativeAddon, NATIVE_PATH } from '../engine.js';
import { decodeEnvelope, invalidUtf8Offset, parseEnvelope } from '../protocol.js';
import { checkCount, checkGraceMs, checkSend, checkTimeout, type Encode, type FailWith, PeerCore, type Refusal } from './core.js';
import { encodeFrame, encodeLine } from './encode.js';
import { closedError, describeRequest, errorReply, PeerError, PeerErrorCode } from './errors.js';
import type { PipePeer, SpawnPeerOptions } from './pipe.js';
import type { CloseOptions, ExitStatus, JsonValue, Message, MessageListener, PeerStats, RequestOptions } from './types.js';

/** Default `timeoutMs`, `maxInFlight`, `graceMs`: the stream peer's (see pipe.ts). */
const DEFAULT_TIMEOUT_MS = 30_000;
const DEFAULT_MAX_IN_FLIGHT = 1024;
const DEFAULT_GRACE_MS = 2000;
/** After stdout's EOF with the child still running: the stream peer's settle. */
const SETTLE_MS = 30;
/** Ids of timed-out `requestSync` calls remembered, so their late replies are dropped and counted. */
const ABANDONED_IDS = 65_536;

/** Options of `spawnPeer` in sync mode: the stream peer's, plus `mode` and `spinUs`. */
/**
 * `spawnPeer` options for `mode: 'sync'`: those of the stream mode except the supervision
 * (`restart`, `hangMs`), which a sync peer does not offer (passing them is `INVALID_ARGUMENT`).
 */
export interface SyncPeerOptions extends Omit<SpawnPeerOptions, 'restart' | 'hangMs'> {
  /** `'sync'`: the addon owns the child's pipes and the peer offers `requestSync`. */
  mode: 'sync';
  /**
   * After writing a `requestSync` request, poll the pipe without blocking for up to this many
   * microseconds before blocking: a reply within it costs no wake-up of this thread (tens of µs
   * unpinned), at the price of a CPU busy for up to that long per call. Default 0 (block at
   * once); at most 1000000 (`INVALID_ARGUMENT` beyond). Ignored where this process may run on
   * one CPU only.
   */
  spinUs?: number;
}

/** Options of `requestSync`. */
export interface RequestSyncOptions {
  /** Throw `TIMEOUT` if no reply came within this many milliseconds. Default: the peer's `timeoutMs`. */
  timeoutMs?: number;
}

/** A pipe peer whose pipes the addon owns: the stream peer's interface plus `requestSync`. */
export interface SyncPipePeer<D = JsonValue> extends Omit<PipePeer<D>, 'on' | 'off'> {
  /**
   * Unsolicited messages (no `exit` or `restart` events: a sync peer is not supervised; a dead
   * child fails what is pending with `PEER_EXITED` and later calls with it too).
   */
  on(event: 'message', listener: MessageListener<D>): this;
  /** Removes a listener added with `on`. */
  off(event: 'message', listener: MessageListener<D>): this;
  /**
   * `request` without the Promise and without the event loop: writes the request, waits for
   * its reply (spinning for `spinUs`, then blocking), and returns it, or throws the `PeerError`
   * `request` would reject with (`ERROR_REPLY`, `TIMEOUT`, `PEER_EXITED`, `CLOSED`,
   * `INVALID_ARGUMENT`), or `BUSY` (nothing sent) while `request` calls are in flight or queued.
   * Messages read before the reply (unsolicited ones) go to the `message` listeners before it
   * returns.
   */
  requestSync(msgType: string, data: unknown, options?: RequestSyncOptions): Message<D>;
  /** What `requestSync`'s spinning did so far (all zero, with the reason, when it never spins). */
  spinStats(): SyncSpinStats;
}

/** `SyncPipePeer.spinStats()`. */
export interface SyncSpinStats {
  /** Why it never spins (`spinUs` is 0; this process may run on one CPU only), or null if it may. */
  disabled: string | null;
  /** Waits for a reply that spun (the adaptive budget skips some after spins that did not pay). */
  spun: number;
  /** Of those, the ones whose reply came while spinning; the rest blocked after. */
  hits: number;
}

/** The addon's `PipeChild` and friends (see `native/index.d.ts`). */
interface PipeItem {
  kind: number;
  n: number;
  text?: string;
  bytes?: Buffer;
  length?: number;
  received?: number;
}
interface PipeExit {
  code?: number | null;
  signal?: string | null;
}
interface PipeEvent {
  kind: string;
  chunk?: Buffer;
  exit?: PipeExit;
}
interface SyncOutcome {
  status: 'reply' | 'timeout' | 'exited';
  items: PipeItem[];
}
interface PipeChild {
  readonly pid: number;
  readonly writeBlocked: boolean;
  exitStatus(): PipeExit | null;
  stderrTail(): string;
  setReading(on: boolean): void;
  takeItems(): PipeItem[];
  spinStats(): { disabled?: string | null; spun: number; hits: number };
  write(bytes: string | Buffer): boolean;
  requestSync(request: string | Buffer, id: number, timeoutMs: number): string | Buffer | SyncOutcome;
  close(firstWaitMs: number): Promise<PipeExit>;
}
interface SpawnFailure {
  message: string;
  errno: string;
}
interface PipeAddon {
  spawnPipeChild(
    command: string,
    args: string[],
    options: Record<string, unknown>,
    onEvent: (event: PipeEvent) => void,
  ): PipeChild | SpawnFailure;
}

/** The longest `spinUs`, as `serve --spin-us`: a second. */
const MAX_SPIN_US = 1_000_000;

function exitOf(exit: PipeExit | null | undefined): ExitStatus {
  return { code: exit?.code ?? null, signal: (exit?.signal ?? null) as NodeJS.Signals | null };
}

class SyncPipePeerImpl implements SyncPipePeer<JsonValue | Buffer> {
  readonly #command: string;
  readonly #child: PipeChild | undefined;
  readonly #spawnFailure: SpawnFailure | undefined;
  readonly #core: PeerCore;
  readonly #msgpack: boolean;
  readonly #maxLineBytes: number;
  readonly #maxFrameBytes: number;
  readonly #timeoutMs: number;
  readonly #maxInFlight: number;
  readonly #graceMs: number;
  readonly #stderr: SpawnPeerOptions['stderr'];
  #pumpScheduled = false;
  #waitingForDrain = false;
  /** Whether the addon's background reader is on (`requestSync` pauses it; a turn of the event loop resumes it). */
  #reading = true;
  #resumeScheduled = false;
  #closing: Promise<ExitStatus> | undefined;
  #gone: FailWith | undefined;
  #status: ExitStatus | undefined;
  #exitedFirst = false;
  #settleTimer: NodeJS.Timeout | undefined;
  readonly #abandonedSync = new Set<number>();
  /**
   * Frames read and not routed yet, in order, and the next one's index: one queue, so that a
   * listener calling `requestSync` (re-entrancy) has the frames read before its own routed
   * first, whichever reader delivered them.
   */
  #toRoute: PipeItem[] = [];
  #routeNext = 0;
  #answeredSync = 0;
  #lateSync = 0;
  readonly #finished: Promise<void>;
  #markFinished: () => void = () => {};

  constructor(command: string, args: readonly string[], options: SyncPeerOptions) {
    this.#command = command;
    for (const name of ['restart', 'hangMs'] as const) {
      if ((options as SpawnPeerOptions)[name] !== undefined) {
        throw new PeerError(
          PeerErrorCode.INVALID_ARGUMENT,
          `spawnPeer: option \`${name}\` is not supported with mode 'sync' (a sync peer is not supervised); use the default mode 'stream' for restarts and hang detection`,
        );
      }
    }
    this.#timeoutMs = checkTimeout(options.timeoutMs, 'spawnPeer: option `timeoutMs`') ?? DEFAULT_TIMEOUT_MS;
    this.#maxInFlight = checkCount(options.maxInFlight, 'maxInFlight', 1) ?? DEFAULT_MAX_IN_FLIGHT;
    this.#maxLineBytes = checkCount(options.maxLineBytes, 'maxLineBytes', 1) ?? DEFAULT_MAX_LINE_BYTES;
    this.#maxFrameBytes = checkCount(options.maxFrameBytes, 'maxFrameBytes', 1) ?? DEFAULT_MAX_FRAME_BYTES;
    this.#graceMs = checkGraceMs(options.graceMs, 'spawnPeer: option `graceMs`') ?? DEFAULT_GRACE_MS;
    const spinUs = checkCount(options.spinUs, 'spinUs', 0) ?? 0;
    // As `serve --spin-us`: longer is surely a mistake, and a spin holds the JS thread past a
    // dead child whose stdout another process keeps open (the exit is looked for after it).
    if (spinUs > MAX_SPIN_US) {
      throw new PeerError(
        PeerErrorCode.INVALID_ARGUMENT,
        `spawnPeer: option \`spinUs\` ${spinUs} is too long: spinning is for replies that come within microseconds (at most ${MAX_SPIN_US})`,
      );
    }
    const stderr = options.stderr ?? 'forward';
    if (stderr !== 'forward' && stderr !== 'ignore' && typeof stderr !== 'function') {
      throw new PeerError(
        PeerErrorCode.INVALID_ARGUMENT,
        `spawnPeer: option \`stderr\` must be 'forward', 'ignore' or a function, got ${String(stderr)}`,
      );
    }
    this.#stderr = stderr;
    const encoding: unknown = options.encoding ?? 'json';
    if (encoding !== 'json' && encoding !== 'msgpack') {
      throw new PeerError(
        PeerErrorCode.INVALID_ARGUMENT,
        `spawnPeer: option \`encoding\` must be 'json' or 'msgpack', got ${String(encoding)}`,
      );
    }
    this.#msgpack = encoding === 'msgpack';
    if (options.cwd !== undefined && typeof options.cwd !== 'string') {
      throw new PeerError(PeerErrorCode.INVALID_ARGUMENT, `spawnPeer: option \`cwd\` must be a string, got ${typeof options.cwd}`);
    }
    if (!Array.isArray(args) || !args.every((a) => typeof a === 'string')) {
      throw new PeerError(PeerErrorCode.INVALID_ARGUMENT, 'spawnPeer: `args` must be an array of strings');
    }
    this.#core = new PeerCore(() => this.#schedulePump());
    this.#finished = new Promise((resolve) => {
      this.#markFinished = resolve;
    });
    const loaded = loadNativeAddon();
    if ('why' in loaded) {
      throw new Error(
        `spawnPeer (mode 'sync'): cannot load the native addon from ${NATIVE_PATH}: ${loaded.why}; build it with \`npm run build -w native\``,
      );
    }
    const addon = loaded.addon as unknown as Partial<PipeAddon>;
    if (typeof addon.spawnPipeChild !== 'function') {
      throw new Error(`spawnPeer (mode 'sync'): the native addon at ${NATIVE_PATH} is too old (no spawnPipeChild); rebuild it with \`npm run build -w native\``);
    }
    let env: Record<string, string> | undefined;
    if (options.env !== undefined) {
      env = {};
      for (const [key, value] of Object.entries(options.env)) if (value !== undefined) env[key] = String(value);
    }
    const spawned = addon.spawnPipeChild(
      command,
      [...args],
      {
        encoding,
        maxLineBytes: this.#maxLineBytes,
        maxFrameBytes: this.#maxFrameBytes,
        graceMs: this.#graceMs,
        spinUs,
        cwd: options.cwd,
        env,
        stderr: typeof stderr === 'function' ? 'event' : stderr,
      },
      (event) => this.#onEvent(event),
    );
    if ('message' in spawned && !('pid' in spawned)) {
      this.#child = undefined;
      this.#spawnFailure = spawned;
      this.#finish();
    } else {
      this.#child = spawned as PipeChild;
      this.#spawnFailure = undefined;
    }
  }

  get pid(): number | undefined {
    return this.#child?.pid;
  }

  stderrTail(): string {
    return this.#child?.stderrTail() ?? '';
  }

  spinStats(): SyncSpinStats {
    const stats = this.#child?.spinStats();
    if (stats === undefined) return { disabled: 'the child could not be started', spun: 0, hits: 0 };
    return { disabled: stats.disabled ?? null, spun: stats.spun, hits: stats.hits };
  }

  request(msgType: string, data: unknown, options?: RequestOptions): Promise<Message<JsonValue | Buffer>> {
    const reply = this.#core.checkedRequest(msgType, data, options, this.#timeoutMs, this.#refuse, this.#encode, this.#resume);
    return reply as Promise<Message<JsonValue | Buffer>>;
  }

  requestSync(msgType: string, data: unknown, options?: RequestSyncOptions): Message<JsonValue | Buffer> {
    checkSend(msgType, this.#refuse);
    const timeoutMs = checkTimeout(options?.timeoutMs, 'requestSync: option `timeoutMs`') ?? this.#timeoutMs;
    const child = this.#child as PipeChild;
    // What is queued goes first (a notification made just before); requests in flight make it BUSY.
    this.#pump();
    const { inFlight, queued } = this.#core.stats();
    if (inFlight > 0 || queued > 0) {
      throw new PeerError(
        PeerErrorCode.BUSY,
        `requestSync \`${msgType}\` was not sent: ${inFlight} request(s) in flight and ${queued} queued on this peer; ` +
          'await them first (requestSync cannot read their replies without the event loop), or use request()',
        { msgType },
      );
    }
    const id = this.#core.nextId();
    const wire = this.#msgpack ? encodeFrame(msgType, data, id) : encodeLine(msgType, data, id);
    const answer = child.requestSync(wire, id, timeoutMs);
    this.#reading = false;
    this.#scheduleResume();
    if (this.#waitingForDrain && !child.writeBlocked) {
      this.#waitingForDrain = false;
      this.#schedulePump();
    }
    let reply: Message<JsonValue | Buffer>;
    // Called from a listener: what was read before this call is routed before it returns.
    this.#routeAll([]);
    if (typeof answer === 'string') {
      reply = (parseEnvelope(answer) ?? this.#lineMessage(0, answer)) as Message;
    } else if (Buffer.isBuffer(answer)) {
      reply = this.#frameMessage(0, answer);
    } else {
      const { status, items } = answer;
      const last = status === 'reply' ? items.pop() : undefined;
      this.#routeAll(items);
      if (status === 'timeout') {
        this.#abandonSync(id);
        throw new PeerError(
          PeerErrorCode.TIMEOUT,
          `${describeRequest(msgType, id)} got no reply within ${timeoutMs} ms; raise timeoutMs (per request or for the peer) if the work takes longer, or check that the peer is alive`,
          { msgType, id },
        );
      }
      if (status === 'exited' || last === undefined) {
        const exit = child.exitStatus();
        if (exit !== null && this.#status === undefined) this.#status = exitOf(exit);
        if (this.#closing === undefined) this.#exitedFirst = true;
        this.#finish();
        throw this.#exitedError(msgType, id);
      }
      reply = this.#message(last);
    }
    this.#answeredSync++;
    if (reply.msg_type === 'error') throw errorReply(msgType, id, reply as Message);
    return reply;
  }

  notify(msgType: string, data: unknown): void {
    checkSend(msgType, this.#refuse);
    this.#resumeReading();
    this.#core.notify(this.#encodeText(msgType, data, undefined));
  }

  on(event: 'message', listener: MessageListener<JsonValue | Buffer>): this {
    if (event === 'message') this.#core.on(listener as MessageListener);
    return this;
  }

  off(event: 'message', listener: MessageListener<JsonValue | Buffer>): this {
    if (event === 'message') this.#core.off(listener as MessageListener);
    return this;
  }

  stats(): PeerStats {
    const stats = this.#core.stats();
    return { ...stats, answered: stats.answered + this.#answeredSync, lateRepliesDropped: stats.lateRepliesDropped + this.#lateSync };
  }

  close(options?: CloseOptions): Promise<ExitStatus> {
    let graceMs: number | undefined;
    try {
      graceMs = checkGraceMs(options?.graceMs, 'close: option `graceMs`');
    } catch (e) {
      return Promise.reject(e);
    }
    this.#closing ??= this.#shutdown(graceMs ?? this.#graceMs);
    return this.#closing;
  }

  /** Under json a line (string); under msgpack the frame as latin1 text (the core's queue holds strings). */
  #encodeText(msgType: string, data: unknown, id: number | undefined): string {
    return this.#msgpack ? encodeFrame(msgType, data, id).toString('latin1') : encodeLine(msgType, data, id);
  }

  /** `#refusal`, `#encodeText` and `#resumeReading`, bound once (`request` hands them to the core). */
  readonly #refuse: Refusal = (msgType) => this.#refusal(msgType);
  readonly #encode: Encode = (msgType, data, id) => this.#encodeText(msgType, data, id);
  readonly #resume = (): void => this.#resumeReading();

  #refusal(msgType: string): PeerError | undefined {
    if (this.#closing !== undefined) return closedError(`the peer \`${this.#command}\``, msgType);
    if (this.#gone !== undefined) return this.#gone(msgType, undefined);
    return undefined;
  }

  async #shutdown(graceMs: number): Promise<ExitStatus> {
    this.#pump();
    this.#core.failQueued(this.#failWith(true));
    const child = this.#child;
    if (child !== undefined) {
      const exit = await child.close(graceMs);
      this.#status ??= exitOf(exit);
      await this.#finished;
    }
    this.#finish();
    return this.#status ?? { code: null, signal: null };
  }

  #onEvent(event: PipeEvent): void {
    // Every event follows the frames read before it: route those first.
    const child = this.#child;
    if (child !== undefined) this.#routeAll(child.takeItems());
    switch (event.kind) {
      case 'items':
        return;
      case 'drain':
        this.#waitingForDrain = false;
        this.#pump();
        return;
      case 'eof':
        // The child closed its stdout; if it keeps running, what is pending fails after a settle.
        if (this.#gone === undefined && this.#settleTimer === undefined) {
          this.#settleTimer = setTimeout(() => this.#finish(), SETTLE_MS);
        }
        return;
      case 'stderr':
        if (typeof this.#stderr === 'function' && event.chunk !== undefined) this.#stderr(event.chunk);
        return;
      case 'exit':
        // The addon has drained stdout (its frames came before this) and reaped the child.
        this.#status = exitOf(event.exit);
        if (this.#closing === undefined) this.#exitedFirst = true;
        this.#finish();
        this.#markFinished();
        return;
      default:
        return;
    }
  }

  /**
   * Routes `items` after those still waiting (a listener up the stack is routing them and has
   * called `requestSync` or been called by it), and every one of those: each frame once, in the
   * order read, however the calls nest.
   */
  #routeAll(items: PipeItem[]): void {
    if (this.#routeNext === this.#toRoute.length) {
      if (items.length === 0) return;
      this.#toRoute = items;
      this.#routeNext = 0;
    } else {
      for (const item of items) this.#toRoute.push(item);
    }
    while (this.#routeNext < this.#toRoute.length) this.#route(this.#toRoute[this.#routeNext++] as PipeItem);
    this.#toRoute = [];
    this.#routeNext = 0;
  }

  /** Routes a frame the addon read: to its request (or dropped, if abandoned), else to the listeners. */
  #route(item: PipeItem): void {
    const message = this.#message(item);
    const id = message.id;
    if (id !== undefined && this.#abandonedSync.delete(id)) {
      this.#lateSync++;
      return;
    }
    this.#core.receive(message as Message);
  }

  #abandonSync(id: number): void {
    this.#abandonedSync.add(id);
    if (this.#abandonedSync.size > ABANDONED_IDS) {
      for (const oldest of this.#abandonedSync) {
        this.#abandonedSync.delete(oldest);
        break;
      }
    }
  }

  /** What the stream peer makes of the same frame (`#readFrame`, `#readFrames` in pipe.ts): same texts. */
  #message(item: PipeItem): Message<JsonValue | Buffer> {
    if (this.#msgpack) {
      if (item.kind === 1) return { msg_type: 'error', data: `frame ${item.n}: ${frameTooLongText(item.length ?? 0, this.#maxFrameBytes)}` };
      if (item.kind === 2) return { msg_type: 'error', data: `frame ${item.n}: ${frameCutText(item.received ?? 0, item.length)}` };
      return this.#frameMessage(item.n, item.bytes ?? Buffer.alloc(0));
    }
    if (item.kind === 1) {
      return { msg_type: 'error', data: `line ${item.n}: line of ${item.length ?? 0} bytes exceeds the ${this.#maxLineBytes}-byte limit` };
    }
    if (item.text === undefined) {
      const bytes = item.bytes ?? Buffer.alloc(0);
      if (!isUtf8(bytes)) return { msg_type: 'error', data: `line ${item.n}: invalid UTF-8 at byte ${invalidUtf8Offset(bytes)}` };
      return this.#lineMessage(item.n, bytes.toString('utf8'));
    }
    return (parseEnvelope(item.text) as Message | undefined) ?? this.#lineMessage(item.n, item.text);
  }

  #lineMessage(line: number, text: string): Message {
    const decoded = decodeEnvelope(text);
    if (decoded.ok) return decoded.message as Message;
    const data = `line ${line}: ${decoded.error}`;
    return decoded.id === undefined ? { msg_type: 'error', data } : { msg_type: 'error', data, id: decoded.id };
  }

  #frameMessage(frame: number, bytes: Buffer): Message<JsonValue | Buffer> {
    const decoded = decodeMsgpackEnvelope(bytes);
    if (decoded.ok) return decoded.message as Message<JsonValue | Buffer>;
    const data = `frame ${frame}: ${decoded.error}`;
    return decoded.id === undefined ? { msg_type: 'error', data } : { msg_type: 'error', data, id: decoded.id };
  }

  #resumeReading(): void {
    if (this.#reading || this.#child === undefined) return;
    this.#reading = true;
    this.#child.setReading(true);
  }

  /** After a run of `requestSync` calls, once the event loop turns, the background reader goes on. */
  #scheduleResume(): void {
    if (this.#resumeScheduled) return;
    this.#resumeScheduled = true;
    setImmediate(() => {
      this.#resumeScheduled = false;
      if (this.#gone === undefined) this.#resumeReading();
    }).unref();
  }

  #schedulePump(): void {
    if (this.#pumpScheduled) return;
    this.#pumpScheduled = true;
    queueMicrotask(() => {
      this.#pumpScheduled = false;
      this.#pump();
    });
  }

  #pump(): void {
    const child = this.#child;
    if (this.#waitingForDrain || this.#gone !== undefined || child === undefined) return;
    for (;;) {
      const batch = this.#core.takeBatch(this.#maxInFlight);
      if (batch.length === 0) return;
      if (!child.write(this.#msgpack ? Buffer.from(batch, 'latin1') : batch)) {
        this.#waitingForDrain = true;
        return;
      }
    }
  }

  /** The child is gone for us: every request not answered fails, and so will later ones. */
  #finish(): void {
    if (this.#settleTimer !== undefined) clearTimeout(this.#settleTimer);
    this.#settleTimer = undefined;
    if (this.#gone !== undefined) return;
    const gone = this.#failWith(this.#closing !== undefined);
    this.#gone = gone;
    this.#core.failAll(gone);
    if (this.#child === undefined) this.#markFinished();
  }

  #failWith(closing: boolean): FailWith {
    return closing && !this.#exitedFirst
      ? (msgType, id) => closedError(`the peer \`${this.#command}\``, msgType, id)
      : (msgType, id) => this.#exitedError(msgType, id);
  }

  #exitedError(msgType: string, id: number | undefined): PeerError {
    const what = id === undefined ? `\`${msgType}\`` : describeRequest(msgType, id);
    const stderrTail = this.stderrTail();
    const tail = stderrTail.length > 0 ? `; its stderr ended with:\n${stderrTail}` : '; it wrote nothing to stderr';
    const failure = this.#spawnFailure;
    if (failure !== undefined) {
      const hint =
        failure.errno === 'ENOENT'
          ? 'check the path (or PATH) and that it is built'
          : failure.errno === 'EACCES'
            ? 'check that it is executable'
            : 'check the command and its options';
      return new PeerError(PeerErrorCode.PEER_EXITED, `cannot send ${what}: ${failure.message}; ${hint}`, {
        msgType,
        ...(id === undefined ? {} : { id }),
        exitCode: null,
        signal: null,
        stderrTail,
      });
    }
    const status = this.#status ?? (this.#child?.exitStatus() ? exitOf(this.#child.exitStatus()) : undefined);
    const how =
      status === undefined
        ? 'closed its stdout'
        : status.signal !== null
          ? `was killed by ${status.signal}`
          : `exited with code ${String(status.code)}`;
    return new PeerError(
      PeerErrorCode.PEER_EXITED,
      `${what} cannot be answered: the peer \`${this.#command}\` (pid ${String(this.pid)}) ${how}${tail}`,
      { msgType, ...(id === undefined ? {} : { id }), exitCode: status?.code ?? null, signal: status?.signal ?? null, stderrTail },
    );
  }
}

/** `spawnPeer` in sync mode (see `SyncPeerOptions`); called by `spawnPeer`, which checks `command`. */
export function spawnSyncPeer(command: string, args: readonly string[], options: SyncPeerOptions): SyncPipePeer<JsonValue | Buffer> {
  return new SyncPipePeerImpl(command, args, options);
}
