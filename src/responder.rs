//! The answering side of the protocol as a state machine.

use std::fmt;
use std::str::FromStr;

use crate::codec::{is_blank, Frame, DEFAULT_MAX_LINE_BYTES};
use crate::encoding::Encoding;
use crate::error::{excerpt, hex_excerpt, ProtocolError};
use crate::frame::{Packet, DEFAULT_MAX_FRAME_BYTES};
use crate::markdown::write_html;
use crate::message::{decode, decode_canonical, write_message, write_message_parts, Message, Rejected};
use crate::msgpack::{decode_fields, payload, write_bytes_reply, write_reply, write_str_reply, Payload, ReplyData};
use crate::vectored::FrameOut;

/// What an `ack`'s data says before the acknowledged data.
const ACK_LEAD: &str = "Acknowledged: ";
/// How an `ack` reply line begins, up to its `data`'s payload.
const ACK_HEAD: &[u8] = b"{\"msg_type\":\"ack\",\"data\":\"Acknowledged: ";

/// After this many `data` messages the responder says goodbye (the seed's five).
pub const DEFAULT_EXIT_AFTER: u64 = 5;
/// Who says hello: the seed's child is TypeScript, and every path answers the same.
pub const DEFAULT_NAME: &str = "TypeScript";

/// How a [`Responder`] behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponderOptions {
    /// End the conversation after this many `data` messages; 0 = never.
    pub exit_after: u64,
    /// Used in `Hello from {name}!` and `Goodbye from {name}!`.
    pub name: String,
    /// Lines longer than this (in bytes, without the line ending) get an error reply.
    pub max_line_bytes: usize,
    /// MessagePack frames longer than this (in bytes, without the length header) are skipped
    /// and get an error reply.
    pub max_frame_bytes: usize,
    /// The services answered; any other `msg_type` gets an error reply listing theirs.
    /// Default: demo and markdown ([`Services::DEFAULT`]).
    pub services: Services,
}

impl Default for ResponderOptions {
    fn default() -> Self {
        ResponderOptions {
            exit_after: DEFAULT_EXIT_AFTER,
            name: DEFAULT_NAME.to_owned(),
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            services: Services::DEFAULT,
        }
    }
}

/// One of the services built into the [`Responder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BuiltinService {
    /// The seed conversation: `greeting` → `response`, `data` → `ack` (after the
    /// `exit_after`th also `exit`), `exit` → `exit`.
    Demo,
    /// `markdown` → `html`: the data, a CommonMark document, rendered by pulldown-cmark (no
    /// extensions). Does not count toward `exit_after`; after the conversation has ended it
    /// gets the same error reply as every other message.
    Markdown,
    /// `bytes` → `bytes`: echoes its data, which must be bytes (a MessagePack `bin`). Only the
    /// `msgpack` encoding carries bytes, so under `json` every `bytes` message gets an error
    /// reply. Does not count toward `exit_after`; refused once the conversation has ended.
    Bytes,
}

impl BuiltinService {
    /// Every built-in service, in the order error messages list their types.
    pub const ALL: [BuiltinService; 3] = [BuiltinService::Demo, BuiltinService::Markdown, BuiltinService::Bytes];

    /// Its name, as `--services` and the addon's `services` option spell it.
    pub fn name(self) -> &'static str {
        match self {
            BuiltinService::Demo => "demo",
            BuiltinService::Markdown => "markdown",
            BuiltinService::Bytes => "bytes",
        }
    }

    /// The `msg_type`s it answers.
    pub fn msg_types(self) -> &'static [&'static str] {
        match self {
            BuiltinService::Demo => &["greeting", "data", "exit"],
            BuiltinService::Markdown => &["markdown"],
            BuiltinService::Bytes => &["bytes"],
        }
    }

    const fn bit(self) -> u8 {
        match self {
            BuiltinService::Demo => 1,
            BuiltinService::Markdown => 2,
            BuiltinService::Bytes => 4,
        }
    }
}

impl fmt::Display for BuiltinService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BuiltinService {
    type Err = ServicesError;

    /// `demo`, `markdown` or `bytes`.
    fn from_str(name: &str) -> Result<Self, ServicesError> {
        BuiltinService::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| ServicesError::Unknown { name: excerpt(name) })
    }
}

/// A non-empty set of [`BuiltinService`]s: which ones a [`Responder`] answers.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Services {
    bits: u8,
}

impl Services {
    /// The demo conversation only: what the TypeScript responder answers.
    pub const DEMO: Services = Services::only(BuiltinService::Demo);
    /// The markdown service only.
    pub const MARKDOWN: Services = Services::only(BuiltinService::Markdown);
    /// The bytes service only.
    pub const BYTES: Services = Services::only(BuiltinService::Bytes);
    /// Demo and markdown: the default, and what `rust-ts-ipc serve` answers under `json`
    /// (where the bytes service could only answer errors).
    pub const DEFAULT: Services = Services::DEMO.with(BuiltinService::Markdown);
    /// Every built-in service: what `rust-ts-ipc serve` answers under `msgpack`.
    pub const ALL: Services = Services::DEFAULT.with(BuiltinService::Bytes);

