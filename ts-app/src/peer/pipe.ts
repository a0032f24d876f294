// `spawnPeer`: a child process speaking the protocol over its stdin/stdout. This file owns the
// peer: its options, which child is current (child.ts owns each child's process, pipes and
// shutdown), writing to it, and the supervision (`restart`, `hangMs`); the requests are
// PeerCore's, the restart arithmetic restart.ts's.

import { performance } from 'node:perf_hooks';

import { DEFAULT_MAX_FRAME_BYTES } from '../frame.js';
import { DEFAULT_MAX_LINE_BYTES } from '../framing.js';
import { type ChildConfig, type ChildExit, type ChildHooks, PeerChild, type StderrOption } from './child.js';
import { checkCount, checkGraceMs, checkSend, checkTimeout, type Encode, type FailWith, PeerCore, type Refusal } from './core.js';
import { encodeFrame, encodeLine, FramePool } from './encode.js';
import { closedError, describeRequest, PeerError, PeerErrorCode } from './errors.js';
import { type RestartOptions, restartPolicy, Restarts } from './restart.js';
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

export { STDERR_TAIL_BYTES, type ChildExit, type StderrOption } from './child.js';

/** Default `timeoutMs`: long enough for real work, short enough that a stuck child is noticed. */
export const DEFAULT_TIMEOUT_MS = 30_000;
/** Default `maxInFlight`: enough to keep a pipe busy, few enough to bound what the child buffers. */
export const DEFAULT_MAX_IN_FLIGHT = 1024;
/** Default `graceMs`: each shutdown step's wait, as the Rust host's `--grace-ms`. */
export const DEFAULT_GRACE_MS = 2000;

/** What a request not yet written waits for while its child is being replaced (its `TIMEOUT` message). */
const WAITING_FOR_RESTART = 'the restart of the child, which had died';
const WAITING_FOR_SLOT = 'a maxInFlight slot';
const WAITING_FOR_STDIN = "room in the child's stdin, full of what was written before it: is the child reading its stdin?";

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
  /**
   * Default per-request timeout in milliseconds (0 or Infinity: none). Default 30 000. A
   * timeout fails only the request that waited (`TIMEOUT`); the child and the other requests
   * go on. To give up on a child that has stopped answering altogether, see `hangMs`.
   */
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
  /**
   * Supervision: replace a child that dies unexpectedly (it exits, is killed, closes its
   * stdout, closes its stdin while running (a write fails with EPIPE), could not start, or is
   * declared hung by `hangMs`). Off by default (`false`): the
   * first death fails every request from then on with `PEER_EXITED`. With `true` (the defaults,
   * `DEFAULT_RESTART`) or `{ baseMs, capMs, maxRestarts, windowMs }`:
   * - the requests written to the dead child fail `PEER_EXITED` (its exit status and stderr
   *   tail); requests not yet written, and those made from then on, wait for a fresh child,
   *   each within its own `timeoutMs`;
   * - a fresh child is started when there is something to send, no sooner than a backoff after
   *   the death: `d = min(capMs, baseMs × 2^k)`, `k` the restarts within the last `windowMs`,
   *   drawn uniformly from `[d/2, d]` (jitter); each start is reported by the `restart` event;
   * - a restart that would be the `maxRestarts + 1`-th within `windowMs` is refused: the circuit
   *   is open, and requests fail at once with `RESTART_LIMIT` (the last exit's details and
   *   `retryAfterMs`) until the oldest restart counted is `windowMs` old; the next request then
   *   starts a fresh child.
   * `close()` cancels a pending restart and starts none.
   */
  restart?: boolean | RestartOptions;
  /**
   * Declares the child dead when requests are pending and nothing at all (not a byte) has
   * arrived on its stdout for this many milliseconds: it is stopped with the shutdown sequence,
   * its pending requests fail `PEER_EXITED` saying it was declared hung, and with `restart` it
   * is replaced. The silence counts from the last byte read, or, if a request was written after
   * it, from the first such request (so an idle child is not hung the moment it is asked
   * something; it must answer within `hangMs`, which must therefore exceed the child's start-up
   * time); stderr output does not count (a child stuck in a loop may still log). It is checked
   * only while requests are pending, written or waiting to be written (behind a stdin the child
   * no longer reads, say): a request that timed out is no longer pending. Off by default (0 or
   * Infinity: off).
   */
  hangMs?: number;
}

