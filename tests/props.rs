//! Properties of the core, checked on generated input (proptest): framing is independent of
//! how the bytes are chunked and agrees with a one-line model; encoding round-trips; the
//! decoder and the responder never panic and stay within their memory bound; message
//! decoding agrees with a model of `JSON.parse` plus the protocol's rules.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use rust_ts_ipc::{decode_message, Frame, JsonKind, LineDecoder, Message, ProtocolError, Responder, ResponderOptions};
use rust_ts_ipc::{DEFAULT_MAX_LINE_BYTES, MAX_SAFE_ID};

fn config() -> ProptestConfig {
    // Enough to find framing and decoding slips in a few seconds on a debug build.
    ProptestConfig { cases: 256, ..ProptestConfig::default() }
}

/// Any Unicode text, control characters and astral characters included.
fn text() -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..24).prop_map(String::from_iter)
}

fn message() -> impl Strategy<Value = Message> {
    (text(), text(), proptest::option::of(0..=MAX_SAFE_ID)).prop_map(|(msg_type, data, id)| Message {
        msg_type,
        data,
        id,
    })
}

/// Splits `bytes` at the given cut points.
fn chunks<'a>(bytes: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
    at.sort_unstable();
    let mut out = Vec::new();
    let mut last = 0;
    for cut in at.into_iter().chain([bytes.len()]) {
        out.push(&bytes[last..cut]);
        last = cut;
    }
    out
}

#[derive(Debug, PartialEq, Eq)]
enum Out {
    Line(u64, Vec<u8>),
    TooLong(u64, usize),
}

/// Feeds the chunks, draining after each; checks the memory bound as it goes.
fn decode_frames(max: usize, chunks: &[&[u8]]) -> Vec<Out> {
    let mut decoder = LineDecoder::new(max);
    let mut out = Vec::new();
    let take = |frame: Frame<'_>| match frame {
        Frame::Line { number, bytes } => Out::Line(number, bytes.to_vec()),
        Frame::TooLong { number, length } => Out::TooLong(number, length),
    };
    for chunk in chunks {
        decoder.feed(chunk);
        while let Some(frame) = decoder.next_frame() {
            out.push(take(frame));
        }
        assert!(decoder.buffered() <= max + 1, "holds {} bytes with a {max}-byte limit", decoder.buffered());
    }
    while let Some(frame) = decoder.finish() {
        out.push(take(frame));
    }
    out
}

/// The framing rules in their plainest form: split on `\n`; drop one trailing `\r`; a line
/// over the limit is too long (even if blank); a blank line (spaces, tabs, `\r`) is skipped;
/// an unterminated last line counts; line numbers count every physical line.
fn model_frames(input: &[u8], max: usize) -> Vec<Out> {
    let mut parts: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    let tail = parts.pop().unwrap_or_default();
    if !tail.is_empty() {
        parts.push(tail);
    }
    let mut out = Vec::new();
    for (i, part) in parts.into_iter().enumerate() {
        let number = i as u64 + 1;
        let line = part.strip_suffix(b"\r").unwrap_or(part);
        if line.len() > max {
            out.push(Out::TooLong(number, line.len()));
        } else if !line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r')) {
            out.push(Out::Line(number, line.to_vec()));
        }
    }
    out
}

