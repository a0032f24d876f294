//! What can be wrong with one incoming line. The texts are part of the protocol: the
//! TypeScript child and the addon produce the same bytes (see `tests/conformance.json`).

use std::fmt;

use serde_json::Value;

use crate::message::MAX_SAFE_ID;

/// How many characters of an offending line an error quotes.
const EXCERPT_CHARS: usize = 40;

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

impl fmt::Display for JsonKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JsonKind::Null => "null",
            JsonKind::Boolean => "boolean",
            JsonKind::Number => "number",
            JsonKind::String => "string",
            JsonKind::Array => "array",
            JsonKind::Object => "object",
        })
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
