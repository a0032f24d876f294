//! The wire message and its validation.

use std::borrow::Cow;

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::envelope::{Data, Envelope, EnvelopeError};
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

/// The fast path: the fields as raw JSON text borrowed from the line. Strings are decoded by
/// [`json_string`], not by serde, which would build an escaped string twice (its scratch
/// buffer, then a copy): a line at the limit must not cost three times the limit.
#[derive(Deserialize)]
struct Borrowed<'a> {
    #[serde(borrow)]
    msg_type: &'a RawValue,
    #[serde(borrow)]
    data: &'a RawValue,
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
    // Fastest path: the envelope exactly as every peer writes it, read without a parser.
    if let Some(c) = decode_canonical(line.as_bytes()) {
        // Both ranges lie between ASCII quotes, so on character boundaries.
        if let (Some(msg_type), Some(data)) = (line.get(c.msg_type.clone()), line.get(c.data.clone())) {
            return Ok(Incoming { msg_type: Cow::Borrowed(msg_type), data: Cow::Borrowed(data), id: c.id });
        }
    }
    // Fast path: a well-formed message deserializes straight into borrowed fields. Anything
    // it refuses (including valid messages it is too strict for, such as `"id": 1.0` or a
    // repeated key) goes to the slow path, which is the authority on what is accepted and
    // on the error text, so both paths always agree.
    if let Ok(m) = serde_json::from_str::<Borrowed<'_>>(line) {
        if m.id.is_none_or(|id| id <= MAX_SAFE_ID) {
            if let (Some(msg_type), Some(data)) = (json_string(m.msg_type.get()), json_string(m.data.get())) {
                return Ok(Incoming { msg_type, data, id: m.id });
            }
        }
    }
    decode_slow(line)
}

/// The envelope in the exact form our encoders write, `{"msg_type":"T","data":"D"}` or
/// `{"msg_type":"T","data":"D","id":N}`, with no whitespace, no escape and no control
/// character in `T` or `D`, `T` and `D` valid UTF-8, and `N` a canonical decimal integer (no
/// sign, no leading zero, no fraction or exponent) no larger than [`MAX_SAFE_ID`]: read by
/// comparing bytes, with no JSON parser. `None` for anything else, which then
/// goes through serde_json. Every line this accepts is valid UTF-8 and valid JSON that the
/// other paths read as the same message (strings without escapes are their own value; the
/// id's text is its value), so it only saves time.
pub(crate) fn decode_canonical(line: &[u8]) -> Option<Canonical> {
    const MSG_TYPE: &[u8] = b"{\"msg_type\":\"";
    const DATA: &[u8] = b"\",\"data\":\"";
    let msg_type_at = MSG_TYPE.len();
    let (msg_type_end, high) = plain_string(line.strip_prefix(MSG_TYPE)?)?;
    let msg_type = msg_type_at..msg_type_at + msg_type_end;
    let data_at = msg_type.end + DATA.len();
    line.get(msg_type.end..data_at).filter(|&sep| sep == DATA)?;
    let (data_end, data_high) = plain_string(line.get(data_at..)?)?;
    let data = data_at..data_at + data_end;
    let id = match line.get(data.end + 1..)? {
        b"}" => None,
        rest => Some(canonical_id(rest.strip_prefix(b",\"id\":")?.strip_suffix(b"}")?)?),
    };
    let canonical = Canonical { msg_type, data, id };
    // Only non-ASCII strings need their UTF-8 checked (the rest of the line was compared).
    if (high | data_high) != 0
        && (std::str::from_utf8(canonical.msg_type(line)).is_err()
            || std::str::from_utf8(canonical.data(line)).is_err())
    {
        return None;
    }
    Some(canonical)
}

/// Where [`decode_canonical`] found the parts of an envelope in its line.
pub(crate) struct Canonical {
    /// The bytes of `msg_type`'s string, without quotes.
    msg_type: std::ops::Range<usize>,
    /// The bytes of `data`'s string, without quotes; the line's `"`, `,"id":N` and `}` follow.
    pub data: std::ops::Range<usize>,
    /// The id's value.
    pub id: Option<u64>,
}

