//! One line of text through `decode_message`: never panics; what it accepts re-encodes and
//! decodes to the same message; and the fast path (serde derive) agrees with the slow path
//! (forced by repeating `msg_type`, which the later, original value overrides).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rust_ts_ipc::{decode_message, ProtocolError};

/// An error without its excerpt (which quotes the line, so differs between the two lines).
fn shape(e: &ProtocolError) -> String {
    let text = e.to_string();
    text.split(": `").next().unwrap_or_default().to_owned()
}

fuzz_target!(|line: &str| {
    let decoded = decode_message(line);
    if let Ok(m) = &decoded {
        let encoded = m.to_line();
        assert_eq!(decode_message(encoded.trim_end_matches('\n')).as_ref(), Ok(m));
    }
    let Some(rest) = line.trim_start_matches([' ', '\t', '\n', '\r']).strip_prefix('{') else { return };
    if rest.trim_start_matches([' ', '\t', '\n', '\r']).starts_with('}') {
        return;
    }
    let forced = decode_message(&format!("{{\"msg_type\":0,{rest}"));
    match (&decoded, &forced) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Ok(a), Err(e)) => panic!("fast path gave {a:?}, slow path {e}"),
        (Err(ProtocolError::MissingField { field: "msg_type", .. } | ProtocolError::InvalidJson { .. }), _) => {}
        (Err(a), Err(b)) => assert_eq!(shape(a), shape(b), "{a} / {b}"),
        (Err(a), Ok(b)) => panic!("fast path refused ({a}), slow path gave {b:?}"),
    }
});
