// The library's scenarios (issue 9). `lib.*`: the `Peer` API (`spawnPeer` to the Rust `serve`,
// `inProcess()` over the addon) carrying the same `data` → `ack` as the raw paths, so that each
// ratio to a raw path is the library's own cost. `markdown.*`: real work, README-like documents
// rendered by markdown-it (the JS baseline) and by pulldown-cmark through every Rust path.
// `cost.lib-*`: the library's own steps, timed in-process, that "where the time goes" splits
// the library's extra time into.

import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

import MarkdownIt from 'markdown-it';

import { loadNativeAddon, NATIVE_PATH } from '../engine.js';
import { LineDecoder, type LineSink } from '../framing.js';
import { PeerCore } from '../peer/core.js';
import { encodeLine } from '../peer/encode.js';
import { inProcess, type InProcessPeer } from '../peer/in-process.js';
import { DEFAULT_TIMEOUT_MS, type PipePeer, spawnPeer } from '../peer/pipe.js';
import type { SyncPipePeer } from '../peer/sync.js';
import type { Encoding, Message, Peer } from '../peer/types.js';
import { parseEnvelope } from '../protocol.js';
import {
  ackPrefix,
  type Ctx,
  type Emit,
  type Fail,
  type Label,
  FIXED_ID,
  interleavedAt,
  MAX_IN_FLIGHT_BYTES,
  PAYLOADS,
  payload,
  requestPrefix,
  throughput,
  WINDOWS,
} from './common.js';
import { markdownDocument } from './docs.js';
import type { NativeAddon, NativeResponder } from './inproc.js';
import { promiseRun, type RunOut, type SyncBody, syncRecord, timeSync, timeWindowed, windowedRecord } from './measure.js';
import { CHILD_WARMUP_MESSAGES } from './pipe.js';
import type { TimingRecord } from './schema.js';
import { summarize } from './stats.js';

/** The nominal document sizes; each document is the largest run of whole sections that fits. */
export const MARKDOWN_SIZES = [1024, 64 * 1024] as const;
/** Windows of the markdown pipe: one at a time, and enough in flight to keep both CPUs busy. */
const MARKDOWN_PIPE_WINDOWS = [1, 16] as const;

/** Paths that need the addon (skipped with the FFI paths when it is not built). */
export const LIBRARY_NATIVE_PATHS = [
  'lib.inproc',
  'lib.inproc-sync',
  'lib.pipe-sync',
  'lib.pipe-sync-spin',
  'markdown.ffi',
  'markdown.inproc',
  'markdown.inproc-sync',
];
/** Every path this module runs. */
export const LIBRARY_PATHS = [
  'lib.pipe',
  ...LIBRARY_NATIVE_PATHS,
  'markdown.js',
  'markdown.pipe',
  'cost.lib-encode',
  'cost.lib-decode',
  'cost.lib-core',
];
/** Paths that spawn `rust-ts-ipc serve`. */
export const LIBRARY_SERVE_PATHS = ['lib.pipe', 'lib.pipe-sync', 'lib.pipe-sync-spin', 'markdown.pipe'];
/** `lib.pipe-sync-spin`'s budget (µs), both sides: `pipe.rust-rust-spin`'s, above an unpinned round trip between two spinners. */
const SYNC_SPIN_US = 50;


const show = (x: unknown): string => JSON.stringify(JSON.stringify(x)?.slice(0, 120) ?? String(x));


export const withNote = (r: TimingRecord, note: string | undefined): TimingRecord => (note === undefined ? r : { ...r, note });

/**
 * A peer and the count of requests made on it. A peer numbers its requests 1, 2, 3, … in call
 * order, so the reply to the k-th request must carry id k: that checks the library's id
 * matching end to end, not only the reply's contents.
 */
export class Counted<P extends Peer<unknown>> {
  issued = 0;
  constructor(readonly peer: P) {}

  /** `count` requests, `window` in flight, every reply checked for its id and by `want`. */
  async run(msgType: string, data: unknown, want: (m: Message<unknown>) => boolean, window: number, count: number): Promise<RunOut> {
    const base = this.issued;
    const r = await promiseRun<Message<unknown>>(
      {
        call: () => {
          this.issued++;
          return this.peer.request(msgType, data);
        },
        check: (m, i) => m.id === base + i + 1 && want(m),
        show,
      },
      window,
      count,
    );
    this.checkQuiet();
    return r;
  }

