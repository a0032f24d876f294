//! In-process costs on the Rust side: what the core's responder spends on one message
//! (serde decode + reply encode), and a bare typed serde round trip for comparison.

use std::hint::black_box;
use std::time::{Duration, Instant};

use rust_ts_ipc::{Message, Responder, ResponderOptions};

/// Sub-microsecond calls are timed in batches of at least this long, so the clock read
/// (~20–40 ns) stays around 1% of a sample.
const BATCH_TARGET_NS: f64 = 4_000.0;

/// Per-call samples (batch means, ns) and how they were taken.
pub struct Timed {
    pub samples: Vec<f64>,
    pub batch: usize,
    pub warmup_calls: usize,
    pub elapsed_ns: f64,
    pub checked: usize,
}

/// Times `call` (which appends one answer to `out`) for about `measure` after `warm` of warm-up,
/// verifying after every batch that `out` holds exactly `expected` once per call.
pub fn time_calls(
    warm: Duration,
    measure: Duration,
    min_samples: usize,
    max_samples: usize,
    expected: &[u8],
    mut call: impl FnMut(&mut Vec<u8>),
) -> Result<Timed, String> {
    let mut out = Vec::with_capacity(expected.len() * 2);
    let check = |out: &mut Vec<u8>, calls: usize| -> Result<(), String> {
        if out.len() != expected.len() * calls || !out.chunks(expected.len()).all(|c| c == expected) {
            return Err(format!(
                "unexpected answer: `{}`",
                rust_ts_ipc::excerpt(&String::from_utf8_lossy(&out[..out.len().min(200)]))
            ));
        }
        out.clear();
        Ok(())
    };
    // Warm-up, which also estimates the cost of one call.
    let start = Instant::now();
    let mut warmup_calls = 0usize;
    while start.elapsed() < warm || warmup_calls < 3 {
        call(&mut out);
        check(&mut out, 1)?;
        warmup_calls += 1;
    }
    #[allow(clippy::cast_precision_loss)]
    let per_call = start.elapsed().as_nanos() as f64 / warmup_calls as f64;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let batch = ((BATCH_TARGET_NS / per_call).ceil() as usize).clamp(1, 4096);
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let n = ((measure.as_nanos() as f64 / (per_call * batch as f64)) as usize).clamp(min_samples, max_samples);
    let mut samples = Vec::with_capacity(n);
    let mut elapsed_ns = 0.0;
    for _ in 0..n {
        let t = Instant::now();
        for _ in 0..batch {
            call(black_box(&mut out));
        }
        #[allow(clippy::cast_precision_loss)]
        let dt = t.elapsed().as_nanos() as f64;
        elapsed_ns += dt;
        #[allow(clippy::cast_precision_loss)]
        samples.push(dt / batch as f64);
        check(&mut out, batch)?;
    }
    Ok(Timed { samples, batch, warmup_calls, elapsed_ns, checked: n * batch })
}

/// `Responder::handle_line`: exactly what `serve` does per message, minus the pipe.
pub fn core_handle_line(line: &[u8]) -> impl FnMut(&mut Vec<u8>) + '_ {
    let mut responder = Responder::new(ResponderOptions { exit_after: 0, ..ResponderOptions::default() });
    move |out| responder.handle_line(black_box(line), out)
}

/// A typed serde round trip: `from_str::<Message>`, build the ack, `to_writer` (a bare serde
/// echo child's per-message work).
pub fn serde_round_trip(line: &str) -> impl FnMut(&mut Vec<u8>) + '_ {
    move |out| {
        if let Ok(m) = serde_json::from_str::<Message>(black_box(line)) {
            let reply = Message { msg_type: "ack".to_owned(), data: format!("Acknowledged: {}", m.data), id: m.id };
            if serde_json::to_writer(&mut *out, &reply).is_ok() {
                out.push(b'\n');
            }
        }
    }
}
