//! Injectable monotonic time, so tests drive cache expiry, load windows and fade-ins by hand and
//! never sleep. Production code runs on [`MonotonicClock`]; tests on [`ManualClock`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Nanoseconds since a clock's origin: the unit of the load balancer's atomics.
pub type Nanos = u64;

/// A monotonic time source.
pub trait Clock: Send + Sync + 'static {
    /// Time since this clock's origin; never decreases.
    fn now(&self) -> Duration;

    /// [`Clock::now`] in nanoseconds, saturating (585 years), for atomics and hot-path arithmetic.
    fn now_nanos(&self) -> Nanos {
        saturating_nanos(self.now())
    }
}

impl std::fmt::Debug for dyn Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

/// Real time: `Instant`-based, so immune to wall-clock jumps; its origin is when it was made.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// Time that moves only when told to, and only forward.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock standing at its origin (`now() == 0`).
    pub fn new() -> Self {
        Self::default()
    }

    /// A clock reading `start`.
    pub fn at(start: Duration) -> Self {
        Self(AtomicU64::new(saturating_nanos(start)))
    }

    /// Moves the clock forward by `by`, saturating instead of wrapping.
    pub fn advance(&self, by: Duration) {
        let by = saturating_nanos(by);
        // fetch_update cannot fail here: the closure always returns Some.
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_add(by))
            });
    }

    /// Sets the clock to `t` if that is not in its past.
    pub fn set(&self, t: Duration) {
        self.0.fetch_max(saturating_nanos(t), Ordering::AcqRel);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Acquire))
    }
}

/// `d` in nanoseconds, saturating at `u64::MAX` (585 years).
pub fn saturating_nanos(d: Duration) -> Nanos {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_forward() {
        let c = ManualClock::at(Duration::from_secs(1));
        assert_eq!(c.now_nanos(), 1_000_000_000);
        c.advance(Duration::from_millis(5));
        assert_eq!(c.now(), Duration::from_millis(1005));
        c.set(Duration::from_secs(0));
        assert_eq!(c.now_nanos(), 1_005_000_000);
        c.set(Duration::from_secs(2));
        assert_eq!(c.now_nanos(), 2_000_000_000);
    }

    #[test]
    fn manual_clock_starts_at_its_origin_and_moves_only_when_advanced() {
        let clock = ManualClock::new();
        assert_eq!(clock.now(), Duration::ZERO);
        clock.advance(Duration::from_millis(1500));
        assert_eq!(clock.now(), Duration::from_millis(1500));
        clock.advance(Duration::from_secs(2));
        assert_eq!(clock.now(), Duration::from_millis(3500));
    }

    #[test]
    fn manual_clock_saturates_instead_of_wrapping() {
        let clock = ManualClock::new();
        clock.advance(Duration::MAX);
        clock.advance(Duration::from_secs(1));
        assert_eq!(clock.now(), Duration::from_nanos(u64::MAX));
    }

    #[test]
    fn monotonic_clock_does_not_go_back() {
        let c = MonotonicClock::new();
        let a = c.now();
        assert!(c.now() >= a);
    }
}