/// Bytes rich in the ones framing cares about.
fn framing_bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(b' '), Just(b'\t'), Just(b'a'), any::<u8>()], 0..400)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_messages_cut_into_any_chunks_decode_to_the_same_messages(
        messages in vec(message(), 0..12),
        endings in vec((0..2usize, 0..5usize), 12),
        cuts in vec(any::<Index>(), 0..12),
    ) {
        let mut stream = Vec::new();
        for (m, (ending, blank)) in messages.iter().zip(&endings) {
            stream.extend_from_slice(["", " ", "\t", "\r", " \t\r\n\r"][*blank].as_bytes());
            stream.extend_from_slice(b"\n");
            m.encode_into(&mut stream);
            if *ending == 1 {
                stream.pop();
                stream.extend_from_slice(b"\r\n");
            }
        }
        let decoded: Vec<Message> = decode_frames(DEFAULT_MAX_LINE_BYTES, &chunks(&stream, &cuts))
            .into_iter()
            .map(|out| match out {
                Out::Line(_, bytes) => decode_message(std::str::from_utf8(&bytes).unwrap()).unwrap(),
                Out::TooLong(n, len) => panic!("line {n} of {len} bytes is too long"),
            })
            .collect();
        prop_assert_eq!(decoded, messages);
    }

    #[test]
    fn encode_then_decode_is_the_identity(m in message()) {
        let line = m.to_line();
        prop_assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
        prop_assert_eq!(decode_message(&line[..line.len() - 1]), Ok(m.clone()));
        // Byte-identical to serde's own serialization of the same struct.
        prop_assert_eq!(serde_json::to_string(&m).unwrap() + "\n", line);
    }

    #[test]
    fn framing_matches_the_model_however_the_bytes_are_chunked(
        input in framing_bytes(),
        max in 0..24usize,
        cuts in vec(any::<Index>(), 0..16),
    ) {
        let want = model_frames(&input, max);
        prop_assert_eq!(&decode_frames(max, &[&input]), &want, "in one chunk");
        prop_assert_eq!(&decode_frames(max, &chunks(&input, &cuts)), &want, "in chunks");
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        prop_assert_eq!(&decode_frames(max, &bytes), &want, "byte by byte");
    }

    #[test]
    fn the_responder_answers_every_non_blank_line_with_valid_replies(
        lines in vec(vec(prop_oneof![Just(b'{'), Just(b'"'), Just(b'\r'), Just(b' '), any::<u8>()], 0..60), 0..20),
        json in vec((text(), text(), proptest::option::of(0..=MAX_SAFE_ID)), 0..5),
    ) {
        let mut responder = Responder::new(ResponderOptions { exit_after: 0, ..Default::default() });
        let mut inputs: Vec<Vec<u8>> = lines.into_iter().map(|l| l.into_iter().filter(|&b| b != b'\n').collect()).collect();
        inputs.extend(json.into_iter().map(|(t, d, id)| Message { msg_type: t, data: d, id }.to_line().into_bytes()));
        for line in inputs {
            let mut out = Vec::new();
            responder.handle_line(&line, &mut out);
            let content = line.strip_suffix(b"\n").unwrap_or(&line);
            let content = content.strip_suffix(b"\r").unwrap_or(content);
            let blank = content.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r'));
            let text = String::from_utf8(out).unwrap();
            prop_assert_eq!(text.is_empty(), blank, "{:?} -> {:?}", String::from_utf8_lossy(&line), text);
            for reply in text.lines() {
                let reply = decode_message(reply).unwrap();
                prop_assert!(["response", "ack", "exit", "error"].contains(&reply.msg_type.as_str()));
            }
        }
    }

    #[test]
    fn the_line_path_and_the_stream_path_answer_alike(
        line in framing_bytes().prop_map(|l| l.into_iter().filter(|&b| b != b'\n').collect::<Vec<u8>>()),
        max in 0..24usize,
    ) {
        let options = ResponderOptions { max_line_bytes: max, exit_after: 0, ..Default::default() };
        let mut by_line = Vec::new();
        Responder::new(options.clone()).handle_line(&line, &mut by_line);
        let mut by_stream = Vec::new();
        let mut responder = Responder::new(options);
        let mut decoder = LineDecoder::new(max);
        decoder.feed(&line);
        decoder.feed(b"\n");
        while let Some(frame) = decoder.next_frame() {
            responder.handle_frame(frame, &mut by_stream);
        }
        prop_assert_eq!(String::from_utf8(by_line).unwrap(), String::from_utf8(by_stream).unwrap());
    }

    #[test]
    fn the_decoder_and_responder_survive_any_bytes_within_their_bound(
        input in vec(any::<u8>(), 0..2000),
        max in 0..64usize,
        cuts in vec(any::<Index>(), 0..8),
    ) {
        let mut decoder = LineDecoder::new(max);
        let mut responder = Responder::new(ResponderOptions { max_line_bytes: max, ..Default::default() });
        let mut out = Vec::new();
        for chunk in chunks(&input, &cuts) {
            decoder.feed(chunk);
            while let Some(frame) = decoder.next_frame() {
                responder.handle_frame(frame, &mut out);
            }
            prop_assert!(decoder.buffered() <= max + 1);
        }
        if let Some(frame) = decoder.finish() {
            responder.handle_frame(frame, &mut out);
        }
        for reply in String::from_utf8(out).unwrap().lines() {
            prop_assert!(decode_message(reply).is_ok(), "{}", reply);
        }
    }
}

// ---- decoding one line, against a model of JSON.parse plus the protocol's rules ----

