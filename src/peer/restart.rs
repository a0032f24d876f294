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
use std::process::ExitStatus;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{bump, ErrorCode, PeerError, Shared};
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
/// or the thread whose request started the fresh child), never under the peer's locks.
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

/// Starts a generation: the first child, and each restart.
pub(super) type Starter = Box<dyn FnMut() -> Result<Arc<Shared>, PeerError> + Send>;

/// What the keeper guards.
struct Keep {
    current: Arc<Shared>,
    /// `None`: restarts are off.
    restarts: Option<Restarts>,
    /// The current generation's death was reported to `restarts`.
    reported: bool,
    /// How the last dead child ended: what [`ErrorCode::RestartLimit`] carries.
    last_end: Option<PeerError>,
    closed: bool,
    /// Dead generations being closed (reaped) on threads of their own.
    retiring: Vec<JoinHandle<()>>,
    start: Starter,
}

/// The owner of the current generation and of the restart state.
pub(super) struct Keeper {
    keep: Mutex<Keep>,
    /// Signalled by [`close`](Self::close), for calls waiting out a backoff.
    changed: Condvar,
    on_event: Option<SupervisionCallback>,
}

impl Keeper {
    pub(super) fn new(
        first: Arc<Shared>,
        policy: Option<RestartPolicy>,
        start: Starter,
        on_event: Option<SupervisionCallback>,
    ) -> Arc<Keeper> {
        let keeper = Arc::new(Keeper {
            keep: Mutex::new(Keep {
                current: Arc::clone(&first),
                restarts: policy.map(Restarts::new),
                reported: false,
                last_end: None,
                closed: false,
                retiring: Vec::new(),
                start,
            }),
            changed: Condvar::new(),
            on_event,
        });
        first.set_keeper(&keeper);
        keeper
    }

    fn lock(&self) -> MutexGuard<'_, Keep> {
        self.keep.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current child, for the pid and the debug output.
    pub(super) fn current(&self) -> Arc<Shared> {
        Arc::clone(&self.lock().current)
    }

