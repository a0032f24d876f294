// The addon's JS surface: exact error texts for bad arguments, call ordering across sync and
// async calls, panics that never abort Node, loading paths and the generated types.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { describe, test } from 'node:test';

import { native, repoRoot } from './load.mjs';

const { Responder } = native;
const MAX = '9007199254740991';
const data = (text, id) => JSON.stringify(id === undefined ? { msg_type: 'data', data: text } : { msg_type: 'data', data: text, id });
const ack = (text) => `{"msg_type":"ack","data":"Acknowledged: ${text}"}\n`;

/** Asserts that `f` throws a TypeError with exactly `message` (and napi's `InvalidArg` code). */
function throwsTypeError(f, message) {
  assert.throws(f, (error) => {
    assert.ok(error instanceof TypeError, `expected a TypeError, got ${error?.constructor?.name}: ${error?.message}`);
    assert.equal(error.message, message);
    assert.equal(error.code, 'InvalidArg');
    return true;
  });
}

describe('the seed conversation', () => {
  test('handle answers objects with objects; the fifth data message gets [ack, exit]', () => {
    const responder = new Responder();
    assert.deepEqual(responder.handle({ msg_type: 'greeting', data: 'Hello from Rust!' }), [
      { msg_type: 'response', data: 'Hello from TypeScript!' },
    ]);
    for (let i = 1; i <= 4; i++) {
      assert.deepEqual(responder.handle({ msg_type: 'data', data: `Message ${i} from Rust` }), [
        { msg_type: 'ack', data: `Acknowledged: Message ${i} from Rust` },
      ]);
      assert.equal(responder.done, false);
    }
    assert.deepEqual(responder.handle({ msg_type: 'data', data: 'Message 5 from Rust', id: 5 }), [
      { msg_type: 'ack', data: 'Acknowledged: Message 5 from Rust', id: 5 },
      { msg_type: 'exit', data: 'Goodbye from TypeScript!', id: 5 },
    ]);
    assert.equal(responder.done, true);
  });

  test('a reply without an id has no id property at all', () => {
    const [reply] = new Responder().handle({ msg_type: 'greeting', data: '', id: null });
    assert.deepEqual(Object.keys(reply), ['msg_type', 'data']);
  });

  test('options change when and who says goodbye', () => {
    const responder = new Responder({ exitAfter: 1, name: 'Rust' });
    assert.equal(
      responder.handleLine(data('x')),
      '{"msg_type":"ack","data":"Acknowledged: x"}\n{"msg_type":"exit","data":"Goodbye from Rust!"}\n',
    );
    assert.equal(responder.done, true);
  });

  test('maxLineBytes bounds a line in bytes', () => {
    const responder = new Responder({ maxLineBytes: 10 });
    assert.equal(
      responder.handleLine(data('x')),
      '{"msg_type":"error","data":"line 1: line of 30 bytes exceeds the 10-byte limit"}\n',
    );
  });

  test('a line that is not JSON gets the pipe error reply, not an exception', () => {
    const responder = new Responder();
    assert.equal(responder.handleLine('not json'), '{"msg_type":"error","data":"line 1: invalid JSON: `not json`"}\n');
    assert.equal(responder.handleLine(data('next')), ack('next'));
  });
});

