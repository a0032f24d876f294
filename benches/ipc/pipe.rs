//! A Rust parent talking to a child over its stdin/stdout with `window` messages in flight.
//!
//! Replies are matched by `id` and compared byte for byte with the reply expected for that id,
//! so a broken path fails loudly instead of posting a number. Writes are batched: the first
//! `window` requests go out in one write, and after each read the replies it completed are
//! replaced by as many new requests, again in one write.

use std::io::{self, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rust_ts_ipc::spin::SpinReader;
use rust_ts_ipc::{Frame, LineDecoder};

/// What a correct reply to `{"msg_type":"data","data":P,"id":N}` looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// `{"msg_type":"ack","data":"Acknowledged: P","id":N}` (the responder).
    Ack,
    /// The request line itself (a raw echo such as `cat`).
    Echo,
}

/// Above this many bytes of replies in flight, writes move to a writer thread: while the
/// reading thread is blocked in `write`, a child that echoes as it reads (`cat`, `serve`)
/// could fill its stdout pipe (64 KiB) and stop reading, and both would wait forever.
const INLINE_WRITE_LIMIT: usize = 32 * 1024;

/// How many bytes one read asks for.
const READ_CHUNK: usize = 256 * 1024;

/// The writer thread: batches in, the first write error out.
type Writer = (Sender<Vec<u8>>, JoinHandle<Result<(), String>>);

/// A spawned child and the parent's ends of its pipes.
pub struct Peer {
    child: Child,
    stdin: Option<Arc<Mutex<ChildStdin>>>,
    writer: Option<Writer>,
    /// With a zero spin budget, exactly the pipe's blocking read.
    stdout: SpinReader<ChildStdout>,
    decoder: LineDecoder,
    buf: Vec<u8>,
    next_id: u64,
    shown: String,
}

/// One closed run: every request answered, the pipes empty again.
pub struct RunOut {
    /// Per-message latency (write of message i → its reply read), ns, in id order.
    pub latencies: Vec<f64>,
    /// This side's reads during the run: how many spun, and of those how many found data
    /// while spinning (both 0 without a spin budget).
    pub spun: u64,
    pub spin_hits: u64,
    /// First write to last reply, ns.
    pub elapsed_ns: f64,
    /// Whether the writes were made by the reading thread or by the writer thread.
    pub inline: bool,
}

