// The real compiled child, `dist/main.js`, over real pipes: every pipe vector, exit codes,
// batching, backpressure, and stdout carrying protocol only.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { describeWithAddon } from './addon.js';
import { cases, cliArgsOf, expectedText, skipUnlessDemo, streamOf } from './vectors.js';

const MAIN = fileURLToPath(new URL('../main.js', import.meta.url));

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
}

/**
 * Runs the child with `args`, writes `input` (ignoring EPIPE: the child may stop reading
 * early), optionally keeps stdin open, and collects everything.
 */
function run(args: string[], input: Buffer | string, opts: { keepStdinOpen?: boolean } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    child.stdin.on('error', () => {});
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout: Buffer.concat(out), stderr }));
    child.stdin.write(input);
    if (opts.keepStdinOpen !== true) child.stdin.end();
  });
}

const pipeCases = cases.filter((c) => c.pipe !== false);

describe('main.js answers every pipe vector exactly', () => {
  for (const c of pipeCases) {
    test(c.name, { skip: skipUnlessDemo(c) }, async () => {
      const r = await run(cliArgsOf(c), streamOf(c));
      assert.equal(r.stdout.toString('utf8'), expectedText(c));
      assert.equal(r.stderr, '');
      assert.equal(r.code, 0);
    });
  }
});

describeWithAddon('main.js --engine native answers every pipe vector exactly', () => {
  for (const c of pipeCases) {
    test(c.name, { skip: skipUnlessDemo(c) }, async () => {
      const r = await run([...cliArgsOf(c), '--engine', 'native'], streamOf(c));
      assert.equal(r.stdout.toString('utf8'), expectedText(c));
      assert.equal(r.stderr, '');
      assert.equal(r.code, 0);
    });
  }
});

const line = (msgType: string, data: string, id?: number): string =>
  `${JSON.stringify({ msg_type: msgType, data, id })}\n`;

