//! The library's message: any `msg_type`, any `data`. The demo's [`crate::Message`] is the
//! special case whose data is always a string; this is what [`crate::decode_envelope`] reads
//! and what the library's peers send and receive.

use std::fmt;
use std::io::Write as _;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::error::ProtocolError;
use crate::message::{write_escaped, Rejected};

/// The payload of an [`Envelope`].
///
/// An enum, not a bare [`serde_json::Value`], so that the binary encoding can add raw bytes
/// without changing a signature; it is `#[non_exhaustive]` for that reason: match it with a
/// wildcard arm, or use the accessors.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Data {
    /// Any JSON value: what every NDJSON message carries.
    Json(Value),
    /// Raw bytes: a MessagePack `bin`. Only the `msgpack` encoding carries them; under `json`
    /// a [`crate::Peer`] refuses them before sending (`INVALID_ARGUMENT`) and a
    /// [`crate::Handlers`] reply holding them becomes an `error` reply.
    Bytes(Vec<u8>),
}

impl Data {
    /// JSON `null`.
    pub const NULL: Data = Data::Json(Value::Null);

    /// The data serialized from any serde type (`Data::to_json(&my_struct)`).
    ///
    /// # Errors
    /// When serde_json cannot represent the value (a map with non-string keys, a failing
    /// `Serialize` impl).
    pub fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<Data, serde_json::Error> {
        serde_json::to_value(value).map(Data::Json)
    }

    /// The data deserialized into any serde type.
    ///
    /// # Errors
    /// When the value does not have the shape of `T`; the error says where.
    /// Bytes deserialize as a sequence of numbers (serde's form of `Vec<u8>`).
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        match self {
            Data::Json(value) => T::deserialize(value),
            Data::Bytes(bytes) => {
                T::deserialize(serde::de::value::SeqDeserializer::<_, serde_json::Error>::new(bytes.iter().copied()))
            }
        }
    }

    /// The string, if the data is a JSON string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Data::Json(value) => value.as_str(),
            Data::Bytes(_) => None,
        }
    }

    /// The JSON value, if the data is JSON.
    pub fn as_json(&self) -> Option<&Value> {
        match self {
            Data::Json(value) => Some(value),
            Data::Bytes(_) => None,
        }
    }

    /// The bytes, if the data is bytes.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Data::Bytes(bytes) => Some(bytes),
            Data::Json(_) => None,
        }
    }

    /// Whether the data is bytes, which only the `msgpack` encoding carries.
    pub fn is_bytes(&self) -> bool {
        matches!(self, Data::Bytes(_))
    }

    /// Appends the data's JSON text to `out`. Strings are escaped as `JSON.stringify` does.
    ///
    /// Bytes have no JSON form in the protocol (the library refuses to send them as JSON);
    /// here, for logs and [`Display`](fmt::Display), they are written as an array of numbers
    /// (`[0,1,255]`, serde_json's form of `Vec<u8>`), never as a panic.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Data::Bytes(bytes) => {
                out.push(b'[');
                for (i, b) in bytes.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    let written = write!(out, "{b}");
                    debug_assert!(written.is_ok());
                }
                out.push(b']');
            }
            Data::Json(Value::String(s)) => {
                out.push(b'"');
                write_escaped(out, s);
                out.push(b'"');
            }
            // Writing a Value into a Vec cannot fail (its map keys are strings).
            Data::Json(value) => {
                let written = serde_json::to_writer(&mut *out, value);
                debug_assert!(written.is_ok());
            }
        }
    }
}

impl Default for Data {
    fn default() -> Self {
        Data::NULL
    }
}

impl From<Value> for Data {
    fn from(value: Value) -> Self {
        Data::Json(value)
    }
}

impl From<Vec<u8>> for Data {
    fn from(bytes: Vec<u8>) -> Self {
        Data::Bytes(bytes)
    }
}

impl From<&[u8]> for Data {
    fn from(bytes: &[u8]) -> Self {
        Data::Bytes(bytes.to_vec())
    }
}

impl From<String> for Data {
    fn from(s: String) -> Self {
        Data::Json(Value::String(s))
    }
}

impl From<&str> for Data {
    fn from(s: &str) -> Self {
        Data::Json(Value::String(s.to_owned()))
    }
}

impl fmt::Display for Data {
    /// The data's JSON text (bytes as an array of numbers, see [`Data::write_json`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Vec::new();
        self.write_json(&mut out);
        f.write_str(&String::from_utf8_lossy(&out))
    }
}

/// One message of the library: `{"msg_type": "...", "data": <any JSON>, "id": 7}`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Envelope {
    /// What kind of message this is; a request's `msg_type` names the handler that answers it.
    pub msg_type: String,
    /// The payload.
    pub data: Data,
    /// Correlation id: a request carries one and its reply echoes it; a notification has none.
    pub id: Option<u64>,
}

impl Envelope {
    /// A message without an id.
    pub fn new(msg_type: impl Into<String>, data: impl Into<Data>) -> Self {
        Envelope { msg_type: msg_type.into(), data: data.into(), id: None }
    }

    /// The same message carrying `id`.
    pub fn with_id(mut self, id: u64) -> Self {
        self.id = Some(id);
        self
    }

    /// Appends the NDJSON line for this message (ending in `\n`) to `out`. Keys in the
    /// protocol's order: `msg_type`, `data`, `id` (only when present). Bytes, which JSON
    /// cannot carry, are written as [`Data::write_json`] says; check [`Data::is_bytes`] first
    /// (the library's peers and services do), or use [`Envelope::encode_frame_into`].
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"msg_type\":\"");
        write_escaped(out, &self.msg_type);
        out.extend_from_slice(b"\",\"data\":");
        self.data.write_json(out);
        if let Some(id) = self.id {
            let written = write!(out, ",\"id\":{id}");
            debug_assert!(written.is_ok());
        }
        out.extend_from_slice(b"}\n");
    }

    /// The NDJSON line for this message, ending in `\n`.
    pub fn to_line(&self) -> String {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        // The encoder writes only UTF-8 (JSON text built from `str`s and serde_json).
        String::from_utf8(out).unwrap_or_default()
    }
}

impl From<crate::Message> for Envelope {
    fn from(m: crate::Message) -> Self {
        Envelope { msg_type: m.msg_type, data: Data::from(m.data), id: m.id }
    }
}

/// Why a line was not an [`Envelope`], and the id it carried if that much was readable, so
/// that an error reply can still be matched to its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeError {
    /// What was wrong, with the protocol's text (the same as the demo's for the same input).
    pub error: ProtocolError,
    /// The line's `id`, when it was a valid one.
    pub id: Option<u64>,
}

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for EnvelopeError {}

impl From<Rejected> for EnvelopeError {
    fn from(r: Rejected) -> Self {
        EnvelopeError { error: r.error, id: r.id }
    }
}
