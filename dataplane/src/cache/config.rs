//! Cache settings and the pure rules that turn an entry's age into a decision.

use std::time::Duration;

/// Settings of one [`ByteCache`](super::ByteCache). Build from [`Default`] and override fields;
/// check values that come from users with [`CacheConfig::validate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// How long a found value may be served at all, counted from the start of the load that
    /// produced it. Default 60 s.
    pub ttl: Duration,
    /// The last part of `ttl` in which a hit still serves the value at once but also starts a
    /// background refresh. Default 15 s.
    pub stale: Duration,
    /// How long "not found" is served from the cache before the store is asked again. Default 5 s.
    pub negative_ttl: Duration,
    /// Byte budget: the sum of entry weights (bodies, gzip, ETag and per-entry overhead) that the
    /// cache keeps. Default 512 MiB.
    pub max_bytes: u64,
    /// Pause after a failed background refresh before the same entry may try again; doubles with
    /// each consecutive failure, capped at `stale`. Keeps a dead store from being hammered by
    /// every stale hit. Default 1 s.
    pub refresh_backoff: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(60),
            stale: Duration::from_secs(15),
            negative_ttl: Duration::from_secs(5),
            max_bytes: 512 * 1024 * 1024,
            refresh_backoff: Duration::from_secs(1),
        }
    }
}

/// Why a [`CacheConfig`] was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheConfigError {
    /// A TTL of zero would make every lookup a miss.
    #[error("cache ttl must be positive")]
    ZeroTtl,
    /// The stale window is the tail of the TTL, so it cannot be longer.
    #[error("cache stale window ({stale:?}) must not exceed the ttl ({ttl:?})")]
    StaleLongerThanTtl {
        /// The configured stale window.
        stale: Duration,
        /// The configured TTL.
        ttl: Duration,
    },
    /// A budget of zero bytes cannot hold anything.
    #[error("cache max bytes must be positive")]
    ZeroBudget,
    /// Without a pause, a failed refresh would be retried by the very next stale hit.
    #[error("cache refresh backoff must be positive")]
    ZeroBackoff,
}

impl CacheConfig {
    /// Checks the settings for contradictions. The cache itself never fails on a bad config (a
    /// stale window longer than the TTL simply makes every hit stale), so call this where the
    /// values come in from flags or manifests, to give the user a clear error.
    pub fn validate(&self) -> Result<(), CacheConfigError> {
        if self.ttl.is_zero() {
            return Err(CacheConfigError::ZeroTtl);
        }
        if self.stale > self.ttl {
            return Err(CacheConfigError::StaleLongerThanTtl {
                stale: self.stale,
                ttl: self.ttl,
            });
        }
        if self.max_bytes == 0 {
            return Err(CacheConfigError::ZeroBudget);
        }
        if self.refresh_backoff.is_zero() {
            return Err(CacheConfigError::ZeroBackoff);
        }
        Ok(())
    }

    /// What an entry of the given kind and age is worth.
    pub(crate) fn freshness(&self, found: bool, age: Duration) -> Freshness {
        if !found {
            return if age < self.negative_ttl {
                Freshness::Fresh
            } else {
                Freshness::Expired
            };
        }
        if age >= self.ttl {
            Freshness::Expired
        } else if age >= self.ttl.saturating_sub(self.stale) {
            Freshness::Stale
        } else {
            Freshness::Fresh
        }
    }

    /// How long an entry of the given kind is served at all: the TTL, or the negative TTL.
    fn lifetime(&self, found: bool) -> Duration {
        if found { self.ttl } else { self.negative_ttl }
    }

    /// What is left of the lifetime of an entry of the given kind and age (zero once expired).
    pub(crate) fn remaining(&self, found: bool, age: Duration) -> Duration {
        self.lifetime(found).saturating_sub(age)
    }

