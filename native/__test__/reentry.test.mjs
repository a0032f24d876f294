// JavaScript that Node-API runs in the middle of a call (an `async_hooks` hook as a promise is
// made, scheduled or settled; a setter for `code` on `Error.prototype` as an error is made) may
// call the same responder. That must never deadlock on the responder's lock. Each scenario runs
// in a child Node with a deadline, so a deadlock fails the test instead of hanging the suite.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';

import { repoRoot } from './load.mjs';

/** Runs `script` (CommonJS; `Responder` in scope) in a child Node and returns its stdout. */
function runChild(script) {
  const prelude = `const { Responder } = require(${JSON.stringify(new URL('native', repoRoot).pathname)});\n`;
  const child = spawnSync(process.execPath, ['-e', prelude + script], { encoding: 'utf8', timeout: 15_000 });
  assert.equal(child.error?.code, undefined, `the child did not finish in 15 s (a deadlock?)\n${child.stdout}`);
  assert.equal(child.status, 0, child.stderr);
  return child.stdout;
}

// `hook` reads `r.done` (which takes the lock) each time it fires, not recursively, and counts.
const withHook = (hook) => `
  const { createHook } = require('node:async_hooks');
  const r = new Responder({ exitAfter: 0 });
  let busy = false, reentered = 0;
  createHook({ ${hook}() {
    if (busy) return;
    busy = true;
    try { reentered += r.done === false; } finally { busy = false; }
  } }).enable();
  Promise.all([r.handleLineAsync('{"msg_type":"data","data":"a"}'), r.handleLineAsync('nope')]).then((replies) => {
    console.log(JSON.stringify(replies), reentered > 0);
  });
`;
const twoReplies = `${JSON.stringify([
  '{"msg_type":"ack","data":"Acknowledged: a"}\n',
  '{"msg_type":"error","data":"line 2: invalid JSON: `nope`"}\n',
])} true\n`;

test('an async_hooks promiseResolve hook may call the responder whose promise it sees settle', () => {
  assert.equal(runChild(withHook('promiseResolve')), twoReplies);
});

test('an async_hooks init hook may call the responder that is scheduling its work', () => {
  assert.equal(runChild(withHook('init')), twoReplies);
});

test('calls made from a promiseResolve hook are answered after the lines already answered', () => {
  // While the first promise settles, its hook makes an async call, then a sync one: they come
  // after both lines queued before them, in the order they were made.
  const script = `
    const { createHook } = require('node:async_hooks');
    const r = new Responder({ exitAfter: 0 });
    const seen = [];
    let nested;
    createHook({ promiseResolve() {
      if (nested) return;
      nested = r.handleLineAsync('nope 3');
      seen.push(r.handleLine('nope 4').trim());
    } }).enable();
    Promise.all([r.handleLineAsync('nope 1'), r.handleLineAsync('nope 2')])
      .then((replies) => Promise.all([...replies, nested]))
      .then((replies) => console.log([...replies.map((reply) => reply.trim()), ...seen].join('\\n')));
  `;
  const error = (n) => `{"msg_type":"error","data":"line ${n}: invalid JSON: \`nope ${n}\`"}`;
  assert.equal(runChild(script), [1, 2, 3, 4].map(error).join('\n') + '\n');
});

test('a setter for code on Error.prototype may call the responder whose call is throwing', () => {
  const script = `
    const r = new Responder({ exitAfter: 0 });
    let reentered = 0;
    Object.defineProperty(Error.prototype, 'code', {
      configurable: true,
      set(code) {
        reentered += r.done === false;
        Object.defineProperty(this, 'code', { value: code, enumerable: true, configurable: true, writable: true });
      },
    });
    const calls = [() => r.handleLine(42), () => r.handleBuffer('{}'), () => r.handle(42), () => r.handleLineAsync(42)];
    for (const call of calls) {
      try { call(); } catch (e) { console.log(e.name, e.code, e.message); }
    }
    console.log(reentered, JSON.stringify(r.handleLine('nope')));
  `;
  assert.equal(
    runChild(script),
    [
      'TypeError InvalidArg handleLine: expected a string, got number',
      'TypeError InvalidArg handleBuffer: expected a Uint8Array, got string',
      'TypeError InvalidArg handle: expected a message object, got number',
      'TypeError InvalidArg handleLineAsync: expected a string, got number',
      `4 ${JSON.stringify('{"msg_type":"error","data":"line 1: invalid JSON: `nope`"}\n')}`,
      '',
    ].join('\n'),
  );
});
