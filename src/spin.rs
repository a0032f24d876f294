//! Adaptive spinning before a blocking read: a latency option for pipes.
//!
//! A small message over a pipe to a process that sleeps in `read` pays a cross-CPU wake-up
//! (tens of µs unpinned). If the reader instead keeps asking the pipe for data for a short
//! budget after each message, a reply that comes within the budget is taken without any
//! wake-up at all. The cost is a CPU core busy for up to the budget after each message, so
//! spinning here is:
//! - **off by default** (a budget of zero reads exactly as the wrapped reader does);
//! - **never done when the thread may run on one CPU only** (its affinity mask, or the
//!   process's CPU quota, allows one): the spinner would only keep its peer from running.
//!   The guard sees this thread's own mask and quota, read once when the policy is made: it
//!   cannot see a peer process pinned to the one CPU this process happens to run on, nor a
//!   mask changed later (`taskset -p` on the running process); such a spin costs up to its
//!   budget per read and then backs off as any miss does;
//! - **adaptive** ([`AdaptiveSpin`]): the budget halves each time it expires without data
//!   (the data keeps arriving after it, so spinning did not pay), doubles back when data
//!   arrives while spinning, and after repeated misses spinning stops for a while, with a
//!   probe now and then to notice when it would pay again.
//!
//! [`SpinReader`] wraps a `Read + AsFd` (a pipe, a socket, a child's stdout). On a blocking
//! descriptor (the usual, and the recommended) it spins with zero-timeout `poll`s and reads
//! once one says there is data, then blocks in the plain `read`: a read that does not spin
//! (spinning off, parked, or one CPU) is exactly the wrapped reader's one system call, and a
//! read that spun pays one `poll` more than it would have. On a non-blocking descriptor (see
//! [`set_nonblocking`]) it spins with `read` itself, so a read that finds data while
//! spinning is one call, but one that does not spin costs a `poll` and a `read`.
//!
//! [`AdaptiveSpin`] is the decision alone, sans-IO and sans-clock: the reader tells it how each
//! read went ([`SpinOutcome`]) and asks it for the next budget.

use std::fmt;
use std::time::Duration;

/// How many times the budget halves on consecutive misses before spinning is parked:
/// the smallest budget tried is the maximum ÷ 2^`MAX_SHIFT`.
const MAX_SHIFT: u32 = 3;
/// Reads without spinning after the first park; doubled by each probe that misses.
const FIRST_PARK: u32 = 16;
/// The longest park, in reads, between two probes.
const LONGEST_PARK: u32 = 4096;

/// How one read went, as [`AdaptiveSpin`] counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpinOutcome {
    /// Data was there at the first attempt: spinning was neither needed nor wasted.
    Ready,
    /// Data arrived while spinning, before the budget expired: spinning paid.
    Hit,
    /// The budget expired without data and the read blocked: the spin was wasted.
    Miss,
}

/// Why an [`AdaptiveSpin`] never spins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpinDisabled {
    /// The budget asked for is zero (the default).
    Off,
    /// The thread may run on one CPU only (its affinity mask or CPU quota): spinning would
    /// take the CPU its peer needs to answer.
    OneCpu,
}

impl fmt::Display for SpinDisabled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpinDisabled::Off => f.write_str("the spin budget is 0"),
            SpinDisabled::OneCpu => f.write_str("this process may run on one CPU only (affinity mask or CPU quota)"),
        }
    }
}

