// The engines main.ts answers with, driven by the decoder as main.ts drives them: the
// TypeScript one, the native one over a stand-in addon (so its line bookkeeping is pinned
// whether or not the addon is built), and over the real addon when it loads.

import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, test } from 'node:test';

import {
  type Engine,
  loadNativeAddon,
  NATIVE_PATH,
  type NativeResponder,
  nativeEngine,
  nativeFrameEngine,
  tsEngine,
  tsFrameEngine,
} from '../engine.js';
import { DEFAULT_MAX_FRAME_BYTES, FrameDecoder, type Packet } from '../frame.js';
import { DEFAULT_MAX_LINE_BYTES, type Frame, LineDecoder } from '../framing.js';
import { Responder, type ResponderOptions } from '../protocol.js';
import { describeWithAddon } from './addon.js';
import {
  expectedHex,
  msgpackCases,
  type MsgpackCase,
  msgpackOptionsOf,
  msgpackStreamOf,
  semanticMsgpackCases,
} from './vectors-msgpack.js';
import { cases, expectedText, optionsOf, REPO_ROOT, skipUnlessDemo, streamOf, type Case } from './vectors.js';

/** What main.ts does with a stream: decode, answer until done, ignore the rest. */
function runEngine(engine: Engine, maxLineBytes: number, chunks: Iterable<Uint8Array>): string {
  const decoder = new LineDecoder({ maxLineBytes });
  let out = '';
  const answer = (frames: ReturnType<LineDecoder['push']>): void => {
    for (const frame of frames) {
      if (engine.done) return;
      out += Buffer.from(engine.answer(frame)).toString('utf8');
    }
  };
  for (const chunk of chunks) answer(decoder.push(chunk));
  answer(decoder.end());
  return out;
}

/** `runEngine` as `serveLines` runs an engine with `answerText`: a chunk's lines as text (`feed`). */
function runEngineText(engine: Engine, maxLineBytes: number, chunks: Iterable<Uint8Array>): string {
  const answerText = engine.answerText;
  assert.ok(answerText !== undefined, 'the engine answers text');
  const decoder = new LineDecoder({ maxLineBytes });
  let out = '';
  const reply = (r: string | Uint8Array): void => {
    out += Buffer.from(r).toString('utf8');
  };
  const sink = {
    text: (line: number, text: string): void => {
      if (!engine.done) reply(answerText(line, text));
    },
    frame: (frame: Frame): void => {
      if (!engine.done) reply(engine.answer(frame));
    },
  };
  for (const chunk of chunks) decoder.feed(chunk, sink);
  for (const frame of decoder.end()) sink.frame(frame);
  return out;
}

const full = (o: ResponderOptions): Required<ResponderOptions> => ({
  exitAfter: o.exitAfter ?? 5,
  name: o.name ?? 'TypeScript',
  maxLineBytes: o.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES,
  maxFrameBytes: o.maxFrameBytes ?? 16 * 1024 * 1024,
});

/** What main.ts does with a msgpack stream: decode frames, answer until done, ignore the rest. */
function runFrameEngine(engine: Engine<Packet>, maxFrameBytes: number, chunks: Iterable<Uint8Array>): string {
  const decoder = new FrameDecoder({ maxFrameBytes });
  const out: Buffer[] = [];
  const answer = (packets: Packet[]): void => {
    for (const packet of packets) {
      if (engine.done) return;
      out.push(Buffer.from(engine.answer(packet)));
    }
  };
  for (const chunk of chunks) answer(decoder.push(chunk));
  answer(decoder.end());
  return Buffer.concat(out).toString('hex');
}

/**
 * A stand-in with the addon's call-counting API: a TypeScript responder behind `handleBuffer`
 * (returning a string as the addon does) and `handleFrame`.
 */
class FakeNative implements NativeResponder {
  readonly calls: number[] = [];
  readonly #inner: Responder;
  constructor(options: ResponderOptions) {
    this.#inner = new Responder(options);
  }
  handleLine(line: string): string {
    this.calls.push(Buffer.byteLength(line));
    return this.#inner.handleLine(line);
  }
  handleBuffer(bytes: Uint8Array): string {
    this.calls.push(bytes.length);
    return this.#inner.handleBuffer(bytes).toString('utf8');
  }
  handleFrame(body: Uint8Array): Buffer {
    this.calls.push(body.length);
    return this.#inner.handleFrameBody(body);
  }
  handle = (): never => assert.fail('not used');
  get done(): boolean {
    return this.#inner.done;
  }
}

