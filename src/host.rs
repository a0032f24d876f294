//! The binary's demo I/O: spawning (through the library's `process` layer), watching and
//! always reaping the child, moving bytes between pipes and the sans-IO core, and Ctrl-C.
//! Protocol decisions stay in the library; `serve` is the library's `serve_stdio`.
//!
//! The child runs in its own process group, so a terminal's Ctrl-C reaches only the demo,
//! which then stops the child the one defined way, whatever ended the conversation (done,
//! fault, timeout, signal): close its stdin → wait up to `grace` → SIGTERM to its group → wait
//! up to `grace` → SIGKILL → reap. Its group also holds anything it started, so nothing it
//! left behind outlives the demo. If the demo itself is killed outright, the child sees
//! EOF on stdin, and both our children (`serve`, the TypeScript child) exit on EOF.

use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStderr, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::diag;
use rust_ts_ipc::process::sandbox::{NodePermission, Sandbox};
use rust_ts_ipc::process::{spawn_stderr_reader, ChildProcess, StderrSink, StderrTail, Supervision};
use rust_ts_ipc::{excerpt, DemoError, Encoding, Frame, FrameDecoder, Initiator, InitiatorStep, LineDecoder, Packet};

pub use rust_ts_ipc::process::DEFAULT_GRACE;
/// Reads from a pipe in chunks of this size (the Linux pipe buffer size).
const READ_CHUNK: usize = 64 * 1024;
/// While waiting for a reply, how often the demo checks whether the child has exited.
const POLL: Duration = Duration::from_millis(50);
/// Once the child has exited, how long its stdout may stay open (held by something it
/// started) before the demo stops waiting for the rest of its output.
const EOF_SETTLE: Duration = Duration::from_millis(500);

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
    /// Our own stdin/stdout failed (exit 1). A closed stdout is not an error: it ends the
    /// demo normally.
    Io(String),
    /// A signal (SIGINT from Ctrl-C, SIGTERM, SIGHUP) ended the demo after the child was
    /// stopped and reaped (exit 128 + the signal's number: 130, 143, 129).
    Interrupted {
        /// The signal's number.
        signal: i32,
        /// What was going on and how the child ended.
        message: String,
    },
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
            HostError::Interrupted { signal, .. } => 128 + signal,
        }
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::Usage(m)
            | HostError::Spawn(m)
            | HostError::ChildEnded(m)
            | HostError::Timeout(m)
            | HostError::Io(m)
            | HostError::Interrupted { message: m, .. } => f.write_str(m),
            HostError::Protocol(e) => e.fmt(f),
        }
    }
}

/// The binary's part in the library's shutdown sequence: its signal watcher cuts the waits
/// short, its notes go to stderr through [`diag`], and the watcher forgets the child's group
/// before the reap (after which the pid may be reused).
struct Watched;

impl Supervision for Watched {
    fn interrupted(&self) -> bool {
        sys::interrupts() > 0
    }

    fn hurry(&self) -> bool {
        in_a_hurry()
    }

    fn note(&self, command: &str, what: &str) {
        diag::say(format_args!("rust-ts-ipc: child `{command}` {what}"));
    }

    fn before_reap(&self) {
        // The group has had its SIGKILL already (see `ChildProcess::shutdown`).
        sys::forget_group();
    }
}

/// Starts the demo's child under [`Watched`], recording its group for the signal watcher.
fn spawn_child(
    program: &OsString,
    args: &[OsString],
    grace: Duration,
    sandbox: &Sandbox,
    node_permission: bool,
) -> Result<(ChildProcess, ChildStdout, ChildStderr), HostError> {
    let mut command = Command::new(program);
    command.args(args);
    if node_permission {
        NodePermission::keep_node_options_out(&mut command);
    }
    sandbox.apply(&mut command).map_err(|e| HostError::Usage(e.to_string()))?;
    let (child, stdout, stderr) =
        ChildProcess::spawn(&mut command, grace, Box::new(Watched)).map_err(|e| HostError::Spawn(e.to_string()))?;
    sys::record_group(child.id());
    Ok((child, stdout, stderr))
}

/// A second signal has come: skip the waits.
pub fn in_a_hurry() -> bool {
    sys::interrupts() >= 2
}

/// Keeps SIGINT, SIGTERM and SIGHUP off the calling thread for good, so that the kernel never
/// hands them to it; for threads that never start a child (a child inherits the mask).
pub fn keep_interrupts_off_this_thread() {
    #[cfg(unix)]
    let _ = sys::block_interrupts_on_this_thread();
}

/// The last of SIGINT, SIGTERM and SIGHUP to have arrived since the demo took them, if any.
pub fn signal_received() -> Option<i32> {
    sys::interrupted()
}

/// The name of signal `number`, for messages.
pub fn signal_name(number: i32) -> &'static str {
    sys::signal_name(number)
}

