// `handleFrame`: every msgpack conformance vector, byte for byte, and the call's own contract
// (a frame body in, whole reply frames out, bytes with no text conversion, exact errors).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';

import { native, repoRoot } from './load.mjs';

const { Responder } = native;
const MAX = '9007199254740991';

/** Every case of `tests/conformance-msgpack.json`. */
const { cases } = JSON.parse(readFileSync(new URL('tests/conformance-msgpack.json', repoRoot), 'utf8'));

/** A case's options and services as `new Responder(...)` takes them (absent services = demo). */
function optionsOf(c) {
  const o = c.options ?? {};
  return { exitAfter: o.exit_after, name: o.name, maxFrameBytes: o.max_frame_bytes, services: c.services ?? ['demo'] };
}

/** Asserts that `f` throws a TypeError with exactly `message` (and napi's `InvalidArg` code). */
function throwsTypeError(f, message) {
  assert.throws(f, (error) => {
    assert.ok(error instanceof TypeError, `expected a TypeError, got ${error?.constructor?.name}: ${error?.message}`);
    assert.equal(error.message, message);
    assert.equal(error.code, 'InvalidArg');
    return true;
  });
}

/** `body` as a frame: its 4-byte little-endian length, then the body. */
function frame(body) {
  const header = Buffer.alloc(4);
  header.writeUInt32LE(body.length);
  return Buffer.concat([header, body]);
}

/** A canonical envelope body, written by hand (fixstr keys; `data` given already encoded). */
function envelope(msgType, dataBytes, id) {
  const str = (s) => {
    const b = Buffer.from(s, 'utf8');
    assert.ok(b.length < 32);
    return Buffer.concat([Buffer.from([0xa0 | b.length]), b]);
  };
  const parts = [Buffer.from([id === undefined ? 0x82 : 0x83]), str('msg_type'), str(msgType), str('data'), dataBytes];
  if (id !== undefined) parts.push(str('id'), Buffer.from([id]));
  return Buffer.concat(parts);
}

/** A `bin32` of `bytes`. */
function bin32(bytes) {
  const header = Buffer.alloc(5);
  header[0] = 0xc6;
  header.writeUInt32BE(bytes.length, 1);
  return Buffer.concat([header, bytes]);
}

describe('handleFrame answers every msgpack conformance case byte for byte', () => {
  for (const c of cases) {
    test(c.name, (t) => {
      const responder = new Responder(optionsOf(c));
      const out = Buffer.concat(c.input.map((hex) => responder.handleFrame(Buffer.from(hex, 'hex'))));
      let want = c.replies.map((r) => r.hex);
      if (c.tail) {
        // A stream cut inside a frame is no call: its one `error` reply (the last) is the
        // pipe's, pinned by tests/cli.rs through `serve --encoding msgpack`.
        t.diagnostic(`the cut tail ${c.tail} has no handleFrame call; its reply is checked on the pipe`);
        want = want.slice(0, -1);
      }
      assert.equal(out.toString('hex'), want.join(''));
      assert.equal(responder.done, c.tail ? false : c.done);
    });
  }

  test('every case, each body given as a plain Uint8Array over a larger ArrayBuffer', () => {
    for (const c of cases.filter((c) => !c.tail)) {
      const responder = new Responder(optionsOf(c));
      const out = c.input.map((hex) => {
        const body = Buffer.from(hex, 'hex');
        const backing = new Uint8Array(body.length + 7);
        backing.set(body, 3);
        return responder.handleFrame(new Uint8Array(backing.buffer, 3, body.length));
      });
      assert.equal(Buffer.concat(out).toString('hex'), c.replies.map((r) => r.hex).join(''), c.name);
    }
  });
});

