//! `rust_ts_ipc::tokio::Peer` against real processes: the same children as tests/peer.rs
//! (the Rust `serve` binary, `sh -c` scripts that misbehave in one exact way each), the same
//! texts and counters, plus what only an async peer has: cancellation by dropping a future.
#![cfg(all(target_os = "linux", feature = "tokio"))]
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rust_ts_ipc::tokio::Peer;
use rust_ts_ipc::{Data, Encoding, Envelope, ErrorCode, PeerOptions, PeerStats, StderrMode};
use support::{group_is_dead, is_reaped, BIN, PATIENCE};

fn options() -> PeerOptions {
    PeerOptions { stderr: StderrMode::Discard, ..PeerOptions::default() }
}

fn serve(args: &[&str], options: PeerOptions) -> Peer {
    Peer::spawn(Command::new(BIN).arg("serve").args(args), options).unwrap()
}

fn shell(script: &str, options: PeerOptions) -> Peer {
    Peer::spawn(Command::new("sh").args(["-c", script]), options).unwrap()
}

fn reply(msg_type: &str, data: &str, id: u64) -> Envelope {
    Envelope::new(msg_type, data).with_id(id)
}

#[tokio::test]
async fn answers_requests_and_delivers_the_exit_after_the_fifth_ack_as_unsolicited() {
    let peer = serve(&[], options());
    let mut messages = peer.take_messages().unwrap();
    assert!(peer.take_messages().is_none());
    assert_eq!(peer.request("greeting", "hi").await.unwrap(), reply("response", "Hello from TypeScript!", 1));
    for i in 1..=5u64 {
        let text = format!("m{i}");
        let got = peer.request("data", text.as_str()).await.unwrap();
        assert_eq!(got, reply("ack", &format!("Acknowledged: {text}"), i + 1));
    }
    let exit = tokio::time::timeout(PATIENCE, messages.recv()).await.unwrap();
    assert_eq!(exit, Some(reply("exit", "Goodbye from TypeScript!", 6)));
    // The channel ends with the child's stdout.
    assert_eq!(tokio::time::timeout(PATIENCE, messages.recv()).await.unwrap(), None);
    assert_eq!(peer.close().await.unwrap().code(), Some(0));
    let stats = peer.stats();
    assert_eq!(stats, PeerStats { requests: 6, replies: 6, unsolicited: 1, peak_in_flight: 1, ..PeerStats::default() });
}

#[tokio::test]
async fn an_error_reply_fails_its_request_with_error_reply_and_its_text() {
    let peer = serve(&["--exit-after", "0"], options());
    let error = peer.request("nope", "x").await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::ErrorReply);
    let text = "line 1: unknown msg_type `nope`; expected greeting, data, exit or markdown";
    assert_eq!(error.to_string(), format!("the child answered request 1 with an error: {text}"));
    assert_eq!(error.reply(), Some(&reply("error", text, 1)));
    assert_eq!(peer.request("data", "a").await.unwrap(), reply("ack", "Acknowledged: a", 2));
    peer.close().await.unwrap();
}

#[tokio::test]
async fn a_child_that_exits_fails_every_pending_request_with_peer_exited_and_its_stderr() {
    let script = "read a; read b; read c; echo 'giving up' >&2; exit 3";
    let peer = shell(script, options());
    let pid = i32::try_from(peer.pid()).unwrap();
    let mut pending = Vec::new();
    for i in 0..3 {
        pending.push(peer.send("q", i.to_string()).await.unwrap());
    }
    for p in pending {
        let error = tokio::time::timeout(PATIENCE, p).await.unwrap().unwrap_err();
        assert_eq!(error.code(), ErrorCode::PeerExited);
        assert_eq!(error.exit_status().and_then(|s| s.code()), Some(3));
        assert_eq!(error.stderr_tail(), Some("giving up\n"));
        assert_eq!(
            error.to_string(),
            format!(
                "child `sh -c {script}` exited with exit status: 3 before answering: no reply can come; close \
                 this Peer and start a new one; the end of its stderr:\ngiving up"
            )
        );
    }
    assert_eq!(peer.request("q", "late").await.unwrap_err().code(), ErrorCode::PeerExited);
    assert_eq!(peer.notify("q", "late").await.unwrap_err().code(), ErrorCode::PeerExited);
    assert_eq!(peer.close().await.unwrap().code(), Some(3));
    assert!(is_reaped(pid));
}

#[tokio::test]
async fn requests_after_close_fail_closed_and_close_is_idempotent() {
    let peer = shell("exec cat >/dev/null", options());
    let pending = peer.send("q", "never answered").await.unwrap();
    assert_eq!(peer.close().await.unwrap().code(), Some(0));
    let error = pending.await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::Closed);
    assert_eq!(error.to_string(), "the peer was closed while this request was pending; no reply will be delivered");
    assert_eq!(peer.close().await.unwrap().code(), Some(0));
    let error = peer.request("q", "").await.unwrap_err();
    assert_eq!(
        (error.code(), error.to_string().as_str()),
        (ErrorCode::Closed, "cannot send `q`: the peer is closed; start a new Peer to send more")
    );
    assert_eq!(peer.notify("q", "").await.unwrap_err().code(), ErrorCode::Closed);
}

