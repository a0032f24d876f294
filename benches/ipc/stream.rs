//! The stream scenario, Rust driving (issue 10): 1 GiB (`--quick`: 64 MiB) in 1 MiB `bytes`
//! messages, [`WINDOW`] in flight.
//!
//! - `stream.rust-node`: the library's [`rust_ts_ipc::Peer`] with `encoding: Msgpack` driving
//!   `node ts-app/dist/bench/bytes-echo.js`, the library's `serveStdio` echoing bytes. Each
//!   request is `peer.send("bytes", Data::Bytes(payload.clone()))`: the `Peer` owns what it
//!   sends, so the copy is part of what a Rust caller pays and is timed. Every reply is checked:
//!   `bytes`, its request's id, exactly the payload.
//! - `floor.stream-rust-cat`: the same frames (as `frames.ts` builds them) through `cat`, written
//!   by a writer thread without a copy, read back by length header and compared byte for byte.
//! - `floor.stream-rust-peer-cat` (context, not a goal's floor): the library's `Peer` exactly as
//!   in `stream.rust-node`, driving `cat` instead. `cat` writes each request frame back as it
//!   came, and the `Peer` takes it as the reply to that request (the same `msg_type`, `bytes`,
//!   the same id, the same payload), checked as `stream.rust-node` checks. Beside the two rows
//!   above, it splits the gap between them: what the Rust `Peer` costs as the driver (this row
//!   against the cat floor), and what the Node child costs (`stream.rust-node` against this).
//! - `floor.stream-rust-node-raw` (context, not a goal's floor): the cat floor's own driver and
//!   frames with `node ts-app/dist/bench/raw-echo.js` in place of `cat`: the least a Node process
//!   can do as a whole-message echo (each frame read whole into one reused buffer with
//!   `readSync`, written back with `writeSync`). Against the cat floor, it is what holding each
//!   message whole in a Node process costs, which no Node child of a request/reply protocol
//!   avoids (`cat` passes 128 KiB pieces through without holding a message).
//!
//! Both are echoes: every byte crosses the pipe both ways; MB/s counts the payload one way.
//! The driver runs each stream path in its own `cargo bench` process, so the parent's `VmHWM`
//! is the stream's own.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rust_ts_ipc::{Data, Encoding, Peer, PeerOptions};

use crate::pipe::vm_hwm_kib;

/// One message's payload.
pub const MESSAGE_BYTES: usize = 1024 * 1024;
/// Messages in flight.
pub const WINDOW: usize = 8;
/// Messages before the stream, not measured.
pub const WARMUP: usize = 16;

/// One measured stream.
pub struct StreamOut {
    /// Per message: send (or write) → its reply read, ns.
    pub latencies: Vec<f64>,
    /// First send → last reply, ns.
    pub elapsed_ns: f64,
    /// The child's peak RSS, KiB, just before it was closed.
    pub child_kib: Option<u64>,
}

/// `size` bytes of the payload alphabet (what the Node side sends too).
pub fn payload(size: usize) -> Vec<u8> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..size).map(|i| ALPHABET[i % ALPHABET.len()]).collect()
}

fn ns(d: Duration) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let x = d.as_nanos() as f64;
    x
}

/// `stream.rust-node`: `n` messages through the library's `Peer` to `node script`.
pub fn rust_to_node(node: &str, script: &str, n: usize) -> Result<StreamOut, String> {
    let mut command = Command::new(node);
    command.arg(script);
    peer_stream(&mut command, n)
}

/// `floor.stream-rust-peer-cat`: `n` messages through the library's `Peer` to `cat`, which
/// writes every request frame back: each is the reply to itself.
pub fn rust_peer_to_cat(n: usize) -> Result<StreamOut, String> {
    peer_stream(&mut Command::new("cat"), n)
}

/// `n` messages through the library's `Peer` to `command`, which must answer each `bytes`
/// request with a `bytes` reply of the same payload.
fn peer_stream(command: &mut Command, n: usize) -> Result<StreamOut, String> {
    let options = PeerOptions { encoding: Encoding::Msgpack, ..PeerOptions::default() };
    let shown = format!("{command:?}");
    let peer = Peer::spawn(command, options).map_err(|e| format!("spawning {shown}: {e}"))?;
    let data = payload(MESSAGE_BYTES);
    let run = |count: usize| -> Result<(Vec<f64>, f64), String> {
        let mut pending = VecDeque::with_capacity(WINDOW);
        let mut latencies = Vec::with_capacity(count);
        let mut sent = 0;
        let t0 = Instant::now();
        while latencies.len() < count {
            while sent < count && pending.len() < WINDOW {
                let at = Instant::now();
                let p = peer.send("bytes", Data::Bytes(data.clone())).map_err(|e| format!("send: {e}"))?;
                pending.push_back((at, p));
                sent += 1;
            }
            let Some((at, p)) = pending.pop_front() else { break };
            let id = p.id();
            let reply = p.wait().map_err(|e| format!("reply to id {id}: {e}"))?;
            latencies.push(ns(at.elapsed()));
            if reply.msg_type != "bytes" || reply.id != Some(id) || reply.data.as_bytes() != Some(&data[..]) {
                return Err(format!(
                    "wrong reply to id {id}: msg_type {:?}, id {:?}, {} bytes of data",
                    reply.msg_type,
                    reply.id,
                    reply.data.as_bytes().map_or(0, <[u8]>::len)
                ));
            }
        }
        let elapsed = ns(t0.elapsed());
        let s = peer.stats();
        if s.unsolicited != 0 || s.late_replies_dropped != 0 || s.timeouts != 0 {
            return Err(format!("the peer saw more than the replies asked for: {s:?}"));
        }
        Ok((latencies, elapsed))
    };
    let result = run(WARMUP).and_then(|_| run(n));
    let child_kib = vm_hwm_kib(&format!("/proc/{}/status", peer.pid()));
    let closed = peer.close().map_err(|e| format!("close: {e}"));
    let (latencies, elapsed_ns) = result?;
    closed?;
    Ok(StreamOut { latencies, elapsed_ns, child_kib })
}

