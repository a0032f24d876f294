//! [`Peer`]: request/reply with any child process that speaks the protocol, over its
//! stdin/stdout. The library's I/O layer on top of [`crate::process`]; what travels is
//! [`Envelope`]s, in the [`Encoding`] of [`PeerOptions::encoding`]: NDJSON lines framed by the
//! core's [`LineDecoder`] and decoded by [`decode_envelope`], or MessagePack frames framed by
//! its [`FrameDecoder`] and decoded by [`decode_msgpack_envelope`].
//!
//! One place owns each piece of state: the pending-request map (and what it remembers of
//! abandoned requests), the write queue and how the conversation stands are [`State`], behind
//! one lock; the child is a [`ChildProcess`], behind another. Four threads per peer: the
//! writer (the only one that writes to the child's stdin, see [`writer`]), the reader (stdout
//! → replies and unsolicited messages), the stderr reader, and the exit watcher (blocks until
//! the child exits, without reaping it).
//!
//! The write path (the design of lsp-server's and esbuild's service's writer threads). A call
//! takes its id and its turn under the lock, encodes its line outside it, then waits (until
//! its own deadline) for its turn, for a slot among `max_in_flight` if it is a request, and
//! for room in the write queue (`max_unsent_bytes`), and queues the line. The writer thread
//! takes lines in queue order, so requests and notifications reach the wire in call order,
//! and writes them, flushing after each batch. Callers never touch the pipe: a child that
//! stops reading blocks the writer alone, and each request still times out at its deadline.
//! A request given up (timeout, close, exit) before the writer took its line leaves the
//! queue, never sent; once taken, its line is written whole, never cut, and a late reply is
//! dropped and counted. `close` lets the writer write the notifications still queued and close
//! the child's stdin, within the grace period; a writer stuck in a full pipe is freed by the
//! shutdown's signals (its write fails once the child is gone).

mod error;
pub(crate) mod restart;
mod writer;

#[cfg(feature = "tokio")]
pub(crate) use writer::take_batch;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::io::{self, Read, Write};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvError, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, TryLockError, Weak};
use std::thread;
use std::time::{Duration, Instant};

pub use error::{ErrorCode, PeerError};
pub use restart::{SupervisionCallback, SupervisionEvent};

use restart::Keeper;

use crate::error::numbered;
use crate::process::sandbox::{self, ChildLimits, Sandbox};
use crate::process::{self, ChildProcess, StderrTail, Supervision, DEFAULT_GRACE, READ_CHUNK};
#[cfg(unix)]
use crate::spin::SpinReader;
use crate::spin::{AdaptiveSpin, SpinDisabled};
use crate::supervise::RestartPolicy;
use crate::vectored::{FrameOut, SPLICE_MIN_BYTES};
use crate::{
    decode_envelope, decode_msgpack_envelope, Data, Detached, Encoding, Envelope, Frame, FrameDecoder, LineDecoder,
    Packet, ProtocolError, DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAX_LINE_BYTES, MAX_SAFE_ID,
};

/// After the child exits, how long the peer waits for the rest of its stdout (replies it
/// wrote just before exiting) and stderr before failing what is still pending: within the
/// 100 ms the issue allows from the exit being seen.
pub(crate) const EXIT_SETTLE: Duration = Duration::from_millis(80);
/// After the child's stdout closes, how long the peer waits for it to exit (to say how)
/// before failing what is still pending.
pub(crate) const EOF_SETTLE: Duration = Duration::from_millis(500);
/// How many abandoned (timed-out or dropped) request ids are remembered, so that their late
/// replies are dropped and counted; beyond that the oldest are forgotten, and a late reply to
/// one of them is delivered as an unsolicited message instead.
const ABANDONED_MEMORY: usize = 65_536;
/// What an `error` envelope adds to its text when encoded (`{"msg_type":"error","data":""}` and
/// the newline), for the unsolicited queue's byte count.
pub(crate) const ERROR_ENVELOPE_BYTES: usize = 32;
/// [`PeerOptions::max_unsent_bytes`] by default.
const DEFAULT_MAX_UNSENT_BYTES: usize = 16 << 20;
/// [`PeerOptions::max_unsolicited_bytes`] by default.
const DEFAULT_MAX_UNSOLICITED_BYTES: usize = 32 << 20;
/// While a call waits for room, how often it expires requests past their deadline.
pub(crate) const SWEEP: Duration = Duration::from_millis(50);

/// Where the child's stderr goes. The last 4 KiB are kept in any case, for
/// [`ErrorCode::PeerExited`] errors.
#[non_exhaustive]
pub enum StderrMode {
    /// Copied to this process's stderr as it arrives (a child writing faster than our stderr
    /// takes it is slowed down, as if it inherited our stderr).
    Forward,
    /// Read and dropped (only the tail is kept).
    Discard,
    /// Each piece, as read, passed to the callback (on the stderr thread).
    Sink(StderrCallback),
}

/// The callback of [`StderrMode::Sink`].
pub type StderrCallback = Box<dyn FnMut(&[u8]) + Send>;

impl fmt::Debug for StderrMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StderrMode::Forward => "Forward",
            StderrMode::Discard => "Discard",
            StderrMode::Sink(_) => "Sink(..)",
        })
    }
}

/// How a [`Peer`] behaves. The defaults are safe for an untrusted child: bounded lines,
/// bounded requests in flight, a queue of unsolicited messages bounded in count and bytes.
#[derive(Debug)]
pub struct PeerOptions {
    /// How messages travel both ways: [`Encoding::Json`] (NDJSON lines, the default) or
    /// [`Encoding::Msgpack`] (length-prefixed MessagePack frames, where [`Data::Bytes`] may be
    /// sent). The child must have been told the same (`--encoding msgpack`).
    pub encoding: Encoding,
    /// How long a request waits for its reply (and for room to be sent) by default, and how
    /// long [`Peer::notify`] waits for room in the write queue: 30 s.
    pub timeout: Duration,
    /// Requests awaiting a reply at once; [`Peer::send`] blocks when this many are: 256.
    pub max_in_flight: usize,
    /// The most bytes of requests and notifications waiting to be written to the child's
    /// stdin (the write queue, see [`Peer`]); a call waits for room until its deadline, then
    /// fails with [`ErrorCode::Timeout`]. A single longer line is still sent, on its own: 16 MiB.
    pub max_unsent_bytes: usize,
    /// The longest line read from the child, in bytes ([`Encoding::Json`]); longer ones are
    /// skipped as they arrive and reported as unsolicited `error` messages: 16 MiB.
    pub max_line_bytes: usize,
    /// The longest frame body read from the child, in bytes ([`Encoding::Msgpack`]); longer
    /// ones are skipped as they arrive and reported as unsolicited `error` messages: 16 MiB.
    pub max_frame_bytes: usize,
    /// How long the child gets to exit once its stdin is closed, and again after SIGTERM: 2 s.
    pub grace: Duration,
    /// Where the child's stderr goes: [`StderrMode::Forward`].
    pub stderr: StderrMode,
    /// Unsolicited messages queued for [`Peer::take_messages`]; more are dropped and counted
    /// ([`PeerStats::unsolicited_dropped`]): 1024.
    pub max_unsolicited: usize,
    /// The most bytes of unsolicited messages queued for [`Peer::take_messages`], counted on
    /// their encoded size (the line as the child sent it); a message that would go over is
    /// dropped and counted ([`PeerStats::unsolicited_dropped`]): 32 MiB, two lines at the
    /// default [`max_line_bytes`](Self::max_line_bytes). Keep it at least that, or a line
    /// longer than it is always dropped.
    pub max_unsolicited_bytes: usize,
    /// How the child is started: its environment, working directory and resource limits
    /// ([`Sandbox`]), applied to the `Command` before every spawn. A child killed by one of
    /// those limits fails its requests with [`ErrorCode::PeerExited`] naming the limit, where
    /// the evidence proves it ([`ChildLimits::explain`]). Default: unrestricted. For Node's
    /// permission model, build the command with [`crate::process::sandbox::NodePermission`].
    pub sandbox: Sandbox,
    /// Restart the child when it dies unexpectedly (see [`Peer`]'s "Supervision"): `None`,
    /// the default, never restarts. Needs [`Peer::spawn_with`] (or, for the async peer,
    /// `rust_ts_ipc::tokio::Peer::spawn_with`), which can make the child's `Command` again.
    pub restart: Option<RestartPolicy>,
    /// Declare the child hung when requests are pending and nothing at all has been read from
    /// its stdout for this long: it is stopped with the shutdown sequence, its pending requests
    /// fail with [`ErrorCode::PeerExited`] naming the hang, and it is restarted if
    /// [`restart`](Self::restart) is on. `None`, the default: never (a slow child is then
    /// bounded by each request's [`timeout`](Self::timeout) alone).
    pub hang: Option<Duration>,
    /// Told each death, restart and failed restart of the child ([`SupervisionEvent`]): `None`
    /// by default.
    pub on_supervision: Option<SupervisionCallback>,
    /// After each read of the child's stdout, the reader thread keeps asking the pipe for more
    /// for up to this long before sleeping (adaptive, see [`crate::spin`]): a reply that comes
    /// within it is read without a wake-up of the reader, for a CPU busy for up to this long
    /// after each read. The calling thread's wait for the reply and the writer thread's wait
    /// for the next request are not spun. Never spins when the thread calling
    /// [`Peer::spawn`] may run on one CPU only ([`Peer::spin_disabled`] says so); Unix only.
    /// Zero (the default): off, the pipe is read as without the option. At most a second
    /// ([`ErrorCode::InvalidArgument`] beyond).
    pub spin: Duration,
}

impl Default for PeerOptions {
    fn default() -> Self {
        PeerOptions {
            encoding: Encoding::Json,
            timeout: Duration::from_secs(30),
            max_in_flight: 256,
            max_unsent_bytes: DEFAULT_MAX_UNSENT_BYTES,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            grace: DEFAULT_GRACE,
            stderr: StderrMode::Forward,
            max_unsolicited: 1024,
            max_unsolicited_bytes: DEFAULT_MAX_UNSOLICITED_BYTES,
            sandbox: Sandbox::default(),
            restart: None,
            hang: None,
            on_supervision: None,
            spin: Duration::ZERO,
        }
    }
}

/// Counters of what a [`Peer`] did, including what it dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Requests written to the child (counted as the writer thread takes them).
    pub requests: u64,
    /// Notifications written to the child (counted as the writer thread takes them).
    pub notifications: u64,
    /// Replies matched to a waiting request (error replies included).
    pub replies: u64,
    /// Requests that timed out, sent or not.
    pub timeouts: u64,
    /// Replies to requests that had timed out or been dropped unawaited: dropped, never delivered.
    pub late_replies_dropped: u64,
    /// Messages that answered no pending request, queued for [`Peer::take_messages`].
    pub unsolicited: u64,
    /// Unsolicited messages dropped because their queue was full, in count or in bytes (or
    /// its receiver was gone).
    pub unsolicited_dropped: u64,
    /// Lines from the child over [`PeerOptions::max_line_bytes`] (or, under
    /// [`Encoding::Msgpack`], frames over [`PeerOptions::max_frame_bytes`]), skipped.
    pub lines_too_long: u64,
    /// The most requests that were awaiting replies at once (never above
    /// [`PeerOptions::max_in_flight`]).
    pub peak_in_flight: u64,
    /// Reads of the child's stdout that spun ([`PeerOptions::spin`]): found no data at once
    /// and were given a budget.
    pub spins: u64,
    /// Of [`spins`](Self::spins), those whose data came before the budget expired.
    pub spin_hits: u64,
}

/// The counters behind [`PeerStats`], shared by both peers (thread and tokio).
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) notifications: AtomicU64,
    pub(crate) replies: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) late_replies_dropped: AtomicU64,
    pub(crate) unsolicited: AtomicU64,
    pub(crate) unsolicited_dropped: AtomicU64,
    pub(crate) lines_too_long: AtomicU64,
    pub(crate) peak_in_flight: AtomicU64,
    pub(crate) spins: AtomicU64,
    pub(crate) spin_hits: AtomicU64,
}

impl Counters {
    /// What the counters say now.
    pub(crate) fn snapshot(&self) -> PeerStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        PeerStats {
            requests: get(&self.requests),
            notifications: get(&self.notifications),
            replies: get(&self.replies),
            timeouts: get(&self.timeouts),
            late_replies_dropped: get(&self.late_replies_dropped),
            unsolicited: get(&self.unsolicited),
            unsolicited_dropped: get(&self.unsolicited_dropped),
            lines_too_long: get(&self.lines_too_long),
            peak_in_flight: get(&self.peak_in_flight),
            spins: get(&self.spins),
            spin_hits: get(&self.spin_hits),
        }
    }
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

