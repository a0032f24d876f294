// Exact distribution summaries from recorded samples, and console formatting.

/** Percentiles and moments of one set of samples, in nanoseconds. */
export interface Latency {
  min: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
}

/** Sorts `samples` in place and summarizes them exactly (nearest-rank percentiles). */
export function summarize(samples: Float64Array): Latency {
  if (samples.length === 0) throw new Error('no samples to summarize');
  samples.sort();
  const n = samples.length;
  const at = (i: number): number => samples[Math.min(Math.max(i, 0), n - 1)] ?? NaN;
  // Nearest rank: the smallest sample with at least q·n samples at or below it.
  const rank = (q: number): number => at(Math.ceil(q * n) - 1);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += at(i);
  const r = (x: number): number => Math.round(x * 10) / 10;
  return {
    min: r(at(0)),
    p50: r(rank(0.5)),
    p90: r(rank(0.9)),
    p99: r(rank(0.99)),
    p999: r(rank(0.999)),
    max: r(at(n - 1)),
    mean: r(sum / n),
  };
}

/** `412ns`, `12.30µs`, `1.52ms`, `2.10s`; a negative difference as `−49.36µs`. */
export function fmtNs(ns: number): string {
  if (!Number.isFinite(ns)) return '—';
  if (ns < 0) return `−${fmtNs(-ns)}`;
  if (ns < 1e3) return `${ns.toFixed(0)}ns`;
  if (ns < 1e6) return `${(ns / 1e3).toFixed(2)}µs`;
  if (ns < 1e9) return `${(ns / 1e6).toFixed(2)}ms`;
  return `${(ns / 1e9).toFixed(2)}s`;
}

/** `64 B`, `1 KiB`, `64 KiB`, `1 MiB`. */
export function fmtSize(bytes: number): string {
  if (bytes >= 1 << 20 && bytes % (1 << 20) === 0) return `${bytes >> 20} MiB`;
  if (bytes >= 1 << 10 && bytes % (1 << 10) === 0) return `${bytes >> 10} KiB`;
  return `${bytes} B`;
}

/** `1.23M`, `45.6k`, `789`. */
export function fmtCount(x: number): string {
  if (!Number.isFinite(x)) return '—';
  if (x >= 1e6) return `${(x / 1e6).toFixed(2)}M`;
  if (x >= 1e3) return `${(x / 1e3).toFixed(1)}k`;
  return x.toFixed(0);
}

/** Axis labels for round values: `10ns`, `100µs`, `1ms`, `2.5s`. */
export function fmtTickNs(ns: number): string {
  const [unit, div] = ns < 1e3 ? ['ns', 1] : ns < 1e6 ? ['µs', 1e3] : ns < 1e9 ? ['ms', 1e6] : ['s', 1e9];
  return `${Number((ns / div).toPrecision(3))}${unit}`;
}

/** Axis labels for round counts: `100`, `10k`, `1M`. */
export function fmtTickCount(x: number): string {
  const [unit, div] = x < 1e3 ? ['', 1] : x < 1e6 ? ['k', 1e3] : ['M', 1e6];
  return `${Number((x / div).toPrecision(3))}${unit}`;
}
