//! The binary's stderr: its own messages and the child's forwarded stderr, written by one
//! thread of their own, so that no other thread ever blocks on, or panics over, a stderr
//! that is closed or that nobody reads. Timeouts, signals and the child's shutdown must
//! work whatever happens to stderr.
//!
//! - [`say`] queues one of our own lines. It never blocks and never fails. Our lines are few
//!   and short, so they are always kept, and they keep their order with the child's output.
//! - [`forward`] queues a piece of the child's stderr, each of its lines prefixed
//!   `[child] `; one of our lines in the middle of one of the child's goes on a line of its
//!   own. While our stderr takes bytes it waits
//!   for room (backpressure to the child, as a terminal gives); once the writer has made no
//!   progress for [`STUCK`], pieces are dropped and counted instead, so a stuck stderr stalls
//!   neither the conversation nor the shutdown.
//! - [`finish`] stops forwarding, adds a last line saying how many bytes were dropped (if
//!   any), and waits for the queue to be written for as long as the writer keeps making
//!   progress.
//!
//! Once a write fails (a closed stderr: `EPIPE`), everything is discarded: nobody is left to
//! tell.

use std::collections::VecDeque;
use std::fmt::Display;
use std::io::{self, Write};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// What each line of the child's stderr is prefixed with.
const CHILD_PREFIX: &[u8] = b"[child] ";
/// How many bytes of the child's stderr may wait in the queue.
const CHILD_BUDGET: usize = 1024 * 1024;
/// How long our stderr may take nothing, with bytes waiting, before it counts as stuck.
pub const STUCK: Duration = Duration::from_secs(1);

struct Queue {
    /// Bytes to write, each tagged with whether it came from the child.
    items: VecDeque<(bool, Vec<u8>)>,
    /// Bytes of the child's in `items` (and in the write under way).
    child_bytes: usize,
    /// A write is under way, and when it last moved (began, or wrote some bytes).
    writing: Option<Instant>,
    /// Child bytes dropped because our stderr was stuck.
    dropped: u64,
    /// The child's stderr so far ends with a newline (or is empty).
    child_at_line_start: bool,
    /// [`finish`] has run: the child's output is no longer forwarded.
    finished: bool,
    /// A write failed: discard everything.
    broken: bool,
}

impl Queue {
    fn stuck(&self) -> bool {
        self.writing.is_some_and(|since| since.elapsed() >= STUCK)
    }

    /// Queues one of our lines, first ending a line of the child's that is under way.
    fn push_own(&mut self, line: &str) {
        let mut bytes = Vec::with_capacity(line.len() + 2);
        if !self.child_at_line_start {
            bytes.push(b'\n');
            self.child_at_line_start = true;
        }
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.items.push_back((false, bytes));
    }

    /// Queues a piece of the child's stderr, prefixing each line it starts.
    fn push_child(&mut self, chunk: &[u8]) {
        let mut out = Vec::with_capacity(chunk.len() + 1024);
        for piece in chunk.split_inclusive(|&b| b == b'\n') {
            if self.child_at_line_start {
                out.extend_from_slice(CHILD_PREFIX);
            }
            out.extend_from_slice(piece);
            self.child_at_line_start = piece.ends_with(b"\n");
        }
        self.child_bytes += out.len();
        self.items.push_back((true, out));
    }
}

struct Sink {
    queue: Mutex<Queue>,
    /// Signalled when an item is queued, and when the writer moves.
    changed: Condvar,
}

impl Sink {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Nothing here panics while holding the lock; if something ever did, the queue is
        // still consistent enough to keep writing.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn sink() -> &'static Sink {
    static SINK: OnceLock<&'static Sink> = OnceLock::new();
    SINK.get_or_init(|| {
        let sink: &'static Sink = Box::leak(Box::new(Sink {
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                child_bytes: 0,
                writing: None,
                dropped: 0,
                child_at_line_start: true,
                finished: false,
                broken: false,
            }),
            changed: Condvar::new(),
        }));
        if thread::Builder::new().name("stderr".to_owned()).spawn(move || write_loop(sink)).is_err() {
            // No thread: nothing would ever be written, so say so by discarding.
            sink.lock().broken = true;
        }
        sink
    })
}

