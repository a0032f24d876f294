//! The napi-rs addon: the rust-ts-ipc protocol core, loaded in-process by Node.
//!
//! This crate only converts types and maps errors; every protocol decision is made by
//! [`rust_ts_ipc::Responder`]. Start at [`Responder`]: it wraps one core responder and
//! answers lines (`handleLine`, `handleBuffer`, `handleLineAsync`), message objects
//! (`handle`) and MessagePack frames (`handleFrame`) with exactly the bytes the pipe child
//! would write.
//!
//! The synchronous calls (`handleLine`, `handleBuffer`, `handle`, `handleFrame`) are the hot
//! path, so [`install_fast_methods`] puts them (and `handleLineAsync`, for the same receiver check) on
//! `Responder.prototype` as plain functions that skip napi-rs's per-call borrow tracking (see
//! there). The `#[napi]` methods of the same names declare them for `index.d.ts` and run the
//! same bodies.
//!
//! Errors a JS caller sees:
//! - a wrong argument, or a wrong `this`, is a `TypeError` (code `InvalidArg`) naming the
//!   method and the field;
//! - a line the protocol rejects is not an exception but an `error` reply, as on the pipe;
//! - a reply longer than Node-API can make a JS string of (more than 2^29 - 24 bytes of UTF-8 on
//!   64-bit Node, even if it would be fewer UTF-16 units) is an `Error` (code `ReplyTooLong`);
//!   so are `handleFrame` reply frames of more than 2^32 - 1 bytes in all (a `Buffer`'s limit on
//!   64-bit Node 20);
//! - a Rust panic (a bug) is an `Error` or a rejected Promise, never an abort of Node.
//!
//! A call that throws or rejects does not count: the conversation moves on only for replies
//! that reach the caller, and the responder stays usable after a panic.
//!
//! No JavaScript runs while a responder's lock is held, so JavaScript that Node-API runs in the
//! middle of a call (an `async_hooks` hook as a promise is made or settled, a setter for `code`
//! on `Error.prototype` as an error is made) can call the same responder without deadlocking.
//! Errors are built under the lock but thrown after it is released; promises are made before
//! it is taken and settled after.

use std::any::Any;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::ffi::CStr;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use napi::bindgen_prelude::{
    panic_to_error, AsyncTask, BufferSlice, ClassInstance, Env, FromNapiValue, FunctionCallContext, JavaScriptClassExt,
    JsObjectValue, Object, ObjectRef, PromiseRaw, Result, Status, This, ToNapiValue, Unknown, ValueType,
};
use napi::{sys, Error, JsString, JsValue, Property, PropertyAttributes, Task};
use napi_derive::napi;
use rust_ts_ipc as ipc;

pub mod call_js;
#[cfg(unix)]
pub mod pipe_peer;

/// A protocol message as JavaScript sees it, with the wire's field names.
#[napi(object, object_from_js = false, js_name = "Message")]
pub struct JsMessage {
    /// `greeting`, `data`, `exit`, `markdown` (to the responder); `response`, `ack`, `exit`,
    /// `html`, `error` (from it).
    #[napi(js_name = "msg_type")]
    pub msg_type: String,
    /// The payload.
    pub data: String,
    /// Correlation id (an integer from 0 to `Number.MAX_SAFE_INTEGER`), echoed on replies.
    pub id: Option<f64>,
}

impl From<ipc::Message> for JsMessage {
    fn from(m: ipc::Message) -> Self {
        // Exact: the core only accepts and echoes ids up to `MAX_SAFE_ID` = 2^53 - 1.
        #[allow(clippy::cast_precision_loss)]
        JsMessage { msg_type: m.msg_type, data: m.data, id: m.id.map(|id| id as f64) }
    }
}

/// Options for `new Responder(options)`; every field is optional. Declared for the generated
/// `.d.ts`: `read_options` reads the fields itself, so that a bad one gets a precise `TypeError`.
#[napi(object, object_to_js = false)]
pub struct ResponderOptions {
    /// End the conversation after this many `data` messages; 0 = never. Default 5.
    pub exit_after: Option<f64>,
    /// Who says hello and goodbye (`Hello from {name}!`). Default `TypeScript`.
    pub name: Option<String>,
    /// Lines longer than this many bytes get an `error` reply. Default 16 MiB.
    pub max_line_bytes: Option<f64>,
    /// `handleFrame` bodies longer than this many bytes get an `error` reply (and are not
    /// copied). Default 16 MiB.
    pub max_frame_bytes: Option<f64>,
    /// The services answered: `demo` (greeting, data, exit), `markdown` (markdown → html,
    /// CommonMark) and `bytes` (bytes → the same bytes; `handleFrame` only, as only MessagePack
    /// carries bytes). Any other `msg_type` gets an `error` reply listing theirs. Default demo
    /// and markdown.
    #[napi(ts_type = "Array<'demo' | 'markdown' | 'bytes'>")]
    pub services: Option<Vec<String>>,
}

/// One conversation, answered in the order the calls were made (sync and async alike).
///
/// A reply longer than Node-API can make a string of (more than 2^29 - 24 bytes of UTF-8 on
/// 64-bit Node, even when it would be fewer UTF-16 units than JavaScript's longest string) is
/// refused: the call throws, or its promise rejects with, an `Error` with code `ReplyTooLong`,
/// and does not count.
#[napi]
pub struct Responder {
    state: Arc<Mutex<State>>,
}

/// What the mutex guards: the core responder, plus the `handleLineAsync` lines and promises
/// not settled yet. Every call first answers the queued lines, so replies follow call order
/// whichever thread gets to the lock first; their promises are settled on the JS thread, in
/// call order, by the one [`Drain`] a responder has scheduled at a time.
struct State {
    core: ipc::Responder,
    /// Reused for every reply, so a call allocates nothing on the Rust side for its output.
    out: Vec<u8>,
    /// Reused for every `handleLine` and `handleBuffer` argument (see [`read_utf8`], [`View`]).
    line: Vec<u8>,
    /// `handleLineAsync` lines not answered yet, in call order.
    queued: VecDeque<String>,
    /// The replies to the answered ones (or why there is none), in call order, until settled.
    answered: VecDeque<std::result::Result<String, Failure>>,
    /// One promise per line in `answered`, then `queued`, in call order.
    promises: VecDeque<Deferred>,
    /// Whether a [`Drain`] is scheduled (or about to be: it is set under the lock, and the drain
    /// scheduled after releasing it); it is whenever `promises` is not empty.
    draining: bool,
}

impl State {
    /// Runs one call through the core. If the call fails (a reply JavaScript cannot hold, or a
    /// panic: a bug), the core is rewound to where it stood, so the call does not count and the
    /// responder stays usable.
    fn run<T>(
        &mut self,
        call: impl FnOnce(&mut ipc::Responder, &mut Vec<u8>) -> std::result::Result<T, Failure>,
    ) -> std::result::Result<T, Failure> {
        let before = self.core.checkpoint();
        self.out.clear();
        let (core, out) = (&mut self.core, &mut self.out);
        let result =
            catch_unwind(AssertUnwindSafe(|| call(core, out))).unwrap_or_else(|panic| Err(Failure::panic(panic)));
        if result.is_err() {
            self.core.rewind(before);
            // The reply may have been too long for a JS string: not a buffer worth keeping.
            self.out = Vec::new();
        }
        result
    }

