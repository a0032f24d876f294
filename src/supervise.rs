//! The restart policy of a supervised child, as plain data (sans-IO): no process, thread or
//! clock of its own. The caller tells it when the child died (an [`Instant`] it read) and asks
//! when a fresh child may start; it answers with exponential backoff with jitter and a
//! circuit breaker, in the vocabulary of Erlang/OTP supervisors (restart intensity: at most
//! `max_restarts` within a period). [`crate::Peer`] uses it; so can any other host (an async
//! one, say), since it only needs `Instant`s.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use rust_ts_ipc::supervise::{Gate, RestartPolicy, Restarts};
//!
//! let policy = RestartPolicy { base: Duration::from_millis(100), cap: Duration::from_secs(5), max_restarts: 2, window: Duration::from_secs(60) };
//! let mut restarts = Restarts::with_seed(policy, 7);
//! let t0 = Instant::now();
//! // The child died: the first restart waits 50..=100 ms (the base, with equal jitter).
//! let Gate::Backoff { until } = restarts.on_exit(t0) else { unreachable!() };
//! assert!(until - t0 >= Duration::from_millis(50) && until - t0 <= Duration::from_millis(100));
//! assert_eq!(restarts.poll(until), Gate::Start);      // start it, then say so:
//! restarts.started(until);
//! assert_eq!(restarts.restarts_in_window(until), 1);
//! ```
//!
//! The semantics, which the Node peer shares (`restart: {base, cap, maxRestarts, windowMs}`):
//! - Each unexpected exit ([`Restarts::on_exit`]) schedules the next start after a backoff:
//!   `d = min(cap, base × 2^k)`, where `k` is how many restarts happened within the last
//!   `window`, then equal jitter: a delay drawn uniformly from `[d/2, d]` (never zero, so a
//!   child that dies at once cannot spin; spread, so many hosts restarting together do not
//!   stampede). The backoff falls back to `base` by itself once the window holds no restarts.
//! - The circuit: a restart that would be the `max_restarts + 1`-th within `window` is refused;
//!   the circuit is open ([`Gate::Open`]) until the oldest restart counted leaves the window,
//!   i.e. until restarting keeps the rate at `max_restarts` per `window` again.
//!   `max_restarts: 0` never restarts: the first crash opens the circuit for one `window`.

use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

/// How a crashed child is restarted: the backoff (`base`, `cap`) and the restart intensity
/// (`max_restarts` within `window`). The same fields as the Node peer's `restart` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// The backoff before the first restart within a window (before jitter): 100 ms.
    pub base: Duration,
    /// The longest backoff (before jitter): 5 s.
    pub cap: Duration,
    /// The most restarts within [`window`](Self::window); one more opens the circuit: 5.
    pub max_restarts: u32,
    /// The period over which restarts are counted (Node: `windowMs`): 60 s.
    pub window: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(5),
            max_restarts: 5,
            window: Duration::from_secs(60),
        }
    }
}

impl RestartPolicy {
    /// Checks the fields: `base` at least 1 ms, `cap` at least `base`, `window` at least 1 ms.
    ///
    /// # Errors
    /// A message naming the field and the value it had, for a caller to wrap in its own error.
    pub fn check(&self) -> Result<(), String> {
        if self.base < Duration::from_millis(1) {
            return Err(format!("RestartPolicy::base must be at least 1 ms (got {:?})", self.base));
        }
        if self.cap < self.base {
            return Err(format!("RestartPolicy::cap ({:?}) must be at least base ({:?})", self.cap, self.base));
        }
        if self.window < Duration::from_millis(1) {
            return Err(format!("RestartPolicy::window must be at least 1 ms (got {:?})", self.window));
        }
        Ok(())
    }

    /// The backoff before jitter after `k` restarts within the window: `min(cap, base × 2^k)`.
    pub fn backoff(&self, k: u32) -> Duration {
        let factor = 1u32.checked_shl(k.min(31)).unwrap_or(u32::MAX);
        self.base.checked_mul(factor).map_or(self.cap, |d| d.min(self.cap))
    }
}

