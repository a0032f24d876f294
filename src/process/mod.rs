//! Child process control, shared by the binary's demo and by [`crate::Peer`]: spawning a
//! child in its own process group, always reaping it, and reading its stderr on a thread of
//! its own. This is the library's I/O layer; the protocol core does none of this.
//!
//! However a conversation ends, the child is stopped one defined way
//! ([`ChildProcess::shutdown`]): close its stdin → wait → SIGTERM to its group → wait up to
//! the grace period → SIGKILL → reap. Its group also holds anything it started, so nothing
//! it left behind outlives it. What a host adds (signal handling, where notes are written)
//! plugs in through [`Supervision`]. An untrusted child can be started with less
//! (environment, working directory, resource limits, Node's permission model): [`sandbox`].

pub mod sandbox;
mod sys;

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// How long a child gets to exit by itself once its stdin is closed, and again after SIGTERM.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(2);
/// Reads from a pipe in chunks of this size (the Linux pipe buffer size).
pub const READ_CHUNK: usize = 64 * 1024;
/// How much of a child's stderr [`StderrTail`] keeps for error messages.
pub const STDERR_TAIL_BYTES: usize = 4096;

/// `wait` after `now`, for a user-given wait: `Instant + Duration` panics on overflow, and
/// `Duration::MAX` (say) means "no limit", so a longer wait is cut to about a century.
pub(crate) fn deadline_after(now: Instant, wait: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(wait).unwrap_or_else(|| now + CENTURY)
}

/// The signals the shutdown sequence sends to the child's process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGTERM: asks the group to exit.
    Term,
    /// SIGKILL: ends the group.
    Kill,
}

impl StopSignal {
    /// `SIGTERM` or `SIGKILL`, for messages.
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Term => "SIGTERM",
            StopSignal::Kill => "SIGKILL",
        }
    }
}

/// How a shutdown ended: the child's status (`None` if it could not be waited for) and the
/// last signal it took to get there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// The child's exit status, once reaped.
    pub status: Option<ExitStatus>,
    /// The last signal the shutdown had to send, if the child did not exit by itself.
    pub sent: Option<StopSignal>,
}

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.sent, self.status) {
            (None, Some(status)) if status.code().is_none() => write!(f, "was killed by {status}"),
            (None, Some(status)) => write!(f, "exited with {status}"),
            (Some(sig), Some(status)) => write!(f, "was stopped with {} ({status})", sig.name()),
            (_, None) => f.write_str("could not be waited for"),
        }
    }
}

/// What a host adds to the shutdown sequence. Every method has a default that does nothing,
/// which is what a library user gets.
pub trait Supervision: Send {
    /// A first interrupt (Ctrl-C) has come: a wait longer than the grace period is cut to it.
    fn interrupted(&self) -> bool {
        false
    }
    /// A second interrupt has come: skip the waits, go straight to SIGKILL.
    fn hurry(&self) -> bool {
        false
    }
    /// A step of the shutdown worth telling a person (`what` follows "child `COMMAND` ").
    fn note(&self, _command: &str, _what: &str) {}
    /// Called once, just before the child is reaped (after which its pid may be reused).
    fn before_reap(&self) {}
}

/// The [`Supervision`] that adds nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Unsupervised;

impl Supervision for Unsupervised {}

/// The child could not be started.
#[derive(Debug)]
pub struct SpawnError {
    /// The command line, as shown in messages.
    pub command: String,
    /// The program that was to run.
    pub program: String,
    /// The working directory it was to start in, if one was set and it is not a directory:
    /// the OS reports that as "not found" too.
    pub missing_dir: Option<String>,
    /// What the OS said.
    pub error: io::Error,
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.error.kind() {
            io::ErrorKind::NotFound if self.missing_dir.is_some() => {
                let dir = self.missing_dir.as_deref().unwrap_or_default();
                write!(f, "cannot start `{}`: its working directory `{dir}` does not exist", self.command)
            }
            io::ErrorKind::NotFound => {
                write!(f, "cannot start `{}`: `{}` was not found on PATH", self.command, self.program)
            }
            _ => write!(f, "cannot start `{}`: {}", self.command, self.error),
        }
    }
}

impl std::error::Error for SpawnError {}

