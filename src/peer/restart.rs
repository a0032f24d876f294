//! Supervision of a [`super::Peer`]'s child: which child is current, when a dead one is
//! replaced ([`crate::supervise::Restarts`] decides), the reports of it
//! ([`SupervisionEvent`]), and the hang watchdog ([`super::PeerOptions::hang`]).
//!
//! Each child is a *generation*: a [`Shared`] with its own pending map, threads and stderr
//! tail, exactly the unsupervised peer's. The [`Keeper`] owns the current one. A request takes
//! it under the keeper's lock; if it has died and restarts are on, that request (the first to
//! come after the backoff) starts the next generation, and the dead one is closed (the
//! shutdown sequence, reaping it) on a thread of its own that [`Keeper::close`] joins. A
//! generation reports its death here as soon as it sees it (exit, stdout closed, hang); the
//! request path reports it too if it gets there first, once per generation.

use std::fmt;
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{ErrorCode, PeerError, Reply, Shared, State};
use crate::supervise::{Gate, RestartPolicy, Restarts};

/// What the supervision of a [`super::Peer`] reports, to
/// [`PeerOptions::on_supervision`](super::PeerOptions::on_supervision).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SupervisionEvent {
    /// The child died unexpectedly (exited, closed its stdout, or was declared hung and is
    /// being stopped); its pending requests failed with `error`.
    ChildEnded {
        /// The dead child's pid.
        pid: u32,
        /// What its pending requests failed with ([`ErrorCode::PeerExited`]).
        error: PeerError,
        /// What happens next: [`Gate::Backoff`] (the next request after `until` starts a
        /// fresh child), [`Gate::Open`] (the circuit is open until `until`), or
        /// [`Gate::Running`] when restarts are off.
        next: Gate,
    },
    /// A fresh child was started in place of a dead one.
    Restarted {
        /// The new child's pid.
        pid: u32,
        /// The dead child's pid.
        previous_pid: u32,
        /// Restarts within the policy's window, this one included.
        restarts_in_window: u32,
    },
    /// A fresh child could not be started; the next request tries again after a new backoff.
    RestartFailed {
        /// Why ([`ErrorCode::Spawn`]).
        error: PeerError,
    },
}

/// The callback of [`PeerOptions::on_supervision`](super::PeerOptions::on_supervision):
/// called on the peer's own threads (the dead child's reader, exit watcher or hang watchdog,
/// or the thread whose request started the fresh child), never under the peer's locks; for
/// the async peer (`rust_ts_ipc::tokio::Peer`), in its tasks (the same roles), so it must
/// not block for long either.
/// Keep it short, and do not wait in it for the peer's requests. It may close the peer, or
/// drop the last handle to it. A panic in it is caught (after the panic hook has shown it).
#[derive(Clone)]
pub struct SupervisionCallback(Arc<dyn Fn(&SupervisionEvent) + Send + Sync>);

impl SupervisionCallback {
    /// Wraps `f`.
    pub fn new(f: impl Fn(&SupervisionEvent) + Send + Sync + 'static) -> Self {
        SupervisionCallback(Arc::new(f))
    }

    fn call(&self, event: &SupervisionEvent) {
        (self.0)(event);
    }
}

impl fmt::Debug for SupervisionCallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SupervisionCallback(..)")
    }
}

/// One child of a supervised peer, as the supervision sees it: the thread [`super::Peer`]'s
/// generations and the tokio peer's (`crate::tokio_peer`) alike.
pub(crate) trait Supervised: Send + Sync + 'static {
    /// Its pid.
    fn pid(&self) -> u32;
    /// Why it can answer no more (it ended, or cannot be written to), unless the peer closed it.
    fn death(&self) -> Option<PeerError>;
    /// A call gave up in a restart's backoff: counted as a timeout.
    fn count_timeout(&self);
    /// This fresh child replaces `dead`: the same supervision, and ids going on from its.
    fn succeed(&self, dead: &Self);
}

