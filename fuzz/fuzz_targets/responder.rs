//! The responder on any byte stream: never panics; every reply is one valid protocol line
//! (a JSON object with string `msg_type`/`data` and an optional safe id); the line path
//! (`handle_line`, the addon's) and the stream path (`LineDecoder` + `handle_frame`, the
//! pipe's) give the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rust_ts_ipc::{decode_message, LineDecoder, Responder, ResponderOptions};

fuzz_target!(|data: &[u8]| {
    let [limit, exit_after, input @ ..] = data else { return };
    let options = ResponderOptions {
        max_line_bytes: if *limit == 255 { 1 << 24 } else { usize::from(*limit) * 4 },
        exit_after: u64::from(*exit_after % 8),
        ..Default::default()
    };

    let mut by_stream = Vec::new();
    let mut responder = Responder::new(options.clone());
    let mut decoder = LineDecoder::new(options.max_line_bytes);
    for chunk in input.chunks(7) {
        decoder.feed(chunk);
        while let Some(frame) = decoder.next_frame() {
            responder.handle_frame(frame, &mut by_stream);
        }
    }
    while let Some(frame) = decoder.finish() {
        responder.handle_frame(frame, &mut by_stream);
    }

    let mut by_line = Vec::new();
    let mut responder = Responder::new(options);
    let mut lines: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    for line in lines {
        responder.handle_line(line, &mut by_line);
    }
    assert_eq!(by_stream, by_line, "stream and line paths differ");

    let text = std::str::from_utf8(&by_stream).expect("replies are UTF-8");
    for reply in text.lines() {
        let m = decode_message(reply).unwrap_or_else(|e| panic!("reply {reply:?} is not a message: {e}"));
        assert!(["response", "ack", "exit", "error"].contains(&m.msg_type.as_str()), "{reply}");
    }
});
