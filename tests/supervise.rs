//! `Peer` supervision against real processes: children that crash or hang after N requests
//! (`tests/support/flaky-child.mjs`, under Node), `sh -c` children that die on their first
//! request, and the Rust `serve` binary as the healthy child that takes over.
#![cfg(target_os = "linux")]
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod support;

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock, Weak};
use std::thread;
use std::time::{Duration, Instant};

use rust_ts_ipc::supervise::{Gate, RestartPolicy};
use rust_ts_ipc::{
    Envelope, ErrorCode, Peer, PeerError, PeerOptions, StderrMode, SupervisionCallback, SupervisionEvent,
};
use support::{group_is_dead, is_reaped, skip, BIN, PATIENCE};

const MS: Duration = Duration::from_millis(1);

/// The peer under test, by the test's runtime (`on_both_runtimes!`): the thread `Peer`, or
/// the tokio one driven from the test's threads, each call blocking on a shared runtime.
/// The same test body runs against both: their supervision has the same semantics.
#[derive(Debug)]
enum AnyPeer {
    Thread(Peer),
    Tokio(rust_ts_ipc::tokio::Peer),
}

/// The runtime of the tokio peers under test.
fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap())
}

/// A request sent by [`AnyPeer::send`].
enum AnyPending {
    Thread(rust_ts_ipc::Pending),
    Tokio(rust_ts_ipc::tokio::Pending),
}

impl AnyPending {
    fn id(&self) -> u64 {
        match self {
            AnyPending::Thread(p) => p.id(),
            AnyPending::Tokio(p) => p.id(),
        }
    }

    fn wait(self) -> Result<Envelope, PeerError> {
        match self {
            AnyPending::Thread(p) => p.wait(),
            AnyPending::Tokio(p) => rt().block_on(p),
        }
    }
}

/// The unsolicited channel of an [`AnyPeer`], with the std channel's errors.
enum AnyMessages {
    Thread(rust_ts_ipc::Unsolicited),
    Tokio(Mutex<rust_ts_ipc::tokio::Unsolicited>),
}

impl AnyMessages {
    fn recv_timeout(&self, timeout: Duration) -> Result<Envelope, mpsc::RecvTimeoutError> {
        match self {
            AnyMessages::Thread(m) => m.recv_timeout(timeout),
            AnyMessages::Tokio(m) => {
                let mut m = m.lock().unwrap();
                match rt().block_on(async { tokio::time::timeout(timeout, m.recv()).await }) {
                    Ok(Some(message)) => Ok(message),
                    Ok(None) => Err(mpsc::RecvTimeoutError::Disconnected),
                    Err(_) => Err(mpsc::RecvTimeoutError::Timeout),
                }
            }
        }
    }

    fn try_recv(&self) -> Result<Envelope, mpsc::TryRecvError> {
        match self {
            AnyMessages::Thread(m) => m.try_recv(),
            AnyMessages::Tokio(m) => m.lock().unwrap().try_recv().map_err(|e| match e {
                tokio::sync::mpsc::error::TryRecvError::Empty => mpsc::TryRecvError::Empty,
                tokio::sync::mpsc::error::TryRecvError::Disconnected => mpsc::TryRecvError::Disconnected,
            }),
        }
    }

    fn try_iter(&self) -> impl Iterator<Item = Envelope> + '_ {
        std::iter::from_fn(|| self.try_recv().ok())
    }
}

impl AnyPeer {
    fn tokio() -> bool {
        support::runtime_name() == "tokio"
    }

    fn spawn(command: &mut Command, options: PeerOptions) -> Result<AnyPeer, PeerError> {
        if AnyPeer::tokio() {
            let _in = rt().enter();
            rust_ts_ipc::tokio::Peer::spawn(command, options).map(AnyPeer::Tokio)
        } else {
            Peer::spawn(command, options).map(AnyPeer::Thread)
        }
    }

    fn spawn_with(make: impl FnMut() -> Command + Send + 'static, options: PeerOptions) -> Result<AnyPeer, PeerError> {
        if AnyPeer::tokio() {
            let _in = rt().enter();
            rust_ts_ipc::tokio::Peer::spawn_with(make, options).map(AnyPeer::Tokio)
        } else {
            Peer::spawn_with(make, options).map(AnyPeer::Thread)
        }
    }

    fn pid(&self) -> u32 {
        match self {
            AnyPeer::Thread(p) => p.pid(),
            AnyPeer::Tokio(p) => p.pid(),
        }
    }

    fn stats(&self) -> rust_ts_ipc::PeerStats {
        match self {
            AnyPeer::Thread(p) => p.stats(),
            AnyPeer::Tokio(p) => p.stats(),
        }
    }

    fn request(&self, msg_type: &str, data: impl Into<rust_ts_ipc::Data>) -> Result<Envelope, PeerError> {
        match self {
            AnyPeer::Thread(p) => p.request(msg_type, data),
            AnyPeer::Tokio(p) => rt().block_on(p.request(msg_type, data)),
        }
    }

    fn request_timeout(
        &self,
        msg_type: &str,
        data: impl Into<rust_ts_ipc::Data>,
        timeout: Duration,
    ) -> Result<Envelope, PeerError> {
        match self {
            AnyPeer::Thread(p) => p.request_timeout(msg_type, data, timeout),
            AnyPeer::Tokio(p) => rt().block_on(p.request_timeout(msg_type, data, timeout)),
        }
    }

    fn send(&self, msg_type: &str, data: impl Into<rust_ts_ipc::Data>) -> Result<AnyPending, PeerError> {
        match self {
            AnyPeer::Thread(p) => p.send(msg_type, data).map(AnyPending::Thread),
            AnyPeer::Tokio(p) => rt().block_on(p.send(msg_type, data)).map(AnyPending::Tokio),
        }
    }

    fn notify(&self, msg_type: &str, data: impl Into<rust_ts_ipc::Data>) -> Result<(), PeerError> {
        match self {
            AnyPeer::Thread(p) => p.notify(msg_type, data),
            AnyPeer::Tokio(p) => rt().block_on(p.notify(msg_type, data)),
        }
    }

