//! The async [`Peer`]: the thread [`crate::Peer`]'s semantics on a tokio runtime, with tasks
//! where that one has threads. Exposed as `rust_ts_ipc::tokio::{Peer, Pending, Unsolicited}`.
//!
//! What is shared with the thread peer, not copied: the options ([`PeerOptions`]), the errors
//! ([`PeerError`], [`ErrorCode`]) and counters ([`PeerStats`]); the pending map and how the
//! conversation stands (`peer::State`, plain data over any reply channel and clock: ids,
//! abandoned ids whose late replies are dropped and counted, the write queue, routing a reply,
//! failing what is pending); the decoding of the child's lines or frames into messages
//! (`peer::Incoming`, over the core's [`crate::LineDecoder`] / [`crate::FrameDecoder`]); and the
//! child itself ([`ChildProcess`]: its own process group, the shutdown sequence stdin close →
//! SIGTERM to the group → SIGKILL → reap, the stderr tail); and the supervision
//! (`peer::restart`: `Keep`, which child is current and what a call does next, over the
//! restart policy of [`crate::supervise`]; the hang check; the option checks).
//!
//! What differs is only how waiting is done. Four tasks per peer: the writer (the only one
//! that writes to the child's stdin), the reader (stdout → replies and unsolicited messages),
//! the stderr reader, and the exit watcher, which wakes on SIGCHLD and asks whether *this*
//! child has exited without reaping it, so that the group can still be signalled and the pid
//! is not reused before the shutdown kills the group. That is why the child is spawned by
//! [`ChildProcess`] and only its pipes become `tokio::process` handles: `tokio::process::Child`
//! reaps as it waits. The shutdown's waits (which poll the child) run on tokio's blocking pool.
//!
//! Calls queue their lines in call order: each holds a fair (FIFO) lock, the turn, while it
//! takes its id and waits for a slot among `max_in_flight` and for room in the write queue,
//! each until its own deadline. Dropping a call's future gives it up at once: a [`Pending`]
//! dropped unawaited leaves the pending map (its late reply is dropped and counted); a
//! [`Peer::send`] dropped while it waits for its turn or for room has queued nothing.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use ::tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use ::tokio::process::{ChildStderr, ChildStdin, ChildStdout};
use ::tokio::runtime::Handle;
use ::tokio::sync::mpsc::error::TryRecvError;
use ::tokio::sync::{mpsc, oneshot, Notify};
use ::tokio::time::{sleep_until, timeout_at, Instant, Sleep};

use crate::peer::restart::{self, Heard, Keep, Retiring, Step, Supervised};
use crate::peer::{
    self, bump, check_encodable, encode, refuse_if_over, take_batch, timeout_error, Conversation, Counters, Incoming,
    Limits, Line, Offer, Outcome, Reply, State, StderrTarget, Waiting, EOF_SETTLE, EXIT_SETTLE, SWEEP,
};
use crate::process::sandbox::Sandbox;
use crate::process::{self, ChildProcess, StderrTail, Supervision, READ_CHUNK};
use crate::supervise::RestartPolicy;
use crate::SupervisionCallback;
use crate::{Data, Envelope, ErrorCode, PeerError, PeerOptions, PeerStats};

/// The writer takes at most this many bytes of short lines per write (as the thread peer).
const WRITE_BATCH: usize = 64 * 1024;
/// Without SIGCHLD (it could not be taken), how often the exit watcher asks.
const EXIT_POLL: Duration = Duration::from_millis(50);

impl Reply for oneshot::Sender<Outcome> {
    fn deliver(self, outcome: Outcome) {
        // The request's future may be gone (dropped): nothing to deliver to.
        let _ = self.send(outcome);
    }
}

type Books = State<oneshot::Sender<Outcome>, Instant>;

/// `wait` after now, cut to about a century (`Duration::MAX` means "no limit").
fn deadline_after(wait: Duration) -> Instant {
    Instant::from_std(process::deadline_after(std::time::Instant::now(), wait))
}

/// What the peer's tasks share.
struct Shared {
    state: Mutex<Books>,
    /// Woken (all waiters) when a request leaves the pending map, when room frees in the write
    /// queue, and when the conversation's standing changes.
    changed: Notify,
    /// Woken for the writer task: a line was queued, or the peer closed or ended.
    wake_writer: Notify,
    /// The turn to queue a line: fair, so calls queue in call order.
    turn: ::tokio::sync::Mutex<()>,
    child: Arc<Mutex<ChildProcess>>,
    /// Set just before the child is reaped; the exit watcher asks the OS about the pid only
    /// while holding this and seeing it false (after the reap the pid may be another's).
    reaped: Arc<Mutex<bool>>,
    pid: u32,
    command: String,
    tail: Arc<StderrTail>,
    /// Shared by every child of the peer: [`Peer::stats`] counts them all.
    counters: Arc<Counters>,
    options: Limits,
    /// The last read from the child's stdout, kept when a hang watchdog reads it.
    heard: Option<Heard>,
    /// The peer's supervision, told when this child dies.
    keeper: OnceLock<Weak<Keeper>>,
}

impl Supervised for Shared {
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
        if let Some(keeper) = dead.keeper.get() {
            let _ = self.keeper.set(Weak::clone(keeper));
        }
        // Ids go on from the dead child's: a request's id is unique in the peer's life.
        let next_id = dead.lock().next_id;
        self.lock().next_id = next_id;
    }
}

impl Offer for mpsc::Sender<(Envelope, usize)> {
    fn offer(&self, item: (Envelope, usize)) -> bool {
        self.try_send(item).is_ok()
    }
}

/// Routing and ending as the thread peer does them, waking with tokio's `Notify`.
impl Conversation for Shared {
    type Reply = oneshot::Sender<Outcome>;
    type Clock = Instant;
    type Sender = mpsc::Sender<(Envelope, usize)>;

