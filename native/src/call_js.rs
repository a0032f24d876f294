//! Rust calling JavaScript: the core's [`Initiator`](ipc::Initiator) (the demo conversation)
//! driving a responder written in JavaScript, which is the demo's direction, in-process.
//!
//! There are two ways to make the call, each exported as the demo (`playDemo`,
//! `playDemoOnThread`) and as a bare loop for the benchmark to time (`callJsSync`, `callJsThread`):
//! - **sync**: JavaScript calls into Rust, and Rust calls the JS function back on the JS thread,
//!   inside that call (`napi_call_function`). Each call runs in its own handle scope, so what it
//!   makes (the argument, the reply) is freed as it returns, not when the outer call does.
//! - **thread**: Rust threads call it through a `ThreadsafeFunction`, each blocking on a
//!   `Mutex` + `Condvar` until the JS thread has run the call and handed back its return value.
//!   The JS caller awaits a Promise that settles once every thread is done, and joined.
//!
//! The JS side is a function `(line) => replies` or an object with a `handleLine(line)` method
//! (called with the object as `this`). `line` is one NDJSON line without its line ending; the
//! result must be a string of zero or more NDJSON lines (a missing final newline is supplied).
//!
//! Failures are JS errors with a `code`, never an abort or an uncaught exception:
//! `ResponderThrew` (the function threw; its message is quoted and what it threw is the `cause`),
//! `BadReply` (it returned something other than a string, named), `DemoFailed` (the replies broke
//! the conversation: the same texts as the pipe demo's), `Closing` (Node's environment was torn
//! down while a thread waited), `GenericFailure` (a Rust panic, which is a bug). The demo's errors
//! also carry `printed`: the lines the demo had printed before it failed.
//!
//! Pitfalls this avoids: a threadsafe function is made with `CalleeHandled = false` and only ever
//! called through `call_with_return_value`, which hands a JS throw to Rust as an `Err`
//! (`call_async` would route it to `uncaughtException`, taking Node down). It is referenced, so it
//! keeps Node alive while its threads work, and released by the last thread as it finishes, so a
//! finished run never keeps Node alive. If the environment is torn down meanwhile (a worker's
//! `process.exit()`, `worker.terminate()`), calls still queued are dropped by Node unanswered, so
//! a cleanup hook wakes every waiting thread with a `Closing` error and joins it before the
//! environment goes.

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use napi::bindgen_prelude::{
    panic_to_error, Env, Float64Array, FromNapiValue, Function, JsObjectValue, Object, Result, Status, ToNapiValue,
    Unknown, ValueType,
};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{sys, Error, JsValue};
use napi_derive::napi;
use rust_ts_ipc as ipc;

use crate::{describe, kind_of, read_safe_integer, read_utf8, type_error};

/// The most threads `callJsThread` starts (one per call in flight).
const MAX_WINDOW: u64 = 1024;

/// Stack size of a calling thread: it only runs the initiator or a loop, never JS.
const THREAD_STACK_BYTES: usize = 256 << 10;

/// Why a call to the JS function gave no reply.
enum CallError {
    /// It threw; the error keeps what was thrown (for `cause`) and its message as `reason`.
    Threw(Error),
    /// It returned something other than a string: what, as `describe` names it.
    NotAString(String),
    /// Node-API refused to make the call.
    Refused(Status),
    /// Node's environment is being torn down: the call will never run.
    Closing,
    /// Another thread of the run failed first; its failure is the one reported.
    Stopped,
    /// A Rust panic (a bug), as napi-rs words it.
    Panic(String),
}

/// Why a call from JS has no result, as the JS `Error` it becomes.
struct Failure {
    code: &'static str,
    message: String,
    /// What the JS function threw, if that is why.
    cause: Option<Error>,
    /// For the demo: the lines printed before the failure.
    printed: Option<Vec<String>>,
}

impl Failure {
    fn new(code: &'static str, message: String) -> Self {
        Failure { code, message, cause: None, printed: None }
    }

    /// The failure of a call to the JS function, made by JS's call to `method`.
    fn call(method: &str, error: CallError) -> Self {
        match error {
            CallError::Threw(thrown) => {
                Failure {
                    message: if thrown.reason.is_empty() {
                        format!("{method}: the JavaScript function threw something without a message (not an Error with one)")
                    } else {
                        format!("{method}: the JavaScript function threw: {}", thrown.reason)
                    },
                    cause: Some(thrown),
                    ..Failure::new("ResponderThrew", String::new())
                }
            }
            CallError::NotAString(got) => Failure::new(
                "BadReply",
                format!("{method}: the JavaScript function returned {got}, expected a string of reply lines"),
            ),
            CallError::Refused(status) => {
                Failure::new("GenericFailure", format!("{method}: Node-API refused to call the function ({status})"))
            }
            CallError::Closing => Failure::new(
                "Closing",
                format!("{method}: Node is shutting down; the call to the JavaScript function was not answered"),
            ),
            CallError::Stopped => {
                Failure::new("GenericFailure", format!("{method}: stopped because another thread failed"))
            }
            // napi-rs's text, as a panic in a synchronous export gets it.
            CallError::Panic(reason) => Failure::new("GenericFailure", reason),
        }
    }

