//! The binary's stderr: its own messages and the child's forwarded stderr, written by one
//! thread of their own, so that no other thread ever blocks on, or panics over, a stderr
//! that is closed, slow, or not read at all. Timeouts, signals and the child's shutdown must
//! work whatever happens to stderr.
//!
//! - [`say`] queues one of our own lines. It never blocks and never fails. Our lines are few
//!   and short, so they are always kept, in order with the child's output; one that comes in
//!   the middle of a line of the child's goes on a line of its own.
//! - [`forward`] queues a piece of the child's stderr; each of its lines is written prefixed
//!   `[child] `. While our stderr takes at least [`FLOOR`] bytes a second the child goes at
//!   its speed (the backpressure a terminal gives). If the queue has been full for
//!   [`HOLD_BACK`] while our stderr took less than that, the child's output is dropped and
//!   counted instead, until the queue has drained to half: a slow or stuck stderr holds the
//!   child (and the conversation) back about a second at a time, no longer.
//! - [`finish`] stops forwarding; if the queue has not drained within [`HOLD_BACK`], drops the
//!   child's part of it; adds a last line saying how many of the child's bytes were dropped
//!   (if any); and waits for our own lines to be written while stderr keeps taking bytes.
//!
//! Writes go out in pieces of at most [`PIECE`] bytes, so "stderr is moving" is measured per
//! piece, not per whole chunk. Once a write fails (a closed stderr: `EPIPE`), everything is
//! discarded: nobody is left to tell.

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
/// The most a write blocks for before progress is noted (the pipe buffer's atomic size).
const PIECE: usize = 4096;
/// How long the queue may stay full, with our stderr slower than [`FLOOR`], before the
/// child's stderr is dropped instead of waited for.
pub const HOLD_BACK: Duration = Duration::from_secs(1);
/// Bytes a second below which our stderr counts as too slow to hold the child back for.
pub const FLOOR: u64 = 1024 * 1024;
/// How long [`finish`] waits for our own lines while stderr takes nothing at all.
const STUCK: Duration = Duration::from_secs(1);
/// [`STUCK`] when [`finish`] is told to hurry.
const HURRIED: Duration = Duration::from_millis(100);
/// How long [`finish`] waits for the child's stderr to close, so the count is complete.
const CHILD_END_WAIT: Duration = Duration::from_millis(500);

enum Item {
    Own(String),
    /// The dropped-bytes line, if anything was dropped: built when it is written, so it counts
    /// everything dropped before it.
    DroppedNote,
    /// Raw bytes of the child's stderr; prefixes are added as they are written.
    Child(Vec<u8>),
    /// The child's stderr closed: end its last line if it left one open.
    ChildEnd,
}

struct Queue {
    items: VecDeque<Item>,
    /// Bytes of the child's not yet written (queued, or in the write under way).
    child_bytes: usize,
    /// A write is under way, and when it last moved (began, or wrote a piece).
    writing: Option<Instant>,
    /// Child bytes dropped: our stderr could not take them in time.
    dropped: u64,
    /// The child's stderr is being dropped until the queue has drained to half.
    dropping: bool,
    /// Bytes written so far (ours and the child's).
    written: u64,
    /// Since when the queue has been full, and `written` then.
    full_since: Option<(Instant, u64)>,
    /// [`finish`] has run: the child's stderr is no longer forwarded (but still counted).
    finished: bool,
    /// The child's stderr is being read (between [`child_stderr_opened`] and
    /// [`end_of_child_stderr`]).
    child_open: bool,
    /// [`finish`] gave up on the child's output: the writer stops the one under way.
    abandon_child: bool,
    /// A write failed: discard everything.
    broken: bool,
}

impl Queue {
    /// Nothing is left to write (or nothing can be written any more).
    fn drained(&self) -> bool {
        self.broken || (self.items.is_empty() && self.writing.is_none())
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

    fn wait(&'static self, queue: MutexGuard<'static, Queue>, limit: Duration) -> MutexGuard<'static, Queue> {
        self.changed.wait_timeout(queue, limit).unwrap_or_else(PoisonError::into_inner).0
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
                dropping: false,
                written: 0,
                full_since: None,
                finished: false,
                child_open: false,
                abandon_child: false,
                broken: false,
            }),
            changed: Condvar::new(),
        }));
        let writer = move || {
            // The demo's signals go to the main thread (see `host::sys::watch_interrupts`).
            crate::host::keep_interrupts_off_this_thread();
            Writer::new(sink).run();
        };
        if thread::Builder::new().name("stderr".to_owned()).spawn(writer).is_err() {
            // No thread: nothing would ever be written, so say so by discarding.
            sink.lock().broken = true;
        }
        sink
    })
}

