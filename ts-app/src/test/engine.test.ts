// The engines main.ts answers with, driven by the decoder as main.ts drives them: the
// TypeScript one, the native one over a stand-in addon (so its line bookkeeping is pinned
// whether or not the addon is built), and over the real addon when it loads.

import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, test } from 'node:test';

import { type Engine, loadNativeAddon, NATIVE_PATH, type NativeResponder, nativeEngine, tsEngine } from '../engine.js';
import { DEFAULT_MAX_LINE_BYTES, LineDecoder } from '../framing.js';
import { Responder, type ResponderOptions } from '../protocol.js';
import { describeWithAddon } from './addon.js';
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

const full = (o: ResponderOptions): Required<ResponderOptions> => ({
  exitAfter: o.exitAfter ?? 5,
  name: o.name ?? 'TypeScript',
  maxLineBytes: o.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES,
  maxFrameBytes: o.maxFrameBytes ?? 16 * 1024 * 1024,
});

/**
 * A stand-in with the addon's line-counting API and no `handleFrame`: a TypeScript responder
 * behind `handleBuffer`, returning a string as the addon does.
 */
class FakeNative implements NativeResponder {
  readonly calls: number[] = [];
  readonly #inner: Responder;
  constructor(options: ResponderOptions) {
    this.#inner = new Responder(options);
  }
  handleBuffer(bytes: Uint8Array): string {
    this.calls.push(bytes.length);
    return this.#inner.handleBuffer(bytes).toString('utf8');
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

describeWithAddon('the real addon behind nativeEngine', (addon) => {
  engineSuite('answers every pipe vector', (c) => {
    const options = full(optionsOf(c));
    // The demo only, as main.ts builds it (the addon's own default is demo and markdown).
    return nativeEngine(new addon.Responder({ ...options, services: ['demo'] }), options.maxLineBytes);
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
