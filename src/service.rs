//! What a pipe service is, without the pipe: the [`Service`] trait that the I/O loop
//! ([`crate::serve`]) drives, and [`Handlers`], the easy way to write one. Sans-IO: frames
//! in, reply bytes out.

use std::any::Any;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::codec::{is_blank, Frame, DEFAULT_MAX_LINE_BYTES};
use crate::encoding::Encoding;
use crate::envelope::{Data, Envelope, EnvelopeError};
use crate::error::{excerpt, numbered, FrameError, ProtocolError};
use crate::frame::{Packet, DEFAULT_MAX_FRAME_BYTES};
use crate::message::{decode_envelope, write_message};
use crate::msgpack::{decode_msgpack_envelope, write_reply, ReplyData};
use crate::responder::Responder;
use crate::vectored::FrameOut;

/// Something that answers the lines of a byte stream: what [`crate::serve`] and
/// [`crate::serve_stdio`] run. [`Handlers`] (a map from `msg_type` to a function) is the easy
/// way to write one; the built-in [`Responder`] is another.
///
/// Implement it yourself for full control of the replies' bytes (the error texts, the line
/// numbers): each frame comes from a [`crate::LineDecoder`] bounded by
/// [`max_line_bytes`](Self::max_line_bytes).
pub trait Service {
    /// The longest line, in bytes without its line ending, that is read whole; a longer one is
    /// dropped as it arrives and given to [`answer`](Self::answer) as [`Frame::TooLong`].
    fn max_line_bytes(&self) -> usize {
        DEFAULT_MAX_LINE_BYTES
    }

    /// Answers one frame, appending zero or more reply lines (each ending in `\n`) to `out`.
    fn answer(&mut self, frame: Frame<'_>, out: &mut Vec<u8>);

    /// The longest MessagePack frame body that is read whole (the `msgpack` encoding); a
    /// longer one is skipped as it arrives and given to [`answer_packet`](Self::answer_packet)
    /// as [`Packet::TooLong`].
    fn max_frame_bytes(&self) -> usize {
        DEFAULT_MAX_FRAME_BYTES
    }

    /// Answers one MessagePack frame (the `msgpack` encoding), appending zero or more reply
    /// frames to `out`. The default, for a service written before the encoding existed,
    /// answers every frame with an `error` frame saying that it answers JSON lines only.
    fn answer_packet(&mut self, packet: Packet<'_>, out: &mut Vec<u8>) {
        let number = match packet {
            Packet::Frame { number, .. } | Packet::TooLong { number, .. } | Packet::Cut { number, .. } => number,
        };
        let text = format!("frame {number}: this service answers JSON lines only (the json encoding)");
        write_reply(out, "error", ReplyData::Text(&text), None);
    }

    /// Answers one MessagePack frame as [`answer_packet`](Self::answer_packet) does, into a
    /// [`FrameOut`]: a reply may hand it a big payload by reference (borrowed from `packet`) or
    /// by value (a `Vec` moved in), and [`crate::serve_with`] writes it from there with one
    /// vectored write instead of copying it into the reply buffer. What the I/O loop calls.
    ///
    /// The default appends to `out`'s buffer with [`answer_packet`](Self::answer_packet), so a
    /// service that implements only that answers exactly as before. [`Responder`] (the `bytes`
    /// echo, an `ack`'s data) and [`Handlers`] (a handler's [`Data::Bytes`] or string) splice
    /// payloads of [`SPLICE_MIN_BYTES`](crate::SPLICE_MIN_BYTES) or more.
    fn answer_packet_vectored<'p>(&mut self, packet: Packet<'p>, out: &mut FrameOut<'_, 'p>) {
        self.answer_packet(packet, out.buf());
    }

    /// True once nothing more will be answered: the loop writes the replies it has and returns
    /// without reading further.
    fn is_done(&self) -> bool {
        false
    }
}

impl Service for Responder {
    fn max_line_bytes(&self) -> usize {
        self.options().max_line_bytes
    }

    fn answer(&mut self, frame: Frame<'_>, out: &mut Vec<u8>) {
        self.handle_frame(frame, out);
    }

