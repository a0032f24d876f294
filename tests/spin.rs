//! Spinning readers (`--spin-us`, `PeerOptions::spin`) over real pipes: every reply arrives
//! once and in order, end of input and a child's exit are still seen, lines and frames cut
//! across reads still decode, and a process that may run on one CPU only never spins.
//! Nothing here asserts a time.
#![cfg(target_os = "linux")]
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rust_ts_ipc::spin::{allowed_cpus, SpinDisabled};
use rust_ts_ipc::{Data, Encoding, Envelope, ErrorCode, Peer, PeerOptions, StderrMode};
use support::{skip, BIN, PATIENCE};

const SEED_OUTPUT: &str = include_str!("seed-output.txt");

/// The note `--spin-us` prints when it will not spin.
const ONE_CPU_NOTE: &str =
    "--spin-us 200: not spinning, as this process may run on one CPU only (affinity mask or CPU quota)";

/// Whether this machine lets a process spin at all; if not, says so (the spinning half of a
/// test is skipped, its correctness half still runs).
fn two_cpus() -> bool {
    let cpus = allowed_cpus();
    if cpus < 2 {
        skip(&format!("this process may run on {cpus} CPU(s): nothing spins here"));
    }
    cpus >= 2
}

fn data_line(payload: &str, id: u64) -> String {
    format!("{{\"msg_type\":\"data\",\"data\":\"{payload}\",\"id\":{id}}}\n")
}

fn ack_line(payload: &str, id: u64) -> String {
    format!("{{\"msg_type\":\"ack\",\"data\":\"Acknowledged: {payload}\",\"id\":{id}}}")
}

/// `serve --spin-us 200 --exit-after 0 ARGS` with piped stdio.
fn spinning_serve(args: &[&str]) -> (Child, ChildStdin, ChildStdout) {
    let mut child = Command::new(BIN)
        .args(["serve", "--spin-us", "200", "--exit-after", "0"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (stdin, stdout) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
    (child, stdin, stdout)
}

/// Waits for `child` to exit (at most [`PATIENCE`], then kills it and fails).
fn exits(mut child: Child) -> Output {
    let deadline = Instant::now() + PATIENCE;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the child did not exit after its stdin closed");
        }
        thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn spinning_serve_answers_lockstep_requests_once_each_in_order_and_exits_on_eof() {
    let (child, mut stdin, stdout) = spinning_serve(&[]);
    let mut replies = BufReader::new(stdout);
    let mut line = String::new();
    for id in 1..=2000u64 {
        let payload = format!("m{id}");
        stdin.write_all(data_line(&payload, id).as_bytes()).unwrap();
        line.clear();
        replies.read_line(&mut line).unwrap();
        assert_eq!(line.trim_end(), ack_line(&payload, id));
    }
    // Still spinning on an empty pipe: EOF is seen and ends the loop.
    drop(stdin);
    line.clear();
    assert_eq!(replies.read_line(&mut line).unwrap(), 0);
    let out = exits(child);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

#[test]
fn spinning_serve_answers_a_pipelined_burst_once_each_in_order() {
    const COUNT: u64 = 20_000;
    let (child, mut stdin, stdout) = spinning_serve(&[]);
    let writer = thread::spawn(move || {
        let mut batch = String::new();
        for id in 1..=COUNT {
            batch.push_str(&data_line("p", id));
            // Uneven writes, so that reads end anywhere in a line.
            if id % 37 == 0 {
                stdin.write_all(batch.as_bytes()).unwrap();
                batch.clear();
            }
        }
        stdin.write_all(batch.as_bytes()).unwrap();
    });
    let mut text = String::new();
    BufReader::new(stdout).read_to_string(&mut text).unwrap();
    writer.join().unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), usize::try_from(COUNT).unwrap());
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(*line, ack_line("p", i as u64 + 1));
    }
    assert_eq!(exits(child).status.code(), Some(0));
}