    /// Answers the queued `handleLineAsync` lines; their promises wait for the next [`settle`].
    fn catch_up(&mut self) {
        while let Some(line) = self.queued.pop_front() {
            let answer = self.run(|core, out| {
                core.handle_line(line.as_bytes(), out);
                // Here, before the line counts: a reply refused later, as it is settled, would count.
                check_fits(&"handleLineAsync: the reply", "line", out)?;
                Ok(reply_text(out).into_owned())
            });
            self.answered.push_back(answer);
        }
    }

    /// Answers `line` after every queued one, as a JS string.
    fn reply_to<'env>(&mut self, env: &'env Env, method: &str, line: &[u8]) -> Outcome<JsString<'env>> {
        self.catch_up();
        self.run(|core, out| {
            core.handle_line(line, out);
            js_reply(env, method, out)
        })
    }

    /// Answers the bytes of `view` after every queued line, as a JS string. A line too long to
    /// answer is answered from its length and line ending alone, not copied: copying a 2 GiB
    /// `Buffer` only to refuse it took ~850 ms and 2 GiB more memory.
    fn reply_to_view<'env>(&mut self, env: &'env Env, view: &View<'_>) -> Outcome<JsString<'env>> {
        if view.len > self.core.options().max_line_bytes {
            self.catch_up();
            let tail = view.tail();
            let refused = self.run(|core, out| {
                core.handle_line_if_too_long(view.len, tail.as_slice(), out)
                    .then(|| js_reply(env, "handleBuffer", out))
                    .transpose()
            })?;
            if let Some(reply) = refused {
                return Ok(reply);
            }
        }
        let mut copy = std::mem::take(&mut self.line);
        view.copy_to(&mut copy)?;
        let reply = self.reply_to(env, "handleBuffer", &copy);
        self.keep_line_buffer(copy);
        reply
    }

    /// Answers the frame body in `view` after every queued line, and hands the reply frames to
    /// `deliver` (a new `Buffer`, or a write into the caller's). A body over `maxFrameBytes` is
    /// answered from its length alone, never copied.
    fn reply_to_frame<T>(&mut self, view: &View<'_>, deliver: impl FnOnce(&[u8]) -> Outcome<T>) -> Outcome<T> {
        self.catch_up();
        if view.len > self.core.options().max_frame_bytes {
            return self.run(|core, out| {
                let number = core.lines_seen() + 1;
                core.handle_packet(ipc::Packet::TooLong { number, length: view.len }, out);
                deliver(out)
            });
        }
        let mut copy = std::mem::take(&mut self.line);
        view.copy_to(&mut copy)?;
        let reply = self.run(|core, out| {
            core.handle_frame_body(&copy, out);
            deliver(out)
        });
        self.keep_line_buffer(copy);
        reply
    }

    /// Keeps `line`'s buffer for the next call, unless a huge line made it huge.
    fn keep_line_buffer(&mut self, line: Vec<u8>) {
        if line.capacity() <= KEEP_LINE_BUFFER_BYTES {
            self.line = line;
        }
    }
}

/// A call's result, or why it has none; made under the responder's lock, thrown after it.
type Outcome<T> = std::result::Result<T, Failure>;

/// Why a call has no reply, as the JS `Error` it becomes: a stable `code` and a message.
struct Failure {
    code: &'static str,
    message: String,
}

impl Failure {
    /// Not one of the failures with a code of their own.
    fn generic(message: String) -> Self {
        Failure { code: "GenericFailure", message }
    }

    /// A bad argument: thrown as a `TypeError`.
    fn invalid_arg(message: String) -> Self {
        Failure { code: "InvalidArg", message }
    }

    /// A panic (a bug), as napi-rs reports one.
    fn panic(payload: Box<dyn Any + Send>) -> Self {
        Failure::generic(panic_to_error(payload).reason)
    }

    /// Throws it, and returns the error that tells napi it is pending. Never with a responder's
    /// lock held: setting the error's `code` runs any setter JavaScript put on `Error.prototype`.
    fn throw(self, env: &Env) -> Error {
        if self.code == "InvalidArg" {
            return type_error(env, self.message);
        }
        match env.throw_error(&self.message, Some(self.code)) {
            Ok(()) => Error::new(Status::PendingException, self.message),
            Err(e) => e,
        }
    }

    /// The `Error` object, to reject a promise with. Its `code` is set by `napi_set_named_property`,
    /// which catches what a setter on `Error.prototype` throws (left pending, see [`take_exception`]);
    /// `napi_create_error` with a code would let it escape as an uncaught exception.
    #[allow(unsafe_code)]
    fn to_js<'env>(&self, env: &'env Env) -> Result<Object<'env>> {
        let message = env.create_string(&self.message)?;
        let mut error = std::ptr::null_mut();
        // SAFETY: `env` is the live env of the current call on the JS thread, `message` a string
        // of it; a null code sets none. Node-API fills `error`.
        let status = unsafe { sys::napi_create_error(env.raw(), std::ptr::null_mut(), message.raw(), &mut error) };
        if status != sys::Status::napi_ok {
            return Err(Error::new(Status::from(status), "could not create an Error".to_owned()));
        }
        let mut error = Object::from_raw(env.raw(), error);
        error.set_named_property("code", self.code)?;
        Ok(error)
    }
}

/// Node-API could not make a reply of `bytes` bytes, which [`check_fits`] let through, a string.
fn cannot_create(method: &str, bytes: usize, error: &Error) -> Failure {
    Failure::generic(format!("{method}: could not make the {bytes}-byte reply a JS string ({})", error.status))
}

/// The reply in `out` as a JS string, or why it cannot be one.
fn js_reply<'env>(env: &'env Env, method: &str, out: &[u8]) -> Outcome<JsString<'env>> {
    check_fits(&format_args!("{method}: the reply"), "line", out)?;
    to_js_string(env, out).map_err(|e| cannot_create(method, out.len(), &e))
}

/// The longest `Buffer` `handleFrame` returns: `buffer.constants.MAX_LENGTH` on 64-bit Node 20
/// is 2^32 (later versions allow more), and one byte less keeps the check simple on 32 bits too.
const MAX_JS_BUFFER: usize = u32::MAX as usize;

/// The reply frames in `out` as a new `Buffer` (a copy: `out` is reused by the next call), or
/// a `ReplyTooLong` failure when they are longer than [`MAX_JS_BUFFER`].
fn js_frames<'env>(env: &'env Env, method: &str, out: &[u8]) -> Outcome<BufferSlice<'env>> {
    if out.len() > MAX_JS_BUFFER {
        return Err(Failure {
            code: "ReplyTooLong",
            message: format!(
                "{method}: the reply frames are {} bytes, more than the {MAX_JS_BUFFER} bytes a Buffer can \
                 hold here; the frame was not answered and does not count",
                out.len()
            ),
        });
    }
    BufferSlice::copy_from(env, out).map_err(|e| {
        Failure::generic(format!("{method}: could not make the {}-byte reply a Buffer ({})", out.len(), e.status))
    })
}

/// The longest string Node-API can make, both in UTF-16 units and in the UTF-8 (or Latin-1)
/// bytes it is made from: `v8::String::kMaxLength` (`buffer.constants.MAX_STRING_LENGTH`, the
/// same on 64-bit Node 20 to 24). V8 refuses a longer input before decoding it, so a non-ASCII
/// reply of more bytes fails even when its UTF-16 length would fit; and Node-API does not say
/// why it failed, so replies are measured against this first.
const MAX_JS_STRING: usize = if cfg!(target_pointer_width = "64") { (1 << 29) - 24 } else { (1 << 28) - 16 };

