//! The line decoder on any bytes, cut into any chunks, with any small limit: it never panics,
//! never holds more than the limit (+1 for a pending `\r`) once drained, and yields exactly
//! what the plain model of the framing rules says, however the input is chunked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rust_ts_ipc::{Frame, LineDecoder};

#[derive(Debug, PartialEq, Eq)]
enum Out {
    Line(u64, Vec<u8>),
    TooLong(u64, usize),
}

fn model(input: &[u8], max: usize) -> Vec<Out> {
    let mut parts: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    let tail = parts.pop().unwrap_or_default();
    if !tail.is_empty() {
        parts.push(tail);
    }
    let mut out = Vec::new();
    for (i, part) in parts.into_iter().enumerate() {
        let line = part.strip_suffix(b"\r").unwrap_or(part);
        if line.len() > max {
            out.push(Out::TooLong(i as u64 + 1, line.len()));
        } else if !line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r')) {
            out.push(Out::Line(i as u64 + 1, line.to_vec()));
        }
    }
    out
}

fn decode(max: usize, chunks: &mut dyn Iterator<Item = &[u8]>) -> Vec<Out> {
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
        assert!(decoder.buffered() <= max + 1, "holds {} bytes, limit {max}", decoder.buffered());
    }
    while let Some(frame) = decoder.finish() {
        out.push(take(frame));
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let [limit, step, input @ ..] = data else { return };
    let max = usize::from(*limit % 64);
    let step = usize::from(*step % 16) + 1;
    let want = model(input, max);
    assert_eq!(decode(max, &mut std::iter::once(input)), want, "one chunk");
    assert_eq!(decode(max, &mut input.chunks(step)), want, "chunks of {step}");
});
