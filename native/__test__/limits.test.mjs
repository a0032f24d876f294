// A reply longer than Node-API can make a string of cannot be returned: more than the longest
// string V8 can make (`buffer.constants.MAX_STRING_LENGTH`, 2^29 - 24 on 64-bit Node) in UTF-16
// units, or in UTF-8 bytes, which V8 refuses before it decodes them. Every entry point must say
// so, and the line (or message) must not count: the conversation stays where it was. And a line
// refused for its length is refused without being copied, however long it is.
import assert from 'node:assert/strict';
import { constants } from 'node:buffer';
import { spawnSync } from 'node:child_process';
import { freemem } from 'node:os';
import { test } from 'node:test';

import { native, repoRoot } from './load.mjs';

const MAX = constants.MAX_STRING_LENGTH;
const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

// A name as long as a string can be makes the `exit` reply too long without a large input (a
// huge `data` payload would cost the unoptimised debug build several more seconds per call).
// The name in JS and in Rust and the reply buffer peak at ~1.6 GiB; each test takes ~5-10 s.
const enoughMemory = freemem() > 4 * GiB;
const big = {
  skip: enoughMemory ? false : `needs 4 GiB of free memory, ${(freemem() / GiB).toFixed(1)} GiB free`,
  timeout: 60_000,
};

const line = '{"msg_type":"data","data":"x"}';
// The reply to `line` with `exitAfter: 1`: `ack`, then `exit` with `Goodbye from <name>!`.
const replyBytes = (name) =>
  Buffer.byteLength('{"msg_type":"ack","data":"Acknowledged: x"}\n{"msg_type":"exit","data":"Goodbye from !"}\n') +
  Buffer.byteLength(name);

/** What a call whose reply (or, for `handle`, reply's data) is `bytes` long throws or rejects with. */
function tooLong(method, bytes) {
  const [subject, what] = method === 'handle' ? ["handle: the reply's data", 'message'] : [`${method}: the reply`, 'line'];
  return {
    name: 'Error',
    code: 'ReplyTooLong',
    message:
      `${subject} is ${bytes} bytes of UTF-8, more than the ${MAX} bytes (or UTF-16 units) Node-API can make a ` +
      `JavaScript string of; the ${what} was not answered and does not count`,
  };
}

test(
  'a reply longer than the longest JS string is an error naming its length, and the line does not count',
  big,
  async () => {
    const name = 'x'.repeat(MAX);
    const responder = new native.Responder({ exitAfter: 1, name });
    const tooLongLine = (method) => tooLong(method, replyBytes(name));

    assert.throws(() => responder.handleLine(line), tooLongLine('handleLine'));
    assert.equal(responder.done, false);
    assert.throws(() => responder.handleBuffer(Buffer.from(line)), tooLongLine('handleBuffer'));
    assert.equal(responder.done, false);
    await assert.rejects(responder.handleLineAsync(line), tooLongLine('handleLineAsync'));
    assert.equal(responder.done, false);
    // `handle` returns the texts as objects: here the `exit` reply's `data` is the long string.
    assert.throws(
      () => responder.handle({ msg_type: 'data', data: 'x' }),
      tooLong('handle', Buffer.byteLength('Goodbye from !') + name.length),
    );
    assert.equal(responder.done, false);

    // None of the four calls counted: this is line 1, and the conversation goes on.
    assert.equal(responder.handleLine('nope'), '{"msg_type":"error","data":"line 1: invalid JSON: `nope`"}\n');
    assert.equal(responder.handleLine('[]'), '{"msg_type":"error","data":"line 2: expected a JSON object, got array: `[]`"}\n');
  },
);

test(
  'a non-ASCII reply of more UTF-8 bytes than the longest JS string is refused the same way, though its UTF-16 units would fit',
  big,
  async () => {
    // `é` is one UTF-16 unit and two bytes of UTF-8: the reply is ~2^28 units, ~2^29 + 300 bytes.
    const name = 'é'.repeat((MAX >> 1) + 100);
    const responder = new native.Responder({ exitAfter: 1, name });
    assert.ok(replyBytes(name) > MAX && name.length + 100 < MAX);

    assert.throws(() => responder.handleLine(line), tooLong('handleLine', replyBytes(name)));
    assert.throws(() => responder.handleBuffer(Buffer.from(line)), tooLong('handleBuffer', replyBytes(name)));
    await assert.rejects(responder.handleLineAsync(line), tooLong('handleLineAsync', replyBytes(name)));
    assert.throws(
      () => responder.handle({ msg_type: 'data', data: 'x' }),
      tooLong('handle', Buffer.byteLength(`Goodbye from ${name}!`)),
    );

    // None of the four calls counted.
    assert.equal(responder.done, false);
    assert.equal(responder.handleLine('nope'), '{"msg_type":"error","data":"line 1: invalid JSON: `nope`"}\n');
  },
);

