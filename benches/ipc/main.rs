//! The Rust side of `npm run bench`: a Rust parent driving children over pipes (scenario 6,
//! Rust → Node child, the demo's direction; Rust → Rust `serve`; the Rust ↔ Rust raw echo
//! floor), and the in-process cost of the core's serde work per payload size.
//!
//! Run by the Node driver (`ts-app/src/bench/main.ts`) as
//! `cargo bench --bench ipc -- --out FILE [--quick] [--pass NAME] [--only ID,ID]`; it writes
//! `{"records": [...], "errors": [...]}` in the schema of `benches/README.md`, which the
//! driver merges into `benches/results/latest.json`. Without `--bench` (as `cargo test
//! --benches` runs it) it is a smoke test: every path once, tiny counts, nothing written.
//! `--echo-child` turns this binary into the echo child of the floor.

mod cost;
mod host;
mod pipe;
mod stats;
mod stream;

use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};

use pipe::{Expect, Peer};
use stats::{fmt_ns, fmt_size, progress_line, summarize, timing_record, Key};

/// Path ids (what `--only` and the driver's `--filter` select), scenarios and labels.
const PATHS: &[(&str, &str, &str)] = &[
    ("pipe.rust-node", "6", "Rust → Node child (pipe)"),
    ("pipe.rust-node-native", "6", "Rust → Node child, --engine native (pipe)"),
    ("pipe.rust-rust", "6", "Rust → Rust serve (pipe)"),
    ("pipe.rust-rust-spin", "6", "Rust → Rust serve (pipe), both sides spinning (--spin-us 50)"),
    ("floor.rust-echo", "7", "floor: Rust ↔ Rust echo (pipe)"),
    ("cost.rust-core", "cost", "Rust core handle_line (serde)"),
    ("cost.rust-serde", "cost", "Rust typed serde round trip"),
    ("stream.rust-node", "stream", "stream Rust → Node: Peer(msgpack).send(\"bytes\", 1 MiB) to serveStdio"),
    ("floor.stream-rust-cat", "stream", "floor: stream Rust ↔ cat (the same frames, raw echo)"),
    (
        "floor.stream-rust-peer-cat",
        "stream",
        "context: stream Rust Peer(msgpack) ↔ cat (the Peer as driver, each request echoed as its reply)",
    ),
    (
        "floor.stream-rust-node-raw",
        "stream",
        "context: stream Rust ↔ the least Node echo (the cat floor's driver; readSync/writeSync, whole frames)",
    ),
    ("host.thread-node", "host", "host: thread Peer → Node child"),
    ("host.tokio-node", "host", "host: tokio Peer → Node child"),
    ("host.thread-node-x8", "host", "host: thread Peer → 8 Node children at once (total)"),
    ("host.tokio-node-x8", "host", "host: tokio Peer → 8 Node children at once (total)"),
];
/// The host paths' windows (requests in flight per child) and payload.
const HOST_WINDOWS: &[usize] = &[1, 256];
const HOST_PAYLOAD: usize = 64;

const PAYLOADS: &[usize] = &[64, 1024, 64 * 1024, 1024 * 1024];
const WINDOWS: &[usize] = &[1, 16, 256];
/// Window × payload above this is skipped: 256 × 1 MiB in flight measures memory, not IPC.
const MAX_IN_FLIGHT_BYTES: usize = 64 * 1024 * 1024;
/// The spin budget of `pipe.rust-rust-spin`, both sides (µs): above an unpinned round trip
/// between two spinning processes (a few µs), below a wake-up's cost plus the work.
const SPIN_US: u64 = 50;

/// Small messages a fresh child answers before anything is measured.
const CHILD_WARMUP_MESSAGES: usize = 4000;

/// How long each measurement runs.
#[derive(Clone, Copy)]
struct Budget {
    warm: Duration,
    measure: Duration,
    min_n: usize,
    max_n: usize,
}

const FULL: Budget =
    Budget { warm: Duration::from_millis(120), measure: Duration::from_millis(500), min_n: 30, max_n: 200_000 };