    fn take_messages(&self) -> Option<AnyMessages> {
        match self {
            AnyPeer::Thread(p) => p.take_messages().map(AnyMessages::Thread),
            AnyPeer::Tokio(p) => p.take_messages().map(|m| AnyMessages::Tokio(Mutex::new(m))),
        }
    }

    fn close(&self) -> Result<std::process::ExitStatus, PeerError> {
        match self {
            AnyPeer::Thread(p) => p.close(),
            AnyPeer::Tokio(p) => rt().block_on(p.close()),
        }
    }
}

impl Drop for AnyPeer {
    /// The tokio peer's drop closes it in a task; here, as the thread peer's, it is waited for.
    fn drop(&mut self) {
        if let AnyPeer::Tokio(p) = self {
            let _ = rt().block_on(p.close());
        }
    }
}

fn options() -> PeerOptions {
    PeerOptions { stderr: StderrMode::Discard, ..PeerOptions::default() }
}

fn policy(max_restarts: u32, window: Duration) -> RestartPolicy {
    RestartPolicy { base: MS, cap: 2 * MS, max_restarts, window }
}

fn flaky_child() -> Option<PathBuf> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/flaky-child.mjs");
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => Some(script),
        _ if std::env::var_os("RUST_TS_IPC_REQUIRE_NODE").is_some() => panic!("`node` is not on PATH"),
        _ => {
            skip("`node` is not on PATH");
            None
        }
    }
}

/// What the supervision reported, in order, and a callback that records it.
fn recorder() -> (Arc<Mutex<Vec<SupervisionEvent>>>, SupervisionCallback) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let to = Arc::clone(&events);
    (events, SupervisionCallback::new(move |event| to.lock().unwrap().push(event.clone())))
}

/// Every pid the peer ran: its first child's and each restart's.
fn pids(first: u32, events: &Mutex<Vec<SupervisionEvent>>) -> Vec<u32> {
    let mut pids = vec![first];
    pids.extend(events.lock().unwrap().iter().filter_map(|e| match e {
        SupervisionEvent::Restarted { pid, .. } => Some(*pid),
        _ => None,
    }));
    pids
}

fn assert_all_gone(pids: &[u32]) {
    for &pid in pids {
        let pid = i32::try_from(pid).unwrap();
        assert!(is_reaped(pid), "child {pid} is still there");
        assert!(group_is_dead(pid), "process group {pid} still has members");
    }
}

/// `sh` children, made in turn: each `make()` gives the next script, the last one again.
fn scripts(list: &[&str], made: Arc<AtomicUsize>) -> impl FnMut() -> Command + Send + 'static {
    let list: Vec<String> = list.iter().map(|&s| s.to_owned()).collect();
    move || {
        let n = made.fetch_add(1, Ordering::SeqCst);
        let mut command = Command::new("sh");
        command.args(["-c", &list[n.min(list.len() - 1)]]);
        command
    }
}

/// The events reported so far, once there are `n` (a death is reported on the dead child's
/// thread, just after its requests failed).
fn wait_for_events(events: &Mutex<Vec<SupervisionEvent>>, n: usize) -> Vec<SupervisionEvent> {
    let start = Instant::now();
    loop {
        let now = events.lock().unwrap().clone();
        if now.len() >= n || start.elapsed() > PATIENCE {
            return now;
        }
        thread::sleep(10 * MS);
    }
}

#[derive(Debug, Default)]
struct Tally {
    replies: AtomicU64,
    peer_exited: AtomicU64,
    timeouts: AtomicU64,
}

