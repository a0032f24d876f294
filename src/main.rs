//! `rust-ts-ipc`: the demo (Rust parent, Node child) and `serve` (Rust responder on stdio).
//! This file only parses arguments and wires the host; see `host.rs` and the library.

mod diag;
mod host;

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use host::{DemoConfig, HostError};
use rust_ts_ipc::spin::{AdaptiveSpin, SpinDisabled};
use rust_ts_ipc::{Encoding, Responder, ResponderOptions, ServeOptions, Services};

const USAGE: &str = "\
Usage:
  rust-ts-ipc [demo] [--encoding json|msgpack] [--max-frame-bytes N] [--timeout-ms N]
                   [--grace-ms N] [--spin-us N] [-- PROGRAM [ARGS...]]
      Spawn a child (default: node ts-app/dist/main.js, built on first use) and play the
      demo conversation: greeting, five data messages, goodbye. Stdout carries the
      conversation; progress and the child's stderr go to stderr. --encoding: json (NDJSON
      lines, the default) or msgpack (length-prefixed MessagePack frames; the default child
      is given --encoding msgpack, a PROGRAM of your own must be told itself);
      --max-frame-bytes bounds a frame read from the child (default 16777216). --timeout-ms bounds the
      wait for each reply and for the child's exit after the goodbye (default 10000).
      However the demo ends, the child (in its own process group) is stopped the same way:
      its stdin is closed, then after --grace-ms (default 2000) SIGTERM, then after another
      --grace-ms SIGKILL; it is always reaped. Ctrl-C, SIGTERM and SIGHUP run that sequence
      too (a second Ctrl-C skips the waits). --spin-us: see below (the child's stdout).
  rust-ts-ipc serve [--encoding json|msgpack] [--exit-after N] [--name NAME]
                    [--max-line-bytes N] [--max-frame-bytes N] [--services LIST]
                    [--spin-us N]
      Answer the protocol on this process's stdin/stdout (the Rust responder, for a Node
      parent). Exits 0 on stdin EOF, after the exit reply, or when stdout's reader is gone.
      --encoding: json (NDJSON lines, the default) or msgpack (frames: a 4-byte little-endian
      length, then one MessagePack map; data may be bytes). --max-line-bytes bounds a line
      (json), --max-frame-bytes a frame (msgpack). --services is a comma-separated list of
      the services answered: demo (greeting, data, exit), markdown (markdown -> html,
      CommonMark) and bytes (bytes -> the same bytes; msgpack only); markdown and bytes are
      not counted by --exit-after. Defaults: json, 5, TypeScript, 16777216, 16777216,
      demo,markdown under json and demo,markdown,bytes under msgpack.
  --spin-us N (demo and serve): after each message, keep asking the pipe for the next one
      for up to N microseconds (adaptive; at most 1000000) before sleeping: less latency
      when the other side answers within N, a CPU busy for up to N after each message.
      Never spins when this process may run on one CPU only (it says so on stderr).
      Default 0: off.

Exit codes: 0 ok, 1 protocol or I/O error, 2 usage, 3 child could not be started,
4 child exited or closed its stdout early, 5 child timed out, 128+N stopped by signal N
after stopping the child (129 SIGHUP, 130 SIGINT/Ctrl-C, 143 SIGTERM).";

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let result = run(args);
    let code = match &result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            diag::say(format_args!("rust-ts-ipc: {e}"));
            if let HostError::Usage(_) = e {
                diag::say(format_args!("\n{USAGE}"));
            }
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    };
    // Bounded: a stderr nobody reads costs a few seconds here at most, and no exit code; a
    // second signal cuts it short.
    diag::finish(host::in_a_hurry);
    // A signal is never swallowed, even one that came while the last lines were written.
    match host::signal_received() {
        Some(signal) if !matches!(&result, Err(HostError::Interrupted { .. })) => {
            diag::say(format_args!("rust-ts-ipc: interrupted by {} while finishing", host::signal_name(signal)));
            diag::finish(|| true);
            ExitCode::from(u8::try_from(128 + signal).unwrap_or(1))
        }
        _ => code,
    }
}

fn run(args: Vec<OsString>) -> Result<(), HostError> {
    let mut args = args.into_iter();
    let first = args.next();
    let Some(first) = first else { return demo(Vec::new()) };
    let Some(name) = first.to_str() else {
        return Err(HostError::Usage(format!(
            "the first argument {first:?} is not valid UTF-8 (expected a command or a flag)"
        )));
    };
    match name {
        "demo" => demo(args.collect()),
        "serve" => serve(args.collect()),
        "-h" | "--help" => print(USAGE),
        "-V" | "--version" => print(&format!("rust-ts-ipc {}", env!("CARGO_PKG_VERSION"))),
        s if s.starts_with('-') => demo(std::iter::once(first).chain(args).collect()),
        other => Err(HostError::Usage(format!("unknown command `{other}`"))),
    }
}

/// Prints `text` to stdout. A closed stdout (`rust-ts-ipc --help | true`) is not an error.
fn print(text: &str) -> Result<(), HostError> {
    let mut stdout = io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(HostError::Io(format!("writing stdout: {e}"))),
        _ => Ok(()),
    }
}

