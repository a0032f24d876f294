//! Big `bin` payloads written from where they are (`FrameOut`, one vectored write) instead of
//! copied into the reply: by `serve` (the `bytes` echo borrows the request frame's buffer), by
//! `Handlers` (a handler's bytes are moved in) and by both `Peer`s (a request's bytes are moved
//! into the write queue). The bytes on the wire must stay exactly what the one-buffer encoder
//! (`Envelope::encode_frame_into`) writes, at every `bin` size boundary, however the input is
//! split and however little each write takes.
#![cfg(target_os = "linux")]
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{self, IoSlice, Read, Write};
use std::os::fd::AsFd;
use std::process::Command;
use std::time::Duration;

use rust_ts_ipc::{
    serve_with, Data, Encoding, Envelope, ErrorCode, FrameDecoder, FrameOut, Handlers, Packet, Peer, PeerOptions,
    Responder, ResponderOptions, Services, StderrMode, MAX_SAFE_ID, SPLICE_MIN_BYTES,
};
use support::PATIENCE;

/// Payload sizes at every `bin8`/`bin16`/`bin32` boundary and around the splice threshold.
const SIZES: [usize; 11] =
    [0, 1, 255, 256, 65_535, 65_536, 65_537, SPLICE_MIN_BYTES - 1, SPLICE_MIN_BYTES, SPLICE_MIN_BYTES + 1, 1 << 20];

const IDS: [Option<u64>; 5] = [None, Some(0), Some(255), Some(65_536), Some(MAX_SAFE_ID)];

/// `len` bytes of every value, offset by `seed` so that no two payloads are alike.
fn payload(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| ((i + seed) % 251) as u8).collect()
}

/// The frame the one-buffer encoder writes (the reference: unchanged by the splicing).
fn frame_of(msg_type: &str, data: Data, id: Option<u64>) -> Vec<u8> {
    Envelope { msg_type: msg_type.to_owned(), data, id }.to_frame().unwrap()
}

fn bytes_responder() -> Responder {
    Responder::new(ResponderOptions { services: Services::ALL, exit_after: 0, ..Default::default() })
}

#[test]
fn a_bytes_echo_is_the_one_buffer_encoders_bytes_at_every_bin_boundary_spliced_or_not() {
    for (n, size) in SIZES.into_iter().enumerate() {
        for id in IDS {
            let data = payload(size, n);
            let request = frame_of("bytes", Data::Bytes(data.clone()), id);
            let want = frame_of("bytes", Data::Bytes(data.clone()), id);
            let body = &request[4..];
            let packet = Packet::Frame { number: 1, bytes: body };

            let mut flat = Vec::new();
            bytes_responder().handle_packet(packet, &mut flat);
            assert_eq!(flat, want, "flat, {size} bytes, id {id:?}");

            let mut buf = Vec::new();
            let mut out = FrameOut::new(&mut buf);
            bytes_responder().handle_packet_vectored(packet, &mut out);
            assert_eq!(out.to_vec(), want, "vectored, {size} bytes, id {id:?}");
            assert_eq!(out.has_pieces(), size >= SPLICE_MIN_BYTES, "{size} bytes");
            drop(out);
            if size >= SPLICE_MIN_BYTES {
                assert!(buf.len() < 64, "the buffer holds the frame around the payload only: {} bytes", buf.len());
            }

            let envelope = Envelope { msg_type: "some type".to_owned(), data: Data::Bytes(data.clone()), id };
            let mut buf = Vec::new();
            let mut out = FrameOut::new(&mut buf);
            envelope.clone().encode_frame_vectored(&mut out).unwrap();
            assert_eq!(out.to_vec(), envelope.to_frame().unwrap(), "Envelope, {size} bytes, id {id:?}");
        }
    }
}

#[test]
fn json_data_and_small_bytes_are_written_into_the_buffer_as_before() {
    let json = Envelope::new("t", serde_json::json!({"a": [1, 2.5, "x"]})).with_id(7);
    let mut buf = Vec::new();
    let mut out = FrameOut::new(&mut buf);
    json.clone().encode_frame_vectored(&mut out).unwrap();
    assert!(!out.has_pieces());
    drop(out);
    assert_eq!(buf, json.to_frame().unwrap());
}