  /** Fails the path if the peer saw anything but the replies it was waiting for. */
  checkQuiet(): void {
    const s = this.peer.stats();
    if (s.unsolicited !== 0 || s.lateRepliesDropped !== 0 || s.inFlight !== 0 || s.queued !== 0) {
      throw new Error(`the peer saw more than the replies asked for: ${JSON.stringify(s)}`);
    }
  }
}

/** A peer with `requestSync`: `inProcess()`, or `spawnPeer` in sync mode. */
type SyncPeer = Peer<unknown> & Pick<InProcessPeer<unknown>, 'requestSync'>;

/** A `requestSync` body: every reply must carry its request's id and pass `want`. */
export function syncRequests(
  counted: Counted<SyncPeer>,
  msgType: string,
  data: unknown,
  want: (m: Message<unknown>) => boolean,
): SyncBody<Message<unknown>> {
  const peer = counted.peer;
  let seen = counted.issued;
  return {
    run: (b, out) => {
      for (let j = 0; j < b; j++) out[j] = peer.requestSync(msgType, data);
      counted.issued += b;
    },
    // Every result is checked once, in call order.
    check: (m) => m.id === ++seen && want(m),
    show,
  };
}

/** The labels of the library's paths that `paired.ts` also measures (window 1). */
export const LIB_PIPE = { scenario: 'lib', path: 'lib.pipe', label: 'library: spawnPeer(serve).request' };
export const LIB_INPROC_SYNC = { scenario: 'lib', path: 'lib.inproc-sync', label: 'library: inProcess().requestSync' };

export const isAck = (replyData: string) => (m: Message<unknown>) => m.msg_type === 'ack' && m.data === replyData;
const isHtml = (html: string) => (m: Message<unknown>) => m.msg_type === 'html' && m.data === html;

/** Says whether `inProcess()` loads the very addon the bench loaded; a note for the records if not. */
export function inProcessNote(root: string, addon: NativeAddon): string | undefined {
  const theirs = loadNativeAddon();
  if ('addon' in theirs && (theirs.addon as unknown) === addon) return undefined;
  return (
    `inProcess() loads the addon from ${NATIVE_PATH}, not the bench's ${path.join(root, 'native')}` +
    ` (${'why' in theirs ? theirs.why : 'a different module'}); measured what inProcess() loads`
  );
}

/** A spawned `serve` child (in `encoding`), warmed up like the raw pipe paths' children. */
export async function spawnServe(serveBin: string, encoding: Encoding = 'json'): Promise<Counted<PipePeer<unknown>>> {
  const peer = new Counted<PipePeer<unknown>>(spawnPeer(serveBin, encoding === 'json' ? ['serve', '--exit-after', '0'] : ['serve', '--encoding', encoding, '--exit-after', '0'], {
      encoding,
    }),
  );
  const small = payload(64);
  const want = isAck(`Acknowledged: ${small}`);
  try {
    await peer.run('data', small, want, 1, CHILD_WARMUP_MESSAGES / 2);
    await peer.run('data', small, want, 16, CHILD_WARMUP_MESSAGES / 2);
  } catch (e) {
    // A child that fails its warm-up is not left running (it would keep the driver alive).
    await peer.peer.close();
    throw e;
  }
  return peer;
}

/**
 * CPU time (user + system) of every thread of process `pid` so far, in ns, from
 * `/proc/<pid>/task/<tid>/schedstat` (its first field); undefined where there is no procfs.
 */
export function cpuNs(pid: number | 'self'): number | undefined {
  try {
    const dir = `/proc/${pid}/task`;
    let sum = 0;
    for (const task of readdirSync(dir)) {
      try {
        sum += Number(readFileSync(`${dir}/${task}/schedstat`, 'utf8').split(' ')[0]);
      } catch {
        // A thread that ended meanwhile.
      }
    }
    return sum;
  } catch {
    return undefined;
  }
}