#[tokio::test]
async fn a_timed_out_request_fails_and_its_late_reply_is_dropped_and_counted() {
    let script = r#"read a; sleep 1; echo '{"msg_type":"r","data":"late","id":1}'
        read b; echo '{"msg_type":"r","data":"ok","id":2}'; exec cat >/dev/null"#;
    let peer = shell(script, options());
    let mut messages = peer.take_messages().unwrap();
    let error = peer.request_timeout("slow", "", Duration::from_millis(50)).await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::Timeout);
    assert_eq!(
        error.to_string(),
        "no reply to `slow` request 1 within 50 ms; a late reply will be dropped. If the child is only slow, raise \
         PeerOptions::timeout or use request_timeout"
    );
    assert_eq!(peer.request("q", "").await.unwrap(), reply("r", "ok", 2));
    assert!(messages.try_recv().is_err());
    let stats = peer.stats();
    assert_eq!((stats.timeouts, stats.late_replies_dropped, stats.replies, stats.unsolicited), (1, 1, 1, 0));
    peer.close().await.unwrap();
}

#[tokio::test]
async fn dropping_a_request_future_cancels_it_and_its_late_reply_is_dropped_and_counted() {
    // The child answers request 1 only after request 2 has arrived.
    let script = r#"read a; read b; printf '%s\n' '{"msg_type":"r","data":"1","id":1}' \
        '{"msg_type":"r","data":"2","id":2}'; exec cat >/dev/null"#;
    let peer = shell(script, PeerOptions { max_in_flight: 1, ..options() });
    let mut messages = peer.take_messages().unwrap();
    // The request's future is dropped at the end of the 100 ms (it was written, not answered).
    let cut = tokio::time::timeout(Duration::from_millis(100), peer.request("q", "")).await;
    assert!(cut.is_err());
    // Its slot is free at once (max_in_flight is 1), though request 1 was never answered.
    assert_eq!(peer.request("q", "").await.unwrap(), reply("r", "2", 2));
    let stats = peer.stats();
    assert_eq!((stats.late_replies_dropped, stats.replies, stats.unsolicited, stats.timeouts), (1, 1, 0, 0));
    assert!(messages.try_recv().is_err());
    peer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_requests_in_flight_from_many_tasks_each_reply_arrives_once_and_in_flight_stays_bounded() {
    const TOTAL: usize = 40_000;
    const TASKS: usize = 4;
    let peer = Arc::new(serve(&["--exit-after", "0"], PeerOptions { max_in_flight: 256, ..options() }));
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let peer = Arc::clone(&peer);
            tokio::spawn(async move {
                // Each task keeps up to 128 requests in flight: together more than the peer lets fly.
                let mut window = std::collections::VecDeque::new();
                let mut answered = 0;
                for n in 0..TOTAL / TASKS {
                    window.push_back((n, peer.send("data", format!("{t}-{n}")).await.unwrap()));
                    if window.len() == 128 {
                        let (n, pending) = window.pop_front().unwrap();
                        assert_eq!(
                            pending.await.unwrap().data.as_str(),
                            Some(format!("Acknowledged: {t}-{n}").as_str())
                        );
                        answered += 1;
                    }
                }
                for (n, pending) in window {
                    assert_eq!(pending.await.unwrap().data.as_str(), Some(format!("Acknowledged: {t}-{n}").as_str()));
                    answered += 1;
                }
                answered
            })
        })
        .collect();
    let mut answered = 0;
    for task in tasks {
        answered += task.await.unwrap();
    }
    assert_eq!(answered, TOTAL);
    assert_eq!(
        peer.stats(),
        PeerStats { requests: TOTAL as u64, replies: TOTAL as u64, peak_in_flight: 256, ..PeerStats::default() }
    );
    assert_eq!(peer.close().await.unwrap().code(), Some(0));
}

#[tokio::test]
async fn msgpack_carries_bytes_and_notifications() {
    let peer = serve(&["--encoding", "msgpack"], PeerOptions { encoding: Encoding::Msgpack, ..options() });
    let big: Vec<u8> = (0..1_048_576_u32).map(|i| (i % 256) as u8).collect();
    let echoed = peer.request("bytes", big.clone()).await.unwrap();
    assert_eq!(echoed, Envelope::new("bytes", Data::Bytes(big)).with_id(1));
    assert_eq!(peer.request("markdown", "# Hi").await.unwrap(), reply("html", "<h1>Hi</h1>\n", 2));
    peer.notify("data", "n").await.unwrap();
    assert_eq!(peer.close().await.unwrap().code(), Some(0));
    assert_eq!(peer.stats().notifications, 1);
}

