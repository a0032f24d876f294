// The bench's interleaved measurement (`timeInterleaved`): the order of its blocks, that every
// measured sample is kept, that drift linear in time cancels out of a ratio, and that one failing
// path leaves the others measured. The sides are fakes whose "latencies" are computed, not timed.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import type { Budget } from '../bench/common.js';
import { INTERLEAVE_LEAD, type InterleaveSide, roundRatio, type RunOut, syncSide, timeInterleaved, windowSide } from '../bench/measure.js';
import { MIN_SPREAD_ROUNDS, roundsNote } from '../bench/report.js';

const BUDGET: Budget = { warmMs: 1, measureMs: 60_000, minN: 10, maxN: 1_000_000, coldReps: 1 };

/** Every visit any fake side had, in order: its side's name, its lead and measured samples. */
type Log = { side: string; lead: number; k: number }[];

/**
 * A fake side that wants `n` samples; sample `t` (counted over every side, a shared clock) is
 * `base × (1 + drift × t)`: a cost that drifts linearly in time, the same for every side. A visit
 * makes `lead + k` samples and returns the last `k`.
 */
function fake(name: string, n: number, base: number, log: Log, clock: { t: number }, drift = 0): InterleaveSide {
  return {
    warm: async () => ({ warmup: 100, n }),
    block: async (k, lead) => {
      log.push({ side: name, lead, k });
      const all = new Float64Array(lead + k);
      for (let i = 0; i < lead + k; i++) all[i] = base * (1 + drift * clock.t++);
      const samples = all.slice(lead);
      return { samples, elapsedNs: samples.reduce((s, x) => s + x, 0), calls: k, leadCalls: lead };
    },
    batch: () => 1,
  };
}

