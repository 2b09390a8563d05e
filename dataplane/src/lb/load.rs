//! Per-endpoint load: in-flight requests, occupancy over a short sliding window, and latency.
//!
//! Occupancy is busy seconds per second: the summed time requests to a pod spent in flight within
//! the window, divided by the window's length (by Little's law, the mean concurrency). In-flight
//! alone reacts instantly but forgets a pod that just answered a burst slowly; occupancy remembers
//! the last ~150 ms. The load is the larger of the two, scaled by how slow the pod answers
//! compared with the others ([`latency_weight`]).
//!
//! Everything is lock-free atomics in fixed arrays: reading or recording a load never allocates.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::{Nanos, saturating_nanos};

/// Buckets in the sliding window.
pub const BUCKETS: usize = 5;

// A bucket is one u64: the low EPOCH_BITS bits tag which bucket period it holds, the rest count
// busy nanoseconds. Tags wrap after 2^24 periods (days); only recent tags are ever compared.
const EPOCH_BITS: u32 = 24;
const EPOCH_MASK: u64 = (1 << EPOCH_BITS) - 1;
const BUSY_MAX: u64 = (1 << (64 - EPOCH_BITS)) - 1;

/// How loads are measured and compared.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadConfig {
    /// Length of the occupancy window (split into [`BUCKETS`] buckets).
    pub window: Duration,
    /// Bound of the latency weight: a pod counts at most `cap` times (at least `1/cap` times)
    /// as loaded as its raw load, however slow (fast) it is relative to the others.
    pub latency_cap: f64,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_millis(150),
            latency_cap: 2.0,
        }
    }
}

/// Load counters of one endpoint.
#[derive(Debug)]
pub struct EndpointLoad {
    bucket_ns: u64,
    in_flight: AtomicU32,
    buckets: [AtomicU64; BUCKETS],
    /// Exponentially weighted mean latency in nanoseconds; 0 until the first sample.
    latency_ns: AtomicU64,
}

impl EndpointLoad {
    /// Empty counters for a window of `window`.
    pub fn new(window: Duration) -> Self {
        let bucket_ns = (saturating_nanos(window) / BUCKETS as u64).max(1);
        Self {
            bucket_ns,
            in_flight: AtomicU32::new(0),
            buckets: Default::default(),
            latency_ns: AtomicU64::new(0),
        }
    }

    /// Counts a request as started.
    #[inline]
    pub fn start(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request started at `started` as finished at `now`: it leaves in-flight, its time
    /// inside the window becomes busy time, and its duration feeds the latency mean.
    pub fn finish(&self, started: Nanos, now: Nanos) {
        // Never underflow, even if finish is called more often than start.
        let _ = self
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        let end = now.max(started);
        self.add_interval(started, end);
        self.observe_latency(end - started);
    }

    /// Requests started and not finished.
    #[inline]
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Busy seconds per second over the window ending at `now`.
    pub fn occupancy(&self, now: Nanos) -> f64 {
        let current = now / self.bucket_ns;
        let first = current.saturating_sub(BUCKETS as u64 - 1);
        let mut busy = 0u64;
        for epoch in first..=current {
            let v = self.slot(epoch).load(Ordering::Relaxed);
            if v & EPOCH_MASK == epoch & EPOCH_MASK {
                busy = busy.saturating_add(v >> EPOCH_BITS);
            }
        }
        // Never divide by less than the full buckets of a window: right after start there is
        // no history, which is not the same as a short window of intense work.
        let full = (BUCKETS as u64 - 1) * self.bucket_ns;
        let span = now.saturating_sub(first * self.bucket_ns).max(full).max(1);
        busy as f64 / span as f64
    }

    /// `max(in-flight, occupancy)` at `now`, before latency weighting.
    #[inline]
    pub fn load(&self, now: Nanos) -> f64 {
        f64::from(self.in_flight()).max(self.occupancy(now))
    }

    /// The mean latency, if any request has finished.
    pub fn latency(&self) -> Option<Duration> {
        match self.latency_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    fn slot(&self, epoch: u64) -> &AtomicU64 {
        &self.buckets[(epoch % BUCKETS as u64) as usize]
    }

    /// Spreads `[start, end)` over the buckets of the window that ends at `end`.
    fn add_interval(&self, start: Nanos, end: Nanos) {
        let b = self.bucket_ns;
        let last = end / b;
        let first = (start / b).max(last.saturating_sub(BUCKETS as u64 - 1));
        for epoch in first..=last {
            let lo = start.max(epoch * b);
            let hi = end.min((epoch + 1).saturating_mul(b));
            if hi > lo {
                self.add_busy(epoch, hi - lo);
            }
        }
    }

    fn add_busy(&self, epoch: u64, ns: u64) {
        let tag = epoch & EPOCH_MASK;
        let _ = self
            .slot(epoch)
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                let held = v & EPOCH_MASK;
                let busy = if held == tag {
                    v >> EPOCH_BITS
                } else if is_newer(held, tag) {
                    // Another thread with a later clock reading already reused this slot; the
                    // old period is out of every window that matters.
                    return None;
                } else {
                    0
                };
                Some(tag | (busy.saturating_add(ns).min(BUSY_MAX) << EPOCH_BITS))
            });
    }