    /// The set holding `service` alone.
    pub const fn only(service: BuiltinService) -> Services {
        Services { bits: service.bit() }
    }

    /// This set plus `service`.
    #[must_use]
    pub const fn with(self, service: BuiltinService) -> Services {
        Services { bits: self.bits | service.bit() }
    }

    /// Whether `service` is in the set.
    pub const fn contains(self, service: BuiltinService) -> bool {
        self.bits & service.bit() != 0
    }

    /// The services in the set, in [`BuiltinService::ALL`]'s order.
    pub fn iter(self) -> impl Iterator<Item = BuiltinService> {
        BuiltinService::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    /// Every `msg_type` the set answers, in the order error messages list them.
    pub fn msg_types(self) -> impl Iterator<Item = &'static str> {
        self.iter().flat_map(|s| s.msg_types().iter().copied())
    }

    /// The set of the services named, e.g. `["demo", "markdown"]` (repeats are fine).
    ///
    /// # Errors
    /// A name that is not a built-in service, or no name at all.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Services, ServicesError> {
        let mut bits = 0;
        for name in names {
            bits |= name.parse::<BuiltinService>()?.bit();
        }
        if bits == 0 {
            return Err(ServicesError::Empty);
        }
        Ok(Services { bits })
    }
}

impl Default for Services {
    fn default() -> Self {
        Services::DEFAULT
    }
}

impl fmt::Display for Services {
    /// The names joined by commas, as `--services` takes them: `demo,markdown`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, service) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(service.name())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Services {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl FromStr for Services {
    type Err = ServicesError;

    /// Names separated by commas: `demo`, `markdown`, `demo,markdown`.
    fn from_str(list: &str) -> Result<Self, ServicesError> {
        Services::from_names(list.split(',').filter(|name| !name.is_empty()))
    }
}

/// Why a list of service names was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServicesError {
    /// No service was named.
    Empty,
    /// A name is none of the built-in services'.
    Unknown {
        /// The start of the name.
        name: String,
    },
}

impl fmt::Display for ServicesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = BuiltinService::ALL.map(BuiltinService::name).join(", ");
        match self {
            ServicesError::Empty => write!(f, "expected at least one service of {names}"),
            ServicesError::Unknown { name } => write!(f, "unknown service `{name}`; expected one of {names}"),
        }
    }
}

impl std::error::Error for ServicesError {}

/// One conversation's state: `greeting` → `response`, `data` X → `ack` "Acknowledged: X"
/// (after the `exit_after`th also `exit`, and done), `exit` → `exit` (done), `markdown` →
/// `html`, `bytes` → `bytes` (the same bytes), for the [`Services`] it was built with; anything
/// it cannot answer gets an `error` reply and the conversation goes on. Once done, every
/// message (markdown too) gets an `error` reply saying so.
///
/// It answers either encoding with the same semantics: NDJSON lines ([`handle_line`],
/// [`handle_frame`]) and MessagePack frames ([`handle_packet`], [`handle_frame_body`]), whose
/// replies are frames and whose error texts say `frame N` and quote the frame in hex. `data`
/// must be a string (MessagePack: a `str`, or a `bin`, which only the bytes service accepts).
///
/// [`handle_line`]: Self::handle_line
/// [`handle_frame`]: Self::handle_frame
/// [`handle_packet`]: Self::handle_packet
/// [`handle_frame_body`]: Self::handle_frame_body
#[derive(Debug, Clone)]
pub struct Responder {
    options: ResponderOptions,
    data_seen: u64,
    done: bool,
    line: u64,
}

/// Where a conversation stands: what [`Responder::rewind`] restores. An embedder that could not
/// deliver a reply (the addon, when JavaScript cannot hold it) rewinds so that the line does not
/// count, as if it had never been given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    data_seen: u64,
    done: bool,
    line: u64,
}

/// What a reply's `data` says; rendered straight into the output buffer.
enum Text<'a> {
    Hello(&'a str),
    Goodbye(&'a str),
    Html(&'a str),
    /// What was wrong, in the numbering of the stream's encoding: `line N` or `frame N`.
    Error(Encoding, u64, ProtocolError),
}

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Text::Hello(name) => write!(f, "Hello from {name}!"),
            Text::Goodbye(name) => write!(f, "Goodbye from {name}!"),
            Text::Html(markdown) => write_html(markdown, f),
            Text::Error(Encoding::Json, n, e) => write!(f, "line {n}: {e}"),
            Text::Error(Encoding::Msgpack, n, e) => write!(f, "frame {n}: {e}"),
        }
    }
}

