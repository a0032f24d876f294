//! [`Peer`]: request/reply with any child process that speaks the protocol, over its
//! stdin/stdout. The library's I/O layer on top of [`crate::process`]; what travels is
//! [`Envelope`]s, framed by the core's [`LineDecoder`] and decoded by [`decode_envelope`].
//!
//! One place owns each piece of state: the pending-request map (and what it remembers of
//! abandoned requests) is [`State`], behind one lock; the child is a [`ChildProcess`], behind
//! another; the child's stdin is a third, so a slow write never blocks replies or `close`.
//! Three threads per peer: the reader (stdout → replies and unsolicited messages), the stderr
//! reader, and the exit watcher (blocks until the child exits, without reaping it).

mod error;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::io::{self, Read, Write};
use std::process::{ChildStdin, Command, ExitStatus};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub use error::{ErrorCode, PeerError};

use crate::process::{self, ChildProcess, StderrTail, Supervision, DEFAULT_GRACE, READ_CHUNK};
use crate::{
    decode_envelope, Data, Envelope, Frame, LineDecoder, LineError, ProtocolError, DEFAULT_MAX_LINE_BYTES, MAX_SAFE_ID,
};

/// After the child exits, how long the peer waits for the rest of its stdout (replies it
/// wrote just before exiting) and stderr before failing what is still pending: within the
/// 100 ms the issue allows from the exit being seen.
const EXIT_SETTLE: Duration = Duration::from_millis(80);
/// After the child's stdout closes, how long the peer waits for it to exit (to say how)
/// before failing what is still pending.
const EOF_SETTLE: Duration = Duration::from_millis(500);
/// How many abandoned (timed-out or dropped) request ids are remembered, so that their late
/// replies are dropped and counted; beyond that the oldest are forgotten, and a late reply to
/// one of them is delivered as an unsolicited message instead.
const ABANDONED_MEMORY: usize = 65_536;
/// While `send` waits for room, how often it expires requests past their deadline.
const SWEEP: Duration = Duration::from_millis(50);

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
/// bounded requests in flight, bounded queue of unsolicited messages.
#[derive(Debug)]
pub struct PeerOptions {
    /// How long a request waits for its reply (and for room to be sent) by default: 30 s.
    pub timeout: Duration,
    /// Requests awaiting a reply at once; [`Peer::send`] blocks when this many are: 256.
    pub max_in_flight: usize,
    /// The longest line read from the child, in bytes; longer ones are skipped as they
    /// arrive and reported as unsolicited `error` messages: 16 MiB.
    pub max_line_bytes: usize,
    /// How long the child gets to exit once its stdin is closed, and again after SIGTERM: 2 s.
    pub grace: Duration,
    /// Where the child's stderr goes: [`StderrMode::Forward`].
    pub stderr: StderrMode,
    /// Unsolicited messages queued for [`Peer::take_messages`]; more are dropped and counted
    /// ([`PeerStats::unsolicited_dropped`]): 1024.
    pub max_unsolicited: usize,
}

impl Default for PeerOptions {
    fn default() -> Self {
        PeerOptions {
            timeout: Duration::from_secs(30),
            max_in_flight: 256,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            grace: DEFAULT_GRACE,
            stderr: StderrMode::Forward,
            max_unsolicited: 1024,
        }
    }
}

/// Counters of what a [`Peer`] did, including what it dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Requests written to the child.
    pub requests: u64,
    /// Notifications written to the child.
    pub notifications: u64,
    /// Replies matched to a waiting request (error replies included).
    pub replies: u64,
    /// Requests that timed out.
    pub timeouts: u64,
    /// Replies to requests that had timed out or been dropped unawaited: dropped, never delivered.
    pub late_replies_dropped: u64,
    /// Messages that answered no pending request, queued for [`Peer::take_messages`].
    pub unsolicited: u64,
    /// Unsolicited messages dropped because their queue was full (or its receiver gone).
    pub unsolicited_dropped: u64,
    /// Lines from the child over [`PeerOptions::max_line_bytes`], skipped.
    pub lines_too_long: u64,
    /// The most requests that were awaiting replies at once (never above
    /// [`PeerOptions::max_in_flight`]).
    pub peak_in_flight: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    notifications: AtomicU64,
    replies: AtomicU64,
    timeouts: AtomicU64,
    late_replies_dropped: AtomicU64,
    unsolicited: AtomicU64,
    unsolicited_dropped: AtomicU64,
    lines_too_long: AtomicU64,
    peak_in_flight: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

