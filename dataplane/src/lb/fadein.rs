//! N-ring fade-in: each scale-up adds a ring that takes over keys gradually; removals are at once.
//!
//! A new pod starts with a cold cache. Moving its whole 1/(N+1) share of keys onto it at once
//! would send a burst of misses to the store; moving them over [`FadeConfig::duration`] along
//! `progress^exponent` (slow at first, fast at the end) lets its cache fill while the old owners
//! still serve. Each scale-up is a *stage*: the previous stage's pods plus the new ones, with its
//! own start time, so concurrent scale-ups fade independently. A key picks the newest stage whose
//! share has passed the key's *fade point*, a fixed number in `[0, 1)` derived from the key; so a
//! key moves exactly once, at a time fixed by its hash, and never flips back.
//!
//! A [`RingSet`] is immutable: an update builds a new one (the caller swaps it in atomically).

use std::time::Duration;

use xxhash_rust::xxh64::xxh64;

use super::endpoint::Endpoint;
use super::ring::Ring;
use crate::clock::{Nanos, saturating_nanos};

/// Seed for the fade point hash, different from the ring's (seed 0) so that when a key moves is
/// independent of where it lands.
const FADE_SEED: u64 = 0x6661_6465_2d69_6e21;

/// How new rings fade in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FadeConfig {
    /// Time for a new stage to take its full share.
    pub duration: Duration,
    /// Exponent of the curve `share = progress^exponent`.
    pub exponent: f64,
}

impl Default for FadeConfig {
    fn default() -> Self {
        // The ingress fades new products pods in along the same curve.
        Self {
            duration: prapi_common::fade_in::DURATION,
            exponent: prapi_common::fade_in::EXPONENT,
        }
    }
}

impl FadeConfig {
    /// Share of keys a stage started at `started` has taken over at `now`, in `[0, 1]`.
    pub fn share(&self, started: Nanos, now: Nanos) -> f64 {
        let d = saturating_nanos(self.duration);
        if d == 0 || now >= started.saturating_add(d) {
            return 1.0;
        }
        let progress = now.saturating_sub(started) as f64 / d as f64;
        progress.powf(self.exponent)
    }
}

/// A key's fade point: its stage is the newest whose share exceeds this.
#[inline]
pub fn fade_point(key: &str) -> f64 {
    unit(xxh64(key.as_bytes(), FADE_SEED))
}

/// Maps a u64 uniformly onto `[0, 1)`.
#[inline]
pub fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// One ring of a [`RingSet`]: a set of pods and when it began to take traffic.
#[derive(Debug, Clone)]
pub struct Stage {
    ring: Ring,
    members: Box<[u32]>,
    started: Nanos,
    base: bool,
}

impl Stage {
    fn new(endpoints: &[Endpoint], members: Vec<u32>, started: Nanos, base: bool) -> Self {
        let ring = Ring::with_ids(members.iter().map(|&m| (m, endpoints[m as usize].as_str())));
        Self {
            ring,
            members: members.into_boxed_slice(),
            started,
            base,
        }
    }

    /// The stage's ring; member ids index [`RingSet::endpoints`].
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// Indices into [`RingSet::endpoints`] of the stage's pods, ascending.
    pub fn members(&self) -> &[u32] {
        &self.members
    }

    /// When the stage began to fade in (meaningless for the base stage).
    pub fn started(&self) -> Nanos {
        self.started
    }

    /// True for the oldest stage, which is fully in.
    pub fn is_base(&self) -> bool {
        self.base
    }
}

/// The pods and the stages of rings over them, oldest (fully in) first.
#[derive(Debug, Clone)]
pub struct RingSet {
    endpoints: Box<[Endpoint]>,
    stages: Box<[Stage]>,
    config: FadeConfig,
}

impl RingSet {
    /// All `endpoints` in one base stage: at start there is nothing to fade in from.
    pub fn new(endpoints: &[Endpoint], config: FadeConfig) -> Self {
        let mut eps = endpoints.to_vec();
        eps.sort();
        eps.dedup();
        let members: Vec<u32> = (0..eps.len()).map(index_u32).collect();
        let stages = if eps.is_empty() {
            Vec::new()
        } else {
            vec![Stage::new(&eps, members, 0, true)]
        };
        Self {
            endpoints: eps.into_boxed_slice(),
            stages: stages.into_boxed_slice(),
            config,
        }
    }