/// Checks that Node-API can make the UTF-8 `text` a JS string; if not, a `ReplyTooLong` failure
/// that says `{subject} is N bytes of UTF-8 ...; the {what} was not answered`. Counting bytes is
/// the whole check: UTF-8 never has fewer bytes than UTF-16 has units.
fn check_fits(subject: &dyn std::fmt::Display, what: &str, text: &[u8]) -> Outcome<()> {
    if text.len() <= MAX_JS_STRING {
        return Ok(());
    }
    Err(Failure {
        code: "ReplyTooLong",
        message: format!(
            "{subject} is {} bytes of UTF-8, more than the {MAX_JS_STRING} bytes (or UTF-16 units) Node-API \
             can make a JavaScript string of; the {what} was not answered and does not count",
            text.len()
        ),
    })
}

/// The core writes JSON text built from `str`s, so its replies are always UTF-8; the lossy
/// conversion only saves an error path that cannot be taken (it borrows, never copies).
fn reply_text(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// Most replies are ASCII (serde_json and `JSON.stringify` leave only non-ASCII text as is),
/// and V8 takes ASCII fastest as Latin-1: a straight copy instead of UTF-8 decoding (at 64 KiB
/// that decoding was most of the call).
fn to_js_string<'env>(env: &'env Env, reply: &[u8]) -> Result<JsString<'env>> {
    if reply.is_ascii() {
        env.create_string_latin1(reply)
    } else {
        env.create_string(reply_text(reply))
    }
}

#[napi]
impl Responder {
    /// A fresh conversation. Throws a `TypeError` if called without `new` or with bad options.
    #[napi(constructor, catch_unwind)]
    pub fn new(
        env: Env,
        this: This<Unknown>,
        #[napi(ts_arg_type = "ResponderOptions | undefined | null")] options: Option<Unknown<'_>>,
    ) -> Result<Self> {
        // Called without `new`, napi would wrap whatever `this` is (the global object) and
        // hand back a hollow object; a real construction's `this` inherits our prototype.
        if !Responder::instance_of(&env, &this.object)? {
            return Err(type_error(&env, "Class constructor Responder cannot be invoked without 'new'".into()));
        }
        let options = read_options(&env, options)?;
        let state = State {
            core: ipc::Responder::new(options),
            out: Vec::new(),
            line: Vec::new(),
            queued: VecDeque::new(),
            answered: VecDeque::new(),
            promises: VecDeque::new(),
            draining: false,
        };
        Ok(Responder { state: Arc::new(Mutex::new(state)) })
    }

    /// Answers one message object; after the `exitAfter`th `data` message that is `[ack, exit]`.
    #[napi(catch_unwind)]
    pub fn handle(&self, env: Env, #[napi(ts_arg_type = "Message")] msg: Unknown<'_>) -> Result<Vec<JsMessage>> {
        self.answer_message(&env, msg)
    }

    /// Answers one NDJSON line (its line ending, LF or CRLF, is optional) with the exact text
    /// the pipe child would write: zero, one or two lines, each ending in LF.
    #[napi(catch_unwind)]
    pub fn handle_line<'env>(
        &self,
        env: &'env Env,
        #[napi(ts_arg_type = "string")] line: Unknown<'_>,
    ) -> Result<JsString<'env>> {
        self.answer_line(env, line)
    }

    /// `handleLine` on bytes, which may be any bytes, including invalid UTF-8 (it gets the same
    /// `error` reply as on the pipe). They are copied once, each byte read once, before they are
    /// read: a view of a `SharedArrayBuffer` that another thread changes meanwhile is answered
    /// exactly as copied. A line longer than `maxLineBytes` is not copied: its length and last
    /// two bytes (its line ending) are all its `error` reply needs. The reply is a string
    /// (always valid UTF-8): creating one costs Node about half what a `Buffer` does.
    #[napi(catch_unwind)]
    pub fn handle_buffer<'env>(
        &self,
        env: &'env Env,
        #[napi(ts_arg_type = "Uint8Array")] bytes: Unknown<'_>,
    ) -> Result<JsString<'env>> {
        self.answer_bytes(env, bytes)
    }

    /// Answers one MessagePack frame: `frame` is the frame's **body**, the bytes after its
    /// 4-byte length header (one MessagePack map, as `msgpackr`'s `pack` returns it), without
    /// the header: the call already delimits it. Returns the reply frames exactly as the pipe
    /// child would write them, each **with** its 4-byte little-endian length header,
    /// concatenated: zero, one or two frames (`[ack, exit]` after the `exitAfter`th `data`),
    /// in a new `Buffer` the caller owns. A bad body gets an `error` reply frame naming it
    /// `frame N`, N counting the calls on this responder (`handleFrameInto`, `handleLine` and
    /// `handle` calls count too: give one responder one kind of call). The bytes are copied once before they are
    /// read, as by `handleBuffer`; a body longer than `maxFrameBytes` is not copied.
    #[napi(catch_unwind)]
    pub fn handle_frame<'env>(
        &self,
        env: &'env Env,
        #[napi(ts_arg_type = "Uint8Array")] frame: Unknown<'_>,
    ) -> Result<BufferSlice<'env>> {
        self.answer_frame(env, frame)
    }

    /// `handleFrame` without a new `Buffer` per call: the reply frames are written at the start
    /// of `out` when they fit, and their length in bytes is returned (the rest of `out` keeps
    /// its bytes); when they do not fit, `out` is left as it was and they are returned in a new
    /// `Buffer`, exactly as `handleFrame` returns them. A caller answering many frames passes
    /// the same `out` each time: for a 64-byte message, making and later freeing the reply's
    /// `Buffer` was about a third of `handleFrame`'s cost. `frame` is copied before the reply is
    /// written, so `out` may be the very buffer `frame` views. Throws a `TypeError` (code
    /// `InvalidArg`) if `out` is not a `Uint8Array`, before anything is answered.
    #[napi(catch_unwind, ts_return_type = "number | Buffer")]
    pub fn handle_frame_into<'env>(
        &self,
        env: &'env Env,
        #[napi(ts_arg_type = "Uint8Array")] frame: Unknown<'_>,
        #[napi(ts_arg_type = "Uint8Array")] out: Unknown<'_>,
    ) -> Result<Unknown<'env>> {
        self.answer_frame_into(env, frame, out)
    }

    /// `handleLine` off the JS thread, on the libuv pool. Calls on one responder are answered
    /// in call order, also when sync and async calls are mixed, and their promises settle in
    /// call order.
    #[napi(catch_unwind, ts_return_type = "Promise<string>")]
    pub fn handle_line_async<'env>(
        &self,
        env: &'env Env,
        #[napi(ts_arg_type = "string")] line: Unknown<'_>,
    ) -> Result<PromiseRaw<'env, String>> {
        self.answer_async(env, line)
    }

    /// True once the conversation has ended (`exit` sent); later lines get an `error` reply.
    #[napi(getter, catch_unwind)]
    pub fn done(&self) -> bool {
        self.is_done()
    }
}

