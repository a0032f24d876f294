// The two timing loops every scenario uses: batched synchronous calls, and closed runs of
// `count` messages with a window in flight (pipes, async FFI), each warmed up first.

import { performance } from 'node:perf_hooks';

import { type Budget, type Ctx, throughput } from './common.js';
import type { RoundRatio, TimingRecord } from './schema.js';
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

/** Runs `b` calls of `body` into `out` and checks every result. */
function verifier<R>(body: SyncBody<R>, out: R[]): (b: number) => void {
  return (b) => {
    for (let j = 0; j < b; j++) {
      const r = out[j] as R;
      if (!body.check(r, j)) throw new Error(`wrong result: ${body.show(r)}`);
    }
  };
}

/** What the warm-up of a synchronous body found: calls made, the batch size and how many batches the measurement takes. */
interface SyncWarm {
  warmup: number;
  batch: number;
  n: number;
}

/** Times a synchronous body: warm-up for `warmMs` (which also estimates one call), then
 * batches of calls for about `measureMs`. Every result is checked. */
export function timeSync<R>(budget: Budget, body: SyncBody<R>): SyncTimed {
  const out: R[] = [];
  const verify = verifier(body, out);
  const { warmup, batch, n } = warmSync(budget, body, out, verify);
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

/** The warm-up of `timeSync`: sizes the batch and the number of batches to measure. */
function warmSync<R>(budget: Budget, body: SyncBody<R>, out: R[], verify: (b: number) => void): SyncWarm {
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
  return { warmup, batch, n };
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
  const { warmup, n } = await warmWindowed(budget, window, run);
  const r = await run(n);
  return { latencies: r.latencies, elapsedNs: r.elapsedNs, warmup, n };
}

/** The warm-up of `timeWindowed`: messages spent, and how many the measurement takes. */
async function warmWindowed(
  budget: Budget,
  window: number,
  run: (count: number) => Promise<RunOut>,
): Promise<{ warmup: number; n: number }> {
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
  return { warmup, n };
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

// ---------------------------------------------------------------- interleaved measurement

/** Unmeasured samples' worth of calls (batches, or messages) that open every visit of an
 * interleaved measurement, in the same stretch of calls as the measured ones (one closed run):
 * the first calls after another path's block find cold caches or a child that slept and that
 * the scheduler may have moved, and the first messages of any closed run are slower (its child
 * slept in the gap before it), which a measurement of one path in one run never sees. With the
 * bench's pipe paths (64 B to 64 KiB) a visit's first message ran 1.2–3.9× the settled p50 and
 * the next three up to +33 %, +12 %, +8 %; a lead run of its own did not help (the measured
 * run's first message still ran 1.2–1.75×). Counted as warm-up. */
export const INTERLEAVE_LEAD = 4;
/** Rounds of an interleaved measurement at most, and the fewest samples a block holds (where
 * there are too few samples for that, fewer rounds). */
export const MAX_ROUNDS = 24;
const MIN_BLOCK = 4;

/** One visit of one side: its measured samples (the lead's left out), the time and calls they
 * took, and the calls of the unmeasured lead before them. */
interface Block {
  samples: Float64Array;
  elapsedNs: number;
  calls: number;
  leadCalls: number;
}

/** One path of an interleaved measurement: its warm-up (calls spent, samples wanted) and a
 * visit: `lead` unmeasured samples' worth of calls, then `k` measured samples, without a break
 * between them. */
export interface InterleaveSide {
  warm: () => Promise<{ warmup: number; n: number }>;
  block: (k: number, lead: number) => Promise<Block>;
  /** Calls per sample (1 but for batched synchronous sides). */
  batch: () => number;
}

/** The timing of one side of an interleaved measurement: the pooled samples of every round
 * (the record's distribution), and the p50 of each round's samples alone. */
export interface InterleavedTimed extends SyncTimed {
  rounds: number;
  roundP50: number[];
}

/** A synchronous body as a side: `timeSync`'s warm-up and batches, in blocks. */
export function syncSide<R>(budget: Budget, body: SyncBody<R>): InterleaveSide {
  const out: R[] = [];
  const verify = verifier(body, out);
  let batch = 1;
  return {
    warm: async () => {
      const w = warmSync(budget, body, out, verify);
      batch = w.batch;
      return { warmup: w.warmup, n: w.n };
    },
    block: async (k, lead) => {
      for (let i = 0; i < lead; i++) {
        body.run(batch, out);
        verify(batch);
      }
      const samples = new Float64Array(k);
      let elapsedNs = 0;
      for (let i = 0; i < k; i++) {
        const t0 = performance.now();
        body.run(batch, out);
        const dt = (performance.now() - t0) * 1e6;
        elapsedNs += dt;
        samples[i] = dt / batch;
        verify(batch);
      }
      return { samples, elapsedNs, calls: k * batch, leadCalls: lead * batch };
    },
    batch: () => batch,
  };
}

/** A window-1 closed run as a side: `timeWindowed`'s warm-up, then a run of `lead + k` messages
 * a visit, the first `lead` unmeasured. (Only window 1: a visit of a deeper window would add its
 * fill and drain to every visit.) The measured messages' time is the run's less its lead's
 * latencies: at window 1 each message is sent as the previous reply is read. */
export function windowSide(budget: Budget, run: (count: number) => Promise<RunOut>): InterleaveSide {
  return {
    warm: () => warmWindowed(budget, 1, run),
    block: async (k, lead) => {
      const r = await run(lead + k);
      let leadNs = 0;
      for (let i = 0; i < lead; i++) leadNs += r.latencies[i] ?? 0;
      return { samples: r.latencies.slice(lead), elapsedNs: r.elapsedNs - leadNs, calls: k, leadCalls: lead };
    },
    batch: () => 1,
  };
}

/**
 * Measures several paths interleaved, so that drift (other load, CPU frequency, where the
 * scheduler puts the processes) falls on all of them alike instead of on whichever was measured
 * at a worse moment. Each side warms up as it would alone and wants the same number of samples;
 * then `R` rounds each visit every side twice in mirrored order (A B C C B A: linear drift over
 * a round weighs every side equally), each visit `INTERLEAVE_LEAD` unmeasured samples and then,
 * in the same run, 1/(2R) of the side's samples. Every measured sample is kept. The measurement stops early only at the end of
 * a round, once twice the sides' summed budget has passed and every side has `minN` samples.
 *
 * A side that throws is handed to `failed` and left out of the remaining rounds; the others go on.
 */
export async function timeInterleaved(
  budget: Budget,
  sides: InterleaveSide[],
  failed: (index: number, e: unknown) => void,
): Promise<(InterleavedTimed | undefined)[]> {
  const alive = sides.map(() => true);
  const guard = async <T>(i: number, f: () => Promise<T>): Promise<T | undefined> => {
    try {
      return await f();
    } catch (e) {
      alive[i] = false;
      failed(i, e);
      return undefined;
    }
  };
  const warm: { warmup: number; n: number }[] = [];
  for (const [i, side] of sides.entries()) {
    warm[i] = (await guard(i, side.warm)) ?? { warmup: 0, n: 0 };
  }
  const wanted = warm.filter((_, i) => alive[i]).map((w) => w.n);
  if (wanted.length === 0) return sides.map(() => undefined);
  const rounds = clamp(Math.floor(Math.min(...wanted) / (2 * MIN_BLOCK)), 1, MAX_ROUNDS);
  const perVisit = warm.map((w) => Math.max(1, Math.ceil(w.n / (2 * rounds))));
  const order = [...sides.keys(), ...[...sides.keys()].reverse()];
  const blocks: Block[][][] = sides.map(() => []);
  const leads = sides.map(() => 0);
  const taken = sides.map(() => 0);
  const deadline = performance.now() + 2 * budget.measureMs * wanted.length;
  let done = 0;
  while (done < rounds) {
    for (const i of order) {
      const side = sides[i];
      if (side === undefined || !alive[i]) continue;
      const b = await guard(i, () => side.block(perVisit[i] ?? 1, INTERLEAVE_LEAD));
      if (b === undefined) continue;
      leads[i] = (leads[i] ?? 0) + b.leadCalls;
      ((blocks[i] ??= [])[done] ??= []).push(b);
      taken[i] = (taken[i] ?? 0) + b.samples.length;
    }
    done++;
    if (!alive.some((a) => a)) break;
    const enough = sides.every((_, i) => !alive[i] || (taken[i] ?? 0) >= budget.minN);
    if (enough && performance.now() > deadline) break;
  }
  return sides.map((side, i) => {
    if (!alive[i]) return undefined;
    const perRound = blocks[i] ?? [];
    const all = perRound.flat();
    const samples = new Float64Array(all.reduce((k, b) => k + b.samples.length, 0));
    let at = 0;
    for (const b of all) {
      samples.set(b.samples, at);
      at += b.samples.length;
    }
    const roundP50 = perRound.map((bs) => {
      const s = new Float64Array(bs.reduce((k, b) => k + b.samples.length, 0));
      let j = 0;
      for (const b of bs) {
        s.set(b.samples, j);
        j += b.samples.length;
      }
      s.sort();
      return s[Math.ceil(0.5 * s.length) - 1] ?? NaN;
    });
    return {
      samples,
      batch: side.batch(),
      warmup: (warm[i]?.warmup ?? 0) + (leads[i] ?? 0),
      elapsedNs: all.reduce((t, b) => t + b.elapsedNs, 0),
      checked: all.reduce((t, b) => t + b.calls, 0),
      rounds: perRound.length,
      roundP50,
    };
  });
}

/** `a`'s p50 ÷ `b`'s, pooled and round by round (median, quartiles by linear interpolation,
 * extremes), from two sides of one interleaved measurement. */
export function roundRatio(a: InterleavedTimed, b: InterleavedTimed, pooledA: number, pooledB: number): RoundRatio {
  const n = Math.min(a.roundP50.length, b.roundP50.length);
  const r: number[] = [];
  for (let k = 0; k < n; k++) r.push((a.roundP50[k] ?? NaN) / (b.roundP50[k] ?? NaN));
  r.sort((x, y) => x - y);
  const q = (p: number): number => {
    if (r.length === 0) return NaN;
    const h = (r.length - 1) * p;
    const lo = Math.floor(h);
    return (r[lo] ?? NaN) + (h - lo) * ((r[Math.min(lo + 1, r.length - 1)] ?? NaN) - (r[lo] ?? NaN));
  };
  const f = (x: number): number => Math.round(x * 10_000) / 10_000;
  return {
    pooled_p50: f(pooledA / pooledB),
    rounds: r.length,
    median: f(q(0.5)),
    q1: f(q(0.25)),
    q3: f(q(0.75)),
    min: f(r[0] ?? NaN),
    max: f(r[r.length - 1] ?? NaN),
  };
}
