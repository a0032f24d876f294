//! The host scenario (issue 12): the library's two Rust hosts driving Node children, 64 B
//! `data` requests to `node ts-app/dist/main.js --exit-after 0`, every reply checked (`ack`,
//! `Acknowledged: <payload>`, its request's id).
//!
//! - `host.thread-node`: [`rust_ts_ipc::Peer`] (threads), one caller keeping `window`
//!   requests in flight with `send` / `Pending::wait`.
//! - `host.tokio-node`: [`rust_ts_ipc::tokio::Peer`], one task doing the same with
//!   `send(..).await` / `pending.await`, on a multi-thread runtime with one worker per CPU.
//! - `host.thread-node-x8`, `host.tokio-node-x8`: one Rust process driving eight children at
//!   once, one caller (thread or task) per child, each with `window` in flight; msgs/s is
//!   the total over the eight, latency each request's own.

use std::collections::VecDeque;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rust_ts_ipc::{Envelope, PeerOptions, StderrMode};

/// Children driven at once by the `-x8` paths.
pub const CHILDREN_X8: usize = 8;

/// One measured run: per-request latencies and the wall time of the whole run.
pub struct HostRun {
    /// Per request: send → its reply, ns.
    pub latencies: Vec<f64>,
    /// First send → last reply, over every child, ns.
    pub elapsed_ns: f64,
    /// CPU time (user + system) this process spent during the run, ns: the host's own cost
    /// (every thread or task of it), not its children's. `None` where /proc is missing.
    pub cpu_ns: Option<f64>,
}

/// CPU time (user + system) of this process so far, every thread included (exited ones too),
/// from /proc/self/stat, ns. Its unit is USER_HZ, which Linux fixes at 100 per second, so
/// the result is in steps of 10 ms: meaningful over runs of a few hundred ms, not shorter.
pub fn process_cpu_ns() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let mut fields = stat.get(stat.rfind(')')? + 2..)?.split(' ');
    // After the command: state is field 3 of the line; utime and stime are fields 14 and 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    #[allow(clippy::cast_precision_loss)]
    let ns = (utime + stime) as f64 * 1e7;
    Some(ns)
}

/// Which host, and how many children.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Host {
    /// The thread `Peer`.
    Thread,
    /// The tokio `Peer`.
    Tokio,
}

fn ns(d: Duration) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let x = d.as_nanos() as f64;
    x
}

fn options() -> PeerOptions {
    PeerOptions { stderr: StderrMode::Discard, max_in_flight: 256, ..PeerOptions::default() }
}

fn check(reply: &Envelope, id: u64, expected: &str) -> Result<(), String> {
    if reply.msg_type == "ack" && reply.id == Some(id) && reply.data.as_str() == Some(expected) {
        Ok(())
    } else {
        Err(format!("request {id}: unexpected reply {reply:?}"))
    }
}

/// The children of one path, kept across its runs (warm-up included).
pub enum Children {
    /// Thread peers.
    Thread(Vec<Arc<rust_ts_ipc::Peer>>),
    /// Tokio peers and their runtime.
    Tokio(tokio::runtime::Runtime, Vec<Arc<rust_ts_ipc::tokio::Peer>>),
}

