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
  const promises = Array.from({ length: 10_000 }, (_, i) =>
    r.handleLineAsync(JSON.stringify({ msg_type: 'data', data: String(i), id: i })),
  );
  const replies = await Promise.all(promises);
  replies.forEach((reply, i) =>
    assert.equal(reply, `{"msg_type":"ack","data":"Acknowledged: ${i}","id":${i}}\n`),
  );
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