/** What the `restart` event reports: a fresh child was started in place of a dead one. */
export interface RestartInfo {
  /** Restarts within the policy's `windowMs`, this one included: 1 for the first, and the backoff doubles with each. */
  attempt: number;
  /**
   * How long after the death the fresh child could start at the earliest, in ms: the backoff
   * drawn (jitter included), or, after the circuit was open, the time it stayed open. It starts
   * later if nothing was sent until then.
   */
  delayMs: number;
  /** The fresh child's pid, or undefined if it could not be started (its requests then fail `PEER_EXITED` saying why, and another restart follows). */
  pid: number | undefined;
  /** How the child it replaces ended. */
  exit: ChildExit;
}

/** A listener for the `restart` event. */
export type RestartListener = (info: RestartInfo) => void;

/** What the `exit` event reports: the child died unexpectedly (not through `close()`), and what follows. */
export interface ExitInfo {
  /** How it ended. Its pending requests have failed `PEER_EXITED` by the time listeners run. */
  exit: ChildExit;
  /**
   * What follows: `'backoff'` (with `restart`: a fresh child starts when something is to be
   * sent, no sooner than `delayMs` from now), `'open'` (the circuit is open: requests fail
   * `RESTART_LIMIT` for `delayMs`), or `'none'` (no `restart`: the peer is done).
   */
  next: 'backoff' | 'open' | 'none';
  /** For `'backoff'` and `'open'`, how long (ms, from now); 0 for `'none'`. */
  delayMs: number;
}

/** A listener for the `exit` event. */
export type ExitListener = (info: ExitInfo) => void;

/** A peer answered by a child process over its stdin/stdout (`D`: what reply data may be). */
export interface PipePeer<D = JsonValue> extends Peer<D> {
  /**
   * The current child's process id (also its process group's), or the last one's while it is
   * being replaced; undefined if it could not be started.
   */
  readonly pid: number | undefined;
  /** The last (at most 4 KiB) of what the current (or last) child wrote to stderr so far, as text. */
  stderrTail(): string;
  /**
   * `'message'`: see `Peer.on`. `'exit'`: the child died unexpectedly (exited, was killed,
   * closed its stdout or its stdin, could not start, or was declared hung), and what follows. `'restart'`
   * (with the `restart` option): a fresh child was started in place of a dead one. Listeners run
   * synchronously; one that throws is reported as an uncaught exception after the peer's own
   * bookkeeping is done.
   */
  on(event: 'message', listener: MessageListener<D>): this;
  on(event: 'exit', listener: ExitListener): this;
  on(event: 'restart', listener: RestartListener): this;
  /** Removes a listener added with `on`. */
  off(event: 'message', listener: MessageListener<D>): this;
  off(event: 'exit', listener: ExitListener): this;
  off(event: 'restart', listener: RestartListener): this;
}

/** Calls every listener with `value`; a throwing listener cannot break the peer's bookkeeping. */
function emitTo<T>(listeners: readonly ((value: T) => void)[], value: T): void {
  for (const listener of listeners) {
    try {
      listener(value);
    } catch (e) {
      process.nextTick(() => {
        throw e;
      });
    }
  }
}