    fn max_frame_bytes(&self) -> usize {
        self.options().max_frame_bytes
    }

    fn answer_packet(&mut self, packet: Packet<'_>, out: &mut Vec<u8>) {
        self.handle_packet(packet, out);
    }

    fn answer_packet_vectored<'p>(&mut self, packet: Packet<'p>, out: &mut FrameOut<'_, 'p>) {
        self.handle_packet_vectored(packet, out);
    }

    fn is_done(&self) -> bool {
        Responder::is_done(self)
    }
}

impl<S: Service + ?Sized> Service for &mut S {
    fn max_line_bytes(&self) -> usize {
        (**self).max_line_bytes()
    }

    fn answer(&mut self, frame: Frame<'_>, out: &mut Vec<u8>) {
        (**self).answer(frame, out);
    }

    fn max_frame_bytes(&self) -> usize {
        (**self).max_frame_bytes()
    }

    fn answer_packet(&mut self, packet: Packet<'_>, out: &mut Vec<u8>) {
        (**self).answer_packet(packet, out);
    }

    fn answer_packet_vectored<'p>(&mut self, packet: Packet<'p>, out: &mut FrameOut<'_, 'p>) {
        (**self).answer_packet_vectored(packet, out);
    }

    fn is_done(&self) -> bool {
        (**self).is_done()
    }
}

/// A handler's result after its error has been turned into text.
type Handled = Result<Data, String>;

/// One registered handler.
type Handler<'h> = Box<dyn FnMut(Envelope) -> Handled + 'h>;

/// A [`Service`] made of functions, one per `msg_type`.
///
/// Every request (a message with an `id`) gets exactly one reply, carrying its `id`:
/// - the handler's `Ok(data)` → `{"msg_type": <the request's msg_type>, "data": data, "id": N}`;
/// - its `Err(e)` → `{"msg_type": "error", "data": e.to_string(), "id": N}`;
/// - a panic in the handler → an `error` reply `handler for `T` panicked: <message>` (the panic
///   hook still reports it on stderr), and the service goes on: the handler's own state may be
///   inconsistent afterwards, which is its business (a binary built with `panic = "abort"`
///   aborts instead);
/// - a `msg_type` without a handler → `line N: unknown msg_type `T`; expected a, b or c`;
/// - a line that is not a message (not UTF-8, not JSON, too long, no `msg_type`...) → an `error`
///   naming the line, with the core's texts, as the built-in responder writes them.
///
/// It answers MessagePack frames too (served with [`crate::Encoding::Msgpack`]): the same
/// rules, with replies as frames, `frame N` in the error texts, and [`Data::Bytes`] for `bin`
/// data. Under JSON a handler's bytes cannot be sent: the reply is the `error` `handler for
/// `T` returned bytes, which the json encoding cannot carry; use the msgpack encoding`.
///
/// A message without an `id` is a notification (what a peer's `notify` sends): its handler
/// runs and nothing is sent back, unless it fails; then, as nothing else could name it, the
/// `error` (without id) names its line: `line N: <e>` (the same rule as Node's `serveStdio`).
/// The built-in [`crate::Responder`] answers every message, as the seed protocol (which has
/// no ids) requires.
///
/// ```
/// use rust_ts_ipc::{Data, Handlers};
///
/// let mut service = Handlers::new()
///     .on("upper", |req| match req.data.as_str() {
///         Some(text) => Ok(Data::from(text.to_uppercase())),
///         None => Err(format!("upper: expected a string, got {}", req.data)),
///     })
///     .on("sum", |req| {
///         let numbers: Vec<f64> = req.data.parse().map_err(|e| format!("sum: {e}"))?;
///         Data::to_json(&numbers.iter().sum::<f64>()).map_err(|e| e.to_string())
///     });
/// let mut out = Vec::new();
/// service.answer_line(br#"{"msg_type":"upper","data":"hi","id":1}"#, &mut out);
/// service.answer_line(br#"{"msg_type":"sum","data":[1,2.5],"id":2}"#, &mut out);
/// assert_eq!(
///     String::from_utf8_lossy(&out),
///     "{\"msg_type\":\"upper\",\"data\":\"HI\",\"id\":1}\n{\"msg_type\":\"sum\",\"data\":3.5,\"id\":2}\n"
/// );
/// // To serve it on stdin/stdout: `rust_ts_ipc::serve_stdio(service)`.
/// ```
pub struct Handlers<'h> {
    /// In registration order, which is the order the unknown-`msg_type` error lists them.
    handlers: Vec<(String, Handler<'h>)>,
    max_line_bytes: usize,
    max_frame_bytes: usize,
    /// Lines numbered by [`Handlers::answer_line`] (the decoder numbers the others).
    line: u64,
}

