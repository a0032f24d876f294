// The peers over MessagePack: one behaviour suite run against `spawnPeer(..., { encoding:
// 'msgpack' })` with the Rust `serve --encoding msgpack` (demo, markdown and the bytes echo) and
// against `inProcess({ encoding: 'msgpack' })` (the addon's `handleFrame`); then what only one
// of them has: the Node child `main.js --encoding msgpack`, `requestSync`, the option checks.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { type Encoding, inProcess, type InProcessPeer, type JsonValue, type Message, type Peer, PeerError, spawnPeer } from '../index.js';
import { describeWithAddon, REQUIRE_NATIVE } from './addon.js';
import { REPO_ROOT } from './vectors.js';

const SERVE_BIN = path.join(REPO_ROOT, 'target', 'debug', 'rust-ts-ipc');
const MAIN = fileURLToPath(new URL('../main.js', import.meta.url));

async function rejectsWith(promise: Promise<unknown>, code: string): Promise<PeerError> {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof PeerError, `expected a PeerError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    return e;
  }
  assert.fail(`expected a PeerError ${code}, but it resolved`);
}

const built = existsSync(SERVE_BIN);
if (!built && process.env[REQUIRE_NATIVE] !== undefined) {
  test('the Rust binary is built', () => assert.fail(`${SERVE_BIN} is not built (cargo build)`));
}

/** A peer over msgpack answering the demo (after `exitAfter` data messages: 0 = never), markdown and bytes. */
type MakePeer = (exitAfter: number) => Peer<JsonValue | Buffer>;

/** The behaviour both msgpack peers share: the same calls give the same results. */
function behaviour(name: string, make: MakePeer): void {
  describe(`Peer behaviour over msgpack: ${name}`, () => {
    const open: { close(): Promise<unknown> }[] = [];
    const peer = (exitAfter = 0): Peer<JsonValue | Buffer> => {
      const p = make(exitAfter);
      open.push(p);
      return p;
    };
    after(async () => {
      await Promise.all(open.map((p) => p.close()));
    });

    test('allocates ids and answers the demo as over json', async () => {
      const p = peer();
      assert.deepEqual(await p.request('greeting', 'hi'), { msg_type: 'response', data: 'Hello from TypeScript!', id: 1 });
      assert.deepEqual(await p.request('data', 'é'.repeat(40)), { msg_type: 'ack', data: `Acknowledged: ${'é'.repeat(40)}`, id: 2 });
      assert.deepEqual(await p.request('markdown', '*x*'), { msg_type: 'html', data: '<p><em>x</em></p>\n', id: 3 });
    });

    test('matches 500 requests in flight to their replies', async () => {
      const p = peer();
      const replies = await Promise.all(Array.from({ length: 500 }, (_, i) => p.request('data', `m${i}`)));
      replies.forEach((r, i) => assert.deepEqual(r, { msg_type: 'ack', data: `Acknowledged: m${i}`, id: i + 1 }));
      assert.deepEqual(p.stats(), { inFlight: 0, queued: 0, answered: 500, lateRepliesDropped: 0, unsolicited: 0 });
    });

    test('bytes go as bin and come back as a Buffer, untouched, up to 1 MiB', async () => {
      const p = peer();
      const big = Buffer.alloc(1 << 20);
      for (let i = 0; i < big.length; i++) big[i] = (i * 7) & 0xff;
      for (const data of [Buffer.from([0, 1, 2, 255]), new Uint8Array([0xc1]), Buffer.alloc(0), big]) {
        const r: Message<unknown> = await p.request('bytes', data);
        assert.equal(r.msg_type, 'bytes');
        assert.ok(Buffer.isBuffer(r.data), 'a Buffer');
        assert.ok((r.data as Buffer).equals(data), `echo of ${data.length} bytes`);
      }
    });

    test('error replies say frame N and keep going; non-string data is the demo\'s error', async () => {
      const p = peer();
      const e = await rejectsWith(p.request('nope', 'x'), 'ERROR_REPLY');
      assert.match(String(e.reply?.data), /^frame 1: unknown msg_type `nope`; expected greeting, data, exit, markdown or bytes$/);
      const m = await rejectsWith(p.request('data', { n: [1, 2] }), 'ERROR_REPLY');
      assert.equal(m.reply?.data, 'frame 2: field `data` must be a string, got map: `83a86d73675f74797065a464617461a4…`');
      const b = await rejectsWith(p.request('bytes', 'text'), 'ERROR_REPLY');
      assert.match(String(b.reply?.data), /^frame 3: field `data` must be bytes, got string: `/);
      assert.deepEqual(await p.request('data', 'after'), { msg_type: 'ack', data: 'Acknowledged: after', id: 4 });
    });

    test('refuses what the envelope cannot hold with INVALID_ARGUMENT, sending nothing', async () => {
      const p = peer();
      for (const [data, text] of [
        [10n, /data is a BigInt/],
        [[Buffer.from('x')], /data\[0\] is binary data \(a Buffer\).*bytes can only be the whole of data/],
        [{ x: Number.NaN }, /data\.x is the number NaN/],
        [undefined, /data is undefined/],
      ] as const) {
        const e = await rejectsWith(p.request('data', data), 'INVALID_ARGUMENT');
        assert.match(e.message, text);
        assert.throws(() => p.notify('data', data), (x: unknown) => x instanceof PeerError && x.code === 'INVALID_ARGUMENT');
      }
      const e = await rejectsWith(p.request('nope', 'x'), 'ERROR_REPLY');
      assert.match(String(e.reply?.data), /^frame 1: /, 'nothing was sent before');
    });

    test("notifications' replies and the demo's exit after the fifth ack are unsolicited", async () => {
      const p = peer(5);
      const seen: Message<unknown>[] = [];
      p.on('message', (m) => seen.push(m));
      p.notify('data', 'note');
      for (let i = 2; i <= 5; i++) assert.equal((await p.request('data', `d${i}`)).data, `Acknowledged: d${i}`);
      assert.deepEqual(seen, [
        { msg_type: 'ack', data: 'Acknowledged: note' },
        { msg_type: 'exit', data: 'Goodbye from TypeScript!', id: 4 },
      ]);
    });
  });
}

