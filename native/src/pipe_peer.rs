//! `PipeChild`: a child process whose stdin and stdout the addon owns, for the Node library's
//! synchronous pipe peer (`spawnPeer(command, args, { mode: 'sync' })`, in
//! `ts-app/src/peer/sync.ts`, which holds the request bookkeeping; this file moves bytes).
//!
//! Node streams cannot serve a synchronous request: the event loop cannot run while JavaScript
//! waits, and a second reader of the same pipe would race the stream for its bytes. So the
//! child's stdout is read here, by whichever of two readers holds the one [`Reader`] lock:
//! - `requestSync` (the JS thread): writes the request, then reads (spinning for `spinUs`, then
//!   blocking in `poll`) until the frame carrying its id arrives; it returns that frame, and
//!   every frame read before it, to JavaScript;
//! - the background thread: reads while JavaScript wants it to (for `request`, notifications'
//!   answers and unsolicited messages), files the frames in an inbox while it still holds the
//!   lock, and tells JavaScript through a `ThreadsafeFunction` (`items`; `takeItems` drains it).
//!
//! The lock also guards the decoder (the core's `LineDecoder` or `FrameDecoder`), so every byte
//! read is framed exactly once, by one decoder, in order, whichever thread read it: frames
//! decoded but not yet taken stay in the decoder for the next reader. `requestSync` takes the
//! lock before it writes its request (so what the background thread read before came before
//! the request, and cannot be its reply) and returns the inbox's frames first, then those it
//! read: JavaScript sees every frame once, in the order the child wrote them. `requestSync` pauses
//! the background reader (one wake-up of it per run of synchronous calls, not per call;
//! JavaScript resumes it once the event loop turns), so the two do not wake each other.
//!
//! The child is the core's [`ChildProcess`]: its own process group, and the core's shutdown
//! sequence (stdin closed, SIGTERM to the group, SIGKILL, reap). An exit watcher thread notices
//! its exit without reaping it and makes a pipe readable, which both readers poll beside
//! stdout: a child that dies during `requestSync` ends the call (after up to [`SETTLE`] for
//! its last output) instead of hanging it. Its stderr is read on a thread of its own; the last
//! 4 KiB are kept for `PEER_EXITED` errors. An env cleanup hook stops the child (stdin closed,
//! then the shutdown) if Node's environment goes first, a terminated worker's say.
//!
//! Writes never block the JS thread for `request`: what the pipe does not take at once waits
//! here, and the background thread writes it as the child reads (then sends `drain`).
//! `requestSync` writes whatever waits first, then its request, blocking up to its deadline; a
//! request it has begun to write is written whole (the rest left to the background thread) if
//! the deadline comes first.