    fn observe_latency(&self, sample: u64) {
        let sample = sample.max(1);
        let _ = self
            .latency_ns
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(if old == 0 {
                    sample
                } else {
                    // Weight 1/8 per sample: follows a change within a few dozen requests.
                    let next = (old as i128 + (sample as i128 - old as i128) / 8) as u64;
                    next.max(1)
                })
            });
    }
}

/// True when tag `a` is a later period than tag `b` (modulo the tag width).
fn is_newer(a: u64, b: u64) -> bool {
    let d = a.wrapping_sub(b) & EPOCH_MASK;
    d != 0 && d < (1 << (EPOCH_BITS - 1))
}

/// Factor applied to a pod's raw load for its latency relative to the mean latency of the pods
/// compared: `latency / mean`, bounded to `[1/cap, cap]`; 1 when either is unknown.
///
/// A pod that answers slowly (a noisy neighbour, GC, a cold cache) looks more loaded than its
/// request count says, so bounded load passes it over sooner; the cap keeps one outlier
/// measurement from emptying or flooding a pod.
#[inline]
pub fn latency_weight(latency: Option<Duration>, mean_latency_ns: Option<f64>, cap: f64) -> f64 {
    match (latency, mean_latency_ns) {
        (Some(l), Some(mean)) if mean > 0.0 && cap >= 1.0 => {
            (l.as_nanos() as f64 / mean).clamp(1.0 / cap, cap)
        }
        _ => 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn occupancy_is_busy_time_over_the_window() {
        let l = EndpointLoad::new(Duration::from_millis(150));
        // A bucket boundary (30 ms buckets).
        let t0 = 9_990 * MS;
        // Two requests of 60 ms each, back to back in parallel: 120 ms busy in 150 ms.
        l.start();
        l.start();
        assert_eq!(l.in_flight(), 2);
        l.finish(t0 - 60 * MS, t0);
        l.finish(t0 - 60 * MS, t0);
        assert_eq!(l.in_flight(), 0);
        // t0 is a bucket boundary, so the window ending at t0 spans 4 full buckets = 120 ms.
        let occ = l.occupancy(t0);
        assert!((occ - 1.0).abs() < 1e-9, "{occ}");
        assert!((l.load(t0) - 1.0).abs() < 1e-9);
        // Half a bucket later the window is 135 ms long and the same busy time counts for less.
        let occ_later = l.occupancy(t0 + 15 * MS);
        assert!((occ_later - 120.0 / 135.0).abs() < 1e-9, "{occ_later}");
        // Once the window has moved past the requests, nothing remains.
        assert_eq!(l.occupancy(t0 + 200 * MS), 0.0);
    }

    #[test]
    fn long_requests_count_only_their_part_inside_the_window() {
        let l = EndpointLoad::new(Duration::from_millis(150));
        let now = 60_000 * MS;
        l.start();
        l.finish(now - 10_000 * MS, now);
        // One request in flight for the whole window: occupancy 1, not 10 s / 150 ms.
        let occ = l.occupancy(now);
        assert!((occ - 1.0).abs() < 1e-9, "{occ}");
        assert_eq!(l.latency(), Some(Duration::from_secs(10)));
    }

    #[test]
    fn load_is_the_larger_of_in_flight_and_occupancy() {
        let l = EndpointLoad::new(Duration::from_millis(150));
        let now = 990 * MS; // a bucket boundary: the window is 120 ms
        for _ in 0..3 {
            l.start();
        }
        assert_eq!(l.load(now), 3.0);
        l.finish(now - 120 * MS, now);
        l.finish(now - 120 * MS, now);
        // Occupancy 2, in flight 1.
        assert!((l.load(now) - 2.0).abs() < 1e-9);
    }

    #[test]
    fn no_history_is_not_a_short_window() {
        let l = EndpointLoad::new(Duration::from_millis(150));
        l.start();
        l.finish(5 * MS, 10 * MS);
        // 5 ms busy counts over at least the 120 ms of four full buckets, not over 10 ms.
        let occ = l.occupancy(10 * MS);
        assert!((occ - 5.0 / 120.0).abs() < 1e-9, "{occ}");
    }

    #[test]
    fn in_flight_never_underflows() {
        let l = EndpointLoad::new(Duration::from_millis(150));
        l.finish(0, 5);
        assert_eq!(l.in_flight(), 0);
    }

    #[test]
    fn stale_buckets_are_not_counted_after_their_slot_is_reused() {
        let l = EndpointLoad::new(Duration::from_millis(150));
        l.start();
        l.finish(0, 30 * MS);
        // Bucket 5 reuses bucket 0's slot: the old 30 ms must not leak into the new period.
        let later = 5 * 30 * MS + 10 * MS;
        l.start();
        l.finish(later - MS, later);
        let occ = l.occupancy(later);
        assert!((occ - 1.0 / 130.0).abs() < 1e-9, "{occ}");
    }

    #[test]
    fn latency_mean_follows_samples() {
        let l = EndpointLoad::new(Duration::from_millis(150));
        assert_eq!(l.latency(), None);
        l.start();
        l.finish(0, 8 * MS);
        assert_eq!(l.latency(), Some(Duration::from_millis(8)));
        for _ in 0..64 {
            l.start();
            l.finish(0, 16 * MS);
        }
        let ms = l.latency().expect("latency").as_secs_f64() * 1e3;
        assert!((15.9..=16.0).contains(&ms), "{ms}");
    }

    #[test]
    fn latency_weight_is_relative_and_capped() {
        let ms = Duration::from_millis;
        let mean = Some(10e6);
        assert_eq!(latency_weight(Some(ms(10)), mean, 2.0), 1.0);
        assert_eq!(latency_weight(Some(ms(15)), mean, 2.0), 1.5);
        assert_eq!(latency_weight(Some(ms(100)), mean, 2.0), 2.0);
        assert_eq!(latency_weight(Some(ms(1)), mean, 2.0), 0.5);
        assert_eq!(latency_weight(None, mean, 2.0), 1.0);
        assert_eq!(latency_weight(Some(ms(5)), None, 2.0), 1.0);
    }

    #[test]
    fn newer_tag_comparison_wraps() {
        assert!(is_newer(5, 0));
        assert!(!is_newer(0, 5));
        assert!(!is_newer(3, 3));
        assert!(is_newer(1, EPOCH_MASK));
    }

    proptest! {
        /// Occupancy equals the exact overlap of finished requests with the window.
        #[test]
        fn occupancy_matches_exact_overlap(
            reqs in proptest::collection::vec((0u64..400, 1u64..300), 1..20),
            end_ms in 300u64..700,
        ) {
            let b = 30 * MS;
            let l = EndpointLoad::new(Duration::from_millis(150));
            let now = end_ms * MS;
            let mut finished = Vec::new();
            // Finish requests in end order so that every finish happens at or before `now`.
            let mut rs: Vec<(u64, u64)> = reqs.iter()
                .map(|&(s, d)| (s * MS, ((s + d) * MS).min(now)))
                .filter(|(s, e)| s < e)
                .collect();
            rs.sort_by_key(|r| r.1);
            for (s, e) in rs {
                l.start();
                l.finish(s, e);
                finished.push((s, e));
            }
            let window_start = (now / b).saturating_sub(BUCKETS as u64 - 1) * b;
            // Each request contributes only what falls in the window of its own finish time,
            // which contains [window_start, now) intersected with its own window.
            let expected: u64 = finished.iter().map(|&(s, e)| {
                let own_start = (e / b).saturating_sub(BUCKETS as u64 - 1) * b;
                let lo = s.max(window_start).max(own_start);
                e.min(now).saturating_sub(lo)
            }).sum();
            let span = (now - window_start) as f64;
            prop_assert!((l.occupancy(now) - expected as f64 / span).abs() < 1e-9);
        }
    }
}
