// The TypeScript responder against every conformance vector, through every way it answers,
// plus the rules the vectors do not spell out byte by byte.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { LineDecoder } from '../framing.js';
import {
  decodeEnvelope,
  decodeMessage,
  encodeMessage,
  excerpt,
  invalidUtf8Offset,
  type Message,
  parseEnvelope,
  Responder,
  tooLongReply,
} from '../protocol.js';
import { cases, expectedText, isText, lineBytes, optionsOf, skipUnlessDemo, streamOf, type Case } from './vectors.js';

/** Feeds `chunks` through a decoder into a fresh responder; returns all reply text. */
function viaDecoder(c: Case, chunks: Iterable<Uint8Array>): { text: string; responder: Responder } {
  const options = optionsOf(c);
  const responder = new Responder(options);
  const decoder = new LineDecoder(options);
  let text = '';
  for (const chunk of chunks) for (const frame of decoder.push(chunk)) text += responder.handleFrame(frame);
  for (const frame of decoder.end()) text += responder.handleFrame(frame);
  return { text, responder };
}

function* bytesOneByOne(bytes: Buffer): Generator<Buffer> {
  for (let i = 0; i < bytes.length; i++) yield bytes.subarray(i, i + 1);
}

const DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024;

/** The message a line holds if `handle` can be given it: valid, and within the line limit. */
function messageOf(line: string, c: Case): Message | undefined {
  if (Buffer.byteLength(line.replace(/\r$/, '')) > (c.options?.max_line_bytes ?? DEFAULT_MAX_LINE_BYTES))
    return undefined;
  const decoded = decodeMessage(line);
  return decoded.ok ? decoded.message : undefined;
}

describe('conformance: handleLine, one call per input line', () => {
  for (const c of cases.filter(isText)) {
    test(c.name, { skip: skipUnlessDemo(c) }, () => {
      const r = new Responder(optionsOf(c));
      const text = c.input.map((line) => r.handleLine(line as string)).join('');
      assert.equal(text, expectedText(c));
      assert.equal(r.done, c.done);
    });
  }
});

describe('conformance: handleLine with each line ending in \\n', () => {
  for (const c of cases.filter(isText)) {
    test(c.name, { skip: skipUnlessDemo(c) }, () => {
      const r = new Responder(optionsOf(c));
      assert.equal(c.input.map((line) => r.handleLine(`${line as string}\n`)).join(''), expectedText(c));
      assert.equal(r.done, c.done);
    });
  }
});

describe('conformance: handleBuffer, one call per input line (raw bytes included)', () => {
  for (const c of cases) {
    test(c.name, { skip: skipUnlessDemo(c) }, () => {
      const r = new Responder(optionsOf(c));
      const out = Buffer.concat(c.input.map((line) => r.handleBuffer(lineBytes(line))));
      assert.equal(out.toString('utf8'), expectedText(c));
      assert.equal(r.done, c.done);
    });
  }
});

describe('conformance: handleBuffer on a plain Uint8Array with its \\n', () => {
  for (const c of cases) {
    test(c.name, { skip: skipUnlessDemo(c) }, () => {
      const r = new Responder(optionsOf(c));
      const out = c.input.map((line) => {
        const reply = r.handleBuffer(new Uint8Array(Buffer.concat([lineBytes(line), Buffer.from('\n')])));
        assert.ok(Buffer.isBuffer(reply));
        return reply.toString('utf8');
      });
      assert.equal(out.join(''), expectedText(c));
    });
  }
});

describe('conformance: the byte stream through LineDecoder and handleFrame', () => {
  for (const c of cases) {
    test(`${c.name} (whole)`, { skip: skipUnlessDemo(c) }, () => {
      const { text, responder } = viaDecoder(c, [streamOf(c)]);
      assert.equal(text, expectedText(c));
      assert.equal(responder.done, c.done);
    });
    test(`${c.name} (one byte at a time)`, { skip: skipUnlessDemo(c) }, () => {
      const { text, responder } = viaDecoder(c, bytesOneByOne(streamOf(c)));
      assert.equal(text, expectedText(c));
      assert.equal(responder.done, c.done);
    });
    test(`${c.name} (without the final newline)`, { skip: skipUnlessDemo(c) }, () => {
      const stream = streamOf(c);
      assert.equal(viaDecoder(c, [stream.subarray(0, -1)]).text, expectedText(c));
    });
  }
});