/// What the supervision does with a dead generation being closed (reaped) elsewhere: a thread
/// or a task.
pub(crate) trait Retiring {
    /// It is done.
    fn is_finished(&self) -> bool;
}

impl Retiring for JoinHandle<()> {
    fn is_finished(&self) -> bool {
        JoinHandle::is_finished(self)
    }
}

/// Starts a generation: the first child, and each restart.
pub(crate) type Starter<G> = Box<dyn FnMut() -> Result<Arc<G>, PeerError> + Send>;

/// What starts each fresh child of a peer (restarts are on and `make` was given): `make`'s
/// `Command` through `start_child` with the peer's `config`, each child with its own clone
/// of `unsolicited` (the peer's one unsolicited queue, which so ends only once the peer is
/// closed and the last child's stdout has closed). Otherwise a starter that refuses.
pub(crate) fn starter<G: 'static, C, O>(
    make: Option<Box<dyn FnMut() -> Command + Send>>,
    restarting: bool,
    config: &Arc<C>,
    unsolicited: &O,
    start_child: fn(&mut Command, &C, O) -> Result<Arc<G>, PeerError>,
) -> Starter<G>
where
    C: Send + Sync + 'static,
    O: Clone + Send + 'static,
{
    match make {
        Some(mut make) if restarting => {
            let (config, unsolicited) = (Arc::clone(config), unsolicited.clone());
            Box::new(move || start_child(&mut make(), &config, unsolicited.clone()))
        }
        _ => Box::new(|| Err(PeerError::new(ErrorCode::Spawn, "restarts are off (PeerOptions::restart)"))),
    }
}

/// The supervision of a peer as plain data (no waiting, no thread): which generation is
/// current, its restart state, and what a call does next ([`Keep::step`]). Each peer guards
/// it with its own lock and waits its own way (a condvar, a tokio `Notify`).
pub(crate) struct Keep<G, R> {
    current: Arc<G>,
    /// `None`: restarts are off.
    restarts: Option<Restarts>,
    /// The current generation's death was reported to `restarts`.
    reported: bool,
    /// How the last dead child ended: what [`ErrorCode::RestartLimit`] carries.
    last_end: Option<PeerError>,
    closed: bool,
    /// Dead generations being closed (reaped) on threads or tasks of their own.
    retiring: Vec<R>,
    start: Starter<G>,
}

/// What a call does next, from [`Keep::step`].
pub(crate) enum Step<G> {
    /// Go to this generation.
    Go(Arc<G>),
    /// Fail with this.
    Fail(PeerError),
    /// Wait this long (less if the peer is closed), then step again.
    Wait(Duration),
    /// Report this (outside the lock), then step again.
    Report(SupervisionEvent),
    /// A restart was tried: report the event (outside the lock); the call goes to the fresh
    /// generation or fails. The dead generation, if replaced, is to be closed with
    /// [`Keep::retire`] under the same lock.
    Restarted { event: SupervisionEvent, started: Result<Arc<G>, PeerError>, dead: Option<Arc<G>> },
}

impl<G: Supervised, R: Retiring> Keep<G, R> {
    pub(crate) fn new(first: Arc<G>, policy: Option<RestartPolicy>, start: Starter<G>) -> Self {
        Keep {
            current: first,
            restarts: policy.map(Restarts::new),
            reported: false,
            last_end: None,
            closed: false,
            retiring: Vec::new(),
            start,
        }
    }

    /// The current generation.
    pub(crate) fn current(&self) -> &Arc<G> {
        &self.current
    }

    /// Generation `dead` can answer no more (`error`): the event to report, once per
    /// generation, if it is still the current one and the peer is not closed.
    pub(crate) fn on_ended(&mut self, dead: &G, error: &PeerError) -> Option<SupervisionEvent> {
        if self.closed || self.reported || !std::ptr::eq(Arc::as_ptr(&self.current), dead) {
            return None;
        }
        Some(self.report(error.clone(), Instant::now()))
    }