/// The bodies of the calls, shared by the `#[napi]` methods and the fast path. Each releases the
/// lock before it throws (see [`Failure::throw`]).
impl Responder {
    fn answer_message(&self, env: &Env, msg: Unknown<'_>) -> Result<Vec<JsMessage>> {
        let msg = read_message(env, msg)?;
        let replies = {
            let mut state = lock(&self.state);
            state.catch_up();
            state.run(|core, _| {
                let replies = core.handle_message(&msg);
                for reply in &replies {
                    check_fits(&"handle: the reply's data", "message", reply.data.as_bytes())?;
                }
                Ok(replies.into_iter().map(JsMessage::from).collect())
            })
        };
        replies.map_err(|failure| failure.throw(env))
    }

    fn answer_line<'env>(&self, env: &'env Env, line: Unknown<'_>) -> Result<JsString<'env>> {
        let reply = {
            let mut state = lock(&self.state);
            // Taken out for the call so that `reply_to` can borrow the state mutably beside it.
            let mut text = std::mem::take(&mut state.line);
            let reply = match read_utf8(env, &line, &mut text) {
                Ok(true) => state.reply_to(env, "handleLine", &text),
                Ok(false) => {
                    Err(Failure::invalid_arg(format!("handleLine: expected a string, got {}", kind_of(&line))))
                }
                Err(e) => Err(Failure::generic(e.reason)),
            };
            state.keep_line_buffer(text);
            reply
        };
        reply.map_err(|failure| failure.throw(env))
    }

    fn answer_bytes<'env>(&self, env: &'env Env, bytes: Unknown<'_>) -> Result<JsString<'env>> {
        let reply = match View::of(&bytes) {
            Some(view) => lock(&self.state).reply_to_view(env, &view),
            None => Err(Failure::invalid_arg(format!("handleBuffer: expected a Uint8Array, got {}", kind_of(&bytes)))),
        };
        reply.map_err(|failure| failure.throw(env))
    }

    fn answer_frame<'env>(&self, env: &'env Env, frame: Unknown<'_>) -> Result<BufferSlice<'env>> {
        let reply = match View::of(&frame) {
            Some(view) => lock(&self.state).reply_to_frame(&view, |out| js_frames(env, "handleFrame", out)),
            None => Err(Failure::invalid_arg(format!("handleFrame: expected a Uint8Array, got {}", kind_of(&frame)))),
        };
        reply.map_err(|failure| failure.throw(env))
    }

    fn answer_frame_into<'env>(&self, env: &'env Env, frame: Unknown<'_>, out: Unknown<'_>) -> Result<Unknown<'env>> {
        let reply = match (View::of(&frame), View::of(&out)) {
            (Some(view), Some(into)) => lock(&self.state).reply_to_frame(&view, |frames| {
                if frames.len() <= into.len {
                    into.store(frames);
                    // A typed array's length is a JS number, so `frames.len()` is exact as an f64.
                    (frames.len() as f64).into_unknown(env).map_err(|e| {
                        Failure::generic(format!("handleFrameInto: could not make the length a number ({})", e.status))
                    })
                } else {
                    js_frames(env, "handleFrameInto", frames).map(|b| b.to_unknown())
                }
            }),
            (None, _) => Err(Failure::invalid_arg(format!(
                "handleFrameInto: expected a Uint8Array as `frame`, got {}",
                kind_of(&frame)
            ))),
            (_, None) => Err(Failure::invalid_arg(format!(
                "handleFrameInto: expected a Uint8Array as `out`, got {}",
                kind_of(&out)
            ))),
        };
        reply.map_err(|failure| failure.throw(env))
    }

    fn answer_async<'env>(&self, env: &'env Env, line: Unknown<'_>) -> Result<PromiseRaw<'env, String>> {
        let line = read_string(env, line, "handleLineAsync: expected a string")?;
        // Made and scheduled outside the lock: both fire `async_hooks` hooks, which may call this responder.
        let (deferred, promise) = Deferred::new(env)?;
        let schedule = {
            let mut state = lock(&self.state);
            state.queued.push_back(line);
            state.promises.push_back(deferred);
            !std::mem::replace(&mut state.draining, true)
        };
        if schedule {
            schedule_drain(env, &self.state);
        }
        Ok(promise)
    }

    fn is_done(&self) -> bool {
        let mut state = lock(&self.state);
        state.catch_up();
        state.core.is_done()
    }
}

/// Largest `handleLine` buffer a responder keeps between calls (enough for lines of 2 MiB).
const KEEP_LINE_BUFFER_BYTES: usize = 8 << 20;

/// Replaces the methods on `Responder.prototype` with plain functions that run the same bodies,
/// and the `done` getter with one that checks its receiver as they do (runs once, when the
/// addon loads). `handleLineAsync` is not on the hot path, but is replaced too so that a wrong
/// receiver gets the same `TypeError` (a class method would throw V8's "Illegal invocation").
///
/// napi-rs's generated glue for a `&self` method registers the receiver in a per-call borrow
/// scope (an `Arc<Mutex>` allocation and two global mutex-guarded maps), which exists to stop
/// a reentrant `&mut self` call from freeing what the call still reads. An empty method cost
/// ~200 ns that way against ~60 ns this way (`noop()`: ~18 ns), before the receiver check
/// below (~40–60 ns). `Responder` has no `&mut self` method and keeps its state behind a
/// `Mutex`, so there is nothing for that guard to do. A plain function has no V8 receiver
/// check, unlike a class method, so `is_ours` and `ClassInstance<Responder>` check `this`:
/// anything else is a `TypeError`. `ClassInstance` relies on the `napi8` feature's type tags:
/// without them another addon's wrapped object, given our prototype, would be unwrapped as a
/// `Responder` and crash Node. (napi-rs's own getter refuses a foreign `this` with a plain
/// `Error`, hence ours.)
#[napi(module_exports)]
pub fn install_fast_methods(exports: Object<'_>, env: Env) -> Result<()> {
    // The class is a function; read as an object only to reach `prototype`.
    let class: Object<'_> = exports.get_named_property_unchecked("Responder")?;
    let mut prototype: Object<'_> = class.get_named_property_unchecked("prototype")?;
    install(&env, &mut prototype, "handleLine", |r, env, line| r.answer_line(env, line).map(|s| s.to_unknown()))?;
    install(&env, &mut prototype, "handleBuffer", |r, env, bytes| r.answer_bytes(env, bytes).map(|s| s.to_unknown()))?;
    install(&env, &mut prototype, "handle", |r, env, msg| r.answer_message(env, msg)?.into_unknown(env))?;
    install(&env, &mut prototype, "handleFrame", |r, env, frame| r.answer_frame(env, frame).map(|b| b.to_unknown()))?;
    install2(&env, &mut prototype, "handleFrameInto", |r, env, frame, out| r.answer_frame_into(env, frame, out))?;
    install(&env, &mut prototype, "handleLineAsync", |r, env, line| r.answer_async(env, line).map(|p| p.to_unknown()))?;
    let ours: ObjectRef<false> = prototype.create_ref()?;
    let done = Property::new()
        .with_utf8_name("done")?
        .with_getter_closure(move |env: Env, this: This<'_>| {
            Ok(responder_of(&env, "done", this.object.to_unknown(), &ours)?.is_done())
        })
        .with_property_attributes(PropertyAttributes::Enumerable | PropertyAttributes::Configurable);
    prototype.define_properties(&[done])
}

/// A `Responder` call as the fast path runs it: receiver, env, first argument.
type Method = for<'env> fn(&Responder, &'env Env, Unknown<'env>) -> Result<Unknown<'env>>;