    fn panic(method: &str, payload: Box<dyn std::any::Any + Send>) -> Self {
        Failure::call(method, CallError::Panic(panic_to_error(payload).reason))
    }

    fn with_printed(mut self, printed: Vec<String>) -> Self {
        self.printed = Some(printed);
        self
    }

    /// The `Error` object: `message`, `code`, and `printed` and `cause` when there are.
    #[allow(unsafe_code)]
    fn into_js<'env>(self, env: &'env Env) -> Result<Object<'env>> {
        let message = env.create_string(&self.message)?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: `env` is the live env of the current call on the JS thread, `message` a string
        // of it; a null code sets none. Node-API fills `raw`.
        let status = unsafe { sys::napi_create_error(env.raw(), std::ptr::null_mut(), message.raw(), &mut raw) };
        if status != sys::Status::napi_ok {
            return Err(Error::new(Status::from(status), self.message));
        }
        let mut error = Object::from_raw(env.raw(), raw);
        error.set_named_property("code", self.code)?;
        if let Some(printed) = self.printed {
            error.set_named_property("printed", printed)?;
        }
        if let Some(thrown) = self.cause {
            // What was thrown, as it was thrown (napi-rs kept a reference to it).
            // SAFETY: on the JS thread of `env`.
            let cause = unsafe { napi::JsError::from(thrown).into_value(env.raw()) };
            if !cause.is_null() {
                // SAFETY: a live value of this env.
                let cause = unsafe { Unknown::from_napi_value(env.raw(), cause) }?;
                error.set_named_property("cause", cause)?;
            }
        }
        Ok(error)
    }

    /// Throws it; returns the error that tells napi an exception is pending.
    fn throw(self, env: &Env) -> Error {
        let message = self.message.clone();
        match self.into_js(env).and_then(|error| env.throw(error)) {
            Ok(()) => Error::new(Status::PendingException, message),
            Err(e) => e,
        }
    }

    /// The error a promise rejects with.
    fn rejection(self, env: &Env) -> Error {
        match self.into_js(env) {
            Ok(error) => Error::from_unknown_without_coercion(error.to_unknown()),
            Err(e) => e,
        }
    }
}

/// Locks `mutex`, whatever a panicking holder left: every value behind these stays consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The function to call and the `this` to call it with: `target` itself, or `target.handleLine`.
fn callee<'env>(env: &Env, method: &str, target: Unknown<'env>) -> Result<(Unknown<'env>, Option<Object<'env>>)> {
    let expected = || format!("{method}: expected a function or an object with a handleLine method");
    match target.get_type()? {
        ValueType::Function => Ok((target, None)),
        ValueType::Object => {
            let object = Object::from_unknown(target)?;
            let handle_line: Unknown<'env> = object.get_named_property_unchecked("handleLine")?;
            if handle_line.get_type()? != ValueType::Function {
                let got = format!("an object whose handleLine is {}", kind_of(&handle_line));
                return Err(type_error(env, format!("{}, got {got}", expected())));
            }
            Ok((handle_line, Some(object)))
        }
        _ => Err(type_error(env, format!("{}, got {}", expected(), kind_of(&target)))),
    }
}

/// Reads the JS function's return value into `reply`: it must be a string.
#[allow(unsafe_code)]
fn read_reply(env: &Env, value: sys::napi_value, reply: &mut Vec<u8>) -> std::result::Result<(), CallError> {
    // SAFETY: a live value of this env, of the current call.
    let value = unsafe { Unknown::from_napi_value(env.raw(), value) }.map_err(|e| CallError::Refused(e.status))?;
    if value.get_type().ok() != Some(ValueType::String) {
        return Err(CallError::NotAString(describe(&value)));
    }
    match read_utf8(env, &value, reply) {
        Ok(true) => Ok(()),
        Ok(false) => Err(CallError::NotAString(describe(&value))),
        Err(e) => Err(CallError::Refused(e.status)),
    }
}