type Outcome = Result<Envelope, PeerError>;

/// A request awaiting its reply.
struct Waiting {
    reply: SyncSender<Outcome>,
    deadline: Instant,
    msg_type: String,
    timeout: Duration,
}

impl Waiting {
    fn timed_out(&self, id: u64) -> PeerError {
        timeout_error(&self.msg_type, id, self.timeout)
    }
}

fn timeout_error(msg_type: &str, id: u64, timeout: Duration) -> PeerError {
    PeerError::new(
        ErrorCode::Timeout,
        format!(
            "no reply to `{msg_type}` request {id} within {} ms; a late reply will be dropped. If the child is \
             only slow, raise PeerOptions::timeout or use request_timeout",
            timeout.as_millis()
        ),
    )
}

/// The pending-request map and how the conversation stands: the one place that owns them.
#[derive(Default)]
struct State {
    next_id: u64,
    pending: HashMap<u64, Waiting>,
    /// Ids of requests abandoned unanswered (timed out, dropped, closed): their late replies
    /// are dropped and counted. Bounded by [`ABANDONED_MEMORY`], oldest forgotten first.
    abandoned: BTreeSet<u64>,
    /// `close` was called.
    closed: bool,
    /// The child can no longer answer: every pending and later request fails with this.
    ended: Option<PeerError>,
    /// The child's exit, once seen (it stays unreaped until `close`).
    exit: Option<Option<ExitStatus>>,
    stdout_closed: bool,
    stderr_closed: bool,
}

impl State {
    fn abandon(&mut self, id: u64) {
        self.abandoned.insert(id);
        if self.abandoned.len() > ABANDONED_MEMORY {
            self.abandoned.pop_first();
        }
    }

    /// Fails every request past its deadline.
    fn expire(&mut self, now: Instant, counters: &Counters) {
        let overdue: Vec<u64> = self.pending.iter().filter(|(_, w)| w.deadline <= now).map(|(&id, _)| id).collect();
        for id in overdue {
            if let Some(w) = self.pending.remove(&id) {
                let _ = w.reply.try_send(Err(w.timed_out(id)));
                bump(&counters.timeouts);
                self.abandon(id);
            }
        }
    }

    /// Fails every pending request with `error`.
    fn fail_all(&mut self, error: &PeerError) {
        for (id, w) in std::mem::take(&mut self.pending) {
            let _ = w.reply.try_send(Err(error.clone()));
            self.abandon(id);
        }
    }
}

/// What the peer's threads share.
struct Shared {
    state: Mutex<State>,
    /// Signalled when a request leaves the pending map and when the conversation's
    /// standing changes (stdout or stderr closed, exit seen, ended).
    changed: Condvar,
    stdin: Mutex<Option<ChildStdin>>,
    child: Mutex<ChildProcess>,
    pid: u32,
    command: String,
    tail: Arc<StderrTail>,
    counters: Counters,
    options: Limits,
}

