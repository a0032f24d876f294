// The library's `Peer`: one behaviour suite run against both transports (the Rust `serve` over
// real pipes, and the addon in this process), then the faults only a pipe has, driven by small
// `node -e` and `sh -c` children that misbehave on purpose.

import assert from 'node:assert/strict';
import { ChildProcess, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { Socket } from 'node:net';
import path from 'node:path';
import { after, describe, test } from 'node:test';

import {
  inProcess,
  type Message,
  type Peer,
  PeerError,
  type PeerErrorCode,
  type PipePeer,
  spawnPeer,
  type SpawnPeerOptions,
} from '../index.js';
import { describeWithAddon, REQUIRE_NATIVE } from './addon.js';
import { REPO_ROOT } from './vectors.js';

/** The Rust binary `npm run build` makes (`cargo build`). */
const SERVE_BIN = path.join(REPO_ROOT, 'target', 'debug', 'rust-ts-ipc');

/** Rejects with a `PeerError` of `code`, and returns it for more checks. */
async function rejectsWith(promise: Promise<unknown>, code: PeerErrorCode): Promise<PeerError> {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof PeerError, `expected a PeerError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    return e;
  }
  assert.fail(`expected a PeerError ${code}, but it resolved`);
}

/** Throws a `PeerError` of `code`, and returns it. */
function throwsWith(fn: () => unknown, code: PeerErrorCode): PeerError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof PeerError, `expected a PeerError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    return e;
  }
  assert.fail(`expected a PeerError ${code}, but it returned`);
}

/** Every unsolicited message `peer` delivers, in order. */
function collect(peer: Peer): Message[] {
  const seen: Message[] = [];
  peer.on('message', (m) => seen.push(m));
  return seen;
}

