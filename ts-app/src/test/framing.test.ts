// LineDecoder on its own: split, joined and broken input, and its memory bound.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { type Frame, isBlank, LineDecoder } from '../framing.js';

const show = (f: Frame): string =>
  f.kind === 'line' ? `${f.line}:${f.bytes.toString('latin1')}` : `${f.line}:too long (${f.length})`;

/** Feeds `chunks`, then ends; returns each frame as a readable string. */
function decode(maxLineBytes: number, chunks: (string | Uint8Array)[]): string[] {
  const d = new LineDecoder({ maxLineBytes });
  const out: string[] = [];
  for (const chunk of chunks) {
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk, 'latin1') : chunk;
    out.push(...d.push(bytes).map(show));
    assert.ok(d.buffered <= maxLineBytes + 1, `buffered ${d.buffered} past the bound`);
  }
  out.push(...d.end().map(show));
  return out;
}

describe('LineDecoder', () => {
  test('splits lines and numbers them', () => {
    assert.deepEqual(decode(100, ['a\nbb\nccc\n']), ['1:a', '2:bb', '3:ccc']);
  });

  test('splits a message across chunks at every byte, and one byte at a time', () => {
    const input = '{"a":1}\r\n\n  \n{"b":2}\nlast';
    const want = ['1:{"a":1}', '4:{"b":2}', '5:last'];
    for (let cut = 0; cut <= input.length; cut++) {
      assert.deepEqual(decode(100, [input.slice(0, cut), input.slice(cut)]), want, `cut at ${cut}`);
    }
    assert.deepEqual(decode(100, [...input]), want);
  });

  test('strips CRLF but keeps a lone inner CR', () => {
    assert.deepEqual(decode(100, ['a\r\nb\rc\n']), ['1:a', '2:b\rc']);
  });

  test('skips blank lines but counts them', () => {
    assert.deepEqual(decode(100, ['\n\r\n \t \nx\n\n']), ['4:x']);
  });

  test('reports an over-long line with its length and goes on', () => {
    assert.deepEqual(decode(4, ['12345\nok\n']), ['1:too long (5)', '2:ok']);
    assert.deepEqual(decode(4, ['1234\r\n']), ['1:1234']);
    assert.deepEqual(decode(4, ['12345\r\n']), ['1:too long (5)']);
    assert.deepEqual(decode(4, ['12', '34\r', '\n']), ['1:1234']);
    assert.deepEqual(decode(4, ['12', '345', '\r\n']), ['1:too long (5)']);
  });

  test('an over-long line split between CR and LF does not count the CR', () => {
    assert.deepEqual(decode(4, ['123456789\r', '\nok\n']), ['1:too long (9)', '2:ok']);
    assert.deepEqual(decode(4, ['123456789', '\r', '\nok\n']), ['1:too long (9)', '2:ok']);
    assert.deepEqual(decode(4, ['123456789\r', 'x\n']), ['1:too long (11)']);
  });

  test('discards an over-long line as it arrives', () => {
    const d = new LineDecoder({ maxLineBytes: 8 });
    assert.deepEqual(d.push(Buffer.from('ok\n0123456789')).map(show), ['1:ok']);
    assert.equal(d.buffered, 0, 'an over-long partial line is dropped, not kept');
    const kib = Buffer.alloc(1024, 'x');
    for (let i = 0; i < 1000; i++) {
      assert.deepEqual(d.push(kib), []);
      assert.equal(d.buffered, 0);
    }
    assert.deepEqual(d.push(Buffer.from('yz\r\nnext\n')).map(show), [`2:too long (${10 + 1024 * 1000 + 2})`, '3:next']);
  });

  test('memory stays bounded when a long line trickles in byte by byte', () => {
    const d = new LineDecoder({ maxLineBytes: 64 * 1024 });
    const one = Buffer.from('x');
    for (let i = 0; i < 64 * 1024; i++) assert.deepEqual(d.push(one), []);
    assert.equal(d.buffered, 64 * 1024);
    assert.deepEqual(d.push(Buffer.from('\n')).map(show), [`1:${'x'.repeat(64 * 1024)}`]);
    assert.equal(d.buffered, 0);
  });

  test('joins a line from large and small pieces in order', () => {
    const big = 'a'.repeat(5000);
    const pieces = ['<', big, 'b', 'c', big, 'd'.repeat(3000), 'e'.repeat(6000), '>\n'];
    assert.deepEqual(decode(1 << 20, pieces), [`1:${pieces.join('').slice(0, -1)}`]);
  });

  test('yields the unterminated last line at end()', () => {
    assert.deepEqual(decode(100, ['a\nb']), ['1:a', '2:b']);
    assert.deepEqual(decode(100, ['a\nb\r']), ['1:a', '2:b']);
    assert.deepEqual(decode(4, ['a\n123456789']), ['1:a', '2:too long (9)']);
    assert.deepEqual(decode(4, ['a\n123456789\r']), ['1:a', '2:too long (9)']);
    assert.deepEqual(decode(100, ['a\n  ']), ['1:a']);
  });

  test('end() leaves the decoder empty and reusable', () => {
    const d = new LineDecoder({ maxLineBytes: 100 });
    assert.deepEqual(d.push(Buffer.from('a\nb')).map(show), ['1:a']);
    assert.deepEqual(d.end().map(show), ['2:b']);
    assert.deepEqual(d.end(), []);
    assert.deepEqual(d.push(Buffer.from('c\n')).map(show), ['3:c']);
  });

  test('empty input yields nothing', () => {
    assert.deepEqual(decode(100, []), []);
    assert.deepEqual(decode(100, ['']), []);
  });

  test('a zero limit rejects every non-blank line', () => {
    assert.deepEqual(decode(0, ['a\n\n']), ['1:too long (1)']);
  });

  test('an over-long blank line is too long however it is chunked (as in the Rust core)', () => {
    const input = '     \n\t\t\t\t\t';
    const want = ['1:too long (5)', '2:too long (5)'];
    assert.deepEqual(decode(2, [input]), want);
    assert.deepEqual(decode(2, [...input]), want);
    assert.deepEqual(decode(5, [input]), []);
    assert.deepEqual(decode(4, ['  ', '  ', ' \r', '\nx\n']), ['1:too long (5)', '2:x']);
    assert.deepEqual(decode(4, ['    \r\n']), []);
  });

  test('takes plain Uint8Arrays and views into larger buffers', () => {
    const backing = Buffer.from('junk|a\nb|junk');
    const view = new Uint8Array(backing.buffer, backing.byteOffset + 5, 3);
    assert.deepEqual(decode(100, [view]), ['1:a', '2:b']);
  });

  test('a line arriving in one chunk is handed out without a copy', () => {
    const chunk = Buffer.from('{"a":1}\n');
    const [frame] = new LineDecoder().push(chunk);
    assert.ok(frame?.kind === 'line');
    assert.equal(frame.bytes.buffer, chunk.buffer);
  });
});

describe('isBlank', () => {
  test('is true only for spaces, tabs and CRs', () => {
    assert.equal(isBlank(Buffer.from('')), true);
    assert.equal(isBlank(Buffer.from(' \t\r')), true);
    assert.equal(isBlank(Buffer.from(' \n')), false);
    assert.equal(isBlank(Buffer.from('\u00a0')), false);
  });
});
