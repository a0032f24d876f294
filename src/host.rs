//! The binary's I/O: spawning and reaping the child, moving bytes between pipes and the
//! sans-IO core, and the `serve` loop. Protocol decisions stay in the library.

use std::ffi::OsString;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use rust_ts_ipc::{DemoError, Frame, Initiator, InitiatorStep, LineDecoder, Responder, ResponderOptions};

/// How long a child gets to exit by itself once its stdin is closed, before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// Reads from a pipe in chunks of this size (the Linux pipe buffer size).
const READ_CHUNK: usize = 64 * 1024;

/// Everything that can end a run unsuccessfully, each with its own exit code.
#[derive(Debug)]
pub enum HostError {
    /// The command line was wrong (exit 2).
    Usage(String),
    /// The child could not be started, or the TypeScript app could not be built (exit 3).
    Spawn(String),
    /// The child broke the protocol (exit 1).
    Protocol(DemoError),
    /// The child exited or closed its stdout before the conversation was over (exit 4).
    ChildEnded(String),
    /// The child did not answer in time (exit 5).
    Timeout(String),
    /// Our own stdin/stdout failed (exit 1).
    Io(String),
}

impl HostError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            HostError::Protocol(_) | HostError::Io(_) => 1,
            HostError::Usage(_) => 2,
            HostError::Spawn(_) => 3,
            HostError::ChildEnded(_) => 4,
            HostError::Timeout(_) => 5,
        }
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::Usage(m) | HostError::Spawn(m) | HostError::ChildEnded(m) | HostError::Timeout(m) => {
                f.write_str(m)
            }
            HostError::Protocol(e) => e.fmt(f),
            HostError::Io(m) => f.write_str(m),
        }
    }
}

/// A child process that is always reaped: on drop its stdin is closed, it gets
/// [`EXIT_GRACE`] to exit, then it is killed and waited for (std's `Child` has no `Drop`).
pub struct ChildGuard {
    child: Child,
    stdin: Option<ChildStdin>,
    status: Option<ExitStatus>,
}

impl ChildGuard {
    fn spawn(program: &OsString, args: &[OsString]) -> Result<(ChildGuard, impl Read, impl Read), HostError> {
        let shown = show_command(program, args);
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => HostError::Spawn(format!(
                    "cannot start `{shown}`: `{}` was not found on PATH",
                    program.to_string_lossy()
                )),
                _ => HostError::Spawn(format!("cannot start `{shown}`: {e}")),
            })?;
        let (Some(stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            // Unreachable with all three piped; reap the child rather than panic.
            let _ = child.kill();
            let _ = child.wait();
            return Err(HostError::Spawn(format!("cannot start `{shown}`: its pipes were not created")));
        };
        Ok((ChildGuard { child, stdin: Some(stdin), status: None }, stdout, stderr))
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.stdin {
            Some(stdin) => stdin.write_all(bytes).and_then(|()| stdin.flush()),
            None => Err(io::Error::from(io::ErrorKind::BrokenPipe)),
        }
    }

    /// Closes the child's stdin: end of input, the signal to exit.
    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits up to `limit` for the child to exit.
    fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.status {
                return Some(status);
            }
            match self.child.try_wait() {
                Ok(Some(status)) => self.status = Some(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// The shutdown sequence: close stdin, wait, kill, reap.
    fn shutdown(&mut self) -> Option<ExitStatus> {
        self.close_stdin();
        if let Some(status) = self.wait_timeout(EXIT_GRACE) {
            return Some(status);
        }
        let _ = self.child.kill();
        self.status = self.child.wait().ok();
        self.status
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A decoder frame that owns its bytes, to cross from the reader thread.
enum Event {
    Line { number: u64, bytes: Vec<u8> },
    TooLong { number: u64, length: usize },
    Eof,
    ReadError(io::Error),
}

/// Reads the child's stdout into frames on its own thread so the main thread can wait with
/// a timeout.
fn spawn_reader(mut stdout: impl Read + Send + 'static, max_line_bytes: usize) -> Receiver<Event> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut decoder = LineDecoder::new(max_line_bytes);
        let mut buf = vec![0; READ_CHUNK];
        let send_frames = |decoder: &mut LineDecoder, at_eof: bool| {
            let mut frames = Vec::new();
            loop {
                let frame = if at_eof { decoder.finish() } else { decoder.next_frame() };
                let Some(frame) = frame else { break };
                frames.push(match frame {
                    Frame::Line { number, bytes } => Event::Line { number, bytes: bytes.to_vec() },
                    Frame::TooLong { number, length } => Event::TooLong { number, length },
                });
            }
            frames.into_iter().all(|e| tx.send(e).is_ok())
        };
        loop {
            match stdout.read(&mut buf) {
                Ok(0) => {
                    if send_frames(&mut decoder, true) {
                        let _ = tx.send(Event::Eof);
                    }
                    return;
                }
                Ok(n) => {
                    decoder.feed(&buf[..n]);
                    if !send_frames(&mut decoder, false) {
                        return; // the main thread is gone
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.send(Event::ReadError(e));
                    return;
                }
            }
        }
    });
    rx
}

/// Forwards the child's stderr to ours, line by line with a prefix, on its own thread so a
/// chatty child can never fill the pipe and stall. The receiver is signalled when it ends.
fn spawn_stderr_forwarder(stderr: impl Read + Send + 'static, prefix: String) -> Receiver<()> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut reader = BufReader::new(stderr);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    let mut err = io::stderr().lock();
                    let _ = writeln!(err, "{prefix}{}", text.trim_end_matches(['\n', '\r']));
                }
            }
        }
        let _ = tx.send(());
    });
    rx
}

