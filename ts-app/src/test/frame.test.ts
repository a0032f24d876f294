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
