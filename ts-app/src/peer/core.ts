// The bookkeeping both transports share, and the one place that owns the pending requests:
// ids, the map from id to pending request, the queue of messages waiting to be written, the
// timeouts and abort signals, the routing of every incoming message (a reply settles its
// request; anything else goes to the `message` listeners), and the counters. Sans-IO: the
// transport asks it for what to write (`takeBatch` for lines, `takeFrames` for MessagePack
// frames) and hands it the messages it read (`receive`); it never touches a stream.

import { performance } from 'node:perf_hooks';

import { abortedError, checkMsgType, describeRequest, errorReply, PeerError, PeerErrorCode } from './errors.js';
import type { Message, MessageListener, PeerStats, RequestOptions } from './types.js';

/** The largest id; after it ids start again at 1. */
const MAX_ID = Number.MAX_SAFE_INTEGER;

/**
 * How many ids of timed-out or aborted requests are remembered, so their late replies are
 * dropped and counted: a peer that never answers them must not grow our memory. A late reply
 * to an id forgotten since is delivered as unsolicited, never dropped silently.
 */
const ABANDONED_IDS = 65_536;

/** setTimeout's limit: 2^31 − 1 ms (24.8 days); a longer timeout is as good as none. */
const MAX_TIMER_MS = 0x7fffffff;

/**
 * A message as the transport writes it: an NDJSON line, or a MessagePack frame (header
 * included) kept as the bytes it was encoded to, so that a big frame is never copied into a
 * string and back.
 */
export type Wire = string | Buffer;

const QUEUED = 0;
const SENT = 1;
const SETTLED = 2;

const settledAlready = (): void => {};

/**
 * One request from `request()` until it settles. Settling drops what it holds (its line, its
 * promise's functions, its signal): a settled `Pending` may still be referenced from old
 * structures (a replaced hash table, the deadline heap) until they are collected, and must not
 * keep the promise and its reply alive meanwhile. Through such references every reply that
 * survived one scavenge was kept, and promoted, by the next (≈300 B promoted per request).
 */
class Pending {
  /** The encoded line or frame, until written. */
  line: Wire;
  state: typeof QUEUED | typeof SENT | typeof SETTLED = QUEUED;
  /** When it times out (`performance.now()` time), or Infinity for never; never changes (a heap key). */
  readonly deadline: number;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined = undefined;

  constructor(
    readonly id: number,
    readonly msgType: string,
    line: Wire,
    readonly timeoutMs: number,
    deadline: number,
    public resolve: (reply: Message) => void,
    public reject: (error: PeerError) => void,
    signal: AbortSignal | undefined,
  ) {
    this.line = line;
    this.deadline = deadline;
    this.signal = signal;
  }
}

/**
 * The requests with a deadline, as a binary min-heap on it. Requests with the same timeout
 * arrive in deadline order, so a push usually stays where it lands (one comparison). Settled
 * requests are marked, not searched for: they are dropped when they reach the top, or swept
 * out when they are over half the heap, so it never holds more than about twice its live
 * entries.
 */
class DeadlineHeap {
  #items: Pending[] = [];
  /** Entries not settled. */
  live = 0;

  push(p: Pending): void {
    const items = this.#items;
    let i = items.length;
    items.push(p);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const above = items[parent] as Pending;
      if (above.deadline <= p.deadline) break;
      items[i] = above;
      i = parent;
    }
    items[i] = p;
    this.live++;
  }

  /** The live request with the earliest deadline (settled ones above it are dropped), or undefined. */
  first(): Pending | undefined {
    const items = this.#items;
    for (;;) {
      const top = items[0];
      if (top === undefined || top.state !== SETTLED) return top;
      const last = items.pop() as Pending;
      if (items.length > 0) this.#siftDown(last, 0);
    }
  }

  /** Takes note that one of its requests settled (its deadline is now Infinity). */
  settled(): void {
    this.live--;
    const items = this.#items;
    if (this.live === 0) {
      items.length = 0;
    } else if (items.length > 2 * this.live + 64) {
      const kept = items.filter((p) => p.state !== SETTLED);
      this.#items = kept;
      for (let i = (kept.length >> 1) - 1; i >= 0; i--) this.#siftDown(kept[i] as Pending, i);
    }
  }

  #siftDown(p: Pending, from: number): void {
    const items = this.#items;
    const n = items.length;
    let i = from;
    for (;;) {
      let child = 2 * i + 1;
      if (child >= n) break;
      const right = child + 1;
      if (right < n && (items[right] as Pending).deadline < (items[child] as Pending).deadline) child = right;
      const below = items[child] as Pending;
      if (below.deadline >= p.deadline) break;
      items[i] = below;
      i = child;
    }
    items[i] = p;
  }
}

