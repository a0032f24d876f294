//! The frame decoder on any bytes, cut into any chunks, with any small limit, fed (`feed`) or
//! read into in place (`read_space` + `commit`, the serve loop's way): it never panics, never
//! holds more than the header plus the limit once drained, and yields exactly what the plain
//! model of the framing rules says (numbering, over-long frames skipped, a cut at the end),
//! however the input is chunked. And with a range of every frame being received detached
//! (`detach_range`, as the Rust peers receive a big `bin`), received through `read_space`, by
//! appending to `detached_rest`, or fed: the same, each split frame put back together.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rust_ts_ipc::{Detached, FrameDecoder, Packet, FRAME_HEADER_BYTES};

#[derive(Debug, PartialEq, Eq)]
enum Out {
    Frame(u64, Vec<u8>),
    TooLong(u64, usize),
    Cut(u64, usize, Option<usize>),
}

/// The framing rules, read straight off the whole input.
fn model(mut input: &[u8], max: usize) -> Vec<Out> {
    let mut out = Vec::new();
    let mut number = 0;
    while !input.is_empty() {
        number += 1;
        let Some((header, rest)) = input.split_first_chunk::<FRAME_HEADER_BYTES>() else {
            out.push(Out::Cut(number, input.len(), None));
            break;
        };
        let length = u32::from_le_bytes(*header) as usize;
        if rest.len() < length {
            out.push(Out::Cut(number, rest.len(), Some(length)));
            break;
        }
        let (body, rest) = rest.split_at(length);
        out.push(if length > max { Out::TooLong(number, length) } else { Out::Frame(number, body.to_vec()) });
        input = rest;
    }
    out
}

fn take(packet: Packet<'_>) -> Out {
    match packet {
        Packet::Frame { number, bytes } => Out::Frame(number, bytes.to_vec()),
        Packet::TooLong { number, length } => Out::TooLong(number, length),
        Packet::Cut { number, received, length } => Out::Cut(number, received, length),
    }
}

fn decode(max: usize, in_place: bool, chunks: &mut dyn Iterator<Item = &[u8]>) -> Vec<Out> {
    let mut decoder = FrameDecoder::new(max);
    let mut out = Vec::new();
    for chunk in chunks {
        if in_place {
            // As a read would: the room offered may be larger than what arrives.
            let space = decoder.read_space(chunk.len());
            assert!(space.len() >= chunk.len(), "room for {} of {} bytes", space.len(), chunk.len());
            space[..chunk.len()].copy_from_slice(chunk);
            decoder.commit(chunk.len());
        } else {
            decoder.feed(chunk);
        }
        while let Some(packet) = decoder.next_packet() {
            out.push(take(packet));
        }
        assert!(
            decoder.buffered() <= FRAME_HEADER_BYTES + max,
            "holds {} bytes, limit {max}",
            decoder.buffered()
        );
    }
    while let Some(packet) = decoder.finish() {
        out.push(take(packet));
    }
    assert_eq!(decoder.buffered(), 0, "finish leaves nothing behind");
    out
}

/// `decode` with body range `at..at + len` (cut to the frame) of every frame detached once its
/// header arrived; `how`: 0 read space, 1 appended, 2 fed.
fn decode_detaching(max: usize, how: u8, at: usize, len: usize, chunks: &mut dyn Iterator<Item = &[u8]>) -> Vec<Out> {
    let mut decoder = FrameDecoder::new(max);
    let mut out = Vec::new();
    let whole = |(packet, range): (Packet<'_>, Option<Detached>)| match (packet, range) {
        (Packet::Frame { number, bytes }, Some(r)) => {
            Out::Frame(number, [&bytes[..r.at], &r.bytes[..], &bytes[r.at..]].concat())
        }
        (packet, _) => take(packet),
    };
    for mut chunk in chunks {
        while !chunk.is_empty() {
            let n = match (how, decoder.detached_rest()) {
                (1, Some((rest, lacking))) => {
                    let n = chunk.len().min(lacking);
                    rest.extend_from_slice(&chunk[..n]);
                    decoder.appended()
                }
                (2, _) => {
                    decoder.feed(chunk);
                    chunk.len()
                }
                _ => {
                    let space = decoder.read_space(chunk.len());
                    let n = space.len().min(chunk.len());
                    space[..n].copy_from_slice(&chunk[..n]);
                    decoder.commit(n);
                    n
                }
            };
            chunk = &chunk[n..];
            while let Some(split) = decoder.next_split() {
                out.push(whole(split));
            }
            if let Some((length, held)) = decoder.partial_frame() {
                let start = at.min(held.len());
                assert!(decoder.detach_range(start, len.min(length - start)), "a frame being received");
            }
            assert!(decoder.buffered() <= FRAME_HEADER_BYTES + max, "holds {} bytes, limit {max}", decoder.buffered());
        }
    }
    while let Some(split) = decoder.finish_split() {
        out.push(whole(split));
    }
    assert_eq!(decoder.buffered(), 0, "finish leaves nothing behind");
    out
}

fuzz_target!(|data: &[u8]| {
    let [limit, step, input @ ..] = data else { return };
    let max = usize::from(*limit % 64);
    let step = usize::from(*step % 16) + 1;
    let want = model(input, max);
    for in_place in [false, true] {
        assert_eq!(decode(max, in_place, &mut std::iter::once(input)), want, "one chunk, in place {in_place}");
        assert_eq!(decode(max, in_place, &mut input.chunks(step)), want, "chunks of {step}, in place {in_place}");
    }
    // The range, from the first two bytes too.
    let (at, len) = (usize::from(data[1] >> 4), usize::from(data[0] >> 2));
    for how in 0..3 {
        assert_eq!(decode_detaching(max, how, at, len, &mut std::iter::once(input)), want, "detaching, one chunk, {how}");
        assert_eq!(decode_detaching(max, how, at, len, &mut input.chunks(step)), want, "detaching, chunks of {step}, {how}");
    }
});
