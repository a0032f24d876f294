//! `Peer` against real processes: the Rust `serve` binary as a well-behaved child, and small
//! `sh -c` scripts as children that misbehave in one exact way each.
#![cfg(target_os = "linux")]
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::VecDeque;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::sync::mpsc::{RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rust_ts_ipc::{Data, Encoding, Envelope, ErrorCode, Peer, PeerOptions, PeerStats, StderrMode};
use serde_json::json;
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

#[test]
fn answers_requests_and_delivers_the_exit_after_the_fifth_ack_as_unsolicited() {
    let peer = serve(&[], options());
    let messages = peer.take_messages().unwrap();
    assert!(peer.take_messages().is_none());
    assert_eq!(peer.request("greeting", "hi").unwrap(), reply("response", "Hello from TypeScript!", 1));
    for i in 1..=5u64 {
        let text = format!("m{i}");
        assert_eq!(peer.request("data", text.as_str()).unwrap(), reply("ack", &format!("Acknowledged: {text}"), i + 1));
    }
    // The `exit` that follows the fifth `ack` carries an id already answered.
    let exit = messages.recv_timeout(PATIENCE).unwrap();
    assert_eq!(exit, reply("exit", "Goodbye from TypeScript!", 6));
    // The channel ends with the child's stdout.
    assert_eq!(messages.recv_timeout(PATIENCE), Err(RecvTimeoutError::Disconnected));
    assert_eq!(peer.close().unwrap().code(), Some(0));
    let stats = peer.stats();
    assert_eq!(stats, PeerStats { requests: 6, replies: 6, unsolicited: 1, peak_in_flight: 1, ..PeerStats::default() });
}

#[test]
fn an_error_reply_fails_its_request_with_error_reply_and_its_text() {
    let peer = serve(&["--exit-after", "0"], options());
    let error = peer.request("nope", "x").unwrap_err();
    assert_eq!(error.code(), ErrorCode::ErrorReply);
    let text = "line 1: unknown msg_type `nope`; expected greeting, data, exit or markdown";
    assert_eq!(error.to_string(), format!("the child answered request 1 with an error: {text}"));
    assert_eq!(error.reply(), Some(&reply("error", text, 1)));
    // The peer goes on.
    assert_eq!(peer.request("data", "a").unwrap(), reply("ack", "Acknowledged: a", 2));
}

#[test]
fn replies_with_an_unknown_or_already_answered_id_are_unsolicited() {
    let script = r#"read l; printf '%s\n' '{"msg_type":"x","data":"stray","id":999}' \
        '{"msg_type":"r","data":"ok","id":1}' '{"msg_type":"r","data":"again","id":1}' \
        '{"msg_type":"note","data":[1,{"a":null}]}'; exec cat >/dev/null"#;
    let peer = shell(script, options());
    let messages = peer.take_messages().unwrap();
    assert_eq!(peer.request("q", "").unwrap(), reply("r", "ok", 1));
    assert_eq!(messages.recv_timeout(PATIENCE).unwrap(), reply("x", "stray", 999));
    assert_eq!(messages.recv_timeout(PATIENCE).unwrap(), reply("r", "again", 1));
    assert_eq!(messages.recv_timeout(PATIENCE).unwrap(), Envelope::new("note", json!([1, {"a": null}])));
    assert_eq!(peer.stats().unsolicited, 3);
    assert_eq!(peer.stats().replies, 1);
}

#[test]
fn lines_that_are_not_protocol_are_unsolicited_errors_naming_the_line_and_the_peer_keeps_going() {
    let long = "x".repeat(100);
    let script = format!(
        r#"read l; printf '%s\n' 'not json' '{long}' '' '{{"msg_type":"r","id":1}}' \
        '{{"msg_type":"r","data":"ok","id":1}}'; printf '\377\n'; exec cat >/dev/null"#
    );
    let peer = shell(&script, PeerOptions { max_line_bytes: 64, ..options() });
    let messages = peer.take_messages().unwrap();
    let error = |text: &str, id: Option<u64>| Envelope { msg_type: "error".into(), data: Data::from(text), id };
    // Line 3 is blank (skipped, still counted); line 4 keeps its id, so its error answers
    // request 1, and line 5, the good reply that comes too late, is unsolicited.
    let failed = peer.request("q", "").unwrap_err();
    let broken = "line 4: missing field `data`: `{\"msg_type\":\"r\",\"id\":1}`";
    assert_eq!((failed.code(), failed.reply()), (ErrorCode::ErrorReply, Some(&error(broken, Some(1)))));
    assert_eq!(messages.recv_timeout(PATIENCE).unwrap(), error("line 1: invalid JSON: `not json`", None));
    assert_eq!(
        messages.recv_timeout(PATIENCE).unwrap(),
        error("line 2: line of 100 bytes exceeds the 64-byte limit", None)
    );
    assert_eq!(messages.recv_timeout(PATIENCE).unwrap(), reply("r", "ok", 1));
    assert_eq!(messages.recv_timeout(PATIENCE).unwrap(), error("line 6: invalid UTF-8 at byte 0", None));
    let stats = peer.stats();
    assert_eq!((stats.unsolicited, stats.lines_too_long, stats.replies), (4, 1, 1));
}

#[test]
fn a_child_that_exits_fails_every_pending_request_with_peer_exited_and_its_stderr() {
    let script = "read a; read b; read c; echo 'giving up' >&2; exit 3";
    let peer = Arc::new(shell(script, options()));
    let pid = i32::try_from(peer.pid()).unwrap();
    let failed = Arc::new(Mutex::new(Vec::new()));
    let waiters: Vec<_> = (0..3)
        .map(|i| {
            let pending = peer.send("q", i.to_string()).unwrap();
            let failed = Arc::clone(&failed);
            thread::spawn(move || {
                let error = pending.wait().unwrap_err();
                failed.lock().unwrap().push(Instant::now());
                error
            })
        })
        .collect();
    // When the exit is first visible from outside (the child is a zombie until close reaps it).
    let exited = loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        if stat[stat.rfind(')').unwrap() + 2..].starts_with('Z') {
            break Instant::now();
        }
        thread::sleep(Duration::from_millis(1));
    };
    for waiter in waiters {
        let error = waiter.join().unwrap();
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
    // The peer fails them within 80 ms of seeing the exit (the issue's bound is 100 ms);
    // asserted loosely, as the machine running the tests is shared and noisy.
    for at in failed.lock().unwrap().iter() {
        assert!(at.saturating_duration_since(exited) < Duration::from_millis(500), "{:?}", at.duration_since(exited));
    }
    assert_eq!(peer.request("q", "late").unwrap_err().code(), ErrorCode::PeerExited);
    assert_eq!(peer.notify("q", "late").unwrap_err().code(), ErrorCode::PeerExited);
    assert_eq!(peer.close().unwrap().code(), Some(3));
    assert!(is_reaped(pid));
}

#[test]
fn requests_after_close_fail_closed_and_close_is_idempotent() {
    let peer = shell("exec cat >/dev/null", options());
    let pending = peer.send("q", "never answered").unwrap();
    assert_eq!(peer.close().unwrap().code(), Some(0));
    let error = pending.wait().unwrap_err();
    assert_eq!(error.code(), ErrorCode::Closed);
    assert_eq!(error.to_string(), "the peer was closed while this request was pending; no reply will be delivered");
    assert_eq!(peer.close().unwrap().code(), Some(0));
    let error = peer.request("q", "").unwrap_err();
    assert_eq!(
        (error.code(), error.to_string().as_str()),
        (ErrorCode::Closed, "cannot send `q`: the peer is closed; start a new Peer to send more")
    );
    assert_eq!(peer.notify("q", "").unwrap_err().code(), ErrorCode::Closed);
}

#[test]
fn a_timed_out_request_fails_and_its_late_reply_is_dropped_and_counted() {
    let script = r#"read a; sleep 1; echo '{"msg_type":"r","data":"late","id":1}'
        read b; echo '{"msg_type":"r","data":"ok","id":2}'; exec cat >/dev/null"#;
    let peer = shell(script, options());
    let messages = peer.take_messages().unwrap();
    let error = peer.request_timeout("slow", "", Duration::from_millis(50)).unwrap_err();
    assert_eq!(error.code(), ErrorCode::Timeout);
    assert_eq!(
        error.to_string(),
        "no reply to `slow` request 1 within 50 ms; a late reply will be dropped. If the child is only slow, raise \
         PeerOptions::timeout or use request_timeout"
    );
    // Request 2 is answered after the late reply to request 1 arrived.
    assert_eq!(peer.request("q", "").unwrap(), reply("r", "ok", 2));
    assert_eq!(messages.try_recv(), Err(TryRecvError::Empty));
    let stats = peer.stats();
    assert_eq!((stats.timeouts, stats.late_replies_dropped, stats.replies, stats.unsolicited), (1, 1, 1, 0));
}

#[test]
fn a_dropped_pending_request_frees_its_slot_and_its_reply_is_dropped() {
    let script = r#"read a; read b; printf '%s\n' '{"msg_type":"r","data":"1","id":1}' \
        '{"msg_type":"r","data":"2","id":2}'; exec cat >/dev/null"#;
    let peer = shell(script, PeerOptions { max_in_flight: 1, ..options() });
    drop(peer.send("q", "").unwrap());
    // Room again at once, though request 1 was never answered.
    assert_eq!(peer.request("q", "").unwrap(), reply("r", "2", 2));
    assert_eq!(peer.stats().late_replies_dropped, 1);
}

#[test]
fn many_requests_in_flight_each_reply_arrives_once_and_in_flight_stays_bounded() {
    const TOTAL: usize = 100_000;
    const THREADS: usize = 4;
    let peer = Arc::new(serve(&["--exit-after", "0"], PeerOptions { max_in_flight: 256, ..options() }));
    let hwm_before = own_peak_rss_kib();
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let peer = Arc::clone(&peer);
            thread::spawn(move || {
                // Each thread keeps up to 128 handles: together more than the peer lets fly.
                let mut window = VecDeque::new();
                let mut answered = 0;
                let mut check = |(n, pending): (usize, rust_ts_ipc::Pending)| {
                    let got = pending.wait().unwrap();
                    assert_eq!(got.msg_type, "ack");
                    assert_eq!(got.data.as_str(), Some(format!("Acknowledged: {t}-{n}").as_str()));
                    answered += 1;
                };
                for n in 0..TOTAL / THREADS {
                    window.push_back((n, peer.send("data", format!("{t}-{n}")).unwrap()));
                    if window.len() == 128 {
                        check(window.pop_front().unwrap());
                    }
                }
                window.into_iter().for_each(&mut check);
                answered
            })
        })
        .collect();
    let answered: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(answered, TOTAL);
    let stats = peer.stats();
    assert_eq!(
        stats,
        PeerStats { requests: TOTAL as u64, replies: TOTAL as u64, peak_in_flight: 256, ..PeerStats::default() }
    );
    // Bounded memory: a generous bound (other tests share this process), far below what
    // 100 000 queued requests and replies would take if nothing bounded them.
    let grown = own_peak_rss_kib().saturating_sub(hwm_before);
    assert!(grown < 64 * 1024, "peak RSS grew by {grown} KiB");
    assert_eq!(peer.close().unwrap().code(), Some(0));
}

