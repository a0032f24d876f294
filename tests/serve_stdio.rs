//! `serve_stdio` with a handler map, over real pipes: the `handlers_service` example, which
//! `cargo test` builds with the tests.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use rust_ts_ipc::{decode_msgpack_envelope, Data, Envelope, FrameDecoder, Packet};

/// The example's binary, beside the test binaries' `deps/` folder.
fn example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join("examples").join("handlers_service");
    assert!(
        path.exists(),
        "{} is not built: run `cargo test` (which builds the examples) or `cargo build --example handlers_service`",
        path.display()
    );
    path
}

fn run(input: &str) -> Output {
    run_with(&[], input.as_bytes().to_vec())
}

fn run_with(args: &[&str], input: Vec<u8>) -> Output {
    let mut child = Command::new(example())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

fn lines(out: &Output) -> Vec<String> {
    String::from_utf8(out.stdout.clone()).unwrap().lines().map(str::to_owned).collect()
}

#[test]
fn a_handler_returns_data_with_the_requests_type_and_id_and_a_notification_gets_no_reply() {
    let out = run(concat!(
        r#"{"msg_type":"upper","data":"hello é","id":1}"#,
        "\n",
        r#"{"msg_type":"upper","data":"no id"}"#,
        "\n",
        r#"{"msg_type":"count","data":null,"id":2}"#,
        "\n",
        r#"{"msg_type":"count","data":null,"id":3}"#,
        "\n",
    ));
    assert_eq!(
        lines(&out),
        [
            r#"{"msg_type":"upper","data":"HELLO É","id":1}"#,
            r#"{"msg_type":"count","data":1,"id":2}"#,
            r#"{"msg_type":"count","data":2,"id":3}"#,
        ]
    );
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn any_json_data_round_trips() {
    let values = [
        r#"{"a":[1,2.5,-3e-7,null,true,false],"b":{"c":"\"quoted\"\n"},"":{}}"#,
        "[]",
        "[[[[1]]]]",
        "0",
        "-1.5",
        "12345678901234567890",
        "null",
        "true",
        r#""\u0000 é 😀 \u2028""#,
    ];
    let input: String = values
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{{\"msg_type\":\"echo\",\"data\":{v},\"id\":{i}}}\n"))
        .collect();
    let got = lines(&run(&input));
    assert_eq!(got.len(), values.len(), "{got:?}");
    for (i, (line, value)) in got.iter().zip(values).enumerate() {
        let reply: serde_json::Value = serde_json::from_str(line).unwrap();
        let sent: serde_json::Value = serde_json::from_str(value).unwrap();
        assert_eq!(reply["msg_type"], "echo", "{line}");
        assert_eq!(reply["data"], sent, "{line}");
        assert_eq!(reply["id"], i, "{line}");
    }
    // Compact JSON comes back byte for byte.
    assert_eq!(got[1], r#"{"msg_type":"echo","data":[],"id":1}"#);
    assert_eq!(got[6], r#"{"msg_type":"echo","data":null,"id":6}"#);
}

#[test]
fn an_error_or_a_panic_is_an_error_reply_with_the_id_and_the_service_keeps_serving() {
    let out = run(concat!(
        r#"{"msg_type":"fail","data":{"why":1},"id":7}"#,
        "\n",
        r#"{"msg_type":"upper","data":42,"id":8}"#,
        "\n",
        r#"{"msg_type":"panic","data":null,"id":9}"#,
        "\n",
        r#"{"msg_type":"upper","data":"after","id":10}"#,
        "\n",
    ));
    assert_eq!(
        lines(&out),
        [
            r#"{"msg_type":"error","data":"fail: asked to fail with {\"why\":1}","id":7}"#,
            r#"{"msg_type":"error","data":"upper: expected a string, got 42","id":8}"#,
            r#"{"msg_type":"error","data":"handler for `panic` panicked: asked to panic","id":9}"#,
            r#"{"msg_type":"upper","data":"AFTER","id":10}"#,
        ]
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("asked to panic"), "the panic hook reports it on stderr");
}

#[test]
fn a_failing_notification_is_an_error_naming_its_line_and_a_succeeding_one_sends_nothing() {
    let out = run(concat!(
        r#"{"msg_type":"upper","data":"quiet"}"#,
        "\n",
        r#"{"msg_type":"fail","data":1}"#,
        "\n",
        r#"{"msg_type":"panic","data":null}"#,
        "\n",
        r#"{"msg_type":"count","data":null,"id":4}"#,
        "\n",
    ));
    assert_eq!(
        lines(&out),
        [
            r#"{"msg_type":"error","data":"line 2: fail: asked to fail with 1"}"#,
            r#"{"msg_type":"error","data":"line 3: handler for `panic` panicked: asked to panic"}"#,
            r#"{"msg_type":"count","data":1,"id":4}"#,
        ]
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn an_unknown_type_lists_the_handlers_and_bad_lines_are_named_and_skipped() {
    let mut input = String::from("not json\n\n");
    input.push_str(r#"{"msg_type":"nope","data":1,"id":3}"#);
    input.push('\n');
    input.push_str(r#"{"msg_type":"upper","data":"x","id":-1}"#);
    input.push_str("\r\n");
    input.push_str(r#"{"msg_type":"upper","data":"still serving","id":5}"#);
    let out = run(&input);
    assert_eq!(
        lines(&out),
        [
            r#"{"msg_type":"error","data":"line 1: invalid JSON: `not json`"}"#,
            r#"{"msg_type":"error","data":"line 3: unknown msg_type `nope`; expected upper, echo, count, fail or panic","id":3}"#,
            r#"{"msg_type":"error","data":"line 4: field `id` must be an integer from 0 to 9007199254740991, got number: `{\"msg_type\":\"upper\",\"data\":\"x\",\"id\":-1}`"}"#,
            r#"{"msg_type":"upper","data":"STILL SERVING","id":5}"#,
        ]
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn invalid_utf8_is_an_error_naming_the_line() {
    let mut child = Command::new(example()).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"{\"msg_type\":\"echo\",\"data\":\"\xff\"}\n{\"msg_type\":\"echo\",\"data\":1,\"id\":2}\n")
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        lines(&out),
        [r#"{"msg_type":"error","data":"line 1: invalid UTF-8 at byte 27"}"#, r#"{"msg_type":"echo","data":1,"id":2}"#]
    );
}

#[test]
fn eof_without_input_exits_zero_with_no_output() {
    let out = run("");
    assert_eq!((out.status.code(), out.stdout.len()), (Some(0), 0));
}

#[cfg(unix)]
#[test]
fn a_closed_stdout_ends_the_service_normally() {
    let mut child = Command::new(example())
        .stdin(Stdio::piped())
        .stdout(support::closed_pipe())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Keep writing requests until the service has gone (its reply hit the closed pipe).
    let line = format!("{}\n", r#"{"msg_type":"echo","data":"x","id":1}"#);
    let mut gone = false;
    for _ in 0..1000 {
        if stdin.write_all(line.as_bytes()).and_then(|()| stdin.flush()).is_err() {
            gone = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(gone, "the service kept reading after its stdout was closed");
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

/// Every reply frame of `out`, decoded; panics on anything that is not a whole frame.
fn frames(out: &Output) -> Vec<Envelope> {
    let mut decoder = FrameDecoder::new(usize::MAX);
    decoder.feed(&out.stdout);
    let mut got = Vec::new();
    while let Some(packet) = decoder.next_packet() {
        match packet {
            Packet::Frame { bytes, .. } => got.push(decode_msgpack_envelope(bytes).unwrap()),
            other => panic!("not a whole frame: {other:?}"),
        }
    }
    assert_eq!(decoder.finish(), None, "output ends inside a frame");
    got
}

#[test]
fn under_msgpack_bytes_round_trip_as_bytes_and_json_data_and_errors_name_the_frame() {
    let big: Vec<u8> = (0..1_048_576_u32).map(|i| (i % 251) as u8).collect();
    let mut input = Vec::new();
    for request in [
        Envelope::new("echo", Data::Bytes(big.clone())).with_id(1),
        Envelope::new("echo", Data::Bytes(Vec::new())).with_id(2),
        Envelope::new("upper", "hé").with_id(3),
        Envelope::new("echo", serde_json::json!({"a": [1, null]})).with_id(4),
        Envelope::new("nope", serde_json::json!(1)).with_id(5),
    ] {
        request.encode_frame_into(&mut input).unwrap();
    }
    // Not a map (a fixarray), then a last request that must still be answered.
    input.extend_from_slice(&[3, 0, 0, 0, 0x91, 0xa1, 0x78]);
    Envelope::new("count", Data::NULL).with_id(7).encode_frame_into(&mut input).unwrap();
    let out = run_with(&["--encoding", "msgpack"], input);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let got = frames(&out);
    assert_eq!(
        got,
        [
            Envelope::new("echo", Data::Bytes(big)).with_id(1),
            Envelope::new("echo", Data::Bytes(Vec::new())).with_id(2),
            Envelope::new("upper", "HÉ").with_id(3),
            Envelope::new("echo", serde_json::json!({"a": [1, null]})).with_id(4),
            Envelope::new("error", "frame 5: unknown msg_type `nope`; expected upper, echo, count, fail or panic")
                .with_id(5),
            Envelope::new("error", "frame 6: not a map: `91a178`"),
            Envelope::new("count", serde_json::json!(1)).with_id(7),
        ]
    );
}

#[test]
fn encoding_json_is_the_line_protocol_and_an_unknown_encoding_is_refused() {
    let out = run_with(&["--encoding", "json"], br#"{"msg_type":"upper","data":"json","id":1}"#.to_vec());
    assert_eq!(lines(&out), [r#"{"msg_type":"upper","data":"JSON","id":1}"#]);
    let out = run_with(&["--encoding", "cbor"], Vec::new());
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "handlers_service: --encoding: unknown encoding `cbor`; expected json or msgpack\n"
    );
}
