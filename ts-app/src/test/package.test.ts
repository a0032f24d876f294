// The package as a user gets it: `import … from 'rust-ts-ipc'` from the repository root (through
// the npm workspace), and a program that uses a peer and closes it ends by itself: nothing the
// peer made (timers, listeners, the child's pipes) keeps Node alive after `close()`.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

import { REQUIRE_NATIVE } from './addon.js';
import { REPO_ROOT } from './vectors.js';

/** Runs an ES module given as text with the repository root as the working directory. */
function runModule(source: string): { status: number | null; stdout: string; stderr: string } {
  const run = spawnSync(process.execPath, ['--input-type=module', '-e', source], {
    cwd: REPO_ROOT,
    encoding: 'utf8',
    timeout: 30_000,
  });
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

test('the package is importable as rust-ts-ipc from the repository root', () => {
  const run = runModule(`
    import * as lib from 'rust-ts-ipc';
    console.log(Object.keys(lib).sort().join(' '));
    console.log(new lib.PeerError(lib.PeerErrorCode.TIMEOUT, 'x') instanceof Error);`);
  assert.equal(run.stderr, '');
  assert.equal(
    run.stdout,
    'DEFAULT_GRACE_MS DEFAULT_MAX_CONCURRENT DEFAULT_MAX_IN_FLIGHT DEFAULT_RESTART DEFAULT_TIMEOUT_MS PeerError PeerErrorCode Reply STDERR_TAIL_BYTES inProcess isPeerError reply serveStdio spawnPeer\ntrue\n',
  );
  assert.equal(run.status, 0);
});

test("the package's types entry exists (tsc emits declarations)", () => {
  const manifest = JSON.parse(readFileSync(path.join(REPO_ROOT, 'ts-app', 'package.json'), 'utf8')) as { types: string };
  assert.equal(manifest.types, 'dist/index.d.ts');
  assert.ok(existsSync(path.join(REPO_ROOT, 'ts-app', manifest.types)), 'ts-app/dist/index.d.ts is built');
});

const SERVE_BIN = path.join(REPO_ROOT, 'target', 'debug', 'rust-ts-ipc');

test('a program ends by itself after close(), with a throwing listener reported, not fatal to the peer', (t) => {
  if (!existsSync(SERVE_BIN)) {
    if (process.env[REQUIRE_NATIVE] !== undefined) assert.fail(`${SERVE_BIN} is not built (${REQUIRE_NATIVE} is set)`);
    t.skip(`${SERVE_BIN} is not built (cargo build)`);
    return;
  }
  // No process.exit(): the run only ends if the peer left nothing behind. spawnSync's timeout
  // turns a hang into a failure.
  const run = runModule(`
    import { spawnPeer } from 'rust-ts-ipc';
    process.on('uncaughtException', (e) => console.log('reported:', e.message));
    const peer = spawnPeer(${JSON.stringify(SERVE_BIN)}, ['serve', '--exit-after', '0'], { timeoutMs: 60_000 });
    peer.on('message', () => { throw new Error('listener bug'); });
    peer.on('message', (m) => console.log('unsolicited:', m.data));
    peer.notify('data', 'n');
    const controller = new AbortController();
    const replies = await Promise.all([1, 2, 3].map((i) => peer.request('data', 'r' + i, { timeoutMs: 60_000, signal: controller.signal })));
    console.log(replies.map((r) => r.data).join(', '));
    console.log(JSON.stringify(await peer.close()));`);
  assert.equal(run.stderr, '');
  assert.equal(
    run.stdout,
    'unsolicited: Acknowledged: n\nreported: listener bug\nAcknowledged: r1, Acknowledged: r2, Acknowledged: r3\n{"code":0,"signal":null}\n',
  );
  assert.equal(run.status, 0);
});

test('a supervised program ends by itself after close(): no restart or hang timer keeps Node alive', () => {
  // Each child dies at its first request; the second death leaves a restart pending (a long
  // backoff) when close() is called. spawnSync's timeout turns a hang into a failure.
  const run = runModule(`
    import { spawnPeer } from 'rust-ts-ipc';
    const peer = spawnPeer('sh', ['-c', 'read line; exit 3'], { restart: { baseMs: 10, capMs: 60_000 }, hangMs: 60_000, stderr: 'ignore' });
    peer.on('restart', (r) => console.log('restart', r.attempt));
    peer.on('exit', (e) => console.log('exit', e.exit.code, e.next));
    for (const x of ['a', 'b']) await peer.request('data', x).catch((e) => console.log(e.code));
    console.log(JSON.stringify(await peer.close()));`);
  assert.equal(run.stderr, '');
  assert.equal(run.stdout, 'exit 3 backoff\nPEER_EXITED\nrestart 1\nexit 3 backoff\nPEER_EXITED\n{"code":3,"signal":null}\n');
  assert.equal(run.status, 0);
});

test('a supervised program ends by itself when what waited for a restart timed out or was aborted: the backoff timer does not hold Node', () => {
  // The child dies at once; two requests wait for the restart after a 120 s backoff, one times
  // out, the other is aborted. Nothing waits any more and close() is never called: the program
  // must end then, not when the backoff does (spawnSync's 30 s timeout would fail it first).
  const run = runModule(`
    import { spawnPeer } from 'rust-ts-ipc';
    const peer = spawnPeer('sh', ['-c', 'exit 3'], { restart: { baseMs: 120_000, capMs: 120_000 }, stderr: 'ignore' });
    peer.on('restart', () => console.log('restarted'));
    peer.on('exit', (e) => {
      console.log('exit', e.exit.code, e.next);
      const controller = new AbortController();
      const timedOut = peer.request('data', 't', { timeoutMs: 50 }).catch((x) => x.code);
      const aborted = peer.request('data', 'a', { timeoutMs: 0, signal: controller.signal }).catch((x) => x.code);
      setTimeout(() => controller.abort(), 10);
      Promise.all([timedOut, aborted]).then((codes) => console.log(codes.join(' '), JSON.stringify(peer.stats())));
    });`);
  assert.equal(run.stderr, '');
  assert.equal(
    run.stdout,
    'exit 3 backoff\nTIMEOUT ABORTED {"inFlight":0,"queued":0,"answered":0,"lateRepliesDropped":0,"unsolicited":0}\n',
  );
  assert.equal(run.status, 0);

  // And a request that comes after those holds Node again until the fresh child answers it (here: dies at it).
  const again = runModule(`
    import { spawnPeer } from 'rust-ts-ipc';
    const peer = spawnPeer('sh', ['-c', 'read line; exit 3'], { restart: { baseMs: 300, capMs: 300 }, stderr: 'ignore' });
    peer.on('restart', () => console.log('restarted'));
    console.log(await peer.request('data', 'first').catch((x) => x.code));
    const controller = new AbortController();
    const aborted = peer.request('data', 'a', { timeoutMs: 0, signal: controller.signal }).catch((x) => x.code);
    await new Promise((resolve) => setImmediate(resolve)); // the backoff timer is armed for it
    controller.abort();
    console.log(await aborted);
    await new Promise((resolve) => setImmediate(resolve)); // and no longer holds Node
    console.log(await peer.request('data', 'late', { timeoutMs: 0 }).catch((x) => x.code));`);
  assert.equal(again.stderr, '');
  assert.equal(again.stdout, 'PEER_EXITED\nABORTED\nrestarted\nPEER_EXITED\n');
  assert.equal(again.status, 0);
});
