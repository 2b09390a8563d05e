//! The balancer: ring set snapshot + per-pod load, choosing a pod per request.
//!
//! With a key: the key's fade-in stage, then bounded load on that stage's ring (Skipper's rule
//! with our load measure and a cap on the walk). Without a key: power of two choices. Picking
//! reads one atomically swapped snapshot and allocates nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rand::Rng;

use super::endpoint::Endpoint;
use super::fadein::{FadeConfig, RingSet, Stage, fade_point, unit};
use super::load::{EndpointLoad, LoadConfig, latency_weight};
use super::p2c::p2c;
use super::ring::{MAX_DISTINCT, hash};
use crate::clock::{Clock, Nanos};

/// Balancer parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BalancerConfig {
    /// A pod whose load exceeds `balance_factor × average` is passed over clockwise (≥ 1).
    pub balance_factor: f64,
    /// Most pods passed over before settling for the least loaded one seen (at most 14).
    pub max_hops: usize,
    /// Load measurement.
    pub load: LoadConfig,
    /// Fade-in of new pods.
    pub fade: FadeConfig,
}

impl Default for BalancerConfig {
    fn default() -> Self {
        Self {
            balance_factor: 1.25,
            max_hops: 10,
            load: LoadConfig::default(),
            fade: FadeConfig::default(),
        }
    }
}

/// A pod and its load counters; kept across snapshots while the pod stays.
#[derive(Debug)]
pub struct Backend {
    endpoint: Endpoint,
    load: EndpointLoad,
}

impl Backend {
    /// The pod's endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The pod's load counters.
    pub fn load(&self) -> &EndpointLoad {
        &self.load
    }
}

/// One immutable view: the ring set and the backends, `backends[i]` being `set.endpoints()[i]`.
#[derive(Debug)]
struct Snapshot {
    set: RingSet,
    backends: Box<[Arc<Backend>]>,
}

/// Chooses products pods for requests. Cheap to share (`Arc<Balancer>`).
pub struct Balancer {
    snapshot: ArcSwap<Snapshot>,
    clock: Arc<dyn Clock>,
    config: BalancerConfig,
    updates: Mutex<()>,
    /// Keyed picks that passed their ring owner because it was over the bounded load.
    spills: AtomicU64,
}

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer")
            .field("endpoints", &self.snapshot.load().set.endpoints())
            .field("config", &self.config)
            .finish()
    }
}

/// A request in flight to a backend: counts it while alive, records its time when dropped.
#[derive(Debug)]
pub struct InFlight {
    backend: Arc<Backend>,
    clock: Arc<dyn Clock>,
    started: Nanos,
}

impl InFlight {
    /// The backend the request went to.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.backend
            .load
            .finish(self.started, self.clock.now_nanos());
    }
}

impl Balancer {
    /// A balancer with no pods yet.
    pub fn new(config: BalancerConfig, clock: Arc<dyn Clock>) -> Self {
        let config = BalancerConfig {
            balance_factor: config.balance_factor.max(1.0),
            max_hops: config.max_hops.min(MAX_DISTINCT - 2),
            ..config
        };
        Self {
            snapshot: ArcSwap::from_pointee(Snapshot {
                set: RingSet::new(&[], config.fade),
                backends: Box::new([]),
            }),
            clock,
            config,
            updates: Mutex::new(()),
            spills: AtomicU64::new(0),
        }
    }

    /// Keyed picks so far that went past their ring owner because it was over the bounded load
    /// (not counting picks that exclude a pod: those are retries and hedges).
    pub fn spills(&self) -> u64 {
        self.spills.load(Ordering::Relaxed)
    }

    /// The parameters in force.
    pub fn config(&self) -> &BalancerConfig {
        &self.config
    }

    /// The balancer's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Replaces the set of pods. The first set is taken at once; later additions fade in,
    /// removals apply at once. Load counters of pods that stay are kept.
    pub fn set_endpoints(&self, endpoints: &[Endpoint]) {
        // One writer at a time, so no update is lost between load and store.
        let _guard = self
            .updates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = self.snapshot.load_full();
        let now = self.clock.now_nanos();
        let set = if old.set.endpoints().is_empty() {
            RingSet::new(endpoints, self.config.fade)
        } else {
            old.set.update(endpoints, now)
        };
        let backends = set
            .endpoints()
            .iter()
            .map(|e| match old.set.endpoints().binary_search(e) {
                Ok(i) => Arc::clone(&old.backends[i]),
                Err(_) => Arc::new(Backend {
                    endpoint: e.clone(),
                    load: EndpointLoad::new(self.config.load.window),
                }),
            })
            .collect();
        self.snapshot.store(Arc::new(Snapshot { set, backends }));
    }