const QUICK: Budget =
    Budget { warm: Duration::from_millis(20), measure: Duration::from_millis(60), min_n: 10, max_n: 20_000 };
const SMOKE: Budget =
    Budget { warm: Duration::from_millis(1), measure: Duration::from_millis(5), min_n: 3, max_n: 200 };

struct Options {
    bench: bool,
    quick: bool,
    out: Option<String>,
    budget: Budget,
    pass: String,
    only: Option<Vec<String>>,
    node: String,
    ts_child: String,
    serve: String,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--echo-child") {
        return match pipe::echo_child() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("echo child: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if args.iter().any(|a| a == "--list") {
        for (id, scenario, label) in PATHS {
            println!("{id}\t{scenario}\t{label}");
        }
        return ExitCode::SUCCESS;
    }
    let options = match parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("ipc bench: {e}");
            return ExitCode::from(2);
        }
    };
    run(&options)
}

fn parse(args: Vec<String>) -> Result<Options, String> {
    let mut o = Options {
        bench: false,
        quick: false,
        out: None,
        budget: FULL,
        pass: "unpinned".to_owned(),
        only: None,
        node: "node".to_owned(),
        ts_child: concat!(env!("CARGO_MANIFEST_DIR"), "/ts-app/dist/main.js").to_owned(),
        serve: env!("CARGO_BIN_EXE_rust-ts-ipc").to_owned(),
    };
    let mut quick = false;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--bench" => o.bench = true,
            "--quick" => quick = true,
            "--out" => o.out = Some(value()?),
            "--pass" => o.pass = value()?,
            "--only" => o.only = Some(value()?.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect()),
            "--node" => o.node = value()?,
            "--ts-child" => o.ts_child = value()?,
            "--serve" => o.serve = value()?,
            other => return Err(format!("unexpected argument `{other}`")),
        }
    }
    o.quick = quick;
    o.budget = match (o.bench, quick) {
        (false, _) => SMOKE,
        (true, true) => QUICK,
        (true, false) => FULL,
    };
    Ok(o)
}

/// The payload every path sends: `size` ASCII letters and digits (no JSON escaping needed,
/// so `data` is exactly `size` bytes on the wire). The Node driver builds the same.
fn payload(size: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..size).map(|i| char::from(ALPHABET[i % ALPHABET.len()])).collect()
}