/// The writer thread's own state: where the output stands.
struct Writer {
    sink: &'static Sink,
    /// The output so far ends a line (or is empty).
    at_line_start: bool,
    /// A line of the child's is open in the output.
    in_child_line: bool,
    stderr: io::Stderr,
}

impl Writer {
    fn new(sink: &'static Sink) -> Writer {
        Writer { sink, at_line_start: true, in_child_line: false, stderr: io::stderr() }
    }

    fn run(mut self) {
        let mut queue = self.sink.lock();
        loop {
            let Some(item) = queue.items.pop_front() else {
                queue = self.sink.changed.wait(queue).unwrap_or_else(PoisonError::into_inner);
                continue;
            };
            if queue.broken {
                if let Item::Child(bytes) = &item {
                    queue.child_bytes -= bytes.len();
                }
                continue;
            }
            queue.writing = Some(Instant::now());
            let note = match item {
                Item::DroppedNote if queue.dropped > 0 => Some(format!(
                    "rust-ts-ipc: dropped {} bytes of the child's stderr while our stderr was not taking them",
                    queue.dropped
                )),
                _ => None,
            };
            drop(queue);
            let ok = match item {
                Item::Own(line) => self.own(&line),
                Item::DroppedNote => note.is_none_or(|note| self.own(&note)),
                Item::Child(bytes) => self.child(&bytes),
                Item::ChildEnd => !std::mem::take(&mut self.in_child_line) || self.write(b"\n"),
            };
            queue = self.sink.lock();
            queue.writing = None;
            queue.broken |= !ok;
            self.sink.changed.notify_all();
        }
    }

    /// One of our lines, on a line of its own.
    fn own(&mut self, line: &str) -> bool {
        let mut bytes = Vec::with_capacity(line.len() + 2);
        if !self.at_line_start {
            bytes.push(b'\n');
        }
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        // The child's next bytes continue its line, under a new prefix.
        self.in_child_line = false;
        self.write(&bytes)
    }

    /// The child's bytes, each line prefixed, in pieces; gives the queue's room back as it
    /// goes. Stops early (counting the rest as dropped) if [`finish`] abandons the child.
    fn child(&mut self, raw: &[u8]) -> bool {
        let mut at = 0;
        let mut piece = Vec::with_capacity(PIECE + CHILD_PREFIX.len());
        while at < raw.len() {
            piece.clear();
            let start = at;
            while at < raw.len() && piece.len() < PIECE {
                if !self.in_child_line {
                    if !self.at_line_start {
                        piece.push(b'\n');
                    }
                    piece.extend_from_slice(CHILD_PREFIX);
                    self.in_child_line = true;
                }
                let room = PIECE.saturating_sub(piece.len()).max(1);
                let rest = &raw[at..raw.len().min(at + room)];
                let take = memchr::memchr(b'\n', rest).map_or(rest.len(), |nl| nl + 1);
                piece.extend_from_slice(&rest[..take]);
                at += take;
                self.at_line_start = rest[take - 1] == b'\n';
                self.in_child_line = !self.at_line_start;
            }
            let ok = self.write(&piece);
            let mut queue = self.sink.lock();
            queue.child_bytes -= at - start;
            self.sink.changed.notify_all();
            if !ok {
                queue.child_bytes -= raw.len() - at;
                return false;
            }
            if queue.abandon_child && at < raw.len() {
                queue.child_bytes -= raw.len() - at;
                queue.dropped += (raw.len() - at) as u64;
                return true;
            }
        }
        true
    }