/// What the reader thread (and the signal watcher) tell the demo.
enum Event {
    /// Bytes the child wrote to its stdout.
    Chunk {
        bytes: Vec<u8>,
        /// Returns the chunk's bytes to the reader thread's budget once the demo is done with
        /// it (`None` under tokio, which reads only when the demo asks).
        _held: Option<Held>,
    },
    /// The child's stdout closed.
    Eof,
    ReadError(io::Error),
    Interrupt(i32),
}

/// A line the child started but never ended with a newline, or a frame it never finished.
enum Cut {
    Line { number: u64, length: usize, start: String },
    Frame { number: u64, received: usize, length: Option<usize> },
}

impl Cut {
    /// What the line decoder still holds at the end of the child's output, if anything.
    fn of(frame: Frame<'_>) -> Cut {
        match frame {
            Frame::Line { number, bytes } => {
                let head = &bytes[..bytes.len().min(4 * 40)];
                Cut::Line { number, length: bytes.len(), start: excerpt(&String::from_utf8_lossy(head)) }
            }
            Frame::TooLong { number, length } => Cut::Line { number, length, start: String::new() },
        }
    }

    /// What the frame decoder still holds at the end of the child's output: the frame the
    /// stream ended inside of (the demo drains every whole frame as it arrives).
    fn of_packet(packet: Packet<'_>) -> Option<Cut> {
        match packet {
            Packet::Cut { number, received, length } => Some(Cut::Frame { number, received, length }),
            Packet::Frame { .. } | Packet::TooLong { .. } => None,
        }
    }
}

impl fmt::Display for Cut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cut::Line { number, length, start } => {
                write!(f, "; its output ends inside line {number} ({length} bytes, no newline)")?;
                if !start.is_empty() {
                    write!(f, ": `{start}`")?;
                }
                Ok(())
            }
            Cut::Frame { number, received, length: None } => {
                write!(f, "; its output ends inside the 4-byte length header of frame {number}, after {received} bytes")
            }
            Cut::Frame { number, received, length: Some(length) } => {
                write!(f, "; its output ends inside frame {number}, after {received} of its {length} bytes")
            }
        }
    }
}

/// Bytes the reader may have read ahead of the demo, each chunk counted as a whole read
/// buffer (so at most four chunks wait). The reader moves raw chunks and the demo frames them
/// with its one decoder, so a line is held once (in that decoder) however long it is, and
/// memory is bounded in bytes, not in lines.
const READ_AHEAD: usize = 4 * READ_CHUNK;

/// The bytes of the child's output between the pipe and the demo: chunks queued or being
/// framed. The reader reads only while they are under [`READ_AHEAD`].
struct Budget {
    /// Bytes of chunks sent and not yet dropped by the demo.
    queued: Mutex<usize>,
    freed: Condvar,
    /// The demo stopped listening: the reader must stop too.
    closed: AtomicBool,
}

impl Budget {
    /// Waits until the queue is under [`READ_AHEAD`]; false once the demo stopped listening.
    fn wait_for_room(&self) -> bool {
        let mut queued = self.queued.lock().unwrap_or_else(PoisonError::into_inner);
        while *queued >= READ_AHEAD && !self.closed.load(Ordering::SeqCst) {
            queued = self.freed.wait(queued).unwrap_or_else(PoisonError::into_inner);
        }
        !self.closed.load(Ordering::SeqCst)
    }

    fn hold(self: &Arc<Self>, bytes: usize) -> Held {
        *self.queued.lock().unwrap_or_else(PoisonError::into_inner) += bytes;
        Held { budget: Arc::clone(self), bytes }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _guard = self.queued.lock().unwrap_or_else(PoisonError::into_inner);
        self.freed.notify_all();
    }
}

/// A queued chunk's share of the [`Budget`], given back on drop.
struct Held {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut queued = self.budget.queued.lock().unwrap_or_else(PoisonError::into_inner);
        *queued -= self.bytes;
        self.budget.freed.notify_all();
    }
}

/// Which runtime moves the demo's bytes to and from the child (`--runtime`). The
/// conversation, its checks and its verdicts are the same code under both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// A reader thread for the child's stdout, blocking writes to its stdin (the default).
    Thread,
    /// The child's stdin and stdout as tokio pipes on a current-thread runtime, read only
    /// when the conversation waits (cargo feature `tokio`).
    Tokio,
}