fn write_loop(sink: &'static Sink) {
    // The demo's signals belong to its signal watcher, whenever this thread starts.
    #[cfg(unix)]
    {
        use nix::sys::signal::{SigSet, Signal};
        let mut set = SigSet::empty();
        for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
            set.add(signal);
        }
        let _ = set.thread_block();
    }
    let mut queue = sink.lock();
    loop {
        let Some((from_child, bytes)) = queue.items.pop_front() else {
            queue = sink.changed.wait(queue).unwrap_or_else(PoisonError::into_inner);
            continue;
        };
        if queue.broken {
            if from_child {
                queue.child_bytes -= bytes.len();
            }
            continue;
        }
        queue.writing = Some(Instant::now());
        drop(queue);
        let ok = write_all(sink, &bytes);
        queue = sink.lock();
        queue.writing = None;
        if from_child {
            queue.child_bytes -= bytes.len();
        }
        queue.broken |= !ok;
        sink.changed.notify_all();
    }
}

/// Writes `bytes` to stderr, noting each step of progress; false once a write fails.
fn write_all(sink: &Sink, mut bytes: &[u8]) -> bool {
    let mut stderr = io::stderr();
    while !bytes.is_empty() {
        match stderr.write(bytes) {
            Ok(0) => return false,
            Ok(n) => {
                bytes = &bytes[n..];
                sink.lock().writing = Some(Instant::now());
                sink.changed.notify_all();
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

/// Queues one line of our own (a newline is added). Never blocks, never fails.
pub fn say(line: impl Display) {
    let sink = sink();
    let mut queue = sink.lock();
    if !queue.broken {
        queue.push_own(&line.to_string());
        sink.changed.notify_all();
    }
}

/// Queues a piece of the child's stderr: waits while our stderr is taking bytes and the
/// queue is full; drops and counts the piece once our stderr is stuck. Returns at once
/// after [`finish`].
pub fn forward(chunk: &[u8]) {
    let sink = sink();
    let mut queue = sink.lock();
    loop {
        if queue.finished || queue.broken {
            return;
        }
        if queue.child_bytes == 0 || queue.child_bytes + chunk.len() <= CHILD_BUDGET {
            queue.push_child(chunk);
            sink.changed.notify_all();
            return;
        }
        if queue.stuck() {
            queue.dropped += chunk.len() as u64;
            if let Some(&last) = chunk.last() {
                queue.child_at_line_start = last == b'\n';
            }
            return;
        }
        queue = sink.changed.wait_timeout(queue, STUCK / 4).unwrap_or_else(PoisonError::into_inner).0;
    }
}

/// The child's stderr has closed: ends its last line if it left one open.
pub fn end_of_child_stderr() {
    let sink = sink();
    let mut queue = sink.lock();
    if !queue.finished && !queue.broken && !queue.child_at_line_start {
        queue.push_child(b"\n");
        sink.changed.notify_all();
    }
}

/// Stops forwarding the child's stderr, says how many of its bytes were dropped (if any),
/// then waits for everything queued to be written, giving up once stderr has been stuck
/// for [`STUCK`]. Returns whether everything was written.
pub fn finish() -> bool {
    let sink = sink();
    let mut queue = sink.lock();
    if !queue.finished {
        queue.finished = true;
        if queue.dropped > 0 {
            let note = format!(
                "rust-ts-ipc: dropped {} bytes of the child's stderr while our stderr was not being read",
                queue.dropped
            );
            queue.push_own(&note);
            sink.changed.notify_all();
        }
    }
    // A stderr stuck for long already gets a fresh chance from now.
    let start = Instant::now();
    loop {
        if queue.broken {
            return false;
        }
        if queue.items.is_empty() && queue.writing.is_none() {
            return true;
        }
        // Not writing with items queued means the writer is about to take the next one.
        if queue.writing.is_some_and(|moved| moved.max(start).elapsed() >= STUCK) {
            return false;
        }
        queue = sink.changed.wait_timeout(queue, Duration::from_millis(50)).unwrap_or_else(PoisonError::into_inner).0;
    }
}
