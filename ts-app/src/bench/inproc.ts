// In-process scenarios: 1 (the TypeScript responder called directly), 2 (FFI sync), 3 (FFI
// async), the napi `noop()` floor (7), the JS side of the serialization costs, and Rust calling
// JavaScript (`rust-js.*`: the demo's direction in-process, beside its Rust-only floor).

import { createRequire } from 'node:module';
import path from 'node:path';
import { performance } from 'node:perf_hooks';

import { Responder as JsResponder } from '../protocol.js';
import { ackPrefix, type Ctx, FIXED_ID, interleavedAt, MAX_IN_FLIGHT_BYTES, PAYLOADS, payload, requestPrefix, throughput, WINDOWS } from './common.js';
import { promiseRun, type RunOut, type SyncBody, syncRecord, timeSync, timeWindowed, windowedRecord } from './measure.js';
import type { TimingRecord } from './schema.js';
import { summarize } from './stats.js';

/** A message object as the responders take and give them (wire field names). */
interface Msg {
  msg_type: string;
  data: string;
  id?: number;
}

/** The part of the addon's API the bench uses (declared here so the driver type-checks
 * whether or not the addon has been built). */
export interface NativeResponder {
  handle(msg: Msg): Msg[];
  handleLine(line: string): string;
  /** The addon returns a string (cheaper to create than a Buffer); the TS responder a Buffer. */
  handleBuffer(bytes: Uint8Array): Buffer | string;
  handleLineAsync(line: string): Promise<string>;
  readonly done: boolean;
}
/** What the addon calls back: a function, or an object with `handleLine` (called as a method). */
type JsCallee = ((line: string) => string) | { handleLine(line: string): string };
export interface NativeAddon {
  Responder: new (options?: { exitAfter?: number; name?: string }) => NativeResponder;
  noop(): void;
  /** Rust calls `callee` `count` times on this thread; the replies' total UTF-8 length. */
  callJsSync(callee: JsCallee, line: string, count: number): number;
  /** The same Rust loop calling the core's responder instead: the floor of `callJsSync`. */
  callRustSync(line: string, count: number): number;
  /** `window` Rust threads call `callee` through a ThreadsafeFunction, `count` calls in all. */
  timeJsThread(callee: JsCallee, line: string, count: number, window: number): Promise<{ latencies: Float64Array; bytes: number }>;
}

/** Loads `native/` from the repository root, or says why it cannot. */
export function loadAddon(root: string): { addon: NativeAddon } | { why: string } {
  try {
    const require = createRequire(import.meta.url);
    const addon = require(path.join(root, 'native')) as NativeAddon;
    if (typeof addon.noop !== 'function' || typeof addon.Responder !== 'function') {
      return { why: 'native addon not built (native/ loads but has no Responder/noop)' };
    }
    return { addon };
  } catch (e) {
    const first = String(e instanceof Error ? e.message : e).split('\n')[0] ?? '';
    return { why: `native addon not built (npm run build -w native): ${first}` };
  }
}

/** The exact request line and reply an in-process call makes and expects. */
function lines(size: number): { data: string; line: string; reply: string; replyData: string } {
  const data = payload(size);
  const line = `${requestPrefix(data)}${FIXED_ID}}`;
  return { data, line, reply: `${ackPrefix(data)}${FIXED_ID}}\n`, replyData: `Acknowledged: ${data}` };
}

const showStr = (s: unknown): string => JSON.stringify(String(s).slice(0, 120));
/** One ack with the right id and data. `full` false compares the data's length only: the JS
 * responder's reply data is a lazy concatenation (a V8 cons string), and comparing its contents
 * flattens it, a copy of the whole payload that would dwarf the call being measured. */
const isAck = (r: Msg[], data: string, full: boolean): boolean =>
  r.length === 1 &&
  r[0]?.msg_type === 'ack' &&
  r[0].id === FIXED_ID &&
  (full ? r[0].data === data : r[0].data.length === data.length);

