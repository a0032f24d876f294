// One child of a pipe peer (`spawnPeer`): its process, in a process group of its own; its two
// pipes and their decoders; the tail of its stderr; its exit; and its shutdown sequence. What it
// reads goes to the peer through hooks. The requests (PeerCore) and the supervision (which child
// is current, restarts, hangs) are the peer's: pipe.ts. A supervised peer has several of these
// over its life, one at a time.

import { isUtf8 } from 'node:buffer';
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { Socket } from 'node:net';
import type { Readable } from 'node:stream';

import { DEFAULT_MAX_FRAME_BYTES, FrameDecoder, frameCutText, frameTooLongText, type Packet } from '../frame.js';
import { type Frame, LineDecoder, type LineSink } from '../framing.js';
import { hasUserBuffer, inPlaceSocket } from '../in-place.js';
import { decodeMsgpackEnvelope } from '../msgpack.js';
import { decodeEnvelope, invalidUtf8Offset, parseEnvelope } from '../protocol.js';
import { describeRequest, PeerError, PeerErrorCode } from './errors.js';
import type { Encoding, ExitStatus, Message } from './types.js';

/** How much of the child's stderr is kept for `PEER_EXITED` errors. */
export const STDERR_TAIL_BYTES = 4096;
/**
 * After the child's exit is seen, how long to wait for its stdout and stderr to be drained
 * (replies already written are still delivered) before failing what is pending: well within
 * the 100 ms the issue allows. A grandchild holding the pipes open cannot stretch it.
 */
const SETTLE_MS = 30;
/**
 * After a write to the child's stdin fails, how long its exit (or its stdout's end) has to come
 * before the child is taken to have closed its stdin and run on. Longer than `SETTLE_MS`: a child
 * that is dying, the usual cause, must be reported as such even on a busy machine.
 */
const STDIN_CLOSED_MS = 250;

/** Where the child's stderr goes: forwarded to ours, dropped, or handed to a function. Its tail is always kept. */
export type StderrOption = 'forward' | 'ignore' | ((chunk: Buffer) => void);

/** How one child of a supervised `spawnPeer` ended, as the `restart` event reports it. */
export interface ChildExit extends ExitStatus {
  /** The child's pid, or undefined if it could not be started. */
  pid: number | undefined;
  /**
   * Why the peer gave up on it: `'exit'` (it exited or was killed: `code`/`signal` say how),
   * `'stdout-closed'` (it closed its stdout but kept running; it is stopped with the shutdown
   * sequence), `'stdin-closed'` (a write to its stdin failed, EPIPE, while it kept running:
   * nothing can be sent to it any more; stopped likewise), `'hang'` (declared hung after `hangMs` of silence with requests pending; stopped
   * with the shutdown sequence), `'spawn-failed'` (it could not be started). `code` and `signal`
   * are null unless it had exited when the peer gave up on it.
   */
  reason: 'exit' | 'stdout-closed' | 'stdin-closed' | 'hang' | 'spawn-failed';
  /** What happened, as the `PEER_EXITED` errors say it: `exited with code 3`, `was killed by SIGKILL`, … */
  description: string;
  /** The last (at most 4 KiB) of what it wrote to stderr, as text. */
  stderrTail: string;
}

/** What a child needs to start and to read its output; fixed for the peer's life. */
export interface ChildConfig {
  command: string;
  args: readonly string[];
  env: NodeJS.ProcessEnv | undefined;
  cwd: string | undefined;
  stderr: StderrOption;
  encoding: Encoding;
  maxLineBytes: number;
  maxFrameBytes: number;
}