/// A JSON value as text, with what `JSON.parse` would make of the parts the protocol reads.
#[derive(Debug, Clone)]
struct Json {
    text: String,
    kind: JsonKind,
    /// For strings: the value, or `None` if it holds an unpaired surrogate.
    string: Option<Option<String>>,
    /// For numbers: the value as `JSON.parse` gives it.
    number: Option<f64>,
}

fn json_string() -> impl Strategy<Value = Json> {
    // Pieces: a plain character (escaped as serde_json would), a \u escape of a BMP character,
    // an escaped surrogate pair, an unpaired surrogate escape.
    let piece = prop_oneof![
        4 => any::<char>().prop_map(|c| {
            let quoted = serde_json::to_string(&c.to_string()).unwrap();
            (quoted[1..quoted.len() - 1].to_owned(), Some(c.to_string()))
        }),
        1 => any::<char>().prop_filter("BMP", |c| (*c as u32) < 0x10000).prop_map(|c| (format!("\\u{:04x}", c as u32), Some(c.to_string()))),
        1 => (0x10000u32..0x110000).prop_map(|n| {
            let c = char::from_u32(n).unwrap();
            let mut units = [0u16; 2];
            c.encode_utf16(&mut units);
            (format!("\\u{:04X}\\u{:04x}", units[0], units[1]), Some(c.to_string()))
        }),
        1 => (0xD800u32..0xE000).prop_map(|n| (format!("\\u{n:04x}"), None)),
    ];
    vec(piece, 0..8).prop_map(|pieces| {
        let text = format!("\"{}\"", pieces.iter().map(|(t, _)| t.as_str()).collect::<String>());
        let value = pieces.into_iter().map(|(_, v)| v).collect::<Option<String>>();
        Json { text, kind: JsonKind::String, string: Some(value), number: None }
    })
}

fn json_number() -> impl Strategy<Value = Json> {
    let text = prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        (0..=MAX_SAFE_ID).prop_map(|n| n.to_string()),
        (0u64..1000).prop_map(|n| format!("{n}.0")),
        (0u64..1000, 0u32..5).prop_map(|(n, e)| format!("{n}e{e}")),
        (1u64..1000).prop_map(|n| format!("-{n}")),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| format!("{f:e}")),
        Just("1e400".to_owned()),
        Just("-1e400".to_owned()),
        Just("-0".to_owned()),
        Just("1e-400".to_owned()),
        Just("9007199254740991.4".to_owned()),
        Just("9007199254740993".to_owned()),
        Just("0.5".to_owned()),
    ];
    text.prop_map(|text| {
        let number = Some(text.parse::<f64>().unwrap());
        Json { text, kind: JsonKind::Number, string: None, number }
    })
}

fn json_value() -> impl Strategy<Value = Json> {
    let plain = |text: &str, kind| Json { text: text.to_owned(), kind, string: None, number: None };
    let leaf = prop_oneof![
        Just(plain("null", JsonKind::Null)),
        Just(plain("true", JsonKind::Boolean)),
        Just(plain("false", JsonKind::Boolean)),
        json_number(),
        json_string(),
        (0..400usize).prop_map(move |d| plain(&format!("{}{}", "[".repeat(d + 1), "]".repeat(d + 1)), JsonKind::Array)),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(|items| Json {
                text: format!("[{}]", items.iter().map(|j| j.text.as_str()).collect::<Vec<_>>().join(",")),
                kind: JsonKind::Array,
                string: None,
                number: None,
            }),
            vec((json_string(), inner), 0..4).prop_map(|fields| Json {
                text: format!(
                    "{{{}}}",
                    fields.iter().map(|(k, v)| format!("{}:{}", k.text, v.text)).collect::<Vec<_>>().join(",")
                ),
                kind: JsonKind::Object,
                string: None,
                number: None,
            }),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just("\"msg_type\"".to_owned()),
        3 => Just("\"data\"".to_owned()),
        2 => Just("\"id\"".to_owned()),
        1 => Just("\"msg\\u005ftype\"".to_owned()),
        1 => Just("\"__proto__\"".to_owned()),
        1 => Just("\"\\ud800\"".to_owned()),
        1 => json_string().prop_map(|j| j.text),
    ]
}

/// What the key means once unescaped, if it is one the protocol reads.
fn known(key: &str) -> Option<&'static str> {
    match key {
        "\"msg_type\"" | "\"msg\\u005ftype\"" => Some("msg_type"),
        "\"data\"" => Some("data"),
        "\"id\"" => Some("id"),
        _ => None,
    }
}