fn own_peak_rss_kib() -> u64 {
    support::peak_rss_kib(i32::try_from(std::process::id()).unwrap())
}

#[test]
fn notifications_carry_no_id_and_any_json_data() {
    let peer = shell("read -r l; printf '%s\\n' \"$l\"; exec cat >/dev/null", options());
    let messages = peer.take_messages().unwrap();
    peer.notify("note", json!({"a": [1, "é\n"]})).unwrap();
    assert_eq!(messages.recv_timeout(PATIENCE).unwrap(), Envelope::new("note", json!({"a": [1, "é\n"]})));
    assert_eq!(peer.stats().notifications, 1);
}

#[test]
fn the_childs_stderr_goes_to_the_sink_in_pieces() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let stderr = StderrMode::Sink(Box::new(move |bytes: &[u8]| sink.lock().unwrap().extend_from_slice(bytes)));
    let peer = shell("echo one >&2; echo two >&2; exec cat >/dev/null", PeerOptions { stderr, ..options() });
    assert_eq!(peer.close().unwrap().code(), Some(0));
    let deadline = Instant::now() + PATIENCE;
    while seen.lock().unwrap().as_slice() != b"one\ntwo\n" && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(String::from_utf8_lossy(&seen.lock().unwrap()), "one\ntwo\n");
}