/// 10 000 requests, 64 in flight, against a child that fails after every `n` answers: each
/// request gets its own reply or fails PEER_EXITED or TIMEOUT, none waits past its timeout.
fn run_load(mode: &str, n: u32, hang: Option<Duration>) {
    const REQUESTS: u64 = 10_000;
    const IN_FLIGHT: usize = 64;
    let Some(script) = flaky_child() else { return };
    let timeout = Duration::from_secs(10);
    let (events, on_supervision) = recorder();
    let mode_arg = mode.to_owned();
    let make = move || {
        let mut command = Command::new("node");
        command.arg(&script).args([mode_arg.as_str(), &n.to_string()]);
        command
    };
    let options = PeerOptions {
        restart: Some(RestartPolicy { base: MS, cap: 20 * MS, max_restarts: 10_000, window: Duration::from_secs(60) }),
        hang,
        on_supervision: Some(on_supervision),
        timeout,
        grace: Duration::from_millis(300),
        ..options()
    };
    let peer = Arc::new(AnyPeer::spawn_with(make, options).unwrap());
    let first_pid = peer.pid();
    let next = Arc::new(AtomicU64::new(0));
    let tally = Arc::new(Tally::default());
    let slowest = Arc::new(Mutex::new(Duration::ZERO));
    let started = Instant::now();
    let workers: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (peer, next, tally, slowest) =
                (Arc::clone(&peer), Arc::clone(&next), Arc::clone(&tally), Arc::clone(&slowest));
            thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= REQUESTS {
                    return;
                }
                let sent = Instant::now();
                let outcome = peer.request("echo", i.to_string());
                let took = sent.elapsed();
                {
                    let mut slowest = slowest.lock().unwrap();
                    *slowest = (*slowest).max(took);
                }
                // Not a performance assertion: a request must not outlive its timeout (by
                // more than a generous margin for a loaded machine).
                assert!(took < timeout + Duration::from_secs(5), "request {i} took {took:?}, timeout {timeout:?}");
                match outcome {
                    Ok(reply) => {
                        assert_eq!(
                            (reply.msg_type.as_str(), reply.data.as_str()),
                            ("echo", Some(i.to_string().as_str()))
                        );
                        tally.replies.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) if e.code() == ErrorCode::PeerExited => {
                        if hang.is_some() {
                            assert!(e.message().contains("hung"), "{e}");
                        } else {
                            assert_eq!(e.exit_status().and_then(|s| s.code()), Some(7), "{e}");
                            assert!(e.stderr_tail().unwrap().contains(&format!("crash after {n} answers")), "{e}");
                        }
                        tally.peer_exited.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) if e.code() == ErrorCode::Timeout => {
                        tally.timeouts.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => panic!("request {i}: unexpected {:?}: {e}", e.code()),
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let took = started.elapsed();
    let stats = peer.stats();
    let ran = pids(first_pid, &events);
    let restarts = ran.len() - 1;
    peer.close().unwrap();
    assert_all_gone(&ran);
    let (replies, exited, timeouts) = (
        tally.replies.load(Ordering::Relaxed),
        tally.peer_exited.load(Ordering::Relaxed),
        tally.timeouts.load(Ordering::Relaxed),
    );
    println!(
        "{mode} after {n}: {REQUESTS} requests, {IN_FLIGHT} in flight: {replies} replies, {exited} PEER_EXITED, \
         {timeouts} TIMEOUT; {restarts} restarts; slowest request {:?}; {took:?} in all",
        slowest.lock().unwrap()
    );
    // None lost: every request is counted once.
    assert_eq!(replies + exited + timeouts, REQUESTS);
    assert_eq!(stats.replies, replies);
    // Each child answered `n`, then failed: at least one restart per `n` replies but the last.
    assert!(restarts as u64 >= replies / u64::from(n), "{restarts} restarts for {replies} replies");
    assert!(exited >= 1);
    let ended = events.lock().unwrap().iter().filter(|e| matches!(e, SupervisionEvent::ChildEnded { .. })).count();
    assert!(ended >= restarts, "{ended} deaths reported for {restarts} restarts");
}

on_both_runtimes! {
fn a_child_crashing_after_every_n_requests_loses_no_request_and_leaves_no_process() {
    run_load("crash", 400, None);
}
}

on_both_runtimes! {
fn a_child_hanging_after_every_n_requests_is_stopped_and_replaced_and_loses_no_request() {
    run_load("hang", 400, Some(Duration::from_millis(300)));
}
}

on_both_runtimes! {
fn more_restarts_than_allowed_in_the_window_fail_restart_limit_with_the_last_exit() {
    let made = Arc::new(AtomicUsize::new(0));
    let make = scripts(&["read l; echo 'boom 1' >&2; exit 3", "read l; echo 'boom 2' >&2; exit 4"], Arc::clone(&made));
    let (events, on_supervision) = recorder();
    let options = PeerOptions {
        restart: Some(policy(2, Duration::from_secs(600))),
        on_supervision: Some(on_supervision),
        ..options()
    };
    let peer = AnyPeer::spawn_with(make, options).unwrap();
    let first_pid = peer.pid();
    for want in [3, 4, 4] {
        let e = peer.request("q", "x").unwrap_err();
        assert_eq!(e.code(), ErrorCode::PeerExited, "{e}");
        assert_eq!(e.exit_status().and_then(|s| s.code()), Some(want));
        assert!(e.message().contains("the next request starts a fresh child after a backoff"), "{e}");
    }
    // Two restarts within the window: a third is refused.
    let e = peer.request("q", "x").unwrap_err();
    assert_eq!(e.code(), ErrorCode::RestartLimit);
    assert_eq!(e.code().as_str(), "RESTART_LIMIT");
    assert_eq!(e.exit_status().and_then(|s| s.code()), Some(4));
    assert_eq!(e.stderr_tail(), Some("boom 2\n"));
    let text = e.to_string();
    assert!(
        text.starts_with("the child was restarted 2 time(s) within 600000 ms, the most PeerOptions::restart allows"),
        "{text}"
    );
    assert!(text.contains("exited with exit status: 4"), "{text}");
    // Refused at once and again, starting nothing.
    assert_eq!(peer.notify("n", "x").unwrap_err().code(), ErrorCode::RestartLimit);
    assert_eq!(made.load(Ordering::SeqCst), 3);
    let ran = pids(first_pid, &events);
    assert_eq!(ran.len(), 3);
    peer.close().unwrap();
    assert_all_gone(&ran);
}
}

on_both_runtimes! {
fn once_the_window_passes_the_next_request_starts_a_fresh_child() {
    let made = Arc::new(AtomicUsize::new(0));
    let crash = "read l; exit 3";
    let serve = format!("exec {BIN} serve --exit-after 0");
    let list = [crash, crash, serve.as_str()];
    let window = Duration::from_millis(800);
    let options = PeerOptions { restart: Some(policy(1, window)), ..options() };
    let peer = AnyPeer::spawn_with(scripts(&list, Arc::clone(&made)), options).unwrap();
    assert_eq!(peer.request("q", "x").unwrap_err().code(), ErrorCode::PeerExited);
    let restarted = Instant::now();
    assert_eq!(peer.request("q", "x").unwrap_err().code(), ErrorCode::PeerExited);
    assert_eq!(peer.request("q", "x").unwrap_err().code(), ErrorCode::RestartLimit);
    thread::sleep(window.saturating_sub(restarted.elapsed()) + 50 * MS);
    let reply = peer.request("data", "again").unwrap();
    // Ids go on across children: 1 and 2 went to the dead ones.
    assert_eq!(reply, Envelope::new("ack", "Acknowledged: again").with_id(3));
    assert_eq!(made.load(Ordering::SeqCst), 3);
    let pid = i32::try_from(peer.pid()).unwrap();
    assert_eq!(peer.close().unwrap().code(), Some(0));
    assert!(is_reaped(pid));
}
}

on_both_runtimes! {
fn close_during_the_backoff_leaves_no_child_and_starts_none() {
    let made = Arc::new(AtomicUsize::new(0));
    let long = Duration::from_secs(30);
    let options = PeerOptions {
        restart: Some(RestartPolicy { base: long, cap: long, max_restarts: 5, window: Duration::from_secs(60) }),
        timeout: Duration::from_secs(60),
        ..options()
    };
    let peer = Arc::new(AnyPeer::spawn_with(scripts(&["read l; exit 3"], Arc::clone(&made)), options).unwrap());
    let pid = i32::try_from(peer.pid()).unwrap();
    assert_eq!(peer.request("q", "x").unwrap_err().code(), ErrorCode::PeerExited);
    // This one waits out the 15..30 s backoff (within its 60 s timeout)...
    let waiter = {
        let peer = Arc::clone(&peer);
        thread::spawn(move || {
            let sent = Instant::now();
            (peer.request("q", "y"), sent.elapsed())
        })
    };
    thread::sleep(200 * MS);
    // ... until the peer is closed.
    let closed = Instant::now();
    assert_eq!(peer.close().unwrap().code(), Some(3));
    let (outcome, _) = waiter.join().unwrap();
    let e = outcome.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Closed, "{e}");
    assert!(closed.elapsed() < Duration::from_secs(10), "close took {:?}", closed.elapsed());
    assert_eq!(made.load(Ordering::SeqCst), 1);
    assert!(is_reaped(pid));
    // And nothing starts after.
    assert_eq!(peer.request("q", "z").unwrap_err().code(), ErrorCode::Closed);
    drop(peer);
    assert_eq!(made.load(Ordering::SeqCst), 1);
}
}

on_both_runtimes! {
fn a_request_whose_deadline_falls_inside_the_backoff_times_out_at_once() {
    let long = Duration::from_secs(30);
    let options = PeerOptions {
        restart: Some(RestartPolicy { base: long, cap: long, max_restarts: 5, window: Duration::from_secs(60) }),
        ..options()
    };
    let peer = AnyPeer::spawn_with(scripts(&["read l; exit 3"], Arc::new(AtomicUsize::new(0))), options).unwrap();
    assert_eq!(peer.request("q", "x").unwrap_err().code(), ErrorCode::PeerExited);
    let sent = Instant::now();
    let e = peer.request_timeout("q", "y", Duration::from_secs(1)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Timeout);
    assert!(e.message().starts_with("`q` was not sent: the child died and its restart waits "), "{e}");
    assert!(sent.elapsed() < Duration::from_secs(1), "{:?}", sent.elapsed());
    assert_eq!(peer.stats().timeouts, 1);
}
}

on_both_runtimes! {
fn each_death_and_restart_is_reported_with_the_pids() {
    let (events, on_supervision) = recorder();
    let made = Arc::new(AtomicUsize::new(0));
    let serve = format!("exec {BIN} serve --exit-after 0");
    let list = ["read l; echo bye >&2; exit 9", serve.as_str()];
    let options = PeerOptions {
        restart: Some(policy(3, Duration::from_secs(60))),
        on_supervision: Some(on_supervision),
        ..options()
    };
    let peer = AnyPeer::spawn_with(scripts(&list, made), options).unwrap();
    let first = peer.pid();
    assert_eq!(peer.request("q", "x").unwrap_err().code(), ErrorCode::PeerExited);
    assert_eq!(peer.request("data", "a").unwrap().data.as_str(), Some("Acknowledged: a"));
    let second = peer.pid();
    assert_ne!(first, second);
    let events = wait_for_events(&events, 2);
    assert_eq!(events.len(), 2, "{events:?}");
    match &events[0] {
        SupervisionEvent::ChildEnded { pid, error, next: Gate::Backoff { .. } } => {
            assert_eq!(*pid, first);
            assert_eq!(error.code(), ErrorCode::PeerExited);
            assert_eq!(error.exit_status().and_then(|s| s.code()), Some(9));
            assert_eq!(error.stderr_tail(), Some("bye\n"));
        }
        other => panic!("expected ChildEnded with a backoff, got {other:?}"),
    }
    match &events[1] {
        SupervisionEvent::Restarted { pid, previous_pid, restarts_in_window } => {
            assert_eq!((*pid, *previous_pid, *restarts_in_window), (second, first, 1));
        }
        other => panic!("expected Restarted, got {other:?}"),
    }
    peer.close().unwrap();
    assert_all_gone(&[first, second]);
}
}

on_both_runtimes! {
fn a_failed_restart_is_reported_and_retried_after_a_backoff() {
    let (events, on_supervision) = recorder();
    let made = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&made);
    let make = move || {
        let n = count.fetch_add(1, Ordering::SeqCst);
        let mut command = Command::new(if n == 1 { "/nonexistent/child" } else { "sh" });
        command.args(["-c", "read l; exit 3"]);
        command
    };
    let options = PeerOptions {
        restart: Some(policy(5, Duration::from_secs(60))),
        on_supervision: Some(on_supervision),
        ..options()
    };
    let peer = AnyPeer::spawn_with(make, options).unwrap();
    assert_eq!(peer.request("q", "x").unwrap_err().code(), ErrorCode::PeerExited);
    let e = peer.request("q", "x").unwrap_err();
    assert_eq!(e.code(), ErrorCode::Spawn, "{e}");
    assert!(e.message().contains("/nonexistent/child"), "{e}");
    // The next try starts the third `Command`, which runs (and dies on its request).
    assert_eq!(peer.request("q", "x").unwrap_err().code(), ErrorCode::PeerExited);
    assert_eq!(made.load(Ordering::SeqCst), 3);
    let kinds: Vec<&str> = wait_for_events(&events, 4)
        .iter()
        .map(|e| match e {
            SupervisionEvent::ChildEnded { .. } => "ended",
            SupervisionEvent::Restarted { .. } => "restarted",
            SupervisionEvent::RestartFailed { .. } => "failed",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["ended", "failed", "restarted", "ended"]);
}
}

on_both_runtimes! {
fn hang_is_off_by_default_a_silent_child_only_times_out_its_requests() {
    let options = options();
    assert_eq!((options.hang, options.restart), (None, None));
    let peer = AnyPeer::spawn(Command::new("sh").args(["-c", "while read l; do :; done"]), options).unwrap();
    let pid = i32::try_from(peer.pid()).unwrap();
    for _ in 0..2 {
        let e = peer.request_timeout("q", "x", 300 * MS).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Timeout, "{e}");
    }
    thread::sleep(300 * MS);
    // Still running, still taking requests.
    assert!(support::group_members(pid).contains(&pid));
    assert_eq!(peer.request_timeout("q", "x", 100 * MS).unwrap_err().code(), ErrorCode::Timeout);
    assert_eq!(peer.stats().timeouts, 3);
    peer.close().unwrap();
    assert!(is_reaped(pid));
}
}