/** Resolves with the next unsolicited message (or fails after `ms`). */
function nextMessage(peer: Peer, ms = 5000): Promise<Message> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no unsolicited message within ${ms} ms`)), ms);
    const listener = (m: Message): void => {
      clearTimeout(timer);
      peer.off('message', listener);
      resolve(m);
    };
    peer.on('message', listener);
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** True while a process with `pid` exists and is not a zombie waiting to be reaped. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    // `pid (comm) S ...`: the state follows the last `)`.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return !existsSync('/proc/self/stat'); // no procfs: trust kill(0)
  }
}

/** Polls until `condition` holds (or `ms` passed); true if it held. */
async function until(condition: () => boolean, ms = 5000): Promise<boolean> {
  const deadline = performance.now() + ms;
  while (!condition()) {
    if (performance.now() > deadline) return false;
    await sleep(10);
  }
  return true;
}

/** Polls until `pid` is gone (or `ms` passed); true if it is gone. */
async function gone(pid: number, ms = 2000): Promise<boolean> {
  const deadline = performance.now() + ms;
  while (alive(pid)) {
    if (performance.now() > deadline) return false;
    await sleep(20);
  }
  return true;
}

type MakePeer = (options: { exitAfter?: number }) => Peer;

/** The behaviour both transports share: the same calls give the same results. */
function behaviour(name: string, make: MakePeer): void {
  describe(`Peer behaviour: ${name}`, () => {
    const open: Peer[] = [];
    /** A peer answering `data` forever unless `exitAfter` says otherwise; closed after the suite. */
    const peer = (exitAfter = 0): Peer => {
      const p = make({ exitAfter });
      open.push(p);
      return p;
    };
    after(async () => {
      await Promise.all(open.map((p) => p.close()));
    });

    test('allocates ids 1, 2, 3 and answers with the reply message', async () => {
      const p = peer();
      assert.deepEqual(await p.request('greeting', 'hi'), { msg_type: 'response', data: 'Hello from TypeScript!', id: 1 });
      assert.deepEqual(await p.request('data', 'a'), { msg_type: 'ack', data: 'Acknowledged: a', id: 2 });
      assert.deepEqual(await p.request('data', 'b'), { msg_type: 'ack', data: 'Acknowledged: b', id: 3 });
      assert.equal(p.stats().answered, 3);
    });

    test('matches many requests in flight to their replies', async () => {
      const p = peer();
      const texts = Array.from({ length: 500 }, (_, i) => `m${i}`);
      const replies = await Promise.all(texts.map((t) => p.request('data', t)));
      replies.forEach((r, i) => assert.deepEqual(r, { msg_type: 'ack', data: `Acknowledged: m${i}`, id: i + 1 }));
      assert.deepEqual(p.stats(), { inFlight: 0, queued: 0, answered: 500, lateRepliesDropped: 0, unsolicited: 0 });
    });

    test('rejects an error reply with ERROR_REPLY, its text and the reply, and keeps going', async () => {
      const p = peer();
      const e = await rejectsWith(p.request('nope', 'x'), 'ERROR_REPLY');
      assert.equal(e.reply?.msg_type, 'error');
      assert.equal(e.reply?.id, 1);
      // The list of types answered grows with the services (markdown), so only its start is pinned.
      assert.match(String(e.reply?.data), /^line 1: unknown msg_type `nope`; expected /);
      assert.ok(e.message.includes(String(e.reply?.data)), e.message);
      assert.equal(e.msgType, 'nope');
      assert.equal(e.id, 1);
      assert.deepEqual(await p.request('data', 'after'), { msg_type: 'ack', data: 'Acknowledged: after', id: 2 });
    });

    test('sends non-string data as JSON, answered with the same error as the pipe gives', async () => {
      const p = peer();
      const e = await rejectsWith(p.request('data', { n: [1, 2] }), 'ERROR_REPLY');
      assert.deepEqual(e.reply, {
        msg_type: 'error',
        data: 'line 1: field `data` must be a string, got object: `{"msg_type":"data","data":{"n":[1,2]},"i…`',
        id: 1,
      });
      const n = await rejectsWith(p.request('data', 42), 'ERROR_REPLY');
      assert.equal(n.reply?.data, 'line 2: field `data` must be a string, got number: `{"msg_type":"data","data":42,"id":2}`');
    });

    test('refuses data that JSON cannot carry with INVALID_ARGUMENT, sending nothing', async () => {
      const p = peer();
      const cycle: Record<string, unknown> = {};
      cycle['self'] = { back: cycle };
      const cases: [unknown, RegExp][] = [
        [10n, /data is a BigInt/],
        [cycle, /data\.self\.back is a cycle/],
        [undefined, /data is undefined/],
        [() => 1, /data is a function/],
        [Buffer.from('hi'), /binary data \(a Buffer\).*encoding: 'msgpack'/],
        [{ bytes: new Uint8Array(4) }, /data\.bytes is binary data \(a Uint8Array\).*encoding: 'msgpack'/],
        [[1, undefined], /data\[1\] is undefined/],
        [Number.NaN, /the number NaN/],
      ];
      for (const [data, message] of cases) {
        const e = await rejectsWith(p.request('data', data), 'INVALID_ARGUMENT');
        assert.match(e.message, message);
        throwsWith(() => p.notify('data', data), 'INVALID_ARGUMENT');
      }
      await rejectsWith(p.request(7 as unknown as string, 'x'), 'INVALID_ARGUMENT');
      await rejectsWith(p.request('data', 'x', { timeoutMs: -1 }), 'INVALID_ARGUMENT');
      // Nothing was sent: the next message is the responder's line 1.
      const e = await rejectsWith(p.request('nope', 'x'), 'ERROR_REPLY');
      assert.match(String(e.reply?.data), /^line 1: /);
    });

    test('data whose encoding throws is INVALID_ARGUMENT with the cause, never a raw error', async () => {
      const p = peer();
      const boom = new Error('getter boom');
      let deep: unknown = [];
      for (let i = 0; i < 100_000; i++) deep = [deep];
      const cases: [unknown, RegExp][] = [
        [{ get x(): never { throw boom; } }, /cannot send `data`: encoding data threw: getter boom/],
        [{ n: Object(1n) as object }, /cannot send `data`: encoding data threw: .*BigInt/],
        [deep, /cannot send `data`: encoding data threw: Maximum call stack size exceeded/],
      ];
      for (const [data, message] of cases) {
        const e = await rejectsWith(p.request('data', data), 'INVALID_ARGUMENT');
        assert.match(e.message, message);
        assert.ok(e.cause instanceof Error, 'the thrown error is the cause');
        throwsWith(() => p.notify('data', data), 'INVALID_ARGUMENT');
      }
      assert.equal(((await rejectsWith(p.request('data', cases[0]?.[0]), 'INVALID_ARGUMENT')).cause), boom);
    });

    test('asks toJSON as JSON.stringify does: with its key, and never again of what it returned', async () => {
      const p = peer();
      // A toJSON returning its own object (or one holding such) used to recurse without end.
      class Self {
        a = 1;
        toJSON(): unknown {
          return this;
        }
      }
      class Copy {
        a = 1;
        toJSON(): unknown {
          return { ...this, x: new Self() };
        }
      }
      const keys: string[] = [];
      const keyed = { k: { toJSON: (key: string): string => (keys.push(key), key) } };
      for (const data of [new Self(), new Copy(), keyed]) {
        const e = await rejectsWith(p.request('data', data), 'ERROR_REPLY');
        // The demo quotes the line it refused: its start shows the data as JSON.stringify gives it.
        const line = `{"msg_type":"data","data":${JSON.stringify(data)},"id":${String(e.id)}}`;
        assert.ok(String(e.reply?.data).includes(line.slice(0, 40)), `${String(e.reply?.data)} quotes ${line}`);
      }
      assert.ok(keys.length > 0 && keys.every((k) => k === 'k'), `toJSON gets its key, got ${JSON.stringify(keys)}`);
    });

    test('refuses a signal that is not an AbortSignal with INVALID_ARGUMENT, leaving nothing armed', async () => {
      const p = peer();
      const e = await rejectsWith(p.request('data', 'x', { signal: {} as AbortSignal, timeoutMs: 20 }), 'INVALID_ARGUMENT');
      assert.match(e.message, /request: option `signal` must be an AbortSignal .*, got object$/);
      await sleep(60); // a timer left armed would fire here and throw
      assert.deepEqual(p.stats(), { inFlight: 0, queued: 0, answered: 0, lateRepliesDropped: 0, unsolicited: 0 });
      assert.equal((await p.request('data', 'y')).data, 'Acknowledged: y');
    });

    test('omits undefined object properties, as JSON does', async () => {
      const p = peer();
      const e = await rejectsWith(p.request('data', { a: 1, b: undefined }), 'ERROR_REPLY');
      assert.equal(e.reply?.data, 'line 1: field `data` must be a string, got object: `{"msg_type":"data","data":{"a":1},"id":1…`');
    });

    test('rejects with ABORTED for an aborted signal, sending nothing', async () => {
      const p = peer();
      const controller = new AbortController();
      controller.abort(new Error('user gave up'));
      const e = await rejectsWith(p.request('data', 'x', { signal: controller.signal }), 'ABORTED');
      assert.equal((e.cause as Error).message, 'user gave up');
      const next = await rejectsWith(p.request('nope', 'x'), 'ERROR_REPLY');
      assert.match(String(next.reply?.data), /^line 1: /);
    });

    test('resolves within a timeout and leaves no timer behind', async () => {
      const p = peer();
      const controller = new AbortController();
      const reply = await p.request('data', 'x', { timeoutMs: 10_000, signal: controller.signal });
      assert.equal(reply.data, 'Acknowledged: x');
      controller.abort(); // after the reply: changes nothing
      assert.deepEqual(p.stats(), { inFlight: 0, queued: 0, answered: 1, lateRepliesDropped: 0, unsolicited: 0 });
    });

    test('delivers the replies to a notification as unsolicited messages', async () => {
      const p = peer();
      const next = nextMessage(p);
      p.notify('data', 'note');
      assert.deepEqual(await next, { msg_type: 'ack', data: 'Acknowledged: note' });
      assert.equal(p.stats().unsolicited, 1);
    });

    test("delivers the demo's exit after the fifth ack as unsolicited", async () => {
      const p = peer(5);
      const exit = nextMessage(p);
      for (let i = 1; i <= 5; i++) {
        assert.deepEqual(await p.request('data', `d${i}`), { msg_type: 'ack', data: `Acknowledged: d${i}`, id: i });
      }
      assert.deepEqual(await exit, { msg_type: 'exit', data: 'Goodbye from TypeScript!', id: 5 });
      assert.equal(p.stats().answered, 5);
    });

    test('close with a bad graceMs returns a rejected INVALID_ARGUMENT promise and closes nothing', async () => {
      const p = peer();
      for (const graceMs of ['x', -1, Number.NaN]) {
        let closing: Promise<unknown> | undefined;
        assert.doesNotThrow(() => {
          closing = p.close({ graceMs: graceMs as number });
        }, `graceMs ${String(graceMs)}`);
        assert.ok(closing instanceof Promise, 'a Promise, as close() always returns');
        const e = await rejectsWith(closing, 'INVALID_ARGUMENT');
        assert.equal(
          e.message,
          `close: option \`graceMs\` must be a non-negative number of milliseconds (0: do not wait, escalate at once; Infinity: wait for the exit, never escalate), got ${String(graceMs)}`,
        );
      }
      assert.equal((await p.request('data', 'still open')).data, 'Acknowledged: still open');
      assert.deepEqual(await p.close({ graceMs: 500 }), { code: 0, signal: null });
    });

    test('close is idempotent and CLOSED follows it', async () => {
      const p = peer();
      await p.request('data', 'x');
      const first = p.close();
      assert.equal(p.close(), first, 'the same promise');
      assert.deepEqual(await first, { code: 0, signal: null });
      await rejectsWith(p.request('data', 'x'), 'CLOSED');
      throwsWith(() => p.notify('data', 'x'), 'CLOSED');
    });
  });
}