describe('handleFrame', () => {
  test('returns a new Buffer holding whole frames, two after the last data message', () => {
    const responder = new Responder({ exitAfter: 1 });
    const first = responder.handleFrame(envelope('data', Buffer.from([0xa1, 0x78])));
    assert.ok(Buffer.isBuffer(first));
    const second = responder.handleFrame(envelope('greeting', Buffer.from([0xa0])));
    // The first reply is not overwritten by the next call (the Buffer is the caller's).
    assert.equal(first.readUInt32LE(0) + 4 < first.length, true, 'ack then exit');
    const ackBody = first.subarray(4, 4 + first.readUInt32LE(0));
    assert.equal(ackBody.toString('latin1').includes('Acknowledged: x'), true);
    const exitBody = first.subarray(8 + ackBody.length);
    assert.equal(exitBody.length, first.readUInt32LE(4 + ackBody.length));
    assert.equal(exitBody.toString('latin1').includes('Goodbye from TypeScript!'), true);
    assert.equal(second.subarray(4).toString('latin1').includes('conversation has ended'), true);
  });

  test('echoes 1 MiB of bytes as a bin, with no text conversion', () => {
    const responder = new Responder({ services: ['bytes'] });
    const payload = Buffer.alloc(1 << 20);
    for (let i = 0; i < payload.length; i += 1) payload[i] = (i * 7) % 256;
    const out = responder.handleFrame(envelope('bytes', bin32(payload), 9));
    const want = frame(envelope('bytes', bin32(payload), 9));
    assert.equal(out.length, want.length);
    assert.ok(out.equals(want));
  });

  test('a body over maxFrameBytes gets an error frame naming its length, and the next is answered', () => {
    const responder = new Responder({ maxFrameBytes: 16 });
    const big = responder.handleFrame(Buffer.alloc(64 << 20));
    assert.ok(big.subarray(4).toString('latin1').endsWith('frame 1: frame of 67108864 bytes exceeds the 16-byte limit'));
    const empty = responder.handleFrame(Buffer.alloc(0));
    assert.ok(empty.subarray(4).toString('latin1').endsWith('frame 2: empty frame'));
  });

  test('bytes under the demo service are refused as the pipe refuses them', () => {
    const responder = new Responder();
    const out = responder.handleFrame(envelope('data', Buffer.from([0xc4, 0x01, 0x00]), 3));
    assert.ok(out.subarray(4).toString('latin1').includes('frame 1: field `data` must be a string, got bytes'));
  });

  test('anything but a Uint8Array is a TypeError naming it', () => {
    const responder = new Responder();
    throwsTypeError(() => responder.handleFrame('{}'), 'handleFrame: expected a Uint8Array, got string');
    throwsTypeError(() => responder.handleFrame([0x80]), 'handleFrame: expected a Uint8Array, got array');
    throwsTypeError(() => responder.handleFrame(new ArrayBuffer(1)), 'handleFrame: expected a Uint8Array, got ArrayBuffer');
    throwsTypeError(() => responder.handleFrame(new Uint16Array(1)), 'handleFrame: expected a Uint8Array, got Uint16Array');
    throwsTypeError(() => responder.handleFrame(), 'handleFrame: expected a Uint8Array, got undefined');
    // A refused call does not count: the next frame is frame 1.
    assert.ok(responder.handleFrame(Buffer.alloc(0)).subarray(4).toString('latin1').endsWith('frame 1: empty frame'));
  });

  test('maxFrameBytes must be a safe non-negative integer', () => {
    throwsTypeError(
      () => new Responder({ maxFrameBytes: -1 }),
      `Responder: option \`maxFrameBytes\` must be an integer from 0 to ${MAX}, got number -1`,
    );
  });
});