/** Slots of the in-flight ring: a power of two, twice the default `maxInFlight`. */
const RING_SLOTS = 2048;

/**
 * The requests in flight, by id. Ids are handed out in sending order, so a ring indexed by
 * their low bits holds them with no hashing and, unlike a Map, with no table replaced as they
 * come and go: a Map under steady set/delete rehashes into a new table every few hundred
 * requests (in old space, once its table has been promoted), and each table it drops keeps the
 * requests it held alive through the next scavenge. A request whose slot is still held by an
 * older one (a straggler `RING_SLOTS` ids behind) goes to an overflow Map.
 */
class InFlight {
  #slots: (Pending | undefined)[] | undefined;
  readonly #overflow = new Map<number, Pending>();
  size = 0;

  add(p: Pending): void {
    // Allocated on first use: the in-process peer never sends through the core.
    const slots = (this.#slots ??= new Array<Pending | undefined>(RING_SLOTS).fill(undefined));
    const i = p.id & (RING_SLOTS - 1);
    if (slots[i] === undefined) slots[i] = p;
    else this.#overflow.set(p.id, p);
    this.size++;
  }

  get(id: number): Pending | undefined {
    const p = this.#slots?.[id & (RING_SLOTS - 1)];
    if (p !== undefined && p.id === id) return p;
    return this.#overflow.size === 0 ? undefined : this.#overflow.get(id);
  }

  delete(p: Pending): void {
    const slots = this.#slots;
    const i = p.id & (RING_SLOTS - 1);
    if (slots !== undefined && slots[i] === p) slots[i] = undefined;
    else this.#overflow.delete(p.id);
    this.size--;
  }

  /** Every request in flight, in the order they were sent (the order of their ids). */
  values(): Pending[] {
    const all = [...this.#overflow.values()];
    for (const p of this.#slots ?? []) if (p !== undefined) all.push(p);
    return all.sort((a, b) => a.id - b.id);
  }
}

/** What `close` and exits do to every request not yet answered. */
export type FailWith = (msgType: string, id: number | undefined) => PeerError;

/** Checks a duration option: a non-negative number; `meaning` says what 0 and Infinity do. */
function checkMs(value: unknown, name: string, meaning: string): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || Number.isNaN(value) || value < 0) {
    throw new PeerError(
      PeerErrorCode.INVALID_ARGUMENT,
      `${name} must be a non-negative number of milliseconds (${meaning}), got ${String(value)}`,
    );
  }
  return value;
}

/** Checks a `spawnPeer` count option: undefined, or a safe integer of at least `min`. */
export function checkCount(value: unknown, name: string, min: number): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
    throw new PeerError(
      PeerErrorCode.INVALID_ARGUMENT,
      `spawnPeer: option \`${name}\` must be an integer of at least ${min}, got ${String(value)}`,
    );
  }
  return value;
}

/** Checks a timeout option: a non-negative number (0 and Infinity mean none). */
export function checkTimeout(value: unknown, name: string): number | undefined {
  return checkMs(value, name, '0 or Infinity: no timeout');
}

/**
 * Checks a `graceMs` option: a non-negative number. Unlike a timeout, 0 is no wait at all (each
 * shutdown step escalates at once), and only Infinity waits for the exit forever.
 */
export function checkGraceMs(value: unknown, name: string): number | undefined {
  return checkMs(value, name, '0: do not wait, escalate at once; Infinity: wait for the exit, never escalate');
}

/**
 * Checks a `signal` option: undefined or an `AbortSignal` (anything else would fail only once
 * the request was queued, leaving its timer armed).
 */
export function checkSignal(value: unknown, name: string): AbortSignal | undefined {
  if (value === undefined || value instanceof AbortSignal) return value;
  throw new PeerError(
    PeerErrorCode.INVALID_ARGUMENT,
    `${name} must be an AbortSignal (e.g. \`AbortSignal.timeout(ms)\` or a controller's), got ${value === null ? 'null' : typeof value}`,
  );
}

/** Why a peer will not send `msgType` now (`CLOSED`, `PEER_EXITED`, `RESTART_LIMIT`), or undefined if it will. */
export type Refusal = (msgType: string) => PeerError | undefined;