describe('conformance: the byte stream split into two chunks at every byte boundary', () => {
  const picked = cases.filter((c) =>
    /CRLF|size limit|blank|invalid UTF-8|truncated multi-byte|excerpt counts|seed conversation/.test(c.name),
  );
  test('picks a few cases', () => assert.ok(picked.length >= 6, `${picked.length}`));
  for (const c of picked) {
    test(c.name, { skip: skipUnlessDemo(c) }, () => {
      const stream = streamOf(c);
      for (let cut = 0; cut <= stream.length; cut++) {
        const { text } = viaDecoder(c, [stream.subarray(0, cut), stream.subarray(cut)]);
        assert.equal(text, expectedText(c), `cut at ${cut}`);
      }
    });
  }
});

describe('conformance: handle() for the cases whose every line is a valid message', () => {
  const messageCases = cases.filter((c) => c.input.every((l) => typeof l === 'string' && messageOf(l, c)));
  test('covers the message cases', () => assert.ok(messageCases.length >= 10, `${messageCases.length}`));
  for (const c of messageCases) {
    test(c.name, { skip: skipUnlessDemo(c) }, () => {
      const r = new Responder(optionsOf(c));
      const replies = c.input.flatMap((line) => r.handle(messageOf(line as string, c) as Message));
      assert.deepEqual(
        replies,
        c.replies.map((line) => JSON.parse(line) as Message),
      );
      assert.equal(replies.map(encodeMessage).join(''), expectedText(c));
      assert.equal(r.done, c.done);
    });
  }
});

describe('excerpt', () => {
  test('keeps up to 40 characters and marks a cut with an ellipsis', () => {
    assert.equal(excerpt('x'.repeat(40)), 'x'.repeat(40));
    assert.equal(excerpt('x'.repeat(41)), `${'x'.repeat(40)}…`);
    assert.equal(excerpt(''), '');
  });
  test('counts code points, not UTF-16 units', () => {
    assert.equal(excerpt('🌍'.repeat(40)), '🌍'.repeat(40));
    assert.equal(excerpt('🌍'.repeat(41)), `${'🌍'.repeat(40)}…`);
    assert.equal(excerpt(`${'é'.repeat(39)}🌍🌍`), `${'é'.repeat(39)}🌍…`);
  });
});

describe('invalidUtf8Offset agrees with Rust valid_up_to()', () => {
  const at = (hex: string): number => invalidUtf8Offset(Buffer.from(hex.replace(/ /g, ''), 'hex'));
  test('valid text, including 4-byte sequences and the edges of each range', () => {
    assert.equal(at(''), -1);
    assert.equal(at('61 c2 80 df bf e0 a0 80 ed 9f bf ee 80 80 ef bf bf'), -1);
    assert.equal(at('f0 90 80 80 f4 8f bf bf'), -1);
  });
  test('stray continuation bytes and impossible lead bytes', () => {
    assert.equal(at('61 80'), 1);
    assert.equal(at('c0 80'), 0);
    assert.equal(at('c1 bf'), 0);
    assert.equal(at('61 62 f5 80 80 80'), 2);
    assert.equal(at('ff'), 0);
  });
  test('overlongs, surrogates and code points above U+10FFFF', () => {
    assert.equal(at('e0 9f bf'), 0);
    assert.equal(at('22 ed a0 80 22'), 1);
    assert.equal(at('ed bf bf'), 0);
    assert.equal(at('f0 8f bf bf'), 0);
    assert.equal(at('f4 90 80 80'), 0);
  });
  test('truncated and interrupted sequences report their start', () => {
    assert.equal(at('22 61 62 e2 82'), 3);
    assert.equal(at('e2 82 41'), 0);
    assert.equal(at('41 f0 9f 8c'), 1);
    assert.equal(at('c3'), 0);
  });
  test('agrees with Node on which inputs are valid, for every 1- and 2-byte input', () => {
    const decoder = new TextDecoder('utf-8', { fatal: true });
    const valid = (b: Uint8Array): boolean => {
      try {
        decoder.decode(b);
        return true;
      } catch {
        return false;
      }
    };
    for (let a = 0; a < 256; a++) {
      assert.equal(invalidUtf8Offset(Uint8Array.of(a)) === -1, valid(Uint8Array.of(a)), `${a}`);
      for (let b = 0; b < 256; b++) {
        const bytes = Uint8Array.of(a, b);
        assert.equal(invalidUtf8Offset(bytes) === -1, valid(bytes), `${a} ${b}`);
      }
    }
  });
});