describe('handleFrameInto', () => {
  /** What `handleFrame` answers to `bodies` on a fresh responder made with `options`. */
  const framesOf = (options, bodies) => {
    const responder = new Responder(options);
    return bodies.map((body) => responder.handleFrame(body));
  };

  test('answers every msgpack conformance case as handleFrame does, into `out` or, too long for it, as a Buffer', () => {
    for (const c of cases.filter((c) => !c.tail)) {
      const bodies = c.input.map((hex) => Buffer.from(hex, 'hex'));
      const want = framesOf(optionsOf(c), bodies);
      for (const room of [0, 1, 64, 1 << 16]) {
        const responder = new Responder(optionsOf(c));
        bodies.forEach((body, i) => {
          const out = Buffer.alloc(room, 0xee);
          const reply = responder.handleFrameInto(body, out);
          const expected = want[i];
          if (expected.length <= room) {
            assert.equal(reply, expected.length, `${c.name}, room ${room}, frame ${i + 1}`);
            assert.equal(out.subarray(0, reply).toString('hex'), expected.toString('hex'), c.name);
            assert.ok(out.subarray(reply).every((b) => b === 0xee), `${c.name}: the rest of out is left as it was`);
          } else {
            assert.ok(Buffer.isBuffer(reply), `${c.name}, room ${room}: a Buffer when the reply does not fit`);
            assert.equal(reply.toString('hex'), expected.toString('hex'), c.name);
            assert.ok(out.every((b) => b === 0xee), `${c.name}: out is left as it was`);
          }
        });
        assert.equal(responder.done, c.done, c.name);
      }
    }
  });

  test('a reply that fills out exactly is written; one byte less room gives a Buffer', () => {
    const body = envelope('data', Buffer.from([0xa1, 0x78]), 7);
    const [want] = framesOf({ exitAfter: 0 }, [body]);
    const responder = new Responder({ exitAfter: 0 });
    const exact = Buffer.alloc(want.length);
    assert.equal(responder.handleFrameInto(body, exact), want.length);
    assert.ok(exact.equals(want));
    const short = Buffer.alloc(want.length - 1);
    const reply = responder.handleFrameInto(body, short);
    assert.ok(Buffer.isBuffer(reply));
    assert.ok(reply.equals(want), 'the second message gets the same ack');
    assert.ok(short.every((b) => b === 0));
  });

  test('writes at the start of a view with an offset, touching nothing around it, and into shared memory', () => {
    const body = envelope('data', Buffer.from([0xa1, 0x78]), 7);
    const [want] = framesOf({ exitAfter: 0 }, [body]);
    for (const backing of [new ArrayBuffer(want.length + 20), new SharedArrayBuffer(want.length + 20)]) {
      const all = new Uint8Array(backing).fill(0xee);
      const out = new Uint8Array(backing, 3, want.length + 5);
      const n = new Responder({ exitAfter: 0 }).handleFrameInto(body, out);
      assert.equal(n, want.length);
      assert.equal(Buffer.from(all.subarray(3, 3 + n)).toString('hex'), want.toString('hex'));
      assert.ok(all.subarray(0, 3).every((b) => b === 0xee), 'before the view');
      assert.ok(all.subarray(3 + n).every((b) => b === 0xee), 'after the reply');
    }
  });

  test('out may be the buffer the frame is read from: the frame is copied first', () => {
    const payload = Buffer.alloc(300, 0x61);
    const body = envelope('bytes', bin32(payload), 5);
    const [want] = framesOf({ services: ['bytes'] }, [body]);
    const shared = Buffer.alloc(body.length + 64);
    body.copy(shared);
    const n = new Responder({ services: ['bytes'] }).handleFrameInto(shared.subarray(0, body.length), shared);
    assert.equal(n, want.length);
    assert.ok(shared.subarray(0, n).equals(want));
  });

  test('a body over maxFrameBytes is answered into out too', () => {
    const responder = new Responder({ maxFrameBytes: 16 });
    const out = Buffer.alloc(256);
    const n = responder.handleFrameInto(Buffer.alloc(17), out);
    assert.equal(typeof n, 'number');
    assert.ok(out.subarray(4, n).toString('latin1').endsWith('frame 1: frame of 17 bytes exceeds the 16-byte limit'));
  });

  test('a frame or an out that is not a Uint8Array is a TypeError naming it, and the call does not count', () => {
    const responder = new Responder();
    const out = Buffer.alloc(256);
    throwsTypeError(() => responder.handleFrameInto('{}', out), 'handleFrameInto: expected a Uint8Array as `frame`, got string');
    throwsTypeError(() => responder.handleFrameInto(), 'handleFrameInto: expected a Uint8Array as `frame`, got undefined');
    throwsTypeError(
      () => responder.handleFrameInto(Buffer.alloc(0)),
      'handleFrameInto: expected a Uint8Array as `out`, got undefined',
    );
    throwsTypeError(
      () => responder.handleFrameInto(Buffer.alloc(0), new ArrayBuffer(64)),
      'handleFrameInto: expected a Uint8Array as `out`, got ArrayBuffer',
    );
    throwsTypeError(
      () => responder.handleFrameInto(Buffer.alloc(0), new Uint16Array(64)),
      'handleFrameInto: expected a Uint8Array as `out`, got Uint16Array',
    );
    const n = responder.handleFrameInto(Buffer.alloc(0), out);
    assert.ok(out.subarray(4, n).toString('latin1').endsWith('frame 1: empty frame'));
  });
});
