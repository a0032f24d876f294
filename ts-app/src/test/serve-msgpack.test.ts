// `serveStdio(handlers, { encoding: 'msgpack' })` through real children over real pipes: the
// fixture service and the `upper-service` example run with `--encoding msgpack`, every reply
// frame compared byte for byte with the canonical frame the Rust core would write.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { FrameDecoder } from '../frame.js';
import { type JsonValue, spawnPeer } from '../index.js';
import { decodeMsgpackEnvelope, textFrame } from '../msgpack.js';
import { encodeFrame } from '../peer/encode.js';
import { serveStdio } from '../serve.js';

const SERVICE = fileURLToPath(new URL('./fixtures/service.js', import.meta.url));
const UPPER = fileURLToPath(new URL('../examples/upper-service.js', import.meta.url));

interface Run {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

/** Runs `script --encoding msgpack …args` on `input` (stdin then closed) and collects everything. */
function run(script: string, input: Buffer, args: string[] = []): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, '--encoding', 'msgpack', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    child.stdin.on('error', () => {});
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout: Buffer.concat(out), stderr }));
    child.stdin.end(input);
  });
}

/** One request frame, as `spawnPeer` writes it. */
const req = (msgType: string, data: unknown, id?: number): Buffer => encodeFrame(msgType, data, id);
/** The reply frame the service must write: the canonical form (`encodeFrame` is the writer both sides share). */
const rep = req;
/** An `error` reply frame. */
const err = (text: string, id?: number): Buffer => textFrame('error', text, id);

/** Asserts a clean run: exactly `frames` on stdout, `served` on stderr, exit code 0. */
function assertServed(r: Run, frames: Buffer[]): void {
  assert.equal(r.stdout.toString('hex'), Buffer.concat(frames).toString('hex'), readable(r.stdout));
  assert.deepEqual([r.stderr, r.code], ['served\n', 0]);
}

/** The frames of `bytes` as messages, for a failure message a person can read. */
function readable(bytes: Buffer): string {
  const decoder = new FrameDecoder();
  return JSON.stringify(
    [...decoder.push(bytes), ...decoder.end()].map((p) => (p.kind === 'frame' ? decodeMsgpackEnvelope(p.bytes) : p)),
  );
}

describe('serveStdio over msgpack replies', () => {
  test('with what the handler returns, in the canonical forms, and bytes as bytes', async () => {
    const values = [{ a: [1, 2.5, 'x'], b: null, c: { d: true } }, [], 42, -0.5, 2 ** 53 - 1, 'é\n"\\', null, Buffer.from([0, 0xc1, 255])];
    const r = await run(SERVICE, Buffer.concat(values.map((v, i) => req('echo', v, i))));
    assertServed(r, values.map((v, i) => rep('echo', v, i)));
  });

  test('a Uint8Array result is sent as bin and read back as the same bytes', async () => {
    const r = await run(SERVICE, req('bytes', null, 1));
    assertServed(r, [rep('bytes', Buffer.from('hi'), 1)]);
    assert.ok(r.stdout.includes(Buffer.from('c4026869', 'hex')), 'bin 8 of 2 bytes');
  });

  test('with null for undefined, another type for reply(), and async results when they settle', async () => {
    const r = await run(SERVICE, Buffer.concat([req('nothing', 'x', 0), req('html', 'hi', 3), req('echo_async', Buffer.from('a'), 4)]));
    assertServed(r, [rep('nothing', null, 0), rep('html', '<p>hi</p>', 3), rep('echo_async', Buffer.from('a'), 4)]);
  });

  test('handlers get the whole message; a map with bytes inside is refused as data', async () => {
    const r = await run(SERVICE, Buffer.concat([req('message', [1], 4), req('message', Buffer.from('x'), 5)]));
    assertServed(r, [
      rep('message', { msg_type: 'message', data: [1], id: 4 }, 4),
      err('the reply to `message` cannot be encoded as MessagePack: data.data is binary data (a Buffer)', 5),
    ]);
  });
});