    /// Tells the restart state that the current generation died (once per generation).
    fn report(&mut self, error: PeerError, now: Instant) -> SupervisionEvent {
        let pid = self.current.pid();
        self.reported = true;
        let next = match self.restarts.as_mut() {
            Some(restarts) => restarts.on_exit(now),
            None => Gate::Running,
        };
        self.last_end = Some(error.clone());
        SupervisionEvent::ChildEnded { pid, error, next }
    }

    /// What a call for `msg_type` (due by `deadline`) does now: go to the current generation,
    /// or, once it has died and restarts are on, wait out the backoff, then start a fresh one
    /// (the first call after the backoff does). Errors: [`ErrorCode::Closed`];
    /// [`ErrorCode::RestartLimit`] while the circuit is open; [`ErrorCode::Timeout`] when the
    /// backoff ends after `deadline`; [`ErrorCode::Spawn`] when the fresh child could not start.
    pub(crate) fn step(&mut self, msg_type: &str, deadline: Instant, now: Instant) -> Step<G> {
        if self.closed {
            return Step::Fail(PeerError::new(
                ErrorCode::Closed,
                format!("cannot send `{msg_type}`: the peer is closed; start a new Peer to send more"),
            ));
        }
        // Unsupervised, or alive: the generation itself refuses calls if it has ended.
        if self.restarts.is_none() {
            return Step::Go(Arc::clone(&self.current));
        }
        let Some(error) = self.current.death() else { return Step::Go(Arc::clone(&self.current)) };
        if !self.reported {
            return Step::Report(self.report(error, now));
        }
        let Some(restarts) = self.restarts.as_mut() else { return Step::Go(Arc::clone(&self.current)) };
        match restarts.poll(now) {
            Gate::Backoff { until } if until > deadline => {
                self.current.count_timeout();
                let ms = until.saturating_duration_since(now).as_millis();
                Step::Fail(PeerError::new(
                    ErrorCode::Timeout,
                    format!(
                        "`{msg_type}` was not sent: the child died and its restart waits {ms} ms more \
                         (PeerOptions::restart backoff), past this call's deadline; retry later or give it a longer \
                         timeout"
                    ),
                ))
            }
            Gate::Backoff { until } => Step::Wait(until.saturating_duration_since(now)),
            Gate::Open { until } => {
                let window = restarts.policy().window;
                let count = restarts.restarts_in_window(now);
                let last = self.last_end.clone().unwrap_or(error);
                Step::Fail(PeerError::restart_limit(&last, count, window, until.saturating_duration_since(now)))
            }
            Gate::Running | Gate::Start => self.restart(now),
        }
    }

    /// Starts the next generation in place of the dead current one.
    fn restart(&mut self, now: Instant) -> Step<G> {
        self.retiring.retain(|retiring| !retiring.is_finished());
        match (self.start)() {
            Ok(fresh) => {
                fresh.succeed(&self.current);
                let dead = std::mem::replace(&mut self.current, Arc::clone(&fresh));
                self.reported = false;
                let restarts_in_window = self.restarts.as_mut().map_or(0, |r| {
                    r.started(now);
                    r.restarts_in_window(now)
                });
                let event =
                    SupervisionEvent::Restarted { pid: fresh.pid(), previous_pid: dead.pid(), restarts_in_window };
                Step::Restarted { event, started: Ok(fresh), dead: Some(dead) }
            }
            Err(error) => {
                // Another backoff before the next try; the dead child stays current.
                if let Some(restarts) = self.restarts.as_mut() {
                    restarts.on_exit(now);
                }
                Step::Restarted {
                    event: SupervisionEvent::RestartFailed { error: error.clone() },
                    started: Err(error),
                    dead: None,
                }
            }
        }
    }

    /// A dead generation is being closed by `retiring`: [`close`](Self::close) hands it over.
    pub(crate) fn retire(&mut self, retiring: R) {
        self.retiring.push(retiring);
    }