impl Canonical {
    /// `msg_type` in `line` (the line this was found in).
    pub fn msg_type<'a>(&self, line: &'a [u8]) -> &'a [u8] {
        line.get(self.msg_type.clone()).unwrap_or_default()
    }

    /// `data` in `line` (the line this was found in).
    pub fn data<'a>(&self, line: &'a [u8]) -> &'a [u8] {
        line.get(self.data.clone()).unwrap_or_default()
    }
}

/// The length of a string literal's body whose opening quote has been read (the offset of
/// its closing quote), and nonzero if it may hold non-ASCII bytes; `None` if the body holds a
/// `\` or a control character (which a JSON string must escape), or has no closing quote.
fn plain_string(text: &[u8]) -> Option<(usize, u64)> {
    let (end, high) = first_to_escape(text);
    (text.get(end?) == Some(&b'"')).then_some((end?, high))
}

/// The offset of the first byte JSON must escape in a string (`"`, `\` or below 0x20), eight
/// bytes at a time: one pass finds a string's end and checks that nothing before it needs
/// unescaping. Also nonzero if a byte before it (or in its word) is not ASCII.
fn first_to_escape(bytes: &[u8]) -> (Option<usize>, u64) {
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut words = bytes.chunks_exact(8);
    let (mut at, mut high) = (0, 0);
    for word in words.by_ref() {
        if let Ok(word) = <[u8; 8]>::try_from(word) {
            let x = u64::from_le_bytes(word);
            high |= x & HIGHS;
            let hits = escape_hits(x);
            if hits != 0 {
                // The lowest flagged byte is a true match (a false flag needs a borrow from a
                // true match below it); little-endian, so the lowest byte comes first.
                return (Some(at + hits.trailing_zeros() as usize / 8), high);
            }
        }
        at += 8;
    }
    for (i, &b) in words.remainder().iter().enumerate() {
        if b < 0x20 || b == b'"' || b == b'\\' {
            return (Some(at + i), high);
        }
        high |= u64::from(b & 0x80);
    }
    (None, high)
}

/// `digits` as an id if they are a canonical decimal integer (`0`, or no leading zero) of at
/// most [`MAX_SAFE_ID`].
fn canonical_id(bytes: &[u8]) -> Option<u64> {
    // MAX_SAFE_ID has 16 digits: 16 digits cannot overflow a u64.
    if bytes.is_empty() || bytes.len() > 16 || (bytes[0] == b'0' && bytes.len() > 1) {
        return None;
    }
    let mut id = 0u64;
    for &b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        id = id * 10 + u64::from(b - b'0');
    }
    (id <= MAX_SAFE_ID).then_some(id)
}

/// Nonzero exactly when one of the eight bytes of `x` is below 0x20, `"` or `\` (the classic
/// "has less than" and "has zero byte" word tricks; both are exact about whether any byte
/// matches, though not about which).
#[inline]
fn escape_hits(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let quote = x ^ (ONES * u64::from(b'"'));
    let backslash = x ^ (ONES * u64::from(b'\\'));
    ((x.wrapping_sub(ONES * 0x20) & !x)
        | (quote.wrapping_sub(ONES) & !quote)
        | (backslash.wrapping_sub(ONES) & !backslash))
        & HIGHS
}