on_both_runtimes! {
fn a_hung_child_without_restart_fails_its_requests_peer_exited_naming_the_hang_and_is_stopped() {
    let options = PeerOptions { hang: Some(200 * MS), grace: 200 * MS, ..options() };
    // Ignores SIGTERM too: the shutdown sequence must go on to SIGKILL.
    let script = "trap '' TERM; echo started >&2; while :; do sleep 1; done";
    let peer = AnyPeer::spawn(Command::new("sh").args(["-c", script]), options).unwrap();
    let pid = i32::try_from(peer.pid()).unwrap();
    let sent = Instant::now();
    let e = peer.request("q", "x").unwrap_err();
    assert_eq!(e.code(), ErrorCode::PeerExited, "{e}");
    assert!(sent.elapsed() >= 200 * MS && sent.elapsed() < PATIENCE, "{:?}", sent.elapsed());
    let text = e.to_string();
    assert!(text.starts_with(&format!("child `sh -c {script}` (pid {pid}) hung: nothing came from it for ")), "{text}");
    assert!(text.contains("while 1 request(s) awaited replies (PeerOptions::hang)"), "{text}");
    assert!(text.contains("close this Peer and start a new one"), "{text}");
    assert_eq!(e.stderr_tail(), Some("started\n"));
    // The child is being stopped without waiting for close: TERM ignored, then KILL.
    assert!(group_is_dead(pid));
    // Later requests fail the same way, at once.
    assert_eq!(peer.request("q", "y").unwrap_err().code(), ErrorCode::PeerExited);
    let status = peer.close().unwrap();
    assert_eq!(status.signal(), Some(9));
    assert!(is_reaped(pid));
}
}