/// A reader that hands out its input `step` bytes at a time (the last piece shorter), and is
/// interrupted (EINTR) before every fifth read.
struct Trickle {
    input: Vec<u8>,
    at: usize,
    steps: Vec<usize>,
    reads: usize,
}

impl Trickle {
    fn new(input: Vec<u8>, steps: &[usize]) -> Self {
        Trickle { input, at: 0, steps: steps.to_vec(), reads: 0 }
    }
}

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reads += 1;
        if self.reads % 5 == 0 {
            return Err(io::Error::from(io::ErrorKind::Interrupted));
        }
        let step = self.steps[self.reads % self.steps.len()];
        let n = step.min(buf.len()).min(self.input.len() - self.at);
        buf[..n].copy_from_slice(&self.input[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// A writer that takes at most `step` bytes per call, is interrupted every third call and
/// counts its calls: what a nearly full pipe and signals do to a write.
#[derive(Default)]
struct Stingy {
    out: Vec<u8>,
    step: usize,
    calls: usize,
}

impl Write for Stingy {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.calls += 1;
        if self.calls % 3 == 0 {
            return Err(io::Error::from(io::ErrorKind::Interrupted));
        }
        let mut left = self.step;
        for b in bufs {
            let take = b.len().min(left);
            self.out.extend_from_slice(&b[..take]);
            left -= take;
            if left == 0 {
                break;
            }
        }
        Ok(self.step - left)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A stream of every kind of frame: bytes at the sizes given, a `data` message, one over the
/// limit (skipped as it arrives), one that is not a map, bytes under `json`-only types, and a
/// last frame cut short by the end of input.
fn mixed_stream(sizes: &[usize], limit: usize) -> Vec<u8> {
    let mut input = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        input.extend(frame_of("bytes", Data::Bytes(payload(size, i)), Some(i as u64)));
        if i == 1 {
            input.extend(frame_of("data", Data::from("hi"), Some(100)));
            input.extend(frame_of("bytes", Data::Bytes(payload(limit + 1, 9)), Some(101)));
            input.extend([3, 0, 0, 0, 0x91, 0xa1, 0x78]);
            input.extend(frame_of("markdown", Data::Bytes(payload(SPLICE_MIN_BYTES, 3)), Some(102)));
        }
    }
    let cut = frame_of("bytes", Data::Bytes(payload(300, 1)), Some(103));
    input.extend(&cut[..cut.len() - 10]);
    input
}

/// What the responder answers to `input` given whole and answered into one buffer: the
/// reference for every split and every writer.
fn flat_answers(input: &[u8], limit: usize) -> Vec<u8> {
    let mut responder = Responder::new(ResponderOptions {
        services: Services::ALL,
        exit_after: 0,
        max_frame_bytes: limit,
        ..Default::default()
    });
    let mut decoder = FrameDecoder::new(limit);
    decoder.feed(input);
    let mut out = Vec::new();
    while let Some(packet) = decoder.next_packet() {
        responder.handle_packet(packet, &mut out);
    }
    while let Some(packet) = decoder.finish() {
        responder.handle_packet(packet, &mut out);
    }
    out
}

fn served(input: Vec<u8>, limit: usize, steps: &[usize], write_step: usize) -> (Vec<u8>, usize) {
    let responder = Responder::new(ResponderOptions {
        services: Services::ALL,
        exit_after: 0,
        max_frame_bytes: limit,
        ..Default::default()
    });
    let mut writer = Stingy { step: write_step, ..Stingy::default() };
    serve_with(responder, Encoding::Msgpack, Trickle::new(input, steps), &mut writer).unwrap();
    (writer.out, writer.calls)
}

#[test]
fn serve_writes_exactly_the_flat_answers_however_the_input_is_split_and_the_output_taken() {
    let limit = 200 * 1024;
    let input = mixed_stream(&[SPLICE_MIN_BYTES, 1 << 17, 0, 255, SPLICE_MIN_BYTES + 1, 65_536], limit);
    let want = flat_answers(&input, limit);
    // The references hold what they should: the echoes as the one-buffer encoder writes them.
    let echo = frame_of("bytes", Data::Bytes(payload(1 << 17, 1)), Some(1));
    assert!(want.windows(echo.len()).any(|w| w == echo.as_slice()));
    let mut decoder = FrameDecoder::default();
    decoder.feed(&want);
    let mut errors = Vec::new();
    while let Some(Packet::Frame { bytes, .. }) = decoder.next_packet() {
        let reply = rust_ts_ipc::decode_msgpack_envelope(bytes).unwrap();
        if reply.msg_type == "error" {
            errors.push(reply.data.as_str().unwrap().chars().take(60).collect::<String>());
        }
    }
    assert_eq!(
        errors,
        [
            "frame 4: frame of 204831 bytes exceeds the 204800-byte limit",
            "frame 5: not a map: `91a178`",
            "frame 6: field `data` must be a string, got bytes: `83a86d73",
            "frame 11: the stream ended inside the frame, after 318 of it",
        ]
    );
    for (steps, write_step) in [
        (&[1 << 20][..], 1 << 20),
        (&[4096, 1, 65_536, 7][..], 3),
        (&[65_536 + 3][..], 4096),
        (&[5, 4, 3, 2, 1][..], 65_537),
    ] {
        let (got, calls) = served(input.clone(), limit, steps, write_step);
        assert!(got == want, "reads of {steps:?}, writes of {write_step}: {} bytes, wanted {}", got.len(), want.len());
        assert!(calls > 0);
    }
}

#[test]
fn serve_answers_a_small_stream_split_at_every_byte_boundary() {
    let limit = 1000;
    let input = mixed_stream(&[0, 1, 255, 256], limit);
    let want = flat_answers(&input, limit);
    for split in 0..=input.len() {
        let steps = [split.max(1), input.len()];
        let (got, _) = served(input.clone(), limit, &steps, 1 << 20);
        assert_eq!(got, want, "split at {split}");
    }
}

/// A big echo (frame head, the payload borrowed from the request, its id) goes out in one call.
#[test]
fn serve_writes_a_big_echo_with_one_vectored_write_call() {
    let input = frame_of("bytes", Data::Bytes(payload(1 << 20, 0)), Some(1));
    let want = flat_answers(&input, 16 << 20);
    let mut writer = Stingy { step: usize::MAX, ..Stingy::default() };
    serve_with(bytes_responder(), Encoding::Msgpack, Trickle::new(input, &[1 << 21]), &mut writer).unwrap();
    assert_eq!(writer.out, want);
    assert_eq!(writer.calls, 1, "the reply is written with one call");
}

#[test]
fn a_handlers_bytes_are_moved_into_the_write_and_written_as_the_one_buffer_encoder_writes_them() {
    for size in SIZES {
        let mut service = Handlers::new().on("echo", |req| Ok::<_, String>(req.data));
        let request = frame_of("echo", Data::Bytes(payload(size, 5)), Some(3));
        let want = frame_of("echo", Data::Bytes(payload(size, 5)), Some(3));
        let mut writer = Stingy { step: 4099, ..Stingy::default() };
        serve_with(&mut service, Encoding::Msgpack, Trickle::new(request.clone(), &[4096]), &mut writer).unwrap();
        assert_eq!(writer.out, want, "{size} bytes");
        let mut flat = Vec::new();
        service.answer_frame_body(&request[4..], &mut flat);
        assert_eq!(flat, want, "{size} bytes, answer_frame_body");
    }
}

/// `len` bytes of text: ASCII letters, or (`wide`) ASCII with two- to four-byte characters
/// mixed in, so that a multi-byte character straddles every 64-byte SIMD block and the piece's
/// edges; cut at a character boundary at or below `len`.
fn text(len: usize, wide: bool) -> String {
    let mut s = String::with_capacity(len + 4);
    let mut i = 0usize;
    while s.len() < len {
        let c = if wide && i % 7 == 3 { ['é', '✓', '😀'][i % 3] } else { char::from(b'a' + (i % 26) as u8) };
        s.push(c);
        i += 1;
    }
    while s.len() > len {
        s.pop();
    }
    s
}

/// `data` sizes at which the ack (`Acknowledged: ` is 14 bytes) crosses a `str` header
/// boundary, and around the splice threshold.
const ACK_SIZES: [usize; 12] = [
    0,
    17,
    18,
    241,
    242,
    65_521,
    65_522,
    SPLICE_MIN_BYTES - 1,
    SPLICE_MIN_BYTES,
    SPLICE_MIN_BYTES + 1,
    SPLICE_MIN_BYTES + 3,
    1 << 20,
];

/// The ack of a `data` string is written from the request's frame when the string is
/// `SPLICE_MIN_BYTES` or more: the same bytes as the one-buffer encoder's, at every `str`
/// header boundary, for ASCII and wider text, with and without ids.
#[test]
fn an_ack_is_the_one_buffer_encoders_frame_at_every_str_boundary_spliced_or_not() {
    for size in ACK_SIZES {
        for wide in [false, true] {
            let data = text(size, wide);
            for id in IDS {
                let request = frame_of("data", Data::from(data.as_str()), id);
                let want = frame_of("ack", Data::from(format!("Acknowledged: {data}")), id);
                let packet = Packet::Frame { number: 1, bytes: &request[4..] };

                let mut flat = Vec::new();
                bytes_responder().handle_packet(packet, &mut flat);
                assert!(flat == want, "flat, {} bytes (wide: {wide}), id {id:?}", data.len());

                let mut buf = Vec::new();
                let mut out = FrameOut::new(&mut buf);
                bytes_responder().handle_packet_vectored(packet, &mut out);
                assert!(out.to_vec() == want, "vectored, {} bytes (wide: {wide}), id {id:?}", data.len());
                assert_eq!(out.has_pieces(), data.len() >= SPLICE_MIN_BYTES, "{} bytes", data.len());
                drop(out);
                if data.len() >= SPLICE_MIN_BYTES {
                    assert!(buf.len() < 64, "the buffer holds the frame around the data only: {} bytes", buf.len());
                }
            }
        }
    }
}

/// The ack of the exit-after'th `data` is followed by the `exit` frame, after the spliced data.
#[test]
fn a_spliced_ack_is_followed_by_the_exit_reply_in_order() {
    let data = text(SPLICE_MIN_BYTES, true);
    let request = frame_of("data", Data::from(data.as_str()), Some(9));
    let mut want = frame_of("ack", Data::from(format!("Acknowledged: {data}")), Some(9));
    want.extend(frame_of("exit", Data::from("Goodbye from TypeScript!"), Some(9)));
    let mut responder = Responder::new(ResponderOptions { exit_after: 1, ..Default::default() });
    let mut buf = Vec::new();
    let mut out = FrameOut::new(&mut buf);
    responder.handle_packet_vectored(Packet::Frame { number: 1, bytes: &request[4..] }, &mut out);
    assert!(out.has_pieces());
    assert!(out.to_vec() == want, "{} bytes, wanted {}", out.len(), want.len());
    assert!(responder.is_done());
}

/// Invalid UTF-8 anywhere in a big `str` (in the first, a middle or the last 64-byte block,
/// or a character cut by the end) is the protocol's error naming the frame and the offset of
/// the first bad byte in it, with the id; the next frame is answered.
#[test]
fn invalid_utf8_in_a_big_str_is_an_error_naming_the_frame_and_the_offset_and_the_next_frame_is_answered() {
    let size = SPLICE_MIN_BYTES + 100;
    // The `data` str's bytes start 25 bytes into the body: map (1), `msg_type` key (9) and its
    // value (5: fixstr "data"), `data` key (5), str32 header (5).
    let data_at = 25;
    let good = text(size, true).into_bytes();
    let cases: Vec<(usize, Vec<u8>)> = vec![
        (0, vec![0xff]),
        (63, vec![0xc0, 0x80]),
        (64, vec![0xed, 0xa0, 0x80]),
        (size / 2, vec![0xf8]),
        (size - 1, vec![0xe2]),
    ];
    for (at, bad) in cases {
        let mut bytes = good.clone();
        // Keep the bytes before `at` whole characters, so that the first bad byte is at `at`.
        let mut at = at;
        while at > 0 && (bytes[at] & 0xc0) == 0x80 {
            at -= 1;
        }
        bytes.truncate(at);
        bytes.extend(&bad);
        while bytes.len() < size {
            bytes.push(b'z');
        }
        let mut request = Vec::new();
        request.extend([0, 0, 0, 0, 0x83, 0xa8]);
        request.extend(b"msg_type\xa4data\xa4data\xdb");
        request.extend((bytes.len() as u32).to_be_bytes());
        request.extend(&bytes);
        request.extend(b"\xa2id\x07");
        let body_len = (request.len() - 4) as u32;
        request[..4].copy_from_slice(&body_len.to_le_bytes());
        assert_eq!(
            &request[4 + data_at - 5..4 + data_at],
            &[&[0xdb][..], &(bytes.len() as u32).to_be_bytes()].concat()[..]
        );
        let mut input = request.clone();
        input.extend(frame_of("data", Data::from("next"), Some(8)));

        let want_error = format!(
            "frame 1: invalid UTF-8 in a string at byte {}: `{}…`",
            data_at + at,
            request[4..20].iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let mut want = frame_of("error", Data::from(want_error.as_str()), Some(7));
        want.extend(frame_of("ack", Data::from("Acknowledged: next"), Some(8)));
        let (got, _) = served(input, 16 << 20, &[4096], 1 << 20);
        assert!(got == want, "bad byte at {at}: {:?}", rust_ts_ipc::decode_msgpack_envelope(&got[4..]).map(|e| e.data));
    }
}

/// `serve` writes the acks of big strings (borrowed from the input buffer) exactly as the flat
/// answers, however the input is split and the output taken; a big ack alone is one call.
#[test]
fn serve_writes_big_acks_exactly_as_the_flat_answers_however_split() {
    let limit = 4 << 20;
    let mut input = Vec::new();
    for (i, size) in
        [SPLICE_MIN_BYTES, 10, SPLICE_MIN_BYTES + 1, 1 << 20, 0, SPLICE_MIN_BYTES - 1].into_iter().enumerate()
    {
        input.extend(frame_of("data", Data::from(text(size, i % 2 == 0)), Some(i as u64)));
    }
    let want = flat_answers(&input, limit);
    for (steps, write_step) in [(&[1 << 21][..], 1 << 21), (&[4096, 1, 65_536, 7][..], 3), (&[65_536 + 3][..], 4096)] {
        let (got, _) = served(input.clone(), limit, steps, write_step);
        assert!(got == want, "reads of {steps:?}, writes of {write_step}: {} bytes, wanted {}", got.len(), want.len());
    }
    let one = frame_of("data", Data::from(text(1 << 20, true)), Some(1));
    let mut writer = Stingy { step: usize::MAX, ..Stingy::default() };
    serve_with(bytes_responder(), Encoding::Msgpack, Trickle::new(one.clone(), &[1 << 21]), &mut writer).unwrap();
    assert!(writer.out == flat_answers(&one, 16 << 20));
    assert_eq!(writer.calls, 1, "the reply is written with one call");
}

/// A handler's big string is moved into the write, not copied: the same bytes.
#[test]
fn a_handlers_big_string_is_moved_into_the_write_and_written_as_the_one_buffer_encoder_writes_it() {
    for size in ACK_SIZES {
        let data = text(size, size % 2 == 1);
        let envelope = Envelope { msg_type: "echo".to_owned(), data: Data::from(data.as_str()), id: Some(3) };
        let mut buf = Vec::new();
        let mut out = FrameOut::new(&mut buf);
        envelope.clone().encode_frame_vectored(&mut out).unwrap();
        assert_eq!(out.has_pieces(), data.len() >= SPLICE_MIN_BYTES, "{} bytes", data.len());
        assert!(out.to_vec() == envelope.to_frame().unwrap(), "{} bytes", data.len());

        let mut service = Handlers::new().on("echo", |req| Ok::<_, String>(req.data));
        let request = envelope.to_frame().unwrap();
        let mut writer = Stingy { step: 4099, ..Stingy::default() };
        serve_with(&mut service, Encoding::Msgpack, Trickle::new(request.clone(), &[4096]), &mut writer).unwrap();
        assert!(writer.out == request, "{} bytes through serve", data.len());
    }
}

/// `serve` to a real pipe of one page, drained a little at a time by a slow reader: every
/// write blocks many times and the reader still gets every byte in order (big echoes and big
/// acks, each borrowed from the decoder's buffer while the write is pending).
#[test]
fn serve_through_a_one_page_pipe_to_a_slow_reader_delivers_every_byte_in_order() {
    use nix::fcntl::{fcntl, FcntlArg};
    let mut input = frame_of("data", Data::from(text(150_000, true)), Some(70_000));
    input.extend(frame_of("data", Data::from(text(SPLICE_MIN_BYTES, false)), None));
    input.extend(mixed_stream(&[1 << 20, SPLICE_MIN_BYTES, 3], 200 * 1024));
    let want = flat_answers(&input, 200 * 1024);
    let (read_end, write_end) = nix::unistd::pipe().unwrap();
    let _ = fcntl(write_end.as_fd(), FcntlArg::F_SETPIPE_SZ(4096));
    let reader = std::thread::spawn(move || {
        let mut file = std::fs::File::from(read_end);
        let mut got = Vec::new();
        let mut buf = [0u8; 1000];
        loop {
            match file.read(&mut buf).unwrap() {
                0 => return got,
                n => got.extend_from_slice(&buf[..n]),
            }
            if got.len() < 64 * 1024 {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    });
    let responder = Responder::new(ResponderOptions {
        services: Services::ALL,
        exit_after: 0,
        max_frame_bytes: 200 * 1024,
        ..Default::default()
    });
    serve_with(responder, Encoding::Msgpack, Trickle::new(input, &[65_536]), std::fs::File::from(write_end)).unwrap();
    let got = reader.join().unwrap();
    assert!(got == want, "{} bytes, wanted {}", got.len(), want.len());
}

/// A reader that goes away in the middle of a big reply (an echo, an ack) ends `serve`
/// normally (BrokenPipe).
#[test]
fn serve_ends_normally_when_its_reader_goes_away_in_the_middle_of_a_big_reply() {
    for input in [
        frame_of("bytes", Data::Bytes(payload(4 << 20, 0)), Some(1)),
        frame_of("data", Data::from(text(4 << 20, true)), Some(1)),
    ] {
        served_to_a_reader_that_goes_away(input);
    }
}

fn served_to_a_reader_that_goes_away(input: Vec<u8>) {
    let (read_end, write_end) = nix::unistd::pipe().unwrap();
    let reader = std::thread::spawn(move || {
        let mut file = std::fs::File::from(read_end);
        let mut buf = [0u8; 1000];
        file.read_exact(&mut buf).unwrap();
    });
    // SIGPIPE is ignored in Rust programs: the write fails with EPIPE instead.
    let served = serve_with(
        bytes_responder(),
        Encoding::Msgpack,
        Trickle::new(input, &[1 << 22]),
        std::fs::File::from(write_end),
    );
    reader.join().unwrap();
    assert!(served.is_ok(), "{served:?}");
}

// --- The peers ---------------------------------------------------------------------------

fn msgpack() -> PeerOptions {
    PeerOptions { encoding: Encoding::Msgpack, stderr: StderrMode::Discard, ..PeerOptions::default() }
}

/// What the peers must write for `messages`, in order: the one-buffer encoder's frames.
fn expected_wire(messages: &[(Option<u64>, usize)]) -> Vec<u8> {
    messages.iter().flat_map(|&(id, size)| frame_of("bytes", Data::Bytes(payload(size, size)), id)).collect()
}

fn wire_messages() -> Vec<(Option<u64>, usize)> {
    // Requests get ids 1, 2, …; notifications (every third) none.
    let mut id = 0;
    SIZES
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            if i % 3 == 2 {
                (None, size)
            } else {
                id += 1;
                (Some(id), size)
            }
        })
        .collect()
}

fn temp_file(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("rust-ts-ipc-vectored-{}-{name}", std::process::id()))
}

/// A child that starts reading a moment late, then copies its stdin to `file`: the writer
/// meets a full pipe and writes the big frames in parts.
fn late_cat(file: &std::path::Path) -> String {
    format!("sleep 0.3; cat > '{}'", file.display())
}

/// Whether the peer's writer has taken all `n` lines (requests and notifications) off its
/// queue: `close` fails the requests still queued and drops their lines, so a test of what
/// reaches the wire must wait for this before it closes.
fn all_taken(stats: rust_ts_ipc::PeerStats, n: usize) -> bool {
    stats.requests + stats.notifications >= n as u64
}

#[test]
fn the_thread_peer_writes_big_bytes_exactly_as_the_one_buffer_encoder_did() {
    let file = temp_file("thread");
    let script = late_cat(&file);
    let peer = Peer::spawn(Command::new("sh").args(["-c", &script]), msgpack()).unwrap();
    let messages = wire_messages();
    let mut pending = Vec::new();
    for &(id, size) in &messages {
        let data = Data::Bytes(payload(size, size));
        match id {
            Some(_) => pending.push(peer.send("bytes", data).unwrap()),
            None => peer.notify("bytes", data).unwrap(),
        }
    }
    assert_eq!(pending.iter().map(|p| p.id()).collect::<Vec<_>>(), (1..=pending.len() as u64).collect::<Vec<_>>());
    let since = std::time::Instant::now();
    while !all_taken(peer.stats(), messages.len()) {
        assert!(since.elapsed() < PATIENCE, "the writer took {:?} of {} lines", peer.stats(), messages.len());
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(pending);
    peer.close().unwrap();
    let wire = std::fs::read(&file).unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(
        wire == expected_wire(&messages),
        "{} bytes written, wanted {}",
        wire.len(),
        expected_wire(&messages).len()
    );
}

#[test]
fn the_tokio_peer_writes_big_bytes_exactly_as_the_one_buffer_encoder_did() {
    let file = temp_file("tokio");
    let script = late_cat(&file);
    let messages = wire_messages();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let peer = rust_ts_ipc::tokio::Peer::spawn(Command::new("sh").args(["-c", &script]), msgpack()).unwrap();
        let mut pending = Vec::new();
        for &(id, size) in &messages {
            let data = Data::Bytes(payload(size, size));
            match id {
                Some(_) => pending.push(peer.send("bytes", data).await.unwrap()),
                None => peer.notify("bytes", data).await.unwrap(),
            }
        }
        let since = std::time::Instant::now();
        while !all_taken(peer.stats(), messages.len()) {
            assert!(since.elapsed() < PATIENCE, "the writer took {:?} of {} lines", peer.stats(), messages.len());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(pending);
        peer.close().await.unwrap();
    });
    let wire = std::fs::read(&file).unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(
        wire == expected_wire(&messages),
        "{} bytes written, wanted {}",
        wire.len(),
        expected_wire(&messages).len()
    );
}

/// The 1 MiB round trip through `serve`: the request goes out spliced, the echo comes back
/// spliced, and what arrives is the payload exactly.
#[test]
fn both_peers_round_trip_big_bytes_through_serve() {
    let big = payload(1 << 20, 42);
    let peer = Peer::spawn(Command::new(support::BIN).args(["serve", "--encoding", "msgpack"]), msgpack()).unwrap();
    for _ in 0..3 {
        let reply = peer.request("bytes", big.clone()).unwrap();
        assert!(reply.data.as_bytes() == Some(&big[..]));
    }
    peer.close().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let peer = rust_ts_ipc::tokio::Peer::spawn(
            Command::new(support::BIN).args(["serve", "--encoding", "msgpack"]),
            msgpack(),
        )
        .unwrap();
        for _ in 0..3 {
            let reply = peer.request("bytes", big.clone()).await.unwrap();
            assert!(reply.data.as_bytes() == Some(&big[..]));
        }
        peer.close().await.unwrap();
    });
}