    /// Pause before the next refresh attempt after `failures` consecutive failures (1 = first):
    /// `refresh_backoff * 2^(failures-1)`, at most `stale` but never below `refresh_backoff`.
    pub(crate) fn refresh_pause(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(20);
        self.refresh_backoff
            .saturating_mul(1 << doublings)
            .min(self.stale)
            .max(self.refresh_backoff)
    }

    /// How long moka itself keeps an entry, as a memory backstop: entries past our own expiry
    /// are never served, so there is no point holding them until the byte budget pushes them out.
    /// The margin covers the gap between the load starting (our age) and the insert (moka's).
    pub(crate) fn backstop(&self, found: bool) -> Duration {
        const MARGIN: Duration = Duration::from_secs(1);
        self.lifetime(found).saturating_add(MARGIN)
    }
}

/// What a cached entry is worth at a given age.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freshness {
    /// Serve it.
    Fresh,
    /// Serve it, and have it refreshed in the background.
    Stale,
    /// Do not serve it: load again.
    Expired,
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn default_is_the_design_and_valid() {
        let c = CacheConfig::default();
        assert_eq!(
            (c.ttl, c.stale, c.negative_ttl),
            (secs(60), secs(15), secs(5))
        );
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn validate_names_each_contradiction() {
        let ok = CacheConfig::default();
        let cases = [
            (
                CacheConfig {
                    ttl: Duration::ZERO,
                    stale: Duration::ZERO,
                    ..ok
                },
                CacheConfigError::ZeroTtl,
            ),
            (
                CacheConfig {
                    stale: secs(61),
                    ..ok
                },
                CacheConfigError::StaleLongerThanTtl {
                    stale: secs(61),
                    ttl: secs(60),
                },
            ),
            (
                CacheConfig { max_bytes: 0, ..ok },
                CacheConfigError::ZeroBudget,
            ),
            (
                CacheConfig {
                    refresh_backoff: Duration::ZERO,
                    ..ok
                },
                CacheConfigError::ZeroBackoff,
            ),
        ];
        for (config, expected) in cases {
            assert_eq!(config.validate(), Err(expected.clone()), "{config:?}");
        }
        assert_eq!(
            CacheConfig {
                stale: secs(60),
                ..ok
            }
            .validate(),
            Ok(())
        );
        assert!(
            CacheConfigError::StaleLongerThanTtl {
                stale: secs(61),
                ttl: secs(60)
            }
            .to_string()
            .contains("stale window")
        );
    }

    #[test]
    fn found_entries_go_fresh_stale_expired_at_the_boundaries() {
        let c = CacheConfig::default();
        let at = |ms: u64| c.freshness(true, Duration::from_millis(ms));
        assert_eq!(at(0), Freshness::Fresh);
        assert_eq!(at(44_999), Freshness::Fresh);
        assert_eq!(at(45_000), Freshness::Stale);
        assert_eq!(at(59_999), Freshness::Stale);
        assert_eq!(at(60_000), Freshness::Expired);
        assert_eq!(at(u64::MAX), Freshness::Expired);
    }

    #[test]
    fn not_found_entries_have_no_stale_window() {
        let c = CacheConfig::default();
        assert_eq!(c.freshness(false, Duration::ZERO), Freshness::Fresh);
        assert_eq!(
            c.freshness(false, Duration::from_millis(4_999)),
            Freshness::Fresh
        );
        assert_eq!(c.freshness(false, secs(5)), Freshness::Expired);
    }

    #[test]
    fn stale_window_as_long_as_ttl_makes_every_hit_stale() {
        let c = CacheConfig {
            stale: secs(60),
            ..CacheConfig::default()
        };
        assert_eq!(c.freshness(true, Duration::ZERO), Freshness::Stale);
        let c = CacheConfig {
            stale: secs(90),
            ..CacheConfig::default()
        };
        assert_eq!(c.freshness(true, Duration::ZERO), Freshness::Stale);
    }

    #[test]
    fn refresh_pause_doubles_up_to_the_stale_window() {
        let c = CacheConfig::default();
        let pauses: Vec<u64> = (1..=7).map(|n| c.refresh_pause(n).as_secs()).collect();
        assert_eq!(pauses, [1, 2, 4, 8, 15, 15, 15]);
        assert_eq!(c.refresh_pause(u32::MAX), secs(15));
        // A stale window shorter than the base pause never shortens the pause below the base.
        let c = CacheConfig {
            stale: Duration::from_millis(100),
            ..c
        };
        assert_eq!(c.refresh_pause(3), secs(1));
    }

    #[test]
    fn backstop_outlives_our_own_expiry() {
        let c = CacheConfig::default();
        assert!(c.backstop(true) > c.ttl);
        assert!(c.backstop(false) > c.negative_ttl);
        assert!(c.backstop(false) < c.backstop(true));
    }

    proptest! {
        /// What is left is zero exactly when the entry has expired, and otherwise the lifetime
        /// minus the age: a response never advertises more than the cache will serve.
        #[test]
        fn remaining_is_the_rest_of_the_lifetime(
            ttl in 1u64..200_000, stale in 0u64..200_000, neg in 0u64..200_000,
            age in 0u64..400_000, found in any::<bool>(),
        ) {
            let c = CacheConfig {
                ttl: Duration::from_millis(ttl),
                stale: Duration::from_millis(stale.min(ttl)),
                negative_ttl: Duration::from_millis(neg),
                ..CacheConfig::default()
            };
            let age = Duration::from_millis(age);
            let left = c.remaining(found, age);
            prop_assert_eq!(left.is_zero(), c.freshness(found, age) == Freshness::Expired);
            let lifetime = if found { c.ttl } else { c.negative_ttl };
            prop_assert_eq!(left, lifetime.saturating_sub(age));
        }

        #[test]
        fn freshness_is_monotonic_in_age(
            ttl in 1u64..200_000, stale in 0u64..200_000, neg in 0u64..200_000,
            a in 0u64..400_000, b in 0u64..400_000, found in any::<bool>(),
        ) {
            let c = CacheConfig {
                ttl: Duration::from_millis(ttl),
                stale: Duration::from_millis(stale),
                negative_ttl: Duration::from_millis(neg),
                ..CacheConfig::default()
            };
            let rank = |f: Freshness| match f { Freshness::Fresh => 0, Freshness::Stale => 1, Freshness::Expired => 2 };
            let (young, old) = (a.min(b), a.max(b));
            prop_assert!(
                rank(c.freshness(found, Duration::from_millis(young)))
                    <= rank(c.freshness(found, Duration::from_millis(old)))
            );
        }

        #[test]
        fn freshness_matches_the_windows(
            ttl in 1u64..200_000, stale_frac in 0u64..=100, age in 0u64..400_000,
        ) {
            let stale = ttl * stale_frac / 100;
            let c = CacheConfig {
                ttl: Duration::from_millis(ttl),
                stale: Duration::from_millis(stale),
                ..CacheConfig::default()
            };
            let expected = if age >= ttl {
                Freshness::Expired
            } else if age >= ttl - stale {
                Freshness::Stale
            } else {
                Freshness::Fresh
            };
            prop_assert_eq!(c.freshness(true, Duration::from_millis(age)), expected);
            // Only found values have a stale window.
            prop_assert_ne!(c.freshness(false, Duration::from_millis(age)), Freshness::Stale);
        }

        #[test]
        fn refresh_pause_is_bounded_and_non_decreasing(
            base_ms in 1u64..10_000, stale_ms in 0u64..100_000, n in 1u32..64,
        ) {
            let c = CacheConfig {
                refresh_backoff: Duration::from_millis(base_ms),
                stale: Duration::from_millis(stale_ms),
                ..CacheConfig::default()
            };
            let p = c.refresh_pause(n);
            prop_assert!(p >= c.refresh_backoff);
            prop_assert!(p <= c.stale.max(c.refresh_backoff));
            prop_assert!(c.refresh_pause(n + 1) >= p);
        }
    }
}