/// The adaptive spin budget: which budget the next read spins for, learnt from how the last
/// reads went. No clock and no I/O; [`SpinReader`] measures and reports.
///
/// The budget starts at the maximum. A [`Miss`](SpinOutcome::Miss) halves it; a
/// [`Hit`](SpinOutcome::Hit) doubles it (up to the maximum). A miss at the smallest budget
/// (the maximum ÷ 8) parks spinning: the next 16 reads do not spin, then one read probes with
/// the full budget. A probe that hits resumes spinning at the maximum; one that misses parks
/// again for twice as long (up to 4096 reads). [`Ready`](SpinOutcome::Ready) changes nothing.
///
/// ```
/// use std::time::Duration;
/// use rust_ts_ipc::spin::{AdaptiveSpin, SpinOutcome};
///
/// let mut spin = AdaptiveSpin::new(Duration::from_micros(40), 2);
/// assert_eq!(spin.begin(), Duration::from_micros(40));
/// spin.end(SpinOutcome::Miss);
/// assert_eq!(spin.begin(), Duration::from_micros(20));
/// spin.end(SpinOutcome::Hit);
/// assert_eq!(spin.begin(), Duration::from_micros(40));
/// ```
#[derive(Debug, Clone)]
pub struct AdaptiveSpin {
    max: Duration,
    disabled: Option<SpinDisabled>,
    /// The current budget is `max >> shift`.
    shift: u32,
    /// Reads left to go without spinning (parked).
    parked: u32,
    /// The next park's length, in reads.
    park_len: u32,
    /// The read under way is a probe (the first after a park).
    probing: bool,
    /// The read under way was given a non-zero budget.
    spinning: bool,
}

impl AdaptiveSpin {
    /// A spin of at most `max` per read, for a thread that may run on `cpus` CPUs: disabled
    /// when `max` is zero or `cpus` is at most 1. [`for_this_thread`](Self::for_this_thread)
    /// takes `cpus` from the calling thread's affinity mask.
    pub fn new(max: Duration, cpus: usize) -> Self {
        let disabled = if max.is_zero() {
            Some(SpinDisabled::Off)
        } else if cpus <= 1 {
            Some(SpinDisabled::OneCpu)
        } else {
            None
        };
        AdaptiveSpin { max, disabled, shift: 0, parked: 0, park_len: FIRST_PARK, probing: false, spinning: false }
    }

    /// [`new`](Self::new) with the CPUs the calling thread may run on ([`allowed_cpus`]).
    /// Threads inherit their creator's mask, so a reader made before its thread is spawned
    /// sees the same CPUs as one made on it.
    pub fn for_this_thread(max: Duration) -> Self {
        // Zero needs no system call: the off path stays as it was.
        if max.is_zero() {
            return Self::new(max, 0);
        }
        Self::new(max, allowed_cpus())
    }

    /// `None` when this spins (sometimes); otherwise why it never does.
    pub fn disabled(&self) -> Option<SpinDisabled> {
        self.disabled
    }

    /// The largest budget, as asked for (also when disabled).
    pub fn max(&self) -> Duration {
        self.max
    }

    /// Starts a read: the budget to spin for before blocking (zero: do not spin). Call
    /// [`end`](Self::end) when the read has data (or failed), with how it went.
    pub fn begin(&mut self) -> Duration {
        self.spinning = false;
        self.probing = false;
        if self.disabled.is_some() {
            return Duration::ZERO;
        }
        if self.parked > 0 {
            self.parked -= 1;
            return Duration::ZERO;
        }
        self.spinning = true;
        if self.shift > MAX_SHIFT {
            // Back from a park: probe with the full budget.
            self.probing = true;
            return self.max;
        }
        self.max / (1 << self.shift)
    }

    /// Ends the read that [`begin`](Self::begin) started. Outcomes of reads that were given
    /// no budget change nothing.
    pub fn end(&mut self, outcome: SpinOutcome) {
        if !std::mem::take(&mut self.spinning) {
            return;
        }
        let probing = std::mem::take(&mut self.probing);
        match outcome {
            SpinOutcome::Ready => {}
            SpinOutcome::Hit if probing => {
                self.shift = 0;
                self.park_len = FIRST_PARK;
            }
            SpinOutcome::Hit => self.shift = self.shift.saturating_sub(1),
            SpinOutcome::Miss if probing => self.park(),
            SpinOutcome::Miss if self.shift >= MAX_SHIFT => {
                self.park();
            }
            SpinOutcome::Miss => self.shift += 1,
        }
    }

    /// Stops spinning for the next `park_len` reads, then probes; the park after is longer.
    fn park(&mut self) {
        self.shift = MAX_SHIFT + 1;
        self.parked = self.park_len;
        self.park_len = (self.park_len * 2).min(LONGEST_PARK);
    }
}

