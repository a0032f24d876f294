//! The wire message and its validation.

use std::borrow::Cow;
use std::io::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{excerpt, JsonKind, ProtocolError};

/// The largest `id` a JavaScript peer can represent exactly (`Number.MAX_SAFE_INTEGER`).
pub const MAX_SAFE_ID: u64 = 9_007_199_254_740_991;

/// One protocol message. Without `id` its wire form is exactly the seed's:
/// `{"msg_type":"greeting","data":"..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// What kind of message this is: `greeting`, `data`, `exit`, `response`, `ack`, `error`.
    pub msg_type: String,
    /// The payload, always a string.
    pub data: String,
    /// Optional correlation id, echoed on every reply to a message that carried one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
}

impl Message {
    /// A message without an id.
    pub fn new(msg_type: impl Into<String>, data: impl Into<String>) -> Self {
        Message { msg_type: msg_type.into(), data: data.into(), id: None }
    }

    /// The same message carrying `id`.
    pub fn with_id(mut self, id: u64) -> Self {
        self.id = Some(id);
        self
    }

    /// Appends the NDJSON line for this message (ending in `\n`) to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        write_message(out, &self.msg_type, &self.data, self.id);
    }

    /// The NDJSON line for this message, ending in `\n`.
    pub fn to_line(&self) -> String {
        let mut out = Vec::with_capacity(self.data.len() + 40);
        self.encode_into(&mut out);
        // The encoder writes only UTF-8 (JSON text built from `str`s).
        String::from_utf8(out).unwrap_or_default()
    }
}

/// A decoded message borrowing from its line where it can (no copy unless the JSON had escapes).
#[derive(Debug)]
pub(crate) struct Incoming<'a> {
    pub msg_type: Cow<'a, str>,
    pub data: Cow<'a, str>,
    pub id: Option<u64>,
}

/// Why a line was not a message, and the id it carried if that much was readable (so the
/// error reply can still be correlated).
#[derive(Debug)]
pub(crate) struct Rejected {
    pub error: ProtocolError,
    pub id: Option<u64>,
}

/// The fast path: what serde can borrow straight out of the line.
#[derive(Deserialize)]
struct Borrowed<'a> {
    #[serde(borrow)]
    msg_type: Cow<'a, str>,
    #[serde(borrow)]
    data: Cow<'a, str>,
    #[serde(default)]
    id: Option<u64>,
}

/// Decodes one line of JSON text into a [`Message`], with the protocol's exact error texts.
pub fn decode_message(line: &str) -> Result<Message, ProtocolError> {
    decode(line)
        .map(|m| Message { msg_type: m.msg_type.into_owned(), data: m.data.into_owned(), id: m.id })
        .map_err(|r| r.error)
}

pub(crate) fn decode(line: &str) -> Result<Incoming<'_>, Rejected> {
    // Fast path: a well-formed message deserializes straight into borrowed fields. Anything
    // it refuses (including valid messages it is too strict for, such as `"id": 1.0` or a
    // repeated key) goes to the slow path, which is the authority on what is accepted and
    // on the error text, so both paths always agree.
    if let Ok(m) = serde_json::from_str::<Borrowed<'_>>(line) {
        if m.id.is_none_or(|id| id <= MAX_SAFE_ID) {
            return Ok(Incoming { msg_type: m.msg_type, data: m.data, id: m.id });
        }
    }
    decode_slow(line)
}

fn decode_slow(line: &str) -> Result<Incoming<'_>, Rejected> {
    let reject = |error| Rejected { error, id: None };
    let value: Value =
        serde_json::from_str(line).map_err(|_| reject(ProtocolError::InvalidJson { excerpt: excerpt(line) }))?;
    let Value::Object(mut map) = value else {
        return Err(reject(ProtocolError::NotAnObject { kind: JsonKind::of(&value), excerpt: excerpt(line) }));
    };
    let id = match map.get("id") {
        None | Some(Value::Null) => None,
        Some(v) => match safe_id(v) {
            Some(id) => Some(id),
            None => return Err(reject(ProtocolError::BadId { kind: JsonKind::of(v), excerpt: excerpt(line) })),
        },
    };
    let mut field = |name: &'static str| match map.remove(name) {
        None => Err(Rejected { error: ProtocolError::MissingField { field: name, excerpt: excerpt(line) }, id }),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(Rejected {
            error: ProtocolError::NotAString { field: name, kind: JsonKind::of(&other), excerpt: excerpt(line) },
            id,
        }),
    };
    let msg_type = field("msg_type")?;
    let data = field("data")?;
    Ok(Incoming { msg_type: Cow::Owned(msg_type), data: Cow::Owned(data), id })
}

