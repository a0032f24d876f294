//! The protocol core of rust-ts-ipc: newline-delimited JSON messages between a Rust
//! program and a Node/TypeScript program, with no I/O of its own.
//!
//! Start here:
//! - [`Message`] is what travels: `{"msg_type": "...", "data": "...", "id": 7}` (`id` optional).
//! - [`LineDecoder`] turns arbitrary byte chunks into bounded lines ([`Frame`]s).
//! - [`Responder`] is the answering side as a state machine: lines or messages in, reply
//!   lines or messages out. The pipe child (`rust-ts-ipc serve`), the TypeScript child and
//!   the napi addon all give byte-identical answers; `tests/conformance.json` pins them.
//! - [`Initiator`] is the asking side of the demo conversation (`cargo run`).
//! - [`Envelope`] is the library's message, whose [`Data`] is any JSON value or raw bytes.
//! - Two wire [`Encoding`]s: NDJSON lines (the default) and MessagePack frames (a 4-byte
//!   little-endian length, then one map), framed by [`FrameDecoder`] into [`Packet`]s; the
//!   `msgpack` module's documentation (on [`decode_msgpack_envelope`]) gives the exact forms.
//!
//! To talk to a child process of your own, use [`Peer`]: spawn it from a
//! `std::process::Command`, then `request`, `send` (many in flight), `notify` and `close`;
//! [`Envelope`] and [`Data`] are what it sends and receives. To write a Rust child service:
//! map each `msg_type` to a function with [`Handlers`] (or implement the lower-level
//! [`Service`] trait, as [`Responder`] does) and run it with [`serve_stdio`].
//! `rust-ts-ipc serve` is the built-in [`Responder`] (the demo and markdown [`Services`])
//! served that way.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::process::Command;
//! use rust_ts_ipc::{Peer, PeerOptions};
//!
//! let mut node = Command::new("node");
//! node.arg("ts-app/dist/examples/upper-service.js");
//! let peer = Peer::spawn(&mut node, PeerOptions::default())?;     // own process group, stderr forwarded
//! let reply = peer.request("upper", "abc")?;                       // Envelope { msg_type: "upper", data: "ABC", id: Some(1) }
//! let pending = (0..100).map(|i| peer.send("upper", format!("item {i}"))).collect::<Result<Vec<_>, _>>()?;
//! for p in pending {
//!     println!("{}", p.wait()?.data);                              // "ITEM 0" … "ITEM 99" (data prints as JSON)
//! }
//! peer.close()?;                                                   // the shutdown sequence; Drop does it too
//! # let _ = reply;
//! # Ok(())
//! # }
//! ```
//!
//! The same on tokio (cargo feature `tokio`, on by default), in an async function:
//!
//! ```no_run
//! # #[cfg(feature = "tokio")]
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::process::Command;
//! use rust_ts_ipc::{tokio::Peer, PeerOptions};
//!
//! let mut node = Command::new("node");
//! node.arg("ts-app/dist/examples/upper-service.js");
//! let peer = Peer::spawn(&mut node, PeerOptions::default())?;      // tasks, not threads, on the current runtime
//! let reply = peer.request("upper", "abc").await?;                 // the same Envelope as above
//! let slow = peer.request_timeout("upper", "x", std::time::Duration::from_millis(5));
//! drop(slow);                                                      // never polled: cancelled, nothing sent
//! let pending = peer.send("upper", "def").await?;                  // queued; await the reply later, from any task
//! println!("{} {}", reply.data, pending.await?.data);             // "ABC" "DEF"
//! peer.close().await?;                                             // the same shutdown sequence; Drop runs it in a task
//! # Ok(())
//! # }
//! ```
//!
//! A child service (what `node ts-app/dist/examples/upper-service.js` is in Node):
//!
//! ```no_run
//! use rust_ts_ipc::{serve_stdio, Data, Handlers};
//!
//! fn main() -> Result<(), rust_ts_ipc::ServeError> {
//!     serve_stdio(
//!         Handlers::new()
//!             .on("upper", |req| match req.data.as_str() {
//!                 Some(text) => Ok(Data::from(text.to_uppercase())),
//!                 None => Err(format!("upper: expected a string, got {}", req.data)),
//!             })
//!             .on("sum", |req| {
//!                 let numbers: Vec<f64> = req.data.parse().map_err(|e| format!("sum: {e}"))?;
//!                 Data::to_json(&numbers.iter().sum::<f64>()).map_err(|e| e.to_string())
//!             }),
//!     )
//! }
//! ```
//!
//! These three are the README's "Use it in your program" for Rust; `tests/readme.rs` keeps them
//! the same.
//!
//! The core (message, codec, frame, msgpack, responder, initiator, envelope, service, markdown)
//! touches no pipe, socket, thread or clock (the "sans-IO" design of h11 and
//! rust-analyzer's `lsp-server`). The I/O layer sits on top of it: [`serve`] and [`serve_stdio`] move a
//! service's bytes, [`process`] spawns, stops and always reaps children (shared by [`Peer`]
//! and the binary's demo), [`Peer`] moves envelopes over a child's stdin/stdout, and the addon
//! in `native/` converts types. That is why one core can sit behind a pipe and behind napi.