fn run(o: &Options) -> ExitCode {
    let selected = |id: &str| o.only.as_ref().is_none_or(|only| only.iter().any(|s| s == id));
    let mut records: Vec<Value> = Vec::new();
    let mut errors: Vec<Value> = Vec::new();
    let payloads: &[usize] = if o.bench { PAYLOADS } else { &[64, 64 * 1024] };
    let windows: &[usize] = if o.bench { WINDOWS } else { &[1, 16] };
    let exe = match std::env::current_exe() {
        Ok(p) => p.to_string_lossy().into_owned(),
        Err(e) => {
            eprintln!("ipc bench: cannot find this executable for the echo child: {e}");
            return ExitCode::FAILURE;
        }
    };
    let have_ts_child = std::path::Path::new(&o.ts_child).exists();
    let (mut ran_stream, mut ran_other) = (false, false);

    for &(id, scenario, label) in PATHS {
        if !selected(id) {
            continue;
        }
        if scenario == "stream" {
            ran_stream = true;
        } else {
            ran_other = true;
        }
        let result = if scenario == "host" {
            if !have_ts_child {
                let why = format!("{} is not built (npm run build -w ts-app)", o.ts_child);
                println!("{:<9}{id:<22}skipped: {why}", o.pass);
                if o.bench {
                    errors.push(json!({"pass": o.pass, "path": id, "error": why}));
                }
                continue;
            }
            run_host(o, (id, scenario, label), &mut records)
        } else if let Some(kind) = id.strip_prefix("cost.") {
            run_cost(o, kind, id, scenario, label, payloads, &mut records)
        } else if scenario == "stream" {
            if (id == "stream.rust-node" || id == "floor.stream-rust-node-raw") && !have_ts_child {
                let why = format!("{} is not built (npm run build -w ts-app)", o.ts_child);
                println!("{:<9}{id:<22}skipped: {why}", o.pass);
                if o.bench {
                    errors.push(json!({"pass": o.pass, "path": id, "error": why}));
                }
                continue;
            }
            run_stream(o, (id, scenario, label), &mut records)
        } else {
            let spin_us = SPIN_US.to_string();
            let mut spin = Duration::ZERO;
            let (program, args, expect, rss_path): (&str, Vec<&str>, Expect, &str) = match id {
                "pipe.rust-node" | "pipe.rust-node-native" => {
                    if !have_ts_child {
                        let why = format!("{} is not built (npm run build -w ts-app)", o.ts_child);
                        println!("{:<9}{id:<22}skipped: {why}", o.pass);
                        if o.bench {
                            errors.push(json!({"pass": o.pass, "path": id, "error": why}));
                        }
                        continue;
                    }
                    if id == "pipe.rust-node" {
                        (&o.node, vec![&o.ts_child, "--exit-after", "0"], Expect::Ack, "rss.node-child-of-rust")
                    } else {
                        // The same child answering through the addon (the Rust core in-process).
                        let args = vec![o.ts_child.as_str(), "--exit-after", "0", "--engine", "native"];
                        (&o.node, args, Expect::Ack, "rss.node-native-child-of-rust")
                    }
                }
                "pipe.rust-rust" => {
                    (&o.serve, vec!["serve", "--exit-after", "0"], Expect::Ack, "rss.rust-serve-of-rust")
                }
                "pipe.rust-rust-spin" => {
                    spin = Duration::from_micros(SPIN_US);
                    let args = vec!["serve", "--exit-after", "0", "--spin-us", &spin_us];
                    (&o.serve, args, Expect::Ack, "rss.rust-serve-spin-of-rust")
                }
                _ => (&exe, vec!["--echo-child"], Expect::Echo, "rss.rust-echo"),
            };
            run_pipe(
                o,
                (id, scenario, label),
                (program, &args, expect, rss_path),
                spin,
                payloads,
                windows,
                &mut records,
            )
        };
        if let Err(e) = result {
            println!("{:<9}{id:<22}FAILED: {e}", o.pass);
            errors.push(json!({"pass": o.pass, "path": id, "error": e}));
        }
    }
    // A stream path's parent RSS is its own record; this one is the other paths' parent's.
    if let Some(kib) = pipe::vm_hwm_kib("/proc/self/status").filter(|_| ran_other || !ran_stream) {
        records.push(json!({"kind": "rss", "pass": o.pass, "scenario": "rss", "path": "rss.rust-parent",
            "label": "Rust bench parent (peak RSS)", "driver": "rust", "side": "parent", "kib": kib}));
    }
    if let Some(out) = &o.out {
        let doc = json!({"records": records, "errors": errors});
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        if let Err(e) = std::fs::write(out, text) {
            eprintln!("ipc bench: cannot write {out}: {e}");
            return ExitCode::FAILURE;
        }
    }
    if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn run_pipe(
    o: &Options,
    (id, scenario, label): (&str, &str, &str),
    (program, args, expect, rss_path): (&str, &[&str], Expect, &str),
    spin: Duration,
    payloads: &[usize],
    windows: &[usize],
    records: &mut Vec<Value>,
) -> Result<(), String> {
    let mut peer = Peer::spawn(program, args, spin)?;
    // A fresh child is still starting (a Node child boots, then compiles its hot code: its
    // first thousands of small round trips are 2–3× slower than later ones); the Node
    // driver's pipe paths do the same before measuring.
    let small = payload(64);
    peer.run(&small, 1, CHILD_WARMUP_MESSAGES / 2, expect).map_err(|e| format!("warm-up: {e}"))?;
    peer.run(&small, 16, CHILD_WARMUP_MESSAGES / 2, expect).map_err(|e| format!("warm-up: {e}"))?;
    for &size in payloads {
        let data = payload(size);
        for &window in windows {
            if window * size > MAX_IN_FLIGHT_BYTES {
                continue;
            }
            let key = Key { pass: &o.pass, scenario, path: id, label, payload: size, window };
            let b = o.budget;
            // Warm-up, doubling the run length until `warm` has passed and the rate has
            // settled (two runs in a row within 20%: a fresh Node child is still compiling),
            // or five times `warm` has passed; the last run's rate sizes the measured run.
            let mut count = (2 * window).max(8).min(b.max_n.max(2 * window));
            let (mut warm_msgs, mut warm_ns, mut previous) = (0usize, 0.0f64, f64::INFINITY);
            let mut per_msg: f64;
            let mut runs = 0;
            #[allow(clippy::cast_precision_loss)]
            let warm_budget = b.warm.as_nanos() as f64;
            loop {
                let r = peer
                    .run(&data, window, count, expect)
                    .map_err(|e| format!("{} w={window}: {e}", fmt_size(size)))?;
                warm_msgs += count;
                warm_ns += r.elapsed_ns;
                #[allow(clippy::cast_precision_loss)]
                {
                    per_msg = (r.elapsed_ns / count as f64).max(1.0);
                }
                let settled = (per_msg - previous).abs() <= 0.2 * previous;
                previous = per_msg;
                runs += 1;
                if count >= b.max_n
                    || (runs >= 2 && warm_ns >= warm_budget && (settled || warm_ns >= 5.0 * warm_budget))
                {
                    break;
                }
                count = (count * 2).min(b.max_n);
            }
            let lo = b.min_n.max(2 * window);
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
            let n = ((b.measure.as_nanos() as f64 / per_msg.max(1.0)) as usize).clamp(lo, b.max_n.max(lo));
            let cpu_before = (pipe::cpu_ns("/proc/self/task"), peer.child_cpu_ns());
            let mut r =
                peer.run(&data, window, n, expect).map_err(|e| format!("{} w={window}: {e}", fmt_size(size)))?;
            let cpu_after = (pipe::cpu_ns("/proc/self/task"), peer.child_cpu_ns());
            let summary = summarize(&mut r.latencies).ok_or("no samples")?;
            let note = if r.inline { "" } else { "writes on a writer thread (replies in flight exceed 32 KiB)" };
            let mut rec = timing_record("roundtrip", &key, summary, warm_msgs, 1, r.elapsed_ns, n, note);
            let mps = rec["throughput"]["msgs_per_s"].as_f64().unwrap_or(0.0);
            let mut line = progress_line(&key, &summary, 1, mps);
            if let ((Some(p0), Some(c0)), (Some(p1), Some(c1))) = (cpu_before, cpu_after) {
                #[allow(clippy::cast_precision_loss)]
                let per_msg = |ns: u64| (ns as f64 / n as f64 * 10.0).round() / 10.0;
                let (parent, child) = (per_msg(p1.saturating_sub(p0)), per_msg(c1.saturating_sub(c0)));
                rec["cpu_ns_per_msg"] = json!({"parent": parent, "child": child, "total": parent + child});
                line.push_str(&format!(
                    "  cpu/msg {} ({} + {})",
                    fmt_ns(parent + child),
                    fmt_ns(parent),
                    fmt_ns(child)
                ));
            }
            if !spin.is_zero() {
                rec["spin"] =
                    json!({"budget_us": SPIN_US, "parent_reads_spun": r.spun, "parent_spin_hits": r.spin_hits});
                line.push_str(&format!("  spun {} hit {}", r.spun, r.spin_hits));
            }
            println!("{line}");
            records.push(rec);
        }
    }
    let kib = peer.peak_rss_kib();
    peer.close()?;
    if let Some(kib) = kib {
        records.push(json!({"kind": "rss", "pass": o.pass, "scenario": "rss", "path": rss_path,
            "label": format!("{label}: child peak RSS"), "driver": "rust", "side": "child", "kib": kib}));
    }
    Ok(())
}

/// One host path (see `host.rs`): window 1 and 256 at 64 B, msgs/s over all its children.
fn run_host(o: &Options, (id, scenario, label): (&str, &str, &str), records: &mut Vec<Value>) -> Result<(), String> {
    let which = if id.starts_with("host.tokio") { host::Host::Tokio } else { host::Host::Thread };
    let count = if id.ends_with("-x8") { host::CHILDREN_X8 } else { 1 };
    let children = host::Children::spawn(which, &o.node, &o.ts_child, count)?;
    let small = payload(HOST_PAYLOAD);
    // A fresh Node child is still compiling its hot code (see `run_pipe`).
    children.run(&small, 1, CHILD_WARMUP_MESSAGES / 2).map_err(|e| format!("warm-up: {e}"))?;
    children.run(&small, 16, CHILD_WARMUP_MESSAGES / 2).map_err(|e| format!("warm-up: {e}"))?;
    let windows: &[usize] = if o.bench { HOST_WINDOWS } else { &[1, 16] };
    for &window in windows {
        let b = o.budget;
        // Calibrate: double the per-child count until `warm` has passed.
        let mut per_child = (2 * window).max(8);
        let (mut warm_msgs, mut warm_ns) = (0usize, 0.0f64);
        #[allow(clippy::cast_precision_loss)]
        let warm_budget = b.warm.as_nanos() as f64;
        let per_msg = loop {
            let r = children.run(&small, window, per_child).map_err(|e| format!("w={window}: {e}"))?;
            warm_msgs += per_child * count;
            warm_ns += r.elapsed_ns;
            #[allow(clippy::cast_precision_loss)]
            let per_msg = (r.elapsed_ns / (per_child * count) as f64).max(1.0);
            if warm_ns >= warm_budget || per_child * count >= b.max_n {
                break per_msg;
            }
            per_child = (per_child * 2).min(b.max_n);
        };
        let lo = b.min_n.max(2 * window);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
        let n = ((b.measure.as_nanos() as f64 / per_msg) as usize).clamp(lo, b.max_n.max(lo));
        let per_child = n.div_ceil(count).max(lo);
        let mut r = children.run(&small, window, per_child).map_err(|e| format!("w={window}: {e}"))?;
        let total = per_child * count;
        let key = Key { pass: &o.pass, scenario, path: id, label, payload: HOST_PAYLOAD, window };
        let summary = summarize(&mut r.latencies).ok_or("no samples")?;
        let note = match (which, count) {
            (host::Host::Thread, 1) => "one caller thread".to_owned(),
            (host::Host::Thread, n) => format!("{n} children, one caller thread each; window per child"),
            (host::Host::Tokio, 1) => "one task on a multi-thread runtime (a worker per CPU)".to_owned(),
            (host::Host::Tokio, n) => {
                format!("{n} children, one task each on a multi-thread runtime (a worker per CPU); window per child")
            }
        };
        let mut rec = timing_record("roundtrip", &key, summary, warm_msgs, 1, r.elapsed_ns, total, &note);
        // The host's own CPU per message (its threads or tasks, not the Node children's).
        if let Some(cpu) = r.cpu_ns {
            #[allow(clippy::cast_precision_loss)]
            let per_msg = cpu / total as f64;
            rec["parent_cpu_ns_per_msg"] = json!(per_msg.round());
        }
        let mps = rec["throughput"]["msgs_per_s"].as_f64().unwrap_or(0.0);
        println!(
            "{}  host CPU {:.0} ns/msg",
            progress_line(&key, &summary, 1, mps),
            rec["parent_cpu_ns_per_msg"].as_f64().unwrap_or(f64::NAN)
        );
        records.push(rec);
    }
    children.close()
}

/// One stream path: its record, and the peak RSS of both sides.
fn run_stream(o: &Options, (id, scenario, label): (&str, &str, &str), records: &mut Vec<Value>) -> Result<(), String> {
    let total: usize = match (o.bench, o.quick) {
        (false, _) => 4 << 20,
        (true, true) => 64 << 20,
        (true, false) => 1 << 30,
    };
    let n = total / stream::MESSAGE_BYTES;
    let mut out = if id == "stream.rust-node" {
        let script = std::path::Path::new(&o.ts_child).with_file_name("bench").join("bytes-echo.js");
        stream::rust_to_node(&o.node, &script.to_string_lossy(), n)?
    } else if id == "floor.stream-rust-peer-cat" {
        stream::rust_peer_to_cat(n)?
    } else if id == "floor.stream-rust-node-raw" {
        let script = std::path::Path::new(&o.ts_child).with_file_name("bench").join("raw-echo.js");
        stream::rust_to_node_raw(&o.node, &script.to_string_lossy(), n)?
    } else {
        stream::rust_to_cat(n)?
    };
    let key = Key { pass: &o.pass, scenario, path: id, label, payload: stream::MESSAGE_BYTES, window: stream::WINDOW };
    let summary = summarize(&mut out.latencies).ok_or("no samples")?;
    #[allow(clippy::cast_precision_loss)]
    let note = format!("{n} × 1 MiB = {} GiB each way, in its own process", n as f64 / 1024.0);
    let rec = timing_record("roundtrip", &key, summary, stream::WARMUP, 1, out.elapsed_ns, n, &note);
    let mps = rec["throughput"]["msgs_per_s"].as_f64().unwrap_or(0.0);
    println!("{}", progress_line(&key, &summary, 1, mps));
    records.push(rec);
    let side = |side: &str, kib: u64, what: &str| {
        json!({"kind": "rss", "pass": o.pass, "scenario": "rss", "path": format!("rss.{id}.{side}"),
            "label": format!("{id}: {what}"), "driver": "rust", "side": side, "kib": kib})
    };
    if let Some(kib) = pipe::vm_hwm_kib("/proc/self/status") {
        records.push(side("parent", kib, "the Rust parent (its own process)"));
    }
    if let Some(kib) = out.child_kib {
        let child = match id {
            "stream.rust-node" => "the Node serveStdio child",
            "floor.stream-rust-node-raw" => "the raw Node echo child",
            _ => "cat",
        };
        records.push(side("child", kib, child));
    }
    Ok(())
}

fn run_cost(
    o: &Options,
    kind: &str,
    id: &str,
    scenario: &str,
    label: &str,
    payloads: &[usize],
    records: &mut Vec<Value>,
) -> Result<(), String> {
    for &size in payloads {
        let data = payload(size);
        let line = format!(r#"{{"msg_type":"data","data":"{data}","id":7}}"#);
        let expected = format!("{{\"msg_type\":\"ack\",\"data\":\"Acknowledged: {data}\",\"id\":7}}\n");
        let b = o.budget;
        let timed = match kind {
            "core" => cost::time_calls(
                b.warm,
                b.measure,
                b.min_n,
                b.max_n,
                expected.as_bytes(),
                cost::core_handle_line(line.as_bytes()),
            ),
            _ => cost::time_calls(
                b.warm,
                b.measure,
                b.min_n,
                b.max_n,
                expected.as_bytes(),
                cost::serde_round_trip(&line),
            ),
        }
        .map_err(|e| format!("{}: {e}", fmt_size(size)))?;
        let mut samples = timed.samples;
        let summary = summarize(&mut samples).ok_or("no samples")?;
        let key = Key { pass: &o.pass, scenario, path: id, label, payload: size, window: 1 };
        let rec =
            timing_record("cost", &key, summary, timed.warmup_calls, timed.batch, timed.elapsed_ns, timed.checked, "");
        let mps = rec["throughput"]["msgs_per_s"].as_f64().unwrap_or(0.0);
        println!("{}", progress_line(&key, &summary, timed.batch, mps));
        records.push(rec);
    }
    Ok(())
}
