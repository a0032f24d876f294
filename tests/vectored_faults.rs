//! The vectored writes of big `bin` payloads under stress: random streams of every kind of
//! frame, split at random and written to an output that takes random amounts and is
//! interrupted, must come out as the one-buffer answers; a peer whose big request times out,
//! is cancelled, or whose child dies or is restarted mid-write must go on with whole frames;
//! and a failing output fails as the one-buffer write did.
#![cfg(target_os = "linux")]
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{self, IoSlice, Read, Write};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rust_ts_ipc::supervise::RestartPolicy;

use rust_ts_ipc::{
    serve_with, Data, Encoding, Envelope, ErrorCode, FrameDecoder, Handlers, Peer, PeerOptions, Responder,
    ResponderOptions, Service, Services, StderrMode, SPLICE_MIN_BYTES,
};

fn payload(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 7 + seed) % 251) as u8).collect()
}

fn frame_of(msg_type: &str, data: Data, id: Option<u64>) -> Vec<u8> {
    Envelope { msg_type: msg_type.to_owned(), data, id }.to_frame().unwrap()
}

/// xorshift64*: a deterministic stream of choices, so that a failing seed can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// An output that takes a random amount of what it is given (often a few bytes, so that writes
/// end inside a frame header), is interrupted one call in four, and records what it took.
struct Chaos {
    out: Vec<u8>,
    rng: Rng,
}
impl Write for Chaos {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if self.rng.below(4) == 0 {
            return Err(io::Error::from(io::ErrorKind::Interrupted));
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 {
            return Ok(0);
        }
        let take = match self.rng.below(4) {
            0 => 1 + self.rng.below(4.min(total)),
            1 => 1 + self.rng.below(total),
            _ => total,
        };
        let mut left = take;
        for b in bufs {
            let t = b.len().min(left);
            self.out.extend_from_slice(&b[..t]);
            left -= t;
            if left == 0 {
                break;
            }
        }
        Ok(take)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An input that hands out random amounts (a few bytes, up to 200 KB, or all it can), and is
/// interrupted one read in seven.
struct Splits {
    input: Vec<u8>,
    at: usize,
    rng: Rng,
}
impl Read for Splits {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.rng.below(7) == 0 {
            return Err(io::Error::from(io::ErrorKind::Interrupted));
        }
        let left = self.input.len() - self.at;
        let want = match self.rng.below(3) {
            0 => 1 + self.rng.below(8),
            1 => 1 + self.rng.below(200_000),
            _ => usize::MAX,
        };
        let n = want.min(buf.len()).min(left);
        buf[..n].copy_from_slice(&self.input[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// `bin` sizes at the `bin8`/`bin16`/`bin32` boundaries and around the splice threshold.
const EDGE: [usize; 10] = [0, 1, 255, 256, 65_535, 65_536, 65_537, 70_000, 131_072, 300_000];

/// `n` frames: bytes of the [`EDGE`] sizes under the given types, a string `data`, and frames
/// that are not maps; ids absent, small or large.
fn random_stream(rng: &mut Rng, n: usize, types: &[&str]) -> Vec<u8> {
    let mut input = Vec::new();
    for i in 0..n {
        let size = EDGE[rng.below(EDGE.len())];
        let id = match rng.below(3) {
            0 => None,
            _ => Some(rng.below(1 << 40) as u64),
        };
        let ty = types[rng.below(types.len())];
        match rng.below(10) {
            0 => input.extend(frame_of(ty, Data::from("hi"), id)),
            1 => input.extend([3, 0, 0, 0, 0x91, 0xa1, 0x78]),
            _ => input.extend(frame_of(ty, Data::Bytes(payload(size, i)), id)),
        }
    }
    input
}

fn responder(limit: usize) -> Responder {
    Responder::new(ResponderOptions {
        services: Services::ALL,
        exit_after: 0,
        max_frame_bytes: limit,
        ..Default::default()
    })
}

/// What `service` answers to `input` given whole, into one buffer (no splicing): the reference.
fn flat<S: Service>(mut service: S, input: &[u8], limit: usize) -> Vec<u8> {
    let mut decoder = FrameDecoder::new(limit);
    decoder.feed(input);
    let mut out = Vec::new();
    while let Some(packet) = decoder.next_packet() {
        service.answer_packet(packet, &mut out);
    }
    while let Some(packet) = decoder.finish() {
        service.answer_packet(packet, &mut out);
    }
    out
}

#[test]
fn random_streams_through_serve_equal_the_flat_answers() {
    let limit = 200_000;
    for seed in 1..40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut input = random_stream(&mut rng, 30, &["bytes", "data", "markdown", "nope"]);
        if seed % 3 == 0 {
            let cut = frame_of("bytes", Data::Bytes(payload(70_000, 1)), Some(9));
            input.extend(&cut[..cut.len() - 5]);
        }
        let want = flat(responder(limit), &input, limit);
        let mut writer = Chaos { out: Vec::new(), rng: Rng(seed + 17) };
        let reader = Splits { input: input.clone(), at: 0, rng: Rng(seed + 99) };
        serve_with(responder(limit), Encoding::Msgpack, reader, &mut writer).unwrap();
        assert!(writer.out == want, "seed {seed}: {} bytes, wanted {}", writer.out.len(), want.len());
        // Through std's `LineWriter` (what `Stdout` is), whose vectored write splits at newlines.
        let mut writer = io::LineWriter::new(Chaos { out: Vec::new(), rng: Rng(seed + 3) });
        let reader = Splits { input: input.clone(), at: 0, rng: Rng(seed + 4) };
        serve_with(responder(limit), Encoding::Msgpack, reader, &mut writer).unwrap();
        let got = &writer.get_ref().out;
        assert!(*got == want, "seed {seed}, LineWriter: {} bytes, wanted {}", got.len(), want.len());
    }
}

/// Handlers whose replies are big or small bytes (an echo, a doubled echo), JSON, or an error.
fn handlers<'a>() -> Handlers<'a> {
    Handlers::new()
        .on("echo", |req| Ok::<_, String>(req.data))
        .on("double", |req| match req.data {
            Data::Bytes(b) => Ok::<Data, String>([&b[..], &b[..]].concat().into()),
            other => Ok::<Data, String>(other),
        })
        .on("fail", |_req| Err::<Data, _>("nope".to_owned()))
        .on("json", |_req| Ok::<_, String>(Data::from(serde_json::json!({"k": [1, 2]}))))
}

#[test]
fn random_streams_through_serve_with_handlers_equal_the_flat_answers() {
    let limit = 400_000;
    for seed in 1..30u64 {
        let mut rng = Rng(seed.wrapping_mul(0x1234_5678_9ABC_DEF1));
        let input = random_stream(&mut rng, 30, &["echo", "double", "fail", "json", "missing"]);
        let want = flat(handlers().max_frame_bytes(limit), &input, limit);
        let mut writer = Chaos { out: Vec::new(), rng: Rng(seed + 5) };
        let reader = Splits { input: input.clone(), at: 0, rng: Rng(seed + 7) };
        serve_with(handlers().max_frame_bytes(limit), Encoding::Msgpack, reader, &mut writer).unwrap();
        assert!(writer.out == want, "seed {seed}: {} bytes, wanted {}", writer.out.len(), want.len());
    }
}

fn msgpack() -> PeerOptions {
    PeerOptions { encoding: Encoding::Msgpack, stderr: StderrMode::Discard, ..PeerOptions::default() }
}

/// The msgpack `serve` child, started after `delay` seconds of not reading its stdin.
fn serve_late(delay: &str) -> Command {
    let mut c = Command::new("sh");
    c.args(["-c", &format!("sleep {delay}; exec \"$0\" serve --encoding msgpack"), support::BIN]);
    c
}

/// A big request times out while the writer is in the middle of its frame (the child is not
/// reading yet); the frame is still written whole, and the next request's reply is right.
#[test]
fn thread_peer_a_timeout_mid_frame_leaves_no_half_frame() {
    let peer = Peer::spawn(&mut serve_late("1"), msgpack()).unwrap();
    let big = payload(8 << 20, 3);
    let e = peer.request_timeout("bytes", big.clone(), Duration::from_millis(200)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Timeout, "{e}");
    // One queued behind it, timed out unsent.
    let e = peer.request_timeout("bytes", big.clone(), Duration::from_millis(100)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Timeout, "{e}");
    for size in [SPLICE_MIN_BYTES, 10, SPLICE_MIN_BYTES + 1] {
        let small = payload(size, 1);
        let reply = peer.request("bytes", small.clone()).unwrap();
        assert!(reply.data.as_bytes() == Some(&small[..]), "{size}");
    }
    peer.close().unwrap();
}

/// The tokio peer: a request timed out, and one whose future is dropped, while the writer
/// task is in the middle of the frame; the frames are still written whole.
#[test]
fn tokio_peer_a_timeout_or_dropped_future_mid_frame_leaves_no_half_frame() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let peer = rust_ts_ipc::tokio::Peer::spawn(&mut serve_late("1"), msgpack()).unwrap();
        let big = payload(8 << 20, 3);
        let e = peer.request_timeout("bytes", big.clone(), Duration::from_millis(200)).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::Timeout, "{e}");
        let dropped = tokio::time::timeout(Duration::from_millis(50), peer.request("bytes", big.clone())).await;
        assert!(dropped.is_err());
        for size in [SPLICE_MIN_BYTES, 10, SPLICE_MIN_BYTES + 1, 3 << 20] {
            let small = payload(size, 1);
            let reply = peer.request("bytes", small.clone()).await.unwrap();
            assert!(reply.data.as_bytes() == Some(&small[..]), "{size}");
        }
        peer.close().await.unwrap();
    });
}

