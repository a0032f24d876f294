// The library's public types: the message, the `Peer` interface both transports implement,
// and their options. No code: see core.ts (the shared bookkeeping), pipe.ts and in-process.ts.

/** A JSON value: what a message's `data` holds once it has crossed the wire. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** How messages travel on a pipe: NDJSON lines (the default) or MessagePack frames. */
export type Encoding = 'json' | 'msgpack';

/** What `data` may be once it has crossed the wire in `encoding`: under msgpack, bytes too (a `Buffer`). */
export type WireData<E extends Encoding = 'json'> = E extends 'msgpack' ? JsonValue | Buffer : JsonValue;

/**
 * One message of the protocol, as the library hands it out: `{ msg_type, data, id }`. `D` is
 * `JsonValue | Buffer` for a peer speaking msgpack (`bin` data arrives as a `Buffer`).
 */
export interface Message<D = JsonValue> {
  /** What the message is: for requests the service's name (`data`, `markdown`, …), for replies its kind. */
  msg_type: string;
  /** The payload: any JSON value (the built-in services take and give strings), or bytes under msgpack. */
  data: D;
  /** The id of the request this answers; absent on notifications and on some unsolicited messages. */
  id?: number;
}

/** Per-request options of `Peer.request`. */
export interface RequestOptions {
  /**
   * Reject with `TIMEOUT` if no reply came within this many milliseconds of the call (time spent
   * waiting for a `maxInFlight` slot included). Default: the peer's `timeoutMs`. `0` or `Infinity`:
   * wait forever.
   */
  timeoutMs?: number;
  /** Reject with `ABORTED` when this signal fires (at once if it already has); a later reply is dropped. */
  signal?: AbortSignal;
}

/** Options of `Peer.close`. */
export interface CloseOptions {
  /**
   * How long each step of the shutdown waits for the child to exit: after stdin is closed, and
   * again after SIGTERM, before SIGKILL. Default: the peer's `graceMs`. `0`: do not wait,
   * escalate at once; `Infinity`: wait for the exit, never escalate.
   */
  graceMs?: number;
}

/** How the peer ended: the child's exit code, or the signal that ended it (both null if it never started). */
export interface ExitStatus {
  /** The exit code, or null if a signal ended the child. Always 0 for an in-process peer. */
  code: number | null;
  /** The signal that ended the child, or null if it exited by itself. */
  signal: NodeJS.Signals | null;
}

/** Counters a peer keeps, for monitoring and tests. */
export interface PeerStats {
  /** Requests sent whose reply has not arrived yet. */
  inFlight: number;
  /** Requests and notifications waiting to be written (for a `maxInFlight` slot or stdin's `drain`). */
  queued: number;
  /** Requests that got their reply (error replies included). */
  answered: number;
  /** Replies that came for a request that had already timed out or been aborted: dropped, never delivered. */
  lateRepliesDropped: number;
  /** Messages handed to the `message` listeners (counted also when no listener is registered). */
  unsolicited: number;
}

/** A listener for messages that answer no pending request. */
export type MessageListener<D = JsonValue> = (message: Message<D>) => void;

/**
 * The one interface of both transports: a child speaking the protocol over its stdin/stdout
 * (`spawnPeer`) or the Rust core in this process (`inProcess`). Switching is one line.
 */
export interface Peer<D = JsonValue> {
  /**
   * Sends `{ msg_type: msgType, data, id }` with a fresh id and resolves to the reply with that
   * id. Rejects with a `PeerError`: `ERROR_REPLY` (the reply's `msg_type` was `error`), `TIMEOUT`,
   * `ABORTED`, `PEER_EXITED`, `CLOSED` (after `close()`), `RESTART_LIMIT` (a `spawnPeer` with
   * `restart` whose child died too often: nothing is sent), `INVALID_ARGUMENT` (`data` is not
   * JSON-encodable, or is bytes, a `Buffer`/`Uint8Array`, which only `encoding: 'msgpack'`
   * carries; nothing is sent). Waits for a slot when `maxInFlight` requests are in flight.
   */
  request(msgType: string, data: unknown, options?: RequestOptions): Promise<Message<D>>;
  /**
   * Sends `{ msg_type: msgType, data }` without an id; whatever the peer answers goes to the
   * `message` listeners. Throws a `PeerError` (`INVALID_ARGUMENT`, `CLOSED`, `PEER_EXITED`).
   */
  notify(msgType: string, data: unknown): void;
  /**
   * Listens to every message that does not answer a pending request: no id, an id never sent,
   * an id already answered (the demo's `exit` after the fifth `ack`), and lines that are not
   * valid protocol (as an `error` message naming the line). Listeners run synchronously; one that
   * throws is reported as an uncaught exception after the peer's own bookkeeping is done.
   */
  on(event: 'message', listener: MessageListener<D>): this;
  /** Removes a listener added with `on`. */
  off(event: 'message', listener: MessageListener<D>): this;
  /**
   * Ends the peer; idempotent (every call returns the same promise). New requests reject with
   * `CLOSED`, and so do pending ones it ends, unless the child's exit was seen first: those
   * reject with `PEER_EXITED` and its exit details. A pipe peer runs the shutdown sequence: close the child's stdin, wait `graceMs`,
   * SIGTERM its process group, wait `graceMs`, SIGKILL, and resolve once it has exited. A bad
   * `graceMs` returns a Promise rejected with `INVALID_ARGUMENT` (never throws) and closes nothing.
   */
  close(options?: CloseOptions): Promise<ExitStatus>;
  /** A snapshot of the peer's counters. */
  stats(): PeerStats;
}
