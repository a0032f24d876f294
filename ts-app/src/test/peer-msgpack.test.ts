// `spawnPeer(..., { encoding: 'msgpack' })` against the Rust `serve --encoding msgpack` (demo,
// markdown and the bytes echo) and the Node child `main.js --encoding msgpack`; and the
// encodings' refusals: bytes under json, msgpack in process.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { inProcess, type Message, PeerError, spawnPeer } from '../index.js';
import { REQUIRE_NATIVE } from './addon.js';
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

describe('spawnPeer over msgpack: rust-ts-ipc serve --encoding msgpack', { skip: built ? false : `${SERVE_BIN} is not built` }, () => {
  const open: { close(): Promise<unknown> }[] = [];
  const peer = (exitAfter = 0) => {
    const p = spawnPeer(SERVE_BIN, ['serve', '--encoding', 'msgpack', '--exit-after', String(exitAfter)], {
      encoding: 'msgpack',
      graceMs: 500,
    });
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

  test('a bad encoding option is INVALID_ARGUMENT', () => {
    assert.throws(
      () => spawnPeer(process.execPath, [], { encoding: 'cbor' as 'json' }),
      (e: unknown) => e instanceof PeerError && e.code === 'INVALID_ARGUMENT' && /option `encoding` must be 'json' or 'msgpack', got cbor/.test(e.message),
    );
  });
});

test("inProcess({ encoding: 'msgpack' }) is refused until the addon has a frame entry point", () => {
  assert.throws(
    () => inProcess({ encoding: 'msgpack' as 'json' }),
    (e: unknown) => e instanceof PeerError && e.code === 'INVALID_ARGUMENT' && /needs the addon's frame entry point/.test(e.message),
  );
});
