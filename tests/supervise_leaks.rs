//! A restart storm leaks nothing: a test binary of its own, so that this process's threads
//! and file descriptors are this test's alone while it counts them.
#![cfg(target_os = "linux")]
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rust_ts_ipc::supervise::RestartPolicy;
use rust_ts_ipc::{ErrorCode, Peer, PeerOptions, StderrMode, SupervisionCallback, SupervisionEvent};
use support::{group_is_dead, is_reaped, PATIENCE};

/// Held by each test while it runs: the counts are this process's, so its tests take turns.
static SERIAL: Mutex<()> = Mutex::new(());

fn count(dir: &str) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

/// This process's (threads, open descriptors), once they equal `expected` (or, with `None`,
/// once they have not changed for 200 ms), or `PATIENCE` passes: threads of closed children
/// end on their own, just after `close`.
fn settled_counts(expected: Option<(usize, usize)>) -> (usize, usize) {
    let start = Instant::now();
    let mut last = (0, 0);
    let mut same = 0;
    loop {
        let now = (count("/proc/self/task"), count("/proc/self/fd"));
        same = if now == last { same + 1 } else { 0 };
        last = now;
        if expected.map_or(same >= 10, |e| e == now) || start.elapsed() > PATIENCE {
            return now;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_child_that_exits_at_once_every_time_leaks_no_thread_descriptor_or_process_over_200_restarts() {
    const RESTARTS: usize = 200;
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let pids = Arc::new(Mutex::new(Vec::new()));
    let to = Arc::clone(&pids);
    let on_supervision = SupervisionCallback::new(move |event| {
        if let SupervisionEvent::Restarted { pid, .. } = event {
            to.lock().unwrap().push(*pid);
        }
    });
    let policy = RestartPolicy {
        base: Duration::from_millis(1),
        cap: Duration::from_millis(2),
        max_restarts: 10_000,
        window: Duration::from_secs(600),
    };
    let options = || PeerOptions {
        stderr: StderrMode::Discard,
        hang: Some(Duration::from_secs(60)),
        restart: Some(policy),
        ..PeerOptions::default()
    };
    let make = || {
        let mut command = Command::new("sh");
        command.args(["-c", "echo dying >&2; exit 1"]);
        command
    };
    // One peer first, so that whatever the process sets up once is counted in the baseline.
    let warm = Peer::spawn_with(make, options()).unwrap();
    let warm_pid = warm.pid();
    let _ = warm.request("q", "x");
    warm.close().unwrap();
    assert!(is_reaped(i32::try_from(warm_pid).unwrap()));
    let before = settled_counts(None);

    let peer = Peer::spawn_with(make, PeerOptions { on_supervision: Some(on_supervision), ..options() }).unwrap();
    let first = peer.pid();
    let mut codes = std::collections::HashMap::new();
    while pids.lock().unwrap().len() < RESTARTS {
        let e = peer.request("q", "x").unwrap_err();
        *codes.entry(e.code()).or_insert(0) += 1;
    }
    // Only deaths: never a caller left waiting past its timeout, never a restart refused.
    println!("{RESTARTS} restarts: the requests failed {codes:?}; (threads, descriptors) {before:?} before");
    assert!(codes.keys().all(|&code| code == ErrorCode::PeerExited), "{codes:?}");
    let status = peer.close().unwrap();
    assert_eq!(status.code(), Some(1));
    drop(peer);
    let after = settled_counts(Some(before));
    assert_eq!(after, before, "(threads, descriptors) before the storm and after close");
    let mut all = vec![first];
    all.extend(pids.lock().unwrap().iter().copied());
    assert_eq!(all.len(), RESTARTS + 1);
    for pid in all {
        let pid = i32::try_from(pid).unwrap();
        assert!(is_reaped(pid), "child {pid} is not reaped");
        assert!(group_is_dead(pid), "process group {pid} has members");
    }
}

/// The tokio peer's restart storm: no descriptor, task or process is left once it is closed.
#[cfg(feature = "tokio")]
#[test]
fn the_async_peer_leaks_no_task_descriptor_or_process_over_200_restarts() {
    const RESTARTS: usize = 200;
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let pids = Arc::new(Mutex::new(Vec::new()));
    let to = Arc::clone(&pids);
    let on_supervision = SupervisionCallback::new(move |event| {
        if let SupervisionEvent::Restarted { pid, .. } = event {
            to.lock().unwrap().push(*pid);
        }
    });
    let policy = RestartPolicy {
        base: Duration::from_millis(1),
        cap: Duration::from_millis(2),
        max_restarts: 10_000,
        window: Duration::from_secs(600),
    };
    let options = || PeerOptions {
        stderr: StderrMode::Discard,
        hang: Some(Duration::from_secs(60)),
        restart: Some(policy),
        ..PeerOptions::default()
    };
    let make = || {
        let mut command = Command::new("sh");
        command.args(["-c", "echo dying >&2; exit 1"]);
        command
    };
    let tasks = || runtime.metrics().num_alive_tasks();
    // One peer first, so that what the runtime and process set up once is in the baseline.
    runtime.block_on(async {
        let warm = rust_ts_ipc::tokio::Peer::spawn_with(make, options()).unwrap();
        let _ = warm.request("q", "x").await;
        warm.close().await.unwrap();
    });
    let before = (settled_counts(None).1, settle_tasks(&tasks, None));
    let (first, codes) = runtime.block_on(async {
        let peer = rust_ts_ipc::tokio::Peer::spawn_with(
            make,
            PeerOptions { on_supervision: Some(on_supervision), ..options() },
        )
        .unwrap();
        let first = peer.pid();
        let mut codes = std::collections::HashMap::new();
        while pids.lock().unwrap().len() < RESTARTS {
            let e = peer.request("q", "x").await.unwrap_err();
            *codes.entry(e.code()).or_insert(0) += 1;
        }
        // Dead children are reaped as they are replaced, not kept until close: at most the
        // current one (dead, kept unreaped for its group) and one being retired are zombies.
        let zombies = settle_zombies();
        assert!(zombies <= 2, "{zombies} unreaped children mid-storm");
        assert_eq!(peer.close().await.unwrap().code(), Some(1));
        (first, codes)
    });
    assert!(codes.keys().all(|&code| code == ErrorCode::PeerExited), "{codes:?}");
    let after = (settled_counts(None).1, settle_tasks(&tasks, Some(before.1)));
    assert_eq!(after, before, "(descriptors, runtime tasks) before the storm and after close");
    let mut all = vec![first];
    all.extend(pids.lock().unwrap().iter().copied());
    assert_eq!(all.len(), RESTARTS + 1);
    for pid in all {
        let pid = i32::try_from(pid).unwrap();
        assert!(is_reaped(pid), "child {pid} is not reaped");
        assert!(group_is_dead(pid), "process group {pid} has members");
    }
    // Its threads gone before the next test counts.
    runtime.shutdown_timeout(PATIENCE);
}

/// The runtime's live tasks once they equal `expected` (or have not changed for 200 ms).
#[cfg(feature = "tokio")]
fn settle_tasks(tasks: &dyn Fn() -> usize, expected: Option<usize>) -> usize {
    let start = Instant::now();
    let (mut last, mut same) = (usize::MAX, 0);
    loop {
        let now = tasks();
        same = if now == last { same + 1 } else { 0 };
        last = now;
        if expected.map_or(same >= 10, |e| e == now) || start.elapsed() > PATIENCE {
            return now;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// This process's unreaped (zombie) children, once at most two are left or `PATIENCE` passes.
#[cfg(feature = "tokio")]
fn settle_zombies() -> usize {
    let me = std::process::id().to_string();
    let count = || {
        let Ok(dir) = std::fs::read_dir("/proc") else { return 0 };
        dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("stat")).ok())
            .filter(|stat| {
                // `pid (comm) state ppid ...`: comm may hold spaces, so split after its ')'.
                let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
                let mut fields = rest.split_whitespace();
                fields.next() == Some("Z") && fields.next() == Some(me.as_str())
            })
            .count()
    };
    let start = Instant::now();
    loop {
        let now = count();
        if now <= 2 || start.elapsed() > PATIENCE {
            return now;
        }
        thread::sleep(Duration::from_millis(20));
    }
}