    /// The set after the pods became `endpoints` at `now`: removed pods leave every stage at
    /// once, added pods form a new stage (the newest stage's pods plus them) starting at `now`,
    /// and stages that are complete at `now` absorb the older ones.
    pub fn update(&self, endpoints: &[Endpoint], now: Nanos) -> Self {
        let mut eps = endpoints.to_vec();
        eps.sort();
        eps.dedup();
        let new_index = |e: &Endpoint| eps.binary_search(e).ok().map(index_u32);

        // Carry stages over, re-indexed, without removed pods.
        let mut stages: Vec<(Vec<u32>, Nanos)> = self
            .stages
            .iter()
            .map(|s| {
                let members = s
                    .members
                    .iter()
                    .filter_map(|&m| new_index(&self.endpoints[m as usize]))
                    .collect();
                (members, s.started)
            })
            .collect();

        // A complete stage makes every older one irrelevant.
        if let Some(done) = stages
            .iter()
            .rposition(|(_, started)| self.config.share(*started, now) >= 1.0)
        {
            stages.drain(..done);
        }
        // Stages left empty or identical to their predecessor (a fading pod was removed) go.
        stages.retain(|(m, _)| !m.is_empty());
        stages.dedup_by(|later, earlier| later.0 == earlier.0);

        let known: Vec<bool> = {
            let mut k = vec![false; eps.len()];
            for (i, e) in eps.iter().enumerate() {
                k[i] = self.endpoints.binary_search(e).is_ok();
            }
            k
        };
        let added: Vec<u32> = (0..eps.len())
            .filter(|&i| !known[i])
            .map(index_u32)
            .collect();
        if !added.is_empty() {
            let mut members = stages.last().map(|(m, _)| m.clone()).unwrap_or_default();
            members.extend(&added);
            members.sort_unstable();
            stages.push((members, now));
        }

        let stages: Vec<Stage> = stages
            .into_iter()
            .enumerate()
            .map(|(i, (members, started))| Stage::new(&eps, members, started, i == 0))
            .collect();
        Self {
            endpoints: eps.into_boxed_slice(),
            stages: stages.into_boxed_slice(),
            config: self.config,
        }
    }

    /// All current pods, sorted.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// The stages, oldest first.
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// The fade configuration.
    pub fn config(&self) -> FadeConfig {
        self.config
    }

    /// The stage that serves a key with fade point `point` at `now`; `None` when there are no pods.
    #[inline]
    pub fn stage_for(&self, point: f64, now: Nanos) -> Option<&Stage> {
        self.stages
            .iter()
            .rev()
            .find(|s| s.base || self.config.share(s.started, now) > point)
    }

    /// The owner of `key` at `now` (no load bounding): the endpoint index in [`Self::endpoints`].
    pub fn owner(&self, key: &str, now: Nanos) -> Option<u32> {
        self.stage_for(fade_point(key), now)?.ring.owner(key)
    }
}

