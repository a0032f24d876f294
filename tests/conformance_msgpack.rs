//! The `msgpack` encoding's conformance: the stored vectors of `tests/conformance-msgpack.json`
//! (every bad-input case of the wire format, the bytes service, canonical forms), and every
//! JSON vector about message semantics re-run as MessagePack frames, derived mechanically.
//!
//! The stored file is written by [`generate`] from the core; `UPDATE_VECTORS=1 cargo test
//! --test conformance_msgpack` rewrites it (review the diff: its texts and bytes are protocol).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use rust_ts_ipc::{decode_envelope, Data, Envelope, FrameDecoder, Responder, Services, MAX_SAFE_ID};
use serde_json::{json, Value};

fn frame(msg_type: &str, data: impl Into<Data>, id: Option<u64>) -> String {
    let e = Envelope { msg_type: msg_type.to_owned(), data: data.into(), id };
    hex(&e.to_frame().unwrap()[4..])
}

/// A map of the given raw entries (hex of key, hex of value), for frames no encoder writes.
fn map(entries: &[(&str, &str)]) -> String {
    assert!(entries.len() < 16);
    let mut s = format!("{:02x}", 0x80 + entries.len());
    for (k, v) in entries {
        s.push_str(k);
        s.push_str(v);
    }
    s
}

const MSG_TYPE: &str = "a86d73675f74797065";
const DATA: &str = "a464617461";
const ID: &str = "a26964";

fn s(text: &str) -> String {
    assert!(text.len() < 32);
    format!("{:02x}{}", 0xa0 + text.len(), hex(text.as_bytes()))
}

struct Spec {
    name: &'static str,
    services: Option<&'static [&'static str]>,
    options: MsgpackOptions,
    input: Vec<String>,
    tail: &'static str,
}

fn spec(name: &'static str, input: Vec<String>) -> Spec {
    Spec { name, services: None, options: MsgpackOptions::default(), input, tail: "" }
}