describe('bad arguments are TypeErrors that name what is wrong', () => {
  const responder = new Responder({ exitAfter: 0 });

  test('handle wants a message object', () => {
    throwsTypeError(() => responder.handle(42), 'handle: expected a message object, got number');
    throwsTypeError(() => responder.handle('{}'), 'handle: expected a message object, got string');
    throwsTypeError(() => responder.handle(null), 'handle: expected a message object, got null');
    throwsTypeError(() => responder.handle(), 'handle: expected a message object, got undefined');
    throwsTypeError(() => responder.handle([]), 'handle: expected a message object, got array');
    throwsTypeError(() => responder.handle(() => {}), 'handle: expected a message object, got function');
  });

  test('handle names a missing or mistyped field', () => {
    throwsTypeError(() => responder.handle({ data: 'x' }), 'handle: missing field `msg_type`');
    throwsTypeError(() => responder.handle({ msg_type: 'data' }), 'handle: missing field `data`');
    throwsTypeError(() => responder.handle({ msg_type: 'data', data: undefined }), 'handle: missing field `data`');
    throwsTypeError(
      () => responder.handle({ msg_type: 1, data: 'x' }),
      'handle: field `msg_type` must be a string, got number',
    );
    throwsTypeError(
      () => responder.handle({ msg_type: 'data', data: null }),
      'handle: field `data` must be a string, got null',
    );
    throwsTypeError(
      () => responder.handle({ msg_type: 'data', data: ['x'] }),
      'handle: field `data` must be a string, got array',
    );
  });

  test('handle wants an id that is a safe non-negative integer, or none', () => {
    const bad = [
      ['1', 'string'],
      [-1, 'number -1'],
      [1.5, 'number 1.5'],
      [2 ** 53, 'number 9007199254740992'],
      [NaN, 'number NaN'],
      [Infinity, 'number Infinity'],
      [1n, 'bigint'],
    ];
    for (const [id, got] of bad) {
      throwsTypeError(
        () => responder.handle({ msg_type: 'data', data: 'x', id }),
        `handle: field \`id\` must be an integer from 0 to ${MAX}, got ${got}`,
      );
    }
    assert.deepEqual(responder.handle({ msg_type: 'data', data: 'x', id: Number.MAX_SAFE_INTEGER }), [
      { msg_type: 'ack', data: 'Acknowledged: x', id: Number.MAX_SAFE_INTEGER },
    ]);
    assert.deepEqual(responder.handle({ msg_type: 'data', data: 'x', id: -0 }), [
      { msg_type: 'ack', data: 'Acknowledged: x', id: 0 },
    ]);
  });

  test('the line methods want a string or a Uint8Array', () => {
    throwsTypeError(() => responder.handleLine(42), 'handleLine: expected a string, got number');
    throwsTypeError(() => responder.handleLine(Buffer.from('{}')), 'handleLine: expected a string, got Uint8Array');
    throwsTypeError(() => responder.handleLineAsync(), 'handleLineAsync: expected a string, got undefined');
    throwsTypeError(() => responder.handleBuffer('{}'), 'handleBuffer: expected a Uint8Array, got string');
    throwsTypeError(() => responder.handleBuffer([123, 125]), 'handleBuffer: expected a Uint8Array, got array');
    throwsTypeError(() => responder.handleBuffer({}), 'handleBuffer: expected a Uint8Array, got object');
  });

  test('binary data of the wrong kind is named by its class', () => {
    const bytes = new ArrayBuffer(8);
    for (const [value, kind] of [
      [new Uint16Array(bytes), 'Uint16Array'],
      [new Uint8ClampedArray(bytes), 'Uint8ClampedArray'],
      [new Int8Array(bytes), 'Int8Array'],
      [new Float64Array(bytes), 'Float64Array'],
      [new BigInt64Array(bytes), 'BigInt64Array'],
      [new DataView(bytes), 'DataView'],
      [bytes, 'ArrayBuffer'],
    ]) {
      throwsTypeError(() => responder.handleBuffer(value), `handleBuffer: expected a Uint8Array, got ${kind}`);
    }
    throwsTypeError(
      () => responder.handle({ msg_type: 'data', data: Buffer.from('x') }),
      'handle: field `data` must be a string, got Uint8Array',
    );
  });

  test('a refused argument never reaches the responder, so it is not counted as a line', () => {
    const fresh = new Responder();
    throwsTypeError(() => fresh.handle(42), 'handle: expected a message object, got number');
    throwsTypeError(() => fresh.handleLine(42), 'handleLine: expected a string, got number');
    assert.equal(fresh.handleLine('nope'), '{"msg_type":"error","data":"line 1: invalid JSON: `nope`"}\n');
  });

  test('the constructor checks its options', () => {
    throwsTypeError(() => new Responder(5), 'Responder: expected an options object, got number');
    throwsTypeError(() => new Responder([]), 'Responder: expected an options object, got array');
    throwsTypeError(
      () => new Responder({ exitAfter: '5' }),
      `Responder: option \`exitAfter\` must be an integer from 0 to ${MAX}, got string`,
    );
    throwsTypeError(
      () => new Responder({ exitAfter: -1 }),
      `Responder: option \`exitAfter\` must be an integer from 0 to ${MAX}, got number -1`,
    );
    throwsTypeError(
      () => new Responder({ maxLineBytes: 1.5 }),
      `Responder: option \`maxLineBytes\` must be an integer from 0 to ${MAX}, got number 1.5`,
    );
    throwsTypeError(() => new Responder({ name: 5 }), 'Responder: option `name` must be a string, got number');
    throwsTypeError(
      () => new Responder({ services: 'demo' }),
      'Responder: option `services` must be an array of service names, got string',
    );
    throwsTypeError(
      () => new Responder({ services: ['demo', 1] }),
      'Responder: option `services` must be an array of service names, got array',
    );
    throwsTypeError(
      () => new Responder({ services: ['demo', 'html'] }),
      'Responder: option `services`: unknown service `html`; expected one of demo, markdown, bytes',
    );
    throwsTypeError(
      () => new Responder({ services: [] }),
      'Responder: option `services`: expected at least one service of demo, markdown, bytes',
    );
    assert.equal(new Responder(null).handleLine(data('x')), ack('x'));
    assert.equal(new Responder({}).done, false);
  });

  test('Responder without new throws instead of returning a hollow object', () => {
    throwsTypeError(() => Responder(), "Class constructor Responder cannot be invoked without 'new'");
    throwsTypeError(() => Responder.call({}), "Class constructor Responder cannot be invoked without 'new'");
  });
});