/// Calls `function` with `this` and `line` on the JS thread, in a handle scope of its own, and
/// reads the string it returns into `reply`.
#[allow(unsafe_code)]
fn call_sync(
    env: &Env,
    this: sys::napi_value,
    function: sys::napi_value,
    line: &str,
    reply: &mut Vec<u8>,
) -> std::result::Result<(), CallError> {
    let called = env.run_in_scope(|| {
        let argument = env.create_string(line)?;
        let mut returned = std::ptr::null_mut();
        // SAFETY: `this` and `function` are live values of the enclosing call, `argument` of this
        // scope; Node-API fills `returned`.
        let status =
            unsafe { sys::napi_call_function(env.raw(), this, function, 1, [argument.raw()].as_ptr(), &mut returned) };
        Ok(match status {
            sys::Status::napi_ok => read_reply(env, returned, reply),
            sys::Status::napi_pending_exception => Err(threw(env, take_thrown(env))),
            other => Err(CallError::Refused(Status::from(other))),
        })
    });
    called.unwrap_or_else(|e| Err(CallError::Refused(e.status)))
}

/// A call that failed with a pending exception: a throw, or, if the environment can no longer
/// run JS (it is being torn down: Node still dispatches queued threadsafe calls then, and reports
/// them as `napi_pending_exception` with no exception), `Closing`.
#[allow(unsafe_code)]
fn threw(env: &Env, thrown: Error) -> CallError {
    let (mut object, mut key, mut has) = (std::ptr::null_mut(), std::ptr::null_mut(), false);
    // SAFETY: the live env of the current call, on its JS thread. An own-property test on a
    // fresh object with a fresh string key looks at nothing inherited, so it runs no JS (a
    // getter on `Object.prototype` cannot run, or throw), but Node-API refuses it as it
    // refuses a call when JS cannot run.
    let can_run_js = unsafe {
        sys::napi_create_object(env.raw(), &mut object) == sys::Status::napi_ok
            && sys::napi_create_string_utf8(env.raw(), c"x".as_ptr(), 1, &mut key) == sys::Status::napi_ok
            && sys::napi_has_own_property(env.raw(), object, key, &mut has) == sys::Status::napi_ok
    };
    if can_run_js {
        CallError::Threw(thrown)
    } else {
        CallError::Closing
    }
}

/// The pending exception, cleared, as an error keeping it (without running any JS to describe it).
#[allow(unsafe_code)]
fn take_thrown(env: &Env) -> Error {
    let mut thrown = std::ptr::null_mut();
    // SAFETY: the live env of the current call, on its JS thread; Node-API fills `thrown`.
    let status = unsafe { sys::napi_get_and_clear_last_exception(env.raw(), &mut thrown) };
    if status != sys::Status::napi_ok {
        return Error::new(Status::from(status), "an exception that could not be read".to_owned());
    }
    // SAFETY: a live value of this env.
    match unsafe { Unknown::from_napi_value(env.raw(), thrown) } {
        Ok(thrown) => Error::from_unknown_without_coercion(thrown),
        Err(e) => e,
    }
}

/// Plays the demo conversation, asking `call` to answer each line the initiator sends. Returns
/// the printed lines, ending with `Communication complete!` (the seed's output), or why it
/// stopped and what had been printed by then.
fn play(
    method: &str,
    mut call: impl FnMut(&str, &mut Vec<u8>) -> std::result::Result<(), CallError>,
) -> std::result::Result<Vec<String>, Failure> {
    let mut initiator = ipc::Initiator::default();
    // One decoder for the whole conversation, so that error texts number lines as the pipe does.
    let mut decoder = ipc::LineDecoder::new(initiator.max_line_bytes());
    let mut printed = Vec::new();
    let mut reply = Vec::new();
    let mut step = initiator.start();
    loop {
        printed.append(&mut step.print);
        if step.finished {
            printed.push(ipc::Initiator::COMPLETE.to_owned());
            return Ok(printed);
        }
        let mut next = ipc::InitiatorStep::default();
        // The initiator writes `Message::to_line`s: UTF-8, one message a line.
        for line in String::from_utf8_lossy(&step.send).lines() {
            if let Err(e) = call(line, &mut reply) {
                printed.append(&mut next.print);
                return Err(Failure::call(method, e).with_printed(printed));
            }
            if reply.last().is_some_and(|&b| b != b'\n') {
                reply.push(b'\n');
            }
            decoder.feed(&reply);
            while let Some(frame) = decoder.next_frame() {
                match initiator.on_frame(frame) {
                    Ok(mut s) => {
                        next.send.append(&mut s.send);
                        next.print.append(&mut s.print);
                        next.finished |= s.finished;
                    }
                    Err(e) => {
                        printed.append(&mut next.print);
                        return Err(Failure::new("DemoFailed", format!("{method}: {e}")).with_printed(printed));
                    }
                }
            }
        }
        if next.send.is_empty() && !next.finished {
            printed.append(&mut next.print);
            let message = format!("{method}: the JavaScript function answered nothing to {}", initiator.waiting_for());
            return Err(Failure::new("DemoFailed", message).with_printed(printed));
        }
        step = next;
    }
}

