//! The `msgpack` encoding's envelope: one MessagePack map per frame, read and written by hand
//! over `rmp`'s marker table, so that every error names what is wrong, strings and bytes are
//! borrowed from the frame, ignored values are skipped with a loop (no depth limit), and every
//! reply is written in one canonical form that other implementations reproduce byte for byte.
//!
//! Reading (lenient: any valid encoding of a value is accepted):
//! - the frame holds exactly one map; keys are compared as bytes: `"msg_type"`, `"data"`,
//!   `"id"` (as `str`); every other key (any type) and its value is skipped unread; a repeated
//!   key takes its last value, as in `JSON.parse`;
//! - `id`: absent or `nil` = none; else an integer (any int format) or a float whose value is an
//!   integer (as JSON accepts `1.0`), from 0 to 2^53 − 1;
//! - `msg_type`: a `str`, valid UTF-8;
//! - `data`: for the built-in services a `str` (valid UTF-8) or a `bin`; for the library's
//!   [`Envelope`] any value: `bin` → [`Data::Bytes`], anything else → [`Data::Json`] (`nil` →
//!   null, ints and floats → numbers, `str` → string, array, map with `str` keys), refused when
//!   JSON cannot hold it (a `bin` below the top, an `ext`, a non-`str` key, NaN or ±∞, more than
//!   128 levels of nesting).
//!
//! Writing (canonical: the smallest form, as msgpackr writes it with `useRecords: false`):
//! a map of 2 or 3 entries in the order `msg_type`, `data`, `id` (only when present), keys as
//! fixstr; strings as fixstr/str8/str16/str32 by UTF-8 length; bytes as bin8/bin16/bin32;
//! arrays and maps as fix/16/32 by count; integers (and floats whose value is an integer in
//! −2^63..2^64) as the smallest of positive fixint, uint8/16/32/64, negative fixint,
//! int8/16/32/64 (non-negative values always unsigned); other numbers as float64; `nil`,
//! `true`, `false`. Object keys in the order of their UTF-8 bytes (whatever the order of the
//! [`serde_json::Map`]: its `preserve_order` feature may be on).

use std::fmt;
use std::ops::Range;

use rmp::Marker;
use serde_json::{Map, Number, Value};

use crate::envelope::{Data, Envelope, EnvelopeError};
use crate::error::{hex_excerpt, ProtocolError};
use crate::frame::FRAME_HEADER_BYTES;
use crate::message::{Rejected, MAX_SAFE_ID};
use crate::vectored::FrameOut;

/// What `id` must be, as its error says (the same words as the JSON error's).
const ID_EXPECTED: &str = "an integer from 0 to 9007199254740991";

/// How deep `data` may nest when it is read into a [`Value`] (serde_json's own limit).
const MAX_DEPTH: usize = 128;

/// The first piece of one MessagePack value: a scalar whole, or a container's header.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Item<'a> {
    Nil,
    Bool(bool),
    Uint(u64),
    Int(i64),
    Float(f64),
    /// A `str`'s bytes (not yet checked to be UTF-8) and their offset in the frame.
    Str(&'a [u8], usize),
    Bin(&'a [u8]),
    Array(u32),
    Map(u32),
    Ext,
}

impl Item<'_> {
    /// Its kind, as error messages name it (JSON's words, plus `bytes` and `extension`).
    pub(crate) fn kind(self) -> &'static str {
        match self {
            Item::Nil => "null",
            Item::Bool(_) => "boolean",
            Item::Uint(_) | Item::Int(_) | Item::Float(_) => "number",
            Item::Str(..) => "string",
            Item::Bin(_) => "bytes",
            Item::Array(_) => "array",
            Item::Map(_) => "map",
            Item::Ext => "extension",
        }
    }

    /// How many values follow as its children.
    fn children(self) -> u64 {
        match self {
            Item::Array(n) => u64::from(n),
            Item::Map(n) => 2 * u64::from(n),
            _ => 0,
        }
    }
}

/// The bytes end before the value does, or hold the reserved byte `c1`.
#[derive(Debug)]
pub(crate) struct Invalid;

/// A cursor over one frame.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], pos: usize) -> Self {
        Reader { buf, pos }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Invalid> {
        let end = self.pos.checked_add(n).filter(|&end| end <= self.buf.len()).ok_or(Invalid)?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Invalid> {
        self.take(N)?.try_into().map_err(|_| Invalid)
    }

    fn len(&mut self, width: usize) -> Result<usize, Invalid> {
        let n = match width {
            1 => u32::from(self.array::<1>()?[0]),
            2 => u32::from(u16::from_be_bytes(self.array()?)),
            _ => u32::from_be_bytes(self.array()?),
        };
        usize::try_from(n).map_err(|_| Invalid)
    }

    fn str(&mut self, n: usize) -> Result<Item<'a>, Invalid> {
        let at = self.pos;
        Ok(Item::Str(self.take(n)?, at))
    }

    fn ext(&mut self, n: usize) -> Result<Item<'a>, Invalid> {
        self.take(n + 1)?;
        Ok(Item::Ext)
    }

    /// The next item: a scalar whole, or a container's header (its children follow).
    pub(crate) fn next(&mut self) -> Result<Item<'a>, Invalid> {
        let marker = Marker::from_u8(self.array::<1>()?[0]);
        Ok(match marker {
            Marker::FixPos(v) => Item::Uint(u64::from(v)),
            Marker::FixNeg(v) => Item::Int(i64::from(v)),
            Marker::Null => Item::Nil,
            Marker::True => Item::Bool(true),
            Marker::False => Item::Bool(false),
            Marker::U8 => Item::Uint(u64::from(self.array::<1>()?[0])),
            Marker::U16 => Item::Uint(u64::from(u16::from_be_bytes(self.array()?))),
            Marker::U32 => Item::Uint(u64::from(u32::from_be_bytes(self.array()?))),
            Marker::U64 => Item::Uint(u64::from_be_bytes(self.array()?)),
            Marker::I8 => Item::Int(i64::from(i8::from_be_bytes(self.array()?))),
            Marker::I16 => Item::Int(i64::from(i16::from_be_bytes(self.array()?))),
            Marker::I32 => Item::Int(i64::from(i32::from_be_bytes(self.array()?))),
            Marker::I64 => Item::Int(i64::from_be_bytes(self.array()?)),
            Marker::F32 => Item::Float(f64::from(f32::from_be_bytes(self.array()?))),
            Marker::F64 => Item::Float(f64::from_be_bytes(self.array()?)),
            Marker::FixStr(n) => self.str(usize::from(n))?,
            Marker::Str8 => {
                let n = self.len(1)?;
                self.str(n)?
            }
            Marker::Str16 => {
                let n = self.len(2)?;
                self.str(n)?
            }
            Marker::Str32 => {
                let n = self.len(4)?;
                self.str(n)?
            }
            Marker::Bin8 => {
                let n = self.len(1)?;
                Item::Bin(self.take(n)?)
            }
            Marker::Bin16 => {
                let n = self.len(2)?;
                Item::Bin(self.take(n)?)
            }
            Marker::Bin32 => {
                let n = self.len(4)?;
                Item::Bin(self.take(n)?)
            }
            Marker::FixArray(n) => Item::Array(u32::from(n)),
            Marker::Array16 => Item::Array(u32::from(u16::from_be_bytes(self.array()?))),
            Marker::Array32 => Item::Array(u32::from_be_bytes(self.array()?)),
            Marker::FixMap(n) => Item::Map(u32::from(n)),
            Marker::Map16 => Item::Map(u32::from(u16::from_be_bytes(self.array()?))),
            Marker::Map32 => Item::Map(u32::from_be_bytes(self.array()?)),
            Marker::FixExt1 => self.ext(1)?,
            Marker::FixExt2 => self.ext(2)?,
            Marker::FixExt4 => self.ext(4)?,
            Marker::FixExt8 => self.ext(8)?,
            Marker::FixExt16 => self.ext(16)?,
            Marker::Ext8 => {
                let n = self.len(1)?;
                self.ext(n)?
            }
            Marker::Ext16 => {
                let n = self.len(2)?;
                self.ext(n)?
            }
            Marker::Ext32 => {
                let n = self.len(4)?;
                self.ext(n)?
            }
            Marker::Reserved => return Err(Invalid),
        })
    }

    /// Skips the rest of a value whose first item was `first`, with a counter, not recursion:
    /// every child costs at least one byte, so this ends within the frame's length.
    fn skip_children(&mut self, first: Item<'a>) -> Result<(), Invalid> {
        let mut pending = first.children();
        while pending > 0 {
            pending = pending - 1 + self.next()?.children();
        }
        Ok(())
    }

    /// One whole value, skipped; its first item.
    fn value(&mut self) -> Result<Item<'a>, Invalid> {
        let first = self.next()?;
        self.skip_children(first)?;
        Ok(first)
    }
}