if (built) {
  behaviour('spawnPeer(rust-ts-ipc serve --encoding msgpack)', (exitAfter) =>
    spawnPeer(SERVE_BIN, ['serve', '--encoding', 'msgpack', '--exit-after', String(exitAfter)], {
      encoding: 'msgpack',
      graceMs: 500,
    }),
  );
} else {
  describe('spawnPeer over msgpack: rust-ts-ipc serve', { skip: `${SERVE_BIN} is not built` }, () => {});
}

describeWithAddon("inProcess({ encoding: 'msgpack' })", () => {
  behaviour("inProcess({ encoding: 'msgpack' })", (exitAfter) => inProcess({ encoding: 'msgpack', exitAfter }));

  test('requestSync returns the reply, bytes as a Buffer, and throws the PeerError request rejects with', () => {
    const p: InProcessPeer<JsonValue | Buffer> = inProcess({ encoding: 'msgpack', exitAfter: 2 });
    const echoed = p.requestSync('bytes', new Uint8Array([0, 0xc1, 255]));
    assert.ok(Buffer.isBuffer(echoed.data));
    assert.deepEqual(echoed, { msg_type: 'bytes', data: Buffer.from([0, 0xc1, 255]), id: 1 });
    const seen: Message<JsonValue | Buffer>[] = [];
    p.on('message', (m) => seen.push(m));
    assert.deepEqual(p.requestSync('data', 'a'), { msg_type: 'ack', data: 'Acknowledged: a', id: 2 });
    assert.deepEqual(p.requestSync('data', 'b'), { msg_type: 'ack', data: 'Acknowledged: b', id: 3 });
    assert.deepEqual(seen, [{ msg_type: 'exit', data: 'Goodbye from TypeScript!', id: 3 }]);
    assert.throws(
      () => p.requestSync('data', 'c'),
      (e: unknown) =>
        e instanceof PeerError &&
        e.code === 'ERROR_REPLY' &&
        e.reply?.data === 'frame 4: conversation has ended; message ignored',
    );
    assert.throws(() => p.requestSync('data', 1n), (e: unknown) => e instanceof PeerError && e.code === 'INVALID_ARGUMENT');
    assert.deepEqual(p.stats(), { inFlight: 0, queued: 0, answered: 4, lateRepliesDropped: 0, unsolicited: 1 });
  });

  test('bytes replies are the caller\'s to keep: later replies, short and long, leave them as they were', () => {
    const p = inProcess({ encoding: 'msgpack', exitAfter: 0 });
    // Short replies are written into a buffer the peer reuses; a longer one than it holds
    // comes back in a Buffer of its own, and the next one that long into a grown buffer.
    const sizes = [3, 3, 5000, 5000, 70_000, 70_000, 3 << 20, 3 << 20, 3];
    const sent = sizes.map((n, i) => Buffer.alloc(n, i + 1));
    const got = sent.map((b) => p.requestSync('bytes', b).data);
    sent.forEach((b, i) => {
      const reply = got[i];
      assert.ok(Buffer.isBuffer(reply), `reply ${i + 1} is a Buffer`);
      assert.ok(reply.equals(b), `reply ${i + 1} (${b.length} bytes) is unchanged by the replies after it`);
    });
    // Text replies are strings, copied out of the reused buffer.
    const texts = ['a', 'é'.repeat(3000), 'b'].map((t) => p.requestSync('data', t).data);
    assert.deepEqual(texts, ['Acknowledged: a', `Acknowledged: ${'é'.repeat(3000)}`, 'Acknowledged: b']);
  });

  test('a frame over maxFrameBytes is that request\'s ERROR_REPLY, and the next frame is answered', async () => {
    const p = inProcess({ encoding: 'msgpack', exitAfter: 0, maxFrameBytes: 40 });
    const e = await rejectsWith(p.request('data', 'x'.repeat(40)), 'ERROR_REPLY');
    assert.equal(e.reply?.data, 'frame 1: frame of 66 bytes exceeds the 40-byte limit');
    assert.deepEqual(await p.request('data', 'y'), { msg_type: 'ack', data: 'Acknowledged: y', id: 2 });
  });

  test('services may be chosen; bytes is a default under msgpack only', async () => {
    const demo = inProcess({ encoding: 'msgpack', services: ['demo'] });
    const e = await rejectsWith(demo.request('bytes', Buffer.from('x')), 'ERROR_REPLY');
    assert.equal(e.reply?.data, 'frame 1: unknown msg_type `bytes`; expected greeting, data or exit');
    const json = inProcess();
    const j = await rejectsWith(json.request('bytes', 'x'), 'ERROR_REPLY');
    assert.match(String(j.reply?.data), /^line 1: unknown msg_type `bytes`; expected greeting, data, exit or markdown$/);
  });

  test('the types say a msgpack peer may hand out a Buffer and a json one may not', () => {
    const mp = inProcess({ encoding: 'msgpack' });
    const json = inProcess({ encoding: 'json' });
    // Each line fails to compile if the overloads lose precision.
    const mpSync: Buffer extends ReturnType<typeof mp.requestSync>['data'] ? true : false = true;
    const mpAsync: Buffer extends Awaited<ReturnType<typeof mp.request>>['data'] ? true : false = true;
    const jsonSync: Buffer extends ReturnType<typeof json.requestSync>['data'] ? true : false = false;
    const chosen = inProcess({ encoding: (process.env['NO_SUCH_VARIABLE'] ?? 'json') as Encoding });
    const chosenSync: Buffer extends ReturnType<typeof chosen.requestSync>['data'] ? true : false = true;
    assert.deepEqual([mpSync, mpAsync, jsonSync, chosenSync], [true, true, false, true]);
  });
});

