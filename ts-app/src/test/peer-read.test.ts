// How `spawnPeer` reads a msgpack child's stdout: in place (child.ts `readInPlace`: a socket
// that took `child.stdout`'s handle over, reading into the frame decoder's memory), and
// everything around the child's life that must behave as it does when the stream reads it
// (JSON): a cut frame, an over-long one, stderr, restarts, what the child leaves behind, the
// descriptors, Node's own exit.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { Socket } from 'node:net';
import path from 'node:path';
import { after, describe, test } from 'node:test';

import { FrameDecoder, type Packet } from '../frame.js';
import { type Message, PeerError, type PipePeer, spawnPeer } from '../index.js';
import { readInPlace } from '../peer/child.js';
import { REPO_ROOT } from './vectors.js';

const SERVE_BIN = path.join(REPO_ROOT, 'target', 'debug', 'rust-ts-ipc');
const INDEX = path.join(REPO_ROOT, 'ts-app', 'dist', 'index.js');

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

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** True while a process with `pid` exists and is not a zombie. */
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

async function until(condition: () => boolean, ms = 5000): Promise<boolean> {
  const deadline = performance.now() + ms;
  while (!condition()) {
    if (performance.now() > deadline) return false;
    await sleep(10);
  }
  return true;
}

async function gone(pid: number, ms = 2000): Promise<boolean> {
  return until(() => !alive(pid), ms);
}