/** How a child hands what it reads and sees to its peer. */
export interface ChildHooks {
  /** Runs `route`, which reads one piece of the child's stdout into messages for `receive`. */
  read(child: PeerChild, route: () => void): void;
  /** One message the child wrote (a line that is not protocol as an `error` message). */
  receive(message: Message): void;
  /** The child is gone for requests: its exit seen and its pipes drained, or its stdout closed, or it could not start. Once. */
  gone(child: PeerChild): void;
  /** Its stdin took the rest of a write that returned false: more may be written. */
  drained(child: PeerChild): void;
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

/**
 * Under msgpack, reads the child's stdout in place: a socket takes over `child.stdout`'s handle
 * with `onread` (as `serveStdio` reads its stdin; see `inPlaceSocket`), so that the kernel copies
 * what arrives straight into the `FrameDecoder`'s memory: the rest of a big frame lands in its
 * final buffer in one read, instead of in 64 KiB chunks, each a fresh buffer, then copied into
 * one. `route` gets the packets of each read; if it throws, that is reported as an uncaught
 * exception after the read, and reading goes on. From then on `child.stdout` neither reads nor
 * closes (its place in `child.stdio` is the new socket's), so the child's own 'close' event does
 * not come.
 *
 * Node has no public way to read a spawned child's stdout into buffers of ours: this uses the
 * socket's `_handle` and `net.Socket`'s `handle` option, both undocumented though long stable
 * (Node's own `child_process` makes `child.stdout` this way). Where they are not as expected
 * (or a spawn failed: no pid), returns undefined and the stream reads it as before.
 */
export function readInPlace(child: ChildProcessWithoutNullStreams, frames: FrameDecoder, route: (packets: Packet[]) => void): Socket | undefined {
  const stdout = child.stdout;
  const handle: unknown = (stdout as { _handle?: unknown })._handle;
  if (child.pid === undefined || !(stdout instanceof Socket) || !hasUserBuffer(handle) || stdout.readableLength > 0 || stdout.destroyed) {
    return undefined;
  }
  const socket = inPlaceSocket(
    { handle, readable: true },
    { buffer: () => frames.readBuffer(), callback: (n) => route(frames.filled(n)) },
  );
  // Where `child_process` looks for its stdio (it resumes the unread ones after the exit).
  const stdio = child.stdio as unknown as unknown[];
  if (stdio[1] === stdout) stdio[1] = socket;
  return socket;
}

/** One child process speaking the protocol; see the file's header. */
export class PeerChild {
  readonly #config: ChildConfig;
  readonly #hooks: ChildHooks;
  /** Undefined if spawn threw (ENOTDIR, E2BIG, …) instead of emitting 'error'. */
  readonly #child: ChildProcessWithoutNullStreams | undefined;
  readonly #decoder: LineDecoder;
  /** Under msgpack, the decoder of the child's stdout (the line decoder is then unused). */
  readonly #frames: FrameDecoder | undefined;
  readonly #sink: LineSink = {
    text: (line, text) => this.#readText(line, text),
    frame: (frame) => this.#readFrame(frame),
  };
  #stderrTail: Buffer = Buffer.alloc(0);
  #waitingForDrain = false;
  #settleTimer: NodeJS.Timeout | undefined;
  /** Set once the child's stdio have all closed (its 'close' event). */
  #stdioClosed = false;
  /**
   * What reads the child's stdout: `child.stdout`, or under msgpack the socket that took its
   * handle over to read in place (see `readInPlace`).
   */
  #stdout: Readable | undefined;
  #gone = false;
  #stopping: Promise<ExitStatus> | undefined;
  /** Why it could not be started, if it could not. */
  spawnError: Error | undefined;
  /** How it exited, once it has. */
  status: ExitStatus | undefined;
  /** Set by the peer once it has given up on this child (its requests failed). */
  reported = false;
  /** Set when a write to its stdin failed (the error's code) and neither its exit nor its stdout's end came `STDIN_CLOSED_MS` later: it closed its stdin. */
  stdinError: string | undefined;
  #stdinTimer: NodeJS.Timeout | undefined;
  /** Set by the peer when it declared the child hung: after how long, with how many requests pending. */
  hung: { readonly ms: number; readonly pending: number } | undefined;
  /** Resolves once the child has exited (or could not start). */
  readonly exited: Promise<void>;
  #markExited: () => void = () => {};
  /** Resolves once the child is gone for requests (see `ChildHooks.gone`). */
  readonly finished: Promise<void>;
  #markFinished: () => void = () => {};