/// Plays the demo conversation (the core's `Initiator`) against `responder`, called back on this
/// thread inside this call, one handle scope per call. Returns the lines the demo prints: the
/// seed's output, ending with `Communication complete!`. Throws an `Error` (with `code` and
/// `printed`, the lines printed before it failed) if the responder throws, returns a non-string
/// or breaks the conversation.
#[napi(catch_unwind)]
pub fn play_demo(
    env: Env,
    #[napi(ts_arg_type = "((line: string) => string) | { handleLine(line: string): string }")] responder: Unknown<'_>,
) -> Result<Vec<String>> {
    let (function, this) = callee(&env, "playDemo", responder)?;
    let this = receiver(&env, this)?;
    play("playDemo", |line, reply| call_sync(&env, this, function.raw(), line, reply)).map_err(|f| f.throw(&env))
}

/// The `this` to call with: the responder object, or `undefined` for a plain function.
fn receiver(env: &Env, object: Option<Object<'_>>) -> Result<sys::napi_value> {
    match object {
        Some(object) => Ok(object.raw()),
        None => Ok(().into_unknown(env)?.raw()),
    }
}

/// Calls `responder` with `line` `count` times on this thread, inside this call, one handle scope
/// per call, and returns the total length in UTF-8 bytes of what it returned (so a caller can
/// check every reply arrived). Throws as `playDemo` does if a call fails. For the benchmark.
#[napi(catch_unwind)]
pub fn call_js_sync(
    env: Env,
    #[napi(ts_arg_type = "((line: string) => string) | { handleLine(line: string): string }")] responder: Unknown<'_>,
    line: String,
    count: f64,
) -> Result<f64> {
    sync_loop(&env, "callJsSync", responder, &line, count, None)
}

/// Test only: `callJsSync` that panics after `calls` calls, to prove the panic becomes an `Error`.
#[napi(js_name = "__callJsSyncPanicForTest", catch_unwind)]
pub fn call_js_sync_panic_for_test(
    env: Env,
    #[napi(ts_arg_type = "((line: string) => string) | { handleLine(line: string): string }")] responder: Unknown<'_>,
    calls: f64,
) -> Result<f64> {
    let panic_after = read_count(&env, "__callJsSyncPanicForTest", "calls", calls)?;
    // One call more than it makes, so that the loop reaches the panic.
    #[allow(clippy::cast_precision_loss)]
    let count = (panic_after + 1) as f64;
    sync_loop(&env, "__callJsSyncPanicForTest", responder, "{}", count, Some(panic_after))
}

fn sync_loop(
    env: &Env,
    method: &str,
    responder: Unknown<'_>,
    line: &str,
    count: f64,
    panic_after: Option<u64>,
) -> Result<f64> {
    let count = read_count(env, method, "count", count)?;
    let (function, this) = callee(env, method, responder)?;
    let this = receiver(env, this)?;
    let mut reply = Vec::new();
    let mut total = 0u64;
    for done in 0..count {
        if panic_after == Some(done) {
            panic!("{method}: a deliberate panic after {done} calls");
        }
        call_sync(env, this, function.raw(), line, &mut reply).map_err(|e| Failure::call(method, e).throw(env))?;
        total += reply.len() as u64;
    }
    #[allow(clippy::cast_precision_loss)]
    Ok(total as f64)
}

/// A count argument: an integer from 0 to `Number.MAX_SAFE_INTEGER`, or a `TypeError`.
fn read_count(env: &Env, method: &str, name: &str, value: f64) -> Result<u64> {
    let unknown = env.create_double(value)?.to_unknown();
    read_safe_integer(&unknown).ok_or_else(|| {
        type_error(
            env,
            format!("{method}: `{name}` must be an integer from 0 to {}, got {}", ipc::MAX_SAFE_ID, describe(&unknown)),
        )
    })
}

/// The threadsafe function a run calls: a line in, the JS return value (checked on the JS
/// thread) out. `CalleeHandled = false`: the line is the only argument.
type Tsfn = ThreadsafeFunction<String, Unknown<'static>, String, Status, false>;

/// A thread's mailbox for the return value of its call in flight.
#[derive(Default)]
struct Slot {
    reply: Mutex<Option<std::result::Result<Vec<u8>, CallError>>>,
    ready: Condvar,
}

