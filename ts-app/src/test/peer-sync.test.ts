// `spawnPeer(…, { mode: 'sync' })`: `requestSync` over pipes the addon owns, against the Rust
// `serve` and the Node child in both encodings, mixing it with async requests, and the faults
// (a child that dies in the middle of a call, one that never starts, over-long replies), each
// compared with what the stream peer does with the same child. The behaviour suite every peer
// runs is run on this one too, in peer.test.ts.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, describe, test } from 'node:test';
import { Worker } from 'node:worker_threads';

import { type Message, type Peer, PeerError, type PeerErrorCode, spawnPeer, type SpawnPeerOptions, type SyncPeerOptions, type SyncPipePeer } from '../index.js';
import { describeWithAddon, REQUIRE_NATIVE } from './addon.js';
import { REPO_ROOT } from './vectors.js';

const SERVE_BIN = path.join(REPO_ROOT, 'target', 'debug', 'rust-ts-ipc');
const NODE_CHILD = path.join(REPO_ROOT, 'ts-app', 'dist', 'main.js');

/** Throws a `PeerError` of `code`, and returns it. */
function throwsWith(fn: () => unknown, code: PeerErrorCode): PeerError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof PeerError, `expected a PeerError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    return e;
  }
  assert.fail(`expected a PeerError ${code}, but it returned`);
}

async function rejectsWith(promise: Promise<unknown>, code: PeerErrorCode): Promise<PeerError> {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof PeerError, `expected a PeerError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    return e;
  }
  assert.fail(`expected a PeerError ${code}, but it resolved`);
}

function collect(peer: Peer<unknown>): Message<unknown>[] {
  const seen: Message<unknown>[] = [];
  peer.on('message', (m) => seen.push(m));
  return seen;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** True while `pid` exists and is not a zombie. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** Polls until process group `pgid` is empty (its killed members reaped by init), up to 2 s. */
async function groupGone(pgid: number): Promise<boolean> {
  for (let i = 0; i < 200; i++) {
    try {
      process.kill(-pgid, 0);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ESRCH') return true;
    }
    await sleep(10);
  }
  return false;
}

const ack = (data: string, id: number): Message => ({ msg_type: 'ack', data, id });

const INDEX = path.join(REPO_ROOT, 'ts-app', 'dist', 'index.js');

/**
 * Runs `body` (an ES module with `spawnPeer` and `SERVE` in scope) in a Node process of its own,
 * for what could block the JS thread for good, or take the process down, if the peer were
 * broken: the test then fails on the time limit (or the crash) instead of hanging the runner.
 */
function runScript(body: string, timeoutMs = 20_000): { status: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string } {
  const script = `import { spawnPeer } from ${JSON.stringify(INDEX)};\nconst SERVE = ${JSON.stringify(SERVE_BIN)};\n${body}`;
  const run = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: timeoutMs });
  return { status: run.status, signal: run.signal, stdout: run.stdout, stderr: run.stderr };
}

type Mode = 'sync' | 'stream';

/**
 * A `node -e` child answering each line with `body` (`m`: the request; `write`, `raw`, `state`
 * in scope), in `mode`. The sync-mode type is asserted: both modes share the interface.
 */
function nodeChild(body: string, mode: Mode = 'sync', options: SpawnPeerOptions & { encoding?: 'json' } = {}): SyncPipePeer {
  const script = `
    const readline = require('node:readline');
    const write = (m) => process.stdout.write(JSON.stringify(m) + '\\n');
    const raw = (t) => process.stdout.write(t);
    const state = { n: 0 };
    readline.createInterface({ input: process.stdin }).on('line', (line) => {
      const m = JSON.parse(line);
      state.n++;
      ${body}
    });`;
  const opts = { graceMs: 500, ...options };
  // Stream mode is driven through the members the two modes share.
  return mode === 'sync'
    ? spawnPeer(process.execPath, ['-e', script], { ...opts, mode })
    : (spawnPeer(process.execPath, ['-e', script], { ...opts, mode }) as unknown as SyncPipePeer);
}

