// `serveStdio` and `main.js` under msgpack read a stdin pipe straight into their frames
// (`FrameDecoder.readBuffer`, an `onread` socket on fd 0) and write a big `bin` reply from
// where it is: these drive real children over real pipes with frames split across writes,
// spanning many reads, empty, over the limit and cut, a reader that stops reading, and a
// stdin that is a file (read the old way).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { FrameDecoder } from '../frame.js';
import { decodeMsgpackEnvelope, textFrame } from '../msgpack.js';
import { encodeFrame } from '../peer/encode.js';

const SERVICE = fileURLToPath(new URL('./fixtures/service.js', import.meta.url));
const MAIN = fileURLToPath(new URL('../main.js', import.meta.url));
const STDIN_LOOK = fileURLToPath(new URL('./fixtures/stdin-look.js', import.meta.url));

const req = (msgType: string, data: unknown, id?: number): Buffer => encodeFrame(msgType, data, id);
const err = (text: string, id?: number): Buffer => textFrame('error', text, id);

/** `size` bytes that differ from frame to frame (`seed`) and along the frame. */
function pattern(size: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(size);
  for (let i = 0; i < size; i++) b[i] = (i * 31 + seed * 7 + (i >> 10)) & 0xff;
  return b;
}

const tick = (ms = 1): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A child serving msgpack, its stdout collected; `pieces` are written one at a time, each after the last was taken. */
async function converse(
  script: string,
  args: string[],
  pieces: Buffer[],
  options: { pause?: (stdout: NodeJS.ReadableStream) => Promise<void>; gapMs?: number } = {},
): Promise<{ stdout: Buffer; stderr: string; code: number | null }> {
  const child = spawn(process.execPath, [script, '--encoding', 'msgpack', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  const out: Buffer[] = [];
  let stderr = '';
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  child.stdin.on('error', () => {});
  const closed = new Promise<number | null>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve(code));
  });
  child.stdout.on('data', (b: Buffer) => out.push(b));
  const paused = options.pause?.(child.stdout);
  for (const piece of pieces) {
    await new Promise<void>((resolve) => child.stdin.write(piece, () => resolve()));
    // Let the child read it on its own, so that reads end where the writes did.
    await tick(options.gapMs);
  }
  child.stdin.end();
  await paused;
  const code = await closed;
  return { stdout: Buffer.concat(out), stderr, code };
}

/** The frames of `bytes`, decoded, for a failure message a person can read. */
function readable(bytes: Buffer): string {
  const d = new FrameDecoder();
  return JSON.stringify(
    [...d.push(bytes), ...d.end()].map((p) => {
      if (p.kind !== 'frame') return p;
      const m = decodeMsgpackEnvelope(p.bytes);
      return m.ok && Buffer.isBuffer(m.message.data) ? { ...m.message, data: `<${m.message.data.length} bytes>` } : m;
    }),
  ).slice(0, 2000);
}

function assertReplies(got: Buffer, want: Buffer[]): void {
  const all = Buffer.concat(want);
  assert.ok(got.equals(all), `got ${got.length} bytes, want ${all.length}: ${readable(got)}`);
}

