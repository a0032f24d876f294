//! The napi-rs addon: the rust-ts-ipc protocol core, loaded in-process by Node.
//!
//! This crate only converts types and maps errors; every protocol decision is made by
//! [`rust_ts_ipc::Responder`]. Start at [`Responder`]: it wraps one core responder and
//! answers lines (`handleLine`, `handleBuffer`, `handleLineAsync`) and message objects
//! (`handle`) with exactly the bytes the pipe child would write.
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
    panic_to_error, AsyncTask, Env, FromNapiValue, JavaScriptClassExt, JsObjectValue, Object, Result, Status, This,
    Uint8ArraySlice, Unknown, ValueType,
};
use napi::{Error, JsString, JsValue, Task};
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
            next_ticket: 0,
            queued: VecDeque::new(),
            answered: HashMap::new(),
        };
        Ok(Responder { state: Arc::new(Mutex::new(state)) })
    }

    /// Answers one message object; after the `exitAfter`th `data` message that is `[ack, exit]`.
    #[napi(catch_unwind)]
    pub fn handle(&self, env: Env, #[napi(ts_arg_type = "Message")] msg: Unknown<'_>) -> Result<Vec<JsMessage>> {
        let msg = read_message(&env, msg)?;
        let mut state = lock(&self.state)?;
        state.catch_up();
        Ok(state.core.handle_message(&msg).into_iter().map(JsMessage::from).collect())
    }

    /// Answers one NDJSON line (its line ending, LF or CRLF, is optional) with the exact text
    /// the pipe child would write: zero, one or two lines, each ending in LF.
    #[napi(catch_unwind)]
    pub fn handle_line<'env>(
        &self,
        env: &'env Env,
        #[napi(ts_arg_type = "string")] line: Unknown<'_>,
    ) -> Result<JsString<'env>> {
        let line = read_string(env, line, "handleLine: expected a string")?;
        let mut state = lock(&self.state)?;
        to_js_string(env, state.answer(line.as_bytes()))
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
        let bytes = Uint8ArraySlice::from_unknown(bytes)
            .map_err(|_| type_error(env, format!("handleBuffer: expected a Uint8Array, got {}", kind_of(&bytes))))?;
        let mut state = lock(&self.state)?;
        to_js_string(env, state.answer(&bytes))
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
