// The two timing loops every scenario uses: batched synchronous calls, and closed runs of
// `count` messages with a window in flight (pipes, async FFI), each warmed up first.

import { performance } from 'node:perf_hooks';

import { type Budget, type Ctx, throughput } from './common.js';
import type { TimingRecord } from './schema.js';
import { summarize } from './stats.js';

/** Sub-microsecond calls are timed in batches of about this long, so one clock read
 * (~40 ns for `performance.now()` here) stays around 1% of a sample. */
const BATCH_TARGET_NS = 4_000;

/** A synchronous scenario: `run(b, out)` makes `b` calls storing each result in `out`; `check`
 * says whether one result is right. It runs on every result, outside the timed region; `j` is
 * the result's index in its batch (bodies whose full check is costly, such as comparing a
 * lazily concatenated 1 MiB string, may compare contents fully only at `j === 0`). */
export interface SyncBody<R> {
  run: (b: number, out: R[]) => void;
  check: (result: R, j: number) => boolean;
  show: (result: R) => string;
}

export interface SyncTimed {
  samples: Float64Array;
  batch: number;
  warmup: number;
  elapsedNs: number;
  checked: number;
}

/** Times a synchronous body: warm-up for `warmMs` (which also estimates one call), then
 * batches of calls for about `measureMs`. Every result is checked. */
export function timeSync<R>(budget: Budget, body: SyncBody<R>): SyncTimed {
  const out: R[] = [];
  const verify = (b: number): void => {
    for (let j = 0; j < b; j++) {
      const r = out[j] as R;
      if (!body.check(r, j)) throw new Error(`wrong result: ${body.show(r)}`);
    }
  };
  // Warm-up, growing the batch while it is shorter than the target. One call's cost is the
  // median over the last warm-up batches, so one GC pause cannot skew the run's length.
  let warmup = 0;
  let b = 1;
  const recent: number[] = [];
  const start = performance.now();
  while (performance.now() - start < budget.warmMs || warmup < 3) {
    const t = performance.now();
    body.run(b, out);
    const dt = (performance.now() - t) * 1e6;
    verify(b);
    warmup += b;
    recent.push(Math.max(dt / b, 1));
    if (recent.length > 9) recent.shift();
    if (dt < BATCH_TARGET_NS) b = Math.min(b * 2, 4096);
  }
  const perCall = [...recent].sort((x, y) => x - y)[Math.floor(recent.length / 2)] ?? 1;
  const batch = Math.min(Math.max(1, Math.ceil(BATCH_TARGET_NS / perCall)), 4096);
  const n = clamp(Math.floor((budget.measureMs * 1e6) / (perCall * batch)), budget.minN, budget.maxN);
  // The measurement also stops once twice its budget of wall time (checks included) has
  // passed, provided it has `minN` samples.
  const deadline = performance.now() + 2 * budget.measureMs;
  const all = new Float64Array(n);
  let elapsedNs = 0;
  let i = 0;
  for (; i < n && (i < budget.minN || performance.now() < deadline); i++) {
    const t0 = performance.now();
    body.run(batch, out);
    const dt = (performance.now() - t0) * 1e6;
    elapsedNs += dt;
    all[i] = dt / batch;
    verify(batch);
  }
  const samples = all.subarray(0, i);
  return { samples, batch, warmup, elapsedNs, checked: i * batch };
}

/** One closed run: `count` messages, every reply checked, per-message latency in id order. */
export interface RunOut {
  latencies: Float64Array;
  elapsedNs: number;
}

export interface WindowTimed {
  latencies: Float64Array;
  elapsedNs: number;
  warmup: number;
  n: number;
}

/** Warms up with runs of doubling length until `warmMs` has passed and the rate has settled
 * (two runs in a row within 20%: a fresh child is still compiling its hot code), or five times
 * `warmMs` has passed (and at least two runs were made); then sizes one measured run from the last rate (at least two windows'
 * worth of messages). */