describe('timeInterleaved', () => {
  test('visits every side twice a round in mirrored order, each visit opened by INTERLEAVE_LEAD lead samples', async () => {
    const log: Log = [];
    const clock = { t: 0 };
    const sides = [fake('A', 64, 10, log, clock), fake('B', 64, 10, log, clock), fake('C', 200, 10, log, clock)];
    const timed = await timeInterleaved(BUDGET, sides, () => assert.fail('no side fails'));
    // min(n) = 64 → 64 / 8 = 8 rounds; A and B 4 samples a visit, C ceil(200 / 16) = 13.
    const round = ['A', 'B', 'C', 'C', 'B', 'A'].map((s) => ({ side: s, lead: INTERLEAVE_LEAD, k: s === 'C' ? 13 : 4 }));
    assert.deepEqual(log, Array.from({ length: 8 }, () => round).flat());
    assert.deepEqual(
      timed.map((t) => [t?.rounds, t?.samples.length, t?.checked, t?.warmup, t?.roundP50.length]),
      [
        [8, 64, 64, 100 + 16 * INTERLEAVE_LEAD, 8],
        [8, 64, 64, 100 + 16 * INTERLEAVE_LEAD, 8],
        [8, 208, 208, 100 + 16 * INTERLEAVE_LEAD, 8],
      ],
    );
  });

  test('keeps every measured sample, and no lead sample, in the pooled distribution', async () => {
    const log: Log = [];
    const clock = { t: 0 };
    // Drift makes every sample distinct, so the pooled set can be compared exactly.
    const timed = await timeInterleaved(BUDGET, [fake('A', 16, 1, log, clock, 1), fake('B', 16, 1, log, clock, 1)], () => assert.fail());
    const a = timed[0];
    assert.ok(a !== undefined);
    // Samples are numbered in visit order (A, B, B, A per round); each visit's first
    // INTERLEAVE_LEAD are its lead, the 4 after them measured.
    const want: number[] = [];
    let t = 0;
    for (const entry of log) {
      for (let i = 0; i < entry.lead + entry.k; i++, t++) if (entry.side === 'A' && i >= entry.lead) want.push(1 + t);
    }
    assert.equal(want.length, 16);
    assert.deepEqual([...a.samples], want);
    assert.equal(a.rounds, 2);
  });

  test('weighs drift linear in time equally on every path: equal means, ratio 1 round by round', async () => {
    const log: Log = [];
    const clock = { t: 0 };
    // Both cost 10 at t = 0 and drift +0.1 % per sample: measured one after the other, 600
    // samples apart, B would look ~1.5× A.
    const timed = await timeInterleaved(BUDGET, [fake('A', 600, 10, log, clock, 0.001), fake('B', 600, 10, log, clock, 0.001)], () => assert.fail());
    const [a, b] = timed;
    assert.ok(a !== undefined && b !== undefined);
    assert.equal(a.rounds, 24);
    // Mirrored blocks of equal size: A's samples sit, on average, exactly where B's do.
    const mean = (x: typeof a): number => x.elapsedNs / x.checked;
    assert.ok(Math.abs(mean(a) / mean(b) - 1) < 1e-12, `means ${mean(a)} vs ${mean(b)}`);
    const rr = roundRatio(a, b, median(a.samples), median(b.samples));
    assert.equal(rr.rounds, 24);
    assert.ok(Math.abs(rr.pooled_p50 - 1) < 0.02, `pooled ratio ${rr.pooled_p50}`);
    assert.ok(Math.abs(rr.median - 1) < 0.02, `per-round median ${rr.median}`);
  });

  test('keeps the first calls of every visit, which a switch of paths and a new closed run slow, out of the measured samples', async () => {
    // Measured with the bench's pipe paths: the first message of a visit ran 1.2–3.9× the settled
    // p50, and the first message of every closed run 1.2–1.75× even after a lead run of its own
    // (the child sleeps in the gap between two runs), the next two +6–18 % and +3–8 %. Here
    // every visit's run starts with SLOWED doubled samples; none may be measured.
    const SLOWED = 3;
    const runStartsSlow = (n: number): InterleaveSide => ({
      warm: async () => ({ warmup: 100, n }),
      block: async (k, lead) => {
        const all = Array.from({ length: lead + k }, (_, i) => (i < SLOWED ? 20 : 10));
        const samples = Float64Array.from(all.slice(lead));
        return { samples, elapsedNs: samples.reduce((t, x) => t + x, 0), calls: k, leadCalls: lead };
      },
      batch: () => 1,
    });
    const timed = await timeInterleaved(BUDGET, [runStartsSlow(96), runStartsSlow(96), runStartsSlow(96)], () => assert.fail());
    assert.deepEqual(
      timed.map((t) => [t?.samples.length, t?.samples.filter((x) => x !== 10).length, t?.warmup]),
      [
        [96, 0, 100 + 24 * INTERLEAVE_LEAD],
        [96, 0, 100 + 24 * INTERLEAVE_LEAD],
        [96, 0, 100 + 24 * INTERLEAVE_LEAD],
      ],
    );
  });

  test('hands a failing side to `failed` and measures the others through every round', async () => {
    const log: Log = [];
    const clock = { t: 0 };
    const good = fake('A', 80, 10, log, clock);
    let blocks = 0;
    const bad: InterleaveSide = {
      ...fake('B', 80, 10, log, clock),
      block: async (k, lead) => {
        if (++blocks === 3) throw new Error('the child exited');
        return { samples: new Float64Array(k).fill(20), elapsedNs: 0, calls: k, leadCalls: lead };
      },
    };
    const failures: [number, string][] = [];
    const timed = await timeInterleaved(BUDGET, [good, bad], (i, e) => failures.push([i, (e as Error).message]));
    assert.deepEqual(failures, [[1, 'the child exited']]);
    assert.equal(timed[1], undefined);
    assert.equal(timed[0]?.rounds, 10);
    assert.equal(timed[0]?.samples.length, 80);
  });

  test('runs a single round when a side wants fewer than 8 samples per round', async () => {
    const log: Log = [];
    const clock = { t: 0 };
    const timed = await timeInterleaved(BUDGET, [fake('A', 10, 1, log, clock), fake('B', 3000, 1, log, clock)], () => assert.fail());
    assert.deepEqual(
      timed.map((t) => [t?.rounds, t?.samples.length]),
      [
        [1, 10],
        [1, 3000],
      ],
    );
  });
});

