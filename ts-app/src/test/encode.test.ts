// encodeLine: the exact bytes of a request line, whatever order the types come in.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Writer, writeFrame } from '../msgpack.js';
import { encodeData, encodeFrame, encodeFrameBody, encodeLine, FramePool } from '../peer/encode.js';

test('encodeLine writes each type\'s own head, however types alternate, and makes types well-formed', () => {
  const cases: [string, unknown, number | undefined, string][] = [
    ['data', 'x', 1, '{"msg_type":"data","data":"x","id":1}\n'],
    ['data', { a: [1] }, 2, '{"msg_type":"data","data":{"a":[1]},"id":2}\n'],
    ['markdown', '# Hi', 3, '{"msg_type":"markdown","data":"# Hi","id":3}\n'],
    ['data', null, undefined, '{"msg_type":"data","data":null}\n'],
    ['a"b\\', 'x', 4, '{"msg_type":"a\\"b\\\\","data":"x","id":4}\n'],
    ['\ud800', '\udc00', 5, '{"msg_type":"\ufffd","data":"\ufffd","id":5}\n'],
    ['\ufffd', 'y', 6, '{"msg_type":"\ufffd","data":"y","id":6}\n'],
    ['data', 'z', 7, '{"msg_type":"data","data":"z","id":7}\n'],
  ];
  for (const [type, data, id, want] of cases) assert.equal(encodeLine(type, data, id), want);
});

test('encodeData writes a string exactly as JSON.stringify writes it made well-formed, whatever it holds', () => {
  // Characters JSON escapes (", \, controls), ones it does not (DEL, U+2028, é, 😀), and
  // surrogates paired and not; each string made of a few, plus the edges.
  const alphabet = ['a', 'Z', ' ', '"', '\\', '/', '\u0000', '\u0008', '\n', '\r', '\u001f', '\u007f', '\u2028', 'é', '\ud83d\ude00', '\ud800', '\udfff', '\ufffd'];
  const strings = ['', '"', '\\', '\u001f', '\u0020', 'x'.repeat(64), 'é'.repeat(64), '\ud83d', `${'x'.repeat(100)}\n`];
  let seed = 9;
  const random = (n: number): number => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed % n;
  };
  for (let i = 0; i < 5000; i++) {
    let s = '';
    for (let k = random(12); k > 0; k--) s += alphabet[random(alphabet.length)];
    strings.push(s);
  }
  for (const s of strings) {
    assert.equal(encodeData(s, 't'), JSON.stringify(s.toWellFormed()), JSON.stringify(s));
    assert.equal(encodeLine('t', s, 1), `{"msg_type":"t","data":${JSON.stringify(s.toWellFormed())},"id":1}\n`);
  }
});

test('encodeFrameBody is the body of encodeFrame, byte for byte, whatever the sizes, ids and types', () => {
  // xorshift32: every bit of it is random enough for `% n` (an LCG's low bits are not).
  let seed = 1;
  const rnd = (n: number): number => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) % n;
  };
  const pieces = ['a', 'é', '€', '😀', '\ud800', '\udc00', '\u0000', '\u07ff', '\uffff'];
  const text = (length: number): string => {
    let s = '';
    while (s.length < length) s += pieces[rnd(pieces.length)];
    return s;
  };
  // Around every header boundary, in units and in bytes, and past the scratch buffer's size.
  const lengths = [0, 1, 10, 11, 12, 20, 31, 32, 33, 85, 86, 254, 255, 256, 21845, 21846, 22000, 65535, 65536, 70000];
  const ids = [undefined, 0, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1];
  const others: unknown[] = [null, 1.5, -3, { b: 1, a: [true] }, new Uint16Array(2), [new Uint8Array(1)]];
  for (let k = 0; k < 3000; k++) {
    const msgType = rnd(4) === 0 ? text(rnd(40)) : (['data', 'bytes', 'x'][rnd(3)] as string);
    const length = lengths[rnd(lengths.length)] as number;
    const pick = rnd(7);
    const data =
      pick === 0
        ? Buffer.from(Array.from({ length }, () => rnd(256)))
        : pick === 1
          ? new Uint8Array(length).fill(7)
          : pick === 2
            ? others[rnd(others.length)]
            : pick === 3
              ? 'q'.repeat(length)
              : text(length);
    const id = ids[rnd(ids.length)];
    let want: Buffer | Error;
    try {
      want = encodeFrame(msgType, data, id).subarray(4);
    } catch (e) {
      want = e as Error;
    }
    if (want instanceof Error) assert.throws(() => encodeFrameBody(msgType, data, id), { message: want.message });
    else assert.deepEqual(encodeFrameBody(msgType, data, id), want, `${JSON.stringify(msgType)} ${length} ${String(id)}`);
  }
});