    fn emit(&self, event: Option<SupervisionEvent>) {
        if let (Some(callback), Some(event)) = (&self.on_event, event) {
            // A panic in the callback is shown by the panic hook and goes no further: the
            // thread it ran on still has work (a hang watchdog stops the child after its
            // report; a request that started a fresh child still goes to it).
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback.call(&event)));
        }
    }

    /// Generation `dead` can answer no more (`error`): called by it when it sees that.
    pub(super) fn on_ended(&self, dead: &Shared, error: &PeerError) {
        let mut keep = self.lock();
        if keep.closed || keep.reported || !std::ptr::eq(Arc::as_ptr(&keep.current), dead) {
            return;
        }
        let event = report(&mut keep, error.clone(), Instant::now());
        drop(keep);
        self.emit(event);
    }

    /// The generation a call for `msg_type` (due by `deadline`) goes to: the current one, or,
    /// once it has died and restarts are on, a fresh one started after the backoff.
    ///
    /// # Errors
    /// [`ErrorCode::Closed`]; [`ErrorCode::RestartLimit`] while the circuit is open;
    /// [`ErrorCode::Timeout`] when the backoff ends after `deadline`; [`ErrorCode::Spawn`]
    /// when the fresh child could not start.
    pub(super) fn generation(&self, msg_type: &str, deadline: Instant) -> Result<Arc<Shared>, PeerError> {
        let mut keep = self.lock();
        loop {
            if keep.closed {
                return Err(PeerError::new(
                    ErrorCode::Closed,
                    format!("cannot send `{msg_type}`: the peer is closed; start a new Peer to send more"),
                ));
            }
            // Unsupervised, or alive: the generation itself refuses calls if it has ended.
            if keep.restarts.is_none() {
                return Ok(Arc::clone(&keep.current));
            }
            let Some(error) = keep.current.death() else { return Ok(Arc::clone(&keep.current)) };
            let now = Instant::now();
            if !keep.reported {
                let event = report(&mut keep, error, now);
                drop(keep);
                self.emit(event);
                keep = self.lock();
                continue;
            }
            let Some(restarts) = keep.restarts.as_mut() else { continue };
            match restarts.poll(now) {
                Gate::Backoff { until } if until > deadline => {
                    let current = Arc::clone(&keep.current);
                    bump(&current.counters.timeouts);
                    let ms = until.saturating_duration_since(now).as_millis();
                    return Err(PeerError::new(
                        ErrorCode::Timeout,
                        format!(
                            "`{msg_type}` was not sent: the child died and its restart waits {ms} ms more \
                             (PeerOptions::restart backoff), past this call's deadline; retry later or give it a \
                             longer timeout"
                        ),
                    ));
                }
                Gate::Backoff { until } => {
                    let left = until.saturating_duration_since(now);
                    keep = self.changed.wait_timeout(keep, left).unwrap_or_else(PoisonError::into_inner).0;
                }
                Gate::Open { until } => {
                    let window = restarts.policy().window;
                    let count = restarts.restarts_in_window(now);
                    let last = keep.last_end.clone().unwrap_or(error);
                    return Err(PeerError::restart_limit(&last, count, window, until.saturating_duration_since(now)));
                }
                Gate::Running | Gate::Start => {
                    let event = self.restart(&mut keep, now);
                    let started = match &event {
                        Some(SupervisionEvent::RestartFailed { error }) => Err(error.clone()),
                        _ => Ok(Arc::clone(&keep.current)),
                    };
                    drop(keep);
                    self.emit(event);
                    return started;
                }
            }
        }
    }

    /// Starts the next generation in place of the dead current one, which is closed on a
    /// thread of its own.
    fn restart(&self, keep: &mut Keep, now: Instant) -> Option<SupervisionEvent> {
        keep.retiring.retain(|handle| !handle.is_finished());
        match (keep.start)() {
            Ok(fresh) => {
                fresh.set_keeper_from(&keep.current);
                // Ids go on from the dead child's: a request's id is unique in the peer's life.
                let next_id = keep.current.lock().next_id;
                fresh.lock().next_id = next_id;
                let dead = std::mem::replace(&mut keep.current, fresh);
                keep.reported = false;
                let restarts_in_window = keep.restarts.as_mut().map_or(0, |r| {
                    r.started(now);
                    r.restarts_in_window(now)
                });
                let previous_pid = dead.pid;
                keep.retiring.push(thread::spawn(move || {
                    let _ = dead.close();
                }));
                Some(SupervisionEvent::Restarted { pid: keep.current.pid, previous_pid, restarts_in_window })
            }
            Err(error) => {
                // Another backoff before the next try; the dead child stays current.
                if let Some(restarts) = keep.restarts.as_mut() {
                    restarts.on_exit(now);
                }
                Some(SupervisionEvent::RestartFailed { error })
            }
        }
    }

    /// Closes the current generation (the shutdown sequence) and waits for the dead ones
    /// still being closed; no child starts after it. Idempotent.
    pub(super) fn close(&self) -> Result<ExitStatus, PeerError> {
        let mut keep = self.lock();
        keep.closed = true;
        // What starts children goes: with it, the last sender of the unsolicited queue but
        // the live children's readers.
        keep.start = Box::new(|| Err(PeerError::new(ErrorCode::Closed, "the peer is closed")));
        let current = Arc::clone(&keep.current);
        let retiring = std::mem::take(&mut keep.retiring);
        drop(keep);
        self.changed.notify_all();
        let status = current.close();
        for handle in retiring {
            let _ = handle.join();
        }
        status
    }
}

/// Tells the restart state that the current generation died (once per generation).
fn report(keep: &mut Keep, error: PeerError, now: Instant) -> Option<SupervisionEvent> {
    let pid = keep.current.pid;
    keep.reported = true;
    let next = match keep.restarts.as_mut() {
        Some(restarts) => restarts.on_exit(now),
        None => Gate::Running,
    };
    keep.last_end = Some(error.clone());
    Some(SupervisionEvent::ChildEnded { pid, error, next })
}

/// The hang watchdog of one generation ([`super::PeerOptions::hang`]): while requests are
/// pending and nothing at all has been read from the child for `hang`, the child is declared
/// hung: its pending requests fail, and it is stopped with the shutdown sequence.
pub(super) fn watch_for_hang(shared: &Shared, hang: Duration) {
    // Checked often enough to act within about an eighth of `hang` of it passing.
    let tick = (hang / 8).clamp(Duration::from_millis(2), Duration::from_millis(100));
    loop {
        thread::sleep(tick);
        let mut state = shared.lock();
        if state.closed || state.ended.is_some() {
            return;
        }
        let Some(busy_since) = state.busy_since.filter(|_| !state.pending.is_empty()) else { continue };
        let quiet_from = busy_since.max(shared.last_heard());
        let now = Instant::now();
        let quiet = now.saturating_duration_since(quiet_from);
        if quiet < hang {
            continue;
        }
        let error = PeerError::hung(
            &shared.command,
            shared.pid,
            quiet,
            state.pending.len(),
            shared.tail.text(),
            shared.options.restarting,
        );
        state.fail_all(&error);
        state.drop_outbox();
        state.ended = Some(error.clone());
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