/// What the threads of one run share with each other, with the JS thread and with the run's
/// cleanup hook.
struct Run {
    method: &'static str,
    /// Set by the cleanup hook: the environment is going, no call will be answered any more.
    closing: AtomicBool,
    /// Set when a thread fails, so that the others stop calling.
    failed: AtomicBool,
    /// One per thread.
    slots: Vec<Arc<Slot>>,
    /// The threads, until joined.
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Threads not finished yet; the last one settles the promise.
    running: AtomicUsize,
    /// The first failure, which the promise rejects with.
    failure: Mutex<Option<Failure>>,
}

impl Run {
    /// Wakes every waiting thread with `Closing` (JS thread, as the environment is torn down).
    fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        for slot in &self.slots {
            // Taken so that a thread between its check of `closing` and its wait cannot miss this.
            let _reply = lock(&slot.reply);
            slot.ready.notify_all();
        }
    }

    /// Joins the threads (each has finished, or is about to).
    fn join(&self) {
        let threads = std::mem::take(&mut *lock(&self.threads));
        for thread in threads {
            // A thread catches its own panics; an `Err` here would mean the catching failed.
            let _ended = thread.join();
        }
    }

    /// Records a failure unless one came first, and tells the other threads to stop.
    fn fail(&self, failure: Failure) {
        // A thread that found the environment closing means it is closing for all of them: the
        // others end with `Closing` too, not "stopped because another thread failed".
        if failure.code == "Closing" {
            self.closing.store(true, Ordering::SeqCst);
        }
        lock(&self.failure).get_or_insert(failure);
        self.failed.store(true, Ordering::SeqCst);
    }
}

/// One thread's way to call the JS function and wait for its return value.
struct Caller {
    run: Arc<Run>,
    tsfn: Arc<Tsfn>,
    slot: Arc<Slot>,
}

impl Caller {
    /// Calls the JS function with `line` and blocks until its reply is in `reply`.
    fn call(&self, line: &str, reply: &mut Vec<u8>) -> std::result::Result<(), CallError> {
        if self.run.closing.load(Ordering::SeqCst) {
            return Err(CallError::Closing);
        }
        if self.run.failed.load(Ordering::SeqCst) {
            return Err(CallError::Stopped);
        }
        let slot = Arc::clone(&self.slot);
        let status = self.tsfn.call_with_return_value(
            line.to_owned(),
            ThreadsafeFunctionCallMode::NonBlocking,
            move |returned: Result<Unknown<'static>>, env: Env| {
                // On the JS thread; a panic unwinding out of here would abort Node.
                let outcome = catch_unwind(AssertUnwindSafe(|| match returned {
                    Ok(value) => {
                        let mut reply = Vec::new();
                        read_reply(&env, value.raw(), &mut reply).map(|()| reply)
                    }
                    Err(thrown) => Err(threw(&env, thrown)),
                }))
                .unwrap_or_else(|panic| Err(CallError::Panic(panic_to_error(panic).reason)));
                *lock(&slot.reply) = Some(outcome);
                slot.ready.notify_one();
                Ok(())
            },
        );
        match status {
            Status::Ok => {}
            Status::Closing => return Err(CallError::Closing),
            other => return Err(CallError::Refused(other)),
        }
        let mut waiting = lock(&self.slot.reply);
        loop {
            if let Some(outcome) = waiting.take() {
                *reply = outcome?;
                return Ok(());
            }
            if self.run.closing.load(Ordering::SeqCst) {
                return Err(CallError::Closing);
            }
            waiting = self.slot.ready.wait(waiting).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// A registered env cleanup hook that closes and joins a run (see the module docs).
struct Hook(*const Run);

// SAFETY: only an address; it is dereferenced by Node-API's cleanup (JS thread) or by
// `Hook::remove` (JS thread), never both (removal succeeds only if the hook has not run).
#[allow(unsafe_code)]
unsafe impl Send for Hook {}

#[allow(unsafe_code)]
impl Hook {
    fn add(env: &Env, run: &Arc<Run>) -> Result<Hook> {
        let data = Arc::into_raw(Arc::clone(run));
        // SAFETY: the live env of the current call; `close_run` takes `data` back exactly once.
        let status = unsafe { sys::napi_add_env_cleanup_hook(env.raw(), Some(close_run), data.cast_mut().cast()) };
        if status != sys::Status::napi_ok {
            // SAFETY: not registered, so ours again.
            drop(unsafe { Arc::from_raw(data) });
            return Err(Error::new(Status::from(status), "could not register an env cleanup hook".to_owned()));
        }
        Ok(Hook(data))
    }

    /// Unregisters the hook (JS thread, the run finished) and drops its reference to the run.
    fn remove(self, env: &Env) {
        // SAFETY: the env the hook was added to, on its JS thread.
        let status = unsafe { sys::napi_remove_env_cleanup_hook(env.raw(), Some(close_run), self.0.cast_mut().cast()) };
        if status == sys::Status::napi_ok {
            // SAFETY: removed before it ran, so the reference `add` made is still ours.
            drop(unsafe { Arc::from_raw(self.0) });
        }
    }
}

/// The cleanup hook: the environment is being torn down, so no queued call will run; wakes the
/// run's threads with `Closing` and joins them.
#[allow(unsafe_code)]
unsafe extern "C" fn close_run(data: *mut c_void) {
    // SAFETY: the reference `Hook::add` made; Node calls a hook once, and only if not removed.
    let run = unsafe { Arc::from_raw(data.cast_const().cast::<Run>()) };
    // A panic unwinding into Node would abort it.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        run.close();
        run.join();
    }));
}

