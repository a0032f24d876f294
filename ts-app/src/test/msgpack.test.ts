// The MessagePack encoding in TypeScript: the codec against the Rust core's texts and forms,
// the responder against every stored msgpack vector (whole, byte by byte, split at every
// byte, frame body by frame body), every semantic JSON vector re-run as frames, the child
// `main.js --encoding msgpack`, and msgpackr (which knows nothing of our codec) reading every
// reply frame as we wrote it.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { Packr, Unpackr } from 'msgpackr';

import { FrameDecoder } from '../frame.js';
import {
  compareUtf8,
  decodeCommonEnvelope,
  decodeMsgpackEnvelope,
  EncodeProblem,
  hexExcerpt,
  readMsgpackEnvelope,
  Writer,
  writeFrame,
} from '../msgpack.js';
import { Responder } from '../protocol.js';
import { describeWithAddon, loaded } from './addon.js';
import {
  bodiesOf,
  expectedHex,
  framed,
  msgpackCases,
  msgpackCliArgsOf,
  msgpackOptionsOf,
  msgpackStreamOf,
  type MsgpackCase,
  semanticMsgpackCases,
} from './vectors-msgpack.js';
import { REPO_ROOT } from './vectors.js';

const MAIN = fileURLToPath(new URL('../main.js', import.meta.url));
/** The Rust binary `npm run build` makes (`cargo build`). */
const SERVE_BIN = path.join(REPO_ROOT, 'target', 'debug', 'rust-ts-ipc');

/** Why a stored case is skipped here, or false: the TypeScript responder serves demo only. */
function skipUnlessDemo(c: MsgpackCase): string | false {
  const services = c.services ?? ['demo'];
  return services.length === 1 && services[0] === 'demo'
    ? false
    : `needs services [${services.join(', ')}]; the TypeScript responder serves demo only (the Rust serve runs it: peer-msgpack.test.ts)`;
}