/// A child that dies after reading a little of a big request: the tokio peer fails it as the
/// death says, and the next request too, without hanging; the child is gone.
#[test]
fn tokio_peer_a_child_killed_mid_big_write_is_peer_exited() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let script = "head -c 1000 > /dev/null; echo gone >&2; kill -9 $$";
        let options = PeerOptions { timeout: support::PATIENCE, ..msgpack() };
        let peer = rust_ts_ipc::tokio::Peer::spawn(Command::new("sh").args(["-c", script]), options).unwrap();
        let pid = peer.pid();
        let error = peer.request("bytes", payload(8 << 20, 0)).await.unwrap_err();
        assert_eq!(error.code(), ErrorCode::PeerExited, "{error}");
        assert!(error.to_string().contains("killed by signal: 9 (SIGKILL)"), "{error}");
        let later = peer.request("bytes", payload(SPLICE_MIN_BYTES, 0)).await.unwrap_err();
        assert_eq!(later.code(), ErrorCode::PeerExited, "{later}");
        let _ = peer.close().await;
        assert!(support::is_reaped(i32::try_from(pid).unwrap()), "the child {pid} was reaped");
    });
}

/// A child command per start: the `n`th script for the `n`th start (the last one thereafter).
fn scripts(list: Vec<String>, made: Arc<AtomicUsize>) -> impl FnMut() -> Command + Send + 'static {
    move || {
        let n = made.fetch_add(1, Ordering::SeqCst);
        let mut command = Command::new("sh");
        command.args(["-c", &list[n.min(list.len() - 1)], support::BIN]);
        command
    }
}

