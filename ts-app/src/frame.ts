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
 *
 * A caller done with such a frame (nothing refers to its bytes any more) may hand it back with
 * `recycle`: the next spanning frame that fits is assembled in the same memory instead of a
 * fresh buffer, whose allocation and first-touch page faults cost about as much as the copy
 * itself (a 64 KiB reply arrives from a socket in two reads, so every one spans chunks).
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
  /** Memory handed back by `recycle`, for the next spanning frame that fits in it. */
  #spare: Buffer | undefined;
  /** The memory of the last spanning frame handed out: the only one `recycle` takes back. */
  #lent: ArrayBufferLike | undefined;
  /** Whether `#body`'s memory is its own (not a slice of Node's pool), so it may be lent. */
  #bodyOwned = false;

  /** `recycle` keeps at most this much memory (a bigger frame's buffer is let go). */
  static readonly MAX_SPARE_BYTES = 4 * 1024 * 1024;
  /** Spanning frames smaller than this are not lent (a small allocation is cheap). */
  static readonly MIN_SPARE_BYTES = 4096;
  /** A read goes straight into the frame being filled while at least this much of it is missing. */
  static readonly DIRECT_READ_BYTES = 32 * 1024;
  /**
   * The size of the chunk buffers that reads not going straight into a frame fill: room for a
   * 64 KiB payload's whole frame, so that it arrives in one read and is a view, not copied.
   */
  static readonly CHUNK_BYTES = 128 * 1024;
  /** A chunk buffer with less room left than this is replaced by a fresh one. */
  static readonly MIN_CHUNK_ROOM = 16 * 1024;

  /** The chunk buffer `readBuffer` hands out room in; frames within one read are views of it. */
  #chunk: Buffer | undefined;
  /** Where in `#chunk` the next read goes: bytes before it may be lent (views of them handed out). */
  #chunkAt = 0;
  /** Views of `#chunk` handed out and not yet given back by `recycle`: none, and it starts over. */
  #chunkLent = 0;
  /** Whether the last `readBuffer` was the rest of `#body` (else room in `#chunk`). */
  #direct = false;

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
        if (this.#bodyHeld === body.length) out.push(this.#complete(body));
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
        const spare = this.#spare;
        if (spare !== undefined && spare.length >= length) {
          this.#spare = undefined;
          this.#body = spare.subarray(0, length);
          this.#bodyOwned = true;
        } else {
          // A small body comes from Node's shared pool: it is never lent (its memory is not ours).
          this.#bodyOwned = length >= FrameDecoder.MIN_SPARE_BYTES;
          this.#body = this.#bodyOwned ? Buffer.allocUnsafeSlow(length) : Buffer.allocUnsafe(length);
        }
      }
    }
    return out;
  }

  /**
   * For a reader that has the kernel fill buffers of ours (`net.Socket`'s `onread` with a
   * buffer function): where the next read should put its bytes. While a big frame is being
   * filled, that is the rest of it (at least `DIRECT_READ_BYTES`), so its body lands in its
   * final memory in one copy, the kernel's; otherwise room in a chunk buffer, whose frames are
   * handed out as views (no copy); where a read handed out no view (it held only header bytes,
   * a frame's first part, or skipped bytes, all copied out), the next read goes to the same
   * place; once every view of the chunk was given back (`recycle`), reads fill it from its
   * start again. A new chunk is taken when one has less than `MIN_CHUNK_ROOM` left. After the
   * read, call `filled` with the count of bytes it put there; `push` must not be called between
   * the two.
   */
  readBuffer(): Buffer {
    const body = this.#body;
    if (body !== undefined && body.length - this.#bodyHeld >= FrameDecoder.DIRECT_READ_BYTES) {
      this.#direct = true;
      return body.subarray(this.#bodyHeld);
    }
    this.#direct = false;
    let chunk = this.#chunk;
    // Every view handed out was given back: the whole chunk is free again (all else in it was
    // copied out or skipped).
    if (this.#chunkLent === 0) this.#chunkAt = 0;
    if (chunk === undefined || chunk.length - this.#chunkAt < FrameDecoder.MIN_CHUNK_ROOM) {
      chunk = Buffer.allocUnsafeSlow(FrameDecoder.CHUNK_BYTES);
      this.#chunk = chunk;
      this.#chunkAt = 0;
      this.#chunkLent = 0;
    }
    return chunk.subarray(this.#chunkAt);
  }

  /**
   * `n` bytes were read into the buffer `readBuffer` returned last (at its start): returns the
   * frames they completed, in order, as `push` would for the same bytes.
   */
  filled(n: number): Packet[] {
    if (this.#direct) {
      this.#direct = false;
      const body = this.#body;
      if (body === undefined || n > body.length - this.#bodyHeld) {
        throw new RangeError(`FrameDecoder.filled: ${n} bytes is more than the buffer readBuffer gave`);
      }
      this.#bodyHeld += n;
      if (this.#bodyHeld < body.length) return [];
      return [this.#complete(body)];
    }
    const chunk = this.#chunk;
    // Still where the read `readBuffer` handed out began (only it and the end of this move it).
    const at = this.#chunkAt;
    if (chunk === undefined || n > chunk.length - at) {
      throw new RangeError(`FrameDecoder.filled: ${n} bytes is more than the buffer readBuffer gave`);
    }
    const out = this.push(chunk.subarray(at, at + n));
    // A frame that came whole within the read is a view of the chunk: those bytes are lent
    // (until `recycle` gives every view back), and the next read goes after them. Otherwise
    // they were all copied out (or skipped), and the next read may overwrite them.
    let lent = 0;
    for (const p of out) if (p.kind === 'frame' && p.bytes.buffer === chunk.buffer) lent++;
    if (lent > 0) {
      this.#chunkLent += lent;
      this.#chunkAt = at + n;
    }
    return out;
  }

  /** The body just filled, handed out (and its memory offered to `recycle` if it is its own). */
  #complete(body: Buffer): Packet {
    this.#body = undefined;
    this.#bodyHeld = 0;
    this.#lent = this.#bodyOwned ? body.buffer : undefined;
    return { kind: 'frame', frame: this.#frames, bytes: body };
  }

  /**
   * Takes back the memory of `frame`, a frame this decoder yielded, once the caller is done
   * with it (no view of it is kept anywhere: the caller's promise, made at most once per
   * frame). The last frame that was copied out of several chunks is kept (one buffer of at
   * most `MAX_SPARE_BYTES`) for the next such frame; a frame that was a view of the current
   * read chunk counts as given back, and once all of them are, reads fill that chunk from its
   * start again. Any other frame (older chunks', a pushed chunk's) is ignored.
   */
  recycle(frame: Buffer): void {
    const memory = frame.buffer;
    if (this.#chunk !== undefined && memory === this.#chunk.buffer) {
      if (this.#chunkLent > 0) this.#chunkLent--;
      return;
    }
    if (memory !== this.#lent) return;
    this.#lent = undefined;
    if (memory.byteLength > FrameDecoder.MAX_SPARE_BYTES) return;
    if (this.#spare === undefined || this.#spare.length < memory.byteLength) {
      this.#spare = Buffer.from(memory, 0, memory.byteLength);
    }
  }

  /**
   * At end of input: the frame the stream ended inside of, if any, as a `cut` packet. The
   * decoder is empty afterwards and may be fed again (numbering goes on).
   */
  end(): Packet[] {
    this.#direct = false;
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