/// Whether a fresh child may start now, from [`Restarts::poll`] (and what
/// [`Restarts::on_exit`] decided).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// The child is running (or has not died since it last started): nothing to do.
    Running,
    /// Start a fresh child now, then call [`Restarts::started`].
    Start,
    /// In the backoff after a crash: start a fresh child at `until`, not before.
    Backoff {
        /// When the backoff ends.
        until: Instant,
    },
    /// The circuit is open: more than `max_restarts` within `window`. No child starts before
    /// `until`.
    Open {
        /// When the oldest restart counted leaves the window (and the circuit closes).
        until: Instant,
    },
}

/// The restart state of one supervised child: when it may start again. Fed `Instant`s by its
/// caller; the only randomness is the jitter, from a small PRNG seeded at creation.
#[derive(Debug, Clone)]
pub struct Restarts {
    policy: RestartPolicy,
    /// When each restart within the window started, oldest first.
    history: VecDeque<Instant>,
    /// Set by a crash, cleared by [`started`](Self::started).
    down: Option<Down>,
    rng: SplitMix64,
}

#[derive(Debug, Clone, Copy)]
enum Down {
    Backoff(Instant),
    Open(Instant),
}

impl Restarts {
    /// A child just started under `policy` (no restart yet); jitter seeded from the OS's
    /// randomness (std's `RandomState`), so hosts started together spread their restarts.
    pub fn new(policy: RestartPolicy) -> Self {
        Restarts::with_seed(policy, RandomState::new().build_hasher().finish())
    }

    /// As [`new`](Self::new), with the jitter's seed given (the same seed, the same delays):
    /// for tests.
    pub fn with_seed(policy: RestartPolicy, seed: u64) -> Self {
        Restarts { policy, history: VecDeque::new(), down: None, rng: SplitMix64(seed) }
    }

    /// The policy.
    pub fn policy(&self) -> &RestartPolicy {
        &self.policy
    }

    /// Restarts that started within the window ending at `now`.
    pub fn restarts_in_window(&mut self, now: Instant) -> u32 {
        self.forget_before(now);
        u32::try_from(self.history.len()).unwrap_or(u32::MAX)
    }

    /// The child died unexpectedly at `now`: when may the next one start? [`Gate::Backoff`]
    /// or [`Gate::Open`]. Calling it again before [`started`](Self::started) (a second report
    /// of the same death, or a failed start) decides afresh from `now`, the backoff growing
    /// only with restarts that did start.
    pub fn on_exit(&mut self, now: Instant) -> Gate {
        self.forget_before(now);
        let count = self.history.len();
        let max = usize::try_from(self.policy.max_restarts).unwrap_or(usize::MAX);
        let down = if count >= max {
            // Refused: the oldest counted restart must leave the window first. With
            // `max_restarts: 0` there is none; wait one window from now.
            let from = if max == 0 { Some(now) } else { self.history.get(count - max).copied() };
            Down::Open(later(from.unwrap_or(now), self.policy.window))
        } else {
            let k = u32::try_from(count).unwrap_or(u32::MAX);
            Down::Backoff(later(now, self.jitter(self.policy.backoff(k))))
        };
        self.down = Some(down);
        self.poll(now)
    }

    /// Whether a fresh child may start at `now`.
    pub fn poll(&mut self, now: Instant) -> Gate {
        match self.down {
            None => Gate::Running,
            Some(Down::Backoff(until)) if now < until => Gate::Backoff { until },
            Some(Down::Open(until)) if now < until => Gate::Open { until },
            Some(_) => Gate::Start,
        }
    }

    /// A fresh child started at `now` (after [`Gate::Start`]): counted in the window.
    pub fn started(&mut self, now: Instant) {
        self.down = None;
        self.history.push_back(now);
        self.forget_before(now);
    }