/// How many CPUs the calling thread may run on: the CPUs in its affinity mask
/// (`sched_getaffinity`, Linux and Android), bounded by the process's CPU quota as
/// [`std::thread::available_parallelism`] sees it (cgroups). 1 when neither can be read, so
/// that spinning stays off when in doubt.
pub fn allowed_cpus() -> usize {
    let parallelism = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    match affinity_cpus() {
        Some(mask) => mask.min(parallelism),
        None => parallelism,
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn affinity_cpus() -> Option<usize> {
    use nix::sched::{sched_getaffinity, CpuSet};
    use nix::unistd::Pid;
    // Pid 0: the calling thread.
    let set = sched_getaffinity(Pid::from_raw(0)).ok()?;
    Some((0..CpuSet::count()).filter(|&cpu| set.is_set(cpu).unwrap_or(false)).count())
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn affinity_cpus() -> Option<usize> {
    None
}

/// What a [`SpinReader`] has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpinStats {
    /// Reads (calls that returned data, end of input or an error).
    pub reads: u64,
    /// Reads that spun (were given a non-zero budget and did not find data at once).
    pub spun: u64,
    /// Reads whose data arrived while spinning.
    pub hits: u64,
    /// Reads whose budget expired before data came (they then blocked).
    pub misses: u64,
    /// Time spent spinning, in all: the CPU time spinning cost, roughly.
    pub spin_time: Duration,
}

#[cfg(unix)]
pub use self::unix::{set_nonblocking, SpinReader};

#[cfg(unix)]
mod unix {
    use std::io::{self, Read};
    use std::os::fd::{AsFd, BorrowedFd};
    use std::time::{Duration, Instant};

    use nix::errno::Errno;
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

    use super::{AdaptiveSpin, SpinDisabled, SpinOutcome, SpinStats};

    /// Sets `O_NONBLOCK` on `fd`, so that a [`SpinReader`] over it spins with `read` itself
    /// (a read whose data comes while spinning is one system call instead of a `poll` and a
    /// `read`), at the price of a `poll` and a `read` for every read that does not spin. Worth
    /// it only where spinning nearly always pays; the library's own readers keep their pipes
    /// blocking. The flag belongs to the open file description: set it only on a descriptor
    /// this process alone reads (a child's stdout pipe), never on an inherited stdin, which a
    /// shell or parent may share.
    ///
    /// # Errors
    /// `fcntl` failed (e.g. `fd` is not open).
    pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
        let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
        if !flags.contains(OFlag::O_NONBLOCK) {
            fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        }
        Ok(())
    }

    fn is_nonblocking(fd: BorrowedFd<'_>) -> bool {
        fcntl(fd, FcntlArg::F_GETFL).is_ok_and(|bits| OFlag::from_bits_retain(bits).contains(OFlag::O_NONBLOCK))
    }

    /// A reader that spins for an adaptive budget before blocking (see the [module
    /// documentation](super)). With a zero budget, or on one CPU, a read on a blocking
    /// descriptor is exactly the wrapped reader's read.
    ///
    /// Wrap the descriptor itself (a `File`, `ChildStdout`, `UnixStream`), not a buffered
    /// reader over it: bytes already in a buffer are invisible to `poll`.
    ///
    /// ```no_run
    /// # fn main() -> std::io::Result<()> {
    /// use std::io::Read;
    /// use std::process::{Command, Stdio};
    /// use std::time::Duration;
    /// use rust_ts_ipc::spin::SpinReader;
    ///
    /// let mut child = Command::new("cat").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
    /// let stdout = child.stdout.take().ok_or(std::io::ErrorKind::Other)?;
    /// let mut reader = SpinReader::new(stdout, Duration::from_micros(20));
    /// let mut buf = [0; 4096];
    /// let n = reader.read(&mut buf)?;
    /// # let _ = n;
    /// # Ok(())
    /// # }
    /// ```
    #[derive(Debug)]
    pub struct SpinReader<R> {
        inner: R,
        spin: AdaptiveSpin,
        nonblocking: bool,
        stats: SpinStats,
    }

    impl<R: Read + AsFd> SpinReader<R> {
        /// Wraps `inner` with a spin of at most `max` per read, disabled when `max` is zero or
        /// the calling thread may run on one CPU only ([`AdaptiveSpin::for_this_thread`]).
        /// Whether the descriptor is non-blocking is read now: set it before.
        pub fn new(inner: R, max: Duration) -> Self {
            Self::with_spin(inner, AdaptiveSpin::for_this_thread(max))
        }

        /// Wraps `inner` with the given spin policy.
        ///
        /// Whether the descriptor is non-blocking is read now. `O_NONBLOCK` belongs to the open
        /// file description, shared by every process holding it: if another holder sets it
        /// later, the first read that finds it waits in `poll` from then on; if another holder
        /// clears it later, that is not seen, and a spin's read may then block in `read` (a
        /// [`read_until`](Self::read_until) past its deadline) until data comes.
        pub fn with_spin(inner: R, spin: AdaptiveSpin) -> Self {
            let nonblocking = is_nonblocking(inner.as_fd());
            SpinReader { inner, spin, nonblocking, stats: SpinStats::default() }
        }

        /// `None` when reads may spin; otherwise why they never do.
        pub fn disabled(&self) -> Option<SpinDisabled> {
            self.spin.disabled()
        }

        /// What the reads so far did.
        pub fn stats(&self) -> SpinStats {
            self.stats
        }

        /// The wrapped reader.
        pub fn get_ref(&self) -> &R {
            &self.inner
        }

        /// The wrapped reader, to read from without spinning (a read that must block anyway).
        pub fn get_mut(&mut self) -> &mut R {
            &mut self.inner
        }

        /// The wrapped reader, unwrapped.
        pub fn into_inner(self) -> R {
            self.inner
        }

        /// Reads into `buf`: spins for the current budget, then waits for data until
        /// `deadline` (`None`: for ever). Returns the bytes read, 0 at the end of input.
        ///
        /// # Errors
        /// [`io::ErrorKind::TimedOut`] when `deadline` passes with no data (nothing was read);
        /// otherwise the errors of `read` and `poll` (never `Interrupted` or `WouldBlock`, which
        /// are retried).
        pub fn read_until(&mut self, buf: &mut [u8], deadline: Option<Instant>) -> io::Result<usize> {
            self.stats.reads += 1;
            let budget = self.spin.begin();
            if buf.is_empty() {
                self.spin.end(SpinOutcome::Ready);
                return Ok(0);
            }
            if !budget.is_zero() {
                match self.spin(buf, budget, deadline) {
                    Ok(Some((n, outcome))) => {
                        self.spin.end(outcome);
                        return Ok(n);
                    }
                    Ok(None) => self.spin.end(SpinOutcome::Miss),
                    Err(e) => {
                        self.spin.end(SpinOutcome::Ready);
                        return Err(e);
                    }
                }
            }
            self.wait_and_read(buf, deadline)
        }

        /// Spins for up to `budget`: the data and how it came, or `None` if none came.
        fn spin(
            &mut self,
            buf: &mut [u8],
            budget: Duration,
            deadline: Option<Instant>,
        ) -> io::Result<Option<(usize, SpinOutcome)>> {
            if let Some(n) = self.try_read(buf)? {
                return Ok(Some((n, SpinOutcome::Ready)));
            }
            let start = Instant::now();
            // A budget beyond what the clock can add (`Duration::MAX`) spins until data, or the
            // deadline: `start + budget` would panic.
            let until = match (start.checked_add(budget), deadline) {
                (Some(end), Some(d)) => Some(end.min(d)),
                (end, d) => end.or(d),
            };
            self.stats.spun += 1;
            let found = loop {
                std::hint::spin_loop();
                if let Some(n) = self.try_read(buf)? {
                    break Some(n);
                }
                if until.is_some_and(|until| Instant::now() >= until) {
                    break None;
                }
            };
            self.stats.spin_time += start.elapsed();
            Ok(match found {
                Some(n) => {
                    self.stats.hits += 1;
                    Some((n, SpinOutcome::Hit))
                }
                None => {
                    self.stats.misses += 1;
                    None
                }
            })
        }

        /// One attempt that never blocks: `Some` with what was read, `None` if nothing was
        /// there.
        fn try_read(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
            if !self.nonblocking && !self.ready(PollTimeout::ZERO)? {
                return Ok(None);
            }
            match self.inner.read(buf) {
                Ok(n) => Ok(Some(n)),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => Ok(None),
                Err(e) => Err(e),
            }
        }

        /// Blocks until data (or the end, or an error) is there or `deadline` passes, then reads.
        fn wait_and_read(&mut self, buf: &mut [u8], deadline: Option<Instant>) -> io::Result<usize> {
            loop {
                // A blocking descriptor with no deadline: the plain read, as unwrapped.
                if self.nonblocking || deadline.is_some() {
                    let timeout = match deadline {
                        None => PollTimeout::NONE,
                        Some(d) => {
                            let left = d.saturating_duration_since(Instant::now());
                            if left.is_zero() {
                                return Err(io::Error::new(io::ErrorKind::TimedOut, "no data before the deadline"));
                            }
                            // Rounded up to whole milliseconds, so that the deadline has passed
                            // when poll times out.
                            let ms = left.as_micros().div_ceil(1000);
                            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
                        }
                    };
                    if !self.ready(timeout)? {
                        continue;
                    }
                }
                match self.inner.read(buf) {
                    Ok(n) => return Ok(n),
                    // Someone sharing the open file description (a shell holding the same
                    // stdin) set O_NONBLOCK after this reader looked: wait in `poll` from now
                    // on, not in a loop of failing reads.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.nonblocking = true,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }

        /// Whether a read would not block (data, end of input or an error is there), waiting up
        /// to `timeout`.
        fn ready(&self, timeout: PollTimeout) -> io::Result<bool> {
            let mut fds = [PollFd::new(self.inner.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, timeout) {
                Ok(0) | Err(Errno::EINTR) => Ok(false),
                Ok(_) => Ok(true),
                Err(e) => Err(e.into()),
            }
        }
    }

    impl<R: Read + AsFd> Read for SpinReader<R> {
        /// [`read_until`](SpinReader::read_until) with no deadline.
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.read_until(buf, None)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const MAX: Duration = Duration::from_micros(80);

    fn run(spin: &mut AdaptiveSpin, outcome: SpinOutcome) -> Duration {
        let budget = spin.begin();
        spin.end(outcome);
        budget
    }

    #[test]
    fn zero_budget_is_off_and_never_spins() {
        let mut spin = AdaptiveSpin::new(Duration::ZERO, 8);
        assert_eq!(spin.disabled(), Some(SpinDisabled::Off));
        for _ in 0..100 {
            assert_eq!(run(&mut spin, SpinOutcome::Hit), Duration::ZERO);
        }
    }

    #[test]
    fn one_cpu_disables_spinning_whatever_the_budget() {
        for cpus in [0, 1] {
            let mut spin = AdaptiveSpin::new(MAX, cpus);
            assert_eq!(spin.disabled(), Some(SpinDisabled::OneCpu));
            for _ in 0..100 {
                assert_eq!(run(&mut spin, SpinOutcome::Hit), Duration::ZERO);
            }
        }
        assert_eq!(AdaptiveSpin::new(MAX, 2).disabled(), None);
    }

    #[test]
    fn misses_halve_the_budget_and_hits_double_it_back() {
        let mut spin = AdaptiveSpin::new(MAX, 2);
        assert_eq!(run(&mut spin, SpinOutcome::Miss), MAX);
        assert_eq!(run(&mut spin, SpinOutcome::Miss), MAX / 2);
        assert_eq!(run(&mut spin, SpinOutcome::Hit), MAX / 4);
        assert_eq!(run(&mut spin, SpinOutcome::Hit), MAX / 2);
        assert_eq!(run(&mut spin, SpinOutcome::Hit), MAX);
        // Never above the maximum.
        assert_eq!(run(&mut spin, SpinOutcome::Hit), MAX);
    }

    #[test]
    fn ready_reads_leave_the_budget_as_it_was() {
        let mut spin = AdaptiveSpin::new(MAX, 2);
        run(&mut spin, SpinOutcome::Miss);
        for _ in 0..10 {
            assert_eq!(run(&mut spin, SpinOutcome::Ready), MAX / 2);
        }
    }

    #[test]
    fn repeated_misses_park_spinning_then_a_probe_uses_the_full_budget() {
        let mut spin = AdaptiveSpin::new(MAX, 2);
        let budgets: Vec<_> = (0..4).map(|_| run(&mut spin, SpinOutcome::Miss)).collect();
        assert_eq!(budgets, [MAX, MAX / 2, MAX / 4, MAX / 8]);
        for _ in 0..FIRST_PARK {
            assert_eq!(run(&mut spin, SpinOutcome::Miss), Duration::ZERO);
        }
        // The probe.
        assert_eq!(run(&mut spin, SpinOutcome::Miss), MAX);
        // It missed: parked twice as long.
        for _ in 0..2 * FIRST_PARK {
            assert_eq!(run(&mut spin, SpinOutcome::Hit), Duration::ZERO);
        }
        assert_eq!(run(&mut spin, SpinOutcome::Hit), MAX);
        // The probe hit: spinning is back at the maximum, and the next park is short again.
        assert_eq!(run(&mut spin, SpinOutcome::Hit), MAX);
        for _ in 0..4 {
            run(&mut spin, SpinOutcome::Miss);
        }
        assert_eq!((0..FIRST_PARK).map(|_| run(&mut spin, SpinOutcome::Miss)).max(), Some(Duration::ZERO));
        assert_eq!(run(&mut spin, SpinOutcome::Hit), MAX);
    }

    #[test]
    fn a_ready_probe_probes_again_on_the_next_read() {
        let mut spin = AdaptiveSpin::new(MAX, 2);
        for _ in 0..4 + FIRST_PARK {
            run(&mut spin, SpinOutcome::Miss);
        }
        assert_eq!(run(&mut spin, SpinOutcome::Ready), MAX);
        assert_eq!(run(&mut spin, SpinOutcome::Miss), MAX);
        assert_eq!(run(&mut spin, SpinOutcome::Hit), Duration::ZERO);
    }

    #[test]
    fn parks_grow_to_the_longest_and_no_further() {
        let mut spin = AdaptiveSpin::new(MAX, 2);
        for _ in 0..4 {
            run(&mut spin, SpinOutcome::Miss);
        }
        let mut parks = Vec::new();
        for _ in 0..12 {
            let mut parked = 0;
            while run(&mut spin, SpinOutcome::Miss).is_zero() {
                parked += 1;
            }
            parks.push(parked);
        }
        assert_eq!(parks, [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 4096, 4096, 4096]);
    }

    #[test]
    fn spinning_that_never_pays_costs_a_vanishing_share_of_reads() {
        let mut spin = AdaptiveSpin::new(MAX, 2);
        let reads = 100_000;
        let spun = (0..reads).filter(|_| !run(&mut spin, SpinOutcome::Miss).is_zero()).count();
        // 4 shrinking tries; then a probe after each park of 16, 32, ... 4096 reads (9 parks,
        // 8176 reads); then one probe per 4097 reads.
        assert_eq!(spun, 4 + 9 + (reads - 4 - 8176 - 9) / 4097);
        assert_eq!(spun, 35);
    }

    #[test]
    fn end_without_a_budget_changes_nothing() {
        let mut spin = AdaptiveSpin::new(MAX, 2);
        spin.end(SpinOutcome::Miss);
        spin.end(SpinOutcome::Miss);
        assert_eq!(spin.begin(), MAX);
    }

    #[cfg(unix)]
    mod reader {
        use std::io::{ErrorKind, Read, Write};
        use std::os::fd::AsFd;
        use std::os::unix::net::UnixStream;
        use std::thread;
        use std::time::Instant;

        use super::super::*;

        /// A spinning reader over one end of a socket pair (blocking, or non-blocking when
        /// asked), as if on a machine with two CPUs.
        fn pair(max: Duration, nonblocking: bool) -> (SpinReader<UnixStream>, UnixStream) {
            let (a, b) = UnixStream::pair().unwrap();
            if nonblocking {
                set_nonblocking(a.as_fd()).unwrap();
            }
            (SpinReader::with_spin(a, AdaptiveSpin::new(max, 2)), b)
        }

        #[test]
        fn data_already_there_is_read_without_spinning() {
            for nonblocking in [false, true] {
                let (mut reader, mut writer) = pair(Duration::from_secs(1), nonblocking);
                writer.write_all(b"hello\n").unwrap();
                let mut buf = [0; 64];
                assert_eq!(reader.read(&mut buf).unwrap(), 6);
                assert_eq!(&buf[..6], b"hello\n");
                let stats = reader.stats();
                assert_eq!((stats.reads, stats.spun, stats.hits, stats.misses), (1, 0, 0, 0));
            }
        }

        #[test]
        fn data_that_arrives_within_the_budget_is_a_hit() {
            for nonblocking in [false, true] {
                // A budget far beyond the writer's delay: the data comes while spinning.
                let (mut reader, mut writer) = pair(Duration::from_secs(30), nonblocking);
                let late = thread::spawn(move || {
                    thread::sleep(Duration::from_millis(20));
                    writer.write_all(b"late").unwrap();
                    writer
                });
                let mut buf = [0; 64];
                assert_eq!(reader.read(&mut buf).unwrap(), 4);
                assert_eq!(&buf[..4], b"late");
                let stats = reader.stats();
                assert_eq!((stats.reads, stats.spun, stats.hits, stats.misses), (1, 1, 1, 0));
                assert!(stats.spin_time > Duration::ZERO);
                drop(late.join().unwrap());
            }
        }

        #[test]
        fn a_budget_that_expires_is_a_miss_and_the_read_still_gets_the_data() {
            for nonblocking in [false, true] {
                let (mut reader, mut writer) = pair(Duration::from_micros(50), nonblocking);
                // Nothing is written until the deadline passes: the spin misses, the wait times out.
                let deadline = Instant::now() + Duration::from_millis(30);
                let mut buf = [0; 64];
                let err = reader.read_until(&mut buf, Some(deadline)).unwrap_err();
                assert_eq!(err.kind(), ErrorKind::TimedOut);
                assert!(Instant::now() >= deadline);
                assert_eq!((reader.stats().spun, reader.stats().misses), (1, 1));
                // The budget halved; the data written now is read (Ready, so no change).
                writer.write_all(b"x").unwrap();
                assert_eq!(reader.read(&mut buf).unwrap(), 1);
                assert_eq!(reader.stats().reads, 2);
            }
        }

        #[test]
        fn end_of_input_is_seen_while_spinning_and_while_blocked() {
            for nonblocking in [false, true] {
                let (mut reader, writer) = pair(Duration::from_secs(30), nonblocking);
                let closer = thread::spawn(move || {
                    thread::sleep(Duration::from_millis(20));
                    drop(writer);
                });
                let mut buf = [0; 64];
                assert_eq!(reader.read(&mut buf).unwrap(), 0);
                closer.join().unwrap();
                assert_eq!(reader.stats().hits, 1);

                let (mut reader, writer) = pair(Duration::ZERO, nonblocking);
                drop(writer);
                assert_eq!(reader.read(&mut buf).unwrap(), 0);
                assert_eq!(reader.stats().spun, 0);
            }
        }

        #[test]
        fn a_nonblocking_descriptor_without_a_budget_blocks_instead_of_failing() {
            let (mut reader, mut writer) = pair(Duration::ZERO, true);
            let late = thread::spawn(move || {
                thread::sleep(Duration::from_millis(20));
                writer.write_all(b"ok").unwrap();
                writer
            });
            let mut buf = [0; 8];
            assert_eq!(reader.read(&mut buf).unwrap(), 2);
            drop(late.join().unwrap());
            assert_eq!(reader.stats().spun, 0);
        }

        #[test]
        fn a_deadline_that_has_passed_times_out_without_reading() {
            let (mut reader, mut writer) = pair(Duration::ZERO, false);
            let mut buf = [0; 8];
            let err = reader.read_until(&mut buf, Some(Instant::now())).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::TimedOut);
            writer.write_all(b"later").unwrap();
            assert_eq!(reader.read(&mut buf).unwrap(), 5);
        }

        #[test]
        fn a_thread_pinned_to_one_cpu_never_spins() {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            thread::spawn(|| {
                use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
                use nix::unistd::Pid;
                let mask = sched_getaffinity(Pid::from_raw(0)).unwrap();
                let first = (0..CpuSet::count()).find(|&cpu| mask.is_set(cpu).unwrap()).unwrap();
                let mut one = CpuSet::new();
                one.set(first).unwrap();
                // This thread only (pid 0 is the calling thread).
                sched_setaffinity(Pid::from_raw(0), &one).unwrap();
                assert_eq!(allowed_cpus(), 1);
                let (a, mut b) = UnixStream::pair().unwrap();
                let mut reader = SpinReader::new(a, Duration::from_secs(30));
                assert_eq!(reader.disabled(), Some(SpinDisabled::OneCpu));
                b.write_all(b"hi").unwrap();
                drop(b);
                let mut buf = [0; 8];
                assert_eq!(reader.read(&mut buf).unwrap(), 2);
                assert_eq!(reader.read(&mut buf).unwrap(), 0);
                assert_eq!(reader.stats().spun, 0);
            })
            .join()
            .unwrap();
        }

        #[test]
        fn a_budget_too_long_for_the_clock_spins_until_data_instead_of_panicking() {
            for nonblocking in [false, true] {
                // `Instant::now() + Duration::MAX` overflows: the spin must not add blindly.
                let (mut reader, mut writer) = pair(Duration::MAX, nonblocking);
                let late = thread::spawn(move || {
                    thread::sleep(Duration::from_millis(20));
                    writer.write_all(b"far").unwrap();
                    writer
                });
                let mut buf = [0; 8];
                assert_eq!(reader.read(&mut buf).unwrap(), 3);
                assert_eq!(&buf[..3], b"far");
                assert_eq!((reader.stats().spun, reader.stats().hits), (1, 1));
                drop(late.join().unwrap());
            }
        }

        /// A socket whose `read` calls are counted.
        struct Counted(UnixStream, std::sync::Arc<std::sync::atomic::AtomicU64>);

        impl Read for Counted {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.0.read(buf)
            }
        }

        impl AsFd for Counted {
            fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
                self.0.as_fd()
            }
        }

        #[test]
        fn a_descriptor_made_nonblocking_by_another_holder_is_waited_on_not_read_in_a_loop() {
            for max in [Duration::ZERO, Duration::from_micros(50)] {
                let (a, mut b) = UnixStream::pair().unwrap();
                let reads = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
                let shared = a.try_clone().unwrap();
                // Blocking when wrapped; then whoever shares the open file description (a
                // parent shell holding the same stdin) turns on O_NONBLOCK.
                let mut reader = SpinReader::with_spin(Counted(a, reads.clone()), AdaptiveSpin::new(max, 2));
                set_nonblocking(shared.as_fd()).unwrap();
                let late = thread::spawn(move || {
                    thread::sleep(Duration::from_millis(50));
                    b.write_all(b"ok").unwrap();
                    b
                });
                let mut buf = [0; 8];
                assert_eq!(reader.read(&mut buf).unwrap(), 2);
                drop(late.join().unwrap());
                // One read that finds the flag (EAGAIN), then a wait in poll and the read of
                // the data; not a read per turn of a busy loop for 50 ms.
                let reads = reads.load(std::sync::atomic::Ordering::Relaxed);
                assert!(reads <= 2, "{max:?}: {reads} reads");
            }
        }

        #[test]
        fn a_zero_budget_makes_no_affinity_check() {
            let (a, _b) = UnixStream::pair().unwrap();
            assert_eq!(SpinReader::new(a, Duration::ZERO).disabled(), Some(SpinDisabled::Off));
        }
    }
}