function kill(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

/** The next unsolicited message (or a failure after `ms`). */
function nextMessage(peer: PipePeer<unknown>, ms = 5000): Promise<Message<unknown>> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no unsolicited message within ${ms} ms`)), ms);
    const listener = (m: Message<unknown>): void => {
      clearTimeout(timer);
      peer.off('message', listener);
      resolve(m);
    };
    peer.on('message', listener);
  });
}

/**
 * JavaScript for a Node child: `frame(msgType, bytes)` makes the frame `{msg_type, data: bin}`
 * (4-byte little-endian length, then the map) by hand, so the child needs nothing from here.
 */
const FRAME_JS = `
  const frame = (t, d) => {
    const head = Buffer.concat([Buffer.from([0x82, 0xa8]), Buffer.from('msg_type'), Buffer.from([0xa0 | t.length]), Buffer.from(t),
      Buffer.from([0xa4]), Buffer.from('data'), Buffer.from([0xc6, d.length >>> 24, (d.length >> 16) & 255, (d.length >> 8) & 255, d.length & 255])]);
    const len = Buffer.alloc(4); len.writeUInt32LE(head.length + d.length);
    return Buffer.concat([len, head, d]);
  };`;

/** `n` bytes counting 0, 1, …, 250, 0, … (a pattern no shift of itself matches: a misplaced read shows). */
function pattern(n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = i % 251;
  return b;
}
const PATTERN_JS = `const pattern = (n) => { const b = Buffer.alloc(n); for (let i = 0; i < n; i++) b[i] = i % 251; return b; };`;

describe('readInPlace: the msgpack child\'s stdout read into the decoder\'s memory', () => {
  test('takes child.stdout\'s handle over on this Node, in child.stdio\'s place, and reads frames big and small whole, in order, then closes', async () => {
    const child = spawn(
      process.execPath,
      ['-e', `${FRAME_JS}${PATTERN_JS} process.stdout.write(Buffer.concat([frame('big', pattern(3 << 20)), frame('s', Buffer.from('hi'))]));`],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    const stdout = child.stdout;
    let readBuffers = 0;
    const decoder = new (class extends FrameDecoder {
      override readBuffer(): Buffer {
        readBuffers++;
        return super.readBuffer();
      }
    })();
    const packets: Packet[] = [];
    const socket = readInPlace(child, decoder, (p) => packets.push(...p));
    assert.ok(socket instanceof Socket, 'the in-place reader is used on this Node (not the stream fallback)');
    assert.equal(child.stdio[1], socket);
    assert.notEqual(socket, stdout);
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    const ended = new Promise<void>((resolve) => socket.once('end', () => resolve()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    assert.equal(await exited, 0);
    await ended;
    await closed;
    assert.deepEqual(
      packets.map((p) => (p.kind === 'frame' ? [p.frame, p.bytes.length] : [p.kind])),
      [
        [1, 24 + (3 << 20)],
        [2, 24],
      ],
    );
    const big = packets[0];
    assert.ok(big?.kind === 'frame');
    assert.ok(big.bytes.subarray(24).equals(pattern(3 << 20)), 'the big frame\'s body is intact');
    assert.ok(readBuffers > 0, 'the decoder gave the buffers the kernel filled');
    assert.deepEqual(decoder.end(), [], 'nothing was left half read');
  });

  test('a route that throws: reported as an uncaught exception, and the reads after it land where the decoder expects (no frame handed out is overwritten)', () => {
    // The child writes frame A (100 × 'A'), then, once it has surely been read, frame B (100 × 'B').
    // The route throws on the read that completed A: Node then asks no fresh buffer (its
    // `onread` asks one only after the callback returns), so the next read must not land on A.
    const script = `
      import { spawn } from 'node:child_process';
      import { FrameDecoder } from ${JSON.stringify(path.join(REPO_ROOT, 'ts-app', 'dist', 'frame.js'))};
      import { readInPlace } from ${JSON.stringify(path.join(REPO_ROOT, 'ts-app', 'dist', 'peer', 'child.js'))};
      const errors = [];
      process.on('uncaughtException', (e) => errors.push(e.message));
      const js = \`const f = (b) => { const h = Buffer.alloc(4); h.writeUInt32LE(b.length); return Buffer.concat([h, b]); };
        process.stdout.write(f(Buffer.alloc(100, 0x41)), () => setTimeout(() => process.stdout.write(f(Buffer.alloc(100, 0x42))), 200));\`;
      const child = spawn(process.execPath, ['-e', js], { stdio: ['pipe', 'pipe', 'pipe'] });
      const frames = [];
      let reads = 0;
      const socket = readInPlace(child, new FrameDecoder(), (packets) => {
        frames.push(...packets);
        if (++reads === 1) throw new Error('route threw');
      });
      await new Promise((resolve) => socket.once('close', resolve));
      console.log(JSON.stringify({ errors, frames: frames.map((p) => (p.kind === 'frame' ? p.bytes.toString('latin1') : p.kind)) }));`;
    const run = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(run.status, 0, run.stderr);
    assert.deepEqual(JSON.parse(run.stdout), { errors: ['route threw'], frames: ['A'.repeat(100), 'B'.repeat(100)] });
  });

  test('a spawn that fails for lack of descriptors (EMFILE: Node gives the child no stdio at all) fails the requests PEER_EXITED, under msgpack and json, instead of throwing', () => {
    // In a process of its own: every descriptor is taken (then given back) around spawnPeer.
    const script = `
      import { openSync, closeSync } from 'node:fs';
      import { spawnPeer } from ${JSON.stringify(INDEX)};
      const out = [];
      for (const encoding of ['msgpack', 'json']) {
        const held = [];
        try {
          for (;;) held.push(openSync('/dev/null', 'r'));
        } catch {}
        let p;
        try {
          p = spawnPeer('sh', ['-c', 'cat'], { encoding });
        } catch (e) {
          out.push([encoding, 'threw', String(e)]);
        }
        for (const fd of held) closeSync(fd);
        if (p !== undefined) {
          const exit = new Promise((resolve) => p.on('exit', (info) => resolve(info.exit.reason)));
          await p.request('x', 'y').catch((e) => out.push([encoding, e.code, e.message]));
          out.push([encoding, await exit, await p.close()]);
        }
      }
      console.log(JSON.stringify(out));`;
    const run = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(run.status, 0, run.stderr);
    const cannot =
      'cannot send request `x` #1: `sh` could not be started (spawn sh EMFILE); the process has too many open files: close some, or raise its limit (`ulimit -n`)';
    assert.deepEqual(JSON.parse(run.stdout), [
      ['msgpack', 'PEER_EXITED', cannot],
      ['msgpack', 'spawn-failed', { code: null, signal: null }],
      ['json', 'PEER_EXITED', cannot],
      ['json', 'spawn-failed', { code: null, signal: null }],
    ]);
  });

  test('a child that could not be started keeps the stream (no pid: nothing to take over)', async () => {
    const child = spawn(path.join(REPO_ROOT, 'no-such-program'), [], { stdio: ['pipe', 'pipe', 'pipe'] });
    const failed = new Promise<string | undefined>((resolve) => child.once('error', (e: NodeJS.ErrnoException) => resolve(e.code)));
    assert.equal(readInPlace(child, new FrameDecoder(), () => {}), undefined);
    assert.equal(child.stdio[1], child.stdout);
    assert.equal(await failed, 'ENOENT');
  });
});