/// The envelope of one frame: `msg_type` checked, `data` located (its first item and its bytes).
pub(crate) struct Fields<'a> {
    pub msg_type: &'a str,
    pub data: (Item<'a>, Range<usize>),
    pub id: Option<u64>,
}

/// `bytes` as UTF-8, or the error naming the offset in the frame of the first bad byte.
///
/// Checked by SIMD (`simdutf8`), which only says whether they are valid; std's check, which
/// finds the offset, runs only for the error.
fn utf8<'a>(frame: &[u8], bytes: &'a [u8], at: usize) -> Result<&'a str, ProtocolError> {
    if let Ok(text) = simdutf8::basic::from_utf8(bytes) {
        return Ok(text);
    }
    std::str::from_utf8(bytes)
        .map_err(|e| ProtocolError::InvalidUtf8InString { offset: at + e.valid_up_to(), excerpt: hex_excerpt(frame) })
}

/// The id an item holds, if it is a valid one.
fn safe_id(item: Item<'_>) -> Option<u64> {
    match item {
        Item::Uint(u) => (u <= MAX_SAFE_ID).then_some(u),
        Item::Int(i) => u64::try_from(i).ok().filter(|&u| u <= MAX_SAFE_ID),
        // -0.0 passes and converts to 0, as in JavaScript; NaN and ±inf fail the range check.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
        Item::Float(f) => (f.fract() == 0.0 && (0.0..=MAX_SAFE_ID as f64).contains(&f)).then_some(f as u64),
        _ => None,
    }
}

/// Reads a frame's envelope, in the order of the checks (the first that fails is reported):
/// empty; not one whole MessagePack value; not a map; bytes after the map; a bad `id`; a
/// missing or mistyped (or not UTF-8) `msg_type`; a missing `data`. The id is carried by the
/// errors found after it was read, so that they can still be matched to their request.
pub(crate) fn decode_fields(frame: &[u8]) -> Result<Fields<'_>, Rejected> {
    let hex = || hex_excerpt(frame);
    let reject = |error| Rejected { error, id: None };
    if frame.is_empty() {
        return Err(reject(ProtocolError::EmptyFrame));
    }
    let invalid = |_| reject(ProtocolError::InvalidMsgpack { excerpt: hex() });
    let mut r = Reader::new(frame, 0);
    let first = r.next().map_err(invalid)?;
    let Item::Map(pairs) = first else {
        r.skip_children(first).map_err(invalid)?;
        return Err(reject(ProtocolError::NotAMap { excerpt: hex() }));
    };
    let (mut msg_type, mut data, mut id) = (None, None, None);
    for _ in 0..pairs {
        let key = r.value().map_err(invalid)?;
        let start = r.pos;
        let value = (r.value().map_err(invalid)?, start..r.pos);
        match key {
            Item::Str(b"msg_type", _) => msg_type = Some(value),
            Item::Str(b"data", _) => data = Some(value),
            Item::Str(b"id", _) => id = Some(value.0),
            _ => {}
        }
    }
    if r.pos < frame.len() {
        return Err(reject(ProtocolError::BytesLeftOver { count: frame.len() - r.pos, excerpt: hex() }));
    }
    let id = match id {
        None | Some(Item::Nil) => None,
        Some(item) => Some(safe_id(item).ok_or_else(|| {
            reject(ProtocolError::MistypedField {
                field: "id",
                expected: ID_EXPECTED,
                kind: item.kind(),
                excerpt: hex(),
            })
        })?),
    };
    let with_id = |error| Rejected { error, id };
    let msg_type = match msg_type {
        None => return Err(with_id(ProtocolError::MissingField { field: "msg_type", excerpt: hex() })),
        Some((Item::Str(bytes, at), _)) => utf8(frame, bytes, at).map_err(with_id)?,
        Some((item, _)) => {
            return Err(with_id(ProtocolError::MistypedField {
                field: "msg_type",
                expected: "a string",
                kind: item.kind(),
                excerpt: hex(),
            }))
        }
    };
    let data = data.ok_or_else(|| with_id(ProtocolError::MissingField { field: "data", excerpt: hex() }))?;
    Ok(Fields { msg_type, data, id })
}

