//! Injectable time, so tests drive windows and fade-ins without sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Nanoseconds since a clock's own origin.
pub type Nanos = u64;

/// A monotonic time source.
pub trait Clock: Send + Sync + 'static {
    /// Nanoseconds since this clock's origin; never decreases.
    fn now(&self) -> Nanos;
}

/// Real time: nanoseconds since the clock was made.
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
    fn now(&self) -> Nanos {
        saturating_nanos(self.origin.elapsed())
    }
}

/// Time that moves only when told to (tests and simulations).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock reading `start`.
    pub fn at(start: Duration) -> Self {
        Self(AtomicU64::new(saturating_nanos(start)))
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(saturating_nanos(d), Ordering::SeqCst);
    }

    /// Sets the clock to `t` if that is not in its past.
    pub fn set(&self, t: Duration) {
        self.0.fetch_max(saturating_nanos(t), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Nanos {
        self.0.load(Ordering::SeqCst)
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
        assert_eq!(c.now(), 1_000_000_000);
        c.advance(Duration::from_millis(5));
        assert_eq!(c.now(), 1_005_000_000);
        c.set(Duration::from_secs(0));
        assert_eq!(c.now(), 1_005_000_000);
        c.set(Duration::from_secs(2));
        assert_eq!(c.now(), 2_000_000_000);
    }

    #[test]
    fn monotonic_clock_does_not_go_back() {
        let c = MonotonicClock::new();
        let a = c.now();
        assert!(c.now() >= a);
    }
}
