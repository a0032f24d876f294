// Incremental NDJSON framing: byte chunks in, bounded lines out. The TypeScript twin of the
// Rust core's `codec.rs`, sans-IO like it (and like the MCP SDK's `ReadBuffer`): it never
// touches a stream, so it is tested on its own with split, joined and broken input.

import { isUtf8 } from 'node:buffer';

/** The default bound on one line: 16 MiB. */
export const DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024;

const LF = 0x0a;
const CR = 0x0d;
const SPACE = 0x20;
const TAB = 0x09;

/** One physical line of input, as the decoder yields it. */
export type Frame =
  /** A non-blank line without its `\n` / `\r\n` (bytes not yet checked to be UTF-8). */
  | { kind: 'line'; line: number; bytes: Buffer }
  /** A line over the limit: its bytes were discarded as they arrived. */
  | { kind: 'too_long'; line: number; length: number };

/** Where `LineDecoder.feed` hands what it reads. */
export interface LineSink {
  /**
   * A complete, non-blank line within the limit and known to be valid UTF-8, as text
   * (without its `\n` / `\r\n`), numbered as a frame would be.
   */
  text(line: number, text: string): void;
  /** Any other frame: a line whose bytes still need their UTF-8 check, or one too long. */
  frame(frame: Frame): void;
}

/** Only spaces, tabs and carriage returns (JSON whitespace other than `\n`). */
export function isBlank(bytes: Uint8Array): boolean {
  for (const b of bytes) {
    if (b !== SPACE && b !== TAB && b !== CR) return false;
  }
  return true;
}

/** `isBlank` for the characters of `text` from `start` to `end`. */
function isBlankText(text: string, start: number, end: number): boolean {
  for (let i = start; i < end; i++) {
    const c = text.charCodeAt(i);
    if (c !== SPACE && c !== TAB && c !== CR) return false;
  }
  return true;
}

/** Pieces below this size are copied into a staging buffer instead of being kept as views. */
const SMALL_PIECE = 4096;
const STAGE_BYTES = 2 * SMALL_PIECE;

/**
 * The bytes of the unfinished line. Large pieces are kept as views (no copy) and joined once
 * when the line ends, so a line arriving in many chunks costs one copy, not O(n²). Small
 * pieces are copied into a staging buffer first: a peer trickling a long line in one-byte
 * chunks must not cost one Buffer object (~100 bytes) per byte.
 */
class Pending {
  private views: Buffer[] = [];
  private stage: Buffer | undefined;
  private staged = 0;
  /** Total bytes held. */
  length = 0;

  append(piece: Buffer): void {
    if (piece.length === 0) return;
    this.length += piece.length;
    if (piece.length >= SMALL_PIECE) {
      this.flushStage();
      this.views.push(piece);
      return;
    }
    if (this.stage !== undefined && this.staged + piece.length > this.stage.length) this.flushStage();
    this.stage ??= Buffer.allocUnsafe(STAGE_BYTES);
    piece.copy(this.stage, this.staged);
    this.staged += piece.length;
  }

  /** The last byte held, or undefined if empty. */
  lastByte(): number | undefined {
    if (this.staged > 0) return this.stage?.[this.staged - 1];
    const last = this.views[this.views.length - 1];
    return last?.[last.length - 1];
  }

  /** Everything held followed by `tail`, as one Buffer (a view when nothing needs joining). */
  take(tail: Buffer): Buffer {
    this.flushStage();
    this.views.push(tail);
    const whole = this.views.length === 1 ? tail : Buffer.concat(this.views, this.length + tail.length);
    this.clear();
    return whole;
  }

  clear(): void {
    this.views = [];
    this.stage = undefined;
    this.staged = 0;
    this.length = 0;
  }

  private flushStage(): void {
    if (this.stage === undefined || this.staged === 0) return;
    // Copy out exactly the staged bytes so a nearly empty stage does not pin 8 KiB per view;
    // the stage itself is reused.
    this.views.push(Buffer.from(this.stage.subarray(0, this.staged)));
    this.staged = 0;
  }
}

/**
 * Splits a byte stream into lines: accepts `\n` and `\r\n`, skips blank lines (only spaces,
 * tabs and `\r`, unless over-long) while still counting them, and never holds more than
 * `maxLineBytes` (+1 for a pending `\r`) of an unfinished line: an over-long line is counted
 * and dropped as it arrives and reported once its end is seen, so memory stays bounded
 * whatever the peer sends.
 *
 * Frames may be views into the chunks given to `push` (no copy for a line that arrives in
 * one chunk), and the decoder keeps views of an unfinished line's large pieces: do not
 * modify a chunk after pushing it.
 */
export class LineDecoder {
  /** The configured bound (bytes, excluding the line ending). */
  readonly maxLineBytes: number;
  private readonly pending = new Pending();
  /** Lines seen so far (the number of the last line yielded or skipped). */
  private lines = 0;
  /** Inside an over-long line: bytes dropped so far (undefined when not discarding). */
  private dropped: number | undefined;
  /** Whether the last dropped byte was `\r` (it is not counted if `\n` follows). */
  private droppedCr = false;

  constructor(options: { maxLineBytes?: number } = {}) {
    this.maxLineBytes = options.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES;
  }

  /** Bytes currently held for an unfinished line (for tests and memory accounting). */
  get buffered(): number {
    return this.pending.length;
  }

