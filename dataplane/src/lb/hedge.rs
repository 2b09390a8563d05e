//! Hedging: when a lookup is slower than a latency percentile, ask a second pod too, within a
//! budget of extra requests.
//!
//! The delay is the configured percentile of recent latencies (a log-bucketed histogram that
//! halves every window, so it follows change). The budget is a token bucket: each request earns
//! `budget` tokens, each hedge spends one, so hedges never exceed `budget × requests` plus the
//! small burst the bucket holds. All counters are atomics in fixed arrays: no locks, no allocation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::{Nanos, saturating_nanos};

const BUCKETS: usize = 64;
/// Upper bound of bucket 0; bucket `i` ends at `FIRST × GROWTH^i` (64 buckets reach ~5 s).
const FIRST_NS: f64 = 50_000.0;
const GROWTH: f64 = 1.2;
/// Tokens are counted in millionths.
const TOKEN: u64 = 1_000_000;

/// Hedging parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HedgeConfig {
    /// Latency percentile after which to hedge, in `(0, 1)` (e.g. 0.95).
    pub percentile: f64,
    /// Extra requests allowed as a fraction of requests (at most 0.05).
    pub budget: f64,
    /// Most hedges that can be saved up for a burst.
    pub burst: u32,
    /// Latencies needed before hedging starts.
    pub min_samples: u64,
    /// The histogram halves this often.
    pub window: Duration,
}

impl Default for HedgeConfig {
    fn default() -> Self {
        Self {
            percentile: 0.95,
            budget: 0.05,
            burst: 10,
            min_samples: 100,
            window: Duration::from_secs(10),
        }
    }
}

/// Latency histogram plus hedge budget.
#[derive(Debug)]
pub struct Hedger {
    config: HedgeConfig,
    counts: [AtomicU64; BUCKETS],
    last_decay: AtomicU64,
    tokens: AtomicU64,
}

impl Hedger {
    /// A hedger with no history and an empty budget; `budget` is clamped to `[0, 0.05]`.
    pub fn new(config: HedgeConfig) -> Self {
        let config = HedgeConfig {
            budget: config.budget.clamp(0.0, 0.05),
            percentile: config.percentile.clamp(0.5, 0.9999),
            ..config
        };
        Self {
            config,
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            last_decay: AtomicU64::new(0),
            tokens: AtomicU64::new(0),
        }
    }

    /// The parameters in force.
    pub fn config(&self) -> &HedgeConfig {
        &self.config
    }

    /// Records a completed lookup's latency at `now`.
    pub fn record(&self, latency: Duration, now: Nanos) {
        self.decay(now);
        self.counts[bucket_of(latency)].fetch_add(1, Ordering::Relaxed);
    }

    /// Credits the budget for one request.
    pub fn on_request(&self) {
        let credit = (self.config.budget * TOKEN as f64) as u64;
        let cap = u64::from(self.config.burst) * TOKEN;
        let _ = self
            .tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.saturating_add(credit).min(cap))
            });
    }

    /// Spends one hedge from the budget; false when the budget is spent.
    pub fn try_spend(&self) -> bool {
        self.tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                t.checked_sub(TOKEN)
            })
            .is_ok()
    }

    /// How long to wait before hedging: the percentile of recent latencies, or `None` while there
    /// are too few of them.
    pub fn delay(&self) -> Option<Duration> {
        let mut counts = [0u64; BUCKETS];
        for (c, a) in counts.iter_mut().zip(&self.counts) {
            *c = a.load(Ordering::Relaxed);
        }
        let total: u64 = counts.iter().sum();
        if total == 0 || total < self.config.min_samples {
            return None;
        }
        let rank = (self.config.percentile * total as f64).ceil() as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(bucket_upper(i));
            }
        }
        Some(bucket_upper(BUCKETS - 1))
    }

    fn decay(&self, now: Nanos) {
        let window = saturating_nanos(self.config.window).max(1);
        let last = self.last_decay.load(Ordering::Relaxed);
        if now.saturating_sub(last) < window {
            return;
        }
        // One thread wins the right to halve; the others go on recording.
        if self
            .last_decay
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            for c in &self.counts {
                let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v / 2));
            }
        }
    }
}

fn bucket_of(latency: Duration) -> usize {
    let ns = latency.as_nanos() as f64;
    if ns <= FIRST_NS {
        return 0;
    }
    let i = (ns / FIRST_NS).ln() / GROWTH.ln();
    (i.ceil() as usize).min(BUCKETS - 1)
}

fn bucket_upper(i: usize) -> Duration {
    Duration::from_nanos((FIRST_NS * GROWTH.powi(i as i32)) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    const S: u64 = 1_000_000_000;

    #[test]
    fn bucket_bounds_contain_the_latency() {
        for us in [1u64, 50, 51, 100, 999, 12_345, 400_000, 4_000_000] {
            let d = Duration::from_micros(us);
            let i = bucket_of(d);
            assert!(bucket_upper(i) >= d || i == BUCKETS - 1, "{us}");
            if i > 0 {
                assert!(bucket_upper(i - 1) < d, "{us}");
            }
        }
    }

    #[test]
    fn delay_is_the_percentile_within_one_bucket() {
        let h = Hedger::new(HedgeConfig::default());
        assert_eq!(h.delay(), None);
        // 1..=1000 ms, uniformly: p95 is 950 ms.
        for ms in 1..=1000u64 {
            h.record(Duration::from_millis(ms), 0);
        }
        let d = h.delay().expect("enough samples").as_secs_f64() * 1e3;
        assert!((950.0..=950.0 * GROWTH).contains(&d), "{d}");
    }

    #[test]
    fn too_few_samples_mean_no_hedging() {
        let h = Hedger::new(HedgeConfig::default());
        for _ in 0..99 {
            h.record(Duration::from_millis(1), 0);
        }
        assert_eq!(h.delay(), None);
        h.record(Duration::from_millis(1), 0);
        assert!(h.delay().is_some());
    }

    #[test]
    fn history_fades_so_the_delay_follows_change() {
        let h = Hedger::new(HedgeConfig::default());
        for _ in 0..1000 {
            h.record(Duration::from_millis(100), 0);
        }
        // Latency drops to 2 ms; after a few windows the old samples no longer set the delay.
        for w in 1..=6u64 {
            for _ in 0..1000 {
                h.record(Duration::from_millis(2), w * 10 * S);
            }
        }
        let d = h.delay().expect("delay");
        assert!(d <= Duration::from_micros(2400), "{d:?}");
    }

    /// Even when every request would like a hedge, hedges stay within 5% plus the burst.
    #[test]
    fn budget_caps_hedges() {
        let h = Hedger::new(HedgeConfig::default());
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut hedges = 0u64;
        let requests = 100_000u64;
        for _ in 0..requests {
            h.on_request();
            // Bursty demand: some stretches want a hedge on every request.
            if rng.random_bool(0.5) && h.try_spend() {
                hedges += 1;
            }
        }
        assert!(hedges <= requests / 20 + 10, "{hedges}");
        assert!(hedges >= requests / 20 - 10, "budget left unused: {hedges}");
        // The budget cannot be configured above 5%.
        let greedy = Hedger::new(HedgeConfig {
            budget: 0.5,
            ..HedgeConfig::default()
        });
        assert_eq!(greedy.config().budget, 0.05);
    }

    #[test]
    fn empty_budget_refuses() {
        let h = Hedger::new(HedgeConfig::default());
        assert!(!h.try_spend());
        for _ in 0..20 {
            h.on_request();
        }
        assert!(h.try_spend());
        assert!(!h.try_spend());
    }
}
