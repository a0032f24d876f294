// Incremental length-prefixed framing for the `msgpack` encoding: byte chunks in, bounded
// frames out. The TypeScript twin of the Rust core's `frame.rs` and the analogue of
// framing.ts's `LineDecoder`: sans-IO, so it is tested on its own with split, joined and
// broken input.

/** The default bound on one frame's body: 16 MiB (the same as a line's). */
export const DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024;

/** The length header in front of every frame: a little-endian uint32. */
export const FRAME_HEADER_BYTES = 4;

/** One frame of input, as the `FrameDecoder` yields it; every frame counts, from 1. */
export type Packet =
  /** A whole frame within the limit, without its length header (possibly empty). */
  | { kind: 'frame'; frame: number; bytes: Buffer }
  /** A frame over the limit: its body was skipped as it arrived, never held. */
  | { kind: 'too_long'; frame: number; length: number }
  /**
   * The stream ended inside a frame (only from `end()`): `received` bytes of its header (when
   * `length` is undefined), else of its body.
   */
  | { kind: 'cut'; frame: number; received: number; length: number | undefined };

const asBuffer = (chunk: Uint8Array): Buffer =>
  Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);

/**
 * Splits a byte stream into frames (a 4-byte little-endian length N, then N bytes), never
 * holding more than the header plus `maxFrameBytes` of an unfinished frame: a frame whose
 * header announces more is skipped as its bytes arrive and reported (with its length) once its
 * last byte has gone by, so memory stays bounded whatever the peer sends.
 *
 * A frame that arrives within one chunk is handed out as a view of it (no copy); one that
 * spans chunks is copied once into a buffer of its announced size. Do not modify a chunk
 * after pushing it.
 */
export class FrameDecoder {
  /** The configured bound on a frame's body. */
  readonly maxFrameBytes: number;
  /** Frames seen so far (the number of the last one yielded, or being held or skipped). */
  #frames = 0;
  /** The header bytes of the next frame that have arrived (fewer than 4). */
  readonly #header = Buffer.alloc(FRAME_HEADER_BYTES);
  #headerHeld = 0;
  /** The body being filled, once its header has arrived (its length is the announced one). */
  #body: Buffer | undefined;
  #bodyHeld = 0;
  /** Inside an over-long frame: its length and the body bytes still to skip. */
  #skip: { length: number; left: number } | undefined;

  constructor(options: { maxFrameBytes?: number } = {}) {
    this.maxFrameBytes = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
  }

  /** Bytes currently held for an unfinished frame, header included (for tests and accounting). */
  get buffered(): number {
    return this.#headerHeld + (this.#body === undefined ? 0 : FRAME_HEADER_BYTES + this.#bodyHeld);
  }

  /** Adds a chunk of input; returns the frames it completed, in order. */
  push(chunk: Uint8Array): Packet[] {
    const buf = asBuffer(chunk);
    const out: Packet[] = [];
    let pos = 0;
    while (pos < buf.length) {
      const skip = this.#skip;
      if (skip !== undefined) {
        const n = Math.min(skip.left, buf.length - pos);
        skip.left -= n;
        pos += n;
        if (skip.left === 0) {
          this.#skip = undefined;
          out.push({ kind: 'too_long', frame: this.#frames, length: skip.length });
        }
        continue;
      }
      const body = this.#body;
      if (body !== undefined) {
        const n = Math.min(body.length - this.#bodyHeld, buf.length - pos);
        buf.copy(body, this.#bodyHeld, pos, pos + n);
        this.#bodyHeld += n;
        pos += n;
        if (this.#bodyHeld === body.length) {
          this.#body = undefined;
          this.#bodyHeld = 0;
          out.push({ kind: 'frame', frame: this.#frames, bytes: body });
        }
        continue;
      }
      let length: number;
      if (this.#headerHeld === 0 && buf.length - pos >= FRAME_HEADER_BYTES) {
        length = buf.readUInt32LE(pos);
        pos += FRAME_HEADER_BYTES;
      } else {
        const n = Math.min(FRAME_HEADER_BYTES - this.#headerHeld, buf.length - pos);
        buf.copy(this.#header, this.#headerHeld, pos, pos + n);
        this.#headerHeld += n;
        pos += n;
        if (this.#headerHeld < FRAME_HEADER_BYTES) break;
        this.#headerHeld = 0;
        length = this.#header.readUInt32LE(0);
      }
      this.#frames++;
      if (length > this.maxFrameBytes) {
        this.#skip = { length, left: length };
      } else if (buf.length - pos >= length) {
        out.push({ kind: 'frame', frame: this.#frames, bytes: buf.subarray(pos, pos + length) });
        pos += length;
      } else {
        this.#body = Buffer.allocUnsafe(length);
      }
    }
    return out;
  }

  /**
   * At end of input: the frame the stream ended inside of, if any, as a `cut` packet. The
   * decoder is empty afterwards and may be fed again (numbering goes on).
   */
  end(): Packet[] {
    const frame = this.#frames;
    if (this.#skip !== undefined) {
      const { length, left } = this.#skip;
      this.#skip = undefined;
      return [{ kind: 'cut', frame, received: length - left, length }];
    }
    if (this.#body !== undefined) {
      const cut: Packet = { kind: 'cut', frame, received: this.#bodyHeld, length: this.#body.length };
      this.#body = undefined;
      this.#bodyHeld = 0;
      return [cut];
    }
    if (this.#headerHeld > 0) {
      const received = this.#headerHeld;
      this.#headerHeld = 0;
      this.#frames++;
      return [{ kind: 'cut', frame: this.#frames, received, length: undefined }];
    }
    return [];
  }
}

/** The text of the error for an over-long frame. */
export function frameTooLongText(length: number, limit: number): string {
  return `frame of ${length} bytes exceeds the ${limit}-byte limit`;
}

/** The text of the error for a stream that ended inside a frame. */
export function frameCutText(received: number, length: number | undefined): string {
  return length === undefined
    ? `the stream ended inside the frame's 4-byte length header, after ${received} bytes`
    : `the stream ended inside the frame, after ${received} of its ${length} bytes`;
}