#[test]
fn drop_stops_and_reaps_the_child_and_everything_in_its_group() {
    // Ignores EOF and SIGTERM, and leaves a grandchild behind: only SIGKILL to the group ends it.
    let peer =
        shell("trap '' TERM; sleep 60 & exec sleep 60", PeerOptions { grace: Duration::from_millis(100), ..options() });
    let pid = i32::try_from(peer.pid()).unwrap();
    drop(peer);
    assert!(is_reaped(pid));
    assert!(group_is_dead(pid));
}

#[test]
fn bad_options_and_missing_programs_fail_with_their_codes() {
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

#[test]
fn unsolicited_messages_over_the_queue_bound_are_dropped_and_counted() {
    let script = r#"read l; for i in 1 2 3 4 5; do echo '{"msg_type":"n","data":""}'; done
        echo '{"msg_type":"r","data":"ok","id":1}'; exec cat >/dev/null"#;
    let peer = shell(script, PeerOptions { max_unsolicited: 2, ..options() });
    assert_eq!(peer.request("q", "").unwrap(), reply("r", "ok", 1));
    let stats = peer.stats();
    assert_eq!((stats.unsolicited, stats.unsolicited_dropped), (2, 3));
    let messages = peer.take_messages().unwrap();
    assert_eq!(messages.try_iter().count(), 2);
}

#[test]
fn unsolicited_messages_over_the_byte_budget_are_dropped_and_counted_until_taken() {
    // Each line is 36 bytes: two fit in 100, the third would not.
    let five = r#"for i in 1 2 3 4 5; do echo '{"msg_type":"n","data":"0123456789"}'; done"#;
    let script = format!(
        r#"read l; {five}; echo '{{"msg_type":"r","data":"ok","id":1}}'
        read l; {five}; echo '{{"msg_type":"r","data":"ok","id":2}}'; exec cat >/dev/null"#
    );
    let peer = shell(&script, PeerOptions { max_unsolicited_bytes: 100, ..options() });
    let messages = peer.take_messages().unwrap();
    assert_eq!(peer.request("q", "").unwrap(), reply("r", "ok", 1));
    let stats = peer.stats();
    assert_eq!((stats.unsolicited, stats.unsolicited_dropped), (2, 3));
    assert_eq!(messages.try_iter().count(), 2);
    // Taking them gave their bytes back: two more fit.
    assert_eq!(peer.request("q", "").unwrap(), reply("r", "ok", 2));
    let stats = peer.stats();
    assert_eq!((stats.unsolicited, stats.unsolicited_dropped), (4, 6));
    assert_eq!(messages.try_iter().collect::<Vec<_>>(), vec![Envelope::new("n", "0123456789"); 2]);
}

#[test]
fn timeouts_and_grace_of_duration_max_mean_no_limit_not_a_panic() {
    let script = r#"read l; echo '{"msg_type":"r","data":"ok","id":1}'; exec cat >/dev/null"#;
    let forever = PeerOptions { timeout: Duration::MAX, grace: Duration::MAX, ..options() };
    let peer = shell(script, forever);
    assert_eq!(peer.send("q", "").unwrap().wait_timeout(Duration::MAX).unwrap(), reply("r", "ok", 1));
    let pending = peer.send_timeout("q", "", Duration::MAX).unwrap();
    // The child exits on EOF: the shutdown's unbounded first wait ends with it.
    assert_eq!(peer.close().unwrap().code(), Some(0));
    assert_eq!(pending.wait().unwrap_err().code(), ErrorCode::Closed);
}

#[test]
fn close_while_other_threads_are_writing_still_ends_the_child_with_eof_not_sigterm() {
    // Before the fix, close() could not close stdin while a writer held it, so a child that
    // exits on EOF waited out the grace period and got SIGTERM (9 rounds out of 10). `serve`
    // exits 0 on EOF and dies of SIGTERM's default action (checked first), so the exit status
    // alone tells which ended it: no clock is read.
    let control = serve(&["--exit-after", "0"], options());
    let killed = Command::new("kill").args(["-TERM", &control.pid().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = control.close().unwrap();
    assert_eq!((status.code(), status.signal()), (None, Some(15)), "{status}");
    for _ in 0..5 {
        let peer = Arc::new(serve(&["--exit-after", "0"], options()));
        let writers: Vec<_> = (0..4)
            .map(|_| {
                let peer = Arc::clone(&peer);
                thread::spawn(move || while peer.notify("data", "x".repeat(1000)).is_ok() {})
            })
            .collect();
        thread::sleep(Duration::from_millis(50));
        let status = peer.close().unwrap();
        assert_eq!((status.code(), status.signal()), (Some(0), None), "{status}");
        for writer in writers {
            writer.join().unwrap();
        }
    }
}

#[test]
fn a_missing_working_directory_is_named_not_blamed_on_path() {
    // The OS says "not found" (ENOENT) for a missing working directory too; the message
    // used to send the user looking for `sh` on PATH.
    let error = Peer::spawn(Command::new("sh").current_dir("/definitely/not/a/dir"), options()).unwrap_err();
    assert_eq!(
        (error.code(), error.to_string().as_str()),
        (ErrorCode::Spawn, "cannot start `sh`: its working directory `/definitely/not/a/dir` does not exist")
    );
}

#[test]
fn a_child_that_does_not_read_its_stdin_holds_no_caller_past_its_deadline() {
    // `sleep` never reads its stdin: a 1 MiB line fills the pipe (64 KiB) and the write of
    // the rest blocks for as long as the child lives. Before the fix the first request sat
    // in that write (ignoring its 200 ms) and every other caller waited for the stdin lock.
    let patient = PeerOptions { timeout: Duration::from_millis(200), grace: Duration::from_millis(100), ..options() };
    let peer = Arc::new(shell("exec sleep 30", patient));
    let big = "x".repeat(1 << 20);
    let (done, results) = std::sync::mpsc::channel();
    let call = |name: &'static str, pause: u64, f: Box<dyn FnOnce(&Peer) -> ErrorCode + Send>| {
        let (peer, done) = (Arc::clone(&peer), done.clone());
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(pause));
            let started = Instant::now();
            let code = f(&peer);
            let _ = done.send((name, code, started.elapsed()));
        })
    };
    let first = big.clone();
    call(
        "big request",
        0,
        Box::new(move |p| p.request_timeout("q", first, Duration::from_millis(200)).unwrap_err().code()),
    );
    call("small request", 50, Box::new(|p| p.request_timeout("q", "", Duration::from_millis(200)).unwrap_err().code()));
    call(
        "wait_timeout",
        50,
        Box::new(|p| p.send("q", "").unwrap().wait_timeout(Duration::from_millis(200)).unwrap_err().code()),
    );
    // Notifications queue until the write queue is full, then wait the peer's timeout for room.
    let line = big.clone();
    call(
        "notify",
        50,
        Box::new(move |p| loop {
            if let Err(e) = p.notify("n", line.as_str()) {
                break e.code();
            }
        }),
    );
    // Each deadline is 200 ms; 3 s leaves room for a slow, shared machine.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let left = deadline.saturating_duration_since(Instant::now());
        match results.recv_timeout(left) {
            Ok(result) => seen.push(result),
            Err(_) => panic!("after 3 s only these calls had returned: {seen:?}"),
        }
    }
    for (name, code, took) in &seen {
        assert_eq!(*code, ErrorCode::Timeout, "{name}");
        assert!(*took < Duration::from_secs(3), "{name} took {took:?}");
    }
    // The writer is still stuck in the child's full pipe: close must not wait for it longer
    // than the shutdown's grace periods (100 ms + SIGTERM + 100 ms).
    let started = Instant::now();
    let status = peer.close().unwrap();
    assert_eq!(status.signal(), Some(15), "{status}");
    assert!(started.elapsed() < Duration::from_secs(3), "close took {:?}", started.elapsed());
}