#[tokio::test]
async fn bytes_are_invalid_argument_under_json_and_nothing_is_sent() {
    let peer = serve(&[], options());
    let error = peer.request("bytes", vec![1u8, 2]).await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::InvalidArgument);
    assert_eq!(peer.stats().requests, 0);
    peer.close().await.unwrap();
}

#[tokio::test]
async fn close_escalates_to_sigkill_and_leaves_nothing_in_the_group() {
    // Ignores EOF and SIGTERM, and leaves a grandchild behind: only SIGKILL to the group ends it.
    let peer =
        shell("trap '' TERM; sleep 60 & exec sleep 60", PeerOptions { grace: Duration::from_millis(100), ..options() });
    let pid = i32::try_from(peer.pid()).unwrap();
    let status = peer.close().await.unwrap();
    assert_eq!(status.signal(), Some(9), "{status}");
    assert!(is_reaped(pid));
    assert!(group_is_dead(pid));
}

#[tokio::test]
async fn drop_in_a_runtime_stops_and_reaps_the_child_and_everything_in_its_group() {
    let peer =
        shell("trap '' TERM; sleep 60 & exec sleep 60", PeerOptions { grace: Duration::from_millis(100), ..options() });
    let pid = i32::try_from(peer.pid()).unwrap();
    drop(peer);
    // The close runs in a task of this runtime: let it.
    let reaped = tokio::task::spawn_blocking(move || is_reaped(pid) && group_is_dead(pid)).await.unwrap();
    assert!(reaped);
}

#[test]
fn drop_outside_a_runtime_stops_the_child_at_once_and_spawn_needs_a_runtime() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let peer = runtime.block_on(async {
        shell("trap '' TERM; sleep 60 & exec sleep 60", PeerOptions { grace: Duration::from_millis(100), ..options() })
    });
    let pid = i32::try_from(peer.pid()).unwrap();
    drop(runtime);
    drop(peer);
    assert!(is_reaped(pid));
    assert!(group_is_dead(pid));
    let error = Peer::spawn(&mut Command::new("true"), options()).unwrap_err();
    assert_eq!(error.code(), ErrorCode::InvalidArgument);
    assert!(error.to_string().starts_with("rust_ts_ipc::tokio::Peer::spawn was called outside a tokio runtime"));
}

#[tokio::test]
async fn bad_options_and_missing_programs_fail_with_their_codes() {
    let error = Peer::spawn(&mut Command::new("true"), PeerOptions { max_in_flight: 0, ..options() }).unwrap_err();
    assert_eq!(
        (error.code(), error.to_string().as_str()),
        (ErrorCode::InvalidArgument, "PeerOptions::max_in_flight must be at least 1 (got 0)")
    );
    let error = Peer::spawn(Command::new("/definitely/not/a/program").arg("x"), options()).unwrap_err();
    assert_eq!(
        (error.code(), error.to_string().as_str()),
        (
            ErrorCode::Spawn,
            "cannot start `/definitely/not/a/program x`: `/definitely/not/a/program` was not found on PATH"
        )
    );
}

#[tokio::test]
async fn supervision_is_supported_spin_and_restart_without_a_way_to_remake_the_child_are_refused() {
    use rust_ts_ipc::supervise::RestartPolicy;
    // `restart` needs spawn_with (a Command cannot be made again), as for the thread Peer.
    let restart = PeerOptions { restart: Some(RestartPolicy::default()), ..options() };
    let error = Peer::spawn(&mut Command::new(BIN), restart).unwrap_err();
    assert_eq!(error.code(), ErrorCode::InvalidArgument);
    assert!(error.message().starts_with("PeerOptions::restart needs a way to start the child again"), "{error}");
    // The reactor reads the pipes: there is nothing to spin.
    let spin = PeerOptions { spin: Duration::from_micros(50), ..options() };
    let error = Peer::spawn(&mut Command::new(BIN), spin).unwrap_err();
    assert_eq!(
        (error.code(), error.to_string().as_str()),
        (
            ErrorCode::InvalidArgument,
            "PeerOptions::spin (50 us) is not supported by rust_ts_ipc::tokio::Peer (its pipes are read by the \
             runtime's reactor, not spun); leave it zero, or use rust_ts_ipc::Peer"
        )
    );
    // Supervision is taken: a supervised healthy child just answers.
    let (events, on_supervision) = {
        let events = Arc::new(std::sync::Mutex::new(Vec::new()));
        let to = Arc::clone(&events);
        (events, rust_ts_ipc::SupervisionCallback::new(move |e| to.lock().unwrap().push(format!("{e:?}"))))
    };
    let supervised = PeerOptions {
        restart: Some(RestartPolicy::default()),
        hang: Some(Duration::from_secs(5)),
        on_supervision: Some(on_supervision),
        ..options()
    };
    let make = || {
        let mut command = Command::new(BIN);
        command.args(["serve", "--exit-after", "0"]);
        command
    };
    let peer = Peer::spawn_with(make, supervised).unwrap();
    assert_eq!(peer.request("data", "a").await.unwrap(), reply("ack", "Acknowledged: a", 1));
    assert_eq!(peer.close().await.unwrap().code(), Some(0));
    assert!(events.lock().unwrap().is_empty());
}

