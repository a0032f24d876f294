// Reading a pipe or socket into buffers of ours (`net.Socket`'s `onread`), made safe against
// exceptions. Both msgpack readers use it: `serveStdio`'s stdin (engine.ts) and `spawnPeer`'s
// reading of its child's stdout (peer/child.ts). Frames handed out are views of the buffers the
// reads went into, so the next read must never land in a buffer it was not given.

import { type OnReadOpts, Socket, type SocketConstructorOpts } from 'node:net';

/** What an in-place reader does with its reads. */
export interface InPlaceRead {
  /** The buffer the next read goes to (asked again after each read). */
  buffer(): Buffer;
  /** `n` bytes were read into the buffer `buffer` gave last. May throw: see `inPlaceSocket`. */
  callback(n: number): void;
}

/** How a handle is pointed at the buffer its next read goes to (libuv stream handles have it). */
interface UserBufferHandle {
  useUserBuffer(buffer: Buffer): void;
}

/**
 * The in-place readers open, each as how to point its handle at the buffer its next read must
 * go to. Node takes the next read's buffer from what `onread`'s callback returns only if nothing
 * throws until the callback's scope is done, the ticks and microtasks that follow it included (a
 * throwing `message` listener is rethrown on the next tick, user code may throw in one):
 * otherwise it reads into the last buffer again, over frames already handed out as views of it,
 * and the decoder reads the wrong memory. Every such exception goes through
 * 'uncaughtExceptionMonitor' (which changes nothing of how it is handled), whose listener points
 * every reader that may have lost its buffer that way at it again (one whose last read's scope
 * is over, or whose buffer did not change, is left alone: see `unsure` in `inPlaceSocket`).
 */
const repointing = new Set<() => void>();
/** Handles pointed at a buffer again by `repointing` so far (for tests). */
let repoints = 0;

function repointAll(): void {
  for (const repoint of repointing) repoint();
}

/** Whether `handle` can be read into buffers of ours (a libuv stream handle's wrap). */
export function hasUserBuffer(handle: unknown): handle is UserBufferHandle {
  return (
    typeof handle === 'object' &&
    handle !== null &&
    typeof (handle as { useUserBuffer?: unknown }).useUserBuffer === 'function' &&
    typeof (handle as { readStart?: unknown }).readStart === 'function'
  );
}

/**
 * A readable socket on `source` (a descriptor, or the handle of an existing stream that never
 * read: undocumented, see `readInPlace` in peer/child.ts) whose reads go into `read.buffer()`'s
 * buffers and are handed to `read.callback`. If the callback throws, that is reported as an
 * uncaught exception once the read is done with (as a stream 'data' listener's would be) and
 * reading goes on; exceptions thrown after it, before Node took the next buffer, are mended by
 * `repointing`. Pausing is the caller's (`socket.pause()`), not the callback's return value's.
 */
export function inPlaceSocket(
  source: { fd: number; readable: true; writable: false } | { handle: UserBufferHandle; readable: true },
  read: InPlaceRead,
): Socket {
  /** The buffer the next read must go to: the one `buffer` last gave. */
  let next: Buffer | undefined;
  /** Inside `callback` (before Node asks the next buffer), and whether a repoint waits for it. */
  let reading = false;
  let repointDue = false;
  /**
   * Whether the handle may not have taken `next`: Node asked for it after a read, for another
   * place than the last, and the scope of that read (where an exception keeps the last buffer)
   * may not be over. Only then is a repoint needed: each one stacks one more native stream
   * listener on the handle (`useUserBuffer` pushes one), kept until it closes, so repointing on
   * every uncaught exception of the process would grow without bound.
   */
  let unsure = false;
  const point = (buffer: Buffer): void => {
    repointDue = false;
    unsure = false;
    repoints++;
    handle()?.useUserBuffer(buffer);
  };
  const handle = (): UserBufferHandle | undefined => {
    if ('handle' in source) return source.handle;
    const own: unknown = (socket as unknown as { _handle?: unknown })._handle;
    return hasUserBuffer(own) ? own : undefined;
  };
  // `onread` is a documented option of `new net.Socket()` (Node's own docs; @types/node lists it
  // for `connect()` only); `handle` is not (see `readInPlace`).
  const options: SocketConstructorOpts & { onread: OnReadOpts; handle?: UserBufferHandle } = {
    ...source,
    onread: {
      buffer: () => {
        const given = read.buffer();
        if (next === undefined || given.buffer !== next.buffer || given.byteOffset !== next.byteOffset || given.length !== next.length) {
          unsure = true;
        }
        next = given;
        if (repointDue) point(given);
        return given;
      },
      callback: (n: number) => {
        // Node asks for the next read's buffer only once this returns: were it to throw, the
        // next read would land in the last buffer again, over what was handed out as views of
        // it, and out of the decoder's sight.
        // The last read's scope is over: the handle took `next` (else its exception repointed it).
        unsure = false;
        reading = true;
        try {
          read.callback(n);
        } catch (e) {
          process.nextTick(() => {
            throw e;
          });
        } finally {
          reading = false;
        }
        return true;
      },
    },
  };
  const socket = new Socket(options);
  // Node pointed the handle at the first buffer itself.
  unsure = false;
  const repoint = (): void => {
    if (socket.destroyed || next === undefined) return;
    if (reading) repointDue = true;
    else if (unsure) point(next);
  };
  repointing.add(repoint);
  if (repointing.size === 1) process.on('uncaughtExceptionMonitor', repointAll);
  socket.once('close', () => {
    repointing.delete(repoint);
    if (repointing.size === 0) process.off('uncaughtExceptionMonitor', repointAll);
  });
  return socket;
}

/** In-place readers open now (for tests: each adds one 'uncaughtExceptionMonitor' use). */
export function inPlaceReaders(): number {
  return repointing.size;
}

/**
 * How many times a reader's handle was pointed at its buffer again so far (for tests: each
 * time, Node stacks one more native stream listener on the handle, kept until it closes).
 */
export function inPlaceRepoints(): number {
  return repoints;
}