#[test]
fn a_request_that_times_out_before_it_is_written_is_never_sent_and_the_rest_keep_their_order() {
    // The child reads nothing for 2 s, then echoes every line back (an echoed request is its
    // own reply). The 1 MiB request is being written when it times out: its line is finished
    // (its echo is a late reply, dropped). The small one behind it times out still queued
    // and is never written. The notification behind that goes out, in order.
    let peer = shell("sleep 2; exec cat", options());
    let messages = peer.take_messages().unwrap();
    let big = "x".repeat(1 << 20);
    let first = peer.send_timeout("big", big.as_str(), Duration::from_millis(200)).unwrap();
    let second = peer.send_timeout("small", "", Duration::from_millis(200)).unwrap();
    peer.notify("note", "after").unwrap();
    let error = first.wait().unwrap_err();
    assert_eq!(error.code(), ErrorCode::Timeout);
    assert!(error.to_string().ends_with("a late reply will be dropped. If the child is only slow, raise PeerOptions::timeout or use request_timeout"), "{error}");
    let error = second.wait().unwrap_err();
    assert_eq!(
        (error.code(), error.to_string().as_str()),
        (
            ErrorCode::Timeout,
            "no reply to `small` request 2 within 200 ms: it was never written (it is not sent now), as the child \
             was not taking what was written before it; is the child reading its stdin?"
        )
    );
    // Echoed once the child reads, after the notification's echo.
    assert_eq!(peer.request("last", "").unwrap(), reply("last", "", 3));
    assert_eq!(messages.try_recv(), Ok(Envelope::new("note", "after")));
    assert_eq!(messages.try_recv(), Err(TryRecvError::Empty));
    let stats = peer.stats();
    assert_eq!(
        (stats.requests, stats.notifications, stats.timeouts, stats.late_replies_dropped, stats.replies),
        (2, 1, 2, 1, 1)
    );
}