#[test]
fn spinning_serve_decodes_a_long_line_cut_into_many_writes() {
    let (child, mut stdin, stdout) = spinning_serve(&[]);
    let long = "x".repeat(300 * 1024);
    let request = data_line(&long, 1) + &data_line("short", 2);
    let writer = thread::spawn(move || {
        // Pieces with pauses between them: the reader takes each on its own, spinning or not.
        for (i, piece) in request.as_bytes().chunks(4093).enumerate() {
            stdin.write_all(piece).unwrap();
            if i % 8 == 0 {
                thread::sleep(Duration::from_micros(300));
            }
        }
        // And one line a byte at a time.
        for byte in data_line("bytewise", 3).as_bytes() {
            stdin.write_all(&[*byte]).unwrap();
        }
    });
    let mut text = String::new();
    BufReader::new(stdout).read_to_string(&mut text).unwrap();
    writer.join().unwrap();
    let expected = [ack_line(&long, 1), ack_line("short", 2), ack_line("bytewise", 3)].join("\n") + "\n";
    assert!(text == expected, "replies differ: got {} bytes, want {}", text.len(), expected.len());
    assert_eq!(exits(child).status.code(), Some(0));
}

#[test]
fn spinning_serve_decodes_msgpack_frames_cut_across_writes() {
    let (child, mut stdin, stdout) = spinning_serve(&["--encoding", "msgpack"]);
    let mut frames = Vec::new();
    let big = vec![7u8; 100_000];
    Envelope::new("bytes", Data::Bytes(big.clone())).with_id(1).encode_frame_into(&mut frames).unwrap();
    Envelope::new("data", "f").with_id(2).encode_frame_into(&mut frames).unwrap();
    let writer = thread::spawn(move || {
        // The first piece ends inside the first frame's 4-byte header.
        let (head, rest) = frames.split_at(2);
        stdin.write_all(head).unwrap();
        thread::sleep(Duration::from_millis(2));
        for piece in rest.chunks(1000) {
            stdin.write_all(piece).unwrap();
        }
    });
    let mut out = Vec::new();
    BufReader::new(stdout).read_to_end(&mut out).unwrap();
    writer.join().unwrap();
    let mut expected = Vec::new();
    Envelope::new("bytes", Data::Bytes(big)).with_id(1).encode_frame_into(&mut expected).unwrap();
    Envelope::new("ack", "Acknowledged: f").with_id(2).encode_frame_into(&mut expected).unwrap();
    assert!(out == expected, "replies differ: got {} bytes, want {}", out.len(), expected.len());
    assert_eq!(exits(child).status.code(), Some(0));
}

/// The first CPU this process may run on.
fn first_cpu() -> usize {
    use nix::sched::{sched_getaffinity, CpuSet};
    use nix::unistd::Pid;
    let mask = sched_getaffinity(Pid::from_raw(0)).unwrap();
    (0..CpuSet::count()).find(|&cpu| mask.is_set(cpu).unwrap()).unwrap()
}

