// `main.js --engine native` under Node's permission model: the child says which permission the
// addon lacks (reading its directory, or loading addons at all) instead of "rebuild it".

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';

import { describeWithAddon } from './addon.js';
import { REPO_ROOT } from './vectors.js';

const MAIN = path.join(REPO_ROOT, 'ts-app', 'dist', 'main.js');

/** The switch this `node` takes: `--permission` from 22.13, `--experimental-permission` before. */
function permissionFlag(): string {
  const modern = spawnSync(process.execPath, ['--permission', '-e', '0'], { stdio: 'ignore' });
  return modern.status === 0 ? '--permission' : '--experimental-permission';
}

/** Runs the native-engine child under the permission model with `allow` and no input. */
function runNative(allow: string[]): { status: number | null; stderr: string } {
  const args = [permissionFlag(), ...allow, MAIN, '--engine', 'native'];
  const run = spawnSync(process.execPath, args, { input: '', encoding: 'utf8' });
  return { status: run.status, stderr: run.stderr };
}

describeWithAddon('main.js --engine native under the permission model', () => {
  test('without --allow-addons it says the permission model forbids addons', () => {
    const { status, stderr } = runNative([`--allow-fs-read=${path.resolve(REPO_ROOT)}/`]);
    assert.equal(status, 2);
    assert.match(
      stderr,
      /ts-app: cannot load the native addon from .*native: Node's permission model forbids native addons: start node with --allow-addons \(`rust-ts-ipc demo --node-permission --node-allow-addons`\)\n/,
    );
    assert.doesNotMatch(stderr, /npm run build -w native/);
  });

  test("without read access to the addon's directory it names the file denied", () => {
    const { status, stderr } = runNative([`--allow-fs-read=${path.join(REPO_ROOT, 'ts-app', 'dist')}/`, '--allow-addons']);
    assert.equal(status, 2);
    assert.match(stderr, /Node's permission model denies reading `[^`]*native[^`]*`: allow the addon's directory with --allow-fs-read/);
  });

  test('with both it answers', () => {
    const args = [permissionFlag(), `--allow-fs-read=${path.resolve(REPO_ROOT)}/`, '--allow-addons', MAIN, '--engine', 'native'];
    const line = '{"msg_type":"greeting","data":"hi","id":1}\n';
    const run = spawnSync(process.execPath, args, { input: line, encoding: 'utf8' });
    assert.equal(run.stdout, '{"msg_type":"response","data":"Hello from TypeScript!","id":1}\n', run.stderr);
  });
});

test('the permission switch is one this node accepts', () => {
  const run = spawnSync(process.execPath, [permissionFlag(), '-e', '0'], { stdio: 'ignore' });
  assert.equal(run.status, 0);
});
