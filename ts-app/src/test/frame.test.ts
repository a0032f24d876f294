// The frame decoder on its own: split, joined and broken input, bounded memory, numbering.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { FrameDecoder, type Packet } from '../frame.js';
import { framed } from './vectors-msgpack.js';

function show(p: Packet): string {
  switch (p.kind) {
    case 'frame':
      return `${p.frame}:${p.bytes.toString('latin1')}`;
    case 'too_long':
      return `${p.frame}:too long (${p.length})`;
    case 'cut':
      return p.length === undefined ? `${p.frame}:cut in header (${p.received})` : `${p.frame}:cut (${p.received} of ${p.length})`;
  }
}

/** Feeds `chunks`, then ends; every packet as a readable string. Checks the memory bound. */
function decode(max: number, chunks: Buffer[]): string[] {
  const d = new FrameDecoder({ maxFrameBytes: max });
  const out: string[] = [];
  for (const chunk of chunks) {
    out.push(...d.push(chunk).map(show));
    assert.ok(d.buffered <= max + 4, `buffer grew past the bound: ${d.buffered}`);
  }
  out.push(...d.end().map(show));
  return out;
}

const f = (s: string | Buffer): Buffer => framed(typeof s === 'string' ? Buffer.from(s, 'latin1') : s);