    fn books(&self) -> MutexGuard<'_, Books> {
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
        self.changed.notify_waiters();
    }

    fn wake_writer(&self) {
        self.wake_writer.notify_one();
    }
}

impl Shared {
    /// Tells the peer's supervision that this child can answer no more.
    fn report_end(&self, error: &PeerError) {
        if let Some(keeper) = self.keeper.get().and_then(Weak::upgrade) {
            keeper.on_ended(self, error);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Books> {
        // Nothing panics while holding it; if something did, the books are still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until `check` gives a value or `deadline` passes (`None`). `check` runs under the
    /// state's lock after each change.
    async fn wait_for<T>(&self, deadline: Instant, mut check: impl FnMut(&mut Books) -> Option<T>) -> Option<T> {
        loop {
            let notified = self.changed.notified();
            ::tokio::pin!(notified);
            // Registered before the check, so a change between the two is not missed.
            notified.as_mut().enable();
            if let Some(value) = check(&mut self.lock()) {
                return Some(value);
            }
            if timeout_at(deadline, notified).await.is_err() {
                return check(&mut self.lock());
            }
        }
    }

    /// The exit watcher saw the child exit: give its last replies and stderr a moment
    /// ([`EXIT_SETTLE`]), then fail what is still pending.
    async fn on_exit(&self, status: Option<ExitStatus>, cpu_time: Option<Duration>) {
        {
            let mut state = self.lock();
            state.exit = Some(status);
            state.exit_cpu_time = cpu_time;
        }
        self.changed.notify_waiters();
        let settled = deadline_after(EXIT_SETTLE);
        self.wait_for(settled, |state| (state.stdout_closed && state.stderr_closed).then_some(())).await;
        self.end_exited();
    }

    /// The child's stdout closed: once the exit is seen the watcher ends the conversation; if
    /// it is not seen within [`EOF_SETTLE`] (a child that closed its stdout and runs on), this does.
    async fn on_stdout_closed(&self) {
        self.lock().stdout_closed = true;
        self.changed.notify_waiters();
        let settled = deadline_after(EOF_SETTLE);
        let seen = self.wait_for(settled, |state| (state.exit.is_some() || state.ended.is_some()).then_some(())).await;
        if seen.is_none() {
            self.end_exited();
        }
    }

    /// Queues `line` once there is room (in the write queue, and for a request a slot among
    /// `max_in_flight`), waiting until `deadline`. The caller holds the turn.
    async fn queue(
        &self,
        line: Line,
        waiting: Option<Waiting<oneshot::Sender<Outcome>, Instant>>,
        msg_type: &str,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(), PeerError> {
        let mut item = Some((line, waiting));
        loop {
            let notified = self.changed.notified();
            ::tokio::pin!(notified);
            notified.as_mut().enable();
            let now = Instant::now();
            {
                let mut state = self.lock();
                refuse_if_over(&state, msg_type)?;
                let Some((line, waiting)) = item.take() else {
                    // Unreachable: the item is put back whenever the loop goes round.
                    return Ok(());
                };
                let slot = waiting.is_none() || state.pending.len() < self.options.max_in_flight;
                let unsent = state.unsent_bytes();
                let room = unsent == 0 || unsent.saturating_add(line.len()) <= self.options.max_unsent_bytes;
                if slot && room {
                    state.outbox_bytes += line.len();
                    if let (Some(id), Some(waiting)) = (line.id, waiting) {
                        if state.pending.is_empty() {
                            state.busy_since = Some(now);
                        }
                        state.pending.insert(id, waiting);
                        self.counters.peak_in_flight.fetch_max(state.pending.len() as u64, Ordering::Relaxed);
                    }
                    state.outbox.push_back(line);
                    drop(state);
                    self.wake_writer.notify_one();
                    return Ok(());
                }
                if now >= deadline {
                    if waiting.is_some() {
                        bump(&self.counters.timeouts);
                    }
                    return Err(self.options.not_sent(msg_type, timeout, slot, room, unsent));
                }
                // Requests past their deadline (whose futures may not be polled) free their slots.
                state.expire(now, &self.counters);
                item = Some((line, waiting));
            }
            let _ = timeout_at(deadline.min(now + SWEEP), notified).await;
        }
    }

    /// Marks the peer closed and fails what is pending with [`ErrorCode::Closed`]; false if it
    /// was closed already.
    fn mark_closed(&self) -> bool {
        let mut state = self.lock();
        if state.closed {
            return false;
        }
        state.closed = true;
        state.fail_all(&PeerError::new(
            ErrorCode::Closed,
            "the peer was closed while this request was pending; no reply will be delivered",
        ));
        drop(state);
        self.changed.notify_waiters();
        self.wake_writer.notify_one();
        true
    }

    /// Closes this generation: a dead one, replaced by a restart.
    async fn shut_down(self: Arc<Self>) {
        let started = Instant::now();
        let first = self.mark_closed();
        let _ = self.close(first, started).await;
    }

    /// [`Peer::close`], from a peer marked closed at `started`.
    async fn close(self: &Arc<Self>, first: bool, started: Instant) -> Result<ExitStatus, PeerError> {
        let grace = self.options.grace;
        if first {
            // The writer writes the notifications still queued, then closes the child's stdin.
            // One stuck in a child that does not read is ended by the shutdown's signals.
            // Saturating: a grace of `Duration::MAX` ("never signal it") overflowed an Instant.
            let until = Instant::from_std(process::deadline_after(started.into_std(), grace));
            self.wait_for(until, |state| state.stdin_closed.then_some(())).await;
        }
        let rest = grace.saturating_sub(started.elapsed());
        let child = Arc::clone(&self.child);
        // The shutdown's waits poll the child and sleep: on the blocking pool, not a worker.
        let stopped = ::tokio::task::spawn_blocking(move || lock_child(&child).shutdown(rest)).await.map_err(|e| {
            PeerError::new(ErrorCode::Io, format!("child `{}` could not be stopped: {e}", self.command))
        })?;
        stopped
            .status
            .ok_or_else(|| PeerError::new(ErrorCode::Io, format!("child `{}` could not be waited for", self.command)))
    }
}

fn lock_child(child: &Mutex<ChildProcess>) -> MutexGuard<'_, ChildProcess> {
    child.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The peer's part in the shutdown: the exit watcher must be done with the child's pid
/// before the child is reaped.
struct MarkReaped(Arc<Mutex<bool>>);

impl Supervision for MarkReaped {
    fn before_reap(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = true;
    }
}

/// A child process that answers requests, driven by tokio tasks: the async twin of the
/// thread [`crate::Peer`], with the same options, errors, limits and shutdown. `Send + Sync`:
/// share it between tasks in an `Arc`.
///
/// ```no_run
/// # async fn run() -> Result<(), rust_ts_ipc::PeerError> {
/// use std::process::Command;
/// use rust_ts_ipc::{tokio::Peer, PeerOptions};
///
/// let peer = Peer::spawn(Command::new("rust-ts-ipc").arg("serve"), PeerOptions::default())?;
/// let reply = peer.request("greeting", "hi").await?;
/// assert_eq!(reply.data.as_str(), Some("Hello from TypeScript!"));
/// peer.close().await?;
/// # Ok(())
/// # }
/// ```
///
/// Every reply answers exactly one request, matched by id, in any order. A request fails with
/// [`ErrorCode::Timeout`] at its deadline ([`PeerOptions::timeout`], or its own), with
/// [`ErrorCode::PeerExited`] (exit status and stderr tail) when the child ends first, with
/// [`ErrorCode::ErrorReply`] for an `error` reply. Dropping a request's future cancels it:
/// it leaves the pending map, and a reply that comes later is dropped and counted
/// ([`PeerStats::late_replies_dropped`]).
///
/// The child runs in its own process group and is always stopped and reaped: by
/// [`close`](Self::close), or on drop (in a task of the runtime it was spawned in, or at
/// once when dropped outside any runtime).
/// [`PeerOptions::sandbox`] applies as for the thread peer (environment, working directory,
/// resource limits), and a child killed by one of its limits is reported naming it.
///
/// # Supervision
/// As the thread peer's ([`crate::Peer`], "Supervision"), the same code deciding: with
/// [`PeerOptions::restart`] (and [`spawn_with`](Self::spawn_with)) a child that dies
/// unexpectedly fails its pending requests with [`ErrorCode::PeerExited`], and the next call
/// after the backoff starts a fresh child (a call whose deadline falls inside the backoff fails
/// [`ErrorCode::Timeout`] at once, unsent; one whose future is dropped while it waits is given
/// up); more restarts than the policy allows within its window fail calls with
/// [`ErrorCode::RestartLimit`] until the window passes. [`PeerOptions::hang`] stops a child
/// silent with requests pending; [`PeerOptions::on_supervision`] is told each death and
/// restart (from the peer's tasks). Ids go on across children, [`pid`](Self::pid) is the
/// current child's, [`stats`](Self::stats) counts them all, and [`take_messages`](Self::take_messages)
/// is one channel for every child, ending once the peer is closed and the last child's stdout
/// has closed. [`close`](Self::close) during a backoff leaves no child and starts none.
pub struct Peer {
    /// The current child and the restart state.
    keeper: Arc<Keeper>,
    counters: Arc<Counters>,
    options: Limits,
    messages: Mutex<Option<Unsolicited>>,
}

/// A dead generation being closed in a task of its own.
struct Task(::tokio::task::JoinHandle<()>);

impl Retiring for Task {
    fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

/// The owner of the current generation and of the restart state: the thread peer's
/// supervision ([`Keep`]), waited on with tokio.
struct Keeper {
    keep: Mutex<Keep<Shared, Task>>,
    /// Woken (all waiters) by [`close`](Self::close), for calls waiting out a backoff.
    changed: Notify,
    on_event: Option<SupervisionCallback>,
    /// The runtime the children's tasks run on: where a shutdown is spawned, whatever
    /// runtime (if any) the call or drop that starts it runs in.
    runtime: Handle,
}

impl Keeper {
    fn new(
        first: Arc<Shared>,
        policy: Option<RestartPolicy>,
        start: restart::Starter<Shared>,
        on_event: Option<SupervisionCallback>,
        runtime: Handle,
    ) -> Arc<Keeper> {
        let keep = Mutex::new(Keep::new(Arc::clone(&first), policy, start));
        let keeper = Arc::new(Keeper { keep, changed: Notify::new(), on_event, runtime });
        let _ = first.keeper.set(Arc::downgrade(&keeper));
        keeper
    }

    fn lock(&self) -> MutexGuard<'_, Keep<Shared, Task>> {
        self.keep.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current child.
    fn current(&self) -> Arc<Shared> {
        Arc::clone(self.lock().current())
    }

    /// Generation `dead` can answer no more (`error`): called by it when it sees that.
    fn on_ended(&self, dead: &Shared, error: &PeerError) {
        let event = self.lock().on_ended(dead, error);
        if let Some(event) = event {
            restart::emit(self.on_event.as_ref(), event);
        }
    }

    /// The generation a call for `msg_type` (due by `deadline`) goes to: the current one, or,
    /// once it has died and restarts are on, a fresh one started after the backoff (by the
    /// first call to come after it). Dropping the future while it waits out the backoff
    /// gives the call up; nothing was sent.
    ///
    /// # Errors
    /// [`ErrorCode::Closed`]; [`ErrorCode::RestartLimit`] while the circuit is open;
    /// [`ErrorCode::Timeout`] when the backoff ends after `deadline`; [`ErrorCode::Spawn`]
    /// when the fresh child could not start.
    async fn generation(&self, msg_type: &str, deadline: Instant) -> Result<Arc<Shared>, PeerError> {
        loop {
            let notified = self.changed.notified();
            ::tokio::pin!(notified);
            // Registered before the step, so a close between the two is not missed.
            notified.as_mut().enable();
            let step = {
                let mut keep = self.lock();
                let mut step = keep.step(msg_type, deadline.into_std(), std::time::Instant::now());
                // Under the same lock as the restart: a close after it waits for the dead child.
                if let Step::Restarted { dead: dead @ Some(_), .. } = &mut step {
                    if let Some(dead) = dead.take() {
                        keep.retire(Task(self.runtime.spawn(dead.shut_down())));
                    }
                }
                step
            };
            match step {
                Step::Go(shared) => return Ok(shared),
                Step::Fail(error) => return Err(error),
                Step::Wait(left) => {
                    let _ = ::tokio::time::timeout(left, notified).await;
                }
                Step::Report(event) => restart::emit(self.on_event.as_ref(), event),
                Step::Restarted { event, started, .. } => {
                    restart::emit(self.on_event.as_ref(), event);
                    return started;
                }
            }
        }
    }

    /// Marks the peer closed: no child starts after this, calls waiting out a backoff fail
    /// [`ErrorCode::Closed`], the current child's pending requests too. Gives the current
    /// child (and whether this was the first close of it) and the dead ones still being closed.
    fn begin_close(&self) -> (Arc<Shared>, bool, Vec<Task>) {
        let (current, retiring) = self.lock().close();
        self.changed.notify_waiters();
        let first = current.mark_closed();
        (current, first, retiring)
    }

    /// [`Peer::close`]: the current child's shutdown, then the dead ones' (already under way).
    async fn close(&self) -> Result<ExitStatus, PeerError> {
        let started = Instant::now();
        let (current, first, retiring) = self.begin_close();
        let status = current.close(first, started).await;
        for task in retiring {
            let _ = task.0.await;
        }
        status
    }
}

/// What every child of a peer is started with.
struct Generation {
    limits: Limits,
    stderr: StderrTarget,
    counters: Arc<Counters>,
    hang: Option<Duration>,
    /// Applied to each child's `Command` before it is spawned, restarts included.
    sandbox: Sandbox,
    /// The runtime the peer's tasks run on.
    runtime: Handle,
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.keeper.current();
        f.debug_struct("tokio::Peer").field("pid", &current.pid).field("command", &current.command).finish()
    }
}

impl Peer {
    /// Starts `command` (its stdin, stdout and stderr are piped; it leads a process group of
    /// its own) and the tasks that serve it. Call it within a tokio runtime with I/O and time
    /// enabled (`#[tokio::main]`, or a `Builder` with `enable_all`). A tokio
    /// `tokio::process::Command` gives its std command with `as_std_mut()`. A peer that
    /// restarts its child ([`PeerOptions::restart`]) is started with
    /// [`spawn_with`](Self::spawn_with) instead. [`PeerOptions::spin`] is refused: the
    /// runtime's reactor reads the pipes.
    ///
    /// # Errors
    /// [`ErrorCode::InvalidArgument`] for options out of range (as [`crate::Peer::spawn`]:
    /// with [`PeerOptions::restart`] set too), for a non-zero [`PeerOptions::spin`], or when
    /// called outside a tokio runtime; [`ErrorCode::Spawn`] when the child cannot start.
    pub fn spawn(command: &mut Command, options: PeerOptions) -> Result<Peer, PeerError> {
        Peer::start(command, options, None)
    }

    /// Starts the child that `make` returns, as [`spawn`](Self::spawn) does; with
    /// [`PeerOptions::restart`] on, `make` is called again for each fresh child (in the task
    /// whose request starts it, under the supervision's lock: keep it quick, and never call
    /// the peer from it), as [`crate::Peer::spawn_with`]. That lock is a plain mutex, held
    /// only for decisions and for `make` and the spawn: a call that comes meanwhile blocks its
    /// worker thread for that long.
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
        if !options.spin.is_zero() {
            return Err(PeerError::new(
                ErrorCode::InvalidArgument,
                format!(
                    "PeerOptions::spin ({} us) is not supported by rust_ts_ipc::tokio::Peer (its pipes are read by the \
                     runtime's reactor, not spun); leave it zero, or use rust_ts_ipc::Peer",
                    options.spin.as_micros()
                ),
            ));
        }
        let Ok(runtime) = Handle::try_current() else {
            return Err(PeerError::new(
                ErrorCode::InvalidArgument,
                "rust_ts_ipc::tokio::Peer::spawn was called outside a tokio runtime; call it from async code run by \
                 a runtime with I/O and time enabled (#[tokio::main], or Builder::enable_all), or use \
                 rust_ts_ipc::Peer",
            ));
        };
        let counters = Arc::new(Counters::default());
        let (sender, receiver) = mpsc::channel(options.max_unsolicited);
        let queued = Arc::new(AtomicUsize::new(0));
        let outbound = Outbound { sender, queued: Arc::clone(&queued) };
        let config = Arc::new(Generation {
            limits,
            stderr: StderrTarget::from(options.stderr),
            counters: Arc::clone(&counters),
            hang: options.hang,
            sandbox: options.sandbox,
            runtime: runtime.clone(),
        });
        let starter = restart::starter(make, options.restart.is_some(), &config, &outbound, start_child);
        // Without restarts the reader owns the only sender: the channel ends with its stdout.
        let first = start_child(command, &config, outbound)?;
        let keeper = Keeper::new(first, options.restart, starter, options.on_supervision, runtime);
        Ok(Peer { keeper, counters, options: limits, messages: Mutex::new(Some(Unsolicited { receiver, queued })) })
    }

    /// The current child's pid (also its process group's id).
    pub fn pid(&self) -> u32 {
        self.keeper.current().pid
    }

    /// Sends a request and waits for its reply, at most [`PeerOptions::timeout`]. Dropping
    /// the future cancels the request (see [`Peer`]).
    ///
    /// # Errors
    /// [`ErrorCode::ErrorReply`] when the reply is an `error` message, and every error of
    /// [`send`](Self::send) and of awaiting a [`Pending`].
    pub async fn request(&self, msg_type: &str, data: impl Into<Data>) -> Result<Envelope, PeerError> {
        self.send(msg_type, data).await?.await
    }

    /// [`request`](Self::request) with its own timeout.
    ///
    /// # Errors
    /// As [`request`](Self::request).
    pub async fn request_timeout(
        &self,
        msg_type: &str,
        data: impl Into<Data>,
        timeout: Duration,
    ) -> Result<Envelope, PeerError> {
        self.send_timeout(msg_type, data, timeout).await?.await
    }

    /// Sends a request without waiting for its reply: await the returned [`Pending`] (from
    /// any task). Resolves once the request is queued for the writer task; waits while
    /// [`PeerOptions::max_in_flight`] requests await replies or the write queue is full
    /// ([`PeerOptions::max_unsent_bytes`]). The request times out [`PeerOptions::timeout`]
    /// from now, however long it waited to be queued or written.
    ///
    /// # Errors
    /// As [`crate::Peer::send`]: [`ErrorCode::InvalidArgument`], [`ErrorCode::Closed`],
    /// [`ErrorCode::PeerExited`], [`ErrorCode::Timeout`] (no room in time, or a restart's
    /// backoff ends after the deadline), [`ErrorCode::RestartLimit`] while the restart circuit
    /// is open, [`ErrorCode::Spawn`] when a fresh child could not start, [`ErrorCode::Io`].
    pub async fn send(&self, msg_type: &str, data: impl Into<Data>) -> Result<Pending, PeerError> {
        self.send_timeout(msg_type, data, self.options.timeout).await
    }

    /// [`send`](Self::send) with its own timeout.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub async fn send_timeout(
        &self,
        msg_type: &str,
        data: impl Into<Data>,
        timeout: Duration,
    ) -> Result<Pending, PeerError> {
        let data = data.into();
        check_encodable(self.options.encoding, msg_type, &data)?;
        let deadline = deadline_after(timeout);
        let shared = &self.keeper.generation(msg_type, deadline).await?;
        refuse_if_over(&shared.lock(), msg_type)?;
        let Ok(_turn) = timeout_at(deadline, shared.turn.lock()).await else {
            bump(&shared.counters.timeouts);
            return Err(shared.options.not_sent(msg_type, timeout, true, true, 0));
        };
        // The id is taken with the turn, so ids go out in order.
        let id = {
            let mut state = shared.lock();
            refuse_if_over(&state, msg_type)?;
            state.next_request_id()?
        };
        let envelope = Envelope { msg_type: msg_type.to_owned(), data, id: Some(id) };
        let line = encode(shared.options.encoding, envelope)?;
        let (reply, outcome) = oneshot::channel();
        let waiting = Waiting { reply, deadline, msg_type: msg_type.to_owned(), timeout, sent: false };
        shared.queue(line, Some(waiting), msg_type, deadline, timeout).await?;
        Ok(Pending {
            shared: Arc::clone(shared),
            id,
            msg_type: msg_type.to_owned(),
            deadline,
            timeout,
            outcome,
            sleep: Box::pin(sleep_until(deadline)),
            expired: false,
            done: false,
        })
    }

    /// Sends a message that expects no reply (no id): queues it behind every call made before
    /// it and returns. As [`crate::Peer::notify`]: `Ok` means queued; those still queued at
    /// [`close`](Self::close) are written before the child's stdin is closed.
    ///
    /// # Errors
    /// As [`send`](Self::send); [`ErrorCode::Timeout`] when the write queue had no room
    /// within [`PeerOptions::timeout`].
    pub async fn notify(&self, msg_type: &str, data: impl Into<Data>) -> Result<(), PeerError> {
        let data = data.into();
        let encoding = self.options.encoding;
        check_encodable(encoding, msg_type, &data)?;
        let line = encode(encoding, Envelope { msg_type: msg_type.to_owned(), data, id: None })?;
        let timeout = self.options.timeout;
        let deadline = deadline_after(timeout);
        let shared = &self.keeper.generation(msg_type, deadline).await?;
        refuse_if_over(&shared.lock(), msg_type)?;
        let Ok(_turn) = timeout_at(deadline, shared.turn.lock()).await else {
            return Err(shared.options.not_sent(msg_type, timeout, true, true, 0));
        };
        shared.queue(line, None, msg_type, deadline, timeout).await
    }

    /// The child's unsolicited messages, as [`crate::Peer::take_messages`] describes them
    /// (with [`PeerOptions::restart`], of every child, ending once the peer is closed and its
    /// last child's stdout has closed). `None` after the first call.
    pub fn take_messages(&self) -> Option<Unsolicited> {
        self.messages.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    /// What the peer has done so far, including what it dropped.
    pub fn stats(&self) -> PeerStats {
        self.counters.snapshot()
    }

    /// Stops the child and returns how it ended, as [`crate::Peer::close`]: pending requests
    /// fail with [`ErrorCode::Closed`], the notifications still queued are written and the
    /// child's stdin closed (within [`PeerOptions::grace`]), then the child gets the rest of
    /// that grace to exit, SIGTERM to its group, the grace again, SIGKILL, and is reaped.
    /// Idempotent. Under supervision: the current child (a dead one's status, during a
    /// backoff) is the one returned; calls waiting out a backoff fail with
    /// [`ErrorCode::Closed`], no child starts after it, and it waits for the dead children
    /// still being reaped.
    ///
    /// # Errors
    /// [`ErrorCode::Io`] if the child could not be waited for.
    pub async fn close(&self) -> Result<ExitStatus, PeerError> {
        self.keeper.close().await
    }
}

impl Drop for Peer {
    /// Runs [`close`](Peer::close) in a task of the peer's runtime (the one it was spawned
    /// in; the drop does not wait for it), also when dropped in another runtime; outside a
    /// runtime, stops the child at once, blocking up to twice the grace.
    fn drop(&mut self) {
        let started = Instant::now();
        let (current, first, retiring) = self.keeper.begin_close();
        match Handle::try_current() {
            // Not the current runtime's: one that ends before running the task would drop
            // it, and the child would run on as long as its own tasks do in the peer's.
            Ok(_) => {
                self.keeper.runtime.spawn(async move {
                    let _ = current.close(first, started).await;
                    for task in retiring {
                        let _ = task.0.await;
                    }
                });
            }
            Err(_) => {
                // The dead children's tasks run on in their runtime, if it still runs; if it
                // does not, dropping them drops their children, which stops and reaps them.
                lock_child(&current.child).shutdown(self.options.grace);
            }
        }
    }
}

/// A request sent and not yet answered: a future of its reply (or of why none came), resolved
/// at the latest at the request's deadline. Dropping it unawaited cancels the request: it
/// leaves the pending map, its line is still written if it was queued, and its reply, if it
/// comes, is dropped and counted. A request that times out before the writer took its line is
/// never written.
pub struct Pending {
    shared: Arc<Shared>,
    id: u64,
    msg_type: String,
    deadline: Instant,
    timeout: Duration,
    outcome: oneshot::Receiver<Outcome>,
    sleep: Pin<Box<Sleep>>,
    /// The deadline passed, but the request had already left the pending map: its outcome is
    /// on its way.
    expired: bool,
    done: bool,
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("tokio::Pending").field("id", &self.id).field("msg_type", &self.msg_type).finish()
    }
}

impl Pending {
    /// The request's id (what its reply carries).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Waits at most `timeout` (and never past the request's own deadline); if no reply came,
    /// the request is given up and fails with [`ErrorCode::Timeout`].
    ///
    /// # Errors
    /// As awaiting the [`Pending`] itself.
    pub async fn wait_timeout(mut self, timeout: Duration) -> Result<Envelope, PeerError> {
        let deadline = self.deadline.min(deadline_after(timeout));
        self.timeout = timeout.min(self.timeout);
        self.deadline = deadline;
        self.sleep.as_mut().reset(deadline);
        self.await
    }

    /// Takes the request out of the pending map (and its line out of the write queue if it is
    /// still there) and says whether its line had gone out; `None` if it had left already.
    fn give_up(&self) -> Option<bool> {
        let mut state = self.shared.lock();
        let waiting = state.pending.remove(&self.id)?;
        state.forget(self.id, waiting.sent);
        drop(state);
        self.shared.changed.notify_waiters();
        bump(&self.shared.counters.timeouts);
        Some(waiting.sent)
    }
}

impl Future for Pending {
    type Output = Result<Envelope, PeerError>;

    /// # Errors
    /// [`ErrorCode::ErrorReply`] for an `error` reply, [`ErrorCode::Timeout`],
    /// [`ErrorCode::PeerExited`] (within about 80 ms of the child's exit being seen), or
    /// [`ErrorCode::Closed`].
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(Err(PeerError::new(
                ErrorCode::InvalidArgument,
                format!("request {} was awaited again after it had resolved", this.id),
            )));
        }
        if let Poll::Ready(outcome) = Pin::new(&mut this.outcome).poll(cx) {
            this.done = true;
            // The sender is dropped unsent only if the peer's books are dropped: as closed.
            return Poll::Ready(outcome.unwrap_or_else(|_| {
                Err(PeerError::new(ErrorCode::Closed, "the peer is gone; no reply will be delivered"))
            }));
        }
        if !this.expired && this.sleep.as_mut().poll(cx).is_ready() {
            match this.give_up() {
                Some(sent) => {
                    this.done = true;
                    return Poll::Ready(Err(timeout_error(&this.msg_type, this.id, this.timeout, sent)));
                }
                // Answered (or failed) just as the time ran out: its outcome is being handed
                // over, and wakes this future.
                None => this.expired = true,
            }
        }
        Poll::Pending
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut state = self.shared.lock();
        // Its line stays queued if not yet written: dropping gives up the reply, not the request.
        if state.pending.remove(&self.id).is_some() {
            state.abandon(self.id);
            drop(state);
            self.shared.changed.notify_waiters();
        }
    }
}