/** `requestSync` to a `serve` child whose pipes the addon reads (`lib.pipe-sync`, `-spin`), with CPU per message. */
async function runPipeSync(ctx: Ctx, serveBin: string, spinUs: number, emit: Emit): Promise<void> {
  const p = {
    scenario: 'lib',
    path: spinUs === 0 ? 'lib.pipe-sync' : 'lib.pipe-sync-spin',
    label:
      spinUs === 0
        ? "library: spawnPeer(serve, { mode: 'sync' }).requestSync"
        : `library: spawnPeer(serve --spin-us ${spinUs}, { mode: 'sync', spinUs: ${spinUs} }).requestSync, both sides spinning`,
  };
  // With spin, `serve` spins too (as in `pipe.rust-rust-spin`): a wake-up saved on each side.
  const args = ['serve', '--exit-after', '0', ...(spinUs === 0 ? [] : ['--spin-us', String(spinUs)])];
  const sync: SyncPipePeer<unknown> = spawnPeer(serveBin, args, { mode: 'sync', spinUs });
  const peer = new Counted<SyncPeer>(sync);
  try {
    const small = payload(64);
    const warm = syncRequests(peer, 'data', small, isAck(`Acknowledged: ${small}`));
    const out: Message<unknown>[] = [];
    warm.run(CHILD_WARMUP_MESSAGES, out);
    if (!out.every((m, j) => warm.check(m, j))) throw new Error('a warm-up reply was wrong');
    for (const size of PAYLOADS) {
      const data = payload(size);
      const before = { parent: cpuNs('self'), child: cpuNs(sync.pid ?? 0), spin: sync.spinStats() };
      const timed = timeSync(ctx.budget, syncRequests(peer, 'data', data, isAck(`Acknowledged: ${data}`)));
      const after = { parent: cpuNs('self'), child: cpuNs(sync.pid ?? 0), spin: sync.spinStats() };
      peer.checkQuiet();
      const record = syncRecord(ctx, p, 'roundtrip', size, timed);
      // Warm-up and measurement run the same calls: CPU per message over both.
      const calls = timed.warmup + timed.checked;
      if (before.parent !== undefined && after.parent !== undefined && before.child !== undefined && after.child !== undefined) {
        const per = (ns: number): number => Math.round((ns / calls) * 10) / 10;
        const parent = per(after.parent - before.parent);
        const child = per(after.child - before.child);
        record.cpu_ns_per_msg = { parent, child, total: Math.round((parent + child) * 10) / 10 };
      }
      if (spinUs > 0) {
        record.spin = {
          budget_us: spinUs,
          parent_reads_spun: after.spin.spun - before.spin.spun,
          parent_spin_hits: after.spin.hits - before.spin.hits,
          ...(after.spin.disabled === null ? {} : { disabled: after.spin.disabled }),
        };
      }
      emit(record);
    }
  } finally {
    await sync.close();
  }
}