/** Feeds `chunks` through a FrameDecoder into a fresh responder; all reply bytes as hex. */
function viaDecoder(c: MsgpackCase, chunks: Iterable<Buffer>): { hex: string; done: boolean } {
  const options = msgpackOptionsOf(c);
  const responder = new Responder(options);
  const decoder = new FrameDecoder(options);
  const out: Buffer[] = [];
  for (const chunk of chunks) for (const p of decoder.push(chunk)) out.push(responder.handlePacket(p));
  for (const p of decoder.end()) out.push(responder.handlePacket(p));
  return { hex: Buffer.concat(out).toString('hex'), done: responder.done };
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

describe('the responder answers every stored msgpack vector byte for byte', () => {
  for (const c of msgpackCases) {
    test(c.name, { skip: skipUnlessDemo(c) }, () => {
      const stream = msgpackStreamOf(c);
      const want = expectedHex(c);
      assert.deepEqual(viaDecoder(c, [stream]), { hex: want, done: c.done });
      const bytes = Array.from({ length: stream.length }, (_, i) => stream.subarray(i, i + 1));
      assert.equal(viaDecoder(c, bytes).hex, want, 'byte by byte');
      for (let cut = 0; cut <= stream.length; cut++) {
        assert.equal(viaDecoder(c, [stream.subarray(0, cut), stream.subarray(cut)]).hex, want, `cut at ${cut}`);
      }
      if ((c.tail ?? '') === '') {
        const responder = new Responder(msgpackOptionsOf(c));
        const out = bodiesOf(c).map((b) => responder.handleFrameBody(b));
        assert.equal(hex(Buffer.concat(out)), want, 'frame body by frame body');
      }
    });
  }

  test('at least 19 of the 22 stored cases run here', () => {
    assert.equal(msgpackCases.length, 22);
    assert.ok(msgpackCases.filter((c) => skipUnlessDemo(c) === false).length >= 19);
  });
});

describe('every semantic JSON vector runs as frames, saying frame where JSON says line', () => {
  for (const c of semanticMsgpackCases) {
    test(c.name, () => {
      const responder = new Responder(msgpackOptionsOf(c));
      const out = bodiesOf(c).map((b) => responder.handleFrameBody(b));
      assert.equal(hex(Buffer.concat(out)), expectedHex(c));
      assert.equal(responder.done, c.done);
    });
  }
  test('enough of them ran', () => assert.ok(semanticMsgpackCases.length >= 15, `only ${semanticMsgpackCases.length}`));
});

function runChild(args: string[], input: Buffer, command = process.execPath): { stdout: Buffer; stderr: string; status: number | null } {
  const r = spawnSync(command, command === process.execPath ? [MAIN, ...args] : args, { input, maxBuffer: 1 << 26 });
  return { stdout: r.stdout, stderr: r.stderr.toString(), status: r.status };
}

/** The stored vectors the demo answers, and the semantic JSON ones as frames. */
const demoCases = [...msgpackCases, ...semanticMsgpackCases].filter((c) => skipUnlessDemo(c) === false);

/**
 * A child run with `argsOf(c)` answers every demo vector over a real pipe with exactly the
 * expected bytes (up to the exit reply when the conversation ends: like every host, the child
 * then stops reading).
 */
function childSuite(name: string, argsOf: (c: MsgpackCase) => string[], command?: string): void {
  describe(name, () => {
    for (const c of demoCases) {
      test(c.name, () => {
        const r = runChild(argsOf(c), msgpackStreamOf(c), command);
        assert.equal(r.stderr, '');
        assert.equal(r.status, 0);
        if (c.done) assert.ok(r.stdout.length > 0 && expectedHex(c).startsWith(hex(r.stdout)), hex(r.stdout));
        else assert.equal(hex(r.stdout), expectedHex(c));
      });
    }
    test('runs enough vectors', () => assert.ok(demoCases.length >= 34, `only ${demoCases.length}`));
  });
}

childSuite('main.js --encoding msgpack answers every demo vector', msgpackCliArgsOf);
describeWithAddon('main.js --encoding msgpack --engine native', () => {
  childSuite('answers every demo vector, as the TypeScript engine does', (c) => [...msgpackCliArgsOf(c), '--engine', 'native']);
});
describe('serve --encoding msgpack --services demo', { skip: existsSync(SERVE_BIN) ? false : `${SERVE_BIN} is not built` }, () => {
  childSuite('answers every demo vector, as main.js does', (c) => ['serve', ...msgpackCliArgsOf(c), '--services', 'demo'], SERVE_BIN);
});

describe('the hosts stop at the same reply when the conversation ends', () => {
  const hosts: [string, string, string[]][] = [
    ['ts', process.execPath, [MAIN]],
    ['native', process.execPath, [MAIN, '--engine', 'native']],
    ['serve', SERVE_BIN, ['serve', '--services', 'demo']],
  ];
  for (const c of demoCases.filter((c) => c.done)) {
    test(c.name, { skip: existsSync(SERVE_BIN) && 'addon' in loaded ? false : 'needs the addon and the Rust binary' }, () => {
      const outs = hosts.map(([, command, args]) => {
        const r = spawnSync(command, [...args, ...msgpackCliArgsOf(c)], { input: msgpackStreamOf(c) });
        return hex(r.stdout);
      });
      assert.equal(outs[1], outs[0], 'native = ts');
      assert.equal(outs[2], outs[0], 'serve = ts');
    });
  }
});

describe('main.js --encoding msgpack', () => {
  test('an unknown encoding is refused with serve\'s words', () => {
    const r = runChild(['--encoding', 'cbor'], Buffer.alloc(0));
    assert.equal(r.status, 2);
    assert.match(r.stderr, /^ts-app: --encoding: unknown encoding `cbor`; expected json or msgpack\n/);
  });
});

describe('msgpackr reads every reply frame as the stored rendering says', () => {
  const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, int64AsType: 'number' });
  test('all replies of all stored cases', () => {
    let n = 0;
    for (const c of msgpackCases) {
      for (const reply of c.replies) {
        const frame = Buffer.from(reply.hex, 'hex');
        assert.equal(frame.readUInt32LE(0), frame.length - 4);
        const read = unpackr.unpack(frame.subarray(4)) as Record<string, unknown>;
        const data = read['data'];
        const rendered = data instanceof Uint8Array ? { ...read, data: { bin: hex(data) } } : read;
        assert.deepEqual(rendered, reply.json);
        n++;
      }
    }
    assert.ok(n >= 60, `only ${n}`);
  });
});

