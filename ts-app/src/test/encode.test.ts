// encodeLine: the exact bytes of a request line, whatever order the types come in.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { encodeLine } from '../peer/encode.js';

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