class PipePeerImpl implements PipePeer {
  readonly #command: string;
  readonly #config: ChildConfig;
  readonly #core: PeerCore;
  /** How a message becomes wire text (latin1 frames under msgpack). */
  readonly #encode: Encode;
  /** Under msgpack: the queue holds frames (Buffers), written as they are (`takeFrames`). */
  readonly #frames: boolean;
  /** Big frames' buffers, reused once written (see `FramePool`). */
  readonly #framePool = new FramePool();
  /** A big frame's write callback hands its buffer back to the pool; small frames get none. */
  readonly #recycle = (frame: Buffer): ((error: Error | null | undefined) => void) | undefined =>
    frame.length < FramePool.MIN_BYTES
      ? undefined
      : (error) => {
          if (error == null) this.#framePool.give(frame);
        };
  readonly #timeoutMs: number;
  readonly #maxInFlight: number;
  readonly #graceMs: number;
  /** With `restart`: when a dead child may be replaced. */
  readonly #restarts: Restarts | undefined;
  /** `hangMs`, or 0 when off. */
  readonly #hangMs: number;
  readonly #hooks: ChildHooks = {
    read: (child, route) => this.#readFrom(child, route),
    receive: (message) => this.#core.receive(message),
    gone: (child) => this.#onGone(child),
    drained: (child) => {
      if (child === this.#child) this.#pump();
    },
  };
  /** The child requests go to; undefined while a dead one waits to be replaced. */
  #child: PeerChild | undefined;
  /** The child started last: the current one, or the dead one being replaced (`pid`, `stderrTail`, `close`'s status). */
  #last: PeerChild;
  /** Children given up on while perhaps still running (hung, stdout closed), being stopped. */
  readonly #retiring = new Set<Promise<ExitStatus>>();
  /** Without `restart` (or once closed): set once the child is gone for us; requests then fail with this. */
  #gone: FailWith | undefined;
  #restartTimer: NodeJS.Timeout | undefined;
  #restartListeners: RestartListener[] = [];
  #exitListeners: ExitListener[] = [];
  #hangTimer: NodeJS.Timeout | undefined;
  /**
   * Where the hang clock starts (`performance.now()`): when something last arrived on the
   * current child's stdout, or when the first request written after that was written.
   */
  #lastHeard = 0;
  /** Whether a request was written since something last arrived (then the clock is not moved by later writes). */
  #sentSinceHeard = false;
  #pumpScheduled = false;
  /** Inside a read: wakes only note that a pump is wanted (see `#read`). */
  #reading = false;
  #pumpWanted = false;
  #closing: Promise<ExitStatus> | undefined;
  /** Set as close() is called (before `#closing`, which is set once its first steps have run). */
  #closed = false;
  /** How the last dead child ended when the peer gave up on it (the `restart` event's `exit`, `RESTART_LIMIT`'s details). */
  #lastEnd: ChildExit | undefined;
  /**
   * Set if the current child's exit was seen before close() was called: what is still pending
   * then fails because the child died (`PEER_EXITED`), even while the pipes are drained after it.
   */
  #exitedFirst = false;

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
    const encoding: unknown = options.encoding ?? 'json';
    if (encoding !== 'json' && encoding !== 'msgpack') {
      throw new PeerError(
        PeerErrorCode.INVALID_ARGUMENT,
        `spawnPeer: option \`encoding\` must be 'json' or 'msgpack', got ${String(encoding)}`,
      );
    }
    const maxFrameBytes = checkCount(options.maxFrameBytes, 'maxFrameBytes', 1) ?? DEFAULT_MAX_FRAME_BYTES;
    const policy = restartPolicy(options.restart, 'spawnPeer: option `restart`');
    this.#restarts = policy === undefined ? undefined : new Restarts(policy);
    const hangMs = checkTimeout(options.hangMs, 'spawnPeer: option `hangMs`') ?? 0;
    this.#hangMs = hangMs === Infinity ? 0 : hangMs;
    this.#frames = encoding === 'msgpack';
    this.#encode =
      encoding === 'msgpack' ? (msgType, data, id) => encodeFrame(msgType, data, id, this.#framePool) : encodeLine;
    this.#config = { command, args, env: options.env, cwd: options.cwd, stderr, encoding, maxLineBytes, maxFrameBytes };
    this.#core = new PeerCore(() => this.#schedulePump());

    const child = new PeerChild(this.#config, this.#hooks);
    const code = (child.spawnError as NodeJS.ErrnoException | undefined)?.code;
    // Node's own checks of the arguments (a null byte, a wrong type) are bad arguments; other
    // failures (ENOTDIR, E2BIG) are thrown where ENOENT is emitted: the same to us.
    if (typeof code === 'string' && code.startsWith('ERR_')) {
      const e = child.spawnError;
      throw new PeerError(PeerErrorCode.INVALID_ARGUMENT, `spawnPeer: ${e instanceof Error ? e.message : String(e)}`, {
        cause: e,
      });
    }
    this.#child = child;
    this.#last = child;
    // As for a spawn failure Node emits (ENOENT): on the next tick, so that listeners added
    // when spawnPeer returns hear of it.
    if (child.spawnError !== undefined) process.nextTick(() => this.#onGone(child));
  }

  get pid(): number | undefined {
    return this.#last.pid;
  }

  stderrTail(): string {
    return this.#last.stderrTail();
  }

  request(msgType: string, data: unknown, options?: RequestOptions): Promise<Message> {
    return this.#core.checkedRequest(msgType, data, options, this.#timeoutMs, this.#refuse, this.#encode);
  }

  notify(msgType: string, data: unknown): void {
    checkSend(msgType, this.#refuse);
    this.#core.notify(this.#encode(msgType, data, undefined));
  }

  on(event: 'message', listener: MessageListener): this;
  on(event: 'exit', listener: ExitListener): this;
  on(event: 'restart', listener: RestartListener): this;
  on(event: 'message' | 'exit' | 'restart', listener: MessageListener | ExitListener | RestartListener): this {
    if (event === 'message') this.#core.on(listener as MessageListener);
    else if (event === 'exit') this.#exitListeners = [...this.#exitListeners, listener as ExitListener];
    else if (event === 'restart') this.#restartListeners = [...this.#restartListeners, listener as RestartListener];
    return this;
  }

  off(event: 'message', listener: MessageListener): this;
  off(event: 'exit', listener: ExitListener): this;
  off(event: 'restart', listener: RestartListener): this;
  off(event: 'message' | 'exit' | 'restart', listener: MessageListener | ExitListener | RestartListener): this {
    const without = <T>(listeners: T[], l: T): T[] => {
      const i = listeners.lastIndexOf(l);
      return i === -1 ? listeners : listeners.filter((_, j) => j !== i);
    };
    if (event === 'message') this.#core.off(listener as MessageListener);
    else if (event === 'exit') this.#exitListeners = without(this.#exitListeners, listener as ExitListener);
    else if (event === 'restart') this.#restartListeners = without(this.#restartListeners, listener as RestartListener);
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
    if (this.#closing === undefined) {
      this.#closed = true;
      this.#exitedFirst = this.#child?.status !== undefined;
      this.#closing = this.#shutdown(graceMs ?? this.#graceMs);
    }
    return this.#closing;
  }

  /** `#refusal`, bound once (calls hand it to the core's checks). */
  readonly #refuse: Refusal = (msgType) => this.#refusal(msgType);

  /** Why a new request cannot be made now, or undefined if it can. */
  #refusal(msgType: string): PeerError | undefined {
    if (this.#closed) return closedError(`the peer \`${this.#command}\``, msgType);
    if (this.#gone !== undefined) return this.#gone(msgType, undefined);
    if (this.#child === undefined) return this.#circuitOpen(msgType, undefined);
    return undefined;
  }

  /** The `RESTART_LIMIT` error while the circuit is open, or undefined if it is not. */
  #circuitOpen(msgType: string, id: number | undefined): PeerError | undefined {
    const restarts = this.#restarts;
    if (restarts === undefined) return undefined;
    const now = performance.now();
    const gate = restarts.poll(now);
    if (gate.state !== 'open') return undefined;
    const { maxRestarts, windowMs } = restarts.policy;
    const count = restarts.restartsInWindow(now);
    const end = this.#lastEnd ?? this.#last.end();
    const retryAfterMs = gate.until - now;
    const what = id === undefined ? `\`${msgType}\`` : describeRequest(msgType, id);
    const times = count === 1 ? '1 time' : `${count} times`;
    const tail = end.stderrTail.length > 0 ? `; its stderr ended with:\n${end.stderrTail}` : '; it wrote nothing to stderr';
    const when = retryAfterMs === Infinity ? 'no child is started again (restart.windowMs is Infinity)' : `no child is started for ${Math.ceil(retryAfterMs)} ms more`;
    return new PeerError(
      PeerErrorCode.RESTART_LIMIT,
      `${what} cannot be sent: the peer \`${this.#command}\` was restarted ${times} within ${windowMs} ms (restart.maxRestarts ${maxRestarts}) ` +
        `and its last child (pid ${String(end.pid)}) ${end.description}; ${when}: fix what makes it die, or raise restart.maxRestarts${tail}`,
      {
        msgType,
        ...(id === undefined ? {} : { id }),
        exitCode: end.code,
        signal: end.signal,
        stderrTail: end.stderrTail,
        retryAfterMs,
      },
    );
  }

  async #shutdown(graceMs: number): Promise<ExitStatus> {
    // No child starts from here on, and no hang is declared.
    clearTimeout(this.#restartTimer);
    this.#restartTimer = undefined;
    clearTimeout(this.#hangTimer);
    this.#hangTimer = undefined;
    // What can be written now still goes (a request made just before close() is sent); what
    // waits for a slot (or for a fresh child) never will be. Requests written may still be
    // answered while the child drains its stdin, until it exits.
    this.#pump();
    const child = this.#child;
    this.#core.failQueued(child === undefined ? this.#closedFail : this.#failWith(child, true));
    if (child !== undefined) await child.shutdown(graceMs);
    // Children given up on and still being stopped: none is left behind.
    while (this.#retiring.size > 0) await Promise.all([...this.#retiring]);
    if (this.#gone === undefined) {
      this.#gone = this.#closedFail;
      this.#core.failAll(this.#closedFail);
    }
    return this.#last.status ?? { code: null, signal: null };
  }

  readonly #closedFail: FailWith = (msgType, id) => closedError(`the peer \`${this.#command}\``, msgType, id);

  /** What fails the requests `child` leaves: `CLOSED` if close() was called before its exit was seen, else `PEER_EXITED`. */
  #failWith(child: PeerChild, closing: boolean): FailWith {
    return closing && !this.#exitedFirst ? this.#closedFail : (msgType, id) => child.exitedError(msgType, id);
  }

  /**
   * `child` is gone for requests (it exited and its pipes drained, closed its stdout or stdin, could not
   * start, or was declared hung): fail what it cannot answer and, with `restart`, prepare its
   * replacement.
   */
  #onGone(child: PeerChild): void {
    if (child.reported || child !== this.#child) return;
    child.reported = true;
    clearTimeout(this.#hangTimer);
    this.#hangTimer = undefined;
    const restarts = this.#restarts;
    const closing = this.#closed;
    if (restarts === undefined || closing) {
      const gone = this.#failWith(child, closing);
      this.#gone = gone;
      this.#core.failAll(gone);
      // A hung child is stopped now; one that only closed its stdout or stdin is left to close().
      if (child.hung !== undefined) this.#retire(child);
      if (!closing) emitTo(this.#exitListeners, { exit: child.end(), next: 'none', delayMs: 0 });
      return;
    }
    this.#child = undefined;
    this.#lastEnd = child.end();
    if (child.running) this.#retire(child);
    const gate = restarts.onExit(performance.now());
    // Requests written to it are lost with it; those not written yet wait for the next child.
    this.#core.failSent((msgType, id) => child.exitedError(msgType, id));
    if (gate.state === 'open') {
      this.#core.failQueued((msgType, id) => this.#circuitOpen(msgType, id) ?? child.exitedError(msgType, id));
    } else {
      this.#core.waitingFor = WAITING_FOR_RESTART;
    }
    this.#schedulePump();
    emitTo(this.#exitListeners, { exit: this.#lastEnd, next: gate.state === 'open' ? 'open' : 'backoff', delayMs: restarts.delayMs });
  }

  /** Stops `child` (the shutdown sequence) in the background; close() waits for it. */
  #retire(child: PeerChild): void {
    const stopping = child.shutdown(this.#graceMs);
    this.#retiring.add(stopping);
    void stopping.finally(() => this.#retiring.delete(stopping));
  }

  /**
   * No current child: if something waits to be sent, start a fresh one when the policy allows
   * (now, or when the backoff ends: a timer calls back here). Returns the fresh child, if one
   * was started and can take writes.
   */
  #replace(): PeerChild | undefined {
    const restarts = this.#restarts;
    if (restarts === undefined || this.#closed || this.#core.queued === 0) {
      // Nothing waits for a fresh child any more (what did timed out or was aborted): the
      // backoff timer, if armed, no longer keeps Node alive; it is held again if something queues.
      this.#restartTimer?.unref();
      return undefined;
    }
    const now = performance.now();
    const gate = restarts.poll(now);
    if (gate.state === 'backoff' || gate.state === 'open') {
      // Open: nothing is queued (requests are refused, and those queued failed when it opened),
      // unless a listener queued one since; it waits for the circuit like a backoff.
      if (this.#restartTimer === undefined) {
        const ms = Math.min(0x7fffffff, Math.max(1, Math.ceil(gate.until - now)));
        this.#restartTimer = setTimeout(() => {
          this.#restartTimer = undefined;
          this.#pump();
        }, ms);
      } else {
        this.#restartTimer.ref();
      }
      return undefined;
    }
    const exit = this.#lastEnd ?? this.#last.end();
    const delayMs = restarts.delayMs;
    const child = new PeerChild(this.#config, this.#hooks);
    restarts.started(now);
    this.#child = child;
    this.#last = child;
    this.#sentSinceHeard = false;
    this.#core.waitingFor = WAITING_FOR_SLOT;
    emitTo(this.#restartListeners, { attempt: restarts.restartsInWindow(now), delayMs, pid: child.pid, exit });
    if (child.spawnError !== undefined) {
      this.#onGone(child);
      return undefined;
    }
    // A listener may have closed the peer: then close() owns the child.
    return !this.#closed && this.#child === child ? child : undefined;
  }

  /**
   * Something arrived on `child`'s stdout: routed if it is the current child and not given up
   * on (a dead, hung or stdin-closed one's late output, replies to requests already failed
   * included, is dropped).
   */
  #readFrom(child: PeerChild, route: () => void): void {
    if (child !== this.#child || child.reported || child.hung !== undefined) return;
    if (this.#hangMs > 0) {
      this.#lastHeard = performance.now();
      this.#sentSinceHeard = false;
    }
    this.#read(route);
  }

  /** The hang timer fired: declares the current child hung if it has been silent `hangMs` with requests pending. */
  #checkHang(): void {
    this.#hangTimer = undefined;
    const child = this.#child;
    // Requests waiting to be written count: behind a stdin the child no longer reads, they are
    // as unanswered as those written.
    const pending = this.#core.inFlight + this.#core.queuedRequests;
    // An exit already seen is reported as such within SETTLE_MS: not a hang.
    if (child === undefined || child.reported || child.status !== undefined || this.#closed || pending === 0) return;
    const quiet = performance.now() - this.#lastHeard;
    if (quiet < this.#hangMs) {
      this.#armHang(this.#hangMs - quiet);
      return;
    }
    child.hung = { ms: this.#hangMs, pending };
    this.#onGone(child);
  }

  #armHang(ms: number): void {
    if (this.#hangTimer !== undefined) return;
    // Unref'd: it never keeps Node alive by itself (pending requests and the child do).
    this.#hangTimer = setTimeout(() => this.#checkHang(), Math.max(1, Math.ceil(ms))).unref();
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
    const child = this.#child ?? this.#replace();
    if (child === undefined || this.#gone !== undefined) return;
    const before = this.#core.inFlight;
    if (child.writable) {
      for (;;) {
        if (this.#frames) {
          // Frames go out as they were encoded, in one vectored write: no copy into one buffer.
          const frames = this.#core.takeFrames(this.#maxInFlight);
          if (frames.length === 0 || !child.writeFrames(frames, this.#recycle)) break;
        } else {
          const batch = this.#core.takeBatch(this.#maxInFlight);
          if (batch.length === 0 || !child.write(batch)) break;
        }
      }
    }
    // What a request left queued waits for, as its TIMEOUT says.
    this.#core.waitingFor = child.full ? WAITING_FOR_STDIN : WAITING_FOR_SLOT;
    if (this.#hangMs > 0 && this.#core.inFlight + this.#core.queuedRequests > 0) {
      // The first request written since the child last said anything starts the hang clock (a
      // child idle for an hour is not hung the moment it is asked something); later ones do
      // not move it, even when they replace requests that timed out. Requests that cannot be
      // written (its stdin is full: it does not read) start it too, and keep it running after
      // those written have timed out.
      if ((this.#core.inFlight > before || !child.writable) && !this.#sentSinceHeard) {
        this.#lastHeard = performance.now();
        this.#sentSinceHeard = true;
      }
      this.#armHang(this.#hangMs - (performance.now() - this.#lastHeard));
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
export function spawnPeer(
  command: string,
  args: readonly string[] = [],
  options: SpawnPeerOptions = {},
): PipePeer<JsonValue | Buffer> | SyncPipePeer<JsonValue | Buffer> {
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
