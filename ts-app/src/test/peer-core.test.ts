// PeerCore on its own (sans-IO): its timeouts, which share one timer over a heap of deadlines
// instead of a timer per request, must behave exactly as a timer per request did.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { describe, test } from 'node:test';

import { PeerCore } from '../peer/core.js';
import { PeerError, PeerErrorCode } from '../peer/errors.js';
import type { Message } from '../peer/types.js';
import { REPO_ROOT } from './vectors.js';

const line = (id: number): string => `{"msg_type":"data","data":"x","id":${id}}\n`;
const ack = (id: number): Message => ({ msg_type: 'ack', data: 'x', id });

/** One request made on `core` and sent at once: its id, its promise, and when it was made. */
function send(core: PeerCore, timeoutMs: number, maxInFlight = Infinity): { id: number; done: Promise<unknown>; at: number } {
  const id = core.nextId();
  const at = performance.now();
  const done = core.request('data', id, line(id), timeoutMs, undefined);
  core.takeBatch(maxInFlight);
  return { id, done, at };
}

/** Resolves with `{ ok, code, message, after }`: how the promise settled and how long after `at`. */
async function outcome(r: { done: Promise<unknown>; at: number }): Promise<{ ok: boolean; code?: string; message?: string; after: number }> {
  try {
    await r.done;
    return { ok: true, after: performance.now() - r.at };
  } catch (e) {
    assert.ok(e instanceof PeerError, String(e));
    return { ok: false, code: e.code, message: e.message, after: performance.now() - r.at };
  }
}

describe('PeerCore timeouts', () => {
  test('requests with mixed timeouts time out in deadline order, none early', async () => {
    const core = new PeerCore();
    const order: number[] = [];
    const made = [120, 30, 80, 30, 60].map((ms) => ({ ms, ...send(core, ms) }));
    const results = await Promise.all(
      made.map(async (r) => {
        const o = await outcome(r);
        order.push(r.id);
        return { ...o, ms: r.ms, id: r.id };
      }),
    );
    assert.deepEqual(order, [2, 4, 5, 3, 1]);
    for (const r of results) {
      assert.equal(r.code, 'TIMEOUT');
      assert.equal(r.message?.startsWith(`request \`data\` #${r.id} got no reply within ${r.ms} ms; raise timeoutMs`), true, r.message);
      assert.ok(r.after >= r.ms, `#${r.id} timed out after ${r.after.toFixed(1)} ms, before its ${r.ms} ms`);
      assert.ok(r.after < r.ms + 1000, `#${r.id} timed out ${r.after.toFixed(1)} ms after, for ${r.ms} ms`);
    }
    assert.deepEqual(core.stats(), { inFlight: 0, queued: 0, answered: 0, lateRepliesDropped: 0, unsolicited: 0 });
  });

  test('a settled request is skipped; the next deadline still fires on time', async () => {
    const core = new PeerCore();
    const early = send(core, 20);
    const later = send(core, 60);
    core.receive(ack(early.id));
    assert.deepEqual(await outcome(early).then((o) => o.ok), true);
    const o = await outcome(later);
    assert.equal(o.code, 'TIMEOUT');
    assert.ok(o.after >= 60, `timed out after ${o.after.toFixed(1)} ms`);
    // A reply to the one that timed out is dropped and counted; the answered one's is unsolicited.
    const seen: Message[] = [];
    core.on((m) => seen.push(m));
    core.receive(ack(later.id));
    core.receive(ack(early.id));
    assert.deepEqual(core.stats(), { inFlight: 0, queued: 0, answered: 1, lateRepliesDropped: 1, unsolicited: 1 });
    assert.deepEqual(seen, [ack(early.id)]);
  });

  test('a shorter timeout after a longer one fires first', async () => {
    const core = new PeerCore();
    const long = send(core, 10_000);
    const short = send(core, 20);
    const o = await outcome(short);
    assert.equal(o.code, 'TIMEOUT');
    assert.ok(o.after >= 20 && o.after < 1000, `after ${o.after.toFixed(1)} ms`);
    core.receive(ack(long.id));
    assert.equal((await outcome(long)).ok, true);
  });

  test('thousands answered around one stuck request: the stuck one still times out, once', async () => {
    const core = new PeerCore();
    const stuck = send(core, 80);
    const others: Promise<unknown>[] = [];
    for (let i = 0; i < 5000; i++) {
      const r = send(core, 30_000);
      // Out of order now and then, as a busy peer answers.
      if (i % 7 === 0) queueMicrotask(() => core.receive(ack(r.id)));
      else core.receive(ack(r.id));
      others.push(r.done);
    }
    await Promise.all(others);
    const o = await outcome(stuck);
    assert.equal(o.code, 'TIMEOUT');
    assert.ok(o.after >= 80, `after ${o.after.toFixed(1)} ms`);
    assert.deepEqual(core.stats(), { inFlight: 0, queued: 0, answered: 5000, lateRepliesDropped: 0, unsolicited: 0 });
  });

  test('a request waiting for a maxInFlight slot times out saying so', async () => {
    const core = new PeerCore();
    const first = send(core, 0, 1);
    const waiting = send(core, 30, 1);
    const o = await outcome(waiting);
    assert.equal(o.code, 'TIMEOUT');
    assert.match(o.message ?? '', /got no reply within 30 ms \(it was still waiting for a maxInFlight slot\)/);
    assert.deepEqual(core.stats(), { inFlight: 1, queued: 0, answered: 0, lateRepliesDropped: 0, unsolicited: 0 });
    core.receive(ack(first.id));
    assert.equal((await outcome(first)).ok, true);
  });

  test('0, Infinity and timeouts beyond setTimeout\'s range never time out, without a warning', async () => {
    const warnings: Error[] = [];
    const onWarning = (w: Error): void => void warnings.push(w);
    process.on('warning', onWarning);
    try {
      const core = new PeerCore();
      const made = [0, Infinity, 2 ** 31, 1e12].map((ms) => send(core, ms));
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(core.stats().inFlight, 4);
      for (const r of made) core.receive(ack(r.id));
      for (const r of made) assert.equal((await outcome(r)).ok, true);
    } finally {
      process.off('warning', onWarning);
    }
    assert.deepEqual(warnings.map((w) => w.name), []);
  });

  test('a pending timeout keeps Node alive until it fires; once nothing waits, Node exits at once', () => {
    const core = path.join(REPO_ROOT, 'ts-app', 'dist', 'peer', 'core.js');
    const run = (body: string): { stdout: string; ms: number } => {
      const script = `import { PeerCore } from ${JSON.stringify(core)};\nconst core = new PeerCore();\n${body}`;
      const started = performance.now();
      const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 20_000 });
      assert.equal(r.status, 0, r.stderr);
      return { stdout: r.stdout, ms: performance.now() - started };
    };
    const waited = run(`core.request('data', 1, 'x', 300, undefined).catch((e) => console.log(e.code));`);
    assert.equal(waited.stdout, 'TIMEOUT\n');
    assert.ok(waited.ms >= 300, `exited after ${Math.round(waited.ms)} ms`);
    const answered = run(
      `const p = core.request('data', 1, 'x', 15_000, undefined); core.takeBatch(1);
       core.receive({ msg_type: 'ack', data: 'x', id: 1 }); console.log((await p).id);`,
    );
    assert.equal(answered.stdout, '1\n');
    assert.ok(answered.ms < 10_000, `exited after ${Math.round(answered.ms)} ms: the idle timer kept Node alive`);
  });
});