/// The data the built-in services read: a string or bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Payload<'a> {
    Str(&'a str),
    Bytes(&'a [u8]),
}

/// `data` as the built-in services take it: a `str` (valid UTF-8) or a `bin`; anything else
/// is the demo's `field `data` must be a string` error.
pub(crate) fn payload<'a>(frame: &'a [u8], data: Item<'a>) -> Result<Payload<'a>, ProtocolError> {
    match data {
        Item::Str(bytes, at) => utf8(frame, bytes, at).map(Payload::Str),
        Item::Bin(bytes) => Ok(Payload::Bytes(bytes)),
        other => Err(ProtocolError::MistypedField {
            field: "data",
            expected: "a string",
            kind: other.kind(),
            excerpt: hex_excerpt(frame),
        }),
    }
}

/// Decodes one MessagePack frame's body into an [`Envelope`]: `data` that is `bin` becomes
/// [`Data::Bytes`], any other value [`Data::Json`].
///
/// # Errors
/// As the module documentation lists, with the protocol's texts; the id is carried when it
/// was read before the error was found.
pub fn decode_msgpack_envelope(frame: &[u8]) -> Result<Envelope, EnvelopeError> {
    let fields = decode_fields(frame)?;
    let id = fields.id;
    let data = match fields.data.0 {
        Item::Bin(bytes) => Data::Bytes(bytes.to_vec()),
        _ => {
            let mut r = Reader::new(frame, fields.data.1.start);
            Data::Json(to_value(&mut r, frame, 0).map_err(|error| EnvelopeError { error, id })?)
        }
    };
    Ok(Envelope { msg_type: fields.msg_type.to_owned(), data, id })
}

/// Where a frame's `data` is a `bin`: its header's offset in the frame's body, its payload's,
/// and the payload's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BinAt {
    pub header: usize,
    pub payload: usize,
    pub len: usize,
}

/// Finds the `bin` that is the value of `data` in a frame's top-level map, from the first bytes
/// of the frame's body (what has arrived of it): the keys and values before `data` must be
/// whole in `prefix`, and the `bin`'s header. `None` if they are not, the frame is not a map,
/// it has no `data` there, or `data` is not a `bin` (the first `data` key counts; a later one
/// would win in the frame, which [`decode_msgpack_envelope_split`] sees to).
pub(crate) fn locate_data_bin(prefix: &[u8]) -> Option<BinAt> {
    let mut r = Reader::new(prefix, 0);
    let Ok(Item::Map(pairs)) = r.next() else { return None };
    for _ in 0..pairs {
        let key = r.value().ok()?;
        if let Item::Str(b"data", _) = key {
            let header = r.pos;
            let width = match *prefix.get(header)? {
                0xc4 => 1,
                0xc5 => 2,
                0xc6 => 4,
                _ => return None,
            };
            let mut h = Reader::new(prefix, header + 1);
            let len = h.len(width).ok()?;
            return Some(BinAt { header, payload: h.pos, len });
        }
        r.value().ok()?;
    }
    None
}

/// [`decode_msgpack_envelope`] for a frame whose `data` `bin` payload was received apart
/// ([`crate::FrameDecoder::detach_range`] at [`locate_data_bin`]'s offset): `rest` is the
/// frame's body with the payload cut out at `at`, `payload` the payload. The result is exactly
/// the whole frame's (the same envelope, the same error texts), and the payload becomes
/// [`Data::Bytes`] as it is, not copied.
pub(crate) fn decode_msgpack_envelope_split(
    rest: &[u8],
    at: usize,
    payload: Vec<u8>,
) -> Result<Envelope, EnvelopeError> {
    let bin = rest.get(..at).and_then(locate_data_bin).filter(|bin| bin.payload == at && bin.len == payload.len());
    if let Some(bin) = bin {
        // The same frame with a `bin` of no bytes in the payload's place: it is read item by
        // item exactly as the whole frame is (the payload's bytes are skipped, never looked at),
        // so it decodes if and only if the whole frame does.
        let mut empty = rest.to_vec();
        empty[bin.header + 1..bin.payload].fill(0);
        if let Ok(fields) = decode_fields(&empty) {
            if fields.data.1.start == bin.header && matches!(fields.data.0, Item::Bin(_)) {
                let msg_type = fields.msg_type.to_owned();
                return Ok(Envelope { msg_type, data: Data::Bytes(payload), id: fields.id });
            }
        }
    }
    // An error to report, or a `data` that is not this payload (a later `data` key): the whole
    // frame, as it came, decoded as usual (rare: the cost of one copy does not matter here).
    let mut whole = Vec::with_capacity(rest.len() + payload.len());
    whole.extend_from_slice(rest.get(..at).unwrap_or(rest));
    whole.extend_from_slice(&payload);
    whole.extend_from_slice(rest.get(at..).unwrap_or_default());
    decode_msgpack_envelope(&whole)
}

/// The value at the reader (known to be whole) as JSON; recursion bounded by [`MAX_DEPTH`].
fn to_value(r: &mut Reader<'_>, frame: &[u8], depth: usize) -> Result<Value, ProtocolError> {
    let unrepresentable = |what| ProtocolError::Unrepresentable { what, excerpt: hex_excerpt(frame) };
    let item = r.next().map_err(|_| ProtocolError::InvalidMsgpack { excerpt: hex_excerpt(frame) })?;
    if item.children() > 0 && depth >= MAX_DEPTH {
        return Err(unrepresentable("nesting deeper than 128 levels"));
    }
    // No more entries are reserved than bytes are left: a header may claim 2^32 of them.
    let room = |n: u32| usize::try_from(n).unwrap_or(usize::MAX).min(frame.len() - r.pos);
    Ok(match item {
        Item::Nil => Value::Null,
        Item::Bool(b) => Value::Bool(b),
        Item::Uint(u) => Value::from(u),
        Item::Int(i) => Value::from(i),
        Item::Float(f) => {
            Number::from_f64(f).map(Value::Number).ok_or_else(|| unrepresentable("NaN or an infinite number"))?
        }
        Item::Str(bytes, at) => Value::String(utf8(frame, bytes, at)?.to_owned()),
        Item::Bin(_) => return Err(unrepresentable("bytes inside an array or map")),
        Item::Ext => return Err(unrepresentable("an extension")),
        Item::Array(n) => {
            let mut items = Vec::with_capacity(room(n));
            for _ in 0..n {
                items.push(to_value(r, frame, depth + 1)?);
            }
            Value::Array(items)
        }
        Item::Map(n) => {
            let mut map = Map::new();
            for _ in 0..n {
                let key = match r.next() {
                    Ok(Item::Str(bytes, at)) => utf8(frame, bytes, at)?.to_owned(),
                    _ => return Err(unrepresentable("a map key that is not a string")),
                };
                let value = to_value(r, frame, depth + 1)?;
                map.insert(key, value);
            }
            Value::Object(map)
        }
    })
}