/// A child that dies after reading a little of a big request: the request fails as the death
/// says (its stderr quoted), within the patience, and nothing hangs.
#[test]
fn a_child_killed_in_the_middle_of_a_big_write_fails_the_request_with_peer_exited() {
    let script = "head -c 1000 > /dev/null; echo gone >&2; kill -9 $$";
    let options = PeerOptions { timeout: PATIENCE, ..msgpack() };
    let peer = Peer::spawn(Command::new("sh").args(["-c", script]), options).unwrap();
    let error = peer.request("bytes", payload(8 << 20, 0)).unwrap_err();
    assert_eq!(error.code(), ErrorCode::PeerExited, "{error}");
    assert!(error.to_string().contains("killed by signal: 9 (SIGKILL)"), "{error}");
    let later = peer.request("bytes", payload(SPLICE_MIN_BYTES, 0)).unwrap_err();
    assert_eq!(later.code(), ErrorCode::PeerExited, "{later}");
    let _ = peer.close();
}

/// A `str` header of the given width (0: fixstr, 1: str8, 2: str16, 4: str32) for `len`
/// bytes: wider than needed is valid MessagePack that a peer may send.
fn str_header_of(width: u8, len: usize) -> Vec<u8> {
    match width {
        0 => vec![0xa0 | len as u8],
        1 => vec![0xd9, len as u8],
        2 => [&[0xda][..], &(len as u16).to_be_bytes()].concat(),
        _ => [&[0xdb][..], &(len as u32).to_be_bytes()].concat(),
    }
}