/// The value of a JSON string literal (`raw` is its text, quotes included, as serde checked
/// it): borrowed when it has no escapes, else unescaped into one string no longer than
/// `raw`. `None` if `raw` is not a string, or holds an unpaired surrogate escape (no Rust
/// string can).
fn json_string(raw: &str) -> Option<Cow<'_, str>> {
    let body = raw.strip_prefix('"')?.strip_suffix('"')?;
    let Some(first) = memchr::memchr(b'\\', body.as_bytes()) else { return Some(Cow::Borrowed(body)) };
    let mut out = String::with_capacity(body.len());
    let mut rest = body;
    let mut at = first;
    loop {
        out.push_str(&rest[..at]);
        let escape = rest.as_bytes().get(at + 1)?;
        rest = &rest[at + 2..];
        match escape {
            b'"' => out.push('"'),
            b'\\' => out.push('\\'),
            b'/' => out.push('/'),
            b'b' => out.push('\u{8}'),
            b'f' => out.push('\u{c}'),
            b'n' => out.push('\n'),
            b'r' => out.push('\r'),
            b't' => out.push('\t'),
            b'u' => {
                let unit = hex4(rest)?;
                rest = &rest[4..];
                let code = match unit {
                    0xD800..=0xDBFF => {
                        let low =
                            rest.strip_prefix("\\u").and_then(hex4).filter(|low| (0xDC00..=0xDFFF).contains(low))?;
                        rest = &rest[6..];
                        0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                    }
                    0xDC00..=0xDFFF => return None,
                    _ => unit,
                };
                out.push(char::from_u32(code)?);
            }
            _ => return None,
        }
        match memchr::memchr(b'\\', rest.as_bytes()) {
            Some(next) => at = next,
            None => break,
        }
    }
    out.push_str(rest);
    Some(Cow::Owned(out))
}

/// The four hex digits at the start of `s`, as a UTF-16 code unit.
fn hex4(s: &str) -> Option<u32> {
    let digits = s.get(..4)?;
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
}

/// The slow path reads the line as `JSON.parse` does, so the Rust and TypeScript peers agree:
/// any grammatical JSON is accepted (nesting of any depth, numbers of any size, unpaired
/// surrogate escapes), a repeated key takes its last value, and only the final `msg_type`,
/// `data` and `id` are interpreted. The one difference is forced by Rust's `String`: an
/// unpaired surrogate in `msg_type` or `data` makes the line invalid JSON.
fn decode_slow<'a>(line: &'a str) -> Result<Incoming<'a>, Rejected> {
    let (msg_type, data, id) = decode_fields(line)?;
    let data = match (raw_kind(data.get()), data.get()) {
        // Fails only on an unpaired surrogate escape, which no Rust string can hold.
        (JsonKind::String, text) => json_string(text)
            .ok_or_else(|| Rejected { error: ProtocolError::InvalidJson { excerpt: excerpt(line) }, id: None })?,
        (kind, _) => {
            return Err(Rejected {
                error: ProtocolError::NotAString { field: "data", kind, excerpt: excerpt(line) },
                id,
            })
        }
    };
    Ok(Incoming { msg_type, data, id })
}

/// The envelope of any message, read with the slow path's rules: `msg_type` (a string),
/// `data` (present; its raw JSON), `id`. The errors are the demo's, in the same order, so a
/// line refused by both is refused with the same text.
fn decode_fields<'a>(line: &'a str) -> Result<(Cow<'a, str>, &'a RawValue, Option<u64>), Rejected> {
    let reject = |error| Rejected { error, id: None };
    let invalid = || reject(ProtocolError::InvalidJson { excerpt: excerpt(line) });
    // Grammar only: serde_json skips ignored values with a loop, not recursion, so there is
    // no depth limit and no stack to overflow.
    serde_json::from_str::<IgnoredAny>(line).map_err(|_| invalid())?;
    let kind = raw_kind(line);
    if kind != JsonKind::Object {
        return Err(reject(ProtocolError::NotAnObject { kind, excerpt: excerpt(line) }));
    }
    let fields: Fields<'a> = serde_json::from_str(line).map_err(|_| invalid())?;
    let id = match fields.id.map(|raw| (raw_kind(raw.get()), raw.get())) {
        None | Some((JsonKind::Null, _)) => None,
        Some((kind, text)) => match safe_id(text).filter(|_| kind == JsonKind::Number) {
            Some(id) => Some(id),
            None => return Err(reject(ProtocolError::BadId { kind, excerpt: excerpt(line) })),
        },
    };
    let missing = |field| Rejected { error: ProtocolError::MissingField { field, excerpt: excerpt(line) }, id };
    let msg_type = match fields.msg_type.map(|raw| (raw_kind(raw.get()), raw.get())) {
        None => return Err(missing("msg_type")),
        // Fails only on an unpaired surrogate escape, which no Rust string can hold.
        Some((JsonKind::String, text)) => json_string(text).ok_or_else(invalid)?,
        Some((kind, _)) => {
            return Err(Rejected {
                error: ProtocolError::NotAString { field: "msg_type", kind, excerpt: excerpt(line) },
                id,
            })
        }
    };
    let data = fields.data.ok_or_else(|| missing("data"))?;
    Ok((msg_type, data, id))
}