describe('spawnPeer over msgpack: node main.js --encoding msgpack', () => {
  test('answers the demo, and an over-long frame from the child is reported as frame N', async () => {
    const p = spawnPeer(process.execPath, [MAIN, '--encoding', 'msgpack', '--exit-after', '0'], { encoding: 'msgpack' });
    try {
      assert.deepEqual(await p.request('greeting', 'hi'), { msg_type: 'response', data: 'Hello from TypeScript!', id: 1 });
      const e = await rejectsWith(p.request('data', Buffer.from([1])), 'ERROR_REPLY');
      assert.match(String(e.reply?.data), /^frame 2: field `data` must be a string, got bytes: `/);
    } finally {
      await p.close();
    }
    const small = spawnPeer(process.execPath, [MAIN, '--encoding', 'msgpack', '--exit-after', '0'], {
      encoding: 'msgpack',
      maxFrameBytes: 8,
    });
    try {
      const next = new Promise<Message<unknown>>((resolve) => small.on('message', resolve));
      await rejectsWith(small.request('greeting', 'hi', { timeoutMs: 300 }), 'TIMEOUT');
      assert.deepEqual(await next, { msg_type: 'error', data: 'frame 1: frame of 51 bytes exceeds the 8-byte limit' });
    } finally {
      await small.close();
    }
  });

  test('the types say a spawnPeer may hand out a Buffer under msgpack or an encoding chosen at run time, not under json', () => {
    const encoding = (process.env['NO_SUCH_VARIABLE'] ?? 'json') as Encoding;
    // Never called, so no child starts: only their return types are looked at. Each line below
    // fails to compile if the overloads lose precision.
    const mp = () => spawnPeer(process.execPath, [], { encoding: 'msgpack' });
    const json = () => spawnPeer(process.execPath, [], { encoding: 'json' });
    const plain = () => spawnPeer(process.execPath, []);
    const chosen = () => spawnPeer(process.execPath, [], { encoding, graceMs: 100 });
    type Data<F extends () => Peer<unknown>> = Awaited<ReturnType<ReturnType<F>['request']>>['data'];
    const mpData: Buffer extends Data<typeof mp> ? true : false = true;
    const jsonData: Buffer extends Data<typeof json> ? true : false = false;
    const plainData: Buffer extends Data<typeof plain> ? true : false = false;
    const chosenData: Buffer extends Data<typeof chosen> ? true : false = true;
    assert.deepEqual([mpData, jsonData, plainData, chosenData], [true, false, false, true]);
  });

  test('a bad encoding option is INVALID_ARGUMENT', () => {
    assert.throws(
      () => spawnPeer(process.execPath, [], { encoding: 'cbor' as 'json' }),
      (e: unknown) => e instanceof PeerError && e.code === 'INVALID_ARGUMENT' && /option `encoding` must be 'json' or 'msgpack', got cbor/.test(e.message),
    );
  });
});

test('inProcess: a bad encoding option is INVALID_ARGUMENT', () => {
  assert.throws(
    () => inProcess({ encoding: 'cbor' as 'json' }),
    (e: unknown) =>
      e instanceof PeerError && e.code === 'INVALID_ARGUMENT' && /option `encoding` must be 'json' or 'msgpack', got cbor/.test(e.message),
  );
});

describeWithAddon("inProcess({ encoding: 'msgpack' }) re-entered", () => {
  test('a request made while another is being encoded or delivered leaves both replies intact', () => {
    const p: InProcessPeer<JsonValue | Buffer> = inProcess({ encoding: 'msgpack', exitAfter: 0 });
    const nested: Message<JsonValue | Buffer>[] = [];
    // User code that runs while a request is encoded: a bytes subclass's `length` getter (the
    // fast path's body is written into a shared scratch buffer), and an object's getter.
    // Each read of `length` sends a request (however often the encoder reads it).
    let reads = 0;
    class Sneaky extends Uint8Array {
      override get length(): number {
        reads++;
        nested.push(p.requestSync('data', 'inner'));
        return super.length;
      }
    }
    const outerBytes = p.requestSync('bytes', new Sneaky([9, 8, 7]));
    const inner = nested.splice(0);
    // The demo answers a map as `data` with an error naming the frame, which must be the map sent.
    const map = {
      get x(): number {
        nested.push(p.requestSync('data', 'inner text'));
        return 1;
      },
    };
    assert.throws(
      () => p.requestSync('data', map),
      (e: unknown) =>
        e instanceof PeerError &&
        e.code === 'ERROR_REPLY' &&
        e.reply?.data === `frame ${3 + reads}: field \`data\` must be a string, got map: \`83a86d73675f74797065a464617461a4…\``,
    );
    assert.ok(reads >= 1 && inner.length === reads, `the length getter ran ${reads} times`);
    assert.deepEqual(outerBytes, { msg_type: 'bytes', data: Buffer.from([9, 8, 7]), id: 1 });
    assert.deepEqual(
      inner,
      inner.map((_, i) => ({ msg_type: 'ack', data: 'Acknowledged: inner', id: 2 + i })),
    );
    assert.deepEqual(nested, [{ msg_type: 'ack', data: 'Acknowledged: inner text', id: 2 + reads + 1 }]);
  });

  test('a listener that requests again while a two-frame reply is delivered gets its own reply, and the first is intact', () => {
    const p: InProcessPeer<JsonValue | Buffer> = inProcess({ encoding: 'msgpack', exitAfter: 1 });
    const q: InProcessPeer<JsonValue | Buffer> = inProcess({ encoding: 'msgpack', exitAfter: 0 });
    const heard: unknown[] = [];
    p.on('message', (m) => {
      // Both the peer that is delivering and another one: each reuses its own reply buffer.
      heard.push(m, q.requestSync('bytes', Buffer.alloc(5000, 0x41)).data, q.requestSync('data', 'é'.repeat(100)).data);
    });
    const first = p.requestSync('data', 'x'.repeat(120));
    assert.deepEqual(first, { msg_type: 'ack', data: `Acknowledged: ${'x'.repeat(120)}`, id: 1 });
    assert.deepEqual(heard.slice(0, 3), [
      { msg_type: 'exit', data: 'Goodbye from TypeScript!', id: 1 },
      Buffer.alloc(5000, 0x41),
      `Acknowledged: ${'é'.repeat(100)}`,
    ]);
  });
});
