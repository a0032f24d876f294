//! The napi-rs addon: the rust-ts-ipc protocol core, loaded in-process by Node.
//!
//! This crate only converts types and maps errors; every protocol decision is made by
//! [`rust_ts_ipc::Responder`]. Start at [`Responder`]: it wraps one core responder and
//! answers lines (`handleLine`, `handleBuffer`, `handleLineAsync`) and message objects
//! (`handle`) with exactly the bytes the pipe child would write.
//!
//! The three synchronous calls (`handleLine`, `handleBuffer`, `handle`) are the hot path, so
//! [`install_fast_methods`] puts them on `Responder.prototype` as plain functions that skip
//! napi-rs's per-call borrow tracking (see there). The `#[napi]` methods of the same names
//! declare them for `index.d.ts` and run the same bodies.
//!
//! Errors a JS caller sees:
//! - a wrong argument is a `TypeError` (code `InvalidArg`) naming the method and the field;
//! - a line the protocol rejects is not an exception but an `error` reply, as on the pipe;
//! - a Rust panic (a bug) is an `Error` or a rejected Promise, never an abort of Node.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::ffi::CStr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard};

use napi::bindgen_prelude::{
    panic_to_error, AsyncTask, ClassInstance, Env, FromNapiValue, FunctionCallContext, JavaScriptClassExt,
    JsObjectValue, Object, ObjectRef, Result, Status, This, ToNapiValue, Uint8ArraySlice, Unknown, ValueType,
};
use napi::{sys, Error, JsString, JsValue, Task};
use napi_derive::napi;
use rust_ts_ipc as ipc;

/// A protocol message as JavaScript sees it, with the wire's field names.
#[napi(object, object_from_js = false, js_name = "Message")]
pub struct JsMessage {
    /// `greeting`, `data`, `exit` (to the responder); `response`, `ack`, `exit`, `error` (from it).
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
}

/// One conversation, answered in the order the calls were made (sync and async alike).
#[napi]
pub struct Responder {
    state: Arc<Mutex<State>>,
}

/// What the mutex guards: the core responder, plus the lines `handleLineAsync` has accepted
/// but no one has answered yet. Every call first answers those queued lines, so replies
/// follow call order whichever thread gets to the lock first.
struct State {
    core: ipc::Responder,
    /// Reused for every reply, so a call allocates nothing on the Rust side for its output.
    out: Vec<u8>,
    /// Reused for every `handleLine` argument (see [`read_utf8`]).
    line: Vec<u8>,
    next_ticket: u64,
    queued: VecDeque<(u64, String)>,
    answered: HashMap<u64, String>,
}

impl State {
    fn catch_up(&mut self) {
        while let Some((ticket, line)) = self.queued.pop_front() {
            self.out.clear();
            self.core.handle_line(line.as_bytes(), &mut self.out);
            self.answered.insert(ticket, reply_text(&self.out).into_owned());
        }
    }

    /// Answers `line` after every queued one; the reply is left in `self.out`.
    fn answer(&mut self, line: &[u8]) -> &[u8] {
        self.catch_up();
        self.out.clear();
        self.core.handle_line(line, &mut self.out);
        &self.out
    }
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
            next_ticket: 0,
            queued: VecDeque::new(),
            answered: HashMap::new(),
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

    /// `handleLine` on bytes: the argument is read in place (no copy) and may hold any bytes,
    /// including invalid UTF-8, which gets the same `error` reply as on the pipe. The reply is
    /// a string (always valid UTF-8): creating one costs Node about half what a `Buffer` does.
    #[napi(catch_unwind)]
    pub fn handle_buffer<'env>(
        &self,
        env: &'env Env,
        #[napi(ts_arg_type = "Uint8Array")] bytes: Unknown<'_>,
    ) -> Result<JsString<'env>> {
        self.answer_bytes(env, bytes)
    }

    /// `handleLine` off the JS thread, on the libuv pool. Calls on one responder are answered
    /// in call order, also when sync and async calls are mixed.
    #[napi(catch_unwind, ts_return_type = "Promise<string>")]
    pub fn handle_line_async(
        &self,
        env: Env,
        #[napi(ts_arg_type = "string")] line: Unknown<'_>,
    ) -> Result<AsyncTask<QueuedLine>> {
        let line = read_string(&env, line, "handleLineAsync: expected a string")?;
        let mut state = lock(&self.state)?;
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.queued.push_back((ticket, line));
        Ok(AsyncTask::new(QueuedLine { state: Arc::clone(&self.state), ticket }))
    }

    /// True once the conversation has ended (`exit` sent); later lines get an `error` reply.
    #[napi(getter, catch_unwind)]
    pub fn done(&self) -> Result<bool> {
        let mut state = lock(&self.state)?;
        state.catch_up();
        Ok(state.core.is_done())
    }
}

/// The bodies of the synchronous calls, shared by the `#[napi]` methods and the fast path.
impl Responder {
    fn answer_message(&self, env: &Env, msg: Unknown<'_>) -> Result<Vec<JsMessage>> {
        let msg = read_message(env, msg)?;
        let mut state = lock(&self.state)?;
        state.catch_up();
        Ok(state.core.handle_message(&msg).into_iter().map(JsMessage::from).collect())
    }