/// The options the threads need after spawning.
#[derive(Clone, Copy)]
struct Limits {
    timeout: Duration,
    max_in_flight: usize,
    max_line_bytes: usize,
    grace: Duration,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it; if something did, the map is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(&self, state: MutexGuard<'a, State>, limit: Duration) -> MutexGuard<'a, State> {
        self.changed.wait_timeout(state, limit).unwrap_or_else(PoisonError::into_inner).0
    }

    fn deliver_unsolicited(&self, to: &SyncSender<Envelope>, message: Envelope) {
        // Counted before it is sent, so whoever receives it sees it counted.
        bump(&self.counters.unsolicited);
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = to.try_send(message) {
            self.counters.unsolicited.fetch_sub(1, Ordering::Relaxed);
            bump(&self.counters.unsolicited_dropped);
        }
    }

    /// One line (or over-long line) from the child's stdout.
    fn dispatch(&self, frame: Frame<'_>, unsolicited: &SyncSender<Envelope>) {
        let (number, result) = match frame {
            Frame::Line { number, bytes } => match std::str::from_utf8(bytes) {
                Ok(text) => (number, decode_envelope(text).map_err(|e| (e.error, e.id))),
                Err(e) => (number, Err((ProtocolError::InvalidUtf8 { offset: e.valid_up_to() }, None))),
            },
            Frame::TooLong { number, length } => {
                bump(&self.counters.lines_too_long);
                (number, Err((ProtocolError::LineTooLong { length, limit: 0 }, None)))
            }
        };
        let message = match result {
            Ok(message) => message,
            Err((error, id)) => {
                let error = match error {
                    ProtocolError::LineTooLong { length, .. } => {
                        ProtocolError::LineTooLong { length, limit: self.max_line_bytes() }
                    }
                    other => other,
                };
                let text = LineError { line: number, error }.to_string();
                return self.deliver_unsolicited(
                    unsolicited,
                    Envelope { msg_type: "error".to_owned(), data: Data::from(text), id },
                );
            }
        };
        let Some(id) = message.id else { return self.deliver_unsolicited(unsolicited, message) };
        let mut state = self.lock();
        if let Some(waiting) = state.pending.remove(&id) {
            drop(state);
            self.changed.notify_all();
            bump(&self.counters.replies);
            let outcome = if message.msg_type == "error" { Err(PeerError::error_reply(message)) } else { Ok(message) };
            // The request's handle may be gone (dropped unawaited): nothing to deliver to.
            let _ = waiting.reply.try_send(outcome);
        } else if state.abandoned.remove(&id) {
            drop(state);
            bump(&self.counters.late_replies_dropped);
        } else {
            drop(state);
            self.deliver_unsolicited(unsolicited, message);
        }
    }

    fn max_line_bytes(&self) -> usize {
        self.options.max_line_bytes
    }

    /// The child can answer no more: fail what is pending, and everything sent from now on.
    fn end_exited(&self) {
        let mut state = self.lock();
        if state.ended.is_some() {
            return;
        }
        let status = state.exit.flatten();
        let error = PeerError::exited(&self.command, status, self.tail.text());
        state.fail_all(&error);
        state.ended = Some(error);
        drop(state);
        self.changed.notify_all();
    }

    /// The exit watcher saw the child exit: give its last replies and stderr a moment, then
    /// fail what is still pending.
    fn on_exit(&self, status: Option<ExitStatus>) {
        let mut state = self.lock();
        state.exit = Some(status);
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

    fn on_stderr_closed(&self) {
        self.lock().stderr_closed = true;
        self.changed.notify_all();
    }
}

/// The peer's part in the shutdown: the exit watcher must be done with the child's pid
/// before the child is reaped (after which the pid may belong to another process).
struct JoinWatcher(Arc<Mutex<Option<JoinHandle<()>>>>);

impl Supervision for JoinWatcher {
    fn before_reap(&self) {
        let handle = self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
        // The child has exited (or had its SIGKILL): the watcher's wait returns at once.
        if let Some(handle) = handle {
            let _ = handle.join();
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
/// Every reply answers exactly one request. Anything else the child sends (a message without
/// an id, with an id never sent or already answered, or a line that is not valid protocol,
/// which arrives as an `error` message naming the line) goes to [`take_messages`](Self::take_messages).
/// The child runs in its own process group and is always stopped and reaped: by
/// [`close`](Self::close), or on drop.
pub struct Peer {
    shared: Arc<Shared>,
    messages: Mutex<Option<Receiver<Envelope>>>,
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Peer").field("pid", &self.shared.pid).field("command", &self.shared.command).finish()
    }
}

impl Peer {
    /// Starts `command` (its stdin, stdout and stderr are piped; it leads a process group of
    /// its own) and the threads that read it.
    ///
    /// # Errors
    /// [`ErrorCode::InvalidArgument`] for options out of range (zero `max_in_flight`,
    /// `max_line_bytes` or `max_unsolicited`); [`ErrorCode::Spawn`] when it cannot start.
    pub fn spawn(command: &mut Command, options: PeerOptions) -> Result<Peer, PeerError> {
        for (name, value) in [
            ("max_in_flight", options.max_in_flight),
            ("max_line_bytes", options.max_line_bytes),
            ("max_unsolicited", options.max_unsolicited),
        ] {
            if value == 0 {
                return Err(PeerError::new(
                    ErrorCode::InvalidArgument,
                    format!("PeerOptions::{name} must be at least 1 (got 0)"),
                ));
            }
        }
        let watcher = Arc::new(Mutex::new(None));
        let (mut child, stdout, stderr) =
            ChildProcess::spawn(command, options.grace, Box::new(JoinWatcher(Arc::clone(&watcher))))
                .map_err(|e| PeerError::new(ErrorCode::Spawn, e.to_string()))?;
        let stdin = child.take_stdin();
        let (unsolicited, messages) = mpsc::sync_channel(options.max_unsolicited);
        let shared = Arc::new(Shared {
            state: Mutex::new(State { next_id: 1, ..State::default() }),
            changed: Condvar::new(),
            stdin: Mutex::new(stdin),
            pid: child.id(),
            command: child.command_line().to_owned(),
            child: Mutex::new(child),
            tail: Arc::new(StderrTail::default()),
            counters: Counters::default(),
            options: Limits {
                timeout: options.timeout,
                max_in_flight: options.max_in_flight,
                max_line_bytes: options.max_line_bytes,
                grace: options.grace,
            },
        });

        let on_exit = Arc::clone(&shared);
        let pid = shared.pid;
        *watcher.lock().unwrap_or_else(PoisonError::into_inner) = Some(thread::spawn(move || {
            // `None` where the OS cannot wait without reaping: stdout's EOF then tells.
            if let Some(status) = process::wait_for_exit_unreaped(pid) {
                on_exit.on_exit(Some(status));
            }
        }));

        let reader = Arc::clone(&shared);
        // The reader owns the sender, so the channel ends when the child's stdout closes.
        thread::spawn(move || read_stdout(&reader, stdout, &unsolicited));

        let on_stderr = Arc::clone(&shared);
        let tail = Arc::clone(&shared.tail);
        let sink = StderrTo { mode: options.stderr, shared: on_stderr };
        let _done = process::spawn_stderr_reader(stderr, tail, sink);

        Ok(Peer { shared, messages: Mutex::new(Some(messages)) })
    }

    /// The child's pid (also its process group's id).
    pub fn pid(&self) -> u32 {
        self.shared.pid
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
    /// thread. Blocks while [`PeerOptions::max_in_flight`] requests await replies. The
    /// request times out [`PeerOptions::timeout`] from now.
    ///
    /// # Errors
    /// [`ErrorCode::InvalidArgument`] for data that cannot be encoded (nothing is sent);
    /// [`ErrorCode::Closed`] after [`close`](Self::close); [`ErrorCode::PeerExited`] once the
    /// child exited; [`ErrorCode::Timeout`] when no room came in time; [`ErrorCode::Io`] when
    /// the write fails otherwise.
    pub fn send(&self, msg_type: &str, data: impl Into<Data>) -> Result<Pending, PeerError> {
        self.send_timeout(msg_type, data, self.shared.options.timeout)
    }

    /// [`send`](Self::send) with its own timeout.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn send_timeout(&self, msg_type: &str, data: impl Into<Data>, timeout: Duration) -> Result<Pending, PeerError> {
        let data = data.into();
        check_encodable(msg_type, &data)?;
        let shared = &self.shared;
        let deadline = Instant::now() + timeout;
        let (reply, outcome) = mpsc::sync_channel(1);
        let mut state = shared.lock();
        let id = loop {
            refuse_if_over(&state, msg_type)?;
            if state.pending.len() < shared.options.max_in_flight {
                let id = state.next_id;
                if id > MAX_SAFE_ID {
                    return Err(PeerError::new(
                        ErrorCode::InvalidArgument,
                        "this peer has used up its request ids (2^53 - 1); start a new Peer",
                    ));
                }
                state.next_id += 1;
                let msg_type = msg_type.to_owned();
                state.pending.insert(id, Waiting { reply, deadline, msg_type, timeout });
                shared.counters.peak_in_flight.fetch_max(state.pending.len() as u64, Ordering::Relaxed);
                break id;
            }
            let now = Instant::now();
            if now >= deadline {
                bump(&shared.counters.timeouts);
                return Err(PeerError::new(
                    ErrorCode::Timeout,
                    format!(
                        "`{msg_type}` was not sent: {} requests were still awaiting replies after {} ms \
                         (PeerOptions::max_in_flight); is the child answering?",
                        shared.options.max_in_flight,
                        timeout.as_millis()
                    ),
                ));
            }
            state.expire(now, &shared.counters);
            state = shared.wait(state, SWEEP.min(deadline - now));
        };
        drop(state);
        let pending = Pending {
            shared: Arc::clone(shared),
            id,
            msg_type: msg_type.to_owned(),
            deadline,
            timeout,
            outcome,
            done: false,
        };
        let mut line = Vec::with_capacity(msg_type.len() + 48);
        Envelope { msg_type: msg_type.to_owned(), data, id: Some(id) }.encode_into(&mut line);
        self.write_line(&line, msg_type)?;
        bump(&shared.counters.requests);
        Ok(pending)
    }

    /// Sends a message that expects no reply (no id).
    ///
    /// # Errors
    /// As [`send`](Self::send), less the timeout.
    pub fn notify(&self, msg_type: &str, data: impl Into<Data>) -> Result<(), PeerError> {
        let data = data.into();
        check_encodable(msg_type, &data)?;
        refuse_if_over(&self.shared.lock(), msg_type)?;
        let mut line = Vec::new();
        Envelope { msg_type: msg_type.to_owned(), data, id: None }.encode_into(&mut line);
        self.write_line(&line, msg_type)?;
        bump(&self.shared.counters.notifications);
        Ok(())
    }

    fn write_line(&self, line: &[u8], msg_type: &str) -> Result<(), PeerError> {
        let written = {
            let mut stdin = self.shared.stdin.lock().unwrap_or_else(PoisonError::into_inner);
            match stdin.as_mut() {
                Some(pipe) => pipe.write_all(line).and_then(|()| pipe.flush()),
                None => Err(io::Error::from(io::ErrorKind::BrokenPipe)),
            }
        };
        let Err(e) = written else { return Ok(()) };
        // Usually the child has exited, or is closing: say so rather than "broken pipe".
        let mut state = self.shared.lock();
        let deadline = Instant::now() + EOF_SETTLE;
        while !state.closed && state.ended.is_none() && e.kind() == io::ErrorKind::BrokenPipe {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = self.shared.wait(state, left);
        }
        refuse_if_over(&state, msg_type)?;
        Err(PeerError::new(
            ErrorCode::Io,
            format!(
                "cannot write `{msg_type}` to child `{}`: {e}; close this Peer and start a new one",
                self.shared.command
            ),
        ))
    }

    /// The child's unsolicited messages, in arrival order: those without an id, with an id
    /// never sent or already answered, and `error` messages for lines that are not valid
    /// protocol (naming the line: `line 3: invalid JSON: ...`). At most
    /// [`PeerOptions::max_unsolicited`] wait; more are dropped and counted. The channel ends
    /// when the child's stdout closes. `None` after the first call.
    pub fn take_messages(&self) -> Option<Receiver<Envelope>> {
        self.messages.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    /// What the peer has done so far, including what it dropped.
    pub fn stats(&self) -> PeerStats {
        let c = &self.shared.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        PeerStats {
            requests: get(&c.requests),
            notifications: get(&c.notifications),
            replies: get(&c.replies),
            timeouts: get(&c.timeouts),
            late_replies_dropped: get(&c.late_replies_dropped),
            unsolicited: get(&c.unsolicited),
            unsolicited_dropped: get(&c.unsolicited_dropped),
            lines_too_long: get(&c.lines_too_long),
            peak_in_flight: get(&c.peak_in_flight),
        }
    }

    /// Stops the child and returns how it ended: fails pending requests with
    /// [`ErrorCode::Closed`], then closes its stdin, waits up to [`PeerOptions::grace`],
    /// sends SIGTERM to its process group, waits up to the grace again, sends SIGKILL, and
    /// reaps it. Idempotent: later calls return the same status at once. Requests after it
    /// fail with [`ErrorCode::Closed`].
    ///
    /// # Errors
    /// [`ErrorCode::Io`] if the child could not be waited for.
    pub fn close(&self) -> Result<ExitStatus, PeerError> {
        let shared = &self.shared;
        {
            let mut state = shared.lock();
            if !state.closed {
                state.closed = true;
                state.fail_all(&PeerError::new(
                    ErrorCode::Closed,
                    "the peer was closed while this request was pending; no reply will be delivered",
                ));
            }
        }
        shared.changed.notify_all();
        // A write blocked on a child that does not read holds the lock: then the SIGTERM or
        // SIGKILL below ends that write, and stdin closes with it.
        if let Ok(mut stdin) = shared.stdin.try_lock() {
            *stdin = None;
        }
        let mut child = shared.child.lock().unwrap_or_else(PoisonError::into_inner);
        let stopped = child.shutdown(shared.options.grace);
        stopped
            .status
            .ok_or_else(|| PeerError::new(ErrorCode::Io, format!("child `{}` could not be waited for", shared.command)))
    }
}

impl Drop for Peer {
    /// [`close`](Peer::close): bounded by about twice [`PeerOptions::grace`].
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// Fails a call once the peer is closed or the child can no longer answer.
fn refuse_if_over(state: &State, msg_type: &str) -> Result<(), PeerError> {
    if state.closed {
        return Err(PeerError::new(
            ErrorCode::Closed,
            format!("cannot send `{msg_type}`: the peer is closed; start a new Peer to send more"),
        ));
    }
    match &state.ended {
        Some(error) => Err(error.clone()),
        None => Ok(()),
    }
}

/// Whether `data` can be sent under the JSON encoding; the one check every message passes
/// before anything is written (raw bytes, when they come, are refused here).
fn check_encodable(msg_type: &str, data: &Data) -> Result<(), PeerError> {
    match data {
        // Every JSON value encodes.
        Data::Json(_) => Ok(()),
        // The peer speaks NDJSON, which has no bytes; the MessagePack encoding carries them.
        _ => Err(PeerError::new(
            ErrorCode::InvalidArgument,
            format!(
                "`{msg_type}`: data is bytes, which the json encoding cannot carry; use the msgpack encoding \
                 (`encoding msgpack`, a MessagePack `bin`)"
            ),
        )),
    }
}

/// A request sent and not yet answered. [`wait`](Self::wait) for its reply from any thread;
/// dropping it unawaited abandons the request (its reply, if it comes, is dropped and counted).
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
        let deadline = self.deadline.min(Instant::now() + timeout);
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
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                match self.abandon() {
                    // Answered (or failed) just as the time ran out.
                    Some(outcome) => outcome,
                    None => Err(timeout_error(&self.msg_type, self.id, timeout)),
                }
            }
        }
    }

    /// Takes the request out of the pending map; if it had already left it, its outcome is
    /// on its way: returns that.
    fn abandon(&mut self) -> Option<Outcome> {
        self.done = true;
        let mut state = self.shared.lock();
        if state.pending.remove(&self.id).is_some() {
            state.abandon(self.id);
            drop(state);
            self.shared.changed.notify_all();
            bump(&self.shared.counters.timeouts);
            return None;
        }
        drop(state);
        // Whoever removed it sends its outcome right after (or has sent it).
        self.outcome.recv().ok()
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut state = self.shared.lock();
        if state.pending.remove(&self.id).is_some() {
            state.abandon(self.id);
            drop(state);
            self.shared.changed.notify_all();
        }
    }
}

/// The reader thread: the child's stdout, framed by the core, dispatched line by line.
fn read_stdout(shared: &Shared, mut stdout: impl Read, unsolicited: &SyncSender<Envelope>) {
    let mut decoder = LineDecoder::new(shared.options.max_line_bytes);
    let mut buf = vec![0; READ_CHUNK];
    loop {
        match stdout.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                decoder.feed(&buf[..n]);
                while let Some(frame) = decoder.next_frame() {
                    shared.dispatch(frame, unsolicited);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    // A last line without its newline is still a line.
    if let Some(frame) = decoder.finish() {
        shared.dispatch(frame, unsolicited);
    }
    shared.on_stdout_closed();
}

/// The stderr thread's sink: [`StderrMode`], then tells the peer when stderr closed.
struct StderrTo {
    mode: StderrMode,
    shared: Arc<Shared>,
}

impl process::StderrSink for StderrTo {
    fn chunk(&mut self, bytes: &[u8]) {
        match &mut self.mode {
            StderrMode::Forward => {
                let _ = io::stderr().lock().write_all(bytes);
            }
            StderrMode::Discard => {}
            StderrMode::Sink(sink) => sink(bytes),
        }
    }

    fn end(&mut self) {
        self.shared.on_stderr_closed();
    }
}