/** True if the Rust binary is there; otherwise a skip, or a failure under REQUIRE_NATIVE. */
function haveServe(): boolean {
  if (existsSync(SERVE_BIN)) return true;
  const why = `${SERVE_BIN} is not built (cargo build)`;
  if (process.env[REQUIRE_NATIVE] === undefined) describe('Peer over the pipe', { skip: why }, () => {});
  else test('the Rust binary is built', () => assert.fail(`${why} (${REQUIRE_NATIVE} is set)`));
  return false;
}

if (haveServe()) {
  behaviour('spawnPeer(rust-ts-ipc serve)', ({ exitAfter }) =>
    spawnPeer(SERVE_BIN, ['serve', '--exit-after', String(exitAfter ?? 0)], { graceMs: 500 }),
  );
  // The addon reads the pipes in sync mode (more of it in peer-sync.test.ts).
  describeWithAddon('spawnPeer sync mode', () => {
    behaviour("spawnPeer(rust-ts-ipc serve, { mode: 'sync' })", ({ exitAfter }) =>
      spawnPeer(SERVE_BIN, ['serve', '--exit-after', String(exitAfter ?? 0)], { graceMs: 500, mode: 'sync' }),
    );
  });
}
describeWithAddon('inProcess', (addon) => {
  behaviour('inProcess()', ({ exitAfter }) => inProcess({ exitAfter: exitAfter ?? 0 }));

  describe('inProcess only', () => {
    /**
     * Runs `body` with the addon's `method` replaced by `fake` (given the real one and the first
     * argument; the others are passed on as they were), then restores it.
     */
    async function withFake(
      method: 'handle' | 'handleFrameInto',
      fake: (real: (arg: unknown) => unknown, arg: unknown) => unknown,
      body: () => Promise<void>,
    ): Promise<void> {
      const proto = addon.Responder.prototype as unknown as Record<string, (this: unknown, ...args: unknown[]) => unknown>;
      const real = proto[method];
      assert.ok(real !== undefined, `the addon has ${method}`);
      proto[method] = function (this: unknown, arg: unknown, ...rest: unknown[]): unknown {
        return fake((a) => real.call(this, a, ...rest), arg);
      };
      try {
        await body();
      } finally {
        proto[method] = real;
      }
    }

    test('an argument the addon refuses is INVALID_ARGUMENT with its TypeError as the cause', async () => {
      // The real addon, made to see an id it refuses (json) and a string for a frame (msgpack).
      const cases = [
        {
          encoding: 'json',
          method: 'handle',
          bad: (m: unknown) => ({ ...(m as object), id: -1 }),
          says: 'handle: field `id` must be an integer from 0 to 9007199254740991, got number -1',
        },
        {
          encoding: 'msgpack',
          method: 'handleFrameInto',
          bad: () => 'not bytes',
          says: 'handleFrameInto: expected a Uint8Array as `frame`, got string',
        },
      ] as const;
      for (const { encoding, method, bad, says } of cases) {
        await withFake(method, (real, arg) => real(bad(arg)), async () => {
          const p = inProcess({ encoding, exitAfter: 0 });
          const sync = throwsWith(() => p.requestSync('data', 'x'), 'INVALID_ARGUMENT');
          assert.equal(sync.message, `cannot send request \`data\` #1: the in-process addon refused it: ${says}`);
          assert.equal(sync.msgType, 'data');
          assert.equal(sync.id, 1);
          assert.ok(sync.cause instanceof TypeError, encoding);
          assert.equal((sync.cause as NodeJS.ErrnoException).code, 'InvalidArg');
          const async = await rejectsWith(p.request('data', 'x'), 'INVALID_ARGUMENT');
          assert.equal(async.message, `cannot send request \`data\` #2: the in-process addon refused it: ${says}`);
          const note = throwsWith(() => p.notify('data', 'x'), 'INVALID_ARGUMENT');
          assert.equal(note.message, `cannot send \`data\`: the in-process addon refused it: ${says}`);
          assert.equal(p.stats().answered, 0);
        });
      }
    });

    test("the addon's other failures (ReplyTooLong) are its own Error, not a PeerError: no code fits", async () => {
      // A reply over Node-API's string limit takes more than 512 MiB to make: this fake throws
      // what the addon throws then.
      const text =
        'handle: the reply is 536870889 bytes of UTF-8, more than the 536870888 bytes (or UTF-16 units) ' +
        'Node-API can make a JavaScript string of; the line was not answered and does not count';
      const tooLong = Object.assign(new Error(text), { code: 'ReplyTooLong' });
      const fake = (): never => {
        throw tooLong;
      };
      await withFake('handle', fake, async () => {
        const p = inProcess({ exitAfter: 0 });
        assert.throws(() => p.requestSync('markdown', 'x'), (e: unknown) => e === tooLong);
        await assert.rejects(p.request('markdown', 'x'), (e: unknown) => e === tooLong);
        assert.equal(p.stats().answered, 0);
      });
    });


    test('requestSync returns the reply and throws ERROR_REPLY', () => {
      const p = inProcess({ exitAfter: 0, name: 'Rust' });
      assert.deepEqual(p.requestSync('greeting', 'x'), { msg_type: 'response', data: 'Hello from Rust!', id: 1 });
      const e = throwsWith(() => p.requestSync('data', 1), 'ERROR_REPLY');
      assert.equal(e.reply?.id, 2);
    });

    test('passes the options to the addon, which may refuse them', () => {
      const e = throwsWith(() => inProcess({ exitAfter: -1 }), 'INVALID_ARGUMENT');
      assert.match(e.message, /exitAfter/);
    });

    test('after the conversation ended it answers with an error reply, not silence', async () => {
      const p = inProcess({ exitAfter: 1 });
      await p.request('data', 'x');
      const e = await rejectsWith(p.request('data', 'y'), 'ERROR_REPLY');
      assert.match(String(e.reply?.data), /conversation has ended/);
    });
  });
});

