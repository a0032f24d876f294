//! Exact percentiles from recorded samples, and the JSON records the Node driver merges.

use serde_json::{json, Value};

/// A distribution summary in nanoseconds, computed exactly from every sample (nearest rank).
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub n: usize,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

/// Sorts `samples` and summarizes them; `None` when there are none.
pub fn summarize(samples: &mut [f64]) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    // Nearest rank: the smallest sample with at least q·n samples at or below it.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let rank = |q: f64| samples[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
    #[allow(clippy::cast_precision_loss)]
    let mean = samples.iter().sum::<f64>() / n as f64;
    Some(Summary {
        n,
        min: samples[0],
        p50: rank(0.50),
        p90: rank(0.90),
        p99: rank(0.99),
        p999: rank(0.999),
        max: samples[n - 1],
        mean,
    })
}

impl Summary {
    /// The `latency_ns` object of a record.
    pub fn to_json(self) -> Value {
        let r = |x: f64| (x * 10.0).round() / 10.0;
        json!({
            "min": r(self.min), "p50": r(self.p50), "p90": r(self.p90), "p99": r(self.p99),
            "p999": r(self.p999), "max": r(self.max), "mean": r(self.mean),
        })
    }
}

/// Shared identity of a record: which pass, scenario and path, and its axes.
pub struct Key<'a> {
    pub pass: &'a str,
    pub scenario: &'a str,
    pub path: &'a str,
    pub label: &'a str,
    pub payload: usize,
    pub window: usize,
}

/// A `roundtrip` or `cost` record: one distribution plus throughput.
#[allow(clippy::too_many_arguments)]
pub fn timing_record(
    kind: &str,
    key: &Key<'_>,
    summary: Summary,
    warmup: usize,
    batch: usize,
    elapsed_ns: f64,
    checked: usize,
    note: &str,
) -> Value {
    #[allow(clippy::cast_precision_loss)]
    let msgs_per_s = if elapsed_ns > 0.0 { summary.n as f64 * batch as f64 * 1e9 / elapsed_ns } else { 0.0 };
    #[allow(clippy::cast_precision_loss)]
    let mb_per_s = msgs_per_s * key.payload as f64 / 1e6;
    let mut rec = json!({
        "kind": kind,
        "pass": key.pass,
        "scenario": key.scenario,
        "path": key.path,
        "label": key.label,
        "driver": "rust",
        "payload": key.payload,
        "window": key.window,
        "n": summary.n * batch,
        "samples": summary.n,
        "warmup": warmup,
        "batch": batch,
        "latency_ns": summary.to_json(),
        "throughput": { "msgs_per_s": msgs_per_s.round(), "mb_per_s": (mb_per_s * 100.0).round() / 100.0 },
        "checked": checked,
    });
    if !note.is_empty() {
        rec["note"] = json!(note);
    }
    rec
}

/// Human units for the console.
pub fn fmt_ns(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.0}ns")
    } else if ns < 1e6 {
        format!("{:.2}µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2}ms", ns / 1e6)
    } else {
        format!("{:.2}s", ns / 1e9)
    }
}

/// `1.23M`, `45.6k`, `789`.
pub fn fmt_count(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// `64 B`, `1 KiB`, `64 KiB`, `1 MiB`.
pub fn fmt_size(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes % (1 << 20) == 0 {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes % (1 << 10) == 0 {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} B")
    }
}

/// One console line per record, in the same layout as the Node driver's.
pub fn progress_line(key: &Key<'_>, s: &Summary, batch: usize, msgs_per_s: f64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let mbs = msgs_per_s * key.payload as f64 / 1e6;
    format!(
        "{:<9}{:<22}{:>7} w={:<4}n={:<8}p50 {:>9} p90 {:>9} p99 {:>9} p99.9 {:>9} max {:>9}  {:>10} msg/s {:>9} MB/s  ok",
        key.pass,
        key.path,
        fmt_size(key.payload),
        key.window,
        s.n * batch,
        fmt_ns(s.p50),
        fmt_ns(s.p90),
        fmt_ns(s.p99),
        fmt_ns(s.p999),
        fmt_ns(s.max),
        fmt_count(msgs_per_s),
        format!("{mbs:.1}"),
    )
}