#[test]
fn a_child_that_closes_its_stdin_and_runs_on_fails_the_unwritten_requests_with_io() {
    // Our writes meet a pipe nobody reads (EPIPE) while the child lives on with its stdout
    // open: after a moment to see whether it exits, the request fails with the write's
    // error, and so does every later call.
    let script = "exec 0<&-; echo closed >&2; exec sleep 30";
    let (tx, closed) = std::sync::mpsc::channel();
    let stderr = StderrMode::Sink(Box::new(move |_: &[u8]| {
        let _ = tx.send(());
    }));
    let peer = shell(script, PeerOptions { grace: Duration::from_millis(100), stderr, ..options() });
    // Written before the child closed its stdin, a line would sit in the pipe, unread.
    closed.recv_timeout(PATIENCE).unwrap();
    let error = peer.request("q", "").unwrap_err();
    let text = format!(
        "cannot write to child `sh -c {script}`: Broken pipe (os error 32); close this Peer and start a new one"
    );
    assert_eq!((error.code(), error.to_string()), (ErrorCode::Io, text.clone()));
    let later = peer.notify("n", "").unwrap_err();
    assert_eq!((later.code(), later.to_string()), (ErrorCode::Io, text));
    assert_eq!(peer.close().unwrap().signal(), Some(15));
}

#[test]
fn a_peer_and_its_handles_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Peer>();
    fn sendable<T: Send>() {}
    sendable::<rust_ts_ipc::Pending>();
    sendable::<rust_ts_ipc::Unsolicited>();
}

#[test]
fn a_malformed_reply_with_a_pending_id_fails_that_request_with_error_reply() {
    // As the Node peer does: the line's error, carrying the id it could still read, answers
    // the request (before the fix it was unsolicited and the request waited out its timeout).
    // `cat` keeps stdout open (and echoes nothing: nothing more is sent).
    let script = r#"read l; echo '{"id":1,"data":"x"}'; exec cat"#;
    let peer = shell(script, options());
    let messages = peer.take_messages().unwrap();
    let error = peer.request_timeout("q", "", Duration::from_secs(10)).unwrap_err();
    let text = "line 1: missing field `msg_type`: `{\"id\":1,\"data\":\"x\"}`";
    assert_eq!(
        (error.code(), error.to_string()),
        (ErrorCode::ErrorReply, format!("the child answered request 1 with an error: {text}"))
    );
    assert_eq!(error.reply(), Some(&reply("error", text, 1)));
    // Answered, so not also unsolicited.
    assert_eq!(messages.try_recv(), Err(TryRecvError::Empty));
    let stats = peer.stats();
    assert_eq!((stats.replies, stats.unsolicited), (1, 0));
}

/// Set in the environment of the child test process that `unsolicited_queue_is_bounded_in_bytes`
/// starts, so that only there the flood runs (its memory is measured on its own).
const FLOOD_HELPER: &str = "RUST_TS_IPC_TEST_FLOOD_HELPER";

#[test]
fn unsolicited_queue_is_bounded_in_bytes_not_only_in_messages() {
    // The flood runs in a process of its own (this test binary, running the helper below) so
    // that its peak memory is its own and not that of the tests running beside this one.
    let exe = std::env::current_exe().unwrap();
    let mut helper = Command::new(exe)
        .args(["--exact", "unsolicited_flood_helper", "--ignored", "--nocapture", "--test-threads=1"])
        .env(FLOOD_HELPER, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let peak = support::watch_peak_rss_kib(i32::try_from(helper.id()).unwrap());
    let out = std::io::read_to_string(helper.stdout.take().unwrap()).unwrap();
    let err = std::io::read_to_string(helper.stderr.take().unwrap()).unwrap();
    let status = helper.wait().unwrap();
    let peak = peak.join().unwrap();
    eprintln!("peer peak RSS through 64 unsolicited lines of 4 MiB: {peak} KiB");
    // 64 lines of 4 MiB never taken grew the peak by 261 MiB before the fix. Now at most
    // the default 32 MiB wait, plus one line being framed and decoded (41 MiB measured):
    // bound generously.
    assert!(peak < 96 * 1024, "peak RSS {peak} KiB through 64 unsolicited lines of 4 MiB\n{err}");
    assert!(status.success(), "{out}\n{err}");
    assert!(out.contains("1 passed"), "the helper did not run:\n{out}");
}

#[test]
#[ignore = "run by unsolicited_queue_is_bounded_in_bytes_not_only_in_messages in a process of its own"]
fn unsolicited_flood_helper() {
    if std::env::var_os(FLOOD_HELPER).is_none() {
        return;
    }
    let script = r#"read l; i=0; while [ $i -lt 64 ]; do i=$((i+1))
        printf '{"msg_type":"n","data":"'; head -c 4194304 /dev/zero | tr '\0' x; printf '"}\n'; done
        echo '{"msg_type":"r","data":"ok","id":1}'; exec cat >/dev/null"#;
    let peer = shell(script, options());
    // The reply comes after the flood: once it is here, every flood line has been dispatched.
    assert_eq!(peer.request_timeout("q", "", PATIENCE).unwrap(), reply("r", "ok", 1));
    let stats = peer.stats();
    eprintln!("{stats:?}");
    assert_eq!(stats.unsolicited + stats.unsolicited_dropped, 64);
    assert!(stats.unsolicited_dropped > 0);
}

// --- The msgpack encoding ----------------------------------------------------------------

fn msgpack() -> PeerOptions {
    PeerOptions { encoding: Encoding::Msgpack, ..options() }
}

/// `bytes` as a `printf` format: every byte as an octal escape.
fn printf_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\{b:03o}")).collect()
}

/// One frame of `body` (its 4-byte little-endian length, then the body).
fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    rust_ts_ipc::write_frame(&mut out, body).unwrap();
    out
}