// ---- Faults only a pipe has ----------------------------------------------------------------

/**
 * A `node -e` child reading requests line by line; `onMessage(m, write, state)` runs for each.
 * `write(obj)` writes one line of JSON, `raw(text)` writes text as is.
 */
function nodeChild(body: string, options: SpawnPeerOptions & { encoding?: 'json' } = {}): PipePeer {
  const script = `
    const readline = require('node:readline');
    const write = (m) => process.stdout.write(JSON.stringify(m) + '\\n');
    const raw = (t) => process.stdout.write(t);
    const state = { n: 0 };
    readline.createInterface({ input: process.stdin }).on('line', (line) => {
      const m = JSON.parse(line);
      state.n++;
      ${body}
    });`;
  return spawnPeer(process.execPath, ['-e', script], { graceMs: 500, ...options });
}

/** `{msg_type:'ack', data, id}`: what the fault children answer with. */
const ack = (data: string, id: number): Message => ({ msg_type: 'ack', data, id });

describe('spawnPeer faults', () => {
  const open: Peer[] = [];
  const track = <P extends Peer>(p: P): P => {
    open.push(p);
    return p;
  };
  after(async () => {
    await Promise.all(open.map((p) => p.close()));
  });

  test('answers replies that arrive out of order', async () => {
    // Holds three requests, then answers them last first.
    const p = track(
      nodeChild(`state.held = (state.held || []).concat([m]);
        if (state.n === 3) for (const h of state.held.reverse()) write({ msg_type: 'ack', data: h.data, id: h.id });`),
    );
    const replies = await Promise.all(['a', 'b', 'c'].map((d) => p.request('data', d)));
    assert.deepEqual(replies, [ack('a', 1), ack('b', 2), ack('c', 3)]);
  });

  test('delivers a reply with an unknown id as unsolicited', async () => {
    const p = track(nodeChild(`write({ msg_type: 'ack', data: 'stray', id: 999 }); write({ msg_type: 'ack', data: m.data, id: m.id });`));
    const seen = collect(p);
    assert.deepEqual(await p.request('data', 'x'), ack('x', 1));
    assert.deepEqual(seen, [ack('stray', 999)]);
    assert.equal(p.stats().unsolicited, 1);
  });

  test('delivers a second reply for an already answered id as unsolicited', async () => {
    const p = track(nodeChild(`write({ msg_type: 'ack', data: m.data, id: m.id }); write({ msg_type: 'again', data: m.data, id: m.id });`));
    const next = nextMessage(p);
    assert.deepEqual(await p.request('data', 'x'), ack('x', 1));
    assert.deepEqual(await next, { msg_type: 'again', data: 'x', id: 1 });
  });

  test('delivers a line that is not valid protocol as an error naming it, and keeps going', async () => {
    const p = track(
      nodeChild(`raw('not json\\n'); raw('{"data":"no type"}\\n'); raw(Buffer.from([0x7b, 0xff, 0x0a])); write({ msg_type: 'ack', data: m.data, id: m.id });`),
    );
    const seen = collect(p);
    assert.deepEqual(await p.request('data', 'x'), ack('x', 1));
    assert.deepEqual(seen, [
      { msg_type: 'error', data: 'line 1: invalid JSON: `not json`' },
      { msg_type: 'error', data: 'line 2: missing field `msg_type`: `{"data":"no type"}`' },
      { msg_type: 'error', data: 'line 3: invalid UTF-8 at byte 1' },
    ]);
    assert.deepEqual(await p.request('data', 'y'), ack('y', 2));
  });

  test('one write mixing replies, invalid UTF-8, blank, CRLF and broken lines: each read on its own', async () => {
    // All in one write, so the reader sees them in one chunk (the whole-chunk path and its fallback).
    const p = track(
      nodeChild(`if (state.n === 2) raw(Buffer.concat([
        Buffer.from('{"msg_type":"ack","data":"a","id":1}\\n \\r\\n'),
        Buffer.from([0x7b, 0xc3, 0x28, 0x7d, 0x0a]),
        Buffer.from('{"msg_type":"note","data":"é"}\\r\\nnope\\n{"msg_type":"ack","data":"b","id":2}\\n'),
      ]));`),
    );
    const seen = collect(p);
    assert.deepEqual(await Promise.all([p.request('data', 'a'), p.request('data', 'b')]), [ack('a', 1), ack('b', 2)]);
    assert.deepEqual(seen, [
      { msg_type: 'error', data: 'line 3: invalid UTF-8 at byte 1' },
      { msg_type: 'note', data: 'é' },
      { msg_type: 'error', data: 'line 5: invalid JSON: `nope`' },
    ]);
  });

  test('the requests made by the reactions to one read of replies go out in one write', async () => {
    // Answers the first four requests in one write once it has them all, then every later one.
    const p = track(
      nodeChild(`state.held = (state.held || []).concat([m]);
        if (state.n === 4) raw(state.held.map((h) => JSON.stringify({ msg_type: 'ack', data: h.data, id: h.id }) + '\\n').join(''));
        if (state.n > 4) write({ msg_type: 'ack', data: m.data, id: m.id });`),
    );
    // Counts the writes to the child's stdin (the only socket written to meanwhile).
    const writes: string[] = [];
    const write = Socket.prototype.write;
    Socket.prototype.write = function (this: Socket, chunk: unknown, ...rest: unknown[]) {
      if (this !== process.stdout && this !== process.stderr) writes.push(String(chunk));
      return (write as (...a: unknown[]) => boolean).call(this, chunk, ...rest);
    } as typeof write;
    try {
      const first = ['a', 'b', 'c', 'd'].map((d) => p.request('data', d));
      const follow = await Promise.all(first.map((r, i) => r.then(() => p.request('data', `${i}`))));
      assert.deepEqual(follow, [ack('0', 5), ack('1', 6), ack('2', 7), ack('3', 8)]);
    } finally {
      Socket.prototype.write = write;
    }
    // One write for the first four, one for the four their replies' reactions made.
    assert.equal(writes.length, 2, JSON.stringify(writes));
  });

  test('a broken reply carrying a pending id answers that request with ERROR_REPLY', async () => {
    const p = track(nodeChild(`raw('{"id":' + m.id + ',"data":"x"}\\n');`));
    const e = await rejectsWith(p.request('data', 'x'), 'ERROR_REPLY');
    assert.equal(e.reply?.data, 'line 1: missing field `msg_type`: `{"id":1,"data":"x"}`');
  });

  test('drops over-long lines as they arrive and reports them', async () => {
    const p = track(nodeChild(`raw('x'.repeat(1000) + '\\n'); write({ msg_type: 'ack', data: m.data, id: m.id });`, { maxLineBytes: 100 }));
    const seen = collect(p);
    assert.deepEqual(await p.request('data', 'x'), ack('x', 1));
    assert.deepEqual(seen, [{ msg_type: 'error', data: 'line 1: line of 1000 bytes exceeds the 100-byte limit' }]);
  });

  test('rejects every pending request with PEER_EXITED and the stderr tail when the child exits', async () => {
    let exitSeenAt = 0;
    const p = track(
      nodeChild(`if (state.n === 3) { process.stderr.write('x'.repeat(5000) + 'dying on purpose\\n'); process.exit(3); }`, {
        stderr: (chunk) => {
          if (chunk.includes('dying')) exitSeenAt = performance.now();
        },
      }),
    );
    const settled = [1, 2, 3, 4, 5].map((i) =>
      rejectsWith(p.request('data', `d${i}`), 'PEER_EXITED').then((e) => ({ e, at: performance.now() })),
    );
    const results = await Promise.all(settled);
    for (const { e, at } of results) {
      assert.equal(e.exitCode, 3);
      assert.equal(e.signal, null);
      assert.ok(e.stderrTail?.endsWith('dying on purpose\n'), e.stderrTail);
      assert.equal(e.stderrTail?.length, 4096, 'the last 4 KiB');
      assert.match(e.message, /exited with code 3; its stderr ended with:/);
      // The bound is 100 ms after the exit is seen; measured here from the child's last
      // stderr line (a little before its exit) with a generous margin for a loaded machine.
      assert.ok(at - exitSeenAt < 1000, `rejected ${Math.round(at - exitSeenAt)} ms after the exit`);
    }
    const later = await rejectsWith(p.request('data', 'late'), 'PEER_EXITED');
    assert.equal(later.exitCode, 3);
    throwsWith(() => p.notify('data', 'x'), 'PEER_EXITED');
    assert.deepEqual(await p.close(), { code: 3, signal: null });
  });

  test('a close() in the same tick as the exit event still rejects pending requests with PEER_EXITED', async () => {
    // The exit is seen first: the requests fail because the child died, not because of close().
    const p = track(nodeChild(`process.stderr.write('dying on purpose\\n', () => process.exit(3));`, { stderr: 'ignore' }));
    let closing: Promise<unknown> | undefined;
    // close() from inside the child's 'exit' event, right after the peer's own listener ran.
    const emit = ChildProcess.prototype.emit;
    ChildProcess.prototype.emit = function (this: ChildProcess, event: string | symbol, ...args: unknown[]): boolean {
      const listened = (emit as (...a: unknown[]) => boolean).call(this, event, ...args);
      if (event === 'exit' && this.pid === p.pid) closing = p.close();
      return listened;
    } as typeof emit;
    let e: PeerError;
    try {
      e = await rejectsWith(p.request('data', 'x'), 'PEER_EXITED');
    } finally {
      ChildProcess.prototype.emit = emit;
    }
    assert.ok(closing !== undefined, 'close() was called in the exit event');
    assert.equal(e.exitCode, 3);
    assert.equal(e.signal, null);
    assert.equal(e.stderrTail, 'dying on purpose\n');
    assert.match(e.message, /^request `data` #1 cannot be answered: the peer `.*` \(pid \d+\) exited with code 3; its stderr ended with:/);
    assert.deepEqual(await closing, { code: 3, signal: null });
    // Made after close(): that is what refuses them now.
    await rejectsWith(p.request('data', 'y'), 'CLOSED');
  });

  test('a timed-out request rejects with TIMEOUT; its late reply is dropped and counted', async () => {
    const p = track(nodeChild(`setTimeout(() => write({ msg_type: 'ack', data: m.data, id: m.id }), m.data === 'slow' ? 300 : 0);`));
    const seen = collect(p);
    const e = await rejectsWith(p.request('data', 'slow', { timeoutMs: 50 }), 'TIMEOUT');
    assert.match(e.message, /request `data` #1 got no reply within 50 ms; raise timeoutMs/);
    assert.equal(p.stats().inFlight, 0);
    assert.ok(await until(() => p.stats().lateRepliesDropped === 1), 'the late reply came and was counted');
    assert.deepEqual(await p.request('data', 'fast'), ack('fast', 2));
    assert.deepEqual(seen, [], 'never delivered');
  });

  test('the peer-wide timeoutMs applies when a request gives none', async () => {
    const p = track(nodeChild(``, { timeoutMs: 30 }));
    await rejectsWith(p.request('data', 'never answered'), 'TIMEOUT');
  });

  test('aborting a request in flight rejects with ABORTED; its late reply is dropped and counted', async () => {
    const p = track(nodeChild(`setTimeout(() => write({ msg_type: 'ack', data: m.data, id: m.id }), 200);`));
    const seen = collect(p);
    const controller = new AbortController();
    const pending = p.request('data', 'x', { signal: controller.signal });
    setTimeout(() => controller.abort(new Error('stop')), 20);
    const e = await rejectsWith(pending, 'ABORTED');
    assert.equal((e.cause as Error).message, 'stop');
    assert.ok(await until(() => p.stats().lateRepliesDropped === 1), 'the late reply came and was counted');
    assert.deepEqual(seen, []);
  });

  test('100 000 requests with maxInFlight 256: every reply once, in-flight and memory bounded', { timeout: 120_000 }, async () => {
    if (!existsSync(SERVE_BIN)) return;
    const p = track(spawnPeer(SERVE_BIN, ['serve', '--exit-after', '0'], { maxInFlight: 256 }));
    const total = 100_000;
    const rssBefore = process.memoryUsage().rss;
    let maxInFlight = 0;
    let maxRss = rssBefore;
    const seen = new Uint8Array(total + 1);
    const requests: Promise<void>[] = [];
    for (let i = 1; i <= total; i++) {
      requests.push(
        p.request('data', `m${i}`).then((r) => {
          assert.equal(r.data, `Acknowledged: m${i}`);
          assert.equal(r.id, i);
          seen[i] = (seen[i] ?? 0) + 1;
          const inFlight = p.stats().inFlight;
          if (inFlight > maxInFlight) maxInFlight = inFlight;
          if (i % 10_000 === 0) maxRss = Math.max(maxRss, process.memoryUsage().rss);
        }),
      );
    }
    assert.equal(p.stats().inFlight, 0, 'nothing is written within the call');
    assert.equal(p.stats().queued, total);
    await Promise.all(requests);
    assert.ok(seen.subarray(1).every((n) => n === 1), 'every reply exactly once');
    assert.ok(maxInFlight <= 256, `at most 256 in flight, saw ${maxInFlight}`);
    assert.deepEqual(p.stats(), { inFlight: 0, queued: 0, answered: total, lateRepliesDropped: 0, unsolicited: 0 });
    // Generous: 100 000 waiting promises and their lines cost tens of MiB; an unbounded pipe
    // buffer or leaked per-request state would cost far more.
    const grown = (maxRss - rssBefore) / 2 ** 20;
    assert.ok(grown < 400, `RSS grew ${grown.toFixed(0)} MiB`);
  });

  test('waits for drain when the child reads slowly, and loses nothing', async () => {
    // The child does not read for 300 ms, so 4 MiB of requests fill the pipe first.
    const p = track(
      spawnPeer(
        process.execPath,
        [
          '-e',
          `setTimeout(() => require('node:readline').createInterface({ input: process.stdin }).on('line', (l) => {
             const m = JSON.parse(l); process.stdout.write(JSON.stringify({ msg_type: 'len', data: m.data.length, id: m.id }) + '\\n');
           }), 300);`,
        ],
        { graceMs: 500 },
      ),
    );
    const big = 'x'.repeat(64 * 1024);
    const replies = await Promise.all(Array.from({ length: 64 }, () => p.request('data', big)));
    replies.forEach((r, i) => assert.deepEqual(r, { msg_type: 'len', data: big.length, id: i + 1 }));
  });

  test('close of a child that exited by itself returns its status at once', async () => {
    const p = track(spawnPeer('sh', ['-c', 'exit 7']));
    await sleep(200);
    assert.deepEqual(await p.close(), { code: 7, signal: null });
  });

  test('a command that cannot start rejects with PEER_EXITED saying why', async () => {
    const p = track(spawnPeer(path.join(REPO_ROOT, 'no-such-program')));
    assert.equal(p.pid, undefined);
    const e = await rejectsWith(p.request('data', 'x'), 'PEER_EXITED');
    assert.match(e.message, /`.*no-such-program` could not be started \(spawn .* ENOENT\); check the path/);
    assert.equal((e.cause as NodeJS.ErrnoException).code, 'ENOENT');
    assert.deepEqual(await p.close(), { code: null, signal: null });
  });

  test('close stops a child that ignores stdin and SIGTERM, with its whole process group', async () => {
    // The shell ignores SIGTERM; its background sleep is a grandchild in the same group.
    const p = track(
      spawnPeer('sh', ['-c', 'trap "" TERM; sleep 30 & echo $! >&2; wait; wait'], { stderr: 'ignore', graceMs: 100 }),
    );
    const pid = p.pid;
    assert.ok(pid !== undefined);
    await sleep(200);
    const grandchild = Number(p.stderrTail().trim());
    assert.ok(grandchild > 0 && alive(grandchild), `grandchild ${grandchild}`);
    // Made just before close(): written, never answered, rejected once the child is gone.
    const pending = rejectsWith(p.request('data', 'x', { timeoutMs: 0 }), 'CLOSED');
    const started = performance.now();
    const status = await p.close({ graceMs: 100 });
    assert.deepEqual(status, { code: null, signal: 'SIGKILL' });
    assert.ok(performance.now() - started >= 150, 'waited through both grace periods');
    assert.match((await pending).message, /request `data` #1 cannot be answered: the peer `sh` was closed/);
    assert.equal(alive(pid), false, 'the child is gone');
    assert.ok(await gone(grandchild), 'its process group is gone');
  });

  test('close waits for requests already sent while the child drains its stdin', async () => {
    const p = track(nodeChild(`setTimeout(() => write({ msg_type: 'ack', data: m.data, id: m.id }), 100);`));
    const pending = p.request('data', 'x');
    await sleep(20); // written
    const closed = p.close();
    await rejectsWith(p.request('data', 'y'), 'CLOSED');
    assert.deepEqual(await pending, ack('x', 1));
    assert.deepEqual(await closed, { code: 0, signal: null });
  });

  test('the stderr tail skips a character cut at its 4 KiB start, as the Rust host does', async () => {
    // 3000 two-byte characters and a `!`: the last 4096 bytes start with the second byte of one.
    const p = track(
      spawnPeer(process.execPath, ['-e', `process.stderr.write('é'.repeat(3000) + '!', () => process.exit(2))`], { stderr: 'ignore' }),
    );
    const e = await rejectsWith(p.request('data', 'x'), 'PEER_EXITED');
    assert.equal(e.stderrTail, `${'é'.repeat(2047)}!`);
    assert.equal(p.stderrTail(), `${'é'.repeat(2047)}!`);
  });

  test('close with graceMs Infinity (or beyond setTimeout\'s range) waits for the exit, never kills at once', async () => {
    const warnings: Error[] = [];
    const onWarning = (w: Error): void => void warnings.push(w);
    process.on('warning', onWarning);
    try {
      for (const graceMs of [Infinity, 2 ** 31]) {
        // Exits by itself 300 ms after its stdin closes.
        const p = track(spawnPeer('sh', ['-c', 'read x; sleep 0.3'], { graceMs }));
        await sleep(50);
        assert.deepEqual(await p.close(), { code: 0, signal: null }, `graceMs ${graceMs}`);
      }
      const p = track(spawnPeer('sh', ['-c', 'read x; sleep 0.3']));
      await sleep(50);
      assert.deepEqual(await p.close({ graceMs: Infinity }), { code: 0, signal: null });
    } finally {
      process.off('warning', onWarning);
    }
    assert.deepEqual(warnings.map((w) => w.name), [], 'no TimeoutOverflowWarning');
  });

  test('close also stops what the child left in its group holding the pipes', async () => {
    // The child exits at stdin's end; its background sleep keeps stdout and stderr open.
    const p = track(spawnPeer('sh', ['-c', 'sleep 30 & echo $! >&2; read x'], { stderr: 'ignore', graceMs: 2000 }));
    assert.ok(await until(() => p.stderrTail().trim().length > 0));
    const grandchild = Number(p.stderrTail().trim());
    assert.ok(grandchild > 0 && alive(grandchild), `grandchild ${grandchild}`);
    const started = performance.now();
    assert.deepEqual(await p.close(), { code: 1, signal: null });
    assert.ok(performance.now() - started < 1000, 'no grace period waited: the child itself exited');
    assert.ok(await gone(grandchild), 'the process left in its group is gone');
  });

  test('Node exits by itself after close(), or after the child exits, whatever holds the pipes', { timeout: 30_000 }, () => {
    // A grandchild in its own session (out of reach of the group's signals) keeps the pipes
    // open for 30 s; Node must not wait for it.
    const index = path.join(REPO_ROOT, 'ts-app', 'dist', 'index.js');
    for (const close of [true, false]) {
      const script = `
        import { spawnPeer } from ${JSON.stringify(index)};
        const p = spawnPeer('sh', ['-c', 'setsid sleep 30 & echo $! >&2; read x; exit 3'], { stderr: 'ignore', graceMs: 200 });
        while (p.stderrTail().trim() === '') await new Promise((r) => setTimeout(r, 10));
        console.log(p.stderrTail().trim());
        ${close ? 'await p.close();' : "p.notify('data', 'x'); await p.request('data', 'x').catch((e) => console.log(e.code));"}`;
      const started = performance.now();
      const run = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 20_000 });
      const elapsed = performance.now() - started;
      const sleeper = Number(run.stdout.split('\n')[0]);
      if (sleeper > 0) {
        try {
          process.kill(sleeper, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      assert.equal(run.status, 0, `close: ${close}; stdout ${run.stdout}; stderr ${run.stderr}`);
      assert.ok(elapsed < 10_000, `close: ${close}: Node exited after ${Math.round(elapsed)} ms`);
    }
  });

  test('a command that cannot start synchronously (ENOTDIR) rejects with PEER_EXITED too', async () => {
    const command = path.join(REPO_ROOT, 'Cargo.toml', 'not-a-dir');
    const p = track(spawnPeer(command));
    assert.equal(p.pid, undefined);
    const e = await rejectsWith(p.request('data', 'x'), 'PEER_EXITED');
    assert.match(e.message, /`.*not-a-dir` could not be started \(spawn ENOTDIR\); check the command/);
    assert.equal((e.cause as NodeJS.ErrnoException).code, 'ENOTDIR');
    throwsWith(() => p.notify('data', 'x'), 'PEER_EXITED');
    assert.deepEqual(await p.close(), { code: null, signal: null });
  });

  test('rejects bad options with INVALID_ARGUMENT before starting anything', () => {
    throwsWith(() => spawnPeer(SERVE_BIN, [], { maxInFlight: 0 }), 'INVALID_ARGUMENT');
    throwsWith(() => spawnPeer(SERVE_BIN, [], { timeoutMs: -5 }), 'INVALID_ARGUMENT');
    const grace = throwsWith(() => spawnPeer(SERVE_BIN, [], { graceMs: -1 }), 'INVALID_ARGUMENT');
    assert.equal(
      grace.message,
      'spawnPeer: option `graceMs` must be a non-negative number of milliseconds (0: do not wait, escalate at once; Infinity: wait for the exit, never escalate), got -1',
    );
    throwsWith(() => spawnPeer(''), 'INVALID_ARGUMENT');
    const e = throwsWith(() => spawnPeer('sh', ['a\0b']), 'INVALID_ARGUMENT');
    assert.match(e.message, /spawnPeer: .*null bytes/);
  });
});