/// Decodes one line of JSON text into an [`Envelope`] whose `data` is any JSON value, with
/// the protocol's error texts for everything but `data` (which the demo requires to be a
/// string and the library does not).
///
/// # Errors
/// The line is not JSON, not an object, has a bad `id`, or lacks `msg_type` (a string) or
/// `data`; or `data` cannot be held by a [`serde_json::Value`] (an unpaired surrogate
/// escape, or nesting deeper than serde_json's 128 levels), reported as invalid JSON.
pub fn decode_envelope(line: &str) -> Result<Envelope, EnvelopeError> {
    let (msg_type, data, id) = decode_fields(line)?;
    let data = match json_string(data.get()) {
        Some(s) => Value::String(s.into_owned()),
        None => serde_json::from_str(data.get())
            .map_err(|_| EnvelopeError { error: ProtocolError::InvalidJson { excerpt: excerpt(line) }, id })?,
    };
    Ok(Envelope { msg_type: msg_type.into_owned(), data: Data::Json(data), id })
}

/// The last raw value of each field the protocol reads; every other value is skipped.
#[derive(Default)]
struct Fields<'a> {
    msg_type: Option<&'a RawValue>,
    data: Option<&'a RawValue>,
    id: Option<&'a RawValue>,
}

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut fields = Fields::default();
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::MsgType => fields.msg_type = Some(map.next_value()?),
                        Key::Data => fields.data = Some(map.next_value()?),
                        Key::Id => fields.id = Some(map.next_value()?),
                        Key::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(fields)
            }
        }
        deserializer.deserialize_map(FieldsVisitor)
    }
}

/// An object key, read as bytes so that an unpaired surrogate escape in a key the protocol
/// does not read is not an error (as in `JSON.parse`).
enum Key {
    MsgType,
    Data,
    Id,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object key")
            }
            fn visit_bytes<E: serde::de::Error>(self, key: &[u8]) -> Result<Key, E> {
                Ok(match key {
                    b"msg_type" => Key::MsgType,
                    b"data" => Key::Data,
                    b"id" => Key::Id,
                    _ => Key::Other,
                })
            }
            fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Key, E> {
                self.visit_bytes(key.as_bytes())
            }
        }
        deserializer.deserialize_bytes(KeyVisitor)
    }
}

/// The kind of the JSON value that starts `text` (which is known to be valid JSON).
fn raw_kind(text: &str) -> JsonKind {
    match text.trim_start_matches([' ', '\t', '\n', '\r']).as_bytes().first() {
        Some(b'{') => JsonKind::Object,
        Some(b'[') => JsonKind::Array,
        Some(b'"') => JsonKind::String,
        Some(b't' | b'f') => JsonKind::Boolean,
        Some(b'n') => JsonKind::Null,
        _ => JsonKind::Number,
    }
}

/// An integer from 0 to [`MAX_SAFE_ID`] written in any JSON number form (`1`, `1.0`, `1e2`),
/// the set JavaScript's `Number.isInteger` accepts in that range. Parsed from the text, so a
/// number beyond the range of `f64` (`1e400`) is a number that is out of range, as in
/// JavaScript, and rounding is exact (Rust's and JavaScript's parsers both round correctly).
fn safe_id(text: &str) -> Option<u64> {
    if let Ok(u) = text.parse::<u64>() {
        return (u <= MAX_SAFE_ID).then_some(u);
    }
    let f: f64 = text.parse().ok()?;
    // -0.0 passes the bounds check and converts to 0, as in JavaScript; ±inf and NaN fail.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    ((f.fract() == 0.0) && (0.0..=MAX_SAFE_ID as f64).contains(&f)).then_some(f as u64)
}