impl Children {
    /// Starts `count` children `node script --exit-after 0` under `host`.
    pub fn spawn(host: Host, node: &str, script: &str, count: usize) -> Result<Children, String> {
        let command = || {
            let mut c = Command::new(node);
            c.args([script, "--exit-after", "0"]);
            c
        };
        let failed = |e: rust_ts_ipc::PeerError| format!("spawning `{node} {script}`: {e}");
        match host {
            Host::Thread => {
                let peers = (0..count)
                    .map(|_| rust_ts_ipc::Peer::spawn(&mut command(), options()).map(Arc::new).map_err(failed))
                    .collect::<Result<_, _>>()?;
                Ok(Children::Thread(peers))
            }
            Host::Tokio => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("tokio runtime: {e}"))?;
                let peers = runtime.block_on(async {
                    (0..count)
                        .map(|_| {
                            rust_ts_ipc::tokio::Peer::spawn(&mut command(), options()).map(Arc::new).map_err(failed)
                        })
                        .collect::<Result<Vec<_>, _>>()
                })?;
                Ok(Children::Tokio(runtime, peers))
            }
        }
    }

    /// `count` requests of `data` to each child, `window` in flight per child, one caller per
    /// child; every reply checked.
    pub fn run(&self, data: &str, window: usize, count: usize) -> Result<HostRun, String> {
        let expected: Arc<str> = format!("Acknowledged: {data}").into();
        let data: Arc<str> = data.into();
        let cpu0 = process_cpu_ns();
        let t0 = Instant::now();
        let mut latencies = Vec::new();
        match self {
            Children::Thread(peers) => {
                let results = std::thread::scope(|scope| {
                    let callers: Vec<_> = peers
                        .iter()
                        .map(|peer| {
                            let (data, expected) = (Arc::clone(&data), Arc::clone(&expected));
                            scope.spawn(move || drive_thread(peer, &data, &expected, window, count))
                        })
                        .collect();
                    callers
                        .into_iter()
                        .map(|c| c.join().unwrap_or_else(|_| Err("a caller panicked".to_owned())))
                        .collect::<Vec<_>>()
                });
                for r in results {
                    latencies.extend(r?);
                }
            }
            Children::Tokio(runtime, peers) => {
                let results = runtime.block_on(async {
                    let tasks: Vec<_> = peers
                        .iter()
                        .map(|peer| {
                            let (peer, data, expected) = (Arc::clone(peer), Arc::clone(&data), Arc::clone(&expected));
                            tokio::spawn(async move { drive_tokio(&peer, &data, &expected, window, count).await })
                        })
                        .collect();
                    let mut all = Vec::new();
                    for task in tasks {
                        all.push(task.await.unwrap_or_else(|e| Err(format!("a caller failed: {e}"))));
                    }
                    all
                });
                for r in results {
                    latencies.extend(r?);
                }
            }
        }
        let elapsed_ns = ns(t0.elapsed());
        let cpu_ns = process_cpu_ns().zip(cpu0).map(|(after, before)| after - before);
        Ok(HostRun { latencies, elapsed_ns, cpu_ns })
    }

    /// The children's stop: close each (the shutdown sequence), checking they exited 0.
    pub fn close(self) -> Result<(), String> {
        let statuses = match self {
            Children::Thread(peers) => peers.iter().map(|p| p.close().map_err(|e| e.to_string())).collect::<Vec<_>>(),
            Children::Tokio(runtime, peers) => runtime.block_on(async {
                let mut all = Vec::new();
                for p in &peers {
                    all.push(p.close().await.map_err(|e| e.to_string()));
                }
                all
            }),
        };
        for status in statuses {
            let status = status?;
            if !status.success() {
                return Err(format!("a child ended with {status}"));
            }
        }
        Ok(())
    }
}

fn drive_thread(
    peer: &rust_ts_ipc::Peer,
    data: &str,
    expected: &str,
    window: usize,
    count: usize,
) -> Result<Vec<f64>, String> {
    let mut pending = VecDeque::with_capacity(window);
    let mut latencies = Vec::with_capacity(count);
    let mut sent = 0;
    while latencies.len() < count {
        while sent < count && pending.len() < window {
            let at = Instant::now();
            pending.push_back((at, peer.send("data", data).map_err(|e| format!("send: {e}"))?));
            sent += 1;
        }
        let Some((at, p)) = pending.pop_front() else { break };
        let id = p.id();
        let reply = p.wait().map_err(|e| format!("reply to {id}: {e}"))?;
        latencies.push(ns(at.elapsed()));
        check(&reply, id, expected)?;
    }
    Ok(latencies)
}

async fn drive_tokio(
    peer: &rust_ts_ipc::tokio::Peer,
    data: &str,
    expected: &str,
    window: usize,
    count: usize,
) -> Result<Vec<f64>, String> {
    let mut pending = VecDeque::with_capacity(window);
    let mut latencies = Vec::with_capacity(count);
    let mut sent = 0;
    while latencies.len() < count {
        while sent < count && pending.len() < window {
            let at = Instant::now();
            pending.push_back((at, peer.send("data", data).await.map_err(|e| format!("send: {e}"))?));
            sent += 1;
        }
        let Some((at, p)) = pending.pop_front() else { break };
        let id = p.id();
        let reply = p.await.map_err(|e| format!("reply to {id}: {e}"))?;
        latencies.push(ns(at.elapsed()));
        check(&reply, id, expected)?;
    }
    Ok(latencies)
}
