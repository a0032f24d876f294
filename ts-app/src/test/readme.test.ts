// The README's "Use it in your program" examples for Node run as written: each ```js block of
// that section is run as an ES module from the repository root (where `rust-ts-ipc` resolves
// through the npm workspace) and must exit 0 with the output its comments promise.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

import { REQUIRE_NATIVE } from './addon.js';
import { REPO_ROOT } from './vectors.js';

/** The ```js blocks of the README section titled `title`. */
function jsBlocks(title: string): string[] {
  const readme = readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');
  const start = readme.indexOf(`\n## ${title}\n`);
  assert.ok(start >= 0, `README has a "## ${title}" section`);
  const end = readme.indexOf('\n## ', start + 1);
  const section = readme.slice(start, end === -1 ? undefined : end);
  return [...section.matchAll(/\n```js\n([\s\S]*?)\n```\n/g)].map((m) => m[1] ?? '');
}

const blocks = jsBlocks('Use it in your program');
const serveBin = path.join(REPO_ROOT, 'target', 'debug', 'rust-ts-ipc');
const skip =
  existsSync(serveBin) || process.env[REQUIRE_NATIVE] !== undefined ? false : `${serveBin} is not built (cargo build)`;

/** What each example reads on stdin, in README order (the service gets requests). */
const inputs = [
  '',
  '',
  '',
  [
    '{"msg_type":"upper","data":"abc","id":1}',
    '{"msg_type":"sum","data":[1,2,3],"id":2}',
    '{"msg_type":"later","data":{"x":1},"id":3}',
    '{"msg_type":"upper","data":"a notification"}',
    '{"msg_type":"sum","data":5,"id":4}',
    '',
  ].join('\n'),
];

/** What each example must print (its comments say so), in README order. */
const expected: ((out: { stdout: string; stderr: string }) => void)[] = [
  ({ stdout, stderr }) => {
    assert.equal(stdout, "<h1>Hi</h1>\n [ 'Acknowledged: a', 'Acknowledged: b' ] { code: 0, signal: null }\n");
    assert.match(stderr, /^ERROR_REPLY request `nope` #4 was answered with an error: line 4: unknown msg_type `nope`; expected greeting, data, exit or markdown\n$/);
  },
  ({ stdout, stderr }) => {
    assert.equal(stdout, "<h1>Hi</h1>\n { msg_type: 'html', data: '<p><em>fast</em></p>\\n', id: 2 } { code: 0, signal: null }\n");
    assert.equal(stderr, '');
  },
  ({ stdout, stderr }) => {
    assert.equal(stdout, '<h1>Hi</h1>\n Acknowledged: a Acknowledged: c { code: 0, signal: null }\n');
    assert.equal(stderr, 'BUSY\n');
  },
  ({ stdout, stderr }) => {
    // The async handler's reply may come before or after the ones read with it.
    assert.deepEqual(stdout.split('\n').sort(), [
      '',
      '{"msg_type":"done","data":{"x":1},"id":3}',
      '{"msg_type":"error","data":"data.reduce is not a function","id":4}',
      '{"msg_type":"sum","data":6,"id":2}',
      '{"msg_type":"upper","data":"ABC","id":1}',
    ]);
    assert.equal(stderr, '');
  },
];

test('the README shows one Node example per path and the Node service', () => {
  assert.equal(blocks.length, expected.length, 'update `expected` in readme.test.ts with the README');
});

blocks.forEach((source, i) => {
  test(`README example ${i + 1} runs as written: ${source.split('\n')[0] ?? ''}`, { skip }, () => {
    const run = spawnSync(process.execPath, ['--input-type=module', '-e', source], {
      cwd: REPO_ROOT,
      encoding: 'utf8',
      input: inputs[i] ?? '',
      timeout: 30_000,
    });
    assert.equal(run.status, 0, run.stderr);
    expected[i]?.({ stdout: run.stdout, stderr: run.stderr });
  });
});
