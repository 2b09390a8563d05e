//! What the cache stores per key: the value, when it was loaded, and the gate that lets exactly
//! one background refresh run for it at a time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use super::Lookup;
use super::config::CacheConfig;
use super::rendered::Rendered;
use crate::clock::saturating_nanos;

/// Bytes charged per entry besides its key and its value's bytes: our `Entry` in its `Arc`, and
/// moka's own records of the entry (its value node, the access- and write-order deque nodes, its
/// timer-wheel slot, its hash-table bucket and its share of the table). Measured, not derived:
/// the test `weights_cover_the_heap_each_entry_keeps` counts what entries really keep allocated,
/// and the `memory` bench holds the budget against the process's RSS.
const ENTRY_OVERHEAD: usize = 360;

/// Bytes charged on top for a found value: the `Rendered` in its `Arc` and the shared headers
/// and allocations behind its two bodies and its ETag.
const FOUND_OVERHEAD: usize = size_of::<Rendered>() + 160;

/// What an entry of `value` under a key of `key_bytes` weighs against the byte budget.
pub(crate) fn weight(value: Option<&Rendered>, key_bytes: usize) -> u32 {
    let total = key_bytes
        .saturating_add(ENTRY_OVERHEAD)
        .saturating_add(value.map_or(0, |r| r.byte_size().saturating_add(FOUND_OVERHEAD)));
    u32::try_from(total).unwrap_or(u32::MAX)
}

/// One cached result of a load. Immutable except for the refresh gate; a refresh makes a new
/// `Entry` and swaps it in, so readers holding the old one are never affected.
pub(crate) struct Entry {
    /// `None` caches "not found".
    value: Option<Arc<Rendered>>,
    /// Clock time when the load that produced this entry started: age is judged from it, which
    /// errs on the side of treating data as older than it is.
    loaded_at: Duration,
    /// Weight against the byte budget, computed once because moka asks for it more than once.
    weight: u32,
    refresh: RefreshGate,
}

impl Entry {
    /// An entry for `value`, loaded at `loaded_at`, under a key of `key_bytes` (inline and heap).
    pub(crate) fn new(value: Option<Rendered>, loaded_at: Duration, key_bytes: usize) -> Self {
        Self {
            weight: weight(value.as_ref(), key_bytes),
            value: value.map(Arc::new),
            loaded_at,
            refresh: RefreshGate::default(),
        }
    }

    pub(crate) fn is_found(&self) -> bool {
        self.value.is_some()
    }

    pub(crate) fn age(&self, now: Duration) -> Duration {
        now.saturating_sub(self.loaded_at)
    }

    pub(crate) fn weight(&self) -> u32 {
        self.weight
    }

    pub(crate) fn refresh(&self) -> &RefreshGate {
        &self.refresh
    }

    /// What a lookup hands out: a reference-count increment, no copy, and the `remaining` time
    /// the cache serves it.
    pub(crate) fn lookup(&self, remaining: Duration) -> Lookup {
        match &self.value {
            Some(rendered) => Lookup::Found(Arc::clone(rendered), remaining),
            None => Lookup::NotFound(remaining),
        }
    }
}

/// Admits at most one background refresh per entry at a time, and spaces out retries after
/// failures. One atomic word: `IN_FLIGHT`, `SUPERSEDED` (a refresh replaced this entry, so readers
/// still holding it must not refresh it again), or the clock time (ns) before which no refresh may
/// start. Stale hits that lose the race or come too early do nothing and serve the old value.
#[derive(Debug, Default)]
pub(crate) struct RefreshGate {
    state: AtomicU64,
    failures: AtomicU32,
}

const IN_FLIGHT: u64 = u64::MAX;
const SUPERSEDED: u64 = u64::MAX - 1;
/// Latest time (ns) a back-off may end at; keeps times apart from the two markers above.
const LATEST: u64 = SUPERSEDED - 1;