/** How a peer encodes a message for its queue (`id` undefined: a notification). */
export type Encode = (msgType: string, data: unknown, id: number | undefined) => Wire;

/**
 * The checks every call that sends (`request`, `requestSync`, `notify`) makes first, in this
 * order: `msgType` is a string (else `INVALID_ARGUMENT`), and the peer takes it (else the error
 * `refusal` gives). Throws the first that fails.
 */
export function checkSend(msgType: unknown, refusal: Refusal): asserts msgType is string {
  checkMsgType(msgType);
  const refused = refusal(msgType);
  if (refused !== undefined) throw refused;
}

/** The shared core of a peer; see the file's header. */
export class PeerCore {
  #lastId = 0;
  readonly #pending = new InFlight();
  /** Messages waiting to be written, in call order: a request, or a notification's line. */
  #queue: (Pending | Wire)[] = [];
  #head = 0;
  #queued = 0;
  /** The requests among `#queued` (the rest are notifications). */
  #queuedRequests = 0;
  readonly #abandoned = new Set<number>();
  #listeners: MessageListener[] = [];
  #answered = 0;
  #late = 0;
  #unsolicited = 0;
  /**
   * Timeouts: the deadlines in a heap and one timer, for the earliest, instead of a timer per
   * request (arming and clearing one costs more than the rest of the bookkeeping).
   */
  readonly #deadlines = new DeadlineHeap();
  #timer: NodeJS.Timeout | undefined;
  /** When `#timer` fires (`performance.now()` time), or Infinity if none is armed. */
  #timerAt = Infinity;
  /**
   * What a request not yet written waits for, as its `TIMEOUT` message says: a `maxInFlight`
   * slot, unless the transport says otherwise (a supervised pipe peer: its child's restart).
   */
  waitingFor = 'a maxInFlight slot';

  /**
   * `wake` is called (synchronously) whenever a message may have become writable: one was
   * queued or a slot freed. The transport then calls `takeBatch`.
   */
  constructor(private readonly wake: () => void = () => {}) {}

  /** A fresh id: 1, 2, 3, … up to 2^53 − 1, then 1 again. */
  nextId(): number {
    this.#lastId = this.#lastId === MAX_ID ? 1 : this.#lastId + 1;
    return this.#lastId;
  }

  /** Counts a request answered outside the pending map (the in-process fast path). */
  countAnswered(): void {
    this.#answered++;
  }

  /**
   * Queues a request whose line is already encoded, and arms its timeout (`timeoutMs`: 0 or
   * Infinity for none) and abort signal. The promise settles exactly once.
   */
  request(msgType: string, id: number, line: Wire, timeoutMs: number, signal: AbortSignal | undefined): Promise<Message> {
    return new Promise<Message>((resolve, reject) => {
      const timed = timeoutMs > 0 && timeoutMs <= MAX_TIMER_MS;
      const deadline = timed ? performance.now() + timeoutMs : Infinity;
      const p = new Pending(id, msgType, line, timeoutMs, deadline, resolve, reject, signal);
      if (timed) this.#addDeadline(p);
      if (signal !== undefined) {
        p.onAbort = () => this.#abandon(p, abortedError(msgType, id, signal.reason));
        signal.addEventListener('abort', p.onAbort, { once: true });
      }
      this.#queue.push(p);
      this.#queued++;
      this.#queuedRequests++;
      this.wake();
    });
  }