  /** Adds a chunk of input; returns the lines it completed, in order. */
  push(chunk: Uint8Array): Frame[] {
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    const frames: Frame[] = [];
    let pos = 0;
    for (let nl = buf.indexOf(LF, pos); nl !== -1; nl = buf.indexOf(LF, pos)) {
      const frame = this.complete(buf, pos, nl);
      if (frame !== undefined) frames.push(frame);
      pos = nl + 1;
    }
    this.hold(buf.subarray(pos));
    return frames;
  }

  /**
   * `push` for a reader that wants text: the same lines, numbers and limits, but the whole
   * lines of a chunk are checked for UTF-8 and decoded in one go (one native call each,
   * instead of a Buffer view, a check and a decode per line) when none of them can be over the
   * limit and all are valid; otherwise, and for a line begun in an earlier chunk, lines go to
   * `sink.frame` as `push` would return them.
   */
  feed(chunk: Uint8Array, sink: LineSink): void {
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    let pos = 0;
    if (this.pending.length > 0 || this.dropped !== undefined) {
      const nl = buf.indexOf(LF);
      if (nl === -1) {
        this.hold(buf);
        return;
      }
      const frame = this.complete(buf, 0, nl);
      if (frame !== undefined) sink.frame(frame);
      pos = nl + 1;
    }
    const last = buf.lastIndexOf(LF);
    if (last >= pos) {
      // No line of a region within the limit can be over it.
      // The usual chunk is whole lines: checked as it is, without a view (the final `\n` is ASCII).
      const region = pos === 0 && last === buf.length - 1 ? buf : buf.subarray(pos, last);
      if (last - pos <= this.maxLineBytes && isUtf8(region)) {
        this.texts(buf.toString('utf8', pos, last), sink);
      } else {
        for (let nl = buf.indexOf(LF, pos); nl !== -1 && nl <= last; nl = buf.indexOf(LF, pos)) {
          const frame = this.complete(buf, pos, nl);
          if (frame !== undefined) sink.frame(frame);
          pos = nl + 1;
        }
      }
      pos = last + 1;
    }
    this.hold(buf.subarray(pos));
  }

  /** Hands out the lines of `text` (whole lines, the last without its `\n`), skipping blank ones. */
  private texts(text: string, sink: LineSink): void {
    let start = 0;
    for (;;) {
      const nl = text.indexOf('\n', start);
      const end = nl === -1 ? text.length : nl;
      this.lines++;
      const stop = end > start && text.charCodeAt(end - 1) === CR ? end - 1 : end;
      if (!isBlankText(text, start, stop)) sink.text(this.lines, start === 0 && stop === text.length ? text : text.slice(start, stop));
      if (nl === -1) return;
      start = nl + 1;
    }
  }

  /**
   * At end of input: the last line if it had no newline (or was over-long). The decoder is
   * empty afterwards and may be fed again.
   */
  end(): Frame[] {
    if (this.dropped !== undefined) {
      this.lines++;
      return [this.stopDropping(this.dropped - (this.droppedCr ? 1 : 0))];
    }
    if (this.pending.length === 0) return [];
    this.lines++;
    const frame = this.frame(this.pending.take(Buffer.alloc(0)));
    return frame === undefined ? [] : [frame];
  }

  /** The line ending at `buf[nl]` (a `\n`), whose part in `buf` starts at `from`. */
  private complete(buf: Buffer, from: number, nl: number): Frame | undefined {
    this.lines++;
    const piece = buf.subarray(from, nl);
    if (this.dropped !== undefined) {
      const cr = nl > from ? buf[nl - 1] === CR : this.droppedCr;
      return this.stopDropping(this.dropped + piece.length - (cr ? 1 : 0));
    }
    if (this.pending.length === 0) return this.frame(piece);
    // Decide on the length before joining, so an over-long line is never copied.
    const total = this.pending.length + piece.length;
    const last = piece.length > 0 ? piece[piece.length - 1] : this.pending.lastByte();
    const length = total - (last === CR ? 1 : 0);
    if (length > this.maxLineBytes) {
      this.pending.clear();
      return { kind: 'too_long', line: this.lines, length };
    }
    return this.frame(this.pending.take(piece));
  }

  /** Ends the over-long line being dropped, `length` bytes long. */
  private stopDropping(length: number): Frame {
    this.dropped = undefined;
    this.droppedCr = false;
    return { kind: 'too_long', line: this.lines, length };
  }

  /** Keeps the unterminated rest of a chunk, or starts/continues dropping it if too long. */
  private hold(rest: Buffer): void {
    if (rest.length === 0) return;
    const lastCr = rest[rest.length - 1] === CR;
    if (this.dropped !== undefined) {
      this.dropped += rest.length;
      this.droppedCr = lastCr;
      return;
    }
    const partial = this.pending.length + rest.length;
    // More than `limit` bytes + a possible `\r` cannot end up within the limit: stop keeping
    // it now and only count what follows.
    if (partial > this.maxLineBytes + 1) {
      this.pending.clear();
      this.dropped = partial;
      this.droppedCr = lastCr;
      return;
    }
    this.pending.append(rest);
  }

  /**
   * A frame for line `this.lines` from its bytes (with any `\r` still on), or undefined if
   * blank. Length is judged first: an over-long line is too long even if blank, because
   * once it is being dropped its bytes are gone and it could not be judged the same way
   * whatever the chunking (the Rust core's rule too).
   */
  private frame(bytes: Buffer): Frame | undefined {
    const content = bytes.length > 0 && bytes[bytes.length - 1] === CR ? bytes.subarray(0, -1) : bytes;
    if (content.length > this.maxLineBytes) return { kind: 'too_long', line: this.lines, length: content.length };
    return isBlank(content) ? undefined : { kind: 'line', line: this.lines, bytes: content };
  }
}