use std::cell::Cell;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::process::{ChildStdin, ChildStdout, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use napi::bindgen_prelude::{Buffer, BufferSlice, Either, Either3, Env, Function, Object, Result, Status, Unknown};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{CleanupEnvHook, Error};
use napi_derive::napi;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use rust_ts_ipc as ipc;
use rust_ts_ipc::process::{spawn_stderr_reader, wait_for_exit_unreaped, ChildProcess, StderrTail, Supervision};

use rust_ts_ipc::spin::{AdaptiveSpin, SpinOutcome};

/// After the child's exit is seen, how long its last output (stdout to EOF, stderr) is waited
/// for before what is pending fails: the Node pipe peer's `SETTLE_MS`.
pub const SETTLE: Duration = Duration::from_millis(30);

/// Bytes read from the child's stdout per `read` call.
const READ_CHUNK: usize = 64 * 1024;

/// While `requestSync` reads without blocking, every this many reads with data it checks
/// whether the child has exited (blocked, `poll` tells it).
const EXIT_CHECK_READS: u64 = 64;

/// Reads the background thread makes per wake-up before it hands what it read to JavaScript,
/// so a child writing without pause cannot hold the frames back for long.
const READS_PER_WAKE: usize = 16;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Options of `spawnPipeChild`, checked by the TypeScript caller (`ts-app/src/peer/sync.ts`).
#[napi(object, object_to_js = false)]
pub struct PipeChildOptions {
    /// `'json'` (NDJSON lines) or `'msgpack'` (length-prefixed frames).
    pub encoding: String,
    /// Lines longer than this many bytes are dropped as they arrive and reported as too long.
    pub max_line_bytes: f64,
    /// Under msgpack, frames longer than this many bytes likewise.
    pub max_frame_bytes: f64,
    /// Each shutdown step's wait, in milliseconds (`Infinity`: no escalation).
    pub grace_ms: f64,
    /// How long `requestSync` polls the pipe without blocking, in microseconds, after writing
    /// its request (0: block at once). Never spins where this process may use one CPU only.
    pub spin_us: f64,
    /// The child's working directory; default this process's.
    pub cwd: Option<String>,
    /// The child's whole environment; default this process's.
    pub env: Option<HashMap<String, String>>,
    /// `'forward'` (to this process's stderr), `'ignore'`, or `'event'` (a `stderr` event).
    pub stderr: String,
}

/// Why the child could not be started (returned, not thrown, so that the caller can fail its
/// requests with it as the stream peer does).
#[napi(object, object_from_js = false)]
pub struct SpawnFailure {
    /// The core's text: ``cannot start `CMD`: `CMD` was not found on PATH``, and the like.
    pub message: String,
    /// The OS error's name (`ENOENT`, `EACCES`, …), or `''` if there is none.
    pub errno: String,
}

/// One frame the child wrote, as JavaScript gets it (the fields set depend on `kind`).
#[napi(object, object_from_js = false)]
pub struct PipeItem {
    /// 0: a line (json) or a frame (msgpack); 1: over the limit, dropped; 2: the stream ended
    /// inside a frame (msgpack).
    pub kind: u32,
    /// Its line or frame number, from 1.
    pub n: f64,
    /// kind 0, json: the line, if it is valid UTF-8.
    pub text: Option<String>,
    /// kind 0: the line's bytes when they are not UTF-8 (json), or the frame's body (msgpack).
    pub bytes: Option<Buffer>,
    /// kind 1: its length; kind 2: the announced body length, if the header arrived.
    pub length: Option<f64>,
    /// kind 2: bytes of the header (no length) or of the body that arrived.
    pub received: Option<f64>,
}

/// What the background thread tells JavaScript, in the order it happened.
#[napi(object, object_from_js = false)]
pub struct PipeEvent {
    /// `items` (frames were read: `takeItems` has them), `drain` (writes waiting were written), `eof` (stdout closed),
    /// `stderr` (a piece of it, with the `'event'` option), `exit` (the child exited and was
    /// reaped, its stdout drained; the last event).
    pub kind: String,
    /// `stderr`: the piece.
    pub chunk: Option<Buffer>,
    /// `exit`: how the child ended.
    pub exit: Option<PipeExit>,
}

fn event(kind: &str) -> PipeEvent {
    PipeEvent { kind: kind.to_owned(), chunk: None, exit: None }
}

/// How the child ended.
#[napi(object, object_from_js = false)]
pub struct PipeExit {
    /// Its exit code, or null if a signal ended it (or it could not be waited for).
    pub code: Option<i32>,
    /// The signal that ended it (`SIGKILL`, …), or null.
    pub signal: Option<String>,
}

/// What `requestSync`'s spinning did (`PipeChild.spinStats()`).
#[napi(object, object_from_js = false)]
pub struct SpinStats {
    /// Why it never spins (`the spin budget is 0`, one CPU), or null if it may.
    pub disabled: Option<String>,
    /// Waits for a reply that spun.
    pub spun: f64,
    /// Of those, the ones whose data came while spinning (the rest blocked after).
    pub hits: f64,
}

/// `requestSync`'s answer when it is not simply the reply.
#[napi(object, object_from_js = false)]
pub struct SyncOutcome {
    /// `reply` (the last of `items` is it), `timeout`, `exited` (EOF on stdout, or the child's
    /// exit, and no reply within [`SETTLE`] after it).
    pub status: String,
    /// Frames read, in order: with `reply`, the last one is the reply.
    pub items: Vec<PipeItem>,
}

type EventFn = ThreadsafeFunction<PipeEvent, Unknown<'static>, PipeEvent, Status, false>;

enum Decoder {
    Lines(ipc::LineDecoder),
    Frames(ipc::FrameDecoder),
}

/// A frame taken from the decoder, with the id it carries (if it could be read).
struct Taken {
    item: PipeItem,
    id: Option<u64>,
    /// The core decoded it as a valid message (false: an error JavaScript words with its number).
    ok: bool,
}

impl Decoder {
    fn feed(&mut self, chunk: &[u8]) {
        match self {
            Decoder::Lines(d) => d.feed(chunk),
            Decoder::Frames(d) => d.feed(chunk),
        }
    }

    /// The next frame, or at end of input (`finish`) the last, cut one. `want_id`: read the
    /// id it carries (the core's decoders; only `requestSync` needs it).
    fn next(&mut self, finish: bool, want_id: bool) -> Option<Taken> {
        match self {
            Decoder::Lines(d) => {
                let frame = if finish { d.finish() } else { d.next_frame() }?;
                Some(match frame {
                    ipc::Frame::Line { number, bytes } => match std::str::from_utf8(bytes) {
                        Ok(text) => {
                            let (id, ok) = if want_id {
                                match ipc::decode_envelope(text) {
                                    Ok(envelope) => (envelope.id, true),
                                    Err(e) => (e.id, false),
                                }
                            } else {
                                (None, false)
                            };
                            Taken { item: item(0, number, Some(text.to_owned()), None), id, ok }
                        }
                        Err(_) => {
                            Taken { item: item(0, number, None, Some(bytes.to_vec().into())), id: None, ok: false }
                        }
                    },
                    ipc::Frame::TooLong { number, length } => Taken {
                        item: PipeItem { length: Some(length as f64), ..item(1, number, None, None) },
                        id: None,
                        ok: false,
                    },
                })
            }
            Decoder::Frames(d) => {
                let packet = if finish { d.finish() } else { d.next_packet() }?;
                Some(match packet {
                    ipc::Packet::Frame { number, bytes } => {
                        let (id, ok) = if want_id {
                            match ipc::decode_msgpack_envelope(bytes) {
                                Ok(envelope) => (envelope.id, true),
                                Err(e) => (e.id, false),
                            }
                        } else {
                            (None, false)
                        };
                        Taken { item: item(0, number, None, Some(bytes.to_vec().into())), id, ok }
                    }
                    ipc::Packet::TooLong { number, length } => Taken {
                        item: PipeItem { length: Some(length as f64), ..item(1, number, None, None) },
                        id: None,
                        ok: false,
                    },
                    ipc::Packet::Cut { number, received, length } => Taken {
                        item: PipeItem {
                            length: length.map(|l| l as f64),
                            received: Some(received as f64),
                            ..item(2, number, None, None)
                        },
                        id: None,
                        ok: false,
                    },
                })
            }
        }
    }
}

// Line and frame numbers and lengths stay far below 2^53.
#[allow(clippy::cast_precision_loss)]
fn item(kind: u32, number: u64, text: Option<String>, bytes: Option<Buffer>) -> PipeItem {
    PipeItem { kind, n: number as f64, text, bytes, length: None, received: None }
}

/// The child's stdout and the one decoder of it: whoever holds this lock is the reader.
struct Reader {
    stdout: File,
    decoder: Decoder,
    buf: Vec<u8>,
    /// Stdout reached EOF (and the decoder was finished).
    eof: bool,
    /// `requestSync`'s spin before blocking: the core's adaptive policy (off at 0, and where
    /// this thread may run on one CPU only).
    spin: AdaptiveSpin,
    /// Waits that spun, and of those, the ones data ended (the rest blocked after).
    spun: u64,
    hits: u64,
}

enum Read1 {
    Data,
    Eof,
    Empty,
}

impl Reader {
    /// One non-blocking read into the decoder.
    fn read_once(&mut self) -> Read1 {
        if self.eof {
            return Read1::Eof;
        }
        loop {
            match self.stdout.read(&mut self.buf) {
                Ok(0) => {
                    self.eof = true;
                    return Read1::Eof;
                }
                Ok(n) => {
                    self.decoder.feed(&self.buf[..n]);
                    return Read1::Data;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Read1::Empty,
                // EIO and the like: nothing more will come.
                Err(_) => {
                    self.eof = true;
                    return Read1::Eof;
                }
            }
        }
    }

    /// Spins with non-blocking reads for the adaptive budget (never past `deadline`): true if
    /// data (or EOF) came, false if the caller must block.
    fn spin_once(&mut self, deadline: Option<Instant>) -> bool {
        let budget = self.spin.begin();
        if budget.is_zero() {
            return false;
        }
        self.spun += 1;
        let start = Instant::now();
        let until = deadline.map_or(start + budget, |d| d.min(start + budget));
        loop {
            std::hint::spin_loop();
            if !matches!(self.read_once(), Read1::Empty) {
                self.hits += 1;
                self.spin.end(SpinOutcome::Hit);
                return true;
            }
            if Instant::now() >= until {
                self.spin.end(SpinOutcome::Miss);
                return false;
            }
        }
    }

    /// Every frame decodable now (at EOF, the cut last one too).
    fn take_all(&mut self, into: &mut Vec<PipeItem>) {
        while let Some(taken) = self.decoder.next(false, false) {
            into.push(taken.item);
        }
        if self.eof {
            while let Some(taken) = self.decoder.next(true, false) {
                into.push(taken.item);
            }
        }
    }
}

/// The child's stdin and what waits to be written to it.
struct Writer {
    /// None once closed (by `close`) or broken (the child closed its end).
    stdin: Option<File>,
    pending: Vec<u8>,
    /// How much of `pending` is written.
    written: usize,
}

impl Writer {
    fn waiting(&self) -> bool {
        self.written < self.pending.len()
    }

    /// Writes what waits without blocking; false once the pipe is full. A broken pipe drops it
    /// all (the child's exit, seen elsewhere, says more).
    fn flush(&mut self) -> bool {
        let Some(stdin) = self.stdin.as_mut() else {
            self.pending.clear();
            self.written = 0;
            return true;
        };
        let mut broken = false;
        while self.written < self.pending.len() {
            match stdin.write(&self.pending[self.written..]) {
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(_) => {
                    broken = true;
                    break;
                }
            }
        }
        if broken {
            self.stdin = None;
        }
        self.pending.clear();
        self.written = 0;
        true
    }
}

/// What the JS thread, the background thread, the exit watcher and `close` share.
struct Shared {
    pid: u32,
    reader: Mutex<Reader>,
    writer: Mutex<Writer>,
    /// Set while something waits in `writer` for the background thread to write.
    write_waiting: AtomicBool,
    /// JavaScript owes a `drain` wait: `write` returned false.
    drain_owed: AtomicBool,
    /// JavaScript wants the background thread to read stdout.
    read_wanted: AtomicBool,
    /// Set by the env cleanup hook: Node's environment (a worker's, say) is going without a
    /// `close()`; the background thread stops the child (stdin closed, then the shutdown).
    env_gone: AtomicBool,
    /// The spawn's `graceMs`: the first wait of that shutdown.
    grace: Duration,
    /// Frames the background thread read and JavaScript has not taken yet, in order.
    inbox: Mutex<Vec<PipeItem>>,
    /// Written to wake the background thread from `poll` when the above change.
    wake_write: File,
    wake_read: File,
    /// Readable once the child has exited (written once by the exit watcher, never read).
    exited_read: File,
    /// Its write end, kept open so that the read end never reports a hang-up instead.
    exited_write: File,
    /// A duplicate of the child's stdout, for the background thread's `poll` (the reader lock
    /// is not held while it waits).
    stdout_poll: File,
    exit: Mutex<Option<std::process::ExitStatus>>,
    child: Mutex<Option<ChildProcess>>,
    stderr_tail: Arc<StderrTail>,
    stderr_done: Mutex<Option<Receiver<()>>>,
    stderr_ended: AtomicBool,
}

impl Shared {
    fn kick(&self) {
        // A full wake pipe already wakes the thread.
        let _ = (&self.wake_write).write(&[1]);
    }

    fn exited(&self) -> bool {
        lock(&self.exit).is_some()
    }

    /// Waits up to `until` for the child's exit to be seen, then for its stderr to close: what
    /// a `PEER_EXITED` error says (its status, the tail) is then complete.
    fn settle_exit(&self, until: Instant) {
        if !self.exited() {
            let left = until.saturating_duration_since(Instant::now());
            let mut fds = [PollFd::new(self.exited_read.as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, PollTimeout::try_from(left).unwrap_or(PollTimeout::ZERO));
        }
        if self.exited() {
            self.wait_stderr(until);
        }
    }

    /// Waits up to `until` for the child's stderr to close, so its tail is complete.
    fn wait_stderr(&self, until: Instant) {
        if self.stderr_ended.load(Ordering::Acquire) {
            return;
        }
        let done = lock(&self.stderr_done);
        if let Some(rx) = done.as_ref() {
            let wait = until.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(()) | Err(RecvTimeoutError::Disconnected) => self.stderr_ended.store(true, Ordering::Release),
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }
}

/// Joins the exit watcher before the child is reaped (after which its pid may be another's).
struct JoinWatcher(Arc<Mutex<Option<JoinHandle<()>>>>);

impl Supervision for JoinWatcher {
    fn before_reap(&self) {
        if let Some(watcher) = lock(&self.0).take() {
            let _ = watcher.join();
        }
    }
}

fn set_nonblocking(fd: impl AsFd) -> io::Result<()> {
    let flags = fcntl(fd.as_fd(), FcntlArg::F_GETFL).map_err(io::Error::from)?;
    fcntl(fd.as_fd(), FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK))
        .map_err(io::Error::from)?;
    Ok(())
}

fn pipe() -> io::Result<(File, File)> {
    let (r, w): (OwnedFd, OwnedFd) = nix::unistd::pipe().map_err(io::Error::from)?;
    Ok((File::from(r), File::from(w)))
}

/// Milliseconds from JavaScript as a `Duration`: Infinity, and anything too big for one (a
/// finite `1e300` passes the option checks), is `Duration::MAX`, never a panic (which `close`
/// would turn into an abort of Node).
fn millis(ms: f64) -> Duration {
    if ms.is_finite() && ms >= 0.0 {
        Duration::try_from_secs_f64(ms / 1000.0).unwrap_or(Duration::MAX)
    } else {
        Duration::MAX
    }
}

fn exit_js(status: Option<std::process::ExitStatus>) -> PipeExit {
    use std::os::unix::process::ExitStatusExt;
    match status {
        None => PipeExit { code: None, signal: None },
        Some(s) => PipeExit {
            code: s.code(),
            signal: s.signal().map(|n| {
                nix::sys::signal::Signal::try_from(n)
                    .map_or_else(|_| format!("signal {n}"), |sig| sig.as_str().to_owned())
            }),
        },
    }
}

/// A child process speaking the protocol, read and written by the addon; see the module docs.
/// Made by `spawnPipeChild`; the request bookkeeping is JavaScript's (`ts-app/src/peer/sync.ts`).
#[napi]
pub struct PipeChild {
    shared: Arc<Shared>,
    /// The env cleanup hook that stops the child if the environment goes first; removed by
    /// `close` (it holds only a `Weak`, so a peer that ends without `close` leaks no more
    /// than the registration).
    hook: Cell<Option<CleanupEnvHook<Weak<Shared>>>>,
}

/// Starts `command` with `args` in a process group of its own, its stdin, stdout and stderr
/// piped to the addon, and returns the `PipeChild` that owns them, or why it could not start.
/// `onEvent` is called on the JS thread with each `PipeEvent`, in order; it keeps Node alive
/// until the `exit` event (after the child's exit, or `close`).
#[napi(catch_unwind)]
pub fn spawn_pipe_child(
    env: Env,
    command: String,
    args: Vec<String>,
    options: PipeChildOptions,
    #[napi(ts_arg_type = "(event: PipeEvent) => void")] on_event: Function<'_, PipeEvent, Unknown<'static>>,
) -> Result<Either<PipeChild, SpawnFailure>> {
    let encoding = match options.encoding.as_str() {
        "msgpack" => ipc::Encoding::Msgpack,
        _ => ipc::Encoding::Json,
    };
    let decoder = match encoding {
        ipc::Encoding::Msgpack => Decoder::Frames(ipc::FrameDecoder::new(options.max_frame_bytes as usize)),
        ipc::Encoding::Json => Decoder::Lines(ipc::LineDecoder::new(options.max_line_bytes as usize)),
    };
    let mut cmd = Command::new(&command);
    cmd.args(&args);
    if let Some(cwd) = &options.cwd {
        cmd.current_dir(cwd);
    }
    if let Some(env) = &options.env {
        cmd.env_clear().envs(env);
    }
    let watcher: Arc<Mutex<Option<JoinHandle<()>>>> = Arc::new(Mutex::new(None));
    let spawned = ChildProcess::spawn(&mut cmd, millis(options.grace_ms), Box::new(JoinWatcher(Arc::clone(&watcher))));
    let (mut child, stdout, stderr) = match spawned {
        Ok(parts) => parts,
        Err(e) => {
            let errno =
                e.error.raw_os_error().map(|n| format!("{:?}", nix::errno::Errno::from_raw(n))).unwrap_or_default();
            return Ok(Either::B(SpawnFailure { message: e.to_string(), errno }));
        }
    };
    let io_error = |e: io::Error| Error::from_reason(format!("spawnPipeChild: {e}"));
    let stdin: ChildStdin = child.take_stdin().ok_or_else(|| Error::from_reason("spawnPipeChild: no stdin pipe"))?;
    let stdin = File::from(OwnedFd::from(stdin));
    let stdout: ChildStdout = stdout;
    let stdout = File::from(OwnedFd::from(stdout));
    let stdout_poll = stdout.try_clone().map_err(io_error)?;
    set_nonblocking(&stdin).map_err(io_error)?;
    set_nonblocking(&stdout).map_err(io_error)?;
    let (wake_read, wake_write) = pipe().map_err(io_error)?;
    set_nonblocking(&wake_read).map_err(io_error)?;
    set_nonblocking(&wake_write).map_err(io_error)?;
    let (exited_read, exited_write) = pipe().map_err(io_error)?;

    let tsfn: Arc<EventFn> = Arc::new(
        on_event
            .build_threadsafe_function::<PipeEvent>()
            .callee_handled::<false>()
            .build_callback(|ctx| Ok(ctx.value))?,
    );
    let stderr_tail = Arc::new(StderrTail::default());
    let stderr_done = match options.stderr.as_str() {
        "forward" => spawn_stderr_reader(stderr, Arc::clone(&stderr_tail), |chunk: &[u8]| {
            let _ = io::stderr().write_all(chunk);
        }),
        "event" => {
            let tsfn = Arc::clone(&tsfn);
            spawn_stderr_reader(stderr, Arc::clone(&stderr_tail), move |chunk: &[u8]| {
                let piece = PipeEvent { chunk: Some(chunk.to_vec().into()), ..event("stderr") };
                tsfn.call(piece, ThreadsafeFunctionCallMode::NonBlocking);
            })
        }
        _ => spawn_stderr_reader(stderr, Arc::clone(&stderr_tail), |_: &[u8]| {}),
    };
    let pid = child.id();
    let spin_us = if options.spin_us.is_finite() && options.spin_us > 0.0 { options.spin_us as u64 } else { 0 };
    let shared = Arc::new(Shared {
        pid,
        reader: Mutex::new(Reader {
            stdout,
            decoder,
            buf: vec![0; READ_CHUNK],
            eof: false,
            spin: AdaptiveSpin::for_this_thread(Duration::from_micros(spin_us)),
            spun: 0,
            hits: 0,
        }),
        writer: Mutex::new(Writer { stdin: Some(stdin), pending: Vec::new(), written: 0 }),
        inbox: Mutex::new(Vec::new()),
        write_waiting: AtomicBool::new(false),
        drain_owed: AtomicBool::new(false),
        read_wanted: AtomicBool::new(true),
        env_gone: AtomicBool::new(false),
        grace: millis(options.grace_ms),
        wake_write,
        wake_read,
        exited_read,
        exited_write,
        stdout_poll,
        exit: Mutex::new(None),
        child: Mutex::new(Some(child)),
        stderr_tail,
        stderr_done: Mutex::new(Some(stderr_done)),
        stderr_ended: AtomicBool::new(false),
    });
    // The exit watcher: notices the exit without reaping (the shutdown reaps, after joining it).
    let for_watcher = Arc::clone(&shared);
    let watching = std::thread::Builder::new().name("rust-ts-ipc sync exit".to_owned()).spawn(move || {
        if let Some(status) = wait_for_exit_unreaped(for_watcher.pid) {
            *lock(&for_watcher.exit) = Some(status);
            let _ = (&for_watcher.exited_write).write(&[1]);
        }
    });
    match watching {
        Ok(handle) => *lock(&watcher) = Some(handle),
        Err(e) => return Err(io_error(e)),
    }
    let for_reader = Arc::clone(&shared);
    std::thread::Builder::new()
        .name("rust-ts-ipc sync reader".to_owned())
        .spawn(move || background(&for_reader, &tsfn))
        .map_err(io_error)?;
    // A worker terminated (or any env torn down) with the peer open: no `close()` will come, and
    // the tsfn alone would let the child run on. On the JS thread, so it only signals.
    let hook = env.add_env_cleanup_hook(Arc::downgrade(&shared), |weak: Weak<Shared>| {
        if let Some(shared) = weak.upgrade() {
            shared.env_gone.store(true, Ordering::Release);
            shared.kick();
        }
    })?;
    Ok(Either::A(PipeChild { shared, hook: Cell::new(Some(hook)) }))
}

/// Sends an event to JavaScript; false if Node no longer takes them (its env is going away).
fn send(tsfn: &EventFn, event: PipeEvent) -> bool {
    tsfn.call(event, ThreadsafeFunctionCallMode::NonBlocking) == Status::Ok
}

/// Files frames the background thread read, while it still holds the reader lock (so that a
/// `requestSync` that takes the lock next finds them, and returns them first, in order). True if
/// JavaScript must be told (the inbox was empty: no `items` event is on its way).
fn file_items(shared: &Shared, items: Vec<PipeItem>) -> bool {
    if items.is_empty() {
        return false;
    }
    let mut inbox = lock(&shared.inbox);
    let was_empty = inbox.is_empty();
    inbox.extend(items);
    was_empty
}

/// The background thread: reads stdout while JavaScript wants it, writes what waits, and after
/// the child's exit drains stdout (up to [`SETTLE`]), reaps the child and sends `exit`.
fn background(shared: &Shared, tsfn: &EventFn) {
    let mut exit_seen: Option<Instant> = None;
    let mut eof_sent = false;
    let mut wake = [0u8; 64];
    let mut first_wait = Duration::ZERO;
    loop {
        if shared.env_gone.load(Ordering::Acquire) {
            // Nobody will take the events: stop the child as `close()` would.
            first_wait = shared.grace;
            break;
        }
        // After the exit, stdout is read whatever JavaScript wanted: it is the last output.
        let reading = shared.read_wanted.load(Ordering::Acquire) || exit_seen.is_some();
        // Frames a synchronous reader left in the decoder come first.
        let (eof, tell) = {
            let mut reader = lock(&shared.reader);
            let mut items = Vec::new();
            if reading {
                reader.take_all(&mut items);
            }
            (reader.eof, file_items(shared, items))
        };
        if tell && !send(tsfn, event("items")) {
            break;
        }
        if eof && !eof_sent && reading {
            eof_sent = true;
            if !send(tsfn, event("eof")) {
                break;
            }
        }
        if let Some(seen) = exit_seen {
            if eof || seen.elapsed() >= SETTLE {
                break;
            }
        }
        let writing = shared.write_waiting.load(Ordering::Acquire);
        let timeout = match exit_seen {
            Some(seen) => PollTimeout::try_from(SETTLE.saturating_sub(seen.elapsed())).unwrap_or(PollTimeout::ZERO),
            None => PollTimeout::NONE,
        };
        // The child's stdin, duplicated for the wait (closed again after it; `close` kicks).
        let stdin = if writing { lock(&shared.writer).stdin.as_ref().and_then(|f| f.try_clone().ok()) } else { None };
        let mut fds = vec![PollFd::new(shared.wake_read.as_fd(), PollFlags::POLLIN)];
        let exit_at = exit_seen.is_none().then(|| {
            fds.push(PollFd::new(shared.exited_read.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let out_at = (reading && !eof).then(|| {
            fds.push(PollFd::new(shared.stdout_poll.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let in_at = stdin.as_ref().map(|f| {
            fds.push(PollFd::new(f.as_fd(), PollFlags::POLLOUT));
            fds.len() - 1
        });
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => break,
        }
        let ready =
            |at: Option<usize>| at.and_then(|i| fds.get(i)).and_then(PollFd::revents).is_some_and(|r| !r.is_empty());
        let (wake_ready, exit_ready, out_ready, in_ready) =
            (ready(Some(0)), ready(exit_at), ready(out_at), ready(in_at));
        drop(fds);
        drop(stdin);
        if wake_ready {
            while matches!((&shared.wake_read).read(&mut wake), Ok(n) if n > 0) {}
        }
        if exit_ready && exit_seen.is_none() {
            exit_seen = Some(Instant::now());
        }
        if in_ready {
            let mut writer = lock(&shared.writer);
            if writer.flush() {
                shared.write_waiting.store(false, Ordering::Release);
                drop(writer);
                if shared.drain_owed.swap(false, Ordering::AcqRel) && !send(tsfn, event("drain")) {
                    break;
                }
            }
        }
        if out_ready {
            let tell = {
                let mut reader = lock(&shared.reader);
                for _ in 0..READS_PER_WAKE {
                    match reader.read_once() {
                        Read1::Data => {}
                        Read1::Eof | Read1::Empty => break,
                    }
                }
                let mut items = Vec::new();
                reader.take_all(&mut items);
                file_items(shared, items)
            };
            if tell && !send(tsfn, event("items")) {
                break;
            }
        }
    }
    // The child has exited (or Node no longer takes events: its environment is going): stop what it left in its group, reap it, and say how it ended.
    lock(&shared.writer).stdin = None;
    let status = {
        let mut child = lock(&shared.child);
        child.as_mut().and_then(|c| c.shutdown(first_wait).status)
    };
    let status = status.or(*lock(&shared.exit));
    shared.wait_stderr(Instant::now() + SETTLE);
    send(tsfn, PipeEvent { exit: Some(exit_js(status)), ..event("exit") });
}

/// Why `requestSync` got no reply.
enum NoReply {
    Timeout,
    Exited,
}

#[napi]
impl PipeChild {
    /// The child's process id (also its process group's).
    #[napi(getter)]
    pub fn pid(&self) -> u32 {
        self.shared.pid
    }

    /// How the child exited, once its exit has been seen (it may not be reaped yet); else null.
    #[napi]
    pub fn exit_status(&self) -> Option<PipeExit> {
        let status = *lock(&self.shared.exit);
        status.map(|s| exit_js(Some(s)))
    }

    /// The last (at most 4 KiB) of the child's stderr so far, as text.
    #[napi]
    pub fn stderr_tail(&self) -> String {
        self.shared.stderr_tail.text()
    }

    /// What `requestSync`'s spinning did: `disabled` says why it never spins (null: it may).
    #[napi]
    pub fn spin_stats(&self) -> SpinStats {
        let reader = lock(&self.shared.reader);
        #[allow(clippy::cast_precision_loss)]
        SpinStats {
            disabled: reader.spin.disabled().map(|why| why.to_string()),
            spun: reader.spun as f64,
            hits: reader.hits as f64,
        }
    }

    /// The frames the background thread has read since the last call, in order (an `items`
    /// event says there are some; `requestSync` takes them first too).
    #[napi]
    pub fn take_items(&self) -> Vec<PipeItem> {
        std::mem::take(&mut *lock(&self.shared.inbox))
    }

    /// True while bytes given to `write` wait to be written (a `drain` event follows).
    #[napi(getter)]
    pub fn write_blocked(&self) -> bool {
        self.shared.write_waiting.load(Ordering::Acquire)
    }

    /// Starts (true) or pauses (false) the background reader. Paused, stdout is read only by
    /// `requestSync` (and after the child's exit).
    #[napi]
    pub fn set_reading(&self, on: bool) {
        if self.shared.read_wanted.swap(on, Ordering::AcqRel) != on {
            self.shared.kick();
        }
    }

    /// Writes `bytes` (a json line as a string, or a msgpack frame) without blocking. Returns
    /// false if some must wait for the child to read: a `drain` event follows once written.
    #[napi]
    pub fn write(&self, bytes: Either<String, BufferSlice<'_>>) -> bool {
        let bytes: &[u8] = match &bytes {
            Either::A(s) => s.as_bytes(),
            Either::B(b) => b,
        };
        let mut writer = lock(&self.shared.writer);
        writer.pending.extend_from_slice(bytes);
        if writer.flush() {
            return true;
        }
        self.shared.drain_owed.store(true, Ordering::Release);
        if !self.shared.write_waiting.swap(true, Ordering::AcqRel) {
            self.shared.kick();
        }
        false
    }

    /// Writes `request` (after anything still waiting to be written), then reads until the frame
    /// carrying `id` arrives, spinning for `spinUs` before blocking, at most `timeoutMs` (0 or
    /// Infinity: no limit). Returns the reply (the line as a string under json, the frame's
    /// body under msgpack) when it is the only frame read and a valid message, else a
    /// `SyncOutcome`. Pauses the
    /// background reader (see `setReading`).
    #[napi(catch_unwind)]
    pub fn request_sync(
        &self,
        request: Either<String, BufferSlice<'_>>,
        id: f64,
        timeout_ms: f64,
    ) -> Result<Either3<String, Buffer, SyncOutcome>> {
        let shared = &*self.shared;
        let start = Instant::now();
        // A deadline past what an `Instant` can hold is no deadline.
        let deadline =
            if timeout_ms > 0.0 && timeout_ms.is_finite() { start.checked_add(millis(timeout_ms)) } else { None };
        if shared.read_wanted.swap(false, Ordering::AcqRel) {
            shared.kick();
        }
        let bytes: &[u8] = match &request {
            Either::A(s) => s.as_bytes(),
            Either::B(b) => b,
        };
        let mut items = Vec::new();
        // The reader lock is taken before the request is written, so the background thread
        // cannot take its reply: what it read before holding the lock came before the request.
        let mut reader = lock(&shared.reader);
        items.append(&mut lock(&shared.inbox));
        let outcome = match self.write_sync(&mut reader, bytes, deadline, &mut items) {
            Ok(()) => self.read_reply(&mut reader, id as u64, deadline, &mut items),
            Err(NoReply::Exited) => {
                // The request could not be written: the child is gone, or going.
                shared.settle_exit(Instant::now() + SETTLE);
                Err(NoReply::Exited)
            }
            Err(why) => Err(why),
        };
        drop(reader);
        let status = match outcome {
            Ok(reply) => {
                if items.is_empty() && reply.ok {
                    match (reply.item.text, reply.item.bytes) {
                        (Some(text), _) => return Ok(Either3::A(text)),
                        (None, Some(bytes)) => return Ok(Either3::B(bytes)),
                        (None, None) => {}
                    }
                    return Err(Error::from_reason("requestSync: a reply frame without content (a bug)"));
                }
                items.push(reply.item);
                "reply"
            }
            Err(NoReply::Timeout) => "timeout",
            Err(NoReply::Exited) => "exited",
        };
        Ok(Either3::C(SyncOutcome { status: status.to_owned(), items }))
    }

    /// Runs the shutdown sequence on a thread of its own (stdin closed, `firstWaitMs`, SIGTERM
    /// to the group, the spawn's `graceMs`, SIGKILL, reap) and resolves to how the child ended.
    /// The background thread goes on reading until the child's exit, then sends `exit`.
    #[napi(ts_return_type = "Promise<PipeExit>")]
    pub fn close(&self, env: Env, first_wait_ms: f64) -> Result<Object<'static>> {
        type Resolver = Box<dyn FnOnce(Env) -> Result<PipeExit>>;
        let (deferred, promise) = env.create_deferred::<PipeExit, Resolver>()?;
        if let Some(hook) = self.hook.take() {
            // `close` stops the child itself from here; a failure only leaves the hook, harmless.
            let _ = env.remove_env_cleanup_hook(hook);
        }
        let shared = Arc::clone(&self.shared);
        let wait = millis(first_wait_ms);
        let spawned = std::thread::Builder::new().name("rust-ts-ipc sync close".to_owned()).spawn(move || {
            // What waits is written first, within the wait, as the stream peer's `end()` does.
            // The child may have to write its replies before it reads on: the background thread
            // reads stdout meanwhile (so the writer lock is not held across the wait).
            shared.read_wanted.store(true, Ordering::Release);
            shared.kick();
            let until = Instant::now() + wait.min(Duration::from_secs(3600));
            loop {
                let stdin = {
                    let mut writer = lock(&shared.writer);
                    if !writer.waiting() || writer.flush() {
                        break;
                    }
                    match writer.stdin.as_ref().and_then(|f| f.try_clone().ok()) {
                        Some(stdin) => stdin,
                        None => break,
                    }
                };
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                let mut fds = [
                    PollFd::new(stdin.as_fd(), PollFlags::POLLOUT),
                    PollFd::new(shared.exited_read.as_fd(), PollFlags::POLLIN),
                ];
                let _ = poll(&mut fds, PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX));
                let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
                // Exited, and what holds its stdin does not read: nothing more will be taken.
                if ready(&fds[1]) && !ready(&fds[0]) {
                    break;
                }
            }
            {
                let mut writer = lock(&shared.writer);
                writer.stdin = None;
                writer.pending.clear();
                writer.written = 0;
            }
            shared.write_waiting.store(false, Ordering::Release);
            // The background thread may hold a duplicate of stdin in its wait: wake it to drop it.
            shared.kick();
            let stopped = lock(&shared.child).as_mut().map(|c| c.shutdown(wait));
            let status = stopped.and_then(|s| s.status).or(*lock(&shared.exit));
            let exit = exit_js(status);
            deferred.resolve(Box::new(move |_| Ok(exit)));
        });
        match spawned {
            Ok(_) => {}
            Err(e) => return Err(Error::from_reason(format!("close: could not start a thread: {e}"))),
        }
        Ok(crate::call_js::promise_static(promise))
    }
}

impl PipeChild {
    /// Writes what waits, then `bytes`, blocking up to `deadline`. A request cut by the deadline
    /// is left to the background thread to finish (never cut on the wire).
    /// While the pipe is full, stdout is read meanwhile (into `others`: no reply can come
    /// before its request is whole), so a child blocked writing to us cannot deadlock the call.
    fn write_sync(
        &self,
        reader: &mut Reader,
        bytes: &[u8],
        deadline: Option<Instant>,
        others: &mut Vec<PipeItem>,
    ) -> std::result::Result<(), NoReply> {
        let shared = &*self.shared;
        let mut writer = lock(&shared.writer);
        if writer.stdin.is_none() {
            return Err(NoReply::Exited);
        }
        writer.pending.extend_from_slice(bytes);
        loop {
            if writer.flush() {
                if writer.stdin.is_none() {
                    return Err(NoReply::Exited);
                }
                shared.write_waiting.store(false, Ordering::Release);
                return Ok(());
            }
            let left = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        if !shared.write_waiting.swap(true, Ordering::AcqRel) {
                            shared.kick();
                        }
                        return Err(NoReply::Timeout);
                    }
                    PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)
                }
                None => PollTimeout::NONE,
            };
            let Some(stdin) = writer.stdin.as_ref() else { return Err(NoReply::Exited) };
            let mut fds = [
                PollFd::new(stdin.as_fd(), PollFlags::POLLOUT),
                PollFd::new(shared.exited_read.as_fd(), PollFlags::POLLIN),
                PollFd::new(reader.stdout.as_fd(), PollFlags::POLLIN),
            ];
            let watched = if reader.eof { 2 } else { 3 };
            let _ = poll(&mut fds[..watched], left);
            let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
            if ready(&fds[1]) && !ready(&fds[0]) {
                return Err(NoReply::Exited);
            }
            if watched == 3 && ready(&fds[2]) {
                reader.read_once();
                reader.take_all(others);
            }
        }
    }

    /// Reads until the frame carrying `id`; frames before it go to `others`.
    fn read_reply(
        &self,
        reader: &mut Reader,
        id: u64,
        deadline: Option<Instant>,
        others: &mut Vec<PipeItem>,
    ) -> std::result::Result<Taken, NoReply> {
        let shared = &*self.shared;
        // Set once the child's exit or stdout's EOF is seen: the last output is awaited until then.
        let mut settle: Option<Instant> = None;
        // Right after the write the reply is rarely there yet: without a spin, the first
        // non-blocking read would only fail; wait in `poll` at once (one system call fewer).
        let mut skip_read = reader.spin.disabled().is_some();
        let mut reads_unpolled: u64 = 0;
        loop {
            while let Some(taken) = reader.decoder.next(false, true) {
                if taken.id == Some(id) {
                    return Ok(taken);
                }
                others.push(taken.item);
            }
            if reader.eof {
                while let Some(taken) = reader.decoder.next(true, true) {
                    if taken.id == Some(id) {
                        return Ok(taken);
                    }
                    others.push(taken.item);
                }
                // Stdout is closed: wait (briefly) for the exit, so the error can say how.
                shared.settle_exit(settle.unwrap_or_else(|| Instant::now() + SETTLE));
                return Err(NoReply::Exited);
            }
            // Checked on every turn, not only before blocking: a child that writes without
            // pause (frames that are not the reply) would otherwise never let a read come back
            // empty, and the call would outlive its deadline, holding the JS thread.
            let now = Instant::now();
            if settle.is_some_and(|s| s <= now) {
                shared.wait_stderr(now + SETTLE);
                return Err(NoReply::Exited);
            }
            if deadline.is_some_and(|d| d <= now) {
                return Err(NoReply::Timeout);
            }
            if !std::mem::take(&mut skip_read) {
                match reader.read_once() {
                    Read1::Data => {
                        // Likewise the child's exit, seen in `poll` only: a process it left
                        // holding stdout could keep every read full, with no deadline to end it.
                        reads_unpolled += 1;
                        if settle.is_none() && reads_unpolled % EXIT_CHECK_READS == 0 && shared.exited() {
                            settle = Some(Instant::now() + SETTLE);
                        }
                        continue;
                    }
                    Read1::Eof => continue,
                    Read1::Empty => {}
                }
            }
            // Nothing to read: spin (if enabled and worth it), then block.
            if settle.is_none() && reader.spin_once(deadline) {
                continue;
            }
            let now = Instant::now();
            let mut until = deadline;
            if let Some(s) = settle {
                until = Some(until.map_or(s, |d| d.min(s)));
            }
            let timeout = match until {
                Some(u) => {
                    let left = u.saturating_duration_since(now);
                    if left.is_zero() {
                        if settle.is_some_and(|s| s <= now) {
                            shared.wait_stderr(now + SETTLE);
                            return Err(NoReply::Exited);
                        }
                        return Err(NoReply::Timeout);
                    }
                    PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)
                }
                None => PollTimeout::NONE,
            };
            let mut fds = [
                PollFd::new(reader.stdout.as_fd(), PollFlags::POLLIN),
                PollFd::new(shared.exited_read.as_fd(), PollFlags::POLLIN),
            ];
            // Once the exit is seen, only stdout and the settle deadline matter.
            let watched = if settle.is_none() { 2 } else { 1 };
            let _ = poll(&mut fds[..watched], timeout);
            if settle.is_none() && fds[1].revents().is_some_and(|r| !r.is_empty()) {
                settle = Some(Instant::now() + SETTLE);
            }
        }
    }
}