    /// The current pods, sorted.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.snapshot.load().set.endpoints().to_vec()
    }

    /// The pod for `key`: its stage's ring owner unless that pod is over the bounded load, then
    /// the next acceptable pod clockwise (at most `max_hops` passed), else the least loaded seen.
    /// `exclude` (a pod that just failed) is passed over as if absent. `None` without pods.
    pub fn pick(&self, key: &str, exclude: Option<&Backend>) -> Option<Arc<Backend>> {
        let snap = self.snapshot.load();
        let now = self.clock.now_nanos();
        let stage = snap.set.stage_for(fade_point(key), now)?;
        let excluded = exclude.and_then(|x| index_of(&snap.backends, x));
        let (i, passed_owner) = bounded_pick(
            stage,
            &snap.backends,
            hash(key),
            excluded,
            now,
            &self.config,
        )?;
        if passed_owner && exclude.is_none() {
            self.spills.fetch_add(1, Ordering::Relaxed);
        }
        Some(Arc::clone(&snap.backends[i as usize]))
    }

    /// A pod for a request without a key: a fade-in stage drawn at random (new pods take keyless
    /// traffic along the same curve), then power of two choices among its pods.
    pub fn pick_any(&self, rng: &mut impl Rng, exclude: Option<&Backend>) -> Option<Arc<Backend>> {
        let snap = self.snapshot.load();
        let now = self.clock.now_nanos();
        let stage = snap.set.stage_for(unit(rng.random()), now)?;
        let members = stage.members();
        let excluded = exclude
            .and_then(|x| index_of(&snap.backends, x))
            .and_then(|x| members.binary_search(&(x as u32)).ok());
        let mean = mean_latency(members, &snap.backends);
        let cap = self.config.load.latency_cap;
        let i = p2c(members.len(), excluded, rng, |i| {
            weighted_load(&snap.backends[members[i] as usize], now, mean, cap)
        })?;
        Some(Arc::clone(&snap.backends[members[i] as usize]))
    }

    /// Counts a request to `backend` until the returned guard drops.
    pub fn start(&self, backend: Arc<Backend>) -> InFlight {
        backend.load.start();
        InFlight {
            backend,
            clock: Arc::clone(&self.clock),
            started: self.clock.now_nanos(),
        }
    }
}

fn index_of(backends: &[Arc<Backend>], b: &Backend) -> Option<usize> {
    backends
        .iter()
        .position(|x| std::ptr::eq(Arc::as_ptr(x), b))
}

fn mean_latency(members: &[u32], backends: &[Arc<Backend>]) -> Option<f64> {
    let (sum, n) = members
        .iter()
        .filter_map(|&m| backends[m as usize].load.latency())
        .fold((0.0, 0u32), |(s, n), l| (s + l.as_nanos() as f64, n + 1));
    (n > 0).then(|| sum / f64::from(n))
}

#[inline]
fn weighted_load(b: &Backend, now: Nanos, mean_latency: Option<f64>, cap: f64) -> f64 {
    b.load.load(now) * latency_weight(b.load.latency(), mean_latency, cap)
}

/// Bounded-load choice on one stage; returns an index into `backends`.
///
/// Skipper's rule: average = (sum of loads + 1) / pods, the `+ 1` counting the request being
/// placed; a pod is acceptable when its load is at most `balance_factor × average`. Some pod is
/// always at or below the average, so the walk ends; the hop cap bounds the cost when the
/// acceptable pods are far around the ring, falling back to the least loaded pod seen.
fn bounded_pick(
    stage: &Stage,
    backends: &[Arc<Backend>],
    key_hash: u64,
    excluded: Option<usize>,
    now: Nanos,
    config: &BalancerConfig,
) -> Option<(u32, bool)> {
    let cap = config.load.latency_cap;
    let members = stage.members();
    let mean = mean_latency(members, backends);
    let (sum, n) = members
        .iter()
        .filter(|&&m| Some(m as usize) != excluded)
        .fold((0.0, 0u32), |(s, n), &m| {
            (
                s + weighted_load(&backends[m as usize], now, mean, cap),
                n + 1,
            )
        });
    if n == 0 {
        return None;
    }
    let target = (sum + 1.0) / f64::from(n) * config.balance_factor;
    let mut best: Option<(u32, f64, usize)> = None;
    for (hop, m) in stage
        .ring()
        .clockwise(key_hash)
        .filter(|&m| Some(m as usize) != excluded)
        .take(config.max_hops + 1)
        .enumerate()
    {
        let load = weighted_load(&backends[m as usize], now, mean, cap);
        if load <= target {
            return Some((m, hop > 0));
        }
        if best.is_none_or(|(_, l, _)| load < l) {
            best = Some((m, load, hop));
        }
    }
    best.map(|(m, _, hop)| (m, hop > 0))
}