/** Runs `script` (CommonJS, `native` in scope) in a child Node; a hang fails after `timeout` ms. */
function runChild(script, timeout) {
  const prelude = `const native = require(${JSON.stringify(new URL('native', repoRoot).pathname)});\n`;
  const child = spawnSync(process.execPath, ['-e', prelude + script], { encoding: 'utf8', timeout });
  assert.equal(child.error?.code, undefined, `the child did not finish in ${timeout} ms (a deadlock?)\n${child.stdout}`);
  assert.equal(child.status, 0, child.stderr);
  return child.stdout;
}

test(
  'a call refused for its reply throws or rejects only after releasing the responder, and always settles',
  big,
  () => {
    // `Error.prototype.code` setters run as the addon sets an error's `code`. The first calls
    // back into the responder (which must not deadlock); the second throws (the promise must
    // still settle, rejected with what it threw).
    const script = `
      const { constants } = require('node:buffer');
      const r = new native.Responder({ exitAfter: 1, name: 'x'.repeat(constants.MAX_STRING_LENGTH) });
      const line = '{"msg_type":"data","data":"x"}';
      let reentered = 0;
      const define = (set) => Object.defineProperty(Error.prototype, 'code', { set, configurable: true });
      define(function (code) {
        reentered += r.done === false;
        Object.defineProperty(this, 'code', { value: code, enumerable: true, configurable: true, writable: true });
      });
      const show = (e) => console.log(e instanceof Error ? e.code : 'threw ' + String(e));
      try { r.handleLine(line); } catch (e) { show(e); }
      try { r.handleBuffer(Buffer.from(line)); } catch (e) { show(e); }
      try { r.handle({ msg_type: 'data', data: 'x' }); } catch (e) { show(e); }
      r.handleLineAsync(line).then(() => console.log('resolved'), show).then(() => {
        define(() => { throw 'a throwing setter'; });
        return r.handleLineAsync(line);
      }).then(() => console.log('resolved'), show).then(() => {
        console.log('reentered', reentered, 'then', JSON.stringify(r.handleLine('nope')));
      });
    `;
    assert.equal(
      runChild(script, 60_000),
      [
        'ReplyTooLong',
        'ReplyTooLong',
        'ReplyTooLong',
        'ReplyTooLong',
        'threw a throwing setter',
        `reentered 4 then ${JSON.stringify('{"msg_type":"error","data":"line 1: invalid JSON: `nope`"}\n')}`,
        '',
      ].join('\n'),
    );
  },
);

test('handleBuffer answers an over-long line from its length and line ending, exactly as handleLine does', () => {
  for (const length of [14, 15, 16, 17, 18, 19, 40]) {
    for (const ending of ['', '\n', '\r\n', '\r', '\n\n', '\r\r', '\n\r\n']) {
      const text = '{'.padEnd(length, ' ') + ending;
      const [bytes, string] = [new native.Responder({ maxLineBytes: 16 }), new native.Responder({ maxLineBytes: 16 })];
      assert.equal(bytes.handleBuffer(Buffer.from(text)), string.handleLine(text), JSON.stringify(text));
    }
  }
  // The line ending is read from the end of the view, not of the memory behind it.
  const backing = Buffer.from(`ab${'x'.repeat(40)}\r\nyz`);
  assert.equal(
    new native.Responder({ maxLineBytes: 16 }).handleBuffer(backing.subarray(2, 44)),
    '{"msg_type":"error","data":"line 1: line of 40 bytes exceeds the 16-byte limit"}\n',
  );
});

test('an over-long handleBuffer line is refused without being copied', (t) => {
  // In a child holding 64 MiB of `Buffer`: a copy of the line would raise its peak RSS by another
  // 64 MiB. The peak is Linux's `VmHWM`, of this process alone (`resourceUsage().maxRSS` starts
  // at the RSS of the parent that spawned it, so the big tests above would hide a copy).
  const script = `
    const { readFileSync } = require('node:fs');
    const peakKiB = () => {
      try { return Number(/^VmHWM:\\s*(\\d+) kB$/m.exec(readFileSync('/proc/self/status', 'utf8'))[1]); } catch { return NaN; }
    };
    const r = new native.Responder({ maxLineBytes: 16 });
    const line = Buffer.alloc(64 << 20, 'x');
    line.write('\\r\\n', line.length - 2);
    const before = peakKiB();
    const reply = r.handleBuffer(line);
    console.log(JSON.stringify({ reply, grewMiB: Math.round((peakKiB() - before) / 1024) }));
  `;
  const { reply, grewMiB } = JSON.parse(runChild(script, 30_000));
  assert.equal(reply, `{"msg_type":"error","data":"line 1: line of ${(64 * MiB) - 2} bytes exceeds the 16-byte limit"}\n`);
  if (grewMiB === null) {
    t.diagnostic('peak RSS not checked: no /proc/self/status');
    return;
  }
  assert.ok(grewMiB < 16, `peak RSS grew by ${grewMiB} MiB answering a 64 MiB line`);
});