describe('decodeEnvelope', () => {
  test('an unpaired surrogate escape anywhere in data is invalid JSON with the id (as in Rust)', () => {
    for (const data of ['"\\ud800"', '["a",{"b":"\\udfff"}]', '{"\\udc00":1}', '[[[["x\\ud83d"]]]]']) {
      const line = `{"msg_type":"t","data":${data},"id":5}`;
      assert.deepEqual(decodeEnvelope(line), { ok: false, error: `invalid JSON: \`${excerpt(line)}\``, id: 5 }, line);
    }
    // A pair is one character; unknown fields and a replaced value are not read.
    assert.deepEqual(decodeEnvelope('{"msg_type":"t","data":{"\\ud83d\\ude00":"\\\\ud800"},"x":"\\ud800"}'), {
      ok: true,
      message: { msg_type: 't', data: { '\u{1f600}': '\\ud800' } },
    });
    assert.deepEqual(decodeEnvelope('{"msg_type":"t","data":"\\ud800","data":[1]}'), {
      ok: true,
      message: { msg_type: 't', data: [1] },
    });
  });
  test('deep data is walked without recursion', () => {
    const deep = `${'['.repeat(100_000)}"\\ud800"${']'.repeat(100_000)}`;
    assert.equal(decodeEnvelope(`{"msg_type":"t","data":${deep}}`).ok, false);
  });
});

describe('parseEnvelope (the reader\'s fast path)', () => {
  const lines = [
    '{"msg_type":"ack","data":"Acknowledged: x","id":1}',
    '{"msg_type":"ack","data":"x"}',
    '{"msg_type":"ack","data":"x","id":null}',
    '{"msg_type":"ack","data":"x","id":-0}',
    '{"msg_type":"ack","data":"x","id":0}',
    '{"msg_type":"ack","data":"x","id":9007199254740991}',
    '{"msg_type":"ack","data":"x","id":9007199254740992}',
    '{"msg_type":"ack","data":"x","id":1.5}',
    '{"msg_type":"ack","data":"x","id":-1}',
    '{"msg_type":"ack","data":"x","id":"1"}',
    '{"msg_type":"ack","data":"x","id":1e3}',
    '{"id":3,"data":"x","msg_type":"t","extra":[1]}',
    '{"msg_type":"t","data":null,"id":2}',
    '{"msg_type":"t","data":{"n":[1,2,{"k":"v"}]},"id":2}',
    '{"msg_type":"t","data":"\\ud800","id":5}',
    '{"msg_type":"t","data":"\\ud83d\\ude00","id":5}',
    '{"msg_type":"t","data":["a",{"b":"\\udfff"}],"id":5}',
    '{"msg_type":"t","data":{"\\udc00":1},"id":5}',
    '{"msg_type":"\\ud800","data":"x","id":5}',
    '{"msg_type":"t","data":"\\ud800","data":[1]}',
    '{"msg_type":7,"data":"x","id":1}',
    '{"data":"x","id":1}',
    '{"msg_type":"t","id":1}',
    '{"__proto__":{"msg_type":"t","data":"x"},"id":1}',
    '{"__proto__":{"id":"x"},"msg_type":"t","data":"x"}',
    '\ufeff{"msg_type":"t","data":"x"}',
    '[1]',
    '"x"',
    'null',
    'not json',
    '',
  ];

  test('accepts what decodeEnvelope accepts, with the same message, and nothing it refuses', () => {
    for (const line of lines) {
      const fast = parseEnvelope(line);
      const full = decodeEnvelope(line);
      if (full.ok) assert.deepEqual(fast, full.message, line);
      else assert.equal(fast, undefined, line);
    }
  });

  test('a polluted Object.prototype is not read', () => {
    const proto = Object.prototype as Record<string, unknown>;
    proto['msg_type'] = 'polluted';
    proto['data'] = 'polluted';
    proto['id'] = 7;
    try {
      for (const line of ['{"data":"x"}', '{"msg_type":"t"}', '{"msg_type":"t","data":"x"}']) {
        const full = decodeEnvelope(line);
        if (full.ok) assert.deepEqual(parseEnvelope(line), full.message, line);
        else assert.equal(parseEnvelope(line), undefined, line);
      }
      assert.deepEqual(parseEnvelope('{"msg_type":"t","data":"x"}'), { msg_type: 't', data: 'x' });
    } finally {
      delete proto['msg_type'];
      delete proto['data'];
      delete proto['id'];
    }
  });
});