// --- Writing -------------------------------------------------------------------------------

/// Starts a frame: a placeholder length, patched by [`end_frame`]. Returns where it starts.
pub(crate) fn begin_frame(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
    start
}

/// Ends the frame begun at `start`: writes its length, or, for a body longer than a header can
/// announce, removes it and says so.
pub(crate) fn end_frame(out: &mut Vec<u8>, start: usize) -> Result<(), ProtocolError> {
    let length = out.len() - start - FRAME_HEADER_BYTES;
    let Ok(header) = u32::try_from(length) else {
        out.truncate(start);
        return Err(ProtocolError::FrameTooLong { length, limit: u32::MAX as usize });
    };
    out[start..start + FRAME_HEADER_BYTES].copy_from_slice(&header.to_le_bytes());
    Ok(())
}

/// A non-negative integer in its smallest form.
pub(crate) fn write_uint(out: &mut Vec<u8>, u: u64) {
    match u {
        0..=0x7f => out.push(u as u8),
        0x80..=0xff => out.extend_from_slice(&[0xcc, u as u8]),
        0x100..=0xffff => {
            out.push(0xcd);
            out.extend_from_slice(&(u as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xce);
            out.extend_from_slice(&(u as u32).to_be_bytes());
        }
        _ => {
            out.push(0xcf);
            out.extend_from_slice(&u.to_be_bytes());
        }
    }
}

/// An integer in its smallest form (non-negative ones unsigned).
fn write_int(out: &mut Vec<u8>, i: i64) {
    if let Ok(u) = u64::try_from(i) {
        return write_uint(out, u);
    }
    match i {
        -32..=-1 => out.push(i as u8),
        -128..=-33 => out.extend_from_slice(&[0xd0, i as u8]),
        -32768..=-129 => {
            out.push(0xd1);
            out.extend_from_slice(&(i as i16).to_be_bytes());
        }
        -2_147_483_648..=-32769 => {
            out.push(0xd2);
            out.extend_from_slice(&(i as i32).to_be_bytes());
        }
        _ => {
            out.push(0xd3);
            out.extend_from_slice(&i.to_be_bytes());
        }
    }
}

/// A header of a family with a fix form (`fix_base`, below `fix_limit`) and 8/16/32-bit forms
/// (`wide` = the 8-bit form's marker, or `None` where the family has none).
fn write_header(out: &mut Vec<u8>, len: usize, fix: Option<(u8, usize)>, markers: [Option<u8>; 3]) {
    let (header, n) = small_header(len, fix, markers);
    out.extend_from_slice(&header[..n]);
}

/// A `str` header for `len` bytes (its first `.1` bytes).
fn str_header(len: usize) -> ([u8; 5], usize) {
    small_header(len, Some((0xa0, 32)), [Some(0xd9), Some(0xda), Some(0xdb)])
}

/// A `bin` header for `len` bytes (its first `.1` bytes).
fn bin_header(len: usize) -> ([u8; 5], usize) {
    small_header(len, None, [Some(0xc4), Some(0xc5), Some(0xc6)])
}

/// The header [`write_header`] writes, in an array (its first `.1` bytes): no allocation.
fn small_header(len: usize, fix: Option<(u8, usize)>, markers: [Option<u8>; 3]) -> ([u8; 5], usize) {
    let mut h = [0; 5];
    if let Some((base, limit)) = fix {
        if len < limit {
            h[0] = base | len as u8;
            return (h, 1);
        }
    }
    match (markers, len) {
        ([Some(m8), _, _], 0..=0xff) => {
            (h[0], h[1]) = (m8, len as u8);
            (h, 2)
        }
        ([_, Some(m16), _], 0..=0xffff) => {
            let [b0, b1] = (len as u16).to_be_bytes();
            (h[0], h[1], h[2]) = (m16, b0, b1);
            (h, 3)
        }
        ([_, _, Some(m32)], _) => {
            // Callers bound what they write to u32 lengths (a frame cannot hold more).
            let [b0, b1, b2, b3] = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
            h = [m32, b0, b1, b2, b3];
            (h, 5)
        }
        _ => (h, 0),
    }
}

/// A `str`.
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    let (h, n) = str_header(s.len());
    out.extend_from_slice(&h[..n]);
    out.extend_from_slice(s.as_bytes());
}

/// A `bin`.
pub(crate) fn write_bin(out: &mut Vec<u8>, bytes: &[u8]) {
    write_header(out, bytes.len(), None, [Some(0xc4), Some(0xc5), Some(0xc6)]);
    out.extend_from_slice(bytes);
}

/// A `str` holding `text` rendered straight into `out` (no intermediate `String`): a 5-byte
/// header is reserved, then shrunk to the smallest that fits by moving the text down.
pub(crate) fn write_display_str(out: &mut Vec<u8>, text: &dyn fmt::Display) {
    struct Append<'a>(&'a mut Vec<u8>);
    impl fmt::Write for Append<'_> {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            self.0.extend_from_slice(s.as_bytes());
            Ok(())
        }
    }
    let at = out.len();
    out.extend_from_slice(&[0; 5]);
    // Writing into a Vec cannot fail, and our `Display` impls never fail.
    let written = fmt::Write::write_fmt(&mut Append(out), format_args!("{text}"));
    debug_assert!(written.is_ok());
    let len = out.len() - at - 5;
    let (h, n) = str_header(len);
    // A text of 64 KiB or more keeps its 5-byte header: then there is nothing to move (and a
    // move onto itself would still copy every byte).
    if n < 5 {
        out.copy_within(at + 5.., at + n);
        out.truncate(at + n + len);
    }
    out[at..at + n].copy_from_slice(&h[..n]);
}

/// A number: integral values (within −2^63..2^64) as integers, others as float64.
fn write_number(out: &mut Vec<u8>, n: &Number) {
    if let Some(u) = n.as_u64() {
        write_uint(out, u);
    } else if let Some(i) = n.as_i64() {
        write_int(out, i);
    } else {
        let f = n.as_f64().unwrap_or(f64::NAN);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
        if f.fract() == 0.0 && f >= 0.0 && f < u64::MAX as f64 {
            write_uint(out, f as u64);
        } else if f.fract() == 0.0 && f < 0.0 && f >= i64::MIN as f64 {
            write_int(out, f as i64);
        } else {
            out.push(0xcb);
            out.extend_from_slice(&f.to_be_bytes());
        }
    }
}