impl Default for Handlers<'_> {
    fn default() -> Self {
        Handlers::new()
    }
}

impl fmt::Debug for Handlers<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handlers")
            .field("msg_types", &self.msg_types().collect::<Vec<_>>())
            .field("max_line_bytes", &self.max_line_bytes)
            .finish_non_exhaustive()
    }
}

impl<'h> Handlers<'h> {
    /// No handlers yet; lines of up to 16 MiB.
    pub fn new() -> Self {
        Handlers {
            handlers: Vec::new(),
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            line: 0,
        }
    }

    /// Answers `msg_type` with `handler`, which gets the whole request (its `data`, `msg_type`
    /// and `id`) and returns the reply's data or an error whose text becomes an `error` reply.
    /// Registering a `msg_type` again replaces its handler.
    #[must_use]
    pub fn on<F, E>(mut self, msg_type: impl Into<String>, mut handler: F) -> Self
    where
        F: FnMut(Envelope) -> Result<Data, E> + 'h,
        E: fmt::Display,
    {
        let msg_type = msg_type.into();
        let handler: Handler<'h> = Box::new(move |request| handler(request).map_err(|e| e.to_string()));
        match self.handlers.iter_mut().find(|(t, _)| *t == msg_type) {
            Some(slot) => slot.1 = handler,
            None => self.handlers.push((msg_type, handler)),
        }
        self
    }

    /// Lines longer than `bytes` (without their line ending) are dropped as they arrive and
    /// get an `error` reply; the default is 16 MiB.
    #[must_use]
    pub fn max_line_bytes(mut self, bytes: usize) -> Self {
        self.max_line_bytes = bytes;
        self
    }

    /// MessagePack frames longer than `bytes` are skipped as they arrive and get an `error`
    /// reply; the default is 16 MiB.
    #[must_use]
    pub fn max_frame_bytes(mut self, bytes: usize) -> Self {
        self.max_frame_bytes = bytes;
        self
    }

    /// The `msg_type`s answered, in registration order.
    pub fn msg_types(&self) -> impl Iterator<Item = &str> {
        self.handlers.iter().map(|(t, _)| t.as_str())
    }

    /// Answers one line (a trailing `\n` or `\r\n` is tolerated), numbering it after the last
    /// one given here: the in-process way to call the service, without a decoder. A blank
    /// line counts as a line and gets no reply.
    pub fn answer_line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        self.line += 1;
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let frame = if line.len() > self.max_line_bytes {
            Frame::TooLong { number: self.line, length: line.len() }
        } else if is_blank(line) {
            return;
        } else {
            Frame::Line { number: self.line, bytes: line }
        };
        self.answer(frame, out);
    }

    /// Answers one MessagePack frame's body (without its length header), numbering it after
    /// the last one given: the in-process way, as [`answer_line`](Self::answer_line) for lines.
    /// Appends the reply frames, each with its length header, to `out`.
    pub fn answer_frame_body(&mut self, body: &[u8], out: &mut Vec<u8>) {
        self.line += 1;
        let packet = if body.len() > self.max_frame_bytes {
            Packet::TooLong { number: self.line, length: body.len() }
        } else {
            Packet::Frame { number: self.line, bytes: body }
        };
        self.answer_packet(packet, out);
    }

    /// The reply to a decoded message: none for a notification that succeeded.
    fn call(&mut self, request: Envelope, number: u64, encoding: Encoding) -> Option<Envelope> {
        let id = request.id;
        let Some(index) = self.handlers.iter().position(|(t, _)| *t == request.msg_type) else {
            let expected = self.msg_types().map(str::to_owned).collect();
            let error = ProtocolError::UnknownMsgType { msg_type: excerpt(&request.msg_type), expected };
            return Some(error_reply(numbered(encoding, number, error), id));
        };
        let (msg_type, handler) = &mut self.handlers[index];
        let unit = match encoding {
            Encoding::Json => "line",
            Encoding::Msgpack => "frame",
        };
        let failed = |text: String| match id {
            Some(_) => Some(error_reply(text, id)),
            None => Some(error_reply(format!("{unit} {number}: {text}"), None)),
        };
        match catch_unwind(AssertUnwindSafe(|| handler(request))) {
            Ok(Ok(data)) if encoding == Encoding::Json && data.is_bytes() => failed(format!(
                "handler for `{msg_type}` returned bytes, which the json encoding cannot carry; use the msgpack encoding"
            )),
            Ok(Ok(data)) => id.map(|id| Envelope { msg_type: msg_type.clone(), data, id: Some(id) }),
            Ok(Err(text)) => failed(text),
            Err(panic) => failed(format!("handler for `{msg_type}` panicked: {}", panic_message(&*panic))),
        }
    }
}