describe('decodeMessage', () => {
  const error = (line: string): string => {
    const d = decodeMessage(line);
    return d.ok ? 'ok' : d.error;
  };
  test('a __proto__ key is an ordinary unknown field', () => {
    assert.deepEqual(decodeMessage('{"__proto__":{"id":"x"},"msg_type":"data","data":"x"}'), {
      ok: true,
      message: { msg_type: 'data', data: 'x' },
    });
    assert.equal(
      error('{"__proto__":{"msg_type":"data"}}'),
      'missing field `msg_type`: `{"__proto__":{"msg_type":"data"}}`',
    );
  });
  test('a polluted Object.prototype is not read', () => {
    const proto = Object.prototype as Record<string, unknown>;
    proto['data'] = 'polluted';
    try {
      assert.equal(error('{"msg_type":"data"}'), 'missing field `data`: `{"msg_type":"data"}`');
    } finally {
      delete proto['data'];
    }
  });
  test('an unpaired surrogate escape is invalid JSON where the protocol reads it (as in Rust)', () => {
    assert.equal(error('{"msg_type":"data","data":"\\ud800"}'), 'invalid JSON: `{"msg_type":"data","data":"\\ud800"}`');
    const d = decodeMessage('{"msg_type":"\\udc00","data":"x","id":3}');
    assert.deepEqual(d, { ok: false, error: 'invalid JSON: `{"msg_type":"\\udc00","data":"x","id":3}`' });
    assert.equal(error('{"\\ud800":"\\udfff","msg_type":"data","data":"\\ud83d\\ude00"}'), 'ok');
    assert.equal(error('{"msg_type":"data","data":"\\ud800","data":"ok"}'), 'ok');
  });
  test('numbers of any size and depth are classified as JSON.parse reads them', () => {
    const deep = `${'['.repeat(100_000)}${']'.repeat(100_000)}`;
    assert.match(error(deep), /^expected a JSON object, got array: `\[{40}…`$/);
    assert.match(error(`{"msg_type":"data","data":${deep}}`), /^field `data` must be a string, got array/);
    assert.match(error('{"msg_type":"data","data":"x","id":1e400}'), /^field `id` must be .*, got number/);
    assert.deepEqual(decodeMessage('{"msg_type":"a","data":"b","id":-0}'), {
      ok: true,
      message: { msg_type: 'a', data: 'b', id: 0 },
    });
    assert.ok(
      Object.is((decodeMessage('{"msg_type":"a","data":"b","id":-0.0}') as { message: Message }).message.id, 0),
    );
    assert.deepEqual(decodeMessage('{"msg_type":"a","data":"b","id":9007199254740991.4}'), {
      ok: true,
      message: { msg_type: 'a', data: 'b', id: 9007199254740991 },
    });
  });
  test('a leading byte order mark is invalid JSON', () => {
    assert.equal(error('\ufeff{"msg_type":"data","data":"x"}'), 'invalid JSON: `\ufeff{"msg_type":"data","data":"x"}`');
  });
  test('missing and mistyped fields carry a valid id, a bad id carries none', () => {
    assert.deepEqual(decodeMessage('{"msg_type":"data","id":4}'), {
      ok: false,
      error: 'missing field `data`: `{"msg_type":"data","id":4}`',
      id: 4,
    });
    assert.deepEqual(decodeMessage('{"data":1,"id":-4}'), {
      ok: false,
      error: 'field `id` must be an integer from 0 to 9007199254740991, got number: `{"data":1,"id":-4}`',
    });
  });
});