    /// The peer is closed: no child starts after this (what starts them goes, with the
    /// unsolicited queue's sender it holds). Gives the current generation, to close, and the
    /// dead ones still being closed, to wait for.
    pub(crate) fn close(&mut self) -> (Arc<G>, Vec<R>) {
        self.closed = true;
        self.start = Box::new(|| Err(PeerError::new(ErrorCode::Closed, "the peer is closed")));
        (Arc::clone(&self.current), std::mem::take(&mut self.retiring))
    }
}

/// Reports `event` to `callback`; a panic in it is shown by the panic hook and goes no
/// further: the thread or task it ran on still has work (a hang watchdog stops the child
/// after its report; a request that started a fresh child still goes to it).
pub(crate) fn emit(callback: Option<&SupervisionCallback>, event: SupervisionEvent) {
    if let Some(callback) = callback {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback.call(&event)));
    }
}

/// The owner of the thread peer's current generation and of the restart state.
pub(super) struct Keeper {
    keep: Mutex<Keep<Shared, JoinHandle<()>>>,
    /// Signalled by [`close`](Self::close), for calls waiting out a backoff.
    changed: Condvar,
    on_event: Option<SupervisionCallback>,
}

impl Keeper {
    pub(super) fn new(
        first: Arc<Shared>,
        policy: Option<RestartPolicy>,
        start: Starter<Shared>,
        on_event: Option<SupervisionCallback>,
    ) -> Arc<Keeper> {
        let keeper = Arc::new(Keeper {
            keep: Mutex::new(Keep::new(Arc::clone(&first), policy, start)),
            changed: Condvar::new(),
            on_event,
        });
        first.set_keeper(&keeper);
        keeper
    }

    fn lock(&self) -> MutexGuard<'_, Keep<Shared, JoinHandle<()>>> {
        self.keep.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current child, for the pid and the debug output.
    pub(super) fn current(&self) -> Arc<Shared> {
        Arc::clone(self.lock().current())
    }

    /// Generation `dead` can answer no more (`error`): called by it when it sees that.
    pub(super) fn on_ended(&self, dead: &Shared, error: &PeerError) {
        let event = self.lock().on_ended(dead, error);
        if let Some(event) = event {
            emit(self.on_event.as_ref(), event);
        }
    }

    /// The generation a call for `msg_type` (due by `deadline`) goes to: see [`Keep::step`].
    ///
    /// # Errors
    /// As [`Keep::step`].
    pub(super) fn generation(&self, msg_type: &str, deadline: Instant) -> Result<Arc<Shared>, PeerError> {
        let mut keep = self.lock();
        loop {
            match keep.step(msg_type, deadline, Instant::now()) {
                Step::Go(shared) => return Ok(shared),
                Step::Fail(error) => return Err(error),
                Step::Wait(left) => {
                    keep = self.changed.wait_timeout(keep, left).unwrap_or_else(PoisonError::into_inner).0;
                }
                Step::Report(event) => {
                    drop(keep);
                    emit(self.on_event.as_ref(), event);
                    keep = self.lock();
                }
                Step::Restarted { event, started, dead } => {
                    if let Some(dead) = dead {
                        keep.retire(thread::spawn(move || {
                            let _ = dead.close();
                        }));
                    }
                    drop(keep);
                    emit(self.on_event.as_ref(), event);
                    return started;
                }
            }
        }
    }

    /// Closes the current generation (the shutdown sequence) and waits for the dead ones
    /// still being closed; no child starts after it. Idempotent.
    pub(super) fn close(&self) -> Result<ExitStatus, PeerError> {
        let (current, retiring) = self.lock().close();
        self.changed.notify_all();
        let status = current.close();
        for handle in retiring {
            let _ = handle.join();
        }
        status
    }
}

/// How often a hang watchdog looks: often enough to act within about an eighth of `hang`
/// of it passing.
pub(crate) fn hang_tick(hang: Duration) -> Duration {
    (hang / 8).clamp(Duration::from_millis(2), Duration::from_millis(100))
}

/// When something was last read from a child's stdout, for its hang watchdog: kept by its
/// reader, read by the watchdog, without a lock.
pub(crate) struct Heard {
    /// When the child was started: the origin of `nanos`.
    born: Instant,
    /// Nanoseconds from `born` to the last read.
    nanos: AtomicU64,
}