const pipeCases = cases.filter((c) => c.pipe !== false);

function engineSuite(name: string, make: (c: Case) => Engine): void {
  describe(name, () => {
    for (const c of pipeCases) {
      test(c.name, { skip: skipUnlessDemo(c) }, () => {
        const max = optionsOf(c).maxLineBytes ?? DEFAULT_MAX_LINE_BYTES;
        const stream = streamOf(c);
        assert.equal(runEngine(make(c), max, [stream]), expectedText(c), 'whole');
        const bytes = Array.from({ length: stream.length }, (_, i) => stream.subarray(i, i + 1));
        assert.equal(runEngine(make(c), max, bytes), expectedText(c), 'one byte at a time');
      });
    }
  });
}

engineSuite('tsEngine answers every pipe vector', (c) => tsEngine(full(optionsOf(c))));

function engineTextSuite(name: string, make: (c: Case) => Engine): void {
  describe(name, () => {
    for (const c of pipeCases) {
      test(c.name, { skip: skipUnlessDemo(c) }, () => {
        const max = optionsOf(c).maxLineBytes ?? DEFAULT_MAX_LINE_BYTES;
        const stream = streamOf(c);
        assert.equal(runEngineText(make(c), max, [stream]), expectedText(c), 'whole');
        for (const size of [1, 7]) {
          const pieces = Array.from({ length: Math.ceil(stream.length / size) }, (_, i) =>
            stream.subarray(i * size, (i + 1) * size),
          );
          assert.equal(runEngineText(make(c), max, pieces), expectedText(c), `${size} bytes at a time`);
        }
      });
    }
  });
}

engineTextSuite("tsEngine's text path (answerText) answers every pipe vector as its frame path does", (c) =>
  tsEngine(full(optionsOf(c))),
);
engineTextSuite("nativeEngine's text path (answerText) keeps a line-counting responder in step (stand-in addon)", (c) =>
  nativeEngine(new FakeNative(optionsOf(c)), optionsOf(c).maxLineBytes ?? DEFAULT_MAX_LINE_BYTES),
);
engineSuite('nativeEngine keeps a line-counting responder in step (stand-in addon)', (c) =>
  nativeEngine(new FakeNative(optionsOf(c)), optionsOf(c).maxLineBytes ?? DEFAULT_MAX_LINE_BYTES),
);

describe('nativeEngine', () => {
  test('feeds one empty line per skipped blank line and per over-long line', () => {
    const fake = new FakeNative({ maxLineBytes: 4 });
    const engine = nativeEngine(fake, 4);
    const out = runEngine(engine, 4, [Buffer.from('\n \n123456\n\r\nnope\n')]);
    assert.equal(
      out,
      '{"msg_type":"error","data":"line 3: line of 6 bytes exceeds the 4-byte limit"}\n' +
        '{"msg_type":"error","data":"line 5: invalid JSON: `nope`"}\n',
    );
    assert.deepEqual(fake.calls, [0, 0, 0, 0, 4]);
  });
});

/** The stored msgpack vectors the demo answers, and the semantic JSON ones as frames. */
const demoFrameCases = [...msgpackCases, ...semanticMsgpackCases].filter((c) => {
  const services = c.services ?? ['demo'];
  return services.length === 1 && services[0] === 'demo';
});

/**
 * `make` answers every demo msgpack vector as main.ts would run it, whole and one byte at a
 * time: every reply until the conversation is done (then the host stops reading), byte for byte.
 */