/// The protocol's reading of an object whose fields `JSON.parse` gave as `fields`.
fn model_decode(fields: &[(String, Json)]) -> Result<Message, (&'static str, Option<JsonKind>, Option<&'static str>)> {
    let last = |name: &str| fields.iter().rev().find(|(k, _)| known(k) == Some(name)).map(|(_, v)| v);
    let id = match last("id") {
        None => None,
        Some(v) if v.kind == JsonKind::Null => None,
        Some(v) => {
            let n = v.number.filter(|n| n.fract() == 0.0 && (0.0..=MAX_SAFE_ID as f64).contains(n));
            match n {
                Some(n) => Some(n as u64),
                None => return Err(("BadId", Some(v.kind), None)),
            }
        }
    };
    let field = |name: &'static str| match last(name) {
        None => Err(("MissingField", None, Some(name))),
        Some(v) if v.kind != JsonKind::String => Err(("NotAString", Some(v.kind), Some(name))),
        Some(v) => v.string.clone().flatten().ok_or(("InvalidJson", None, None)),
    };
    let msg_type = field("msg_type")?;
    let data = field("data")?;
    Ok(Message { msg_type, data, id })
}

fn shape(e: ProtocolError) -> (&'static str, Option<JsonKind>, Option<&'static str>) {
    match e {
        ProtocolError::BadId { kind, .. } => ("BadId", Some(kind), None),
        ProtocolError::MissingField { field, .. } => ("MissingField", None, Some(field)),
        ProtocolError::NotAString { field, kind, .. } => ("NotAString", Some(kind), Some(field)),
        ProtocolError::InvalidJson { .. } => ("InvalidJson", None, None),
        ProtocolError::NotAnObject { kind, .. } => ("NotAnObject", Some(kind), None),
        other => panic!("unexpected {other:?}"),
    }
}

proptest! {
    #![proptest_config(config())]

    /// Also pins that the fast path (serde derive) and the slow path agree: repeating the
    /// last known field changes nothing for `JSON.parse` but forces the slow path.
    #[test]
    fn decoding_agrees_with_json_parse_and_the_protocol_rules(fields in vec((key(), json_value()), 0..6)) {
        let line = format!("{{{}}}", fields.iter().map(|(k, v)| format!("{k}:{}", v.text)).collect::<Vec<_>>().join(","));
        let want = model_decode(&fields);
        prop_assert_eq!(decode_message(&line).map_err(shape), want.clone(), "{}", line);
        if let Some((k, v)) = fields.iter().rev().find(|(k, _)| known(k).is_some()) {
            let slow = format!("{},{k}:{}}}", &line[..line.len() - 1], v.text);
            prop_assert_eq!(decode_message(&slow).map_err(shape), want, "{}", slow);
        }
    }
}

/// A string from characters that the plain-envelope reader must treat differently: plain
/// ASCII, non-ASCII (two, three and four bytes), and each character JSON escapes.
fn tricky_string() -> impl Strategy<Value = String> {
    // Mostly strings the reader takes (nothing to escape), often one it must leave to the parser.
    let plain = prop::sample::select(vec!['a', 'Z', '0', ' ', '/', '\'', '{', ':', ',', 'é', '€', '😀', '\u{7f}']);
    let chars = prop::sample::select(vec![
        'a', 'Z', '0', ' ', '/', '\'', '{', ':', ',', 'é', '€', '😀', '"', '\\', '\n', '\u{1}', '\u{1f}', '\u{7f}',
    ]);
    prop_oneof![
        3 => vec(plain, 0..24).prop_map(|cs| cs.into_iter().collect()),
        1 => vec(chars, 0..24).prop_map(|cs| cs.into_iter().collect()),
    ]
}