    fn answer_line<'env>(&self, env: &'env Env, line: Unknown<'_>) -> Result<JsString<'env>> {
        let mut state = lock(&self.state)?;
        // Taken out for the call so that `answer` can borrow the state mutably beside it.
        let mut text = std::mem::take(&mut state.line);
        if !read_utf8(env, &line, &mut text)? {
            return Err(type_error(env, format!("handleLine: expected a string, got {}", kind_of(&line))));
        }
        let reply = to_js_string(env, state.answer(&text));
        // A huge line's buffer (3 bytes per UTF-16 unit) is not worth keeping around.
        if text.capacity() <= KEEP_LINE_BUFFER_BYTES {
            state.line = text;
        }
        reply
    }

    fn answer_bytes<'env>(&self, env: &'env Env, bytes: Unknown<'_>) -> Result<JsString<'env>> {
        let bytes = Uint8ArraySlice::from_unknown(bytes)
            .map_err(|_| type_error(env, format!("handleBuffer: expected a Uint8Array, got {}", kind_of(&bytes))))?;
        let mut state = lock(&self.state)?;
        to_js_string(env, state.answer(&bytes))
    }
}

/// Largest `handleLine` buffer a responder keeps between calls (enough for lines of 2 MiB).
const KEEP_LINE_BUFFER_BYTES: usize = 8 << 20;

/// Replaces `handleLine`, `handleBuffer` and `handle` on `Responder.prototype` with plain
/// functions that run the same bodies (runs once, when the addon loads).
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
/// `Responder` and crash Node.
#[napi(module_exports)]
pub fn install_fast_methods(exports: Object<'_>, env: Env) -> Result<()> {
    // The class is a function; read as an object only to reach `prototype`.
    let class: Object<'_> = exports.get_named_property_unchecked("Responder")?;
    let mut prototype: Object<'_> = class.get_named_property_unchecked("prototype")?;
    install(&env, &mut prototype, "handleLine", |r, env, line| r.answer_line(env, line).map(|s| s.to_unknown()))?;
    install(&env, &mut prototype, "handleBuffer", |r, env, bytes| r.answer_bytes(env, bytes).map(|s| s.to_unknown()))?;
    install(&env, &mut prototype, "handle", |r, env, msg| r.answer_message(env, msg)?.into_unknown(env))
}

/// A synchronous `Responder` call as the fast path runs it: receiver, env, first argument.
type Method = for<'env> fn(&Responder, &'env Env, Unknown<'env>) -> Result<Unknown<'env>>;

/// Sets `prototype[name]` to a function that calls `method` (panics become an `Error`: the
/// closure trampoline catches them).
fn install(env: &Env, prototype: &mut Object<'_>, name: &'static str, method: Method) -> Result<()> {
    // Held for as long as the function lives, i.e. as long as the class.
    let ours: ObjectRef<false> = prototype.create_ref()?;
    let function = env.create_function_from_closure::<(), _, _>(name, move |ctx: FunctionCallContext<'_>| {
        let env: &Env = ctx.env;
        let not_a_responder = || type_error(env, format!("{name}: `this` is not a Responder"));
        let receiver: Unknown<'_> = ctx.this()?;
        if !is_ours(env, &receiver, &ours)? {
            return Err(not_a_responder());
        }
        let this: ClassInstance<'_, Responder> = ctx.this().map_err(|_| not_a_responder())?;
        let arg = if ctx.length() == 0 { ().into_unknown(env)? } else { ctx.get::<Unknown<'_>>(0)? };
        // The raw handle outlives the closure's borrow of `ctx`; it is valid until the call returns.
        method(&this, env, arg).map(|reply| reply.raw())
    })?;
    prototype.set_named_property(name, function)
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

/// One `handleLineAsync` call: its line waits in the responder's queue under `ticket`.
pub struct QueuedLine {
    state: Arc<Mutex<State>>,
    ticket: u64,
}

impl Task for QueuedLine {
    type Output = String;
    type JsValue = String;

    fn compute(&mut self) -> Result<String> {
        guarded(|| {
            let mut state = lock(&self.state)?;
            state.catch_up();
            state
                .answered
                .remove(&self.ticket)
                .ok_or_else(|| Error::from_reason(format!("handleLineAsync: reply {} went missing", self.ticket)))
        })
    }

    fn resolve(&mut self, _env: Env, output: String) -> Result<String> {
        Ok(output)
    }
}

/// Does nothing: the cost of a napi call, the floor the benchmarks print beside the results.
#[napi]
pub fn noop() {}

/// Test only: panics, to prove a panic in a synchronous export surfaces as a JS `Error`.
#[napi(js_name = "__panicForTest", catch_unwind)]
pub fn panic_for_test() {
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

fn lock(state: &Mutex<State>) -> Result<MutexGuard<'_, State>> {
    // Poisoned only if the core panicked mid-call (a bug); its state can't be trusted since.
    state.lock().map_err(|_| Error::from_reason("Responder: unusable after an internal panic; create a new one"))
}

/// Throws a `TypeError` (code `InvalidArg`) and returns the error that tells napi it is pending.
fn type_error(env: &Env, message: String) -> Error {
    match env.throw_type_error(&message, Some("InvalidArg")) {
        Ok(()) => Error::new(Status::PendingException, message),
        Err(e) => e,
    }
}

/// `typeof`, except that `null` and arrays are named as such.
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
        Ok(ValueType::Object) => "object",
        _ => "unknown",
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
    if let Some(v) = field(&object, c"name")? {
        options.name = read_string(env, v, "Responder: option `name` must be a string")?;
    }
    Ok(options)
}