describe('serveStdio reading a stdin pipe straight into its frames', () => {
  test('a big bin frame written in many pieces, split inside its header too, is echoed whole', async () => {
    const body = pattern(300 * 1024, 1);
    const frame = req('echo', body, 1);
    // The header in three writes (1, 2, 1 bytes), then the body in uneven pieces.
    const pieces = [frame.subarray(0, 1), frame.subarray(1, 3), frame.subarray(3, 4)];
    for (let at = 4, step = 1; at < frame.length; at += step, step = (step * 7 + 13) % 40_000) {
      pieces.push(frame.subarray(at, Math.min(frame.length, at + step)));
    }
    const r = await converse(SERVICE, [], pieces);
    assertReplies(r.stdout, [req('echo', body, 1)]);
    assert.deepEqual([r.stderr, r.code], ['served\n', 0]);
  });

  test('many frames in one write, empty and over-long ones among them, each answered in order', async () => {
    const tiny = Array.from({ length: 500 }, (_, k) => req('echo', k, k + 1));
    const long = req('echo', pattern(200 * 1024, 2), 501);
    const big = req('echo', pattern(100 * 1024, 3), 502);
    const input = Buffer.concat([...tiny, Buffer.alloc(4), long, big, req('echo', 'last', 503)]);
    const r = await converse(SERVICE, ['--max-frame-bytes', String(150 * 1024)], [input]);
    assertReplies(r.stdout, [
      ...Array.from({ length: 500 }, (_, k) => req('echo', k, k + 1)),
      err('frame 501: empty frame'),
      err(`frame 502: frame of ${long.length - 4} bytes exceeds the ${150 * 1024}-byte limit`),
      req('echo', pattern(100 * 1024, 3), 502),
      req('echo', 'last', 503),
    ]);
    assert.equal(r.code, 0);
  });

  test('a stream cut inside a big frame is reported with the bytes that did arrive', async () => {
    const frame = req('echo', pattern(300 * 1024, 4), 2);
    const r = await converse(SERVICE, [], [req('echo', 'a', 1), frame.subarray(0, 70_000), frame.subarray(70_000, 200_004)]);
    assertReplies(r.stdout, [
      req('echo', 'a', 1),
      err(`frame 2: the stream ended inside the frame, after 200000 of its ${frame.length - 4} bytes`),
    ]);
    assert.equal(r.code, 0);
  });

  test('a writer killed in the middle of a big frame: the bytes that arrived are reported, once', async () => {
    const body = pattern(300 * 1024, 6);
    const frame = req('echo', body, 2);
    const sent = Buffer.concat([req('echo', 'a', 1), frame.subarray(0, 100_004)]);
    // The writer is a process of its own whose stdout is the service's stdin (a socket pair).
    // It passes on what it is given, says when that has all been written, and waits to be killed.
    const script =
      "process.stdin.pipe(process.stdout, { end: false }); process.stdin.on('end', () => " +
      "process.stdout.write('', () => process.stderr.write('written'))); setInterval(() => {}, 1000);";
    const writer = spawn(process.execPath, ['-e', script], { stdio: ['pipe', 'pipe', 'pipe'] });
    writer.stdin.end(sent);
    const service = spawn(process.execPath, [SERVICE, '--encoding', 'msgpack'], { stdio: [writer.stdout, 'pipe', 'pipe'] });
    try {
      // Only the two children hold the writer's end now: its death is the service's EOF.
      writer.stdout.destroy();
      const out: Buffer[] = [];
      let stdout = Buffer.alloc(0);
      const first = req('echo', 'a', 1);
      const answered = new Promise<void>((resolve) =>
        service.stdout.on('data', (b: Buffer) => {
          out.push(b);
          stdout = Buffer.concat(out);
          if (stdout.length >= first.length) resolve();
        }),
      );
      const written = new Promise<void>((resolve) => writer.stderr.on('data', (b: Buffer) => b.toString().includes('written') && resolve()));
      await Promise.all([answered, written]);
      writer.kill('SIGKILL');
      const code = await new Promise((resolve) => service.on('close', resolve));
      assertReplies(stdout, [first, err(`frame 2: the stream ended inside the frame, after 100000 of its ${frame.length - 4} bytes`)]);
      assert.equal(code, 0);
    } finally {
      writer.kill('SIGKILL');
      service.kill('SIGKILL');
    }
  });

  test('a stream cut inside a header, and an over-long frame cut while skipped', async () => {
    const cutHeader = await converse(SERVICE, [], [req('echo', 'a', 1), Buffer.from([9, 0])]);
    assertReplies(cutHeader.stdout, [
      req('echo', 'a', 1),
      err("frame 2: the stream ended inside the frame's 4-byte length header, after 2 bytes"),
    ]);
    const long = req('echo', pattern(100_000, 5), 1);
    const cutLong = await converse(SERVICE, ['--max-frame-bytes', '1000'], [long.subarray(0, 50_000)]);
    assertReplies(cutLong.stdout, [err(`frame 1: the stream ended inside the frame, after 49996 of its ${long.length - 4} bytes`)]);
  });

  test('big replies to a reader that stops reading keep their bytes; reading stops and resumes', async () => {
    const N = 24;
    const SIZE = 1024 * 1024;
    const frames = Array.from({ length: N }, (_, k) => req('echo', pattern(SIZE, 10 + k), k + 1));
    const child = spawn(process.execPath, [SERVICE, '--encoding', 'msgpack'], { stdio: ['pipe', 'pipe', 'pipe'] });
    try {
      const stdout = child.stdout;
      stdout.pause();
      let accepted = 0;
      for (const frame of frames) child.stdin.write(frame, () => accepted++);
      // Nothing read from its stdout: it stops reading its stdin once its stdout is full, so
      // our writes stay pending (its replies, views of what it read, wait in its queue).
      for (let i = 0; i < 50 && accepted < N; i++) await tick(10);
      assert.ok(accepted < N, `the child read all ${N} MiB while nobody read its replies`);
      const out: Buffer[] = [];
      stdout.on('data', (b: Buffer) => out.push(b));
      stdout.resume();
      const closed = new Promise((resolve) => child.on('close', resolve));
      child.stdin.end();
      await closed;
      assertReplies(Buffer.concat(out), frames);
    } finally {
      child.kill();
    }
  });

  test('process.stdin stays usable while serving: its fd is 0 and its end event fires', async () => {
    const r = await converse(STDIN_LOOK, [], [
      Buffer.concat([req('stdin_fd', null, 1), req('watch_stdin_end', null, 2)]),
      req('echo', pattern(100_000, 7), 3),
    ]);
    assertReplies(r.stdout, [req('stdin_fd', 0, 1), req('watch_stdin_end', true, 2), req('echo', pattern(100_000, 7), 3)]);
    assert.deepEqual([r.stderr, r.code], ['stdin ended\nserved\n', 0]);
  });

  test("serveStdio in a worker thread reads the worker's stdin, not the process's fd 0", async () => {
    const serve = new URL('../serve.js', import.meta.url).href;
    // A process whose worker serves its `process.stdin` (fed by the process); the process
    // prints the first reply the worker writes, and stops it.
    const script = `
      const { Worker } = require('node:worker_threads');
      const w = new Worker(\`import(\${JSON.stringify(${JSON.stringify(serve)})}).then(({ serveStdio }) =>
        serveStdio({ echo: (d) => d }, { encoding: 'msgpack' }))\`, { eval: true, stdin: true, stdout: true });
      let out = Buffer.alloc(0);
      w.stdout.on('data', (b) => {
        out = Buffer.concat([out, b]);
        if (out.length >= 4 && out.length >= 4 + out.readUInt32LE(0)) w.terminate();
      });
      w.stdin.end(Buffer.from(process.argv[1], 'hex'));
      w.on('exit', () => process.stdout.write(out));`;
    const child = spawn(process.execPath, ['-e', script, req('echo', 'from the worker stdin', 1).toString('hex')], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    try {
      const out: Buffer[] = [];
      child.stdout.on('data', (b: Buffer) => out.push(b));
      // The process's own stdin carries another request, which nobody should read.
      child.stdin.on('error', () => {});
      child.stdin.end(req('echo', 'from the process stdin', 2));
      const code = await new Promise((resolve) => child.on('close', resolve));
      assertReplies(Buffer.concat(out), [req('echo', 'from the worker stdin', 1)]);
      assert.equal(code, 0);
    } finally {
      child.kill();
    }
  });

  test('a stray exception thrown after a read (the process going on, with an uncaughtException handler): a request a handler still holds stays intact, and the next read lands where the decoder expects', async () => {
    // The exception is thrown on the next tick, within the read's callback scope: Node then
    // keeps reading into the last buffer instead of the one asked for next, over the frame the
    // first handler still holds as a view (see in-place.ts).
    const dir = mkdtempSync(path.join(tmpdir(), 'serve-read-'));
    try {
      const script = path.join(dir, 'keep.mjs');
      writeFileSync(
        script,
        `import { serveStdio } from ${JSON.stringify(fileURLToPath(new URL('../serve.js', import.meta.url)))};
        const errors = [];
        process.on('uncaughtException', (e) => errors.push(e.message));
        let release;
        const second = new Promise((resolve) => (release = resolve));
        let held;
        await serveStdio({
          keep: async (data) => {
            if (held !== undefined) {
              release();
              return data;
            }
            held = data;
            process.nextTick(() => { throw new Error('stray'); });
            await second;
            return Buffer.concat([Buffer.from(errors.join(',') + ':'), held]);
          },
        }, { encoding: 'msgpack' });`,
      );
      const r = await converse(script, [], [req('keep', pattern(100, 1), 1), req('keep', pattern(100, 2), 2)], { gapMs: 300 });
      assertReplies(r.stdout, [req('keep', pattern(100, 2), 2), req('keep', Buffer.concat([Buffer.from('stray:'), pattern(100, 1)]), 1)]);
      assert.deepEqual([r.stderr, r.code], ['', 0]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('main.js answers the same bytes whether its stdin is a pipe or a file', async () => {
    const input = Buffer.concat([
      req('greeting', 'hi', 1),
      req('data', 'x'.repeat(100_000), 2),
      Buffer.from([1, 0, 0, 0, 0x91]),
      req('data', 'y', 3),
      Buffer.from([5, 0, 0, 0, 0x80]),
    ]);
    const viaPipe = await converse(MAIN, ['--exit-after', '0'], [input]);
    const dir = mkdtempSync(path.join(tmpdir(), 'serve-read-'));
    try {
      const file = path.join(dir, 'input.bin');
      writeFileSync(file, input);
      const fd = openSync(file, 'r');
      const viaFile = await new Promise<Buffer>((resolve, reject) => {
        const child = spawn(process.execPath, [MAIN, '--encoding', 'msgpack', '--exit-after', '0'], { stdio: [fd, 'pipe', 'inherit'] });
        const out: Buffer[] = [];
        assert.ok(child.stdout !== null);
        child.stdout.on('data', (b: Buffer) => out.push(b));
        child.on('error', reject);
        child.on('close', () => resolve(Buffer.concat(out)));
      });
      closeSync(fd);
      assert.equal(viaFile.toString('hex'), viaPipe.stdout.toString('hex'));
      const d = new FrameDecoder();
      const replies = [...d.push(viaPipe.stdout), ...d.end()].map((p) => (p.kind === 'frame' ? decodeMsgpackEnvelope(p.bytes) : p));
      assert.equal(replies.length, 5, readable(viaPipe.stdout));
      assert.deepEqual(replies[4], {
        ok: true,
        message: { msg_type: 'error', data: 'frame 5: the stream ended inside the frame, after 1 of its 5 bytes' },
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