/// An id's JSON text: canonical, or one of the forms only the parser may read (or refuse).
fn id_text() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        (0..=MAX_SAFE_ID).prop_map(|n| Some(n.to_string())),
        (0..1000u64).prop_map(|n| Some(format!("{n}.0"))),
        (0..1000u64).prop_map(|n| Some(format!("0{n}"))),
        (0..1000u64).prop_map(|n| Some(format!("-{n}"))),
        ((MAX_SAFE_ID + 1)..=u64::MAX).prop_map(|n| Some(n.to_string())),
        Just(Some("null".to_owned())),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// The envelope written the way our encoders write it is read without a parser when it
    /// holds nothing to unescape; the same message with one space added always goes through
    /// serde_json. Both must decode to the same message, or refuse it the same way.
    #[test]
    fn the_plain_envelope_reader_agrees_with_the_parser(msg_type in tricky_string(), data in tricky_string(), id in id_text()) {
        let json = |s: &str| serde_json::to_string(s).unwrap();
        let id_part = id.as_ref().map(|t| format!(",\"id\":{t}")).unwrap_or_default();
        let line = format!("{{\"msg_type\":{},\"data\":{}{id_part}}}", json(&msg_type), json(&data));
        let spaced = format!("{{ {}", &line[1..]);
        match (decode_message(&line), decode_message(&spaced)) {
            (Ok(a), Ok(b)) => {
                prop_assert_eq!(&a, &b, "{}", line);
                prop_assert_eq!((a.msg_type.as_str(), a.data.as_str()), (msg_type.as_str(), data.as_str()));
            }
            (Err(a), Err(b)) => prop_assert_eq!(shape(a), shape(b), "{}", line),
            (a, b) => prop_assert!(false, "{line}: {a:?} but spaced {b:?}"),
        }
    }
}

// --- The msgpack encoding's frame decoder and envelope ------------------------------------------

/// A model of the frame decoder: walk the headers; a body over `max` is too long; a stream that
/// ends inside a header or body is cut.
fn model_packets(input: &[u8], max: usize) -> Vec<String> {
    let (mut out, mut at, mut n) = (Vec::new(), 0, 0u64);
    while at < input.len() {
        n += 1;
        let Some(header) = input.get(at..at + 4) else {
            out.push(format!("{n}:cut header {}", input.len() - at));
            break;
        };
        let len = u32::from_le_bytes(header.try_into().unwrap()) as usize;
        let body = at + 4;
        if input.len() - body < len {
            out.push(format!("{n}:cut {} of {len}", input.len() - body));
            break;
        }
        out.push(if len > max { format!("{n}:too long {len}") } else { format!("{n}:{:?}", &input[body..body + len]) });
        at = body + len;
    }
    out
}

/// Feeds the chunks (`feed`, or in place: `read_space` + `commit`, as `serve` reads), draining
/// after each; checks the memory bound as it goes.
fn decode_packets(max: usize, chunks: &[&[u8]], in_place: bool) -> Vec<String> {
    let mut d = rust_ts_ipc::FrameDecoder::new(max);
    let mut out = Vec::new();
    let show = |p: rust_ts_ipc::Packet<'_>| match p {
        rust_ts_ipc::Packet::Frame { number, bytes } => format!("{number}:{bytes:?}"),
        rust_ts_ipc::Packet::TooLong { number, length } => format!("{number}:too long {length}"),
        rust_ts_ipc::Packet::Cut { number, received, length: None } => format!("{number}:cut header {received}"),
        rust_ts_ipc::Packet::Cut { number, received, length: Some(l) } => format!("{number}:cut {received} of {l}"),
    };
    for chunk in chunks {
        if in_place {
            let space = d.read_space(chunk.len());
            space[..chunk.len()].copy_from_slice(chunk);
            d.commit(chunk.len());
        } else {
            d.feed(chunk);
        }
        while let Some(p) = d.next_packet() {
            out.push(show(p));
        }
        assert!(d.buffered() <= max + 4, "holds {} bytes over the limit {max}", d.buffered());
    }
    while let Some(p) = d.finish() {
        out.push(show(p));
    }
    out
}