export interface SyncScenario {
  path: string;
  scenario: string;
  kind: 'roundtrip' | 'cost';
  label: string;
  native: boolean;
  /** Payload-independent scenarios (the noop floor) run once, recorded with payload 0. */
  once?: boolean;
  make: (size: number, addon: NativeAddon | undefined) => SyncBody<unknown>;
}

const jsResponder = (): JsResponder => new JsResponder({ exitAfter: 0 });
const nativeResponder = (addon: NativeAddon | undefined): NativeResponder => {
  if (addon === undefined) throw new Error('native addon not loaded');
  return new addon.Responder({ exitAfter: 0 });
};

// Each `run` is its own function literal so V8 keeps each loop monomorphic.
const SYNC: SyncScenario[] = [
  {
    path: 'js.handleLine',
    scenario: '1',
    kind: 'roundtrip',
    label: 'JS responder handleLine',
    native: false,
    make: (size) => {
      const r = jsResponder();
      const { line, reply } = lines(size);
      return {
        run: (b, out) => {
          for (let j = 0; j < b; j++) out[j] = r.handleLine(line);
        },
        check: (x) => x === reply,
        show: showStr,
      };
    },
  },
  {
    path: 'js.handle',
    scenario: '1',
    kind: 'roundtrip',
    label: 'JS responder handle(object)',
    native: false,
    make: (size) => {
      const r = jsResponder();
      const { data, replyData } = lines(size);
      const msg: Msg = { msg_type: 'data', data, id: FIXED_ID };
      return {
        run: (b, out) => {
          for (let j = 0; j < b; j++) out[j] = r.handle(msg);
        },
        check: (x, j) => isAck(x as Msg[], replyData, j === 0),
        show: (x) => showStr(JSON.stringify(x)),
      };
    },
  },
  {
    path: 'js.handleBuffer',
    scenario: '1',
    kind: 'roundtrip',
    label: 'JS responder handleBuffer',
    native: false,
    make: (size) => {
      const r = jsResponder();
      const { line, reply } = lines(size);
      const input = Buffer.from(line);
      const want = Buffer.from(reply);
      return {
        run: (b, out) => {
          for (let j = 0; j < b; j++) out[j] = r.handleBuffer(input);
        },
        check: (x) => (typeof x === 'string' ? x === reply : Buffer.isBuffer(x) && x.equals(want)),
        show: (x) => showStr(String(x)),
      };
    },
  },
  {
    path: 'ffi.handleLine',
    scenario: '2',
    kind: 'roundtrip',
    label: 'FFI handleLine (string)',
    native: true,
    make: (size, addon) => {
      const r = nativeResponder(addon);
      const { line, reply } = lines(size);
      return {
        run: (b, out) => {
          for (let j = 0; j < b; j++) out[j] = r.handleLine(line);
        },
        check: (x) => x === reply,
        show: showStr,
      };
    },
  },
  {
    path: 'ffi.handle',
    scenario: '2',
    kind: 'roundtrip',
    label: 'FFI handle(object)',
    native: true,
    make: (size, addon) => {
      const r = nativeResponder(addon);
      const { data, replyData } = lines(size);
      const msg: Msg = { msg_type: 'data', data, id: FIXED_ID };
      return {
        run: (b, out) => {
          for (let j = 0; j < b; j++) out[j] = r.handle(msg);
        },
        check: (x) => isAck(x as Msg[], replyData, true),
        show: (x) => showStr(JSON.stringify(x)),
      };
    },
  },
  {
    path: 'ffi.handleBuffer',
    scenario: '2',
    kind: 'roundtrip',
    label: 'FFI handleBuffer (bytes)',
    native: true,
    make: (size, addon) => {
      const r = nativeResponder(addon);
      const { line, reply } = lines(size);
      const input = Buffer.from(line);
      const want = Buffer.from(reply);
      return {
        run: (b, out) => {
          for (let j = 0; j < b; j++) out[j] = r.handleBuffer(input);
        },
        check: (x) => (typeof x === 'string' ? x === reply : Buffer.isBuffer(x) && x.equals(want)),
        show: (x) => showStr(String(x)),
      };
    },
  },
  {
    path: 'rust-js.sync',
    scenario: 'rust-js',
    kind: 'roundtrip',
    label: 'Rust → JS sync callback (JS responder)',
    native: true,
    make: (size, addon) => {
      if (addon === undefined) throw new Error('native addon not loaded');
      const a = addon;
      const r = jsResponder();
      const { line, reply } = lines(size);
      return {
        // One crossing into Rust per batch; `b` crossings back, each answered by the JS responder.
        run: (b, out) => {
          const total = a.callJsSync(r, line, b);
          for (let j = 0; j < b; j++) out[j] = total / b;
        },
        check: (x) => x === reply.length,
        show: showStr,
      };
    },
  },
  {
    path: 'floor.rust-call',
    scenario: 'rust-js',
    kind: 'roundtrip',
    label: 'floor: Rust loop → Rust responder',
    native: true,
    make: (size, addon) => {
      if (addon === undefined) throw new Error('native addon not loaded');
      const a = addon;
      const { line, reply } = lines(size);
      return {
        run: (b, out) => {
          const total = a.callRustSync(line, b);
          for (let j = 0; j < b; j++) out[j] = total / b;
        },
        check: (x) => x === reply.length,
        show: showStr,
      };
    },
  },
  {
    path: 'floor.ffi-noop',
    scenario: '7',
    kind: 'roundtrip',
    label: 'floor: napi noop()',
    native: true,
    once: true,
    make: (_size, addon) => {
      if (addon === undefined) throw new Error('native addon not loaded');
      const a = addon;
      return {
        run: (b, out) => {
          for (let j = 0; j < b; j++) out[j] = a.noop();
        },
        check: (x) => x === undefined,
        show: showStr,
      };
    },
  },
  {
    path: 'cost.js-json',
    scenario: 'cost',
    kind: 'cost',
    label: 'JS JSON.parse request + JSON.stringify reply',
    native: false,
    make: (size) => {
      const { line, reply } = lines(size);
      return {
        run: (b, out) => {
          for (let j = 0; j < b; j++) {
            const m = JSON.parse(line) as Msg;
            out[j] = JSON.stringify({ msg_type: 'ack', data: `Acknowledged: ${m.data}`, id: m.id }) + '\n';
          }
        },
        check: (x) => x === reply,
        show: showStr,
      };
    },
  },
  {
    path: 'cost.js-parse',
    scenario: 'cost',
    kind: 'cost',
    label: 'JS JSON.parse of the request',
    native: false,
    make: (size) => {
      const { line, data } = lines(size);
      return {
        run: (b, out) => {
          for (let j = 0; j < b; j++) out[j] = JSON.parse(line);
        },
        check: (x) => (x as Msg).data === data,
        show: (x) => showStr(JSON.stringify(x)),
      };
    },
  },
  {
    path: 'cost.js-stringify',
    scenario: 'cost',
    kind: 'cost',
    label: 'JS JSON.stringify of the reply',
    native: false,
    make: (size) => {
      const { reply, replyData } = lines(size);
      const msg: Msg = { msg_type: 'ack', data: replyData, id: FIXED_ID };
      const want = reply.slice(0, -1);
      return {
        run: (b, out) => {
          for (let j = 0; j < b; j++) out[j] = JSON.stringify(msg);
        },
        check: (x) => x === want,
        show: showStr,
      };
    },
  },
  {
    path: 'cost.js-utf8',
    scenario: 'cost',
    kind: 'cost',
    label: 'JS string ⇄ UTF-8: encode request, decode reply',
    native: false,
    make: (size) => {
      const { line, reply } = lines(size);
      const replyBytes = Buffer.from(reply);
      return {
        run: (b, out) => {
          for (let j = 0; j < b; j++) {
            if (Buffer.from(line, 'utf8').length > 0) out[j] = replyBytes.toString('utf8');
          }
        },
        check: (x) => x === reply,
        show: showStr,
      };
    },
  },
];

