//! The asking side of the demo conversation: greeting, `data_messages` data messages, then
//! wait for the peer's goodbye. The host only moves bytes and prints what this returns.
//! Under [`Encoding::Msgpack`] it writes frames and reads [`Packet`]s
//! ([`Initiator::on_packet`]); what it prints and its errors are the same, naming "frame N"
//! where JSON says "line N".

use std::fmt;

use crate::codec::{Frame, DEFAULT_MAX_LINE_BYTES};
use crate::error::{clip, excerpt, FrameError, LineError, ProtocolError};
use crate::frame::{Packet, DEFAULT_MAX_FRAME_BYTES};
use crate::message::{decode, Message, Rejected};
use crate::msgpack::{decode_fields, payload, write_reply, Payload, ReplyData};
use crate::Encoding;

/// What the host should do after feeding the initiator.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InitiatorStep {
    /// Bytes to write to the peer (NDJSON lines, or MessagePack frames), possibly empty.
    pub send: Vec<u8>,
    /// Lines for the demo's stdout, in order (without newlines).
    pub print: Vec<String>,
    /// The peer said goodbye as expected: close its stdin and wait for it to exit.
    pub finished: bool,
}

/// Why the demo conversation cannot go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DemoError {
    /// The peer wrote a line that is not a protocol message.
    Garbage(LineError),
    /// The peer wrote a MessagePack frame that is not a protocol message (or one the demo
    /// cannot read: `data` must be a string).
    GarbageFrame(FrameError),
    /// The peer answered with an `error` message.
    PeerError {
        /// The error's text.
        data: String,
    },
    /// The peer sent a valid message, but not the one the conversation expects next.
    Unexpected {
        /// What was expected.
        expected: String,
        /// What came, as printed (its `data` cut to an excerpt).
        got: String,
    },
    /// The peer's message carries an id, but the demo sends none: it cannot be an answer.
    UnknownId {
        /// The id it carried.
        id: u64,
        /// The message, as printed (its `data` cut to an excerpt).
        got: String,
    },
}

impl fmt::Display for DemoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DemoError::Garbage(e) => write!(f, "child wrote non-protocol output: {e}"),
            DemoError::GarbageFrame(e) => write!(f, "child wrote non-protocol output: {e}"),
            DemoError::PeerError { data } => write!(f, "child answered with an error: {data}"),
            DemoError::Unexpected { expected, got } => write!(f, "expected {expected} from the child, got {got}"),
            DemoError::UnknownId { id, got } => {
                write!(f, "child replied with id {id}, but the demo sent no message with an id: {got}")
            }
        }
    }
}

impl std::error::Error for DemoError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    NotStarted,
    AwaitingHello,
    /// Awaiting the ack for data message `n` (1-based).
    AwaitingAck(u32),
    AwaitingExit,
    Finished,
}

/// The demo conversation as a state machine, in lockstep: one message in flight at a time,
/// so every reply can be checked against the message it answers.
#[derive(Debug, Clone)]
pub struct Initiator {
    data_messages: u32,
    encoding: Encoding,
    max_line_bytes: usize,
    max_frame_bytes: usize,
    state: State,
}

impl Default for Initiator {
    fn default() -> Self {
        Self::new(5)
    }
}

impl Initiator {
    /// The line printed when the conversation starts.
    pub const START: &'static str = "Rust: Sending initial message";
    /// The line printed when the peer's goodbye arrives.
    pub const EXIT_SEEN: &'static str = "Received exit signal from TypeScript";
    /// The line the host prints once the peer has exited cleanly.
    pub const COMPLETE: &'static str = "Communication complete!";

    /// A conversation that sends `data_messages` data messages after the greeting.
    pub fn new(data_messages: u32) -> Self {
        Initiator {
            data_messages,
            encoding: Encoding::Json,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            state: State::NotStarted,
        }
    }