/// Starts `threads` threads, each running `work(index, caller)`, and returns a promise of
/// `finish` over their results, in index order, or of the first failure.
fn start_threads<T, D>(
    env: &Env,
    method: &'static str,
    responder: Unknown<'_>,
    threads: usize,
    work: impl Fn(usize, &Caller) -> std::result::Result<T, Failure> + Send + Sync + 'static,
    finish: impl FnOnce(Vec<T>) -> D + Send + 'static,
) -> Result<Object<'static>>
where
    T: Send + 'static,
    D: ToNapiValue + 'static,
{
    let (function, this) = callee(env, method, responder)?;
    let function = Function::<String, Unknown<'static>>::from_unknown(function)?;
    let function = match this {
        Some(object) => function.bind(object)?,
        None => function,
    };
    let tsfn: Arc<Tsfn> = Arc::new(
        function.build_threadsafe_function::<String>().callee_handled::<false>().build_callback(|ctx| Ok(ctx.value))?,
    );
    let run = Arc::new(Run {
        method,
        closing: AtomicBool::new(false),
        failed: AtomicBool::new(false),
        slots: (0..threads).map(|_| Arc::new(Slot::default())).collect(),
        threads: Mutex::new(Vec::with_capacity(threads)),
        running: AtomicUsize::new(threads),
        failure: Mutex::new(None),
    });
    // After the threadsafe function, so that at teardown (hooks run last-registered first) this
    // hook wakes and joins the threads before Node finalizes it.
    let hook = Hook::add(env, &run)?;
    type Resolver<D> = Box<dyn FnOnce(Env) -> Result<D>>;
    let (deferred, promise) = env.create_deferred::<D, Resolver<D>>()?;
    let results: Arc<Mutex<Vec<Option<T>>>> = Arc::new(Mutex::new((0..threads).map(|_| None).collect()));
    let work = Arc::new(work);
    // Taken by the last thread to finish.
    let settle = Arc::new(Mutex::new(Some((deferred, hook, finish))));
    let settle_here = Arc::clone(&settle);
    for index in 0..threads {
        let caller = Caller { run: Arc::clone(&run), tsfn: Arc::clone(&tsfn), slot: Arc::clone(&run.slots[index]) };
        let (work, results, settle) = (Arc::clone(&work), Arc::clone(&results), Arc::clone(&settle));
        let body = move || {
            // Dropped last, so counted out last, however the body ends.
            let _counted = Counted;
            let outcome = catch_unwind(AssertUnwindSafe(|| work(index, &caller)))
                .unwrap_or_else(|panic| Err(Failure::panic(method, panic)));
            if matches!(&outcome, Err(failure) if failure.code == "Closing") {
                THREADS_CLOSED.fetch_add(1, Ordering::SeqCst);
            }
            match outcome {
                Ok(value) => lock(&results)[index] = Some(value),
                Err(failure) => caller.run.fail(failure),
            }
            let run = Arc::clone(&caller.run);
            // Releases this thread's hold on the threadsafe function: after the last, Node may exit.
            drop(caller);
            if run.running.fetch_sub(1, Ordering::SeqCst) != 1 {
                return;
            }
            let Some((deferred, hook, finish)) = lock(&settle).take() else { return };
            let failure = lock(&run.failure).take();
            let done: Vec<T> = std::mem::take(&mut *lock(&results)).into_iter().flatten().collect();
            let joined = Arc::clone(&run);
            let resolver: Resolver<D> = Box::new(move |env: Env| {
                hook.remove(&env);
                joined.join();
                match failure {
                    Some(failure) => Err(failure.rejection(&env)),
                    None => Ok(finish(done)),
                }
            });
            // If the environment is gone, napi-rs drops the resolver instead.
            deferred.resolve(resolver);
        };
        THREADS_RUNNING.fetch_add(1, Ordering::SeqCst);
        let spawned = std::thread::Builder::new()
            .name(format!("rust-ts-ipc {method} #{index}"))
            .stack_size(THREAD_STACK_BYTES)
            .spawn(body);
        match spawned {
            Ok(thread) => lock(&run.threads).push(thread),
            Err(e) => {
                THREADS_RUNNING.fetch_sub(1, Ordering::SeqCst);
                // The threads started so far wait for calls that this thread must not run now.
                run.close();
                run.join();
                // Settle the promise (an unsettled one would hold its threadsafe function, and
                // so Node, for ever) and unregister the hook; the threads, once joined, cannot.
                if let Some((deferred, hook, _)) = lock(&settle_here).take() {
                    hook.remove(env);
                    deferred.reject(Error::from_reason(format!("{method}: could not start thread {index}: {e}")));
                }
                return Ok(promise_static(promise));
            }
        }
    }
    Ok(promise_static(promise))
}

