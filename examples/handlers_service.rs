//! A Rust child service in a few lines: each `msg_type` is a function, served on stdin/stdout
//! with `serve_stdio`. Try it:
//!
//! ```text
//! echo '{"msg_type":"upper","data":"hi","id":1}' | cargo run -q --example handlers_service
//! {"msg_type":"upper","data":"HI","id":1}
//! ```
//!
//! Handlers: `upper` (a string, upper-cased), `echo` (any data back: JSON, or under msgpack
//! raw bytes as bytes), `count` (how many requests this handler has seen), `fail` (always an
//! error reply), `panic` (a handler bug: an error reply, and the service goes on).
//!
//! `--encoding msgpack` serves MessagePack frames instead of NDJSON lines (the same handlers;
//! `echo` then returns a `bin` as a `bin`).

use std::process::ExitCode;

use rust_ts_ipc::{serve_stdio_with, Data, Encoding, Envelope, Handlers};

fn upper(request: Envelope) -> Result<Data, String> {
    match request.data.as_str() {
        Some(text) => Ok(Data::from(text.to_uppercase())),
        None => Err(format!("upper: expected a string, got {}", request.data)),
    }
}

/// The encoding chosen on the command line: none, or `--encoding json|msgpack`.
fn encoding() -> Result<Encoding, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => Ok(Encoding::Json),
        [flag, name] if flag == "--encoding" => name.parse().map_err(|e| format!("--encoding: {e}")),
        _ => Err(format!("usage: handlers_service [--encoding json|msgpack] (got {args:?})")),
    }
}

fn main() -> ExitCode {
    let encoding = match encoding() {
        Ok(encoding) => encoding,
        Err(e) => {
            eprintln!("handlers_service: {e}");
            return ExitCode::from(2);
        }
    };
    let mut seen = 0_u64;
    let service = Handlers::new()
        .on("upper", upper)
        .on("echo", |request| Ok::<_, String>(request.data))
        .on("count", move |_| {
            seen += 1;
            Data::to_json(&seen)
        })
        .on("fail", |request| Err(format!("fail: asked to fail with {}", request.data)))
        .on("panic", |_| -> Result<Data, String> { panic!("asked to panic") });
    match serve_stdio_with(service, encoding) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("handlers_service: {e}");
            ExitCode::FAILURE
        }
    }
}