impl Service for Handlers<'_> {
    fn max_line_bytes(&self) -> usize {
        self.max_line_bytes
    }

    fn answer(&mut self, frame: Frame<'_>, out: &mut Vec<u8>) {
        let (number, error, id) = match frame {
            Frame::TooLong { number, length } => {
                (number, ProtocolError::LineTooLong { length, limit: self.max_line_bytes }, None)
            }
            Frame::Line { number, bytes } => match std::str::from_utf8(bytes) {
                Err(e) => (number, ProtocolError::InvalidUtf8 { offset: e.valid_up_to() }, None),
                Ok(text) => match decode_envelope(text) {
                    Ok(request) => {
                        if let Some(reply) = self.call(request, number, Encoding::Json) {
                            reply.encode_into(out);
                        }
                        return;
                    }
                    Err(EnvelopeError { error, id }) => (number, error, id),
                },
            },
        };
        write_message(out, "error", &numbered(Encoding::Json, number, error), id);
    }

    fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    fn answer_packet(&mut self, packet: Packet<'_>, out: &mut Vec<u8>) {
        self.answer_packet_vectored(packet, &mut FrameOut::flat(out));
    }

    /// A handler's [`Data::Bytes`], or string, of [`SPLICE_MIN_BYTES`](crate::SPLICE_MIN_BYTES)
    /// or more is moved into `out`, not copied.
    fn answer_packet_vectored<'p>(&mut self, packet: Packet<'p>, out: &mut FrameOut<'_, 'p>) {
        let (frame, error, id) = match packet {
            Packet::TooLong { number, length } => {
                (number, ProtocolError::FrameTooLong { length, limit: self.max_frame_bytes }, None)
            }
            Packet::Cut { number, received, length } => (number, ProtocolError::FrameCut { received, length }, None),
            Packet::Frame { number, bytes } => match decode_msgpack_envelope(bytes) {
                Ok(request) => {
                    if let Some(reply) = self.call(request, number, Encoding::Msgpack) {
                        let id = reply.id;
                        if let Err(error) = reply.encode_frame_vectored(out) {
                            let text = FrameError { frame: number, error }.to_string();
                            write_reply(out.buf(), "error", ReplyData::Text(&text), id);
                        }
                    }
                    return;
                }
                Err(EnvelopeError { error, id }) => (number, error, id),
            },
        };
        write_reply(out.buf(), "error", ReplyData::Text(&FrameError { frame, error }), id);
    }
}

fn error_reply(text: String, id: Option<u64>) -> Envelope {
    Envelope { msg_type: "error".to_owned(), data: Data::from(text), id }
}