test('encodeFrame into a recycled buffer writes the same bytes as into a fresh one, and the pool stays bounded', () => {
  const pool = new FramePool();
  const big = Buffer.alloc(200_000, 0x61);
  const cases: [string, unknown, number | undefined][] = [
    ['bytes', big, 1],
    ['bytes', big.subarray(0, 70_000), 2 ** 32],
    ['data', 'é'.repeat(40_000), undefined],
    ['data', 'x'.repeat(100_000), 7],
    ['data', { list: Array.from({ length: 30_000 }, (_, i) => i % 300) }, 8],
    ['bytes', Buffer.from([1, 2, 3]), 9],
  ];
  for (let round = 0; round < 3; round++) {
    for (const [msgType, data, id] of cases) {
      const fresh = Buffer.from(encodeFrame(msgType, data, id));
      const pooled = encodeFrame(msgType, data, id, pool);
      assert.ok(pooled.equals(fresh), `${msgType} ${String(id)}, round ${round}`);
      // Garbage left in a recycled buffer must not show: scribble over it before giving it back.
      pool.give(pooled);
      const again = pool.take(pooled.length);
      if (pooled.length >= FramePool.MIN_BYTES) assert.ok(again !== undefined, `a ${pooled.length}-byte frame is kept`);
      again?.fill(0xee);
      if (again !== undefined) pool.give(again);
    }
  }
  const { buffers, bytes } = pool.held;
  assert.ok(buffers <= FramePool.MAX_BUFFERS, `${buffers} buffers held`);
  assert.ok(bytes <= 4 * (64 + 3 * 100_000 + 64), `${bytes} bytes held`);
  // Small frames and views into someone else's memory are never taken.
  assert.equal(pool.take(1000), undefined);
  const before = pool.held.buffers;
  pool.give(Buffer.alloc(FramePool.MIN_BYTES * 2).subarray(16));
  assert.equal(pool.held.buffers, before);
});

/** The frame the general writer makes of `{msgType, data, id}` (`Writer.value`, no fast path). */
function generalFrame(msgType: string, data: unknown, id: number | undefined): Buffer {
  const w = new Writer(16);
  writeFrame(w, msgType, id, (w) => w.value(data));
  return Buffer.from(w.view());
}