fn specs() -> Vec<Spec> {
    let greeting = frame("greeting", "hi", None);
    let seed: Vec<String> = std::iter::once(frame("greeting", "Hello from Rust!", None))
        .chain((1..=5).map(|n| frame("data", format!("Message {n} from Rust"), None)))
        .collect();
    vec![
        spec("seed conversation in frames", seed),
        Spec {
            options: MsgpackOptions { exit_after: Some(2), ..Default::default() },
            ..spec(
                "ids are echoed in their smallest form, on both replies to the last data message",
                vec![
                    frame("greeting", "hi", Some(1)),
                    frame("data", "a", Some(200)),
                    frame("data", "b", Some(MAX_SAFE_ID)),
                    frame("greeting", "late", Some(70000)),
                ],
            )
        },
        spec(
            "non-canonical inputs are accepted: str8 msg_type, uint16 id, float64 id 7.0, nil id, keys in any order",
            vec![
                map(&[(MSG_TYPE, "d9086772656574696e67"), (DATA, &s("x")), (ID, "cd0007")]),
                map(&[(ID, "cb401c000000000000"), (DATA, &s("x")), (MSG_TYPE, &s("greeting"))]),
                map(&[(MSG_TYPE, &s("greeting")), (DATA, &s("x")), (ID, "c0")]),
            ],
        ),
        spec(
            "unknown keys (of any type) are ignored and a repeated key takes its last value",
            vec![
                map(&[
                    (&s("extra"), "93c0c391c0"),
                    ("01", "02"),
                    (MSG_TYPE, &s("data")),
                    (DATA, &s("first")),
                    (DATA, &s("last")),
                ]),
                map(&[(MSG_TYPE, &s("nope")), (MSG_TYPE, &s("greeting")), (DATA, &s("")), (ID, "05"), (ID, "06")]),
            ],
        ),
        spec("an empty frame gets an error and the next frame is answered", vec![String::new(), greeting.clone()]),
        spec("a frame that is not a map is quoted in hex", vec!["91a178".into(), "c3".into(), greeting.clone()]),
        spec(
            "invalid MessagePack: the reserved byte, a map cut short, a str longer than its frame",
            vec!["c1".into(), map(&[(MSG_TYPE, "")]), "81a86d73675f74797065dbffffffff".into(), greeting.clone()],
        ),
        spec(
            "the error quotes the first 16 bytes of a long frame, then an ellipsis",
            vec![map(&[(&s("padding"), &s("0123456789abcdefghij"))])],
        ),
        spec(
            "bytes left over after the map",
            vec![format!("{}c0", frame("greeting", "hi", Some(3))), format!("{greeting}{greeting}"), greeting.clone()],
        ),
        spec(
            "missing fields: msg_type (the id is still echoed), data",
            vec![map(&[(DATA, &s("x")), (ID, "04")]), map(&[(MSG_TYPE, &s("greeting"))]), map(&[])],
        ),
        spec(
            "mistyped fields: msg_type not a str, data not a str (the id is echoed), data bytes for the demo",
            vec![
                map(&[(MSG_TYPE, "2a"), (DATA, &s("x"))]),
                map(&[(MSG_TYPE, "c4086772656574696e67"), (DATA, &s("x"))]),
                map(&[(MSG_TYPE, &s("data")), (DATA, "92c0c0"), (ID, "09")]),
                map(&[(MSG_TYPE, &s("data")), (DATA, "80")]),
                map(&[(MSG_TYPE, &s("data")), (DATA, "c7000c")]),
                map(&[(MSG_TYPE, &s("data")), (DATA, "cb3ff8000000000000")]),
                map(&[(MSG_TYPE, &s("data")), (DATA, "c403010203"), (ID, "0a")]),
                greeting.clone(),
            ],
        ),
        spec(
            "bad ids: negative, above 2^53 - 1, a fraction, a string, bytes; the error has no id",
            vec![
                map(&[(MSG_TYPE, &s("greeting")), (DATA, &s("")), (ID, "ff")]),
                map(&[(MSG_TYPE, &s("greeting")), (DATA, &s("")), (ID, "cf0020000000000000")]),
                map(&[(MSG_TYPE, &s("greeting")), (DATA, &s("")), (ID, "cb3ff8000000000000")]),
                map(&[(MSG_TYPE, &s("greeting")), (DATA, &s("")), (ID, &s("1"))]),
                map(&[(MSG_TYPE, &s("greeting")), (DATA, &s("")), (ID, "c40101")]),
                greeting.clone(),
            ],
        ),
        spec(
            "invalid UTF-8 in msg_type or data names its offset in the frame; in an ignored key it is ignored",
            vec![
                map(&[(MSG_TYPE, "a2c328"), (DATA, &s("x"))]),
                map(&[(MSG_TYPE, &s("data")), (DATA, "a36162ff"), (ID, "01")]),
                map(&[("a1ff", "a1fe"), (MSG_TYPE, &s("greeting")), (DATA, &s("x"))]),
            ],
        ),
        spec(
            "an unknown msg_type lists the answered types and says frame",
            vec![frame("bogus", "x", Some(2)), frame("markdown", "# no", None)],
        ),
        spec(
            "after the goodbye every frame is refused, naming its frame",
            vec![frame("exit", "bye", None), greeting.clone(), String::new()],
        ),
        Spec {
            options: MsgpackOptions { max_frame_bytes: Some(24), ..Default::default() },
            ..spec(
                "a frame over the limit is skipped and reported with its length; the next is answered",
                vec![frame("greeting", "a long greeting", Some(1)), greeting.clone()],
            )
        },
        Spec { tail: "0100", ..spec("a stream that ends inside a length header", vec![greeting.clone()]) },
        Spec { tail: "0500000082a8", ..spec("a stream that ends inside a frame's body", vec![greeting.clone()]) },
        Spec {
            services: Some(&["demo", "markdown", "bytes"]),
            ..spec(
                "the bytes service echoes bin data in its smallest form; strings are refused",
                vec![
                    frame("bytes", vec![0u8, 1, 2, 255], Some(1)),
                    frame("bytes", Vec::<u8>::new(), None),
                    frame("bytes", vec![7u8; 300], Some(2)),
                    map(&[(MSG_TYPE, &s("bytes")), (DATA, "c50003616263")]),
                    frame("bytes", "text", Some(3)),
                    frame("bytes", json!([1, 2]), Some(4)),
                    frame("markdown", vec![1u8], None),
                ],
            )
        },
        Spec {
            services: Some(&["bytes"]),
            ..spec("the bytes service alone", vec![greeting.clone(), frame("bytes", vec![0xc1u8], None)])
        },
        Spec {
            services: Some(&["markdown"]),
            ..spec("markdown in frames", vec![frame("markdown", "# Hi\n\n*x* & <y>", Some(1))])
        },
        spec(
            "long replies use str8 and str16 headers",
            vec![frame("data", "x".repeat(20), None), frame("data", "y".repeat(300), None)],
        ),
    ]
}