/// An integer from 0 to [`MAX_SAFE_ID`] in any JSON number form (`1`, `1.0`, `1e2`), the
/// same set JavaScript's `Number.isInteger` accepts in that range.
fn safe_id(v: &Value) -> Option<u64> {
    let n = v.as_number()?;
    if let Some(u) = n.as_u64() {
        return (u <= MAX_SAFE_ID).then_some(u);
    }
    if n.is_i64() {
        return None; // negative
    }
    let f = n.as_f64()?;
    // -0.0 passes the bounds check and converts to 0, as in JavaScript.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    ((f.fract() == 0.0) && (0.0..=MAX_SAFE_ID as f64).contains(&f)).then_some(f as u64)
}

/// Appends `{"msg_type":T,"data":D[,"id":N]}\n` to `out`; `data` is any `Display`, escaped
/// as it is written, so `Acknowledged: {payload}` needs no intermediate `String`.
pub(crate) fn write_message(out: &mut Vec<u8>, msg_type: &str, data: &dyn std::fmt::Display, id: Option<u64>) {
    out.extend_from_slice(b"{\"msg_type\":");
    write_json_str(out, msg_type);
    out.extend_from_slice(b",\"data\":");
    // Writing into a Vec cannot fail, and our `Display` impls never fail.
    let written = serde::Serializer::collect_str(&mut serde_json::Serializer::new(&mut *out), data);
    debug_assert!(written.is_ok());
    if let Some(id) = id {
        let written = write!(out, ",\"id\":{id}");
        debug_assert!(written.is_ok());
    }
    out.extend_from_slice(b"}\n");
}

fn write_json_str(out: &mut Vec<u8>, s: &str) {
    let written = serde_json::to_writer(&mut *out, s);
    debug_assert!(written.is_ok());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_without_id_is_the_seeds() {
        assert_eq!(Message::new("greeting", "hi").to_line(), "{\"msg_type\":\"greeting\",\"data\":\"hi\"}\n");
        assert_eq!(Message::new("ack", "x").with_id(3).to_line(), "{\"msg_type\":\"ack\",\"data\":\"x\",\"id\":3}\n");
    }

    #[test]
    fn encode_then_decode_is_the_identity() {
        for m in [Message::new("data", "a\"\\\n\u{1}é🌍\u{2028}"), Message::new("", "").with_id(MAX_SAFE_ID)] {
            assert_eq!(decode_message(m.to_line().trim_end()), Ok(m.clone()));
            assert_eq!(serde_json::to_string(&m).map(|s| s + "\n").ok(), Some(m.to_line()));
        }
    }

    #[test]
    fn fast_and_slow_paths_agree_on_ids() {
        for (line, id) in [
            (r#"{"msg_type":"a","data":"b","id":1.0}"#, Some(1)),
            (r#"{"msg_type":"a","data":"b","id":-0}"#, Some(0)),
            (r#"{"msg_type":"a","data":"b","id":-0.0}"#, Some(0)),
            (r#"{"msg_type":"a","data":"b","id":null}"#, None),
        ] {
            assert_eq!(decode_message(line).map(|m| m.id), Ok(id), "{line}");
        }
        assert!(matches!(
            decode_message(r#"{"msg_type":"a","data":"b","id":18446744073709551615}"#),
            Err(ProtocolError::BadId { .. })
        ));
    }

    #[test]
    fn excerpt_counts_characters() {
        assert_eq!(excerpt(&"é".repeat(40)), "é".repeat(40));
        assert_eq!(excerpt(&"é".repeat(41)), format!("{}…", "é".repeat(40)));
    }
}