    /// The same conversation in `encoding`: under [`Encoding::Msgpack`] what it sends is
    /// MessagePack frames, and the host feeds it [`Packet`]s ([`on_packet`](Self::on_packet)).
    #[must_use]
    pub fn with_encoding(mut self, encoding: Encoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// Bounds the peer's frames to `bytes` (default 16 MiB): the host's [`crate::FrameDecoder`]
    /// should use [`max_frame_bytes`](Self::max_frame_bytes), and a longer frame is an error.
    #[must_use]
    pub fn with_max_frame_bytes(mut self, bytes: usize) -> Self {
        self.max_frame_bytes = bytes;
        self
    }

    /// Bounds the peer's lines to `bytes` (default 16 MiB): the host's [`crate::LineDecoder`]
    /// should use [`max_line_bytes`](Self::max_line_bytes), and a longer line is an error.
    #[must_use]
    pub fn with_max_line_bytes(mut self, bytes: usize) -> Self {
        self.max_line_bytes = bytes;
        self
    }

    /// The encoding of the conversation.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// The bound the host's decoder should use for the peer's lines.
    pub fn max_line_bytes(&self) -> usize {
        self.max_line_bytes
    }

    /// The bound the host's decoder should use for the peer's frames.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// True once the peer has said goodbye.
    pub fn is_finished(&self) -> bool {
        self.state == State::Finished
    }

    /// True until the peer's first reply has been accepted (nothing or only the greeting sent).
    pub fn awaiting_first_reply(&self) -> bool {
        matches!(self.state, State::NotStarted | State::AwaitingHello)
    }

    /// What the conversation waits for now, for timeout and early-exit messages.
    pub fn waiting_for(&self) -> String {
        match self.state {
            State::NotStarted => "the start".to_owned(),
            State::AwaitingHello => "the reply to the greeting".to_owned(),
            State::AwaitingAck(n) => format!("the acknowledgement of message {n} of {}", self.data_messages),
            State::AwaitingExit => "the goodbye (exit message)".to_owned(),
            State::Finished => "nothing".to_owned(),
        }
    }

    /// Starts the conversation: the greeting to send.
    pub fn start(&mut self) -> InitiatorStep {
        self.state = State::AwaitingHello;
        let mut send = Vec::new();
        self.write(&mut send, "greeting", "Hello from Rust!");
        InitiatorStep { send, print: vec![Self::START.to_owned()], finished: false }
    }

    /// Appends one message (no id) in the conversation's encoding.
    fn write(&self, out: &mut Vec<u8>, msg_type: &str, data: &str) {
        match self.encoding {
            Encoding::Json => Message::new(msg_type, data).encode_into(out),
            // The demo's messages are short: a frame always holds them.
            Encoding::Msgpack => write_reply(out, msg_type, ReplyData::Text(&data), None),
        }
    }

    /// Feeds one frame the peer wrote.
    pub fn on_frame(&mut self, frame: Frame<'_>) -> Result<InitiatorStep, DemoError> {
        let (line, bytes) = match frame {
            Frame::Line { number, bytes } => (number, bytes),
            Frame::TooLong { number, length } => {
                let error = ProtocolError::LineTooLong { length, limit: self.max_line_bytes };
                return Err(DemoError::Garbage(LineError { line: number, error }));
            }
        };
        let garbage = |error| DemoError::Garbage(LineError { line, error });
        let text =
            std::str::from_utf8(bytes).map_err(|e| garbage(ProtocolError::InvalidUtf8 { offset: e.valid_up_to() }))?;
        // Borrowed, not copied: a line may be as long as the limit.
        let msg = decode(text).map_err(|r| garbage(r.error))?;
        self.on_parts(&msg.msg_type, &msg.data, msg.id)
    }

    /// Feeds one MessagePack frame the peer wrote (from a [`crate::FrameDecoder`]). A frame
    /// that is not a protocol message, over the limit, or cut by the end of the stream is
    /// [`DemoError::GarbageFrame`], naming the frame.
    pub fn on_packet(&mut self, packet: Packet<'_>) -> Result<InitiatorStep, DemoError> {
        let (number, bytes) = match packet {
            Packet::Frame { number, bytes } => (number, bytes),
            Packet::TooLong { number, length } => {
                let error = ProtocolError::FrameTooLong { length, limit: self.max_frame_bytes };
                return Err(DemoError::GarbageFrame(FrameError { frame: number, error }));
            }
            Packet::Cut { number, received, length } => {
                let error = ProtocolError::FrameCut { received, length };
                return Err(DemoError::GarbageFrame(FrameError { frame: number, error }));
            }
        };
        let garbage = |error| DemoError::GarbageFrame(FrameError { frame: number, error });
        let fields = decode_fields(bytes).map_err(|Rejected { error, .. }| garbage(error))?;
        let data = match payload(bytes, fields.data.0).map_err(garbage)? {
            Payload::Str(text) => text,
            Payload::Bytes(_) => {
                let error = ProtocolError::MistypedField {
                    field: "data",
                    expected: "a string",
                    kind: "bytes",
                    excerpt: crate::hex_excerpt(bytes),
                };
                return Err(garbage(error));
            }
        };
        self.on_parts(fields.msg_type, data, fields.id)
    }

    /// Feeds one decoded message from the peer.
    pub fn on_message(&mut self, msg: &Message) -> Result<InitiatorStep, DemoError> {
        self.on_parts(&msg.msg_type, &msg.data, msg.id)
    }

    fn on_parts(&mut self, msg_type: &str, data: &str, id: Option<u64>) -> Result<InitiatorStep, DemoError> {
        // Errors quote what came as an excerpt, so a long message cannot make a long error.
        let got = || Shown { msg_type, data: &excerpt(data), id }.to_string();
        if let Some(id) = id {
            return Err(DemoError::UnknownId { id, got: got() });
        }
        if msg_type == "error" {
            return Err(DemoError::PeerError { data: clip(data, PEER_ERROR_CHARS) });
        }
        let (want_type, want_data) = match self.state {
            State::AwaitingHello => ("response", "Hello from TypeScript!".to_owned()),
            State::AwaitingAck(n) => ("ack", format!("Acknowledged: {}", data_text(n))),
            State::AwaitingExit => ("exit", "Goodbye from TypeScript!".to_owned()),
            State::NotStarted | State::Finished => {
                return Err(DemoError::Unexpected { expected: "nothing".to_owned(), got: got() });
            }
        };
        if msg_type != want_type || data != want_data {
            let expected = Shown { msg_type: want_type, data: &want_data, id: None }.to_string();
            return Err(DemoError::Unexpected { expected, got: got() });
        }
        // Printed only once it is what was expected, so a line is as short as the seed's.
        let mut step = InitiatorStep {
            print: vec![format!("Received from TS: {}", Shown { msg_type, data, id })],
            ..Default::default()
        };
        match self.state {
            State::AwaitingHello => self.send_data(1, &mut step),
            State::AwaitingAck(n) if n < self.data_messages => self.send_data(n + 1, &mut step),
            State::AwaitingAck(_) => self.state = State::AwaitingExit,
            _ => {
                self.state = State::Finished;
                step.print.push(Self::EXIT_SEEN.to_owned());
                step.finished = true;
            }
        }
        Ok(step)
    }

    fn send_data(&mut self, n: u32, step: &mut InitiatorStep) {
        if n > self.data_messages {
            self.state = State::AwaitingExit;
            return;
        }
        self.write(&mut step.send, "data", &data_text(n));
        self.state = State::AwaitingAck(n);
    }
}

fn data_text(n: u32) -> String {
    format!("Message {n} from Rust")
}

/// How much of a peer's `error` text the demo quotes (the responders' own are far shorter).
const PEER_ERROR_CHARS: usize = 1000;

/// The seed's output format: `Message { msg_type: "ack", data: "..." }` (Rust's `Debug` of
/// the original two-field struct), with `, id: N` only when an id is present.
struct Shown<'a> {
    msg_type: &'a str,
    data: &'a str,
    id: Option<u64>,
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Shown { msg_type, data, id } = self;
        write!(f, "Message {{ msg_type: {:?}, data: {:?}", excerpt(msg_type), data)?;
        match id {
            Some(id) => write!(f, ", id: {id} }}"),
            None => f.write_str(" }"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LineDecoder, Responder};

    /// Plays the initiator against the core responder, in memory.
    fn converse(mut responder: Responder) -> Result<Vec<String>, DemoError> {
        let mut initiator = Initiator::default();
        let mut step = initiator.start();
        let mut printed = step.print.clone();
        while !step.finished {
            let mut replies = Vec::new();
            let mut decoder = LineDecoder::default();
            decoder.feed(&step.send);
            while let Some(frame) = decoder.next_frame() {
                responder.handle_frame(frame, &mut replies);
            }
            assert!(!replies.is_empty(), "the responder went quiet after {printed:?}");
            let mut decoder = LineDecoder::default();
            decoder.feed(&replies);
            let mut next = InitiatorStep::default();
            while let Some(frame) = decoder.next_frame() {
                let s = initiator.on_frame(frame)?;
                next.send.extend(s.send);
                next.print.extend(s.print);
                next.finished |= s.finished;
            }
            printed.extend(next.print.iter().cloned());
            step = next;
        }
        Ok(printed)
    }

    #[test]
    fn plays_the_seed_conversation_against_the_core_responder() {
        let printed = converse(Responder::default()).unwrap_or_default();
        assert_eq!(printed.len(), 9);
        assert_eq!(printed[0], "Rust: Sending initial message");
        assert_eq!(printed[1], r#"Received from TS: Message { msg_type: "response", data: "Hello from TypeScript!" }"#);
        assert_eq!(
            printed[6],
            r#"Received from TS: Message { msg_type: "ack", data: "Acknowledged: Message 5 from Rust" }"#
        );
        assert_eq!(printed[8], "Received exit signal from TypeScript");
        assert!(Initiator::default().waiting_for().contains("start"));
    }

    /// [`converse`] over MessagePack frames: the same lines come out.
    fn converse_frames(mut responder: Responder) -> Result<Vec<String>, DemoError> {
        let mut initiator = Initiator::default().with_encoding(Encoding::Msgpack);
        let mut step = initiator.start();
        let mut printed = step.print.clone();
        while !step.finished {
            let mut replies = Vec::new();
            let mut decoder = crate::FrameDecoder::default();
            decoder.feed(&step.send);
            while let Some(packet) = decoder.next_packet() {
                responder.handle_packet(packet, &mut replies);
            }
            assert!(!replies.is_empty(), "the responder went quiet after {printed:?}");
            let mut decoder = crate::FrameDecoder::default();
            decoder.feed(&replies);
            let mut next = InitiatorStep::default();
            while let Some(packet) = decoder.next_packet() {
                let s = initiator.on_packet(packet)?;
                next.send.extend(s.send);
                next.print.extend(s.print);
                next.finished |= s.finished;
            }
            printed.extend(next.print.iter().cloned());
            step = next;
        }
        Ok(printed)
    }

    #[test]
    fn plays_the_same_conversation_over_frames() {
        assert_eq!(converse_frames(Responder::default()), converse(Responder::default()));
        assert_eq!(converse_frames(Responder::default()).map(|p| p.len()), Ok(9));
        let early = || Responder::new(crate::ResponderOptions { exit_after: 2, ..Default::default() });
        assert_eq!(converse_frames(early()).err(), converse(early()).err());
    }

    #[test]
    fn frames_write_the_canonical_greeting() {
        let step = Initiator::default().with_encoding(Encoding::Msgpack).start();
        let mut want = Vec::new();
        crate::Envelope::new("greeting", "Hello from Rust!").encode_frame_into(&mut want).unwrap_or_default();
        assert_eq!(step.send, want);
    }

    #[test]
    fn garbage_frames_are_named_with_their_number() {
        let mut initiator = Initiator::default().with_encoding(Encoding::Msgpack).with_max_frame_bytes(8);
        initiator.start();
        let shown = |r: Result<InitiatorStep, DemoError>| r.err().map(|e| e.to_string());
        assert_eq!(
            shown(initiator.on_packet(Packet::Frame { number: 3, bytes: &[0x91, 0xa1, 0x78] })),
            Some("child wrote non-protocol output: frame 3: not a map: `91a178`".to_owned())
        );
        assert_eq!(
            shown(initiator.on_packet(Packet::TooLong { number: 4, length: 9 })),
            Some("child wrote non-protocol output: frame 4: frame of 9 bytes exceeds the 8-byte limit".to_owned())
        );
        assert_eq!(
            shown(initiator.on_packet(Packet::Cut { number: 5, received: 2, length: None })),
            Some(
                "child wrote non-protocol output: frame 5: the stream ended inside the frame's 4-byte length \
                 header, after 2 bytes"
                    .to_owned()
            )
        );
        let bytes_reply = crate::Envelope::new("response", vec![1_u8]).to_frame().unwrap_or_default();
        assert_eq!(
            shown(initiator.on_packet(Packet::Frame { number: 6, bytes: &bytes_reply[4..] })),
            Some(
                "child wrote non-protocol output: frame 6: field `data` must be a string, got bytes: \
                 `82a86d73675f74797065a8726573706f…`"
                    .to_owned()
            )
        );
        assert_eq!(initiator.waiting_for(), "the reply to the greeting", "the conversation did not advance");
    }

    #[test]
    fn an_early_goodbye_is_unexpected() {
        let early = Responder::new(crate::ResponderOptions { exit_after: 2, ..Default::default() });
        let err = converse(early).err();
        assert_eq!(
            err.map(|e| e.to_string()),
            Some(
                r#"expected Message { msg_type: "ack", data: "Acknowledged: Message 3 from Rust" } from the child, got Message { msg_type: "exit", data: "Goodbye from TypeScript!" }"#
                    .to_owned()
            )
        );
    }

    #[test]
    fn an_error_reply_stops_the_demo_with_its_text() {
        let mut initiator = Initiator::default();
        initiator.start();
        let err = initiator.on_message(&Message::new("error", "line 1: bad")).err();
        assert_eq!(err, Some(DemoError::PeerError { data: "line 1: bad".to_owned() }));
    }

    #[test]
    fn a_reply_with_an_id_the_demo_never_sent_is_a_protocol_error_naming_it() {
        let mut initiator = Initiator::default();
        initiator.start();
        let line = br#"{"msg_type":"response","data":"Hello from TypeScript!","id":7}"#;
        let err = initiator.on_frame(Frame::Line { number: 1, bytes: line }).err();
        assert_eq!(
            err.map(|e| e.to_string()),
            Some(
                r#"child replied with id 7, but the demo sent no message with an id: Message { msg_type: "response", data: "Hello from TypeScript!", id: 7 }"#
                    .to_owned()
            )
        );
        assert_eq!(initiator.waiting_for(), "the reply to the greeting", "the conversation did not advance");
    }

    #[test]
    fn errors_quote_a_long_message_as_an_excerpt() {
        let mut initiator = Initiator::default();
        initiator.start();
        let long = "x".repeat(1 << 20);
        let err = initiator.on_message(&Message::new("response", long.as_str())).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(concat!(
                r#"expected Message { msg_type: "response", data: "Hello from TypeScript!" } from the child, "#,
                r#"got Message { msg_type: "response", data: "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…" }"#
            ))
        );
        let err = initiator.on_message(&Message::new("error", long.as_str())).err().map(|e| e.to_string());
        assert_eq!(err.map(|e| e.chars().count()), Some("child answered with an error: ".len() + 1000 + 1));
    }

    #[test]
    fn garbage_is_named_with_its_line() {
        let mut initiator = Initiator::default();
        initiator.start();
        let err = initiator.on_frame(Frame::Line { number: 4, bytes: b"\xff" }).err();
        assert_eq!(
            err.map(|e| e.to_string()),
            Some("child wrote non-protocol output: line 4: invalid UTF-8 at byte 0".to_owned())
        );
    }
}