describe('serveStdio over msgpack turns failures into error replies, saying frame N', () => {
  test('a throw, a rejection, an unencodable result, unpaired surrogates; a failed notification is numbered', async () => {
    const input = Buffer.concat([
      req('fail', 1, 1),
      req('bigint', null, 2),
      req('half', null, 3),
      req('half_type', null, 4),
      req('fail', 'quiet'),
      req('echo', 'next', 9),
      req('reject', [2], 6),
    ]);
    const r = await run(SERVICE, input);
    assertServed(r, [
      err('failed on 1', 1),
      err('the reply to `bigint` cannot be encoded as MessagePack: data is a BigInt', 2),
      err('the reply to `half` cannot be encoded as MessagePack: data.text is a string holding an unpaired surrogate', 3),
      err('the reply to `half_type` cannot be encoded as MessagePack: its msg_type holds an unpaired surrogate', 4),
      err('frame 5: failed on "quiet"'),
      rep('echo', 'next', 9),
      // A rejection settles after the chunk's synchronous replies are written.
      err('rejected [2]', 6),
    ]);
  });

  test('frames that are not requests get the protocol error, numbered, with the id when it was read', async () => {
    const notAMap = Buffer.from('0300000091a178', 'hex');
    const empty = Buffer.from('00000000', 'hex');
    const input = Buffer.concat([req('nope', 1, 1), notAMap, empty, req('echo', 'still here', 8)]);
    const r = await run(SERVICE, input);
    const types =
      'echo, echo_async, fail, reject, throw_string, nothing, bigint, bytes, html, message, count, counted, hold, ' +
      'release, sleep, track, most_running, odd_message, then_throws, long, half, half_type or half_error';
    assertServed(r, [
      err(`frame 1: unknown msg_type \`nope\`; expected ${types}`, 1),
      err('frame 2: not a map: `91a178`'),
      err('frame 3: empty frame'),
      rep('echo', 'still here', 8),
    ]);
  });

  test('an over-long frame is skipped and answered, the next one served; a cut one is reported at EOF', async () => {
    const long = req('echo', 'x'.repeat(20), 1);
    const cut = Buffer.from('0500000001', 'hex');
    const r = await run(SERVICE, Buffer.concat([long, req('echo', 'y', 2), cut]), ['--max-frame-bytes', '30']);
    assertServed(r, [
      err(`frame 1: frame of ${long.length - 4} bytes exceeds the 30-byte limit`),
      rep('echo', 'y', 2),
      err('frame 3: the stream ended inside the frame, after 1 of its 5 bytes'),
    ]);
  });
});

describe('serveStdio over msgpack from a Peer', () => {
  test('spawnPeer(..., { encoding: msgpack }) sends bytes and gets a Buffer back', async () => {
    const peer = spawnPeer(process.execPath, [SERVICE, '--encoding', 'msgpack'], { encoding: 'msgpack', stderr: 'ignore' });
    try {
      const big = Buffer.alloc(1 << 20, 7);
      const r = await peer.request('echo', big);
      assert.ok(Buffer.isBuffer(r.data) && r.data.equals(big));
      assert.deepEqual(await peer.request('echo', { n: [1] }), { msg_type: 'echo', data: { n: [1] }, id: 2 });
    } finally {
      await peer.close();
    }
  });

  test('upper-service.js takes --encoding msgpack', async () => {
    const r = await run(UPPER, Buffer.concat([req('upper', 'abc', 1), req('upper', Buffer.from('é'), 2)]));
    assert.equal(r.stdout.toString('hex'), Buffer.concat([rep('upper', 'ABC', 1), rep('upper', 'É', 2)]).toString('hex'));
    assert.deepEqual([r.stderr, r.code], ['', 0]);
  });
});

