// Supervision of `spawnPeer`'s child: `restart` (backoff, the circuit, the `restart` and `exit`
// events, close() at every stage), `hangMs`, and `timeoutMs` failing only its own request. The
// children are fixtures/supervised.js (crashes or hangs after N requests), the Rust `serve`, and
// small `sh -c` scripts. Every child any test starts is tracked by pid and checked gone at the end.

import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { after, describe, test } from 'node:test';

import {
  type ExitInfo,
  isPeerError,
  PeerError,
  type PeerErrorCode,
  type PipePeer,
  type RestartInfo,
  spawnPeer,
  type SpawnPeerOptions,
} from '../index.js';
import { REPO_ROOT } from './vectors.js';

const SERVE_BIN = path.join(REPO_ROOT, 'target', 'debug', 'rust-ts-ipc');
const SUPERVISED = fileURLToPath(new URL('./fixtures/supervised.js', import.meta.url));

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** True while a process with `pid` exists and is not a zombie waiting to be reaped. */
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
    return !existsSync('/proc/self/stat');
  }
}

/** True while any process of the process group `pid` exists. */
function groupAlive(pid: number): boolean {
  try {
    process.kill(-pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Polls until `pid` and its group are gone (or `ms` passed); true if they are. */
async function gone(pid: number, ms = 3000): Promise<boolean> {
  const deadline = performance.now() + ms;
  while (alive(pid) || groupAlive(pid)) {
    if (performance.now() > deadline) return false;
    await sleep(20);
  }
  return true;
}

/** Rejects with a `PeerError` of `code`, and returns it for more checks. */
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

/** Every pid a test's peers started (first children and restarts), checked gone after all tests. */
const started = new Set<number>();
const open: PipePeer[] = [];

interface Watched {
  peer: PipePeer;
  restarts: RestartInfo[];
  exits: ExitInfo[];
  /** Resolves with the next `exit` event. */
  nextExit(): Promise<ExitInfo>;
  /** Resolves with the next `restart` event. */
  nextRestart(): Promise<RestartInfo>;
}

/** Starts a peer whose children are all tracked, and whose events are recorded. */
function supervised(command: string, args: readonly string[], options: SpawnPeerOptions & { encoding?: 'json' }): Watched {
  const peer = spawnPeer(command, args, { stderr: 'ignore', ...options });
  open.push(peer);
  if (peer.pid !== undefined) started.add(peer.pid);
  const restarts: RestartInfo[] = [];
  const exits: ExitInfo[] = [];
  let exitWaiters: ((info: ExitInfo) => void)[] = [];
  let restartWaiters: ((info: RestartInfo) => void)[] = [];
  peer.on('restart', (info) => {
    if (info.pid !== undefined) started.add(info.pid);
    restarts.push(info);
    const waiters = restartWaiters;
    restartWaiters = [];
    for (const w of waiters) w(info);
  });
  peer.on('exit', (info) => {
    exits.push(info);
    const waiters = exitWaiters;
    exitWaiters = [];
    for (const w of waiters) w(info);
  });
  return {
    peer,
    restarts,
    exits,
    nextExit: () => new Promise((resolve) => exitWaiters.push(resolve)),
    nextRestart: () => new Promise((resolve) => restartWaiters.push(resolve)),
  };
}

after(async () => {
  await Promise.all(open.map((p) => p.close()));
  const left = [];
  for (const pid of started) if (!(await gone(pid))) left.push(pid);
  assert.deepEqual(left, [], 'every child any test started is gone');
});

/** A child that dies at start (`boom <pid>` on stderr, exit 7) while `flag` exists, else runs `serve`. */
function flagged(flag: string): [string, string[]] {
  return ['sh', ['-c', 'if [ -e "$1" ]; then echo "boom $$" >&2; exit 7; fi; exec "$2" serve', 'sh', flag, SERVE_BIN]];
}

function tempFlag(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'sup-node-'));
  const flag = path.join(dir, 'die');
  writeFileSync(flag, '');
  return flag;
}

interface Tally {
  ok: number;
  peerExited: number;
  timeout: number;
  /** Anything else: a wrong reply, another error. Must stay empty. */
  wrong: string[];
  /** The longest a request waited beyond its timeout, in ms (negative: none did). */
  worstOverrun: number;
}

/** Runs `total` `echo` requests, `window` in flight at a time, and counts how each ended. */
async function hammer(peer: PipePeer, total: number, window: number, timeoutMs: number): Promise<Tally> {
  const tally: Tally = { ok: 0, peerExited: 0, timeout: 0, wrong: [], worstOverrun: -Infinity };
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < total) {
      const i = next++;
      const t0 = performance.now();
      try {
        const reply = await peer.request('echo', i, { timeoutMs });
        if (reply.msg_type === 'echo' && reply.data === i) tally.ok++;
        else tally.wrong.push(`request ${i} got ${JSON.stringify(reply)}`);
      } catch (e) {
        if (isPeerError(e, 'PEER_EXITED')) tally.peerExited++;
        else if (isPeerError(e, 'TIMEOUT')) tally.timeout++;
        else tally.wrong.push(`request ${i} failed: ${e instanceof Error ? e.message : String(e)}`);
      }
      tally.worstOverrun = Math.max(tally.worstOverrun, performance.now() - t0 - timeoutMs);
    }
  };
  await Promise.all(Array.from({ length: window }, worker));
  return tally;
}