/// The reader's end of the unsolicited queue: the channel bounds the count, `queued` the bytes.
type Outbound = peer::Outbound<mpsc::Sender<(Envelope, usize)>>;

/// The child's unsolicited messages, from [`Peer::take_messages`]: a tokio channel receiver
/// that gives back each message's bytes to the queue's budget
/// ([`PeerOptions::max_unsolicited_bytes`]) as it is taken. Ends once the child's stdout has
/// closed and all are taken.
pub struct Unsolicited {
    receiver: mpsc::Receiver<(Envelope, usize)>,
    queued: Arc<AtomicUsize>,
}

impl fmt::Debug for Unsolicited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("tokio::Unsolicited").field("queued_bytes", &self.queued.load(Ordering::Relaxed)).finish()
    }
}

impl Unsolicited {
    fn taken(&self, (message, size): (Envelope, usize)) -> Envelope {
        self.queued.fetch_sub(size, Ordering::AcqRel);
        message
    }

    /// The next message; `None` once the channel has ended.
    pub async fn recv(&mut self) -> Option<Envelope> {
        let message = self.receiver.recv().await?;
        Some(self.taken(message))
    }

    /// The next message if one is waiting.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`] when none is waiting; `Disconnected` once the channel has ended.
    pub fn try_recv(&mut self) -> Result<Envelope, TryRecvError> {
        let message = self.receiver.try_recv()?;
        Ok(self.taken(message))
    }
}