/// `decode_packets` with a range of every frame being received detached as soon as its header
/// arrives (`FrameDecoder::detach_range` at `at`, `len` bytes, each cut to the frame), received
/// `how`: 0 through `read_space` + `commit`, 1 by appending to `detached_rest`, 2 by `feed`. A
/// split frame is shown whole again (its range put back at its place), so the output must be
/// the model's.
fn decode_detaching(max: usize, chunks: &[&[u8]], at: usize, len: usize, how: u8) -> Vec<String> {
    let mut d = rust_ts_ipc::FrameDecoder::new(max);
    let mut out = Vec::new();
    let show = |(p, range): (rust_ts_ipc::Packet<'_>, Option<rust_ts_ipc::Detached>)| match (p, range) {
        (rust_ts_ipc::Packet::Frame { number, bytes }, Some(r)) => {
            format!("{number}:{:?}", [&bytes[..r.at], &r.bytes[..], &bytes[r.at..]].concat())
        }
        (rust_ts_ipc::Packet::Frame { number, bytes }, None) => format!("{number}:{bytes:?}"),
        (rust_ts_ipc::Packet::TooLong { number, length }, _) => format!("{number}:too long {length}"),
        (rust_ts_ipc::Packet::Cut { number, received, length: None }, _) => format!("{number}:cut header {received}"),
        (rust_ts_ipc::Packet::Cut { number, received, length: Some(l) }, _) => {
            format!("{number}:cut {received} of {l}")
        }
    };
    for chunk in chunks {
        let mut chunk: &[u8] = chunk;
        while !chunk.is_empty() {
            let n = match (how, d.detached_rest()) {
                (1, Some((rest, lacking))) => {
                    let n = chunk.len().min(lacking);
                    rest.extend_from_slice(&chunk[..n]);
                    d.appended()
                }
                (2, _) => {
                    d.feed(chunk);
                    chunk.len()
                }
                _ => {
                    let space = d.read_space(chunk.len());
                    let n = space.len().min(chunk.len());
                    space[..n].copy_from_slice(&chunk[..n]);
                    d.commit(n);
                    n
                }
            };
            chunk = &chunk[n..];
            while let Some(p) = d.next_split() {
                out.push(show(p));
            }
            if let Some((length, held)) = d.partial_frame() {
                let start = at.min(held.len());
                assert!(d.detach_range(start, len.min(length - start)));
            }
            assert!(d.buffered() <= max + 4, "holds {} bytes over the limit {max}", d.buffered());
        }
    }
    while let Some(p) = d.finish_split() {
        out.push(show(p));
    }
    out
}

/// Streams of frames with small lengths, some over the limit, and arbitrary tails.
fn frame_stream() -> impl Strategy<Value = Vec<u8>> {
    (vec(vec(any::<u8>(), 0..40), 0..6), vec(any::<u8>(), 0..6)).prop_map(|(bodies, tail)| {
        let mut out = Vec::new();
        for b in bodies {
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(&b);
        }
        out.extend_from_slice(&tail);
        out
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn frame_decoding_matches_the_model_however_the_bytes_are_chunked(
        input in frame_stream(), max in 0usize..48, cuts in vec(any::<Index>(), 0..8)
    ) {
        let want = model_packets(&input, max);
        for in_place in [false, true] {
            prop_assert_eq!(decode_packets(max, &[&input], in_place), want.clone());
            prop_assert_eq!(decode_packets(max, &chunks(&input, &cuts), in_place), want.clone());
        }
    }

    #[test]
    fn frame_decoding_with_detached_ranges_matches_the_model_however_the_bytes_are_chunked(
        input in frame_stream(), max in 0usize..48, cuts in vec(any::<Index>(), 0..8),
        at in 0usize..12, len in 0usize..40
    ) {
        let want = model_packets(&input, max);
        for how in 0..3 {
            prop_assert_eq!(decode_detaching(max, &[&input], at, len, how), want.clone());
            prop_assert_eq!(decode_detaching(max, &chunks(&input, &cuts), at, len, how), want.clone());
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            prop_assert_eq!(decode_detaching(max, &bytes, at, len, how), want.clone());
        }
    }

    #[test]
    fn the_msgpack_responder_answers_any_bytes_with_whole_frames_and_never_panics(
        input in prop_oneof![frame_stream(), vec(any::<u8>(), 0..200)], max in 0usize..64
    ) {
        let mut out = Vec::new();
        let options = ResponderOptions { max_frame_bytes: max, exit_after: 0, ..Default::default() };
        rust_ts_ipc::serve_with(Responder::new(options), rust_ts_ipc::Encoding::Msgpack, &input[..], &mut out).unwrap();
        let mut d = rust_ts_ipc::FrameDecoder::new(usize::MAX);
        d.feed(&out);
        while let Some(p) = d.next_packet() {
            let rust_ts_ipc::Packet::Frame { bytes, .. } = p else { panic!("not a whole frame: {p:?}") };
            prop_assert!(rust_ts_ipc::decode_msgpack_envelope(bytes).is_ok());
        }
        prop_assert!(d.finish().is_none());
    }

    #[test]
    fn envelopes_round_trip_through_frames(m in message(), bytes in proptest::option::of(vec(any::<u8>(), 0..300))) {
        let data = match bytes { Some(b) => rust_ts_ipc::Data::from(b), None => rust_ts_ipc::Data::from(m.data.clone()) };
        let e = rust_ts_ipc::Envelope { msg_type: m.msg_type, data, id: m.id };
        let frame = e.to_frame().unwrap();
        prop_assert_eq!(rust_ts_ipc::decode_msgpack_envelope(&frame[4..]), Ok(e));
    }
}