impl Runtime {
    /// The runtime `--runtime` names.
    ///
    /// # Errors
    /// A usage error for an unknown name, or for `tokio` in a build without the feature.
    pub fn parse(name: &str) -> Result<Runtime, HostError> {
        match name {
            "thread" => Ok(Runtime::Thread),
            "tokio" if cfg!(feature = "tokio") => Ok(Runtime::Tokio),
            "tokio" => Err(HostError::Usage(
                "--runtime tokio: this rust-ts-ipc was built without the `tokio` cargo feature; rebuild it with the \
                 feature (on by default; `cargo build --features tokio`) or use --runtime thread"
                    .to_owned(),
            )),
            other => Err(HostError::Usage(format!("--runtime: unknown runtime `{other}`; expected thread or tokio"))),
        }
    }
}

/// How the conversation reaches the child's pipes, by [`Runtime`]: events (chunks of its
/// stdout, its EOF, our signals) and writes to its stdin.
trait Pipes {
    /// The next event, waiting at most `limit`; `None` if none came in time.
    fn next_event(&mut self, limit: Duration) -> Option<Event>;
    /// Writes `bytes` to the child's stdin and flushes, blocking as a pipe does.
    fn send(&mut self, child: &mut ChildProcess, bytes: &[u8]) -> io::Result<()>;
    /// Closes the child's stdin.
    fn close_stdin(&mut self, child: &mut ChildProcess);
    /// Whether the child's stdin is closed.
    fn stdin_closed(&self, child: &ChildProcess) -> bool;
    /// Stops reading the child's stdout, so a child that keeps writing meets a closed pipe;
    /// its stdin goes back to `child` for the shutdown sequence to close.
    fn finish(self: Box<Self>, child: &mut ChildProcess);
}

/// The demo's end of the reader thread: events in arrival order. Dropping it closes the
/// budget, so the reader stops and a child that keeps writing meets a closed pipe.
struct Inbox {
    events: Receiver<Event>,
    budget: Arc<Budget>,
}

impl Pipes for Inbox {
    fn next_event(&mut self, limit: Duration) -> Option<Event> {
        match self.events.recv_timeout(limit) {
            Ok(event) => Some(event),
            Err(RecvTimeoutError::Disconnected) => Some(Event::Eof),
            Err(RecvTimeoutError::Timeout) => None,
        }
    }

    fn send(&mut self, child: &mut ChildProcess, bytes: &[u8]) -> io::Result<()> {
        child.write(bytes)
    }

    fn close_stdin(&mut self, child: &mut ChildProcess) {
        child.close_stdin();
    }

    fn stdin_closed(&self, child: &ChildProcess) -> bool {
        child.stdin_closed()
    }

    fn finish(self: Box<Self>, _child: &mut ChildProcess) {}
}

/// The demo's one decoder of the child's output, by encoding.
enum Decoder {
    Lines(LineDecoder),
    Frames(FrameDecoder),
}

impl Decoder {
    fn new(initiator: &Initiator) -> Decoder {
        match initiator.encoding() {
            Encoding::Json => Decoder::Lines(LineDecoder::new(initiator.max_line_bytes())),
            Encoding::Msgpack => Decoder::Frames(FrameDecoder::new(initiator.max_frame_bytes())),
        }
    }

    fn feed(&mut self, chunk: &[u8]) {
        match self {
            Decoder::Lines(d) => d.feed(chunk),
            Decoder::Frames(d) => d.feed(chunk),
        }
    }

    /// The initiator's answer to the next whole line or frame, if one has arrived.
    fn next_step(&mut self, initiator: &mut Initiator) -> Option<Result<InitiatorStep, DemoError>> {
        match self {
            Decoder::Lines(d) => d.next_frame().map(|frame| initiator.on_frame(frame)),
            Decoder::Frames(d) => d.next_packet().map(|packet| initiator.on_packet(packet)),
        }
    }

    /// At the end of the child's output: the line or frame it left unfinished, if any.
    fn finish(&mut self) -> Option<Cut> {
        match self {
            Decoder::Lines(d) => d.finish().map(Cut::of),
            Decoder::Frames(d) => d.finish().and_then(Cut::of_packet),
        }
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.budget.close();
    }
}

/// Never called: `Runtime::parse` refuses `tokio` in a build without the feature.
#[cfg(not(feature = "tokio"))]
fn unreachable_pipes() -> Box<dyn Pipes> {
    unreachable!("Runtime::Tokio exists only in builds with the tokio feature")
}

/// `--runtime tokio`: the child's stdin and stdout as tokio pipes.
#[cfg(feature = "tokio")]
mod tokio_pipes {
    use std::io;
    use std::process::ChildStdout;
    use std::sync::mpsc::{Receiver, TryRecvError};
    use std::time::Duration;

    use rust_ts_ipc::process::ChildProcess;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::runtime::{Builder, Runtime};

    use super::{Event, HostError, Pipes, READ_CHUNK};