describe('the sides of the bench paths', () => {
  test('a window-1 side runs its lead and its block as one closed run and measures only the block', async () => {
    const runs: number[] = [];
    const run = async (count: number): Promise<RunOut> => {
      runs.push(count);
      // Message i takes 100 + i ns; 7 ns more in the run as a whole (the gaps between messages).
      const latencies = Float64Array.from({ length: count }, (_, i) => 100 + i);
      return { latencies, elapsedNs: latencies.reduce((t, x) => t + x, 0) + 7 };
    };
    const b = await windowSide(BUDGET, run).block(3, 4);
    assert.deepEqual(runs, [7]);
    assert.deepEqual([...b.samples], [104, 105, 106]);
    assert.deepEqual([b.elapsedNs, b.calls, b.leadCalls], [104 + 105 + 106 + 7, 3, 4]);
  });

  test('a synchronous side makes and checks its lead batches but times only the block', async () => {
    const calls: number[] = [];
    let next = 0;
    const side = syncSide(BUDGET, {
      run: (n, out: number[]) => {
        calls.push(n);
        for (let j = 0; j < n; j++) out[j] = next++;
      },
      check: (r, j) => r >= 0 && j >= 0,
      show: String,
    });
    const batch = side.batch();
    const b = await side.block(2, 3);
    assert.deepEqual(calls, [batch, batch, batch, batch, batch]);
    assert.deepEqual([b.samples.length, b.calls, b.leadCalls], [2, 2 * batch, 3 * batch]);
    const failing = syncSide(BUDGET, {
      run: (n, out: number[]) => {
        for (let j = 0; j < n; j++) out[j] = -1;
      },
      check: (r) => r >= 0,
      show: String,
    });
    await assert.rejects(failing.block(2, 1), /wrong result: -1/);
  });
});

describe('roundRatio', () => {
  test('divides round by round; median and quartiles by linear interpolation, extremes', () => {
    const side = (roundP50: number[]) => ({ samples: new Float64Array(), batch: 1, warmup: 0, elapsedNs: 0, checked: 0, rounds: roundP50.length, roundP50 });
    const rr = roundRatio(side([10, 12, 9, 20, 11]), side([10, 10, 10, 10, 10]), 11, 10);
    assert.deepEqual(rr, { pooled_p50: 1.1, rounds: 5, median: 1.1, q1: 1, q3: 1.2, min: 0.9, max: 2 });
  });
});

function median(s: Float64Array): number {
  const sorted = [...s].sort((x, y) => x - y);
  return sorted[Math.ceil(sorted.length / 2) - 1] ?? NaN;
}

describe('roundsNote (the report beside a goal ratio)', () => {
  const rr = (rounds: number, median: number, q1: number, q3: number) => ({ pooled_p50: median, rounds, median, q1, q3, min: q1, max: q3 });

  test('prints the per-round median and its interquartile range when there are enough rounds for one', () => {
    assert.equal(roundsNote(rr(24, 1.0234, 0.981, 1.049)), '; interleaved, 24 rounds: per round 1.02× (IQR 0.98–1.05×)');
    assert.equal(roundsNote(rr(MIN_SPREAD_ROUNDS, 1.5, 1.4, 1.6)), `; interleaved, ${MIN_SPREAD_ROUNDS} rounds: per round 1.50× (IQR 1.40–1.60×)`);
  });

  test('claims no spread from fewer rounds: one round is the pooled ratio again, with an IQR of zero width', () => {
    assert.equal(roundsNote(rr(1, 2.2586, 2.2586, 2.2586)), '; interleaved, 1 round (too few for a per-round spread)');
    assert.equal(roundsNote(rr(MIN_SPREAD_ROUNDS - 1, 1.1, 1.0, 1.2)), `; interleaved, ${MIN_SPREAD_ROUNDS - 1} rounds (too few for a per-round spread)`);
  });

  test('says nothing for a record measured alone', () => {
    assert.equal(roundsNote(undefined), '');
  });
});
