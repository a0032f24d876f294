// What answers the frames main.ts reads: the TypeScript responder, or the napi addon (the Rust
// core in-process), both pure so that they are testable without a pipe; and `serveLines`, the
// one stdin/stdout loop that feeds any line-level service (these engines, or `serveStdio`'s
// handlers) and writes its answers. The loop lives here, not in its own module, because the
// child is exactly main.js, engine.js, frame.js, framing.js, msgpack.js and protocol.js (a test
// copies those six).

import { fstatSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { Readable, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { isMainThread } from 'node:worker_threads';

import { frameCutText, frameTooLongText, type Packet } from './frame.js';
import { type Frame, LineDecoder, type LineSink } from './framing.js';
import { inPlaceSocket } from './in-place.js';
import { textFrame } from './msgpack.js';
import { type Message, Responder, type ResponderOptions, tooLongReply } from './protocol.js';

/**
 * Answers the decoder's frames in order (lines of a `LineDecoder`, or packets of a
 * `FrameDecoder` for `--encoding msgpack`); the host stops reading once `done`.
 */
export interface Engine<F = Frame> {
  /** The reply lines (or reply frames) for one frame (empty for none). */
  answer(frame: F): string | Uint8Array;
  /**
   * If present, what answers a line `LineDecoder.feed` decoded as text (see `LineService`);
   * the same replies as `answer` gives that line's frame.
   */
  answerText?(line: number, text: string): string | Uint8Array;
  /** True once the conversation has ended (the `exit` reply has been produced). */
  readonly done: boolean;
}

/** The TypeScript responder: frames go straight to `handleFrame`, text lines to `handleText`. */
export function tsEngine(options: ResponderOptions): Engine {
  const responder = new Responder(options);
  return {
    answer: (frame) => responder.handleFrame(frame),
    answerText: (line, text) => responder.handleText(line, text),
    get done() {
      return responder.done;
    },
  };
}

/** The TypeScript responder over MessagePack frames: packets go straight to `handlePacket`. */
export function tsFrameEngine(options: ResponderOptions): Engine<Packet> {
  const responder = new Responder(options);
  return {
    answer: (packet) => responder.handlePacket(packet),
    get done() {
      return responder.done;
    },
  };
}

/** The part of the addon's `Responder` the native engines use (see `native/index.d.ts`). */
export interface NativeResponder {
  handleLine(line: string): string;
  handleBuffer(bytes: Uint8Array): string | Uint8Array;
  handle(msg: Message): Message[];
  /** One MessagePack frame body in, the reply frames (with their length headers) out. */
  handleFrame(body: Uint8Array): Uint8Array;
  readonly done: boolean;
}

/** `new Responder(options)` of the addon: the TypeScript options plus the services answered. */
export interface NativeResponderOptions extends ResponderOptions {
  /**
   * The addon answers `demo` and `markdown` by default; the TypeScript responder, `demo` only.
   * `bytes` (an echo of bytes) is answered by `handleFrame` only.
   */
  services?: ('demo' | 'markdown' | 'bytes')[];
}

/** The part of the addon's exports the native engine uses. */
export interface NativeAddon {
  Responder: new (options?: NativeResponderOptions) => NativeResponder;
}

/**
 * What the addon's Rust → JS calls take: a function from one NDJSON line (without its line
 * ending) to the reply lines, or an object with such a `handleLine` method (a `Responder`).
 */
export type JsResponder = ((line: string) => string) | { handleLine(line: string): string };

/** The addon's Rust → JS exports (documented in `native/index.d.ts`). */
export interface CallsJs {
  playDemo(responder: JsResponder): string[];
  playDemoOnThread(responder: JsResponder): Promise<string[]>;
  callJsSync(responder: JsResponder, line: string, count: number): number;
  callJsThread(responder: JsResponder, line: string, count: number, window: number): Promise<number>;
}

/** The addon's Rust → JS exports, if this build of it has them. */
export function callsJs(addon: NativeAddon): CallsJs | undefined {
  const exports = addon as Partial<CallsJs>;
  return typeof exports.playDemo === 'function' && typeof exports.playDemoOnThread === 'function'
    ? (addon as NativeAddon & CallsJs)
    : undefined;
}

const NO_BYTES = new Uint8Array(0);

/**
 * The addon's responder behind the TypeScript decoder. The addon has no `handleFrame`: it
 * numbers error replies by counting its calls, one line each, while the decoder skips blank
 * lines and drops over-long ones. So before each frame it is given one empty line per line
 * the decoder skipped (blank lines get no reply there either), and an over-long line is
 * counted with one more empty line and answered with the same reply text, encoded in
 * TypeScript. Its counter then always equals the physical line number.
 */
export function nativeEngine(responder: NativeResponder, maxLineBytes: number): Engine {
  let fed = 0;
  /** Counts the lines skipped before line `line`, as empty lines. */
  const catchUp = (line: number): void => {
    while (fed < line - 1) {
      responder.handleBuffer(NO_BYTES);
      fed++;
    }
    fed++;
  };
  return {
    answer(frame) {
      catchUp(frame.line);
      if (frame.kind === 'line') return responder.handleBuffer(frame.bytes);
      responder.handleBuffer(NO_BYTES);
      return tooLongReply(frame.line, frame.length, maxLineBytes);
    },
    // A text line is valid UTF-8 decoded, so `handleLine` sees the line's own bytes.
    answerText(line, text) {
      catchUp(line);
      return responder.handleLine(text);
    },
    get done() {
      return responder.done;
    },
  };
}

/**
 * The addon's responder behind the TypeScript `FrameDecoder`, for `--encoding msgpack`. The
 * addon numbers error replies by counting its `handleFrame` calls, and the decoder numbers
 * every frame it meets, so one call per packet keeps the two in step: a whole frame is
 * answered by the addon; an over-long one (skipped, never held) or a cut one is counted with an
 * empty body (whose own error reply is dropped: an empty frame changes no state) and answered
 * with the same text, encoded in TypeScript, as the core would give it.
 */
export function nativeFrameEngine(responder: NativeResponder, maxFrameBytes: number): Engine<Packet> {
  return {
    answer(packet) {
      if (packet.kind === 'frame') return responder.handleFrame(packet.bytes);
      responder.handleFrame(NO_BYTES);
      const text =
        packet.kind === 'too_long'
          ? frameTooLongText(packet.length, maxFrameBytes)
          : frameCutText(packet.received, packet.length);
      return textFrame('error', `frame ${packet.frame}: ${text}`, undefined);
    },
    get done() {
      return responder.done;
    },
  };
}

/** Where the addon package lives: `<repo>/native`, two levels above `dist/engine.js`. */
export const NATIVE_PATH = fileURLToPath(new URL('../../native', import.meta.url));

/**
 * Loads the addon package at `path` (default `<repo>/native`), or says why it cannot. Lazy:
 * only `--engine native` calls it, so the TypeScript build and child never need the addon.
 */
export function loadNativeAddon(
  path: string = NATIVE_PATH,
): { addon: NativeAddon } | { why: string; /** Node's permission model refused it (building will not help). */ denied?: true } {
  try {
    const loaded: unknown = createRequire(import.meta.url)(path);
    const responder = (loaded as Partial<NativeAddon> | null)?.Responder;
    if (typeof responder !== 'function') return { why: 'it does not export a Responder class' };
    return { addon: loaded as NativeAddon };
  } catch (e) {
    const denied = permissionDenial(e);
    if (denied !== undefined) return { why: denied, denied: true };
    const text = e instanceof Error ? e.message : String(e);
    return { why: text.split('\n')[0] ?? text };
  }
}

/**
 * Why Node's permission model refused the addon, if it did: the napi loader wraps each
 * failed attempt in the `cause` chain of a generic "Cannot find native binding" error.
 */
function permissionDenial(e: unknown): string | undefined {
  for (let at: unknown = e, depth = 0; at instanceof Error && depth < 32; at = at.cause, depth++) {
    const code = (at as Error & { code?: unknown }).code;
    // The loader may pass the error on without its code: its message says it too.
    if (code === 'ERR_DLOPEN_DISABLED' || at.message.includes('loading addons is disabled')) {
      return (
        "Node's permission model forbids native addons: start node with --allow-addons " +
        '(`rust-ts-ipc demo --node-permission --node-allow-addons`)'
      );
    }
    if (code === 'ERR_ACCESS_DENIED') {
      const resource = (at as Error & { resource?: unknown }).resource;
      const where = typeof resource === 'string' ? ` \`${resource}\`` : '';
      return (
        `Node's permission model denies reading${where}: allow the addon's directory with --allow-fs-read ` +
        '(`rust-ts-ipc demo --node-permission --node-allow-read DIR`)'
      );
    }
  }
  return undefined;
}

/**
 * What `serveLines` answers frames with: an `Engine`, or a service whose answers may come
 * later (a Promise of the reply lines, which must not reject: errors are replies too).
 */
export interface LineService<F = Frame> {
  /** The reply lines (or frames) for one frame, now or later (empty for none). */
  answer(frame: F): Reply | Promise<Reply>;
  /**
   * If present (and the loop frames lines with its own `LineDecoder`), the lines of a chunk
   * that are valid UTF-8, within the limit and not blank come here as text, decoded in one go
   * per chunk (`LineDecoder.feed`), instead of one `answer(frame)` each: it must reply exactly
   * as `answer` would to the line's frame. Other lines still go to `answer`.
   */
  answerText?(line: number, text: string): Reply | Promise<Reply>;
  /** True once nothing more is to be answered: the loop stops reading. */
  readonly done: boolean;
  /**
   * If present, called with each reply `Uint8Array` once the output is done with it (written,
   * or copied into a batch): the service may reuse its memory (a pool of big frames). Not
   * called for a reply that was never written (the output failed or is gone).
   */
  release?(reply: Uint8Array): void;
}

/** What a `LineService` answers one frame with: lines, frames, or a frame in pieces. */
export type Reply = string | Uint8Array | ReplyParts;

/** What splits the input into frames: a `LineDecoder`, or a `FrameDecoder`. */
export interface StreamDecoder<F> {
  /** The frames a chunk completed. */
  push(chunk: Buffer): F[];
  /** At end of input: what is left (a last line without `\n`, a cut frame). */
  end(): F[];
  /**
   * If present (a `FrameDecoder`), with `filled`: where the next read should land, so that
   * the loop can have the kernel read stdin straight into the decoder's buffers (see
   * `FrameDecoder.readBuffer`).
   */
  readBuffer?(): Buffer;
  /** The frames the last read completed, `n` bytes put into `readBuffer()`'s buffer. */
  filled?(n: number): F[];
}

/**
 * A reply in pieces, written as they are in one corked (vectored) write, none copied: a big
 * `bin` payload between its frame's head and tail. The pieces must not change until written.
 */
export class ReplyParts {
  /** The bytes of all the pieces. */
  readonly length: number;

  constructor(readonly parts: readonly Uint8Array[]) {
    let length = 0;
    for (const part of parts) length += part.length;
    this.length = length;
  }
}

/** The replies of one flush at least this big are written piece by piece (corked), not concatenated. */
const VECTORED_WRITE_BYTES = 64 * 1024;
/** In such a write, pieces smaller than this are joined with their neighbours rather than written alone. */
const VECTORED_PIECE_BYTES = 16 * 1024;

/**
 * Stdin as a socket that reads with `onread` into the buffers `buffer()` gives (the next read's
 * target, asked again after each read) and hands each count of bytes read to `callback`;
 * undefined where fd 0 is not a pipe or a socket (a file, a TTY, closed), where something
 * already reads it, in a worker thread (whose `process.stdin` is what its parent feeds it, not
 * fd 0), or on Windows: then `process.stdin` serves. The socket becomes
 * `process.stdin` from then on: Node's own would open a second handle on fd 0, which libuv
 * refuses (`open EEXIST`, thrown by the getter), so code that looks at `process.stdin.isTTY`
 * or waits for its 'end' gets this one (it must not read from it).
 */
function stdinReader(buffer: () => Buffer, callback: (n: number) => void): Readable | undefined {
  if (process.platform === 'win32' || !isMainThread) return undefined;
  try {
    const stat = fstatSync(0);
    if (!stat.isFIFO() && !stat.isSocket()) return undefined;
    const socket = Object.assign(inPlaceSocket({ fd: 0, readable: true, writable: false }, { buffer, callback }), { fd: 0 });
    Object.defineProperty(process, 'stdin', { configurable: true, enumerable: true, get: () => socket });
    return socket;
  } catch {
    return undefined;
  }
}

/** Options of `serveLines`. */
export interface LineLoopOptions<F = Frame> {
  /** Longer lines are framed as `too_long` and never buffered. */
  maxLineBytes: number;
  /** The decoder of the input. Default a `LineDecoder` bounded by `maxLineBytes` (then F is `Frame`). */
  decoder?: StreamDecoder<F>;
  /** At most this many answers pending (Promises) at once; stdin is paused meanwhile. Default unbounded. */
  maxConcurrent?: number;
  /**
   * Where requests come from. Default stdin: with a decoder that has `readBuffer`, read
   * straight into the decoder's buffers when fd 0 is a pipe or socket, else `process.stdin`.
   */
  input?: Readable;
  /** Where replies go. Default `process.stdout`. */
  output?: Writable;
}

/**
 * The read-answer-write loop, shared by the child (main.ts) and `serveStdio`. Resolves once
 * input has ended (EOF, or `service.done`), every pending answer has settled and every reply
 * has been handed to the output; also, at once, when the output's reader is gone (EPIPE: a
 * normal end, later replies are dropped). Rejects on any other read or write error, or if
 * `service.answer` throws (a bug: bad input gets an error reply instead), after writing the
 * replies produced before it.
 *
 * Synchronous replies go out in frame order, and all those produced by one input chunk in
 * ONE write (many small messages arriving together cost one syscall, not one each);
 * asynchronous ones as they settle, batched per turn of the event loop. Input is paused while
 * the output is full (until 'drain') or `maxConcurrent` answers are pending, so a peer that
 * does not read its replies, or floods slow requests, cannot make us buffer without bound:
 * at most one input chunk of frames waits. Nothing here calls `process.exit()`: output to a
 * pipe is asynchronous, so a process ends by itself once input is closed and the last write
 * has been flushed.
 */
export function serveLines<F = Frame>(service: LineService<F>, options: LineLoopOptions<F>): Promise<void> {
  const output = options.output ?? process.stdout;
  const maxConcurrent = options.maxConcurrent ?? Number.POSITIVE_INFINITY;
  const decoder =
    options.decoder ?? (new LineDecoder({ maxLineBytes: options.maxLineBytes }) as unknown as StreamDecoder<F>);

  // Lines as text, a chunk at a time, when the service can take them and the loop owns the decoder.
  const answerText = options.decoder === undefined ? service.answerText?.bind(service) : undefined;
  const lineDecoder = answerText === undefined ? undefined : (decoder as unknown as LineDecoder);

  return new Promise<void>((resolve, reject) => {
    // Stdin read straight into the frame decoder's buffers, where it can be (see `stdinReader`).
    const readBuffer = decoder.readBuffer?.bind(decoder);
    const filled = decoder.filled?.bind(decoder);
    const direct =
      options.input === undefined && readBuffer !== undefined && filled !== undefined
        ? stdinReader(readBuffer, (n) => take(filled(n)))
        : undefined;
    const input = options.input ?? direct ?? process.stdin;
    /** Frames (and text lines) read but not yet answered: `frames[next..]`. */
    let frames: (F | TextLine)[] = [];
    let next = 0;
    /** Answers started and not yet settled. */
    let pending = 0;
    /** Reply lines not yet written. */
    let parts: Reply[] = [];
    /** Writes not yet called back. */
    let writing = 0;
    let waitingForDrain = false;
    let inputPaused = false;
    let pumpScheduled = false;
    /** Input ended (EOF seen). */
    let ended = false;
    /** No more input is read or answered (service done, or a failure). */
    let stopped = false;
    /** The output is gone: nothing more is written. */
    let closed = false;
    let finished = false;

    const finish = (error?: Error): void => {
      if (finished) return;
      finished = true;
      if (error === undefined) resolve();
      else reject(error);
    };

    /** Stops reading for good; whatever was written still reaches the peer. */
    const stop = (): void => {
      stopped = true;
      frames = [];
      next = 0;
      input.destroy();
    };

    const fail = (text: string, cause: unknown): void => {
      flush();
      stop();
      finish(new Error(text, { cause }));
    };

    const outputFailed = (e: NodeJS.ErrnoException): void => {
      closed = true;
      parts = [];
      if (!stopped) stop();
      // The reader went away: a normal way for the conversation to end, not a crash.
      if (e.code === 'EPIPE') finish();
      else finish(new Error(`cannot write to stdout: ${e.message}`, { cause: e }));
    };

    const written = (e?: Error | null): void => {
      writing--;
      if (e) outputFailed(e);
      else maybeFinish();
    };

    const release = service.release?.bind(service);

    const flush = (): void => {
      if (parts.length === 0 || closed) return;
      const sent = parts;
      parts = [];
      let batch: string | Uint8Array;
      let done = written;
      let bytes = 0;
      for (const p of sent) {
        if (typeof p !== 'string') bytes += p.length;
      }
      if (bytes >= VECTORED_WRITE_BYTES) {
        // Big pieces go out as they are, in one corked (vectored) write: never copied. The
        // small ones between them are joined into one buffer (a write call each would cost more).
        const pieces: Uint8Array[] = [];
        let small: (string | Uint8Array)[] = [];
        const joinSmall = (): void => {
          if (small.length > 0) pieces.push(Buffer.concat(small.map((p) => (typeof p === 'string' ? Buffer.from(p) : p))));
          small = [];
        };
        for (const p of sent) {
          for (const piece of p instanceof ReplyParts ? p.parts : [p]) {
            if (typeof piece !== 'string' && piece.length >= VECTORED_PIECE_BYTES) {
              joinSmall();
              pieces.push(piece);
            } else {
              small.push(piece);
            }
          }
        }
        joinSmall();
        // Every piece's callback comes once the whole write is done: the last one releases.
        const allWritten = (e?: Error | null): void => {
          if (!e && release !== undefined) for (const p of sent) if (p instanceof Uint8Array) release(p);
          written(e);
        };
        writing++;
        output.cork();
        let flowing = true;
        pieces.forEach((piece, i) => {
          flowing = output.write(piece, i === pieces.length - 1 ? allWritten : undefined);
        });
        output.uncork();
        if (!flowing) waitForDrain();
        return;
      }
      const only = sent[0];
      if (sent.length === 1 && !(only instanceof ReplyParts)) {
        batch = only as string | Uint8Array;
        const reply = batch;
        if (release !== undefined && typeof reply !== 'string') {
          done = (e) => {
            if (!e) release(reply);
            written(e);
          };
        }
      } else if (sent.every((p) => typeof p === 'string')) {
        batch = sent.join('');
      } else {
        const pieces: Uint8Array[] = [];
        for (const p of sent) {
          if (typeof p === 'string') pieces.push(Buffer.from(p));
          else if (p instanceof ReplyParts) pieces.push(...p.parts);
          else pieces.push(p);
        }
        batch = Buffer.concat(pieces);
        if (release !== undefined) for (const p of sent) if (p instanceof Uint8Array) release(p);
      }
      writing++;
      if (!output.write(batch, done)) waitForDrain();
    };

    const waitForDrain = (): void => {
      if (waitingForDrain) return;
      waitingForDrain = true;
      output.once('drain', () => {
        waitingForDrain = false;
        pump();
      });
    };

    const maybeFinish = (): void => {
      const drained = stopped || (ended && next >= frames.length);
      if (drained && pending === 0 && parts.length === 0 && writing === 0) finish();
    };

    const settle = (reply: Reply): void => {
      pending--;
      if (!closed && !stopped && reply.length > 0) parts.push(reply);
      if (!pumpScheduled) {
        pumpScheduled = true;
        setImmediate(pump);
      }
    };

    /** Answers queued frames while there is room, writes, then pauses or resumes input. */
    function pump(): void {
      pumpScheduled = false;
      if (finished) return;
      try {
        while (next < frames.length && !stopped && !service.done && !waitingForDrain && pending < maxConcurrent) {
          const item = frames[next++] as F | TextLine;
          const reply =
            item instanceof TextLine && answerText !== undefined
              ? answerText(item.line, item.text)
              : service.answer(item as F);
          if (reply instanceof Promise) {
            pending++;
            reply.then(settle, (e: unknown) => fail(`internal error: ${describeError(e)}`, e));
          } else if (reply.length > 0) {
            parts.push(reply);
          }
        }
      } catch (e) {
        fail(`internal error: ${describeError(e)}`, e);
        return;
      }
      if (next >= frames.length && next > 0) {
        frames = [];
        next = 0;
      }
      flush();
      // After the service is done nothing more is answered: like the Rust host, the child
      // stops reading (only the in-process responders answer late lines, with an error).
      if (service.done && !stopped) stop();
      const wantInput = !stopped && !ended && !waitingForDrain && pending < maxConcurrent && next >= frames.length;
      if (wantInput === inputPaused) {
        inputPaused = !wantInput;
        if (wantInput) input.resume();
        else input.pause();
      }
      maybeFinish();
    }

    const take = (got: (F | TextLine)[]): void => {
      if (stopped) return;
      if (next >= frames.length) {
        frames = got;
        next = 0;
      } else if (got.length > 0) {
        frames = frames.slice(next).concat(got);
        next = 0;
      }
      pump();
    };

    output.on('error', outputFailed);
    input.on('error', (e: Error) => {
      if (stopped) return;
      fail(`cannot read stdin: ${e.message}`, e);
    });
    if (direct !== undefined) {
      // `stdinReader` hands each read to `take` itself: no 'data' events.
    } else if (lineDecoder === undefined) {
      input.on('data', (chunk: Buffer) => take(decoder.push(chunk)));
    } else {
      /** What `feed` hands over for one chunk, in order. */
      let got: (F | TextLine)[] = [];
      const sink: LineSink = {
        text: (line, text) => got.push(new TextLine(line, text)),
        frame: (frame) => got.push(frame as F),
      };
      input.on('data', (chunk: Buffer) => {
        got = [];
        lineDecoder.feed(chunk, sink);
        take(got);
      });
    }
    // EOF: the last line may have had no newline.
    input.on('end', () => {
      ended = true;
      take(decoder.end());
    });
  });
}

/** A line `LineDecoder.feed` decoded as text, waiting for `answerText`. */
class TextLine {
  constructor(
    readonly line: number,
    readonly text: string,
  ) {}
}

function describeError(e: unknown): string {
  return e instanceof Error ? (e.stack ?? e.message) : String(e);
}
