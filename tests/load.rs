//! Load through the pipe responders: 100 000 messages each way, pipelined back to back, with
//! every id checked (none lost, none duplicated, order kept); and the same through a reader
//! that is slower than the writer, where backpressure must keep the responder's memory flat.
// Linux only: signals, process groups and /proc.
#![cfg(target_os = "linux")]
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
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
fn flood(child: &mut Child, payload: &str) -> thread::JoinHandle<std::process::ChildStdin> {
    let mut stdin = child.stdin.take().unwrap();
    let payload = payload.to_owned();
    thread::spawn(move || {
        let mut batch = Vec::with_capacity(64 * 1024);
        for id in 0..MESSAGES {
            Message::new("data", format!("{id}:{payload}")).with_id(id).encode_into(&mut batch);
            if batch.len() >= 60 * 1024 {
                stdin.write_all(&batch).unwrap();
                batch.clear();
            }
        }
        stdin.write_all(&batch).unwrap();
        stdin
    })
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
        let writer = flood(&mut child, "x");
        let mut replies = BufReader::new(child.stdout.take().unwrap());
        check_acks(&mut replies, "x", |_| {});
        let stdin = writer.join().unwrap();
        eprintln!("{name}: {MESSAGES} messages each way in {:?}", started.elapsed());
        end(child, stdin, &mut replies);
    }
}

#[test]
fn a_slow_reader_holds_the_responder_back_instead_of_growing_its_memory() {
    // 100 000 × ½ KiB each way (about 50 MiB): a responder that buffered instead of waiting
    // for its reader would grow far past the bound below.
    let payload = "p".repeat(500);
    for (name, mut command) in responders() {
        let mut child = start(&mut command);
        let pid = i32::try_from(child.id()).unwrap();
        let writer = flood(&mut child, &payload);
        // Let every pipe fill up before reading anything.
        thread::sleep(Duration::from_millis(300));
        let mut replies = BufReader::with_capacity(4096, child.stdout.take().unwrap());
        check_acks(&mut replies, &payload, |n| {
            if n % 10_000 == 0 {
                thread::sleep(Duration::from_millis(20));
            }
        });
        let stdin = writer.join().unwrap();
        let peak = peak_rss_kib(pid);
        eprintln!("{name}: peak RSS {peak} KiB after ~50 MiB each way through a slow reader");
        let bound = if name == "node" { 150 * 1024 } else { 16 * 1024 };
        assert!(peak < bound, "{name} peak RSS {peak} KiB");
        end(child, stdin, &mut replies);
    }
}