/// A child process that is always reaped: [`shutdown`](Self::shutdown) runs on every path,
/// and again on drop (std's `Child` has no `Drop`).
pub struct ChildProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Set once the child is reaped; until then its pid (and group id) cannot be reused.
    status: Option<ExitStatus>,
    shown: String,
    grace: Duration,
    supervision: Box<dyn Supervision>,
}

impl fmt::Debug for ChildProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildProcess").field("pid", &self.child.id()).field("command", &self.shown).finish()
    }
}

impl ChildProcess {
    /// Starts `command` with its stdin, stdout and stderr piped, leading a process group of
    /// its own. Returns the child and its stdout and stderr, to be read on threads.
    ///
    /// # Errors
    /// When the OS cannot start it; the message names the command.
    pub fn spawn(
        command: &mut Command,
        grace: Duration,
        supervision: Box<dyn Supervision>,
    ) -> Result<(ChildProcess, ChildStdout, ChildStderr), SpawnError> {
        let program = command.get_program().to_string_lossy().into_owned();
        let shown = std::iter::once(command.get_program())
            .chain(command.get_args())
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        sys::own_process_group(command);
        let mut child = command.spawn().map_err(|error| {
            let missing_dir =
                command.get_current_dir().filter(|dir| !dir.is_dir()).map(|dir| dir.display().to_string());
            SpawnError { command: shown.clone(), program: program.clone(), missing_dir, error }
        })?;
        let (Some(stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            // Unreachable with all three piped; reap the child rather than panic.
            let _ = child.kill();
            let _ = child.wait();
            let error = io::Error::other("its pipes were not created");
            return Err(SpawnError { command: shown, program, missing_dir: None, error });
        };
        let process = ChildProcess { child, stdin: Some(stdin), status: None, shown, grace, supervision };
        Ok((process, stdout, stderr))
    }

    /// The child's pid, which is also its process group's id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The command line, as messages show it.
    pub fn command_line(&self) -> &str {
        &self.shown
    }

    /// The grace period the shutdown gives after SIGTERM (and on drop, after stdin closes).
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// The CPU time (user + system) the child has used, while it is not yet reaped (running,
    /// or exited and waiting for the shutdown); `None` once reaped or where the OS does not say.
    /// Evidence for [`sandbox::ChildLimits::explain`].
    pub fn cpu_time(&self) -> Option<Duration> {
        if self.status.is_some() {
            return None;
        }
        sandbox::cpu_time_unreaped(self.child.id())
    }

    /// The exit status, once the child has been reaped.
    pub fn status(&self) -> Option<ExitStatus> {
        self.status
    }

    /// Takes the child's stdin, to be written elsewhere; the shutdown closes it then by
    /// dropping it there.
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.stdin.take()
    }

    /// Gives back the stdin [`take_stdin`](Self::take_stdin) took, for the shutdown to close.
    pub fn put_stdin(&mut self, stdin: ChildStdin) {
        self.stdin = Some(stdin);
    }

    /// Whether the child's stdin is closed (or taken).
    pub fn stdin_closed(&self) -> bool {
        self.stdin.is_none()
    }