/** Every selected synchronous in-process scenario, each payload. */
export function runSync(ctx: Ctx, addon: NativeAddon | undefined, emit: (r: TimingRecord) => void): void {
  for (const s of SYNC) {
    // `ffi.handle` (window 1 only) is measured interleaved with `lib.inproc-sync`, in `paired.ts`.
    if (!ctx.selected(s.path) || (s.native && addon === undefined) || interleavedAt(s.path, 1)) continue;
    for (const size of s.once === true ? [0] : PAYLOADS) {
      const timed = timeSync(ctx.budget, s.make(size, addon));
      emit(syncRecord(ctx, s, s.kind, size, timed));
    }
  }
}

export const SYNC_PATHS = SYNC.map((s) => s.path);
/** One synchronous scenario by its path (for `paired.ts`). */
export const syncScenario = (path: string): SyncScenario | undefined => SYNC.find((s) => s.path === path);
export const NATIVE_PATHS = [...SYNC.filter((s) => s.native).map((s) => s.path), 'ffi.handleLineAsync', 'rust-js.thread'];

/** Scenario 3: `handleLineAsync` with 1, 16 and 256 calls in flight. */
export async function runAsync(ctx: Ctx, addon: NativeAddon, emit: (r: TimingRecord) => void): Promise<void> {
  const path = 'ffi.handleLineAsync';
  if (!ctx.selected(path)) return;
  for (const size of PAYLOADS) {
    const { line, reply } = lines(size);
    const r = new addon.Responder({ exitAfter: 0 });
    for (const window of WINDOWS) {
      if (window * size > MAX_IN_FLIGHT_BYTES) continue;
      const timed = await timeWindowed(ctx.budget, window, (count) => asyncRun(r, line, reply, window, count));
      emit(windowedRecord(ctx, { scenario: '3', path, label: 'FFI handleLineAsync (Promise)' }, size, window, timed));
    }
  }
}