describe('main.js', () => {
  test('exits 0 on EOF without input', async () => {
    const r = await run([], '');
    assert.deepEqual([r.code, r.stdout.length, r.stderr], [0, 0, '']);
  });

  test('answers an unterminated last line at EOF', async () => {
    const r = await run([], '{"msg_type":"greeting","data":"hi"}');
    assert.equal(r.stdout.toString(), '{"msg_type":"response","data":"Hello from TypeScript!"}\n');
    assert.equal(r.code, 0);
  });

  test('exits after the exit reply although stdin stays open, and ignores the rest', async () => {
    const input = line('exit', '') + line('greeting', '');
    const r = await run([], input, { keepStdinOpen: true });
    assert.equal(r.stdout.toString(), '{"msg_type":"exit","data":"Goodbye from TypeScript!"}\n');
    assert.deepEqual([r.code, r.stderr], [0, '']);
  });

  test('exits after the goodbye to the Nth data message, stdin still open', async () => {
    const r = await run(
      ['--exit-after', '2', '--name', 'Node'],
      line('data', 'a') + line('data', 'b', 9) + line('data', 'c'),
      {
        keepStdinOpen: true,
      },
    );
    assert.equal(
      r.stdout.toString(),
      '{"msg_type":"ack","data":"Acknowledged: a"}\n{"msg_type":"ack","data":"Acknowledged: b","id":9}\n' +
        '{"msg_type":"exit","data":"Goodbye from Node!","id":9}\n',
    );
    assert.equal(r.code, 0);
  });

  test('flushes every reply of a large batch before exiting after the goodbye', async () => {
    const n = 20_000;
    const payload = 'x'.repeat(1000);
    const input = Array.from({ length: n }, (_, i) => line('data', payload, i)).join('');
    const r = await run(['--exit-after', String(n)], input, { keepStdinOpen: true });
    const lines = r.stdout.toString().split('\n');
    assert.equal(lines.length, n + 2, 'n acks, the exit, and the empty tail');
    assert.equal(lines[n - 1], `{"msg_type":"ack","data":"Acknowledged: ${payload}","id":${n - 1}}`);
    assert.equal(lines[n], `{"msg_type":"exit","data":"Goodbye from TypeScript!","id":${n - 1}}`);
    assert.equal(r.code, 0);
  });

  test('honours backpressure: a reader that pauses still gets every reply in order', async () => {
    const n = 5000;
    const payload = 'y'.repeat(4000);
    const child = spawn(process.execPath, [MAIN, '--exit-after', '0'], { stdio: ['pipe', 'pipe', 'pipe'] });
    const chunks: Buffer[] = [];
    child.stdout.pause();
    const input = Array.from({ length: n }, (_, i) => line('data', payload, i)).join('');
    child.stdin.end(input);
    // Let the child fill the pipe and stop on a full stdout before anything is read.
    await new Promise((resolve) => setTimeout(resolve, 300));
    child.stdout.on('data', (b: Buffer) => chunks.push(b));
    child.stdout.resume();
    const code = await new Promise((resolve) => child.on('close', resolve));
    const lines = Buffer.concat(chunks).toString().split('\n');
    assert.equal(lines.length, n + 1);
    assert.ok(
      lines.slice(0, n).every((l, i) => l === `{"msg_type":"ack","data":"Acknowledged: ${payload}","id":${i}}`),
    );
    assert.equal(code, 0);
  });

  test('exits quietly with 0 when the parent stops reading (EPIPE)', async () => {
    const child = spawn(process.execPath, [MAIN, '--exit-after', '0'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    child.stdin.on('error', () => {});
    child.stdout.destroy();
    const chunk = line('data', 'z'.repeat(10_000)).repeat(100);
    const timer = setInterval(() => child.stdin.write(chunk), 5);
    const code = await new Promise((resolve) => child.on('close', resolve));
    clearInterval(timer);
    assert.equal(stderr, '');
    assert.equal(code, 0);
  });

  test('stdout carries protocol only, even for bad input', async () => {
    const input = Buffer.concat([
      Buffer.from('not json\n\n[1]\n{"msg_type":"bogus","data":""}\n'),
      Buffer.from([0xff, 0x0a]),
      Buffer.from(`${'x'.repeat(100)}\n`),
      Buffer.from(line('greeting', 'hi')),
    ]);
    const r = await run(['--max-line-bytes', '50'], input);
    const lines = r.stdout.toString().split('\n');
    assert.equal(lines.pop(), '');
    assert.equal(lines.length, 6);
    for (const l of lines) {
      const m = JSON.parse(l) as Record<string, unknown>;
      assert.ok(typeof m['msg_type'] === 'string' && typeof m['data'] === 'string', l);
    }
    assert.equal(lines[4], '{"msg_type":"error","data":"line 6: line of 100 bytes exceeds the 50-byte limit"}');
    assert.equal(r.stderr, '');
    assert.equal(r.code, 0);
  });

  test('replies to many messages in one chunk come out in one write', async () => {
    // Not observable byte for byte over a pipe, but the count and order must be exact.
    const input = Array.from({ length: 1000 }, (_, i) => line('greeting', '', i)).join('');
    const r = await run(['--exit-after', '0'], input);
    const lines = r.stdout.toString().trimEnd().split('\n');
    assert.deepEqual(
      lines.map((l) => (JSON.parse(l) as { id: number }).id),
      Array.from({ length: 1000 }, (_, i) => i),
    );
  });

  for (const [args, message] of [
    [['--exit-after', 'five'], '--exit-after expects a non-negative integer, got `five`'],
    [['--exit-after', '-1'], '--exit-after expects a non-negative integer, got `-1`'],
    [
      ['--max-line-bytes', '9007199254740992'],
      '--max-line-bytes must be at most 9007199254740991, got `9007199254740992`',
    ],
    [['--name'], '--name needs a value'],
    [['--engine', 'rust'], '--engine expects ts or native, got `rust`'],
    [['--verbose'], 'unexpected argument `--verbose`'],
  ] as const) {
    test(`rejects ${args.join(' ')} with exit code 2 and a message on stderr`, async () => {
      const r = await run([...args], line('greeting', ''));
      assert.equal(r.code, 2);
      assert.equal(r.stdout.length, 0);
      assert.ok(r.stderr.startsWith(`ts-app: ${message}\n`), r.stderr);
      assert.match(r.stderr, /Usage: node ts-app\/dist\/main\.js/);
    });
  }

  test('--engine native without a loadable addon says so in one line and exits 2', async () => {
    // A copy of the child two levels below a directory with no `native/` in it.
    const root = mkdtempSync(path.join(tmpdir(), 'ts-app-'));
    try {
      const dist = path.join(root, 'app', 'dist');
      mkdirSync(dist, { recursive: true });
      writeFileSync(path.join(root, 'app', 'package.json'), '{"type":"module"}');
      for (const file of ['main.js', 'engine.js', 'frame.js', 'framing.js', 'in-place.js', 'msgpack.js', 'protocol.js']) {
        copyFileSync(path.join(path.dirname(MAIN), file), path.join(dist, file));
      }
      const child = spawnSync(process.execPath, [path.join(dist, 'main.js'), '--engine', 'native'], { input: '' });
      assert.equal(child.status, 2);
      assert.equal(child.stdout.length, 0);
      const stderr = child.stderr.toString();
      const where = path.join(root, 'native');
      assert.ok(stderr.startsWith(`ts-app: cannot load the native addon from ${where}: Cannot find module`), stderr);
      assert.ok(stderr.endsWith('; build it with `npm run build -w native`\n'), stderr);
      assert.equal(stderr.split('\n').length, 2, 'one line');
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  test('--help prints the usage and exits 0', async () => {
    const r = await run(['--help'], '');
    assert.equal(r.code, 0);
    assert.match(r.stdout.toString(), /^Usage: /);
  });
});
