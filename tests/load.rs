//! Load through the pipe responders: 100 000 messages each way, pipelined back to back, with
//! every id checked (none lost, none duplicated, order kept); and the same through a reader
//! that is slower than the writer, where backpressure must hold the writer back and keep the
//! responder's memory flat.
// Linux only: signals, process groups and /proc.
#![cfg(target_os = "linux")]
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rust_ts_ipc::{decode_message, Message};
use support::{peak_rss_kib, ts_child, BIN};

const MESSAGES: u64 = 100_000;

/// `serve`, and the Node child when it is built, answering forever (`--exit-after 0`).
fn responders() -> Vec<(String, Command)> {
    let mut all = Vec::new();
    let mut serve = Command::new(BIN);
    serve.args(["serve", "--exit-after", "0"]);
    all.push(("serve".to_owned(), serve));
    if let Some(script) = ts_child() {
        let mut node = Command::new("node");
        node.arg(script).args(["--exit-after", "0"]);
        all.push(("node".to_owned(), node));
    }
    all
}

fn start(command: &mut Command) -> Child {
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap()
}

/// Writes `MESSAGES` data messages with ids 0.. as fast as the pipe takes them, on a thread.
/// The returned counter is how many of them the pipe has taken so far.
fn flood(child: &mut Child, payload: &str) -> (thread::JoinHandle<std::process::ChildStdin>, Arc<AtomicU64>) {
    let mut stdin = child.stdin.take().unwrap();
    let payload = payload.to_owned();
    let taken = Arc::new(AtomicU64::new(0));
    let progress = Arc::clone(&taken);
    let writer = thread::spawn(move || {
        let mut batch = Vec::with_capacity(64 * 1024);
        for id in 0..MESSAGES {
            Message::new("data", format!("{id}:{payload}")).with_id(id).encode_into(&mut batch);
            if batch.len() >= 60 * 1024 {
                stdin.write_all(&batch).unwrap();
                batch.clear();
                progress.store(id + 1, Ordering::SeqCst);
            }
        }
        stdin.write_all(&batch).unwrap();
        progress.store(MESSAGES, Ordering::SeqCst);
        stdin
    });
    (writer, taken)
}

/// Reads every reply and checks it is the ack for the next id in order.
fn check_acks(reader: &mut impl BufRead, payload: &str, mut between: impl FnMut(u64)) {
    let mut line = String::new();
    for want in 0..MESSAGES {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "replies stopped after {want}");
        let reply = decode_message(line.trim_end()).unwrap_or_else(|e| panic!("reply {want}: {e}: {line}"));
        assert_eq!(reply.id, Some(want), "lost, duplicated or reordered: {line}");
        assert_eq!(reply.msg_type, "ack");
        assert_eq!(reply.data, format!("Acknowledged: {want}:{payload}"));
        between(want);
    }
}

fn end(mut child: Child, stdin: std::process::ChildStdin, reader: &mut impl Read) {
    drop(stdin);
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "replies nobody asked for: {}", String::from_utf8_lossy(&rest));
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn a_hundred_thousand_pipelined_messages_come_back_in_order_with_every_id() {
    for (name, mut command) in responders() {
        let started = Instant::now();
        let mut child = start(&mut command);
        let (writer, _) = flood(&mut child, "x");
        let mut replies = BufReader::new(child.stdout.take().unwrap());
        check_acks(&mut replies, "x", |_| {});
        let stdin = writer.join().unwrap();
        eprintln!("{name}: {MESSAGES} messages each way in {:?}", started.elapsed());
        end(child, stdin, &mut replies);
    }
}

#[test]
fn a_slow_reader_holds_the_responder_back_instead_of_growing_its_memory() {
    // 100 000 × ½ KiB each way (about 50 MiB). The reader reads nothing until the writer has
    // been blocked for STALL_QUIET (or has sent everything, which only a responder that stops
    // waiting for its reader allows), then reads at about 8 MiB/s, far below the writer's
    // rate, to the end: every reply has to wait for the reader, again and again.
    const STALL_QUIET: Duration = Duration::from_secs(1);
    const STALL_MAX: Duration = Duration::from_secs(10);
    const REPLIES_PER_SEC: f64 = 15_000.0;
    // With backpressure the writer stays about 250 KiB ahead (two 64 KiB pipes plus the
    // responder's own buffers) and the peaks are about 3 MiB (serve) and 60-70 MiB (Node);
    // without it the writer gets the whole 50 MiB ahead and the peaks reach 60 and 190 MiB.
    // Pipes hold up to 1 MiB each on kernels with 64 KiB pages, hence the room here.
    const MAX_AHEAD_KIB: u64 = 4 * 1024;
    let payload = "p".repeat(500);
    let request_bytes = Message::new("data", format!("0:{payload}")).with_id(0).to_line().len() as u64;
    for (name, mut command) in responders() {
        let mut child = start(&mut command);
        let pid = i32::try_from(child.id()).unwrap();
        let stalled = Instant::now();
        let (writer, taken) = flood(&mut child, &payload);
        let (mut seen, mut quiet_since) = (0, Instant::now());
        while seen < MESSAGES && quiet_since.elapsed() < STALL_QUIET && stalled.elapsed() < STALL_MAX {
            thread::sleep(Duration::from_millis(10));
            let now = taken.load(Ordering::SeqCst);
            if now != seen {
                (seen, quiet_since) = (now, Instant::now());
            }
        }
        let stall = stalled.elapsed();
        let mut most_ahead = seen;
        let mut replies = BufReader::with_capacity(4096, child.stdout.take().unwrap());
        let throttled = Instant::now();
        check_acks(&mut replies, &payload, |n| {
            // How far the writer is past the reader: what the pipes and the responder hold.
            most_ahead = most_ahead.max(taken.load(Ordering::SeqCst).saturating_sub(n + 1));
            let due = Duration::from_secs_f64((n + 1) as f64 / REPLIES_PER_SEC);
            if let Some(early) = due.checked_sub(throttled.elapsed()) {
                thread::sleep(early);
            }
        });
        let stdin = writer.join().unwrap();
        let peak = peak_rss_kib(pid);
        let ahead_kib = most_ahead * request_bytes / 1024;
        eprintln!(
            "{name}: peak RSS {peak} KiB; the reader stalled {stall:.1?} (writer {seen} messages in), \
             then read for {:.1?}; the writer was at most {most_ahead} messages ({ahead_kib} KiB) ahead",
            throttled.elapsed()
        );
        assert!(ahead_kib < MAX_AHEAD_KIB, "{name} let its writer get {ahead_kib} KiB ahead of its reader");
        let bound = if name == "node" { 112 * 1024 } else { 8 * 1024 };
        assert!(peak < bound, "{name} peak RSS {peak} KiB, bound {bound} KiB");
        end(child, stdin, &mut replies);
    }
}