on_both_runtimes! {
fn a_slow_reply_within_the_hang_limit_is_not_a_hang_and_a_timeout_fails_only_its_request() {
    // Answers requests 1 and 2 each 300 ms after it reads them, one at a time.
    let reply = r#"sleep 0.3; printf '{"msg_type":"r","data":"ok","id":%s}\n'"#;
    let script = format!("read l; {reply} 1; read l; {reply} 2; exec cat >/dev/null");
    let (events, on_supervision) = recorder();
    let options = PeerOptions {
        hang: Some(Duration::from_secs(5)),
        restart: Some(policy(3, Duration::from_secs(60))),
        on_supervision: Some(on_supervision),
        ..options()
    };
    let peer = AnyPeer::spawn_with(scripts(&[&script], Arc::default()), options).unwrap();
    let pid = peer.pid();
    let e = peer.request_timeout("q", "x", 50 * MS).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Timeout);
    assert_eq!(peer.request("q", "y").unwrap().data.as_str(), Some("ok"));
    assert_eq!(peer.pid(), pid);
    assert!(events.lock().unwrap().is_empty());
    assert_eq!(peer.stats().late_replies_dropped, 1);
}
}

on_both_runtimes! {
fn restart_without_a_way_to_remake_the_command_is_refused() {
    let options = PeerOptions { restart: Some(RestartPolicy::default()), ..options() };
    let e = AnyPeer::spawn(&mut Command::new(BIN), options).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    assert!(e.message().starts_with("PeerOptions::restart needs a way to start the child again"), "{e}");
}
}

on_both_runtimes! {
fn bad_supervision_options_are_refused_naming_the_value() {
    let bad = |options: PeerOptions| AnyPeer::spawn_with(|| Command::new(BIN), options).unwrap_err();
    let e = bad(PeerOptions {
        restart: Some(RestartPolicy { base: Duration::ZERO, ..RestartPolicy::default() }),
        ..options()
    });
    assert_eq!(
        (e.code(), e.message()),
        (ErrorCode::InvalidArgument, "PeerOptions::restart: RestartPolicy::base must be at least 1 ms (got 0ns)")
    );
    let e = bad(PeerOptions { hang: Some(Duration::ZERO), ..options() });
    assert_eq!(e.code(), ErrorCode::InvalidArgument);
    assert!(e.message().starts_with("PeerOptions::hang must be more than 0"), "{e}");
}
}

on_both_runtimes! {
fn unsolicited_messages_of_every_child_come_through_one_channel_that_ends_at_close() {
    let first = r#"printf '{"msg_type":"note","data":"one"}\n'; read l; exit 3"#;
    let second = r#"printf '{"msg_type":"note","data":"two"}\n'; while read l; do :; done"#;
    let options = PeerOptions { restart: Some(policy(3, Duration::from_secs(60))), ..options() };
    let peer = AnyPeer::spawn_with(scripts(&[first, second], Arc::default()), options).unwrap();
    let messages = peer.take_messages().unwrap();
    assert_eq!(messages.recv_timeout(PATIENCE).unwrap(), Envelope::new("note", "one"));
    assert_eq!(peer.request("q", "x").unwrap_err().code(), ErrorCode::PeerExited);
    // The restart: the second child answers nothing, but says hello.
    assert_eq!(peer.request_timeout("q", "y", 200 * MS).unwrap_err().code(), ErrorCode::Timeout);
    assert_eq!(messages.recv_timeout(PATIENCE).unwrap(), Envelope::new("note", "two"));
    // The first child's stdout has closed, and still the channel goes on: it ends with the peer.
    assert_eq!(messages.try_recv(), Err(std::sync::mpsc::TryRecvError::Empty));
    peer.close().unwrap();
    assert_eq!(messages.recv_timeout(PATIENCE), Err(std::sync::mpsc::RecvTimeoutError::Disconnected));
    assert_eq!(peer.stats().unsolicited, 2);
}
}

#[test]
fn the_supervision_callback_may_close_the_peer_on_the_dead_childs_own_thread() {
    // A death is reported on the dead child's exit watcher. Closing the peer there reaps that
    // child, which first joins its exit watcher: the thread joined itself ("failed to join
    // thread: Resource deadlock avoided", a panic in the callback) and the close never returned.
    let slot: Arc<OnceLock<Weak<Peer>>> = Arc::new(OnceLock::new());
    let (tx, rx) = mpsc::channel();
    let from = Arc::clone(&slot);
    let on_supervision = SupervisionCallback::new(move |event| {
        if let (SupervisionEvent::ChildEnded { .. }, Some(peer)) = (event, from.get().and_then(Weak::upgrade)) {
            let _ = tx.send(peer.close().map(|status| status.code()));
        }
    });
    let options = PeerOptions { on_supervision: Some(on_supervision), ..options() };
    let peer = Arc::new(Peer::spawn(Command::new("sh").args(["-c", "read l; exit 3"]), options).unwrap());
    let pid = peer.pid();
    slot.set(Arc::downgrade(&peer)).unwrap();
    assert_eq!(peer.request("q", "x").unwrap_err().code(), ErrorCode::PeerExited);
    let closed = rx.recv_timeout(PATIENCE).expect("the callback's close() returned");
    assert_eq!(closed.unwrap(), Some(3));
    assert_eq!(peer.request("q", "x").unwrap_err().code(), ErrorCode::Closed);
    assert_eq!(peer.close().unwrap().code(), Some(3));
    assert_all_gone(&[pid]);
}