/** Runs every selected library and markdown scenario; each path fails on its own. */
export async function runLibrary(
  ctx: Ctx,
  serveBin: string,
  addon: NativeAddon | undefined,
  emit: Emit,
  fail: Fail,
): Promise<void> {
  const note = addon === undefined ? undefined : inProcessNote(ctx.root, addon);
  const guard = async (p: string, body: () => void | Promise<void>): Promise<void> => {
    if (!ctx.selected(p) || (LIBRARY_NATIVE_PATHS.includes(p) && addon === undefined)) return;
    try {
      await body();
    } catch (e) {
      fail(p, e);
    }
  };

  // The library's cost, next to the raw paths: the same data/ack at every payload and window.
  // `lib.inproc-sync` (window 1 only) and `lib.pipe` at window 1 are measured interleaved with
  // the paths they are compared with, in `paired.ts`.
  await guard('lib.inproc', async () => {
    const peer = new Counted(inProcess({ exitAfter: 0 }));
    for (const size of PAYLOADS) {
      const data = payload(size);
      const want = isAck(`Acknowledged: ${data}`);
      for (const window of WINDOWS) {
        if (window * size > MAX_IN_FLIGHT_BYTES) continue;
        const timed = await timeWindowed(ctx.budget, window, (count) => peer.run('data', data, want, window, count));
        const p = { scenario: 'lib', path: 'lib.inproc', label: 'library: inProcess().request (Promise)' };
        emit(withNote(windowedRecord(ctx, p, size, window, timed), note));
      }
    }
  });
  await guard('lib.pipe', async () => {
    const peer = await spawnServe(serveBin);
    try {
      for (const size of PAYLOADS) {
        const data = payload(size);
        const want = isAck(`Acknowledged: ${data}`);
        for (const window of WINDOWS) {
          if (window * size > MAX_IN_FLIGHT_BYTES || interleavedAt(LIB_PIPE.path, window)) continue;
          const timed = await timeWindowed(ctx.budget, window, (count) => peer.run('data', data, want, window, count));
          emit(windowedRecord(ctx, LIB_PIPE, size, window, timed));
        }
      }
    } finally {
      await peer.peer.close();
    }
  });
  await guard('lib.pipe-sync', () => runPipeSync(ctx, serveBin, 0, emit));
  await guard('lib.pipe-sync-spin', () => runPipeSync(ctx, serveBin, SYNC_SPIN_US, emit));
  for (const s of LIB_COSTS) {
    await guard(s.path, () => {
      for (const size of PAYLOADS) emit(syncRecord(ctx, s, 'cost', size, timeSync(ctx.budget, s.make(size))));
    });
  }

  // Real work: Markdown → HTML.
  const docs = MARKDOWN_SIZES.map((size) => markdownDocument(size));
  await guard('markdown.js', () => {
    const md = new MarkdownIt('commonmark');
    for (const doc of docs) {
      // markdown-it's HTML is not pulldown-cmark's (e.g. it escapes `"` in text): its own first
      // result is its reference.
      const html = md.render(doc);
      const timed = timeSync(ctx.budget, {
        run: (b, out) => {
          for (let j = 0; j < b; j++) out[j] = md.render(doc);
        },
        check: (x) => x === html,
        show,
      });
      const p = { scenario: 'markdown', path: 'markdown.js', label: 'markdown-it (commonmark preset), in JS' };
      emit(syncRecord(ctx, p, 'roundtrip', Buffer.byteLength(doc), timed));
    }
  });
  // One reference HTML per document for every Rust path: the addon's (pulldown-cmark). Without
  // the addon, `serve`'s first reply is the reference of the pipe path.
  let references: string[] | undefined;
  if (addon !== undefined) {
    try {
      references = docs.map((doc) => renderOnce(new addon.Responder({ exitAfter: 0 }), doc));
    } catch (e) {
      for (const p of ['markdown.ffi', 'markdown.inproc-sync', 'markdown.inproc', 'markdown.pipe']) if (ctx.selected(p)) fail(p, e);
      return;
    }
  }
  const refs = references;
  await guard('markdown.ffi', () => {
    if (addon === undefined || refs === undefined) return;
    const r = new addon.Responder({ exitAfter: 0 });
    docs.forEach((doc, k) => {
      const html = refs[k] ?? '';
      const msg = { msg_type: 'markdown', data: doc, id: FIXED_ID };
      const timed = timeSync<ReturnType<NativeResponder['handle']>>(ctx.budget, {
        run: (b, out) => {
          for (let j = 0; j < b; j++) out[j] = r.handle(msg);
        },
        check: (x) => x.length === 1 && x[0]?.msg_type === 'html' && x[0].id === FIXED_ID && x[0].data === html,
        show,
      });
      const p = { scenario: 'markdown', path: 'markdown.ffi', label: 'pulldown-cmark via FFI Responder.handle' };
      emit(syncRecord(ctx, p, 'roundtrip', Buffer.byteLength(doc), timed));
    });
  });
  await guard('markdown.inproc-sync', () => {
    if (refs === undefined) return;
    const peer = new Counted(inProcess({ exitAfter: 0 }));
    docs.forEach((doc, k) => {
      const timed = timeSync(ctx.budget, syncRequests(peer, 'markdown', doc, isHtml(refs[k] ?? '')));
      peer.checkQuiet();
      const p = { scenario: 'markdown', path: 'markdown.inproc-sync', label: 'pulldown-cmark via inProcess().requestSync' };
      emit(withNote(syncRecord(ctx, p, 'roundtrip', Buffer.byteLength(doc), timed), note));
    });
  });
  await guard('markdown.inproc', async () => {
    if (refs === undefined) return;
    const peer = new Counted(inProcess({ exitAfter: 0 }));
    for (const [k, doc] of docs.entries()) {
      const want = isHtml(refs[k] ?? '');
      const timed = await timeWindowed(ctx.budget, 1, (count) => peer.run('markdown', doc, want, 1, count));
      const p = { scenario: 'markdown', path: 'markdown.inproc', label: 'pulldown-cmark via inProcess().request' };
      emit(withNote(windowedRecord(ctx, p, Buffer.byteLength(doc), 1, timed), note));
    }
  });
  await guard('markdown.pipe', async () => {
    const peer = await spawnServe(serveBin);
    try {
      for (const [k, doc] of docs.entries()) {
        let html = refs?.[k];
        let pipeNote: string | undefined;
        if (html === undefined) {
          const first = await peer.peer.request('markdown', doc);
          peer.issued++;
          if (first.msg_type !== 'html' || typeof first.data !== 'string') throw new Error(`serve answered markdown with ${show(first)}`);
          html = first.data;
          pipeNote = "reference HTML: serve's own first reply (the addon is not built)";
        }
        const want = isHtml(html);
        for (const window of MARKDOWN_PIPE_WINDOWS) {
          const timed = await timeWindowed(ctx.budget, window, (count) => peer.run('markdown', doc, want, window, count));
          const p = { scenario: 'markdown', path: 'markdown.pipe', label: 'pulldown-cmark via spawnPeer(serve).request' };
          emit(withNote(windowedRecord(ctx, p, Buffer.byteLength(doc), window, timed), pipeNote));
        }
      }
    } finally {
      await peer.peer.close();
    }
  });
}

