// `serveStdio` through real children over real pipes: the fixtures in `fixtures/` and the
// `upper-service` example, every reply compared byte for byte.

import assert from 'node:assert/strict';
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { PassThrough } from 'node:stream';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { excerpt } from '../protocol.js';
import { type Handlers, serveStdio } from '../serve.js';

const SERVICE = fileURLToPath(new URL('./fixtures/service.js', import.meta.url));
const TWO = fileURLToPath(new URL('./fixtures/two.js', import.meta.url));
const UPPER = fileURLToPath(new URL('../examples/upper-service.js', import.meta.url));

/** The fixture service's handlers, in the order an unknown-type error lists them. */
const SERVICE_TYPES =
  'echo, echo_async, fail, reject, throw_string, nothing, bigint, bytes, html, message, count, counted, hold, ' +
  'release, sleep, track, most_running, odd_message, then_throws, long, ' +
  'half, half_type or half_error';

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** A running child: send it lines, read its reply lines as they come, and await its end. */
class Child {
  readonly process: ChildProcessWithoutNullStreams;
  readonly #lines: string[] = [];
  #partial = '';
  #stdout = '';
  #stderr = '';
  #waiter: (() => void) | undefined;
  readonly #exit: Promise<Run>;

  constructor(script: string, args: string[] = []) {
    this.process = spawn(process.execPath, [script, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.process.stdin.on('error', () => {});
    this.process.stdout.setEncoding('utf8');
    this.process.stdout.on('data', (text: string) => {
      this.#stdout += text;
      const pieces = (this.#partial + text).split('\n');
      this.#partial = pieces.pop() ?? '';
      this.#lines.push(...pieces);
      this.#waiter?.();
    });
    this.process.stderr.on('data', (b: Buffer) => (this.#stderr += b.toString()));
    this.#exit = new Promise((resolve, reject) => {
      this.process.on('error', reject);
      this.process.on('close', (code, signal) => {
        this.#waiter?.();
        resolve({ code, signal, stdout: this.#stdout, stderr: this.#stderr });
      });
    });
  }

  send(input: string | Buffer): void {
    this.process.stdin.write(input);
  }

  /** The next `n` reply lines (without their `\n`); fails if the child exits first. */
  async lines(n: number): Promise<string[]> {
    while (this.#lines.length < n) {
      if (this.process.exitCode !== null || this.process.signalCode !== null) {
        assert.fail(`the child exited with ${this.#lines.length} of ${n} lines: ${this.#stderr}`);
      }
      await new Promise<void>((resolve) => (this.#waiter = resolve));
    }
    return this.#lines.splice(0, n);
  }

  /** Closes stdin and waits for the exit. */
  end(): Promise<Run> {
    this.process.stdin.end();
    return this.#exit;
  }

  get exited(): Promise<Run> {
    return this.#exit;
  }
}

/** Runs `script` on `input` (stdin then closed) and collects everything. */
function run(script: string, input: string | Buffer, args: string[] = []): Promise<Run> {
  const child = new Child(script, args);
  child.send(input);
  return child.end();
}

const req = (msgType: string, data: unknown, id?: number): string =>
  `${JSON.stringify(id === undefined ? { msg_type: msgType, data } : { msg_type: msgType, data, id })}\n`;

/** Asserts a clean run: exactly `stdout`, `served` on stderr, exit code 0. */
function assertServed(r: Run, stdout: string): void {
  assert.equal(r.stdout, stdout);
  assert.deepEqual([r.stderr, r.code, r.signal], ['served\n', 0, null]);
}

describe('serveStdio replies', () => {
  test('with what the handler returns: objects, arrays, numbers, strings, booleans and null round-trip', async () => {
    const values = [{ a: [1, 2.5, 'x'], b: null, c: { d: true } }, [], [1, 'two', [3]], 42, -0.5, 1e21, 'é\n"\\', null];
    const input = values.map((v, i) => req('echo', v, i) + req('echo_async', v, 100 + i)).join('');
    const expected = values
      .map(
        (v, i) =>
          `{"msg_type":"echo","data":${JSON.stringify(v)},"id":${i}}\n` +
          `{"msg_type":"echo_async","data":${JSON.stringify(v)},"id":${100 + i}}\n`,
      )
      .join('');
    // Sorted: the async replies are written when they settle, after the chunk's sync ones.
    const r = await run(SERVICE, input);
    assert.deepEqual(r.stdout.split('\n').sort(), expected.split('\n').sort());
    assert.equal(r.stdout.length, expected.length);
    assert.deepEqual([r.stderr, r.code], ['served\n', 0]);
  });

  test('with the exact bytes for an object, keys in the protocol order', async () => {
    const r = await run(SERVICE, '{"id":7,"data":{"z":1,"a":[true,false]},"msg_type":"echo"}\n');
    assertServed(r, '{"msg_type":"echo","data":{"z":1,"a":[true,false]},"id":7}\n');
  });

  test('with null when the handler returns undefined, and id 0 echoed', async () => {
    const r = await run(SERVICE, req('nothing', 'x', 0));
    assertServed(r, '{"msg_type":"nothing","data":null,"id":0}\n');
  });

  test('with the reply() type instead of the request type', async () => {
    const r = await run(SERVICE, req('html', 'hi', 3));
    assertServed(r, '{"msg_type":"html","data":"<p>hi</p>","id":3}\n');
  });

  test('passes the handler the whole message', async () => {
    const r = await run(SERVICE, '{"data":[1],"msg_type":"message","extra":true,"id":4}\n');
    assertServed(r, '{"msg_type":"message","data":{"msg_type":"message","data":[1],"id":4},"id":4}\n');
  });

  test('writes synchronous replies in input order, errors included', async () => {
    const n = 2000;
    const input = Array.from({ length: n }, (_, i) => (i % 3 === 0 ? 'nope\n' : req('echo', i, i))).join('');
    const expected = Array.from({ length: n }, (_, i) =>
      i % 3 === 0
        ? `{"msg_type":"error","data":"line ${i + 1}: invalid JSON: \`nope\`"}\n`
        : `{"msg_type":"echo","data":${i},"id":${i}}\n`,
    ).join('');
    assertServed(await run(SERVICE, input), expected);
  });
});

describe('serveStdio turns a failing handler into an error reply and keeps serving', () => {
  for (const [name, line, reply] of [
    ['a throw', req('fail', 1, 1), '{"msg_type":"error","data":"failed on 1","id":1}'],
    ['a rejected Promise', req('reject', [2], 2), '{"msg_type":"error","data":"rejected [2]","id":2}'],
    ['a thrown string', req('throw_string', null, 3), '{"msg_type":"error","data":"a bare string","id":3}'],
    [
      'a result JSON cannot encode',
      req('bigint', null, 4),
      '{"msg_type":"error","data":"the reply to `bigint` cannot be encoded as JSON: Do not know how to serialize a BigInt","id":4}',
    ],
    [
      'bytes',
      req('bytes', null, 5),
      '{"msg_type":"error","data":"the reply to `bytes` is a Buffer: bytes need the binary encoding, not JSON","id":5}',
    ],
  ] as const) {
    test(name, async () => {
      const r = await run(SERVICE, line + req('echo', 'next', 9));
      const next = '{"msg_type":"echo","data":"next","id":9}\n';
      // A rejection settles after the chunk's synchronous replies are written.
      assertServed(r, name === 'a rejected Promise' ? `${next}${reply}\n` : `${reply}\n${next}`);
    });
  }
});

describe('serveStdio survives whatever a handler throws or returns', () => {
  const next = '{"msg_type":"echo","data":"next","id":9}\n';
  for (const [what, data, reply] of [
    ['an Error whose message is undefined', 'undefined', '{"msg_type":"error","data":"undefined","id":1}'],
    ['an Error whose message is a number', 42, '{"msg_type":"error","data":"42","id":1}'],
    ['an Error whose message is a BigInt', 'bigint', '{"msg_type":"error","data":"7","id":1}'],
    [
      'an Error whose message getter throws',
      'getter',
      '{"msg_type":"error","data":"a handler threw a value that has no string form","id":1}',
    ],
  ] as const) {
    test(`${what}: a string error reply, thrown or rejected`, async () => {
      const r = await run(SERVICE, req('odd_message', data, 1) + req('echo', 'next', 9));
      assertServed(r, `${reply}\n${next}`);
      const rejected = await run(SERVICE, req('odd_message', { async: data }, 1) + req('echo', 'next', 9));
      assertServed(rejected, `${next}${reply}\n`);
    });
  }

  test('a result whose `then` throws when read', async () => {
    const r = await run(SERVICE, req('then_throws', null, 1) + req('echo', 'next', 9));
    assertServed(r, `{"msg_type":"error","data":"no then","id":1}\n${next}`);
  });

  test('a result too long for one string once framed as a reply line', async () => {
    // JSON.stringify still succeeds; the line around it exceeds V8's longest string.
    const r = await run(SERVICE, req('long', 2 ** 29 - 24 - 10, 1) + req('echo', 'next', 9));
    assertServed(
      r,
      '{"msg_type":"error","data":"the reply to `long` cannot be encoded as JSON: Invalid string length","id":1}\n' + next,
    );
  });
});

describe('serveStdio never writes an unpaired surrogate, which no Rust peer can read', () => {
  test('in data or a reply() type: an error reply; in an error text: U+FFFD', async () => {
    const r = await run(SERVICE, req('half', null, 1) + req('half_type', null, 2) + req('half_error', null, 3));
    assertServed(
      r,
      '{"msg_type":"error","data":"the reply to `half` cannot be encoded as JSON: it holds an unpaired surrogate","id":1}\n' +
        '{"msg_type":"error","data":"the reply to `half_type` cannot be encoded as JSON: it holds an unpaired surrogate","id":2}\n' +
        '{"msg_type":"error","data":"bad \uFFFD input","id":3}\n',
    );
  });

  test('in a request: invalid JSON with the id, as Rust decode_envelope answers', async () => {
    const line = '{"msg_type":"echo","data":["\\ud800"],"id":4}';
    const r = await run(SERVICE, `${line}\n${req('echo', '\\ud800', 5)}`);
    assertServed(
      r,
      `{"msg_type":"error","data":${JSON.stringify(`line 1: invalid JSON: \`${excerpt(line)}\``)},"id":4}\n` +
        '{"msg_type":"echo","data":"\\\\ud800","id":5}\n',
    );
  });
});

describe('serveStdio answers a line that is not a request with the protocol error, numbered', () => {
  test('bad JSON, not an object, bad ids, missing or bad fields, invalid UTF-8; the next line answered', async () => {
    const input = Buffer.concat([
      Buffer.from(
        [
          'not json',
          '',
          '[1,2]',
          '{"msg_type":"echo","data":1,"id":-1}',
          '{"msg_type":"echo","data":1,"id":"7"}',
          '{"data":1,"id":5}',
          '{"msg_type":"echo","id":6}',
          '{"msg_type":["echo"],"data":1,"id":7}',
          '{"msg_type":"\\ud800","data":1}',
          '',
        ].join('\n'),
      ),
      Buffer.from([0x7b, 0xff, 0x0a]),
      Buffer.from(req('echo', 'still here', 8)),
    ]);
    const r = await run(SERVICE, input);
    assertServed(
      r,
      [
        '{"msg_type":"error","data":"line 1: invalid JSON: `not json`"}',
        '{"msg_type":"error","data":"line 3: expected a JSON object, got array: `[1,2]`"}',
        '{"msg_type":"error","data":"line 4: field `id` must be an integer from 0 to 9007199254740991, got number: ' +
          '`{\\"msg_type\\":\\"echo\\",\\"data\\":1,\\"id\\":-1}`"}',
        '{"msg_type":"error","data":"line 5: field `id` must be an integer from 0 to 9007199254740991, got string: ' +
          '`{\\"msg_type\\":\\"echo\\",\\"data\\":1,\\"id\\":\\"7\\"}`"}',
        '{"msg_type":"error","data":"line 6: missing field `msg_type`: `{\\"data\\":1,\\"id\\":5}`","id":5}',
        '{"msg_type":"error","data":"line 7: missing field `data`: `{\\"msg_type\\":\\"echo\\",\\"id\\":6}`","id":6}',
        '{"msg_type":"error","data":"line 8: field `msg_type` must be a string, got array: ' +
          '`{\\"msg_type\\":[\\"echo\\"],\\"data\\":1,\\"id\\":7}`","id":7}',
        '{"msg_type":"error","data":"line 9: invalid JSON: `{\\"msg_type\\":\\"\\\\ud800\\",\\"data\\":1}`"}',
        '{"msg_type":"error","data":"line 10: invalid UTF-8 at byte 1"}',
        '{"msg_type":"echo","data":"still here","id":8}',
        '',
      ].join('\n'),
    );
  });

  test('an over-long line is skipped as it arrives and answered with its length', async () => {
    const input = `${req('echo', 'a', 1)}${'x'.repeat(100)}\n${req('echo', 'b', 2)}`;
    const r = await run(SERVICE, input, ['--max-line-bytes', '50']);
    assertServed(
      r,
      '{"msg_type":"echo","data":"a","id":1}\n' +
        '{"msg_type":"error","data":"line 2: line of 100 bytes exceeds the 50-byte limit"}\n' +
        '{"msg_type":"echo","data":"b","id":2}\n',
    );
  });

  test('an unknown msg_type lists the handlers in insertion order', async () => {
    const r = await run(SERVICE, req('bogus', 1, 1) + req('echo', 2, 2));
    assertServed(
      r,
      `{"msg_type":"error","data":"line 1: unknown msg_type \`bogus\`; expected ${SERVICE_TYPES}","id":1}\n` +
        '{"msg_type":"echo","data":2,"id":2}\n',
    );
  });

  test('an unknown msg_type with two handlers says `a or b`', async () => {
    const r = await run(TWO, req('c', 1, 1) + req('b', 1, 2));
    assert.equal(
      r.stdout,
      '{"msg_type":"error","data":"line 1: unknown msg_type `c`; expected a or b","id":1}\n' +
        '{"msg_type":"b","data":"B","id":2}\n',
    );
    assert.deepEqual([r.stderr, r.code], ['', 0]);
  });

  test('inherited names are unknown types, not crashes: __proto__, constructor, toString, hasOwnProperty', async () => {
    const names = ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf'];
    const r = await run(SERVICE, names.map((n, i) => req(n, null, i)).join('') + req('echo', 'ok', 99));
    assertServed(
      r,
      names
        .map(
          (n, i) =>
            `{"msg_type":"error","data":"line ${i + 1}: unknown msg_type \`${n}\`; expected ${SERVICE_TYPES}","id":${i}}\n`,
        )
        .join('') + '{"msg_type":"echo","data":"ok","id":99}\n',
    );
  });
});

describe('serveStdio notifications', () => {
  test('run the handler and get no reply', async () => {
    const r = await run(SERVICE, req('count', null) + req('count', null) + req('echo', 'x') + req('counted', null, 1));
    assertServed(r, '{"msg_type":"counted","data":2,"id":1}\n');
  });

  test('that fail get an error without id, numbered by line; unknown ones too', async () => {
    const r = await run(
      SERVICE,
      req('fail', 'n') + req('reject', 'm') + req('bigint', null) + req('nope', null) + req('echo', 'after', 5),
    );
    assertServed(
      r,
      [
        '{"msg_type":"error","data":"line 1: failed on \\"n\\""}',
        '{"msg_type":"error","data":"line 4: unknown msg_type `nope`; expected ' + SERVICE_TYPES + '"}',
        '{"msg_type":"echo","data":"after","id":5}',
        '{"msg_type":"error","data":"line 2: rejected \\"m\\""}',
        '',
      ].join('\n'),
    );
  });
});

describe('serveStdio concurrency', () => {
  test('answers requests while stdin stays open, async replies out of order, matched by id', async () => {
    const child = new Child(SERVICE);
    child.send(req('hold', 'k', 1) + req('echo', 'quick', 2));
    assert.deepEqual(await child.lines(1), ['{"msg_type":"echo","data":"quick","id":2}']);
    child.send(req('release', 'k', 3));
    assert.deepEqual(await child.lines(2), [
      '{"msg_type":"release","data":true,"id":3}',
      '{"msg_type":"hold","data":"released k","id":1}',
    ]);
    const r = await child.end();
    assert.deepEqual([r.stderr, r.code], ['served\n', 0]);
  });

  test('on stdin EOF, waits for a slow handler and writes its reply before exiting', async () => {
    const r = await run(SERVICE, req('sleep', 300, 1) + req('echo', 'e', 2));
    assertServed(r, '{"msg_type":"echo","data":"e","id":2}\n{"msg_type":"sleep","data":"slept 300","id":1}\n');
  });

  test('runs at most maxConcurrent handlers at once, and answers every request once', async () => {
    const n = 2000;
    const input = Array.from({ length: n }, (_, i) => req('track', i, i)).join('') + req('most_running', null, n);
    const r = await run(SERVICE, input, ['--max-concurrent', '8']);
    const lines = r.stdout.split('\n');
    assert.equal(lines.pop(), '');
    assert.equal(lines.length, n + 1);
    const seen = new Set<number>();
    for (const line of lines) {
      const m = JSON.parse(line) as { msg_type: string; data: unknown; id: number };
      if (m.msg_type === 'most_running') {
        assert.equal(m.data, 8, 'the bound is reached and never exceeded');
        continue;
      }
      assert.deepEqual([m.msg_type, m.data], ['track', m.id]);
      assert.ok(!seen.has(m.id), `id ${m.id} answered twice`);
      seen.add(m.id);
    }
    assert.equal(seen.size, n);
    assert.deepEqual([r.stderr, r.code], ['served\n', 0]);
  });

  test('exits 0 and resolves when the parent closes stdout (EPIPE)', async () => {
    const child = new Child(SERVICE);
    child.process.stdout.destroy();
    const chunk = req('echo', 'z'.repeat(10_000), 1).repeat(100);
    const timer = setInterval(() => child.send(chunk), 5);
    const r = await child.exited;
    clearInterval(timer);
    assert.deepEqual([r.stderr, r.code, r.signal], ['served\n', 0, null]);
  });
});

describe('the upper-service example', () => {
  test('upper-cases, and names its one type when asked for another', async () => {
    const r = await run(UPPER, req('upper', 'abc', 1) + req('lower', 'ABC', 2) + req('upper', 'é', 3));
    assert.equal(
      r.stdout,
      '{"msg_type":"upper","data":"ABC","id":1}\n' +
        '{"msg_type":"error","data":"line 2: unknown msg_type `lower`; expected upper","id":2}\n' +
        '{"msg_type":"upper","data":"É","id":3}\n',
    );
    assert.deepEqual([r.stderr, r.code], ['', 0]);
  });

  test('answers 10 000 requests in order', async () => {
    const n = 10_000;
    const input = Array.from({ length: n }, (_, i) => req('upper', `m${i}`, i)).join('');
    const r = await run(UPPER, input);
    const expected = Array.from({ length: n }, (_, i) => `{"msg_type":"upper","data":"M${i}","id":${i}}\n`).join('');
    assert.equal(r.stdout, expected);
    assert.equal(r.code, 0);
  });
});

describe('serveStdio in-process', () => {
  test('serves given streams and resolves after the last reply', async () => {
    const input = new PassThrough();
    const output = new PassThrough();
    let out = '';
    output.on('data', (b: Buffer) => (out += b.toString()));
    const done = serveStdio({ twice: async (d) => [d, d] }, { input, output });
    input.end(req('twice', 'x', 1) + req('twice', 2, 2));
    await done;
    assert.equal(out, '{"msg_type":"twice","data":["x","x"],"id":1}\n{"msg_type":"twice","data":[2,2],"id":2}\n');
  });

  for (const [what, handlers, options, message] of [
    ['null handlers', null, {}, 'serveStdio: expected an object or a Map of handlers, got null'],
    ['a handler that is not a function', { a: 'x' }, {}, 'serveStdio: the handler for `a` must be a function, got string'],
    [
      'maxConcurrent 0',
      { a: () => 1 },
      { maxConcurrent: 0 },
      'serveStdio: option `maxConcurrent` must be an integer from 1 to 9007199254740991, got number 0',
    ],
    [
      'maxLineBytes 1.5',
      { a: () => 1 },
      { maxLineBytes: 1.5 },
      'serveStdio: option `maxLineBytes` must be an integer from 0 to 9007199254740991, got number 1.5',
    ],
  ] as const) {
    test(`throws a TypeError for ${what} before reading anything`, () => {
      assert.throws(() => serveStdio(handlers as unknown as Handlers, options), { name: 'TypeError', message });
    });
  }
});
