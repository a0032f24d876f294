//! A Rust child service in a few lines: each `msg_type` is a function, served on stdin/stdout
//! with `serve_stdio`. Try it:
//!
//! ```text
//! echo '{"msg_type":"upper","data":"hi","id":1}' | cargo run -q --example handlers_service
//! {"msg_type":"upper","data":"HI","id":1}
//! ```
//!
//! Handlers: `upper` (a string, upper-cased), `echo` (any JSON back), `count` (how many
//! requests this handler has seen), `fail` (always an error reply), `panic` (a handler bug: an
//! error reply, and the service goes on).

use std::process::ExitCode;

use rust_ts_ipc::{serve_stdio, Data, Envelope, Handlers};

fn upper(request: Envelope) -> Result<Data, String> {
    match request.data.as_str() {
        Some(text) => Ok(Data::from(text.to_uppercase())),
        None => Err(format!("upper: expected a string, got {}", request.data)),
    }
}

fn main() -> ExitCode {
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
    match serve_stdio(service) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("handlers_service: {e}");
            ExitCode::FAILURE
        }
    }
}