/// Appends `{"msg_type":T,"data":D[,"id":N]}\n` to `out`; `data` is any `Display`, escaped
/// as it is written, so `Acknowledged: {payload}` needs no intermediate `String`.
pub(crate) fn write_message(out: &mut Vec<u8>, msg_type: &str, data: &dyn std::fmt::Display, id: Option<u64>) {
    out.extend_from_slice(b"{\"msg_type\":\"");
    write_escaped(out, msg_type);
    out.extend_from_slice(b"\",\"data\":\"");
    // Writing into a Vec cannot fail, and our `Display` impls never fail.
    let written = std::fmt::Write::write_fmt(&mut Escaping(out), format_args!("{data}"));
    debug_assert!(written.is_ok());
    out.push(b'"');
    write_id_and_end(out, id);
}

/// [`write_message`] for a `data` of `lead`, `text` and `tail` (`Acknowledged: ` and the
/// payload): the same bytes without the formatting machinery, for the replies every
/// pipelined message gets. `msg_type`, `lead` and `tail` are the responder's own constants,
/// which need no escaping; `text` is escaped.
pub(crate) fn write_message_parts(
    out: &mut Vec<u8>,
    msg_type: &'static str,
    (lead, text, tail): (&'static str, &str, &'static str),
    id: Option<u64>,
) {
    debug_assert!([msg_type, lead, tail].iter().all(|s| first_to_escape(s.as_bytes()).0.is_none()));
    out.extend_from_slice(b"{\"msg_type\":\"");
    out.extend_from_slice(msg_type.as_bytes());
    out.extend_from_slice(b"\",\"data\":\"");
    out.extend_from_slice(lead.as_bytes());
    write_escaped(out, text);
    out.extend_from_slice(tail.as_bytes());
    out.push(b'"');
    write_id_and_end(out, id);
}

/// `,"id":N}` and the newline (or just `}` and the newline without an id): the end of a reply.
fn write_id_and_end(out: &mut Vec<u8>, id: Option<u64>) {
    if let Some(mut id) = id {
        out.extend_from_slice(b",\"id\":");
        // Decimal digits, last first, into the end of a buffer wide enough for any u64.
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        loop {
            at -= 1;
            // `id % 10` is below 10, so the cast is exact.
            #[allow(clippy::cast_possible_truncation)]
            let digit = (id % 10) as u8;
            digits[at] = b'0' + digit;
            id /= 10;
            if id == 0 {
                break;
            }
        }
        out.extend_from_slice(&digits[at..]);
    }
    out.extend_from_slice(b"}\n");
}

/// A `fmt::Write` that appends what it is given as the body of a JSON string.
struct Escaping<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Escaping<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        write_escaped(self.0, s);
        Ok(())
    }
}