/// Sets `prototype[name]` to a function that calls `method` (panics become an `Error`: the
/// closure trampoline catches them).
fn install(env: &Env, prototype: &mut Object<'_>, name: &'static str, method: Method) -> Result<()> {
    // Held for as long as the function lives, i.e. as long as the class.
    let ours: ObjectRef<false> = prototype.create_ref()?;
    let function = env.create_function_from_closure::<(), _, _>(name, move |ctx: FunctionCallContext<'_>| {
        let env: &Env = ctx.env;
        let this = responder_of(env, name, ctx.this()?, &ours)?;
        let arg = if ctx.length() == 0 { ().into_unknown(env)? } else { ctx.get::<Unknown<'_>>(0)? };
        // The raw handle outlives the closure's borrow of `ctx`; it is valid until the call returns.
        method(&this, env, arg).map(|reply| reply.raw())
    })?;
    prototype.set_named_property(name, function)
}

/// A two-argument `Responder` call as the fast path runs it: receiver, env, the arguments.
type Method2 = for<'env> fn(&Responder, &'env Env, Unknown<'env>, Unknown<'env>) -> Result<Unknown<'env>>;

/// `install` for a method of two arguments (a missing one is `undefined`).
fn install2(env: &Env, prototype: &mut Object<'_>, name: &'static str, method: Method2) -> Result<()> {
    let ours: ObjectRef<false> = prototype.create_ref()?;
    let function = env.create_function_from_closure::<(), _, _>(name, move |ctx: FunctionCallContext<'_>| {
        let env: &Env = ctx.env;
        let this = responder_of(env, name, ctx.this()?, &ours)?;
        let arg = |i: usize| if ctx.length() <= i { ().into_unknown(env) } else { ctx.get::<Unknown<'_>>(i) };
        method(&this, env, arg(0)?, arg(1)?).map(|reply| reply.raw())
    })?;
    prototype.set_named_property(name, function)
}

/// `receiver` as a `Responder` of this copy of the addon (see [`is_ours`]), or a `TypeError`
/// that says `{name}: `this` is not a Responder`.
fn responder_of<'a>(
    env: &Env,
    name: &str,
    receiver: Unknown<'a>,
    ours: &ObjectRef<false>,
) -> Result<ClassInstance<'a, Responder>> {
    let not_a_responder = || type_error(env, format!("{name}: `this` is not a Responder"));
    if !is_ours(env, &receiver, ours)? {
        return Err(not_a_responder());
    }
    ClassInstance::from_unknown(receiver).map_err(|_| not_a_responder())
}

/// Whether `receiver` is a `Responder` of this copy of the addon: its prototype is ours (the
/// usual case, a few cheap Node-API calls) or it is `instanceof Responder` (a subclass; that
/// check alone costs ~130 ns).
///
/// `ClassInstance` alone is not enough: an instance of another loaded copy of this addon (another
/// path, maybe another version whose `Responder` has another layout) passes its check, where a
/// class method would have been stopped by V8's receiver check.
fn is_ours(env: &Env, receiver: &Unknown<'_>, prototype: &ObjectRef<false>) -> Result<bool> {
    // `get_prototype` fails for `undefined` and `null` and boxes other primitives (`Number`...).
    let Ok(actual) = Object::from_unknown(*receiver).and_then(|object| object.get_prototype()) else {
        return Ok(false);
    };
    Ok(env.strict_equals(actual, prototype.get_value(env)?)? || Responder::instance_of(env, receiver)?)
}

/// Answers the queued `handleLineAsync` lines on the libuv pool, then settles their promises on
/// the JS thread, in call order. One is scheduled per responder at a time (`State::draining`):
/// separate tasks would settle in whatever order the pool's threads finish them.
struct Drain {
    state: Arc<Mutex<State>>,
}

impl Task for Drain {
    type Output = ();
    type JsValue = ();

    fn compute(&mut self) -> Result<()> {
        // `catch_up` catches the core's panics itself; one unwinding out of here would abort Node.
        guarded(|| {
            lock(&self.state).catch_up();
            Ok(())
        })
    }

    fn resolve(&mut self, env: Env, (): ()) -> Result<()> {
        settle(&env, &self.state)
    }

    fn reject(&mut self, env: Env, _panic: Error) -> Result<()> {
        // A bug, already reported on stderr; the lines' own promises still settle (this task's
        // promise is not handed to anyone, so rejecting it would only be an unhandled rejection).
        settle(&env, &self.state)
    }
}

/// An answered `handleLineAsync` line: its promise, and its reply or why there is none.
type Answered = (Deferred, Outcome<String>);

/// Takes the answered lines and their promises out of `state`, in call order.
fn take_answered(state: &mut State) -> Vec<Answered> {
    let answered = state.answered.len().min(state.promises.len());
    state.promises.drain(..answered).zip(state.answered.drain(..)).collect()
}

/// Settles the promises of the answered `handleLineAsync` lines, in call order, and schedules
/// the next [`Drain`] if lines were queued since this one ran (JS thread only).
fn settle(env: &Env, shared: &Arc<Mutex<State>>) -> Result<()> {
    // Taken out under the lock, settled after releasing it: settling fires `async_hooks`'
    // `promiseResolve`, which may call this responder. Calls made meanwhile queue behind these.
    let (answered, schedule) = {
        let mut state = lock(shared);
        state.draining = !state.queued.is_empty();
        (take_answered(&mut state), state.draining)
    };
    let mut failed = None;
    for (deferred, answer) in answered {
        if let Err(e) = settle_one(env, deferred, answer) {
            failed.get_or_insert(e);
        }
    }
    // Even after a failure above, so that the queued lines still get answered.
    if schedule {
        schedule_drain(env, shared);
    }
    failed.map_or(Ok(()), Err)
}

/// Schedules a [`Drain`], with `State::draining` already set (JS thread, outside the lock:
/// scheduling fires `async_hooks`' `init`). If Node-API cannot, no promise is left waiting for
/// one: those of lines answered already settle now, the others reject, their lines unanswered.
fn schedule_drain(env: &Env, shared: &Arc<Mutex<State>>) {
    let Err(error) = env.spawn(Drain { state: Arc::clone(shared) }) else { return };
    let (answered, refused) = {
        let mut state = lock(shared);
        state.draining = false;
        let answered = take_answered(&mut state);
        state.queued.clear();
        (answered, std::mem::take(&mut state.promises))
    };
    let refusal = || {
        Err(Failure::generic(format!(
            "handleLineAsync: could not schedule the line on the libuv pool ({}); it was not answered and does \
             not count",
            error.status
        )))
    };
    let settled = answered.into_iter().chain(refused.into_iter().map(|deferred| (deferred, refusal())));
    for (deferred, answer) in settled {
        // Nothing left to tell: the promise is all the caller has.
        let _unsettled = settle_one(env, deferred, answer);
    }
}

/// Fulfils one `handleLineAsync` promise with its reply, or rejects it with why there is none.
/// If that `Error` cannot be made (a setter for `code` on `Error.prototype` threw), the promise
/// rejects with what was thrown instead: it settles either way.
fn settle_one(env: &Env, deferred: Deferred, answer: Outcome<String>) -> Result<()> {
    let reply = answer.and_then(|reply| {
        to_js_string(env, reply.as_bytes()).map_err(|e| cannot_create("handleLineAsync", reply.len(), &e))
    });
    let outcome = match reply {
        Ok(reply) => Ok(reply.to_unknown()),
        Err(failure) => Err(failure.to_js(env).map(|error| error.to_unknown()).or_else(|_| take_exception(env))?),
    };
    deferred.settle(env, outcome)
}