fn run_frames(options: rust_ts_ipc::ResponderOptions, stream: &[u8], chunks: &[&[u8]]) -> (Vec<u8>, bool) {
    let _ = stream;
    let mut decoder = FrameDecoder::new(options.max_frame_bytes);
    let mut responder = Responder::new(options);
    let mut out = Vec::new();
    for chunk in chunks {
        decoder.feed(chunk);
        while let Some(p) = decoder.next_packet() {
            responder.handle_packet(p, &mut out);
        }
    }
    while let Some(p) = decoder.finish() {
        responder.handle_packet(p, &mut out);
    }
    (out, responder.is_done())
}

fn generate() -> MsgpackVectors {
    let cases = specs()
        .into_iter()
        .map(|spec| {
            let mut case = MsgpackCase {
                name: spec.name.to_owned(),
                services: spec.services.map(|s| s.iter().map(|s| (*s).to_owned()).collect()),
                options: spec.options,
                input: spec.input,
                tail: spec.tail.to_owned(),
                replies: Vec::new(),
                done: false,
            };
            let stream = case.stream();
            let (out, done) = run_frames(case.responder(), &stream, &[&stream]);
            case.replies =
                split_frames(&out).into_iter().map(|f| MsgpackReply { hex: hex(&f), json: render(&f) }).collect();
            case.done = done;
            case
        })
        .collect();
    MsgpackVectors {
        description: "Conformance vectors for the `msgpack` encoding. Each case feeds `input` (frame bodies in hex; each is sent as a 4-byte little-endian length, then the body), then `tail` (raw hex, a cut frame) to a fresh responder with `options` (defaults: exit_after 5, name \"TypeScript\", max_frame_bytes 16777216) answering `services` (absent = [\"demo\"]), and expects exactly the reply frames `replies[].hex` (length header included), in order, and `done` afterwards. `replies[].json` renders each reply readably (bytes data as {\"bin\": hex}); it is derived from `hex`, which is what must match. Written by tests/conformance_msgpack.rs from the Rust core (UPDATE_VECTORS=1); every implementation runs every case whose services it serves.".to_owned(),
        cases,
    }
}

#[test]
fn the_stored_vectors_are_the_generated_ones() {
    let generated = generate();
    if std::env::var_os("UPDATE_VECTORS").is_some() {
        let text = serde_json::to_string_pretty(&generated).unwrap() + "\n";
        std::fs::write(MSGPACK_VECTORS, text).unwrap();
    }
    let stored = msgpack_vectors();
    assert_eq!(stored.cases.len(), generated.cases.len());
    for (s, g) in stored.cases.iter().zip(&generated.cases) {
        assert_eq!(s, g, "case {:?} differs from the generator (UPDATE_VECTORS=1 rewrites the file)", g.name);
    }
    assert_eq!(stored, generated);
}

#[test]
fn every_stored_vector_whole_byte_by_byte_and_split_at_every_byte() {
    for case in msgpack_vectors().cases {
        let stream = case.stream();
        let want = case.expected_output();
        let (out, done) = run_frames(case.responder(), &stream, &[&stream]);
        assert_eq!(hex(&out), hex(&want), "case {:?}", case.name);
        assert_eq!(done, case.done, "case {:?}: done", case.name);
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(hex(&run_frames(case.responder(), &stream, &bytes).0), hex(&want), "case {:?} bytewise", case.name);
        for cut in 0..=stream.len() {
            let (a, b) = stream.split_at(cut);
            assert_eq!(run_frames(case.responder(), &stream, &[a, b]).0, want, "case {:?} cut at {cut}", case.name);
        }
        for reply in &case.replies {
            assert_eq!(render(&unhex(&reply.hex)), reply.json, "case {:?}: json rendering", case.name);
        }
    }
}

/// The in-process path (one frame body at a time, no decoder) answers alike.
#[test]
fn every_stored_vector_without_a_tail_through_handle_frame_body() {
    let mut ran = 0;
    for case in msgpack_vectors().cases.iter().filter(|c| c.tail.is_empty()) {
        let mut responder = Responder::new(case.responder());
        let mut out = Vec::new();
        for frame in case.frames() {
            responder.handle_frame_body(&frame, &mut out);
        }
        assert_eq!(hex(&out), hex(&case.expected_output()), "case {:?}", case.name);
        ran += 1;
    }
    assert!(ran >= 15, "only {ran}");
}

/// The serve loop in msgpack over in-memory streams (what `serve --encoding msgpack` runs).
#[test]
fn every_stored_vector_through_the_serve_loop() {
    for case in msgpack_vectors().cases {
        let mut out = Vec::new();
        rust_ts_ipc::serve_with(
            Responder::new(case.responder()),
            rust_ts_ipc::Encoding::Msgpack,
            &case.stream()[..],
            &mut out,
        )
        .unwrap();
        // The loop stops reading once the conversation is done, as the pipe hosts do.
        let want = case.expected_output();
        if !case.done {
            assert_eq!(hex(&out), hex(&want), "case {:?}", case.name);
        } else {
            assert!(want.starts_with(&out) && !out.is_empty(), "case {:?}", case.name);
        }
    }
}

