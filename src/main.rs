//! `rust-ts-ipc`: the demo (Rust parent, Node child) and `serve` (Rust responder on stdio).
//! This file only parses arguments and wires the host; see `host.rs` and the library.

mod diag;
mod host;

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use host::{DemoConfig, HostError, Runtime};
use rust_ts_ipc::process::sandbox::{permission_flag, NodePermission, Sandbox};
use rust_ts_ipc::spin::{AdaptiveSpin, SpinDisabled};
use rust_ts_ipc::{Encoding, Responder, ResponderOptions, ServeOptions, Services};

const USAGE: &str = "\
Usage:
  rust-ts-ipc [demo] [--encoding json|msgpack] [--max-frame-bytes N] [--max-line-bytes N]
                   [--timeout-ms N] [--grace-ms N] [--spin-us N] [--clear-env] [--env-allow NAME]...
                   [--cwd DIR] [--max-memory-mb N] [--max-cpu-s N] [--max-procs N]
                   [--max-open-files N] [--node-permission [--node-allow-read PATH]... [--node-allow-addons]]
                   [--runtime thread|tokio] [-- PROGRAM [ARGS...]]
      Spawn a child (default: node ts-app/dist/main.js, built on first use) and play the
      demo conversation: greeting, five data messages, goodbye. Stdout carries the
      conversation; progress and the child's stderr go to stderr. --encoding: json (NDJSON
      lines, the default) or msgpack (length-prefixed MessagePack frames; the default child
      is given --encoding msgpack, a PROGRAM of your own must be told itself);
      --max-frame-bytes bounds a frame read from the child (msgpack), --max-line-bytes a line
      (json); both default to 16777216. --timeout-ms bounds the wait for each reply and for
      the child's exit after the goodbye (default 10000).
      However the demo ends, the child (in its own process group) is stopped the same way:
      its stdin is closed, then after --grace-ms (default 2000) SIGTERM, then after another
      --grace-ms SIGKILL; it is always reaped. Ctrl-C, SIGTERM and SIGHUP run that sequence
      too (a second Ctrl-C skips the waits). --runtime: what moves the bytes, thread (a
      reader thread, the default) or tokio (async pipes on a tokio runtime); same output.
      --spin-us: see below (the child's stdout; --runtime thread only).
      An untrusted child (Linux, macOS: Unix resource limits) can be started with less:
      --clear-env empties its environment except PATH and each --env-allow NAME; --cwd DIR
      sets its working directory; --max-memory-mb (address space; Node needs about 1024 to
      start), --max-cpu-s (SIGXCPU, then SIGKILL a second later), --max-procs (processes and
      threads of the whole user; not enforced for root) and --max-open-files are resource
      limits set before it runs. --node-permission runs a Node child (the default one, or a
      PROGRAM named node) under Node's permission model: reads only under the script's
      directory, the node_modules directories Node resolves from it, and each
      --node-allow-read PATH; no writes, child processes or workers; native addons only with
      --node-allow-addons (`ts-app/dist/main.js --engine native` needs it, and read access to
      the repository's native/ directory). A child killed by a limit is reported naming it.
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
    let mut runtime = Runtime::Thread;
    let mut max_line_bytes = rust_ts_ipc::DEFAULT_MAX_LINE_BYTES;
    let mut sandbox = Sandbox::default();
    let mut node_permission: Option<NodePermission> = None;
    let mut node_reads: Vec<PathBuf> = Vec::new();
    let mut node_addons = false;
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
            Some("--runtime") => {
                let value = args.next().ok_or_else(|| HostError::Usage("--runtime needs a value".to_owned()))?;
                runtime = Runtime::parse(&value.to_string_lossy())?;
            }
            Some("--max-frame-bytes") => {
                max_frame_bytes = usize::try_from(number(&mut args, "--max-frame-bytes")?)
                    .map_err(|_| HostError::Usage("--max-frame-bytes is too large".to_owned()))?;
            }
            Some("--max-line-bytes") => {
                max_line_bytes = usize::try_from(number(&mut args, "--max-line-bytes")?)
                    .map_err(|_| HostError::Usage("--max-line-bytes is too large".to_owned()))?;
                if max_line_bytes == 0 {
                    return Err(HostError::Usage("--max-line-bytes must be at least 1 (got 0)".to_owned()));
                }
            }
            Some("--clear-env") => sandbox.clear_env = true,
            Some("--env-allow") => sandbox.env_allow.push(
                args.next()
                    .and_then(|v| v.into_string().ok())
                    .ok_or_else(|| HostError::Usage("--env-allow needs a UTF-8 variable name".to_owned()))?,
            ),
            Some("--cwd") => {
                sandbox.cwd =
                    Some(args.next().ok_or_else(|| HostError::Usage("--cwd needs a value".to_owned()))?.into())
            }
            Some("--max-memory-mb") => sandbox.limits.max_memory_mb = Some(number(&mut args, "--max-memory-mb")?),
            Some("--max-cpu-s") => sandbox.limits.max_cpu_s = Some(number(&mut args, "--max-cpu-s")?),
            Some("--max-procs") => sandbox.limits.max_procs = Some(number(&mut args, "--max-procs")?),
            Some("--max-open-files") => sandbox.limits.max_open_files = Some(number(&mut args, "--max-open-files")?),
            Some("--node-permission") => node_permission = Some(NodePermission::default()),
            Some("--node-allow-read") => {
                let path = args.next().ok_or_else(|| HostError::Usage("--node-allow-read needs a value".to_owned()))?;
                // Node takes absolute paths; a relative one is meant from here.
                node_reads.push(
                    std::path::absolute(&path).map_err(|e| {
                        HostError::Usage(format!("--node-allow-read `{}`: {e}", path.to_string_lossy()))
                    })?,
                );
            }
            Some("--node-allow-addons") => node_addons = true,
            Some("--spin-us") => spin = spin_flag(&mut args)?,
            _ => return Err(HostError::Usage(format!("unexpected argument `{}` for demo", arg.to_string_lossy()))),
        }
    }
    if node_permission.is_none() && (node_addons || !node_reads.is_empty()) {
        return Err(HostError::Usage(
            "--node-allow-read and --node-allow-addons refine --node-permission, which was not given".to_owned(),
        ));
    }
    if runtime == Runtime::Tokio && !spin.is_zero() {
        return Err(HostError::Usage(
            "--spin-us applies to --runtime thread (the tokio runtime's pipes are not spun)".to_owned(),
        ));
    }
    let mut child = child.into_iter();
    let base = DemoConfig {
        program: OsString::new(),
        args: Vec::new(),
        timeout,
        grace,
        encoding,
        max_frame_bytes,
        runtime,
        max_line_bytes,
        refusal_hint: None,
        sandbox,
        spin,
        node_permission: node_permission.is_some(),
    };
    say_if_not_spinning("demo", spin);
    let mut config = match child.next() {
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
    if let Some(mut permission) = node_permission {
        permission.allow_addons = node_addons;
        under_node_permission(&mut config, permission, node_reads)?;
    }
    let stdout = std::io::stdout();
    host::run_demo(&config, &mut stdout.lock())
}