/** A generous margin past a request's timeout: the timer's slack on a busy machine, not a measure of speed. */
const OVERRUN_MARGIN_MS = 2000;

describe('spawnPeer supervision: 10 000 requests, 64 in flight, against a failing child', () => {
  test('a child that crashes after every 500 requests: each request is answered or fails PEER_EXITED/TIMEOUT, none lost', async (t) => {
    const w = supervised('node', [SUPERVISED, '--crash-after', '500'], {
      restart: { baseMs: 5, capMs: 100, maxRestarts: 10_000, windowMs: 60_000 },
      timeoutMs: 5000,
    });
    const tally = await hammer(w.peer, 10_000, 64, 5000);
    const status = await w.peer.close();
    t.diagnostic(
      `crash every 500: ${tally.ok} answered, ${tally.peerExited} PEER_EXITED, ${tally.timeout} TIMEOUT, ` +
        `${w.restarts.length} restarts, ${w.exits.length} deaths; worst overrun ${tally.worstOverrun.toFixed(0)} ms`,
    );
    assert.deepEqual(tally.wrong, []);
    assert.equal(tally.ok + tally.peerExited + tally.timeout, 10_000, 'every request settled once');
    assert.ok(tally.ok >= 5000, `most requests are answered: ${tally.ok}`);
    assert.ok(tally.peerExited > 0, 'some requests were in flight at a crash');
    assert.ok(w.restarts.length >= 10, `the child was replaced after its crashes: ${w.restarts.length}`);
    assert.ok(tally.worstOverrun < OVERRUN_MARGIN_MS, `no request waited past its timeout (+${OVERRUN_MARGIN_MS} ms): ${tally.worstOverrun}`);
    for (const e of w.exits) {
      // Its stdout may be seen closed a moment before its exit on a busy machine: then the exit status is not known yet.
      if (e.exit.reason === 'exit') assert.deepEqual([e.exit.code, e.exit.signal, e.exit.stderrTail], [3, null, 'crashing after 500 requests\n']);
      else assert.equal(e.exit.reason, 'stdout-closed');
      assert.equal(e.next, 'backoff');
    }
    assert.deepEqual(w.peer.stats().inFlight + w.peer.stats().queued, 0);
    assert.ok(status.signal === null && (status.code === 0 || status.code === 3), `the last child ended at EOF (or crashed): ${JSON.stringify(status)}`);
    const pids = [...new Set(w.restarts.map((r) => r.pid))];
    assert.equal(pids.length, w.restarts.length, 'each restart is a new process');
    for (const pid of pids) assert.ok(pid !== undefined && (await gone(pid)), `child ${String(pid)} is gone`);
  });

  test('a child that hangs after every 500 requests: declared hung by hangMs, replaced, none lost', async (t) => {
    const w = supervised('node', [SUPERVISED, '--hang-after', '500'], {
      restart: { baseMs: 5, capMs: 100, maxRestarts: 10_000, windowMs: 60_000 },
      // Above a fresh Node child's start on a busy machine: the clock runs from the first request.
      hangMs: 600,
      graceMs: 50,
      timeoutMs: 3000,
    });
    const tally = await hammer(w.peer, 10_000, 64, 3000);
    await w.peer.close();
    t.diagnostic(
      `hang every 500: ${tally.ok} answered, ${tally.peerExited} PEER_EXITED, ${tally.timeout} TIMEOUT, ` +
        `${w.restarts.length} restarts; worst overrun ${tally.worstOverrun.toFixed(0)} ms`,
    );
    assert.deepEqual(tally.wrong, []);
    assert.equal(tally.ok + tally.peerExited + tally.timeout, 10_000, 'every request settled once');
    assert.ok(tally.ok >= 5000, `most requests are answered: ${tally.ok}`);
    assert.ok(tally.peerExited > 0, 'the requests pending at a hang failed');
    assert.ok(w.restarts.length >= 10, `the hung child was replaced: ${w.restarts.length}`);
    assert.ok(tally.worstOverrun < OVERRUN_MARGIN_MS, `no request waited past its timeout (+${OVERRUN_MARGIN_MS} ms): ${tally.worstOverrun}`);
    for (const e of w.exits) {
      assert.equal(e.exit.reason, 'hang');
      assert.match(e.exit.description, /^was declared hung after 600 ms: nothing at all arrived on its stdout for 600 ms while \d+ requests? (was|were) pending \(hangMs\)/);
    }
    // A child still starting when its first requests had waited hangMs would be declared hung too
    // (a valid outcome); these are the ones that hung on purpose.
    const onPurpose = w.exits.filter((e) => e.exit.stderrTail === 'hanging after 500 requests\n').length;
    assert.ok(onPurpose >= 10, `${onPurpose} of ${w.exits.length} hung on purpose`);
    // Each hung child ignored stdin's EOF and SIGTERM: only the SIGKILL of the shutdown ended it.
    for (const r of w.restarts) assert.ok(r.exit.pid !== undefined && (await gone(r.exit.pid)), `hung child ${String(r.exit.pid)} is gone`);
  });
  test('a hung child with timeoutMs below hangMs: the first requests time out, the next fail PEER_EXITED, none lost', async (t) => {
    const w = supervised('node', [SUPERVISED, '--hang-after', '2000'], {
      restart: { baseMs: 5, capMs: 100, maxRestarts: 10_000, windowMs: 60_000 },
      hangMs: 700,
      graceMs: 50,
      timeoutMs: 400,
    });
    const tally = await hammer(w.peer, 10_000, 64, 400);
    await w.peer.close();
    t.diagnostic(
      `hang every 2000, timeout 400 < hangMs 700: ${tally.ok} answered, ${tally.peerExited} PEER_EXITED, ${tally.timeout} TIMEOUT, ` +
        `${w.restarts.length} restarts; worst overrun ${tally.worstOverrun.toFixed(0)} ms`,
    );
    assert.deepEqual(tally.wrong, []);
    assert.equal(tally.ok + tally.peerExited + tally.timeout, 10_000, 'every request settled once');
    // At each hang the requests pending time out at 400 ms; those sent in their place are still
    // pending when the child is declared hung at 700 ms.
    assert.ok(tally.timeout > 0 && tally.peerExited > 0, JSON.stringify(tally));
    assert.ok(w.restarts.length >= 3, `the hung child was replaced: ${w.restarts.length}`);
    assert.ok(tally.worstOverrun < OVERRUN_MARGIN_MS, `no request waited past its timeout (+${OVERRUN_MARGIN_MS} ms): ${tally.worstOverrun}`);
  });
});