describe('calls on one responder are answered in call order', () => {
  test('concurrent handleLineAsync calls resolve in order with the right line numbers', async () => {
    const responder = new Responder({ exitAfter: 0 });
    const lines = Array.from({ length: 500 }, (_, i) => (i % 7 === 3 ? `bad ${i}` : data(String(i), i)));
    const replies = await Promise.all(lines.map((line) => responder.handleLineAsync(line)));
    replies.forEach((reply, i) => {
      const want =
        i % 7 === 3
          ? `{"msg_type":"error","data":"line ${i + 1}: invalid JSON: \`bad ${i}\`"}\n`
          : `{"msg_type":"ack","data":"Acknowledged: ${i}","id":${i}}\n`;
      assert.equal(reply, want);
    });
  });

  test('sync calls made while async ones are pending are answered after them', async () => {
    const responder = new Responder({ exitAfter: 0 });
    const results = [];
    for (let i = 0; i < 300; i++) {
      switch (i % 4) {
        case 0:
          results.push(responder.handleLineAsync(data(String(i))));
          break;
        case 1:
          results.push(responder.handleLine(data(String(i))));
          break;
        case 2:
          results.push(responder.handleBuffer(Buffer.from(data(String(i)))));
          break;
        default:
          results.push(responder.handle({ msg_type: 'bogus', data: '' })[0].data);
      }
    }
    const settled = await Promise.all(results);
    settled.forEach((reply, i) => {
      // The default responder answers both services, so the error lists all four types.
      const unknown = `line ${i + 1}: unknown msg_type \`bogus\`; expected greeting, data, exit or markdown`;
      const want = i % 4 === 3 ? unknown : ack(String(i));
      assert.equal(reply, want);
    });
  });

  test('done counts lines still on their way through handleLineAsync', async () => {
    const responder = new Responder();
    const pending = responder.handleLineAsync('{"msg_type":"exit","data":"bye"}');
    assert.equal(responder.done, true);
    assert.equal(await pending, '{"msg_type":"exit","data":"Goodbye from TypeScript!"}\n');
  });

  test('responders are independent of each other', async () => {
    const a = new Responder({ exitAfter: 1 });
    const b = new Responder({ exitAfter: 1 });
    const [ra, rb] = await Promise.all([a.handleLineAsync(data('a')), b.handleLineAsync(data('b'))]);
    assert.equal(ra, `${ack('a')}{"msg_type":"exit","data":"Goodbye from TypeScript!"}\n`);
    assert.equal(rb, `${ack('b')}{"msg_type":"exit","data":"Goodbye from TypeScript!"}\n`);
  });
});