    /// The demo's pipes on a current-thread tokio runtime. The conversation's one loop
    /// blocks on it whenever it waits, so the runtime reads the child's stdout only then: one
    /// read buffer is all it ever holds ahead of the demo. Signals still come from the
    /// binary's watcher thread, on `interrupts`, and are looked at before each wait (which
    /// lasts at most the demo's 50 ms poll).
    pub(super) struct TokioPipes {
        runtime: Runtime,
        stdout: tokio::process::ChildStdout,
        stdin: Option<tokio::process::ChildStdin>,
        interrupts: Receiver<Event>,
        buf: Vec<u8>,
    }

    impl TokioPipes {
        pub(super) fn new(
            child: &mut ChildProcess,
            stdout: ChildStdout,
            interrupts: Receiver<Event>,
        ) -> Result<TokioPipes, HostError> {
            let failed = |e: io::Error| HostError::Io(format!("cannot start the tokio runtime for the demo: {e}"));
            let runtime = Builder::new_current_thread().enable_io().enable_time().build().map_err(failed)?;
            let _entered = runtime.enter();
            let stdout = tokio::process::ChildStdout::from_std(stdout).map_err(failed)?;
            let stdin = child.take_stdin().map(tokio::process::ChildStdin::from_std).transpose().map_err(failed)?;
            Ok(TokioPipes { runtime, stdout, stdin, interrupts, buf: vec![0; READ_CHUNK] })
        }
    }

    impl Pipes for TokioPipes {
        fn next_event(&mut self, limit: Duration) -> Option<Event> {
            match self.interrupts.try_recv() {
                Ok(event) => return Some(event),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => {}
            }
            let (stdout, buf) = (&mut self.stdout, &mut self.buf);
            let read = self.runtime.block_on(async {
                tokio::time::timeout(limit, async {
                    loop {
                        match stdout.read(buf).await {
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            result => break result,
                        }
                    }
                })
                .await
            });
            match read {
                Err(_elapsed) => None,
                Ok(Ok(0)) => Some(Event::Eof),
                Ok(Ok(n)) => Some(Event::Chunk { bytes: self.buf[..n].to_vec(), _held: None }),
                Ok(Err(e)) => Some(Event::ReadError(e)),
            }
        }

        fn send(&mut self, _child: &mut ChildProcess, bytes: &[u8]) -> io::Result<()> {
            let Some(stdin) = self.stdin.as_mut() else { return Err(io::Error::from(io::ErrorKind::BrokenPipe)) };
            self.runtime.block_on(async {
                stdin.write_all(bytes).await?;
                stdin.flush().await
            })
        }

        fn close_stdin(&mut self, _child: &mut ChildProcess) {
            self.stdin = None;
        }

        fn stdin_closed(&self, _child: &ChildProcess) -> bool {
            self.stdin.is_none()
        }

        fn finish(self: Box<Self>, child: &mut ChildProcess) {
            let TokioPipes { runtime, stdout, stdin, .. } = *self;
            drop(stdout);
            // Back to the child, for the shutdown sequence to close first thing, as under the
            // thread runtime (a write end that cannot be handed back is closed here instead).
            if let Some(stdin) = stdin {
                if let Ok(fd) = stdin.into_owned_fd() {
                    child.put_stdin(std::process::ChildStdin::from(fd));
                }
            }
            drop(runtime);
        }
    }
}