#[test]
fn msgpack_answers_requests_with_bytes_and_strings_alike_and_delivers_the_exit_as_unsolicited() {
    let peer = serve(&["--encoding", "msgpack"], msgpack());
    let messages = peer.take_messages().unwrap();
    assert_eq!(peer.request("greeting", "hi").unwrap(), reply("response", "Hello from TypeScript!", 1));
    // 1 MiB of every byte value, echoed by the bytes service without any text conversion.
    let big: Vec<u8> = (0..1_048_576_u32).map(|i| (i % 256) as u8).collect();
    let echoed = peer.request("bytes", big.clone()).unwrap();
    assert_eq!(echoed, Envelope::new("bytes", Data::Bytes(big)).with_id(2));
    assert_eq!(peer.request("bytes", Data::Bytes(Vec::new())).unwrap().data, Data::Bytes(Vec::new()));
    assert_eq!(peer.request("markdown", "# Hi").unwrap(), reply("html", "<h1>Hi</h1>\n", 4));
    for i in 1..=5u64 {
        let text = format!("m{i}");
        assert_eq!(peer.request("data", text.as_str()).unwrap(), reply("ack", &format!("Acknowledged: {text}"), i + 4));
    }
    assert_eq!(messages.recv_timeout(PATIENCE).unwrap(), reply("exit", "Goodbye from TypeScript!", 9));
    assert_eq!(messages.recv_timeout(PATIENCE), Err(RecvTimeoutError::Disconnected));
    assert_eq!(peer.close().unwrap().code(), Some(0));
    assert_eq!(
        peer.stats(),
        PeerStats { requests: 9, replies: 9, unsolicited: 1, peak_in_flight: 1, ..PeerStats::default() }
    );
}

#[test]
fn msgpack_error_replies_name_the_frame_and_pipelined_requests_match_their_ids() {
    let peer = serve(&["--encoding", "msgpack", "--exit-after", "0"], msgpack());
    let error = peer.request("nope", "x").unwrap_err();
    let text = "frame 1: unknown msg_type `nope`; expected greeting, data, exit, markdown or bytes";
    assert_eq!((error.code(), error.reply()), (ErrorCode::ErrorReply, Some(&reply("error", text, 1))));
    let error = peer.request("bytes", "not bytes").unwrap_err();
    assert_eq!(
        error.reply().and_then(|r| r.data.as_str()),
        Some("frame 2: field `data` must be bytes, got string: `83a86d73675f74797065a56279746573…`")
    );
    let pending: Vec<_> = (0..200u32).map(|i| peer.send("bytes", i.to_le_bytes().to_vec()).unwrap()).collect();
    for (i, p) in (0..200u32).zip(pending) {
        assert_eq!(p.wait().unwrap().data, Data::Bytes(i.to_le_bytes().to_vec()));
    }
}

#[test]
fn bytes_are_invalid_argument_under_json_and_nothing_is_sent() {
    let peer = serve(&[], options());
    for error in [peer.request("bytes", vec![1_u8, 2]).unwrap_err(), peer.notify("bytes", vec![1_u8]).unwrap_err()] {
        assert_eq!(
            (error.code(), error.to_string()),
            (
                ErrorCode::InvalidArgument,
                "`bytes`: data is bytes, which the json encoding cannot carry; use the msgpack encoding (`encoding \
                 msgpack`, a MessagePack `bin`)"
                    .to_owned()
            )
        );
    }
    // Nothing went out: the next request takes id 1.
    assert_eq!(peer.request("greeting", "hi").unwrap(), reply("response", "Hello from TypeScript!", 1));
    assert_eq!(peer.stats().requests, 1);
}

#[test]
fn msgpack_notifications_are_frames_without_an_id() {
    // The child echoes the first frame it reads (its length is known here) back as it came.
    let note = Envelope::new("note", Data::Bytes(vec![0, 255, 10])).to_frame().unwrap();
    let script = format!("head -c {} ; exec cat >/dev/null", note.len());
    let peer = shell(&script, msgpack());
    let messages = peer.take_messages().unwrap();
    peer.notify("note", vec![0_u8, 255, 10]).unwrap();
    assert_eq!(messages.recv_timeout(PATIENCE).unwrap(), Envelope::new("note", Data::Bytes(vec![0, 255, 10])));
    assert_eq!(peer.stats().notifications, 1);
}

#[test]
fn frames_that_are_not_protocol_are_unsolicited_errors_naming_the_frame_and_the_peer_keeps_going() {
    let request = Envelope::new("q", "").with_id(1).to_frame().unwrap();
    // Frame 1: not a map; 2: empty; 3: over the 64-byte limit; 4: a reply without data that
    // still shows id 1 (it answers request 1); 5: the good reply, now too late; 6: a map with
    // a byte left over.
    let no_data = [&[0x82, 0xa8][..], b"msg_type", &[0xa1, b'r', 0xa2, b'i', b'd', 0x01]].concat();
    let good = Envelope::new("r", "ok").with_id(1).to_frame().unwrap();
    let output =
        [frame(&[0x91, 0xa1, 0x78]), frame(&[]), frame(&[0xc0; 100]), frame(&no_data), good, frame(&[0x80, 0xc0])]
            .concat();
    let script =
        format!("head -c {} >/dev/null; printf '{}'; exec cat >/dev/null", request.len(), printf_bytes(&output));
    let peer = shell(&script, PeerOptions { max_frame_bytes: 64, ..msgpack() });
    let messages = peer.take_messages().unwrap();
    let error = |text: &str, id: Option<u64>| Envelope { msg_type: "error".into(), data: Data::from(text), id };
    let failed = peer.request("q", "").unwrap_err();
    let broken = "frame 4: missing field `data`: `82a86d73675f74797065a172a2696401`";
    assert_eq!((failed.code(), failed.reply()), (ErrorCode::ErrorReply, Some(&error(broken, Some(1)))));
    assert_eq!(messages.recv_timeout(PATIENCE).unwrap(), error("frame 1: not a map: `91a178`", None));
    assert_eq!(messages.recv_timeout(PATIENCE).unwrap(), error("frame 2: empty frame", None));
    assert_eq!(
        messages.recv_timeout(PATIENCE).unwrap(),
        error("frame 3: frame of 100 bytes exceeds the 64-byte limit", None)
    );
    assert_eq!(messages.recv_timeout(PATIENCE).unwrap(), reply("r", "ok", 1));
    assert_eq!(
        messages.recv_timeout(PATIENCE).unwrap(),
        error("frame 6: 1 byte left over after the map: `80c0`", None)
    );
    let stats = peer.stats();
    assert_eq!((stats.unsolicited, stats.lines_too_long, stats.replies), (5, 1, 1));
}