/// Under a restart policy, a child that dies in the middle of a big request fails it with
/// PEER_EXITED; the restarted child echoes the next big requests exactly (both peers).
#[test]
fn both_peers_restart_after_a_death_mid_big_write_and_the_next_big_request_is_echoed() {
    let list = vec!["head -c 5000 > /dev/null; exit 3".to_owned(), "exec \"$0\" serve --encoding msgpack".to_owned()];
    let options = || PeerOptions {
        restart: Some(RestartPolicy {
            base: Duration::from_millis(1),
            cap: Duration::from_millis(2),
            max_restarts: 5,
            window: Duration::from_secs(60),
        }),
        ..msgpack()
    };
    let big = payload(4 << 20, 8);
    let peer = Peer::spawn_with(scripts(list.clone(), Arc::new(AtomicUsize::new(0))), options()).unwrap();
    let e = peer.request("bytes", big.clone()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::PeerExited, "{e}");
    for _ in 0..2 {
        let r = peer.request("bytes", big.clone()).unwrap();
        assert!(r.data.as_bytes() == Some(&big[..]));
    }
    peer.close().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let peer =
            rust_ts_ipc::tokio::Peer::spawn_with(scripts(list, Arc::new(AtomicUsize::new(0))), options()).unwrap();
        let e = peer.request("bytes", big.clone()).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::PeerExited, "{e}");
        for _ in 0..2 {
            let r = peer.request("bytes", big.clone()).await.unwrap();
            assert!(r.data.as_bytes() == Some(&big[..]));
        }
        peer.close().await.unwrap();
    });
}