#[test]
fn serve_pinned_to_one_cpu_by_taskset_says_it_does_not_spin_and_answers() {
    let cpu = first_cpu().to_string();
    let taskset = Command::new("taskset").args(["-c", &cpu, "true"]).status();
    if !taskset.is_ok_and(|s| s.success()) {
        skip("taskset is not available (util-linux)");
        return;
    }
    let mut child = Command::new("taskset")
        .args(["-c", &cpu, BIN, "serve", "--spin-us", "200"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input: String = (1..=3).map(|id| data_line("one", id)).collect();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    let out = exits(child);
    let expected: String = (1..=3).map(|id| ack_line("one", id) + "\n").collect();
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
    assert_eq!(String::from_utf8_lossy(&out.stderr), format!("rust-ts-ipc serve: {ONE_CPU_NOTE}\n"));
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn serve_that_may_use_two_cpus_spins_without_a_word() {
    if !two_cpus() {
        return;
    }
    let (child, stdin, _stdout) = spinning_serve(&[]);
    drop(stdin);
    let out = exits(child);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn demo_with_spin_against_spinning_serve_prints_the_seed_output() {
    for encoding in ["json", "msgpack"] {
        let out = Command::new(BIN)
            .args(["demo", "--spin-us", "200", "--encoding", encoding, "--", BIN, "serve", "--spin-us", "200"])
            .args(["--encoding", encoding])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            SEED_OUTPUT,
            "{encoding}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(0));
    }
}

#[test]
fn spin_us_beyond_a_second_is_a_usage_error_naming_the_value() {
    for command in ["serve", "demo"] {
        let out = Command::new(BIN).args([command, "--spin-us", "1000001"]).stdin(Stdio::null()).output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with(
                "rust-ts-ipc: --spin-us 1000001 is too long: spinning is for replies that come within microseconds \
                 (at most 1000000)\n"
            ),
            "{stderr}"
        );
    }
}

fn spinning_options(encoding: Encoding) -> PeerOptions {
    PeerOptions { spin: Duration::from_micros(200), encoding, stderr: StderrMode::Discard, ..PeerOptions::default() }
}

#[test]
fn spinning_peer_gets_every_reply_once_in_order_lockstep_and_pipelined() {
    for (encoding, flag) in [(Encoding::Json, "json"), (Encoding::Msgpack, "msgpack")] {
        let peer = Peer::spawn(
            Command::new(BIN).args(["serve", "--spin-us", "200", "--exit-after", "0", "--encoding", flag]),
            spinning_options(encoding),
        )
        .unwrap();
        let spins = two_cpus();
        assert_eq!(peer.spin_disabled(), if spins { None } else { Some(SpinDisabled::OneCpu) });
        let mut id = 0;
        for i in 0..500 {
            id += 1;
            let text = format!("l{i}");
            let reply = peer.request("data", text.as_str()).unwrap();
            assert_eq!(reply, Envelope::new("ack", format!("Acknowledged: {text}")).with_id(id));
        }
        let pending: Vec<_> = (0..3000).map(|i| peer.send("data", format!("p{i}")).unwrap()).collect();
        for (i, p) in pending.into_iter().enumerate() {
            id += 1;
            assert_eq!(p.id(), id);
            assert_eq!(p.wait().unwrap(), Envelope::new("ack", format!("Acknowledged: p{i}")).with_id(id));
        }
        assert_eq!(peer.close().unwrap().code(), Some(0));
        let stats = peer.stats();
        assert_eq!((stats.requests, stats.replies, stats.unsolicited), (3500, 3500, 0));
        // The first read comes before any request: it finds nothing and spins.
        assert_eq!(stats.spins > 0, spins, "{stats:?}");
        assert!(stats.spin_hits <= stats.spins);
    }
}

#[test]
fn spinning_peer_sees_its_child_exit_during_a_request() {
    let mut sh = Command::new("sh");
    sh.args(["-c", "read line; echo gone >&2; exit 3"]);
    let peer = Peer::spawn(&mut sh, spinning_options(Encoding::Json)).unwrap();
    let error = peer.request("data", "x").unwrap_err();
    assert_eq!(error.code(), ErrorCode::PeerExited, "{error}");
    assert_eq!(peer.close().unwrap().code(), Some(3));
}

#[test]
fn peer_spawned_by_a_thread_pinned_to_one_cpu_never_spins() {
    thread::spawn(|| {
        use nix::sched::{sched_setaffinity, CpuSet};
        use nix::unistd::Pid;
        let mut one = CpuSet::new();
        one.set(first_cpu()).unwrap();
        // This thread only (pid 0); the peer's threads and its child inherit the mask.
        sched_setaffinity(Pid::from_raw(0), &one).unwrap();
        let peer =
            Peer::spawn(Command::new(BIN).args(["serve", "--exit-after", "0"]), spinning_options(Encoding::Json))
                .unwrap();
        assert_eq!(peer.spin_disabled(), Some(SpinDisabled::OneCpu));
        for id in 1..=50u64 {
            assert_eq!(peer.request("data", "c").unwrap(), Envelope::new("ack", "Acknowledged: c").with_id(id));
        }
        assert_eq!(peer.close().unwrap().code(), Some(0));
        assert_eq!((peer.stats().spins, peer.stats().spin_hits), (0, 0));
    })
    .join()
    .unwrap();
}

#[test]
fn peer_without_spin_reports_it_off_and_counts_no_spins() {
    let peer = Peer::spawn(
        Command::new(BIN).args(["serve", "--exit-after", "0"]),
        PeerOptions { stderr: StderrMode::Discard, ..PeerOptions::default() },
    )
    .unwrap();
    assert_eq!(peer.spin_disabled(), Some(SpinDisabled::Off));
    assert_eq!(peer.request("data", "o").unwrap(), Envelope::new("ack", "Acknowledged: o").with_id(1));
    assert_eq!(peer.close().unwrap().code(), Some(0));
    assert_eq!((peer.stats().spins, peer.stats().spin_hits), (0, 0));
}

#[test]
fn peer_refuses_a_spin_beyond_a_second_naming_it_and_takes_one_second() {
    // `Duration::MAX` once panicked the reader thread (an `Instant` overflow); now any spin
    // beyond `--spin-us`'s bound is refused up front.
    for (spin, shown) in
        [(Duration::MAX, "18446744073709551615.999999999s"), (Duration::from_micros(1_000_001), "1.000001s")]
    {
        let options = PeerOptions { spin, stderr: StderrMode::Discard, ..PeerOptions::default() };
        let error = Peer::spawn(Command::new(BIN).args(["serve", "--exit-after", "0"]), options).unwrap_err();
        assert_eq!(error.code(), ErrorCode::InvalidArgument);
        assert_eq!(
            error.message(),
            format!(
                "PeerOptions::spin {shown} is too long: spinning is for replies that come within microseconds (at most 1s)"
            )
        );
    }
    let options = PeerOptions { spin: Duration::from_secs(1), stderr: StderrMode::Discard, ..PeerOptions::default() };
    let peer = Peer::spawn(Command::new(BIN).args(["serve", "--exit-after", "0"]), options).unwrap();
    assert_eq!(peer.request("data", "m").unwrap(), Envelope::new("ack", "Acknowledged: m").with_id(1));
    assert_eq!(peer.close().unwrap().code(), Some(0));
}

#[test]
fn spinning_serve_leaves_the_flags_of_a_shared_stdin_alone_and_answers_when_another_holder_changes_them() {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    use std::os::fd::AsFd;
    let flags = |fd: std::os::fd::BorrowedFd<'_>| OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL).unwrap());
    let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
    // This test holds the read end too, as a shell holds the stdin it passes on.
    let shared = read_end.try_clone().unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--spin-us", "200"])
        .stdin(Stdio::from(read_end))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = std::fs::File::from(write_end);
    let mut replies = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let mut ask = |id: u64, stdin: &mut std::fs::File| {
        stdin.write_all(data_line("s", id).as_bytes()).unwrap();
        line.clear();
        replies.read_line(&mut line).unwrap();
        assert_eq!(line.trim_end(), ack_line("s", id));
    };
    ask(1, &mut stdin);
    assert!(!flags(shared.as_fd()).contains(OFlag::O_NONBLOCK), "serve changed the shared stdin's flags");
    // The other holder turns O_NONBLOCK on while serve waits: serve still answers, once each.
    let on = flags(shared.as_fd()) | OFlag::O_NONBLOCK;
    fcntl(shared.as_fd(), FcntlArg::F_SETFL(on)).unwrap();
    thread::sleep(Duration::from_millis(20));
    ask(2, &mut stdin);
    // And off again.
    fcntl(shared.as_fd(), FcntlArg::F_SETFL(on - OFlag::O_NONBLOCK)).unwrap();
    thread::sleep(Duration::from_millis(20));
    ask(3, &mut stdin);
    drop(stdin);
    drop(shared);
    let out = exits(child);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn demo_pinned_to_one_cpu_by_taskset_says_it_does_not_spin_and_prints_the_seed_output() {
    let cpu = first_cpu().to_string();
    if !Command::new("taskset").args(["-c", &cpu, "true"]).status().is_ok_and(|s| s.success()) {
        skip("taskset is not available (util-linux)");
        return;
    }
    let out = Command::new("taskset")
        .args(["-c", &cpu, BIN, "demo", "--spin-us", "200", "--", BIN, "serve"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), SEED_OUTPUT);
    assert_eq!(String::from_utf8_lossy(&out.stderr), format!("rust-ts-ipc demo: {ONE_CPU_NOTE}\n"));
    assert_eq!(out.status.code(), Some(0));
}