/// The pending JavaScript exception, cleared (`undefined` if there is none).
#[allow(unsafe_code)]
fn take_exception(env: &Env) -> Result<Unknown<'_>> {
    let mut exception = std::ptr::null_mut();
    // SAFETY: `env` is the live env of the current call on the JS thread; Node-API fills `exception`.
    let status = unsafe { sys::napi_get_and_clear_last_exception(env.raw(), &mut exception) };
    if status != sys::Status::napi_ok {
        return Err(Error::new(Status::from(status), "handleLineAsync: could not make a rejection".to_owned()));
    }
    // SAFETY: a live value of this env.
    unsafe { Unknown::from_napi_value(env.raw(), exception) }
}

/// The settling end of a promise that `handleLineAsync` returned (a `napi_deferred`).
struct Deferred(sys::napi_deferred);

// SAFETY: a `napi_deferred` may only be used on its JS thread. This one is created, settled and
// dropped there; a pool thread only ever holds it inside `State`, under the lock, untouched.
#[allow(unsafe_code)]
unsafe impl Send for Deferred {}

#[allow(unsafe_code)]
impl Deferred {
    /// A pending promise and its settling end. napi-rs's `JsDeferred` settles through a
    /// threadsafe function of its own, so two of them would not keep their order.
    fn new(env: &Env) -> Result<(Deferred, PromiseRaw<'_, String>)> {
        let (mut deferred, mut promise) = (std::ptr::null_mut(), std::ptr::null_mut());
        // SAFETY: `env` is the live env of the current call; Node-API fills both out-pointers.
        let status = unsafe { sys::napi_create_promise(env.raw(), &mut deferred, &mut promise) };
        if status != sys::Status::napi_ok {
            return Err(Error::new(Status::from(status), "handleLineAsync: could not create a promise".to_owned()));
        }
        Ok((Deferred(deferred), PromiseRaw::new(env.raw(), promise)))
    }

    /// Fulfils the promise with the `Ok` value, or rejects it with the `Err` one.
    fn settle(self, env: &Env, outcome: std::result::Result<Unknown<'_>, Unknown<'_>>) -> Result<()> {
        // SAFETY: on the JS thread the promise was made on; `self` is consumed, so the deferred
        // (which Node-API frees as it settles) is used once.
        let status = unsafe {
            match outcome {
                Ok(value) => sys::napi_resolve_deferred(env.raw(), self.0, value.raw()),
                Err(error) => sys::napi_reject_deferred(env.raw(), self.0, error.raw()),
            }
        };
        if status != sys::Status::napi_ok {
            return Err(Error::new(Status::from(status), "handleLineAsync: could not settle a promise".to_owned()));
        }
        Ok(())
    }
}

/// Does nothing: the cost of a napi call, the floor the benchmarks print beside the results.
#[napi]
pub fn noop() {}

/// Test only: panics, to prove a panic in a synchronous export surfaces as a JS `Error`. Given
/// a responder, it panics as a core bug would, inside a core call after the line was counted,
/// and then again with the responder's lock held, which poisons it: the responder must still
/// answer the next call as if this one had never been made.
#[napi(js_name = "__panicForTest", catch_unwind)]
pub fn panic_for_test(
    #[napi(ts_arg_type = "Responder | undefined | null")] responder: Option<ClassInstance<'_, Responder>>,
) {
    if let Some(responder) = responder {
        let mut state = lock(&responder.state);
        let _caught = state.run(|core, out| -> std::result::Result<(), Failure> {
            core.handle_line(br#"{"msg_type":"data","data":"x"}"#, out);
            panic!("__panicForTest: a deliberate panic in a core call");
        });
        panic!("__panicForTest: a deliberate panic with a Responder's lock held");
    }
    panic!("__panicForTest: a deliberate panic");
}

/// Test only: panics on the libuv pool, to prove it surfaces as a rejected Promise.
#[napi(js_name = "__panicForTestAsync", ts_return_type = "Promise<void>")]
pub fn panic_for_test_async() -> AsyncTask<PanicTask> {
    AsyncTask::new(PanicTask)
}

/// The task behind `__panicForTestAsync`.
pub struct PanicTask;

impl Task for PanicTask {
    type Output = ();
    type JsValue = ();

    fn compute(&mut self) -> Result<()> {
        guarded(|| panic!("__panicForTestAsync: a deliberate panic"))
    }

    fn resolve(&mut self, _env: Env, _output: ()) -> Result<()> {
        Ok(())
    }
}

/// Runs `f`, turning a panic into an `Error`: a panic unwinding out of `Task::compute`
/// would abort the whole Node process.
fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).map_err(panic_to_error).and_then(|r| r)
}

/// Locks the state. A panic with the lock held poisons it, but leaves the state consistent:
/// the core calls, which is where a bug would panic, run under [`State::run`], which rewinds
/// the core. So the poison is cleared and the responder stays usable.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|poisoned| {
        state.clear_poison();
        poisoned.into_inner()
    })
}

/// The bytes of a `Uint8Array` (a `Buffer` is one), in memory other threads may change during
/// the call: a worker's, over a `SharedArrayBuffer`; the libuv pool's, over any `Buffer` an
/// `fs.read` is still filling. So they are never borrowed as a `&[u8]` (the core must validate
/// and read the same bytes: over memory that changes that is undefined behaviour, and it made
/// the core build a `str` of invalid UTF-8), only copied out, each byte read once.
struct View<'a> {
    data: *const u8,
    len: usize,
    /// The array, which keeps the bytes allocated.
    _array: PhantomData<&'a Unknown<'a>>,
}

#[allow(unsafe_code)]
impl<'a> View<'a> {
    /// The bytes of `value`, or `None` if it is not a `Uint8Array`.
    fn of(value: &Unknown<'a>) -> Option<Self> {
        let (kind, len, data) = typed_array(value)?;
        (kind == sys::TypedarrayType::uint8_array).then_some(View { data: data.cast_const(), len, _array: PhantomData })
    }

    /// Copies the bytes into `buf` (replacing its contents).
    ///
    /// With relaxed atomic loads, as V8 copies shared memory (`Relaxed_Memcpy`). Into the buffer
    /// the responder reuses, that added ~1% to a release-build `handleBuffer` call on an ordinary
    /// 64-byte `Buffer` and 6–8% at 64 KiB and 1 MiB (a plain `memcpy`: ~1% less), against
    /// reading in place.
    fn copy_to(&self, buf: &mut Vec<u8>) -> Outcome<()> {
        let len = self.len;
        buf.clear();
        buf.try_reserve(len)
            .map_err(|_| Failure::generic(format!("out of memory copying a Uint8Array of {len} bytes")))?;
        if len > 0 {
            // SAFETY: `data` points to the array's `len` bytes, which stay allocated while the
            // caller holds the array (for the whole call: no JS runs meanwhile that could detach
            // it); `buf` has room for `len` bytes, which `copy_relaxed` all writes before `set_len`.
            unsafe {
                copy_relaxed(self.data, buf.as_mut_ptr(), len);
                buf.set_len(len);
            }
        }
        Ok(())
    }