mod codec;
mod encoding;
mod envelope;
mod error;
mod frame;
mod initiator;
mod markdown;
mod message;
mod msgpack;
mod peer;
pub mod process;
mod responder;
mod serve;
mod service;
pub mod spin;
pub mod supervise;
#[cfg(feature = "tokio")]
mod tokio_peer;
mod vectored;

/// The async host (cargo feature `tokio`, on by default): [`tokio::Peer`] is the thread
/// [`Peer`] on a tokio runtime, with the same options ([`PeerOptions`]), errors
/// ([`PeerError`], [`ErrorCode`]), counters ([`PeerStats`]), limits, shutdown sequence and
/// supervision ([`tokio::Peer::spawn_with`], [`PeerOptions::restart`], [`PeerOptions::hang`],
/// [`PeerOptions::on_supervision`]); its calls are `async`, and dropping a call's future
/// cancels it.
///
/// The names mirror the thread peer's (as `std::sync::Mutex` and `tokio::sync::Mutex` do):
/// code moves between the two by changing an import and adding `.await`.
///
/// ```no_run
/// # async fn run() -> Result<(), rust_ts_ipc::PeerError> {
/// use std::process::Command;
/// use rust_ts_ipc::{tokio::Peer, PeerOptions};
///
/// let mut node = Command::new("node");
/// node.arg("ts-app/dist/examples/upper-service.js");
/// let peer = Peer::spawn(&mut node, PeerOptions::default())?;
/// let pending = peer.send("upper", "abc").await?;    // queued; the reply is awaited below
/// assert_eq!(pending.await?.data.as_str(), Some("ABC"));
/// peer.close().await?;
/// # Ok(())
/// # }
/// ```
#[cfg(feature = "tokio")]
pub mod tokio {
    pub use crate::tokio_peer::{Peer, Pending, Unsolicited};
}

pub use codec::{Frame, LineDecoder, DEFAULT_MAX_LINE_BYTES};
pub use encoding::{Encoding, UnknownEncoding};
pub use envelope::{Data, Envelope, EnvelopeError};
pub use error::{excerpt, hex_excerpt, FrameError, JsonKind, LineError, ProtocolError};
pub use frame::{write_frame, Detached, FrameDecoder, Packet, DEFAULT_MAX_FRAME_BYTES, FRAME_HEADER_BYTES};
pub use initiator::{DemoError, Initiator, InitiatorStep};
pub use markdown::markdown_to_html;
pub use message::{decode_envelope, decode_message, Message, MAX_SAFE_ID};
pub use msgpack::decode_msgpack_envelope;
pub use peer::{
    ErrorCode, Peer, PeerError, PeerOptions, PeerStats, Pending, StderrCallback, StderrMode, SupervisionCallback,
    SupervisionEvent, Unsolicited,
};
pub use responder::{
    BuiltinService, Checkpoint, Responder, ResponderOptions, Services, ServicesError, DEFAULT_EXIT_AFTER, DEFAULT_NAME,
};
pub use serve::{serve, serve_stdio, serve_stdio_with, serve_stdio_with_options, serve_with, ServeError, ServeOptions};
pub use service::{Handlers, Service};
pub use vectored::{write_all_vectored, FrameOut, SPLICE_MIN_BYTES};