/// Reads the child's stdout in chunks on its own thread so the demo can wait with a
/// timeout. Returns the budget that bounds what it reads ahead, for the demo's [`Inbox`].
fn spawn_reader(mut stdout: impl Read + Send + 'static, tx: Sender<Event>) -> Arc<Budget> {
    let budget = Arc::new(Budget { queued: Mutex::new(0), freed: Condvar::new(), closed: AtomicBool::new(false) });
    let reader_budget = Arc::clone(&budget);
    thread::spawn(move || {
        let budget = reader_budget;
        while budget.wait_for_room() {
            let mut buf = vec![0; READ_CHUNK];
            let event = match stdout.read(&mut buf) {
                Ok(0) => Event::Eof,
                Ok(n) => {
                    buf.truncate(n);
                    // Charged its whole buffer, not the bytes it holds: a child writing a byte
                    // at a time must not queue a buffer per byte while the demo is busy.
                    Event::Chunk { _held: Some(budget.hold(READ_CHUNK)), bytes: buf }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Event::ReadError(e),
            };
            let last = !matches!(event, Event::Chunk { .. });
            if tx.send(event).is_err() || last {
                return;
            }
        }
    });
    budget
}

/// The child's stderr, forwarded to ours as it arrives, each line prefixed `[child] ` by
/// [`diag`], whose queue is bounded: what our stderr cannot take is dropped there and
/// counted, never waited for without end.
struct ToDiag;

impl StderrSink for ToDiag {
    fn chunk(&mut self, bytes: &[u8]) {
        diag::forward(bytes);
    }

    fn end(&mut self) {
        diag::end_of_child_stderr();
    }
}

/// Forwards the child's stderr on its own thread (see [`ToDiag`]); the receiver is
/// signalled when the child's stderr closes.
fn spawn_stderr_forwarder(stderr: impl Read + Send + 'static, tail: Arc<StderrTail>) -> Receiver<()> {
    diag::child_stderr_opened();
    spawn_stderr_reader(stderr, tail, ToDiag)
}

/// How long the demo waits for the child's stderr to close (so that all of it has been read
/// and forwarded) before giving its verdict; a grandchild holding it open cannot stretch it.
const STDERR_SETTLE: Duration = Duration::from_millis(500);

/// What `demo` runs and how patiently.
pub struct DemoConfig {
    /// The child program (`node` by default).
    pub program: OsString,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// How long to wait for each reply, and for the child to exit after the goodbye.
    pub timeout: Duration,
    /// How long the child gets to exit after its stdin is closed, and again after SIGTERM.
    pub grace: Duration,
    /// How the conversation travels: NDJSON lines or MessagePack frames.
    pub encoding: Encoding,
    /// The longest frame the demo reads from the child (msgpack).
    pub max_frame_bytes: usize,
    /// The longest line the demo reads from the child (json).
    pub max_line_bytes: usize,
    /// Which runtime moves the bytes (`--runtime`).
    pub runtime: Runtime,
    /// Said after the error when the child exits with a failure before answering anything
    /// (for the default child: it may not know `--encoding` yet).
    pub refusal_hint: Option<String>,
    /// How the child is started: environment, working directory, resource limits.
    pub sandbox: Sandbox,
    /// The reader thread's spin budget on the child's stdout (zero: off; see
    /// `rust_ts_ipc::spin`).
    pub spin: Duration,
    /// The child runs under Node's permission model (`--node-permission`): this process's
    /// `NODE_OPTIONS`, which could widen it, are kept from the child.
    pub node_permission: bool,
}

/// Why the conversation stopped early.
enum Fault {
    Host(HostError),
    /// The child's stdout closed, or it exited while something else kept its stdout open.
    Ended {
        cut: Option<Cut>,
        stdout_open: bool,
    },
    Interrupt(i32),
    /// Our stdout was closed (`rust-ts-ipc demo | head -1`): a normal way to end.
    StdoutClosed,
}

impl From<HostError> for Fault {
    fn from(e: HostError) -> Self {
        Fault::Host(e)
    }
}

/// Plays the seed conversation with the child, printing the seed's output to `out`.
pub fn run_demo(config: &DemoConfig, out: &mut dyn Write) -> Result<(), HostError> {
    // Before the child starts, so that a signal from then on stops it the defined way (one
    // that came earlier takes its default action, before there is a child to leave behind).
    let (tx, events) = mpsc::channel();
    let interrupt_tx = tx.clone();
    sys::watch_interrupts(
        move |signal| {
            let _ = interrupt_tx.send(Event::Interrupt(signal));
        },
        // The longest shutdown there is (after the goodbye the first wait is `timeout`), and
        // some: only a demo stuck elsewhere (say, writing to a stdout nobody reads) needs it.
        config.timeout.max(config.grace) + config.grace + Duration::from_secs(5),
    );
    let (mut child, stdout, stderr) =
        spawn_child(&config.program, &config.args, config.grace, &config.sandbox, config.node_permission)?;
    let tail = Arc::new(StderrTail::default());
    let stderr_done = spawn_stderr_forwarder(stderr, Arc::clone(&tail));
    let mut initiator = Initiator::default()
        .with_encoding(config.encoding)
        .with_max_frame_bytes(config.max_frame_bytes)
        .with_max_line_bytes(config.max_line_bytes);
    let mut decoder = Decoder::new(&initiator);
    let pipes: Result<Box<dyn Pipes>, HostError> = match config.runtime {
        Runtime::Thread => {
            #[cfg(not(unix))]
            let budget = spawn_reader(stdout, tx);
            #[cfg(unix)]
            let budget = if config.spin.is_zero() {
                spawn_reader(stdout, tx)
            } else {
                spawn_reader(rust_ts_ipc::spin::SpinReader::new(stdout, config.spin), tx)
            };
            Ok(Box::new(Inbox { events, budget }))
        }
        #[cfg(feature = "tokio")]
        Runtime::Tokio => {
            tokio_pipes::TokioPipes::new(&mut child, stdout, events).map(|p| Box::new(p) as Box<dyn Pipes>)
        }
        #[cfg(not(feature = "tokio"))]
        Runtime::Tokio => Runtime::parse("tokio").map(|_| unreachable_pipes()),
    };
    let mut pipes = match pipes {
        Ok(pipes) => pipes,
        Err(e) => {
            child.shutdown(config.grace);
            return Err(e);
        }
    };

    let fault = converse(&mut child, &mut initiator, pipes.as_mut(), &mut decoder, config.timeout, out).err();
    // Stop queueing the child's output: from here a child that floods its stdout meets a
    // closed pipe, not our memory.
    pipes.finish(&mut child);
    let mut stdout_closed = false;
    let mut stderr_closed = false;
    let shown = child.command_line().to_owned();
    let waiting = initiator.waiting_for();
    let result = match fault {
        None => {
            let stopped = child.shutdown(config.timeout);
            match (stopped.sent, stopped.status) {
                (None, Some(status)) if status.success() => Ok(()),
                (None, _) => Err(HostError::ChildEnded(format!("child `{shown}` said goodbye but then {stopped}"))),
                (Some(_), _) => Err(HostError::Timeout(format!(
                    "child `{shown}` said goodbye but did not exit within {} ms of its stdin closing; it {stopped}",
                    config.timeout.as_millis()
                ))),
            }
        }
        Some(Fault::Ended { cut, stdout_open }) => {
            let still_running = !stdout_open && !child.wait_for_exit(EOF_SETTLE.min(config.grace));
            // Read before the reap: evidence for a CPU limit's SIGKILL.
            let cpu_time = child.cpu_time();
            let stopped = child.shutdown(config.grace);
            let how = match (still_running, stdout_open) {
                (true, _) => format!("closed its stdout but kept running, and {stopped},"),
                (false, true) => format!("{stopped} but left its stdout open (held by a process it started),"),
                (false, false) => stopped.to_string(),
            };
            // Only a death of its own (no signal of ours) can be a limit's doing.
            let limit = if stopped.sent.is_none() && !config.sandbox.limits.is_none() {
                // The evidence may be on its stderr: let the reader finish it first.
                stderr_closed = stderr_done.recv_timeout(STDERR_SETTLE).is_ok();
                config.sandbox.limits.explain(stopped.status, cpu_time, &tail.text())
            } else {
                None
            };
            let how = match limit {
                Some(limit) => format!("{how}: {limit},"),
                None => how,
            };
            // A child that refused to start the conversation (bad arguments, say: it exited by
            // itself with a failure code, having written nothing) has said why on its stderr:
            // quote it, so the reason is in the error, not only above it.
            let refused = stopped.sent.is_none()
                && stopped.status.and_then(|s| s.code()).is_some_and(|code| code != 0)
                && cut.is_none()
                && initiator.awaiting_first_reply();
            let cut = cut.map(|c| c.to_string()).unwrap_or_default();
            let why = if refused {
                // The child has exited, but its stderr is read on another thread, which may not
                // have read the reason yet (under load it often had not): wait for the pipe to
                // close first, as the Peer does, or the quote would be missing.
                stderr_closed = stderr_closed || stderr_done.recv_timeout(STDERR_SETTLE).is_ok();
                refusal(&tail, config.refusal_hint.as_deref())
            } else {
                String::new()
            };
            Err(HostError::ChildEnded(format!(
                "child `{shown}` {how} while the demo was waiting for {waiting}{cut}{why}"
            )))
        }
        Some(Fault::Interrupt(signal)) => Err(interrupted(signal, &waiting, &mut child)),
        Some(Fault::StdoutClosed) => {
            stdout_closed = true;
            child.shutdown(config.grace);
            Ok(())
        }
        Some(Fault::Host(e)) => {
            child.shutdown(config.grace);
            Err(e)
        }
    };
    // Let the last of the child's stderr through before our own verdict.
    if !stderr_closed {
        let _ = stderr_done.recv_timeout(STDERR_SETTLE);
    }
    // A signal that came while we were finishing still means "stopped by a signal".
    let result = match (result, sys::interrupted()) {
        (Err(e @ HostError::Interrupted { .. }), _) => Err(e),
        (_, Some(signal)) => Err(interrupted(signal, "the end of the conversation", &mut child)),
        (result, None) => result,
    };
    result?;
    if stdout_closed {
        return Ok(());
    }
    match writeln!(out, "{}", Initiator::COMPLETE).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(HostError::Io(format!("writing stdout: {e}"))),
        _ => Ok(()),
    }
}