#[tokio::test]
async fn dropping_a_request_future_during_the_restart_backoff_gives_it_up_and_starts_no_child() {
    use rust_ts_ipc::supervise::RestartPolicy;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let made = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&made);
    let make = move || {
        count.fetch_add(1, Ordering::SeqCst);
        let mut command = Command::new("sh");
        command.args(["-c", "read l; exit 3"]);
        command
    };
    let long = Duration::from_secs(30);
    let options = PeerOptions {
        restart: Some(RestartPolicy { base: long, cap: long, max_restarts: 5, window: Duration::from_secs(60) }),
        timeout: Duration::from_secs(60),
        ..options()
    };
    let peer = Peer::spawn_with(make, options).unwrap();
    let pid = i32::try_from(peer.pid()).unwrap();
    assert_eq!(peer.request("q", "x").await.unwrap_err().code(), ErrorCode::PeerExited);
    // Waits out the 15..30 s backoff (within its 60 s timeout) until it is dropped.
    let given_up = tokio::time::timeout(Duration::from_millis(200), peer.request("q", "y")).await;
    assert!(given_up.is_err(), "{given_up:?}");
    assert_eq!(made.load(Ordering::SeqCst), 1);
    // Nothing was sent and nothing is pending; the backoff goes on, the next call times out in it.
    let error = peer.request_timeout("q", "z", Duration::from_millis(100)).await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::Timeout, "{error}");
    assert!(error.message().starts_with("`q` was not sent: the child died and its restart waits "), "{error}");
    let stats = peer.stats();
    assert_eq!((stats.requests, stats.replies, stats.timeouts), (1, 0, 1));
    assert_eq!(peer.close().await.unwrap().code(), Some(3));
    assert_eq!(made.load(Ordering::SeqCst), 1);
    assert!(tokio::task::spawn_blocking(move || is_reaped(pid)).await.unwrap());
}

#[tokio::test]
async fn a_restarted_childs_requests_go_on_from_the_dead_ones_ids_and_stats_sum_both() {
    use rust_ts_ipc::supervise::RestartPolicy;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let made = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&made);
    let make = move || {
        let n = count.fetch_add(1, Ordering::SeqCst);
        let mut command = Command::new("sh");
        let serve = format!("exec {BIN} serve --exit-after 0");
        command.args(["-c", if n == 0 { "read l; exit 3" } else { serve.as_str() }]);
        command
    };
    let ms = Duration::from_millis(1);
    let options = PeerOptions {
        restart: Some(RestartPolicy { base: ms, cap: 2 * ms, max_restarts: 5, window: Duration::from_secs(60) }),
        ..options()
    };
    let peer = Peer::spawn_with(make, options).unwrap();
    let first = peer.pid();
    assert_eq!(peer.request("q", "x").await.unwrap_err().code(), ErrorCode::PeerExited);
    assert_eq!(peer.request("data", "a").await.unwrap(), reply("ack", "Acknowledged: a", 2));
    assert_eq!(peer.request("data", "b").await.unwrap(), reply("ack", "Acknowledged: b", 3));
    assert_ne!(peer.pid(), first);
    let stats = peer.stats();
    assert_eq!((stats.requests, stats.replies), (3, 2));
    assert_eq!(peer.close().await.unwrap().code(), Some(0));
    assert_eq!(made.load(Ordering::SeqCst), 2);
    let first = i32::try_from(first).unwrap();
    assert!(tokio::task::spawn_blocking(move || is_reaped(first) && group_is_dead(first)).await.unwrap());
}

#[tokio::test]
async fn the_sandbox_applies_a_cleared_environment_and_names_the_cpu_limit_that_killed_the_child() {
    use rust_ts_ipc::process::sandbox::{ChildLimits, Sandbox};
    // A variable this process holds is not passed on under clear_env.
    std::env::set_var("RUST_TS_IPC_TOKIO_TEST_SECRET", "hunter2");
    let script = r#"read l; printf '{"msg_type":"r","data":"[%s]","id":1}\n' "$RUST_TS_IPC_TOKIO_TEST_SECRET"; read l; exec cat >/dev/null"#;
    let sandbox = Sandbox { clear_env: true, ..Sandbox::default() };
    let peer = shell(script, PeerOptions { sandbox, ..options() });
    assert_eq!(peer.request("q", "").await.unwrap(), reply("r", "[]", 1));
    peer.close().await.unwrap();
    // A child spinning past its CPU limit fails its request naming the limit.
    let limits = ChildLimits { max_cpu_s: Some(1), ..ChildLimits::default() };
    let sandbox = Sandbox { limits, ..Sandbox::default() };
    let peer = shell("read l; while :; do :; done", PeerOptions { sandbox, timeout: PATIENCE, ..options() });
    let error = peer.request("spin", "").await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::PeerExited, "{error}");
    assert!(error.message().contains("(SIGXCPU): it exceeded its CPU time limit of 1 s"), "{error}");
    peer.close().await.unwrap();
}