/// Puts the demo's Node child under Node's permission model: the flags go before its script
/// (its first argument that is not a flag). Reads: the script's defaults plus `reads`.
fn under_node_permission(
    config: &mut DemoConfig,
    mut permission: NodePermission,
    reads: Vec<PathBuf>,
) -> Result<(), HostError> {
    let name = Path::new(&config.program).file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if !matches!(name, "node" | "nodejs") {
        return Err(HostError::Usage(format!(
            "--node-permission applies to a Node child, but PROGRAM is `{}`: run `-- node SCRIPT ...`",
            config.program.to_string_lossy()
        )));
    }
    let Some(at) = config.args.iter().position(|a| !a.to_string_lossy().starts_with('-')) else {
        return Err(HostError::Usage(
            "--node-permission needs the Node child's script: `-- node SCRIPT ...`".to_owned(),
        ));
    };
    // A relative script is found from the child's working directory, as Node will.
    let script = match &config.sandbox.cwd {
        Some(dir) => dir.join(&config.args[at]),
        None => PathBuf::from(&config.args[at]),
    };
    let defaults = NodePermission::default_reads(&script).map_err(|e| HostError::Usage(e.to_string()))?;
    permission.allow_read = defaults.into_iter().chain(reads).collect();
    // A `node` that cannot run (or predates the model) is a child that cannot start; anything
    // else `args` refuses (a path with a comma) is a flag's value.
    permission_flag(&config.program).map_err(|e| HostError::Spawn(e.to_string()))?;
    let flags = permission.args(&config.program, &script).map_err(|e| HostError::Usage(e.to_string()))?;
    config.args.splice(at..at, flags);
    Ok(())
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