/// stdout non-blocking and full: the write fails as the old one-buffer write did (WouldBlock).
#[test]
fn serve_to_a_full_nonblocking_pipe_fails_with_would_block_as_before() {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    use std::os::fd::AsFd;
    let (read_end, write_end) = nix::unistd::pipe().unwrap();
    fcntl(write_end.as_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).unwrap();
    let input = frame_of("bytes", Data::Bytes(payload(1 << 20, 0)), Some(1));
    let served = serve_with(
        responder(16 << 20),
        Encoding::Msgpack,
        Splits { input, at: 0, rng: Rng(3) },
        std::fs::File::from(write_end),
    );
    match served {
        Err(rust_ts_ipc::ServeError::Write(e)) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock),
        other => panic!("{other:?}"),
    }
    drop(read_end);
}

/// An output that takes nothing more (a full fixed buffer): the error says what the one-buffer
/// write said, whether or not the reply holds a spliced payload.
#[test]
fn serve_into_a_full_buffer_says_what_the_one_buffer_write_said() {
    for size in [10, SPLICE_MIN_BYTES - 1, SPLICE_MIN_BYTES, 1 << 20] {
        let input = frame_of("bytes", Data::Bytes(payload(size, 0)), Some(1));
        let mut room = [0u8; 8];
        let served = serve_with(responder(16 << 20), Encoding::Msgpack, &input[..], &mut room[..]);
        let text = served.err().map(|e| e.to_string());
        assert_eq!(text.as_deref(), Some("writing stdout: failed to write whole buffer"), "{size} bytes");
    }
}

/// Whether the peer's writer has taken all `n` lines off its queue (`close` drops the
/// requests' lines still queued).
fn all_taken(stats: rust_ts_ipc::PeerStats, n: usize) -> bool {
    stats.requests + stats.notifications >= n as u64
}