#[tokio::test]
async fn a_child_that_does_not_read_its_stdin_holds_no_caller_past_its_deadline() {
    // `sleep` never reads: a 1 MiB line fills the pipe and the writer task blocks in it.
    let patient = PeerOptions { timeout: Duration::from_millis(200), grace: Duration::from_millis(100), ..options() };
    let peer = Arc::new(shell("exec sleep 30", patient));
    let big = "x".repeat(1 << 20);
    let started = Instant::now();
    let (a, b, c) = tokio::join!(
        peer.request_timeout("q", big.as_str(), Duration::from_millis(200)),
        peer.request_timeout("q", "", Duration::from_millis(200)),
        async { peer.send("q", "").await?.wait_timeout(Duration::from_millis(200)).await },
    );
    for result in [a, b, c] {
        assert_eq!(result.unwrap_err().code(), ErrorCode::Timeout);
    }
    // Each deadline is 200 ms; 3 s leaves room for a slow, shared machine.
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    let started = Instant::now();
    let status = peer.close().await.unwrap();
    assert_eq!(status.signal(), Some(15), "{status}");
    assert!(started.elapsed() < Duration::from_secs(3), "close took {:?}", started.elapsed());
}

#[tokio::test]
async fn lines_that_are_not_protocol_are_unsolicited_errors_naming_the_line() {
    let script = r#"read l; echo 'not json'; echo '{"msg_type":"r","data":"ok","id":1}'; exec cat >/dev/null"#;
    let peer = shell(script, options());
    let mut messages = peer.take_messages().unwrap();
    assert_eq!(peer.request("q", "").await.unwrap(), reply("r", "ok", 1));
    let error = messages.recv().await.unwrap();
    assert_eq!(error.msg_type, "error");
    assert!(error.data.as_str().unwrap().starts_with("line 1: "), "{error:?}");
    peer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_supervision_callback_may_drop_the_last_handle_to_the_peer_from_its_task() {
    use rust_ts_ipc::{SupervisionCallback, SupervisionEvent};
    use std::sync::Mutex;
    // The death is reported from the dead child's own task; dropping the peer there closes it
    // in another task, and the child is still reaped.
    let slot: Arc<Mutex<Option<Peer>>> = Arc::default();
    let (told, heard) = std::sync::mpsc::channel();
    let in_callback = Arc::clone(&slot);
    let on_supervision = SupervisionCallback::new(move |event| {
        if let SupervisionEvent::ChildEnded { pid, .. } = event {
            let peer = in_callback.lock().unwrap().take();
            drop(peer);
            let _ = told.send(*pid);
        }
    });
    let options = PeerOptions { on_supervision: Some(on_supervision), ..options() };
    let peer = Peer::spawn(Command::new("sh").args(["-c", "read l; exit 3"]), options).unwrap();
    let pid = peer.pid();
    let pending = peer.send("q", "x").await.unwrap();
    *slot.lock().unwrap() = Some(peer);
    assert_eq!(pending.await.unwrap_err().code(), ErrorCode::PeerExited);
    let reported = tokio::task::spawn_blocking(move || heard.recv_timeout(PATIENCE)).await.unwrap();
    assert_eq!(reported, Ok(pid));
    assert!(slot.lock().unwrap().is_none());
    let pid = i32::try_from(pid).unwrap();
    let reaped = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        while !is_reaped(pid) && start.elapsed() < PATIENCE {
            std::thread::sleep(Duration::from_millis(10));
        }
        is_reaped(pid) && group_is_dead(pid)
    })
    .await
    .unwrap();
    assert!(reaped, "child {pid} was not reaped after the peer was dropped in its callback");
}

#[test]
fn drop_in_another_runtime_that_then_ends_still_stops_and_reaps_the_child() {
    // The peer lives on a multi-thread runtime that keeps running (a server's); it is dropped
    // inside a short-lived current-thread runtime's block_on, which ends before running the
    // close task it was handed. The child must not run on for as long as the peer's runtime.
    let home = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let peer = home.block_on(async {
        shell("trap '' TERM; sleep 60 & exec sleep 60", PeerOptions { grace: Duration::from_millis(100), ..options() })
    });
    let pid = i32::try_from(peer.pid()).unwrap();
    let other = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    other.block_on(async move { drop(peer) });
    drop(other);
    assert!(is_reaped(pid));
    assert!(group_is_dead(pid));
    drop(home);
}

#[test]
fn a_runtime_dropped_with_requests_in_flight_stops_and_reaps_the_child() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let pid = runtime.block_on(async {
        let peer = Arc::new(shell(
            "trap '' TERM; sleep 60 & while read l; do :; done; exec sleep 60",
            PeerOptions { grace: Duration::from_millis(100), ..options() },
        ));
        for i in 0..8 {
            let peer = Arc::clone(&peer);
            tokio::spawn(async move { peer.request("q", i.to_string()).await });
        }
        tokio::task::yield_now().await;
        i32::try_from(peer.pid()).unwrap()
    });
    drop(runtime);
    assert!(is_reaped(pid));
    assert!(group_is_dead(pid));
}