pub(crate) type Outcome = Result<Envelope, PeerError>;

/// Where a request's outcome goes: a channel of the thread peer or of the tokio peer. The
/// pending map ([`State`]) is the same plain data for both; only this differs.
pub(crate) trait Reply {
    /// Hands the outcome over; a receiver that is gone (a handle dropped unawaited) is fine.
    fn deliver(self, outcome: Outcome);
}

impl Reply for SyncSender<Outcome> {
    fn deliver(self, outcome: Outcome) {
        let _ = self.try_send(outcome);
    }
}

/// A request awaiting its reply. `D` is the peer's clock (std's or tokio's `Instant`).
pub(crate) struct Waiting<R = SyncSender<Outcome>, D = Instant> {
    pub(crate) reply: R,
    pub(crate) deadline: D,
    pub(crate) msg_type: String,
    pub(crate) timeout: Duration,
    /// The writer has taken its line (written, or being written): a reply may come. Until
    /// then its line is in the write queue, and leaves it if the request is given up.
    pub(crate) sent: bool,
}

impl<R, D> Waiting<R, D> {
    fn timed_out(&self, id: u64) -> PeerError {
        timeout_error(&self.msg_type, id, self.timeout, self.sent)
    }
}

pub(crate) fn timeout_error(msg_type: &str, id: u64, timeout: Duration, sent: bool) -> PeerError {
    let ms = timeout.as_millis();
    let message = if sent {
        format!(
            "no reply to `{msg_type}` request {id} within {ms} ms; a late reply will be dropped. If the child is only \
             slow, raise PeerOptions::timeout or use request_timeout"
        )
    } else {
        format!(
            "no reply to `{msg_type}` request {id} within {ms} ms: it was never written (it is not sent now), as the \
             child was not taking what was written before it; is the child reading its stdin?"
        )
    };
    PeerError::new(ErrorCode::Timeout, message)
}

/// An encoded line in the write queue, with its request's id (`None`: a notification).
pub(crate) struct Line {
    /// The line or frame, but for its pieces.
    pub(crate) bytes: Vec<u8>,
    /// Payloads moved in rather than copied into `bytes` (a big `bin`), each with where it goes
    /// in `bytes`: written with one vectored write.
    pub(crate) pieces: Vec<(usize, Vec<u8>)>,
    pub(crate) id: Option<u64>,
}

impl Line {
    /// Bytes on the wire.
    pub(crate) fn len(&self) -> usize {
        self.bytes.len() + self.pieces.iter().map(|(_, p)| p.len()).sum::<usize>()
    }

    /// The bytes in order, as slices for one vectored write.
    pub(crate) fn io_slices(&self) -> Vec<io::IoSlice<'_>> {
        let mut slices = Vec::with_capacity(2 * self.pieces.len() + 1);
        let mut at = 0;
        for (end, piece) in &self.pieces {
            slices.push(io::IoSlice::new(&self.bytes[at..*end]));
            slices.push(io::IoSlice::new(piece));
            at = *end;
        }
        slices.push(io::IoSlice::new(&self.bytes[at..]));
        slices
    }

    /// Writes it whole to `output`.
    pub(crate) fn write_to(&self, output: &mut impl Write) -> io::Result<()> {
        if self.pieces.is_empty() {
            output.write_all(&self.bytes)
        } else {
            crate::vectored::write_all_vectored(output, &mut self.io_slices())
        }
    }
}

/// The pending-request map and how the conversation stands: the one place that owns them.
/// Plain data (no channel, thread or clock of its own), so the tokio peer keeps the same
/// books: `R` is where outcomes go, `D` the clock's `Instant`.
pub(crate) struct State<R = SyncSender<Outcome>, D = Instant> {
    pub(crate) next_id: u64,
    pub(crate) pending: HashMap<u64, Waiting<R, D>>,
    /// Ids of requests abandoned unanswered (timed out, dropped, closed): their late replies
    /// are dropped and counted. Bounded by [`ABANDONED_MEMORY`], oldest forgotten first.
    pub(crate) abandoned: BTreeSet<u64>,
    /// `close` was called.
    pub(crate) closed: bool,
    /// The child can no longer answer: every pending and later request fails with this.
    pub(crate) ended: Option<PeerError>,
    /// The child's exit, once seen (it stays unreaped until `close`).
    pub(crate) exit: Option<Option<ExitStatus>>,
    /// The CPU time the child had used when its exit was seen, if the OS said.
    pub(crate) exit_cpu_time: Option<std::time::Duration>,
    pub(crate) stdout_closed: bool,
    pub(crate) stderr_closed: bool,
    /// The write queue: lines waiting for the writer thread, in call order.
    pub(crate) outbox: VecDeque<Line>,
    /// Bytes of the lines in `outbox`.
    pub(crate) outbox_bytes: usize,
    /// Bytes of the lines the writer has taken and not finished writing.
    pub(crate) writing_bytes: usize,
    /// Calls waiting for their turn to queue a line, first first: queued in call order, so a
    /// long line waiting for room is not overtaken by shorter ones forever.
    pub(crate) turns: VecDeque<u64>,
    pub(crate) next_turn: u64,
    /// The writer is done and has closed the child's stdin.
    pub(crate) stdin_closed: bool,
    /// A write failed while the child was not seen to end: later calls fail with this.
    pub(crate) broken: Option<PeerError>,
    /// When the pending map last went from empty to not empty: the hang watchdog's clock
    /// starts there or at the last read from the child, whichever is later.
    pub(crate) busy_since: Option<D>,
}

impl<R, D> Default for State<R, D> {
    fn default() -> Self {
        State {
            next_id: 1,
            pending: HashMap::new(),
            abandoned: BTreeSet::new(),
            closed: false,
            ended: None,
            exit: None,
            stdout_closed: false,
            stderr_closed: false,
            outbox: VecDeque::new(),
            outbox_bytes: 0,
            writing_bytes: 0,
            turns: VecDeque::new(),
            next_turn: 0,
            stdin_closed: false,
            broken: None,
            busy_since: None,
            exit_cpu_time: None,
        }
    }
}

/// Where a message from the child goes, as the pending map decides ([`State::route`]).
pub(crate) enum Routed<R> {
    /// It answers a pending request: deliver the outcome to it.
    Reply(R, Outcome),
    /// It answers a request given up (timed out, dropped): dropped, counted.
    Late,
    /// It answers nothing pending: to the unsolicited queue.
    Unsolicited(Envelope),
}

impl<R: Reply, D: Copy + Ord> State<R, D> {
    /// Why the child can answer no more (it ended, or cannot be written to), unless the peer
    /// closed it.
    pub(crate) fn death(&self) -> Option<PeerError> {
        if self.closed {
            return None;
        }
        self.ended.clone().or_else(|| self.broken.clone())
    }

    pub(crate) fn abandon(&mut self, id: u64) {
        self.abandoned.insert(id);
        if self.abandoned.len() > ABANDONED_MEMORY {
            self.abandoned.pop_first();
        }
    }

    /// Request `id` left the pending map unanswered. If its line went out, a reply may still
    /// come: it will be dropped and counted. If not, its line leaves the queue, never sent.
    pub(crate) fn forget(&mut self, id: u64, sent: bool) {
        if sent {
            return self.abandon(id);
        }
        if let Some(at) = self.outbox.iter().position(|line| line.id == Some(id)) {
            if let Some(line) = self.outbox.remove(at) {
                self.outbox_bytes -= line.len();
            }
        }
    }

    /// Fails every request past its deadline.
    pub(crate) fn expire(&mut self, now: D, counters: &Counters) {
        let overdue: Vec<u64> = self.pending.iter().filter(|(_, w)| w.deadline <= now).map(|(&id, _)| id).collect();
        for id in overdue {
            if let Some(w) = self.pending.remove(&id) {
                let error = w.timed_out(id);
                w.reply.deliver(Err(error));
                bump(&counters.timeouts);
                self.forget(id, w.sent);
            }
        }
    }

    /// Fails every pending request with `error`; their lines not yet taken by the writer
    /// leave the queue (notifications stay).
    pub(crate) fn fail_all(&mut self, error: &PeerError) {
        for (id, w) in std::mem::take(&mut self.pending) {
            let sent = w.sent;
            w.reply.deliver(Err(error.clone()));
            if sent {
                self.abandon(id);
            }
        }
        self.outbox.retain(|line| line.id.is_none());
        self.outbox_bytes = self.outbox.iter().map(Line::len).sum();
    }

    /// Empties the write queue: nothing more will be written.
    pub(crate) fn drop_outbox(&mut self) {
        self.outbox.clear();
        self.outbox_bytes = 0;
    }

    /// A place in the line for queueing a line; leave it with [`leave_turn`](Self::leave_turn)
    /// or by queueing.
    fn take_turn(&mut self) -> u64 {
        let turn = self.next_turn;
        self.next_turn += 1;
        self.turns.push_back(turn);
        turn
    }

    fn leave_turn(&mut self, turn: u64) {
        self.turns.retain(|&t| t != turn);
    }

    /// Bytes queued or being written.
    pub(crate) fn unsent_bytes(&self) -> usize {
        self.outbox_bytes + self.writing_bytes
    }

    /// Takes the next request id, or fails once they are used up.
    pub(crate) fn next_request_id(&mut self) -> Result<u64, PeerError> {
        let id = self.next_id;
        if id > MAX_SAFE_ID {
            return Err(PeerError::new(
                ErrorCode::InvalidArgument,
                "this peer has used up its request ids (2^53 - 1); start a new Peer",
            ));
        }
        self.next_id += 1;
        Ok(id)
    }

    /// Where `message` (with id `id`) goes: to the request it answers (which leaves the
    /// pending map), dropped as a late reply, or to the unsolicited queue.
    pub(crate) fn route(&mut self, id: u64, message: Envelope, counters: &Counters) -> Routed<R> {
        if let Some(waiting) = self.pending.remove(&id) {
            if !waiting.sent {
                // Answered before it was written (a child guessing ids): it is not written now.
                self.forget(id, false);
            }
            bump(&counters.replies);
            let outcome = if message.msg_type == "error" { Err(PeerError::error_reply(message)) } else { Ok(message) };
            Routed::Reply(waiting.reply, outcome)
        } else if self.abandoned.remove(&id) {
            bump(&counters.late_replies_dropped);
            Routed::Late
        } else {
            Routed::Unsolicited(message)
        }
    }

    /// The child can answer no more: fails what is pending, and everything sent from now on,
    /// with `error`. False if it had ended already.
    pub(crate) fn end(&mut self, error: PeerError) -> bool {
        if self.ended.is_some() {
            return false;
        }
        self.fail_all(&error);
        self.drop_outbox();
        self.ended = Some(error);
        true
    }

    /// A write to child `command`'s stdin failed with `e` (the writer has already waited for
    /// the child's end where that is likely): unless the peer closed or the child was seen to
    /// end, every request whose line could not be written (`batch`, then the queue) fails with
    /// the write's error, as will later calls; either way nothing more is written.
    pub(crate) fn write_failed(&mut self, command: &str, e: &io::Error, batch: &[Line]) {
        if !self.closed && self.ended.is_none() {
            let error = PeerError::new(
                ErrorCode::Io,
                format!("cannot write to child `{command}`: {e}; close this Peer and start a new one"),
            );
            self.break_off(error, batch);
        }
        self.drop_outbox();
    }

    /// Every request whose line could not be written (`batch`, then the queue) fails with
    /// `error`, as will later calls.
    fn break_off(&mut self, error: PeerError, batch: &[Line]) {
        let unwritten: Vec<u64> = batch.iter().chain(self.outbox.iter()).filter_map(|line| line.id).collect();
        for id in unwritten {
            if let Some(waiting) = self.pending.remove(&id) {
                let sent = waiting.sent;
                waiting.reply.deliver(Err(error.clone()));
                // Part of its line may have gone: a reply to it is dropped, not delivered.
                if sent {
                    self.abandon(id);
                }
            }
        }
        self.broken = Some(error);
    }
}

/// What the peer's threads share.
struct Shared {
    state: Mutex<State>,
    /// Signalled when a request leaves the pending map, when room frees in the write queue,
    /// when a turn to queue passes, and when the conversation's standing changes (stdout or
    /// stderr closed, exit seen, ended, stdin closed).
    changed: Condvar,
    /// Signalled for the writer thread: a line was queued, or the peer closed or ended.
    wake_writer: Condvar,
    child: Mutex<ChildProcess>,
    pid: u32,
    command: String,
    tail: Arc<StderrTail>,
    /// Shared by every child of the peer: [`Peer::stats`] counts them all.
    counters: Arc<Counters>,
    options: Limits,
    /// The last read from the child's stdout (hang watchdog).
    heard: restart::Heard,
    /// A hang watchdog reads `heard` ([`PeerOptions::hang`]): the reader keeps it.
    watched: bool,
    /// The peer's supervision, told when this child dies.
    keeper: OnceLock<Weak<Keeper>>,
}