describeWithAddon('spawnPeer sync mode', () => {
  if (!existsSync(SERVE_BIN)) {
    const why = `${SERVE_BIN} is not built (cargo build)`;
    if (process.env[REQUIRE_NATIVE] === undefined) test('needs the Rust binary', { skip: why }, () => {});
    else test('the Rust binary is built', () => assert.fail(why));
    return;
  }
  const open: Peer<unknown>[] = [];
  const track = <P extends Peer<unknown>>(p: P): P => {
    open.push(p);
    return p;
  };
  after(async () => {
    await Promise.all(open.map((p) => p.close()));
  });

  test('requestSync to rust-ts-ipc serve: every reply once, in order, with the ids 1, 2, 3 …', () => {
    const p = track(spawnPeer(SERVE_BIN, ['serve', '--exit-after', '0'], { mode: 'sync' }));
    const seen = collect(p);
    assert.deepEqual(p.requestSync('markdown', '# Hi'), { msg_type: 'html', data: '<h1>Hi</h1>\n', id: 1 });
    for (let i = 0; i < 2000; i++) assert.deepEqual(p.requestSync('data', `m${i}`), ack(`Acknowledged: m${i}`, i + 2));
    assert.deepEqual(seen, []);
    assert.deepEqual(p.stats(), { inFlight: 0, queued: 0, answered: 2001, lateRepliesDropped: 0, unsolicited: 0 });
  });

  test('requestSync to rust-ts-ipc serve under msgpack: bytes travel as a Buffer', () => {
    const p = track(spawnPeer(SERVE_BIN, ['serve', '--encoding', 'msgpack'], { mode: 'sync', encoding: 'msgpack' }));
    const bytes = Buffer.from([0, 1, 2, 255]);
    assert.deepEqual(p.requestSync('bytes', bytes), { msg_type: 'bytes', data: bytes, id: 1 });
    assert.deepEqual(p.requestSync('markdown', '*x*'), { msg_type: 'html', data: '<p><em>x</em></p>\n', id: 2 });
    const e = throwsWith(() => p.requestSync('nope', 'x'), 'ERROR_REPLY');
    assert.equal(e.reply?.data, 'frame 3: unknown msg_type `nope`; expected greeting, data, exit, markdown or bytes');
  });

  for (const encoding of ['json', 'msgpack'] as const) {
    test(`requestSync to the Node child (${encoding}): the demo's answers, in order`, () => {
      const args = encoding === 'json' ? [NODE_CHILD] : [NODE_CHILD, '--encoding', 'msgpack'];
      const p = track(spawnPeer(process.execPath, args, { mode: 'sync', encoding }));
      assert.deepEqual(p.requestSync('greeting', 'hi'), { msg_type: 'response', data: 'Hello from TypeScript!', id: 1 });
      for (let i = 0; i < 4; i++) assert.deepEqual(p.requestSync('data', `n${i}`), ack(`Acknowledged: n${i}`, i + 2));
    });
  }

  test('requestSync throws BUSY while async requests are in flight, sends nothing, and works once they settled', async () => {
    const p = track(spawnPeer(SERVE_BIN, ['serve', '--exit-after', '0'], { mode: 'sync' }));
    const pending = [p.request('data', 'a'), p.request('data', 'b')];
    const e = throwsWith(() => p.requestSync('data', 'c'), 'BUSY');
    assert.equal(
      e.message,
      'requestSync `data` was not sent: 2 request(s) in flight and 0 queued on this peer; await them first (requestSync cannot read their replies without the event loop), or use request()',
    );
    assert.deepEqual(await Promise.all(pending), [ack('Acknowledged: a', 1), ack('Acknowledged: b', 2)]);
    // Nothing was sent for the refused call: the next id is 3, and the next reply is its own.
    assert.deepEqual(p.requestSync('data', 'd'), ack('Acknowledged: d', 3));
    assert.deepEqual(await p.request('data', 'e'), ack('Acknowledged: e', 4));
    assert.deepEqual(p.requestSync('data', 'f'), ack('Acknowledged: f', 5));
    assert.equal(p.stats().answered, 5);
  });

  test('sync and async in turns, 500 rounds: every reply once and in order', async () => {
    const p = track(spawnPeer(SERVE_BIN, ['serve', '--exit-after', '0'], { mode: 'sync' }));
    const seen = collect(p);
    let id = 0;
    for (let i = 0; i < 500; i++) {
      assert.deepEqual(p.requestSync('data', `s${i}`), ack(`Acknowledged: s${i}`, ++id));
      const [x, y] = await Promise.all([p.request('data', `a${i}`), p.request('data', `b${i}`)]);
      assert.deepEqual([x, y], [ack(`Acknowledged: a${i}`, id + 1), ack(`Acknowledged: b${i}`, id + 2)]);
      id += 2;
    }
    assert.deepEqual(seen, []);
    assert.deepEqual(p.stats(), { inFlight: 0, queued: 0, answered: 1500, lateRepliesDropped: 0, unsolicited: 0 });
  });

  test('replies and unsolicited messages interleaved, sync and async in turns: each once, in the order written', async () => {
    // Every request is answered, then followed by a note numbered in the order the child wrote it.
    const p = track(nodeChild(`write({ msg_type: 'ack', data: m.data, id: m.id }); write({ msg_type: 'note', data: state.n });`));
    const notes: unknown[] = [];
    p.on('message', (m) => notes.push(m.data));
    let id = 0;
    for (let i = 0; i < 300; i++) {
      assert.deepEqual(p.requestSync('data', `s${i}`), ack(`s${i}`, ++id));
      const replies = await Promise.all([p.request('data', `a${i}`), p.request('data', `b${i}`)]);
      assert.deepEqual(replies, [ack(`a${i}`, id + 1), ack(`b${i}`, id + 2)]);
      id += 2;
    }
    for (let i = 0; i < 200 && notes.length < id; i++) await sleep(10);
    assert.deepEqual(notes, Array.from({ length: id }, (_, k) => k + 1));
    assert.deepEqual(p.stats(), { inFlight: 0, queued: 0, answered: id, lateRepliesDropped: 0, unsolicited: id });
  });

  test('msgpack frames written 1 to 7 bytes at a time (headers cut too) while sync and async calls alternate: each once, in order', async () => {
    // The child numbers every message it reads; each is answered by a note with that number,
    // then (for a request) the reply, and all it writes goes out in slices of 1 to 7 bytes with
    // turns of its event loop between, so frames and their 4-byte headers are cut across reads
    // and across the hand-over of the reader between requestSync and the background thread.
    const dist = path.join(REPO_ROOT, 'ts-app', 'dist');
    const child = `
      import { FrameDecoder } from ${JSON.stringify(pathToFileURL(path.join(dist, 'frame.js')).href)};
      import { decodeMsgpackEnvelope } from ${JSON.stringify(pathToFileURL(path.join(dist, 'msgpack.js')).href)};
      import { encodeFrame } from ${JSON.stringify(pathToFileURL(path.join(dist, 'peer', 'encode.js')).href)};
      let seed = 7;
      const rnd = (n) => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n; };
      const decoder = new FrameDecoder();
      const out = [];
      let n = 0, writing = false;
      const pump = () => {
        if (writing || out.length === 0) return;
        writing = true;
        const buf = Buffer.concat(out.splice(0));
        let at = 0;
        const step = () => {
          if (at >= buf.length) { writing = false; pump(); return; }
          const k = 1 + rnd(7);
          process.stdout.write(buf.subarray(at, at + k));
          at += k;
          if (rnd(3) === 0) setTimeout(step, 0); else setImmediate(step);
        };
        step();
      };
      process.stdin.on('data', (chunk) => {
        for (const packet of decoder.push(chunk)) {
          const m = decodeMsgpackEnvelope(packet.bytes).message;
          n++;
          out.push(encodeFrame('note', 'n' + n, undefined));
          if (m.id !== undefined) out.push(encodeFrame('ack', m.data, m.id));
        }
        pump();
      });`;
    const p = track(spawnPeer(process.execPath, ['--input-type=module', '-e', child], { mode: 'sync', encoding: 'msgpack', graceMs: 500 }));
    const notes: unknown[] = [];
    p.on('message', (m) => notes.push(m.data));
    let id = 0;
    const rounds = 60;
    for (let i = 0; i < rounds; i++) {
      assert.deepEqual(p.requestSync('data', `s${i}`), ack(`s${i}`, ++id));
      p.notify('data', `n${i}`);
      const replies = await Promise.all([p.request('data', `a${i}`), p.request('data', `b${i}`)]);
      assert.deepEqual(replies, [ack(`a${i}`, id + 1), ack(`b${i}`, id + 2)]);
      id += 2;
    }
    for (let i = 0; i < 300 && notes.length < 4 * rounds; i++) await sleep(10);
    assert.deepEqual(notes, Array.from({ length: 4 * rounds }, (_, k) => `n${k + 1}`));
    assert.deepEqual(p.stats(), { inFlight: 0, queued: 0, answered: 3 * rounds, lateRepliesDropped: 0, unsolicited: 4 * rounds });
  });

  test('async requests larger than the pipe wait for drain (the background thread writes the rest) and lose nothing', async () => {
    const p = track(spawnPeer(SERVE_BIN, ['serve', '--exit-after', '0'], { mode: 'sync' }));
    const big = (i: number): string => `${i}:`.padEnd(64 * 1024, 'x');
    const replies = await Promise.all(Array.from({ length: 100 }, (_, i) => p.request('data', big(i))));
    replies.forEach((r, i) => assert.deepEqual(r, ack(`Acknowledged: ${big(i)}`, i + 1)));
    // And a synchronous request right after, with nothing left to write before it.
    assert.deepEqual(p.requestSync('data', 'after'), ack('Acknowledged: after', 101));
  });

  test('a notification before requestSync goes first; what it caused reaches the listeners before the reply returns', () => {
    const p = track(spawnPeer(SERVE_BIN, ['serve', '--exit-after', '0'], { mode: 'sync' }));
    const seen = collect(p);
    p.notify('data', 'note');
    assert.deepEqual(p.requestSync('data', 'x'), ack('Acknowledged: x', 1));
    assert.deepEqual(seen, [{ msg_type: 'ack', data: 'Acknowledged: note' }]);
  });

  test('unsolicited messages written before the reply reach the listeners, in order, before requestSync returns', () => {
    const p = track(nodeChild(`write({ msg_type: 'note', data: 1 }); write({ msg_type: 'note', data: 2, id: 999 }); write({ msg_type: 'ack', data: m.data, id: m.id });`));
    const seen = collect(p);
    assert.deepEqual(p.requestSync('data', 'x'), ack('x', 1));
    assert.deepEqual(seen, [{ msg_type: 'note', data: 1 }, { msg_type: 'note', data: 2, id: 999 }]);
  });

  test('a message after the reply in the same read is kept, and delivered once the event loop turns', async () => {
    const p = track(nodeChild(`raw(JSON.stringify({ msg_type: 'ack', data: m.data, id: m.id }) + '\\n' + JSON.stringify({ msg_type: 'later', data: state.n }) + '\\n');`));
    const seen = collect(p);
    assert.deepEqual(p.requestSync('data', 'x'), ack('x', 1));
    assert.deepEqual(p.requestSync('data', 'y'), ack('y', 2));
    for (let i = 0; i < 200 && seen.length < 2; i++) await sleep(10);
    assert.deepEqual(seen, [{ msg_type: 'later', data: 1 }, { msg_type: 'later', data: 2 }]);
  });

  test('requestSync from a message listener: every message still reaches the listeners once, in the order written', async () => {
    // Each line is answered, in one write, by three notes numbered from 10 × its number (none
    // for `bare`), then (for a request) the reply.
    const p = track(
      nodeChild(
        `raw((m.data === 'bare' ? '' : [0, 1, 2].map((k) => JSON.stringify({ msg_type: 'note', data: state.n * 10 + k }) + '\\n').join('')) + (m.id === undefined ? '' : JSON.stringify({ msg_type: 'ack', data: m.data, id: m.id }) + '\\n'));`,
      ),
    );
    const seen: unknown[] = [];
    p.on('message', (m) => {
      seen.push(m.data);
      if (m.data === 10 || m.data === 30) seen.push(`reply ${String(p.requestSync('data', `inner${String(m.data)}`).data)}`);
      if (m.data === 51) seen.push(`reply ${String(p.requestSync('data', 'bare').data)}`);
    });
    // Delivered by the background reader: the listener's call comes after 11 and 12, read before it.
    p.notify('data', 'start');
    for (let i = 0; i < 200 && seen.length < 7; i++) await sleep(10);
    assert.deepEqual(seen, [10, 11, 12, 20, 21, 22, 'reply inner10']);
    // Delivered by requestSync itself: likewise, and the outer call returns last.
    seen.push(`reply ${String(p.requestSync('data', 'outer').data)}`);
    assert.deepEqual(seen.slice(7), [30, 31, 32, 40, 41, 42, 'reply inner30', 'reply outer']);
    // A reply that comes alone still returns after what was read before it (52).
    p.notify('data', 'again');
    for (let i = 0; i < 200 && seen.length < 19; i++) await sleep(10);
    assert.deepEqual(seen.slice(15), [50, 51, 52, 'reply bare']);
  });

  test('a child killed during requestSync gives PEER_EXITED with the signal and its stderr, not a hang', async () => {
    const p = track(nodeChild(`process.stderr.write('dying on purpose\\n'); setTimeout(() => process.kill(process.pid, 'SIGKILL'), 20);`, 'sync', { stderr: 'ignore' }));
    const e = throwsWith(() => p.requestSync('data', 'x', { timeoutMs: 10_000 }), 'PEER_EXITED');
    assert.equal(e.signal, 'SIGKILL');
    assert.equal(e.exitCode, null);
    assert.equal(e.stderrTail, 'dying on purpose\n');
    assert.equal(e.message, `request \`data\` #1 cannot be answered: the peer \`${process.execPath}\` (pid ${String(p.pid)}) was killed by SIGKILL; its stderr ended with:\ndying on purpose\n`);
    // Later calls fail the same way, sync and async.
    throwsWith(() => p.requestSync('data', 'y'), 'PEER_EXITED');
    await rejectsWith(p.request('data', 'y'), 'PEER_EXITED');
    assert.deepEqual(await p.close(), { code: null, signal: 'SIGKILL' });
  });

  test('a child that exits with a code during requestSync gives PEER_EXITED with it', async () => {
    const p = track(nodeChild(`process.exit(3);`, 'sync', { stderr: 'ignore' }));
    const e = throwsWith(() => p.requestSync('data', 'x'), 'PEER_EXITED');
    assert.equal(e.exitCode, 3);
    assert.equal(e.message, `request \`data\` #1 cannot be answered: the peer \`${process.execPath}\` (pid ${String(p.pid)}) exited with code 3; it wrote nothing to stderr`);
    assert.deepEqual(await p.close(), { code: 3, signal: null });
  });

  test('a child that exited before the call: PEER_EXITED with its code, at once', async () => {
    const p = track(spawnPeer('sh', ['-c', 'echo bye >&2; exit 3'], { mode: 'sync', stderr: 'ignore' }));
    await sleep(300);
    const e = throwsWith(() => p.requestSync('data', 'x'), 'PEER_EXITED');
    assert.equal(e.exitCode, 3);
    assert.equal(e.stderrTail, 'bye\n');
    assert.deepEqual(await p.close(), { code: 3, signal: null });
  });

  test('a child that exits while a process it started holds stdout still ends requestSync with PEER_EXITED', async () => {
    const p = track(spawnPeer('sh', ['-c', 'sleep 30 & read x; exit 3'], { mode: 'sync', stderr: 'ignore', graceMs: 200 }));
    const e = throwsWith(() => p.requestSync('data', 'x', { timeoutMs: 10_000 }), 'PEER_EXITED');
    assert.equal(e.exitCode, 3);
    const pid = p.pid as number;
    assert.deepEqual(await p.close(), { code: 3, signal: null });
    // Its group (the `sleep`) is stopped too.
    assert.ok(await groupGone(pid), `process group ${pid} is still there`);
  });

  test('a command that cannot start: PEER_EXITED naming it, sync and async', async () => {
    const bad = path.join(REPO_ROOT, 'no-such-program');
    const p = track(spawnPeer(bad, [], { mode: 'sync' }));
    assert.equal(p.pid, undefined);
    const e = throwsWith(() => p.requestSync('data', 'x'), 'PEER_EXITED');
    assert.equal(e.message, `cannot send \`data\`: cannot start \`${bad}\`: \`${bad}\` was not found on PATH; check the path (or PATH) and that it is built`);
    const r = await rejectsWith(p.request('data', 'x'), 'PEER_EXITED');
    assert.equal(r.message, e.message);
    assert.deepEqual(await p.close(), { code: null, signal: null });
  });

  test('a missing working directory is named', () => {
    const p = track(spawnPeer(SERVE_BIN, ['serve'], { mode: 'sync', cwd: '/no/such/dir' }));
    const e = throwsWith(() => p.requestSync('data', 'x'), 'PEER_EXITED');
    assert.match(e.message, /^cannot send `data`: cannot start `.*rust-ts-ipc serve`: its working directory `\/no\/such\/dir` does not exist; /);
  });

  // The same child through both modes: the same messages, the same errors.
  for (const [name, body, call] of [
    ['an over-long line before the reply', `raw('x'.repeat(1000) + '\\n'); write({ msg_type: 'ack', data: m.data, id: m.id });`, 'reply'],
    ['an over-long reply (it has no id any more: TIMEOUT)', `raw(JSON.stringify({ msg_type: 'ack', data: 'y'.repeat(1000), id: m.id }) + '\\n');`, 'timeout'],
    ['a broken reply carrying the id (ERROR_REPLY)', `raw('{"id":' + m.id + ',"data":"x"}\\n');`, 'error'],
    ['invalid UTF-8 and a blank line before the reply', `process.stdout.write(Buffer.from([0x7b, 0xff, 0x0a, 0x0a])); write({ msg_type: 'ack', data: m.data, id: m.id });`, 'reply'],
  ] as const) {
    test(`${name}: the same messages and outcome as the stream peer`, async () => {
      const outcomes: unknown[] = [];
      for (const mode of ['stream', 'sync'] as const) {
        // The timeout only ends the over-long reply's case; a Node child may take a while to start.
        const p = track(nodeChild(body, mode, { maxLineBytes: 100, timeoutMs: call === 'timeout' ? 1000 : 10_000 }));
        const seen = collect(p);
        let outcome: unknown;
        try {
          outcome = mode === 'sync' ? p.requestSync('data', 'x') : await p.request('data', 'x');
        } catch (e) {
          assert.ok(e instanceof PeerError);
          outcome = { code: e.code, message: e.message.replace(/\d+ ms/, 'N ms'), reply: e.reply };
        }
        await sleep(50);
        outcomes.push({ outcome, seen });
        await p.close();
      }
      assert.deepEqual(outcomes[1], outcomes[0]);
      const expected = { reply: ack('x', 1), timeout: 'TIMEOUT', error: 'ERROR_REPLY' }[call];
      const got = (outcomes[1] as { outcome: { code?: string } }).outcome;
      assert.deepEqual(typeof expected === 'string' ? got.code : got, expected);
    });
  }

  test('a timed-out requestSync: TIMEOUT; its late reply is dropped and counted, never delivered', () => {
    const p = track(nodeChild(`const r = { msg_type: 'ack', data: m.data, id: m.id }; if (state.n === 1) setTimeout(() => write(r), 200); else setTimeout(() => write(r), 400);`));
    const seen = collect(p);
    const e = throwsWith(() => p.requestSync('data', 'slow', { timeoutMs: 50 }), 'TIMEOUT');
    assert.equal(e.message, 'request `data` #1 got no reply within 50 ms; raise timeoutMs (per request or for the peer) if the work takes longer, or check that the peer is alive');
    assert.deepEqual(p.requestSync('data', 'next', { timeoutMs: 5000 }), ack('next', 2));
    assert.deepEqual(seen, []);
    assert.equal(p.stats().lateRepliesDropped, 1);
  });

  test('refuses data JSON cannot carry with INVALID_ARGUMENT, sending nothing', () => {
    const p = track(spawnPeer(SERVE_BIN, ['serve'], { mode: 'sync' }));
    throwsWith(() => p.requestSync('data', 1n), 'INVALID_ARGUMENT');
    throwsWith(() => p.requestSync('data', Buffer.from('x')), 'INVALID_ARGUMENT');
    assert.deepEqual(p.requestSync('data', 'ok'), ack('Acknowledged: ok', 3));
  });

  test('rejects bad sync options with INVALID_ARGUMENT before starting anything', () => {
    throwsWith(() => spawnPeer(SERVE_BIN, ['serve'], { mode: 'sync', spinUs: -1 }), 'INVALID_ARGUMENT');
    throwsWith(() => spawnPeer(SERVE_BIN, ['serve'], { mode: 'fast' as 'sync' }), 'INVALID_ARGUMENT');
  });

  test('refuses a spinUs beyond a second (as serve --spin-us does): a spin that long would hold the JS thread past a dead child', () => {
    const e = throwsWith(() => spawnPeer(SERVE_BIN, ['serve'], { mode: 'sync', spinUs: 1_000_001 }), 'INVALID_ARGUMENT');
    assert.equal(
      e.message,
      'spawnPeer: option `spinUs` 1000001 is too long: spinning is for replies that come within microseconds (at most 1000000)',
    );
    const p = track(spawnPeer(SERVE_BIN, ['serve', '--exit-after', '0'], { mode: 'sync', spinUs: 1_000_000 }));
    assert.deepEqual(p.requestSync('data', 'max'), ack('Acknowledged: max', 1));
  });

  test('refuses the supervision options (restart, hangMs) in sync mode, naming them, before starting anything', () => {
    for (const extra of [{ restart: true }, { hangMs: 1000 }]) {
      const options = { mode: 'sync', ...extra } as unknown as SyncPeerOptions;
      const e = throwsWith(() => spawnPeer(SERVE_BIN, ['serve'], options), 'INVALID_ARGUMENT');
      const name = Object.keys(extra)[0] ?? '';
      assert.equal(
        e.message,
        `spawnPeer: option \`${name}\` is not supported with mode 'sync' (a sync peer is not supervised); use the default mode 'stream' for restarts and hang detection`,
      );
    }
  });

  test('spinUs: the same replies with spinning on; off by default', () => {
    const p = track(spawnPeer(SERVE_BIN, ['serve', '--exit-after', '0'], { mode: 'sync', spinUs: 50 }));
    for (let i = 0; i < 500; i++) assert.deepEqual(p.requestSync('data', `m${i}`), ack(`Acknowledged: m${i}`, i + 1));
    const stats = p.spinStats();
    if (stats.disabled === null) assert.ok(stats.spun > 0, JSON.stringify(stats));
    else assert.equal(stats.disabled, 'this process may run on one CPU only (affinity mask or CPU quota)');
    const off = track(spawnPeer(SERVE_BIN, ['serve'], { mode: 'sync' }));
    off.requestSync('data', 'x');
    assert.deepEqual(off.spinStats(), { disabled: 'the spin budget is 0', spun: 0, hits: 0 });
  });

  test('spinUs under a one-CPU affinity never spins (the guard), and still answers', { skip: process.platform !== 'linux' }, () => {
    const index = path.join(REPO_ROOT, 'ts-app', 'dist', 'index.js');
    const script = `
      import { spawnPeer } from ${JSON.stringify(index)};
      const p = spawnPeer(${JSON.stringify(SERVE_BIN)}, ['serve', '--exit-after', '0'], { mode: 'sync', spinUs: 50 });
      for (let i = 0; i < 50; i++) p.requestSync('data', 'x');
      console.log(JSON.stringify(p.spinStats()));
      await p.close();`;
    const run = spawnSync('taskset', ['-c', '0', process.execPath, '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(run.status, 0, run.stderr);
    assert.deepEqual(JSON.parse(run.stdout), { disabled: 'this process may run on one CPU only (affinity mask or CPU quota)', spun: 0, hits: 0 });
  });

  test('after close: requestSync throws CLOSED, and no process is left', async () => {
    const p = spawnPeer('sh', ['-c', 'sleep 30 & exec cat >/dev/null'], { mode: 'sync', graceMs: 100 });
    const pid = p.pid as number;
    assert.ok(alive(pid));
    const closing = p.close();
    throwsWith(() => p.requestSync('data', 'x'), 'CLOSED');
    assert.deepEqual(await closing, { code: 0, signal: null });
    assert.equal(alive(pid), false);
    assert.ok(await groupGone(pid), `process group ${pid} is still there`);
  });

  test('requestSync honours timeoutMs while the child writes other messages without pause (the JS thread is not held)', () => {
    // `yes` never answers and never lets a read come back empty: only the clock ends the call.
    const run = runScript(`
      const p = spawnPeer('yes', ['{"msg_type":"note","data":1}'], { mode: 'sync', graceMs: 100 });
      let notes = 0;
      p.on('message', (m) => { if (m.msg_type === 'note') notes++; });
      try { p.requestSync('data', 'x', { timeoutMs: 100 }); console.log('returned'); }
      catch (e) { console.log(e.code, e.message, notes > 0); }
      console.log(JSON.stringify(await p.close()));`);
    assert.equal(run.signal, null, `requestSync never returned (killed by ${String(run.signal)}); stderr: ${run.stderr}`);
    assert.equal(
      run.stdout,
      'TIMEOUT request `data` #1 got no reply within 100 ms; raise timeoutMs (per request or for the peer) if the work takes longer, or check that the peer is alive true\n' +
        '{"code":null,"signal":"SIGTERM"}\n',
      run.stderr,
    );
  });

  test('a child that exits while a process it started floods its stdout: PEER_EXITED even with no timeout', () => {
    const run = runScript(`
      const p = spawnPeer('sh', ['-c', 'yes "$0" & read x; exit 3', '{"msg_type":"note","data":1}'], { mode: 'sync', graceMs: 100, stderr: 'ignore' });
      try { p.requestSync('data', 'x', { timeoutMs: 0 }); console.log('returned'); }
      catch (e) { console.log(e.code, e.exitCode); }
      console.log(JSON.stringify(await p.close()));`);
    assert.equal(run.signal, null, `requestSync never returned (killed by ${String(run.signal)}); stderr: ${run.stderr}`);
    assert.equal(run.stdout, 'PEER_EXITED 3\n{"code":3,"signal":null}\n', run.stderr);
  });

  test('a finite but huge timeoutMs or graceMs means no limit: no crash, no GenericFailure', () => {
    const run = runScript(`
      const p = spawnPeer(SERVE, ['serve'], { mode: 'sync', graceMs: 1e300 });
      console.log(p.requestSync('data', 'x', { timeoutMs: 1e300 }).data);
      console.log(p.requestSync('data', 'y', { timeoutMs: Number.MAX_VALUE }).data);
      console.log(JSON.stringify(await p.close({ graceMs: Number.MAX_VALUE })));`);
    assert.equal(run.signal, null, run.stderr);
    assert.equal(run.stdout, 'Acknowledged: x\nAcknowledged: y\n{"code":0,"signal":null}\n', run.stderr);
    assert.equal(run.status, 0, run.stderr);
  });

  test('close() while async requests larger than the pipe wait to be written: the replies are read meanwhile, each request answered', () => {
    // The child answers as it reads; were stdout not read while close() writes what waits, both
    // would block on a full pipe, for graceMs (Infinity here: for good).
    const run = runScript(`
      const p = spawnPeer(SERVE, ['serve', '--exit-after', '0'], { mode: 'sync', graceMs: Infinity });
      // Three of 300 KiB: one batch (under 1 MiB), so all are handed to the addon before close().
      const big = (i) => String(i).padEnd(300 * 1024, 'x');
      const replies = Array.from({ length: 3 }, (_, i) =>
        p.request('data', big(i)).then((r) => (r.data === 'Acknowledged: ' + big(i) && r.id === i + 1 ? 'ok' : 'wrong'), (e) => e.code));
      const closed = await p.close();
      const out = await Promise.all(replies);
      console.log(out.filter((o) => o === 'ok').length, JSON.stringify(out.filter((o) => o !== 'ok')), JSON.stringify(closed));`);
    assert.equal(run.signal, null, `close() never resolved (killed by ${String(run.signal)}); stderr: ${run.stderr}`);
    assert.equal(run.stdout, '3 [] {"code":0,"signal":null}\n', run.stderr);
  });

  test('a worker terminated with a sync peer open: its child is stopped and reaped, not left running', async () => {
    const code = `
      import { spawnPeer } from ${JSON.stringify(pathToFileURL(INDEX).href)};
      import { parentPort } from 'node:worker_threads';
      const p = spawnPeer(${JSON.stringify(SERVE_BIN)}, ['serve', '--exit-after', '0'], { mode: 'sync', graceMs: 200 });
      parentPort.postMessage({ pid: p.pid, reply: p.requestSync('data', 'in a worker').data });`;
    const worker = new Worker(new URL(`data:text/javascript,${encodeURIComponent(code)}`));
    const first = await new Promise<{ pid: number; reply: string }>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    assert.equal(first.reply, 'Acknowledged: in a worker');
    assert.ok(alive(first.pid));
    await worker.terminate();
    for (let i = 0; i < 200 && alive(first.pid); i++) await sleep(10);
    assert.equal(alive(first.pid), false, `the worker's child ${first.pid} is still running`);
  });

  test('Node exits by itself after close(), or after the child exits', { timeout: 30_000 }, () => {
    const index = path.join(REPO_ROOT, 'ts-app', 'dist', 'index.js');
    for (const close of [true, false]) {
      const script = `
        import { spawnPeer } from ${JSON.stringify(index)};
        const p = spawnPeer(${JSON.stringify(SERVE_BIN)}, ['serve', '--exit-after', '1'], { mode: 'sync' });
        console.log(p.requestSync('data', 'x').data);
        p.on('message', (m) => console.log(m.msg_type));
        ${close ? 'console.log(JSON.stringify(await p.close()));' : ''}`;
      const run = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 20_000 });
      assert.equal(run.status, 0, `close: ${close}; stdout ${run.stdout}; stderr ${run.stderr}`);
      // \`serve --exit-after 1\` says goodbye (unsolicited) and exits after the first: with no
      // close(), Node ends once the peer has seen that exit.
      const expected = close ? 'Acknowledged: x\nexit\n{"code":0,"signal":null}\n' : 'Acknowledged: x\nexit\n';
      assert.equal(run.stdout, expected, run.stderr);
    }
  });
});