#[tokio::test]
async fn ten_thousand_tasks_on_a_current_thread_runtime_some_cancelled_at_every_await_each_sent_reply_is_delivered_or_counted_late(
) {
    const TOTAL: usize = 10_000;
    let peer = Arc::new(serve(&["--exit-after", "0"], PeerOptions { max_in_flight: 256, ..options() }));
    let tasks: Vec<_> = (0..TOTAL)
        .map(|n| {
            let peer = Arc::clone(&peer);
            tokio::spawn(async move {
                let text = format!("m{n}");
                let call = peer.request("data", text.as_str());
                if n % 7 == 0 {
                    // Cancelled at whatever await it has reached: the turn, a slot, the reply.
                    let cut = Duration::from_micros((n as u64 * 37) % 3_000);
                    return tokio::time::timeout(cut, call).await.ok().map(|r| r.unwrap());
                }
                let got = call.await.unwrap();
                assert_eq!(got.data.as_str(), Some(format!("Acknowledged: {text}").as_str()));
                Some(got)
            })
        })
        .collect();
    let mut answered = 0u64;
    for task in tasks {
        answered += u64::from(task.await.unwrap().is_some());
    }
    // Every late reply has come once the next request's reply has.
    assert_eq!(peer.request("data", "last").await.unwrap().data.as_str(), Some("Acknowledged: last"));
    let stats = peer.stats();
    assert_eq!(stats.replies, answered + 1);
    assert_eq!(stats.requests, stats.replies + stats.late_replies_dropped);
    assert!(stats.requests >= (TOTAL - TOTAL / 7) as u64, "{stats:?}");
    assert_eq!(stats.peak_in_flight, 256);
    assert_eq!(peer.close().await.unwrap().code(), Some(0));
}

#[tokio::test]
async fn a_grace_of_duration_max_closes_a_child_that_exits_on_eof_without_panicking() {
    // "Never signal it": a child that ends on EOF is closed and reaped as with any grace.
    let peer = serve(&["--exit-after", "0"], PeerOptions { grace: Duration::MAX, ..options() });
    let pid = i32::try_from(peer.pid()).unwrap();
    assert_eq!(peer.request("data", "a").await.unwrap(), reply("ack", "Acknowledged: a", 1));
    assert_eq!(peer.close().await.unwrap().code(), Some(0));
    assert!(tokio::task::spawn_blocking(move || is_reaped(pid)).await.unwrap());
}

#[tokio::test]
async fn a_big_request_timing_out_mid_write_is_still_written_whole_and_the_next_request_is_answered() {
    // The child reads nothing for 300 ms: the 2 MiB line is part written when its request
    // times out (and a second one's future is dropped); the line goes on whole, then the next.
    let script = format!("sleep 0.3; exec {BIN} serve --exit-after 0");
    let peer = shell(&script, options());
    let big = "x".repeat(2 << 20);
    let error = peer.request_timeout("data", big.as_str(), Duration::from_millis(100)).await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::Timeout);
    let dropped = tokio::time::timeout(Duration::from_millis(50), peer.request("data", big.as_str())).await;
    assert!(dropped.is_err());
    let got = peer.request("data", "after").await.unwrap();
    assert_eq!(got, reply("ack", "Acknowledged: after", 3));
    let stats = peer.stats();
    assert_eq!((stats.replies, stats.late_replies_dropped, stats.lines_too_long), (1, 2, 0), "{stats:?}");
    assert_eq!(peer.close().await.unwrap().code(), Some(0));
}

#[tokio::test]
async fn timeouts_hang_and_grace_of_duration_max_mean_no_limit_not_a_panic() {
    let script = r#"read l; echo '{"msg_type":"r","data":"ok","id":1}'; exec cat >/dev/null"#;
    let forever = PeerOptions { timeout: Duration::MAX, grace: Duration::MAX, hang: Some(Duration::MAX), ..options() };
    let peer = shell(script, forever);
    assert_eq!(peer.send("q", "").await.unwrap().wait_timeout(Duration::MAX).await.unwrap(), reply("r", "ok", 1));
    let pending = peer.send_timeout("q", "", Duration::MAX).await.unwrap();
    // The child exits on EOF: the shutdown's unbounded first wait ends with it.
    assert_eq!(peer.close().await.unwrap().code(), Some(0));
    assert_eq!(pending.await.unwrap_err().code(), ErrorCode::Closed);
}

