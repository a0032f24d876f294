//! Rust asks a Node service: spawns `node ts-app/dist/examples/upper-service.js` (a child
//! written with the TypeScript `serveStdio`, whose `upper` handler upper-cases its data),
//! keeps 10 000 requests in flight through [`Peer`], checks every reply and prints one line.
//!
//! Run it from the repository root: `cargo run --example node_service` (after
//! `npm ci && npm run build`). An optional argument names another script to run instead.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use rust_ts_ipc::{Peer, PeerOptions};

const REQUESTS: usize = 10_000;
const SCRIPT: &str = "ts-app/dist/examples/upper-service.js";

fn main() -> ExitCode {
    match run() {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("node_service: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (script, shown) = match std::env::args_os().nth(1) {
        Some(path) => (PathBuf::from(&path), path.to_string_lossy().into_owned()),
        None => (root.join(SCRIPT), SCRIPT.to_owned()),
    };
    if Command::new("node").arg("--version").output().is_err() {
        return Err("`node` was not found on PATH: install Node.js >= 20, then run `npm ci && npm run build` \
                    in the repository root"
            .to_owned());
    }
    if !script.exists() {
        return Err(format!("{} is missing: run `npm ci && npm run build` in the repository root", script.display()));
    }

    let mut command = Command::new("node");
    command.arg(&script).current_dir(root);
    let options = PeerOptions { max_in_flight: REQUESTS, ..PeerOptions::default() };
    let peer = Peer::spawn(&mut command, options).map_err(|e| e.to_string())?;

    let started = Instant::now();
    // All 10 000 are sent before the first reply is awaited; replies may come in any order.
    let pending = (0..REQUESTS)
        .map(|i| {
            let text = format!("request {i}: abc");
            peer.send("upper", text.as_str()).map(|p| (text, p))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    for (text, request) in pending {
        let reply = request.wait().map_err(|e| e.to_string())?;
        let want = text.to_uppercase();
        if reply.msg_type != "upper" || reply.data.as_str() != Some(want.as_str()) {
            return Err(format!("`{text}` was answered with {reply:?}; expected `upper` with {want:?}"));
        }
    }
    let elapsed = started.elapsed();
    let status = peer.close().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("node {shown} ended with {status} after answering"));
    }
    Ok(format!("{REQUESTS} requests answered correctly through node {shown} in {:.2} s", elapsed.as_secs_f64()))
}