#[test]
fn a_child_that_exits_inside_a_frame_fails_the_pending_request_and_the_cut_frame_is_named() {
    let request = Envelope::new("q", "").with_id(1).to_frame().unwrap();
    // A header announcing 5 bytes, then 2 of them, then exit.
    let script = format!("head -c {} >/dev/null; printf '\\005\\000\\000\\000ab'; exit 7", request.len());
    let peer = shell(&script, msgpack());
    let messages = peer.take_messages().unwrap();
    let failed = peer.request("q", "").unwrap_err();
    assert_eq!(failed.code(), ErrorCode::PeerExited);
    assert_eq!(failed.exit_status().and_then(|s| s.code()), Some(7));
    assert_eq!(
        messages.recv_timeout(PATIENCE).unwrap(),
        Envelope::new("error", "frame 1: the stream ended inside the frame, after 2 of its 5 bytes")
    );
    assert_eq!(messages.recv_timeout(PATIENCE), Err(RecvTimeoutError::Disconnected));
}

// --- Big bins received apart from their frames --------------------------------------------

/// A shell command writing the frame of `{msg_type, data: bin of len zero bytes, id}` (len of
/// at least 64 KiB: a bin32), the payload from `/dev/zero`; the frame's length; and the length
/// of what comes before the payload (the header and the map up to the bin's).
fn zero_bin_frame(msg_type: &str, len: usize, id: u64) -> (String, usize, usize) {
    let frame = Envelope::new(msg_type, Data::Bytes(vec![0; len])).with_id(id).to_frame().unwrap();
    let data = frame.windows(5).position(|w| w == b"\xa4data").unwrap() + 5;
    assert_eq!(frame[data], 0xc6, "a bin32");
    let (head, tail) = (&frame[..data + 5], &frame[data + 5 + len..]);
    let script = format!("printf '{}'; head -c {len} /dev/zero; printf '{}'", printf_bytes(head), printf_bytes(tail));
    (script, frame.len(), head.len())
}

/// Sends bins of every size around the size from which a reply's bin is read apart (64 KiB)
/// and up to 3 MiB, 8 in flight, to `cat`, which writes each request back as it came: the
/// same frame, so each is the reply to itself.
fn big_bins_come_back_whole(options: PeerOptions) {
    let peer = shell("exec cat", options);
    let sizes = [0, 65_535, 65_536, 65_537, 98_304, 1 << 20, (3 << 20) + 7, 65_536, 1 << 20, 200_000];
    let payload = |n: usize| -> Vec<u8> { (0..n).map(|i| (i % 251) as u8).collect() };
    let mut pending = VecDeque::new();
    for (i, &n) in sizes.iter().enumerate() {
        pending.push_back((n, peer.send("bytes", payload(n)).unwrap()));
        if pending.len() == 8 || i + 1 == sizes.len() {
            while let Some((n, p)) = pending.pop_front() {
                let id = p.id();
                assert_eq!(p.wait().unwrap(), Envelope::new("bytes", Data::Bytes(payload(n))).with_id(id), "{n} bytes");
            }
        }
    }
    let stats = peer.stats();
    assert_eq!((stats.replies, stats.unsolicited, stats.lines_too_long), (10, 0, 0));
    peer.close().unwrap();
}

#[test]
fn big_bins_echoed_by_cat_come_back_whole_as_the_replies_to_their_requests() {
    big_bins_come_back_whole(msgpack());
}

#[test]
fn big_bins_come_back_whole_under_a_hang_watchdog_too() {
    // The watchdog must hear of every read: the payload is then read through the decoder's
    // read space, not in one blocking read.
    big_bins_come_back_whole(PeerOptions { hang: Some(Duration::from_secs(60)), ..msgpack() });
}

#[test]
fn a_child_killed_inside_a_big_bin_fails_the_pending_request_and_the_cut_frame_is_named() {
    let request = Envelope::new("q", "").with_id(1).to_frame().unwrap();
    let (frame, length, head) = zero_bin_frame("r", 1 << 20, 1);
    // The header, the map up to the bin, 200000 bytes of its payload, then SIGKILL.
    let script =
        format!("head -c {} >/dev/null; {{ {frame}; }} | head -c {}; kill -KILL $$", request.len(), head + 200_000);
    let peer = shell(&script, msgpack());
    let messages = peer.take_messages().unwrap();
    let failed = peer.request("q", "").unwrap_err();
    assert_eq!(failed.code(), ErrorCode::PeerExited);
    assert_eq!(failed.exit_status().and_then(|s| s.signal()), Some(9));
    let text =
        format!("frame 1: the stream ended inside the frame, after {} of its {} bytes", head - 4 + 200_000, length - 4);
    assert_eq!(messages.recv_timeout(PATIENCE).unwrap(), Envelope::new("error", text.as_str()));
    assert_eq!(messages.recv_timeout(PATIENCE), Err(RecvTimeoutError::Disconnected));
}