    /// Writes `bytes` at the start of the array (`bytes.len() <= self.len`, checked), with
    /// relaxed atomic stores: other threads may read or write the memory meanwhile, as they may
    /// when it is read.
    fn store(&self, bytes: &[u8]) {
        let len = bytes.len().min(self.len);
        if len > 0 {
            // SAFETY: `data` points to the array's `len` (≥ `len` here) bytes, which stay
            // allocated while the caller holds the array (no JS runs meanwhile that could detach
            // it), and were given to JavaScript as writable memory; `bytes` is Rust memory, so
            // the two cannot overlap.
            unsafe { store_relaxed(bytes.as_ptr(), self.data.cast_mut(), len) };
        }
    }

    /// A copy of the last two bytes (all of them, if fewer): enough to tell the line ending.
    fn tail(&self) -> Tail {
        let mut tail = Tail { bytes: [0; 2], len: self.len.min(2) };
        if tail.len > 0 {
            // SAFETY: as in `copy_to`; the last `tail.len` of the `len` bytes, into room for 2.
            unsafe { copy_relaxed(self.data.add(self.len - tail.len), tail.bytes.as_mut_ptr(), tail.len) };
        }
        tail
    }
}

/// The last bytes of a [`View`].
struct Tail {
    bytes: [u8; 2],
    len: usize,
}

impl Tail {
    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The kind, length (in elements) and data of the typed array `value`; `None` if it is not one.
#[allow(unsafe_code)]
fn typed_array(value: &Unknown<'_>) -> Option<(sys::napi_typedarray_type, usize, *mut u8)> {
    let (env, value) = (value.value().env, value.raw());
    let mut is_typed_array = false;
    // SAFETY: `env` and `value` are live handles of the current call.
    let status = unsafe { sys::napi_is_typedarray(env, value, &mut is_typed_array) };
    if status != sys::Status::napi_ok || !is_typed_array {
        return None;
    }
    let (mut kind, mut len, mut data, mut arraybuffer, mut offset) =
        (0, 0, std::ptr::null_mut(), std::ptr::null_mut(), 0);
    // SAFETY: as above; `value` is a typed array, and Node-API fills every out-pointer.
    let status = unsafe {
        sys::napi_get_typedarray_info(env, value, &mut kind, &mut len, &mut data, &mut arraybuffer, &mut offset)
    };
    (status == sys::Status::napi_ok).then_some((kind, len, data.cast()))
}

/// Copies `len` bytes from `src` to `dst`, reading `src` with relaxed atomic loads: a word at a
/// time where `src` is aligned, so nearly as fast as `memcpy`.
///
/// # Safety
/// `src` must be valid for reads and `dst` for writes of `len` bytes, and they must not overlap.
/// Other threads may write `src` meanwhile.
#[allow(unsafe_code)]
unsafe fn copy_relaxed(src: *const u8, dst: *mut u8, len: usize) {
    const WORD: usize = std::mem::size_of::<usize>();
    let head = src.align_offset(WORD).min(len);
    let words = (len - head) / WORD;
    let byte = |i: usize| {
        // SAFETY: `i < len`; any address is aligned for a `u8`.
        unsafe { dst.add(i).write(AtomicU8::from_ptr(src.add(i).cast_mut()).load(Ordering::Relaxed)) }
    };
    (0..head).for_each(byte);
    for w in 0..words {
        let at = head + w * WORD;
        // SAFETY: `at + WORD <= len`, and `src + head` is aligned for a `usize`.
        unsafe {
            let word = AtomicUsize::from_ptr(src.add(at).cast::<usize>().cast_mut()).load(Ordering::Relaxed);
            dst.add(at).cast::<usize>().write_unaligned(word);
        }
    }
    (head + words * WORD..len).for_each(byte);
}

/// Copies `len` bytes from `src` to `dst`, writing `dst` with relaxed atomic stores: a word at
/// a time where `dst` is aligned (the mirror of [`copy_relaxed`]).
///
/// # Safety
/// `src` must be valid for reads and `dst` for writes of `len` bytes, and they must not overlap.
/// Other threads may read or write `dst` meanwhile.
#[allow(unsafe_code)]
unsafe fn store_relaxed(src: *const u8, dst: *mut u8, len: usize) {
    const WORD: usize = std::mem::size_of::<usize>();
    let head = dst.align_offset(WORD).min(len);
    let words = (len - head) / WORD;
    let byte = |i: usize| {
        // SAFETY: `i < len`; any address is aligned for a `u8`.
        unsafe { AtomicU8::from_ptr(dst.add(i)).store(src.add(i).read(), Ordering::Relaxed) }
    };
    (0..head).for_each(byte);
    for w in 0..words {
        let at = head + w * WORD;
        // SAFETY: `at + WORD <= len`, and `dst + head` is aligned for a `usize`.
        unsafe {
            let word = src.add(at).cast::<usize>().read_unaligned();
            AtomicUsize::from_ptr(dst.add(at).cast::<usize>()).store(word, Ordering::Relaxed);
        }
    }
    (head + words * WORD..len).for_each(byte);
}

/// Throws a `TypeError` (code `InvalidArg`) and returns the error that tells napi it is pending.
fn type_error(env: &Env, message: String) -> Error {
    match env.throw_type_error(&message, Some("InvalidArg")) {
        Ok(()) => Error::new(Status::PendingException, message),
        Err(e) => e,
    }
}

/// `typeof`, except that `null`, arrays, typed arrays, `DataView`s and `ArrayBuffer`s are named
/// as such.
fn kind_of(value: &Unknown<'_>) -> &'static str {
    match value.get_type() {
        Ok(ValueType::Undefined) => "undefined",
        Ok(ValueType::Null) => "null",
        Ok(ValueType::Boolean) => "boolean",
        Ok(ValueType::Number) => "number",
        Ok(ValueType::String) => "string",
        Ok(ValueType::Symbol) => "symbol",
        Ok(ValueType::Function) => "function",
        Ok(ValueType::BigInt) => "bigint",
        Ok(ValueType::Object) if value.is_array().unwrap_or(false) => "array",
        Ok(ValueType::Object) => binary_kind(value).unwrap_or("object"),
        _ => "unknown",
    }
}

/// The name of the class of `value` if it is binary data (a `Buffer` is a `Uint8Array`).
#[allow(unsafe_code)]
fn binary_kind(value: &Unknown<'_>) -> Option<&'static str> {
    use sys::TypedarrayType as T;
    if let Some((kind, _, _)) = typed_array(value) {
        return Some(match kind {
            T::int8_array => "Int8Array",
            T::uint8_array => "Uint8Array",
            T::uint8_clamped_array => "Uint8ClampedArray",
            T::int16_array => "Int16Array",
            T::uint16_array => "Uint16Array",
            T::int32_array => "Int32Array",
            T::uint32_array => "Uint32Array",
            T::float32_array => "Float32Array",
            T::float64_array => "Float64Array",
            T::bigint64_array => "BigInt64Array",
            T::biguint64_array => "BigUint64Array",
            _ => "TypedArray",
        });
    }
    let (env, value) = (value.value().env, value.raw());
    let is = |check: unsafe fn(sys::napi_env, sys::napi_value, *mut bool) -> sys::napi_status| {
        let mut result = false;
        // SAFETY: `env` and `value` are live handles of the current call; Node-API fills `result`.
        (unsafe { check(env, value, &mut result) } == sys::Status::napi_ok) && result
    };
    if is(sys::napi_is_dataview) {
        Some("DataView")
    } else if is(sys::napi_is_arraybuffer) {
        Some("ArrayBuffer")
    } else {
        None
    }
}

/// Reads the JS string `value` as UTF-8 into `buf` (replacing its contents); `false` if `value`
/// is not a string.
///
/// `String::from_unknown` asks V8 for the UTF-8 length (a full pass over the string), allocates,
/// then copies: at 64 KiB that was 10.7 µs against 2.8 µs this way, at 64 bytes ~190 ns
/// against ~40 ns. Here the length comes from the UTF-16 length (O(1)) and the copy goes
/// straight into a buffer the caller reuses. There is no safe napi-rs API that does this.
#[allow(unsafe_code)]
fn read_utf8(env: &Env, value: &Unknown<'_>, buf: &mut Vec<u8>) -> Result<bool> {
    let (env, value) = (env.raw(), value.raw());
    let mut units = 0;
    // SAFETY: `env` and `value` are live handles of the current call; with a null buffer
    // Node-API only stores the string's length in UTF-16 units into `units`.
    let status = unsafe { sys::napi_get_value_string_utf16(env, value, std::ptr::null_mut(), 0, &mut units) };
    if status != sys::Status::napi_ok {
        return Ok(false);
    }
    // UTF-8 needs at most 3 bytes per UTF-16 unit (4 for a surrogate pair, i.e. 2 units; a lone
    // surrogate becomes U+FFFD, 3 bytes), plus 1 for the NUL Node-API writes after the text.
    // V8's longest string (2^29 - 24 units) still fits the `int` capacity Node passes on.
    let size = units.saturating_mul(3).saturating_add(1);
    buf.clear();
    buf.try_reserve(size)
        .map_err(|_| Error::from_reason(format!("out of memory reading a string of {units} units")))?;
    let mut written = 0;
    // SAFETY: as above; `buf` has room for `buf.capacity() >= size` bytes, and Node-API writes
    // at most that many (text then NUL) and stores the text's length in `written`.
    let status =
        unsafe { sys::napi_get_value_string_utf8(env, value, buf.as_mut_ptr().cast(), buf.capacity(), &mut written) };
    if status != sys::Status::napi_ok {
        return Ok(false);
    }
    // SAFETY: Node-API initialised the first `written` bytes (`written < buf.capacity()`).
    unsafe { buf.set_len(written.min(buf.capacity())) };
    Ok(true)
}

fn read_string(env: &Env, value: Unknown<'_>, expected: &str) -> Result<String> {
    String::from_unknown(value).map_err(|_| type_error(env, format!("{expected}, got {}", kind_of(&value))))
}

/// A JS number that is an integer from 0 to `Number.MAX_SAFE_INTEGER`.
fn read_safe_integer(value: &Unknown<'_>) -> Option<u64> {
    if value.get_type().ok()? != ValueType::Number {
        return None;
    }
    let n = f64::from_unknown(*value).ok()?;
    // In range and integral, so the conversion is exact (-0 becomes 0, as in JavaScript).
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    ((n.fract() == 0.0) && (0.0..=ipc::MAX_SAFE_ID as f64).contains(&n)).then_some(n as u64)
}

/// `kind` plus, for a number, its value: `number -1`, `number 1.5`, `string`.
fn describe(value: &Unknown<'_>) -> String {
    match f64::from_unknown(*value) {
        Ok(n) if value.get_type().ok() == Some(ValueType::Number) => format!("number {}", js_number(n)),
        _ => kind_of(value).to_owned(),
    }
}

/// A number as JavaScript's `String(n)` writes the ones people pass by mistake.
fn js_number(n: f64) -> String {
    if n.is_nan() {
        "NaN".to_owned()
    } else if n.is_infinite() {
        if n > 0.0 { "Infinity" } else { "-Infinity" }.to_owned()
    } else {
        n.to_string()
    }
}

/// The plain object behind `value`, or a `TypeError` saying what `value` was instead.
fn read_object<'a>(env: &Env, value: Unknown<'a>, expected: &str) -> Result<Object<'a>> {
    match value.get_type()? {
        ValueType::Object if !value.is_array()? => Object::from_unknown(value),
        _ => Err(type_error(env, format!("{expected}, got {}", kind_of(&value)))),
    }
}

/// `object[name]`, or `None` if it is `undefined`.
fn field<'a>(object: &Object<'a>, name: &CStr) -> Result<Option<Unknown<'a>>> {
    let value: Unknown<'a> = object.get_c_named_property_unchecked(name)?;
    Ok((value.get_type()? != ValueType::Undefined).then_some(value))
}