/// The frames in `wire`, each whole (a frame cut or interleaved with another fails to parse
/// or to match), sorted: a multiset to compare with what was sent.
fn sorted_frames(wire: &[u8]) -> Vec<Vec<u8>> {
    let mut decoder = FrameDecoder::new(64 << 20);
    decoder.feed(wire);
    let mut frames = Vec::new();
    while let Some(packet) = decoder.next_packet() {
        match packet {
            rust_ts_ipc::Packet::Frame { bytes, .. } => {
                frames.push([&(bytes.len() as u32).to_le_bytes()[..], bytes].concat());
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(decoder.finish().is_none(), "the wire ends with a whole frame");
    frames.sort();
    frames
}

/// Four threads send big and small bytes at once through one thread peer: every frame
/// reaches the child whole, none cut by or mixed with another's.
#[test]
fn thread_peer_concurrent_senders_of_big_and_small_bytes_put_whole_frames_on_the_wire() {
    let file = std::env::temp_dir().join(format!("rust-ts-ipc-vectored-faults-{}", std::process::id()));
    let script = format!("sleep 0.2; cat > '{}'", file.display());
    let peer = Arc::new(Peer::spawn(Command::new("sh").args(["-c", &script]), msgpack()).unwrap());
    let sent: Vec<Vec<Vec<u8>>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4u64)
            .map(|t| {
                let peer = Arc::clone(&peer);
                scope.spawn(move || {
                    let mut rng = Rng(t + 1);
                    let mut frames = Vec::new();
                    for i in 0..25 {
                        let data = payload(EDGE[rng.below(EDGE.len())], (t * 100 + i) as usize);
                        if rng.below(3) == 0 {
                            peer.notify("bytes", data.clone()).unwrap();
                            frames.push(frame_of("bytes", Data::Bytes(data), None));
                        } else {
                            let pending = peer.send("bytes", data.clone()).unwrap();
                            frames.push(frame_of("bytes", Data::Bytes(data), Some(pending.id())));
                        }
                    }
                    frames
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let since = std::time::Instant::now();
    while !all_taken(peer.stats(), 100) {
        assert!(since.elapsed() < support::PATIENCE, "the writer took {:?}", peer.stats());
        std::thread::sleep(Duration::from_millis(5));
    }
    Arc::try_unwrap(peer).ok().unwrap().close().unwrap();
    let wire = std::fs::read(&file).unwrap();
    let _ = std::fs::remove_file(&file);
    let mut want: Vec<Vec<u8>> = sent.into_iter().flatten().collect();
    want.sort();
    let got = sorted_frames(&wire);
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the frames on the wire are the frames sent");
}

/// The same with four tasks on one tokio peer.
#[test]
fn tokio_peer_concurrent_senders_of_big_and_small_bytes_put_whole_frames_on_the_wire() {
    let file = std::env::temp_dir().join(format!("rust-ts-ipc-vectored-faults-tokio-{}", std::process::id()));
    let script = format!("sleep 0.2; cat > '{}'", file.display());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut want: Vec<Vec<u8>> = runtime.block_on(async {
        let peer =
            Arc::new(rust_ts_ipc::tokio::Peer::spawn(Command::new("sh").args(["-c", &script]), msgpack()).unwrap());
        let workers: Vec<_> = (0..4u64)
            .map(|t| {
                let peer = Arc::clone(&peer);
                tokio::spawn(async move {
                    let mut rng = Rng(t + 11);
                    let mut frames = Vec::new();
                    for i in 0..25 {
                        let data = payload(EDGE[rng.below(EDGE.len())], (t * 100 + i) as usize);
                        if rng.below(3) == 0 {
                            peer.notify("bytes", data.clone()).await.unwrap();
                            frames.push(frame_of("bytes", Data::Bytes(data), None));
                        } else {
                            let pending = peer.send("bytes", data.clone()).await.unwrap();
                            frames.push(frame_of("bytes", Data::Bytes(data), Some(pending.id())));
                        }
                    }
                    frames
                })
            })
            .collect();
        let mut sent = Vec::new();
        for w in workers {
            sent.extend(w.await.unwrap());
        }
        let since = std::time::Instant::now();
        while !all_taken(peer.stats(), sent.len()) {
            assert!(since.elapsed() < support::PATIENCE, "the writer took {:?}", peer.stats());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        peer.close().await.unwrap();
        sent
    });
    let wire = std::fs::read(&file).unwrap();
    let _ = std::fs::remove_file(&file);
    want.sort();
    let got = sorted_frames(&wire);
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the frames on the wire are the frames sent");
}