function frameEngineSuite(name: string, make: (c: MsgpackCase) => Engine<Packet>): void {
  describe(name, () => {
    for (const c of demoFrameCases) {
      test(c.name, () => {
        const max = msgpackOptionsOf(c).maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
        const stream = msgpackStreamOf(c);
        const got = runFrameEngine(make(c), max, [stream]);
        // After the exit reply the host reads no more, so later frames are not answered.
        if (c.done) assert.ok(got.length > 0 && expectedHex(c).startsWith(got), got);
        else assert.equal(got, expectedHex(c), 'whole');
        const bytes = Array.from({ length: stream.length }, (_, i) => stream.subarray(i, i + 1));
        assert.equal(runFrameEngine(make(c), max, bytes), got, 'one byte at a time');
      });
    }
    test('runs enough vectors', () => assert.ok(demoFrameCases.length >= 34, `only ${demoFrameCases.length}`));
  });
}

const frameOptions = (c: MsgpackCase): Required<ResponderOptions> => full(msgpackOptionsOf(c));

frameEngineSuite('tsFrameEngine answers every demo msgpack vector', (c) => tsFrameEngine(frameOptions(c)));
frameEngineSuite('nativeFrameEngine keeps a call-counting responder in step (stand-in addon)', (c) =>
  nativeFrameEngine(new FakeNative(frameOptions(c)), frameOptions(c).maxFrameBytes),
);

describe('nativeFrameEngine', () => {
  test('counts an over-long and a cut frame with one empty call each, answering them itself', () => {
    const fake = new FakeNative({ maxFrameBytes: 4, exitAfter: 0 });
    const engine = nativeFrameEngine(fake, 4);
    // frame 1: over the limit; frame 2: not a map (`91a178`); frame 3: cut after 1 of its 5 bytes.
    const stream = Buffer.from('05000000' + '0102030405' + '03000000' + '91a178' + '05000000' + '01', 'hex');
    const replies = runFrameEngine(engine, 4, [stream]);
    const texts = [
      'frame 1: frame of 5 bytes exceeds the 4-byte limit',
      'frame 2: not a map: `91a178`',
      'frame 3: the stream ended inside the frame, after 1 of its 5 bytes',
    ];
    const want = Buffer.concat(texts.map(frameOf));
    assert.equal(replies, want.toString('hex'));
    assert.deepEqual(fake.calls, [0, 3, 0]);
  });
});

/** An `error` frame without an id, as the core writes it. */
function frameOf(text: string): Buffer {
  const body = Buffer.concat([
    Buffer.from('82a86d73675f74797065a56572726f72a464617461', 'hex'),
    text.length < 32 ? Buffer.from([0xa0 | text.length]) : Buffer.from([0xd9, Buffer.byteLength(text)]),
    Buffer.from(text),
  ]);
  const header = Buffer.alloc(4);
  header.writeUInt32LE(body.length);
  return Buffer.concat([header, body]);
}

describeWithAddon('the real addon behind nativeEngine', (addon) => {
  engineSuite('answers every pipe vector', (c) => {
    const options = full(optionsOf(c));
    // The demo only, as main.ts builds it (the addon's own default is demo and markdown).
    return nativeEngine(new addon.Responder({ ...options, services: ['demo'] }), options.maxLineBytes);
  });
  engineTextSuite('answers every pipe vector through its text path (handleLine)', (c) => {
    const options = full(optionsOf(c));
    return nativeEngine(new addon.Responder({ ...options, services: ['demo'] }), options.maxLineBytes);
  });
  frameEngineSuite('behind nativeFrameEngine answers every demo msgpack vector', (c) => {
    const options = frameOptions(c);
    return nativeFrameEngine(new addon.Responder({ ...options, services: ['demo'] }), options.maxFrameBytes);
  });
});

describe('loadNativeAddon', () => {
  test('looks in <repo>/native', () => {
    assert.equal(path.resolve(NATIVE_PATH), path.resolve(REPO_ROOT, 'native'));
  });
  test('says why it cannot load, in one line', () => {
    const result = loadNativeAddon(path.join(REPO_ROOT, 'no-such-addon'));
    assert.ok('why' in result);
    assert.match(result.why, /^Cannot find module/);
    assert.ok(!result.why.includes('\n'));
  });
  test('refuses a module without a Responder class', () => {
    const result = loadNativeAddon('node:path');
    assert.deepEqual(result, { why: 'it does not export a Responder class' });
  });
});
