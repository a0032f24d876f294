//! Process helpers for the fault and load tests: run the real binary, watch its stderr as it
//! arrives, signal it, read its peak memory, and check that processes are really gone.
#![allow(dead_code, missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub const BIN: &str = env!("CARGO_BIN_EXE_rust-ts-ipc");

/// Generous: these machines are shared and noisy. Nothing here asserts a tight time.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The compiled TypeScript child, or `None` (with a note) when it is not built and the run
/// does not insist on it (`npm test` sets RUST_TS_IPC_REQUIRE_NODE=1).
pub fn ts_child() -> Option<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("ts-app/dist/main.js");
    if script.exists() {
        return Some(script);
    }
    if std::env::var_os("RUST_TS_IPC_REQUIRE_NODE").is_some() {
        panic!("{} is missing: run `npm run build` first", script.display());
    }
    skip(&format!("{} is not built (run `npm run build`)", script.display()));
    None
}

/// Says, past the test harness's output capture, that a test is skipping its checks: a
/// skipped test still shows as passed, so the reason must be seen.
pub fn skip(reason: &str) {
    let test = thread::current().name().unwrap_or("a test").to_owned();
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
}

/// The write end of a pipe whose read end is already closed: every write fails with EPIPE.
pub fn closed_pipe() -> OwnedFd {
    let mut reader = Command::new("true").stdin(Stdio::piped()).spawn().unwrap();
    let write_end = OwnedFd::from(reader.stdin.take().unwrap());
    reader.wait().unwrap();
    write_end
}

thread_local! {
    /// The demo's `--runtime` for the test running on this thread (see [`with_runtime`]).
    static RUNTIME: std::cell::Cell<Option<&'static str>> = const { std::cell::Cell::new(None) };
}

/// Runs `test` with the demo started under `--runtime runtime` by [`demo_command`],
/// [`Running::demo_with_shell`] and [`demo_args`].
pub fn with_runtime(runtime: &'static str, test: fn()) {
    RUNTIME.with(|r| r.set(Some(runtime)));
    test();
}

/// The current test's `--runtime` (`default` outside [`with_runtime`]): for names of files
/// and markers, so that a test's two runs side by side do not share them.
pub fn runtime_name() -> &'static str {
    RUNTIME.with(std::cell::Cell::get).unwrap_or("default")
}

/// `args` for the binary, with the current test's `--runtime` after a leading `demo`.
pub fn demo_args<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    if let (Some(&"demo"), Some(runtime)) = (args.first(), RUNTIME.with(std::cell::Cell::get)) {
        all.splice(1..1, ["--runtime", runtime]);
    }
    all
}

/// `rust-ts-ipc demo` under the current test's runtime.
pub fn demo_command() -> Command {
    let mut command = Command::new(BIN);
    command.args(demo_args(&["demo"]));
    command
}

/// Each test inside runs once per demo runtime, as `NAME::runtime_thread` and
/// `NAME::runtime_tokio` (the same body, its demos started with that `--runtime` through
/// [`demo_command`], [`demo_args`] or [`Running::demo_with_shell`]; the latter only in builds
/// with the `tokio` feature). Write the tests without `#[test]`.
#[allow(unused_macros)]
macro_rules! on_both_runtimes {
    ($($(#[$attr:meta])* fn $name:ident() $body:block)*) => {$(
        $(#[$attr])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn body() $body

            #[test]
            fn runtime_thread() {
                crate::support::with_runtime("thread", body);
            }

            #[test]
            #[cfg(feature = "tokio")]
            fn runtime_tokio() {
                crate::support::with_runtime("tokio", body);
            }
        }
    )*};
}

/// A running process whose stdout is collected and whose stderr is collected and also
/// passed on line by line, so a test can wait for "the child has started".
pub struct Running {
    pub child: Child,
    stderr: Arc<Mutex<String>>,
    /// NUL bytes seen on stderr, counted in full even where a line is kept only in part.
    nuls: Arc<AtomicU64>,
    lines: Receiver<String>,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr_reader: Option<JoinHandle<()>>,
}

/// How a process ended, and what it wrote.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// NUL bytes on stderr, all of them (`stderr` keeps at most 16 MiB of a line).
    pub stderr_nuls: u64,
    pub took: Duration,
}

