//! What can be wrong with one incoming line. The texts are part of the protocol: the
//! TypeScript child and the addon produce the same bytes (see `tests/conformance.json`).

use std::fmt;

use serde_json::Value;

use crate::message::MAX_SAFE_ID;

/// How many characters of an offending line an error quotes.
const EXCERPT_CHARS: usize = 40;

/// How many bytes of an offending frame an error quotes.
const HEX_EXCERPT_BYTES: usize = 16;

/// The first 16 bytes of `frame` in lowercase hex, then `…` if there was more: how errors
/// about a MessagePack frame quote it (`91a178`).
pub fn hex_excerpt(frame: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 * HEX_EXCERPT_BYTES + 3);
    for &b in frame.iter().take(HEX_EXCERPT_BYTES) {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    if frame.len() > HEX_EXCERPT_BYTES {
        out.push('…');
    }
    out
}

/// The first 40 characters (Unicode scalar values) of `s`, then `…` if there was more.
pub fn excerpt(s: &str) -> String {
    clip(s, EXCERPT_CHARS)
}

/// The first `chars` characters (Unicode scalar values) of `s`, then `…` if there was more.
pub(crate) fn clip(s: &str, chars: usize) -> String {
    match s.char_indices().nth(chars) {
        None => s.to_owned(),
        Some((cut, _)) => format!("{}…", &s[..cut]),
    }
}

/// The kind of a JSON value, as error messages name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonKind {
    /// `null`
    Null,
    /// `true` / `false`
    Boolean,
    /// any number
    Number,
    /// a string
    String,
    /// `[...]`
    Array,
    /// `{...}`
    Object,
}

impl JsonKind {
    /// The kind of `v`.
    pub fn of(v: &Value) -> Self {
        match v {
            Value::Null => JsonKind::Null,
            Value::Bool(_) => JsonKind::Boolean,
            Value::Number(_) => JsonKind::Number,
            Value::String(_) => JsonKind::String,
            Value::Array(_) => JsonKind::Array,
            Value::Object(_) => JsonKind::Object,
        }
    }
}

impl JsonKind {
    /// Its name, as error messages write it.
    pub fn name(self) -> &'static str {
        match self {
            JsonKind::Null => "null",
            JsonKind::Boolean => "boolean",
            JsonKind::Number => "number",
            JsonKind::String => "string",
            JsonKind::Array => "array",
            JsonKind::Object => "object",
        }
    }
}