    /// Writes `bytes`, noting progress after each write; false once a write fails.
    fn write(&mut self, mut bytes: &[u8]) -> bool {
        if let Some(&last) = bytes.last() {
            self.at_line_start = last == b'\n';
        }
        while !bytes.is_empty() {
            match self.stderr.write(bytes) {
                Ok(0) => return false,
                Ok(n) => {
                    bytes = &bytes[n..];
                    let mut queue = self.sink.lock();
                    queue.writing = Some(Instant::now());
                    queue.written += n as u64;
                    self.sink.changed.notify_all();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }
}

/// Queues one line of our own. Never blocks, never fails.
pub fn say(line: impl Display) {
    let sink = sink();
    let mut queue = sink.lock();
    if !queue.broken {
        queue.items.push_back(Item::Own(line.to_string()));
        sink.changed.notify_all();
    }
}

/// Queues a piece of the child's stderr, waiting while the queue is full and our stderr
/// keeps up; drops it (and counts it) once the queue has been full for [`HOLD_BACK`] with our
/// stderr taking less than [`FLOOR`] bytes a second. Returns at once after [`finish`].
pub fn forward(chunk: &[u8]) {
    let sink = sink();
    let mut queue = sink.lock();
    loop {
        if queue.broken {
            return;
        }
        if queue.finished {
            // Too late to be written before the last line, but not too late to be counted.
            queue.dropped += chunk.len() as u64;
            return;
        }
        if queue.child_bytes <= CHILD_BUDGET / 2 {
            queue.dropping = false;
            queue.full_since = None;
        }
        if !queue.dropping && (queue.child_bytes == 0 || queue.child_bytes + chunk.len() <= CHILD_BUDGET) {
            queue.child_bytes += chunk.len();
            queue.items.push_back(Item::Child(chunk.to_vec()));
            sink.changed.notify_all();
            return;
        }
        let written = queue.written;
        let (since, written_then) = *queue.full_since.get_or_insert((Instant::now(), written));
        let full_for = since.elapsed();
        if !queue.dropping && full_for >= HOLD_BACK {
            let rate = (written - written_then) as f64 / full_for.as_secs_f64();
            if rate < FLOOR as f64 {
                queue.dropping = true;
            } else {
                // Slower than the child, but keeping up well enough: hold the child back.
                queue.full_since = Some((Instant::now(), written));
            }
        }
        if queue.dropping {
            queue.dropped += chunk.len() as u64;
            return;
        }
        queue = sink.wait(queue, HOLD_BACK.saturating_sub(full_for).max(Duration::from_millis(10)));
    }
}

/// The child's stderr has closed: ends its last line if it left one open.
pub fn end_of_child_stderr() {
    let sink = sink();
    let mut queue = sink.lock();
    queue.child_open = false;
    if !queue.finished && !queue.broken {
        queue.items.push_back(Item::ChildEnd);
    }
    sink.changed.notify_all();
}

/// A child's stderr is about to be forwarded: [`finish`] waits (briefly) for its end.
pub fn child_stderr_opened() {
    sink().lock().child_open = true;
}

/// Stops forwarding the child's stderr and writes out the queue: if it has not drained
/// within [`HOLD_BACK`], what is left of the child's output is dropped (and counted) so that
/// our own lines go next; then a last line says how many of the child's bytes were dropped,
/// if any (counting what the child wrote until its stderr closed, waited for up to
/// [`CHILD_END_WAIT`]). Waits for our lines while stderr takes bytes, giving up once it has
/// taken nothing for [`STUCK`], in any case after about `HOLD_BACK + 2 × STUCK`; once `hurry`
/// says so, it skips the waits for the child and gives our lines [`HURRIED`] instead of
/// `STUCK`. Returns whether everything queued was written.
pub fn finish(hurry: impl Fn() -> bool) -> bool {
    let sink = sink();
    let mut queue = sink.lock();
    let start = Instant::now();
    if !std::mem::replace(&mut queue.finished, true) {
        queue = close(sink, queue, start, &hurry);
    }
    let give_up = start + HOLD_BACK + CHILD_END_WAIT + 2 * STUCK;
    let mut moved = Instant::now();
    loop {
        if queue.broken {
            return false;
        }
        if queue.drained() {
            return true;
        }
        if let Some(at) = queue.writing {
            moved = moved.max(at);
        }
        // In a hurry, our own last lines still go out if stderr is taking bytes at all.
        let patience = if hurry() { HURRIED } else { STUCK };
        if moved.elapsed() >= patience || Instant::now() >= give_up {
            return false;
        }
        queue = sink.wait(queue, Duration::from_millis(20));
    }
}

/// [`finish`]'s first time: the child's part of the queue, and the note.
fn close(
    sink: &'static Sink,
    mut queue: MutexGuard<'static, Queue>,
    start: Instant,
    hurry: &impl Fn() -> bool,
) -> MutexGuard<'static, Queue> {
    // A forwarder waiting for room counts its piece now, instead of waiting on.
    sink.changed.notify_all();
    while !queue.drained() && start.elapsed() < HOLD_BACK && !hurry() {
        queue = sink.wait(queue, Duration::from_millis(20));
    }
    if !queue.drained() {
        queue.abandon_child = true;
        let mut dropped = 0;
        queue.items.retain(|item| match item {
            Item::Child(bytes) => {
                dropped += bytes.len();
                false
            }
            Item::ChildEnd => false,
            Item::Own(_) | Item::DroppedNote => true,
        });
        queue.child_bytes -= dropped;
        queue.dropped += dropped as u64;
    }
    // Everything the child wrote is either queued, written or counted once its stderr has
    // closed (its group has had SIGKILL by now, so only a process outside it can hold it).
    let child_end = Instant::now() + CHILD_END_WAIT;
    while queue.child_open && Instant::now() < child_end && !hurry() {
        queue = sink.wait(queue, Duration::from_millis(20));
    }
    if !queue.broken {
        queue.items.push_back(Item::DroppedNote);
        sink.changed.notify_all();
    }
    queue
}