  /**
   * A peer's `request`, checked, then queued: `checkSend`, the options (`options.timeoutMs`, else
   * `timeoutMs`; `options.signal`), a fresh id and the line `encode` makes of it. A signal aborted
   * already rejects it (`ABORTED`) with nothing queued; else `beforeQueue` runs and it is queued
   * (`request`). The promise rejects with the first check that fails.
   */
  checkedRequest(
    msgType: string,
    data: unknown,
    options: RequestOptions | undefined,
    timeoutMs: number,
    refusal: Refusal,
    encode: Encode,
    beforeQueue?: () => void,
  ): Promise<Message> {
    let line: Wire;
    let id: number;
    let signal: AbortSignal | undefined;
    try {
      checkSend(msgType, refusal);
      timeoutMs = checkTimeout(options?.timeoutMs, 'request: option `timeoutMs`') ?? timeoutMs;
      signal = checkSignal(options?.signal, 'request: option `signal`');
      id = this.nextId();
      line = encode(msgType, data, id);
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
    beforeQueue?.();
    return this.request(msgType, id, line, timeoutMs, signal);
  }

  /** Queues a notification's line behind everything queued before it. */
  notify(line: Wire): void {
    this.#queue.push(line);
    this.#queued++;
    this.wake();
  }

  /**
   * The queued lines that may be written now, joined, in call order (requests only while fewer
   * than `maxInFlight` are in flight; they count as in flight from here), or "" if none.
   */
  takeBatch(maxInFlight: number, maxBytes = 1 << 20): string {
    return this.#take(maxInFlight, maxBytes, undefined);
  }

  /**
   * `takeBatch` for a transport that queued frames (`Buffer`s): the frames that may be written
   * now, in call order, as they were queued (not joined: the transport writes them in one
   * vectored write), or an empty array if none.
   */
  takeFrames(maxInFlight: number, maxBytes = 1 << 20): Buffer[] {
    const frames: Buffer[] = [];
    this.#take(maxInFlight, maxBytes, frames);
    return frames;
  }

  /**
   * The one walk of the write queue behind `takeBatch` and `takeFrames`: takes each entry that
   * may be written now, in call order, until `maxBytes` are taken or a request finds
   * `maxInFlight` requests in flight; a request taken counts as in flight from here, one settled
   * while queued (timed out or aborted) is skipped, uncounted already. Then drops what was taken
   * from the queue. The entries taken are pushed to `frames`, or, without it, joined and returned.
   * (A branch, not a callback: the walk is the write path's, and a callback per entry costs more.)
   */
  #take(maxInFlight: number, maxBytes: number, frames: Buffer[] | undefined): string {
    let text = '';
    let taken = 0;
    const queue = this.#queue;
    while (this.#head < queue.length && taken < maxBytes) {
      const next = queue[this.#head];
      if (next === undefined) break;
      let wire: Wire;
      if (!(next instanceof Pending)) {
        wire = next;
      } else if (next.state === QUEUED) {
        if (this.#pending.size >= maxInFlight) break;
        wire = next.line;
        next.line = '';
        next.state = SENT;
        this.#queuedRequests--;
        this.#pending.add(next);
      } else {
        this.#head++;
        continue;
      }
      if (frames === undefined) {
        text += wire as string;
        taken = text.length;
      } else {
        frames.push(wire as Buffer);
        taken += wire.length;
      }
      this.#queued--;
      this.#head++;
    }
    if (this.#head === queue.length) {
      this.#queue = [];
      this.#head = 0;
    } else if (this.#head > 1024 && this.#head * 2 > queue.length) {
      this.#queue = queue.slice(this.#head);
      this.#head = 0;
    }
    return text;
  }

  /**
   * Routes one message read from the peer: the reply to a pending request settles it (an
   * `error` reply rejects it with `ERROR_REPLY`); a reply to a request that timed out or was
   * aborted is dropped and counted; anything else goes to the listeners.
   */
  receive(message: Message): void {
    const id = message.id;
    if (id !== undefined) {
      const p = this.#pending.get(id);
      if (p !== undefined) {
        const { resolve, reject } = p;
        this.#settle(p);
        this.#answered++;
        if (message.msg_type === 'error') reject(errorReply(p.msgType, id, message));
        else resolve(message);
        this.wake();
        return;
      }
      if (this.#abandoned.delete(id)) {
        this.#late++;
        return;
      }
    }
    this.emit(message);
  }

  /** Hands `message` to every listener; a throwing listener cannot break the caller's bookkeeping. */
  emit(message: Message): void {
    this.#unsolicited++;
    const listeners = this.#listeners;
    for (const listener of listeners) {
      try {
        listener(message);
      } catch (e) {
        // Reported as an uncaught exception, as an EventEmitter listener's would be, but only
        // after the peer has finished routing what it read.
        process.nextTick(() => {
          throw e;
        });
      }
    }
  }

  /** Adds a `message` listener. */
  on(listener: MessageListener): void {
    this.#listeners = [...this.#listeners, listener];
  }

  /** Removes a `message` listener (its last registration). */
  off(listener: MessageListener): void {
    const i = this.#listeners.lastIndexOf(listener);
    if (i !== -1) this.#listeners = this.#listeners.filter((_, j) => j !== i);
  }

  /** Rejects every request not yet written with `fail`'s error and drops queued notifications. */
  failQueued(fail: FailWith): void {
    const queue = this.#queue.slice(this.#head);
    this.#queue = [];
    this.#head = 0;
    for (const p of queue) {
      if (!(p instanceof Pending)) {
        this.#queued--;
      } else if (p.state === QUEUED) {
        const reject = p.reject;
        this.#settle(p);
        reject(fail(p.msgType, p.id));
      }
    }
  }

  /** Rejects every request written and not yet answered with `fail`'s error; those not written wait on. */
  failSent(fail: FailWith): void {
    for (const p of this.#pending.values()) {
      const reject = p.reject;
      this.#settle(p);
      reject(fail(p.msgType, p.id));
    }
    this.wake();
  }

  /** Requests written and not yet answered. */
  get inFlight(): number {
    return this.#pending.size;
  }

  /** Requests and notifications waiting to be written. */
  get queued(): number {
    return this.#queued;
  }

  /** Requests (not notifications) waiting to be written. */
  get queuedRequests(): number {
    return this.#queuedRequests;
  }

  /** Rejects every request not yet answered, written or not, with `fail`'s error. */
  failAll(fail: FailWith): void {
    this.failQueued(fail);
    const pending = this.#pending.values();
    for (const p of pending) {
      const reject = p.reject;
      this.#settle(p);
      reject(fail(p.msgType, p.id));
    }
  }

  /** A snapshot of the counters. */
  stats(): PeerStats {
    return {
      inFlight: this.#pending.size,
      queued: this.#queued,
      answered: this.#answered,
      lateRepliesDropped: this.#late,
      unsolicited: this.#unsolicited,
    };
  }

  /** Files `p`'s deadline, and makes sure the timer fires by then. */
  #addDeadline(p: Pending): void {
    this.#deadlines.push(p);
    // Ref'd again while a request waits on it, as a timer per request would be.
    if (this.#deadlines.live === 1) this.#timer?.ref();
    if (p.deadline < this.#timerAt) this.#arm(p.deadline);
  }

  #arm(at: number): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timerAt = at;
    // At least 1 ms: what setTimeout makes of less anyway.
    this.#timer = setTimeout(() => this.#expire(), Math.max(1, Math.ceil(at - performance.now())));
  }

  /** The timer fired: times out every request whose deadline has passed, earliest first. */
  #expire(): void {
    this.#timer = undefined;
    this.#timerAt = Infinity;
    for (;;) {
      const next = this.#deadlines.first();
      if (next === undefined) return;
      // A timer may fire a little before its time (libuv's clock is coarser): wait the rest.
      if (next.deadline > performance.now()) {
        this.#arm(next.deadline);
        return;
      }
      this.#timeout(next);
    }
  }

  #timeout(p: Pending): void {
    const message =
      `${describeRequest(p.msgType, p.id)} got no reply within ${p.timeoutMs} ms` +
      (p.state === QUEUED ? ` (it was still waiting for ${this.waitingFor})` : '') +
      '; raise timeoutMs (per request or for the peer) if the work takes longer, or check that the peer is alive';
    this.#abandon(p, new PeerError(PeerErrorCode.TIMEOUT, message, { msgType: p.msgType, id: p.id }));
  }