/// Any JSON value, in the canonical forms.
pub(crate) fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.push(0xc0),
        Value::Bool(false) => out.push(0xc2),
        Value::Bool(true) => out.push(0xc3),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            write_header(out, items.len(), Some((0x90, 16)), [None, Some(0xdc), Some(0xdd)]);
            for item in items {
                write_value(out, item);
            }
        }
        Value::Object(map) => {
            write_header(out, map.len(), Some((0x80, 16)), [None, Some(0xde), Some(0xdf)]);
            // Keys in the order of their UTF-8 bytes: `Map` iterates so unless serde_json's
            // `preserve_order` feature is on (any crate in a build may turn it on).
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            if !entries.is_sorted_by(|a, b| a.0 <= b.0) {
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            }
            for (key, item) in entries {
                write_str(out, key);
                write_value(out, item);
            }
        }
    }
}

/// The map header and `msg_type` entry of an envelope, then the `data` key.
fn write_head(out: &mut Vec<u8>, msg_type: &str, id: Option<u64>) {
    out.push(if id.is_some() { 0x83 } else { 0x82 });
    out.extend_from_slice(b"\xa8msg_type");
    write_str(out, msg_type);
    out.extend_from_slice(b"\xa4data");
}

fn write_id(out: &mut Vec<u8>, id: Option<u64>) {
    if let Some(id) = id {
        out.extend_from_slice(b"\xa2id");
        write_uint(out, id);
    }
}

/// How many bytes [`write_id`] writes for `id`.
fn id_len(id: Option<u64>) -> usize {
    match id {
        None => 0,
        Some(0..=0x7f) => 4,
        Some(0x80..=0xff) => 5,
        Some(0x100..=0xffff) => 6,
        Some(0x1_0000..=0xffff_ffff) => 8,
        Some(_) => 12,
    }
}

/// What a built-in reply carries.
pub(crate) enum ReplyData<'a> {
    /// A string, rendered as it is written.
    Text(&'a dyn fmt::Display),
}

/// Appends one reply frame: `{msg_type, data, id?}` (bytes data: [`write_bytes_reply`]).
pub(crate) fn write_reply(out: &mut Vec<u8>, msg_type: &str, data: ReplyData<'_>, id: Option<u64>) {
    let ReplyData::Text(text) = data;
    let start = begin_frame(out);
    write_head(out, msg_type, id);
    write_display_str(out, text);
    write_id(out, id);
    if end_frame(out, start).is_err() {
        write_too_long(out, id);
    }
}

/// Over 4 GiB: says so in a frame that fits (the text is short).
fn write_too_long(out: &mut Vec<u8>, id: Option<u64>) {
    let start = begin_frame(out);
    write_head(out, "error", id);
    write_str(out, "reply too long for a frame (over 4294967295 bytes)");
    write_id(out, id);
    let _ = end_frame(out, start);
}

/// Appends one reply frame whose data is `bytes` as a `bin`: the bytes [`write_reply`] writes,
/// with a payload of [`SPLICE_MIN_BYTES`](crate::vectored::SPLICE_MIN_BYTES) or more borrowed
/// by `out` rather than copied (when `out` splices).
pub(crate) fn write_bytes_reply<'p>(out: &mut FrameOut<'_, 'p>, msg_type: &str, bytes: &'p [u8], id: Option<u64>) {
    let (header, n) = bin_header(bytes.len());
    if payload_frame(out, msg_type, &header[..n], bytes.len(), id, |out| out.borrow(bytes)).is_err() {
        write_too_long(out.buf(), id);
    }
}

/// Appends one reply frame whose data is the `str` `lead` then `text` (`Acknowledged: ` and
/// the request's `data`): the bytes [`write_reply`] writes for that text, with a `text` of
/// [`SPLICE_MIN_BYTES`](crate::vectored::SPLICE_MIN_BYTES) or more borrowed by `out` rather
/// than copied (when `out` splices), e.g. from the request's frame.
pub(crate) fn write_str_reply<'p>(
    out: &mut FrameOut<'_, 'p>,
    msg_type: &str,
    lead: &str,
    text: &'p str,
    id: Option<u64>,
) {
    let len = lead.len().saturating_add(text.len());
    let (header, n) = str_header(len);
    let put = |out: &mut FrameOut<'_, 'p>| {
        out.buf().extend_from_slice(lead.as_bytes());
        out.borrow(text.as_bytes());
    };
    if payload_frame(out, msg_type, &header[..n], len, id, put).is_err() {
        write_too_long(out.buf(), id);
    }
}

/// One frame `{msg_type, data, id?}` whose `data` is a `str` or `bin` of `len` bytes: the map
/// up to `data`, the value's `header` (for `len`), the payload that `put` appends to `out`
/// (by reference or by value, or copied), then the `id` entry.
///
/// # Errors
/// [`ProtocolError::FrameTooLong`] when the body would exceed 4 GiB − 1; nothing is written.
fn payload_frame<'p>(
    out: &mut FrameOut<'_, 'p>,
    msg_type: &str,
    header: &[u8],
    len: usize,
    id: Option<u64>,
    put: impl FnOnce(&mut FrameOut<'_, 'p>),
) -> Result<(), ProtocolError> {
    let buf = out.buf();
    let start = begin_frame(buf);
    write_head(buf, msg_type, id);
    let length = (buf.len() - start - FRAME_HEADER_BYTES).saturating_add(header.len() + id_len(id)).saturating_add(len);
    let Ok(length_header) = u32::try_from(length) else {
        buf.truncate(start);
        return Err(ProtocolError::FrameTooLong { length, limit: u32::MAX as usize });
    };
    buf[start..start + FRAME_HEADER_BYTES].copy_from_slice(&length_header.to_le_bytes());
    buf.extend_from_slice(header);
    let before = out.len();
    put(out);
    debug_assert_eq!(out.len() - before, len, "the payload is as long as its header says");
    write_id(out.buf(), id);
    Ok(())
}

impl Envelope {
    /// Appends this message as one MessagePack frame (4-byte little-endian length, then the
    /// map) to `out`, in the canonical forms listed in the module documentation.
    ///
    /// # Errors
    /// [`ProtocolError::FrameTooLong`] when the map is longer than a frame can be (4 GiB − 1);
    /// nothing is written then.
    pub fn encode_frame_into(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        let start = begin_frame(out);
        write_head(out, &self.msg_type, self.id);
        match &self.data {
            Data::Json(value) => write_value(out, value),
            Data::Bytes(bytes) => write_bin(out, bytes),
        }
        write_id(out, self.id);
        end_frame(out, start)
    }

