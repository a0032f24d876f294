//! The responder's MessagePack path on any byte stream: never panics; the stream path
//! (`FrameDecoder` + `handle_packet`, the pipe's) and the frame path (`handle_frame_body` on
//! each whole frame, the addon's) give the same bytes; every reply is one canonical frame that
//! `decode_msgpack_envelope` reads and that re-encodes to the same bytes. On the input's frames
//! themselves: what `decode_msgpack_envelope` accepts re-encodes canonically and reads back
//! the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rust_ts_ipc::{
    decode_msgpack_envelope, FrameDecoder, Packet, Responder, ResponderOptions, Services, FRAME_HEADER_BYTES,
};

/// Splits `frames` (a whole stream) into the bodies of its complete frames.
fn bodies(mut frames: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some((header, rest)) = frames.split_first_chunk::<FRAME_HEADER_BYTES>() {
        let length = u32::from_le_bytes(*header) as usize;
        let Some(body) = rest.get(..length) else { break };
        out.push(body);
        frames = &rest[length..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let [limit, exit_after, input @ ..] = data else { return };
    let options = ResponderOptions {
        max_frame_bytes: if *limit == 255 { 1 << 24 } else { usize::from(*limit) * 4 },
        exit_after: u64::from(*exit_after % 8),
        services: Services::ALL,
        ..Default::default()
    };

    for body in bodies(input) {
        if let Ok(envelope) = decode_msgpack_envelope(body) {
            let frame = envelope.to_frame().expect("an accepted message re-encodes");
            let again = decode_msgpack_envelope(&frame[FRAME_HEADER_BYTES..]).expect("a canonical frame decodes");
            assert_eq!(again, envelope, "round trip");
            assert_eq!(again.to_frame().ok(), Some(frame), "canonical bytes are stable");
        }
    }

    let mut by_stream = Vec::new();
    let mut responder = Responder::new(options.clone());
    let mut decoder = FrameDecoder::new(options.max_frame_bytes);
    let mut cut = false;
    for chunk in input.chunks(7) {
        decoder.feed(chunk);
        while let Some(packet) = decoder.next_packet() {
            responder.handle_packet(packet, &mut by_stream);
        }
    }
    while let Some(packet) = decoder.finish() {
        cut |= matches!(packet, Packet::Cut { .. });
        responder.handle_packet(packet, &mut by_stream);
    }

    // The frame path sees only whole frames: compare it on them (a cut tail has no twin).
    if !cut {
        let mut by_frame = Vec::new();
        let mut responder = Responder::new(options);
        for body in bodies(input) {
            responder.handle_frame_body(body, &mut by_frame);
        }
        assert_eq!(by_stream, by_frame, "stream and frame paths differ");
    }

    for reply in bodies(&by_stream) {
        let m = decode_msgpack_envelope(reply).unwrap_or_else(|e| panic!("reply {reply:02x?} is not a message: {e}"));
        assert!(["response", "ack", "exit", "error", "html", "bytes"].contains(&m.msg_type.as_str()), "{m:?}");
        let frame = m.to_frame().expect("a reply re-encodes");
        assert_eq!(&frame[FRAME_HEADER_BYTES..], reply, "a reply is canonical");
    }
    let total: usize = bodies(&by_stream).iter().map(|b| b.len() + FRAME_HEADER_BYTES).sum();
    assert_eq!(total, by_stream.len(), "replies are whole frames");
});