    /// Writes `bytes` to the child's stdin and flushes.
    ///
    /// # Errors
    /// `BrokenPipe` once stdin is closed; whatever the pipe says otherwise.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.stdin {
            Some(stdin) => stdin.write_all(bytes).and_then(|()| stdin.flush()),
            None => Err(io::Error::from(io::ErrorKind::BrokenPipe)),
        }
    }

    /// Closes the child's stdin: end of input, the signal to exit.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Whether the child is still running. Where the OS allows, an exited child is left
    /// unreaped (a zombie) until the shutdown reaps it, so its group can still be signalled.
    pub fn running(&mut self) -> bool {
        if self.status.is_some() {
            return false;
        }
        if let Some(exited) = sys::exited_unreaped(self.child.id()) {
            return !exited;
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.status = Some(status);
                false
            }
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// Waits up to `limit` for the child to exit; gives up early once [`Supervision`] says
    /// so (a first interrupt cuts the wait to the grace period, a second ends it).
    pub fn wait_for_exit(&mut self, limit: Duration) -> bool {
        let start = Instant::now();
        let deadline = deadline_after(start, limit);
        loop {
            if !self.running() {
                return true;
            }
            let now = Instant::now();
            let interrupted_past_grace = self.supervision.interrupted() && now >= deadline_after(start, self.grace);
            if now >= deadline || self.supervision.hurry() || interrupted_past_grace {
                return false;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Signals the child's process group, but only while its pid is ours (not yet reaped).
    fn signal(&mut self, sig: StopSignal) {
        if self.status.is_none() {
            sys::signal_group(&mut self.child, sig);
        }
    }

    /// Sends SIGKILL to the child's process group, unless the child was reaped (only until
    /// then is the group id surely its own): for what it left running after it exited.
    pub fn kill_group(&mut self) {
        self.signal(StopSignal::Kill);
    }

    fn reap(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.supervision.before_reap();
            self.status = self.child.wait().ok();
        }
        self.status
    }

    fn note(&self, what: &str) {
        self.supervision.note(&self.shown, what);
    }

    /// The shutdown sequence: close stdin, wait up to `first_wait`, SIGTERM the group, wait
    /// up to the grace period, SIGKILL, then reap. Anything left in the child's group is
    /// killed before the child is reaped. Idempotent: later calls return the same status.
    pub fn shutdown(&mut self, first_wait: Duration) -> Stopped {
        self.close_stdin();
        let mut sent = None;
        if !self.wait_for_exit(first_wait) {
            if !self.supervision.hurry() {
                if self.supervision.interrupted() {
                    self.note("is being stopped (interrupted); sending SIGTERM");
                } else {
                    self.note(&format!(
                        "did not exit within {} ms of its stdin closing; sending SIGTERM",
                        first_wait.as_millis()
                    ));
                }
                self.signal(StopSignal::Term);
                sent = Some(StopSignal::Term);
            }
            if !self.wait_for_exit(self.grace) {
                let why = match sent {
                    Some(_) if !self.supervision.hurry() => {
                        format!("did not exit within {} ms of SIGTERM", self.grace.as_millis())
                    }
                    _ => "is being stopped at once (interrupted again)".to_owned(),
                };
                self.note(&format!("{why}; sending SIGKILL"));
                self.signal(StopSignal::Kill);
                sent = Some(StopSignal::Kill);
            }
        }
        self.signal(StopSignal::Kill);
        Stopped { status: self.reap(), sent }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.shutdown(self.grace);
    }
}

/// Blocks until process `pid` (a child of ours, not yet reaped) has exited, without reaping
/// it, and returns how it ended; `None` where the OS cannot say so without reaping.
///
/// Call it only while the child is unreaped: a thread doing so must be joined before the
/// reap (see [`Supervision::before_reap`]), since afterwards the pid may belong to another.
pub fn wait_for_exit_unreaped(pid: u32) -> Option<ExitStatus> {
    sys::wait_exited_unreaped(pid)
}

/// Whether process `pid` (a child of ours, not yet reaped) has exited, without reaping it and
/// without blocking; `None` where the OS cannot say so. The tokio peer's exit watcher asks
/// this on every SIGCHLD.
#[cfg(feature = "tokio")]
pub(crate) fn exited_unreaped(pid: u32) -> Option<bool> {
    sys::exited_unreaped(pid)
}

/// The last [`STDERR_TAIL_BYTES`] of a child's stderr, kept for error messages.
#[derive(Debug, Default)]
pub struct StderrTail {
    bytes: Mutex<VecDeque<u8>>,
}

impl StderrTail {
    /// Appends a piece, forgetting what falls out of the window.
    pub fn push(&self, chunk: &[u8]) {
        let mut bytes = self.bytes.lock().unwrap_or_else(PoisonError::into_inner);
        let chunk = &chunk[chunk.len().saturating_sub(STDERR_TAIL_BYTES)..];
        let over = (bytes.len() + chunk.len()).saturating_sub(STDERR_TAIL_BYTES);
        bytes.drain(..over);
        bytes.extend(chunk);
    }

    /// The tail as text (invalid UTF-8 replaced; a character cut at the start skipped).
    pub fn text(&self) -> String {
        let bytes = self.bytes.lock().unwrap_or_else(PoisonError::into_inner);
        let (front, back) = bytes.as_slices();
        let mut all = Vec::with_capacity(bytes.len());
        all.extend_from_slice(front);
        all.extend_from_slice(back);
        let start = if all.len() == STDERR_TAIL_BYTES {
            all.iter().take(3).take_while(|&&b| b & 0xC0 == 0x80).count()
        } else {
            0
        };
        String::from_utf8_lossy(&all[start..]).into_owned()
    }
}

/// Where a child's stderr goes, piece by piece, as it is read.
pub trait StderrSink: Send {
    /// A piece of the child's stderr, as read (not split into lines).
    fn chunk(&mut self, bytes: &[u8]);
    /// The child's stderr closed.
    fn end(&mut self) {}
}

impl<F: FnMut(&[u8]) + Send> StderrSink for F {
    fn chunk(&mut self, bytes: &[u8]) {
        self(bytes);
    }
}

/// Reads a child's stderr on a thread of its own, so a chatty child can never fill the pipe
/// and stall: each piece goes to `tail` and then to `sink`. Memory is one read buffer however
/// long its lines are, plus what the sink keeps. The receiver gets `()` once stderr closed.
pub fn spawn_stderr_reader(
    stderr: impl Read + Send + 'static,
    tail: Arc<StderrTail>,
    mut sink: impl StderrSink + 'static,
) -> Receiver<()> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut stderr = stderr;
        let mut buf = vec![0; READ_CHUNK];
        loop {
            match stderr.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    tail.push(&buf[..n]);
                    sink.chunk(&buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        sink.end();
        let _ = tx.send(());
    });
    rx
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::path::Path;

    use super::*;

    fn spawn(script: &str, grace_ms: u64) -> ChildProcess {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        let (child, _stdout, _stderr) =
            ChildProcess::spawn(&mut command, Duration::from_millis(grace_ms), Box::new(Unsupervised))
                .unwrap_or_else(|e| panic!("{e}"));
        child
    }

    /// Live (non-zombie) members of process group `pgid`.
    fn group(pgid: u32) -> Vec<u32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
                let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
                fields[0] != "Z" && fields[2] == pgid.to_string()
            })
            .collect()
    }

    #[test]
    fn shutdown_reaps_the_child_itself_and_kills_what_it_left_in_its_group() {
        // `cat` exits on EOF; the background `sleep` would outlive it.
        let mut child = spawn("sleep 60 & exec cat", 5000);
        let pid = child.id();
        let stopped = child.shutdown(Duration::from_secs(5));
        assert_eq!((stopped.sent, stopped.status.and_then(|s| s.code())), (None, Some(0)));
        // Reaped by us: gone from /proc while this process still lives (a zombie would stay).
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
        for _ in 0..500 {
            if group(pid).is_empty() {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        panic!("left in group {pid}: {:?}", group(pid));
    }

    #[test]
    fn drop_escalates_to_sigkill_and_reaps_a_child_that_ignores_eof_and_sigterm() {
        let child = spawn("trap '' TERM; exec sleep 60", 100);
        let pid = child.id();
        drop(child);
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn sigterm_stops_a_child_that_ignores_eof() {
        let mut child = spawn("exec sleep 60", 100);
        let stopped = child.shutdown(Duration::from_millis(100));
        assert_eq!(stopped.sent, Some(StopSignal::Term));
        assert_eq!(stopped.to_string(), "was stopped with SIGTERM (signal: 15 (SIGTERM))");
    }

    #[test]
    fn waiting_without_reaping_reports_the_exit_code_and_leaves_a_zombie() {
        let mut child = spawn("exit 3", 100);
        let status = wait_for_exit_unreaped(child.id()).unwrap();
        assert_eq!(status.code(), Some(3));
        assert!(Path::new(&format!("/proc/{}", child.id())).exists());
        assert_eq!(child.shutdown(Duration::ZERO).status.and_then(|s| s.code()), Some(3));
    }

    #[test]
    fn stderr_tail_keeps_the_last_4_kib() {
        let tail = StderrTail::default();
        tail.push(&[b'a'; 3000]);
        tail.push(&[b'b'; 3000]);
        let text = tail.text();
        assert_eq!(text.len(), STDERR_TAIL_BYTES);
        assert_eq!(text.find('b'), Some(STDERR_TAIL_BYTES - 3000));
        tail.push("é".repeat(STDERR_TAIL_BYTES).as_bytes());
        assert_eq!(tail.text(), "é".repeat(STDERR_TAIL_BYTES / 2));
    }
}