    /// [`encode_frame_into`](Self::encode_frame_into) consuming the message: bytes data, or
    /// a string, of [`SPLICE_MIN_BYTES`](crate::vectored::SPLICE_MIN_BYTES) or more is moved
    /// into `out` as a piece of its own (when `out` splices), not copied. The same bytes are
    /// written.
    ///
    /// # Errors
    /// As [`encode_frame_into`](Self::encode_frame_into); nothing is written then.
    pub fn encode_frame_vectored(self, out: &mut FrameOut<'_, '_>) -> Result<(), ProtocolError> {
        match self.data {
            Data::Bytes(bytes) if out.splices(bytes.len()) => {
                let (header, n) = bin_header(bytes.len());
                payload_frame(out, &self.msg_type, &header[..n], bytes.len(), self.id, |out| out.give(bytes))
            }
            Data::Json(Value::String(text)) if out.splices(text.len()) => {
                let (header, n) = str_header(text.len());
                let len = text.len();
                payload_frame(out, &self.msg_type, &header[..n], len, self.id, |out| out.give(text.into_bytes()))
            }
            _ => self.encode_frame_into(out.buf()),
        }
    }

    /// This message as one MessagePack frame, length header included.
    ///
    /// # Errors
    /// As [`encode_frame_into`](Self::encode_frame_into).
    pub fn to_frame(&self) -> Result<Vec<u8>, ProtocolError> {
        let mut out = Vec::new();
        self.encode_frame_into(&mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        hex_excerpt(bytes).trim_end_matches('…').to_owned()
    }

    fn body(e: &Envelope) -> Vec<u8> {
        e.to_frame().map(|f| f[4..].to_vec()).unwrap_or_default()
    }

    #[test]
    fn integers_take_their_smallest_form() {
        for (n, want) in [
            (0i64, "00"),
            (127, "7f"),
            (128, "cc80"),
            (255, "ccff"),
            (256, "cd0100"),
            (65535, "cdffff"),
            (65536, "ce00010000"),
            (4_294_967_295, "ceffffffff"),
            (4_294_967_296, "cf0000000100000000"),
            (-1, "ff"),
            (-32, "e0"),
            (-33, "d0df"),
            (-128, "d080"),
            (-129, "d1ff7f"),
            (-32768, "d18000"),
            (-32769, "d2ffff7fff"),
            (-2_147_483_649, "d3ffffffff7fffffff"),
        ] {
            let mut out = Vec::new();
            write_int(&mut out, n);
            assert_eq!(hex_excerpt(&out), want, "{n}");
        }
    }

    #[test]
    fn integral_floats_are_written_as_integers_and_others_as_float64() {
        let mut out = Vec::new();
        for v in [serde_json::json!(1.0), serde_json::json!(-0.0), serde_json::json!(-33.0), serde_json::json!(0.5)] {
            write_value(&mut out, &v);
        }
        assert_eq!(hex_excerpt(&out), "0100d0dfcb3fe0000000000000");
    }

    #[test]
    fn map_keys_are_written_in_the_order_of_their_utf8_bytes() {
        // The TypeScript writer's test gives the same bytes for the same object.
        let v = serde_json::json!({"b": 1, "a": 2, "10": 3, "9": 4, "\u{ffff}": 5, "😀": 6, "ab": 7});
        let mut out = Vec::new();
        write_value(&mut out, &v);
        let hex = |b: &[u8]| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(hex(&out), "87a2313003a13904a16102a2616207a16201a3efbfbf05a4f09f988006");
        let mut out = Vec::new();
        write_value(&mut out, &serde_json::json!({"z": {"y": 1, "x": 2}}));
        assert_eq!(hex(&out), "81a17a82a17802a17901");
    }

    #[test]
    fn strings_bins_arrays_and_maps_change_form_at_their_bounds() {
        let len_of = |v: &Value| {
            let mut out = Vec::new();
            write_value(&mut out, v);
            hex(&out[..out.len().min(5)])
        };
        assert_eq!(len_of(&Value::from("a".repeat(31))), "bf61616161");
        assert_eq!(len_of(&Value::from("a".repeat(32))), "d920616161");
        assert_eq!(len_of(&Value::from("a".repeat(256))), "da01006161");
        assert_eq!(len_of(&Value::from("a".repeat(65536))), "db00010000");
        assert_eq!(len_of(&Value::Array(vec![Value::Null; 15])), "9fc0c0c0c0");
        assert_eq!(len_of(&Value::Array(vec![Value::Null; 16])), "dc0010c0c0");
        let mut out = Vec::new();
        write_bin(&mut out, &[7; 256]);
        assert_eq!(hex(&out[..4]), "c5010007");
        for (len, want) in [
            (0, "a0"),
            (31, "bf"),
            (32, "d920"),
            (255, "d9ff"),
            (256, "da0100"),
            (65535, "daffff"),
            (65536, "db00010000"),
            (70000, "db00011170"),
        ] {
            let text = "é".repeat(len / 2).chars().chain("x".repeat(len % 2).chars()).collect::<String>();
            // After something already written: the header goes where the text began.
            let mut out = b"head".to_vec();
            write_display_str(&mut out, &text);
            assert_eq!(out.len() - 4 - len, want.len() / 2, "{len}");
            assert_eq!(hex(&out[4..4 + want.len() / 2]), want, "{len}");
            assert_eq!(&out[..4], b"head", "{len}");
            assert!(out[4 + want.len() / 2..] == *text.as_bytes(), "{len}: the text follows its header intact");
        }
    }

    #[test]
    fn envelopes_round_trip_and_agree_with_rmp_serde() {
        let cases = [
            Envelope::new("greeting", "Hello from Rust!"),
            Envelope::new("bytes", vec![0u8, 1, 255]).with_id(7),
            Envelope::new("sum", serde_json::json!({"a": [1, -2, 2.5, null, true, "x"]})).with_id(MAX_SAFE_ID),
        ];
        for e in cases {
            let b = body(&e);
            assert_eq!(decode_msgpack_envelope(&b), Ok(e.clone()));
            let via_serde: rmpv_like::Any = rmp_serde::from_slice(&b).unwrap_or_default();
            assert_eq!(via_serde.msg_type, e.msg_type);
            assert_eq!(via_serde.id, e.id);
        }
        assert_eq!(hex_excerpt(&body(&Envelope::new("a", "b"))), "82a86d73675f74797065a161a4646174…");
    }

    /// What rmp-serde reads from our frames (it knows nothing of our reader).
    mod rmpv_like {
        #[derive(serde::Deserialize, Default)]
        pub struct Any {
            pub msg_type: String,
            pub id: Option<u64>,
        }
    }

    fn err(frame: &[u8]) -> String {
        match decode_msgpack_envelope(frame) {
            Ok(e) => format!("ok {e:?}"),
            Err(e) => format!("{e} (id {:?})", e.id),
        }
    }

    /// `frame` decoded with its `data` bin payload cut out (where `locate_data_bin` finds it in
    /// its first `scan` bytes), or `None` if it is not found there.
    fn split(frame: &[u8], scan: usize) -> Option<String> {
        let bin = locate_data_bin(&frame[..scan.min(frame.len())])?;
        let payload = frame.get(bin.payload..bin.payload + bin.len)?.to_vec();
        let rest = [&frame[..bin.payload], &frame[bin.payload + bin.len..]].concat();
        Some(match decode_msgpack_envelope_split(&rest, bin.payload, payload) {
            Ok(e) => format!("ok {e:?}"),
            Err(e) => format!("{e} (id {:?})", e.id),
        })
    }

    #[test]
    fn a_data_bin_is_located_at_every_form_and_only_from_whole_items_before_it() {
        for (len, header) in [(0, 2), (255, 2), (256, 3), (65_535, 3), (65_536, 5), (100_000, 5)] {
            let e = Envelope::new("bytes", Data::Bytes(vec![7; len])).with_id(3);
            let frame = body(&e);
            let at = 1 + 9 + 6 + 5;
            let want = BinAt { header: at, payload: at + header, len };
            for scan in 0..=at + header + 2 {
                let got = locate_data_bin(&frame[..scan]);
                assert_eq!(got, (scan >= at + header).then_some(want), "bin of {len}, first {scan} bytes");
            }
        }
        // `data` after other keys, and after an unknown key whose value is a map.
        let frame =
            [&[0x83, 0xa1, b'x', 0x81, 0xa1, b'k', 0x91, 0x01][..], b"\xa4data\xc4\x02ab\xa8msg_type\xa1t"].concat();
        assert_eq!(locate_data_bin(&frame), Some(BinAt { header: 13, payload: 15, len: 2 }));
        // Not a map, no data, data not a bin.
        assert_eq!(locate_data_bin(&[0x91, 0xc4, 0x01, 0x00]), None);
        assert_eq!(locate_data_bin(&body(&Envelope::new("t", "text"))), None);
        assert_eq!(locate_data_bin(&[0x81, 0xa4, b'd', b'a', b't', b'a']), None);
        assert_eq!(locate_data_bin(&[]), None);
    }

    #[test]
    fn a_frame_decoded_with_its_bin_apart_is_exactly_the_whole_frame_decoded() {
        let mut frames: Vec<Vec<u8>> = Vec::new();
        for len in [0, 1, 255, 256, 65_535, 65_536, 70_000] {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            frames.push(body(&Envelope::new("bytes", Data::Bytes(bytes)).with_id(9)));
        }
        let bin = |n: u8| [&[0xc4, n][..], &vec![b'z'; usize::from(n)]].concat();
        let map = |parts: &[&[u8]]| parts.concat();
        let (mt, dt, id) = (&b"\xa8msg_type\xa1t"[..], &b"\xa4data"[..], &b"\xa2id"[..]);
        frames.extend([
            // A later `data` wins: a string, then a bin.
            map(&[&[0x83], mt, dt, &bin(3), dt, b"\xa1s"]),
            map(&[&[0x83], mt, dt, &bin(3), dt, &bin(1)]),
            // Errors after the bin: bytes left over, a bad id, a missing msg_type, a msg_type
            // that is not UTF-8, truncated after the bin, an id that fails after msg_type.
            map(&[&[0x82], mt, dt, &bin(20), b"\xc0"]),
            map(&[&[0x83], mt, dt, &bin(20), id, b"\xa1x"]),
            map(&[&[0x82], dt, &bin(20), id, b"\x05"]),
            map(&[&[0x82], dt, &bin(20), b"\xa8msg_type\xa1\xff"]),
            map(&[&[0x83], mt, dt, &bin(20), id]),
            map(&[&[0x83], dt, &bin(20), mt, id, b"\xcb\x3f\xe0\x00\x00\x00\x00\x00\x00"]),
            // The bin in the first 16 bytes the error quotes.
            map(&[&[0x82], dt, &bin(2), b"\xc1"]),
        ]);
        for frame in &frames {
            let got = split(frame, 1024).unwrap_or_else(|| panic!("no bin in {}", hex(frame)));
            assert_eq!(got, err(frame), "{}", hex(frame));
        }
        // A payload that is not the located one (a wrong length or place) falls back to the
        // whole frame and still decodes it right.
        let frame = &frames[2];
        let bin = locate_data_bin(frame).unwrap_or(BinAt { header: 0, payload: 0, len: 0 });
        let rest = [&frame[..bin.payload], &frame[bin.payload + 1..]].concat();
        let got = decode_msgpack_envelope_split(&rest, bin.payload, frame[bin.payload..bin.payload + 1].to_vec());
        assert_eq!(got.map_err(|e| e.to_string()), decode_msgpack_envelope(frame).map_err(|e| e.to_string()));
    }

    #[test]
    fn every_bad_frame_gets_its_text() {
        assert_eq!(err(b""), "empty frame (id None)");
        assert_eq!(err(b"\xc1"), "invalid MessagePack: `c1` (id None)");
        assert_eq!(err(b"\x91\xa1"), "invalid MessagePack: `91a1` (id None)");
        assert_eq!(err(b"\x91\xa1x"), "not a map: `91a178` (id None)");
        assert_eq!(err(b"\x81\xa2id\x01\xc0"), "1 byte left over after the map: `81a2696401c0` (id None)");
        assert_eq!(
            err(b"\x81\xa2id\xff"),
            "field `id` must be an integer from 0 to 9007199254740991, got number: `81a26964ff` (id None)"
        );
        assert_eq!(err(b"\x81\xa2id\x01"), "missing field `msg_type`: `81a2696401` (id Some(1))");
        assert_eq!(
            err(b"\x82\xa8msg_type\x01\xa4data\xc0"),
            "field `msg_type` must be a string, got number: `82a86d73675f7479706501a464617461…` (id None)"
        );
        assert_eq!(
            err(b"\x81\xa8msg_type\xa1\xff"),
            "invalid UTF-8 in a string at byte 11: `81a86d73675f74797065a1ff` (id None)"
        );
        assert_eq!(err(b"\x81\xa8msg_type\xa1x"), "missing field `data`: `81a86d73675f74797065a178` (id None)");
        assert_eq!(err(b"\x82\xa8msg_type\xa1x\xa4data\xc7\x00\x01"), "field `data` holds an extension, which JSON data cannot hold: `82a86d73675f74797065a178a4646174…` (id None)");
        assert_eq!(err(b"\x82\xa8msg_type\xa1x\xa4data\x91\xc4\x00"), "field `data` holds bytes inside an array or map, which JSON data cannot hold: `82a86d73675f74797065a178a4646174…` (id None)");
    }

    #[test]
    fn ids_are_read_from_any_integer_or_integral_float_form_and_repeated_keys_take_the_last() {
        for (id, want) in [
            (&b"\x07"[..], Some(7)),
            (b"\xcd\x00\x07", Some(7)),
            (b"\xd3\x00\x00\x00\x00\x00\x00\x00\x07", Some(7)),
            (b"\xcb\x40\x1c\x00\x00\x00\x00\x00\x00", Some(7)),
            (b"\xc0", None),
            (b"\xcf\x00\x1f\xff\xff\xff\xff\xff\xff", Some(MAX_SAFE_ID)),
        ] {
            let frame = [&b"\x83\xa8msg_type\xa1x\xa4data\xc0\xa2id"[..], id].concat();
            assert_eq!(decode_msgpack_envelope(&frame).map(|e| e.id), Ok(want), "{}", hex_excerpt(id));
        }
        let frame = b"\x83\xa4data\x01\xa8msg_type\xa1x\xa4data\x02";
        assert_eq!(decode_msgpack_envelope(frame).map(|e| e.data), Ok(Data::from(serde_json::json!(2))));
        let deep = [vec![0x91; 200], vec![0xc0]].concat();
        let frame = [&b"\x82\xa8msg_type\xa1x\xa4data"[..], &deep].concat();
        assert!(err(&frame).starts_with("field `data` holds nesting deeper than 128 levels"));
        let frame = [&b"\x83\xa8msg_type\xa1x\xa1z"[..], &deep, b"\xa4data\xc0"].concat();
        assert_eq!(decode_msgpack_envelope(&frame).map(|e| e.data), Ok(Data::NULL), "ignored values nest freely");
    }

    #[test]
    fn id_len_is_what_write_id_writes_at_every_uint_boundary() {
        let mut ids = vec![None];
        for edge in [0x80u64, 0x100, 0x1_0000, 0x1_0000_0000] {
            ids.extend([Some(edge - 1), Some(edge)]);
        }
        ids.extend([Some(0), Some(MAX_SAFE_ID), Some(u64::MAX)]);
        for id in ids {
            let mut out = Vec::new();
            write_id(&mut out, id);
            assert_eq!(id_len(id), out.len(), "{id:?}");
        }
    }

    #[test]
    fn small_headers_are_the_smallest_form_at_every_boundary() {
        let str_at = |len| {
            let (h, n) = str_header(len);
            h[..n].to_vec()
        };
        assert_eq!(str_at(31), [0xbf]);
        assert_eq!(str_at(32), [0xd9, 32]);
        assert_eq!(str_at(255), [0xd9, 0xff]);
        assert_eq!(str_at(256), [0xda, 1, 0]);
        assert_eq!(str_at(65_535), [0xda, 0xff, 0xff]);
        assert_eq!(str_at(65_536), [0xdb, 0, 1, 0, 0]);
        let (h, n) = bin_header(0);
        assert_eq!(h[..n], [0xc4, 0]);
        let mut array = Vec::new();
        write_header(&mut array, 16, Some((0x90, 16)), [None, Some(0xdc), Some(0xdd)]);
        assert_eq!(array, [0xdc, 0, 16], "a family without an 8-bit form goes to 16 bits");
    }

    /// What std's check says of `bytes` at frame offset `at`: the reference for `utf8`.
    fn std_utf8(bytes: &[u8], at: usize) -> Result<&str, usize> {
        std::str::from_utf8(bytes).map_err(|e| at + e.valid_up_to())
    }

    fn simd_utf8(bytes: &[u8], at: usize) -> Result<&str, usize> {
        utf8(b"frame", bytes, at).map_err(|e| match e {
            ProtocolError::InvalidUtf8InString { offset, .. } => offset,
            other => panic!("not a UTF-8 error: {other}"),
        })
    }

    /// Every bad sequence (lone continuation, overlong, surrogate, beyond U+10FFFF, cut short)
    /// at every position around the 64-byte SIMD blocks, in ASCII and in wider text: the SIMD
    /// check accepts exactly what std accepts and names the same first bad byte.
    #[test]
    fn the_simd_utf8_check_agrees_with_std_at_every_block_edge() {
        let bad: [&[u8]; 9] = [
            b"\x80",
            b"\xc0\x80",
            b"\xc1\xbf",
            b"\xe0\x80\x80",
            b"\xed\xa0\x80",
            b"\xf4\x90\x80\x80",
            b"\xf8\x88\x80\x80\x80",
            b"\xe2\x9c",
            b"\xff",
        ];
        for filler in ["a", "é", "✓", "😀"] {
            let good = filler.repeat(200);
            assert_eq!(simd_utf8(good.as_bytes(), 3), Ok(good.as_str()));
            for at in (0..140).filter(|i| good.is_char_boundary(*i)) {
                for seq in bad {
                    for tail in [&b""[..], b"abc"] {
                        let bytes = [&good.as_bytes()[..at], seq, tail].concat();
                        assert_eq!(
                            simd_utf8(&bytes, 3),
                            std_utf8(&bytes, 3),
                            "{filler} × {at}, then {}",
                            hex_excerpt(seq)
                        );
                        assert_eq!(simd_utf8(&bytes, 3), Err(3 + at));
                    }
                }
            }
        }
    }

    proptest::proptest! {
        /// Any bytes after an ASCII run of any length: the same verdict and offset as std's.
        #[test]
        fn the_simd_utf8_check_agrees_with_std_on_any_bytes(
            ascii in 0usize..300,
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        ) {
            let input = [vec![b'x'; ascii], bytes].concat();
            proptest::prop_assert_eq!(simd_utf8(&input, 11), std_utf8(&input, 11));
        }
    }
}