/// What a child that exited with a failure before its first reply said on its stderr: its
/// first non-blank line (or, if more than the 4 KiB tail was written, the last), and `hint`.
fn refusal(tail: &StderrTail, hint: Option<&str>) -> String {
    let text = tail.text();
    // Node's warnings (`(node:123) ExperimentalWarning: ...`, under --node-permission) are not
    // the reason.
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty() && !is_node_warning(l));
    let line = if text.len() < rust_ts_ipc::process::STDERR_TAIL_BYTES { lines.next() } else { lines.next_back() };
    let mut out = String::new();
    if let Some(line) = line {
        let mut quoted: String = line.chars().take(200).collect();
        if quoted.len() < line.len() {
            quoted.push('…');
        }
        out = format!("; its stderr says: `{quoted}`");
    }
    if let Some(hint) = hint {
        out.push_str("; ");
        out.push_str(hint);
    }
    out
}

/// A line of Node's process warnings: `(node:PID) SomeWarning: ...` and its `(Use `node
/// --trace-warnings ...`)` hint.
fn is_node_warning(line: &str) -> bool {
    line.starts_with("(Use `node --trace-warnings")
        || line.strip_prefix("(node:").and_then(|rest| rest.split_once(") ")).is_some_and(|(pid, rest)| {
            pid.bytes().all(|b| b.is_ascii_digit())
                && rest.split_once(':').is_some_and(|(kind, _)| kind.ends_with("Warning"))
        })
}

