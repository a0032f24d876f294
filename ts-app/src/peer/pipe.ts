// `spawnPeer`: a child process speaking the protocol over its stdin/stdout. This file owns the
// child (spawn, stderr, shutdown) and the two pipes; the requests are PeerCore's.

import { isUtf8 } from 'node:buffer';
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';

import { DEFAULT_MAX_FRAME_BYTES, FrameDecoder, frameCutText, frameTooLongText, type Packet } from '../frame.js';
import { DEFAULT_MAX_LINE_BYTES, type Frame, LineDecoder, type LineSink } from '../framing.js';
import { decodeMsgpackEnvelope } from '../msgpack.js';
import { decodeEnvelope, invalidUtf8Offset, parseEnvelope } from '../protocol.js';
import { checkGraceMs, checkSignal, checkTimeout, type FailWith, PeerCore } from './core.js';
import { encodeFrameText, encodeLine } from './encode.js';
import { checkMsgType, closedError, describeRequest, PeerError, PeerErrorCode } from './errors.js';
import { spawnSyncPeer, type SyncPeerOptions, type SyncPipePeer } from './sync.js';
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

/** Default `timeoutMs`: long enough for real work, short enough that a stuck child is noticed. */
export const DEFAULT_TIMEOUT_MS = 30_000;
/** Default `maxInFlight`: enough to keep a pipe busy, few enough to bound what the child buffers. */
export const DEFAULT_MAX_IN_FLIGHT = 1024;
/** Default `graceMs`: each shutdown step's wait, as the Rust host's `--grace-ms`. */
export const DEFAULT_GRACE_MS = 2000;
/** How much of the child's stderr is kept for `PEER_EXITED` errors. */
export const STDERR_TAIL_BYTES = 4096;
/**
 * After the child's exit is seen, how long to wait for its stdout and stderr to be drained
 * (replies already written are still delivered) before failing what is pending: well within
 * the 100 ms the issue allows. A grandchild holding the pipes open cannot stretch it.
 */
const SETTLE_MS = 30;

/** Where the child's stderr goes: forwarded to ours, dropped, or handed to a function. Its tail is always kept. */
export type StderrOption = 'forward' | 'ignore' | ((chunk: Buffer) => void);

/** Options of `spawnPeer`; every field is optional. */
export interface SpawnPeerOptions {
  /**
   * `'stream'` (the default): Node streams read and write the child's pipes. `'sync'`: the
   * native addon does, and the peer also offers `requestSync` (see `SyncPeerOptions`).
   */
  mode?: 'stream' | 'sync';
  /**
   * How messages travel: `'json'` (NDJSON lines, the default) or `'msgpack'` (MessagePack
   * frames; `data` may then be a `Buffer`/`Uint8Array`, and `bin` replies arrive as a `Buffer`).
   * The child must be started in the same encoding (e.g. `serve --encoding msgpack`).
   */
  encoding?: Encoding;
  /** Under msgpack: frames read from the child longer than this are skipped and reported. Default 16 MiB. */
  maxFrameBytes?: number;
  /** Default per-request timeout in milliseconds (0 or Infinity: none). Default 30 000. */
  timeoutMs?: number;
  /** At most this many requests written and unanswered; `request` waits for a slot beyond. Default 1024. */
  maxInFlight?: number;
  /**
   * Lines read from the child longer than this many bytes are dropped as they arrive (never
   * buffered whole) and reported as an `error` message to the listeners. Default 16 MiB.
   */
  maxLineBytes?: number;
  /** Default wait of each shutdown step of `close()`, in milliseconds (0: escalate at once; Infinity: never escalate). Default 2000. */
  graceMs?: number;
  /** The child's environment. Default: this process's. */
  env?: NodeJS.ProcessEnv;
  /** The child's working directory. Default: this process's. */
  cwd?: string;
  /** Where the child's stderr goes. Default `'forward'` (to `process.stderr`). */
  stderr?: StderrOption;
}

/** A peer answered by a child process over its stdin/stdout (`D`: what reply data may be). */
export interface PipePeer<D = JsonValue> extends Peer<D> {
  /** The child's process id (also its process group's), or undefined if it could not be started. */
  readonly pid: number | undefined;
  /** The last (at most 4 KiB) of what the child wrote to stderr so far, as text. */
  stderrTail(): string;
}

