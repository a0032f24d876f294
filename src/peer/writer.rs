//! The writer thread: the one place that writes to the child's stdin. Callers queue encoded
//! lines (see [`super::Shared::queue_line`]) and wait on their own deadlines; this thread
//! takes them in order and writes them, so a child that stops reading blocks this thread
//! alone, never a caller and never a reply.

use std::io::{self, BufWriter, Write};
use std::process::ChildStdin;
use std::sync::PoisonError;
use std::time::Instant;

use super::{bump, Counters, Line, Shared, State, EOF_SETTLE};

/// The writer takes at most this many bytes of short lines per write (a longer line goes
/// alone), so that room frees in the queue as the pipe takes them.
const WRITE_BATCH: usize = 64 * 1024;

/// Writes queued lines until the peer is closed (and the queue written) or the child ends,
/// then closes the child's stdin by dropping it.
pub(super) fn write_stdin(shared: &Shared, stdin: ChildStdin) {
    let mut pipe = BufWriter::with_capacity(WRITE_BATCH, stdin);
    while let Some(batch) = next_batch(shared) {
        let written = batch.iter().try_for_each(|line| line.write_to(&mut pipe)).and_then(|()| pipe.flush());
        if let Err(e) = written {
            on_write_failed(shared, &e, batch);
            break;
        }
        let mut state = shared.lock();
        state.writing_bytes = 0;
        drop(state);
        // Room in the queue for whoever waits for it.
        shared.changed.notify_all();
    }
    // Dropped without flushing: after a failed write what is left in the buffer cannot go.
    let (stdin, _unwritten) = pipe.into_parts();
    drop(stdin);
    shared.lock().stdin_closed = true;
    shared.changed.notify_all();
}

/// Waits for lines to write; `None` once there will be none: the child ended, or the peer is
/// closed and its queue written.
fn next_batch(shared: &Shared) -> Option<Vec<Line>> {
    let mut state = shared.lock();
    loop {
        if state.ended.is_some() || (state.closed && state.outbox.is_empty()) {
            return None;
        }
        if !state.outbox.is_empty() {
            return Some(take_batch(&mut state, &shared.counters));
        }
        state = shared.wake_writer.wait(state).unwrap_or_else(PoisonError::into_inner);
    }
}

/// Takes the next lines (at least one, up to [`WRITE_BATCH`] bytes) out of the queue; their
/// requests count as sent from here: a reply may come, however far the write gets.
pub(crate) fn take_batch<R, D>(state: &mut State<R, D>, counters: &Counters) -> Vec<Line> {
    let mut batch = Vec::new();
    let mut bytes = 0;
    while let Some(line) = state.outbox.front() {
        if !batch.is_empty() && bytes + line.len() > WRITE_BATCH {
            break;
        }
        let Some(line) = state.outbox.pop_front() else { break };
        state.outbox_bytes -= line.len();
        match line.id {
            Some(id) => {
                // Not pending if its handle was dropped unawaited: written all the same.
                if let Some(waiting) = state.pending.get_mut(&id) {
                    waiting.sent = true;
                }
                bump(&counters.requests);
            }
            None => bump(&counters.notifications),
        }
        bytes += line.len();
        batch.push(line);
    }
    state.writing_bytes = bytes;
    batch
}

/// A write failed: usually the child exited or is closing, which its exit then says. If it
/// has not ended (it closed its stdin and runs on, say), every request whose line could not
/// be written fails with the write's error, as will later calls.
fn on_write_failed(shared: &Shared, e: &io::Error, batch: Vec<Line>) {
    let mut state = shared.lock();
    state.writing_bytes = 0;
    let deadline = Instant::now() + EOF_SETTLE;
    while !state.closed && state.ended.is_none() && e.kind() == io::ErrorKind::BrokenPipe {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        state = shared.wait(state, left);
    }
    state.write_failed(&shared.command, e, &batch);
    drop(state);
    shared.changed.notify_all();
}