describe('a Rust panic never aborts Node', () => {
  // In a child process, so the panic hook's report stays out of this runner's output and the
  // exit status shows that the process survived (an abort would be signal SIGABRT, status null).
  const script = `
    const native = require(${JSON.stringify(new URL('native', repoRoot).pathname)});
    try { native.__panicForTest(); console.log('sync: no error'); }
    catch (e) { console.log('sync:', e.constructor.name, e.code, e.message); }
    // A panic inside a responder's call (as a core bug would) with its lock held.
    const r = new native.Responder({ exitAfter: 1 });
    try { native.__panicForTest(r); console.log('responder: no error'); }
    catch (e) { console.log('responder:', e.constructor.name, e.code, e.message); }
    console.log('after a panic:', r.done, JSON.stringify(r.handleLine('nope')), JSON.stringify(r.handleLine('{"msg_type":"data","data":"y"}')));
    native.__panicForTestAsync().then(
      () => console.log('async: resolved'),
      (e) => {
        console.log('async:', e.constructor.name, e.code, e.message);
        console.log('still usable:', JSON.stringify(native.noop()), new native.Responder().done);
      },
    );
  `;
  const child = spawnSync(process.execPath, ['-e', script], {
    encoding: 'utf8',
    env: { ...process.env, RUST_BACKTRACE: '0' },
  });

  test('the process exits normally', () => {
    assert.equal(child.signal, null);
    assert.equal(child.status, 0, child.stderr);
  });

  test('a panic in a sync export is a thrown Error', () => {
    assert.match(child.stdout, /^sync: Error GenericFailure __panicForTest: a deliberate panic$/m);
  });

  test('a panic inside a call leaves the responder usable, and the call does not count', () => {
    assert.match(child.stdout, /^responder: Error GenericFailure __panicForTest: a deliberate panic with a Responder's lock held$/m);
    // Line 1, and `done` only after the next data message: the panicked call counted neither.
    const after = [
      false,
      JSON.stringify('{"msg_type":"error","data":"line 1: invalid JSON: `nope`"}\n'),
      JSON.stringify('{"msg_type":"ack","data":"Acknowledged: y"}\n{"msg_type":"exit","data":"Goodbye from TypeScript!"}\n'),
    ];
    assert.ok(child.stdout.split('\n').includes(`after a panic: ${after.join(' ')}`), child.stdout);
  });

  test('a panic on the libuv pool is a rejected Promise', () => {
    assert.match(child.stdout, /^async: Error GenericFailure __panicForTestAsync: a deliberate panic$/m);
    assert.match(child.stdout, /^still usable: undefined false$/m);
  });

  test('the panic is still reported on stderr, as a bug should be', () => {
    assert.match(child.stderr, /panicked at .*\n__panicForTest: a deliberate panic/);
  });
});

describe('packaging', () => {
  test('loads as ../../native from ts-app/dist, the same module as ./native from the root', () => {
    const fromDist = createRequire(new URL('ts-app/dist/main.js', repoRoot))('../../native');
    assert.equal(fromDist, native);
  });

  test('noop is a function of no arguments that returns undefined', () => {
    assert.equal(native.noop(), undefined);
  });

  test('the generated types are precise', () => {
    const dts = readFileSync(new URL('native/index.d.ts', repoRoot), 'utf8');
    const code = dts.replace(/\/\*[\s\S]*?\*\//g, '');
    assert.doesNotMatch(code, /\b(any|unknown)\b/);
    for (const signature of [
      'constructor(options?: ResponderOptions | undefined | null)',
      'handle(msg: Message): Array<Message>',
      'handleLine(line: string): string',
      'handleBuffer(bytes: Uint8Array): string',
      'handleLineAsync(line: string): Promise<string>',
      'get done(): boolean',
      'export declare function noop(): void',
      'export declare function __panicForTestAsync(): Promise<void>',
      'msg_type: string',
      'id?: number',
      'exitAfter?: number',
      'maxLineBytes?: number',
      'handleFrame(frame: Uint8Array): Buffer',
      'handleFrameInto(frame: Uint8Array, out: Uint8Array): number | Buffer',
      'maxFrameBytes?: number',
      "services?: Array<'demo' | 'markdown' | 'bytes'>",
    ]) {
      assert.ok(dts.includes(signature), `index.d.ts lacks \`${signature}\``);
    }
  });
});

describe('the receiver of a method', () => {
  const line = data('x');
  for (const name of ['handleLine', 'handleBuffer', 'handle', 'handleLineAsync', 'handleFrame', 'handleFrameInto']) {
    test(`${name} called on something that is not a Responder throws a TypeError`, () => {
      const method = Responder.prototype[name];
      for (const receiver of [undefined, null, 42, {}, Object.create(Responder.prototype)]) {
        assert.throws(() => method.call(receiver, line), {
          name: 'TypeError',
          code: 'InvalidArg',
          message: `${name}: \`this\` is not a Responder`,
        });
      }
    });
  }

  test('the done getter called on something that is not a Responder throws the same TypeError', () => {
    const { get } = Object.getOwnPropertyDescriptor(Responder.prototype, 'done');
    for (const receiver of [undefined, null, 42, {}, Object.create(Responder.prototype)]) {
      throwsTypeError(() => get.call(receiver), 'done: `this` is not a Responder');
    }
    assert.equal(get.call(new Responder()), false);
    assert.deepEqual(
      { ...Object.getOwnPropertyDescriptor(Responder.prototype, 'done'), get: 'fn' },
      { get: 'fn', set: undefined, enumerable: true, configurable: true },
    );
  });

  test('a subclass of Responder is a Responder', async () => {
    class Loud extends Responder {}
    const r = new Loud({ exitAfter: 0 });
    assert.equal(await r.handleLineAsync(line), ack('x'));
    assert.equal(r.handleLine(line), ack('x'));
    assert.equal(r.handleBuffer(Buffer.from(line)), ack('x'));
    assert.deepEqual(r.handle({ msg_type: 'data', data: 'x' }), [{ msg_type: 'ack', data: 'Acknowledged: x' }]);
    assert.equal(r.done, false);
  });
});

test("another addon's native object dressed as a Responder is refused, not dereferenced", (t) => {
  // @napi-rs/cli installs this napi-rs addon; its objects are wrapped native objects too.
  let tar;
  try {
    tar = createRequire(new URL('package.json', repoRoot))('@napi-rs/tar-linux-x64-gnu');
  } catch {
    t.skip('no other napi-rs addon installed on this platform');
    return;
  }
  const impostor = new tar.Builder();
  Object.setPrototypeOf(impostor, Responder.prototype);
  assert.throws(() => impostor.handleLine(data('x')), { name: 'TypeError', message: 'handleLine: `this` is not a Responder' });
  throwsTypeError(() => impostor.done, 'done: `this` is not a Responder');
});