/// The options the threads (or tasks) need after spawning.
#[derive(Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) encoding: Encoding,
    pub(crate) timeout: Duration,
    pub(crate) max_in_flight: usize,
    pub(crate) max_unsent_bytes: usize,
    pub(crate) max_line_bytes: usize,
    pub(crate) max_frame_bytes: usize,
    pub(crate) grace: Duration,
    pub(crate) max_unsolicited_bytes: usize,
    /// The child's resource limits, to name the one that killed it.
    pub(crate) child_limits: ChildLimits,
    /// [`PeerOptions::restart`] is on: errors say that the next request starts a fresh child.
    pub(crate) restarting: bool,
}

impl Limits {
    /// `options`' limits, once checked.
    ///
    /// # Errors
    /// [`ErrorCode::InvalidArgument`] for a limit of zero, naming it.
    pub(crate) fn of(options: &PeerOptions) -> Result<Limits, PeerError> {
        for (name, value) in [
            ("max_in_flight", options.max_in_flight),
            ("max_unsent_bytes", options.max_unsent_bytes),
            ("max_line_bytes", options.max_line_bytes),
            ("max_frame_bytes", options.max_frame_bytes),
            ("max_unsolicited", options.max_unsolicited),
            ("max_unsolicited_bytes", options.max_unsolicited_bytes),
        ] {
            if value == 0 {
                return Err(PeerError::new(
                    ErrorCode::InvalidArgument,
                    format!("PeerOptions::{name} must be at least 1 (got 0)"),
                ));
            }
        }
        Ok(Limits {
            encoding: options.encoding,
            timeout: options.timeout,
            max_in_flight: options.max_in_flight,
            max_unsent_bytes: options.max_unsent_bytes,
            max_line_bytes: options.max_line_bytes,
            max_frame_bytes: options.max_frame_bytes,
            grace: options.grace,
            max_unsolicited_bytes: options.max_unsolicited_bytes,
            restarting: options.restart.is_some(),
            child_limits: options.sandbox.limits,
        })
    }

    /// Why a call's line was not queued by its deadline: no slot among `max_in_flight`, no
    /// room in the write queue (`unsent` bytes waiting), or calls before it still waiting.
    pub(crate) fn not_sent(
        &self,
        msg_type: &str,
        timeout: Duration,
        slot: bool,
        room: bool,
        unsent: usize,
    ) -> PeerError {
        let ms = timeout.as_millis();
        let why = if !slot {
            format!(
                "{} requests were still awaiting replies after {ms} ms (PeerOptions::max_in_flight); is the child \
                 answering?",
                self.max_in_flight
            )
        } else if !room {
            format!(
                "{unsent} bytes were still waiting to be written to the child's stdin after {ms} ms \
                 (PeerOptions::max_unsent_bytes); is the child reading its stdin?"
            )
        } else {
            format!(
                "calls made before it were still waiting to be queued after {ms} ms; is the child reading its stdin \
                 and answering?"
            )
        };
        PeerError::new(ErrorCode::Timeout, format!("`{msg_type}` was not sent: {why}"))
    }
}

impl restart::Supervised for Shared {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn death(&self) -> Option<PeerError> {
        self.lock().death()
    }

    fn count_timeout(&self) {
        bump(&self.counters.timeouts);
    }

    fn succeed(&self, dead: &Shared) {
        self.set_keeper_from(dead);
        // Ids go on from the dead child's: a request's id is unique in the peer's life.
        let next_id = dead.lock().next_id;
        self.lock().next_id = next_id;
    }
}

/// What a child's shared state does the same way in the thread peer and in the tokio peer:
/// route a message from the child, queue an unsolicited one, and end the conversation when the
/// child can answer no more. The two differ only in how waiters are woken (a [`Condvar`] or a
/// tokio `Notify`) and in the channel unsolicited messages go down ([`Offer`]); the rest is
/// the same fields, reached through these accessors (as [`restart::Keep`] shares supervision
/// over [`restart::Supervised`]).
pub(crate) trait Conversation {
    /// Where a request's outcome goes.
    type Reply: Reply;
    /// The peer's clock's `Instant`.
    type Clock: Copy + Ord;
    /// The unsolicited queue's channel.
    type Sender: Offer;

    /// The books, locked.
    fn books(&self) -> MutexGuard<'_, State<Self::Reply, Self::Clock>>;
    /// Shared by every child of the peer.
    fn counters(&self) -> &Counters;
    /// The options the peer runs with.
    fn limits(&self) -> &Limits;
    /// The child's command line, for errors.
    fn command(&self) -> &str;
    /// The end of the child's stderr, for errors.
    fn tail(&self) -> &StderrTail;
    /// The child process.
    fn child(&self) -> &Mutex<ChildProcess>;
    /// Tells the peer's supervision that this child can answer no more.
    fn report_end(&self, error: &PeerError);
    /// Wakes everything waiting for a change of the books: a request left the pending map,
    /// the conversation ended.
    fn wake_all(&self);
    /// Wakes the writer: the conversation ended.
    fn wake_writer(&self);

    /// Queues `message` (`size` bytes encoded) for `take_messages`, or drops and counts it
    /// when the queue is full in count or in bytes.
    fn deliver_unsolicited(&self, to: &Outbound<Self::Sender>, message: Envelope, size: usize) {
        // Check and add at once: after a restart, a dead child's reader may still deliver
        // while the fresh child's does.
        let limit = self.limits().max_unsolicited_bytes;
        let added = to.queued.fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
            Some(queued.saturating_add(size)).filter(|&total| total <= limit)
        });
        let counters = self.counters();
        if added.is_err() {
            bump(&counters.unsolicited_dropped);
            return;
        }
        // Counted before it is sent, so whoever receives it sees it counted.
        bump(&counters.unsolicited);
        if !to.sender.offer((message, size)) {
            to.queued.fetch_sub(size, Ordering::AcqRel);
            counters.unsolicited.fetch_sub(1, Ordering::Relaxed);
            bump(&counters.unsolicited_dropped);
        }
    }

    /// One message from the child (or an `error` standing for a line or frame that is not
    /// one), to its request or to the unsolicited queue (`size`: what it costs that queue).
    fn dispatch(&self, message: Envelope, size: usize, unsolicited: &Outbound<Self::Sender>) {
        let Some(id) = message.id else { return self.deliver_unsolicited(unsolicited, message, size) };
        let routed = self.books().route(id, message, self.counters());
        match routed {
            Routed::Reply(reply, outcome) => {
                self.wake_all();
                // The request's handle may be gone (dropped unawaited): nothing to deliver to.
                reply.deliver(outcome);
            }
            Routed::Late => {}
            Routed::Unsolicited(message) => self.deliver_unsolicited(unsolicited, message, size),
        }
    }

    /// The child can answer no more: fail what is pending, and everything sent from now on.
    fn end_exited(&self) {
        let mut state = self.books();
        let status = state.exit.flatten();
        let tail = self.tail().text();
        let limits = self.limits();
        let limit = limits.child_limits.explain(status, state.exit_cpu_time, &tail);
        let error = PeerError::exited(self.command(), status, tail, limit, limits.restarting);
        if !state.end(error.clone()) {
            return;
        }
        let closed = state.closed;
        let exited = state.exit.is_some();
        drop(state);
        self.wake_all();
        self.wake_writer();
        if closed {
            return;
        }
        if exited {
            // What it left running in its group serves nobody now; the child stays unreaped
            // (its group id its own) until close or a restart, which might be a window away.
            // A holder of the lock is shutting it down, which kills the group anyway.
            kill_group_unless_busy(self.child());
        }
        self.report_end(&error);
    }
}

/// A channel's sending end, as the unsolicited queue uses it: without waiting.
pub(crate) trait Offer {
    /// Sends `item` if there is room; false if it was not taken (full, or the receiver gone).
    fn offer(&self, item: (Envelope, usize)) -> bool;
}

impl Offer for SyncSender<(Envelope, usize)> {
    fn offer(&self, item: (Envelope, usize)) -> bool {
        self.try_send(item).is_ok()
    }
}

impl Conversation for Shared {
    type Reply = SyncSender<Outcome>;
    type Clock = Instant;
    type Sender = SyncSender<(Envelope, usize)>;

    fn books(&self) -> MutexGuard<'_, State> {
        self.lock()
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }

    fn limits(&self) -> &Limits {
        &self.options
    }

    fn command(&self) -> &str {
        &self.command
    }

    fn tail(&self) -> &StderrTail {
        &self.tail
    }

    fn child(&self) -> &Mutex<ChildProcess> {
        &self.child
    }

    fn report_end(&self, error: &PeerError) {
        Shared::report_end(self, error);
    }

    fn wake_all(&self) {
        self.changed.notify_all();
    }

    fn wake_writer(&self) {
        self.wake_writer.notify_one();
    }
}

impl Shared {
    fn set_keeper(&self, keeper: &Arc<Keeper>) {
        let _ = self.keeper.set(Arc::downgrade(keeper));
    }

    /// This (fresh) child belongs to the same peer as `other`.
    fn set_keeper_from(&self, other: &Shared) {
        if let Some(keeper) = other.keeper.get() {
            let _ = self.keeper.set(Weak::clone(keeper));
        }
    }

    /// Tells the peer's supervision that this child can answer no more.
    fn report_end(&self, error: &PeerError) {
        if let Some(keeper) = self.keeper.get().and_then(Weak::upgrade) {
            keeper.on_ended(self, error);
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it; if something did, the map is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(&self, state: MutexGuard<'a, State>, limit: Duration) -> MutexGuard<'a, State> {
        self.changed.wait_timeout(state, limit).unwrap_or_else(PoisonError::into_inner).0
    }

    /// The exit watcher saw the child exit: give its last replies and stderr a moment, then
    /// fail what is still pending.
    fn on_exit(&self, status: Option<ExitStatus>, cpu_time: Option<Duration>) {
        let mut state = self.lock();
        state.exit = Some(status);
        state.exit_cpu_time = cpu_time;
        self.changed.notify_all();
        let deadline = Instant::now() + EXIT_SETTLE;
        while !(state.stdout_closed && state.stderr_closed) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = self.wait(state, left);
        }
        drop(state);
        self.end_exited();
    }

    /// The child's stdout closed: no reply can come. Once the exit watcher sees the exit it
    /// ends the conversation (after the settle, so the stderr tail is complete); if no exit
    /// is seen within [`EOF_SETTLE`] (a child that closed its stdout and runs on, or an OS
    /// where the watcher cannot wait), the reader ends it.
    fn on_stdout_closed(&self) {
        let mut state = self.lock();
        state.stdout_closed = true;
        self.changed.notify_all();
        let deadline = Instant::now() + EOF_SETTLE;
        while state.exit.is_none() && state.ended.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                drop(state);
                return self.end_exited();
            }
            state = self.wait(state, left);
        }
    }

    /// Queues `line` for the writer thread once it is `turn`'s turn and there is room (in the
    /// write queue, and for a request a slot among [`PeerOptions::max_in_flight`]); waits for
    /// that until `deadline`. Leaves the turn whatever the outcome.
    fn queue_line(&self, turn: u64, line: Line, waiting: Option<Waiting>, msg_type: &str) -> Result<(), PeerError> {
        let (deadline, timeout) = match &waiting {
            Some(w) => (w.deadline, w.timeout),
            None => {
                let timeout = self.options.timeout;
                (process::deadline_after(Instant::now(), timeout), timeout)
            }
        };
        let mut state = self.lock();
        loop {
            let slot = waiting.is_none() || state.pending.len() < self.options.max_in_flight;
            let unsent = state.unsent_bytes();
            let room = unsent == 0 || unsent.saturating_add(line.len()) <= self.options.max_unsent_bytes;
            let first = state.turns.front() == Some(&turn);
            let refused = refuse_if_over(&state, msg_type).err();
            let now = Instant::now();
            if refused.is_some() || (first && slot && room) || now >= deadline {
                state.leave_turn(turn);
                let outcome = if let Some(error) = refused {
                    Err(error)
                } else if first && slot && room {
                    state.outbox_bytes += line.len();
                    if let (Some(id), Some(waiting)) = (line.id, waiting) {
                        if state.pending.is_empty() {
                            state.busy_since = Some(now);
                        }
                        state.pending.insert(id, waiting);
                        self.counters.peak_in_flight.fetch_max(state.pending.len() as u64, Ordering::Relaxed);
                    }
                    state.outbox.push_back(line);
                    self.wake_writer.notify_one();
                    Ok(())
                } else {
                    if waiting.is_some() {
                        bump(&self.counters.timeouts);
                    }
                    Err(self.options.not_sent(msg_type, timeout, slot, room, unsent))
                };
                drop(state);
                // The next turn may go now.
                self.changed.notify_all();
                return outcome;
            }
            state.expire(now, &self.counters);
            state = self.wait(state, SWEEP.min(deadline - now));
        }
    }