fn interrupted(signal: i32, waiting: &str, child: &mut ChildProcess) -> HostError {
    let name = sys::signal_name(signal);
    if child.status().is_none() {
        diag::say(format_args!("rust-ts-ipc: {name} received; stopping child `{}`", child.command_line()));
    }
    let stopped = child.shutdown(child.grace());
    HostError::Interrupted {
        signal,
        message: format!(
            "interrupted by {name} while waiting for {waiting}; child `{}` {stopped}",
            child.command_line()
        ),
    }
}

/// The conversation proper.
fn converse(
    child: &mut ChildProcess,
    initiator: &mut Initiator,
    pipes: &mut dyn Pipes,
    decoder: &mut Decoder,
    timeout: Duration,
    out: &mut dyn Write,
) -> Result<(), Fault> {
    let mut apply = |child: &mut ChildProcess, pipes: &mut dyn Pipes, step: InitiatorStep| -> Result<bool, Fault> {
        let written = step.print.iter().try_for_each(|line| writeln!(out, "{line}")).and_then(|()| out.flush());
        match written {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Err(Fault::StdoutClosed),
            Err(e) => return Err(HostError::Io(format!("writing stdout: {e}")).into()),
        }
        // A child that stopped reading has usually exited: keep watching its stdout for the
        // EOF (or the exit) that says how, rather than guessing from the failed write.
        if !step.send.is_empty() && pipes.send(child, &step.send).is_err() {
            pipes.close_stdin(child);
        }
        Ok(step.finished)
    };
    apply(child, pipes, initiator.start())?;
    let mut deadline = Instant::now() + timeout;
    let mut exited_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let event = match pipes.next_event(POLL.min(deadline.saturating_duration_since(now))) {
            Some(event) => event,
            None => {
                let now = Instant::now();
                if now >= deadline {
                    let closed = if pipes.stdin_closed(child) { " (it had closed its stdin)" } else { "" };
                    return Err(Fault::Host(HostError::Timeout(format!(
                        "child did not answer within {} ms while the demo was waiting for {}{closed}",
                        timeout.as_millis(),
                        initiator.waiting_for()
                    ))));
                }
                // A child can exit while something it started holds its stdout open, and
                // then no EOF comes: notice the exit itself.
                if exited_at.is_none() && !child.running() {
                    exited_at = Some(now);
                }
                if exited_at.is_some_and(|at| now >= at + EOF_SETTLE) {
                    return Err(Fault::Ended { cut: None, stdout_open: true });
                }
                continue;
            }
        };
        match event {
            Event::Chunk { bytes, .. } => decoder.feed(&bytes),
            Event::Eof => {
                // Whatever the decoder still holds is a line (or frame) the child did not finish.
                let cut = decoder.finish();
                return Err(Fault::Ended { cut, stdout_open: false });
            }
            Event::ReadError(e) => return Err(HostError::Io(format!("reading the child's stdout: {e}")).into()),
            Event::Interrupt(signal) => return Err(Fault::Interrupt(signal)),
        }
        while let Some(step) = decoder.next_step(initiator) {
            let step = step.map_err(HostError::Protocol)?;
            if apply(child, pipes, step)? {
                return Ok(());
            }
            deadline = Instant::now() + timeout;
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
    diag::say(format_args!("rust-ts-ipc: {} is missing; building the TypeScript app once", script.display()));
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
    diag::say(format_args!("rust-ts-ipc: running `{shown}` in {}", repo.display()));
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

/// The binary's signals: turning SIGINT/SIGTERM/SIGHUP into an orderly shutdown, with a
/// last resort that kills the child's group if the demo is stuck. Process control proper
/// (groups, shutdown, reaping) is the library's `process` module.
#[cfg(unix)]
mod sys {
    use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
    use std::sync::{Mutex, PoisonError};
    use std::thread;
    use std::time::Duration;

    use nix::sys::signal::{killpg, pthread_sigmask, SigSet, SigmaskHow, Signal};
    use nix::unistd::Pid;
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    use signal_hook::iterator::Signals;

    static INTERRUPTS: AtomicUsize = AtomicUsize::new(0);
    static LAST_SIGNAL: AtomicI32 = AtomicI32::new(0);
    /// The running child's pid (= its process group), until just before it is reaped.
    static CHILD_GROUP: Mutex<i32> = Mutex::new(0);

    /// Remembers the child's group, for [`watch_interrupts`]' last resort.
    pub fn record_group(pid: u32) {
        if let Ok(pid) = i32::try_from(pid) {
            *CHILD_GROUP.lock().unwrap_or_else(PoisonError::into_inner) = pid;
        }
    }

    /// Forgets the child's group: called before reaping, after which its pid may be reused.
    /// The lock makes the watcher's `killpg` happen before the reap, or not at all.
    pub fn forget_group() {
        *CHILD_GROUP.lock().unwrap_or_else(PoisonError::into_inner) = 0;
    }

    fn kill_recorded_group() -> bool {
        let group = CHILD_GROUP.lock().unwrap_or_else(PoisonError::into_inner);
        *group > 0 && killpg(Pid::from_raw(*group), Signal::SIGKILL).is_ok()
    }

    /// Takes SIGINT, SIGTERM and SIGHUP from now on (their default actions no longer apply)
    /// on a thread of their own: each one is counted and passed to `notify`. If the demo has
    /// not exited `budget` after the first, the watcher stops the child's group and exits the
    /// process itself, so a signal always ends the demo. The handlers only write to a pipe;
    /// a child is started with the default actions (exec resets handlers).
    pub fn watch_interrupts(notify: impl Fn(i32) + Send + 'static, budget: Duration) {
        // signal-hook installs each handler before it publishes what the handler must do: a
        // signal that comes in between finds nothing to do and is dropped (the action it
        // replaced, the default one, is not run from a handler), and the demo then waits out
        // its timeout with its child running. Held back on this thread meanwhile (the only
        // one that takes these signals: see `block_interrupts_on_this_thread`), it is
        // delivered when the mask is restored, to a handler that knows. Restored before any
        // child is started: a child inherits the mask.
        let held = block_interrupts_on_this_thread();
        let registered = Signals::new([SIGINT, SIGTERM, SIGHUP]);
        if let Some(mask) = held {
            let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&mask), None);
        }
        let Ok(mut signals) = registered else {
            return; // keep the default actions: the demo dies, the child sees EOF
        };
        thread::spawn(move || {
            for number in signals.forever() {
                LAST_SIGNAL.store(number, Ordering::SeqCst);
                if INTERRUPTS.fetch_add(1, Ordering::SeqCst) == 0 {
                    thread::spawn(move || {
                        thread::sleep(budget);
                        // The demo is stuck (say, writing to a stdout nobody reads): stop
                        // the child's group here, since the demo cannot.
                        let killed = kill_recorded_group();
                        crate::diag::say(format_args!(
                            "rust-ts-ipc: not stopped {} s after {}; exiting now{}",
                            budget.as_secs(),
                            signal_name(number),
                            if killed { " (the child's process group was sent SIGKILL)" } else { "" }
                        ));
                        crate::diag::finish(|| false);
                        std::process::exit(128 + number);
                    });
                }
                notify(number);
            }
        });
    }

    /// Blocks SIGINT, SIGTERM and SIGHUP on the calling thread; returns the mask it had (None
    /// if it could not be changed). Threads that never start a child (the diagnostics writer)
    /// keep them blocked for good, so that the kernel hands these signals to the main thread,
    /// never to a thread that would take them while [`watch_interrupts`] installs the handlers.
    pub fn block_interrupts_on_this_thread() -> Option<SigSet> {
        let mut set = SigSet::empty();
        for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
            set.add(signal);
        }
        let mut old = SigSet::empty();
        pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old)).ok().map(|()| old)
    }

    /// How many of those signals have arrived so far.
    pub fn interrupts() -> usize {
        INTERRUPTS.load(Ordering::SeqCst)
    }

    /// The last of those signals, if any arrived.
    pub fn interrupted() -> Option<i32> {
        Some(LAST_SIGNAL.load(Ordering::SeqCst)).filter(|&n| n != 0)
    }

    pub fn signal_name(number: i32) -> &'static str {
        Signal::try_from(number).map_or("a signal", Signal::as_str)
    }
}

/// Elsewhere: no signals to take.
#[cfg(not(unix))]
mod sys {
    use std::time::Duration;

    pub fn watch_interrupts(_notify: impl Fn(i32) + Send + 'static, _budget: Duration) {}

    pub fn record_group(_pid: u32) {}

    pub fn forget_group() {}

    pub fn interrupts() -> usize {
        0
    }

    pub fn interrupted() -> Option<i32> {
        None
    }

    pub fn signal_name(_number: i32) -> &'static str {
        "a signal"
    }
}