describe('FrameDecoder', () => {
  test('splits frames and numbers them, empty ones included', () => {
    assert.deepEqual(decode(100, [Buffer.concat([f('a'), f(''), f('ccc')])]), ['1:a', '2:', '3:ccc']);
  });

  test('splits frames across chunks at every byte', () => {
    const input = Buffer.concat([f('hello'), f(''), f('x'.repeat(300)), f('last')]);
    const want = ['1:hello', '2:', `3:${'x'.repeat(300)}`, '4:last'];
    for (let cut = 0; cut <= input.length; cut++) {
      assert.deepEqual(decode(1000, [input.subarray(0, cut), input.subarray(cut)]), want, `cut at ${cut}`);
    }
    assert.deepEqual(decode(1000, Array.from(input, (b) => Buffer.from([b]))), want);
  });

  test('reports an over-long frame with its length and goes on', () => {
    const input = Buffer.concat([f('12345'), f('ok'), f('1234')]);
    assert.deepEqual(decode(4, [input]), ['1:too long (5)', '2:ok', '3:1234']);
    assert.deepEqual(decode(4, Array.from(input, (b) => Buffer.from([b]))), ['1:too long (5)', '2:ok', '3:1234']);
  });

  test('an over-long frame is skipped as it arrives, never held', () => {
    const d = new FrameDecoder({ maxFrameBytes: 8 });
    const length = 10 + 1024 * 1000 + 2;
    const header = Buffer.alloc(4);
    header.writeUInt32LE(length);
    assert.deepEqual(d.push(Buffer.concat([f('ok'), header, Buffer.from('0123456789')])).map(show), ['1:ok']);
    assert.equal(d.buffered, 0);
    for (let i = 0; i < 1000; i++) {
      assert.deepEqual(d.push(Buffer.alloc(1024, 0x78)), []);
      assert.equal(d.buffered, 0);
    }
    assert.deepEqual(d.push(Buffer.concat([Buffer.from('yz'), f('next')])).map(show), [`2:too long (${length})`, '3:next']);
  });

  test('a stream ending inside a frame is reported as cut', () => {
    assert.deepEqual(decode(100, [Buffer.concat([f('a'), Buffer.from([3, 0])])]), ['1:a', '2:cut in header (2)']);
    assert.deepEqual(decode(100, [Buffer.concat([f('a'), f('abc').subarray(0, 5)])]), ['1:a', '2:cut (1 of 3)']);
    assert.deepEqual(decode(100, [Buffer.from([3, 0, 0, 0])]), ['1:cut (0 of 3)']);
    assert.deepEqual(decode(2, [f('abcdef').subarray(0, 7)]), ['1:cut (3 of 6)']);
    assert.deepEqual(decode(2, [f('abcdef').subarray(0, 4)]), ['1:cut (0 of 6)']);
  });

  test('empty input yields nothing', () => {
    assert.deepEqual(decode(100, []), []);
    assert.deepEqual(decode(100, [Buffer.alloc(0)]), []);
  });

  test('a zero limit answers only empty frames', () => {
    assert.deepEqual(decode(0, [Buffer.concat([f(''), f('a')])]), ['1:', '2:too long (1)']);
  });

  test('the largest header is a length, not an overflow', () => {
    assert.deepEqual(decode(8, [Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2])]), ['1:cut (2 of 4294967295)']);
  });

  test('a frame arriving in one chunk is a view of it; one spanning chunks is copied once', () => {
    const chunk = Buffer.alloc(9); // not from the pool, so its ArrayBuffer is its own
    f('whole').copy(chunk);
    const d = new FrameDecoder();
    const [p] = d.push(chunk);
    assert.ok(p?.kind === 'frame' && p.bytes.buffer === chunk.buffer);
    const [q] = [...d.push(chunk.subarray(0, 6)), ...d.push(chunk.subarray(6))];
    assert.ok(q?.kind === 'frame' && q.bytes.toString() === 'whole' && q.bytes.buffer !== chunk.buffer);
  });
  /** `body` framed and pushed in two chunks split after `at` bytes; the one frame it yields. */
  const spanning = (d: FrameDecoder, body: Buffer, at: number): Buffer => {
    const whole = f(body);
    const packets = [...d.push(Buffer.from(whole.subarray(0, at))), ...d.push(Buffer.from(whole.subarray(at)))];
    assert.equal(packets.length, 1);
    const [p] = packets;
    assert.ok(p?.kind === 'frame');
    return p.bytes;
  };

  test('a recycled spanning frame lends its memory to the next one that fits, which comes out intact', () => {
    const d = new FrameDecoder();
    const big = Buffer.alloc(8192, 'a');
    const first = spanning(d, big, 100);
    assert.ok(first.equals(big));
    d.recycle(first);
    const smaller = Buffer.alloc(5000, 'b');
    const second = spanning(d, smaller, 3000);
    assert.equal(second.buffer, first.buffer);
    assert.ok(second.equals(smaller));
    // Not recycled: the next frame gets fresh memory, so `second` stays as it was.
    const third = spanning(d, Buffer.alloc(6000, 'c'), 10);
    assert.notEqual(third.buffer, second.buffer);
    assert.ok(second.equals(smaller));
    assert.ok(third.equals(Buffer.alloc(6000, 'c')));
  });

  test('recycle ignores views of chunks, small pooled frames, stale frames and frames too big to keep', () => {
    const d = new FrameDecoder();
    /** `frame` (holding `fill`) is still intact after the next spanning frame of `size` bytes. */
    const keeps = (frame: Buffer, fill: string, size: number): void => {
      const next = spanning(d, Buffer.alloc(size, 'n'), 7);
      assert.ok(next.equals(Buffer.alloc(size, 'n')));
      assert.ok(frame.equals(Buffer.alloc(frame.length, fill)), 'a frame not lent was overwritten');
    };
    // A view of a pushed chunk: its memory is the caller's.
    const chunk = Buffer.from(f(Buffer.alloc(5000, 'v')));
    const [view] = d.push(chunk);
    assert.ok(view?.kind === 'frame' && view.bytes.buffer === chunk.buffer);
    d.recycle(view.bytes);
    keeps(view.bytes, 'v', 5000);
    // A small spanning frame comes from Node's shared pool: never lent.
    const small = spanning(d, Buffer.alloc(100, 's'), 50);
    d.recycle(small);
    keeps(small, 's', 90);
    // Only the last spanning frame handed out is taken back.
    const older = spanning(d, Buffer.alloc(5000, 'o'), 7);
    const newer = spanning(d, Buffer.alloc(5000, 'w'), 7);
    d.recycle(older);
    d.recycle(newer);
    d.recycle(newer); // twice is once
    const reused = spanning(d, Buffer.alloc(5000, 'y'), 7);
    assert.equal(reused.buffer, newer.buffer);
    assert.ok(older.equals(Buffer.alloc(5000, 'o')));
    keeps(reused, 'y', 5000);
    // Over MAX_SPARE_BYTES: let go.
    const huge = spanning(d, Buffer.alloc(FrameDecoder.MAX_SPARE_BYTES + 1, 'h'), 7);
    d.recycle(huge);
    keeps(huge, 'h', 5000);
  });
});