describe('PeerCore requests in flight', () => {
  test('stragglers thousands of ids behind (sharing ring slots with later requests) are each answered once', async () => {
    const core = new PeerCore();
    const seen: Message[] = [];
    core.on((m) => seen.push(m));
    // Every 1000th request stays unanswered while the others are answered in order: the later
    // requests whose ring slot a straggler still holds go to the overflow.
    const made = Array.from({ length: 10_000 }, () => send(core, 0));
    for (const r of made) if (r.id % 1000 !== 1) core.receive(ack(r.id));
    assert.equal(core.stats().inFlight, 10);
    // A reply to an id already answered, and to one never sent, is unsolicited.
    core.receive(ack(2));
    core.receive(ack(2050));
    core.receive(ack(10_001));
    assert.deepEqual(seen, [ack(2), ack(2050), ack(10_001)]);
    // The stragglers, last first.
    for (const r of [...made].reverse()) if (r.id % 1000 === 1) core.receive(ack(r.id));
    const results = await Promise.all(made.map((r) => r.done));
    assert.deepEqual(results, made.map((r) => ack(r.id)));
    assert.deepEqual(core.stats(), { inFlight: 0, queued: 0, answered: 10_000, lateRepliesDropped: 0, unsolicited: 3 });
  });

  test('many requests sharing ring slots: every one answered once, whatever the order', async () => {
    const core = new PeerCore();
    const made = Array.from({ length: 5000 }, () => send(core, 0));
    // A fixed shuffle: odd ids descending, then even ids ascending.
    const order = [...made.filter((r) => r.id % 2 === 1).reverse(), ...made.filter((r) => r.id % 2 === 0)];
    for (const r of order) {
      core.receive(ack(r.id));
      core.receive(ack(r.id)); // a second reply: unsolicited, never a second outcome
    }
    assert.deepEqual(await Promise.all(made.map((r) => r.done)), made.map((r) => ack(r.id)));
    assert.deepEqual(core.stats(), { inFlight: 0, queued: 0, answered: 5000, lateRepliesDropped: 0, unsolicited: 5000 });
  });

  test('failAll rejects the requests in flight in the order they were sent, stragglers included', async () => {
    const core = new PeerCore();
    const made = Array.from({ length: 5000 }, () => send(core, 0));
    // Leave ids 1, 2, 2049 (2049 shares its slot with 1: it is in the overflow) and 4097 in flight.
    const left = new Set([1, 2, 2049, 4097]);
    for (const r of made) if (!left.has(r.id)) core.receive(ack(r.id));
    const order: number[] = [];
    const settled = made.filter((r) => left.has(r.id)).map((r) => r.done.catch(() => order.push(r.id)));
    core.failAll((msgType, id) => new PeerError('CLOSED', `${msgType} #${String(id)} closed`));
    await Promise.all(settled);
    assert.deepEqual(order, [1, 2, 2049, 4097]);
    assert.equal(core.stats().inFlight, 0);
  });

  test('a settled request lets go of its promise: what still holds it does not keep the reply alive', () => {
    // The deadline heap keeps a settled request until it is swept; it must not reach the
    // request's promise and reply through it (nor may a replaced table: they are old-space
    // roots to a scavenge, and every reply that survived one would be promoted).
    const core = path.join(REPO_ROOT, 'ts-app', 'dist', 'peer', 'core.js');
    const script = `import { PeerCore } from ${JSON.stringify(core)};
      const core = new PeerCore();
      let reply = { msg_type: 'ack', data: 'x'.repeat(100), id: 1 };
      const held = new WeakRef(reply);
      let p = core.request('data', 1, 'x', 60_000, undefined);
      // Still waiting: keeps the heap (and the settled request in it) from being emptied.
      const other = core.request('data', 2, 'x', 60_000, undefined);
      other.catch(() => {});
      core.takeBatch(2);
      core.receive(reply);
      await p;
      p = undefined;
      reply = undefined;
      await new Promise((resolve) => setTimeout(resolve, 10));
      globalThis.gc();
      console.log(held.deref() === undefined ? 'collected' : 'kept', core.stats().inFlight);
      core.failAll(() => new Error('done'));
      process.exit(0);`;
    const r = spawnSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, 'collected 1\n');
  });
});

