//! Drives the real `rust-ts-ipc` binary: `serve` against every conformance vector, and the
//! demo against the real Node child, against `serve` itself, and against children that
//! misbehave in every way the host promises to survive. The demo tests run under both
//! `--runtime`s (`NAME::runtime_thread`, `NAME::runtime_tokio`).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;
#[macro_use]
mod support;

use support::{skip, ts_child};

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_rust-ts-ipc");

/// The seed README's "Example Output", byte for byte (also checked by `.ci/run`).
const SEED_OUTPUT: &str = include_str!("seed-output.txt");

/// Runs the binary with `args` (a demo under the current test's `--runtime`, see
/// `on_both_runtimes!`).
fn run(args: &[&str], stdin: &[u8]) -> Output {
    run_cmd(Command::new(BIN).args(support::demo_args(args)), stdin)
}

fn run_cmd(cmd: &mut Command, stdin: &[u8]) -> Output {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut pipe = child.stdin.take().unwrap();
    let input = stdin.to_vec();
    // Write from a thread: the child may answer before it has read everything.
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn serve_answers_every_pipe_vector_exactly() {
    let mut markdown = 0;
    for case in common::vectors().cases.iter().filter(|c| c.pipe) {
        let args = case.serve_args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(&args, &case.stream());
        markdown += usize::from(!case.demo_only());
        assert_eq!(text(&out.stdout), case.expected_output(), "case {:?}", case.name);
        assert!(out.status.success(), "case {:?}: {:?} {}", case.name, out.status, text(&out.stderr));
    }
    assert!(markdown >= 10, "only {markdown} markdown cases ran");
}

#[test]
fn ts_child_and_serve_give_identical_replies() {
    let Some(script) = ts_child() else { return };
    let mut ran = 0;
    for case in common::vectors().cases.iter().filter(|c| c.pipe) {
        if !case.demo_only() {
            // The Node child answers the demo only (markdown-it's HTML is not pulldown-cmark's).
            println!("skipped for the Node child (it serves demo only): {:?}", case.name);
            continue;
        }
        let args = case.serve_args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let rust = run(&args, &case.stream());
        let node = run_cmd(Command::new("node").arg(&script).args(case.options.cli_args()), &case.stream());
        assert_eq!(text(&node.stdout), text(&rust.stdout), "case {:?}: {}", case.name, text(&node.stderr));
        assert!(node.status.success(), "case {:?}: {:?}", case.name, node.status);
        ran += 1;
    }
    assert!(ran > 20);
}

#[test]
fn serve_stops_reading_after_the_exit_reply() {
    let input = b"{\"msg_type\":\"exit\",\"data\":\"\"}\n{\"msg_type\":\"greeting\",\"data\":\"\"}\n";
    let out = run(&["serve"], input);
    assert_eq!(text(&out.stdout), "{\"msg_type\":\"exit\",\"data\":\"Goodbye from TypeScript!\"}\n");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn serve_answers_demo_and_markdown_by_default_and_services_narrows_it() {
    let input = b"{\"msg_type\":\"markdown\",\"data\":\"# Hi\",\"id\":1}\n{\"msg_type\":\"bogus\",\"data\":\"\"}\n";
    let out = run(&["serve"], input);
    assert_eq!(
        text(&out.stdout),
        concat!(
            r#"{"msg_type":"html","data":"<h1>Hi</h1>\n","id":1}"#,
            "\n",
            r#"{"msg_type":"error","data":"line 2: unknown msg_type `bogus`; expected greeting, data, exit or markdown"}"#,
            "\n"
        )
    );
    let out = run(&["serve", "--services", "demo"], input);
    assert_eq!(
        text(&out.stdout),
        concat!(
            r#"{"msg_type":"error","data":"line 1: unknown msg_type `markdown`; expected greeting, data or exit","id":1}"#,
            "\n",
            r#"{"msg_type":"error","data":"line 2: unknown msg_type `bogus`; expected greeting, data or exit"}"#,
            "\n"
        )
    );
    for (list, complaint) in [
        ("demo,html", "--services: unknown service `html`; expected one of demo, markdown, bytes"),
        ("", "--services: expected at least one service of demo, markdown, bytes"),
    ] {
        let out = run(&["serve", "--services", list], b"");
        assert_eq!(out.status.code(), Some(2), "{list}");
        assert!(text(&out.stderr).starts_with(&format!("rust-ts-ipc: {complaint}\n")), "{}", text(&out.stderr));
    }
}

/// `serve --encoding msgpack` over real pipes answers every stored MessagePack vector with
/// its exact bytes (it stops reading after the goodbye, so a done case's later frames are not
/// answered).
#[test]
fn serve_answers_every_msgpack_vector_exactly() {
    for case in common::msgpack_vectors().cases {
        let args = case.serve_args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(&args, &case.stream());
        let want = case.expected_output();
        if case.done {
            assert!(!out.stdout.is_empty() && want.starts_with(&out.stdout), "case {:?}", case.name);
        } else {
            assert_eq!(common::hex(&out.stdout), common::hex(&want), "case {:?}", case.name);
        }
        assert!(out.status.success(), "case {:?}: {:?} {}", case.name, out.status, text(&out.stderr));
    }
}

#[test]
fn serve_answers_bytes_under_msgpack_by_default_and_refuses_a_bad_encoding() {
    let request = rust_ts_ipc::Envelope::new("bytes", vec![1u8, 2, 3]).with_id(1).to_frame().unwrap();
    let out = run(&["serve", "--encoding", "msgpack"], &request);
    assert_eq!(out.stdout, rust_ts_ipc::Envelope::new("bytes", vec![1u8, 2, 3]).with_id(1).to_frame().unwrap());
    let out = run(&["serve", "--encoding", "cbor"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--encoding: unknown encoding `cbor`; expected json or msgpack"));
    let out = run(&["serve"], b"{\"msg_type\":\"bytes\",\"data\":\"x\",\"id\":1}\n");
    assert_eq!(
        text(&out.stdout),
        "{\"msg_type\":\"error\",\"data\":\"line 1: unknown msg_type `bytes`; expected greeting, data, exit or markdown\",\"id\":1}\n"
    );
}

/// `VmHWM` (peak resident set, KiB) of a live process, from `/proc`.
#[cfg(target_os = "linux")]
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Memory stays bounded by the frame limit, not by what goes through: `serve --encoding
/// msgpack` fed 24 frames of exactly `--max-frame-bytes` (4 MiB, each echoed by `bytes`) and 4
/// frames four times over the limit (skipped as they arrive, answered with an error), 160 MiB
/// in all, grows its peak RSS by less than 6 frames' worth over what it had after a first small
/// request (it holds one frame being read, one reply being written and the decoder's slack).
#[cfg(target_os = "linux")]
#[test]
fn serve_msgpack_peak_rss_stays_bounded_when_fed_max_size_frames() {
    use rust_ts_ipc::{decode_msgpack_envelope, Data, Envelope, FrameDecoder, Packet};
    use std::io::Read;
    const MAX: usize = 4 * 1024 * 1024;
    const BIG: usize = 24;
    const OVER: usize = 4;
    let frame = |len: usize, id: u64| Envelope::new("bytes", vec![0x5a_u8; len]).with_id(id).to_frame().unwrap();
    // The payload that makes a frame's body exactly MAX bytes.
    let len = MAX - (frame(MAX, 1_000_000).len() - 4 - MAX);
    assert_eq!(frame(len, 1_000_000).len(), 4 + MAX);
    let mut child = Command::new(BIN)
        .args(["serve", "--encoding", "msgpack", "--max-frame-bytes", &MAX.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut decoder = FrameDecoder::new(2 * MAX);
    let mut buf = vec![0; 1 << 20];
    // Reads until `want` replies have arrived; returns them as (msg_type, id, bytes length or text).
    let mut read_replies = move |want: usize| {
        let mut got = Vec::new();
        while got.len() < want {
            let n = stdout.read(&mut buf).unwrap();
            assert!(n > 0, "serve closed its stdout after {} of {want} replies", got.len());
            decoder.feed(&buf[..n]);
            while let Some(packet) = decoder.next_packet() {
                let Packet::Frame { bytes, .. } = packet else { panic!("not a whole reply: {packet:?}") };
                let reply = decode_msgpack_envelope(bytes).unwrap();
                let data = match reply.data {
                    Data::Bytes(b) => {
                        assert!(b.iter().all(|&x| x == 0x5a), "echoed bytes changed");
                        format!("{} bytes", b.len())
                    }
                    other => format!("{other:?}"),
                };
                got.push((reply.msg_type.to_string(), reply.id, data));
            }
        }
        got
    };
    stdin.write_all(&frame(16, 1)).unwrap();
    assert_eq!(read_replies(1), [("bytes".to_owned(), Some(1), "16 bytes".to_owned())]);
    let base = peak_rss_kib(pid);
    let writer = std::thread::spawn(move || {
        for i in 0..BIG {
            stdin.write_all(&frame(len, 2 + i as u64)).unwrap();
            if i % (BIG / OVER) == 0 {
                // Over the limit: a header announcing 4 × MAX, then that many bytes.
                stdin.write_all(&u32::try_from(4 * MAX).unwrap().to_le_bytes()).unwrap();
                stdin.write_all(&vec![0x91; 4 * MAX]).unwrap();
            }
        }
        stdin
    });
    let replies = read_replies(BIG + OVER);
    let peak = peak_rss_kib(pid);
    drop(writer.join().unwrap());
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let echoed = replies.iter().filter(|r| r.0 == "bytes" && r.2 == format!("{len} bytes")).count();
    let too_long = format!("frame of {} bytes exceeds the {MAX}-byte limit", 4 * MAX);
    let refused = replies.iter().filter(|r| r.0 == "error" && r.1.is_none() && r.2.contains(&too_long)).count();
    assert_eq!(
        (echoed, refused),
        (BIG, OVER),
        "replies: {:?}",
        replies.iter().map(|r| (&r.0, r.1)).collect::<Vec<_>>()
    );
    let grown_kib = peak.saturating_sub(base);
    let bound_kib = 6 * MAX as u64 / 1024;
    assert!(
        grown_kib < bound_kib,
        "serve's peak RSS grew by {grown_kib} KiB (from {base} to {peak}) over {} MiB of frames; expected under {bound_kib} KiB",
        (BIG * MAX + OVER * 4 * MAX) >> 20
    );
}

#[test]
fn serve_exits_zero_on_eof_without_input() {
    let out = run(&["serve"], b"");
    assert_eq!((out.status.code(), out.stdout.len()), (Some(0), 0));
}

#[test]
fn serve_rejects_bad_arguments_with_usage() {
    let out = run(&["serve", "--exit-after", "five"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--exit-after expects a non-negative integer, got `five`"),
        "{}",
        text(&out.stderr)
    );
}

on_both_runtimes! {
fn demo_against_the_node_child_prints_the_seed_output() {
    let Some(script) = ts_child() else { return };
    let out = run(&["demo", "--", "node", script.to_str().unwrap()], b"");
    assert_eq!(text(&out.stdout), SEED_OUTPUT, "stderr: {}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(0));
}
}

/// The demo path and the FFI path share one core: the Node child answering through the
/// addon gives the seed output byte for byte.
/// Whether the addon is built; if not, says so and skips, unless RUST_TS_IPC_REQUIRE_NODE
/// is set (then the test goes on and fails, naming what is missing).
fn addon_available() -> bool {
    let built = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("native"))
        .map(|dir| dir.flatten().any(|e| e.file_name().to_string_lossy().ends_with(".node")))
        .unwrap_or(false);
    if !built && std::env::var_os("RUST_TS_IPC_REQUIRE_NODE").is_none() {
        skip("the addon is not built (run `npm run build`)");
        return false;
    }
    true
}

on_both_runtimes! {
fn demo_through_the_native_engine_prints_the_seed_output() {
    let Some(script) = ts_child() else { return };
    if !addon_available() {
        return;
    }
    let out = run(&["demo", "--", "node", script.to_str().unwrap(), "--engine", "native"], b"");
    assert_eq!(text(&out.stdout), SEED_OUTPUT, "stderr: {}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(0));
}
}

#[test]
fn plain_run_defaults_to_the_node_child() {
    if ts_child().is_none() {
        return;
    }
    let out = run(&[], b"");
    assert_eq!(text(&out.stdout), SEED_OUTPUT, "stderr: {}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(0));
}

on_both_runtimes! {
fn demo_against_rust_serve_prints_the_seed_output() {
    let out = run(&["demo", "--", BIN, "serve"], b"");
    assert_eq!(text(&out.stdout), SEED_OUTPUT, "stderr: {}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(0));
}
}

/// Runs the demo against `sh -c script`; returns (exit code, stdout, stderr, seconds taken).
fn demo_with_shell(script: &str, timeout_ms: u64) -> (Option<i32>, String, String, f64) {
    let started = Instant::now();
    let out = run(&["demo", "--timeout-ms", &timeout_ms.to_string(), "--", "sh", "-c", script], b"");
    (out.status.code(), text(&out.stdout), text(&out.stderr), started.elapsed().as_secs_f64())
}

fn pid_is_gone(pid: &str) -> bool {
    // Reaped processes vanish from /proc; give the kernel a moment.
    for _ in 0..100 {
        if !Path::new("/proc").join(pid.trim()).exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

on_both_runtimes! {
fn child_that_exits_before_answering_ends_the_demo_with_its_status() {
    let (code, stdout, stderr, _) = demo_with_shell("echo 'dying' >&2; exit 3", 5000);
    assert_eq!(code, Some(4), "{stderr}");
    assert_eq!(stdout, "Rust: Sending initial message\n");
    assert!(stderr.contains("[child] dying"), "{stderr}");
    assert!(
        stderr.contains("rust-ts-ipc: child `sh -c echo 'dying' >&2; exit 3` exited with exit status: 3 while the demo was waiting for the reply to the greeting"),
        "{stderr}"
    );
}
}

on_both_runtimes! {
fn child_that_writes_garbage_is_named_with_the_line() {
    let (code, _, stderr, _) = demo_with_shell("read l; echo 'hello, not JSON'; exec sleep 30", 5000);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("rust-ts-ipc: child wrote non-protocol output: line 1: invalid JSON: `hello, not JSON`"),
        "{stderr}"
    );
}
}

on_both_runtimes! {
fn child_that_answers_with_an_error_reply_is_reported() {
    let reply = r#"{"msg_type":"error","data":"line 1: nope"}"#;
    let (code, stdout, stderr, _) = demo_with_shell(&format!("read l; echo '{reply}'; exec sleep 30"), 5000);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stdout, "Rust: Sending initial message\n", "stdout carries the conversation only");
    assert!(stderr.contains("rust-ts-ipc: child answered with an error: line 1: nope"), "{stderr}");
}
}

on_both_runtimes! {
fn child_that_never_answers_times_out_and_is_killed() {
    let (code, _, stderr, secs) = demo_with_shell("echo $$ >&2; exec sleep 30", 300);
    assert_eq!(code, Some(5), "{stderr}");
    assert!(
        stderr.contains(
            "rust-ts-ipc: child did not answer within 300 ms while the demo was waiting for the reply to the greeting"
        ),
        "{stderr}"
    );
    assert!(secs < 5.0, "took {secs} s");
    let pid = stderr.lines().find_map(|l| l.strip_prefix("[child] ")).unwrap();
    assert!(pid_is_gone(pid), "child {pid} is still running");
}
}

on_both_runtimes! {
fn child_that_cannot_be_started_is_named() {
    let out = run(&["demo", "--", "/definitely/not/a/program"], b"");
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains(
            "rust-ts-ipc: cannot start `/definitely/not/a/program`: `/definitely/not/a/program` was not found on PATH"
        ),
        "{}",
        text(&out.stderr)
    );
}
}

on_both_runtimes! {
fn node_missing_from_path_is_a_clear_error() {
    if ts_child().is_none() {
        return;
    }
    let empty = std::env::temp_dir().join("rust-ts-ipc-empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let out = run_cmd(support::demo_command().env("PATH", &empty), b"");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("cannot start `node "), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("`node` was not found on PATH"), "{}", text(&out.stderr));
}
}

on_both_runtimes! {
fn missing_script_ends_the_demo_with_nodes_own_complaint() {
    let out = run(&["demo", "--", "node", "/no/such/script.js"], b"");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("[child] ") && stderr.contains("Cannot find module '/no/such/script.js'"), "{stderr}");
    assert!(stderr.contains("child `node /no/such/script.js` exited with exit status: 1"), "{stderr}");
}
}

on_both_runtimes! {
fn child_that_says_goodbye_but_fails_is_not_a_success() {
    let script = format!("{BIN} serve; exit 7");
    let (code, stdout, stderr, _) = demo_with_shell(&script, 5000);
    assert_eq!(code, Some(4), "{stderr}");
    assert!(stdout.ends_with("Received exit signal from TypeScript\n"), "{stdout}");
    assert!(stderr.contains("said goodbye but then exited with exit status: 7"), "{stderr}");
}
}

#[test]
fn an_unknown_runtime_is_a_usage_error_naming_the_choices() {
    let out = run(&["demo", "--runtime", "green-threads"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out.stdout), "");
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("rust-ts-ipc: --runtime: unknown runtime `green-threads`; expected thread or tokio\n"),
        "{stderr}"
    );
}

/// A build without the `tokio` feature says so, and how to get it, instead of playing the
/// demo some other way (`cargo test --no-default-features` runs this).
#[cfg(not(feature = "tokio"))]
#[test]
fn runtime_tokio_without_the_feature_is_a_usage_error_saying_how_to_get_it() {
    let out = Command::new(BIN).args(["demo", "--runtime", "tokio"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out.stdout), "");
    assert!(
        text(&out.stderr).starts_with(
            "rust-ts-ipc: --runtime tokio: this rust-ts-ipc was built without the `tokio` cargo feature; rebuild it \
             with the feature (on by default; `cargo build --features tokio`) or use --runtime thread\n"
        ),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn unknown_command_is_a_usage_error() {
    let out = run(&["frobnicate"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("rust-ts-ipc: unknown command `frobnicate`"));
    assert!(text(&out.stderr).contains("Usage:"));
}

#[cfg(unix)]
#[test]
fn help_and_version_into_a_closed_pipe_exit_zero() {
    for flag in ["--help", "--version"] {
        let out = Command::new(BIN).arg(flag).stdout(support::closed_pipe()).stderr(Stdio::piped()).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{flag}: {}", text(&out.stderr));
        assert_eq!(text(&out.stderr), "", "{flag}");
    }
}

#[cfg(unix)]
#[test]
fn a_first_argument_that_is_not_utf8_is_a_usage_error_naming_it() {
    use std::os::unix::ffi::OsStrExt;
    let out = Command::new(BIN).arg(std::ffi::OsStr::from_bytes(b"d\xffmo")).stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "", "no demo was played");
    assert!(
        text(&out.stderr).starts_with(
            "rust-ts-ipc: the first argument \"d\\xFFmo\" is not valid UTF-8 (expected a command or a flag)\n"
        ),
        "{}",
        text(&out.stderr)
    );
}

on_both_runtimes! {
fn a_reply_carrying_an_id_the_demo_never_sent_is_a_protocol_error_naming_it() {
    let reply = r#"{"msg_type":"response","data":"Hello from TypeScript!","id":42}"#;
    let (code, stdout, stderr, _) = demo_with_shell(&format!("read l; echo '{reply}'; read l"), 5000);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stdout, "Rust: Sending initial message\n", "the reply is not printed as an answer");
    assert!(
        stderr.ends_with(
            "rust-ts-ipc: child replied with id 42, but the demo sent no message with an id: Message { msg_type: \
             \"response\", data: \"Hello from TypeScript!\", id: 42 }\n"
        ),
        "{stderr}"
    );
}
}

on_both_runtimes! {
fn an_over_long_line_from_the_child_ends_the_demo_naming_it() {
    let script = "read l; head -c 16777217 /dev/zero | tr '\\0' x; echo; read l";
    let (code, stdout, stderr, _) = demo_with_shell(script, 10000);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stdout, "Rust: Sending initial message\n");
    assert!(
        stderr.ends_with(
            "rust-ts-ipc: child wrote non-protocol output: line 1: line of 16777217 bytes exceeds the 16777216-byte \
             limit\n"
        ),
        "{stderr}"
    );
}
}

/// A shell child that answers the demo correctly, sleeping `delay` before each reply, and
/// going silent (reading on, answering nothing) after `replies` replies.
fn slow_child(delay: &str, replies: usize) -> String {
    let mut lines = vec![r#"{"msg_type":"response","data":"Hello from TypeScript!"}"#.to_owned()];
    lines.extend((1..=5).map(|i| format!(r#"{{"msg_type":"ack","data":"Acknowledged: Message {i} from Rust"}}"#)));
    lines.push(r#"{"msg_type":"exit","data":"Goodbye from TypeScript!"}"#.to_owned());
    let mut script = String::new();
    for (i, line) in lines.iter().take(replies).enumerate() {
        // The goodbye follows the fifth ack without a message of its own to answer.
        if i < 6 {
            script.push_str("read l; ");
        }
        script.push_str(&format!("sleep {delay}; echo '{line}'; "));
    }
    script.push_str("while read l; do :; done");
    script
}

on_both_runtimes! {
fn each_reply_has_its_own_timeout() {
    // Seven replies 300 ms apart: 2.1 s in all, each well within 1.5 s.
    let (code, stdout, stderr, secs) = demo_with_shell(&slow_child("0.3", 7), 1500);
    assert_eq!((code, stdout.as_str()), (Some(0), SEED_OUTPUT), "{stderr}");
    assert!(secs > 2.0, "took {secs} s");
    // Silent after k replies: the timeout names the reply that did not come.
    for (replies, waiting) in [
        (0, "the reply to the greeting"),
        (3, "the acknowledgement of message 3 of 5"),
        (6, "the goodbye (exit message)"),
    ] {
        let (code, stdout, stderr, _) = demo_with_shell(&slow_child("0", replies), 500);
        assert_eq!(code, Some(5), "{replies}: {stderr}");
        assert_eq!(stdout.lines().count(), 1 + replies, "{replies}: {stdout}");
        assert!(
            stderr.ends_with(&format!(
                "rust-ts-ipc: child did not answer within 500 ms while the demo was waiting for {waiting}\n"
            )),
            "{replies}: {stderr}"
        );
    }
}
}

// --- demo --encoding msgpack ----------------------------------------------------------------

on_both_runtimes! {
fn demo_over_msgpack_frames_against_rust_serve_prints_the_seed_output() {
    let out = run(&["demo", "--encoding", "msgpack", "--", BIN, "serve", "--encoding", "msgpack"], b"");
    assert_eq!(text(&out.stdout), SEED_OUTPUT, "stderr: {}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(0));
}
}

on_both_runtimes! {
fn demo_over_msgpack_frames_against_the_node_child_prints_the_seed_output() {
    let Some(script) = ts_child() else { return };
    // The default child (the demo adds --encoding msgpack itself), then the addon behind it.
    let out = run(&["demo", "--encoding", "msgpack"], b"");
    assert_eq!(text(&out.stdout), SEED_OUTPUT, "stderr: {}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(0));
    if !addon_available() {
        return;
    }
    let script = script.to_str().unwrap();
    let out = run(
        &["demo", "--encoding", "msgpack", "--", "node", script, "--encoding", "msgpack", "--engine", "native"],
        b"",
    );
    assert_eq!(text(&out.stdout), SEED_OUTPUT, "stderr: {}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(0));
}
}

/// Runs the demo over msgpack against `sh -c script`; returns (exit code, stdout, stderr).
fn msgpack_demo_with_shell(extra: &[&str], script: &str) -> (Option<i32>, String, String) {
    let mut args = vec!["demo", "--encoding", "msgpack", "--timeout-ms", "10000"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "sh", "-c", script]);
    let out = run(&args, b"");
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// `sh` that reads the demo's greeting frame (its length is known), then writes `bytes`.
fn after_greeting_write(bytes: &[u8], then: &str) -> String {
    let greeting = rust_ts_ipc::Envelope::new("greeting", "Hello from Rust!").to_frame().unwrap();
    let octal: String = bytes.iter().map(|b| format!("\\{b:03o}")).collect();
    format!("head -c {} >/dev/null; printf '{octal}'; {then}", greeting.len())
}

on_both_runtimes! {
fn demo_over_msgpack_names_a_bad_frame_by_its_number() {
    let response = rust_ts_ipc::Envelope::new("response", "Hello from TypeScript!").to_frame().unwrap();
    let bytes = [response, vec![3, 0, 0, 0, 0x91, 0xa1, 0x78]].concat();
    let (code, stdout, stderr) = msgpack_demo_with_shell(&[], &after_greeting_write(&bytes, "exec cat >/dev/null"));
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        stdout,
        "Rust: Sending initial message\nReceived from TS: Message { msg_type: \"response\", data: \"Hello from TypeScript!\" }\n"
    );
    assert!(
        stderr.ends_with("rust-ts-ipc: child wrote non-protocol output: frame 2: not a map: `91a178`\n"),
        "{stderr}"
    );
}
}

on_both_runtimes! {
fn demo_over_msgpack_refuses_a_frame_over_max_frame_bytes_and_names_a_cut_one() {
    let response = rust_ts_ipc::Envelope::new("response", "Hello from TypeScript!").to_frame().unwrap();
    let body = response.len() - 4;
    let (code, _, stderr) =
        msgpack_demo_with_shell(&["--max-frame-bytes", "16"], &after_greeting_write(&response, "exec cat >/dev/null"));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.ends_with(&format!(
            "rust-ts-ipc: child wrote non-protocol output: frame 1: frame of {body} bytes exceeds the 16-byte limit\n"
        )),
        "{stderr}"
    );
    let (code, _, stderr) = msgpack_demo_with_shell(&[], &after_greeting_write(&[5, 0, 0, 0, b'a', b'b'], "exit 0"));
    assert_eq!(code, Some(4), "{stderr}");
    assert!(
        stderr.contains(
            "exited with exit status: 0 while the demo was waiting for the reply to the greeting; its output ends \
             inside frame 1, after 2 of its 5 bytes\n"
        ),
        "{stderr}"
    );
}
}

on_both_runtimes! {
fn a_child_that_refuses_to_start_is_reported_with_what_its_stderr_says() {
    let (code, stdout, stderr) =
        msgpack_demo_with_shell(&[], "echo 'child: unexpected argument `--encoding`' >&2; echo usage >&2; exit 2");
    assert_eq!(code, Some(4), "{stderr}");
    assert_eq!(stdout, "Rust: Sending initial message\n");
    assert!(
        stderr.ends_with(
            "exited with exit status: 2 while the demo was waiting for the reply to the greeting; its stderr says: \
             `child: unexpected argument `--encoding``\n"
        ),
        "{stderr}"
    );
}
}

on_both_runtimes! {
/// The reason is quoted even when it reaches the stderr pipe after the child has exited: the
/// demo waits for stderr to close before reading its tail. (It read the tail as soon as the
/// child had exited, racing the stderr reader thread: under load the quote was sometimes
/// missing.) Here a grandchild that holds stderr only, not stdout, writes the reason late; it
/// is in a session of its own, so that stopping the child's process group leaves it be.
fn a_refusal_written_to_stderr_just_after_the_exit_is_still_quoted() {
    // The child exits only once the grandchild has left its process group (the marker file),
    // or the demo's sweep of that group could kill the grandchild before it writes.
    let marker = std::env::temp_dir().join(format!("rust-ts-ipc-late-reason-{}-{}", std::process::id(), support::runtime_name()));
    let _ = std::fs::remove_file(&marker);
    let marker = marker.display();
    let script = format!(
        "setsid sh -c \"touch '{marker}'; sleep 0.2; echo 'child: late reason' >&2\" </dev/null >/dev/null & \
         while [ ! -e '{marker}' ]; do sleep 0.01; done; rm -f '{marker}'; exit 2"
    );
    let (code, stdout, stderr) = msgpack_demo_with_shell(&[], &script);
    assert_eq!(code, Some(4), "{stderr}");
    assert_eq!(stdout, "Rust: Sending initial message\n");
    assert!(stderr.ends_with("its stderr says: `child: late reason`\n"), "{stderr}");
}
}

on_both_runtimes! {
fn demo_rejects_an_unknown_encoding_with_usage() {
    let out = run(&["demo", "--encoding", "cbor"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).starts_with("rust-ts-ipc: --encoding: unknown encoding `cbor`; expected json or msgpack\n"),
        "{}",
        text(&out.stderr)
    );
}
}