/// What `demo` runs and how patiently.
pub struct DemoConfig {
    /// The child program (`node` by default).
    pub program: OsString,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// How long to wait for each reply, and for the child to exit at the end.
    pub timeout: Duration,
}

/// Plays the seed conversation with the child, printing the seed's output to `out`.
pub fn run_demo(config: &DemoConfig, out: &mut dyn Write) -> Result<(), HostError> {
    let shown = show_command(&config.program, &config.args);
    let (mut child, stdout, stderr) = ChildGuard::spawn(&config.program, &config.args)?;
    let stderr_done = spawn_stderr_forwarder(stderr, "[child] ".to_owned());
    let mut initiator = Initiator::default();
    let events = spawn_reader(stdout, initiator.max_line_bytes());

    let result = converse(&mut child, &mut initiator, &events, config.timeout, out);
    let result = result.and_then(|()| {
        // The goodbye came: close the child's stdin and expect a clean exit.
        child.close_stdin();
        match child.wait_timeout(config.timeout) {
            Some(status) if status.success() => Ok(()),
            Some(status) => {
                Err(HostError::ChildEnded(format!("child `{shown}` said goodbye but then exited with {status}")))
            }
            None => Err(HostError::Timeout(format!(
                "child `{shown}` said goodbye but did not exit within {} ms of its stdin closing",
                config.timeout.as_millis()
            ))),
        }
    });
    let result = result.map_err(|e| match e {
        HostError::ChildEnded(why) if why.is_empty() => {
            let status = child.wait_timeout(Duration::from_secs(1));
            let how = status
                .map_or_else(|| "closed its stdout but is still running".to_owned(), |s| format!("exited with {s}"));
            HostError::ChildEnded(format!(
                "child `{shown}` {how} while the demo was waiting for {}",
                initiator.waiting_for()
            ))
        }
        other => other,
    });
    child.shutdown();
    // Let the last of the child's stderr through before our own verdict.
    let _ = stderr_done.recv_timeout(Duration::from_millis(500));
    result?;
    writeln!(out, "{}", Initiator::COMPLETE)
        .and_then(|()| out.flush())
        .map_err(|e| HostError::Io(format!("writing stdout: {e}")))
}