test('encodeFrame and encodeFrameBody write what the general writer writes, on random envelopes and at every header bound', () => {
  // xorshift32: every bit of it is random enough for `% n` (an LCG's low bits are not).
  let seed = 7;
  const rnd = (n: number): number => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) % n;
  };
  // 1, 2, 3 and 4 bytes of UTF-8, and lone surrogates (written as U+FFFD, 3 bytes).
  const pieces = ['a', '~', '\u0000', '\u007f', 'é', '\u07ff', '€', '\uffff', '😀', '\ud800', '\udfff'];
  const utf8Bytes = (s: string): number => Buffer.byteLength(s.toWellFormed());
  /**
   * A string of `bytes` bytes of UTF-8 once made well-formed (fewer where two lone surrogates
   * happen to pair up), mostly multibyte characters if `mixed`.
   */
  const text = (bytes: number, mixed: boolean): string => {
    let s = '';
    let have = 0;
    while (mixed && have < bytes - 4) {
      const piece = pieces[rnd(pieces.length)] as string;
      s += piece;
      have += utf8Bytes(piece);
    }
    return s + 'a'.repeat(bytes - have);
  };
  // Byte lengths at the fixstr/str8/str16/str32 bounds (where a string's units and bytes put it
  // under different headers when mixed), and the bin8/bin16/bin32 bounds.
  const bounds = [0, 1, 30, 31, 32, 33, 64, 95, 96, 97, 254, 255, 256, 257, 765, 766, 767, 65534, 65535, 65536, 65537, 196605, 196606];
  const ids = [undefined, 0, 1, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1];
  const types = ['data', 'ack', '', 'é', '\ud800', 'x'.repeat(31), 'y'.repeat(32), 'z'.repeat(300)];
  const cases: [string, unknown, number | undefined][] = [];
  for (const n of bounds) {
    for (const data of [text(n, false), text(n, true), Buffer.alloc(n, 0xc1), new Uint8Array(new ArrayBuffer(n + 9), 3, n)]) {
      ids.forEach((id, i) => cases.push([types[i % types.length] as string, data, id]));
    }
  }
  for (let k = 0; k < 4000; k++) {
    const msgType = rnd(3) === 0 ? text(rnd(40), true) : (types[rnd(types.length)] as string);
    const n = rnd(5) === 0 ? (bounds[rnd(bounds.length)] as number) : rnd(300);
    const data = rnd(4) === 0 ? Buffer.from(Array.from({ length: n }, () => rnd(256))) : text(n, rnd(2) === 0);
    const id = rnd(3) === 0 ? ids[rnd(ids.length)] : rnd(3) === 0 ? rnd(2 ** 31) * 3 : rnd(70000);
    cases.push([msgType, data, id]);
  }
  // Kept until the end: frames cut from one slab must not change as later ones are written.
  const kept: [Buffer, Buffer][] = [];
  const pool = new FramePool();
  for (const [msgType, data, id] of cases) {
    const want = generalFrame(msgType, data, id);
    const what = `${JSON.stringify(msgType).slice(0, 20)}, ${typeof data === 'string' ? 'str' : 'bin'} of ${utf8Bytes(String(typeof data === 'string' ? data : ''))}/${(data as Uint8Array).length} units/bytes, id ${String(id)}`;
    const frame = encodeFrame(msgType, data, id);
    assert.ok(frame.equals(want), what);
    assert.ok(encodeFrameBody(msgType, data, id).equals(want.subarray(4)), `body: ${what}`);
    const pooled = encodeFrame(msgType, data, id, pool);
    assert.ok(pooled.equals(want), `pooled: ${what}`);
    pool.give(pooled);
    kept.push([frame, want]);
  }
  for (const [frame, want] of kept) assert.ok(frame.equals(want), 'a frame changed after it was returned');
});

test('small frames are cut from a slab no FramePool takes for its own, each its own exact Buffer', () => {
  const pool = new FramePool();
  const frames = Array.from({ length: 500 }, (_, i) => encodeFrame('data', 'x'.repeat(i % 200), i));
  for (const frame of frames) {
    assert.equal(frame.length, frame.readUInt32LE(0) + 4);
    pool.give(frame);
  }
  assert.deepEqual(pool.held, { buffers: 0, bytes: 0 });
});