function checkCount(value: unknown, name: string, min: number): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
    throw new PeerError(
      PeerErrorCode.INVALID_ARGUMENT,
      `spawnPeer: option \`${name}\` must be an integer of at least ${min}, got ${String(value)}`,
    );
  }
  return value;
}

/** Resolves after `ms` or when `done` settles, whichever is first, without leaving a timer behind. */
function within(done: Promise<unknown>, ms: number): Promise<boolean> {
  // setTimeout fires at once (with a warning) beyond 2^31 − 1 ms: that long is forever.
  if (ms > 0x7fffffff) return done.then(() => true);
  let timer: NodeJS.Timeout | undefined;
  const elapsed = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  return Promise.race([done.then(() => true), elapsed]).finally(() => clearTimeout(timer));
}

class PipePeerImpl implements PipePeer {
  readonly #command: string;
  /** Undefined if spawn threw (ENOTDIR, E2BIG, …) instead of emitting 'error'. */
  readonly #child: ChildProcessWithoutNullStreams | undefined;
  readonly #core: PeerCore;
  readonly #decoder: LineDecoder;
  /** Under msgpack, the decoder of the child's stdout (the line decoder is then unused). */
  readonly #frames: FrameDecoder | undefined;
  /** How a message becomes wire text (latin1 frames under msgpack), and how that text is written. */
  readonly #encode: (msgType: string, data: unknown, id: number | undefined) => string;
  readonly #wireText: 'utf8' | 'latin1';
  readonly #sink: LineSink = {
    text: (line, text) => this.#readText(line, text),
    frame: (frame) => this.#readFrame(frame),
  };
  readonly #timeoutMs: number;
  readonly #maxInFlight: number;
  readonly #graceMs: number;
  #stderrTail: Buffer = Buffer.alloc(0);
  #pumpScheduled = false;
  /** Inside a read: wakes only note that a pump is wanted (see `#read`). */
  #reading = false;
  #pumpWanted = false;
  #waitingForDrain = false;
  #closing: Promise<ExitStatus> | undefined;
  /** Set once the child is gone for us: requests then fail with this. */
  #gone: FailWith | undefined;
  #spawnError: Error | undefined;
  #status: ExitStatus | undefined;
  /**
   * Set if the child's exit was seen before close() was called: what is still pending then
   * fails because the child died (`PEER_EXITED`), even while the pipes are drained after it.
   */
  #exitedFirst = false;
  #settleTimer: NodeJS.Timeout | undefined;
  /** Set once the child's stdio have all closed (its 'close' event). */
  #stdioClosed = false;
  readonly #exited: Promise<void>;
  #markExited: () => void = () => {};
  readonly #finished: Promise<void>;
  #markFinished: () => void = () => {};

  constructor(command: string, args: readonly string[], options: SpawnPeerOptions) {
    this.#command = command;
    this.#timeoutMs = checkTimeout(options.timeoutMs, 'spawnPeer: option `timeoutMs`') ?? DEFAULT_TIMEOUT_MS;
    this.#maxInFlight = checkCount(options.maxInFlight, 'maxInFlight', 1) ?? DEFAULT_MAX_IN_FLIGHT;
    const maxLineBytes = checkCount(options.maxLineBytes, 'maxLineBytes', 1) ?? DEFAULT_MAX_LINE_BYTES;
    this.#graceMs = checkGraceMs(options.graceMs, 'spawnPeer: option `graceMs`') ?? DEFAULT_GRACE_MS;
    const stderr = options.stderr ?? 'forward';
    if (stderr !== 'forward' && stderr !== 'ignore' && typeof stderr !== 'function') {
      throw new PeerError(
        PeerErrorCode.INVALID_ARGUMENT,
        `spawnPeer: option \`stderr\` must be 'forward', 'ignore' or a function, got ${String(stderr)}`,
      );
    }
    this.#decoder = new LineDecoder({ maxLineBytes });
    const encoding: unknown = options.encoding ?? 'json';
    if (encoding !== 'json' && encoding !== 'msgpack') {
      throw new PeerError(
        PeerErrorCode.INVALID_ARGUMENT,
        `spawnPeer: option \`encoding\` must be 'json' or 'msgpack', got ${String(encoding)}`,
      );
    }
    const maxFrameBytes = checkCount(options.maxFrameBytes, 'maxFrameBytes', 1) ?? DEFAULT_MAX_FRAME_BYTES;
    this.#frames = encoding === 'msgpack' ? new FrameDecoder({ maxFrameBytes }) : undefined;
    this.#encode = encoding === 'msgpack' ? encodeFrameText : encodeLine;
    this.#wireText = encoding === 'msgpack' ? 'latin1' : 'utf8';
    this.#core = new PeerCore(() => this.#schedulePump());
    this.#exited = new Promise((resolve) => {
      this.#markExited = resolve;
    });
    this.#finished = new Promise((resolve) => {
      this.#markFinished = resolve;
    });

    // Its own process group (detached), so that close() can signal everything it started.
    let child: ChildProcessWithoutNullStreams;
    try {
      child = spawn(command, [...args], {
        cwd: options.cwd,
        env: options.env,
        stdio: ['pipe', 'pipe', 'pipe'],
        detached: true,
      });
    } catch (e) {
      // Node's own checks of the arguments (a null byte, a wrong type) are bad arguments;
      // other failures (ENOTDIR, E2BIG) are thrown where ENOENT is emitted: the same to us.
      const code = (e as NodeJS.ErrnoException).code;
      if (typeof code === 'string' && code.startsWith('ERR_')) {
        throw new PeerError(PeerErrorCode.INVALID_ARGUMENT, `spawnPeer: ${e instanceof Error ? e.message : String(e)}`, {
          cause: e,
        });
      }
      this.#child = undefined;
      this.#spawnError = e instanceof Error ? e : new Error(String(e));
      this.#markExited();
      this.#finish();
      return;
    }
    this.#child = child;
    child.on('error', (e) => this.#onError(e));
    child.on('exit', (code, signal) => this.#onExit(code, signal));
    child.on('close', () => {
      this.#stdioClosed = true;
      this.#finish();
    });
    // A child that exits early makes our writes fail with EPIPE: its exit says more.
    child.stdin.on('error', () => {});
    const frames = this.#frames;
    if (frames === undefined) {
      child.stdout.on('data', (chunk: Buffer) => this.#read(() => this.#decoder.feed(chunk, this.#sink)));
    } else {
      child.stdout.on('data', (chunk: Buffer) => this.#read(() => this.#readFrames(frames.push(chunk))));
    }
    child.stdout.on('end', () => {
      if (frames === undefined) for (const frame of this.#decoder.end()) this.#readFrame(frame);
      else this.#readFrames(frames.end());
      this.#armSettle();
    });
    child.stdout.on('error', () => this.#armSettle());
    child.stderr.on('data', (chunk: Buffer) => {
      this.#keepStderr(chunk);
      if (stderr === 'forward') process.stderr.write(chunk);
      else if (typeof stderr === 'function') stderr(chunk);
    });
    child.stderr.on('error', () => {});
  }

  get pid(): number | undefined {
    return this.#child?.pid;
  }

  stderrTail(): string {
    // A character cut by the 4 KiB window is skipped, not shown as U+FFFD (as the Rust host does).
    const tail = this.#stderrTail;
    let start = 0;
    if (tail.length === STDERR_TAIL_BYTES) while (start < 3 && ((tail[start] ?? 0) & 0xc0) === 0x80) start++;
    return tail.toString('utf8', start);
  }

  request(msgType: string, data: unknown, options?: RequestOptions): Promise<Message> {
    let line: string;
    let id: number;
    let timeoutMs: number;
    let signal: AbortSignal | undefined;
    try {
      checkMsgType(msgType);
      const refused = this.#refusal(msgType);
      if (refused !== undefined) return Promise.reject(refused);
      timeoutMs = checkTimeout(options?.timeoutMs, 'request: option `timeoutMs`') ?? this.#timeoutMs;
      signal = checkSignal(options?.signal, 'request: option `signal`');
      id = this.#core.nextId();
      line = this.#encode(msgType, data, id);
    } catch (e) {
      return Promise.reject(e);
    }
    if (signal?.aborted === true) {
      return Promise.reject(
        new PeerError(PeerErrorCode.ABORTED, `${describeRequest(msgType, id)} was aborted before it was sent`, {
          msgType,
          id,
          cause: signal.reason,
        }),
      );
    }
    return this.#core.request(msgType, id, line, timeoutMs, signal);
  }

  notify(msgType: string, data: unknown): void {
    checkMsgType(msgType);
    const refused = this.#refusal(msgType);
    if (refused !== undefined) throw refused;
    this.#core.notify(this.#encode(msgType, data, undefined));
  }

  on(event: 'message', listener: MessageListener): this {
    if (event === 'message') this.#core.on(listener);
    return this;
  }

  off(event: 'message', listener: MessageListener): this {
    if (event === 'message') this.#core.off(listener);
    return this;
  }

  stats(): PeerStats {
    return this.#core.stats();
  }

  close(options?: CloseOptions): Promise<ExitStatus> {
    let graceMs: number | undefined;
    try {
      graceMs = checkGraceMs(options?.graceMs, 'close: option `graceMs`');
    } catch (e) {
      // close() returns a Promise: a bad option rejects it (and closes nothing), never throws.
      return Promise.reject(e);
    }
    this.#closing ??= this.#shutdown(graceMs ?? this.#graceMs);
    return this.#closing;
  }

  /** Why a new request cannot be made now, or undefined if it can. */
  #refusal(msgType: string): PeerError | undefined {
    if (this.#closing !== undefined) return closedError(`the peer \`${this.#command}\``, msgType);
    if (this.#gone !== undefined) return this.#gone(msgType, undefined);
    return undefined;
  }

  async #shutdown(graceMs: number): Promise<ExitStatus> {
    // What can be written now still goes (a request made just before close() is sent); what
    // waits for a slot never will be. Requests written may still be answered while the child
    // drains its stdin, until it exits.
    this.#pump();
    // `true`: close() is running (`#closing` is set only once this returns).
    this.#core.failQueued(this.#failWith(true));
    const child = this.#child;
    const pid = child?.pid;
    if (child !== undefined && pid !== undefined && this.#status === undefined) {
      child.stdin.end();
      if (!(await within(this.#exited, graceMs))) {
        this.#signal(pid, 'SIGTERM');
        if (!(await within(this.#exited, graceMs))) {
          this.#signal(pid, 'SIGKILL');
          await this.#exited;
        }
      }
    }
    await (pid === undefined ? Promise.resolve() : this.#finished);
    this.#finish();
    this.#stopLeftovers();
    return this.#status ?? { code: null, signal: null };
  }

  /** Sends `signal` to the child's process group (to the child alone where groups do not exist). */
  #signal(pid: number, signal: NodeJS.Signals): void {
    try {
      if (process.platform === 'win32') this.#child?.kill(signal);
      else process.kill(-pid, signal);
    } catch {
      // ESRCH: the group is already gone.
    }
  }

  #onError(e: Error): void {
    // A spawn failure (ENOENT, EACCES) has no pid and no exit; other errors (a failed kill)
    // change nothing: the exit, when it comes, decides.
    if (this.#child?.pid !== undefined) return;
    this.#spawnError = e;
    this.#markExited();
    this.#finish();
  }

  #onExit(code: number | null, signal: NodeJS.Signals | null): void {
    this.#status = { code, signal };
    this.#exitedFirst = this.#closing === undefined;
    this.#markExited();
    this.#armSettle();
    // After the settle (same delay, armed after it): pipes still open by then are held by
    // something the child left behind. Unref'd: when nothing holds them, it need not run.
    setTimeout(() => this.#stopLeftovers(), SETTLE_MS).unref();
  }

  /**
   * The child has exited but something it started still holds our pipes open: as the Rust
   * host does, kill what is left in its process group (so soon after the exit that the group's
   * id cannot be another's), and stop reading the pipes, so that a process out of the group's
   * reach (in a session of its own) cannot keep Node alive either.
   */
  #stopLeftovers(): void {
    const child = this.#child;
    const pid = child?.pid;
    if (child === undefined || pid === undefined || this.#status === undefined || this.#stdioClosed) return;
    this.#signal(pid, 'SIGKILL');
    child.stdin.destroy();
    child.stdout.destroy();
    child.stderr.destroy();
  }

  /** Waits briefly for the pipes to drain, then fails what is pending. */
  #armSettle(): void {
    if (this.#gone !== undefined || this.#settleTimer !== undefined) return;
    this.#settleTimer = setTimeout(() => this.#finish(), SETTLE_MS);
  }

  /** The child is gone for us: every request not answered fails, and so will later ones. */
  #finish(): void {
    if (this.#settleTimer !== undefined) clearTimeout(this.#settleTimer);
    this.#settleTimer = undefined;
    if (this.#gone !== undefined) return;
    const gone = this.#failWith(this.#closing !== undefined);
    this.#gone = gone;
    this.#core.failAll(gone);
    this.#markFinished();
  }

  /** What fails the requests left: `CLOSED` if close() was called before the exit was seen, else `PEER_EXITED`. */
  #failWith(closing: boolean): FailWith {
    return closing && !this.#exitedFirst
      ? (msgType, id) => closedError(`the peer \`${this.#command}\``, msgType, id)
      : (msgType, id) => this.#exitedError(msgType, id);
  }

  #exitedError(msgType: string, id: number | undefined): PeerError {
    const what = id === undefined ? `\`${msgType}\`` : describeRequest(msgType, id);
    const stderrTail = this.stderrTail();
    const tail = stderrTail.length > 0 ? `; its stderr ended with:\n${stderrTail}` : '; it wrote nothing to stderr';
    if (this.#spawnError !== undefined) {
      const e = this.#spawnError as NodeJS.ErrnoException;
      const hint =
        e.code === 'ENOENT'
          ? 'check the path (or PATH) and that it is built'
          : e.code === 'EACCES'
            ? 'check that it is executable'
            : 'check the command and its options';
      return new PeerError(
        PeerErrorCode.PEER_EXITED,
        `cannot send ${what}: \`${this.#command}\` could not be started (${e.message}); ${hint}`,
        { msgType, ...(id === undefined ? {} : { id }), exitCode: null, signal: null, stderrTail, cause: e },
      );
    }
    const status = this.#status;
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

  #keepStderr(chunk: Buffer): void {
    const total = this.#stderrTail.length + chunk.length;
    if (chunk.length >= STDERR_TAIL_BYTES) {
      this.#stderrTail = Buffer.from(chunk.subarray(chunk.length - STDERR_TAIL_BYTES));
    } else if (total <= STDERR_TAIL_BYTES) {
      this.#stderrTail = Buffer.concat([this.#stderrTail, chunk], total);
    } else {
      this.#stderrTail = Buffer.concat([this.#stderrTail.subarray(total - STDERR_TAIL_BYTES), chunk], STDERR_TAIL_BYTES);
    }
  }

  /** Routes a line the child wrote: a valid message to the core, anything else as an `error` message. */
  #readText(line: number, text: string): void {
    const message = parseEnvelope(text);
    if (message !== undefined) {
      this.#core.receive(message as Message);
      return;
    }
    const decoded = decodeEnvelope(text);
    if (decoded.ok) {
      this.#core.receive(decoded.message as Message);
    } else {
      // With a valid id that is pending, this answers that request (an error reply, as the
      // Rust responder gives one); otherwise it is unsolicited.
      const data = `line ${line}: ${decoded.error}`;
      this.#core.receive(decoded.id === undefined ? { msg_type: 'error', data } : { msg_type: 'error', data, id: decoded.id });
    }
  }

  /** `#readText` for a frame: its length and UTF-8 checked first. */
  #readFrame(frame: Frame): void {
    if (frame.kind === 'too_long') {
      const limit = this.#decoder.maxLineBytes;
      this.#core.receive({
        msg_type: 'error',
        data: `line ${frame.line}: line of ${frame.length} bytes exceeds the ${limit}-byte limit`,
      });
    } else if (!isUtf8(frame.bytes)) {
      const at = invalidUtf8Offset(frame.bytes);
      this.#core.receive({ msg_type: 'error', data: `line ${frame.line}: invalid UTF-8 at byte ${at}` });
    } else {
      this.#readText(frame.line, frame.bytes.toString('utf8'));
    }
  }

  /** Routes what the child wrote under msgpack, as `#readFrame` does for lines (errors say `frame N`). */
  #readFrames(packets: Packet[]): void {
    for (const p of packets) {
      if (p.kind !== 'frame') {
        const limit = this.#frames?.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
        const text = p.kind === 'too_long' ? frameTooLongText(p.length, limit) : frameCutText(p.received, p.length);
        this.#core.receive({ msg_type: 'error', data: `frame ${p.frame}: ${text}` });
        continue;
      }
      const decoded = decodeMsgpackEnvelope(p.bytes);
      if (decoded.ok) {
        this.#core.receive(decoded.message as Message);
      } else {
        const data = `frame ${p.frame}: ${decoded.error}`;
        this.#core.receive(
          decoded.id === undefined ? { msg_type: 'error', data } : { msg_type: 'error', data, id: decoded.id },
        );
      }
    }
  }

  /**
   * Routes what one chunk holds. The pump it makes wanted (slots freed, requests made by
   * listeners) is scheduled once, after it: behind the promise reactions of every reply in the
   * chunk, so that the requests those make go out in one write, not one for the first
   * reaction's request and another for the rest.
   */
  #read(route: () => void): void {
    this.#reading = true;
    try {
      route();
    } finally {
      this.#reading = false;
      if (this.#pumpWanted) {
        this.#pumpWanted = false;
        this.#schedulePump();
      }
    }
  }

  #schedulePump(): void {
    if (this.#reading) {
      this.#pumpWanted = true;
      return;
    }
    if (this.#pumpScheduled) return;
    this.#pumpScheduled = true;
    // Requests made in one tick go out in one write.
    queueMicrotask(() => {
      this.#pumpScheduled = false;
      this.#pump();
    });
  }

  #pump(): void {
    const stdin = this.#child?.stdin;
    if (this.#waitingForDrain || this.#gone !== undefined || stdin === undefined || stdin.writableEnded) return;
    for (;;) {
      const batch = this.#core.takeBatch(this.#maxInFlight);
      if (batch.length === 0) return;
      if (!stdin.write(batch, this.#wireText)) {
        this.#waitingForDrain = true;
        stdin.once('drain', () => {
          this.#waitingForDrain = false;
          this.#pump();
        });
        return;
      }
    }
  }
}

/**
 * Starts `command` with `args` as a child speaking the protocol on its stdin/stdout (the Rust
 * `rust-ts-ipc serve`, `node ts-app/dist/main.js`, or any other), in its own process group, and
 * returns the peer that talks to it. Throws a `PeerError` (`INVALID_ARGUMENT`) for bad options;
 * a command that cannot be started makes every request reject with `PEER_EXITED` saying why.
 * Keeps Node alive until `close()` (or the child's exit). With `encoding: 'msgpack'` requests go
 * as MessagePack frames (the child must speak them: `serve --encoding msgpack`), `data` may be
 * a `Buffer`/`Uint8Array`, and `bin` reply data arrives as a `Buffer`. With `mode: 'sync'` the
 * native addon owns the child's pipes and the peer also offers `requestSync` (see sync.ts).
 */
export function spawnPeer(
  command: string,
  args: readonly string[],
  options: SyncPeerOptions & { encoding: 'msgpack' },
): SyncPipePeer<JsonValue | Buffer>;
export function spawnPeer(command: string, args: readonly string[], options: SyncPeerOptions & { encoding?: 'json' }): SyncPipePeer;
export function spawnPeer(command: string, args: readonly string[], options: SyncPeerOptions): SyncPipePeer<JsonValue | Buffer>;
export function spawnPeer(
  command: string,
  args: readonly string[],
  options: SpawnPeerOptions & { encoding: 'msgpack' },
): PipePeer<JsonValue | Buffer>;
export function spawnPeer(command: string, args?: readonly string[], options?: SpawnPeerOptions & { encoding?: 'json' }): PipePeer;
/** An encoding known only at run time: reply data may be a `Buffer`. */
export function spawnPeer(command: string, args: readonly string[], options: SpawnPeerOptions): PipePeer<JsonValue | Buffer>;
export function spawnPeer(command: string, args: readonly string[] = [], options: SpawnPeerOptions = {}): PipePeer<JsonValue | Buffer> {
  if (typeof command !== 'string' || command.length === 0) {
    throw new PeerError(PeerErrorCode.INVALID_ARGUMENT, `spawnPeer: command must be a non-empty string, got ${String(command)}`);
  }
  const mode: unknown = options.mode ?? 'stream';
  if (mode === 'sync') return spawnSyncPeer(command, args, options as SyncPeerOptions);
  if (mode !== 'stream') {
    throw new PeerError(PeerErrorCode.INVALID_ARGUMENT, `spawnPeer: option \`mode\` must be 'stream' or 'sync', got ${String(mode)}`);
  }
  return new PipePeerImpl(command, args, options);
}
