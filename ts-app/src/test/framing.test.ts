// LineDecoder on its own: split, joined and broken input, and its memory bound.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { isUtf8 } from 'node:buffer';

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

/** A frame or a text line as one comparable string: valid lines as their text, others as hex. */
function normal(f: Frame): string {
  if (f.kind === 'too_long') return `${f.line}:too long (${f.length})`;
  return isUtf8(f.bytes) ? `${f.line}:${f.bytes.toString('utf8')}` : `${f.line}:bytes ${f.bytes.toString('hex')}`;
}

/** `feed` over `chunks`, then `end`: every line normalized, and which way each came (text or frame). */
function feedAll(maxLineBytes: number, chunks: Uint8Array[]): { lines: string[]; via: string[] } {
  const d = new LineDecoder({ maxLineBytes });
  const lines: string[] = [];
  const via: string[] = [];
  const sink = {
    text: (line: number, text: string): void => {
      lines.push(`${line}:${text}`);
      via.push('text');
    },
    frame: (f: Frame): void => {
      lines.push(normal(f));
      via.push('frame');
    },
  };
  for (const chunk of chunks) {
    d.feed(chunk, sink);
    assert.ok(d.buffered <= maxLineBytes + 1, `buffered ${d.buffered} past the bound`);
  }
  for (const f of d.end()) sink.frame(f);
  return { lines, via };
}

/** `push` over `chunks`, then `end`, normalized as `feedAll` does. */
function pushAll(maxLineBytes: number, chunks: Uint8Array[]): string[] {
  const d = new LineDecoder({ maxLineBytes });
  const out: string[] = [];
  for (const chunk of chunks) out.push(...d.push(chunk).map(normal));
  out.push(...d.end().map(normal));
  return out;
}

/** A deterministic pseudo-random generator (xorshift32), so a failure can be replayed. */
function rng(seed: number): (n: number) => number {
  let x = seed >>> 0 || 1;
  return (n) => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x % n;
  };
}

describe('LineDecoder.feed', () => {
  test('a chunk of whole valid lines comes out as text, numbered, blank lines skipped', () => {
    const chunk = Buffer.from('{"a":"é"}\n \t\r\n{"b":2}\r\n\n{"c":"😀"}\npartial');
    assert.deepEqual(feedAll(100, [chunk]), {
      lines: ['1:{"a":"é"}', '3:{"b":2}', '5:{"c":"😀"}', '6:partial'],
      via: ['text', 'text', 'text', 'frame'],
    });
  });

  test('one line of invalid UTF-8 among valid ones: that line goes to frame with its bytes, the rest is read', () => {
    const chunk = Buffer.concat([Buffer.from('{"a":1}\n{'), Buffer.from([0xff, 0xe9]), Buffer.from('}\n\n{"c":3}\n')]);
    const { lines } = feedAll(100, [chunk]);
    assert.deepEqual(lines, ['1:{"a":1}', '2:bytes 7bffe97d', '4:{"c":3}']);
  });

  test('an over-long line among short ones in one chunk is reported, the others read', () => {
    const { lines } = feedAll(10, [Buffer.from('{"a":1}\n' + 'x'.repeat(50) + '\r\n{"b":2}\n')]);
    assert.deepEqual(lines, ['1:{"a":1}', '2:too long (50)', '3:{"b":2}']);
  });

  test('a character split across chunks completes the held line, then the rest is text', () => {
    const whole = Buffer.from('{"a":"é😀"}\n{"b":"ü"}\n');
    for (let cut = 1; cut < whole.length; cut++) {
      const { lines } = feedAll(100, [whole.subarray(0, cut), whole.subarray(cut)]);
      assert.deepEqual(lines, ['1:{"a":"é😀"}', '2:{"b":"ü"}'], `cut at ${cut}`);
    }
  });

  test('gives the same lines as push, however the input is chunked and whatever the limit', () => {
    const pieces = [
      '{"msg_type":"ack","data":"x","id":1}',
      '{"a":"é😀"}',
      '',
      ' ',
      '\t \r',
      '\r',
      'x'.repeat(40),
      ' '.repeat(12),
      'ü'.repeat(9),
    ].map((t) => Buffer.from(t));
    pieces.push(Buffer.from([0xff]), Buffer.from([0xf0, 0x9f]), Buffer.from([0xc3, 0xa9]));
    for (let seed = 1; seed <= 400; seed++) {
      const next = rng(seed);
      const parts: Buffer[] = [];
      for (let i = next(12); i >= 0; i--) {
        parts.push(pieces[next(pieces.length)] as Buffer);
        const end = next(4);
        if (end > 0) parts.push(Buffer.from(end === 1 ? '\n' : end === 2 ? '\r\n' : '\n\n'));
      }
      const input = Buffer.concat(parts);
      const chunks: Buffer[] = [];
      for (let at = 0; at < input.length; ) {
        const len = 1 + next(next(2) === 0 ? 4 : 64);
        chunks.push(input.subarray(at, at + len));
        at += len;
      }
      for (const limit of [0, 3, 12, 40, 1000]) {
        const want = pushAll(limit, chunks);
        assert.deepEqual(feedAll(limit, chunks).lines, want, `seed ${seed}, limit ${limit}, input ${input.toString('hex')}`);
        assert.deepEqual(feedAll(limit, [input]).lines, want, `seed ${seed}, limit ${limit}, whole`);
      }
    }
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