fn demo(args: Vec<OsString>) -> Result<(), HostError> {
    let mut timeout = Duration::from_secs(10);
    let mut grace = host::DEFAULT_GRACE;
    let mut encoding = Encoding::Json;
    let mut max_frame_bytes = rust_ts_ipc::DEFAULT_MAX_FRAME_BYTES;
    let mut spin = Duration::ZERO;
    let mut args = args.into_iter();
    let mut child: Vec<OsString> = Vec::new();
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--") => {
                child = args.by_ref().collect();
                break;
            }
            Some("--timeout-ms") => timeout = Duration::from_millis(number(&mut args, "--timeout-ms")?),
            Some("--grace-ms") => grace = Duration::from_millis(number(&mut args, "--grace-ms")?),
            Some("--encoding") => encoding = encoding_flag(&mut args)?,
            Some("--max-frame-bytes") => {
                max_frame_bytes = usize::try_from(number(&mut args, "--max-frame-bytes")?)
                    .map_err(|_| HostError::Usage("--max-frame-bytes is too large".to_owned()))?;
            }
            Some("--spin-us") => spin = spin_flag(&mut args)?,
            _ => return Err(HostError::Usage(format!("unexpected argument `{}` for demo", arg.to_string_lossy()))),
        }
    }
    let mut child = child.into_iter();
    let base = DemoConfig {
        program: OsString::new(),
        args: Vec::new(),
        timeout,
        grace,
        encoding,
        max_frame_bytes,
        refusal_hint: None,
        spin,
    };
    say_if_not_spinning("demo", spin);
    let config = match child.next() {
        Some(program) => DemoConfig { program, args: child.collect(), ..base },
        None => {
            let script = host::ensure_ts_app_built(Path::new(env!("CARGO_MANIFEST_DIR")))?;
            let mut args = vec![script.into_os_string()];
            let mut refusal_hint = None;
            if encoding == Encoding::Msgpack {
                args.extend(["--encoding".into(), "msgpack".into()]);
                refusal_hint = Some(
                    "does this ts-app/dist/main.js support --encoding msgpack? Rebuild it (`npm run build -w \
                     ts-app`), or run the demo with --encoding json"
                        .to_owned(),
                );
            }
            DemoConfig { program: "node".into(), args, refusal_hint, ..base }
        }
    };
    let stdout = std::io::stdout();
    host::run_demo(&config, &mut stdout.lock())
}

fn serve(args: Vec<OsString>) -> Result<(), HostError> {
    let mut options = ResponderOptions::default();
    let mut encoding = Encoding::Json;
    let mut services: Option<Services> = None;
    let mut spin = Duration::ZERO;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--encoding") => encoding = encoding_flag(&mut args)?,
            Some("--max-frame-bytes") => {
                options.max_frame_bytes = usize::try_from(number(&mut args, "--max-frame-bytes")?)
                    .map_err(|_| HostError::Usage("--max-frame-bytes is too large".to_owned()))?;
            }
            Some("--exit-after") => options.exit_after = number(&mut args, "--exit-after")?,
            Some("--spin-us") => spin = spin_flag(&mut args)?,
            Some("--max-line-bytes") => {
                options.max_line_bytes = usize::try_from(number(&mut args, "--max-line-bytes")?)
                    .map_err(|_| HostError::Usage("--max-line-bytes is too large".to_owned()))?;
            }
            Some("--services") => {
                let list = args.next().ok_or_else(|| HostError::Usage("--services needs a value".to_owned()))?;
                services =
                    Some(list.to_string_lossy().parse().map_err(|e| HostError::Usage(format!("--services: {e}")))?);
            }
            Some("--name") => {
                options.name = args
                    .next()
                    .and_then(|v| v.into_string().ok())
                    .ok_or_else(|| HostError::Usage("--name needs a UTF-8 value".to_owned()))?;
            }
            _ => return Err(HostError::Usage(format!("unexpected argument `{}` for serve", arg.to_string_lossy()))),
        }
    }
    // Under json the bytes service could only answer errors, so it is not a default there.
    options.services = services.unwrap_or(match encoding {
        Encoding::Json => Services::DEFAULT,
        Encoding::Msgpack => Services::ALL,
    });
    say_if_not_spinning("serve", spin);
    rust_ts_ipc::serve_stdio_with_options(Responder::new(options), &ServeOptions { encoding, spin })
        .map_err(|e| HostError::Io(e.to_string()))
}

/// The longest `--spin-us`: a second of spinning after each message is surely a mistake.
const MAX_SPIN_US: u64 = 1_000_000;

fn spin_flag(args: &mut impl Iterator<Item = OsString>) -> Result<Duration, HostError> {
    let us = number(args, "--spin-us")?;
    if us > MAX_SPIN_US {
        return Err(HostError::Usage(format!(
            "--spin-us {us} is too long: spinning is for replies that come within microseconds (at most {MAX_SPIN_US})"
        )));
    }
    Ok(Duration::from_micros(us))
}

/// Says on stderr when `--spin-us` was asked for and will not spin (one CPU): the option is
/// not silently ignored.
fn say_if_not_spinning(command: &str, spin: Duration) {
    if let Some(SpinDisabled::OneCpu) = AdaptiveSpin::for_this_thread(spin).disabled() {
        diag::say(format_args!(
            "rust-ts-ipc {command}: --spin-us {}: not spinning, as {}",
            spin.as_micros(),
            SpinDisabled::OneCpu
        ));
    }
}

fn encoding_flag(args: &mut impl Iterator<Item = OsString>) -> Result<Encoding, HostError> {
    let value = args.next().ok_or_else(|| HostError::Usage("--encoding needs a value".to_owned()))?;
    value.to_string_lossy().parse().map_err(|e| HostError::Usage(format!("--encoding: {e}")))
}

fn number(args: &mut impl Iterator<Item = OsString>, flag: &str) -> Result<u64, HostError> {
    let value = args.next().ok_or_else(|| HostError::Usage(format!("{flag} needs a value")))?;
    let text = value.to_string_lossy();
    text.parse().map_err(|_| HostError::Usage(format!("{flag} expects a non-negative integer, got `{text}`")))
}