/// Calling threads started and not finished yet, in this process (all environments).
static THREADS_RUNNING: AtomicUsize = AtomicUsize::new(0);
/// Calling threads that ended because their environment was torn down, in this process.
static THREADS_CLOSED: AtomicUsize = AtomicUsize::new(0);

/// Counts a calling thread out of [`THREADS_RUNNING`] when dropped.
struct Counted;

impl Drop for Counted {
    fn drop(&mut self) {
        THREADS_RUNNING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Test only: the calling threads of this process (all environments, all runs).
#[napi(object, object_from_js = false)]
pub struct CallingThreads {
    /// Started and not finished yet.
    pub running: u32,
    /// Ended with a `Closing` error because their environment was torn down while they waited.
    pub closed: u32,
}

/// Test only: how many calling threads are running, and how many were woken by an environment's
/// teardown: after a worker that had one waiting has exited, `running` is back where it was.
#[napi(js_name = "__callingThreadsForTest")]
pub fn calling_threads_for_test() -> CallingThreads {
    let count = |n: &AtomicUsize| u32::try_from(n.load(Ordering::SeqCst)).unwrap_or(u32::MAX);
    CallingThreads { running: count(&THREADS_RUNNING), closed: count(&THREADS_CLOSED) }
}

/// The promise object with the lifetime napi-rs's return conversion wants (it is returned to JS
/// at once, within the call that made it).
pub(crate) fn promise_static(promise: Object<'_>) -> Object<'static> {
    Object::from_raw(promise.value().env, promise.raw())
}

/// `playDemo` with the responder called from a Rust thread through a `ThreadsafeFunction`: the
/// thread blocks for each return value while this thread runs the responder. Resolves to the
/// printed lines, or rejects as `playDemo` throws; also (code `Closing`) if Node's environment is
/// torn down meanwhile, the thread being joined first. The pending run keeps Node alive; a
/// finished one does not.
#[napi(catch_unwind, ts_return_type = "Promise<string[]>")]
pub fn play_demo_on_thread(
    env: Env,
    #[napi(ts_arg_type = "((line: string) => string) | { handleLine(line: string): string }")] responder: Unknown<'_>,
) -> Result<Object<'static>> {
    start_threads(
        &env,
        "playDemoOnThread",
        responder,
        1,
        |_, caller| play(caller.run.method, |line, reply| caller.call(line, reply)),
        |mut printed: Vec<Vec<String>>| printed.pop().unwrap_or_default(),
    )
}

/// Calls `responder` with `line` `count` times from `window` Rust threads (so up to `window`
/// calls in flight), each blocking for each return value; resolves to the total length in UTF-8
/// bytes of what it returned. `window` is 1 to 1024. Rejects as `playDemoOnThread` does. For the
/// benchmark.
#[napi(catch_unwind, ts_return_type = "Promise<number>")]
pub fn call_js_thread(
    env: Env,
    #[napi(ts_arg_type = "((line: string) => string) | { handleLine(line: string): string }")] responder: Unknown<'_>,
    line: String,
    count: f64,
    window: f64,
) -> Result<Object<'static>> {
    thread_loop(&env, "callJsThread", responder, line, count, window, None)
}

/// Test only: `callJsThread` (window 1) whose thread panics after `calls` calls, to prove the
/// panic rejects the promise.
#[napi(js_name = "__callJsThreadPanicForTest", catch_unwind, ts_return_type = "Promise<number>")]
pub fn call_js_thread_panic_for_test(
    env: Env,
    #[napi(ts_arg_type = "((line: string) => string) | { handleLine(line: string): string }")] responder: Unknown<'_>,
    calls: f64,
) -> Result<Object<'static>> {
    let method = "__callJsThreadPanicForTest";
    let panic_after = read_count(&env, method, "calls", calls)?;
    // One call more than it makes, so that the loop reaches the panic.
    #[allow(clippy::cast_precision_loss)]
    let count = (panic_after + 1) as f64;
    thread_loop(&env, method, responder, "{}".to_owned(), count, 1.0, Some(panic_after))
}

