// Every shared conformance vector, through every way the addon answers: handleLine,
// handleBuffer, handleLineAsync and (where the input is a list of valid messages) handle.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { cases, expectedText, lineBytes, native, optionsOf } from './load.mjs';

const { Responder } = native;
const DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024;

/** Raw bytes (`{"base64": ...}`) may be invalid UTF-8, which no JS string can carry. */
const isText = (c) => c.input.every((element) => typeof element === 'string');

/**
 * The message object a line holds, or undefined if the line is not one that `handle` can be
 * given: not JSON, not a message, or a line the responder would refuse for its length.
 */
function messageOf(element, c) {
  if (typeof element !== 'string') return undefined;
  const line = element.endsWith('\r') ? element.slice(0, -1) : element;
  if (Buffer.byteLength(line) > (c.options?.max_line_bytes ?? DEFAULT_MAX_LINE_BYTES)) return undefined;
  let value;
  try {
    value = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return undefined;
  if (typeof value.msg_type !== 'string' || typeof value.data !== 'string') return undefined;
  const id = value.id;
  if (!(id === undefined || id === null || (Number.isSafeInteger(id) && id >= 0))) return undefined;
  return value;
}

const messageCases = cases.filter((c) => c.input.every((element) => messageOf(element, c) !== undefined));

describe('handleLine answers every conformance case', () => {
  for (const c of cases.filter(isText)) {
    test(c.name, () => {
      const responder = new Responder(optionsOf(c));
      const text = c.input.map((line) => responder.handleLine(line)).join('');
      assert.equal(text, expectedText(c));
      assert.equal(responder.done, c.done);
    });
  }
});

describe('handleLine accepts each line with its LF ending too', () => {
  for (const c of cases.filter(isText)) {
    test(c.name, () => {
      const responder = new Responder(optionsOf(c));
      const text = c.input.map((line) => responder.handleLine(`${line}\n`)).join('');
      assert.equal(text, expectedText(c));
      assert.equal(responder.done, c.done);
    });
  }
});

describe('handleBuffer answers every conformance case, raw bytes included', () => {
  for (const c of cases) {
    test(c.name, () => {
      const responder = new Responder(optionsOf(c));
      const text = c.input
        .map((element) => responder.handleBuffer(Buffer.concat([lineBytes(element), Buffer.from('\n')])))
        .join('');
      assert.equal(text, expectedText(c));
      assert.equal(responder.done, c.done);
    });
  }
});

describe('handleBuffer takes a plain Uint8Array without its line ending', () => {
  for (const c of cases) {
    test(c.name, () => {
      const responder = new Responder(optionsOf(c));
      const text = c.input.map((element) => responder.handleBuffer(new Uint8Array(lineBytes(element)))).join('');
      assert.equal(text, expectedText(c));
    });
  }
});

describe('handleLineAsync answers every conformance case, all lines in flight at once', () => {
  for (const c of cases.filter(isText)) {
    test(c.name, async () => {
      const responder = new Responder(optionsOf(c));
      const pending = c.input.map((line) => responder.handleLineAsync(line));
      assert.equal((await Promise.all(pending)).join(''), expectedText(c));
      assert.equal(responder.done, c.done);
    });
  }
});

describe('handle answers every case whose lines are all valid messages', () => {
  test('enough cases qualify for this to mean something', () => {
    assert.ok(messageCases.length >= 12, `only ${messageCases.length} cases qualify`);
  });
  for (const c of messageCases) {
    test(c.name, () => {
      const responder = new Responder(optionsOf(c));
      const replies = c.input.flatMap((element) => responder.handle(messageOf(element, c)));
      // JSON.stringify keeps key order, so this also pins `msg_type`, `data`, `id` in that order.
      assert.deepEqual(
        replies.map((reply) => JSON.stringify(reply)),
        c.replies,
      );
      assert.equal(responder.done, c.done);
    });
  }
});
