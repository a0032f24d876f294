//! The demo's own stdout and stderr, closed or open with nobody reading them. Writing a
//! diagnostic never panics and never blocks a timeout, a signal or the child's shutdown; a
//! closed stdout is a normal end; what a stuck stderr cannot take is dropped and counted.
// Linux only: process groups, /proc, signals.
#![cfg(target_os = "linux")]
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::{closed_pipe, group_is_dead, is_dead, BIN, PATIENCE};

const SEED_OUTPUT: &str = include_str!("seed-output.txt");

/// A fresh directory for one test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rust-ts-ipc-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// The pid the child wrote to `path` (`echo $$ >path`), waiting for it to appear.
fn pid_from(path: &Path) -> i32 {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(pid) = fs::read_to_string(path).ok().and_then(|s| s.trim().parse().ok()) {
            return pid;
        }
        assert!(Instant::now() < deadline, "the child never wrote {}", path.display());
        thread::sleep(Duration::from_millis(10));
    }
}

/// Waits (at most [`PATIENCE`]) for `child` to exit; kills it and fails if it does not.
fn exit_of(child: &mut Child, what: &str) -> ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: the demo was still running after {PATIENCE:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// `rust-ts-ipc demo ARGS -- sh -c SCRIPT` with stdin from /dev/null and both outputs piped.
fn demo_piped(args: &[&str], script: &str) -> Child {
    Command::new(BIN)
        .arg("demo")
        .args(args)
        .args(["--", "sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// What the demo's stderr says of a child that wrote only NUL bytes: how many were forwarded,
/// and how many the last line says were dropped (`None` without such a line), with that line.
fn tally(stderr: &[u8]) -> (u64, Option<u64>, String) {
    let forwarded = stderr.iter().filter(|&&b| b == 0).count() as u64;
    let text = String::from_utf8_lossy(stderr);
    let last = text.lines().last().unwrap_or_default().replace('\0', "");
    let dropped = last
        .strip_prefix("rust-ts-ipc: dropped ")
        .and_then(|rest| rest.strip_suffix(" bytes of the child's stderr while our stderr was not taking them"))
        .map(|n| n.parse().unwrap());
    (forwarded, dropped, last)
}

/// Kills `pid` if it is still running after [`PATIENCE`], so a test reading a hung demo's
/// output fails instead of hanging too. Disarmed when dropped (before the pid is reaped).
struct KillAfterPatience(Arc<AtomicBool>);

impl KillAfterPatience {
    fn new(pid: u32) -> KillAfterPatience {
        let pid = Pid::from_raw(i32::try_from(pid).unwrap());
        let disarmed = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&disarmed);
        thread::spawn(move || {
            let deadline = Instant::now() + PATIENCE;
            while Instant::now() < deadline {
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                thread::sleep(Duration::from_millis(50));
            }
            let _ = kill(pid, Signal::SIGKILL);
        });
        KillAfterPatience(disarmed)
    }
}

impl Drop for KillAfterPatience {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn assert_nothing_left(child: i32) {
    assert!(is_dead(child), "child {child} is still running");
    assert!(group_is_dead(child), "processes left in the child's group {child}");
}

#[test]
fn a_closed_stderr_neither_panics_the_demo_nor_leaves_its_child_running() {
    let dir = scratch("closed-stderr");
    let pid_file = dir.join("child.pid");
    let script = format!("echo $$ >{}; echo to-stderr >&2; exec sleep 30", pid_file.display());
    let mut demo = Command::new(BIN)
        .args(["demo", "--timeout-ms", "300", "--grace-ms", "300", "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(closed_pipe())
        .spawn()
        .unwrap();
    let child = pid_from(&pid_file);
    let status = exit_of(&mut demo, "closed stderr");
    // The timeout's exit code, not a panic (101) or an abort (SIGABRT).
    assert_eq!(status.code(), Some(5), "{status}");
    assert_nothing_left(child);
}

/// `rust-ts-ipc demo | head -1` and `rust-ts-ipc demo 2>&1 | head -1`: the reader goes away
/// after the first line, while the conversation goes on.
#[test]
fn a_closed_stdout_is_a_normal_end_and_the_child_is_still_stopped_cleanly() {
    for merged in [false, true] {
        let dir = scratch(if merged { "closed-stdout-merged" } else { "closed-stdout" });
        let (pid_file, go) = (dir.join("child.pid"), dir.join("go"));
        // Answers only once the reader is gone, then exits on EOF like any of our children.
        let script = format!(
            "echo $$ >{}; while [ ! -e {} ]; do sleep 0.01; done; echo answering >&2; exec {BIN} serve",
            pid_file.display(),
            go.display()
        );
        let mut head = Command::new("head").arg("-n1").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        let pipe = OwnedFd::from(head.stdin.take().unwrap());
        let mut command = Command::new(BIN);
        command.args(["demo", "--grace-ms", "5000", "--", "sh", "-c", &script]).stdin(Stdio::null());
        if merged {
            command.stderr(pipe.try_clone().unwrap());
        }
        let mut demo = command.stdout(pipe).spawn().unwrap();
        let watchdog = KillAfterPatience::new(demo.id());
        let mut first = String::new();
        head.stdout.take().unwrap().read_to_string(&mut first).unwrap();
        assert_eq!(first, "Rust: Sending initial message\n");
        head.wait().unwrap();
        let child = pid_from(&pid_file);
        fs::write(&go, "").unwrap();
        drop(watchdog);
        let status = exit_of(&mut demo, "closed stdout");
        assert_eq!(status.code(), Some(0), "merged={merged}: {status}");
        // Stopped by closing its stdin (`serve` exits on EOF), well within the grace period.
        assert_nothing_left(child);
    }
}

/// A stderr that is open but never read (a pipe nobody drains): the conversation, its
/// timeout and signals all work, and the demo exits on its own.
#[test]
fn a_stderr_nobody_reads_stalls_neither_the_conversation_nor_timeouts_nor_signals() {
    let dir = scratch("stuck-stderr");
    let pid_file = dir.join("child.pid");
    let flood = "head -c 300000 /dev/zero >&2";
    let cases: [(&str, String, Option<Signal>, i32); 3] = [
        ("answers", format!("echo $$ >{}; {flood}; exec {BIN} serve", pid_file.display()), None, 0),
        ("never answers", format!("echo $$ >{}; {flood}; exec sleep 60", pid_file.display()), None, 5),
        ("killed", format!("echo $$ >{}; {flood}; exec sleep 60", pid_file.display()), Some(Signal::SIGTERM), 143),
    ];
    for (what, script, signal, code) in cases {
        let _ = fs::remove_file(&pid_file);
        let timeout = if signal.is_some() { "60000" } else { "500" };
        let mut demo = Command::new(BIN)
            .args(["demo", "--timeout-ms", timeout, "--grace-ms", "300", "--", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Held open, never read until the demo has exited.
        let stderr = demo.stderr.take().unwrap();
        let stdout = demo.stdout.take().unwrap();
        let stdout = thread::spawn(move || {
            let mut all = String::new();
            BufReader::new(stdout).read_to_string(&mut all).unwrap();
            all
        });
        let child = pid_from(&pid_file);
        if let Some(signal) = signal {
            thread::sleep(Duration::from_millis(1500));
            kill(Pid::from_raw(i32::try_from(demo.id()).unwrap()), signal).unwrap();
        }
        let status = exit_of(&mut demo, what);
        assert_eq!(status.code(), Some(code), "{what}: {status}");
        if code == 0 {
            assert_eq!(stdout.join().unwrap(), SEED_OUTPUT);
        }
        assert_nothing_left(child);
        drop(stderr);
    }
}

/// What a stuck stderr could not take is counted, and said in the demo's last stderr line
/// once stderr moves again: nothing is lost without a word.
#[test]
fn child_stderr_dropped_while_our_stderr_was_stuck_is_counted_in_the_last_line() {
    const FLOOD: u64 = 4 * 1024 * 1024;
    let script = format!("head -c {FLOOD} /dev/zero >&2; exec {BIN} serve");
    let mut demo = demo_piped(&["--timeout-ms", "20000"], &script);
    let watchdog = KillAfterPatience::new(demo.id());
    let mut stderr = demo.stderr.take().unwrap();
    // The demo's last stdout line comes before its last stderr line.
    let mut stdout = BufReader::new(demo.stdout.take().unwrap());
    let mut seen = String::new();
    while !seen.ends_with("Communication complete!\n") {
        assert!(stdout.read_line(&mut seen).unwrap() > 0, "stdout ended early: {seen}");
    }
    assert_eq!(seen, SEED_OUTPUT);
    // Only now, with the conversation over, does anyone read the demo's stderr.
    let mut text = Vec::new();
    stderr.read_to_end(&mut text).unwrap();
    drop(watchdog);
    assert_eq!(exit_of(&mut demo, "stuck stderr").code(), Some(0));
    let (forwarded, dropped, last) = tally(&text);
    let dropped = dropped.unwrap_or_else(|| panic!("forwarded {forwarded}; last line: {last:?}"));
    assert!(dropped > 0, "{last}");
    assert_eq!(forwarded + dropped, FLOOD, "forwarded {forwarded} + dropped {dropped}");
}

/// A stderr read slowly (4 KiB every 50 ms, about 80 KB/s) holds the child back at most
/// about a second at a time, not for as long as it would take to pass its 4 MiB: the
/// conversation completes, and at the end the rest of the child's output is dropped so that
/// our own last lines go out; the count still adds up.
#[test]
fn a_slowly_read_stderr_holds_the_child_back_briefly_and_loses_no_count() {
    const FLOOD: u64 = 4 * 1024 * 1024;
    let script = format!("head -c {FLOOD} /dev/zero >&2; exec {BIN} serve");
    let started = Instant::now();
    let mut demo = demo_piped(&["--timeout-ms", "5000"], &script);
    let watchdog = KillAfterPatience::new(demo.id());
    let mut stderr = demo.stderr.take().unwrap();
    let reader = thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0; 4096];
        loop {
            match stderr.read(&mut buf) {
                Ok(0) | Err(_) => return all,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
            thread::sleep(Duration::from_millis(50));
        }
    });
    let mut stdout = String::new();
    demo.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    let text = reader.join().unwrap();
    drop(watchdog);
    assert_eq!(exit_of(&mut demo, "slow stderr").code(), Some(0));
    assert_eq!(stdout, SEED_OUTPUT);
    // Passing 4 MiB at this pace would take about 50 s.
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
    let (forwarded, dropped, last) = tally(&text);
    let dropped = dropped.unwrap_or_else(|| panic!("forwarded {forwarded}; last line: {last:?}"));
    assert_eq!(forwarded + dropped, FLOOD, "forwarded {forwarded} + dropped {dropped}");
}

/// The child's stderr that was still on its way when the demo finished (held back waiting
/// for room, or still in the pipe) is counted in the last line, not lost without a word.
#[test]
fn child_stderr_still_arriving_at_the_end_is_counted_too() {
    let dir = scratch("arriving");
    let log = dir.join("written");
    // Writes 4 KiB blocks until it is killed with the child's group, logging its total
    // after each (so the total written is the log, or one block more). The log is replaced
    // by a rename, never truncated in place: a kill between `>` truncating it and `echo`
    // writing it left it empty.
    let script = format!(
        "(n=0; while head -c 4096 /dev/zero >&2; do n=$((n+4096)); echo $n >{log}.new; mv {log}.new {log}; done) & \
         sleep 1; exec {BIN} serve",
        log = log.display()
    );
    let mut demo = demo_piped(&["--grace-ms", "300"], &script);
    let watchdog = KillAfterPatience::new(demo.id());
    let started = Instant::now();
    let mut stderr = demo.stderr.take().unwrap();
    // Reads at once, stalls from 0.3 s to 2 s (the conversation ends in between), then reads on.
    let reader = thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = vec![0; 65536];
        loop {
            let at = started.elapsed();
            if at > Duration::from_millis(300) && at < Duration::from_secs(2) {
                thread::sleep(Duration::from_secs(2) - at);
            }
            match stderr.read(&mut buf) {
                Ok(0) | Err(_) => return all,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    });
    let mut stdout = String::new();
    demo.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    let text = reader.join().unwrap();
    drop(watchdog);
    assert_eq!(exit_of(&mut demo, "arriving stderr").code(), Some(0));
    assert_eq!(stdout, SEED_OUTPUT);
    let logged: u64 = fs::read_to_string(&log).unwrap().trim().parse().unwrap();
    let (forwarded, dropped, last) = tally(&text);
    let dropped = dropped.unwrap_or(0);
    let counted = forwarded + dropped;
    assert!(
        counted == logged || counted == logged + 4096,
        "forwarded {forwarded} + dropped {dropped} = {counted}, written {logged} (+4096); last line {last:?}"
    );
}

/// A signal while the demo writes its last lines to a stderr nobody reads is not swallowed,
/// and a second Ctrl-C ends the wait at once.
#[test]
fn a_signal_while_the_last_lines_wait_for_stderr_is_not_swallowed() {
    let script = format!("head -c 300000 /dev/zero >&2; exec {BIN} serve");
    for (signals, code) in [(&[Signal::SIGTERM][..], 143), (&[Signal::SIGINT, Signal::SIGINT][..], 130)] {
        let mut demo = demo_piped(&[], &script);
        let stderr = demo.stderr.take().unwrap(); // held, never read
        let mut stdout = BufReader::new(demo.stdout.take().unwrap());
        let mut seen = String::new();
        while !seen.ends_with("Communication complete!\n") {
            assert!(stdout.read_line(&mut seen).unwrap() > 0, "stdout ended early: {seen}");
        }
        // Now waiting (seconds) for a stderr that takes nothing.
        let pid = Pid::from_raw(i32::try_from(demo.id()).unwrap());
        for signal in signals {
            thread::sleep(Duration::from_millis(200));
            kill(pid, *signal).unwrap();
        }
        let signalled = Instant::now();
        let status = exit_of(&mut demo, "signal while finishing");
        assert_eq!(status.code(), Some(code), "{signals:?}");
        if signals.len() == 2 {
            assert!(signalled.elapsed() < Duration::from_millis(800), "took {:?}", signalled.elapsed());
        }
        drop(stderr);
    }
}

/// A demo blocked on its own stdout (a full pipe nobody reads) while its child writes a byte
/// at a time: the reader stops after a few chunks instead of queueing a buffer per byte, and
/// a signal still ends the demo and its child.
#[test]
fn a_stuck_stdout_with_a_child_writing_bytes_one_by_one_keeps_the_demo_small() {
    // A pipe whose reader (`sleep`) never reads, filled before the demo gets it.
    let mut holder = Command::new("sleep").arg("60").stdin(Stdio::piped()).spawn().unwrap();
    let mut full = holder.stdin.take().unwrap();
    std::io::Write::write_all(&mut full, &[b'-'; 65536]).unwrap();
    let dir = scratch("stuck-stdout");
    let pid_file = dir.join("child.pid");
    let script = format!("echo $$ >{}; while :; do printf x; done", pid_file.display());
    let mut demo = Command::new(BIN)
        .args(["demo", "--timeout-ms", "500", "--grace-ms", "300", "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(OwnedFd::from(full))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = pid_from(&pid_file);
    thread::sleep(Duration::from_secs(3));
    let peak = support::peak_rss_kib(i32::try_from(demo.id()).unwrap());
    kill(Pid::from_raw(i32::try_from(demo.id()).unwrap()), Signal::SIGTERM).unwrap();
    let status = exit_of(&mut demo, "stuck stdout");
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(peak < 48 * 1024, "demo peak RSS {peak} KiB");
    // Its watcher's last resort: SIGKILL to the child's group, then exit 143.
    assert_eq!(status.code(), Some(143), "{status}");
    assert_nothing_left(child);
}