/// The frame before the payload: length header, `{msg_type: "bytes", data: bin32(len)`.
fn frame_prefix(len: usize) -> Vec<u8> {
    let len32 = u32::try_from(len).unwrap_or(u32::MAX);
    let mut map = b"\x83\xa8msg_type\xa5bytes\xa4data".to_vec();
    map.push(0xc6);
    map.extend_from_slice(&len32.to_be_bytes());
    let body = u32::try_from(map.len() + len + 8).unwrap_or(u32::MAX);
    let mut out = body.to_le_bytes().to_vec();
    out.extend_from_slice(&map);
    out
}

/// `, id: uint32}` — the frame after the payload.
fn frame_suffix(id: u32) -> [u8; 8] {
    let b = id.to_be_bytes();
    [0xa2, b'i', b'd', 0xce, b[0], b[1], b[2], b[3]]
}

/// `floor.stream-rust-cat`: `n` frames through `cat`.
pub fn rust_to_cat(n: usize) -> Result<StreamOut, String> {
    raw_echo(&mut Command::new("cat"), "cat", n)
}

/// `floor.stream-rust-node-raw`: `n` frames, driven as through `cat`, through `script`
/// (ts-app/dist/bench/raw-echo.js) run by `node`.
pub fn rust_to_node_raw(node: &str, script: &str, n: usize) -> Result<StreamOut, String> {
    raw_echo(Command::new(node).arg(script), "node raw-echo.js", n)
}

/// `n` frames through `command`, an echo of raw bytes (`shown` in errors): written by a writer
/// thread without a copy, read back by length header and compared byte for byte.
fn raw_echo(command: &mut Command, shown: &str, n: usize) -> Result<StreamOut, String> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot run `{shown}`: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let data = std::sync::Arc::new(payload(MESSAGE_BYTES));
    let prefix = std::sync::Arc::new(frame_prefix(MESSAGE_BYTES));
    // The writer: an id in, that frame written. A frame's latency runs from when the reading
    // thread hands its id over (a slot in the window freed) to its echo read in full.
    let (go_tx, go_rx) = mpsc::channel::<u32>();
    let writer = {
        let (data, prefix) = (data.clone(), prefix.clone());
        let shown = shown.to_owned();
        thread::spawn(move || -> Result<(), String> {
            for id in go_rx {
                stdin
                    .write_all(&prefix)
                    .and_then(|()| stdin.write_all(&data))
                    .and_then(|()| stdin.write_all(&frame_suffix(id)))
                    .map_err(|e| format!("writing to {shown}: {e}"))?;
            }
            Ok(())
        })
    };
    let mut next_id: u32 = 1;
    let mut frame = vec![0u8; prefix.len() + MESSAGE_BYTES + 8];
    let mut run = |count: usize| -> Result<(Vec<f64>, f64), String> {
        let mut latencies = Vec::with_capacity(count);
        let base = next_id;
        let t0 = Instant::now();
        let mut sent = 0usize;
        let mut issued = VecDeque::with_capacity(WINDOW);
        while sent < count.min(WINDOW) {
            issued.push_back(Instant::now());
            go_tx.send(next_id).map_err(|_| "the writer thread ended")?;
            next_id += 1;
            sent += 1;
        }
        for i in 0..count {
            stdout.read_exact(&mut frame).map_err(|e| format!("reading from {shown}: {e}"))?;
            let at = issued.pop_front().ok_or("a frame came back that was not sent")?;
            latencies.push(ns(at.elapsed()));
            let p = prefix.len();
            let id = base + u32::try_from(i).unwrap_or(u32::MAX);
            if frame[..p] != prefix[..]
                || frame[p..p + MESSAGE_BYTES] != data[..]
                || frame[p + MESSAGE_BYTES..] != frame_suffix(id)
            {
                return Err(format!("{shown} echoed frame {i} (id {id}) wrong"));
            }
            if sent < count {
                issued.push_back(Instant::now());
                go_tx.send(next_id).map_err(|_| "the writer thread ended")?;
                next_id += 1;
                sent += 1;
            }
        }
        Ok((latencies, ns(t0.elapsed())))
    };
    let result = run(WARMUP).and_then(|_| run(n));
    let child_kib = vm_hwm_kib(&format!("/proc/{}/status", child.id()));

    drop(go_tx);
    // Closing our end first: a writer blocked on a full pipe (after a failure) then fails too.
    drop(stdout);
    let wrote = writer.join().unwrap_or_else(|_| Err("the writer thread panicked".to_owned()));
    let _ = child.wait();
    let (latencies, elapsed_ns) = result?;
    wrote?;
    Ok(StreamOut { latencies, elapsed_ns, child_kib })
}