#[test]
fn the_supervision_callback_may_drop_the_last_handle_to_the_peer() {
    // As above, through Drop: the callback holds the last `Arc<Peer>` and lets it go.
    let slot: Arc<Mutex<Option<Arc<Peer>>>> = Arc::new(Mutex::new(None));
    let (tx, rx) = mpsc::channel();
    let from = Arc::clone(&slot);
    let on_supervision = SupervisionCallback::new(move |event| {
        if let SupervisionEvent::ChildEnded { .. } = event {
            let peer = from.lock().unwrap().take();
            drop(peer);
            let _ = tx.send(());
        }
    });
    let options = PeerOptions { on_supervision: Some(on_supervision), ..options() };
    let peer = Arc::new(Peer::spawn(Command::new("sh").args(["-c", "read l; exit 3"]), options).unwrap());
    let pid = peer.pid();
    let weak = Arc::downgrade(&peer);
    *slot.lock().unwrap() = Some(peer);
    let pending = weak.upgrade().unwrap().send("q", "x").unwrap();
    assert_eq!(pending.wait().unwrap_err().code(), ErrorCode::PeerExited);
    rx.recv_timeout(PATIENCE).expect("the callback dropped the peer and returned");
    assert!(weak.upgrade().is_none());
    assert_all_gone(&[pid]);
}

on_both_runtimes! {
fn a_panicking_supervision_callback_does_not_keep_a_hung_child_running() {
    // The hang watchdog reports the hang, then stops the child: a panic in the report ended
    // the watchdog before the stop, and the hung child ran on until close().
    let on_supervision = SupervisionCallback::new(|_| panic!("a callback bug"));
    let options =
        PeerOptions { hang: Some(200 * MS), grace: 200 * MS, on_supervision: Some(on_supervision), ..options() };
    let peer = AnyPeer::spawn(Command::new("sh").args(["-c", "while :; do sleep 1; done"]), options).unwrap();
    let pid = i32::try_from(peer.pid()).unwrap();
    assert_eq!(peer.request("q", "x").unwrap_err().code(), ErrorCode::PeerExited);
    assert!(group_is_dead(pid), "the hung child is still running");
    assert_eq!(peer.close().unwrap().signal(), Some(15));
    assert!(is_reaped(pid));
}
}

on_both_runtimes! {
fn a_panicking_supervision_callback_does_not_fail_the_request_that_restarts_the_child() {
    // `Restarted` is reported on the thread whose request started the fresh child: a panic
    // there unwound out of that caller's `request`.
    let made = Arc::new(AtomicUsize::new(0));
    let serve = format!("exec {BIN} serve --exit-after 0");
    let list = ["read l; exit 9", serve.as_str()];
    let on_supervision = SupervisionCallback::new(|_| panic!("a callback bug"));
    let options = PeerOptions {
        restart: Some(policy(3, Duration::from_secs(60))),
        on_supervision: Some(on_supervision),
        ..options()
    };
    let peer = AnyPeer::spawn_with(scripts(&list, made), options).unwrap();
    let first = peer.pid();
    assert_eq!(peer.request("q", "x").unwrap_err().code(), ErrorCode::PeerExited);
    let answered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| peer.request("data", "a")));
    let reply = answered.expect("request() did not panic").unwrap();
    assert_eq!(reply.data.as_str(), Some("Acknowledged: a"));
    let second = peer.pid();
    peer.close().unwrap();
    assert_all_gone(&[first, second]);
}
}

on_both_runtimes! {
fn what_a_dead_child_left_running_in_its_group_is_stopped_once_its_death_is_seen() {
    // The dead child stays current (unreaped) until a restart replaces it or the peer is
    // closed: without restarts, or while the circuit is open (`max_restarts: 0` opens it
    // for the whole window), what it had started ran on until then.
    let script = "sleep 600 & read l; exit 3";
    let supervised = PeerOptions { restart: Some(policy(0, Duration::from_secs(600))), grace: 200 * MS, ..options() };
    let make = move || {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        command
    };
    for peer in [
        AnyPeer::spawn(Command::new("sh").args(["-c", script]), PeerOptions { grace: 200 * MS, ..options() }).unwrap(),
        AnyPeer::spawn_with(make, supervised).unwrap(),
    ] {
        let pid = i32::try_from(peer.pid()).unwrap();
        assert_eq!(peer.request("q", "x").unwrap_err().code(), ErrorCode::PeerExited);
        let next = peer.request("q", "x").unwrap_err().code();
        assert!(matches!(next, ErrorCode::PeerExited | ErrorCode::RestartLimit), "{next:?}");
        assert!(
            group_is_dead(pid),
            "the dead child's `sleep` still runs in group {pid}: {:?}",
            support::group_members(pid)
        );
        assert_eq!(peer.close().unwrap().code(), Some(3));
        assert!(is_reaped(pid));
    }
}
}

on_both_runtimes! {
fn a_child_trickling_a_line_that_never_ends_is_not_hung_and_each_request_still_times_out() {
    // `hang` counts bytes read, not messages ("nothing at all has arrived"): a child writing
    // one endless line is alive to the watchdog; its requests are bounded by their timeouts.
    let options = PeerOptions { hang: Some(200 * MS), grace: 200 * MS, ..options() };
    let script = "while :; do printf x; sleep 0.02; done";
    let peer = AnyPeer::spawn(Command::new("sh").args(["-c", script]), options).unwrap();
    let pid = i32::try_from(peer.pid()).unwrap();
    for _ in 0..2 {
        let e = peer.request_timeout("q", "x", 600 * MS).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Timeout, "{e}");
    }
    assert!(support::group_members(pid).contains(&pid), "the trickling child was stopped as hung");
    peer.close().unwrap();
    assert!(is_reaped(pid));
}
}