/// What a reply carries: text, or what is taken from the request (`'d`, which may outlive the
/// responder's borrow `'a`: a spliced reply writes it from there): the `ack`'s `data`, or
/// (the bytes service's echo) bytes.
enum Body<'a, 'd> {
    Text(Text<'a>),
    /// `Acknowledged: ` then this.
    Ack(&'d str),
    Bytes(&'d [u8]),
}

impl Body<'_, '_> {
    /// The text as JSON writes it. Bytes never reach a JSON reply (only the `msgpack`
    /// encoding carries them); were they to, they are shown as UTF-8, lossily.
    fn text(&self) -> String {
        match self {
            Body::Text(text) => text.to_string(),
            Body::Ack(data) => format!("{ACK_LEAD}{data}"),
            Body::Bytes(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        }
    }
}

struct Reply<'a, 'd> {
    msg_type: &'static str,
    body: Body<'a, 'd>,
    id: Option<u64>,
}

impl<'d> Reply<'_, 'd> {
    fn write_json(&self, out: &mut Vec<u8>) {
        match &self.body {
            // The usual replies without the formatting machinery; the same bytes as `Display`.
            Body::Ack(data) => write_message_parts(out, self.msg_type, (ACK_LEAD, data, ""), self.id),
            Body::Text(Text::Hello(name)) => {
                write_message_parts(out, self.msg_type, ("Hello from ", name, "!"), self.id)
            }
            Body::Text(Text::Goodbye(name)) => {
                write_message_parts(out, self.msg_type, ("Goodbye from ", name, "!"), self.id)
            }
            Body::Text(text) => write_message(out, self.msg_type, text, self.id),
            Body::Bytes(_) => write_message(out, self.msg_type, &self.body.text(), self.id),
        }
    }

    /// Appends the reply frame; the request's data (an `ack`'s, the bytes echo's) is borrowed
    /// by `out`, not copied, when it splices.
    fn write_frame(&self, out: &mut FrameOut<'_, 'd>) {
        match self.body {
            Body::Text(ref text) => write_reply(out.buf(), self.msg_type, ReplyData::Text(text), self.id),
            Body::Ack(data) => write_str_reply(out, self.msg_type, ACK_LEAD, data, self.id),
            Body::Bytes(bytes) => write_bytes_reply(out, self.msg_type, bytes, self.id),
        }
    }
}

/// At most two replies answer one message (the last `ack` and the `exit`).
struct Replies<'a, 'd>(Reply<'a, 'd>, Option<Reply<'a, 'd>>);

impl<'a, 'd> IntoIterator for Replies<'a, 'd> {
    type Item = Reply<'a, 'd>;
    type IntoIter = std::iter::Chain<std::iter::Once<Reply<'a, 'd>>, std::option::IntoIter<Reply<'a, 'd>>>;
    fn into_iter(self) -> Self::IntoIter {
        std::iter::once(self.0).chain(self.1)
    }
}

impl Default for Responder {
    fn default() -> Self {
        Self::new(ResponderOptions::default())
    }
}

impl Responder {
    /// A fresh conversation.
    pub fn new(options: ResponderOptions) -> Self {
        Responder { options, data_seen: 0, done: false, line: 0 }
    }

    /// The options this responder was built with.
    pub fn options(&self) -> &ResponderOptions {
        &self.options
    }

    /// True once the conversation has ended (`exit` sent); later messages get an error reply.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// How many physical lines (or messages) this responder has been given.
    pub fn lines_seen(&self) -> u64 {
        self.line
    }

    /// Where the conversation stands now (a copy of three counters).
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint { data_seen: self.data_seen, done: self.done, line: self.line }
    }

    /// Goes back to `checkpoint`, taken earlier from this responder: the lines and messages
    /// given since then no longer count.
    pub fn rewind(&mut self, checkpoint: Checkpoint) {
        let Checkpoint { data_seen, done, line } = checkpoint;
        (self.data_seen, self.done, self.line) = (data_seen, done, line);
    }

    /// Answers one NDJSON line (a trailing `\n` or `\r\n` is tolerated), appending the reply
    /// lines, each ending in `\n`, to `out`. A blank line counts as a line and gets no reply.
    pub fn handle_line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        self.line += 1;
        let line = without_line_ending(line);
        // Length first, as the stream decoder must (it cannot see an over-long line whole).
        if line.len() > self.options.max_line_bytes {
            let error = ProtocolError::LineTooLong { length: line.len(), limit: self.options.max_line_bytes };
            return self.write_error(error, None, out);
        }
        if is_blank(line) {
            return;
        }
        self.answer_bytes(line, out);
    }

    /// Answers a line known only by its length in bytes and its `tail` (its last two bytes, or
    /// all of it if shorter), if that line is too long: exactly as [`Responder::handle_line`]
    /// would answer the whole line, and `true`. Otherwise does nothing and returns `false`: the
    /// caller must pass the whole line to `handle_line`. Lets an embedder refuse a huge line
    /// without copying it first (the addon's `handleBuffer`).
    pub fn handle_line_if_too_long(&mut self, length: usize, tail: &[u8], out: &mut Vec<u8>) -> bool {
        let length = length.saturating_sub(tail.len() - without_line_ending(tail).len());
        if length <= self.options.max_line_bytes {
            return false;
        }
        self.line += 1;
        let error = ProtocolError::LineTooLong { length, limit: self.options.max_line_bytes };
        self.write_error(error, None, out);
        true
    }

    /// Answers a frame from a [`crate::LineDecoder`], numbering errors by its physical line.
    pub fn handle_frame(&mut self, frame: Frame<'_>, out: &mut Vec<u8>) {
        match frame {
            Frame::Line { number, bytes } => {
                self.line = number;
                self.answer_bytes(bytes, out);
            }
            Frame::TooLong { number, length } => {
                self.line = number;
                let error = ProtocolError::LineTooLong { length, limit: self.options.max_line_bytes };
                self.write_error(error, None, out);
            }
        }
    }

    /// Answers a message that is already decoded (the addon's object path); counts as one line.
    pub fn handle_message(&mut self, msg: &Message) -> Vec<Message> {
        self.line += 1;
        let quote = || excerpt(msg.to_line().trim_end());
        self.respond(Encoding::Json, &msg.msg_type, Payload::Str(&msg.data), msg.id, &quote)
            .into_iter()
            .map(|r| Message { msg_type: r.msg_type.to_owned(), data: r.body.text(), id: r.id })
            .collect()
    }

    /// Answers one MessagePack frame from a [`crate::FrameDecoder`], appending the reply
    /// frames to `out` and numbering errors by its frame number.
    pub fn handle_packet(&mut self, packet: Packet<'_>, out: &mut Vec<u8>) {
        self.handle_packet_vectored(packet, &mut FrameOut::flat(out));
    }

    /// [`handle_packet`](Self::handle_packet) into a [`FrameOut`]: the `bytes` service's echo
    /// of a big payload, and the data an `ack` repeats, are borrowed from `packet` by `out`,
    /// not copied (the same bytes are written). What [`serve`](crate::serve_with) runs, through
    /// [`Service::answer_packet_vectored`](crate::Service::answer_packet_vectored).
    pub fn handle_packet_vectored<'p>(&mut self, packet: Packet<'p>, out: &mut FrameOut<'_, 'p>) {
        match packet {
            Packet::Frame { number, bytes } => {
                self.line = number;
                self.answer_frame(bytes, out);
            }
            Packet::TooLong { number, length } => {
                self.line = number;
                let error = ProtocolError::FrameTooLong { length, limit: self.options.max_frame_bytes };
                self.write_frame_error(error, None, out.buf());
            }
            Packet::Cut { number, received, length } => {
                self.line = number;
                self.write_frame_error(ProtocolError::FrameCut { received, length }, None, out.buf());
            }
        }
    }