impl fmt::Display for JsonKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why one line or message could not be answered normally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// The line's bytes are not UTF-8; `offset` is where the first bad sequence starts.
    InvalidUtf8 {
        /// Byte offset of the first invalid sequence.
        offset: usize,
    },
    /// The line was longer than the limit and was discarded unread.
    LineTooLong {
        /// Bytes in the line, without its line ending.
        length: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The line is not JSON.
    InvalidJson {
        /// The start of the line.
        excerpt: String,
    },
    /// The line is JSON but not an object.
    NotAnObject {
        /// What it is instead.
        kind: JsonKind,
        /// The start of the line.
        excerpt: String,
    },
    /// `id` is present but not an integer in `0..=MAX_SAFE_ID`.
    BadId {
        /// What it is instead.
        kind: JsonKind,
        /// The start of the line.
        excerpt: String,
    },
    /// A required field is absent.
    MissingField {
        /// `msg_type` or `data`.
        field: &'static str,
        /// The start of the line.
        excerpt: String,
    },
    /// A required field is not a string.
    NotAString {
        /// `msg_type` or `data`.
        field: &'static str,
        /// What it is instead.
        kind: JsonKind,
        /// The start of the line.
        excerpt: String,
    },
    /// `msg_type` is none the responder answers.
    UnknownMsgType {
        /// The start of the offending `msg_type`.
        msg_type: String,
        /// The `msg_type`s that are answered, in the order the message lists them.
        expected: Vec<String>,
    },
    /// The conversation is over; nothing more is answered.
    Ended,
    /// A MessagePack frame of zero bytes.
    EmptyFrame,
    /// The frame was longer than the limit and was skipped unread.
    FrameTooLong {
        /// The length its header announced.
        length: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The stream ended inside a frame.
    FrameCut {
        /// Bytes of the header that arrived (when `length` is `None`), else of the body.
        received: usize,
        /// The body's length, if the whole header arrived.
        length: Option<usize>,
    },
    /// The frame does not start with one whole MessagePack value (it is cut short, or holds
    /// the reserved byte `c1`).
    InvalidMsgpack {
        /// The frame's first bytes in hex ([`hex_excerpt`]).
        excerpt: String,
    },
    /// The frame's value is not a map.
    NotAMap {
        /// The frame's first bytes in hex.
        excerpt: String,
    },
    /// The frame holds more bytes after its map.
    BytesLeftOver {
        /// How many.
        count: usize,
        /// The frame's first bytes in hex.
        excerpt: String,
    },
    /// A MessagePack `str` the protocol reads is not UTF-8.
    InvalidUtf8InString {
        /// Offset in the frame of the first byte of the first invalid sequence.
        offset: usize,
        /// The frame's first bytes in hex.
        excerpt: String,
    },
    /// A field has the wrong type: `field `data` must be bytes, got string`.
    MistypedField {
        /// `msg_type`, `data` or `id`.
        field: &'static str,
        /// What it must be: `a string`, `bytes`, `an integer from 0 to 9007199254740991`.
        expected: &'static str,
        /// What it is: a [`JsonKind`]'s name, or `bytes` or `extension` (MessagePack only).
        kind: &'static str,
        /// The start of the line, or the frame's first bytes in hex.
        excerpt: String,
    },
    /// `data` holds a MessagePack value that [`crate::Data`] cannot hold (only the library's
    /// envelope reads all of `data`; the built-in services read strings and bytes).
    Unrepresentable {
        /// What: `bytes inside an array or map`, `an extension`, `a map key that is not a
        /// string`, `NaN or an infinite number`, `nesting deeper than 128 levels`.
        what: &'static str,
        /// The frame's first bytes in hex.
        excerpt: String,
    },
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::InvalidUtf8 { offset } => write!(f, "invalid UTF-8 at byte {offset}"),
            ProtocolError::LineTooLong { length, limit } => {
                write!(f, "line of {length} bytes exceeds the {limit}-byte limit")
            }
            ProtocolError::InvalidJson { excerpt } => write!(f, "invalid JSON: `{excerpt}`"),
            ProtocolError::NotAnObject { kind, excerpt } => {
                write!(f, "expected a JSON object, got {kind}: `{excerpt}`")
            }
            ProtocolError::BadId { kind, excerpt } => {
                write!(f, "field `id` must be an integer from 0 to {MAX_SAFE_ID}, got {kind}: `{excerpt}`")
            }
            ProtocolError::MissingField { field, excerpt } => write!(f, "missing field `{field}`: `{excerpt}`"),
            ProtocolError::NotAString { field, kind, excerpt } => {
                write!(f, "field `{field}` must be a string, got {kind}: `{excerpt}`")
            }
            ProtocolError::UnknownMsgType { msg_type, expected } => {
                write!(f, "unknown msg_type `{msg_type}`; ")?;
                match expected.split_last() {
                    None => f.write_str("no msg_type is answered"),
                    Some((last, [])) => write!(f, "expected {last}"),
                    Some((last, rest)) => write!(f, "expected {} or {last}", rest.join(", ")),
                }
            }
            ProtocolError::Ended => f.write_str("conversation has ended; message ignored"),
            ProtocolError::EmptyFrame => f.write_str("empty frame"),
            ProtocolError::FrameTooLong { length, limit } => {
                write!(f, "frame of {length} bytes exceeds the {limit}-byte limit")
            }
            ProtocolError::FrameCut { received, length: None } => {
                write!(f, "the stream ended inside the frame's 4-byte length header, after {received} bytes")
            }
            ProtocolError::FrameCut { received, length: Some(length) } => {
                write!(f, "the stream ended inside the frame, after {received} of its {length} bytes")
            }
            ProtocolError::InvalidMsgpack { excerpt } => write!(f, "invalid MessagePack: `{excerpt}`"),
            ProtocolError::NotAMap { excerpt } => write!(f, "not a map: `{excerpt}`"),
            ProtocolError::BytesLeftOver { count, excerpt } => {
                let bytes = if *count == 1 { "byte" } else { "bytes" };
                write!(f, "{count} {bytes} left over after the map: `{excerpt}`")
            }
            ProtocolError::InvalidUtf8InString { offset, excerpt } => {
                write!(f, "invalid UTF-8 in a string at byte {offset}: `{excerpt}`")
            }
            ProtocolError::MistypedField { field, expected, kind, excerpt } => {
                write!(f, "field `{field}` must be {expected}, got {kind}: `{excerpt}`")
            }
            ProtocolError::Unrepresentable { what, excerpt } => {
                write!(f, "field `data` holds {what}, which JSON data cannot hold: `{excerpt}`")
            }
        }
    }
}

impl std::error::Error for ProtocolError {}

/// A [`ProtocolError`] on a numbered line: `line 3: invalid JSON: `not json``.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based physical line number (blank lines count).
    pub line: u64,
    /// What was wrong.
    pub error: ProtocolError,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.error)
    }
}

impl std::error::Error for LineError {}

/// A [`ProtocolError`] in a numbered MessagePack frame: `frame 3: not a map: `91a178``.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    /// 1-based frame number.
    pub frame: u64,
    /// What was wrong.
    pub error: ProtocolError,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "frame {}: {}", self.frame, self.error)
    }
}

impl std::error::Error for FrameError {}

/// Where an error happened: a line of the NDJSON stream or a frame of the MessagePack one.
pub(crate) fn numbered(encoding: crate::Encoding, number: u64, error: ProtocolError) -> String {
    match encoding {
        crate::Encoding::Json => LineError { line: number, error }.to_string(),
        crate::Encoding::Msgpack => FrameError { frame: number, error }.to_string(),
    }
}