#[test]
fn an_over_long_big_bin_is_skipped_and_the_big_bin_after_it_is_the_reply() {
    let request = Envelope::new("q", "").with_id(1).to_frame().unwrap();
    let (over, over_length, _) = zero_bin_frame("n", 1 << 20, 7);
    let (reply_frame, ..) = zero_bin_frame("r", 300_000, 1);
    let script = format!("head -c {} >/dev/null; {over}; {reply_frame}; exec cat >/dev/null", request.len());
    let peer = shell(&script, PeerOptions { max_frame_bytes: 512 * 1024, ..msgpack() });
    let messages = peer.take_messages().unwrap();
    assert_eq!(peer.request("q", "").unwrap(), Envelope::new("r", Data::Bytes(vec![0; 300_000])).with_id(1));
    let text = format!("frame 1: frame of {} bytes exceeds the 524288-byte limit", over_length - 4);
    assert_eq!(messages.recv_timeout(PATIENCE).unwrap(), Envelope::new("error", text.as_str()));
    let stats = peer.stats();
    assert_eq!((stats.replies, stats.unsolicited, stats.lines_too_long), (1, 1, 1));
}

/// The frame of `{msg_type, data: bin of len zero bytes, id}` (len of at least 64 KiB) as the
/// `printf` formats of what comes before its payload and of what comes after it.
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
    (printf_bytes(&frame[..data + 5]), printf_bytes(&frame[data + 5 + len..]))
}

#[test]
fn a_big_bin_trickling_in_for_longer_than_the_hang_limit_is_not_a_hang() {
    // Every piece of the payload is heard: the watchdog must not see the payload as silence.
    let request = Envelope::new("q", "").with_id(1).to_frame().unwrap();
    let (head, tail) = zero_bin_parts("r", 6 * 65_536, Some(1));
    let script = format!(
        "head -c {} >/dev/null; printf '{head}'; for i in 1 2 3 4 5 6; do head -c 65536 /dev/zero; sleep 0.2; done; \
         printf '{tail}'; exec cat >/dev/null",
        request.len()
    );
    let peer = shell(&script, PeerOptions { hang: Some(Duration::from_millis(700)), ..msgpack() });
    assert_eq!(peer.request("q", "").unwrap(), Envelope::new("r", Data::Bytes(vec![0; 6 * 65_536])).with_id(1));
    peer.close().unwrap();
}

#[test]
fn a_big_bin_reply_to_a_timed_out_request_is_dropped_and_an_unsolicited_big_bin_and_the_next_reply_come_whole() {
    // Reply 1 stops inside its payload until request 2 arrives (request 1 has timed out by
    // then); then the rest of it, an unsolicited big bin, and reply 2, back to back.
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
    let peer = shell(&script, msgpack());
    let messages = peer.take_messages().unwrap();
    let e = peer.request_timeout("q", "", Duration::from_millis(100)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Timeout);
    assert_eq!(peer.request("q", "").unwrap(), Envelope::new("r", Data::Bytes(vec![0; 200_000])).with_id(2));
    assert_eq!(messages.recv_timeout(PATIENCE).unwrap(), Envelope::new("n", Data::Bytes(vec![0; 100_000])));
    let stats = peer.stats();
    assert_eq!((stats.late_replies_dropped, stats.replies, stats.unsolicited, stats.timeouts), (1, 1, 1, 1));
    peer.close().unwrap();
}

#[test]
fn a_child_hung_inside_a_big_bin_is_restarted_the_cut_frame_is_named_and_the_next_child_answers_big_bins() {
    // The first child stops inside its reply's payload and hangs; the watchdog kills it, the
    // peer starts `cat`, which echoes each request as its reply.
    let request = Envelope::new("q", "").with_id(1).to_frame().unwrap();
    let (head, _) = zero_bin_parts("r", 1 << 20, Some(1));
    let reply_len = Envelope::new("r", Data::Bytes(vec![0; 1 << 20])).with_id(1).to_frame().unwrap().len();
    let hung =
        format!("head -c {} >/dev/null; printf '{head}'; head -c 200000 /dev/zero; exec sleep 30", request.len());
    let made = Arc::new(Mutex::new(0));
    let counted = Arc::clone(&made);
    let make = move || {
        let mut n = counted.lock().unwrap();
        *n += 1;
        let mut command = Command::new("sh");
        command.args(["-c", if *n == 1 { hung.as_str() } else { "exec cat" }]);
        command
    };
    let options = PeerOptions {
        hang: Some(Duration::from_millis(300)),
        grace: Duration::from_millis(200),
        restart: Some(rust_ts_ipc::supervise::RestartPolicy {
            base: Duration::from_millis(1),
            cap: Duration::from_millis(2),
            max_restarts: 3,
            window: Duration::from_secs(60),
        }),
        ..msgpack()
    };
    let peer = Peer::spawn_with(make, options).unwrap();
    let messages = peer.take_messages().unwrap();
    let e = peer.request("q", "").unwrap_err();
    assert_eq!(e.code(), ErrorCode::PeerExited, "{e}");
    assert!(e.to_string().contains("hung: nothing came from it for "), "{e}");
    let head_len = head.len() / 4;
    let text = format!(
        "frame 1: the stream ended inside the frame, after {} of its {} bytes",
        head_len - 4 + 200_000,
        reply_len - 4
    );
    assert_eq!(messages.recv_timeout(PATIENCE).unwrap(), Envelope::new("error", text.as_str()));
    let payload: Vec<u8> = (0..(1 << 20) + 3).map(|i| (i % 251) as u8).collect();
    let echoed = peer.request("bytes", payload.clone()).unwrap();
    assert_eq!((echoed.msg_type.as_str(), echoed.data), ("bytes", Data::Bytes(payload)));
    assert_eq!(*made.lock().unwrap(), 2);
    let stats = peer.stats();
    assert_eq!((stats.replies, stats.unsolicited), (1, 1));
    peer.close().unwrap();
}