    /// Answers one MessagePack frame's body (without its length header), numbering it after
    /// the last one given: the in-process way (the addon's), without a decoder. Appends the
    /// reply frames, each with its length header, to `out`.
    pub fn handle_frame_body(&mut self, body: &[u8], out: &mut Vec<u8>) {
        self.line += 1;
        if body.len() > self.options.max_frame_bytes {
            let error = ProtocolError::FrameTooLong { length: body.len(), limit: self.options.max_frame_bytes };
            return self.write_frame_error(error, None, out);
        }
        self.answer_frame(body, &mut FrameOut::flat(out));
    }

    fn answer_frame<'p>(&mut self, frame: &'p [u8], out: &mut FrameOut<'_, 'p>) {
        let fields = match decode_fields(frame) {
            Ok(fields) => fields,
            Err(Rejected { error, id }) => return self.write_frame_error(error, id, out.buf()),
        };
        let data = match payload(frame, fields.data.0) {
            Ok(data) => data,
            Err(error) => return self.write_frame_error(error, fields.id, out.buf()),
        };
        let quote = || hex_excerpt(frame);
        for reply in self.respond(Encoding::Msgpack, fields.msg_type, data, fields.id, &quote) {
            reply.write_frame(out);
        }
    }

    fn write_frame_error(&self, error: ProtocolError, id: Option<u64>, out: &mut Vec<u8>) {
        write_reply(out, "error", ReplyData::Text(&self.error_text(Encoding::Msgpack, error)), id);
    }

    fn answer_bytes(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        // The usual message, `data` in the envelope as every peer writes it, answered with its
        // `ack` straight away: no UTF-8 pass over the whole line, no parser, no reply values.
        // Everything else (the exit on the last counted message too) goes the general way.
        if let Some(c) = decode_canonical(bytes) {
            if c.msg_type(bytes) == b"data" && self.acks_plainly() {
                self.data_seen += 1;
                // The request's `D","id":N}` (or `D"}`) is the reply's tail, byte for byte: `D`
                // needs no escaping and the id's text is its canonical form.
                let tail = bytes.get(c.data.start..).unwrap_or_default();
                out.reserve(ACK_HEAD.len() + tail.len() + 1);
                out.extend_from_slice(ACK_HEAD);
                out.extend_from_slice(tail);
                out.push(b'\n');
                return;
            }
        }
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => return self.write_error(ProtocolError::InvalidUtf8 { offset: e.valid_up_to() }, None, out),
        };
        match decode(text) {
            Ok(msg) => {
                let quote = || excerpt(text);
                for reply in self.respond(Encoding::Json, &msg.msg_type, Payload::Str(&msg.data), msg.id, &quote) {
                    reply.write_json(out);
                }
            }
            Err(Rejected { error, id }) => self.write_error(error, id, out),
        }
    }

    /// Whether the next `data` message is answered with its `ack` alone: the demo is served,
    /// the conversation goes on, and this message will not be the one that ends it.
    fn acks_plainly(&self) -> bool {
        !self.done
            && self.options.services.contains(BuiltinService::Demo)
            && (self.options.exit_after == 0 || self.data_seen.saturating_add(1) < self.options.exit_after)
    }

    fn write_error(&self, error: ProtocolError, id: Option<u64>, out: &mut Vec<u8>) {
        write_message(out, "error", &self.error_text(Encoding::Json, error), id);
    }

    fn error_text(&self, encoding: Encoding, error: ProtocolError) -> Text<'static> {
        Text::Error(encoding, self.line, error)
    }

    /// The replies to one message. `quote` renders the message for an error about its
    /// `data`'s type: an excerpt of the line, or the frame's first bytes in hex.
    fn respond<'a, 'd: 'a>(
        &'a mut self,
        encoding: Encoding,
        msg_type: &str,
        data: Payload<'d>,
        id: Option<u64>,
        quote: &dyn Fn() -> String,
    ) -> Replies<'a, 'd> {
        let one = |msg_type, body| Replies(Reply { msg_type, body, id }, None);
        let error = |this: &Self, error| one("error", Body::Text(this.error_text(encoding, error)));
        let mistyped = |this: &Self, expected, kind| {
            error(this, ProtocolError::MistypedField { field: "data", expected, kind, excerpt: quote() })
        };
        if self.done {
            return error(self, ProtocolError::Ended);
        }
        let services = self.options.services;
        let demo = services.contains(BuiltinService::Demo);
        match (msg_type, data) {
            ("greeting", _) if demo => one("response", Body::Text(Text::Hello(&self.options.name))),
            ("data", Payload::Str(data)) if demo => {
                self.data_seen += 1;
                let ack = Reply { msg_type: "ack", body: Body::Ack(data), id };
                if self.options.exit_after != 0 && self.data_seen >= self.options.exit_after {
                    self.done = true;
                    let goodbye = Body::Text(Text::Goodbye(&self.options.name));
                    Replies(ack, Some(Reply { msg_type: "exit", body: goodbye, id }))
                } else {
                    Replies(ack, None)
                }
            }
            ("exit", _) if demo => {
                self.done = true;
                one("exit", Body::Text(Text::Goodbye(&self.options.name)))
            }
            ("markdown", Payload::Str(data)) if services.contains(BuiltinService::Markdown) => {
                one("html", Body::Text(Text::Html(data)))
            }
            ("bytes", Payload::Bytes(data)) if services.contains(BuiltinService::Bytes) => {
                one("bytes", Body::Bytes(data))
            }
            ("data", Payload::Bytes(_)) if demo => mistyped(self, "a string", "bytes"),
            ("markdown", Payload::Bytes(_)) if services.contains(BuiltinService::Markdown) => {
                mistyped(self, "a string", "bytes")
            }
            ("bytes", Payload::Str(_)) if services.contains(BuiltinService::Bytes) => mistyped(self, "bytes", "string"),
            (other, _) => {
                let expected = services.msg_types().map(str::to_owned).collect();
                error(self, ProtocolError::UnknownMsgType { msg_type: excerpt(other), expected })
            }
        }
    }
}