  /**
   * Starts the child. Never throws: a spawn that throws is kept in `spawnError` (the peer
   * reports it; Node's own argument checks have codes starting `ERR_`) and `gone` is not called
   * for it from here.
   */
  constructor(config: ChildConfig, hooks: ChildHooks) {
    this.#config = config;
    this.#hooks = hooks;
    this.#decoder = new LineDecoder({ maxLineBytes: config.maxLineBytes });
    this.#frames = config.encoding === 'msgpack' ? new FrameDecoder({ maxFrameBytes: config.maxFrameBytes }) : undefined;
    this.exited = new Promise((resolve) => {
      this.#markExited = resolve;
    });
    this.finished = new Promise((resolve) => {
      this.#markFinished = resolve;
    });

    // Its own process group (detached), so that the shutdown can signal everything it started.
    let child: ChildProcessWithoutNullStreams;
    try {
      child = spawn(config.command, [...config.args], {
        cwd: config.cwd,
        env: config.env,
        stdio: ['pipe', 'pipe', 'pipe'],
        detached: true,
      });
    } catch (e) {
      this.#child = undefined;
      this.spawnError = e instanceof Error ? e : new Error(String(e));
      this.#gone = true;
      this.#markExited();
      this.#markFinished();
      return;
    }
    this.#child = child;
    child.on('error', (e) => this.#onError(e));
    child.on('exit', (code, signal) => this.#onExit(code, signal));
    // Out of descriptors (EMFILE, ENFILE), Node gives the child no stdio at all: its 'error'
    // follows, as for ENOENT.
    if ((child.stdin as unknown) == null || (child.stdout as unknown) == null || (child.stderr as unknown) == null) return;
    // A child that exits early makes our writes fail with EPIPE: its exit says more. One that
    // closed its stdin and runs on is gone for requests all the same.
    child.stdin.on('error', (e) => this.#onStdinError(e));
    const frames = this.#frames;
    const inPlace = frames === undefined ? undefined : readInPlace(child, frames, (packets) => hooks.read(this, () => this.#readFrames(packets)));
    const stdout: Readable = inPlace ?? child.stdout;
    this.#stdout = stdout;
    if (inPlace === undefined) {
      child.on('close', () => this.#onStdioClosed());
    } else {
      // The child's own 'close' waits for `child.stdout`, which no longer reads (nor closes):
      // the same event is made of its exit and the closes of what reads its stdout and stderr.
      let closes = 3;
      const closed = (): void => {
        if (--closes === 0) this.#onStdioClosed();
      };
      child.once('exit', closed);
      inPlace.once('close', closed);
      child.stderr.once('close', closed);
    }
    if (frames === undefined) {
      stdout.on('data', (chunk: Buffer) => hooks.read(this, () => this.#decoder.feed(chunk, this.#sink)));
    } else if (inPlace === undefined) {
      stdout.on('data', (chunk: Buffer) => hooks.read(this, () => this.#readFrames(frames.push(chunk))));
    }
    stdout.on('end', () => {
      if (frames === undefined) {
        hooks.read(this, () => {
          for (const frame of this.#decoder.end()) this.#readFrame(frame);
        });
      } else {
        hooks.read(this, () => this.#readFrames(frames.end()));
      }
      this.#armSettle();
    });
    stdout.on('error', () => this.#armSettle());
    const stderr = config.stderr;
    child.stderr.on('data', (chunk: Buffer) => {
      this.#keepStderr(chunk);
      if (stderr === 'forward') process.stderr.write(chunk);
      else if (typeof stderr === 'function') stderr(chunk);
    });
    child.stderr.on('error', () => {});
  }

  /** The child's process id (also its process group's), or undefined if it could not be started. */
  get pid(): number | undefined {
    return this.#child?.pid;
  }

  /** True once the child is gone for requests. */
  get isGone(): boolean {
    return this.#gone;
  }

  /** True while the child may still be running: started, and its exit not seen. */
  get running(): boolean {
    return this.#child?.pid !== undefined && this.status === undefined;
  }

  /** The last (at most 4 KiB) of what the child wrote to stderr so far, as text. */
  stderrTail(): string {
    // A character cut by the 4 KiB window is skipped, not shown as U+FFFD (as the Rust host does).
    const tail = this.#stderrTail;
    let start = 0;
    if (tail.length === STDERR_TAIL_BYTES) while (start < 3 && ((tail[start] ?? 0) & 0xc0) === 0x80) start++;
    return tail.toString('utf8', start);
  }

  /**
   * True if a write may go to its stdin now: not waiting for 'drain', not ended, and the child
   * neither gone nor seen to exit (what is not written then waits for the next child, if any).
   */
  get writable(): boolean {
    const stdin = this.#child?.stdin;
    return (
      !this.#waitingForDrain && !this.#gone && this.status === undefined && stdin != null && !stdin.writableEnded && !stdin.destroyed
    );
  }

  /** True while a write waits for its stdin's 'drain' (the pipe is full: the child has not read what was written). */
  get full(): boolean {
    return this.#waitingForDrain;
  }

  /** Writes `batch` (lines) to its stdin; false if the stream is full (`hooks.drained` follows its 'drain'). */
  write(batch: string): boolean {
    const stdin = this.#child?.stdin;
    if (stdin == null) return false;
    return stdin.write(batch, 'utf8') || this.#awaitDrain(stdin);
  }

  /**
   * Writes MessagePack `frames` to its stdin as they are, in one corked (vectored) write;
   * `written(frame)` may give a frame a write callback (the frame pool's). False as `write`.
   */
  writeFrames(
    frames: readonly Buffer[],
    written: (frame: Buffer) => ((error: Error | null | undefined) => void) | undefined,
  ): boolean {
    const stdin = this.#child?.stdin;
    if (stdin == null) return false;
    if (frames.length > 1) stdin.cork();
    let flowing = true;
    for (const frame of frames) {
      const callback = written(frame);
      flowing = callback === undefined ? stdin.write(frame) : stdin.write(frame, callback);
    }
    if (frames.length > 1) stdin.uncork();
    return flowing || this.#awaitDrain(stdin);
  }

  /** Marks its stdin full until 'drain', then tells `hooks.drained`; false. */
  #awaitDrain(stdin: NodeJS.WritableStream): false {
    this.#waitingForDrain = true;
    stdin.once('drain', () => {
      this.#waitingForDrain = false;
      this.#hooks.drained(this);
    });
    return false;
  }

  /**
   * The shutdown sequence: close its stdin, wait `graceMs`, SIGTERM its process group, wait
   * `graceMs`, SIGKILL; resolves once it has exited and its pipes are done with. Idempotent
   * (later calls get the first call's promise).
   */
  shutdown(graceMs: number): Promise<ExitStatus> {
    this.#stopping ??= this.#stop(graceMs);
    return this.#stopping;
  }

  async #stop(graceMs: number): Promise<ExitStatus> {
    const child = this.#child;
    const pid = child?.pid;
    if (child !== undefined && pid !== undefined && this.status === undefined) {
      child.stdin.end();
      if (!(await within(this.exited, graceMs))) {
        this.#signal(pid, 'SIGTERM');
        if (!(await within(this.exited, graceMs))) {
          this.#signal(pid, 'SIGKILL');
          await this.exited;
        }
      }
    }
    await (pid === undefined ? Promise.resolve() : this.finished);
    this.#markGone();
    this.#stopLeftovers();
    return this.status ?? { code: null, signal: null };
  }

  /** How it ended, for the `restart` event. */
  end(): ChildExit {
    const reason =
      this.spawnError !== undefined
        ? 'spawn-failed'
        : this.hung !== undefined
          ? 'hang'
          : this.status !== undefined
            ? 'exit'
            : this.stdinError !== undefined
              ? 'stdin-closed'
              : 'stdout-closed';
    return {
      pid: this.pid,
      code: this.status?.code ?? null,
      signal: this.status?.signal ?? null,
      reason,
      description: this.#how(),
      stderrTail: this.stderrTail(),
    };
  }

  /** What happened to it, in words: `exited with code 3`, `was declared hung …`, `could not be started (…)`. */
  #how(): string {
    if (this.spawnError !== undefined) return `could not be started (${this.spawnError.message})`;
    const hung = this.hung;
    if (hung !== undefined) {
      const requests = hung.pending === 1 ? '1 request was' : `${hung.pending} requests were`;
      return `was declared hung after ${hung.ms} ms: nothing at all arrived on its stdout for ${hung.ms} ms while ${requests} pending (hangMs); it is stopped with the shutdown sequence`;
    }
    const status = this.status;
    if (status === undefined) {
      return this.stdinError !== undefined ? `closed its stdin (a write to it failed: ${this.stdinError})` : 'closed its stdout';
    }
    return status.signal !== null ? `was killed by ${status.signal}` : `exited with code ${String(status.code)}`;
  }

  /** The `PEER_EXITED` error of a request (or, without `id`, a notification) this child cannot answer. */
  exitedError(msgType: string, id: number | undefined): PeerError {
    const what = id === undefined ? `\`${msgType}\`` : describeRequest(msgType, id);
    const command = this.#config.command;
    const stderrTail = this.stderrTail();
    const tail = stderrTail.length > 0 ? `; its stderr ended with:\n${stderrTail}` : '; it wrote nothing to stderr';
    if (this.spawnError !== undefined) {
      const e = this.spawnError as NodeJS.ErrnoException;
      const hint =
        e.code === 'ENOENT'
          ? 'check the path (or PATH) and that it is built'
          : e.code === 'EACCES'
            ? 'check that it is executable'
            : e.code === 'EMFILE' || e.code === 'ENFILE'
              ? 'the process has too many open files: close some, or raise its limit (`ulimit -n`)'
              : 'check the command and its options';
      return new PeerError(
        PeerErrorCode.PEER_EXITED,
        `cannot send ${what}: \`${command}\` could not be started (${e.message}); ${hint}`,
        { msgType, ...(id === undefined ? {} : { id }), exitCode: null, signal: null, stderrTail, cause: e },
      );
    }
    return new PeerError(
      PeerErrorCode.PEER_EXITED,
      `${what} cannot be answered: the peer \`${command}\` (pid ${String(this.pid)}) ${this.#how()}${tail}`,
      {
        msgType,
        ...(id === undefined ? {} : { id }),
        exitCode: this.status?.code ?? null,
        signal: this.status?.signal ?? null,
        stderrTail,
      },
    );
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
    this.spawnError = e;
    this.#markExited();
    this.#markGone();
  }

  /**
   * A write to its stdin failed. Usually the child is exiting, and its exit, seen within
   * `STDIN_CLOSED_MS`, says more. If it has not exited by then, it closed its stdin and runs on:
   * nothing can reach it any more, so it is gone for requests (else they would wait in vain).
   */
  #onStdinError(e: Error): void {
    if (this.#gone || this.status !== undefined || this.#stdinTimer !== undefined) return;
    const code = (e as NodeJS.ErrnoException).code ?? e.message;
    this.#stdinTimer = setTimeout(() => {
      this.#stdinTimer = undefined;
      if (this.#gone || this.status !== undefined) return;
      this.stdinError = code;
      this.#markGone();
    }, STDIN_CLOSED_MS);
  }

  #onExit(code: number | null, signal: NodeJS.Signals | null): void {
    this.status = { code, signal };
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
    if (child === undefined || pid === undefined || this.status === undefined || this.#stdioClosed) return;
    this.#signal(pid, 'SIGKILL');
    child.stdin.destroy();
    this.#stdout?.destroy();
    child.stderr.destroy();
  }

  /** Waits briefly for the pipes to drain, then reports the child gone. */
  #armSettle(): void {
    if (this.#gone || this.#settleTimer !== undefined) return;
    this.#settleTimer = setTimeout(() => this.#markGone(), SETTLE_MS);
  }

  #markGone(): void {
    if (this.#settleTimer !== undefined) clearTimeout(this.#settleTimer);
    this.#settleTimer = undefined;
    clearTimeout(this.#stdinTimer);
    this.#stdinTimer = undefined;
    if (this.#gone) return;
    this.#gone = true;
    this.#markFinished();
    this.#hooks.gone(this);
  }

  #onStdioClosed(): void {
    this.#stdioClosed = true;
    this.#markGone();
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

  /** Routes a line the child wrote: a valid message to the peer, anything else as an `error` message. */
  #readText(line: number, text: string): void {
    const message = parseEnvelope(text);
    if (message !== undefined) {
      this.#hooks.receive(message as Message);
      return;
    }
    const decoded = decodeEnvelope(text);
    if (decoded.ok) {
      this.#hooks.receive(decoded.message as Message);
    } else {
      // With a valid id that is pending, this answers that request (an error reply, as the
      // Rust responder gives one); otherwise it is unsolicited.
      const data = `line ${line}: ${decoded.error}`;
      this.#hooks.receive(decoded.id === undefined ? { msg_type: 'error', data } : { msg_type: 'error', data, id: decoded.id });
    }
  }

  /** `#readText` for a frame: its length and UTF-8 checked first. */
  #readFrame(frame: Frame): void {
    if (frame.kind === 'too_long') {
      const limit = this.#decoder.maxLineBytes;
      this.#hooks.receive({
        msg_type: 'error',
        data: `line ${frame.line}: line of ${frame.length} bytes exceeds the ${limit}-byte limit`,
      });
    } else if (!isUtf8(frame.bytes)) {
      const at = invalidUtf8Offset(frame.bytes);
      this.#hooks.receive({ msg_type: 'error', data: `line ${frame.line}: invalid UTF-8 at byte ${at}` });
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
        this.#hooks.receive({ msg_type: 'error', data: `frame ${p.frame}: ${text}` });
        continue;
      }
      const decoded = decodeMsgpackEnvelope(p.bytes);
      // Only a non-object `data` (a string, say) is sure to hold no view of the frame's bytes:
      // then its memory can serve the next big frame (see `FrameDecoder.recycle`).
      const data: unknown = decoded.ok ? decoded.message.data : undefined;
      if (data === null || typeof data !== 'object') this.#frames?.recycle(p.bytes);
      if (decoded.ok) {
        this.#hooks.receive(decoded.message as Message);
      } else {
        const data = `frame ${p.frame}: ${decoded.error}`;
        this.#hooks.receive(
          decoded.id === undefined ? { msg_type: 'error', data } : { msg_type: 'error', data, id: decoded.id },
        );
      }
    }
  }
}