on_both_runtimes! {
fn a_reply_that_comes_after_the_child_was_declared_hung_is_dropped_and_counted() {
    // Declared hung at 150 ms, its reply written at 400 ms, while the shutdown sequence still
    // waits (grace) for it to exit after its stdin closed: the request already failed, so the
    // reply is a late one, not an unsolicited message and not another request's answer.
    let options = PeerOptions { hang: Some(150 * MS), grace: Duration::from_secs(3), ..options() };
    let script = r#"read l; sleep 0.4; printf '{"msg_type":"response","data":"late","id":1}\n'; exec sleep 30"#;
    let peer = AnyPeer::spawn(Command::new("sh").args(["-c", script]), options).unwrap();
    let messages = peer.take_messages().unwrap();
    let pid = i32::try_from(peer.pid()).unwrap();
    let pending = peer.send("q", "x").unwrap();
    assert_eq!(pending.id(), 1);
    assert_eq!(pending.wait().unwrap_err().code(), ErrorCode::PeerExited);
    let start = Instant::now();
    while peer.stats().late_replies_dropped == 0 && start.elapsed() < PATIENCE {
        thread::sleep(10 * MS);
    }
    let stats = peer.stats();
    assert_eq!((stats.replies, stats.late_replies_dropped, stats.unsolicited), (0, 1, 0));
    peer.close().unwrap();
    assert!(messages.try_iter().next().is_none());
    assert!(is_reaped(pid));
}
}

on_both_runtimes! {
fn close_from_another_thread_amid_restarts_ends_every_caller_and_every_child() {
    // Eight callers against a child that dies on each first request, restarted every 1-2 ms:
    // close() lands in a backoff, a restart, a send or a wait. Every caller must come back
    // (CLOSED in the end), close() twice gives one status, and every child is reaped.
    let (events, on_supervision) = recorder();
    let options = PeerOptions {
        restart: Some(policy(100_000, Duration::from_secs(600))),
        on_supervision: Some(on_supervision),
        timeout: Duration::from_secs(5),
        grace: 200 * MS,
        ..options()
    };
    let make = || {
        let mut command = Command::new("sh");
        command.args(["-c", "read l; exit 1"]);
        command
    };
    let peer = Arc::new(AnyPeer::spawn_with(make, options).unwrap());
    let first = peer.pid();
    let (done, finished) = mpsc::channel();
    for _ in 0..8 {
        let (peer, done) = (Arc::clone(&peer), done.clone());
        thread::spawn(move || {
            let mut seen = Vec::new();
            loop {
                let code = peer.request("q", "x").unwrap_err().code();
                seen.push(code);
                if code == ErrorCode::Closed {
                    break;
                }
            }
            done.send(seen).unwrap();
        });
    }
    wait_for_events(&events, 300);
    let closer = Arc::clone(&peer);
    let status = thread::spawn(move || closer.close().unwrap()).join().unwrap();
    for _ in 0..8 {
        let seen = finished.recv_timeout(PATIENCE).expect("a caller did not come back after close()");
        println!("{} calls, the last {:?}", seen.len(), seen.last());
        let unexpected: Vec<_> =
            seen.iter().filter(|c| !matches!(c, ErrorCode::PeerExited | ErrorCode::Closed)).collect();
        assert!(unexpected.is_empty(), "{unexpected:?}");
    }
    assert_eq!(peer.close().unwrap(), status);
    assert_all_gone(&pids(first, &events));
}
}

on_both_runtimes! {
fn a_window_of_duration_max_means_never_restart_again_not_a_panic() {
    let options = PeerOptions {
        restart: Some(RestartPolicy { max_restarts: 0, window: Duration::MAX, ..RestartPolicy::default() }),
        ..options()
    };
    let make = || {
        let mut command = Command::new("sh");
        command.args(["-c", "read l; exit 4"]);
        command
    };
    let peer = AnyPeer::spawn_with(make, options).unwrap();
    let pid = peer.pid();
    assert_eq!(peer.request("q", "x").unwrap_err().code(), ErrorCode::PeerExited);
    let e = peer.request("q", "x").unwrap_err();
    assert_eq!(e.code(), ErrorCode::RestartLimit, "{e}");
    assert_eq!(e.exit_status().and_then(|s| s.code()), Some(4));
    assert_eq!(peer.close().unwrap().code(), Some(4));
    assert_all_gone(&[pid]);
}
}

on_both_runtimes! {
fn a_child_dying_while_the_writer_is_blocked_on_its_full_pipe_fails_the_request_and_is_replaced() {
    // The child never reads: a 4 MiB request fills the pipe and the writer blocks in write();
    // a grandchild holds the pipe's read end too, so the child's exit alone brings no EPIPE.
    let made = Arc::new(AtomicUsize::new(0));
    let serve = format!("exec {BIN} serve --exit-after 0");
    let list = ["exec 3<&0; sleep 600 <&3 & sleep 0.3; exit 6", serve.as_str()];
    let options = PeerOptions { restart: Some(policy(3, Duration::from_secs(60))), grace: 200 * MS, ..options() };
    let (events, on_supervision) = recorder();
    let peer = AnyPeer::spawn_with(scripts(&list, made), PeerOptions { on_supervision: Some(on_supervision), ..options })
        .unwrap();
    let first = peer.pid();
    let big = "x".repeat(4 << 20);
    let pending = peer.send("data", big.as_str()).unwrap();
    peer.notify("data", "queued behind it").unwrap();
    let e = pending.wait().unwrap_err();
    assert_eq!(e.code(), ErrorCode::PeerExited, "{e}");
    assert_eq!(e.exit_status().and_then(|s| s.code()), Some(6));
    // What it left holding the pipe is gone without waiting for the restart or close.
    assert!(group_is_dead(i32::try_from(first).unwrap()));
    assert_eq!(peer.request("data", "a").unwrap().data.as_str(), Some("Acknowledged: a"));
    peer.close().unwrap();
    assert_all_gone(&pids(first, &events));
}
}