describe('spawnPeer over msgpack, read in place: the child\'s life as over the stream', () => {
  const open: PipePeer<unknown>[] = [];
  const track = <P extends PipePeer<unknown>>(p: P): P => {
    open.push(p);
    return p;
  };
  after(async () => {
    await Promise.all(open.map((p) => p.close({ graceMs: 100 })));
  });

  test('a child that dies inside a frame: the cut is frame N, and the pending request fails PEER_EXITED with its exit and stderr', async () => {
    // Announces 100 bytes, writes 10, and exits 3 (after a word on stderr).
    const p = track(
      spawnPeer(
        process.execPath,
        ['-e', `process.stdin.once('data', () => { process.stderr.write('dying'); const h = Buffer.alloc(4); h.writeUInt32LE(100); process.stdout.write(Buffer.concat([h, Buffer.alloc(10)]), () => process.exit(3)); });`],
        { encoding: 'msgpack', stderr: 'ignore' },
      ),
    );
    const cut = nextMessage(p);
    const e = await rejectsWith(p.request('bytes', Buffer.from('x')), 'PEER_EXITED');
    assert.deepEqual(await cut, { msg_type: 'error', data: 'frame 1: the stream ended inside the frame, after 10 of its 100 bytes' });
    assert.equal(e.exitCode, 3);
    assert.equal(e.stderrTail, 'dying');
    assert.match(e.message, /exited with code 3; its stderr ended with:\ndying$/);
    assert.deepEqual(await p.close(), { code: 3, signal: null });
  });

  test('a message listener that throws (the process going on, with an uncaughtException handler): the message it got stays intact, and the next read lands where the decoder expects', () => {
    // The listener's exception is rethrown on the next tick, within the read's callback scope:
    // Node then keeps reading into the last buffer instead of the one asked for next.
    const script = `
      import { spawnPeer } from ${JSON.stringify(INDEX)};
      const errors = [];
      process.on('uncaughtException', (e) => errors.push(e.message));
      ${FRAME_JS}
      const child = \`${FRAME_JS.replace(/\s+/g, ' ')} process.stdout.write(frame('a', Buffer.alloc(100, 0x41)), () => setTimeout(() => process.stdout.write(frame('b', Buffer.alloc(100, 0x42))), 200)); process.stdin.resume();\`;
      const p = spawnPeer(process.execPath, ['-e', child], { encoding: 'msgpack' });
      const got = [];
      p.on('message', (m) => {
        got.push(m);
        if (got.length === 1) throw new Error('listener threw');
      });
      const deadline = performance.now() + 3000;
      while (got.length < 2 && performance.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
      await p.close({ graceMs: 100 });
      console.log(JSON.stringify({ errors, got: got.map((m) => [m.msg_type, Buffer.isBuffer(m.data) ? m.data.toString('latin1') : m.data]) }));`;
    const run = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 10_000 });
    assert.equal(run.status, 0, run.stderr);
    assert.deepEqual(JSON.parse(run.stdout), {
      errors: ['listener threw'],
      got: [
        ['a', 'A'.repeat(100)],
        ['b', 'B'.repeat(100)],
      ],
    });
  });

  test('frames over maxFrameBytes are skipped as they arrive, reported as frame N, and the next (big) one is delivered whole', async () => {
    const p = track(
      spawnPeer(
        process.execPath,
        ['-e', `${FRAME_JS}${PATTERN_JS} process.stdout.write(Buffer.concat([frame('huge', Buffer.alloc(5 << 20)), frame('note', pattern(1 << 20))])); process.stdin.resume();`],
        { encoding: 'msgpack', maxFrameBytes: 2 << 20 },
      ),
    );
    const first = await nextMessage(p);
    assert.deepEqual(first, { msg_type: 'error', data: `frame 1: frame of ${25 + (5 << 20)} bytes exceeds the ${2 << 20}-byte limit` });
    const second = await nextMessage(p);
    assert.equal(second.msg_type, 'note');
    assert.ok(Buffer.isBuffer(second.data) && second.data.equals(pattern(1 << 20)), 'the 1 MiB frame after the skipped one is intact');
  });

  test('with restart, a killed child is replaced and the fresh one answers 1 MiB bytes, read in place as the first', { skip: !existsSync(SERVE_BIN) }, async () => {
    const p = track(spawnPeer(SERVE_BIN, ['serve', '--encoding', 'msgpack'], { encoding: 'msgpack', restart: { baseMs: 1, capMs: 1 } }));
    const data = pattern(1 << 20);
    const one = await p.request('bytes', data);
    assert.ok(Buffer.isBuffer(one.data) && one.data.equals(data));
    const first = p.pid;
    assert.ok(first !== undefined);
    const exited = new Promise((resolve) => p.on('exit', resolve));
    process.kill(first, 'SIGKILL');
    await exited;
    const two = await p.request('bytes', data);
    assert.notEqual(p.pid, first);
    assert.ok(Buffer.isBuffer(two.data) && two.data.equals(data), 'the fresh child\'s reply is intact');
    assert.ok(Buffer.isBuffer(one.data) && one.data.equals(data), 'the first reply was not overwritten');
  });

  test('bytes replies are the caller\'s to keep: small ones (views of a shared read buffer) and big ones stay as they were while later replies arrive', { skip: !existsSync(SERVE_BIN) }, async () => {
    const p = track(spawnPeer(SERVE_BIN, ['serve', '--encoding', 'msgpack'], { encoding: 'msgpack' }));
    // Small and big replies mixed, many in flight: small ones share read buffers, big ones
    // are read straight into their own; reading on must never overwrite one handed out.
    const sent = Array.from({ length: 300 }, (_, i) => (i % 50 === 49 ? pattern(300_000 + i) : Buffer.alloc(1 + (i % 200), i % 251)));
    const replies = await Promise.all(sent.map((data) => p.request('bytes', data)));
    const more = await Promise.all(sent.map((data) => p.request('bytes', data)));
    for (const [i, data] of sent.entries()) {
      const first = replies[i]?.data;
      const second = more[i]?.data;
      assert.ok(Buffer.isBuffer(first) && first.equals(data), `reply ${i + 1} is intact after 300 more`);
      assert.ok(Buffer.isBuffer(second) && second.equals(data), `reply ${i + 301} is intact`);
    }
  });

  test('a child that exited with its pipes closed: close returns its status, and what it left in its group, pipes not held, is not killed', async () => {
    // The background sleep holds none of the pipes: the child's stdio all close at its exit.
    const p = track(spawnPeer('sh', ['-c', 'sleep 30 </dev/null >/dev/null 2>&1 & echo $! >&2; exit 5'], { encoding: 'msgpack', stderr: 'ignore' }));
    const exited = new Promise((resolve) => p.on('exit', resolve));
    assert.ok(await until(() => p.stderrTail().trim().length > 0));
    const sleeper = Number(p.stderrTail().trim());
    try {
      await exited;
      await sleep(200); // well past the settle delay after which leftovers holding the pipes are killed
      assert.ok(alive(sleeper), 'a process that holds none of the pipes is left alone');
      assert.deepEqual(await p.close(), { code: 5, signal: null });
    } finally {
      kill(sleeper);
    }
  });

  test('close also stops what the child left in its group holding the pipes', async () => {
    const p = track(spawnPeer('sh', ['-c', 'sleep 30 & echo $! >&2; read x'], { encoding: 'msgpack', stderr: 'ignore', graceMs: 2000 }));
    assert.ok(await until(() => p.stderrTail().trim().length > 0));
    const grandchild = Number(p.stderrTail().trim());
    assert.ok(grandchild > 0 && alive(grandchild), `grandchild ${grandchild}`);
    const started = performance.now();
    assert.deepEqual(await p.close(), { code: 1, signal: null });
    assert.ok(performance.now() - started < 1000, 'no grace period waited: the child itself exited');
    assert.ok(await gone(grandchild), 'the process left in its group is gone');
  });

  test('no descriptor is left behind by children started, answered and closed, or dead and replaced', { skip: !existsSync(SERVE_BIN) }, async () => {
    const fds = (): number => readdirSync('/proc/self/fd').length;
    // One peer first: whatever Node opens once (its signal pipe, say) is open before counting.
    const warm = spawnPeer(SERVE_BIN, ['serve', '--encoding', 'msgpack'], { encoding: 'msgpack' });
    await warm.request('bytes', Buffer.alloc(1));
    await warm.close();
    await sleep(50);
    const before = fds();
    for (let i = 0; i < 3; i++) {
      const p = spawnPeer(SERVE_BIN, ['serve', '--encoding', 'msgpack'], { encoding: 'msgpack', restart: { baseMs: 1, capMs: 1 } });
      await p.request('bytes', pattern(100_000));
      const pid = p.pid;
      assert.ok(pid !== undefined);
      const exited = new Promise((resolve) => p.on('exit', resolve));
      process.kill(pid, 'SIGKILL');
      await exited;
      await p.request('bytes', pattern(100_000));
      await p.close();
    }
    assert.ok(await until(() => fds() === before, 2000), `descriptors: ${before} before, ${fds()} after`);
  });

  test('Node exits by itself after close(), or after the child exits, whatever holds the pipes', { timeout: 30_000 }, () => {
    // A grandchild in its own session (out of reach of the group's signals) keeps the pipes open.
    // The child exits at its stdin's end or first byte (a frame has no newline for `read`).
    for (const close of [true, false]) {
      const script = `
        import { spawnPeer } from ${JSON.stringify(INDEX)};
        const p = spawnPeer('sh', ['-c', 'setsid sleep 30 & echo $! >&2; head -c 1 >/dev/null; exit 3'], { encoding: 'msgpack', stderr: 'ignore', graceMs: 200 });
        while (p.stderrTail().trim() === '') await new Promise((r) => setTimeout(r, 10));
        console.log(p.stderrTail().trim());
        ${close ? 'await p.close();' : "p.notify('data', 'x'); await p.request('data', 'x').catch((e) => console.log(e.code));"}`;
      const started = performance.now();
      const run = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 20_000 });
      const elapsed = performance.now() - started;
      const sleeper = Number(run.stdout.split('\n')[0]);
      if (sleeper > 0) kill(sleeper);
      assert.equal(run.status, 0, `close: ${close}; stdout ${run.stdout}; stderr ${run.stderr}`);
      if (!close) assert.equal(run.stdout.split('\n')[1], 'PEER_EXITED');
      assert.ok(elapsed < 10_000, `close: ${close}: Node exited after ${Math.round(elapsed)} ms`);
    }
  });
});
