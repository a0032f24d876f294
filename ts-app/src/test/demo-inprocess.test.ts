// The compiled `dist/demo-inprocess.js` as a real process: the Rust core's Initiator, in the
// addon, driving the TypeScript Responder through each call path, and how it fails.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { describeWithAddon } from './addon.js';

const DEMO = fileURLToPath(new URL('../demo-inprocess.js', import.meta.url));
const SEED = readFileSync(new URL('../../../tests/seed-output.txt', import.meta.url));

function node(args: string[]): { status: number | null; signal: string | null; stdout: Buffer; stderr: string } {
  const child = spawnSync(process.execPath, args, { timeout: 20_000, env: { ...process.env, RUST_BACKTRACE: '0' } });
  assert.equal(child.error, undefined, 'it exited on its own, in time');
  return { status: child.status, signal: child.signal, stdout: child.stdout, stderr: child.stderr.toString() };
}

/** Runs `runDemo(args, responder)` in a fresh process, the responder given as JS source. */
function demoWith(responder: string, args: string[]): ReturnType<typeof node> {
  const script = `
    const { runDemo } = await import(${JSON.stringify(DEMO)});
    const { Responder } = await import(${JSON.stringify(fileURLToPath(new URL('../protocol.js', import.meta.url)))});
    process.exitCode = await runDemo(${JSON.stringify(args)}, ${responder});
  `;
  return node(['--input-type=module', '-e', script]);
}

describeWithAddon('demo-inprocess', () => {
  for (const args of [[], ['--mode', 'sync'], ['--mode', 'thread']]) {
    test(`prints the seed output byte for byte and exits 0 (${args.join(' ') || 'default mode'})`, () => {
      const run = node([DEMO, ...args]);
      assert.equal(run.stderr, '');
      assert.equal(run.status, 0);
      assert.deepEqual(run.stdout, SEED);
    });
  }

  for (const mode of ['sync', 'thread']) {
    test(`a responder that throws ends the demo like a child answering with an error: exit 1, one line (${mode})`, () => {
      const throwing = `(() => { const r = new Responder(); let n = 0;
        return { handleLine(line) { if (++n === 3) throw new Error('responder broke on call 3'); return r.handleLine(line); } }; })()`;
      const run = demoWith(throwing, ['--mode', mode]);
      assert.equal(run.signal, null);
      assert.equal(run.status, 1);
      const method = mode === 'sync' ? 'playDemo' : 'playDemoOnThread';
      assert.equal(run.stderr, `demo-inprocess: ${method}: the JavaScript function threw: responder broke on call 3\n`);
      assert.equal(run.stdout.toString(), SEED.toString().split('\n').slice(0, 3).join('\n') + '\n');
    });

    test(`a responder returning a non-string is a clear error naming it, exit 1 (${mode})`, () => {
      const run = demoWith('() => 7', ['--mode', mode]);
      assert.equal(run.status, 1);
      assert.match(run.stderr, /^demo-inprocess: \w+: the JavaScript function returned number 7, expected a string of reply lines\n$/);
    });
  }
});

test('a bad flag is a usage error, exit 2', () => {
  for (const args of [['--mode', 'async'], ['--mode'], ['--fast']]) {
    const run = node([DEMO, ...args]);
    assert.equal(run.status, 2, args.join(' '));
    assert.match(run.stderr, /^demo-inprocess: .+\n\nUsage: node ts-app\/dist\/demo-inprocess\.js \[--mode sync\|thread\]/);
    assert.equal(run.stdout.length, 0);
  }
});