describe('the canonical writer', () => {
  const body = (v: unknown): string => {
    const w = new Writer();
    w.value(v);
    return hex(w.view());
  };

  test('integers take their smallest form, non-negative ones unsigned (as the Rust core)', () => {
    const want: [number, string][] = [
      [0, '00'], [127, '7f'], [128, 'cc80'], [255, 'ccff'], [256, 'cd0100'], [65535, 'cdffff'],
      [65536, 'ce00010000'], [4294967295, 'ceffffffff'], [4294967296, 'cf0000000100000000'],
      [2 ** 53 - 1, 'cf001fffffffffffff'], [-1, 'ff'], [-32, 'e0'], [-33, 'd0df'], [-128, 'd080'],
      [-129, 'd1ff7f'], [-32768, 'd18000'], [-32769, 'd2ffff7fff'], [-2147483649, 'd3ffffffff7fffffff'],
    ];
    for (const [n, h] of want) assert.equal(body(n), h, String(n));
  });

  test('integral floats are integers, others float64; -0 is 0', () => {
    assert.equal([1.0, -0, -33.0, 0.5].map(body).join(''), '0100d0dfcb3fe0000000000000');
    assert.equal(body(1e19), 'cf8ac7230489e80000');
    assert.equal(body(2 ** 64), 'cb43f0000000000000');
    assert.equal(body(-(2 ** 63)), 'd38000000000000000');
  });

  test('strings, bins, arrays and maps change form at their bounds', () => {
    assert.equal(body('a'.repeat(31)).slice(0, 2), 'bf');
    assert.equal(body('a'.repeat(32)).slice(0, 4), 'd920');
    assert.equal(body('é'.repeat(16)).slice(0, 4), 'd920');
    assert.equal(body('é'.repeat(5)).slice(0, 2), 'aa');
    assert.equal(body('a'.repeat(256)).slice(0, 6), 'da0100');
    assert.equal(body('a'.repeat(65536)).slice(0, 10), 'db00010000');
    assert.equal(body(new Array(15).fill(null)).slice(0, 4), '9fc0');
    assert.equal(body(new Array(16).fill(null)).slice(0, 6), 'dc0010');
    assert.equal(body(Buffer.alloc(256, 7)).slice(0, 8), 'c5010007');
    assert.equal(body(new Uint8Array([1, 2])), 'c4020102');
  });

  test('agrees with msgpackr wherever msgpackr is canonical (32-bit integers, no undefined, keys in order)', () => {
    const packr = new Packr({ useRecords: false, variableMapSize: true });
    const values: unknown[] = [
      { a: [1, -2, 2.5, null, true, 'x'], b: { c: 'é'.repeat(40) } },
      Array.from({ length: 20 }, (_, i) => i * 1000 - 5000),
      { m: -2147483648, n: 4294967295, s: 'y'.repeat(300) },
    ];
    for (const v of values) assert.equal(body(v), hex(packr.pack(v)));
    // Where msgpackr is not: it writes these as float64; the Rust core, as integers.
    assert.equal(hex(packr.pack(4294967296)), 'cb41f0000000000000');
    assert.equal(body(4294967296), 'cf0000000100000000');
  });

  test('map keys are written in the order of their UTF-8 bytes, as the Rust core writes them', () => {
    // Object.keys gives 9, 10, b, a, …: integer-like keys first, then insertion order; and
    // UTF-16 order would put the astral 😀 (a surrogate pair) before U+FFFF.
    const v = { b: 1, a: 2, 10: 3, 9: 4, '\uffff': 5, '😀': 6, ab: 7 };
    assert.equal(body(v), '87a2313003a13904a16102a2616207a16201a3efbfbf05a4f09f988006');
    assert.equal(body({ z: { y: 1, x: 2 } }), '81a17a82a17802a17901');
    assert.ok(compareUtf8('\uffff', '😀') < 0 && compareUtf8('😀', '\uffff') > 0 && compareUtf8('a', 'ab') < 0);
  });

  test('JSON semantics: toJSON with its key, undefined properties omitted, boxed values unboxed', () => {
    const keys: string[] = [];
    const v = { a: undefined, b: { toJSON: (k: string) => (keys.push(k), 1) }, c: Object('s') as object };
    assert.equal(body(v), '82a16201a163a173');
    assert.deepEqual(keys, ['b']);
  });

  test('refuses what the envelope cannot hold, naming where', () => {
    const cycle: Record<string, unknown> = {};
    cycle['self'] = cycle;
    for (const [v, text] of [
      [10n, 'data is a BigInt'],
      [[1, undefined], 'data[1] is undefined'],
      [{ x: [Number.NaN] }, 'data.x[0] is the number NaN'],
      [[Buffer.from('x')], 'data[0] is binary data (a Buffer)'],
      [new Float32Array(1), 'data is binary data (a Float32Array)'],
      [cycle, 'data.self is a cycle (a value that contains itself)'],
    ] as const) {
      assert.throws(() => body(v), (e: unknown) => e instanceof EncodeProblem && e.message === text, text);
    }
  });
});