#[test]
fn close_racing_a_supervision_callback_that_closes_too_does_not_deadlock() {
    // The callback (on the dead child's exit watcher) calls close() while another thread's
    // close() holds the child to reap it: the reap used to join the watcher thread, which
    // waited for the child's lock the reaper held.
    let slot: Arc<OnceLock<Weak<Peer>>> = Arc::new(OnceLock::new());
    let (entered, in_callback) = mpsc::channel();
    let (tx, rx) = mpsc::channel();
    let from = Arc::clone(&slot);
    let tx2 = tx.clone();
    let on_supervision = SupervisionCallback::new(move |event| {
        if let (SupervisionEvent::ChildEnded { .. }, Some(peer)) = (event, from.get().and_then(Weak::upgrade)) {
            let _ = entered.send(());
            // Let the other close() take the child first.
            thread::sleep(300 * MS);
            let _ = tx.send(("callback", peer.close().map(|status| status.code())));
        }
    });
    let options = PeerOptions { on_supervision: Some(on_supervision), ..options() };
    let peer = Arc::new(Peer::spawn(Command::new("sh").args(["-c", "read l; exit 3"]), options).unwrap());
    let pid = peer.pid();
    slot.set(Arc::downgrade(&peer)).unwrap();
    assert_eq!(peer.request("q", "x").unwrap_err().code(), ErrorCode::PeerExited);
    in_callback.recv_timeout(PATIENCE).unwrap();
    let closer = Arc::clone(&peer);
    thread::spawn(move || {
        let _ = tx2.send(("thread", closer.close().map(|status| status.code())));
    });
    for _ in 0..2 {
        let (who, closed) = rx.recv_timeout(PATIENCE).expect("a close() never returned: deadlock");
        assert_eq!(closed.unwrap(), Some(3), "{who}");
    }
    assert_all_gone(&[pid]);
}

#[test]
fn the_supervision_callback_may_close_the_peer_from_the_hang_watchdog() {
    // A hang is reported on the watchdog's thread, which then stops the child itself: a close
    // from the report must neither deadlock with that stop nor leave the child running.
    let slot: Arc<OnceLock<Weak<Peer>>> = Arc::new(OnceLock::new());
    let (tx, rx) = mpsc::channel();
    let from = Arc::clone(&slot);
    let on_supervision = SupervisionCallback::new(move |event| {
        if let (SupervisionEvent::ChildEnded { .. }, Some(peer)) = (event, from.get().and_then(Weak::upgrade)) {
            let _ = tx.send(peer.close().map(|status| status.signal()));
        }
    });
    let options = PeerOptions {
        on_supervision: Some(on_supervision),
        hang: Some(Duration::from_millis(200)),
        grace: Duration::from_millis(100),
        ..options()
    };
    let script = "trap '' TERM; sleep 60 & read l; exec sleep 60";
    let peer = Arc::new(Peer::spawn(Command::new("sh").args(["-c", script]), options).unwrap());
    let pid = peer.pid();
    slot.set(Arc::downgrade(&peer)).unwrap();
    assert_eq!(peer.request("q", "x").unwrap_err().code(), ErrorCode::PeerExited);
    let closed = rx.recv_timeout(PATIENCE).expect("the callback's close() returned");
    assert_eq!(closed.unwrap(), Some(9), "SIGTERM is ignored (also by the exec'd sleep): SIGKILL");
    assert_eq!(peer.request("q", "x").unwrap_err().code(), ErrorCode::Closed);
    assert_all_gone(&[pid]);
}

on_both_runtimes! {
fn a_backoff_of_duration_max_fails_calls_timeout_at_once_and_close_starts_no_child() {
    let made = Arc::new(AtomicUsize::new(0));
    let forever = RestartPolicy { base: Duration::MAX, cap: Duration::MAX, ..policy(3, Duration::from_secs(60)) };
    let options = PeerOptions { restart: Some(forever), timeout: 200 * MS, ..options() };
    let peer = AnyPeer::spawn_with(scripts(&["read l; exit 4"], Arc::clone(&made)), options).unwrap();
    let pid = peer.pid();
    assert_eq!(peer.request("q", "x").unwrap_err().code(), ErrorCode::PeerExited);
    let e = peer.request("q", "x").unwrap_err();
    assert_eq!(e.code(), ErrorCode::Timeout, "{e}");
    assert_eq!(peer.close().unwrap().code(), Some(4));
    assert_eq!(made.load(Ordering::SeqCst), 1);
    assert_all_gone(&[pid]);
}
}

#[test]
fn the_supervision_callback_may_close_the_peer_when_told_of_a_restart_on_the_callers_thread() {
    // A restart is reported on the thread of the call that started the fresh child, between
    // the start and the call's send: a close there stops both children, and the call fails
    // CLOSED rather than writing to a closed child.
    let slot: Arc<OnceLock<Weak<Peer>>> = Arc::new(OnceLock::new());
    let (tx, rx) = mpsc::channel();
    let from = Arc::clone(&slot);
    let on_supervision = SupervisionCallback::new(move |event| {
        if let (SupervisionEvent::Restarted { pid, .. }, Some(peer)) = (event, from.get().and_then(Weak::upgrade)) {
            let _ = tx.send((*pid, peer.close().map(|status| status.code())));
        }
    });
    let made = Arc::new(AtomicUsize::new(0));
    let options = PeerOptions {
        on_supervision: Some(on_supervision),
        restart: Some(policy(3, Duration::from_secs(60))),
        grace: 200 * MS,
        ..options()
    };
    let serve = format!("exec {BIN} serve --exit-after 0");
    let peer = Arc::new(Peer::spawn_with(scripts(&["read l; exit 3", serve.as_str()], made), options).unwrap());
    let first = peer.pid();
    slot.set(Arc::downgrade(&peer)).unwrap();
    assert_eq!(peer.request("q", "x").unwrap_err().code(), ErrorCode::PeerExited);
    let e = peer.request("data", "x").unwrap_err();
    assert_eq!(e.code(), ErrorCode::Closed, "{e}");
    let (second, closed) = rx.recv_timeout(PATIENCE).expect("the callback's close() returned");
    assert_eq!(closed.unwrap(), Some(0));
    assert_eq!(peer.close().unwrap().code(), Some(0));
    assert_all_gone(&[first, second]);
}