  /** Gives up on `p` (timeout, abort): a reply that still comes is dropped and counted. */
  #abandon(p: Pending, error: PeerError): void {
    if (p.state === SETTLED) return;
    if (p.state === SENT) {
      this.#abandoned.add(p.id);
      if (this.#abandoned.size > ABANDONED_IDS) {
        for (const oldest of this.#abandoned) {
          this.#abandoned.delete(oldest);
          break;
        }
      }
    }
    const reject = p.reject;
    this.#settle(p);
    reject(error);
    this.wake();
  }

  /** Takes `p` out of every structure and disarms its timeout and signal. */
  #settle(p: Pending): void {
    if (p.state === SENT) this.#pending.delete(p);
    else if (p.state === QUEUED) {
      this.#queued--;
      this.#queuedRequests--;
    }
    p.state = SETTLED;
    p.line = '';
    p.resolve = settledAlready;
    p.reject = settledAlready;
    if (p.deadline !== Infinity) {
      this.#settledDeadline();
    }
    if (p.onAbort !== undefined) p.signal?.removeEventListener('abort', p.onAbort);
    p.onAbort = undefined;
    p.signal = undefined;
  }

  /** A request with a deadline settled: its entry is skipped from now on. */
  #settledDeadline(): void {
    this.#deadlines.settled();
    // Nothing left to time out: the timer stays armed (re-arming per request would cost what a
    // timer per request did) but no longer keeps Node alive; it fires once, finds nothing, stops.
    if (this.#deadlines.live === 0) this.#timer?.unref();
  }
}