impl RefreshGate {
    /// True for exactly one caller per refresh: the one that must start it.
    pub(crate) fn try_begin(&self, now: Duration) -> bool {
        let state = self.state.load(Ordering::Acquire);
        if state > LATEST || saturating_nanos(now) < state {
            return false;
        }
        self.state
            .compare_exchange(state, IN_FLIGHT, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The refresh failed: no new attempt before `now` plus a pause that grows with consecutive
    /// failures. Returns the pause.
    pub(crate) fn failed(&self, now: Duration, config: &CacheConfig) -> Duration {
        let failures = self
            .failures
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        let pause = config.refresh_pause(failures);
        let not_before = saturating_nanos(now.saturating_add(pause)).min(LATEST);
        self.state.store(not_before, Ordering::Release);
        pause
    }

    /// The refresh finished without replacing this entry (it had left the cache meanwhile):
    /// open the gate again, so a reader still holding it is not blocked forever.
    pub(crate) fn release(&self) {
        self.state.store(0, Ordering::Release);
    }

    /// A refresh replaced this entry: it is never refreshed again.
    pub(crate) fn superseded(&self) {
        self.state.store(SUPERSEDED, Ordering::Release);
    }

    /// Whether a refresh holds the gate (tests wait on it to know a refresh has finished).
    #[cfg(test)]
    pub(crate) fn is_in_flight(&self) -> bool {
        self.state.load(Ordering::Acquire) == IN_FLIGHT
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn gate_admits_one_refresh_until_it_ends() {
        let gate = RefreshGate::default();
        assert!(gate.try_begin(secs(50)));
        assert!(!gate.try_begin(secs(50)));
        assert!(!gate.try_begin(secs(10_000)));
        gate.release();
        assert!(gate.try_begin(secs(50)));
        gate.superseded();
        assert!(!gate.try_begin(secs(50)));
        assert!(!gate.try_begin(Duration::MAX));
    }

    #[test]
    fn backoff_never_reaches_the_markers() {
        let gate = RefreshGate::default();
        assert!(gate.try_begin(Duration::MAX));
        gate.failed(Duration::MAX, &CacheConfig::default());
        assert!(!gate.is_in_flight());
        assert!(gate.try_begin(Duration::from_nanos(LATEST)));
    }

    #[test]
    fn gate_backs_off_after_failures() {
        let config = CacheConfig::default();
        let gate = RefreshGate::default();
        assert!(gate.try_begin(secs(45)));
        assert_eq!(gate.failed(secs(45), &config), secs(1));
        assert!(!gate.try_begin(Duration::from_millis(45_999)));
        assert!(gate.try_begin(secs(46)));
        assert_eq!(gate.failed(secs(46), &config), secs(2));
        assert!(!gate.try_begin(Duration::from_millis(47_999)));
        assert!(gate.try_begin(secs(48)));
    }

    #[test]
    fn only_one_of_many_threads_begins() {
        let gate = Arc::new(RefreshGate::default());
        let winners: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let gate = Arc::clone(&gate);
                    s.spawn(move || (0..1000).filter(|_| gate.try_begin(secs(1))).count())
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread finished"))
                .sum()
        });
        assert_eq!(winners, 1);
    }

    #[test]
    fn weight_counts_bodies_and_overhead() {
        let found = Entry::new(
            Some(Rendered::new(Bytes::from(vec![b'x'; 10_000]), "\"v\"")),
            Duration::ZERO,
            24,
        );
        let missing = Entry::new(None, Duration::ZERO, 24);
        assert!(found.weight() as usize > 10_000);
        assert!(missing.weight() > 0);
        assert!(
            found.weight() - missing.weight() >= 10_000,
            "{} vs {}",
            found.weight(),
            missing.weight()
        );
        assert!(found.is_found() && !missing.is_found());
        assert_eq!(missing.lookup(secs(3)), Lookup::NotFound(secs(3)));
    }

    #[test]
    fn the_weigher_charges_key_value_and_overheads() {
        let r = Rendered::new(Bytes::from(vec![b'y'; 5_000]), "W/\"0123456789abcdef\"");
        let empty = weight(None, 0);
        assert_eq!(empty as usize, ENTRY_OVERHEAD);
        // A key's bytes count one for one, for found and negative entries alike.
        assert_eq!(weight(None, 100) - empty, 100);
        assert_eq!(weight(Some(&r), 100) - weight(Some(&r), 0), 100);
        // A found value adds its bodies, its ETag (text and header) and its own overhead.
        assert_eq!(
            (weight(Some(&r), 0) - empty) as usize,
            5_000 + r.gzip.len() + 2 * r.etag.len() + FOUND_OVERHEAD
        );
        // Too big for moka's u32 weight: the most it can say, never a wrapped small number.
        assert_eq!(weight(None, usize::MAX), u32::MAX);
    }

    #[test]
    fn age_never_underflows() {
        let e = Entry::new(None, secs(10), 0);
        assert_eq!(e.age(secs(5)), Duration::ZERO);
        assert_eq!(e.age(secs(12)), secs(2));
    }
}