/// Appends `s` as the body of a JSON string, escaped exactly as `serde_json` and
/// `JSON.stringify` both do it: `"` and `\` with a backslash, `\b \t \n \f \r` in short form,
/// other control characters as `\u00xx` (lowercase), everything else as is. Runs of bytes
/// that need no escape are found eight at a time, which makes large payloads 2–3× faster than
/// serde_json's byte-at-a-time loop; the reply's escaping was most of the core's cost at 64 KiB.
pub(crate) fn write_escaped(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        // Skip whole words with no byte below 0x20 and no `"` or `\`.
        while let Some(Ok(word)) = bytes.get(i..i + 8).map(<[u8; 8]>::try_from) {
            if escape_hits(u64::from_le_bytes(word)) != 0 {
                break;
            }
            i += 8;
        }
        let Some(&b) = bytes.get(i) else { break };
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[start..i]);
        if short.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
        } else {
            out.extend_from_slice(short);
        }
        i += 1;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_string_reads_every_escape_as_serde_does_and_refuses_unpaired_surrogates() {
        let agree = [
            r#""plain""#,
            r#""""#,
            r#""\" \\ \/ \b \f \n \r \t""#,
            r#""\u0000\u001f\u00e9\u20AC\uFFFF""#,
            r#""pair \ud83d\ude00 end""#,
            r#""é€😀 \u0041""#,
        ];
        for raw in agree {
            let ours = json_string(raw).map(Cow::into_owned);
            assert_eq!(ours, serde_json::from_str::<String>(raw).ok(), "{raw}");
            assert!(ours.is_some(), "{raw}");
        }
        assert!(matches!(json_string(r#""no escapes""#), Some(Cow::Borrowed("no escapes"))));
        for raw in [r#""\ud83d""#, r#""\ud83d\u0041""#, r#""\ude00""#, r#""\ud83dx""#, "42", "null"] {
            assert_eq!(json_string(raw), None, "{raw}");
        }
    }

    fn escaped(s: &str) -> String {
        let mut out = Vec::new();
        write_escaped(&mut out, s);
        String::from_utf8(out).unwrap_or_default()
    }

    fn serde_escaped(s: &str) -> String {
        let quoted = serde_json::to_string(s).unwrap_or_default();
        quoted[1..quoted.len() - 1].to_owned()
    }

    #[test]
    fn escaping_matches_serde_json_for_every_character_in_every_position() {
        let specials: Vec<char> =
            (0..0x250u32).chain([0x7f, 0x2028, 0x2029, 0xfeff, 0x1f30d]).filter_map(char::from_u32).collect();
        for &c in &specials {
            // The character at every offset within and across the eight-byte words.
            for pad in 0..20 {
                let s = format!("{}{c}{}", "a".repeat(pad), "b".repeat(19 - pad));
                assert_eq!(escaped(&s), serde_escaped(&s), "{:?} at {pad}", c);
            }
        }
        let mixed: String = specials.iter().cycle().take(5000).collect();
        assert_eq!(escaped(&mixed), serde_escaped(&mixed));
        assert_eq!(escaped(""), "");
        assert_eq!(escaped(&"x".repeat(1 << 16)), "x".repeat(1 << 16));
    }

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

    /// The fast path takes `"id":1`; `"id":1.0` and a repeated key force the slow path. Both
    /// must give the same answer whatever the ignored fields hold.
    #[test]
    fn fast_and_slow_paths_agree_on_ignored_fields() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        for extra in [deep.as_str(), r#""\ud800""#, "1e400", r#"{"\udc00":-1e999}"#] {
            for id in ["1", "1.0", "1,\"id\":1"] {
                let line = format!(r#"{{"msg_type":"data","data":"x","x":{extra},"id":{id}}}"#);
                assert_eq!(decode_message(&line), Ok(Message::new("data", "x").with_id(1)), "{line}");
            }
        }
    }

    #[test]
    fn values_are_classified_at_any_depth_and_size_as_json_parse_does() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let kind = |line: &str| match decode_message(line) {
            Err(ProtocolError::NotAnObject { kind, .. } | ProtocolError::NotAString { kind, .. }) => Some(kind),
            Err(ProtocolError::BadId { kind, .. }) => Some(kind),
            _ => None,
        };
        assert_eq!(kind(&deep), Some(JsonKind::Array));
        assert_eq!(kind(&format!(r#"{{"msg_type":"data","data":{deep}}}"#)), Some(JsonKind::Array));
        assert_eq!(kind(&format!(r#"{{"msg_type":"data","data":"x","id":{deep}}}"#)), Some(JsonKind::Array));
        assert_eq!(kind(r#"{"msg_type":"data","data":1e400}"#), Some(JsonKind::Number));
        assert_eq!(kind(r#"{"msg_type":"data","data":"x","id":1e400}"#), Some(JsonKind::Number));
        assert_eq!(kind(r#"{"msg_type":"data","data":"x","id":-1e400}"#), Some(JsonKind::Number));
        // Correctly rounded, as in JavaScript: this is exactly 2^53 - 1.
        assert_eq!(
            decode_message(r#"{"msg_type":"a","data":"b","id":9007199254740991.4}"#).map(|m| m.id),
            Ok(Some(MAX_SAFE_ID))
        );
    }

    #[test]
    fn an_unpaired_surrogate_is_invalid_only_where_the_protocol_reads_it() {
        for line in [r#"{"msg_type":"data","data":"\ud800"}"#, r#"{"msg_type":"\udc00","data":"x","id":3}"#] {
            assert_eq!(decode_message(line), Err(ProtocolError::InvalidJson { excerpt: line.to_owned() }));
        }
        let ignored = r#"{"\ud800":"\udfff","msg_type":"data","data":"\ud83d\ude00"}"#;
        assert_eq!(decode_message(ignored), Ok(Message::new("data", "😀")));
        let last_wins = r#"{"msg_type":"data","data":"\ud800","data":"ok"}"#;
        assert_eq!(decode_message(last_wins), Ok(Message::new("data", "ok")));
    }

    /// What the parser paths (serde fast path, then slow path) make of `line`.
    fn parsed(line: &str) -> Option<(String, String, Option<u64>)> {
        let m = match serde_json::from_str::<Borrowed<'_>>(line) {
            Ok(m) if m.id.is_none_or(|id| id <= MAX_SAFE_ID) => {
                (json_string(m.msg_type.get()).zip(json_string(m.data.get()))).map(|(t, d)| (t, d, m.id))
            }
            _ => None,
        };
        let m = m.or_else(|| decode_slow(line).ok().map(|m| (m.msg_type, m.data, m.id)))?;
        Some((m.0.into_owned(), m.1.into_owned(), m.2))
    }

    #[test]
    fn canonical_reader_takes_exactly_the_plain_envelope_and_agrees_with_the_parser() {
        let accepted = [
            (r#"{"msg_type":"data","data":"x","id":7}"#, "data", "x", Some(7)),
            (r#"{"msg_type":"data","data":"x"}"#, "data", "x", None),
            (r#"{"msg_type":"","data":"","id":0}"#, "", "", Some(0)),
            (
                r#"{"msg_type":"é€","data":"😀 abcdefghijklmnopq","id":9007199254740991}"#,
                "é€",
                "😀 abcdefghijklmnopq",
                Some(MAX_SAFE_ID),
            ),
            (r#"{"msg_type":"data","data":"a/b'c{}:,[]","id":12345678}"#, "data", "a/b'c{}:,[]", Some(12_345_678)),
        ];
        for (line, msg_type, data, id) in accepted {
            let b = line.as_bytes();
            let m = decode_canonical(b).map(|c| {
                (
                    String::from_utf8_lossy(c.msg_type(b)).into_owned(),
                    String::from_utf8_lossy(c.data(b)).into_owned(),
                    c.id,
                )
            });
            assert_eq!(m, Some((msg_type.to_owned(), data.to_owned(), id)), "{line}");
            assert_eq!(m, parsed(line), "{line}");
        }
        // Each left to the parser, at every offset where a word boundary could hide it.
        let mut refused = vec![
            r#"{"msg_type":"data","data":"x","id":07}"#.to_owned(),
            r#"{"msg_type":"data","data":"x","id":9007199254740992}"#.to_owned(),
            r#"{"msg_type":"data","data":"x","id":99999999999999999999}"#.to_owned(),
            r#"{"msg_type":"data","data":"x","id":1.0}"#.to_owned(),
            r#"{"msg_type":"data","data":"x","id":-1}"#.to_owned(),
            r#"{"msg_type":"data","data":"x","id":1e2}"#.to_owned(),
            r#"{"msg_type":"data","data":"x","id":}"#.to_owned(),
            r#"{"msg_type":"data","data":"x","id":null}"#.to_owned(),
            r#"{"msg_type":"data","data":"x","id":1,"id":2}"#.to_owned(),
            r#"{"msg_type":"data","data":"x","id":1} "#.to_owned(),
            r#"{"msg_type":"data","data":"x","id":1"#.to_owned(),
            r#"{"msg_type":"data", "data":"x"}"#.to_owned(),
            r#"{"msg_type":"data","data":"x","data":"y"}"#.to_owned(),
            r#"{"msg_type":"data","data":"x"}}"#.to_owned(),
            r#"{"msg_type":"data","data":5}"#.to_owned(),
            r#"{"data":"x","msg_type":"data"}"#.to_owned(),
            r#"{"msg_type":"data","data":"x"#.to_owned(),
        ];
        for pad in 0..17 {
            let a = "a".repeat(pad);
            for special in ["\\\"", "\\n", "\\u0041", "\\ud800", "\u{1}", "\u{1f}", "\t"] {
                refused.push(format!(r#"{{"msg_type":"data","data":"{a}{special}{a}","id":3}}"#));
                refused.push(format!(r#"{{"msg_type":"{a}{special}","data":"x","id":3}}"#));
            }
        }
        for line in &refused {
            assert!(decode_canonical(line.as_bytes()).is_none(), "{line}");
        }
        // Invalid UTF-8 inside a string is never taken, wherever it is.
        for bad in [&b"\xff"[..], b"\xc3", b"\xed\xa0\x80", b"\xc0\x80"] {
            let data = [&b"{\"msg_type\":\"data\",\"data\":\"a"[..], bad, b"\",\"id\":1}"].concat();
            assert!(decode_canonical(&data).is_none(), "{data:?}");
            let msg_type = [&b"{\"msg_type\":\""[..], bad, b"\",\"data\":\"x\"}"].concat();
            assert!(decode_canonical(&msg_type).is_none(), "{msg_type:?}");
        }
        // The parser still reads the ones that are messages, as before.
        assert_eq!(decode_message(&refused[3]), Ok(Message::new("data", "x").with_id(1)));
        assert_eq!(decode_message(&refused[8]), Ok(Message::new("data", "x").with_id(2)));
        assert_eq!(decode_message(&refused[12]), Ok(Message::new("data", "y")));
        assert_eq!(decode_message(&refused[15]), Ok(Message::new("data", "x")));
    }

    #[test]
    fn first_to_escape_finds_the_first_special_byte_at_every_offset() {
        for len in 0..40 {
            for at in 0..len {
                for special in [b'"', b'\\', 0x00, 0x1f] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = special;
                    // A later special byte never hides an earlier one.
                    if at + 1 < len {
                        bytes[len - 1] = b'"';
                    }
                    assert_eq!(first_to_escape(&bytes).0, Some(at), "{bytes:?}");
                }
            }
            let plain: Vec<u8> = (0..len).map(|i| [b'a', 0x20, 0x7f, 0x80, 0xff, b'!', b'#', b'['][i % 8]).collect();
            let (end, high) = first_to_escape(&plain);
            assert_eq!((end, high != 0), (None, len > 3), "{plain:?}");
            let ascii: Vec<u8> = plain.iter().map(|&b| b & 0x7f | 0x20).collect();
            assert_eq!(first_to_escape(&ascii), (None, 0), "{ascii:?}");
        }
    }

    #[test]
    fn replies_written_in_parts_are_the_formatted_bytes() {
        for (text, id) in [("x", None), ("a\"b\\c\n\u{1}é", Some(0)), ("", Some(MAX_SAFE_ID)), ("y", Some(u64::MAX))] {
            let mut parts = Vec::new();
            write_message_parts(&mut parts, "ack", ("Acknowledged: ", text, "!"), id);
            let mut formatted = Vec::new();
            write_message(&mut formatted, "ack", &format_args!("Acknowledged: {text}!"), id);
            assert_eq!(String::from_utf8_lossy(&parts), String::from_utf8_lossy(&formatted));
            let want = match id {
                Some(id) => format!(
                    "{{\"msg_type\":\"ack\",\"data\":{},\"id\":{id}}}\n",
                    serde_json::to_string(&format!("Acknowledged: {text}!")).unwrap_or_default()
                ),
                None => format!(
                    "{{\"msg_type\":\"ack\",\"data\":{}}}\n",
                    serde_json::to_string(&format!("Acknowledged: {text}!")).unwrap_or_default()
                ),
            };
            assert_eq!(String::from_utf8_lossy(&parts), want);
        }
    }

    #[test]
    fn excerpt_counts_characters() {
        assert_eq!(excerpt(&"é".repeat(40)), "é".repeat(40));
        assert_eq!(excerpt(&"é".repeat(41)), format!("{}…", "é".repeat(40)));
    }
}
