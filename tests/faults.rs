//! Faults with real processes: children that die (mid-conversation, mid-line, before the
//! greeting), close their stdout, hold it open after exiting, write garbage, flood stderr or
//! stdout, ignore EOF and SIGTERM; signals to the demo; the demo's own sudden death; hostile
//! input to `serve`. Each test checks the exit code, the one-line verdict, and that no process
//! the demo started is left alive (the child and everything in its process group).
// Linux only: signals, process groups and /proc.
#![cfg(target_os = "linux")]
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::{group_is_dead, is_dead, peak_rss_kib, ts_child, watch_peak_rss_kib, Running, BIN};

const SEED_OUTPUT: &str = "\
Rust: Sending initial message
Received from TS: Message { msg_type: \"response\", data: \"Hello from TypeScript!\" }
Received from TS: Message { msg_type: \"ack\", data: \"Acknowledged: Message 1 from Rust\" }
Received from TS: Message { msg_type: \"ack\", data: \"Acknowledged: Message 2 from Rust\" }
Received from TS: Message { msg_type: \"ack\", data: \"Acknowledged: Message 3 from Rust\" }
Received from TS: Message { msg_type: \"ack\", data: \"Acknowledged: Message 4 from Rust\" }
Received from TS: Message { msg_type: \"ack\", data: \"Acknowledged: Message 5 from Rust\" }
Received from TS: Message { msg_type: \"exit\", data: \"Goodbye from TypeScript!\" }
Received exit signal from TypeScript
Communication complete!
";

const MIB: u64 = 1024;

/// A child that has read the greeting and then waits on stdin as `serve` (exits on EOF).
fn serve_waiting() -> String {
    format!("echo $$ >&2; read l; exec {BIN} serve")
}

/// Asserts the child and everything in its process group are gone.
fn assert_nothing_left(child: i32) {
    assert!(is_dead(child), "child {child} is still running");
    assert!(group_is_dead(child), "processes left in the child's group {child}");
}

on_both_runtimes! {
fn ctrl_c_sigterm_and_sighup_stop_the_child_and_exit_128_plus_the_signal() {
    for (signal, code) in [(Signal::SIGINT, 130), (Signal::SIGTERM, 143), (Signal::SIGHUP, 129)] {
        let demo = Running::demo_with_shell(&["--timeout-ms", "60000"], &serve_waiting());
        let child = demo.child_pid();
        demo.signal(signal);
        let done = demo.finish();
        assert_eq!(done.code, Some(code), "{signal}: {}", done.stderr);
        let verdict = format!(
            "rust-ts-ipc: interrupted by {signal} while waiting for the reply to the greeting; child `sh -c {}` \
             exited with exit status: 0\n",
            serve_waiting()
        );
        assert!(done.stderr.ends_with(&verdict), "{signal}: {}", done.stderr);
        assert_eq!(done.stdout, "Rust: Sending initial message\n");
        assert_nothing_left(child);
    }
}

/// The same signals with a child that ignores both EOF and SIGTERM: the whole sequence runs,
/// up to SIGKILL, before the demo exits.
fn a_signal_escalates_to_sigkill_for_a_child_that_ignores_eof_and_sigterm() {
    let script = "trap '' TERM; echo $$ >&2; exec sleep 60";
    for (signal, code) in [(Signal::SIGINT, 130), (Signal::SIGTERM, 143), (Signal::SIGHUP, 129)] {
        let demo = Running::demo_with_shell(&["--timeout-ms", "60000", "--grace-ms", "300"], script);
        let child = demo.child_pid();
        demo.signal(signal);
        let done = demo.finish();
        assert_eq!(done.code, Some(code), "{signal}: {}", done.stderr);
        let shown = format!("child `sh -c {script}`");
        let steps = [
            format!("rust-ts-ipc: {signal} received; stopping {shown}\n"),
            format!("rust-ts-ipc: {shown} is being stopped (interrupted); sending SIGTERM\n"),
            format!("rust-ts-ipc: {shown} did not exit within 300 ms of SIGTERM; sending SIGKILL\n"),
            format!(
                "rust-ts-ipc: interrupted by {signal} while waiting for the reply to the greeting; {shown} was \
                 stopped with SIGKILL (signal: 9 (SIGKILL))\n"
            ),
        ];
        let ours: String =
            done.stderr.lines().filter(|l| !l.starts_with("[child] ")).map(|l| format!("{l}\n")).collect();
        assert_eq!(ours, steps.concat(), "{signal}");
        assert_nothing_left(child);
    }
}

/// After the goodbye the demo waits up to `--timeout-ms` for the child to exit; a first Ctrl-C
/// cuts that wait to the grace period instead of being ignored until the timeout.
fn a_first_ctrl_c_after_the_goodbye_stops_a_lingering_child_within_the_grace_period() {
    let script = r#"echo $$ >&2; read l; echo '{"msg_type":"response","data":"Hello from TypeScript!"}'
        for i in 1 2 3 4 5; do read l; echo "{\"msg_type\":\"ack\",\"data\":\"Acknowledged: Message $i from Rust\"}"; done
        echo '{"msg_type":"exit","data":"Goodbye from TypeScript!"}'; echo said-goodbye >&2; exec sleep 60"#;
    let demo = Running::demo_with_shell(&["--timeout-ms", "60000", "--grace-ms", "300"], script);
    let child = demo.child_pid();
    demo.wait_for_line(|l| l == "[child] said-goodbye");
    let signalled = Instant::now();
    demo.signal(Signal::SIGINT);
    let done = demo.finish();
    assert_eq!(done.code, Some(130), "{}", done.stderr);
    assert!(signalled.elapsed() < Duration::from_secs(20), "took {:?}: {}", signalled.elapsed(), done.stderr);
    assert!(done.stderr.contains("is being stopped (interrupted); sending SIGTERM"), "{}", done.stderr);
    assert_nothing_left(child);
}

fn shutdown_closes_stdin_then_sends_sigterm_then_sigkill() {
    let script = "trap 'echo got-TERM >&2' TERM; echo $$ >&2; while read l; do :; done; echo got-EOF >&2; \
                  while :; do sleep 0.05; done";
    let demo = Running::demo_with_shell(&["--timeout-ms", "300", "--grace-ms", "1000"], script);
    let child = demo.child_pid();
    let done = demo.finish();
    assert_eq!(done.code, Some(5), "{}", done.stderr);
    let at = |needle: &str| done.stderr.find(needle).unwrap_or_else(|| panic!("no {needle:?} in:\n{}", done.stderr));
    let steps = [
        "child did not answer within 300 ms while the demo was waiting for the reply to the greeting",
        "[child] got-EOF",
        "did not exit within 1000 ms of its stdin closing; sending SIGTERM",
        "[child] got-TERM",
        "did not exit within 1000 ms of SIGTERM; sending SIGKILL",
    ];
    let positions: Vec<usize> = steps.iter().map(|s| at(s)).collect();
    assert!(positions[1..].windows(2).all(|w| w[0] < w[1]), "out of order:\n{}", done.stderr);
    assert!(done
        .stderr
        .ends_with("child did not answer within 300 ms while the demo was waiting for the reply to the greeting\n"));
    assert_nothing_left(child);
}

fn a_second_ctrl_c_skips_the_grace_periods() {
    // Ignores both EOF and SIGTERM: only SIGKILL ends it. Without the second Ctrl-C the demo
    // would wait 2 × 20 s.
    let demo = Running::demo_with_shell(
        &["--timeout-ms", "60000", "--grace-ms", "20000"],
        "trap '' TERM; echo $$ >&2; exec sleep 120",
    );
    let child = demo.child_pid();
    demo.signal(Signal::SIGINT);
    demo.wait_for_line(|l| l.starts_with("rust-ts-ipc: SIGINT received; stopping child"));
    demo.signal(Signal::SIGINT);
    let done = demo.finish();
    assert_eq!(done.code, Some(130), "{}", done.stderr);
    assert!(done.stderr.contains("is being stopped at once (interrupted again); sending SIGKILL"), "{}", done.stderr);
    assert!(done.stderr.contains("was stopped with SIGKILL (signal: 9 (SIGKILL))"), "{}", done.stderr);
    assert!(done.took < Duration::from_secs(15), "took {:?}", done.took);
    assert_nothing_left(child);
}

fn killing_the_demo_outright_leaves_no_orphan_because_the_child_exits_on_eof() {
    let mut children = vec![serve_waiting()];
    if let Some(script) = ts_child() {
        children.push(format!("echo $$ >&2; read l; exec node {}", script.display()));
    }
    for script in children {
        let demo = Running::demo_with_shell(&["--timeout-ms", "60000"], &script);
        let child = demo.child_pid();
        demo.signal(Signal::SIGKILL);
        let done = demo.finish();
        assert_eq!(done.code, None, "{script}: killed, not exited");
        assert_nothing_left(child);
    }
}

fn child_killed_mid_conversation_is_reported_with_its_signal_and_what_was_pending() {
    let script = r#"read l; echo '{"msg_type":"response","data":"Hello from TypeScript!"}';
        read l; echo '{"msg_type":"ack","data":"Acknowledged: Message 1 from Rust"}';
        read l; echo $$ >&2; kill -9 $$"#;
    let demo = Running::demo_with_shell(&[], script);
    let child = demo.child_pid();
    let done = demo.finish();
    assert_eq!(done.code, Some(4), "{}", done.stderr);
    assert_eq!(done.stdout.lines().count(), 3, "{}", done.stdout);
    assert!(
        done.stderr.ends_with(
            "was killed by signal: 9 (SIGKILL) while the demo was waiting for the acknowledgement of message 2 of 5\n"
        ),
        "{}",
        done.stderr
    );
    assert_nothing_left(child);
}

fn child_killed_mid_line_is_reported_with_the_cut_line() {
    let demo = Running::demo_with_shell(&[], r#"echo $$ >&2; read l; printf '{"msg_type":"resp'; kill -9 $$"#);
    let child = demo.child_pid();
    let done = demo.finish();
    assert_eq!(done.code, Some(4), "{}", done.stderr);
    assert!(
        done.stderr.ends_with(
            "was killed by signal: 9 (SIGKILL) while the demo was waiting for the reply to the greeting; \
             its output ends inside line 1 (17 bytes, no newline): `{\"msg_type\":\"resp`\n"
        ),
        "{}",
        done.stderr
    );
    assert_nothing_left(child);
}

fn a_partial_line_then_a_clean_exit_is_an_early_end_not_a_message() {
    // Even a complete JSON object is not a message until its newline arrives.
    let reply = r#"{"msg_type":"response","data":"Hello from TypeScript!"}"#;
    let demo = Running::demo_with_shell(&[], &format!("echo $$ >&2; read l; printf '%s' '{reply}'"));
    let child = demo.child_pid();
    let done = demo.finish();
    assert_eq!(done.code, Some(4), "{}", done.stderr);
    assert!(
        done.stderr.ends_with(
            "exited with exit status: 0 while the demo was waiting for the reply to the greeting; its output ends \
             inside line 1 (55 bytes, no newline): `{\"msg_type\":\"response\",\"data\":\"Hello fro…`\n"
        ),
        "{}",
        done.stderr
    );
    assert_eq!(done.stdout, "Rust: Sending initial message\n");
    assert_nothing_left(child);
}

fn child_exiting_before_reading_the_greeting_is_an_early_end() {
    let demo = Running::demo_with_shell(&[], "echo $$ >&2; exit 0");
    let child = demo.child_pid();
    let done = demo.finish();
    assert_eq!(done.code, Some(4), "{}", done.stderr);
    assert!(
        done.stderr.ends_with(
            "rust-ts-ipc: child `sh -c echo $$ >&2; exit 0` exited with exit status: 0 while the demo was waiting for \
             the reply to the greeting\n"
        ),
        "{}",
        done.stderr
    );
    assert_nothing_left(child);
}

fn child_that_closes_stdout_but_keeps_running_is_stopped() {
    let demo = Running::demo_with_shell(&["--grace-ms", "300"], "exec >&-; echo $$ >&2; exec sleep 60");
    let child = demo.child_pid();
    let done = demo.finish();
    assert_eq!(done.code, Some(4), "{}", done.stderr);
    assert!(
        done.stderr.ends_with(
            "closed its stdout but kept running, and was stopped with SIGTERM (signal: 15 (SIGTERM)), while the demo \
             was waiting for the reply to the greeting\n"
        ),
        "{}",
        done.stderr
    );
    assert_nothing_left(child);
}

fn child_that_exits_while_a_process_it_started_holds_its_stdout_is_noticed_and_swept() {
    let demo = Running::demo_with_shell(&["--timeout-ms", "60000"], "echo $$ >&2; sleep 60 & exit 0");
    let child = demo.child_pid();
    let done = demo.finish();
    assert_eq!(done.code, Some(4), "{}", done.stderr);
    assert!(
        done.stderr.ends_with(
            "exited with exit status: 0 but left its stdout open (held by a process it started), while the demo was \
             waiting for the reply to the greeting\n"
        ),
        "{}",
        done.stderr
    );
    // Noticed ~0.5 s after the exit (the time it waits for a last EOF); 4× that for a noisy machine.
    assert!(done.took < Duration::from_secs(2), "took {:?} to notice the exit", done.took);
    assert_nothing_left(child);
}

fn node_missing_from_path_is_named_even_without_a_built_app() {
    let out = support::demo_command().args(["--", "node", "main.js"]).env("PATH", "/nonexistent").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert_eq!(stderr, "rust-ts-ipc: cannot start `node main.js`: `node` was not found on PATH\n");
}

fn bad_bytes_from_the_child_are_named_with_their_line() {
    // 100 000 levels of nesting, made by the child (too long for a command line).
    let deep = r"head -c 100000 /dev/zero | tr '\0' '['; head -c 100000 /dev/zero | tr '\0' ']'; echo";
    let cases = [
        (r"printf '\377\376\n'".to_owned(), "line 1: invalid UTF-8 at byte 0".to_owned()),
        (
            r#"printf '{"msg_type":"response","data":"a\000b"}\n'"#.to_owned(),
            "line 1: invalid JSON: `{\"msg_type\":\"response\",\"data\":\"a\0b\"}`".to_owned(),
        ),
        (deep.to_owned(), format!("line 1: expected a JSON object, got array: `{}…`", "[".repeat(40))),
        (r#"printf '\n\n{"msg_type":5}\n'"#.to_owned(), "line 3: field `msg_type` must be a string".to_owned()),
    ];
    for (write, verdict) in cases {
        // `cat` exits on EOF, so the shutdown is quick and clean.
        let demo = Running::demo_with_shell(&[], &format!("echo $$ >&2; read l; {write}; exec cat >/dev/null"));
        let child = demo.child_pid();
        let done = demo.finish();
        assert_eq!(done.code, Some(1), "{write}: {}", done.stderr);
        assert!(
            done.stderr.contains(&format!("rust-ts-ipc: child wrote non-protocol output: {verdict}")),
            "{write}: {}",
            done.stderr
        );
        assert_nothing_left(child);
    }
}

fn a_stderr_flood_of_12_mib_is_forwarded_whole_without_stalling_the_conversation() {
    // 6 MiB in 1023-byte lines, then 6 MiB as one line without a newline, then the protocol.
    let script = format!(
        "head -c 6291456 /dev/zero | tr '\\0' e | fold -w 1023 >&2; head -c 6291456 /dev/zero | tr '\\0' E >&2; \
         exec {BIN} serve"
    );
    let done = Running::demo_with_shell(&[], &script).finish();
    assert_eq!(done.code, Some(0), "{}", &done.stderr[done.stderr.len().saturating_sub(500)..]);
    assert_eq!(done.stdout, SEED_OUTPUT);
    let forwarded: String = done.stderr.lines().filter_map(|l| l.strip_prefix("[child] ")).collect();
    assert_eq!(forwarded.bytes().filter(|&b| b == b'e').count(), 6 * 1024 * 1024);
    assert_eq!(forwarded.bytes().filter(|&b| b == b'E').count(), 6 * 1024 * 1024);
}

fn a_long_stderr_line_is_forwarded_as_it_arrives_not_buffered() {
    // 128 MiB on stderr without a newline: the demo passes it on in pieces.
    let script = "echo $$ >&2; head -c 134217728 /dev/zero >&2; echo >&2; echo stderr-done >&2; exec sleep 60";
    let demo = Running::demo_with_shell(&["--timeout-ms", "60000", "--grace-ms", "300"], script);
    let child = demo.child_pid();
    demo.wait_for_line(|l| l == "[child] stderr-done");
    let peak = peak_rss_kib(demo.pid());
    assert!(peak < 32 * MIB, "demo peak RSS {peak} KiB");
    demo.signal(Signal::SIGTERM);
    let done = demo.finish();
    assert_eq!(done.code, Some(143), "{}", &done.stderr[done.stderr.len().saturating_sub(300)..]);
    // Forwarded whole, as one prefixed line: every NUL byte came through.
    assert_eq!(done.stderr_nuls, 134_217_728);
    assert!(done.stderr.contains("\n[child] \0\0\0"), "the long line has its prefix");
    assert_nothing_left(child);
}

fn a_gigabyte_line_without_newline_from_the_child_keeps_the_demo_small() {
    let script = "echo $$ >&2; read l; dd if=/dev/zero bs=1048576 count=1024 status=none; echo streamed >&2; \
                  exec sleep 60";
    let demo = Running::demo_with_shell(&["--timeout-ms", "60000", "--grace-ms", "300"], script);
    let child = demo.child_pid();
    demo.wait_for_line(|l| l == "[child] streamed");
    // All but a pipe buffer of the line has passed through the demo's reader by now.
    let peak = peak_rss_kib(demo.pid());
    eprintln!("demo peak RSS after a 1 GiB line: {peak} KiB");
    assert!(peak < 100 * MIB, "demo peak RSS {peak} KiB");
    demo.signal(Signal::SIGTERM);
    let done = demo.finish();
    assert_eq!(done.code, Some(143), "{}", done.stderr);
    assert_nothing_left(child);
}

/// Lines at the 16 MiB limit, valid (padded with spaces) and one that must be copied to be
/// read (a JSON escape), then more of them than the demo reads: its memory stays within
/// twice the limit plus 16 MiB however many such lines the child sends.
fn a_child_flooding_16_mib_lines_keeps_the_demo_within_twice_the_line_limit() {
    const LIMIT: usize = 16 * 1024 * 1024;
    let padded = |line: String| {
        let mut line = line.into_bytes();
        line.resize(LIMIT, b' ');
        line.push(b'\n');
        line
    };
    let mut flood = padded(r#"{"msg_type":"response","data":"Hello from TypeScript!"}"#.to_owned());
    for i in 1..=5 {
        flood.extend(padded(format!(r#"{{"msg_type":"ack","data":"Acknowledged: Message {i} from Rust"}}"#)));
    }
    let head = r#"{"msg_type":"exit","data":"Goodbye\n"#;
    let mut goodbye = format!("{head}{}\"}}", "x".repeat(LIMIT - head.len() - 2)).into_bytes();
    goodbye.push(b'\n');
    flood.extend(goodbye);
    let dir = std::env::temp_dir().join(format!("rust-ts-ipc-{}-{}-flood", std::process::id(), support::runtime_name()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("lines.ndjson");
    std::fs::write(&file, &flood).unwrap();
    drop(flood);
    // Keeps writing after the fault until the closed pipe stops it; ignores EOF and SIGTERM
    // so the demo stays alive (and measurable) through its whole shutdown.
    let f = file.display();
    let script = format!("echo $$ >&2; read l; trap '' TERM; cat {f} {f} {f}; exec sleep 60");
    let demo = Running::demo_with_shell(&["--timeout-ms", "60000", "--grace-ms", "500"], &script);
    let peak = watch_peak_rss_kib(demo.pid());
    let child = demo.child_pid();
    let done = demo.finish();
    let peak = peak.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("demo peak RSS through a flood of 16 MiB lines: {peak} KiB");
    assert_eq!(done.code, Some(1), "{}", done.stderr);
    assert_eq!(done.stdout.lines().count(), 7, "{}", done.stdout);
    assert!(
        done.stderr.ends_with(
            "rust-ts-ipc: expected Message { msg_type: \"exit\", data: \"Goodbye from TypeScript!\" } from the child, \
             got Message { msg_type: \"exit\", data: \"Goodbye\\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…\" }\n"
        ),
        "{}",
        done.stderr
    );
    assert!(peak <= 48 * MIB, "demo peak RSS {peak} KiB > 2 × 16 MiB + 16 MiB");
    assert_nothing_left(child);
}

fn a_child_flooding_stdout_after_a_fault_meets_a_closed_pipe_not_our_memory() {
    // After the garbage line the demo stops reading: `yes` must die of SIGPIPE (exit 141)
    // while the demo waits out the child's grace period, and the demo must stay small.
    let script = r#"echo $$ >&2; read l; echo garbage; yes '{"msg_type":"ack","data":"flood"}'; echo "yes ended: $?" >&2;
        exec sleep 60"#;
    let demo = Running::demo_with_shell(&["--grace-ms", "1000"], script);
    let child = demo.child_pid();
    demo.wait_for_line(|l| l == "[child] yes ended: 141");
    let peak = peak_rss_kib(demo.pid());
    assert!(peak < 100 * MIB, "demo peak RSS {peak} KiB");
    let done = demo.finish();
    assert_eq!(done.code, Some(1), "{}", done.stderr);
    assert!(
        done.stderr.ends_with("child wrote non-protocol output: line 1: invalid JSON: `garbage`\n"),
        "{}",
        done.stderr
    );
    assert_nothing_left(child);
}
}

/// `serve` (or the Node child) with piped stdin; returns its replies, line by line, as they come.
struct Server {
    name: &'static str,
    child: std::process::Child,
    replies: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Server {
    fn start(name: &'static str, program: &str, args: &[&str]) -> Server {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let replies = BufReader::new(child.stdout.take().unwrap()).lines();
        Server { name, child, replies }
    }

    fn servers() -> Vec<Server> {
        let mut all = vec![Server::start("serve", BIN, &["serve", "--exit-after", "0"])];
        if let Some(script) = ts_child() {
            all.push(Server::start("node", "node", &[script.to_str().unwrap(), "--exit-after", "0"]));
        }
        all
    }

    fn next_reply(&mut self) -> String {
        self.replies.next().unwrap().unwrap()
    }

    fn end(mut self) {
        drop(self.child.stdin.take());
        assert!(self.replies.next().is_none(), "a reply nobody asked for");
        assert_eq!(self.child.wait().unwrap().code(), Some(0));
    }
}

#[test]
fn a_gigabyte_line_into_serve_is_reported_and_dropped_with_bounded_memory() {
    for mut server in Server::servers() {
        let mut stdin = server.child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            let chunk = vec![b'x'; 1024 * 1024];
            for _ in 0..1024 {
                stdin.write_all(&chunk).unwrap();
            }
            stdin.write_all(b"\n{\"msg_type\":\"greeting\",\"data\":\"\",\"id\":2}\n").unwrap();
            stdin
        });
        assert_eq!(
            server.next_reply(),
            r#"{"msg_type":"error","data":"line 1: line of 1073741824 bytes exceeds the 16777216-byte limit"}"#
        );
        assert_eq!(server.next_reply(), r#"{"msg_type":"response","data":"Hello from TypeScript!","id":2}"#);
        server.child.stdin = Some(writer.join().unwrap());
        let peak = peak_rss_kib(i32::try_from(server.child.id()).unwrap());
        eprintln!("{} peak RSS after a 1 GiB line: {peak} KiB", server.name);
        // Node starts at ~45 MiB and frees the chunks it dropped lazily; both stay far from 1 GiB.
        let bound = if server.name == "node" { 150 * MIB } else { 100 * MIB };
        assert!(peak < bound, "{} peak RSS {peak} KiB", server.name);
        server.end();
    }
}

#[test]
fn hostile_json_gets_a_clean_error_reply_and_the_next_line_is_answered() {
    let deep_array = format!("{}{}", "[".repeat(1_000_000), "]".repeat(1_000_000));
    let deep_object = format!("{}1{}", r#"{"a":"#.repeat(100_000), "}".repeat(100_000));
    // Deep nesting where it is ignored is fine; `1.0` takes the decoder's slow path.
    let deep_ignored = format!(r#"{{"msg_type":"data","data":"x","x":{deep_array},"id":1.0}}"#);
    let ack = r#"{"msg_type":"ack","data":"Acknowledged: x","id":1}"#.to_owned();
    let error = |n: usize, text: String| format!(r#"{{"msg_type":"error","data":"line {n}: {text}"}}"#);
    let cases: Vec<(String, String)> = vec![
        (deep_array.clone(), error(1, format!("expected a JSON object, got array: `{}…`", "[".repeat(40)))),
        (deep_object, error(3, format!("missing field `msg_type`: `{}…`", r#"{\"a\":"#.repeat(8)))),
        (deep_ignored, ack),
        (
            "{\"msg_type\":\"data\",\"data\":\"a\0b\"}".to_owned(),
            error(7, r#"invalid JSON: `{\"msg_type\":\"data\",\"data\":\"a\u0000b\"}`"#.to_owned()),
        ),
    ];
    for mut server in Server::servers() {
        for (line, want) in &cases {
            let mut stdin = server.child.stdin.take().unwrap();
            let input = format!("{line}\n{{\"msg_type\":\"greeting\",\"data\":\"\",\"id\":9}}\n");
            let writer = std::thread::spawn(move || {
                stdin.write_all(input.as_bytes()).unwrap();
                stdin
            });
            assert_eq!(&server.next_reply(), want);
            assert_eq!(server.next_reply(), r#"{"msg_type":"response","data":"Hello from TypeScript!","id":9}"#);
            server.child.stdin = Some(writer.join().unwrap());
        }
        server.end();
    }
}

on_both_runtimes! {
/// A signal a moment after the demo starts, while it is starting its child: either the demo
/// dies before there is a child (the signal's default action), or it stops the child the one
/// defined way. Never a child left behind.
fn a_signal_right_at_the_start_never_leaves_the_child_behind() {
    // Ignores EOF (does not read stdin): only a signal to its group stops it. The odd
    // duration names this test's children in /proc.
    let marker = if support::runtime_name() == "tokio" { "31.41592" } else { "31.4159" };
    for i in 0..40u64 {
        let mut demo = support::demo_command()
            .args(["--grace-ms", "100", "--", "sleep", marker])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(250 * (i % 16)));
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(i32::try_from(demo.id()).unwrap()), Signal::SIGTERM).unwrap();
        let status = demo.wait().unwrap();
        assert!(matches!(status.code(), Some(143) | None), "{status}");
    }
    let left = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
            .filter(|cmdline| cmdline == format!("sleep\0{marker}\0").as_bytes())
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while left() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(left(), 0, "children left running");
}

/// A signal while the demo finishes (here: waiting for the child's stderr, which a
/// grandchild outside its group holds open) still means "stopped by a signal".
fn a_signal_while_the_demo_finishes_is_not_swallowed() {
    let script = format!("setsid sleep 2 & exec {BIN} serve");
    let mut demo = support::demo_command()
        .args(["--grace-ms", "300", "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(demo.stdout.take().unwrap());
    let mut line = String::new();
    while line != "Received exit signal from TypeScript\n" {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "the conversation did not finish");
    }
    // `serve` exits on EOF at once; the demo then waits up to 500 ms for the child's stderr.
    std::thread::sleep(Duration::from_millis(150));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(i32::try_from(demo.id()).unwrap()), Signal::SIGTERM).unwrap();
    let out = demo.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{stderr}");
    assert!(
        stderr.ends_with(&format!(
            "rust-ts-ipc: interrupted by SIGTERM while waiting for the end of the conversation; child `sh -c \
             {script}` exited with exit status: 0\n"
        )),
        "{stderr}"
    );
}
}