/**
 * Reads `input` as a kernel would into the buffers `readBuffer` gives, each read taking at most
 * the next of `sizes` (cycled) and what the buffer holds; then ends. Every packet as `show`
 * makes it, and the frames themselves. Checks the memory bound after every read: nothing held
 * past the limit, and no read target bigger than a chunk or the frame being filled.
 */
function readThrough(max: number, input: Buffer, sizes: number[]): { shown: string[]; frames: Buffer[] } {
  const d = new FrameDecoder({ maxFrameBytes: max });
  const shown: string[] = [];
  const frames: Buffer[] = [];
  const take = (packets: Packet[]): void => {
    for (const p of packets) {
      shown.push(show(p));
      if (p.kind === 'frame') frames.push(p.bytes);
    }
  };
  let pos = 0;
  for (let i = 0; pos < input.length; i++) {
    const target = d.readBuffer();
    assert.ok(target.length > 0);
    assert.ok(target.length <= Math.max(FrameDecoder.CHUNK_BYTES, max), `a read target of ${target.length} bytes`);
    const n = Math.min(target.length, sizes[i % sizes.length] as number, input.length - pos);
    input.copy(target, 0, pos, pos + n);
    pos += n;
    take(d.filled(n));
    assert.ok(d.buffered <= max + 4, `buffer grew past the bound: ${d.buffered}`);
  }
  take(d.end());
  return { shown, frames };
}