export async function timeWindowed(
  budget: Budget,
  window: number,
  run: (count: number) => Promise<RunOut>,
): Promise<WindowTimed> {
  let count = Math.min(Math.max(2 * window, 8), Math.max(budget.maxN, 2 * window));
  let warmup = 0;
  let warmNs = 0;
  let perMsg = 1;
  let previous = Infinity;
  for (let runs = 1; ; runs++) {
    const r = await run(count);
    warmup += count;
    warmNs += r.elapsedNs;
    perMsg = Math.max(r.elapsedNs / count, 1);
    const settled = Math.abs(perMsg - previous) <= 0.2 * previous;
    previous = perMsg;
    if (count >= budget.maxN) break;
    if (runs >= 2 && warmNs >= budget.warmMs * 1e6 && (settled || warmNs >= 5 * budget.warmMs * 1e6)) break;
    count = Math.min(count * 2, budget.maxN);
  }
  const lo = Math.max(budget.minN, 2 * window);
  const n = clamp(Math.floor((budget.measureMs * 1e6) / perMsg), lo, Math.max(budget.maxN, lo));
  const r = await run(n);
  return { latencies: r.latencies, elapsedNs: r.elapsedNs, warmup, n };
}

/** A Promise-returning call kept `window` deep: `call(i)` starts call `i` (always in order
 * 0, 1, 2, …); `check` says whether its result is right. */
export interface WindowBody<R> {
  call: (i: number) => Promise<R>;
  check: (result: R, i: number) => boolean;
  show: (result: R) => string;
}

/** `count` calls, `window` in flight: each completion (checked) launches the next call.
 * Latency is call → its `then` callback. */
export function promiseRun<R>(body: WindowBody<R>, window: number, count: number): Promise<RunOut> {
  return new Promise((resolve, reject) => {
    const latencies = new Float64Array(count);
    const sent = new Float64Array(count);
    let next = 0;
    let done = 0;
    let failed = false;
    const fail = (e: unknown): void => {
      if (failed) return;
      failed = true;
      reject(e instanceof Error ? e : new Error(String(e)));
    };
    const t0 = performance.now();
    const launch = (): void => {
      const i = next++;
      sent[i] = performance.now();
      let p: Promise<R>;
      try {
        p = body.call(i);
      } catch (e) {
        fail(e);
        return;
      }
      p.then((x) => {
        const t = performance.now();
        if (failed) return;
        if (!body.check(x, i)) {
          fail(new Error(`wrong reply to call ${i}: ${body.show(x)}`));
          return;
        }
        latencies[i] = (t - (sent[i] ?? t)) * 1e6;
        done++;
        if (next < count) launch();
        else if (done === count) resolve({ latencies, elapsedNs: (t - t0) * 1e6 });
      }, fail);
    };
    for (let k = 0; k < Math.min(window, count); k++) launch();
  });
}

function clamp(x: number, lo: number, hi: number): number {
  return Math.min(Math.max(x, lo), hi);
}

/** The record for one windowed timing of a Node-driven path (pipes and async FFI alike). */
export function windowedRecord(
  ctx: Ctx,
  p: { scenario: string; path: string; label: string },
  size: number,
  window: number,
  timed: WindowTimed,
): TimingRecord {
  return {
    kind: 'roundtrip',
    pass: ctx.pass,
    scenario: p.scenario,
    path: p.path,
    label: p.label,
    driver: 'node',
    payload: size,
    window,
    n: timed.n,
    samples: timed.n,
    warmup: timed.warmup,
    batch: 1,
    latency_ns: summarize(timed.latencies),
    throughput: throughput(timed.n, timed.elapsedNs, size),
    checked: timed.n,
  };
}

/** The record of a synchronous timing. */
export function syncRecord(
  ctx: Ctx,
  p: { scenario: string; path: string; label: string },
  kind: TimingRecord['kind'],
  size: number,
  timed: SyncTimed,
): TimingRecord {
  return {
    kind,
    pass: ctx.pass,
    scenario: p.scenario,
    path: p.path,
    label: p.label,
    driver: 'node',
    payload: size,
    window: 1,
    n: timed.checked,
    samples: timed.samples.length,
    warmup: timed.warmup,
    batch: timed.batch,
    latency_ns: summarize(timed.samples),
    throughput: throughput(timed.checked, timed.elapsedNs, size),
    checked: timed.checked,
  };
}