/// `line` without its line ending (`\n`, `\r\n`, or a lone `\r`): at most its last two bytes.
fn without_line_ending(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(r: &mut Responder, line: &str) -> String {
        let mut out = Vec::new();
        r.handle_line(line.as_bytes(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// The plain envelope is acked by copying its tail; a spacing of the same message goes
    /// through the parser. Both must answer with the same bytes, in every state.
    #[test]
    fn the_plain_ack_is_the_parsed_messages_ack_in_every_state() {
        let plain = [
            r#"{"msg_type":"data","data":"x","id":7}"#,
            r#"{"msg_type":"data","data":"é€😀 /'","id":0}"#,
            r#"{"msg_type":"data","data":"","id":9007199254740991}"#,
            r#"{"msg_type":"data","data":"no id"}"#,
        ];
        for options in [
            ResponderOptions { exit_after: 3, ..ResponderOptions::default() },
            ResponderOptions { exit_after: 0, ..ResponderOptions::default() },
            ResponderOptions { services: Services::MARKDOWN, ..ResponderOptions::default() },
        ] {
            let (mut fast, mut parsed) = (Responder::new(options.clone()), Responder::new(options.clone()));
            for line in plain.iter().cycle().take(10) {
                assert!(crate::message::decode_canonical(line.as_bytes()).is_some(), "{line}");
                let spaced = line.replacen(r#""data":"#, r#""data": "#, 1);
                assert!(crate::message::decode_canonical(spaced.as_bytes()).is_none(), "{spaced}");
                assert_eq!(answer(&mut fast, line), answer(&mut parsed, &spaced), "{line} under {options:?}");
            }
            assert_eq!(fast.is_done(), options.exit_after == 3, "{options:?}");
        }
        let mut r = Responder::default();
        assert_eq!(
            answer(&mut r, r#"{"msg_type":"data","data":"é","id":12}"#),
            "{\"msg_type\":\"ack\",\"data\":\"Acknowledged: é\",\"id\":12}\n"
        );
        // Invalid UTF-8 in the payload is refused as before, not echoed.
        let mut out = Vec::new();
        r.handle_line(b"{\"msg_type\":\"data\",\"data\":\"\xff\",\"id\":1}", &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "{\"msg_type\":\"error\",\"data\":\"line 2: invalid UTF-8 at byte 27\"}\n"
        );
    }

    /// Every line one byte away from a plain envelope (each byte value put in place of, or
    /// inserted before, each byte; each byte deleted): whenever the plain reader takes it, it
    /// is JSON that serde_json reads as exactly that message, and the copied `ack` is the one
    /// serde_json writes for it. The reader's scan is 8 bytes at a time, so the bases' payloads
    /// put every byte on each side of a word boundary.
    #[test]
    fn the_plain_reader_and_copied_ack_agree_with_serde_json_one_byte_from_the_envelope() {
        let mut bases: Vec<Vec<u8>> = Vec::new();
        for id in ["", ",\"id\":0", ",\"id\":9007199254740991"] {
            for len in [0, 7, 8, 9, 16] {
                bases.push(
                    format!(r#"{{"msg_type":"data","data":"{}"{id}}}"#, &"abcdefghijklmnopq"[..len]).into_bytes(),
                );
            }
        }
        bases.push(r#"{"msg_type":"data","data":"é€😀a","id":3}"#.as_bytes().to_vec());
        bases.push(r#"{"msg_type":"greeting","data":"x","id":12}"#.as_bytes().to_vec());
        let mut neighbours = Vec::new();
        for base in &bases {
            for at in 0..=base.len() {
                for b in (0..=255u8).filter(|&b| b != b'\n') {
                    let mut inserted = base.clone();
                    inserted.insert(at, b);
                    neighbours.push(inserted);
                    if at < base.len() {
                        let mut replaced = base.clone();
                        replaced[at] = b;
                        neighbours.push(replaced);
                    }
                }
                if at < base.len() {
                    let mut deleted = base.clone();
                    deleted.remove(at);
                    neighbours.push(deleted);
                }
            }
        }
        let mut taken = 0;
        for line in &neighbours {
            let Some(c) = crate::message::decode_canonical(line) else { continue };
            taken += 1;
            let shown = String::from_utf8_lossy(line);
            let value: serde_json::Value = match serde_json::from_slice(line) {
                Ok(value) => value,
                Err(e) => panic!("taken but not JSON ({e}): {shown}"),
            };
            let keys = value.as_object().map(|o| o.keys().map(String::as_str).collect::<Vec<_>>());
            let want: &[&str] = if c.id.is_some() { &["data", "id", "msg_type"] } else { &["data", "msg_type"] };
            assert_eq!(keys.as_deref(), Some(want), "{shown}");
            let (msg_type, data) = (value["msg_type"].as_str(), value["data"].as_str());
            assert_eq!(msg_type.map(str::as_bytes), Some(c.msg_type(line)), "{shown}");
            assert_eq!(data.map(str::as_bytes), Some(c.data(line)), "{shown}");
            assert_eq!(value.get("id").map(serde_json::Value::as_u64), c.id.map(Some), "{shown}");
            if msg_type == Some("data") {
                let mut out = Vec::new();
                Responder::new(ResponderOptions { exit_after: 0, ..ResponderOptions::default() })
                    .handle_line(line, &mut out);
                let ack =
                    serde_json::to_string(&format!("Acknowledged: {}", data.unwrap_or_default())).unwrap_or_default();
                let id = c.id.map(|id| format!(",\"id\":{id}")).unwrap_or_default();
                assert_eq!(
                    String::from_utf8_lossy(&out),
                    format!("{{\"msg_type\":\"ack\",\"data\":{ack}{id}}}\n"),
                    "{shown}"
                );
            }
        }
        // Many neighbours are envelopes the reader takes (another payload byte), so this checks
        // something; far more are ones it must leave to the parser.
        assert!(taken > 5_000 && taken < neighbours.len() / 2, "{taken} of {}", neighbours.len());
    }

    #[test]
    fn says_goodbye_after_the_fifth_data_message_and_then_refuses() {
        let mut r = Responder::default();
        for i in 1..=4 {
            assert_eq!(
                answer(&mut r, &format!(r#"{{"msg_type":"data","data":"{i}"}}"#)),
                format!("{{\"msg_type\":\"ack\",\"data\":\"Acknowledged: {i}\"}}\n")
            );
            assert!(!r.is_done());
        }
        assert_eq!(
            answer(&mut r, r#"{"msg_type":"data","data":"5","id":7}"#),
            concat!(
                r#"{"msg_type":"ack","data":"Acknowledged: 5","id":7}"#,
                "\n",
                r#"{"msg_type":"exit","data":"Goodbye from TypeScript!","id":7}"#,
                "\n"
            )
        );
        assert!(r.is_done());
        assert_eq!(
            answer(&mut r, r#"{"msg_type":"greeting","data":""}"#),
            "{\"msg_type\":\"error\",\"data\":\"line 6: conversation has ended; message ignored\"}\n"
        );
    }

    #[test]
    fn handle_line_tolerates_its_line_ending() {
        let mut r = Responder::default();
        let want = "{\"msg_type\":\"response\",\"data\":\"Hello from TypeScript!\"}\n";
        assert_eq!(answer(&mut r, "{\"msg_type\":\"greeting\",\"data\":\"\"}\r\n"), want);
        assert_eq!(answer(&mut r, "{\"msg_type\":\"greeting\",\"data\":\"\"}\n"), want);
        assert_eq!(answer(&mut r, "\r\n"), "");
        assert_eq!(r.lines_seen(), 3);
    }

    #[test]
    fn object_path_counts_lines_and_matches_the_line_path() {
        let mut r = Responder::new(ResponderOptions { exit_after: 1, ..Default::default() });
        let replies = r.handle_message(&Message::new("bogus", "x").with_id(2));
        assert_eq!(
            replies,
            [Message::new("error", "line 1: unknown msg_type `bogus`; expected greeting, data, exit or markdown")
                .with_id(2)]
        );
        let replies = r.handle_message(&Message::new("markdown", "*x*"));
        assert_eq!(replies, [Message::new("html", "<p><em>x</em></p>\n")]);
        let replies = r.handle_message(&Message::new("data", "x"));
        assert_eq!(replies, [Message::new("ack", "Acknowledged: x"), Message::new("exit", "Goodbye from TypeScript!")]);
        assert!(r.is_done());
    }

    #[test]
    fn an_over_long_blank_line_is_too_long_on_the_line_path_too() {
        let mut r = Responder::new(ResponderOptions { max_line_bytes: 2, ..Default::default() });
        assert_eq!(
            answer(&mut r, "   \r\n"),
            "{\"msg_type\":\"error\",\"data\":\"line 1: line of 3 bytes exceeds the 2-byte limit\"}\n"
        );
        assert_eq!(answer(&mut r, "  \r\n"), "");
    }

    #[test]
    fn a_line_known_by_its_length_and_tail_is_answered_as_the_whole_line_would_be() {
        let options = ResponderOptions { max_line_bytes: 4, ..Default::default() };
        let (mut whole, mut by_length) = (Responder::new(options.clone()), Responder::new(options));
        for line in
            ["", "\n", "abcd", "abcd\r\n", "abcd\n\n", "abcde", "abcde\n", "abcd\r\r", "abc\n\r\n", "abcdef\r\n"]
        {
            let line = line.as_bytes();
            let tail = &line[line.len().saturating_sub(2)..];
            let (mut want, mut got) = (Vec::new(), Vec::new());
            if by_length.handle_line_if_too_long(line.len(), tail, &mut got) {
                whole.handle_line(line, &mut want);
                assert!(
                    want.starts_with(br#"{"msg_type":"error","data":"line "#),
                    "{}",
                    String::from_utf8_lossy(&want)
                );
            } else {
                // Not too long: nothing was done, and the line must be answered whole.
                assert_eq!((got.len(), by_length.lines_seen()), (0, whole.lines_seen()));
                whole.handle_line(line, &mut want);
                by_length.handle_line(line, &mut got);
            }
            assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&want), "line {line:?}");
        }
        assert_eq!((by_length.lines_seen(), whole.lines_seen()), (10, 10));
    }

    #[test]
    fn rewinding_forgets_the_lines_given_since_the_checkpoint() {
        let mut r = Responder::new(ResponderOptions { exit_after: 2, ..Default::default() });
        answer(&mut r, r#"{"msg_type":"data","data":"1"}"#);
        let before = r.checkpoint();
        answer(&mut r, "nope");
        answer(&mut r, r#"{"msg_type":"data","data":"2"}"#);
        assert!(r.is_done());
        r.rewind(before);
        assert_eq!((r.is_done(), r.lines_seen()), (false, 1));
        assert_eq!(
            answer(&mut r, r#"{"msg_type":"data","data":"2"}"#),
            concat!(
                r#"{"msg_type":"ack","data":"Acknowledged: 2"}"#,
                "\n",
                r#"{"msg_type":"exit","data":"Goodbye from TypeScript!"}"#,
                "\n"
            )
        );
        assert_eq!(r.lines_seen(), 2);
    }

    #[test]
    fn each_service_answers_only_its_own_types_and_the_error_lists_them() {
        for (services, want) in [
            (Services::DEMO, "expected greeting, data or exit"),
            (Services::MARKDOWN, "expected markdown"),
            (Services::DEFAULT, "expected greeting, data, exit or markdown"),
            (Services::ALL, "expected greeting, data, exit, markdown or bytes"),
        ] {
            let mut r = Responder::new(ResponderOptions { services, ..Default::default() });
            let bogus = answer(&mut r, r#"{"msg_type":"bogus","data":""}"#);
            assert_eq!(
                bogus,
                format!("{{\"msg_type\":\"error\",\"data\":\"line 1: unknown msg_type `bogus`; {want}\"}}\n")
            );
            let greeting = answer(&mut r, r#"{"msg_type":"greeting","data":""}"#);
            assert_eq!(greeting.starts_with(r#"{"msg_type":"response""#), services.contains(BuiltinService::Demo));
            let html = answer(&mut r, r##"{"msg_type":"markdown","data":"# Hi"}"##);
            assert_eq!(
                html == "{\"msg_type\":\"html\",\"data\":\"<h1>Hi</h1>\\n\"}\n",
                services.contains(BuiltinService::Markdown),
                "{html}"
            );
        }
    }

    #[test]
    fn markdown_does_not_count_toward_exit_after_and_is_refused_once_done() {
        let mut r = Responder::new(ResponderOptions { exit_after: 1, ..Default::default() });
        for _ in 0..3 {
            answer(&mut r, r#"{"msg_type":"markdown","data":"x"}"#);
        }
        assert!(!r.is_done());
        answer(&mut r, r#"{"msg_type":"data","data":"x"}"#);
        assert!(r.is_done());
        assert_eq!(
            answer(&mut r, r#"{"msg_type":"markdown","data":"x","id":3}"#),
            "{\"msg_type\":\"error\",\"data\":\"line 5: conversation has ended; message ignored\",\"id\":3}\n"
        );
    }

    #[test]
    fn services_parse_from_names_and_print_back() {
        assert_eq!("demo".parse(), Ok(Services::DEMO));
        assert_eq!("markdown,demo,demo".parse(), Ok(Services::DEFAULT));
        assert_eq!("bytes,markdown,demo".parse(), Ok(Services::ALL));
        assert_eq!(Services::DEFAULT.to_string(), "demo,markdown");
        assert_eq!(Services::ALL.to_string(), "demo,markdown,bytes");
        assert_eq!(Services::from_names(["markdown"]), Ok(Services::MARKDOWN));
        assert_eq!(
            "".parse::<Services>().map_err(|e| e.to_string()),
            Err("expected at least one service of demo, markdown, bytes".to_owned())
        );
        assert_eq!(
            "demo,Markdown".parse::<Services>().map_err(|e| e.to_string()),
            Err("unknown service `Markdown`; expected one of demo, markdown, bytes".to_owned())
        );
        assert_eq!(Services::default(), Services::DEFAULT);
        assert_eq!(format!("{:?}", Services::ALL), "{Demo, Markdown, Bytes}");
    }

    #[test]
    fn exit_after_zero_never_ends() {
        let mut r = Responder::new(ResponderOptions { exit_after: 0, ..Default::default() });
        for _ in 0..100 {
            assert!(answer(&mut r, r#"{"msg_type":"data","data":"x"}"#).starts_with(r#"{"msg_type":"ack""#));
        }
        assert!(!r.is_done());
    }

    #[test]
    fn a_large_payload_is_acknowledged_intact() {
        let payload = "ü\"\\".repeat(100_000);
        let line = Message::new("data", payload.as_str()).to_line();
        let mut r = Responder::default();
        let reply = answer(&mut r, &line);
        let back: Message = serde_json::from_str(reply.trim_end()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.data, format!("Acknowledged: {payload}"));
    }
}