    /// [`Peer::close`] for this child: the shutdown sequence, once.
    fn close(&self) -> Result<ExitStatus, PeerError> {
        let shared = self;
        let grace = shared.options.grace;
        let started = Instant::now();
        let mut state = shared.lock();
        if !state.closed {
            state.closed = true;
            state.fail_all(&PeerError::new(
                ErrorCode::Closed,
                "the peer was closed while this request was pending; no reply will be delivered",
            ));
            shared.changed.notify_all();
            shared.wake_writer.notify_one();
            // The writer writes the notifications still queued, then closes the child's stdin
            // (its EOF). One stuck in a child that does not read is ended by the signals below.
            let deadline = process::deadline_after(started, grace);
            while !state.stdin_closed {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                state = shared.wait(state, left);
            }
        }
        drop(state);
        let mut child = shared.child.lock().unwrap_or_else(PoisonError::into_inner);
        let stopped = child.shutdown(grace.saturating_sub(started.elapsed()));
        stopped
            .status
            .ok_or_else(|| PeerError::new(ErrorCode::Io, format!("child `{}` could not be waited for", shared.command)))
    }

    fn on_stderr_closed(&self) {
        self.lock().stderr_closed = true;
        self.changed.notify_all();
    }
}

/// Whether the exit watcher is done with the child's pid, which it must be before the child
/// is reaped (after which the pid may belong to another process).
#[derive(Default)]
struct PidInUse {
    released: Mutex<bool>,
    changed: Condvar,
}

/// Releases the pid when dropped: by the exit watcher once it has read what it needs, or
/// wherever it goes if the watcher never ran.
struct ReleasePid(Arc<PidInUse>);

impl Drop for ReleasePid {
    fn drop(&mut self) {
        *self.0.released.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.0.changed.notify_all();
    }
}

/// The peer's part in the shutdown: the reap waits for the exit watcher to be done with the
/// pid, not for the watcher's thread to end. That thread goes on to report the death, to a
/// callback that may itself close the peer: joining it there joined a thread to itself, or
/// (with another thread's close holding the child) waited for a thread that waited for us.
struct WaitForWatcher(Arc<PidInUse>);