/** The addon's HTML for `doc`, checked to be an `html` reply (not an `error`). */
function renderOnce(r: NativeResponder, doc: string): string {
  const replies = r.handle({ msg_type: 'markdown', data: doc, id: FIXED_ID });
  const reply = replies[0];
  if (replies.length !== 1 || reply?.msg_type !== 'html' || reply.id !== FIXED_ID || !reply.data.startsWith('<h1>')) {
    throw new Error(`the addon answered a markdown document with ${show(replies)}`);
  }
  return reply.data;
}

/** The library's own steps for one `data` request and its `ack`, each timed in-process. */
const LIB_COSTS: (Label & { make: (size: number) => SyncBody<unknown> })[] = [
  {
    scenario: 'cost',
    path: 'cost.lib-encode',
    label: 'library: encode the request line (encodeLine)',
    make: (size) => {
      const data = payload(size);
      const want = `${requestPrefix(data)}${FIXED_ID}}\n`;
      return {
        run: (b, out) => {
          for (let j = 0; j < b; j++) out[j] = encodeLine('data', data, FIXED_ID);
        },
        check: (x) => x === want,
        show,
      };
    },
  },
  {
    scenario: 'cost',
    path: 'cost.lib-decode',
    label: 'library: read the reply (framing, UTF-8 check, JSON.parse, envelope check: LineDecoder.feed + parseEnvelope)',
    make: (size) => {
      const data = payload(size);
      const chunk = Buffer.from(`${ackPrefix(data)}${FIXED_ID}}\n`);
      const replyData = `Acknowledged: ${data}`;
      const decoder = new LineDecoder();
      let got: Message | string = '';
      // What the pipe peer does with each chunk it reads (peer/pipe.ts, `#readText`).
      const sink: LineSink = {
        text: (_line, text) => {
          got = (parseEnvelope(text) as Message | undefined) ?? 'parseEnvelope declined the reply';
        },
        frame: () => {
          got = 'the decoder took the slow path';
        },
      };
      return {
        run: (b, out) => {
          for (let j = 0; j < b; j++) {
            decoder.feed(chunk, sink);
            out[j] = got;
          }
        },
        check: (x) => {
          const m = x as Message;
          return m.msg_type === 'ack' && m.id === FIXED_ID && m.data === replyData;
        },
        show,
      };
    },
  },
  {
    scenario: 'cost',
    path: 'cost.lib-core',
    label: 'library: id, pending map, timeout deadline, Promise made and settled (PeerCore)',
    make: (size) => {
      const data = payload(size);
      const line = `${requestPrefix(data)}${FIXED_ID}}\n`;
      const reply: Message = { msg_type: 'ack', data: `Acknowledged: ${data}`, id: 0 };
      const core = new PeerCore();
      let answered = 0;
      return {
        // One request at a time, as at window 1, with spawnPeer's default timeout (a deadline
        // filed and marked settled per request under the core's one timer). The Promise's reaction (an `await` or `then`) is not
        // included: it runs later, as a microtask, and is part of the rest.
        run: (b, out) => {
          for (let j = 0; j < b; j++) {
            const id = core.nextId();
            const p = core.request('data', id, line, DEFAULT_TIMEOUT_MS, undefined);
            if (core.takeBatch(1) !== line) throw new Error('PeerCore did not hand back the queued line');
            reply.id = id;
            core.receive(reply);
            out[j] = p;
          }
          answered += b;
          const s = core.stats();
          if (s.answered !== answered || s.inFlight !== 0 || s.unsolicited !== 0) {
            throw new Error(`PeerCore lost track: ${JSON.stringify(s)} after ${answered} requests`);
          }
        },
        check: (x) => x instanceof Promise,
        show,
      };
    },
  },
];