fn index_u32(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn eps(ids: &[u32]) -> Vec<Endpoint> {
        ids.iter()
            .map(|i| Endpoint::parse(&format!("http://10.0.0.{i}:8080")).expect("valid"))
            .collect()
    }

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("P{i}")).collect()
    }

    #[test]
    fn curve_is_progress_to_the_exponent() {
        let c = FadeConfig::default();
        assert_eq!(c.share(10 * S, 10 * S), 0.0);
        assert!((c.share(0, 15 * S) - 0.5f64.powf(2.5)).abs() < 1e-12);
        assert_eq!(c.share(0, 30 * S), 1.0);
        assert_eq!(c.share(0, 99 * S), 1.0);
        let instant = FadeConfig {
            duration: Duration::ZERO,
            exponent: 2.5,
        };
        assert_eq!(instant.share(5, 5), 1.0);
    }

    #[test]
    fn fade_points_are_uniform() {
        let n = 100_000;
        let mut hist = [0usize; 10];
        for k in keys(n) {
            let p = fade_point(&k);
            assert!((0.0..1.0).contains(&p));
            hist[(p * 10.0) as usize] += 1;
        }
        for h in hist {
            assert!((h as f64 / n as f64 - 0.1).abs() < 0.005, "{hist:?}");
        }
    }

    /// Share of keys on the new stage, and on the new pod, follow progress^2.5 in simulated time.
    #[test]
    fn shares_follow_the_curve() {
        let cfg = FadeConfig::default();
        let old = RingSet::new(&eps(&[1, 2, 3, 4]), cfg);
        let t0 = 100 * S;
        let set = old.update(&eps(&[1, 2, 3, 4, 5]), t0);
        assert_eq!(set.stages().len(), 2);
        let new_pod = set
            .endpoints()
            .iter()
            .position(|e| e.as_str() == "http://10.0.0.5:8080")
            .expect("new pod") as u32;
        let ks = keys(40_000);
        // The new pod's arc on the full ring: its eventual share.
        let full = Ring::with_ids(
            set.endpoints()
                .iter()
                .enumerate()
                .map(|(i, e)| (i as u32, e.as_str())),
        );
        let arc =
            ks.iter().filter(|k| full.owner(k) == Some(new_pod)).count() as f64 / ks.len() as f64;
        let mut last_owner: Vec<Option<u32>> = ks.iter().map(|k| set.owner(k, t0)).collect();
        for step in 0..=30u64 {
            let now = t0 + step * S;
            let expected = cfg.share(t0, now);
            let on_new_stage = ks
                .iter()
                .filter(|k| {
                    set.stage_for(fade_point(k), now)
                        .is_some_and(|s| !s.is_base())
                })
                .count() as f64
                / ks.len() as f64;
            assert!(
                (on_new_stage - expected).abs() < 0.01,
                "t={step}s: {on_new_stage:.4} vs {expected:.4}"
            );
            let on_new_pod = ks
                .iter()
                .filter(|k| set.owner(k, now) == Some(new_pod))
                .count() as f64
                / ks.len() as f64;
            assert!(
                (on_new_pod - expected * arc).abs() < 0.01,
                "t={step}s: pod share {on_new_pod:.4} vs {:.4}",
                expected * arc
            );
            // Keys only ever move from their old owner to the new pod, and never back.
            for (k, last) in ks.iter().zip(last_owner.iter_mut()) {
                let now_owner = set.owner(k, now);
                if now_owner != *last {
                    assert_eq!(now_owner, Some(new_pod), "{k} at {step}s");
                    assert_ne!(*last, Some(new_pod), "{k} moved back at {step}s");
                }
                *last = now_owner;
            }
        }
        // Complete: the next update folds the stages into one ring, placement unchanged.
        let folded = set.update(&eps(&[1, 2, 3, 4, 5]), t0 + 31 * S);
        assert_eq!(folded.stages().len(), 1);
        for k in ks.iter().take(2000) {
            assert_eq!(folded.owner(k, t0 + 31 * S), full.owner(k));
        }
    }

    #[test]
    fn concurrent_scale_ups_fade_independently() {
        let cfg = FadeConfig::default();
        let t0 = 10 * S;
        let t1 = t0 + 10 * S;
        let set = RingSet::new(&eps(&[1, 2, 3]), cfg)
            .update(&eps(&[1, 2, 3, 4]), t0)
            .update(&eps(&[1, 2, 3, 4, 5]), t1);
        assert_eq!(set.stages().len(), 3);
        assert_eq!(set.stages()[2].members().len(), 5);
        let ks = keys(40_000);
        for now in [t1, t1 + 5 * S, t1 + 15 * S, t1 + 25 * S] {
            let stage_index = |k: &String| {
                let s = set.stage_for(fade_point(k), now).expect("stage");
                set.stages()
                    .iter()
                    .position(|x| std::ptr::eq(x, s))
                    .expect("own stage")
            };
            let idx: Vec<usize> = ks.iter().map(stage_index).collect();
            let frac = |f: &dyn Fn(usize) -> bool| {
                idx.iter().filter(|&&i| f(i)).count() as f64 / ks.len() as f64
            };
            // Stage 1 or newer follows the first curve, stage 2 its own.
            assert!((frac(&|i| i >= 1) - cfg.share(t0, now)).abs() < 0.01);
            assert!((frac(&|i| i == 2) - cfg.share(t1, now)).abs() < 0.01);
        }
        // When the first scale-up completes, the base absorbs it; the second keeps fading.
        let later = set.update(&eps(&[1, 2, 3, 4, 5]), t0 + 30 * S);
        assert_eq!(later.stages().len(), 2);
        assert_eq!(later.stages()[0].members().len(), 4);
        assert_eq!(later.stages()[1].started(), t1);
    }

    #[test]
    fn removals_apply_at_once_everywhere() {
        let cfg = FadeConfig::default();
        let t0 = 10 * S;
        let set = RingSet::new(&eps(&[1, 2, 3]), cfg).update(&eps(&[1, 2, 3, 4]), t0);
        // Pod 2 (in the base) goes mid-fade: no key may land on it, at any time.
        let set = set.update(&eps(&[1, 3, 4]), t0 + 5 * S);
        assert_eq!(set.stages().len(), 2);
        assert!(set.endpoints().iter().all(|e| !e.as_str().contains(".2:")));
        for k in keys(5000) {
            for now in [t0 + 5 * S, t0 + 20 * S] {
                let owner = set.owner(&k, now).expect("owner") as usize;
                assert!(owner < set.endpoints().len());
            }
        }
        // The fading pod itself removed: its stage is now identical to the base and goes.
        let set = set.update(&eps(&[1, 3]), t0 + 6 * S);
        assert_eq!(set.stages().len(), 1);
        assert!(set.stages()[0].is_base());
    }

    #[test]
    fn first_pods_and_replacement_of_all_pods_take_traffic_at_once() {
        let cfg = FadeConfig::default();
        let empty = RingSet::new(&[], cfg);
        assert!(empty.owner("P1", 0).is_none());
        let set = empty.update(&eps(&[1, 2]), 5 * S);
        assert_eq!(set.stages().len(), 1);
        assert!(set.owner("P1", 5 * S).is_some());
        // Every old pod replaced: nothing to fade from, the new pods are the base.
        let set = set.update(&eps(&[7, 8]), 6 * S);
        assert_eq!(set.stages().len(), 1);
        assert!(set.stages()[0].is_base());
        assert!(set.owner("P1", 6 * S).is_some());
        assert!(set.update(&[], 7 * S).owner("P1", 7 * S).is_none());
    }
}