describe('spawnPeer supervision: restart', () => {
  test('the restart and exit events report the attempt, the backoff and how the child ended', async () => {
    // Each child dies at its first request: with code 3, or (the second) killed by SIGKILL.
    const script = 'read line; echo "died $$" >&2; if [ -e "$1" ]; then rm "$1"; kill -9 $$; fi; exit 3';
    const flag = tempFlag();
    rmSync(flag);
    const w = supervised('sh', ['-c', script, 'sh', flag], { restart: { baseMs: 40, capMs: 1000, maxRestarts: 10, windowMs: 60_000 } });
    const first = w.peer.pid;
    assert.ok(first !== undefined);

    const e1 = await rejectsWith(w.peer.request('a', 1), 'PEER_EXITED');
    assert.deepEqual([e1.exitCode, e1.signal, e1.stderrTail], [3, null, `died ${first}\n`]);
    assert.equal(w.exits.length, 1);
    const exit1 = { pid: first, code: 3, signal: null, reason: 'exit', description: 'exited with code 3', stderrTail: `died ${first}\n` };
    assert.deepEqual(w.exits[0], { exit: exit1, next: 'backoff', delayMs: w.exits[0]?.delayMs });
    const d1 = w.exits[0]?.delayMs ?? -1;
    assert.ok(d1 >= 20 && d1 <= 40, `the first backoff lies in [base/2, base]: ${d1}`);
    assert.equal(w.restarts.length, 0, 'no request yet: no restart');

    writeFileSync(flag, '');
    const restarted = w.nextRestart();
    const e2 = rejectsWith(w.peer.request('b', 2), 'PEER_EXITED');
    const r1 = await restarted;
    assert.deepEqual(r1, { attempt: 1, delayMs: d1, pid: r1.pid, exit: exit1 });
    assert.ok(r1.pid !== undefined && r1.pid !== first);
    assert.equal(w.peer.pid, r1.pid, 'pid is the current child');
    const second = await e2;
    assert.deepEqual([second.exitCode, second.signal, second.stderrTail], [null, 'SIGKILL', `died ${r1.pid}\n`]);
    assert.match(second.message, new RegExp(`^request \`b\` #2 cannot be answered: the peer \`sh\` \\(pid ${r1.pid}\\) was killed by SIGKILL; its stderr ended with:\\ndied ${r1.pid}\\n$`));

    const e3 = rejectsWith(w.peer.request('c', 3), 'PEER_EXITED');
    const r2 = await w.nextRestart();
    assert.equal(r2.attempt, 2, 'the second restart within the window');
    assert.ok(r2.delayMs >= 40 && r2.delayMs <= 80, `the second backoff lies in [base, 2 × base]: ${r2.delayMs}`);
    assert.deepEqual(r2.exit, { pid: r1.pid, code: null, signal: 'SIGKILL', reason: 'exit', description: 'was killed by SIGKILL', stderrTail: `died ${r1.pid}\n` });
    await e3;
    await w.peer.close();
  });

  test('requests made during the backoff wait for the fresh child, each within its own timeout', async () => {
    const flag = tempFlag();
    const w = supervised(...flagged(flag), { restart: { baseMs: 600, capMs: 600 } });
    const death = await w.nextExit();
    assert.equal(death.next, 'backoff');
    assert.ok(death.delayMs >= 300 && death.delayMs <= 600, String(death.delayMs));
    rmSync(flag);
    const t0 = performance.now();
    const short = w.peer.request('data', 'short', { timeoutMs: 50 });
    const waits = w.peer.request('data', 'waits');
    const e = await rejectsWith(short, 'TIMEOUT');
    assert.equal(
      e.message,
      'request `data` #1 got no reply within 50 ms (it was still waiting for the restart of the child, which had died); ' +
        'raise timeoutMs (per request or for the peer) if the work takes longer, or check that the peer is alive',
    );
    assert.deepEqual(await waits, { msg_type: 'ack', data: 'Acknowledged: waits', id: 2 });
    // Not a speed check: the reply cannot come before the backoff has ended.
    assert.ok(performance.now() - t0 >= death.delayMs - 100, 'it waited for the backoff');
    assert.equal(w.restarts.length, 1);
    assert.deepEqual(await w.peer.close(), { code: 0, signal: null });
  });

  test('more than maxRestarts within windowMs opens the circuit: RESTART_LIMIT with the last exit, until the window passes', async () => {
    const flag = tempFlag();
    const w = supervised(...flagged(flag), { restart: { baseMs: 1, capMs: 1, maxRestarts: 2, windowMs: 1500 } });
    // Three deaths: the first child's, then each restart's (a notification wakes each restart).
    let death = await w.nextExit();
    while (death.next === 'backoff') {
      const next = w.nextExit();
      w.peer.notify('data', 'wake');
      death = await next;
    }
    assert.equal(w.restarts.length, 2, 'two restarts, then the circuit opened');
    assert.equal(w.exits.length, 3);
    assert.equal(death.next, 'open');
    assert.ok(death.delayMs > 0 && death.delayMs <= 1500, String(death.delayMs));
    const last = w.restarts[1]?.pid;
    assert.ok(last !== undefined);

    const e = await rejectsWith(w.peer.request('data', 'x'), 'RESTART_LIMIT');
    assert.deepEqual([e.exitCode, e.signal, e.stderrTail, e.msgType], [7, null, `boom ${last}\n`, 'data']);
    assert.ok(e.retryAfterMs !== undefined && e.retryAfterMs > 0 && e.retryAfterMs <= 1500, String(e.retryAfterMs));
    assert.match(
      e.message,
      new RegExp(
        `^\`data\` cannot be sent: the peer \`sh\` was restarted 2 times within 1500 ms \\(restart.maxRestarts 2\\) and its last child ` +
          `\\(pid ${last}\\) exited with code 7; no child is started for \\d+ ms more: fix what makes it die, or raise restart.maxRestarts; ` +
          `its stderr ended with:\\nboom ${last}\\n$`,
      ),
    );
    assert.throws(() => w.peer.notify('data', 'x'), (n: unknown) => isPeerError(n, 'RESTART_LIMIT'));

    // The child is fixed; once the window has passed, the next request starts a fresh one.
    rmSync(flag);
    await sleep(e.retryAfterMs + 20);
    // Refused requests took no id: this is the first sent.
    assert.deepEqual(await w.peer.request('data', 'again'), { msg_type: 'ack', data: 'Acknowledged: again', id: 1 });
    assert.equal(w.restarts.length, 3);
    assert.equal(w.restarts[2]?.exit.pid, last);
    assert.deepEqual(await w.peer.close(), { code: 0, signal: null });
  });

  test('a child that dies mid-line leaves nothing behind for the next: each child has its own decoder', async () => {
    // The first child writes half a reply line and dies; the next runs `serve`.
    const flag = tempFlag();
    const script = 'if [ -e "$1" ]; then rm "$1"; read line; printf \'{"msg_type":"ack","da\'; exit 3; fi; exec "$2" serve --exit-after 0';
    const w = supervised('sh', ['-c', script, 'sh', flag, SERVE_BIN], { restart: { baseMs: 1, capMs: 1 } });
    const unsolicited: unknown[] = [];
    w.peer.on('message', (m) => unsolicited.push(m));
    const e = await rejectsWith(w.peer.request('data', 'a'), 'PEER_EXITED');
    assert.equal(e.exitCode, 3);
    assert.deepEqual(await w.peer.request('data', 'b'), { msg_type: 'ack', data: 'Acknowledged: b', id: 2 });
    assert.deepEqual(await w.peer.request('data', 'c'), { msg_type: 'ack', data: 'Acknowledged: c', id: 3 });
    // The cut line is the dead child's last words, reported as it ended, never joined to the next child's output.
    assert.deepEqual(unsolicited, [{ msg_type: 'error', data: 'line 1: invalid JSON: `{"msg_type":"ack","da`' }]);
    await w.peer.close();
  });

  test('a child that closes its stdin and runs on is given up on: its request fails PEER_EXITED, it is stopped and replaced', async () => {
    // The first child closes its stdin, says so, and runs on writing unsolicited lines (so it is
    // never silent); the next runs `serve`.
    const flag = tempFlag();
    const script =
      'if [ -e "$1" ]; then rm "$1"; exec 0<&-; echo "closed stdin $$" >&2; ' +
      'while :; do echo \'{"msg_type":"tick","data":null}\'; sleep 0.05; done; fi; exec "$2" serve';
    const w = supervised('sh', ['-c', script, 'sh', flag, SERVE_BIN], { restart: { baseMs: 1, capMs: 1 }, graceMs: 50, timeoutMs: 10_000 });
    const first = w.peer.pid;
    assert.ok(first !== undefined);
    // Its first line: its stdin is closed by then, so the request's write fails (EPIPE).
    await new Promise<void>((resolve) => w.peer.on('message', () => resolve()));
    const exit = w.nextExit();
    const e = await rejectsWith(w.peer.request('data', 'a'), 'PEER_EXITED');
    assert.equal(
      e.message,
      `request \`data\` #1 cannot be answered: the peer \`sh\` (pid ${first}) closed its stdin (a write to it failed: EPIPE); ` +
        `its stderr ended with:\nclosed stdin ${first}\n`,
    );
    assert.deepEqual([e.exitCode, e.signal], [null, null]);
    const x = await exit;
    assert.deepEqual([x.exit.reason, x.exit.description, x.next], ['stdin-closed', 'closed its stdin (a write to it failed: EPIPE)', 'backoff']);
    assert.deepEqual(await w.peer.request('data', 'b'), { msg_type: 'ack', data: 'Acknowledged: b', id: 2 });
    assert.equal(w.restarts.length, 1);
    assert.ok(await gone(first), 'the child that closed its stdin was stopped');
    await w.peer.close();
  });

  test('without restart, what a child that closed its stdin writes after it was given up on is dropped, not delivered as unsolicited', async () => {
    // Closes its stdin, then (once our write has failed) answers request #1 anyway.
    const script =
      'exec 0<&-; echo \'{"msg_type":"tick","data":null}\'; sleep 0.6; echo \'{"msg_type":"ack","data":"late","id":1}\'; sleep 30';
    const w = supervised('sh', ['-c', script], { graceMs: 50 });
    const messages: unknown[] = [];
    const first = new Promise<void>((resolve) => w.peer.on('message', () => resolve()));
    w.peer.on('message', (m) => messages.push(m));
    await first;
    const e = await rejectsWith(w.peer.request('data', 'a'), 'PEER_EXITED');
    assert.match(e.message, /closed its stdin \(a write to it failed: EPIPE\)/);
    assert.deepEqual(w.exits.map((x) => [x.exit.reason, x.next]), [['stdin-closed', 'none']]);
    await sleep(800);
    assert.deepEqual(messages, [{ msg_type: 'tick', data: null }]);
    await w.peer.close();
  });

  test('maxRestarts 0: the first death opens the circuit', async () => {
    const flag = tempFlag();
    const w = supervised(...flagged(flag), { restart: { maxRestarts: 0, windowMs: 60_000 } });
    const death = await w.nextExit();
    assert.equal(death.next, 'open');
    const e = await rejectsWith(w.peer.request('data', 'x'), 'RESTART_LIMIT');
    assert.match(e.message, /was restarted 0 times within 60000 ms \(restart.maxRestarts 0\)/);
    assert.equal(w.restarts.length, 0);
    await w.peer.close();
  });

  test('close() during the backoff starts no child and fails what waited with CLOSED', async () => {
    const flag = tempFlag();
    const w = supervised(...flagged(flag), { restart: { baseMs: 5000, capMs: 5000 } });
    const first = w.peer.pid;
    await w.nextExit();
    rmSync(flag);
    const waiting = w.peer.request('data', 'x', { timeoutMs: 0 });
    assert.equal(w.peer.stats().queued, 1);
    const status = await w.peer.close();
    assert.deepEqual(status, { code: 7, signal: null }, "the last child's exit");
    const e = await rejectsWith(waiting, 'CLOSED');
    assert.equal(e.message, "request `data` #1 cannot be answered: the peer `sh` was closed; create a new peer to send more (`spawnPeer` or `inProcess`)");
    await sleep(100);
    assert.equal(w.restarts.length, 0, 'no child started after close()');
    assert.equal(w.peer.pid, first);
    assert.deepEqual(w.peer.stats().queued, 0);
  });

  test('close() from the restart listener stops the fresh child and starts no other', async () => {
    const flag = tempFlag();
    const w = supervised(...flagged(flag), { restart: { baseMs: 1, capMs: 1 } });
    await w.nextExit();
    rmSync(flag);
    let closing: Promise<unknown> | undefined;
    w.peer.on('restart', () => {
      closing = w.peer.close();
    });
    const outcome = w.peer.request('data', 'x').then(
      (reply) => reply.data,
      (e: unknown) => (e instanceof PeerError ? e.code : String(e)),
    );
    const r = await w.nextRestart();
    assert.ok(closing !== undefined);
    assert.deepEqual(await closing, { code: 0, signal: null }, 'the fresh child saw EOF and exited');
    // Written before its stdin was closed, the request is answered; had it not been, CLOSED.
    assert.ok(['Acknowledged: x', 'CLOSED'].includes(String(await outcome)), String(await outcome));
    assert.ok(r.pid !== undefined && (await gone(r.pid)));
    await sleep(50);
    assert.equal(w.restarts.length, 1);
    await rejectsWith(w.peer.request('data', 'y'), 'CLOSED');
  });

  test('a command that cannot start is retried after the backoff until the circuit opens', async () => {
    const w = supervised('/nonexistent/sup-node-child', [], { restart: { baseMs: 1, capMs: 1, maxRestarts: 1, windowMs: 60_000 } });
    const first = await w.nextExit();
    assert.deepEqual([first.exit.reason, first.exit.description, first.next], [
      'spawn-failed',
      'could not be started (spawn /nonexistent/sup-node-child ENOENT)',
      'backoff',
    ]);
    const e = await rejectsWith(w.peer.request('a', 1), 'PEER_EXITED');
    assert.equal(
      e.message,
      'cannot send request `a` #1: `/nonexistent/sup-node-child` could not be started (spawn /nonexistent/sup-node-child ENOENT); check the path (or PATH) and that it is built',
    );
    assert.deepEqual(w.restarts.map((r) => [r.attempt, r.pid, r.exit.reason]), [[1, undefined, 'spawn-failed']]);
    assert.deepEqual(w.exits.map((x) => x.next), ['backoff', 'open']);
    const limit = await rejectsWith(w.peer.request('a', 2), 'RESTART_LIMIT');
    assert.match(limit.message, /and its last child \(pid undefined\) could not be started \(spawn \/nonexistent\/sup-node-child ENOENT\); no child is started for \d+ ms more/);
    await w.peer.close();
  });

  test('a spawn that fails at once (ENOTDIR: thrown, not emitted) reports the exit to listeners added after spawnPeer returns', async () => {
    const file = tempFlag(); // a file: as cwd, spawn throws ENOTDIR synchronously
    const w = supervised('node', [], { cwd: file, restart: { baseMs: 1, capMs: 1, maxRestarts: 1 } });
    const plain = supervised('node', [], { cwd: file });
    // Made before the failure is reported: it fails all the same.
    const early = rejectsWith(plain.peer.request('a', 1), 'PEER_EXITED');
    await sleep(50);
    assert.deepEqual(
      w.exits.map((x) => [x.exit.reason, x.exit.description, x.next]),
      [['spawn-failed', 'could not be started (spawn ENOTDIR)', 'backoff']],
    );
    assert.deepEqual(plain.exits.map((x) => [x.exit.reason, x.next]), [['spawn-failed', 'none']]);
    const e = await early;
    assert.equal(e.message, 'cannot send request `a` #1: `node` could not be started (spawn ENOTDIR); check the command and its options');
    const later = await rejectsWith(plain.peer.request('a', 2), 'PEER_EXITED');
    assert.equal(later.message, 'cannot send `a`: `node` could not be started (spawn ENOTDIR); check the command and its options');
    await w.peer.close();
    await plain.peer.close();
  });

  test('the events are typed: each listener gets its own payload', () => {
    // Compile-time checks (tsc runs before the tests): never called.
    const typed = (peer: PipePeer): void => {
      peer.on('restart', (info) => info.attempt + info.delayMs + (info.pid ?? 0) + (info.exit.code ?? 0));
      peer.on('exit', (info) => (info.next === 'open' ? info.delayMs : info.exit.reason.length));
      // @ts-expect-error a `restart` listener gets a RestartInfo, not a message
      peer.on('restart', (m: { msg_type: string }) => m.msg_type);
      // @ts-expect-error `next` is 'backoff' | 'open' | 'none'
      peer.on('exit', (info) => info.next === 'closed');
      // @ts-expect-error no such event
      peer.on('crash', () => {});
    };
    assert.equal(typeof typed, 'function');
  });

  test('bad supervision options are refused before anything starts', () => {
    assert.throws(
      () => spawnPeer('node', [], { restart: 'yes' as unknown as boolean }),
      (e: unknown) =>
        isPeerError(e, 'INVALID_ARGUMENT') &&
        e.message === 'spawnPeer: option `restart` must be true, false or an object { baseMs, capMs, maxRestarts, windowMs }, got "yes"',
    );
    assert.throws(
      () => spawnPeer('node', [], { restart: { windowMs: -5 } }),
      (e: unknown) => isPeerError(e, 'INVALID_ARGUMENT') && e.message === 'spawnPeer: option `restart`.windowMs must be a number of milliseconds from 1 to Infinity, got -5',
    );
    assert.throws(
      () => spawnPeer('node', [], { hangMs: -1 }),
      (e: unknown) =>
        isPeerError(e, 'INVALID_ARGUMENT') &&
        e.message === 'spawnPeer: option `hangMs` must be a non-negative number of milliseconds (0 or Infinity: no timeout), got -1',
    );
  });
});