/// Reads `count` and `window` (1 to [`MAX_WINDOW`]) and splits the calls among `window` threads:
/// the number of threads, and how many calls thread `index` makes.
fn split_calls(env: &Env, method: &str, count: f64, window: f64) -> Result<(usize, impl Fn(u64) -> u64 + Send + Sync)> {
    let count = read_count(env, method, "count", count)?;
    let threads = read_count(env, method, "window", window)?;
    if !(1..=MAX_WINDOW).contains(&threads) {
        return Err(type_error(env, format!("{method}: `window` must be from 1 to {MAX_WINDOW}, got {threads}")));
    }
    // Both at most 2^53, and `threads` at most 1024.
    #[allow(clippy::cast_possible_truncation)]
    Ok((threads as usize, move |index: u64| count / threads + u64::from(index < count % threads)))
}

fn thread_loop(
    env: &Env,
    method: &'static str,
    responder: Unknown<'_>,
    line: String,
    count: f64,
    window: f64,
    panic_after: Option<u64>,
) -> Result<Object<'static>> {
    let (threads, shares) = split_calls(env, method, count, window)?;
    start_threads(
        env,
        method,
        responder,
        threads,
        move |index, caller| {
            let mut reply = Vec::new();
            let mut total = 0u64;
            for done in 0..shares(index as u64) {
                if panic_after == Some(done) {
                    panic!("{method}: a deliberate panic after {done} calls");
                }
                caller.call(&line, &mut reply).map_err(|e| Failure::call(method, e))?;
                total += reply.len() as u64;
            }
            Ok(total)
        },
        #[allow(clippy::cast_precision_loss)]
        |totals: Vec<u64>| totals.iter().sum::<u64>() as f64,
    )
}

/// The floor of `callJsSync`: the same loop, `count` times, calling a Rust function that does
/// the JS responder's work (the core's `Responder::handle_line`) instead of crossing into
/// JavaScript. Returns the total length in UTF-8 bytes of the replies. For the benchmark.
#[napi(catch_unwind)]
pub fn call_rust_sync(env: Env, line: String, count: f64) -> Result<f64> {
    let count = read_count(&env, "callRustSync", "count", count)?;
    let mut responder = ipc::Responder::new(ipc::ResponderOptions { exit_after: 0, ..Default::default() });
    let mut reply = Vec::new();
    let mut total = 0u64;
    for _ in 0..count {
        reply.clear();
        responder.handle_line(line.as_bytes(), &mut reply);
        total += reply.len() as u64;
    }
    #[allow(clippy::cast_precision_loss)]
    Ok(total as f64)
}

/// What `timeJsThread` measured.
#[napi(object, object_from_js = false)]
pub struct ThreadTimings {
    /// Each call's time in nanoseconds, as the calling Rust thread saw it (from handing the line
    /// to the threadsafe function to having the reply), thread by thread.
    pub latencies: Float64Array,
    /// The total length in UTF-8 bytes of the replies, so a caller can check them.
    pub bytes: f64,
}

/// `callJsThread` that also times every call on the calling thread: resolves to each call's
/// latency and the replies' total length. For the benchmark.
#[napi(catch_unwind, ts_return_type = "Promise<ThreadTimings>")]
pub fn time_js_thread(
    env: Env,
    #[napi(ts_arg_type = "((line: string) => string) | { handleLine(line: string): string }")] responder: Unknown<'_>,
    line: String,
    count: f64,
    window: f64,
) -> Result<Object<'static>> {
    let method = "timeJsThread";
    let (threads, shares) = split_calls(&env, method, count, window)?;
    start_threads(
        &env,
        method,
        responder,
        threads,
        move |index, caller| {
            let calls = shares(index as u64);
            let mut reply = Vec::new();
            let mut total = 0u64;
            #[allow(clippy::cast_possible_truncation)]
            let mut latencies = Vec::with_capacity(calls as usize);
            for _ in 0..calls {
                let started = Instant::now();
                caller.call(&line, &mut reply).map_err(|e| Failure::call(method, e))?;
                #[allow(clippy::cast_precision_loss)]
                latencies.push(started.elapsed().as_nanos() as f64);
                total += reply.len() as u64;
            }
            Ok((latencies, total))
        },
        |per_thread: Vec<(Vec<f64>, u64)>| {
            let bytes = per_thread.iter().map(|(_, total)| total).sum::<u64>();
            let latencies: Vec<f64> = per_thread.into_iter().flat_map(|(latencies, _)| latencies).collect();
            #[allow(clippy::cast_precision_loss)]
            ThreadTimings { latencies: Float64Array::new(latencies), bytes: bytes as f64 }
        },
    )
}
