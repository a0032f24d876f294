// `PeerError`: every failure a peer reports, with a stable `code` and a message that says what
// happened and what to do about it.

import type { Message } from './types.js';

/** The codes a `PeerError` can carry, as a value (`PeerErrorCode.TIMEOUT`) and a type. */
export const PeerErrorCode = {
  /** The reply's `msg_type` was `error`; its text is in the message and the reply in `reply`. */
  ERROR_REPLY: 'ERROR_REPLY',
  /** No reply within the request's `timeoutMs`; a reply arriving later is dropped and counted. */
  TIMEOUT: 'TIMEOUT',
  /** The request's `AbortSignal` fired; a reply arriving later is dropped and counted. */
  ABORTED: 'ABORTED',
  /** The child exited (or could not start, closed its stdout or its stdin, or was declared hung) before answering. */
  PEER_EXITED: 'PEER_EXITED',
  /** The peer was closed with `close()`. */
  CLOSED: 'CLOSED',
  /** An argument the peer cannot send (e.g. data that cannot be encoded); nothing was sent. */
  INVALID_ARGUMENT: 'INVALID_ARGUMENT',
  /**
   * `spawnPeer` with `restart`: the child died more than `maxRestarts` times within `windowMs`
   * (the circuit is open); nothing was sent. Carries the last exit's details and `retryAfterMs`.
   */
  RESTART_LIMIT: 'RESTART_LIMIT',
  /** `requestSync` on a sync-mode pipe peer while `request` calls are in flight or queued; nothing was sent. */
  BUSY: 'BUSY',
} as const;

/** One of the `PeerErrorCode` values. */
export type PeerErrorCode = (typeof PeerErrorCode)[keyof typeof PeerErrorCode];

/** What a `PeerError` may carry besides its code and message. */
export interface PeerErrorDetails {
  /** The `msg_type` of the request that failed, if a request failed. */
  msgType?: string;
  /** The id of the request that failed, if it had been given one. */
  id?: number;
  /** `ERROR_REPLY`: the `error` reply itself. */
  reply?: Message;
  /** `PEER_EXITED`, `RESTART_LIMIT`: the (last) child's exit code, or null (killed by a signal, or not exited yet). */
  exitCode?: number | null;
  /** `PEER_EXITED`, `RESTART_LIMIT`: the signal that ended the (last) child, or null. */
  signal?: NodeJS.Signals | null;
  /** `PEER_EXITED`, `RESTART_LIMIT`: the last (at most 4 KiB) of what the (last) child wrote to stderr, as text. */
  stderrTail?: string;
  /** `RESTART_LIMIT`: how long until the circuit closes and a request starts a fresh child, in ms (Infinity: never). */
  retryAfterMs?: number;
  /** The underlying error (a spawn error, an abort reason, a `TypeError` from the addon). */
  cause?: unknown;
}

/** Every failure of a peer: `code` says which, the message says what to do. */
export class PeerError extends Error {
  /** Which failure this is; stable, for programs to branch on. */
  readonly code: PeerErrorCode;
  /** The `msg_type` of the request that failed, if a request failed. */
  readonly msgType: string | undefined;
  /** The id of the request that failed, if it had been given one. */
  readonly id: number | undefined;
  /** `ERROR_REPLY`: the `error` reply itself. */
  readonly reply: Message | undefined;
  /** `PEER_EXITED`, `RESTART_LIMIT`: the (last) child's exit code, or null. */
  readonly exitCode: number | null | undefined;
  /** `PEER_EXITED`, `RESTART_LIMIT`: the signal that ended the (last) child, or null. */
  readonly signal: NodeJS.Signals | null | undefined;
  /** `PEER_EXITED`, `RESTART_LIMIT`: the last (at most 4 KiB) of the (last) child's stderr. */
  readonly stderrTail: string | undefined;
  /** `RESTART_LIMIT`: ms until the circuit closes (Infinity: never). */
  readonly retryAfterMs: number | undefined;

  /** A failure with `code`, a message a person can act on, and its details. */
  constructor(code: PeerErrorCode, message: string, details: PeerErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'PeerError';
    this.code = code;
    this.msgType = details.msgType;
    this.id = details.id;
    this.reply = details.reply;
    this.exitCode = details.exitCode;
    this.signal = details.signal;
    this.stderrTail = details.stderrTail;
    this.retryAfterMs = details.retryAfterMs;
  }
}

/** True if `e` is a `PeerError`, optionally with `code`. */
export function isPeerError(e: unknown, code?: PeerErrorCode): e is PeerError {
  return e instanceof PeerError && (code === undefined || e.code === code);
}

/** `request \`data\` #3`: how messages name a request. */
export function describeRequest(msgType: string, id: number): string {
  return `request \`${msgType}\` #${id}`;
}

/** The rejection for a reply whose `msg_type` is `error`. */
export function errorReply(msgType: string, id: number, reply: Message): PeerError {
  const text = typeof reply.data === 'string' ? reply.data : JSON.stringify(reply.data);
  return new PeerError(PeerErrorCode.ERROR_REPLY, `${describeRequest(msgType, id)} was answered with an error: ${text}`, {
    msgType,
    id,
    reply,
  });
}

/** The rejection for a request made after `close()`, or pending when it was called. */
export function closedError(what: string, msgType?: string, id?: number): PeerError {
  const request = msgType === undefined ? 'nothing more can be sent' : id === undefined ? `\`${msgType}\` cannot be sent` : `${describeRequest(msgType, id)} cannot be answered`;
  return new PeerError(
    PeerErrorCode.CLOSED,
    `${request}: ${what} was closed; create a new peer to send more (\`spawnPeer\` or \`inProcess\`)`,
    { ...(msgType === undefined ? {} : { msgType }), ...(id === undefined ? {} : { id }) },
  );
}

/** The rejection for an aborted request. */
export function abortedError(msgType: string, id: number, reason: unknown): PeerError {
  return new PeerError(
    PeerErrorCode.ABORTED,
    `${describeRequest(msgType, id)} was aborted by its signal; a reply arriving later is dropped`,
    { msgType, id, cause: reason },
  );
}

/** Throws `INVALID_ARGUMENT` unless `msgType` is a string. */
export function checkMsgType(msgType: unknown): asserts msgType is string {
  if (typeof msgType !== 'string') {
    throw new PeerError(
      PeerErrorCode.INVALID_ARGUMENT,
      `msgType must be a string (the service's name, e.g. 'data'), got ${msgType === null ? 'null' : typeof msgType}`,
    );
  }
}
