// Rust calling JavaScript: the core's Initiator driving a JS responder (playDemo on the JS thread,
// playDemoOnThread from a Rust thread through a ThreadsafeFunction), the bare loops the benchmark
// times (callJsSync, callJsThread), and every way such a call can fail.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { Worker } from 'node:worker_threads';

import { native, repoRoot } from './load.mjs';

const seed = readFileSync(new URL('tests/seed-output.txt', repoRoot), 'utf8').trimEnd().split('\n');
const packageJson = new URL('package.json', repoRoot).pathname;

/** Both ways to play the demo, as one `async (responder) => printed`. */
const modes = {
  sync: async (responder) => native.playDemo(responder),
  thread: (responder) => native.playDemoOnThread(responder),
};

/** The error `play` fails with (an assertion failure if it does not). */
async function failure(play) {
  try {
    await play();
  } catch (e) {
    return e;
  }
  assert.fail('expected the call to fail');
}

const HELLO = '{"msg_type":"response","data":"Hello from TypeScript!"}';

for (const [mode, play] of Object.entries(modes)) {
  describe(`the demo, Rust calling JS (${mode})`, () => {
    test('plays the seed conversation against a Responder object, calling handleLine with it as this', async () => {
      assert.deepEqual(await play(new native.Responder()), seed);
    });

    test('plays it against a plain function, which gets each line without its newline', async () => {
      const r = new native.Responder();
      const lines = [];
      const printed = await play((line) => {
        lines.push(line);
        return r.handleLine(line);
      });
      assert.deepEqual(printed, seed);
      assert.equal(lines.length, 6, "the greeting and five data messages");
      assert.equal(lines[0], '{"msg_type":"greeting","data":"Hello from Rust!"}');
      assert.equal(lines[5], '{"msg_type":"data","data":"Message 5 from Rust"}');
    });

    test('takes a reply without its final newline, and several lines in one reply', async () => {
      const r = new native.Responder();
      const printed = await play((line) => r.handleLine(line).replace(/\n$/, ''));
      assert.deepEqual(printed, seed);
    });

    test('a JS throw fails the demo with its message, what was thrown as cause, and what was printed', async () => {
      const thrown = new Error('the responder is broken');
      const e = await failure(() => play(() => { throw thrown; }));
      assert.equal(e.constructor, Error);
      assert.equal(e.code, 'ResponderThrew');
      const method = mode === 'sync' ? 'playDemo' : 'playDemoOnThread';
      assert.equal(e.message, `${method}: the JavaScript function threw: the responder is broken`);
      assert.equal(e.cause, thrown);
      assert.deepEqual(e.printed, ['Rust: Sending initial message']);
    });

    test('a thrown non-Error is quoted too', async () => {
      const e = await failure(() => play(() => { throw 'just a string'; }));
      assert.equal(e.code, 'ResponderThrew');
      assert.match(e.message, /: the JavaScript function threw: just a string$/);
    });

    test('a thrown value without a message is still said, not an empty quote', async () => {
      for (const thrown of [42, null, undefined, { message: 7 }, new RangeError()]) {
        const e = await failure(() => play(() => { throw thrown; }));
        assert.equal(e.code, 'ResponderThrew', String(thrown));
        assert.match(e.message, /: the JavaScript function threw something without a message \(not an Error with one\)$/);
      }
      const error = new RangeError();
      assert.equal((await failure(() => play(() => { throw error; }))).cause, error);
    });

    test('a getter on Object.prototype neither hides the responder’s error nor is taken for shutdown', async () => {
      // In a child process: the getter would break the test runner itself.
      const script = `
        const native = require(${JSON.stringify(new URL('native', repoRoot).pathname)});
        Object.defineProperty(Object.prototype, 'x', { get() { throw new Error('prototype getter x'); } });
        const respond = () => { throw new Error('real responder error'); };
        const call = ${mode === 'sync' ? 'async (r) => native.playDemo(r)' : '(r) => native.playDemoOnThread(r)'};
        process.on('uncaughtException', (e) => { console.log('uncaught', e.message); process.exit(3); });
        call(respond).then(() => console.log('resolved'), (e) => console.log(e.code, e.message));
      `;
      const out = spawnSync(process.execPath, ['--force-node-api-uncaught-exceptions-policy=true', '-e', script], { encoding: 'utf8', timeout: 15000 });
      assert.equal(out.status, 0, out.stderr);
      assert.match(out.stdout, /^ResponderThrew .*: the JavaScript function threw: real responder error\n$/);
    });

    test('a throw after some replies keeps the lines printed before it', async () => {
      const r = new native.Responder();
      let calls = 0;
      const e = await failure(() => play((line) => {
        if (++calls === 3) throw new TypeError('third call');
        return r.handleLine(line);
      }));
      assert.equal(e.code, 'ResponderThrew');
      assert.deepEqual(e.printed, seed.slice(0, 3));
    });

    for (const [value, named] of [[42, 'number 42'], [undefined, 'undefined'], [null, 'null'], [{}, 'object'], [['x'], 'array'], [Buffer.from('x'), 'Uint8Array']]) {
      test(`a reply that is not a string (${named}) is a BadReply naming what came`, async () => {
        const e = await failure(() => play(() => value));
        assert.equal(e.code, 'BadReply');
        assert.match(e.message, new RegExp(`: the JavaScript function returned ${named}, expected a string of reply lines$`));
      });
    }

    test("an error reply ends the demo as the pipe's child answering with an error does", async () => {
      const e = await failure(() => play(() => 'not json at all'));
      assert.equal(e.code, 'DemoFailed');
      assert.match(e.message, /: child wrote non-protocol output: line 1: invalid JSON: `not json at all`$/);
      const f = await failure(() => play(() => '{"msg_type":"error","data":"no thanks"}'));
      assert.match(f.message, /: child answered with an error: no thanks$/);
    });

    test('an empty reply is a DemoFailed that says what the demo waited for', async () => {
      let calls = 0;
      const e = await failure(() => play(() => (++calls === 1 ? HELLO : '')));
      assert.equal(e.code, 'DemoFailed');
      assert.match(e.message, /: the JavaScript function answered nothing to the acknowledgement of message 1 of 5$/);
      assert.deepEqual(e.printed, seed.slice(0, 2));
    });

    test('a wrong responder is a TypeError naming what it got', async () => {
      for (const [value, got] of [[42, 'number'], [{}, 'an object whose handleLine is undefined'], [null, 'null']]) {
        const e = await failure(() => play(value));
        assert.equal(e.constructor, TypeError);
        assert.equal(e.code, 'InvalidArg');
        assert.match(e.message, new RegExp(`: expected a function or an object with a handleLine method, got ${got}$`));
      }
    });
  });
}