/// Starts one child of a peer and its tasks: the writer, the reader (delivering unsolicited
/// messages to `unsolicited`), the stderr reader, the exit watcher and, with
/// [`PeerOptions::hang`], the hang watchdog.
fn start_child(command: &mut Command, config: &Generation, unsolicited: Outbound) -> Result<Arc<Shared>, PeerError> {
    // The sandbox (environment, working directory, resource limits), as the thread Peer.
    config.sandbox.apply(command).map_err(|e| PeerError::new(ErrorCode::InvalidArgument, e.to_string()))?;
    let runtime = &config.runtime;
    // The pipes join the runtime's reactor: they must be made within it.
    let _entered = runtime.enter();
    let reaped = Arc::new(Mutex::new(false));
    let (mut child, stdout, stderr) =
        ChildProcess::spawn(command, config.limits.grace, Box::new(MarkReaped(Arc::clone(&reaped))))
            .map_err(|e| PeerError::new(ErrorCode::Spawn, e.to_string()))?;
    let command_line = child.command_line().to_owned();
    let pipes = child.take_stdin().ok_or_else(|| io::Error::other("no stdin")).and_then(|stdin| {
        Ok((ChildStdin::from_std(stdin)?, ChildStdout::from_std(stdout)?, ChildStderr::from_std(stderr)?))
    });
    // On error the child is dropped here, which stops and reaps it.
    let (stdin, stdout, stderr) = pipes.map_err(|e| {
        PeerError::new(
            ErrorCode::Spawn,
            format!("child `{command_line}` started, but its pipes could not join the tokio runtime: {e}"),
        )
    })?;
    let shared = Arc::new(Shared {
        state: Mutex::new(State { next_id: 1, ..State::default() }),
        changed: Notify::new(),
        wake_writer: Notify::new(),
        turn: ::tokio::sync::Mutex::new(()),
        pid: child.id(),
        command: command_line,
        child: Arc::new(Mutex::new(child)),
        reaped,
        tail: Arc::new(StderrTail::default()),
        counters: Arc::clone(&config.counters),
        options: config.limits,
        heard: config.hang.map(|_| Heard::new()),
        keeper: OnceLock::new(),
    });
    runtime.spawn(watch_exit(Arc::clone(&shared)));
    runtime.spawn(write_stdin(Arc::clone(&shared), stdin));
    runtime.spawn(read_stdout(Arc::clone(&shared), stdout, unsolicited));
    runtime.spawn(read_stderr(Arc::clone(&shared), stderr, config.stderr.clone()));
    if let Some(hang) = config.hang {
        runtime.spawn(watch_for_hang(Arc::clone(&shared), hang));
    }
    Ok(shared)
}