impl Supervision for WaitForWatcher {
    fn before_reap(&self) {
        // The child has exited (or had its SIGKILL): the watcher's wait returns at once.
        let mut released = self.0.released.lock().unwrap_or_else(PoisonError::into_inner);
        while !*released {
            released = self.0.changed.wait(released).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// A child process that answers requests: send any message, get its reply, matched by id,
/// in any order. `Send + Sync`: share it between threads (for instance in an `Arc`).
///
/// ```no_run
/// use std::process::Command;
/// use rust_ts_ipc::{Peer, PeerOptions};
///
/// let peer = Peer::spawn(Command::new("rust-ts-ipc").arg("serve"), PeerOptions::default())?;
/// let reply = peer.request("greeting", "hi")?;
/// assert_eq!(reply.data.as_str(), Some("Hello from TypeScript!"));
/// peer.close()?;
/// # Ok::<(), rust_ts_ipc::PeerError>(())
/// ```
///
/// Every reply answers exactly one request. A line (or, under [`Encoding::Msgpack`], a frame)
/// that is not valid protocol becomes an `error` message naming it (`line 3: invalid JSON:
/// ...`, `frame 3: not a map: `91a178``), with the id it still showed, if any; it is then routed like any message. So a broken reply to a pending request
/// fails that request with [`ErrorCode::ErrorReply`], as in the Node peer. Anything else the
/// child sends (a message without an id, with an id never sent or already answered)
/// goes to [`take_messages`](Self::take_messages).
///
/// Requests and notifications are queued for a writer thread of the peer's own, which writes
/// them in call order; a caller waits only for its turn, room in the queue
/// ([`PeerOptions::max_unsent_bytes`]) and its reply, each bounded by its deadline, so a
/// child that stops reading its stdin cannot hold a caller past it. A request that times out
/// before its line was written is never written.
///
/// The child runs in its own process group and is always stopped and reaped: by
/// [`close`](Self::close), or on drop. Once it is seen to exit, what it left running in its
/// group is killed at once (it stays unreaped, a zombie, until then).
///
/// # Supervision
/// Off by default. With [`PeerOptions::restart`] (and [`Peer::spawn_with`]), a child that dies
/// unexpectedly fails its pending requests with [`ErrorCode::PeerExited`], and the next call
/// after a backoff (exponential, with jitter: see [`crate::supervise`]) starts a fresh child;
/// more restarts than the policy allows within its window fail calls with
/// [`ErrorCode::RestartLimit`] until the window passes. With [`PeerOptions::hang`], a child
/// silent on stdout for that long while requests are pending is stopped as dead. Each death
/// and restart is reported to [`PeerOptions::on_supervision`]. Ids go on across children;
/// [`pid`](Self::pid) is the current child's; [`stats`](Self::stats) counts them all.
///
/// ```no_run
/// use std::process::Command;
/// use std::time::Duration;
/// use rust_ts_ipc::supervise::RestartPolicy;
/// use rust_ts_ipc::{Peer, PeerOptions, SupervisionCallback};
///
/// let options = PeerOptions {
///     restart: Some(RestartPolicy::default()),
///     hang: Some(Duration::from_secs(10)),
///     on_supervision: Some(SupervisionCallback::new(|event| eprintln!("supervision: {event:?}"))),
///     ..PeerOptions::default()
/// };
/// let peer = Peer::spawn_with(|| {
///     let mut node = Command::new("node");
///     node.arg("ts-app/dist/examples/upper-service.js");
///     node
/// }, options)?;
/// let reply = peer.request("upper", "abc")?;
/// # Ok::<(), rust_ts_ipc::PeerError>(())
/// ```
pub struct Peer {
    /// The current child and the restart state.
    keeper: Arc<Keeper>,
    counters: Arc<Counters>,
    options: Limits,
    messages: Mutex<Option<Unsolicited>>,
    /// Why the readers never spin, if they do not.
    spin_disabled: Option<SpinDisabled>,
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.keeper.current();
        f.debug_struct("Peer").field("pid", &current.pid).field("command", &current.command).finish()
    }
}

impl Peer {
    /// Starts `command` (its stdin, stdout and stderr are piped; it leads a process group of
    /// its own) and the threads that read it. A `Command` cannot be made again from its
    /// getters (whether its environment was cleared, say, is not among them), so a peer that
    /// restarts its child ([`PeerOptions::restart`]) is started with
    /// [`spawn_with`](Self::spawn_with) instead.
    ///
    /// # Errors
    /// [`ErrorCode::InvalidArgument`] for options out of range (zero `max_in_flight`,
    /// `max_unsent_bytes`, `max_line_bytes`, `max_frame_bytes`, `max_unsolicited` or
    /// `max_unsolicited_bytes`, a zero `hang`, a `spin` over a second) or with [`PeerOptions::restart`] set, or a
    /// [`PeerOptions::sandbox`] that cannot be applied (a limit of 0, a working directory that
    /// is not one, ...);
    /// [`ErrorCode::Spawn`] when it cannot start.
    pub fn spawn(command: &mut Command, options: PeerOptions) -> Result<Peer, PeerError> {
        Peer::start(command, options, None)
    }

    /// Starts the child that `make` returns, as [`spawn`](Self::spawn) does; with
    /// [`PeerOptions::restart`] on, `make` is called again for each fresh child (on the
    /// thread whose request starts it), so each restart gets the same program, arguments,
    /// environment and directory, whatever the `Command` was given. A restart runs `make`
    /// and the spawn under the supervision's lock, one at a time, while other calls wait for
    /// it (without their deadlines): keep `make` quick, and never call the peer from it (that
    /// deadlocks).
    ///
    /// # Errors
    /// As [`spawn`](Self::spawn) (the restart policy is checked too: see
    /// [`RestartPolicy::check`]).
    pub fn spawn_with(
        mut make: impl FnMut() -> Command + Send + 'static,
        options: PeerOptions,
    ) -> Result<Peer, PeerError> {
        let mut first = make();
        Peer::start(&mut first, options, Some(Box::new(make)))
    }

    fn start(
        command: &mut Command,
        options: PeerOptions,
        make: Option<Box<dyn FnMut() -> Command + Send>>,
    ) -> Result<Peer, PeerError> {
        let limits = Limits::of(&options)?;
        restart::check_options(&options, make.is_some())?;
        // As `serve --spin-us`: a longer spin is surely a mistake, and one the clock cannot end
        // (`Duration::MAX`) would never miss, so never back off: a core busy while the child idles.
        if options.spin > MAX_SPIN {
            return Err(PeerError::new(
                ErrorCode::InvalidArgument,
                format!(
                    "PeerOptions::spin {:?} is too long: spinning is for replies that come within microseconds (at most {:?})",
                    options.spin, MAX_SPIN
                ),
            ));
        }
        let counters = Arc::new(Counters::default());
        let (sender, receiver) = mpsc::sync_channel(options.max_unsolicited);
        let queued = Arc::new(AtomicUsize::new(0));
        let outbound = Outbound { sender, queued: Arc::clone(&queued) };
        let messages = Unsolicited { receiver, queued };
        let config = Arc::new(Generation {
            limits,
            stderr: StderrTarget::from(options.stderr),
            counters: Arc::clone(&counters),
            hang: options.hang,
            sandbox: options.sandbox,
            // On this thread, whose affinity mask the peer's threads inherit.
            spin: AdaptiveSpin::for_this_thread(if cfg!(unix) { options.spin } else { Duration::ZERO }),
        });
        let starter = restart::starter(make, options.restart.is_some(), &config, &outbound, start_child);
        // Without restarts the reader owns the only sender: the channel ends with its stdout.
        let first = start_child(command, &config, outbound)?;
        let keeper = Keeper::new(first, options.restart, starter, options.on_supervision);
        let spin_disabled = config.spin.disabled();
        Ok(Peer { keeper, counters, options: limits, messages: Mutex::new(Some(messages)), spin_disabled })
    }

    /// The current child's pid (also its process group's id).
    pub fn pid(&self) -> u32 {
        self.keeper.current().pid
    }

    /// `None` when the reader may spin ([`PeerOptions::spin`]); otherwise why it never does:
    /// [`SpinDisabled::Off`] (a zero budget, the default, or not Unix) or
    /// [`SpinDisabled::OneCpu`] (the thread that spawned the peer may run on one CPU only).
    pub fn spin_disabled(&self) -> Option<SpinDisabled> {
        self.spin_disabled
    }

    /// Sends a request and waits for its reply, at most [`PeerOptions::timeout`].
    ///
    /// # Errors
    /// [`ErrorCode::ErrorReply`] when the reply is an `error` message, and every error of
    /// [`send`](Self::send) and [`Pending::wait`].
    pub fn request(&self, msg_type: &str, data: impl Into<Data>) -> Result<Envelope, PeerError> {
        self.send(msg_type, data)?.wait()
    }

    /// [`request`](Self::request) with its own timeout.
    ///
    /// # Errors
    /// As [`request`](Self::request).
    pub fn request_timeout(
        &self,
        msg_type: &str,
        data: impl Into<Data>,
        timeout: Duration,
    ) -> Result<Envelope, PeerError> {
        self.send_timeout(msg_type, data, timeout)?.wait()
    }

    /// Sends a request without waiting for its reply: wait on the returned handle, from any
    /// thread. Returns once the request is queued for the writer thread (see [`Peer`]); blocks
    /// while [`PeerOptions::max_in_flight`] requests await replies or the write queue is full
    /// ([`PeerOptions::max_unsent_bytes`]). The request times out [`PeerOptions::timeout`]
    /// from now, however long it waited to be queued or written.
    ///
    /// # Errors
    /// [`ErrorCode::InvalidArgument`] for data that cannot be encoded (nothing is sent);
    /// [`ErrorCode::Closed`] after [`close`](Self::close); [`ErrorCode::PeerExited`] once the
    /// child exited (or was declared hung); [`ErrorCode::Timeout`] when no room came in time
    /// (or a restart's backoff ends after the deadline); [`ErrorCode::RestartLimit`] while the
    /// restart circuit is open; [`ErrorCode::Spawn`] when a fresh child could not start;
    /// [`ErrorCode::Io`] once a write to the child failed otherwise.
    pub fn send(&self, msg_type: &str, data: impl Into<Data>) -> Result<Pending, PeerError> {
        self.send_timeout(msg_type, data, self.options.timeout)
    }

    /// [`send`](Self::send) with its own timeout.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn send_timeout(&self, msg_type: &str, data: impl Into<Data>, timeout: Duration) -> Result<Pending, PeerError> {
        let data = data.into();
        check_encodable(self.options.encoding, msg_type, &data)?;
        let deadline = process::deadline_after(Instant::now(), timeout);
        let shared = self.keeper.generation(msg_type, deadline)?;
        // The id and the turn are taken together, so ids go out in order; the line is
        // encoded outside the lock.
        let (id, turn) = {
            let mut state = shared.lock();
            refuse_if_over(&state, msg_type)?;
            let id = state.next_request_id()?;
            (id, state.take_turn())
        };
        let envelope = Envelope { msg_type: msg_type.to_owned(), data, id: Some(id) };
        let line = match encode(shared.options.encoding, envelope) {
            Ok(line) => line,
            Err(error) => {
                shared.lock().leave_turn(turn);
                shared.changed.notify_all();
                return Err(error);
            }
        };
        let (reply, outcome) = mpsc::sync_channel(1);
        let waiting = Waiting { reply, deadline, msg_type: msg_type.to_owned(), timeout, sent: false };
        shared.queue_line(turn, line, Some(waiting), msg_type)?;
        Ok(Pending { shared, id, msg_type: msg_type.to_owned(), deadline, timeout, outcome, done: false })
    }

    /// Sends a message that expects no reply (no id): queues it for the writer thread behind
    /// every call made before it, and returns. `Ok` means queued, not yet written: the
    /// notifications still queued when [`close`](Self::close) is called are written before
    /// the child's stdin is closed (within [`PeerOptions::grace`]); those still queued when
    /// the child exits are dropped. Waits for room in the write queue at most
    /// [`PeerOptions::timeout`], so a child that stops reading its stdin cannot block it
    /// forever.
    ///
    /// # Errors
    /// As [`send`](Self::send); [`ErrorCode::Timeout`] when the write queue had no room
    /// within [`PeerOptions::timeout`].
    pub fn notify(&self, msg_type: &str, data: impl Into<Data>) -> Result<(), PeerError> {
        let data = data.into();
        let encoding = self.options.encoding;
        check_encodable(encoding, msg_type, &data)?;
        // Encoded before the turn is taken: a message too long for a frame takes no turn.
        let line = encode(encoding, Envelope { msg_type: msg_type.to_owned(), data, id: None })?;
        let deadline = process::deadline_after(Instant::now(), self.options.timeout);
        let shared = self.keeper.generation(msg_type, deadline)?;
        let turn = {
            let mut state = shared.lock();
            refuse_if_over(&state, msg_type)?;
            state.take_turn()
        };
        shared.queue_line(turn, line, None, msg_type)
    }

    /// The child's unsolicited messages, in arrival order: those without an id, with an id
    /// never sent or already answered, and `error` messages for lines or frames that are not
    /// valid protocol (naming them: `line 3: invalid JSON: ...`, `frame 3: empty frame`, a
    /// stream that ends inside a frame) unless the line or frame carried the id
    /// of a pending request, which that error then answers. At most
    /// [`PeerOptions::max_unsolicited`] messages and [`PeerOptions::max_unsolicited_bytes`]
    /// wait; more are dropped and counted. The channel ends when the child's stdout closes
    /// (with [`PeerOptions::restart`]: once the peer is closed and its last child's stdout
    /// has closed; messages of every child come through it). `None` after the first call.
    pub fn take_messages(&self) -> Option<Unsolicited> {
        self.messages.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    /// What the peer has done so far, including what it dropped.
    pub fn stats(&self) -> PeerStats {
        self.counters.snapshot()
    }

    /// Stops the child and returns how it ended: fails pending requests with
    /// [`ErrorCode::Closed`] (those still queued are not written), lets the writer thread
    /// write the notifications still queued and close the child's stdin, all within
    /// [`PeerOptions::grace`], waits for the child's exit up to the rest of that grace,
    /// sends SIGTERM to its process group, waits up to the grace again, sends SIGKILL, and
    /// reaps it. Idempotent: later calls return the same status at once. Requests after it
    /// fail with [`ErrorCode::Closed`]. Under supervision: the current child (a dead one's
    /// status, during a backoff) is the one returned; calls waiting out a backoff fail with
    /// [`ErrorCode::Closed`], no child starts after it, and it waits for the dead children
    /// still being reaped.
    ///
    /// # Errors
    /// [`ErrorCode::Io`] if the child could not be waited for.
    pub fn close(&self) -> Result<ExitStatus, PeerError> {
        self.keeper.close()
    }
}

impl Drop for Peer {
    /// [`close`](Peer::close): bounded by about twice [`PeerOptions::grace`].
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// The longest [`PeerOptions::spin`]: a second, as for `--spin-us`.
const MAX_SPIN: Duration = Duration::from_secs(1);

/// What every child of a peer is started with.
struct Generation {
    limits: Limits,
    stderr: StderrTarget,
    counters: Arc<Counters>,
    hang: Option<Duration>,
    /// Applied to each child's `Command` before it is spawned, restarts included.
    sandbox: Sandbox,
    /// Each child's reader starts from this spin state ([`PeerOptions::spin`]).
    spin: AdaptiveSpin,
}

/// Starts one child of a peer and its threads: the writer, the reader (delivering
/// unsolicited messages to `unsolicited`), the stderr reader, the exit watcher and, with
/// [`PeerOptions::hang`], the hang watchdog.
fn start_child(command: &mut Command, config: &Generation, unsolicited: Outbound) -> Result<Arc<Shared>, PeerError> {
    config.sandbox.apply(command).map_err(|e| PeerError::new(ErrorCode::InvalidArgument, e.to_string()))?;
    let pid_in_use = Arc::new(PidInUse::default());
    // Released when the exit watcher is done with the pid, or if it never runs.
    let release = ReleasePid(Arc::clone(&pid_in_use));
    let (mut child, stdout, stderr) =
        ChildProcess::spawn(command, config.limits.grace, Box::new(WaitForWatcher(pid_in_use)))
            .map_err(|e| PeerError::new(ErrorCode::Spawn, e.to_string()))?;
    let Some(stdin) = child.take_stdin() else {
        // Unreachable: spawn pipes stdin. Without it nothing can be sent.
        return Err(PeerError::new(ErrorCode::Spawn, format!("child `{}` has no stdin", child.command_line())));
    };
    // Frames of a MiB go through a pipe of a MiB in one write and one read each way, not
    // 64 KiB at a time with a wake-up for each (best effort, as `serve` does on its side).
    #[cfg(unix)]
    if config.limits.encoding == Encoding::Msgpack {
        crate::serve::widen(&stdin, false);
        crate::serve::widen(&stdout, false);
    }
    let shared = Arc::new(Shared {
        state: Mutex::new(State { next_id: 1, ..State::default() }),
        changed: Condvar::new(),
        wake_writer: Condvar::new(),
        pid: child.id(),
        command: child.command_line().to_owned(),
        child: Mutex::new(child),
        tail: Arc::new(StderrTail::default()),
        counters: Arc::clone(&config.counters),
        options: config.limits,
        heard: restart::Heard::new(),
        watched: config.hang.is_some(),
        keeper: OnceLock::new(),
    });

    let on_exit = Arc::clone(&shared);
    let pid = shared.pid;
    thread::spawn(move || {
        // `None` where the OS cannot wait without reaping: stdout's EOF then tells. The CPU
        // time is read while the child is a zombie: evidence for a CPU limit's SIGKILL.
        let seen = process::wait_for_exit_unreaped(pid).map(|status| (status, sandbox::cpu_time_unreaped(pid)));
        // Done with the pid: the child may be reaped from here on, even while this thread
        // goes on to report its death (to a callback that may close the peer, say).
        drop(release);
        if let Some((status, cpu_time)) = seen {
            on_exit.on_exit(Some(status), cpu_time);
        }
    });

    let writer = Arc::clone(&shared);
    thread::spawn(move || writer::write_stdin(&writer, stdin));

    let reader = Arc::clone(&shared);
    // The reader owns its sender, so without restarts the channel ends when the child's
    // stdout closes.
    #[cfg(unix)]
    {
        // A blocking pipe: when spinning is off or parked, each read is the plain read.
        let stdout = SpinReader::with_spin(stdout, config.spin.clone());
        // Counters are shared by every child of the peer: each reader adds what it saw since
        // its last read.
        let seen = std::cell::Cell::new((0, 0));
        thread::spawn(move || {
            read_stdout(&reader, stdout, &unsolicited, move |stdout: &SpinReader<_>, counters: &Counters| {
                let stats = stdout.stats();
                let (spun, hits) = seen.replace((stats.spun, stats.hits));
                counters.spins.fetch_add(stats.spun - spun, Ordering::Relaxed);
                counters.spin_hits.fetch_add(stats.hits - hits, Ordering::Relaxed);
            })
        });
    }
    #[cfg(not(unix))]
    thread::spawn(move || read_stdout(&reader, stdout, &unsolicited, |_: &_, _: &Counters| {}));

    let on_stderr = Arc::clone(&shared);
    let tail = Arc::clone(&shared.tail);
    let sink = StderrTo { mode: config.stderr.clone(), shared: on_stderr };
    let _done = process::spawn_stderr_reader(stderr, tail, sink);

    if let Some(hang) = config.hang {
        let watched = Arc::clone(&shared);
        thread::spawn(move || restart::watch_for_hang(&watched, hang));
    }
    Ok(shared)
}

/// SIGKILLs what a dead, unreaped child left running in its group, unless a holder of the
/// child's lock is shutting it down (which kills the group anyway).
pub(crate) fn kill_group_unless_busy(child: &Mutex<ChildProcess>) {
    match child.try_lock() {
        Ok(mut child) => child.kill_group(),
        Err(TryLockError::Poisoned(child)) => child.into_inner().kill_group(),
        Err(TryLockError::WouldBlock) => {}
    }
}

/// Fails a call once the peer is closed, the child can no longer answer, or nothing more
/// can be written to it.
pub(crate) fn refuse_if_over<R, D>(state: &State<R, D>, msg_type: &str) -> Result<(), PeerError> {
    if state.closed {
        return Err(PeerError::new(
            ErrorCode::Closed,
            format!("cannot send `{msg_type}`: the peer is closed; start a new Peer to send more"),
        ));
    }
    match state.ended.as_ref().or(state.broken.as_ref()) {
        Some(error) => Err(error.clone()),
        None => Ok(()),
    }
}

/// Whether `data` can be sent in `encoding`; the one check every message passes before
/// anything is written: raw bytes are refused under JSON.
pub(crate) fn check_encodable(encoding: Encoding, msg_type: &str, data: &Data) -> Result<(), PeerError> {
    match (encoding, data) {
        // Every JSON value encodes, and MessagePack carries bytes too.
        (_, Data::Json(_)) | (Encoding::Msgpack, _) => Ok(()),
        // The peer speaks NDJSON, which has no bytes; the MessagePack encoding carries them.
        (Encoding::Json, _) => Err(PeerError::new(
            ErrorCode::InvalidArgument,
            format!(
                "`{msg_type}`: data is bytes, which the json encoding cannot carry; use the msgpack encoding \
                 (`encoding msgpack`, a MessagePack `bin`)"
            ),
        )),
    }
}

/// `envelope` as the peer writes it: one NDJSON line, or one length-prefixed frame whose
/// big `bin` payload (from [`crate::SPLICE_MIN_BYTES`]) is moved into the line, not copied.
pub(crate) fn encode(encoding: Encoding, envelope: Envelope) -> Result<Line, PeerError> {
    let id = envelope.id;
    let mut bytes = Vec::with_capacity(envelope.msg_type.len() + 48);
    let pieces = match encoding {
        Encoding::Json => {
            envelope.encode_into(&mut bytes);
            Vec::new()
        }
        Encoding::Msgpack if envelope.data.as_bytes().is_some_and(|b| b.len() >= SPLICE_MIN_BYTES) => {
            let msg_type = envelope.msg_type.clone();
            let mut out = FrameOut::new(&mut bytes);
            envelope.encode_frame_vectored(&mut out).map_err(|e| cannot_send(&msg_type, &e))?;
            out.into_pieces()
        }
        Encoding::Msgpack => {
            envelope.encode_frame_into(&mut bytes).map_err(|e| cannot_send(&envelope.msg_type, &e))?;
            Vec::new()
        }
    };
    Ok(Line { bytes, pieces, id })
}

fn cannot_send(msg_type: &str, e: &ProtocolError) -> PeerError {
    PeerError::new(ErrorCode::InvalidArgument, format!("`{msg_type}` cannot be sent: {e}"))
}

/// A request sent and not yet answered. [`wait`](Self::wait) for its reply from any thread;
/// dropping it unawaited abandons the request: it is still written if it was queued, and its
/// reply, if it comes, is dropped and counted. A request that times out before the writer
/// took its line is never written.
pub struct Pending {
    shared: Arc<Shared>,
    id: u64,
    msg_type: String,
    deadline: Instant,
    timeout: Duration,
    outcome: Receiver<Outcome>,
    done: bool,
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending").field("id", &self.id).field("msg_type", &self.msg_type).finish()
    }
}

impl Pending {
    /// The request's id (what its reply carries).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Waits for the reply until the request's deadline (its timeout from when it was sent).
    ///
    /// # Errors
    /// [`ErrorCode::ErrorReply`] for an `error` reply, [`ErrorCode::Timeout`],
    /// [`ErrorCode::PeerExited`] (within about 80 ms of the child's exit being seen), or
    /// [`ErrorCode::Closed`].
    pub fn wait(self) -> Result<Envelope, PeerError> {
        let (deadline, timeout) = (self.deadline, self.timeout);
        self.wait_until(deadline, timeout)
    }

    /// Waits at most `timeout` (and never past the request's own deadline); if no reply came,
    /// the request is abandoned and fails with [`ErrorCode::Timeout`].
    ///
    /// # Errors
    /// As [`wait`](Self::wait).
    pub fn wait_timeout(self, timeout: Duration) -> Result<Envelope, PeerError> {
        let deadline = self.deadline.min(process::deadline_after(Instant::now(), timeout));
        let timeout = timeout.min(self.timeout);
        self.wait_until(deadline, timeout)
    }

    fn wait_until(mut self, deadline: Instant, timeout: Duration) -> Result<Envelope, PeerError> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.outcome.recv_timeout(left) {
            Ok(outcome) => {
                self.done = true;
                outcome
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => match self.abandon() {
                // Answered (or failed) just as the time ran out.
                Err(outcome) => outcome,
                Ok(sent) => Err(timeout_error(&self.msg_type, self.id, timeout, sent)),
            },
        }
    }

    /// Takes the request out of the pending map (and its line out of the write queue if it
    /// is still there) and says whether its line had gone out. If it had already left the
    /// map, its outcome is on its way: `Err` with that.
    fn abandon(&mut self) -> Result<bool, Outcome> {
        self.done = true;
        let mut state = self.shared.lock();
        if let Some(waiting) = state.pending.remove(&self.id) {
            state.forget(self.id, waiting.sent);
            drop(state);
            self.shared.changed.notify_all();
            bump(&self.shared.counters.timeouts);
            return Ok(waiting.sent);
        }
        drop(state);
        // Whoever removed it sends its outcome right after (or has sent it).
        match self.outcome.recv() {
            Ok(outcome) => Err(outcome),
            // Unreachable (the sender sends before it lets go); count it as timed out.
            Err(_) => Ok(true),
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut state = self.shared.lock();
        // Its line stays queued if not yet written: dropping the handle gives up the reply,
        // not the request.
        if state.pending.remove(&self.id).is_some() {
            state.abandon(self.id);
            drop(state);
            self.shared.changed.notify_all();
        }
    }
}

/// The reader thread: the child's stdout, framed by the core, dispatched line by line (or
/// frame by frame).
/// `after_read` publishes what the reader wants counted (its spin statistics).
fn read_stdout<R: Read + ReadInner>(
    shared: &Shared,
    mut stdout: R,
    unsolicited: &Outbound,
    after_read: impl Fn(&R, &Counters),
) {
    let (limits, counters) = (&shared.options, &shared.counters);
    let mut decoder = Incoming::new(limits);
    let mut buf = Vec::new();
    loop {
        let read = read_once(&mut decoder, &mut stdout, &mut buf, shared.watched);
        after_read(&stdout, &shared.counters);
        match read {
            Ok(0) => break,
            Ok(_) => {
                if shared.watched {
                    shared.heard.now();
                }
                decoder.drain(limits, counters, |m, size| shared.dispatch(m, size, unsolicited));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    decoder.finish(limits, counters, |m, size| shared.dispatch(m, size, unsolicited));
    shared.on_stdout_closed();
}

/// One read of the reader thread into `decoder` (see [`Incoming::space`]). A big `bin` payload
/// being received apart: the rest of it appended straight to its `Vec` (no zeroing first), in
/// reads that block until it has all arrived. Not when `watched` (a hang watchdog needs to hear
/// of every read, and would not hear of a payload trickling in): then through the read space,
/// and the payload's `Vec` is not asked for at all, as asking gives up the room the read space
/// zeroed, which it would zero again at every read (quadratic in the payload's size).
fn read_once<R: Read + ReadInner>(
    decoder: &mut Incoming,
    stdout: &mut R,
    buf: &mut Vec<u8>,
    watched: bool,
) -> io::Result<usize> {
    if !watched {
        if let Some((rest, lacking)) = decoder.detached_rest() {
            let read = read_rest(stdout, lacking, rest);
            let n = decoder.appended();
            return read.map(|()| n);
        }
    }
    decoder.read_from(stdout, buf)
}

/// Appends up to `lacking` bytes of `stdout` to `rest`'s spare capacity (stops early at the end
/// of input), reading without spinning: the wait is for the rest of a payload already coming.
fn read_rest<R: ReadInner>(stdout: &mut R, lacking: usize, rest: &mut Vec<u8>) -> io::Result<()> {
    let limit = u64::try_from(lacking).unwrap_or(u64::MAX);
    stdout.inner().take(limit).read_to_end(rest).map(drop)
}

/// The reader under a spinning wrapper, for reads that must block anyway.
trait ReadInner {
    /// The reader to read from.
    fn inner(&mut self) -> &mut dyn Read;
}

#[cfg(unix)]
impl<R: Read + std::os::fd::AsFd> ReadInner for SpinReader<R> {
    fn inner(&mut self) -> &mut dyn Read {
        self.get_mut()
    }
}

impl ReadInner for std::process::ChildStdout {
    fn inner(&mut self) -> &mut dyn Read {
        self
    }
}

/// The reader's decoder, by encoding (both peers use it).
pub(crate) enum Incoming {
    Lines(LineDecoder),
    Frames(FrameDecoder),
}

impl Incoming {
    pub(crate) fn new(limits: &Limits) -> Incoming {
        match limits.encoding {
            Encoding::Json => Incoming::Lines(LineDecoder::new(limits.max_line_bytes)),
            Encoding::Msgpack => Incoming::Frames(FrameDecoder::new(limits.max_frame_bytes)),
        }
    }

    /// Frames `chunk` and passes on every whole line or frame as a message (see
    /// [`line_message`]) with what it costs the unsolicited queue. For tests: the readers read
    /// in place ([`space`](Self::space), [`commit`](Self::commit)).
    #[cfg(test)]
    pub(crate) fn feed(&mut self, chunk: &[u8], limits: &Limits, counters: &Counters, to: impl FnMut(Envelope, usize)) {
        match self {
            Incoming::Lines(decoder) => decoder.feed(chunk),
            Incoming::Frames(decoder) => decoder.feed(chunk),
        }
        self.drain(limits, counters, to);
    }

    /// One read from `input`: [`space`](Self::space), the read, [`commit`](Self::commit).
    /// Returns the bytes read: 0 at the end of input.
    ///
    /// # Errors
    /// What reading `input` returned (nothing was taken in).
    pub(crate) fn read_from(&mut self, input: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<usize> {
        let n = input.read(self.space(buf))?;
        self.commit(n, buf);
        Ok(n)
    }

    /// Where the next read goes: lines into `buf` (grown to [`READ_CHUNK`] on first use), frames
    /// straight into the frame decoder's storage, with room for the rest of a big frame whose
    /// header has arrived, so that a 1 MiB frame is read in as few reads as the pipe allows and
    /// never copied on the way in; and the `bin` payload of a big frame's `data`, once located
    /// (see [`drain`](Self::drain)), straight into the `Vec` it is handed out in as
    /// [`Data::Bytes`]. Say what was read with [`commit`](Self::commit).
    pub(crate) fn space<'a>(&'a mut self, buf: &'a mut Vec<u8>) -> &'a mut [u8] {
        match self {
            Incoming::Lines(_) => {
                if buf.len() < READ_CHUNK {
                    buf.resize(READ_CHUNK, 0);
                }
                buf
            }
            Incoming::Frames(decoder) => decoder.read_space(READ_CHUNK),
        }
    }

    /// The `bin` payload being received apart, while some of it is still to come (see
    /// [`FrameDecoder::detached_rest`]): append to it, then call [`appended`](Self::appended).
    pub(crate) fn detached_rest(&mut self) -> Option<(&mut Vec<u8>, usize)> {
        match self {
            Incoming::Lines(_) => None,
            Incoming::Frames(decoder) => decoder.detached_rest(),
        }
    }

    /// Takes in what was appended to [`detached_rest`](Self::detached_rest); returns how much.
    pub(crate) fn appended(&mut self) -> usize {
        match self {
            Incoming::Lines(_) => 0,
            Incoming::Frames(decoder) => decoder.appended(),
        }
    }

    /// Takes in the `n` bytes the last read put in [`space`](Self::space) (`buf`, the same as
    /// given there), without passing anything on: call [`drain`](Self::drain) next.
    pub(crate) fn commit(&mut self, n: usize, buf: &[u8]) {
        match self {
            Incoming::Lines(decoder) => decoder.feed(&buf[..n]),
            Incoming::Frames(decoder) => decoder.commit(n),
        }
    }

    /// Passes on every whole line or frame taken in so far, each as a message (see
    /// [`line_message`]) with what it costs the unsolicited queue. Then,
    /// if a big frame is arriving whose `data` is a big `bin` (its header in the first
    /// [`SCAN_BYTES`] of the frame) with at least [`DIRECT_READ_BYTES`] of it still to come,
    /// has the frame decoder receive that payload apart ([`FrameDecoder::detach_range`]): it is
    /// read straight into the memory that becomes the reply's [`Data::Bytes`], one copy (the
    /// kernel's) where the whole frame read and decoded would cost a second.
    pub(crate) fn drain(&mut self, limits: &Limits, counters: &Counters, mut to: impl FnMut(Envelope, usize)) {
        match self {
            Incoming::Lines(decoder) => {
                while let Some(frame) = decoder.next_frame() {
                    let (message, size) = line_message(limits, counters, frame);
                    to(message, size);
                }
            }
            Incoming::Frames(decoder) => {
                while let Some((packet, detached)) = decoder.next_split() {
                    let (message, size) = packet_message(limits, counters, packet, detached);
                    to(message, size);
                }
                detach_big_bin(decoder);
            }
        }
    }

    /// At the end of the child's stdout: a last line without its newline is still a line; a
    /// frame the stream ended inside of is an `error` naming it.
    pub(crate) fn finish(&mut self, limits: &Limits, counters: &Counters, mut to: impl FnMut(Envelope, usize)) {
        match self {
            Incoming::Lines(decoder) => {
                while let Some(frame) = decoder.finish() {
                    let (message, size) = line_message(limits, counters, frame);
                    to(message, size);
                }
            }
            Incoming::Frames(decoder) => {
                while let Some((packet, detached)) = decoder.finish_split() {
                    let (message, size) = packet_message(limits, counters, packet, detached);
                    to(message, size);
                }
            }
        }
    }
}

/// A `bin` payload is received apart from its frame ([`Incoming::drain`]) from this size.
pub(crate) const DETACH_MIN_BYTES: usize = 64 * 1024;
/// ... and only while at least this much of it is still to come (what has arrived is copied).
pub(crate) const DIRECT_READ_BYTES: usize = 32 * 1024;
/// How far into a frame's body its `data` `bin` header is looked for.
pub(crate) const SCAN_BYTES: usize = 1024;

/// See [`Incoming::drain`]: the frame being received, if its `data` is a `bin` worth reading
/// apart, has it detached. Looks at most [`SCAN_BYTES`] of the frame, so trying after every
/// read costs little.
fn detach_big_bin(decoder: &mut FrameDecoder) {
    let Some((length, held)) = decoder.partial_frame() else { return };
    if length < DETACH_MIN_BYTES {
        return;
    }
    let Some(bin) = crate::msgpack::locate_data_bin(&held[..held.len().min(SCAN_BYTES)]) else { return };
    let held = held.len();
    let still_to_come = (bin.payload + bin.len).saturating_sub(held);
    if bin.len >= DETACH_MIN_BYTES && still_to_come >= DIRECT_READ_BYTES {
        decoder.detach_range(bin.payload, bin.len);
    }
}

/// One line (or over-long line) from the child's stdout ([`Encoding::Json`]) as a message,
/// and what it costs the unsolicited queue: the line as the child sent it, or for a line that
/// is not protocol, the `error` text that stands for it.
fn line_message(limits: &Limits, counters: &Counters, frame: Frame<'_>) -> (Envelope, usize) {
    let (number, size, result) = match frame {
        Frame::Line { number, bytes } => {
            let result = match std::str::from_utf8(bytes) {
                Ok(text) => decode_envelope(text).map_err(|e| (e.error, e.id)),
                Err(e) => Err((ProtocolError::InvalidUtf8 { offset: e.valid_up_to() }, None)),
            };
            (number, bytes.len(), result)
        }
        Frame::TooLong { number, length } => {
            bump(&counters.lines_too_long);
            let error = ProtocolError::LineTooLong { length, limit: limits.max_line_bytes };
            (number, 0, Err((error, None)))
        }
    };
    as_message(limits.encoding, number, size, result)
}

/// One frame (or over-long or cut frame) from the child's stdout ([`Encoding::Msgpack`]),
/// with its `data` payload if that was received apart (`detached`, see [`Incoming::drain`]).
fn packet_message(
    limits: &Limits,
    counters: &Counters,
    packet: Packet<'_>,
    detached: Option<Detached>,
) -> (Envelope, usize) {
    let (number, size, result) = match (packet, detached) {
        (Packet::Frame { number, bytes }, None) => {
            let result = decode_msgpack_envelope(bytes).map_err(|e| (e.error, e.id));
            (number, bytes.len() + crate::FRAME_HEADER_BYTES, result)
        }
        (Packet::Frame { number, bytes }, Some(Detached { at, bytes: payload })) => {
            let size = bytes.len() + payload.len() + crate::FRAME_HEADER_BYTES;
            let result = crate::msgpack::decode_msgpack_envelope_split(bytes, at, payload).map_err(|e| (e.error, e.id));
            (number, size, result)
        }
        (Packet::TooLong { number, length }, _) => {
            bump(&counters.lines_too_long);
            let error = ProtocolError::FrameTooLong { length, limit: limits.max_frame_bytes };
            (number, 0, Err((error, None)))
        }
        (Packet::Cut { number, received, length }, _) => {
            (number, 0, Err((ProtocolError::FrameCut { received, length }, None)))
        }
    };
    as_message(limits.encoding, number, size, result)
}

/// A decoded message, or an `error` message naming why line or frame `number` is not one.
/// Routed like any message, as the Node peer does: with the id of a pending request it
/// answers that request (an `error` reply); otherwise it is unsolicited.
fn as_message(
    encoding: Encoding,
    number: u64,
    size: usize,
    result: Result<Envelope, (ProtocolError, Option<u64>)>,
) -> (Envelope, usize) {
    match result {
        Ok(message) => (message, size),
        Err((error, id)) => {
            let text = numbered(encoding, number, error);
            let size = text.len() + ERROR_ENVELOPE_BYTES;
            (Envelope { msg_type: "error".to_owned(), data: Data::from(text), id }, size)
        }
    }
}

/// The reader's end of the unsolicited queue: the channel bounds the count, `queued` the bytes.
/// `S` is the channel's sending end (the thread peer's, or the tokio peer's).
#[derive(Clone)]
pub(crate) struct Outbound<S = SyncSender<(Envelope, usize)>> {
    pub(crate) sender: S,
    pub(crate) queued: Arc<AtomicUsize>,
}

/// The child's unsolicited messages, from [`Peer::take_messages`]: a channel receiver (the
/// methods of [`std::sync::mpsc::Receiver`], with its error types) that also gives back each
/// message's bytes to the queue's budget ([`PeerOptions::max_unsolicited_bytes`]) as it is
/// taken. Ends (`Disconnected`) once the child's stdout has closed and all are taken.
pub struct Unsolicited {
    receiver: Receiver<(Envelope, usize)>,
    queued: Arc<AtomicUsize>,
}

impl fmt::Debug for Unsolicited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unsolicited").field("queued_bytes", &self.queued.load(Ordering::Relaxed)).finish()
    }
}

impl Unsolicited {
    fn taken(&self, (message, size): (Envelope, usize)) -> Envelope {
        self.queued.fetch_sub(size, Ordering::AcqRel);
        message
    }

    /// Waits for the next message; `Err` once the channel has ended.
    ///
    /// # Errors
    /// [`RecvError`] once the child's stdout has closed and every message was taken.
    pub fn recv(&self) -> Result<Envelope, RecvError> {
        self.receiver.recv().map(|m| self.taken(m))
    }

    /// Waits at most `timeout` for the next message.
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`] when none came in time; `Disconnected` once the channel
    /// has ended.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Envelope, RecvTimeoutError> {
        self.receiver.recv_timeout(timeout).map(|m| self.taken(m))
    }

    /// The next message if one is waiting.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`] when none is waiting; `Disconnected` once the channel has ended.
    pub fn try_recv(&self) -> Result<Envelope, TryRecvError> {
        self.receiver.try_recv().map(|m| self.taken(m))
    }

    /// Every message, waiting for each, until the channel ends.
    pub fn iter(&self) -> impl Iterator<Item = Envelope> + '_ {
        std::iter::from_fn(|| self.recv().ok())
    }

    /// The messages waiting now, without blocking.
    pub fn try_iter(&self) -> impl Iterator<Item = Envelope> + '_ {
        std::iter::from_fn(|| self.try_recv().ok())
    }
}

/// [`StderrMode`], shareable by the peer's successive children.
#[derive(Clone)]
pub(crate) enum StderrTarget {
    Forward,
    Discard,
    Sink(Arc<Mutex<StderrCallback>>),
}

impl From<StderrMode> for StderrTarget {
    fn from(mode: StderrMode) -> Self {
        match mode {
            StderrMode::Forward => StderrTarget::Forward,
            StderrMode::Discard => StderrTarget::Discard,
            StderrMode::Sink(sink) => StderrTarget::Sink(Arc::new(Mutex::new(sink))),
        }
    }
}

/// The stderr thread's sink: [`StderrMode`], then tells the peer when stderr closed.
struct StderrTo {
    mode: StderrTarget,
    shared: Arc<Shared>,
}

impl process::StderrSink for StderrTo {
    fn chunk(&mut self, bytes: &[u8]) {
        match &self.mode {
            StderrTarget::Forward => {
                let _ = io::stderr().lock().write_all(bytes);
            }
            StderrTarget::Discard => {}
            StderrTarget::Sink(sink) => (sink.lock().unwrap_or_else(PoisonError::into_inner))(bytes),
        }
    }

    fn end(&mut self) {
        self.shared.on_stderr_closed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that returns its chunks one read each (split where a read has less room), then
    /// the end of input.
    struct Chunks(VecDeque<Vec<u8>>);

    impl Read for Chunks {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let Some(mut chunk) = self.0.pop_front() else { return Ok(0) };
            let n = chunk.len().min(buf.len());
            buf[..n].copy_from_slice(&chunk[..n]);
            if n < chunk.len() {
                self.0.push_front(chunk.split_off(n));
            }
            Ok(n)
        }
    }

    impl ReadInner for Chunks {
        fn inner(&mut self) -> &mut dyn Read {
            self
        }
    }

    /// Reads `chunks` as the thread peer's reader does (`append`: a detached payload in one
    /// `read_rest`; else through the read space): the messages, and whether a payload was
    /// received apart.
    fn receive(chunks: Vec<Vec<u8>>, max_frame_bytes: usize, append: bool) -> (Vec<Envelope>, bool) {
        let options = PeerOptions { encoding: Encoding::Msgpack, max_frame_bytes, ..PeerOptions::default() };
        let limits = Limits::of(&options).unwrap_or_else(|e| panic!("{e}"));
        let counters = Counters::default();
        let (mut incoming, mut input, mut buf) = (Incoming::new(&limits), Chunks(chunks.into()), Vec::new());
        let (mut out, mut apart) = (Vec::new(), false);
        loop {
            let n = match incoming.detached_rest() {
                Some((rest, lacking)) if append => {
                    apart = true;
                    read_rest(&mut input, lacking, rest).unwrap_or_else(|e| panic!("{e}"));
                    incoming.appended()
                }
                rest => {
                    apart |= rest.is_some();
                    incoming.read_from(&mut input, &mut buf).unwrap_or_else(|e| panic!("{e}"))
                }
            };
            if n == 0 {
                break;
            }
            incoming.drain(&limits, &counters, |m, _| out.push(m));
        }
        incoming.finish(&limits, &counters, |m, _| out.push(m));
        (out, apart)
    }

    #[test]
    fn a_big_bin_is_received_apart_at_every_split_around_the_frame_and_bin_headers() {
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 249) as u8).collect();
        let small = Envelope::new("s", "x").with_id(1).to_frame().unwrap_or_default();
        let big = Envelope::new("bytes", Data::Bytes(payload.clone())).with_id(2).to_frame().unwrap_or_default();
        let stream = [&small[..], &big[..], &small[..]].concat();
        let want = vec![
            Envelope::new("s", "x").with_id(1),
            Envelope::new("bytes", Data::Bytes(payload)).with_id(2),
            Envelope::new("s", "x").with_id(1),
        ];
        // First read ends anywhere from before the big frame's header to past its bin header.
        for first in 1..small.len() + 40 {
            for append in [false, true] {
                let mut chunks = vec![stream[..first].to_vec()];
                chunks.extend(stream[first..].chunks(65_536).map(<[u8]>::to_vec));
                let (got, apart) = receive(chunks, DEFAULT_MAX_FRAME_BYTES, append);
                let brief = |m: &[Envelope]| -> Vec<String> {
                    m.iter()
                        .map(|e| format!("{} {:?} {:?}", e.msg_type, e.id, e.data.as_bytes().map(<[u8]>::len)))
                        .collect()
                };
                assert_eq!(brief(&got), brief(&want), "first read of {first} bytes, append {append}");
                assert!(got == want, "first read of {first} bytes, append {append}: the payload differs");
                assert!(apart, "first read of {first} bytes, append {append}: the payload was not received apart");
            }
        }
    }