describe('the bare loops the benchmark times', () => {
  const line = JSON.stringify({ msg_type: 'data', data: 'x'.repeat(40) });

  test('callJsSync calls the function count times with the line and sums the reply bytes', () => {
    const seen = new Set();
    let calls = 0;
    const total = native.callJsSync((l) => { calls++; seen.add(l); return 'é\n'; }, line, 1000);
    assert.equal(calls, 1000);
    assert.deepEqual([...seen], [line]);
    assert.equal(total, 3000, 'é is two bytes of UTF-8');
    assert.equal(native.callJsSync(() => 'x', line, 0), 0);
  });

  for (const window of [1, 16, 256]) {
    test(`callJsThread with window ${window} makes exactly count calls and joins its threads`, async () => {
      let calls = 0;
      const total = await native.callJsThread((l) => { calls++; assert.equal(l, line); return 'ok\n'; }, line, 1001, window);
      assert.equal(calls, 1001);
      assert.equal(total, 3003);
      assert.equal(native.__callingThreadsForTest().running, 0);
    });
  }

  test('callJsThread rejects with the first throw and stops every thread', async () => {
    let calls = 0;
    const e = await failure(() => native.callJsThread(() => {
      if (++calls === 50) throw new Error('fifty');
      return '';
    }, line, 100_000, 16));
    assert.equal(e.code, 'ResponderThrew');
    assert.equal(e.message, 'callJsThread: the JavaScript function threw: fifty');
    assert.ok(calls < 1000, `the threads stopped soon after the throw (${calls} calls)`);
    assert.equal(native.__callingThreadsForTest().running, 0);
  });

  test('callRustSync runs the same loop against the Rust responder: the replies a JS responder gives', () => {
    const line = '{"msg_type":"data","data":"xyz","id":3}';
    const reply = '{"msg_type":"ack","data":"Acknowledged: xyz","id":3}\n';
    assert.equal(native.callRustSync(line, 5), 5 * reply.length);
    assert.equal(native.callRustSync(line, 0), 0);
  });

  test('timeJsThread makes exactly count calls over its windows and times each one', async () => {
    for (const window of [1, 16]) {
      let calls = 0;
      const timed = await native.timeJsThread((line) => (calls++, `${line}!`), 'ab', 100, window);
      assert.equal(calls, 100);
      assert.equal(timed.bytes, 300);
      assert.ok(timed.latencies instanceof Float64Array);
      assert.equal(timed.latencies.length, 100);
      assert.ok(timed.latencies.every((ns) => ns > 0 && ns < 60e9), String(timed.latencies.slice(0, 5)));
    }
    await assert.rejects(native.timeJsThread(() => 7, 'x', 3, 1), { code: 'BadReply' });
  });

  test('bad counts and windows are TypeErrors', () => {
    assert.throws(() => native.callJsSync(() => '', line, -1), { name: 'TypeError', message: 'callJsSync: `count` must be an integer from 0 to 9007199254740991, got number -1' });
    assert.throws(() => native.callJsThread(() => '', line, 1, 0), { name: 'TypeError', message: 'callJsThread: `window` must be from 1 to 1024, got 0' });
    assert.throws(() => native.callJsThread(() => '', line, 1, 1.5), { name: 'TypeError', message: 'callJsThread: `window` must be an integer from 0 to 9007199254740991, got number 1.5' });
  });

  test('each sync call has its own handle scope: 1000 replies of 1 MiB are not all kept alive', () => {
    globalThis.gc?.();
    const before = process.memoryUsage().rss;
    const total = native.callJsSync(() => 'y'.repeat(1 << 20), '{}', 1000);
    const grown = process.memoryUsage().rss - before;
    assert.equal(total, 1000 * (1 << 20));
    // Held to the end of the call, the replies would be 1 GiB.
    assert.ok(grown < 300 << 20, `RSS grew by ${grown >> 20} MiB`);
  });
});