describe('spawnPeer supervision: timeouts and hangs', () => {
  test('timeoutMs fails only the request that waited; the child and the other requests go on', async () => {
    const w = supervised('node', [SUPERVISED], { restart: true, graceMs: 100 });
    const pid = w.peer.pid;
    const stuck = w.peer.request('never', 'x', { timeoutMs: 200 });
    const answered = w.peer.request('echo', 'y');
    await rejectsWith(stuck, 'TIMEOUT');
    assert.deepEqual(await answered, { msg_type: 'echo', data: 'y', id: 2 });
    assert.deepEqual(await w.peer.request('echo', 'z'), { msg_type: 'echo', data: 'z', id: 3 });
    assert.equal(w.peer.pid, pid);
    assert.ok(pid !== undefined && alive(pid));
    assert.deepEqual([w.exits.length, w.restarts.length], [0, 0]);
    await w.peer.close();
  });

  test('a request that times out behind a full stdin says the child is not reading it, not that it waited for a maxInFlight slot', async () => {
    // Never reads its stdin: the 1 MiB request fills the pipe; the next cannot be written.
    const w = supervised('node', ['-e', 'setInterval(() => {}, 1000)'], { timeoutMs: 200, graceMs: 50 });
    await rejectsWith(w.peer.request('data', 'x'.repeat(1 << 20)), 'TIMEOUT');
    const e = await rejectsWith(w.peer.request('data', 'small'), 'TIMEOUT');
    assert.equal(
      e.message,
      "request `data` #2 got no reply within 200 ms (it was still waiting for room in the child's stdin, full of what was written " +
        'before it: is the child reading its stdin?); raise timeoutMs (per request or for the peer) if the work takes longer, or check that the peer is alive',
    );
    assert.deepEqual(w.peer.stats().inFlight, 0);
    await w.peer.close();
  });

  test('hangMs is off by default: a silent child only times requests out, and is neither stopped nor restarted', async () => {
    const w = supervised('node', [SUPERVISED, '--hang-after', '1'], { restart: true, timeoutMs: 300, graceMs: 50 });
    const pid = w.peer.pid;
    await rejectsWith(w.peer.request('echo', 'x'), 'TIMEOUT');
    await rejectsWith(w.peer.request('echo', 'y'), 'TIMEOUT');
    assert.ok(pid !== undefined && alive(pid), 'the hung child still runs');
    assert.deepEqual([w.exits.length, w.restarts.length], [0, 0]);
    // close() ends it all the same: it ignores EOF and SIGTERM, so SIGKILL.
    assert.deepEqual(await w.peer.close(), { code: null, signal: 'SIGKILL' });
  });

  test('hangMs without restart: the silent child is stopped and its requests fail PEER_EXITED saying it hung', async () => {
    // hangMs counts from the first request, so it must exceed the child's start (Node's, on a busy machine).
    const w = supervised('node', [SUPERVISED, '--hang-after', '2'], { hangMs: 1000, graceMs: 50, timeoutMs: 10_000 });
    const pid = w.peer.pid;
    assert.ok(pid !== undefined);
    assert.deepEqual(await w.peer.request('echo', 'a'), { msg_type: 'echo', data: 'a', id: 1 });
    const pending = [w.peer.request('echo', 'b'), w.peer.request('echo', 'c')];
    const exit = await w.nextExit();
    for (const p of pending) {
      const e = await rejectsWith(p, 'PEER_EXITED');
      assert.match(
        e.message,
        new RegExp(
          `^request \`echo\` #[23] cannot be answered: the peer \`node\` \\(pid ${pid}\\) was declared hung after 1000 ms: nothing at all ` +
            'arrived on its stdout for 1000 ms while 2 requests were pending \\(hangMs\\); it is stopped with the shutdown sequence; ' +
            'its stderr ended with:\\nhanging after 2 requests\\n$',
        ),
      );
      assert.deepEqual([e.exitCode, e.signal], [null, null]);
    }
    assert.deepEqual([exit.exit.reason, exit.next], ['hang', 'none']);
    assert.ok(await gone(pid), 'the shutdown sequence ran without close()');
    await rejectsWith(w.peer.request('echo', 'd'), 'PEER_EXITED');
    assert.deepEqual(await w.peer.close(), { code: null, signal: 'SIGKILL' });
  });

  test('hangMs with restart: the hung child is replaced and the next request is answered', async () => {
    const w = supervised('node', [SUPERVISED, '--hang-after', '2'], { restart: { baseMs: 1, capMs: 1 }, hangMs: 1000, graceMs: 50 });
    const first = w.peer.pid;
    assert.deepEqual(await w.peer.request('echo', 'a'), { msg_type: 'echo', data: 'a', id: 1 });
    const e = await rejectsWith(w.peer.request('echo', 'b'), 'PEER_EXITED');
    assert.match(e.message, /was declared hung after 1000 ms: nothing at all arrived on its stdout for 1000 ms while 1 request was pending \(hangMs\)/);
    assert.deepEqual(await w.peer.request('echo', 'c'), { msg_type: 'echo', data: 'c', id: 3 });
    assert.equal(w.restarts.length, 1);
    assert.deepEqual([w.restarts[0]?.exit.pid, w.restarts[0]?.exit.reason, w.restarts[0]?.attempt], [first, 'hang', 1]);
    assert.notEqual(w.peer.pid, first);
    assert.ok(first !== undefined && (await gone(first)), 'the hung child was stopped');
    await w.peer.close();
  });

  test('hangMs: a child that stops reading its stdin is declared hung, though every request written to it timed out first', async () => {
    // Never reads its stdin nor writes: the first 1 MiB request fills the pipe and times out
    // (timeoutMs below hangMs); the next waits behind it, unwritten, and is pending all the same.
    const w = supervised('node', ['-e', 'setInterval(() => {}, 1000)'], { hangMs: 800, timeoutMs: 300, graceMs: 50 });
    const pid = w.peer.pid;
    assert.ok(pid !== undefined);
    const big = 'x'.repeat(1 << 20);
    await rejectsWith(w.peer.request('data', big), 'TIMEOUT');
    const exit = w.nextExit();
    const e = await rejectsWith(w.peer.request('data', 'small', { timeoutMs: 20_000 }), 'PEER_EXITED');
    assert.match(
      e.message,
      new RegExp(
        `^request \`data\` #2 cannot be answered: the peer \`node\` \\(pid ${pid}\\) was declared hung after 800 ms: nothing at all ` +
          'arrived on its stdout for 800 ms while 1 request was pending \\(hangMs\\)',
      ),
    );
    assert.deepEqual([(await exit).exit.reason, (await exit).next], ['hang', 'none']);
    assert.ok(await gone(pid), 'the hung child was stopped without close()');
    await w.peer.close();
  });

  test('hangMs: a child that keeps writing anything at all is not hung', async () => {
    // Never answers, but writes an unsolicited line every 50 ms.
    const script = "setInterval(() => process.stdout.write('{\"msg_type\":\"tick\",\"data\":null}\\n'), 50); process.stdin.resume();";
    const w = supervised('node', ['-e', script], { restart: true, hangMs: 400, timeoutMs: 1200, graceMs: 50 });
    let ticks = 0;
    const started = new Promise<void>((resolve) => {
      w.peer.on('message', () => {
        ticks++;
        resolve();
      });
    });
    // Once it runs (its start on a busy machine is not what is tested), it writes every 50 ms.
    await started;
    await rejectsWith(w.peer.request('echo', 'x'), 'TIMEOUT');
    assert.ok(ticks > 5, `it kept writing: ${ticks}`);
    assert.deepEqual([w.exits.length, w.restarts.length], [0, 0]);
    await w.peer.close();
  });
});
