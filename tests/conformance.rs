//! Runs every shared conformance vector through the Rust core, line by line and as a byte
//! stream cut every possible way.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{vectors, Case};
use rust_ts_ipc::{LineDecoder, Message, Responder};

fn run_lines(case: &Case) -> (String, bool) {
    let mut responder = Responder::new(case.responder());
    let mut out = Vec::new();
    for line in case.lines() {
        responder.handle_line(&line, &mut out);
    }
    (String::from_utf8(out).unwrap(), responder.is_done())
}

fn run_stream(case: &Case, chunks: &[&[u8]]) -> (String, bool) {
    let options = case.responder();
    let mut decoder = LineDecoder::new(options.max_line_bytes);
    let mut responder = Responder::new(options);
    let mut out = Vec::new();
    for chunk in chunks {
        decoder.feed(chunk);
        while let Some(frame) = decoder.next_frame() {
            responder.handle_frame(frame, &mut out);
        }
    }
    if let Some(frame) = decoder.finish() {
        responder.handle_frame(frame, &mut out);
    }
    (String::from_utf8(out).unwrap(), responder.is_done())
}

#[test]
fn every_vector_line_by_line() {
    for case in vectors().cases {
        let (out, done) = run_lines(&case);
        assert_eq!(out, case.expected_output(), "case {:?}", case.name);
        assert_eq!(done, case.done, "case {:?}: done", case.name);
    }
}

#[test]
fn every_vector_as_one_stream_and_one_byte_at_a_time() {
    for case in vectors().cases {
        let stream = case.stream();
        let (out, done) = run_stream(&case, &[&stream]);
        assert_eq!(out, case.expected_output(), "case {:?} whole", case.name);
        assert_eq!(done, case.done, "case {:?}: done", case.name);
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        let (out, _) = run_stream(&case, &bytes);
        assert_eq!(out, case.expected_output(), "case {:?} byte by byte", case.name);
    }
}

#[test]
fn every_vector_split_at_every_byte_boundary() {
    for case in vectors().cases {
        let stream = case.stream();
        for cut in 0..=stream.len() {
            let (a, b) = stream.split_at(cut);
            let (out, _) = run_stream(&case, &[a, b]);
            assert_eq!(out, case.expected_output(), "case {:?} cut at {cut}", case.name);
        }
    }
}

#[test]
fn every_vector_without_the_final_newline() {
    for case in vectors().cases {
        let mut stream = case.stream();
        stream.pop();
        let (out, _) = run_stream(&case, &[&stream]);
        assert_eq!(out, case.expected_output(), "case {:?}", case.name);
    }
}

/// The object path (the addon's `handle`) gives the same replies wherever every line is a
/// valid message.
#[test]
fn every_vector_of_valid_messages_through_handle_message() {
    let mut ran = 0;
    for case in vectors().cases {
        let messages: Option<Vec<Message>> = case
            .lines()
            .iter()
            .map(|l| {
                std::str::from_utf8(l).ok().and_then(|s| rust_ts_ipc::decode_message(s.trim_end_matches('\r')).ok())
            })
            .collect();
        // The object path has no line-size bound: that belongs to framing.
        let Some(messages) = messages.filter(|_| case.options.max_line_bytes.is_none()) else { continue };
        let mut responder = Responder::new(case.responder());
        let replies: Vec<String> = messages
            .iter()
            .flat_map(|m| responder.handle_message(m))
            .map(|m| m.to_line().trim_end().to_owned())
            .collect();
        assert_eq!(replies, case.replies, "case {:?}", case.name);
        ran += 1;
    }
    assert!(ran >= 10, "only {ran} cases were all-valid");
}

/// The markdown vectors are there and run: a runner that filtered them out would pass.
#[test]
fn the_markdown_vectors_are_run_by_the_core() {
    let cases = vectors().cases;
    let markdown = cases.iter().filter(|c| c.services().contains(rust_ts_ipc::BuiltinService::Markdown)).count();
    assert!(markdown >= 10, "only {markdown} markdown cases");
    assert!(cases.iter().filter(|c| c.demo_only()).count() >= 40);
}

/// The built-in services served through the library's I/O loop (`serve`, what
/// `rust-ts-ipc serve` runs), over in-memory reader and writer, read in its 64 KiB chunks.
#[test]
fn every_pipe_vector_through_the_serve_loop() {
    for case in vectors().cases.iter().filter(|c| c.pipe) {
        let mut out = Vec::new();
        rust_ts_ipc::serve(Responder::new(case.responder()), &case.stream()[..], &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), case.expected_output(), "case {:?}", case.name);
    }
}
