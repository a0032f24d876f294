//! The wait before blocking in `requestSync`: poll the child's stdout without blocking for up
//! to a budget (`spinUs`), so that a reply arriving within it costs no wake-up of this thread.
//! A stand-in, with the one-CPU guard, until the core's adaptive spin reader replaces it.

use std::fs::File;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Spins on one file descriptor for a fixed budget, or not at all.
pub struct SpinReader {
    budget: Duration,
}

impl SpinReader {
    /// A spinner with `budget` (zero: never spin). Spinning is off where this process may run on
    /// one CPU only: the spinner would take the CPU its peer needs to answer.
    pub fn new(budget: Duration) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        SpinReader { budget: if cpus > 1 { budget } else { Duration::ZERO } }
    }

    /// Polls `file` without blocking until it is readable (true) or the budget is spent (false).
    pub fn spin_until_readable(&mut self, file: &File) -> bool {
        if self.budget.is_zero() {
            return false;
        }
        let start = Instant::now();
        loop {
            let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
            if matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0) {
                return true;
            }
            if start.elapsed() >= self.budget {
                return false;
            }
            std::hint::spin_loop();
        }
    }
}