    fn forget_before(&mut self, now: Instant) {
        while let Some(&oldest) = self.history.front() {
            if now.saturating_duration_since(oldest) >= self.policy.window {
                self.history.pop_front();
            } else {
                break;
            }
        }
    }

    /// Equal jitter: uniform in `[d/2, d]`, to the nanosecond.
    fn jitter(&mut self, d: Duration) -> Duration {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let half = nanos / 2;
        let spread = nanos - half;
        let extra = if spread == u64::MAX { self.rng.next() } else { self.rng.next() % (spread + 1) };
        Duration::from_nanos(half + extra)
    }
}

/// `t + d`, or a century after `t` where that is past what an `Instant` holds (a `window` or
/// `cap` of `Duration::MAX`, meaning "never"): no panic on the thread that reports a death.
fn later(t: Instant, d: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    t.checked_add(d).or_else(|| t.checked_add(CENTURY)).unwrap_or(t)
}

/// SplitMix64 (Steele, Lea and Flood): a tiny, well-mixed PRNG, plenty for jitter; a
/// dependency on `rand` for one `u64` per crash is not worth it.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn policy(max_restarts: u32) -> RestartPolicy {
        RestartPolicy { base: 100 * MS, cap: 1000 * MS, max_restarts, window: 10_000 * MS }
    }

    fn backoff_until(gate: Gate) -> Instant {
        match gate {
            Gate::Backoff { until } => until,
            other => panic!("expected a backoff, got {other:?}"),
        }
    }

    #[test]
    fn backoff_doubles_from_base_up_to_cap() {
        let p = policy(10);
        let got: Vec<u128> = (0..7).map(|k| p.backoff(k).as_millis()).collect();
        assert_eq!(got, [100, 200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(p.backoff(u32::MAX), 1000 * MS);
    }

    #[test]
    fn running_until_the_child_dies() {
        let mut r = Restarts::with_seed(policy(3), 1);
        assert_eq!(r.poll(Instant::now()), Gate::Running);
    }

    #[test]
    fn each_restart_in_the_window_doubles_the_jittered_backoff() {
        let mut r = Restarts::with_seed(policy(10), 42);
        let mut now = Instant::now();
        for k in 0..6u32 {
            let until = backoff_until(r.on_exit(now));
            let full = policy(10).backoff(k);
            let delay = until - now;
            assert!(delay >= full / 2 && delay <= full, "restart {k}: {delay:?} outside [{:?}, {full:?}]", full / 2);
            assert_eq!(r.poll(until - Duration::from_nanos(1)), Gate::Backoff { until });
            assert_eq!(r.poll(until), Gate::Start);
            r.started(until);
            assert_eq!(r.poll(until), Gate::Running);
            now = until + MS;
        }
        assert_eq!(r.restarts_in_window(now), 6);
    }

    #[test]
    fn jitter_spreads_delays_and_the_seed_repeats_them() {
        let t0 = Instant::now();
        let first = |seed| backoff_until(Restarts::with_seed(policy(3), seed).on_exit(t0)) - t0;
        let delays: Vec<Duration> = (0..50).map(first).collect();
        let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
        assert!(distinct.len() > 40, "50 seeds gave only {} distinct delays", distinct.len());
        assert!(delays.iter().all(|d| *d >= 50 * MS && *d <= 100 * MS));
        assert_eq!(first(9), first(9));
    }

    #[test]
    fn one_restart_more_than_max_within_the_window_opens_the_circuit_until_the_oldest_leaves() {
        let mut r = Restarts::with_seed(policy(2), 5);
        let t0 = Instant::now();
        let first = backoff_until(r.on_exit(t0));
        r.started(first);
        let second = backoff_until(r.on_exit(first + MS));
        r.started(second);
        // The third restart within 10 s would be one more than 2.
        let crash = second + MS;
        assert_eq!(r.on_exit(crash), Gate::Open { until: first + 10_000 * MS });
        assert_eq!(r.poll(first + 9_999 * MS), Gate::Open { until: first + 10_000 * MS });
        assert_eq!(r.poll(first + 10_000 * MS), Gate::Start);
        r.started(first + 10_000 * MS);
        // The window now holds the second restart and this one.
        assert_eq!(r.restarts_in_window(first + 10_000 * MS), 2);
    }

    #[test]
    fn a_quiet_window_resets_the_backoff_to_base() {
        let mut r = Restarts::with_seed(policy(5), 3);
        let t0 = Instant::now();
        for i in 0..3 {
            let until = backoff_until(r.on_exit(t0 + i * 2000 * MS));
            r.started(until);
        }
        let later = t0 + 30_000 * MS;
        let delay = backoff_until(r.on_exit(later)) - later;
        assert!(delay >= 50 * MS && delay <= 100 * MS, "{delay:?}");
    }

    #[test]
    fn max_restarts_zero_never_restarts_within_a_window() {
        let mut r = Restarts::with_seed(policy(0), 3);
        let t0 = Instant::now();
        assert_eq!(r.on_exit(t0), Gate::Open { until: t0 + 10_000 * MS });
        assert_eq!(r.poll(t0 + 10_000 * MS), Gate::Start);
    }

    #[test]
    fn a_failed_start_reported_again_decides_afresh_without_growing_the_backoff() {
        let mut r = Restarts::with_seed(policy(3), 11);
        let t0 = Instant::now();
        let until = backoff_until(r.on_exit(t0));
        // The start failed (no `started`): the backoff is still the first one's.
        let again = backoff_until(r.on_exit(until));
        assert!(again - until >= 50 * MS && again - until <= 100 * MS);
        assert_eq!(r.restarts_in_window(again), 0);
    }

    #[test]
    fn check_names_the_bad_field_and_value() {
        let bad = RestartPolicy { base: Duration::ZERO, ..policy(1) };
        assert_eq!(bad.check(), Err("RestartPolicy::base must be at least 1 ms (got 0ns)".to_owned()));
        let bad = RestartPolicy { cap: 10 * MS, ..policy(1) };
        assert_eq!(bad.check(), Err("RestartPolicy::cap (10ms) must be at least base (100ms)".to_owned()));
        let bad = RestartPolicy { window: Duration::ZERO, ..policy(1) };
        assert_eq!(bad.check(), Err("RestartPolicy::window must be at least 1 ms (got 0ns)".to_owned()));
        assert_eq!(RestartPolicy::default().check(), Ok(()));
    }

    #[test]
    fn a_window_or_backoff_too_long_for_an_instant_saturates_instead_of_panicking() {
        // `window: Duration::MAX` ("never forgive a crash") or a huge base overflowed
        // `Instant + Duration`: a panic on the thread that reported the death, then in every
        // request that reported it again.
        let t0 = Instant::now();
        let century = Duration::from_secs(100 * 365 * 24 * 3600);
        let never = RestartPolicy { base: MS, cap: Duration::MAX, max_restarts: 0, window: Duration::MAX };
        let Gate::Open { until } = Restarts::with_seed(never, 1).on_exit(t0) else {
            panic!("expected an open circuit")
        };
        assert!(until >= t0 + century);
        let huge = RestartPolicy { base: Duration::MAX, cap: Duration::MAX, max_restarts: 5, window: Duration::MAX };
        let mut restarts = Restarts::with_seed(huge, 1);
        assert!(backoff_until(restarts.on_exit(t0)) >= t0 + century);
        let one = RestartPolicy { max_restarts: 1, ..never };
        let mut restarts = Restarts::with_seed(one, 1);
        let start = backoff_until(restarts.on_exit(t0));
        restarts.started(start);
        let Gate::Open { until } = restarts.on_exit(start) else { panic!("expected an open circuit") };
        assert!(until >= start + century);
    }
}
