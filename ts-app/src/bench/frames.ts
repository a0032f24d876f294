// The raw floor of the MessagePack paths: Node writes length-prefixed frames holding bytes to a
// child that echoes them (`cat`) and reads them back, with no MessagePack work on either side.
// Each frame is exactly what the library writes for `request('bytes', payload)`: a 4-byte
// little-endian length, then the map `{msg_type: "bytes", data: <bin>, id: <uint32>}` (the id
// always as a 5-byte uint32, at most 4 bytes more than the library's shortest form). The
// payload is written from the caller's Buffer without a copy (prefix, payload and suffix go
// out in one corked writev); the reply is framed by its length header and compared byte for
// byte with the frame sent for its id.

import { performance } from 'node:perf_hooks';

import type { RunOut } from './measure.js';
import { BenchChild } from './pipe.js';

/** `header + {msg_type: "bytes", data: bin(len)` — the part of a frame before the payload. */
export function framePrefix(len: number): Buffer {
  const binHeader =
    len < 0x100
      ? Buffer.from([0xc4, len])
      : len < 0x10000
        ? Buffer.from([0xc5, len >> 8, len & 0xff])
        : Buffer.from([0xc6, (len >>> 24) & 0xff, (len >> 16) & 0xff, (len >> 8) & 0xff, len & 0xff]);
  const map = Buffer.concat([Buffer.from('\x83\xa8msg_type\xa5bytes\xa4data', 'latin1'), binHeader]);
  const header = Buffer.alloc(4);
  header.writeUInt32LE(map.length + len + ID_SUFFIX_BYTES, 0);
  return Buffer.concat([header, map]);
}

const ID_SUFFIX_BYTES = 8;
/** `, id: <uint32 id>}` — the part after the payload. */
export function frameSuffix(id: number): Buffer {
  const b = Buffer.from([0xa2, 0x69, 0x64, 0xce, 0, 0, 0, 0]);
  b.writeUInt32BE(id >>> 0, 4);
  return b;
}

/** A raw frame echo child (`cat`), reused for every payload and window of one path. */
export class FrameEcho extends BenchChild {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private onFrame: ((frame: Buffer, now: number) => void) | null = null;

  constructor(shown: string, command: string, args: string[]) {
    super(shown, command, args, 'frames');
  }

  /** Splits the stream into frames (header included) by their length headers. */
  protected data(chunk: Buffer): void {
    const now = performance.now();
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    for (;;) {
      if (this.buffered < 4) return;
      let head = this.chunks[0] as Buffer;
      if (head.length < 4) {
        head = Buffer.concat(this.chunks);
        this.chunks = [head];
      }
      const total = 4 + head.readUInt32LE(0);
      if (this.buffered < total) return;
      let frame: Buffer;
      if (head.length >= total) {
        frame = head.subarray(0, total);
        if (head.length === total) this.chunks.shift();
        else this.chunks[0] = head.subarray(total);
      } else {
        const all = Buffer.concat(this.chunks, this.buffered);
        frame = all.subarray(0, total);
        this.chunks = all.length > total ? [all.subarray(total)] : [];
      }
      this.buffered -= total;
      if (this.onFrame !== null) this.onFrame(frame, now);
      else this.fail(new Error(`\`${this.shown}\` wrote when no frame was expected`));
    }
  }

  /** Sends `count` frames carrying `payload`, `window` in flight; every echo is checked in full. */
  run(payload: Buffer, window: number, count: number): Promise<RunOut> {
    const prefix = framePrefix(payload.length);
    const base = this.nextId;
    this.nextId += count;
    const sent = new Float64Array(count);
    const latencies = new Float64Array(count);
    let next = 0;
    let received = 0;
    const t0 = performance.now();
    return new Promise<RunOut>((resolve, reject) => {
      if (this.failure !== null) return reject(this.failure);
      this.onFailure = reject;
      const stdin = this.child.stdin;
      const send = (k: number): void => {
        const now = performance.now();
        stdin.cork();
        for (let j = 0; j < k; j++) {
          sent[next] = now;
          stdin.write(prefix);
          stdin.write(payload);
          stdin.write(frameSuffix(base + next));
          next++;
        }
        stdin.uncork();
      };
      this.onFrame = (frame, now) => {
        // An echo comes back in order: frame `received` must be exactly the one sent for that id.
        const i = received;
        const p = prefix.length;
        const ok =
          frame.length === p + payload.length + ID_SUFFIX_BYTES &&
          frame.compare(prefix, 0, p, 0, p) === 0 &&
          frame.compare(payload, 0, payload.length, p, p + payload.length) === 0 &&
          frame.compare(frameSuffix(base + i), 0, ID_SUFFIX_BYTES, p + payload.length) === 0;
        if (!ok) {
          this.fail(new Error(`\`${this.shown}\` echoed frame ${i} (id ${base + i}) wrong (${frame.length} bytes)`));
          return;
        }
        latencies[i] = (now - (sent[i] ?? now)) * 1e6;
        received++;
        if (received === count) {
          this.onFrame = null;
          this.onFailure = null;
          resolve({ latencies, elapsedNs: (now - t0) * 1e6 });
          return;
        }
        if (next < count) send(1);
      };
      send(Math.min(window, count));
    });
  }
}

/** `size` bytes of the payload alphabet, as a Buffer (the `bytes` paths' payload). */
export function bytesPayload(size: number): Buffer {
  const alphabet = Buffer.from('abcdefghijklmnopqrstuvwxyz0123456789');
  const b = Buffer.alloc(size);
  for (let k = 0; k < size; k += alphabet.length) alphabet.copy(b, k, 0, Math.min(alphabet.length, size - k));
  return b;
}