describe('panics on the Rust side', () => {
  test('a panic in a sync call is a thrown Error, and the addon stays usable', () => {
    let calls = 0;
    assert.throws(() => native.__callJsSyncPanicForTest(() => { calls++; return ''; }, 3), {
      constructor: Error,
      code: 'GenericFailure',
      message: '__callJsSyncPanicForTest: a deliberate panic after 3 calls',
    });
    assert.equal(calls, 3);
    assert.deepEqual(native.playDemo(new native.Responder()), seed);
  });

  test('a panic on a calling thread rejects the promise, and the thread is joined', async () => {
    const e = await failure(() => native.__callJsThreadPanicForTest(() => '', 2));
    assert.equal(e.code, 'GenericFailure');
    assert.equal(e.message, '__callJsThreadPanicForTest: a deliberate panic after 2 calls');
    assert.equal(native.__callingThreadsForTest().running, 0);
  });
});

describe('Node exiting', () => {
  /** Runs `script` in a fresh Node with the addon as `native`; its exit and output. */
  function node(script) {
    const prelude = `const native = require('node:module').createRequire(${JSON.stringify(packageJson)})('./native');\n`;
    return spawnSync(process.execPath, ['-e', prelude + script], {
      encoding: 'utf8',
      timeout: 15_000,
      env: { ...process.env, RUST_BACKTRACE: '0' },
    });
  }

  test('a finished thread run does not keep Node alive: the process exits on its own', () => {
    const child = node(`
      native.playDemoOnThread(new native.Responder()).then((p) => console.log(p.length));
      native.callJsThread(() => 'x', '{}', 10000, 16).then((n) => console.log(n));
    `);
    assert.equal(child.error, undefined, 'it exited before the timeout');
    assert.equal(child.status, 0, child.stderr);
    assert.equal(child.stdout, '10\n10000\n');
  });

  test('a JS throw on the thread path is a rejection, never an uncaughtException', () => {
    const child = node(`
      process.on('uncaughtException', (e) => { console.log('uncaught', e.message); process.exitCode = 9; });
      native.playDemoOnThread(() => { throw new Error('boom'); }).catch((e) => console.log(e.code));
    `);
    assert.equal(child.status, 0, child.stderr);
    assert.equal(child.stdout, 'ResponderThrew\n');
  });

  test('process.exit() while a Rust thread waits for its call ends the process cleanly, with its code', () => {
    const child = node(`
      let calls = 0;
      native.callJsThread(() => { if (++calls === 100) process.exit(3); return ''; }, '{}', 1e9, 16);
    `);
    assert.equal(child.error, undefined, 'no hang');
    assert.equal(child.signal, null, 'no crash');
    assert.equal(child.status, 3, child.stderr);
    assert.doesNotMatch(child.stderr, /panicked|abort|FATAL/i);
  });

  /** Runs `script` in a worker with the addon as `native`; its exit code. */
  function worker(script) {
    return new Promise((resolve, reject) => {
      const prelude = `const native = require('node:module').createRequire(${JSON.stringify(packageJson)})('./native');\n`;
      const w = new Worker(prelude + script, { eval: true });
      w.once('error', reject);
      w.once('exit', resolve);
    });
  }

  test("a worker's exit while its Rust thread waits for a queued call ends that thread with Closing, joined", async () => {
    const before = native.__callingThreadsForTest();
    // The JS thread is busy while the Rust thread queues its call, then exits without running it.
    const code = await worker(`
      native.callJsThread(() => '', '{}', 1, 1);
      const end = Date.now() + 100;
      while (Date.now() < end);
      process.exit(5);
    `);
    assert.equal(code, 5);
    const after = native.__callingThreadsForTest();
    assert.equal(after.running, before.running, 'the thread was joined before the worker was gone');
    assert.equal(after.closed - before.closed, 1, 'it ended with a Closing error');
  });

  test("a worker's process.exit() from inside a call, with 16 threads calling, joins them all", async () => {
    const before = native.__callingThreadsForTest();
    const code = await worker(`
      let calls = 0;
      native.callJsThread(() => { if (++calls === 100) process.exit(5); return ''; }, '{}', 1e9, 16);
    `);
    assert.equal(code, 5);
    const after = native.__callingThreadsForTest();
    assert.equal(after.running, before.running, 'every thread was joined');
    assert.equal(after.closed - before.closed, 16, 'each ended with a Closing error');
  });
});