/// The hang watchdog task of one child ([`PeerOptions::hang`]), as the thread peer's: while
/// requests are pending and nothing at all has been read from the child for `hang`, the
/// child is declared hung: its pending requests fail [`ErrorCode::PeerExited`] naming the
/// hang, the supervision is told, and the child is stopped with the shutdown sequence.
async fn watch_for_hang(shared: Arc<Shared>, hang: Duration) {
    let tick = restart::hang_tick(hang);
    let Some(heard) = shared.heard.as_ref() else { return };
    loop {
        ::tokio::time::sleep(tick).await;
        let error = {
            let mut state = shared.lock();
            if state.closed || state.ended.is_some() {
                return;
            }
            let since = |now: Instant, from: Instant| now.saturating_duration_since(from);
            let hung = |quiet, pending| {
                PeerError::hung(
                    &shared.command,
                    shared.pid,
                    quiet,
                    pending,
                    shared.tail.text(),
                    shared.options.restarting,
                )
            };
            let last = Instant::from_std(heard.last());
            match restart::declare_hung(&mut state, last, Instant::now(), since, hang, hung) {
                Some(error) => error,
                None => continue,
            }
        };
        shared.changed.notify_waiters();
        shared.wake_writer.notify_one();
        shared.report_end(&error);
        // The shutdown sequence: stdin closed, then SIGTERM and SIGKILL after the grace; its
        // waits on the blocking pool.
        let (child, grace) = (Arc::clone(&shared.child), shared.options.grace);
        let _ = ::tokio::task::spawn_blocking(move || lock_child(&child).shutdown(grace)).await;
        return;
    }
}