    /// A reader that, as `Read` allows, leaves a mark in the room of each read it did not
    /// fill, and remembers the first byte of the room each read was given.
    struct Marking(Chunks, Vec<u8>);

    impl Read for Marking {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.1.push(buf.first().copied().unwrap_or(0));
            let n = self.0.read(buf)?;
            buf[n..].fill(0xee);
            Ok(n)
        }
    }

    impl ReadInner for Marking {
        fn inner(&mut self) -> &mut dyn Read {
            self
        }
    }

    #[test]
    fn under_a_hang_watchdog_a_payload_read_through_the_read_space_is_not_zeroed_again_at_every_read() {
        let big = Envelope::new("b", Data::Bytes(vec![1; 300_000])).with_id(2).to_frame().unwrap_or_default();
        let options = PeerOptions { encoding: Encoding::Msgpack, ..PeerOptions::default() };
        let limits = Limits::of(&options).unwrap_or_else(|e| panic!("{e}"));
        let counters = Counters::default();
        let (mut incoming, mut buf, mut got) = (Incoming::new(&limits), Vec::new(), Vec::new());
        let mut input = Marking(Chunks(big.chunks(10_000).map(<[u8]>::to_vec).collect()), Vec::new());
        while read_once(&mut incoming, &mut input, &mut buf, true).unwrap_or_else(|e| panic!("{e}")) > 0 {
            incoming.drain(&limits, &counters, |m, _| got.push(m));
        }
        assert_eq!(got, [Envelope::new("b", Data::Bytes(vec![1; 300_000])).with_id(2)]);
        // 31 chunks: the first read into the decoder's storage, then the payload's `Vec` (zeroed
        // once, when first handed out) up to the last chunk's first bytes, whose rest (the frame
        // after the payload) and the end of input are read into the decoder's storage. Every
        // read into the payload after the first starts where the one before left its mark.
        assert_eq!(input.1.len(), 33, "{:?}", input.1);
        assert!(input.1[2..31].iter().all(|&b| b == 0xee), "the room was zeroed again: {:?}", input.1);
    }

    #[test]
    fn bins_below_the_size_or_mostly_arrived_are_not_received_apart() {
        let frame = |n: usize| Envelope::new("b", Data::Bytes(vec![1; n])).to_frame().unwrap_or_default();
        // Under 64 KiB.
        let (got, apart) = receive(frame(65_535).chunks(1000).map(<[u8]>::to_vec).collect(), 1 << 20, true);
        assert_eq!((got, apart), (vec![Envelope::new("b", Data::Bytes(vec![1; 65_535]))], false));
        // All but 32 KiB - 1 of it taken in at once: the rest is read into the decoder; with
        // 32 KiB still to come, it is received apart.
        let big = frame(100_000);
        let options = PeerOptions { encoding: Encoding::Msgpack, ..PeerOptions::default() };
        let limits = Limits::of(&options).unwrap_or_else(|e| panic!("{e}"));
        for (lacking, apart) in [(32_767, false), (32_768, true)] {
            let mut incoming = Incoming::new(&limits);
            incoming.feed(&big[..big.len() - lacking], &limits, &Counters::default(), |m, _| panic!("{m:?}"));
            assert_eq!(incoming.detached_rest().is_some(), apart, "{lacking} bytes still to come");
        }
    }

    #[test]
    fn an_over_long_big_bin_is_skipped_with_bounded_memory_and_a_cut_payload_is_named() {
        let big = Envelope::new("b", Data::Bytes(vec![1; 200_000])).to_frame().unwrap_or_default();
        let next = Envelope::new("b", Data::Bytes(vec![2; 100_000])).with_id(3).to_frame().unwrap_or_default();
        let stream = [&big[..], &next[..], &next[..next.len() - 50_000]].concat();
        for append in [false, true] {
            let (got, _) = receive(stream.chunks(4096).map(<[u8]>::to_vec).collect(), 150_000, append);
            let error = |text: &str| Envelope { msg_type: "error".into(), data: Data::from(text), id: None };
            assert_eq!(
                got,
                [
                    error(&format!("frame 1: frame of {} bytes exceeds the 150000-byte limit", big.len() - 4)),
                    Envelope::new("b", Data::Bytes(vec![2; 100_000])).with_id(3),
                    error(&format!(
                        "frame 3: the stream ended inside the frame, after {} of its {} bytes",
                        next.len() - 50_004,
                        next.len() - 4
                    )),
                ],
                "append {append}"
            );
        }
    }
}