fn read_message(env: &Env, value: Unknown<'_>) -> Result<ipc::Message> {
    let object = read_object(env, value, "handle: expected a message object")?;
    let string = |name: &str, field: Option<Unknown<'_>>| match field {
        None => Err(type_error(env, format!("handle: missing field `{name}`"))),
        Some(v) => String::from_unknown(v)
            .map_err(|_| type_error(env, format!("handle: field `{name}` must be a string, got {}", kind_of(&v)))),
    };
    let msg_type = string("msg_type", field(&object, c"msg_type")?)?;
    let data = string("data", field(&object, c"data")?)?;
    let id = match field(&object, c"id")? {
        None => None,
        Some(v) if v.get_type()? == ValueType::Null => None,
        Some(v) => Some(read_safe_integer(&v).ok_or_else(|| {
            type_error(
                env,
                format!("handle: field `id` must be an integer from 0 to {}, got {}", ipc::MAX_SAFE_ID, describe(&v)),
            )
        })?),
    };
    Ok(ipc::Message { msg_type, data, id })
}

fn read_options(env: &Env, value: Option<Unknown<'_>>) -> Result<ipc::ResponderOptions> {
    let mut options = ipc::ResponderOptions::default();
    let Some(value) = value else { return Ok(options) };
    let object = read_object(env, value, "Responder: expected an options object")?;
    let count = |name: &str, field: Option<Unknown<'_>>| -> Result<Option<u64>> {
        field
            .map(|v| {
                read_safe_integer(&v).ok_or_else(|| {
                    type_error(
                        env,
                        format!(
                            "Responder: option `{name}` must be an integer from 0 to {}, got {}",
                            ipc::MAX_SAFE_ID,
                            describe(&v)
                        ),
                    )
                })
            })
            .transpose()
    };
    if let Some(n) = count("exitAfter", field(&object, c"exitAfter")?)? {
        options.exit_after = n;
    }
    if let Some(n) = count("maxLineBytes", field(&object, c"maxLineBytes")?)? {
        options.max_line_bytes = usize::try_from(n).unwrap_or(usize::MAX);
    }
    if let Some(n) = count("maxFrameBytes", field(&object, c"maxFrameBytes")?)? {
        options.max_frame_bytes = usize::try_from(n).unwrap_or(usize::MAX);
    }
    if let Some(v) = field(&object, c"name")? {
        options.name = read_string(env, v, "Responder: option `name` must be a string")?;
    }
    if let Some(v) = field(&object, c"services")? {
        let names = if v.is_array()? { Vec::<String>::from_unknown(v).ok() } else { None };
        let Some(names) = names else {
            return Err(type_error(
                env,
                format!("Responder: option `services` must be an array of service names, got {}", kind_of(&v)),
            ));
        };
        options.services = ipc::Services::from_names(names.iter().map(String::as_str))
            .map_err(|e| type_error(env, format!("Responder: option `services`: {e}")))?;
    }
    Ok(options)
}