impl Peer {
    /// Spawns `program args` with piped stdin/stdout (stderr is inherited: nothing to drain).
    /// A non-zero `spin` reads the child's stdout spinning for up to that long
    /// (`rust_ts_ipc::spin`; the pipe stays blocking, so a read that does not spin is the plain
    /// read), unless this process may run on one CPU only.
    pub fn spawn(program: &str, args: &[&str], spin: Duration) -> Result<Peer, String> {
        let shown = std::iter::once(program).chain(args.iter().copied()).collect::<Vec<_>>().join(" ");
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start `{shown}`: {e}"))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("`{shown}`: pipes were not created"));
        };
        let stdout = SpinReader::new(stdout, spin);
        let stdin = Arc::new(Mutex::new(stdin));
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let for_thread = Arc::clone(&stdin);
        let handle = thread::spawn(move || {
            for batch in rx {
                let mut pipe = for_thread.lock().map_err(|_| "stdin lock poisoned".to_owned())?;
                pipe.write_all(&batch).map_err(|e| format!("writing to the child: {e}"))?;
            }
            Ok(())
        });
        Ok(Peer {
            child,
            stdin: Some(stdin),
            writer: Some((tx, handle)),
            stdout,
            decoder: LineDecoder::new(rust_ts_ipc::DEFAULT_MAX_LINE_BYTES),
            buf: vec![0; READ_CHUNK],
            next_id: 1,
            shown,
        })
    }

    /// Sends `count` data messages carrying `payload`, `window` at a time, and checks every reply.
    pub fn run(&mut self, payload: &str, window: usize, count: usize, expect: Expect) -> Result<RunOut, String> {
        let req_prefix = format!(r#"{{"msg_type":"data","data":"{payload}","id":"#);
        let rep_prefix = match expect {
            Expect::Ack => format!(r#"{{"msg_type":"ack","data":"Acknowledged: {payload}","id":"#),
            Expect::Echo => req_prefix.clone(),
        };
        let window = window.max(1);
        let inline = window.saturating_mul(rep_prefix.len() + 20) <= INLINE_WRITE_LIMIT;
        let base = self.next_id;
        self.next_id += count as u64;

        let Peer { stdin, writer, stdout, decoder, buf, shown, .. } = self;
        let spin_before = stdout.stats();
        let (Some(stdin), Some((tx, _))) = (stdin.as_ref(), writer.as_ref()) else {
            return Err(format!("`{shown}`: already closed"));
        };
        let mut sent_at = vec![0u64; count];
        let mut latencies = vec![f64::NAN; count];
        let mut next = 0usize;
        let mut received = 0usize;
        let t0 = Instant::now();

        let send = |next: &mut usize, k: usize, sent_at: &mut [u64]| -> Result<(), String> {
            let now = elapsed_ns(t0);
            let mut batch = Vec::with_capacity(k * (req_prefix.len() + 20));
            for (i, at) in sent_at.iter_mut().enumerate().skip(*next).take(k) {
                *at = now;
                batch.extend_from_slice(req_prefix.as_bytes());
                let _ = writeln!(batch, "{}}}", base + i as u64);
            }
            *next += k;
            if inline {
                let mut pipe = stdin.lock().map_err(|_| "stdin lock poisoned".to_owned())?;
                pipe.write_all(&batch).map_err(|e| format!("writing to `{shown}`: {e}"))
            } else {
                tx.send(batch).map_err(|_| format!("the writer thread for `{shown}` has stopped"))
            }
        };

        send(&mut next, window.min(count), &mut sent_at)?;
        while received < count {
            let n = match stdout.read(buf) {
                Ok(0) => {
                    return Err(format!(
                    "`{shown}` closed its stdout after {received} of {count} replies (payload {} B, window {window})",
                    payload.len()
                ))
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("reading from `{shown}`: {e}")),
            };
            let now = elapsed_ns(t0);
            decoder.feed(&buf[..n]);
            let mut completed = 0;
            while let Some(frame) = decoder.next_frame() {
                let Frame::Line { bytes, .. } = frame else {
                    return Err(format!("`{shown}` sent an over-long line"));
                };
                let id = reply_id(bytes, rep_prefix.as_bytes())
                    .ok_or_else(|| format!("`{shown}` sent an unexpected reply: `{}`", excerpt(bytes)))?;
                let i = id.checked_sub(base).and_then(|i| usize::try_from(i).ok()).filter(|&i| i < next);
                let Some(i) = i.filter(|&i| latencies[i].is_nan()) else {
                    return Err(format!("`{shown}` answered id {id}, which was not asked for or was answered twice"));
                };
                #[allow(clippy::cast_precision_loss)]
                {
                    latencies[i] = (now - sent_at[i]) as f64;
                }
                completed += 1;
            }
            received += completed;
            let more = completed.min(count - next);
            if more > 0 {
                send(&mut next, more, &mut sent_at)?;
            }
        }
        #[allow(clippy::cast_precision_loss)]
        let elapsed_ns = elapsed_ns(t0) as f64;
        let spin = stdout.stats();
        Ok(RunOut {
            latencies,
            elapsed_ns,
            inline,
            spun: spin.spun - spin_before.spun,
            spin_hits: spin.hits - spin_before.hits,
        })
    }

    /// CPU time (user + system) used so far by every thread of the child, ns.
    pub fn child_cpu_ns(&self) -> Option<u64> {
        cpu_ns(&format!("/proc/{}/task", self.child.id()))
    }

    /// Peak resident set of the child so far (`VmHWM`), KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        vm_hwm_kib(&format!("/proc/{}/status", self.child.id()))
    }

    /// Closes the child's stdin, gives it two seconds to exit, then kills it; always reaps.
    pub fn close(mut self) -> Result<(), String> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), String> {
        let mut result = Ok(());
        if let Some((tx, handle)) = self.writer.take() {
            drop(tx);
            result = handle.join().unwrap_or_else(|_| Err("the writer thread panicked".to_owned()));
        }
        self.stdin = None;
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return result,
                Ok(Some(status)) => return result.and(Err(format!("`{}` exited with {status}", self.shown))),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(2)),
                Ok(None) | Err(_) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return result.and(Err(format!("`{}` did not exit after its stdin closed", self.shown)));
                }
            }
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if self.writer.is_some() || self.stdin.is_some() {
            let _ = self.shutdown();
        }
    }
}

/// CPU time (user + system) of every live thread of a process, ns, from the first field of
/// each `/proc/<pid>/task/<tid>/schedstat` (time on a CPU, in ns: finer than `getrusage`'s or
/// `stat`'s clock ticks, which a 60 ms quick run would need). Threads that have exited are
/// not counted, so take both readings while the same threads run.
pub fn cpu_ns(task_dir: &str) -> Option<u64> {
    let mut total = 0u64;
    for task in std::fs::read_dir(task_dir).ok()? {
        let path = task.ok()?.path().join("schedstat");
        // A thread that exited between the listing and the read counts for nothing.
        let Ok(text) = std::fs::read_to_string(path) else { continue };
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// `VmHWM` from a `/proc/<pid>/status` file, KiB.
pub fn vm_hwm_kib(status_path: &str) -> Option<u64> {
    let text = std::fs::read_to_string(status_path).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn elapsed_ns(t0: Instant) -> u64 {
    u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The id of a reply that is exactly `prefix` + decimal id + `}`, else `None`.
fn reply_id(line: &[u8], prefix: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(prefix)?.strip_suffix(b"}")?;
    if rest.is_empty() || rest.len() > 16 || !rest.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(rest).ok()?.parse().ok()
}

fn excerpt(bytes: &[u8]) -> String {
    rust_ts_ipc::excerpt(&String::from_utf8_lossy(&bytes[..bytes.len().min(400)]))
}

/// The echo child: copies stdin to stdout as it arrives, like `cat` (no JSON, no framing).
/// It writes through a plain `File` on fd 1, not std's line-buffered `Stdout`, so each read
/// is answered by exactly one `write`.
pub fn echo_child() -> io::Result<()> {
    use std::os::fd::AsFd;
    let mut stdin = std::fs::File::from(io::stdin().as_fd().try_clone_to_owned()?);
    let mut stdout = std::fs::File::from(io::stdout().as_fd().try_clone_to_owned()?);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        match stdout.write_all(&buf[..n]) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}