test('takeFrames hands out queued frames as the Buffers queued, in call order, within the in-flight and byte limits', async () => {
  const core = new PeerCore();
  const frame = (n: number, size = 8): Buffer => Buffer.alloc(size, n);
  const frames = [frame(1), frame(2), frame(3, 600_000), frame(4, 600_000), frame(5)];
  const done = [
    core.request('data', 1, frames[0] as Buffer, 0, undefined),
    core.request('data', 2, frames[1] as Buffer, 0, undefined),
  ];
  core.notify(frames[2] as Buffer);
  done.push(core.request('data', 3, frames[3] as Buffer, 0, undefined));
  done.push(core.request('data', 4, frames[4] as Buffer, 0, undefined));
  // One request in flight at most: the first, then nothing until it is answered.
  const first = core.takeFrames(1);
  assert.equal(first.length, 1);
  assert.equal(first[0], frames[0], 'the very Buffer queued, not a copy');
  assert.deepEqual(core.takeFrames(1), []);
  core.receive(ack(1));
  // The byte limit: the batch stops once it holds 1 MiB or more (a frame is never split).
  const second = core.takeFrames(10, 1 << 20);
  assert.deepEqual(second, [frames[1], frames[2], frames[3]]);
  assert.deepEqual(core.takeFrames(10), [frames[4]]);
  assert.equal(core.stats().queued, 0);
  for (const id of [2, 3, 4]) core.receive(ack(id));
  assert.deepEqual(
    (await Promise.all(done)).map((m) => m.id),
    [1, 2, 3, 4],
  );
});

test('failQueued drops queued frame notifications and rejects queued frame requests', async () => {
  const core = new PeerCore();
  core.notify(Buffer.from([1]));
  const p = core.request('data', 1, Buffer.from([2]), 0, undefined);
  core.failQueued((msgType, id) => new PeerError(PeerErrorCode.PEER_EXITED, `${msgType} ${String(id)} failed`));
  await assert.rejects(p, { message: 'data 1 failed' });
  assert.equal(core.stats().queued, 0);
  assert.deepEqual(core.takeFrames(10), []);
});