test('FramePool.reclaimBody takes back a big body encodeFrameBody wrote with the pool, and nothing else', () => {
  const pool = new FramePool();
  // Small: in the scratch buffer, which is not the pool's to keep.
  pool.reclaimBody(encodeFrameBody('data', 'x', 1, pool));
  assert.deepEqual(pool.held, { buffers: 0, bytes: 0 });
  const big = encodeFrameBody('data', 'y'.repeat(100_000), 2, pool);
  assert.equal(big.byteOffset, 4);
  pool.reclaimBody(big);
  assert.equal(pool.held.buffers, 1);
  // The next big body is written into that memory, and reads back whole.
  const again = encodeFrameBody('data', 'z'.repeat(90_000), 3, pool);
  assert.equal(again.buffer, big.buffer);
  assert.equal(pool.held.buffers, 0);
  assert.ok(again.equals(generalFrame('data', 'z'.repeat(90_000), 3).subarray(4)));
  // A view into other memory, 4 bytes in or not, is left alone.
  pool.reclaimBody(Buffer.alloc(200_000).subarray(8));
  pool.reclaimBody(Buffer.from(new SharedArrayBuffer(200_000), 4));
  assert.deepEqual(pool.held, { buffers: 0, bytes: 0 });
});

test('a message encoded from inside a bytes length getter changes neither its frame nor the outer one', () => {
  // `data.length` of a `Uint8Array` subclass is user code, which may send a message itself
  // (a nested `request`): that message's frame is cut from the same slab (or written into the
  // same scratch buffer) as the outer one. Whichever read of `length` does it, both frames
  // must come out as they do alone.
  const payload = [1, 2, 3, 4, 5];
  const outerWant = generalFrame('data', new Uint8Array(payload), 1);
  const innerWant = generalFrame('zz', 'inner message text', 9);
  for (const body of [false, true]) {
    for (let at = 1; at <= 4; at++) {
      let calls = 0;
      let inner: Buffer | undefined;
      const encode = (msgType: string, data: unknown, id: number): Buffer =>
        body ? Buffer.concat([Buffer.from([0, 0, 0, 0]), encodeFrameBody(msgType, data, id)]) : encodeFrame(msgType, data, id);
      class Sneaky extends Uint8Array {
        override get length(): number {
          if (++calls === at) inner = encode('zz', 'inner message text', 9);
          return super.length;
        }
      }
      const outer = encode('data', new Sneaky(payload), 1);
      const what = `${body ? 'encodeFrameBody' : 'encodeFrame'}, nested at length read ${at}`;
      const from = body ? 4 : 0;
      assert.deepEqual(outer.subarray(from), outerWant.subarray(from), what);
      if (inner !== undefined) assert.deepEqual(inner.subarray(from), innerWant.subarray(from), what);
    }
  }
});

test("FramePool takes back only memory it made: a frame at the start of Node's shared Buffer pool is left alone", () => {
  // With `Buffer.poolSize` of 64 KiB or more, a small Buffer may start Node's shared pool;
  // kept for reuse, the next big frame written into it would overwrite every Buffer Node
  // cut from that pool since.
  const saved = Buffer.poolSize;
  Buffer.poolSize = 512 * 1024;
  try {
    // Fill Node's pool so that the next small Buffer starts a new one.
    let f = Buffer.allocUnsafe(1);
    for (let room = 0; (room = f.buffer.byteLength - ((f.byteOffset + f.length + 7) & ~7)) >= 400; ) {
      f = Buffer.allocUnsafe(Math.min(room - 300, 200_000));
    }
    const small = Buffer.allocUnsafe(300);
    assert.equal(small.byteOffset, 0, 'the test starts a fresh Node pool');
    const pool = new FramePool();
    pool.reclaimBody(small.subarray(4, 100));
    pool.give(small);
    // Memory the caller made, not the pool, is not the pool's to keep either.
    pool.give(Buffer.alloc(FramePool.MIN_BYTES * 2));
    assert.deepEqual(pool.held, { buffers: 0, bytes: 0 });
    const victim = Buffer.allocUnsafe(64).fill(0x55);
    pool.take(100_000)?.fill(0x41);
    assert.ok(victim.every((b) => b === 0x55));
  } finally {
    Buffer.poolSize = saved;
  }
});