/// Every case of the wire format's bad-input list is in the stored file, with its text.
#[test]
fn the_stored_vectors_cover_every_bad_input() {
    let all: String = msgpack_vectors().cases.iter().flat_map(|c| &c.replies).map(|r| r.json.to_string()).collect();
    for text in [
        "frame 1: empty frame",
        "frame 1: not a map: `91a178`",
        "frame 1: invalid MessagePack: `c1`",
        "frame 1: 1 byte left over after the map",
        "frame 2: 27 bytes left over after the map",
        "frame 1: missing field `msg_type`",
        "frame 2: missing field `data`",
        "field `msg_type` must be a string, got number",
        "field `data` must be a string, got array",
        "field `data` must be a string, got bytes",
        "field `data` must be bytes, got string",
        "field `id` must be an integer from 0 to 9007199254740991, got number",
        "invalid UTF-8 in a string at byte 11",
        "frame 1: frame of 44 bytes exceeds the 24-byte limit",
        "the stream ended inside the frame's 4-byte length header, after 2 bytes",
        "the stream ended inside the frame, after 2 of its 5 bytes",
        "unknown msg_type `bogus`; expected greeting, data or exit",
        "conversation has ended; message ignored",
        "…`",
    ] {
        assert!(all.contains(text), "no vector replies {text:?}");
    }
}

/// A JSON vector is about message semantics when every input line is a message whose data is
/// a string and no line limit is set: those run again as frames, with the same replies except
/// that errors say `frame N` where JSON says `line N`.
#[test]
fn every_semantic_json_vector_runs_as_frames() {
    let mut ran = 0;
    for case in vectors().cases {
        if case.options.max_line_bytes.is_some() {
            continue;
        }
        let lines = case.lines();
        let envelopes: Option<Vec<Envelope>> = lines
            .iter()
            .map(|l| std::str::from_utf8(l).ok().and_then(|t| decode_envelope(t.trim_end_matches('\r')).ok()))
            .map(|e| e.filter(|e| e.data.as_str().is_some()))
            .collect();
        // Blank lines count as lines but are not frames: numbering would differ.
        let Some(envelopes) = envelopes.filter(|_| lines.iter().all(|l| !l.iter().all(u8::is_ascii_whitespace))) else {
            continue;
        };
        let mut responder = Responder::new(case.responder());
        let mut out = Vec::new();
        for e in &envelopes {
            responder.handle_frame_body(&e.to_frame().unwrap()[4..], &mut out);
        }
        let want: Vec<u8> = case
            .replies
            .iter()
            .flat_map(|line| {
                let mut e = decode_envelope(line).unwrap();
                if e.msg_type == "error" {
                    let text = e.data.as_str().unwrap();
                    let rest = text.strip_prefix("line ").unwrap();
                    e.data = Data::from(format!("frame {rest}"));
                }
                e.to_frame().unwrap()
            })
            .collect();
        assert_eq!(hex(&out), hex(&want), "case {:?}", case.name);
        assert_eq!(responder.is_done(), case.done, "case {:?}", case.name);
        ran += 1;
    }
    assert!(ran >= 20, "only {ran} semantic cases");
}

/// rmp-serde, which knows nothing of our reader, reads every reply frame alike.
#[test]
fn rmp_serde_reads_every_reply_as_we_do() {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum D {
        Str(String),
        Other(serde::de::IgnoredAny),
    }
    #[derive(serde::Deserialize)]
    struct R {
        msg_type: String,
        data: D,
        id: Option<u64>,
    }
    let mut n = 0;
    for case in msgpack_vectors().cases {
        for reply in &case.replies {
            let bytes = unhex(&reply.hex);
            let r: R = rmp_serde::from_slice(&bytes[4..]).unwrap();
            assert_eq!(json!(r.msg_type), reply.json["msg_type"]);
            assert_eq!(r.id.map(Value::from), reply.json.get("id").cloned());
            if let (D::Str(text), true) = (r.data, reply.json["data"].is_string()) {
                assert_eq!(json!(text), reply.json["data"]);
                n += 1;
            }
        }
    }
    assert!(n >= 40, "only {n} string replies");
    assert!(Services::ALL.contains(rust_ts_ipc::BuiltinService::Bytes));
}