/// The conversation proper; `ChildEnded("")` means "the child went away", filled in by the caller.
fn converse(
    child: &mut ChildGuard,
    initiator: &mut Initiator,
    events: &Receiver<Event>,
    timeout: Duration,
    out: &mut dyn Write,
) -> Result<(), HostError> {
    let mut apply = |child: &mut ChildGuard, step: InitiatorStep| -> Result<bool, HostError> {
        for line in &step.print {
            writeln!(out, "{line}").map_err(|e| HostError::Io(format!("writing stdout: {e}")))?;
        }
        out.flush().map_err(|e| HostError::Io(format!("writing stdout: {e}")))?;
        if !step.send.is_empty() {
            child.write(&step.send).map_err(|_| HostError::ChildEnded(String::new()))?;
        }
        Ok(step.finished)
    };
    apply(child, initiator.start())?;
    loop {
        let event = match events.recv_timeout(timeout) {
            Ok(event) => event,
            Err(RecvTimeoutError::Timeout) => {
                return Err(HostError::Timeout(format!(
                    "child did not answer within {} ms while the demo was waiting for {}",
                    timeout.as_millis(),
                    initiator.waiting_for()
                )))
            }
            Err(RecvTimeoutError::Disconnected) => Event::Eof,
        };
        let frame = match &event {
            Event::Line { number, bytes } => Frame::Line { number: *number, bytes },
            Event::TooLong { number, length } => Frame::TooLong { number: *number, length: *length },
            Event::Eof => return Err(HostError::ChildEnded(String::new())),
            Event::ReadError(e) => return Err(HostError::Io(format!("reading the child's stdout: {e}"))),
        };
        let step = initiator.on_frame(frame).map_err(HostError::Protocol)?;
        if apply(child, step)? {
            return Ok(());
        }
    }
}

/// The Rust responder on this process's own stdin/stdout: what a Node parent talks to.
/// Replies to everything read in one chunk are written with one `write` (no per-message
/// syscalls when messages are pipelined). Ends on stdin EOF, after `exit`, or when the
/// reader of stdout goes away.
pub fn serve(options: ResponderOptions) -> Result<(), HostError> {
    let mut decoder = LineDecoder::new(options.max_line_bytes);
    let mut responder = Responder::new(options);
    let mut stdin = io::stdin().lock();
    let mut stdout = io::stdout().lock();
    let mut buf = vec![0; READ_CHUNK];
    let mut out = Vec::with_capacity(READ_CHUNK);
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(HostError::Io(format!("reading stdin: {e}"))),
        };
        if n == 0 {
            if let Some(frame) = decoder.finish() {
                responder.handle_frame(frame, &mut out);
            }
        } else {
            decoder.feed(&buf[..n]);
            while let Some(frame) = decoder.next_frame() {
                responder.handle_frame(frame, &mut out);
                if responder.is_done() {
                    break;
                }
            }
        }
        match stdout.write_all(&out).and_then(|()| stdout.flush()) {
            Ok(()) => {}
            // The reader went away: a normal way for a conversation to end.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(HostError::Io(format!("writing stdout: {e}"))),
        }
        out.clear();
        if n == 0 || responder.is_done() {
            return Ok(());
        }
    }
}

/// Makes sure `ts-app/dist/main.js` exists, building it once (`npm ci`, then
/// `npm run build -w ts-app`) on a fresh clone. Progress goes to stderr.
pub fn ensure_ts_app_built(repo: &Path) -> Result<PathBuf, HostError> {
    let script = repo.join("ts-app").join("dist").join("main.js");
    if script.exists() {
        return Ok(script);
    }
    eprintln!("rust-ts-ipc: {} is missing; building the TypeScript app once", script.display());
    if !repo.join("node_modules").join("typescript").exists() {
        run_npm(repo, &["ci"])?;
    }
    run_npm(repo, &["run", "build", "-w", "ts-app"])?;
    if script.exists() {
        Ok(script)
    } else {
        Err(HostError::Spawn(format!("`npm run build -w ts-app` succeeded but {} is still missing", script.display())))
    }
}

fn run_npm(repo: &Path, args: &[&str]) -> Result<(), HostError> {
    let shown = format!("npm {}", args.join(" "));
    eprintln!("rust-ts-ipc: running `{shown}` in {}", repo.display());
    let status = Command::new("npm")
        .args(args)
        .current_dir(repo)
        .stdin(Stdio::null())
        .stdout(io::stderr()) // keep our stdout for the demo's output only
        .status()
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => HostError::Spawn(
                "cannot build the TypeScript app: `npm` was not found on PATH (install Node.js >= 20 with npm)"
                    .to_owned(),
            ),
            _ => HostError::Spawn(format!("cannot run `{shown}`: {e}")),
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(HostError::Spawn(format!("`{shown}` failed with {status}; see its output above")))
    }
}

fn show_command(program: &OsString, args: &[OsString]) -> String {
    std::iter::once(program).chain(args).map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
}