describe('serveStdio over msgpack reuses big reply frames only once they are written', () => {
  test('every reply of a slow reader keeps its own bytes, one request a chunk or many', async () => {
    const { PassThrough, Writable } = await import('node:stream');
    const SIZE = 256 * 1024;
    const N = 12;
    const input = new PassThrough();
    const chunks: Buffer[] = [];
    // A reader that takes each write a few milliseconds later, with room for every reply, so
    // replies queue behind it (a frame reused too early would be overwritten in the queue).
    const output = new Writable({
      highWaterMark: 4 * N * SIZE,
      write(chunk: Buffer, _encoding, done) {
        chunks.push(Buffer.from(chunk));
        setTimeout(done, 2);
      },
    });
    const served = serveStdio({ fill: (d) => Buffer.alloc(SIZE, Number(d)) }, { encoding: 'msgpack', input, output });
    // Half one request a chunk (single writes), half all in one chunk (a concatenated batch).
    for (let i = 1; i <= N / 2; i++) input.write(req('fill', i, i));
    input.write(Buffer.concat(Array.from({ length: N / 2 }, (_, k) => req('fill', N / 2 + k + 1, N / 2 + k + 1))));
    input.end();
    await served;
    const want = Array.from({ length: N }, (_, k) => rep('fill', Buffer.alloc(SIZE, k + 1), k + 1));
    const got = Buffer.concat(chunks);
    assert.equal(got.length, Buffer.concat(want).length);
    assert.ok(got.equals(Buffer.concat(want)), readable(got).slice(0, 400));
  });

  test('big bytes a handler reuses or changes once returned go out as they were when returned', async () => {
    const { PassThrough, Writable } = await import('node:stream');
    const SIZE = 128 * 1024;
    const input = new PassThrough();
    const chunks: Buffer[] = [];
    const output = new Writable({
      highWaterMark: 64 * SIZE,
      write(chunk: Buffer, _encoding, done) {
        chunks.push(Buffer.from(chunk));
        setTimeout(done, 2);
      },
    });
    // One buffer filled anew for every request, as a handler that avoids allocating would;
    // and a fresh buffer the handler goes on using after returning it.
    const scratch = Buffer.alloc(SIZE);
    const served = serveStdio(
      {
        scratch: (d) => scratch.fill(Number(d)),
        changed: (d) => {
          const bytes = Buffer.alloc(SIZE, Number(d));
          setImmediate(() => bytes.fill(0xee));
          return bytes;
        },
      },
      { encoding: 'msgpack', input, output },
    );
    // All in one chunk: every request is answered before the first reply is written.
    input.end(Buffer.concat([req('scratch', 1, 1), req('scratch', 2, 2), req('changed', 3, 3), req('scratch', 4, 4)]));
    await served;
    const want = [
      rep('scratch', Buffer.alloc(SIZE, 1), 1),
      rep('scratch', Buffer.alloc(SIZE, 2), 2),
      rep('changed', Buffer.alloc(SIZE, 3), 3),
      rep('scratch', Buffer.alloc(SIZE, 4), 4),
    ];
    const got = Buffer.concat(chunks);
    // Each reply as its id and the distinct bytes of its data, for a readable failure.
    const decoder = new FrameDecoder();
    const summary = [...decoder.push(got), ...decoder.end()].map((p) => {
      const m = p.kind === 'frame' ? decodeMsgpackEnvelope(p.bytes) : undefined;
      return m?.ok && Buffer.isBuffer(m.message.data) ? `${m.message.id}: ${[...new Set(m.message.data)].join(',')}` : p;
    });
    assert.deepEqual(summary, ['1: 1', '2: 2', '3: 3', '4: 4']);
    assert.ok(got.equals(Buffer.concat(want)));
  });
});

describe('serveStdio options', () => {
  test('an unknown encoding or a bad maxFrameBytes is a TypeError at once', () => {
    assert.throws(
      () => serveStdio({}, { encoding: 'cbor' as 'json' }),
      (e: unknown) => e instanceof TypeError && e.message === "serveStdio: option `encoding` must be 'json' or 'msgpack', got `cbor`",
    );
    assert.throws(
      () => serveStdio({}, { encoding: 'msgpack', maxFrameBytes: -1 }),
      (e: unknown) => e instanceof TypeError && /option `maxFrameBytes` must be an integer from 0 to/.test(e.message),
    );
  });

  test('the types: msgpack handlers may get a Buffer, json ones may not', () => {
    // Compile-time checks, never run (they would serve this process's stdin): each fails to
    // type-check if the overloads lose precision.
    const typeChecks = (): unknown[] => [
      serveStdio({ echo: (data: JsonValue | Buffer) => data }, { encoding: 'msgpack' }),
      // @ts-expect-error: under msgpack data may be a Buffer, which this handler does not take.
      serveStdio({ echo: (data: JsonValue) => data }, { encoding: 'msgpack' }),
      serveStdio({ echo: (data: JsonValue) => data }),
      serveStdio({ echo: (data) => Buffer.isBuffer(data) }, { encoding: 'msgpack' }),
    ];
    assert.equal(typeof typeChecks, 'function');
  });
});
