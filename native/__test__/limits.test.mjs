// A reply longer than the longest string V8 can make (`buffer.constants.MAX_STRING_LENGTH`,
// 2^29 - 24 UTF-16 units on 64-bit Node) cannot be returned. Every entry point must say so,
// and the line (or message) must not count: the conversation stays where it was.
import assert from 'node:assert/strict';
import { constants } from 'node:buffer';
import { freemem } from 'node:os';
import { test } from 'node:test';

import { native } from './load.mjs';

const MAX = constants.MAX_STRING_LENGTH;
const GiB = 1024 ** 3;

// A name as long as a string can be makes the `exit` reply too long without a large input (a
// huge `data` payload would cost the unoptimised debug build several more seconds per call).
// The name in JS and in Rust and the reply buffer peak at ~1.6 GiB; the test takes ~10 s.
const enoughMemory = freemem() > 4 * GiB;

test(
  'a reply longer than the longest JS string is an error naming its length, and the line does not count',
  { skip: enoughMemory ? false : `needs 4 GiB of free memory, ${(freemem() / GiB).toFixed(1)} GiB free`, timeout: 60_000 },
  async () => {
    const name = 'x'.repeat(MAX);
    const responder = new native.Responder({ exitAfter: 1, name });
    const line = '{"msg_type":"data","data":"x"}';
    // `ack` for the line, then `exit` with `Goodbye from <name>!`.
    const units = '{"msg_type":"ack","data":"Acknowledged: x"}\n'.length + '{"msg_type":"exit","data":"Goodbye from !"}\n'.length + MAX;
    const tooLong = (method, what) => ({
      name: 'Error',
      code: 'ReplyTooLong',
      message:
        `${method}: the reply would be a string of ${units} UTF-16 units, more than JavaScript's maximum of ${MAX}; ` +
        `the ${what} was not answered and does not count`,
    });

    assert.throws(() => responder.handleLine(line), tooLong('handleLine', 'line'));
    assert.equal(responder.done, false);
    assert.throws(() => responder.handleBuffer(Buffer.from(line)), tooLong('handleBuffer', 'line'));
    assert.equal(responder.done, false);
    await assert.rejects(responder.handleLineAsync(line), tooLong('handleLineAsync', 'line'));
    assert.equal(responder.done, false);
    // `handle` returns the texts as objects: here the `exit` reply's `data` is the long string.
    assert.throws(() => responder.handle({ msg_type: 'data', data: 'x' }), {
      name: 'Error',
      code: 'ReplyTooLong',
      message:
        `handle: the reply's data would be a string of ${'Goodbye from !'.length + MAX} UTF-16 units, more than ` +
        `JavaScript's maximum of ${MAX}; the message was not answered and does not count`,
    });
    assert.equal(responder.done, false);

    // None of the four calls counted: this is line 1, and the conversation goes on.
    assert.equal(responder.handleLine('nope'), '{"msg_type":"error","data":"line 1: invalid JSON: `nope`"}\n');
    assert.equal(responder.handleLine('[]'), '{"msg_type":"error","data":"line 2: expected a JSON object, got array: `[]`"}\n');
  },
);