describe('encodeMessage', () => {
  test('writes msg_type, data, then id only when present, as JSON.stringify does', () => {
    assert.equal(encodeMessage({ msg_type: 'ack', data: 'x' }), '{"msg_type":"ack","data":"x"}\n');
    assert.equal(encodeMessage({ msg_type: 'ack', data: 'x', id: 0 }), '{"msg_type":"ack","data":"x","id":0}\n');
    const data = 'q"b\\\n\t\u0001\u001f\u007f/é🌍\u2028';
    assert.equal(encodeMessage({ msg_type: 'a', data, id: 7 }), `${JSON.stringify({ msg_type: 'a', data, id: 7 })}\n`);
  });
  test('tooLongReply is the error the responder gives for a too_long frame', () => {
    const r = new Responder({ maxLineBytes: 4 });
    assert.equal(r.handleFrame({ kind: 'too_long', line: 3, length: 9 }), tooLongReply(3, 9, 4));
    assert.equal(
      tooLongReply(3, 9, 4),
      '{"msg_type":"error","data":"line 3: line of 9 bytes exceeds the 4-byte limit"}\n',
    );
  });
});

describe('Responder', () => {
  const data = (d: string, id?: number): string => JSON.stringify({ msg_type: 'data', data: d, id });

  test('says goodbye after the fifth data message and then refuses', () => {
    const r = new Responder();
    for (let i = 1; i <= 4; i++) {
      assert.equal(r.handleLine(data(String(i))), `{"msg_type":"ack","data":"Acknowledged: ${i}"}\n`);
      assert.equal(r.done, false);
    }
    assert.equal(
      r.handleLine(data('5', 7)),
      '{"msg_type":"ack","data":"Acknowledged: 5","id":7}\n{"msg_type":"exit","data":"Goodbye from TypeScript!","id":7}\n',
    );
    assert.equal(r.done, true);
    assert.equal(
      r.handleLine('{"msg_type":"greeting","data":""}'),
      '{"msg_type":"error","data":"line 6: conversation has ended; message ignored"}\n',
    );
    // Lines that are not messages still get their own error, as in the Rust core.
    assert.equal(r.handleLine('nope'), '{"msg_type":"error","data":"line 7: invalid JSON: `nope`"}\n');
  });

  test('handleLine tolerates its line ending and counts blank lines', () => {
    const r = new Responder();
    const want = '{"msg_type":"response","data":"Hello from TypeScript!"}\n';
    assert.equal(r.handleLine('{"msg_type":"greeting","data":""}\r\n'), want);
    assert.equal(r.handleLine('{"msg_type":"greeting","data":""}\n'), want);
    assert.equal(r.handleLine('\r\n'), '');
    assert.equal(r.handleLine(''), '');
    assert.equal(r.linesSeen, 4);
    assert.equal(r.handleLine('x\n\n'), '{"msg_type":"error","data":"line 5: invalid JSON: `x\\n`"}\n');
  });

  test('handleLine measures the limit in UTF-8 bytes', () => {
    const r = new Responder({ maxLineBytes: 6 });
    assert.equal(
      r.handleLine('"éé"'),
      '{"msg_type":"error","data":"line 1: expected a JSON object, got string: `\\"éé\\"`"}\n',
    );
    assert.equal(
      r.handleLine('"ééé"'),
      '{"msg_type":"error","data":"line 2: line of 8 bytes exceeds the 6-byte limit"}\n',
    );
    assert.equal(r.handleLine('      \r\n'), '', 'a blank line within the limit is skipped');
    assert.equal(
      r.handleLine('       \r\n'),
      '{"msg_type":"error","data":"line 4: line of 7 bytes exceeds the 6-byte limit"}\n',
      'an over-long blank line is too long, as the stream decoder must judge it',
    );
    assert.equal(
      r.handleBuffer(Buffer.from('\t'.repeat(7))).toString(),
      '{"msg_type":"error","data":"line 5: line of 7 bytes exceeds the 6-byte limit"}\n',
    );
  });

  test('handleLine reads an unpaired surrogate as U+FFFD, as its UTF-8 bytes would be', () => {
    const line = '{"msg_type":"data","data":"\ud800"}';
    assert.equal(new Responder().handleLine(line), '{"msg_type":"ack","data":"Acknowledged: \ufffd"}\n');
    assert.equal(
      new Responder().handleBuffer(Buffer.from(line)).toString(),
      '{"msg_type":"ack","data":"Acknowledged: \ufffd"}\n',
    );
  });

  test('handle takes objects, validates them as the addon does, and counts lines', () => {
    const r = new Responder({ exitAfter: 1 });
    assert.deepEqual(r.handle({ msg_type: 'bogus', data: 'x', id: 2 }), [
      { msg_type: 'error', data: 'line 1: unknown msg_type `bogus`; expected greeting, data or exit', id: 2 },
    ]);
    const bad = (msg: unknown, text: string): void =>
      assert.throws(
        () => r.handle(msg as Message),
        (e: unknown) => e instanceof TypeError && e.message === text && (e as { code?: string }).code === 'InvalidArg',
      );
    bad(null, 'handle: expected a message object, got null');
    bad([], 'handle: expected a message object, got array');
    bad('x', 'handle: expected a message object, got string');
    bad({ data: 'x' }, 'handle: missing field `msg_type`');
    bad({ msg_type: 'data', data: 5 }, 'handle: field `data` must be a string, got number');
    bad(
      { msg_type: 'data', data: 'x', id: -1 },
      'handle: field `id` must be an integer from 0 to 9007199254740991, got number -1',
    );
    bad(
      { msg_type: 'data', data: 'x', id: '1' },
      'handle: field `id` must be an integer from 0 to 9007199254740991, got string',
    );
    assert.deepEqual(r.handle({ msg_type: 'data', data: 'x', id: null } as unknown as Message), [
      { msg_type: 'ack', data: 'Acknowledged: x' },
      { msg_type: 'exit', data: 'Goodbye from TypeScript!' },
    ]);
    assert.equal(r.linesSeen, 2, 'a rejected argument is not a line');
    assert.equal(r.done, true);
  });

  test('the constructor validates its options as the addon does', () => {
    const bad = (options: unknown, text: string): void =>
      assert.throws(() => new Responder(options as object), { name: 'TypeError', message: text });
    bad(5, 'Responder: expected an options object, got number');
    bad(
      { exitAfter: 1.5 },
      'Responder: option `exitAfter` must be an integer from 0 to 9007199254740991, got number 1.5',
    );
    bad(
      { maxLineBytes: null },
      'Responder: option `maxLineBytes` must be an integer from 0 to 9007199254740991, got null',
    );
    bad({ name: 3 }, 'Responder: option `name` must be a string, got number');
    assert.equal(new Responder(null).done, false);
    assert.equal(
      new Responder({ name: 'N' }).handleLine('{"msg_type":"exit","data":""}'),
      '{"msg_type":"exit","data":"Goodbye from N!"}\n',
    );
  });

  test('a large payload is acknowledged intact', () => {
    const payload = 'ü"\\'.repeat(100_000);
    const reply = new Responder().handleLine(JSON.stringify({ msg_type: 'data', data: payload }));
    assert.equal((JSON.parse(reply) as Message).data, `Acknowledged: ${payload}`);
  });
});