/** `count` async calls, `window` in flight: each completion launches the next call. */
function asyncRun(r: NativeResponder, line: string, reply: string, window: number, count: number): Promise<RunOut> {
  return promiseRun(
    { call: () => r.handleLineAsync(line), check: (x) => x === reply, show: (x) => `handleLineAsync returned ${showStr(x)}` },
    window,
    count,
  );
}

/** Rust → JS from Rust threads: `window` threads, each blocking on a ThreadsafeFunction call
 * to the JS responder for each reply. Latency is each call as its Rust thread saw it. */
export async function runRustJsThread(ctx: Ctx, addon: NativeAddon, emit: (r: TimingRecord) => void): Promise<void> {
  const path = 'rust-js.thread';
  if (!ctx.selected(path)) return;
  const r = jsResponder();
  for (const size of PAYLOADS) {
    const { line, reply } = lines(size);
    for (const window of WINDOWS) {
      if (window * size > MAX_IN_FLIGHT_BYTES) continue;
      const timed = await timeWindowed(ctx.budget, window, async (count) => {
        const t0 = performance.now();
        const { latencies, bytes } = await addon.timeJsThread(r, line, count, window);
        const elapsedNs = (performance.now() - t0) * 1e6;
        if (bytes !== count * reply.length || latencies.length !== count) {
          throw new Error(`timeJsThread: ${latencies.length} calls, ${bytes} reply bytes; want ${count} and ${count * reply.length}`);
        }
        return { latencies, elapsedNs };
      });
      emit(windowedRecord(ctx, { scenario: 'rust-js', path, label: 'Rust → JS from Rust threads (ThreadsafeFunction)' }, size, window, timed));
    }
  }
}
