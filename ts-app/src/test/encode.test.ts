// encodeLine: the exact bytes of a request line, whatever order the types come in.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { encodeData, encodeLine } from '../peer/encode.js';

test('encodeLine writes each type\'s own head, however types alternate, and makes types well-formed', () => {
  const cases: [string, unknown, number | undefined, string][] = [
    ['data', 'x', 1, '{"msg_type":"data","data":"x","id":1}\n'],
    ['data', { a: [1] }, 2, '{"msg_type":"data","data":{"a":[1]},"id":2}\n'],
    ['markdown', '# Hi', 3, '{"msg_type":"markdown","data":"# Hi","id":3}\n'],
    ['data', null, undefined, '{"msg_type":"data","data":null}\n'],
    ['a"b\\', 'x', 4, '{"msg_type":"a\\"b\\\\","data":"x","id":4}\n'],
    ['\ud800', '\udc00', 5, '{"msg_type":"\ufffd","data":"\ufffd","id":5}\n'],
    ['\ufffd', 'y', 6, '{"msg_type":"\ufffd","data":"y","id":6}\n'],
    ['data', 'z', 7, '{"msg_type":"data","data":"z","id":7}\n'],
  ];
  for (const [type, data, id, want] of cases) assert.equal(encodeLine(type, data, id), want);
});

test('encodeData writes a string exactly as JSON.stringify writes it made well-formed, whatever it holds', () => {
  // Characters JSON escapes (", \, controls), ones it does not (DEL, U+2028, é, 😀), and
  // surrogates paired and not; each string made of a few, plus the edges.
  const alphabet = ['a', 'Z', ' ', '"', '\\', '/', '\u0000', '\u0008', '\n', '\r', '\u001f', '\u007f', '\u2028', 'é', '\ud83d\ude00', '\ud800', '\udfff', '\ufffd'];
  const strings = ['', '"', '\\', '\u001f', '\u0020', 'x'.repeat(64), 'é'.repeat(64), '\ud83d', `${'x'.repeat(100)}\n`];
  let seed = 9;
  const random = (n: number): number => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed % n;
  };
  for (let i = 0; i < 5000; i++) {
    let s = '';
    for (let k = random(12); k > 0; k--) s += alphabet[random(alphabet.length)];
    strings.push(s);
  }
  for (const s of strings) {
    assert.equal(encodeData(s, 't'), JSON.stringify(s.toWellFormed()), JSON.stringify(s));
    assert.equal(encodeLine('t', s, 1), `{"msg_type":"t","data":${JSON.stringify(s.toWellFormed())},"id":1}\n`);
  }
});