describe('the plain envelope (read without JSON.parse)', () => {
  /** What the parser path answers for `line` as line 1 of a fresh conversation that never ends. */
  const parsed = (line: string): string => {
    const d = decodeMessage(line);
    const withId = (m: Message, id: number | undefined): Message => (id === undefined ? m : { ...m, id });
    if (!d.ok) return encodeMessage(withId({ msg_type: 'error', data: `line 1: ${d.error}` }, d.id));
    const { msg_type: msgType, data, id } = d.message;
    if (msgType === 'greeting') return encodeMessage(withId({ msg_type: 'response', data: 'Hello from TypeScript!' }, id));
    assert.equal(msgType, 'data', line);
    return encodeMessage(withId({ msg_type: 'ack', data: `Acknowledged: ${data}` }, id));
  };
  const lines = [
    '{"msg_type":"data","data":"x","id":7}',
    '{"msg_type":"data","data":"x"}',
    '{"msg_type":"data","data":"","id":0}',
    '{"msg_type":"data","data":"é€😀 a/b\'c{}:,[]","id":9007199254740991}',
    '{"msg_type":"greeting","data":"hi","id":3}',
    // Near misses: each goes to JSON.parse and is answered as before.
    '{"msg_type":"data","data":"x","id":9007199254740992}',
    '{"msg_type":"data","data":"x","id":99999999999999999999}',
    '{"msg_type":"data","data":"x","id":07}',
    '{"msg_type":"data","data":"x","id":1.0}',
    '{"msg_type":"data","data":"x","id":-0}',
    '{"msg_type":"data","data":"x","id":null}',
    '{"msg_type":"data","data":"x","id":1,"id":2}',
    '{"msg_type":"data","data":"x","data":"y"}',
    '{"msg_type":"data","data":"x"} ',
    '{"msg_type":"data", "data":"x"}',
    '{"data":"x","msg_type":"data"}',
    '{"msg_type":"data","data":"a\\"b"}',
    '{"msg_type":"data","data":"a\\\\b","id":1}',
    '{"msg_type":"data","data":"\\u0041\\n\\ud83d\\ude00"}',
    '{"msg_type":"data","data":"\\ud800","id":2}',
    '{"msg_type":"data","data":"tab\there","id":4}',
    '{"msg_type":"data","data":"x"}}',
    '{"msg_type":"data","data":"x"',
    '{"msg_type":"d\\u0061ta","data":"x","id":5}',
  ];
  test('answers exactly as the parser path does, whatever the near miss', () => {
    for (const line of lines) {
      const r = new Responder({ exitAfter: 0 });
      assert.equal(r.handleLine(line), parsed(line), line);
      assert.equal(new Responder({ exitAfter: 0 }).handleText(1, line), parsed(line), line);
    }
  });
  test('keeps the conversation state: the exit after the last data message, then refusal', () => {
    const r = new Responder({ exitAfter: 2 });
    assert.equal(r.handleText(1, '{"msg_type":"data","data":"a","id":1}'), '{"msg_type":"ack","data":"Acknowledged: a","id":1}\n');
    assert.equal(
      r.handleText(2, '{"msg_type":"data","data":"b","id":2}'),
      '{"msg_type":"ack","data":"Acknowledged: b","id":2}\n{"msg_type":"exit","data":"Goodbye from TypeScript!","id":2}\n',
    );
    assert.equal(
      r.handleText(3, '{"msg_type":"data","data":"c"}'),
      '{"msg_type":"error","data":"line 3: conversation has ended; message ignored"}\n',
    );
  });
});

