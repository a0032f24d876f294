// The addon under concurrency: one Responder per worker thread (each thread loads the addon
// into its own V8 isolate), many handleLineAsync calls in flight on one responder, and a
// responder used after its conversation ended.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Worker } from 'node:worker_threads';

import { native } from './load.mjs';

const WORKERS = 4;
const LINES = 20_000;

// Each worker runs its own conversation and checks every reply; any mismatch is reported.
const workerSource = `
  const { parentPort, workerData } = require('node:worker_threads');
  const { createRequire } = require('node:module');
  const { Responder } = createRequire(workerData.packageJson)('./native');
  const r = new Responder({ exitAfter: workerData.lines, name: 'worker ' + workerData.index });
  let wrong = 0;
  for (let i = 1; i <= workerData.lines; i++) {
    const reply = r.handleLine(JSON.stringify({ msg_type: 'data', data: 'w' + workerData.index + ' #' + i, id: i }));
    let want = JSON.stringify({ msg_type: 'ack', data: 'Acknowledged: w' + workerData.index + ' #' + i, id: i }) + '\\n';
    if (i === workerData.lines) want += JSON.stringify({ msg_type: 'exit', data: 'Goodbye from worker ' + workerData.index + '!', id: i }) + '\\n';
    if (reply !== want) wrong++;
  }
  parentPort.postMessage({ wrong, done: r.done });
`;

test('responders in several worker threads each answer their own conversation exactly', async () => {
  const packageJson = new URL('../../package.json', import.meta.url).pathname;
  const results = await Promise.all(
    Array.from({ length: WORKERS }, (_, index) =>
      new Promise((resolve, reject) => {
        const worker = new Worker(workerSource, { eval: true, workerData: { index, lines: LINES, packageJson } });
        worker.once('message', resolve);
        worker.once('error', reject);
        worker.once('exit', (code) => code !== 0 && reject(new Error(`worker ${index} exited with ${code}`)));
      }),
    ),
  );
  assert.deepEqual(results, Array.from({ length: WORKERS }, () => ({ wrong: 0, done: true })));
});

test('ten thousand handleLineAsync calls in flight on one responder resolve in call order', async () => {
  const r = new native.Responder({ exitAfter: 0 });
  // Recorded as each promise settles: `Promise.all` alone keeps results by index whatever the
  // order they settled in.
  const settled = [];
  const promises = Array.from({ length: 10_000 }, (_, i) =>
    r.handleLineAsync(JSON.stringify({ msg_type: 'data', data: String(i), id: i })).then((reply) => {
      settled.push(i);
      return reply;
    }),
  );
  const replies = await Promise.all(promises);
  replies.forEach((reply, i) =>
    assert.equal(reply, `{"msg_type":"ack","data":"Acknowledged: ${i}","id":${i}}\n`),
  );
  assert.deepEqual(settled, Array.from({ length: 10_000 }, (_, i) => i));
});

test('after the conversation ends every entry point answers with the same error reply', async () => {
  const r = new native.Responder();
  assert.equal(r.handleLine('{"msg_type":"exit","data":""}'), '{"msg_type":"exit","data":"Goodbye from TypeScript!"}\n');
  assert.equal(r.done, true);
  const late = (n) => `{"msg_type":"error","data":"line ${n}: conversation has ended; message ignored"}\n`;
  assert.equal(r.handleLine('{"msg_type":"data","data":"x"}'), late(2));
  assert.equal(r.handleBuffer(Buffer.from('{"msg_type":"greeting","data":"x"}')), late(3));
  assert.equal(await r.handleLineAsync('{"msg_type":"exit","data":"x"}'), late(4));
  assert.deepEqual(r.handle({ msg_type: 'data', data: 'x', id: 5 }), [
    { msg_type: 'error', data: 'line 5: conversation has ended; message ignored', id: 5 },
  ]);
  assert.equal(r.done, true);
});

test('handleBuffer over a SharedArrayBuffer that a worker keeps changing answers exactly the bytes it copied', async () => {
  // A 200 000 × `é` payload; the worker flips the first byte of its middle `é` (0xC3 0xA9)
  // between 0xC3 and `x`, which leaves 0xA9 on its own: invalid UTF-8 at the next byte.
  const bytes = Buffer.from(JSON.stringify({ msg_type: 'data', data: 'é'.repeat(200_000) }));
  const at = bytes.indexOf(0xc3, bytes.length >> 1);
  const shared = new Uint8Array(new SharedArrayBuffer(bytes.length));
  shared.set(bytes);
  // [stop, started]
  const control = new Int32Array(new SharedArrayBuffer(8));
  const worker = new Worker(
    `
      const { workerData: d } = require('node:worker_threads');
      const line = new Uint8Array(d.line);
      const control = new Int32Array(d.control);
      Atomics.store(control, 1, 1);
      for (let i = 0; Atomics.load(control, 0) === 0; i++) Atomics.store(line, d.at, i & 1 ? 0x78 : 0xc3);
    `,
    { eval: true, workerData: { line: shared.buffer, control: control.buffer, at } },
  );
  const exited = new Promise((resolve, reject) => {
    worker.once('error', reject);
    worker.once('exit', resolve);
  });
  while (Atomics.load(control, 1) === 0) await new Promise((resolve) => setTimeout(resolve, 1));

  const r = new native.Responder({ exitAfter: 0 });
  const ack = `{"msg_type":"ack","data":"Acknowledged: ${'é'.repeat(200_000)}"}\n`;
  const seen = { ack: 0, invalidUtf8: 0, other: 0, thrown: 0 };
  const firstOther = [];
  const started = Date.now();
  let calls = 0;
  try {
    // About a millisecond a call in the debug build: some thousand calls, a flip in between each.
    while (Date.now() - started < 2000) {
      calls++;
      let reply;
      try {
        reply = r.handleBuffer(shared);
      } catch (error) {
        seen.thrown++;
        if (firstOther.length < 3) firstOther.push(`call ${calls} threw: ${error.message}`);
        continue;
      }
      if (reply === ack) seen.ack++;
      else if (reply === `{"msg_type":"error","data":"line ${calls}: invalid UTF-8 at byte ${at + 1}"}\n`) seen.invalidUtf8++;
      else {
        seen.other++;
        const fffd = reply.includes('\ufffd') ? ' (has U+FFFD)' : '';
        if (firstOther.length < 3) firstOther.push(`call ${calls} got ${reply.length} chars${fffd}: ${reply.slice(0, 80)}`);
      }
    }
  } finally {
    Atomics.store(control, 0, 1);
    assert.equal(await exited, 0);
  }

  assert.deepEqual({ other: seen.other, thrown: seen.thrown }, { other: 0, thrown: 0 }, firstOther.join('\n'));
  // Both states were seen, so the worker really was flipping while the calls ran.
  assert.ok(seen.ack > 0 && seen.invalidUtf8 > 0, JSON.stringify(seen));
});