/// Differential: the same byte stream, chunked at random, decoded by the path without detached
/// ranges (the frame decoder fed whole, every frame decoded whole) and by every way the peers
/// read with them; adversarial frames (the `data` bin where the peek does not expect it, lying
/// lengths, over-long frames, cut streams) must give the same messages, sizes and counters.
#[cfg(test)]
mod differential {
    use super::*;

    /// SplitMix64: deterministic, so a failing seed can be replayed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % u64::try_from(n.max(1)).unwrap_or(1)).unwrap_or(0)
        }
    }

    fn key(name: &[u8]) -> Vec<u8> {
        match name.len() {
            n @ 0..=31 => [&[0xa0 | u8::try_from(n).unwrap_or(0)][..], name].concat(),
            n => [&[0xda][..], &u16::try_from(n).unwrap_or(0).to_be_bytes(), name].concat(),
        }
    }

    /// A bin32 declaring `declared` bytes, holding `len`.
    fn bin(declared: u32, len: usize, fill: u8) -> Vec<u8> {
        let mut v = vec![0xc6];
        v.extend_from_slice(&declared.to_be_bytes());
        v.extend((0..len).map(|i| fill.wrapping_add((i % 241) as u8)));
        v
    }

    fn big(rng: &mut Rng) -> usize {
        [0, 10, 65_535, 65_536, 70_000, 100_000, 150_000][rng.below(7)] + rng.below(3)
    }

    /// One frame's body, adversarial at times.
    fn body(rng: &mut Rng) -> Vec<u8> {
        let n = big(rng);
        let fill = u8::try_from(rng.below(256)).unwrap_or(0);
        let data_bin = bin(u32::try_from(n).unwrap_or(0), n, fill);
        let mt = [key(b"msg_type"), key(b"t")].concat();
        let id = [key(b"id"), vec![u8::try_from(rng.below(100)).unwrap_or(0)]].concat();
        let data = [key(b"data"), data_bin.clone()].concat();
        let map = |pairs: &[Vec<u8>]| -> Vec<u8> {
            let count = u8::try_from(pairs.len()).unwrap_or(0);
            [vec![0x80 | count], pairs.concat()].concat()
        };
        match rng.below(14) {
            0 => map(&[mt, data, id]),
            1 => map(&[id, data, mt]),
            2 => {
                // An unknown key of up to 1500 bytes before data: the bin past the peek at times.
                let long = vec![b'k'; rng.below(1500)];
                map(&[[key(&long), vec![0xc0]].concat(), data, mt, id])
            }
            3 => {
                // A nested map with a `data` bin, then the top-level data.
                let nested = [vec![0x81], key(b"data"), bin(70_000, 70_000, 1)].concat();
                let top = if rng.below(2) == 0 { data } else { [key(b"data"), key(b"s")].concat() };
                map(&[[key(b"x"), nested].concat(), top, mt, id])
            }
            4 => {
                // `data` twice: a big bin, then a string, a small bin or another big bin.
                let later = match rng.below(3) {
                    0 => key(b"str"),
                    1 => bin(3, 3, 9),
                    _ => bin(80_000, 80_000, 7),
                };
                map(&[mt, data, id, [key(b"data"), later].concat()])
            }
            5 => map(&[mt, [key(b"Data"), data_bin].concat(), [key(b"data"), key(b"s")].concat(), id]),
            6 => {
                // The bin declares more than the frame holds, or less.
                let declared =
                    if rng.below(2) == 0 { n + 1 + rng.below(100_000) } else { n.saturating_sub(1 + rng.below(100)) };
                let lying = bin(u32::try_from(declared).unwrap_or(0), n, fill);
                map(&[mt, [key(b"data"), lying].concat(), id])
            }
            7 => map(&[mt, [key(b"data"), bin(u32::MAX, n, fill)].concat(), id]),
            8 => [map(&[mt, data, id]), vec![0xc0; 1 + rng.below(3)]].concat(),
            9 => map(&[[key(b"msg_type"), vec![0xa1, 0xff]].concat(), data, id]),
            10 => map(&[mt, data, [key(b"id"), key(b"bad")].concat()]),
            11 => [vec![0x92], data_bin].concat(),
            12 => map(&[mt, data]),
            _ => map(&[data, id]),
        }
    }

    /// The stream: frames (at times one whose header lies about its length), cut at times.
    fn stream(rng: &mut Rng) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..1 + rng.below(4) {
            let body = body(rng);
            let mut length = body.len();
            if rng.below(8) == 0 {
                length = if rng.below(2) == 0 { length + rng.below(200_000) } else { length - rng.below(length + 1) };
            }
            out.extend_from_slice(&u32::try_from(length).unwrap_or(0).to_le_bytes());
            out.extend_from_slice(&body);
        }
        if rng.below(3) == 0 {
            out.truncate(rng.below(out.len() + 1));
        }
        out
    }

    fn chunks(rng: &mut Rng, bytes: &[u8]) -> VecDeque<Vec<u8>> {
        let mut out = VecDeque::new();
        let mut at = 0;
        while at < bytes.len() {
            let n = match rng.below(4) {
                0 => 1 + rng.below(64),
                1 => 1 + rng.below(4096),
                _ => 1 + rng.below(200_000),
            };
            let end = (at + n).min(bytes.len());
            out.push_back(bytes[at..end].to_vec());
            at = end;
        }
        out
    }

    /// The chunks, one a read (split where a read has less room), every third read
    /// interrupted (`EINTR`) first.
    struct Chunks(VecDeque<Vec<u8>>, usize);

    impl Read for Chunks {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.1 += 1;
            if self.1 % 3 == 0 {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let Some(mut chunk) = self.0.pop_front() else { return Ok(0) };
            let n = chunk.len().min(buf.len());
            buf[..n].copy_from_slice(&chunk[..n]);
            if n < chunk.len() {
                self.0.push_front(chunk.split_off(n));
            }
            Ok(n)
        }
    }

    impl ReadInner for Chunks {
        fn inner(&mut self) -> &mut dyn Read {
            self
        }
    }

    /// The messages with what each costs the unsolicited queue, and the over-long count.
    type Out = (Vec<(Envelope, usize)>, u64);

    fn limits(max: usize) -> Limits {
        let options = PeerOptions { encoding: Encoding::Msgpack, max_frame_bytes: max, ..PeerOptions::default() };
        Limits::of(&options).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Without detached ranges: every chunk fed, every frame decoded whole (as before them).
    fn whole(chunks: &VecDeque<Vec<u8>>, max: usize) -> Out {
        let (limits, counters) = (limits(max), Counters::default());
        let mut decoder = FrameDecoder::new(max);
        let mut out = Vec::new();
        for chunk in chunks {
            decoder.feed(chunk);
            while let Some(packet) = decoder.next_packet() {
                out.push(packet_message(&limits, &counters, packet, None));
            }
        }
        while let Some(packet) = decoder.finish() {
            out.push(packet_message(&limits, &counters, packet, None));
        }
        (out, counters.lines_too_long.load(Ordering::Relaxed))
    }

    #[derive(Debug, Clone, Copy)]
    enum Way {
        /// The thread peer: the rest of a payload in one `read_rest`.
        Append,
        /// The thread peer under a hang watchdog: through the read space.
        Space,
        /// The tokio peer: the rest of a payload appended a read at a time.
        OneRead,
        /// Any of these, chosen at random at every read (a caller may mix them).
        Mixed(u64),
    }

    fn split(chunks: &VecDeque<Vec<u8>>, max: usize, way: Way) -> Out {
        let (limits, counters) = (limits(max), Counters::default());
        let (mut incoming, mut input, mut buf) = (Incoming::new(&limits), Chunks(chunks.clone(), 0), Vec::new());
        let mut out = Vec::new();
        let mut rng = Rng(match way {
            Way::Mixed(seed) => seed,
            _ => 0,
        });
        loop {
            let way = match way {
                Way::Mixed(_) => [Way::Append, Way::Space, Way::OneRead][rng.below(3)],
                way => way,
            };
            let rest = match way {
                Way::Space => None,
                _ => incoming.detached_rest(),
            };
            let read = match (rest, way) {
                (Some((rest, lacking)), Way::Append) => {
                    let read = read_rest(&mut input, lacking, rest);
                    let n = incoming.appended();
                    read.map(|()| n)
                }
                (Some((rest, lacking)), _) => {
                    let mut tmp = vec![0; lacking];
                    let read = input.read(&mut tmp);
                    if let Ok(n) = read {
                        rest.extend_from_slice(&tmp[..n]);
                    }
                    read.map(|_| incoming.appended())
                }
                (None, _) => incoming.read_from(&mut input, &mut buf),
            };
            // As the peers' readers: an interrupted read is tried again.
            let n = match read {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                read => read.unwrap_or_else(|e| panic!("{e}")),
            };
            if n == 0 {
                break;
            }
            incoming.drain(&limits, &counters, |m, size| out.push((m, size)));
        }
        incoming.finish(&limits, &counters, |m, size| out.push((m, size)));
        (out, counters.lines_too_long.load(Ordering::Relaxed))
    }

    fn brief(out: &Out) -> Vec<String> {
        out.0
            .iter()
            .map(|(e, size)| match &e.data {
                Data::Bytes(b) => format!("{} {:?} bytes {} (size {size})", e.msg_type, e.id, b.len()),
                other => format!("{} {:?} {other:?} (size {size})", e.msg_type, e.id),
            })
            .collect()
    }

    #[test]
    fn every_way_of_reading_with_detached_bins_decodes_exactly_as_whole_frames() {
        for seed in 0..1000 {
            let mut rng = Rng(seed);
            let bytes = stream(&mut rng);
            // At times the limit is the first frame's length, or one byte either side of it.
            let first = bytes.get(..4).map_or(0, |h| u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize);
            let max = [150_000, 1 << 20, 100_000, 70_100, first.max(2) - 1, first.max(1), first + 1][rng.below(7)];
            let chunked = chunks(&mut rng, &bytes);
            let want = whole(&chunked, max);
            for way in [Way::Append, Way::Space, Way::OneRead, Way::Mixed(seed)] {
                let got = split(&chunked, max, way);
                assert_eq!(brief(&got), brief(&want), "seed {seed}, {way:?}, max {max}");
                assert!(got == want, "seed {seed}, {way:?}: a payload differs");
            }
        }
    }
}