describe('the plain envelope one byte away', () => {
  /** Every line one byte from `base` (each byte value put in place of, or inserted before, each byte; each byte deleted). */
  const neighbours = (base: string): Buffer[] => {
    const b = Buffer.from(base);
    const out: Buffer[] = [];
    for (let at = 0; at <= b.length; at++) {
      for (let v = 0; v < 256; v++) {
        if (v === 0x0a) continue;
        out.push(Buffer.concat([b.subarray(0, at), Buffer.from([v]), b.subarray(at)]));
        if (at < b.length) {
          const replaced = Buffer.from(b);
          replaced[at] = v;
          out.push(replaced);
        }
      }
      if (at < b.length) out.push(Buffer.concat([b.subarray(0, at), b.subarray(at + 1)]));
    }
    return out;
  };
  test('acks each exactly as the parser path does (the same line with a leading space)', () => {
    const bases = [
      '{"msg_type":"data","data":"","id":0}',
      '{"msg_type":"data","data":"abcdefg"}',
      '{"msg_type":"data","data":"é€😀\u2028\u007f","id":9007199254740991}',
      '{"msg_type":"data","data":"x","id":123456789012345}',
    ];
    let acks = 0;
    for (const base of bases) {
      for (const bytes of neighbours(base)) {
        const text = bytes.toString('utf8');
        // `handleText` takes what `feed` hands over: valid UTF-8, not blank, no line ending.
        if (!Buffer.from(text).equals(bytes) || text.trim() === '' || text.endsWith('\r')) continue;
        const got = new Responder({ exitAfter: 0 }).handleText(1, text);
        const spaced = new Responder({ exitAfter: 0 }).handleText(1, ` ${text}`);
        const isAck = (reply: string): boolean => reply.startsWith('{"msg_type":"ack",');
        if (isAck(got) || isAck(spaced)) {
          acks++;
          assert.equal(got, spaced, text);
          const { data, id } = JSON.parse(text) as Message;
          const ack: Message = { msg_type: 'ack', data: `Acknowledged: ${data}` };
          assert.equal(got, encodeMessage(id === undefined ? ack : { ...ack, id }), text);
        }
      }
    }
    // Many neighbours are acked (another payload byte), so this checks something.
    assert.ok(acks > 1000, `${acks} acks`);
  });
});