describe('the envelope reader', () => {
  const read = (h: string): string => {
    const d = decodeMsgpackEnvelope(Buffer.from(h, 'hex'));
    if (!d.ok) return `${d.error} (id ${String(d.id)})`;
    const { data } = d.message;
    return `ok ${JSON.stringify(data instanceof Uint8Array ? { ...d.message, data: { bin: hex(data) } } : d.message)}`;
  };
  const frame = (dataHex: string): string => `82a86d73675f74797065a178a464617461${dataHex}`;

  test('every bad frame gets the Rust core\'s text, in its order of checks', () => {
    assert.equal(read(''), 'empty frame (id undefined)');
    assert.equal(read('c1'), 'invalid MessagePack: `c1` (id undefined)');
    assert.equal(read('91a1'), 'invalid MessagePack: `91a1` (id undefined)');
    assert.equal(read('91a178'), 'not a map: `91a178` (id undefined)');
    assert.equal(read('81a2696401c0'), '1 byte left over after the map: `81a2696401c0` (id undefined)');
    assert.equal(read('81a26964ff'), 'field `id` must be an integer from 0 to 9007199254740991, got number: `81a26964ff` (id undefined)');
    assert.equal(read('81a2696401'), 'missing field `msg_type`: `81a2696401` (id 1)');
    assert.equal(read('81a86d73675f74797065a1ff'), 'invalid UTF-8 in a string at byte 11: `81a86d73675f74797065a1ff` (id undefined)');
    assert.equal(read(frame('c70001')), 'field `data` holds an extension, which JSON data cannot hold: `82a86d73675f74797065a178a4646174…` (id undefined)');
    assert.equal(read(frame('91c400')), 'field `data` holds bytes inside an array or map, which JSON data cannot hold: `82a86d73675f74797065a178a4646174…` (id undefined)');
    assert.equal(read(frame('810102')), 'field `data` holds a map key that is not a string, which JSON data cannot hold: `82a86d73675f74797065a178a4646174…` (id undefined)');
    assert.equal(read(frame('cb7ff8000000000000')), 'field `data` holds NaN or an infinite number, which JSON data cannot hold: `82a86d73675f74797065a178a4646174…` (id undefined)');
    assert.match(read(frame('91'.repeat(200) + 'c0')), /^field `data` holds nesting deeper than 128 levels, which JSON data cannot hold: `/);
  });

  test('reads any JSON value, bytes at the top as a Buffer, and __proto__ as an own key', () => {
    assert.equal(read(frame('c403000102')), 'ok {"msg_type":"x","data":{"bin":"000102"}}');
    assert.equal(read(frame('82a161920102a162c0')), 'ok {"msg_type":"x","data":{"a":[1,2],"b":null}}');
    const d = decodeMsgpackEnvelope(Buffer.from(frame('81a95f5f70726f746f5f5f01'), 'hex'));
    assert.ok(d.ok);
    const data = d.message.data as Record<string, unknown>;
    assert.equal(Object.getPrototypeOf(data), Object.prototype);
    assert.deepEqual(Object.keys(data), ['__proto__']);
    // ids in any integer or integral float form; a repeated key takes its last value
    for (const [id, want] of [['07', 7], ['cd0007', 7], ['d30000000000000007', 7], ['cb401c000000000000', 7], ['cf001fffffffffffff', 2 ** 53 - 1]] as const) {
      const e = decodeMsgpackEnvelope(Buffer.from(`83a86d73675f74797065a178a464617461c0a26964${id}`, 'hex'));
      assert.ok(e.ok && e.message.id === want, id);
    }
  });

  test('the hex excerpt is 16 bytes, then an ellipsis', () => {
    assert.equal(hexExcerpt(Buffer.alloc(16, 0xab)), 'ab'.repeat(16));
    assert.equal(hexExcerpt(Buffer.alloc(17, 0xab)), `${'ab'.repeat(16)}…`);
  });

  test('a frame written by writeFrame reads back', () => {
    const w = new Writer();
    writeFrame(w, 'sum', 9007199254740991, (w) => w.value({ a: [1, -2, 2.5, null, true, 'x'] }));
    const f = w.view();
    assert.equal(f.readUInt32LE(0), f.length - 4);
    assert.equal(read(hex(f.subarray(4))), 'ok {"msg_type":"sum","data":{"a":[1,-2,2.5,null,true,"x"]},"id":9007199254740991}');
    assert.equal(hex(framed(Buffer.from('c0', 'hex'))), '01000000c0');
  });
});

test('long str data reads as its text, ASCII or not, and invalid UTF-8 in it names its byte', () => {
  for (const n of [40, 100, 70_000]) {
    for (const text of ['a'.repeat(n), `${'a'.repeat(n)}é`, `é${'b'.repeat(n)}`, '€'.repeat(n)]) {
      const w = new Writer();
      writeFrame(w, 'data', 3, (w) => w.str(text));
      const frame = Buffer.from(w.view().subarray(4));
      const decoded = decodeMsgpackEnvelope(frame);
      assert.ok(decoded.ok && decoded.message.data === text, `${n}: ${text.slice(0, 4)}…`);
      // One bad byte in the middle of it: the error names its frame offset.
      const at = frame.length - 1 - Math.floor(Buffer.byteLength(text) / 2);
      frame[at] = 0xff;
      const bad = decodeMsgpackEnvelope(frame);
      assert.ok(!bad.ok);
      assert.match(bad.error, new RegExp(`^invalid UTF-8 in a string at byte ${at}: `));
    }
  }
});

test('a byte written just as the writer grows lands in the grown buffer (600 small ints round trip)', () => {
  for (const start of [1, 2, 8, 256]) {
    const w = new Writer(start);
    for (let i = 0; i < 600; i++) w.byte(i % 100);
    assert.deepEqual([...w.view()], Array.from({ length: 600 }, (_, i) => i % 100), `from a ${start}-byte buffer`);
  }
  // What a peer sends for such data: it must read back the same.
  const data = Array.from({ length: 600 }, (_, i) => i % 100);
  const w = new Writer();
  writeFrame(w, 'x', 1, (w) => w.value(data));
  const decoded = decodeMsgpackEnvelope(Buffer.from(w.view().subarray(4)));
  assert.ok(decoded.ok);
  assert.deepEqual(decoded.message.data, data);
});

test('str is written in its smallest header at every size where the UTF-8 length can cross a header size', () => {
  // The header for n bytes, and the bytes, as the format defines them (n counted first).
  const expected = (s: string): Buffer => {
    const bytes = Buffer.from(s, 'utf8');
    const n = bytes.length;
    const header =
      n < 32
        ? [0xa0 | n]
        : n <= 0xff
          ? [0xd9, n]
          : n <= 0xffff
            ? [0xda, n >> 8, n & 0xff]
            : [0xdb, (n >>> 24) & 0xff, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff];
    return Buffer.concat([Buffer.from(header), bytes]);
  };
  const strings: string[] = [];
  for (const len of [0, 1, 10, 11, 12, 31, 32, 85, 86, 255, 256, 21845, 21846, 65535, 65536, 70000]) {
    strings.push('a'.repeat(len), 'é'.repeat(len), '€'.repeat(len), `${'a'.repeat(len)}€`, '😀'.repeat(len >> 1));
  }
  // A lone surrogate is written as U+FFFD (3 bytes), as Buffer.from writes it.
  strings.push(`${'a'.repeat(40)}\ud800`, `\udc00${'b'.repeat(100)}`);
  for (const s of strings) {
    const w = new Writer(8);
    w.byte(0x01);
    w.str(s);
    w.byte(0x02);
    const want = Buffer.concat([Buffer.from([1]), expected(s), Buffer.from([2])]);
    assert.ok(Buffer.from(w.view()).equals(want), `str of ${s.length} units, ${Buffer.byteLength(s)} bytes`);
  }
});

test('the common envelope fast path reads exactly what the general reader reads, or leaves the frame to it', () => {
  const frames: Buffer[] = [];
  const body = (msgType: string, id: number | undefined, data: (w: Writer) => void): Buffer => {
    const w = new Writer();
    writeFrame(w, msgType, id, data);
    return Buffer.from(w.view().subarray(4));
  };
  for (const msgType of ['ack', 'error', 'é', 'x'.repeat(31), 'y'.repeat(32), 'z'.repeat(300)]) {
    for (const id of [undefined, 0, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32]) {
      for (const n of [0, 1, 31, 32, 64, 65, 255, 256, 70000]) {
        frames.push(body(msgType, id, (w) => w.str('a'.repeat(n))));
        frames.push(body(msgType, id, (w) => w.str('é'.repeat(n))));
        frames.push(body(msgType, id, (w) => w.bin(Buffer.alloc(n, 3))));
      }
      frames.push(body(msgType, id, (w) => w.value({ a: 1 })));
      frames.push(body(msgType, id, (w) => w.byte(0xc0)));
    }
  }
  // Every truncation, extension and single-byte change of some small ones.
  const small = [body('ack', 7, (w) => w.str('Acknowledged: hi')), body('bytes', 300, (w) => w.bin(Buffer.from([1, 2, 0xff]))), body('ack', undefined, (w) => w.str('é'))];
  for (const f of small) {
    for (let n = 0; n <= f.length; n++) frames.push(f.subarray(0, n));
    frames.push(Buffer.concat([f, Buffer.from([0])]));
    for (let i = 0; i < f.length; i++) {
      for (const v of [0x00, 0x7f, 0x80, 0x82, 0x83, 0xa0, 0xa2, 0xc0, 0xc4, 0xcc, 0xce, 0xcf, 0xd9, 0xdb, 0xff, (f[i] as number) + 1]) {
        const g = Buffer.from(f);
        g[i] = v & 0xff;
        frames.push(g);
      }
    }
  }
  let fast = 0;
  for (const frame of frames) {
    const want = readMsgpackEnvelope(frame);
    // Alone, and inside a larger buffer whose bytes around it must not be read.
    const padded = Buffer.concat([Buffer.from([0x83, 0xa8]), frame, Buffer.from('a8msg_type', 'hex')]);
    for (const [buf, start] of [[frame, 0], [padded, 2]] as const) {
      const got = decodeCommonEnvelope(buf, start, start + frame.length);
      if (got === undefined) continue;
      fast++;
      assert.ok(want.ok, `fast path accepted ${frame.toString('hex').slice(0, 80)}`);
      assert.deepEqual(got, want.message);
      assert.deepEqual(Object.keys(got), Object.keys(want.message));
    }
    assert.deepEqual(decodeMsgpackEnvelope(frame), want);
  }
  assert.ok(fast > 1000, `the fast path took ${fast} frames`);
});

test('the common envelope fast path agrees with the general reader on random envelopes, whole and with a byte changed', () => {
  let seed = 11;
  const rnd = (n: number): number => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) % n;
  };
  const pieces = ['a', 'Z', '\u0000', 'é', '€', '😀', '\ud800', '\udc00'];
  const text = (n: number): string => Array.from({ length: n }, () => pieces[rnd(pieces.length)]).join('');
  const lengths = [0, 1, 31, 32, 33, 100, 127, 128, 129, 255, 256, 300, 65535, 65536];
  const ids = [undefined, 0, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1];
  let fast = 0;
  for (let k = 0; k < 3000; k++) {
    const n = rnd(4) === 0 ? (lengths[rnd(lengths.length)] as number) : rnd(140);
    const kind = rnd(5);
    const write = (w: Writer): void => {
      if (kind === 0) w.bin(Buffer.alloc(n, rnd(256)));
      else if (kind === 1) w.value({ a: [n, text(3)], b: null });
      else w.str(rnd(2) === 0 ? 'q'.repeat(n) : text(n).toWellFormed());
    };
    const w = new Writer();
    writeFrame(w, rnd(3) === 0 ? text(rnd(40)).toWellFormed() : 'ack', ids[rnd(ids.length)], write);
    const frame = Buffer.from(w.view().subarray(4));
    const changed = Buffer.from(frame);
    if (changed.length > 0) changed[rnd(changed.length)] = rnd(256);
    for (const f of [frame, changed, frame.subarray(0, rnd(frame.length + 1))]) {
      const want = readMsgpackEnvelope(f);
      const got = decodeCommonEnvelope(f, 0, f.length);
      if (got === undefined) continue;
      fast++;
      assert.ok(want.ok, `fast path accepted ${f.toString('hex').slice(0, 80)}`);
      assert.deepEqual(got, want.message);
      assert.deepEqual(Object.keys(got), Object.keys(want.message));
    }
  }
  assert.ok(fast > 2000, `the fast path took ${fast} frames`);
});
