// A million calls must not grow memory: every reply is a fresh JS string, every argument is
// borrowed or copied for the call only, and the responder reuses one output buffer.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { native } from './load.mjs';

const MiB = 1024 * 1024;

function settledRss() {
  // `npm test` passes --expose-gc; without it the tolerance below still holds, only looser.
  globalThis.gc?.();
  globalThis.gc?.();
  return process.memoryUsage().rss;
}

test('a million handleLine calls leave RSS where it was after the first 200k', (t) => {
  const responder = new native.Responder({ exitAfter: 0 });
  const line = JSON.stringify({ msg_type: 'data', data: 'x'.repeat(200), id: 42 });
  const want = `{"msg_type":"ack","data":"Acknowledged: ${'x'.repeat(200)}","id":42}\n`;
  const run = (count) => {
    for (let i = 0; i < count; i++) {
      if (responder.handleLine(line).length !== want.length) assert.fail(`call ${i} answered wrongly`);
    }
  };

  run(200_000);
  const early = settledRss();
  run(800_000);
  const late = settledRss();

  const mib = (bytes) => (bytes / MiB).toFixed(1);
  t.diagnostic(`RSS after 200k calls ${mib(early)} MiB, after 1M ${mib(late)} MiB (gc ${globalThis.gc ? 'exposed' : 'not exposed'})`);
  assert.equal(responder.handleLine(line), want);
  assert.equal(responder.done, false);
  // A leak of even 32 bytes a call would be 25 MiB over the last 800k calls.
  assert.ok(
    late - early < 16 * MiB,
    `RSS grew by ${mib(late - early)} MiB (${mib(early)} → ${mib(late)} MiB)`,
  );
});

test('handleLineAsync leaves nothing behind either (its replies queue drains)', async (t) => {
  const responder = new native.Responder({ exitAfter: 0 });
  const line = JSON.stringify({ msg_type: 'data', data: 'y'.repeat(1024) });
  const want = `{"msg_type":"ack","data":"Acknowledged: ${'y'.repeat(1024)}"}\n`;
  const run = async (count) => {
    for (let i = 0; i < count; i += 250) {
      const replies = await Promise.all(Array.from({ length: 250 }, () => responder.handleLineAsync(line)));
      if (replies.some((reply) => reply !== want)) assert.fail(`batch at ${i} answered wrongly`);
    }
  };

  await run(200_000);
  const early = settledRss();
  await run(400_000);
  const late = settledRss();

  const mib = (bytes) => (bytes / MiB).toFixed(1);
  t.diagnostic(`RSS after 200k async calls ${mib(early)} MiB, after 600k ${mib(late)} MiB`);
  // Looser than above, and after a longer warm-up: around libuv pool work RSS climbs in steps of
  // several MiB for a while before it settles (Node's own crypto.randomFill does the same). A
  // leaked line or reply would be 800 MiB here, and even a leak of 84 bytes a call 32 MiB.
  assert.ok(late - early < 32 * MiB, `RSS grew by ${mib(late - early)} MiB (${mib(early)} → ${mib(late)} MiB)`);
});