#[cfg(test)]
mod tests {
    use super::super::ring::Ring;
    use super::*;
    use crate::clock::ManualClock;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use std::time::Duration;

    fn eps(n: u32) -> Vec<Endpoint> {
        (1..=n)
            .map(|i| Endpoint::parse(&format!("http://10.1.0.{i}:8080")).expect("valid"))
            .collect()
    }

    fn balancer(n: u32) -> (Balancer, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::at(Duration::from_secs(1000)));
        let b = Balancer::new(BalancerConfig::default(), clock.clone());
        b.set_endpoints(&eps(n));
        (b, clock)
    }

    fn owner_on_full_ring(b: &Balancer, key: &str) -> Endpoint {
        let e = b.endpoints();
        let ring = Ring::new(&e.iter().map(|e| e.as_str()).collect::<Vec<_>>());
        e[ring.owner(key).expect("owner") as usize].clone()
    }

    #[test]
    fn unloaded_picks_are_the_ring_owner() {
        let (b, _) = balancer(6);
        for i in 0..2000 {
            let key = format!("P{i}");
            let got = b.pick(&key, None).expect("pick");
            assert_eq!(got.endpoint(), &owner_on_full_ring(&b, &key));
        }
    }

    #[test]
    fn picking_allocates_nothing() {
        let (b, clock) = balancer(20);
        b.set_endpoints(&eps(22)); // two fading stages' worth of state
        clock.advance(Duration::from_secs(10));
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let keys: Vec<String> = (0..100).map(|i| format!("P{i}")).collect();
        // Warm up per-thread state (arc-swap's debt list) outside the measurement.
        let _ = b.pick("warm", None);
        let info = allocation_counter::measure(|| {
            for k in &keys {
                let p = b.pick(k, None).expect("pick");
                let r = b.pick(k, Some(&p)).expect("retry");
                let g = b.start(r);
                drop(g);
                let _ = b.pick_any(&mut rng, Some(&p));
            }
        });
        assert_eq!(info.count_total, 0);
        // The counter does count on this thread: the zero above means something.
        let control = allocation_counter::measure(|| drop(std::hint::black_box(vec![1u8; 16])));
        assert_eq!(control.count_total, 1);
    }

    #[test]
    fn no_pods_no_pick() {
        let clock = Arc::new(ManualClock::default());
        let b = Balancer::new(BalancerConfig::default(), clock);
        assert!(b.pick("P1", None).is_none());
        assert!(
            b.pick_any(&mut ChaCha8Rng::seed_from_u64(0), None)
                .is_none()
        );
    }

    /// A storm of requests for one hot id, none finishing: no pod's load ever exceeds
    /// `balance_factor × average + 1`, and the owner still takes its fair part first.
    #[test]
    fn hot_id_storm_respects_the_cap() {
        let (b, _) = balancer(8);
        let mut guards = Vec::new();
        let owner = b.pick("HOT", None).expect("pick");
        for _ in 0..2000 {
            let p = b.pick("HOT", None).expect("pick");
            guards.push(b.start(p));
            let loads: Vec<u32> = b
                .snapshot
                .load()
                .backends
                .iter()
                .map(|x| x.load().in_flight())
                .collect();
            let total: u32 = loads.iter().sum();
            let avg = f64::from(total) / loads.len() as f64;
            let max = f64::from(*loads.iter().max().expect("pods"));
            assert!(max <= 1.25 * avg + 1.0, "{loads:?}");
        }
        assert!(
            owner.load().in_flight() >= 250,
            "{}",
            owner.load().in_flight()
        );
        // Every one of the 2,000 picks the owner did not take was a spill.
        assert_eq!(b.spills(), 2000 - u64::from(owner.load().in_flight()));
        // A pick that excludes the owner (a retry or a hedge) is counted as such, not here.
        let spills = b.spills();
        assert!(b.pick("HOT", Some(&owner)).is_some());
        assert_eq!(b.spills(), spills);
        drop(guards);
        assert_eq!(owner.load().in_flight(), 0);
    }

    /// With more pods than the walk reaches, the storm spreads evenly over the 11 nearest pods
    /// (owner + 10 hops) and no further.
    #[test]
    fn storm_beyond_the_hop_cap_falls_back_to_least_loaded_seen() {
        let (b, _) = balancer(30);
        let mut guards = Vec::new();
        for _ in 0..1100 {
            guards.push(b.start(b.pick("HOT", None).expect("pick")));
        }
        let loads: Vec<u32> = b
            .snapshot
            .load()
            .backends
            .iter()
            .map(|x| x.load().in_flight())
            .collect();
        let busy: Vec<u32> = loads.iter().copied().filter(|&l| l > 0).collect();
        assert_eq!(busy.len(), 11, "{loads:?}");
        let (lo, hi) = (busy.iter().min(), busy.iter().max());
        assert!(hi.zip(lo).is_some_and(|(h, l)| h - l <= 1), "{loads:?}");
    }

    #[test]
    fn occupancy_alone_passes_a_busy_owner() {
        let (b, clock) = balancer(4);
        let key = "P42";
        let owner = b.pick(key, None).expect("pick");
        // The owner answered requests worth 3 busy seconds per second over the last 120 ms; none
        // is in flight now.
        let now = clock.now_nanos();
        for _ in 0..3 {
            owner.load().start();
            owner.load().finish(now - 120_000_000, now);
        }
        let p = b.pick(key, None).expect("pick");
        assert_ne!(p.endpoint(), owner.endpoint());
        // The window moves on: the owner is back.
        clock.advance(Duration::from_millis(200));
        assert_eq!(
            b.pick(key, None).expect("pick").endpoint(),
            owner.endpoint()
        );
    }

    #[test]
    fn a_slow_owner_is_passed_sooner() {
        let (b, _) = balancer(4);
        let key = "P7";
        let owner = b.pick(key, None).expect("pick");
        let snap = b.snapshot.load_full();
        // Every pod has 2 in flight; the owner's answers take 4x as long as the others'.
        let mut guards = Vec::new();
        for x in snap.backends.iter() {
            let d = if Arc::ptr_eq(x, &owner) { 40 } else { 10 };
            x.load().start();
            x.load().finish(0, d * 1_000_000);
            for _ in 0..2 {
                guards.push(b.start(Arc::clone(x)));
            }
        }
        // Unweighted: load 2 everywhere, target (8+1)/4*1.25 = 2.8 -> owner. Weighted: the
        // owner counts 2 x (40/17.5 capped at 2) = 4 > target -> passed over.
        assert_ne!(
            b.pick(key, None).expect("pick").endpoint(),
            owner.endpoint()
        );
    }

    #[test]
    fn excluded_pod_gives_the_next_distinct_owner() {
        let (b, _) = balancer(5);
        for i in 0..500 {
            let key = format!("K{i}");
            let first = b.pick(&key, None).expect("pick");
            let retry = b.pick(&key, Some(&first)).expect("retry");
            assert_ne!(retry.endpoint(), first.endpoint());
            let e = b.endpoints();
            let ring = Ring::new(&e.iter().map(|e| e.as_str()).collect::<Vec<_>>());
            let expected = ring
                .owner_among(&key, |m| e[m as usize] != *first.endpoint())
                .expect("owner");
            assert_eq!(retry.endpoint(), &e[expected as usize]);
        }
    }

    #[test]
    fn load_counters_survive_updates_and_new_pods_fade_in() {
        let (b, clock) = balancer(3);
        let p = b.pick("P1", None).expect("pick");
        let g = b.start(Arc::clone(&p));
        b.set_endpoints(&eps(4));
        let same = b
            .snapshot
            .load()
            .backends
            .iter()
            .find(|x| x.endpoint() == p.endpoint())
            .cloned()
            .expect("still there");
        assert!(Arc::ptr_eq(&same, &p));
        assert_eq!(same.load().in_flight(), 1);
        drop(g);
        // Right after the scale-up no key reaches the new pod; after 30 s its full share does.
        let new_pod = eps(4).pop().expect("4 pods");
        let on_new = |b: &Balancer| {
            (0..4000)
                .filter(|i| b.pick(&format!("P{i}"), None).expect("pick").endpoint() == &new_pod)
                .count()
        };
        assert_eq!(on_new(&b), 0);
        clock.advance(Duration::from_secs(30));
        let n = on_new(&b);
        assert!((600..=1400).contains(&n), "{n}");
    }

    #[test]
    fn keyless_picks_prefer_the_less_loaded() {
        let (b, _) = balancer(3);
        let snap = b.snapshot.load_full();
        let mut guards = Vec::new();
        for (i, x) in snap.backends.iter().enumerate() {
            for _ in 0..(i * 5) {
                guards.push(b.start(Arc::clone(x)));
            }
        }
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut count = [0usize; 3];
        for _ in 0..3000 {
            let p = b.pick_any(&mut rng, None).expect("pick");
            let i = snap
                .backends
                .iter()
                .position(|x| Arc::ptr_eq(x, &p))
                .expect("known");
            count[i] += 1;
        }
        assert_eq!(count[2], 0, "{count:?}");
        assert!(count[0] > count[1], "{count:?}");
        let first = Arc::clone(&snap.backends[0]);
        for _ in 0..100 {
            let p = b.pick_any(&mut rng, Some(&first)).expect("pick");
            assert!(!Arc::ptr_eq(&p, &first));
        }
    }
}