/// The writer task: the one place that writes to the child's stdin, in queue order, flushing
/// after each batch. Ends once the peer is closed (and its queue written) or the child ends,
/// closing the child's stdin by dropping it.
async fn write_stdin(shared: Arc<Shared>, stdin: ChildStdin) {
    let mut pipe = BufWriter::with_capacity(WRITE_BATCH, stdin);
    while let Some(batch) = next_batch(&shared).await {
        let mut written = Ok(());
        for line in &batch {
            written = write_line(&mut pipe, line).await;
            if written.is_err() {
                break;
            }
        }
        if let Err(e) = written.and(pipe.flush().await) {
            on_write_failed(&shared, &e, batch).await;
            break;
        }
        shared.lock().writing_bytes = 0;
        shared.changed.notify_waiters();
    }
    drop(pipe);
    shared.lock().stdin_closed = true;
    shared.changed.notify_waiters();
}

/// Writes `line` whole: its pieces (big payloads) with vectored writes, never copied.
async fn write_line(pipe: &mut BufWriter<ChildStdin>, line: &Line) -> io::Result<()> {
    if line.pieces.is_empty() {
        return pipe.write_all(&line.bytes).await;
    }
    let mut slices = line.io_slices();
    let mut slices = &mut slices[..];
    io::IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        match pipe.write_vectored(slices).await {
            // What tokio's `write_all` returns then: the error reads as an unspliced line's.
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => io::IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Waits for lines to write; `None` once there will be none.
async fn next_batch(shared: &Shared) -> Option<Vec<Line>> {
    loop {
        // `notify_one` keeps a permit for a writer not yet waiting: no wake-up is lost.
        let notified = shared.wake_writer.notified();
        {
            let mut state = shared.lock();
            if state.ended.is_some() || (state.closed && state.outbox.is_empty()) {
                return None;
            }
            if !state.outbox.is_empty() {
                let batch = take_batch(&mut state, &shared.counters);
                return Some(batch);
            }
        }
        notified.await;
    }
}

/// A write failed: usually the child exited or is closing, which its exit then says. If it
/// has not ended within [`EOF_SETTLE`], every request whose line could not be written fails
/// with the write's error, as will later calls.
async fn on_write_failed(shared: &Shared, e: &io::Error, batch: Vec<Line>) {
    shared.lock().writing_bytes = 0;
    if e.kind() == io::ErrorKind::BrokenPipe {
        let settled = deadline_after(EOF_SETTLE);
        shared.wait_for(settled, |state| (state.closed || state.ended.is_some()).then_some(())).await;
    }
    shared.lock().write_failed(&shared.command, e, &batch);
    shared.changed.notify_waiters();
}

/// The reader task: the child's stdout, framed and decoded by the core, dispatched.
async fn read_stdout(shared: Arc<Shared>, mut stdout: ChildStdout, unsolicited: Outbound) {
    let (limits, counters) = (&shared.options, &shared.counters);
    let mut decoder = Incoming::new(limits);
    let mut buf = Vec::new();
    loop {
        // In place, as the thread peer reads: a big `bin` payload straight into the spare
        // capacity of the `Vec` that becomes its `Data::Bytes` (never zeroed first).
        let read = match decoder.detached_rest() {
            Some((rest, lacking)) => {
                let limit = u64::try_from(lacking).unwrap_or(u64::MAX);
                (&mut stdout).take(limit).read_buf(rest).await.map(|_| decoder.appended())
            }
            None => match stdout.read(decoder.space(&mut buf)).await {
                Ok(n) => {
                    decoder.commit(n, &buf);
                    Ok(n)
                }
                Err(e) => Err(e),
            },
        };
        match read {
            Ok(0) => break,
            Ok(_) => {
                if let Some(heard) = &shared.heard {
                    heard.now();
                }
                decoder.drain(limits, counters, |m, size| shared.dispatch(m, size, &unsolicited));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    decoder.finish(limits, counters, |m, size| shared.dispatch(m, size, &unsolicited));
    // The unsolicited channel ends with the child's stdout.
    drop(unsolicited);
    shared.on_stdout_closed().await;
}

/// The stderr task: each piece to the tail, then where [`StderrMode`] says.
async fn read_stderr(shared: Arc<Shared>, mut stderr: ChildStderr, mode: StderrTarget) {
    let mut buf = vec![0; READ_CHUNK];
    let mut ours = ::tokio::io::stderr();
    loop {
        let n = match stderr.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        shared.tail.push(&buf[..n]);
        match &mode {
            // As the thread peer: a child writing faster than our stderr takes it is slowed.
            StderrTarget::Forward => {
                let _ = ours.write_all(&buf[..n]).await;
            }
            StderrTarget::Discard => {}
            StderrTarget::Sink(sink) => (sink.lock().unwrap_or_else(PoisonError::into_inner))(&buf[..n]),
        }
    }
    shared.lock().stderr_closed = true;
    shared.changed.notify_waiters();
}

/// The exit watcher task: on every SIGCHLD (any child's), asks whether this child has exited,
/// without reaping it; then how (at once: it has exited) and tells the peer. Stops once the
/// child is reaped, or where the OS cannot say without reaping (stdout's EOF then tells).
async fn watch_exit(shared: Arc<Shared>) {
    #[cfg(unix)]
    let mut sigchld = ::tokio::signal::unix::signal(::tokio::signal::unix::SignalKind::child()).ok();
    loop {
        // `None`: reaped, or the OS cannot tell; `Some(None)`: still running.
        let exited = {
            let reaped = shared.reaped.lock().unwrap_or_else(PoisonError::into_inner);
            match process::exited_unreaped(shared.pid) {
                _ if *reaped => None,
                // Read while the child is a zombie: evidence for a CPU limit's SIGKILL.
                Some(true) => Some(Some((
                    process::wait_for_exit_unreaped(shared.pid),
                    process::sandbox::cpu_time_unreaped(shared.pid),
                ))),
                Some(false) => Some(None),
                None => None,
            }
        };
        match exited {
            None => return,
            Some(Some((status, cpu_time))) => return shared.on_exit(status, cpu_time).await,
            Some(None) => {}
        }
        #[cfg(unix)]
        if let Some(sigchld) = sigchld.as_mut() {
            // A SIGCHLD may come between the check and here; the wait bounds that race.
            let _ = ::tokio::time::timeout(EXIT_POLL * 20, sigchld.recv()).await;
            continue;
        }
        ::tokio::time::sleep(EXIT_POLL).await;
    }
}