/// The text a panic was raised with (`panic!("...")` carries a `&str` or a `String`).
fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers(service: &mut Handlers<'_>, lines: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        for line in lines {
            service.answer_line(line.as_bytes(), &mut out);
        }
        String::from_utf8_lossy(&out).lines().map(str::to_owned).collect()
    }

    fn echo() -> Handlers<'static> {
        Handlers::new().on("echo", |req| Ok::<_, String>(req.data)).on("fail", |req| Err(format!("no: {}", req.data)))
    }

    #[test]
    fn replies_carry_the_requests_type_and_id_and_any_json() {
        let got = answers(
            &mut echo(),
            &[
                r#"{"msg_type":"echo","data":{"a":[1,2.5,null,true]},"id":1}"#,
                r#"{"msg_type":"echo","data":"x","id":0}"#,
                r#"{"msg_type":"echo","data":-3,"id":9007199254740991}"#,
            ],
        );
        assert_eq!(
            got,
            [
                r#"{"msg_type":"echo","data":{"a":[1,2.5,null,true]},"id":1}"#,
                r#"{"msg_type":"echo","data":"x","id":0}"#,
                r#"{"msg_type":"echo","data":-3,"id":9007199254740991}"#,
            ]
        );
    }

    #[test]
    fn an_error_or_a_panic_is_an_error_reply_with_the_id_and_the_service_goes_on() {
        let mut calls = 0;
        let mut service = echo().on("boom", |_| -> Result<Data, String> {
            calls += 1;
            panic!("kaboom {calls}")
        });
        let got = answers(
            &mut service,
            &[
                r#"{"msg_type":"fail","data":[1],"id":4}"#,
                r#"{"msg_type":"boom","data":null,"id":5}"#,
                r#"{"msg_type":"echo","data":"still here","id":6}"#,
            ],
        );
        assert_eq!(
            got,
            [
                r#"{"msg_type":"error","data":"no: [1]","id":4}"#,
                r#"{"msg_type":"error","data":"handler for `boom` panicked: kaboom 1","id":5}"#,
                r#"{"msg_type":"echo","data":"still here","id":6}"#,
            ]
        );
    }

    #[test]
    fn bad_lines_get_the_cores_error_texts_numbered_by_line() {
        let mut service = echo().max_line_bytes(60);
        let mut out = Vec::new();
        for line in [
            "not json".as_bytes(),
            b"",
            br#"{"msg_type":"nope","data":1,"id":3}"#,
            br#"{"data":1,"id":8}"#,
            b"\xff",
            "x".repeat(61).as_bytes(),
            br#"{"msg_type":"echo","data":"ok","id":2}"#,
        ] {
            service.answer_line(line, &mut out);
        }
        assert_eq!(
            String::from_utf8_lossy(&out).lines().collect::<Vec<_>>(),
            [
                r#"{"msg_type":"error","data":"line 1: invalid JSON: `not json`"}"#,
                r#"{"msg_type":"error","data":"line 3: unknown msg_type `nope`; expected echo or fail","id":3}"#,
                r#"{"msg_type":"error","data":"line 4: missing field `msg_type`: `{\"data\":1,\"id\":8}`","id":8}"#,
                r#"{"msg_type":"error","data":"line 5: invalid UTF-8 at byte 0"}"#,
                r#"{"msg_type":"error","data":"line 6: line of 61 bytes exceeds the 60-byte limit"}"#,
                r#"{"msg_type":"echo","data":"ok","id":2}"#,
            ]
        );
    }

    #[test]
    fn the_unknown_type_error_lists_handlers_in_registration_order() {
        let mut none = Handlers::new();
        assert_eq!(
            answers(&mut none, &[r#"{"msg_type":"a","data":1}"#]),
            [r#"{"msg_type":"error","data":"line 1: unknown msg_type `a`; no msg_type is answered"}"#]
        );
        let mut three = echo().on("zeta", |_| Ok::<_, String>(Data::NULL)).on("echo", |_| Ok::<_, String>(Data::NULL));
        assert_eq!(three.msg_types().collect::<Vec<_>>(), ["echo", "fail", "zeta"]);
        assert_eq!(
            answers(&mut three, &[r#"{"msg_type":"b","data":1}"#, r#"{"msg_type":"echo","data":1,"id":1}"#]),
            [
                r#"{"msg_type":"error","data":"line 1: unknown msg_type `b`; expected echo, fail or zeta"}"#,
                r#"{"msg_type":"echo","data":null,"id":1}"#,
            ]
        );
    }
}