#[tokio::test]
async fn restarts_under_load_on_a_current_thread_runtime_lose_no_request_and_leave_no_child() {
    use rust_ts_ipc::supervise::RestartPolicy;
    use rust_ts_ipc::{SupervisionCallback, SupervisionEvent};
    const TOTAL: usize = 2_000;
    let pids = Arc::new(std::sync::Mutex::new(Vec::new()));
    let to = Arc::clone(&pids);
    let on_supervision = SupervisionCallback::new(move |event| {
        if let SupervisionEvent::Restarted { pid, .. } = event {
            to.lock().unwrap().push(*pid);
        }
    });
    let policy = RestartPolicy {
        base: Duration::from_millis(1),
        cap: Duration::from_millis(5),
        max_restarts: 100_000,
        window: Duration::from_secs(60),
    };
    let options = PeerOptions {
        restart: Some(policy),
        on_supervision: Some(on_supervision),
        max_in_flight: 64,
        grace: Duration::from_millis(300),
        ..options()
    };
    let make = || {
        let mut command = Command::new(BIN);
        command.args(["serve", "--exit-after", "7"]);
        command
    };
    let peer = Arc::new(Peer::spawn_with(make, options).unwrap());
    let first = peer.pid();
    // 64 tasks, one request at a time each: a death fails at most the 64 in flight (callers
    // still waiting for a slot in the dying child fail PEER_EXITED too, as on the thread peer).
    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let peer = Arc::clone(&peer);
            tokio::spawn(async move {
                let mut codes = Vec::new();
                for n in (t..TOTAL).step_by(64) {
                    codes.push(match peer.request("data", format!("m{n}")).await {
                        Ok(got) => {
                            assert_eq!(got.data.as_str(), Some(format!("Acknowledged: m{n}").as_str()));
                            None
                        }
                        Err(e) => Some(e.code()),
                    });
                }
                codes
            })
        })
        .collect();
    let mut codes = std::collections::HashMap::new();
    for task in tasks {
        for code in task.await.unwrap() {
            *codes.entry(code).or_insert(0usize) += 1;
        }
    }
    println!("{codes:?}");
    assert!(codes.keys().all(|c| matches!(c, None | Some(ErrorCode::PeerExited))), "{codes:?}");
    assert!(codes.get(&None).copied().unwrap_or(0) >= 100, "{codes:?}");
    peer.close().await.unwrap();
    let mut all = vec![first];
    all.extend(pids.lock().unwrap().iter().copied());
    assert!(all.len() > 10, "{} children", all.len());
    tokio::task::spawn_blocking(move || {
        for pid in all {
            let pid = i32::try_from(pid).unwrap();
            assert!(is_reaped(pid), "child {pid} is not reaped");
            assert!(group_is_dead(pid));
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_16_mib_stderr_flood_reaches_the_sink_whole_while_requests_are_answered() {
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sink = Arc::clone(&seen);
    let stderr = StderrMode::Sink(Box::new(move |bytes: &[u8]| {
        sink.fetch_add(bytes.len(), std::sync::atomic::Ordering::Relaxed);
    }));
    // The flood first: serve starts (and answers) only once all of it has been read.
    let script = format!("head -c 16777216 /dev/zero >&2; exec {BIN} serve --exit-after 0");
    let peer = shell(&script, PeerOptions { stderr, ..options() });
    for i in 1..=50u64 {
        let text = format!("m{i}");
        assert_eq!(
            peer.request("data", text.as_str()).await.unwrap(),
            reply("ack", &format!("Acknowledged: {text}"), i)
        );
    }
    assert_eq!(peer.close().await.unwrap().code(), Some(0));
    assert_eq!(seen.load(std::sync::atomic::Ordering::Relaxed), 16 << 20);
    assert_eq!(peer.stats().requests, 50);
}

// --- Big bins received apart from their frames (read straight into their `Vec`) -----------

#[tokio::test]
async fn big_bins_echoed_by_cat_come_back_whole_as_the_replies_to_their_requests() {
    // `cat` writes each request back as it came: the same frame, so each is its own reply.
    let peer = shell("exec cat", PeerOptions { encoding: Encoding::Msgpack, ..options() });
    let payload = |n: usize| -> Vec<u8> { (0..n).map(|i| (i % 251) as u8).collect() };
    let sizes = [65_535, 65_536, 65_537, 98_304, 1 << 20, (3 << 20) + 7, 0, 200_000];
    let mut pending = Vec::new();
    for &n in &sizes {
        pending.push((n, peer.send("bytes", payload(n)).await.unwrap()));
    }
    for (n, p) in pending {
        let id = p.id();
        assert_eq!(p.await.unwrap(), Envelope::new("bytes", Data::Bytes(payload(n))).with_id(id), "{n} bytes");
    }
    let stats = peer.stats();
    assert_eq!((stats.replies, stats.unsolicited, stats.lines_too_long), (8, 0, 0));
    peer.close().await.unwrap();
}

#[tokio::test]
async fn a_child_killed_inside_a_big_bin_fails_the_pending_request_and_the_cut_frame_is_named() {
    let request = Envelope::new("q", "").with_id(1).to_frame().unwrap();
    let frame = Envelope::new("r", Data::Bytes(vec![0; 1 << 20])).with_id(1).to_frame().unwrap();
    let head = frame.windows(5).position(|w| w == b"\xa4data").unwrap() + 10;
    let octal: String = frame[..head].iter().map(|b| format!("\\{b:03o}")).collect();
    // The header, the map up to the bin, 200000 bytes of its payload, then SIGKILL.
    let script =
        format!("head -c {} >/dev/null; printf '{octal}'; head -c 200000 /dev/zero; kill -KILL $$", request.len());
    let peer = shell(&script, PeerOptions { encoding: Encoding::Msgpack, ..options() });
    let mut messages = peer.take_messages().unwrap();
    let failed = peer.request("q", "").await.unwrap_err();
    assert_eq!(failed.code(), ErrorCode::PeerExited);
    assert_eq!(failed.exit_status().and_then(|s| s.signal()), Some(9));
    let text = format!(
        "frame 1: the stream ended inside the frame, after {} of its {} bytes",
        head - 4 + 200_000,
        frame.len() - 4
    );
    let cut = tokio::time::timeout(PATIENCE, messages.recv()).await.unwrap();
    assert_eq!(cut, Some(Envelope::new("error", text.as_str())));
    assert_eq!(tokio::time::timeout(PATIENCE, messages.recv()).await.unwrap(), None);
}

/// The frame of `{msg_type, data: bin of len zero bytes, id}` (len of at least 64 KiB) as the
/// `printf` formats (octal escapes) of what comes before its payload and of what comes after.
fn zero_bin_parts(msg_type: &str, len: usize, id: Option<u64>) -> (String, String) {
    let envelope = Envelope::new(msg_type, Data::Bytes(vec![0; len]));
    let frame = match id {
        Some(id) => envelope.with_id(id),
        None => envelope,
    }
    .to_frame()
    .unwrap();
    let data = frame.windows(5).position(|w| w == b"\xa4data").unwrap() + 5;
    assert_eq!(frame[data], 0xc6, "a bin32");
    let octal = |bytes: &[u8]| -> String { bytes.iter().map(|b| format!("\\{b:03o}")).collect() };
    (octal(&frame[..data + 5]), octal(&frame[data + 5 + len..]))
}

#[tokio::test]
async fn a_big_bin_trickling_in_for_longer_than_the_hang_limit_is_not_a_hang() {
    let request = Envelope::new("q", "").with_id(1).to_frame().unwrap();
    let (head, tail) = zero_bin_parts("r", 6 * 65_536, Some(1));
    let script = format!(
        "head -c {} >/dev/null; printf '{head}'; for i in 1 2 3 4 5 6; do head -c 65536 /dev/zero; sleep 0.2; done; \
         printf '{tail}'; exec cat >/dev/null",
        request.len()
    );
    let options = PeerOptions { encoding: Encoding::Msgpack, hang: Some(Duration::from_millis(700)), ..options() };
    let peer = shell(&script, options);
    assert_eq!(peer.request("q", "").await.unwrap(), Envelope::new("r", Data::Bytes(vec![0; 6 * 65_536])).with_id(1));
    peer.close().await.unwrap();
}

#[tokio::test]
async fn a_request_future_dropped_inside_its_big_bin_reply_drops_it_and_an_unsolicited_big_bin_and_the_next_reply_come_whole(
) {
    // Reply 1 stops inside its payload until request 2 arrives (request 1's future is dropped
    // by then); then the rest of it, an unsolicited big bin, and reply 2, back to back.
    let request = Envelope::new("q", "").with_id(1).to_frame().unwrap();
    let (head1, tail1) = zero_bin_parts("r", 300_000, Some(1));
    let (head_n, tail_n) = zero_bin_parts("n", 100_000, None);
    let (head2, tail2) = zero_bin_parts("r", 200_000, Some(2));
    let script = format!(
        "head -c {req} >/dev/null; printf '{head1}'; head -c 200000 /dev/zero; head -c {req} >/dev/null; \
         {{ head -c 100000 /dev/zero; printf '{tail1}{head_n}'; head -c 100000 /dev/zero; printf '{tail_n}{head2}'; \
         head -c 200000 /dev/zero; printf '{tail2}'; }}; exec cat >/dev/null",
        req = request.len()
    );
    let peer = shell(&script, PeerOptions { encoding: Encoding::Msgpack, ..options() });
    let mut messages = peer.take_messages().unwrap();
    let cut = tokio::time::timeout(Duration::from_millis(100), peer.request("q", "")).await;
    assert!(cut.is_err());
    assert_eq!(peer.request("q", "").await.unwrap(), Envelope::new("r", Data::Bytes(vec![0; 200_000])).with_id(2));
    let unsolicited = tokio::time::timeout(PATIENCE, messages.recv()).await.unwrap();
    assert_eq!(unsolicited, Some(Envelope::new("n", Data::Bytes(vec![0; 100_000]))));
    let stats = peer.stats();
    assert_eq!((stats.late_replies_dropped, stats.replies, stats.unsolicited, stats.timeouts), (1, 1, 1, 0));
    peer.close().await.unwrap();
}