/// A request frame laid out as a peer other than ours may write it: `data` in a header wider
/// than it needs, anywhere among the keys, with unknown keys (holding strings, maps, bins)
/// before and after it, and the id in any width.
fn odd_request(data: &str, width: u8, id: Option<u64>, extra: &[(String, Vec<u8>)], data_at: usize) -> Vec<u8> {
    let mut entries: Vec<Vec<u8>> = extra
        .iter()
        .map(|(key, value)| [str_header_of(1, key.len()), key.as_bytes().to_vec(), value.clone()].concat())
        .collect();
    let data_entry = [&b"\xa4data"[..], &str_header_of(width, data.len()), data.as_bytes()].concat();
    entries.insert(data_at.min(entries.len()), data_entry);
    entries.insert(0, b"\xa8msg_type\xa4data".to_vec());
    if let Some(id) = id {
        // As a uint64, whatever its size: valid, not canonical.
        entries.push([&b"\xa2id\xcf"[..], &id.to_be_bytes()].concat());
    }
    let mut body = vec![0xde];
    body.extend((entries.len() as u16).to_be_bytes());
    body.extend(entries.concat());
    [&(body.len() as u32).to_le_bytes()[..], &body].concat()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, ..Default::default() })]

    /// Whatever the request's layout (key order, unknown keys, header widths, id width), the
    /// ack `serve` writes, however the input is split and the output taken, is the one-buffer
    /// encoder's frame for `Acknowledged: ` and the data.
    #[test]
    fn an_ack_of_any_request_layout_is_the_one_buffer_encoders_frame(
        size in proptest::prop_oneof![0usize..40, 65_500usize..65_560, 65_536usize..65_600, 200_000usize..200_100],
        wide in proptest::prelude::any::<bool>(),
        width in 0u8..4,
        id in proptest::option::of(proptest::prop_oneof![0u64..0x80, 0x80u64..0x100, 0x100u64..0x1_0000,
            0x1_0000u64..0x1_0000_0000, 0x1_0000_0000u64..=MAX_SAFE_ID]),
        extra in proptest::collection::vec(("[a-z]{1,6}", proptest::prop_oneof![
            proptest::prelude::Just(b"\xa3abc".to_vec()),
            proptest::prelude::Just(b"\x81\xa1k\x92\x01\xc0".to_vec()),
            proptest::prelude::Just(b"\xc4\x02\xff\xfe".to_vec()),
            proptest::prelude::Just(b"\xa4data".to_vec()),
        ]), 0..4),
        data_at in 0usize..5,
        read_step in proptest::prop_oneof![1usize..5000, 65_536usize..70_000],
        write_step in proptest::prop_oneof![1usize..5000, 65_536usize..300_000],
    ) {
        let data = text(size, wide);
        let width = match (width, data.len()) {
            (0, 0..=31) => 0,
            (0 | 1, 0..=255) => 1,
            (0..=2, 0..=0xffff) => 2,
            _ => 4,
        };
        // Unknown keys that happen to be `data`, `id` or `msg_type` would change the request.
        let extra: Vec<(String, Vec<u8>)> =
            extra.into_iter().filter(|(k, _)| !["data", "id", "msg_type"].contains(&k.as_str())).collect();
        let request = odd_request(&data, width, id, &extra, data_at);
        let decoded = rust_ts_ipc::decode_msgpack_envelope(&request[4..]).unwrap();
        proptest::prop_assert_eq!(decoded.data.as_str(), Some(data.as_str()));
        let mut input = request.clone();
        input.extend(frame_of("data", Data::from("after"), Some(1)));
        let mut want = frame_of("ack", Data::from(format!("Acknowledged: {data}")), id);
        want.extend(frame_of("ack", Data::from("Acknowledged: after"), Some(1)));
        let (got, _) = served(input.clone(), 1 << 20, &[read_step, 7], write_step);
        proptest::prop_assert!(got == want, "{} bytes, wanted {}", got.len(), want.len());
        proptest::prop_assert!(flat_answers(&input, 1 << 20) == want);
    }
}
