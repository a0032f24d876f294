// The shape of benches/results/latest.json (documented in benches/README.md), shared by the
// driver that writes it and the report that reads it. The Rust bench writes the same records.

import type { Latency } from './stats.js';

/** A run is measured unpinned, pinned to one CPU (`taskset -c 0`), or both. */
export type Pass = 'unpinned' | 'pinned';

/** Per-message round trips or calls, measured with a distribution and a throughput. */
export interface TimingRecord {
  kind: 'roundtrip' | 'cost';
  pass: Pass;
  /** "1"…"7" for the first issue's scenarios, "cost" for in-process encoding costs, "lib" and
   * "markdown" for the library and its real work, "rust-js" for Rust calling JS, "host" for the
   * thread and tokio Rust hosts. */
  scenario: string;
  /** Stable id, e.g. `ffi.handleLine`, `pipe.node-rust`, `floor.node-cat`, `cost.js-json`. */
  path: string;
  label: string;
  driver: 'node' | 'rust';
  /** Bytes of the `data` string (0 for `floor.ffi-noop`, which carries none). */
  payload: number;
  /** Messages in flight (1 = strict request/response). */
  window: number;
  /** Messages (calls) measured, after warm-up. */
  n: number;
  /** Latency samples recorded: `n / batch`. */
  samples: number;
  /** Messages (calls) spent on warm-up before measuring. */
  warmup: number;
  /** Calls per timed sample: sub-microsecond calls are timed in batches (sample = batch mean). */
  batch: number;
  latency_ns: Latency;
  throughput: { msgs_per_s: number; mb_per_s: number };
  /** Replies checked for count and content (equals `n`). */
  checked: number;
  note?: string;
  /** CPU time (user + system) per message during the measured run, ns: the parent's threads
   * and the child's, from `/proc/<pid>/task/<tid>/schedstat` (Rust pipe paths, and the Node
   * driver's `lib.pipe-sync*`, which counts its warm-up calls too: the same calls). */
  cpu_ns_per_msg?: { parent: number; child: number; total: number };
  /** Spinning readers (`pipe.rust-rust-spin`, `lib.pipe-sync-spin`): the budget, and how many of
   * the parent's reads during the measured run spun and found their data while spinning;
   * `disabled` says why the parent never spun (one CPU), when it did not. */
  spin?: { budget_us: number; parent_reads_spun: number; parent_spin_hits: number; disabled?: string };
  /** `host.*` only: CPU time (user + system) of the Rust host process per message over the
   * measured run (its threads or tasks, not its children's), ns, in steps of /proc's 10 ms. */
  parent_cpu_ns_per_msg?: number;
  /** Present when this record was measured interleaved with other paths (the goal comparisons
   * at window 1): `with` the other paths of the same rounds (same pass, payload and window),
   * `rounds` how many rounds ran, `lead` the unmeasured samples opening each block; `ratio_to`
   * this path's p50 ÷ another's of the same rounds, for the pairs the report compares. */
  interleaved?: { with: string[]; rounds: number; lead: number; ratio_to?: Record<string, RoundRatio> };
}

/** One path's p50 ÷ another's, from one interleaved measurement: over all samples pooled
 * (`pooled_p50`, what the goal uses) and round by round (each round's p50s divided), whose
 * median, quartiles (linear interpolation) and extremes show how certain the ratio is. */
export interface RoundRatio {
  pooled_p50: number;
  rounds: number;
  median: number;
  q1: number;
  q3: number;
  min: number;
  max: number;
}

/** Spawn (or load) to first reply, repeated `n` times. */
export interface ColdStartRecord {
  kind: 'coldstart';
  pass: Pass;
  scenario: 'cold';
  path: string;
  label: string;
  driver: 'node';
  n: number;
  latency_ns: Latency;
}

/** Peak resident set of one side of a path, KiB. */
export interface RssRecord {
  kind: 'rss';
  pass: Pass;
  scenario: 'rss';
  path: string;
  label: string;
  driver: 'node' | 'rust';
  side: 'parent' | 'child' | 'in-process';
  kib: number;
}

export type BenchRecord = TimingRecord | ColdStartRecord | RssRecord;

/** A path that failed (a wrong reply, a dead child) or could not run; it posts no number. */
export interface BenchError {
  pass: Pass;
  path: string;
  error: string;
}

export interface Meta {
  schema: 1;
  date: string;
  duration_s: number;
  mode: 'quick' | 'full';
  passes: Pass[];
  filter: string | null;
  git: { commit: string; dirty: boolean };
  machine: {
    cpu: string;
    cores: number;
    memory_gib: number;
    os: string;
    kernel: string;
    loadavg_at_start: number[];
  };
  versions: Record<string, string>;
  /** Paths that were skipped, with why (e.g. the addon not built). */
  skipped: { pass: Pass; path: string; reason: string }[];
}

export interface Results {
  meta: Meta;
  records: BenchRecord[];
  errors: BenchError[];
}

/** What one pass (one driver process) hands back to the orchestrator. */
export interface PassResult {
  records: BenchRecord[];
  errors: BenchError[];
  skipped: { pass: Pass; path: string; reason: string }[];
}