impl Heard {
    /// A child started now.
    pub(crate) fn new() -> Heard {
        Heard { born: Instant::now(), nanos: AtomicU64::new(0) }
    }

    /// Something was read from the child's stdout.
    pub(crate) fn now(&self) {
        let nanos = u64::try_from(self.born.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.nanos.store(nanos, Ordering::Relaxed);
    }

    /// When something was last read (the child's start, if nothing yet).
    pub(crate) fn last(&self) -> Instant {
        self.born + Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }
}

/// One look of a hang watchdog at a generation's books (`now`, and when it last `heard`
/// from the child, on the books' clock): if requests are pending and nothing has come for
/// `hang`, the child is declared hung: what is pending fails with the error `hung` makes
/// (from how long it was quiet and how many were pending), the write queue is dropped, and
/// the generation has ended with it. That error, for the caller to report and to stop the
/// child; `None` if it is not hung.
pub(crate) fn declare_hung<R: Reply, D: Copy + Ord>(
    state: &mut State<R, D>,
    heard: D,
    now: D,
    since: impl Fn(D, D) -> Duration,
    hang: Duration,
    hung: impl FnOnce(Duration, usize) -> PeerError,
) -> Option<PeerError> {
    let busy_since = state.busy_since.filter(|_| !state.pending.is_empty())?;
    let quiet = since(now, busy_since.max(heard));
    if quiet < hang {
        return None;
    }
    let error = hung(quiet, state.pending.len());
    state.fail_all(&error);
    state.drop_outbox();
    state.ended = Some(error.clone());
    Some(error)
}

/// Checks the supervision options: the restart policy, a zero `hang`, and `restart` without
/// a way to start the child again (`can_remake`: the peer was given a `make` closure).
///
/// # Errors
/// [`ErrorCode::InvalidArgument`], naming the option and its value.
pub(crate) fn check_options(options: &super::PeerOptions, can_remake: bool) -> Result<(), PeerError> {
    if let Some(policy) = &options.restart {
        if !can_remake {
            return Err(PeerError::new(
                ErrorCode::InvalidArgument,
                "PeerOptions::restart needs a way to start the child again, which a `&mut Command` is not: use \
                 Peer::spawn_with(|| { let mut command = Command::new(..); ...; command }, options)",
            ));
        }
        policy.check().map_err(|e| PeerError::new(ErrorCode::InvalidArgument, format!("PeerOptions::restart: {e}")))?;
    }
    if options.hang.is_some_and(|hang| hang.is_zero()) {
        return Err(PeerError::new(
            ErrorCode::InvalidArgument,
            "PeerOptions::hang must be more than 0 (got 0 ms); use None to never declare the child hung",
        ));
    }
    Ok(())
}

/// The hang watchdog of one generation ([`super::PeerOptions::hang`]): while requests are
/// pending and nothing at all has been read from the child for `hang`, the child is declared
/// hung: its pending requests fail, and it is stopped with the shutdown sequence.
pub(super) fn watch_for_hang(shared: &Shared, hang: Duration) {
    let tick = hang_tick(hang);
    loop {
        thread::sleep(tick);
        let mut state = shared.lock();
        if state.closed || state.ended.is_some() {
            return;
        }
        let since = |now: Instant, from: Instant| now.saturating_duration_since(from);
        let hung = |quiet, pending| {
            PeerError::hung(&shared.command, shared.pid, quiet, pending, shared.tail.text(), shared.options.restarting)
        };
        let Some(error) = declare_hung(&mut state, shared.heard.last(), Instant::now(), since, hang, hung) else {
            continue;
        };
        drop(state);
        shared.changed.notify_all();
        shared.wake_writer.notify_one();
        shared.report_end(&error);
        // The shutdown sequence: stdin closed, then SIGTERM and SIGKILL after the grace.
        let mut child = shared.child.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = child.shutdown(shared.options.grace);
        return;
    }
}