describe('FrameDecoder.readBuffer/filled (reads straight into its buffers)', () => {
  const input = Buffer.concat([f('hello'), f(''), f('x'.repeat(300)), f('last')]);
  const want = ['1:hello', '2:', `3:${'x'.repeat(300)}`, '4:last'];

  test('gives the packets push gives, for a read split at every byte of every header and body', () => {
    for (let cut = 1; cut < input.length; cut++) {
      assert.deepEqual(readThrough(1000, input, [cut, input.length]).shown, want, `cut at ${cut}`);
    }
    assert.deepEqual(readThrough(1000, input, [1]).shown, want);
    assert.deepEqual(readThrough(1000, input, [input.length]).shown, want);
  });

  test('a big frame spanning many reads lands in place, whole, whatever the read sizes', () => {
    const body = Buffer.alloc(300 * 1024);
    for (let i = 0; i < body.length; i++) body[i] = (i * 7 + (i >> 8)) & 0xff;
    const stream = Buffer.concat([f('a'), f(body), f('b'), f(body), f('')]);
    for (const sizes of [[1], [3, 5, 4096], [65536], [1 << 20], [4, 100_000, 7], [70_000, 1]]) {
      if (sizes[0] === 1 && stream.length > 1 << 20) continue;
      const { shown, frames } = readThrough(1 << 20, stream, sizes);
      assert.deepEqual(
        shown.map((s) => s.slice(0, 12)),
        ['1:a', `2:${body.toString('latin1').slice(0, 10)}`, '3:b', `4:${body.toString('latin1').slice(0, 10)}`, '5:'],
        `sizes ${sizes.join(',')}`,
      );
      assert.ok(frames[1]?.equals(body) && frames[3]?.equals(body), `sizes ${sizes.join(',')}`);
    }
  });

  test("a big frame's body is the memory the reads went into (no copy after the kernel's)", () => {
    const d = new FrameDecoder();
    const body = Buffer.alloc(200 * 1024, 'z');
    const whole = f(body);
    // The first read takes the header and a little of the body into a chunk...
    let target = d.readBuffer();
    whole.copy(target, 0, 0, 1000);
    assert.deepEqual(d.filled(1000), []);
    // ...the next ones go straight into the body.
    target = d.readBuffer();
    assert.equal(target.length, body.length - 996);
    whole.copy(target, 0, 1000, 100_000);
    assert.deepEqual(d.filled(99_000), []);
    const rest = d.readBuffer();
    assert.equal(rest.buffer, target.buffer);
    assert.equal(rest.byteOffset, target.byteOffset + 99_000);
    whole.copy(rest, 0, 100_000);
    const [p] = d.filled(whole.length - 100_000);
    assert.ok(p?.kind === 'frame' && p.bytes.equals(body));
    assert.equal(p.bytes.buffer, target.buffer);
  });

  test('frames handed out as views of a chunk are never overwritten by later reads', () => {
    const frames: Buffer[] = [];
    const copies: Buffer[] = [];
    const d = new FrameDecoder();
    // Many tiny frames a read, then reads that leave nothing lent (a big frame's first bytes).
    for (let round = 0; round < 40; round++) {
      const batch = Buffer.concat(Array.from({ length: 50 }, (_, k) => f(`r${round}-${k}`)));
      const target = d.readBuffer();
      assert.ok(target.length >= batch.length);
      batch.copy(target);
      for (const p of d.filled(batch.length)) {
        assert.ok(p.kind === 'frame');
        frames.push(p.bytes);
        copies.push(Buffer.from(p.bytes));
      }
    }
    assert.equal(frames.length, 2000);
    frames.forEach((frame, i) => assert.ok(frame.equals(copies[i] as Buffer), `frame ${i + 1} was overwritten`));
  });

  test('a chunk whose views were all given back is read from its start again; one view kept keeps the reads after it', () => {
    const d = new FrameDecoder();
    const first = d.readBuffer();
    Buffer.concat([f('aa'), f('bb')]).copy(first);
    const [a, b] = d.filled(12);
    assert.ok(a?.kind === 'frame' && b?.kind === 'frame');
    // One of the two views given back: the other still holds its bytes, reads go after both.
    d.recycle(a.bytes);
    assert.equal(d.readBuffer().byteOffset, first.byteOffset + 12);
    // Both given back (b too): the next read starts over at the chunk's start.
    d.recycle(b.bytes);
    let target = d.readBuffer();
    assert.equal(target.buffer, first.buffer);
    assert.equal(target.byteOffset, first.byteOffset);
    // A frame of a 64 KiB payload arrives in one read, as a view (no copy), and its chunk is
    // read from its start again once it is given back.
    const big = f(Buffer.alloc(64 * 1024, 'q'));
    big.copy(target);
    const [p] = d.filled(big.length);
    assert.ok(p?.kind === 'frame' && p.bytes.buffer === first.buffer && p.bytes.equals(big.subarray(4)));
    d.recycle(p.bytes);
    target = d.readBuffer();
    assert.equal(target.byteOffset, first.byteOffset);
    // A view kept across a read that handed out another: the reads go on after both.
    f('keep').copy(target);
    const [kept] = d.filled(8);
    f('gone').copy(d.readBuffer());
    const [gone] = d.filled(8);
    assert.ok(kept?.kind === 'frame' && gone?.kind === 'frame');
    d.recycle(gone.bytes);
    f('next').copy(d.readBuffer());
    assert.deepEqual(d.filled(8).map(show), ['6:next']);
    assert.equal(kept.bytes.toString(), 'keep');
  });

  test('with most frames given back at random, no frame kept is ever overwritten, and reads do start over', () => {
    let seed = 7;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const d = new FrameDecoder();
    const kept: [Buffer, Buffer][] = [];
    let startsOver = 0;
    let last: Buffer | undefined;
    let lastLent = false;
    let k = 0;
    for (let round = 0; round < 400; round++) {
      const sizes = Array.from({ length: 1 + rand(6) }, () => [0, 1, 100, 5000, 40_000, 70_000][rand(6)] as number);
      const stream = Buffer.concat(sizes.map((n) => f(Buffer.alloc(n, (k++ % 250) + 1))));
      let pos = 0;
      while (pos < stream.length) {
        const target = d.readBuffer();
        // The chunk the last read into a chunk went to and lent from, from there or before again.
        if (target.buffer.byteLength === FrameDecoder.CHUNK_BYTES) {
          if (lastLent && target.buffer === last?.buffer && target.byteOffset <= last.byteOffset) startsOver++;
          last = target;
          lastLent = false;
        }
        const n = Math.min(target.length, stream.length - pos, 1 + rand(90_000));
        stream.copy(target, 0, pos, pos + n);
        pos += n;
        for (const p of d.filled(n)) {
          assert.ok(p.kind === 'frame');
          if (p.bytes.buffer === last?.buffer) lastLent = true;
          if (rand(6) !== 0) d.recycle(p.bytes);
          else kept.push([p.bytes, Buffer.from(p.bytes)]);
        }
      }
    }
    kept.forEach(([frame, copy], i) => assert.ok(frame.equals(copy), `kept frame ${i} was overwritten`));
    assert.ok(startsOver > 0, 'no read started over at a chunk start');
  });

  test('a chunk that lent nothing is read into again from the same place', () => {
    const d = new FrameDecoder({ maxFrameBytes: 10 });
    const first = d.readBuffer();
    // An over-long frame's header and bytes: skipped, nothing lent.
    const header = Buffer.alloc(4);
    header.writeUInt32LE(1000);
    header.copy(first);
    assert.deepEqual(d.filled(4), []);
    const second = d.readBuffer();
    assert.equal(second.buffer, first.buffer);
    assert.equal(second.byteOffset, first.byteOffset);
    second.fill(1, 0, 1000);
    assert.deepEqual(d.filled(1000).map(show), ['1:too long (1000)']);
    // A whole frame is lent: the next read goes after it.
    f('ab').copy(d.readBuffer());
    assert.deepEqual(d.filled(6).map(show), ['2:ab']);
    assert.equal(d.readBuffer().byteOffset, first.byteOffset + 6);
  });

  test('over-long, zero-length and cut frames are reported as push reports them', () => {
    const long = f('y'.repeat(50));
    const stream = Buffer.concat([f(''), long, f('ok'), f('abc').subarray(0, 5)]);
    for (const sizes of [[1], [2, 3], [stream.length]]) {
      assert.deepEqual(readThrough(8, stream, sizes).shown, ['1:', '2:too long (50)', '3:ok', '4:cut (1 of 3)'], `sizes ${sizes}`);
    }
    assert.deepEqual(readThrough(8, Buffer.from([3, 0]), [1]).shown, ['1:cut in header (2)']);
    // Cut inside a big frame being read in place.
    const big = f(Buffer.alloc(100_000, 1)).subarray(0, 70_004);
    assert.deepEqual(readThrough(1 << 20, big, [4096, 65536]).shown, ['1:cut (70000 of 100000)']);
  });

  test('filled refuses more bytes than the buffer given', () => {
    const d = new FrameDecoder();
    const target = d.readBuffer();
    assert.throws(() => d.filled(target.length + 1), new RegExp(`FrameDecoder.filled: ${FrameDecoder.CHUNK_BYTES + 1} bytes is more than the buffer readBuffer gave`));
  });
});