impl Running {
    /// Starts `command` with stdin from /dev/null.
    pub fn spawn(command: &mut Command) -> Running {
        let mut child = command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let stdout = thread::spawn(move || {
            let mut all = Vec::new();
            let _ = stdout.read_to_end(&mut all);
            all
        });
        let collected = Arc::new(Mutex::new(String::new()));
        let (tx, lines) = mpsc::channel();
        let sink = Arc::clone(&collected);
        let nuls = Arc::new(AtomicU64::new(0));
        let nul_count = Arc::clone(&nuls);
        let stderr_reader = thread::spawn(move || {
            // Keeps at most LINE_CAP bytes of each line, so a test can flood stderr without
            // the test itself growing with it.
            const LINE_CAP: usize = 16 * 1024 * 1024;
            let mut reader = BufReader::with_capacity(64 * 1024, stderr);
            let mut line = Vec::new();
            loop {
                let (used, ended) = match reader.fill_buf() {
                    Ok([]) | Err(_) => break,
                    Ok(chunk) => {
                        let end = chunk.iter().position(|&b| b == b'\n');
                        let piece = &chunk[..end.map_or(chunk.len(), |e| e + 1)];
                        let zeros = piece.iter().filter(|&&b| b == 0).count() as u64;
                        nul_count.fetch_add(zeros, Ordering::Relaxed);
                        let room = LINE_CAP.saturating_sub(line.len());
                        line.extend_from_slice(&piece[..piece.len().min(room)]);
                        (piece.len(), end.is_some())
                    }
                };
                reader.consume(used);
                if ended {
                    let text = String::from_utf8_lossy(&line).into_owned();
                    sink.lock().unwrap().push_str(&text);
                    let _ = tx.send(text.trim_end().to_owned());
                    line.clear();
                }
            }
            if !line.is_empty() {
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&line));
            }
        });
        Running { child, stderr: collected, nuls, lines, stdout: Some(stdout), stderr_reader: Some(stderr_reader) }
    }

    /// The demo with `args`, its child being `sh -c script`.
    pub fn demo_with_shell(args: &[&str], script: &str) -> Running {
        Running::spawn(demo_command().args(args).args(["--", "sh", "-c", script]))
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    /// Waits for a stderr line for which `want` is true and returns it.
    pub fn wait_for_line(&self, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if want(&line) => return line,
                Ok(_) => {}
                Err(_) => panic!("no such stderr line; stderr so far:\n{}", self.stderr.lock().unwrap()),
            }
        }
    }

    /// The pid the child printed first thing (`echo $$ >&2`), forwarded by the demo as
    /// `[child] <pid>`.
    pub fn child_pid(&self) -> i32 {
        let line = self.wait_for_line(|l| l.strip_prefix("[child] ").is_some_and(|p| p.parse::<i32>().is_ok()));
        line["[child] ".len()..].parse().unwrap()
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid()), signal).unwrap();
    }

    /// Waits (at most [`PATIENCE`]) for the process to exit, then collects its output.
    pub fn finish(mut self) -> Finished {
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > PATIENCE {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("still running after {PATIENCE:?}; stderr:\n{}", self.stderr.lock().unwrap());
            }
            thread::sleep(Duration::from_millis(10));
        };
        let took = started.elapsed();
        let stdout = self.stdout.take().unwrap().join().unwrap();
        self.stderr_reader.take().unwrap().join().unwrap();
        let stderr = self.stderr.lock().unwrap().clone();
        let stdout = String::from_utf8_lossy(&stdout).into_owned();
        Finished { status, code: status.code(), stdout, stderr, stderr_nuls: self.nuls.load(Ordering::Relaxed), took }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A failed assertion must not leave the process behind.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Peak resident memory (VmHWM) of a live process, in KiB.
pub fn peak_rss_kib(pid: i32) -> u64 {
    peak_rss_kib_if_alive(pid).unwrap()
}

/// Peak resident memory (VmHWM) of a process in KiB, or `None` once it has exited.
pub fn peak_rss_kib_if_alive(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Samples `pid`'s peak RSS every 10 ms until it exits; the thread returns the last sample
/// (the peak is monotonic, so this is the peak up to at most 10 ms before the exit).
pub fn watch_peak_rss_kib(pid: i32) -> JoinHandle<u64> {
    thread::spawn(move || {
        let mut last = 0;
        while let Some(kib) = peak_rss_kib_if_alive(pid) {
            last = kib;
            thread::sleep(Duration::from_millis(10));
        }
        last
    })
}

/// `(state, parent pid, process group)` of a process, from /proc/<pid>/stat.
fn stat(pid: i32) -> Option<(char, i32, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain anything; fields follow the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, ppid, pgrp))
}

/// True once `pid` has exited: gone from /proc, or a zombie (dead; reaping an orphan is
/// init's job). Waits up to [`PATIENCE`] for that.
pub fn is_dead(pid: i32) -> bool {
    wait_until(|| stat(pid).is_none_or(|(state, _, _)| state == 'Z'))
}

/// True once `pid` is gone from /proc entirely: exited and reaped.
pub fn is_reaped(pid: i32) -> bool {
    wait_until(|| stat(pid).is_none())
}

/// True once no live process is left in process group `pgid`.
pub fn group_is_dead(pgid: i32) -> bool {
    wait_until(|| group_members(pgid).is_empty())
}

/// Live (non-zombie) processes in process group `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| stat(pid).is_some_and(|(state, _, pgrp)| pgrp == pgid && state != 'Z'))
        .collect()
}

fn wait_until(done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    false
}
