//! The hash ring, placement-identical to Skipper's `consistentHash` algorithm.
//!
//! Skipper's rules (loadbalancer/algorithm.go), which the ingress applies to the same product ids:
//! - every endpoint string `e` gets [`POSITIONS_PER_ENDPOINT`] positions, position `j` being
//!   xxHash64 (seed 0) of `"{e}-{j}"`, `j` in `0..100`;
//! - positions are sorted by hash;
//! - a key is owned by the endpoint of the first position whose hash is `>=` the key's hash,
//!   wrapping to the first position past the end;
//! - an endpoint left out of the candidates (unhealthy, fading) is passed over clockwise, position
//!   by position, to the first one that is a candidate.
//!
//! Placement depends only on the set of endpoint strings, not on their order, so the batch
//! component and the ingress agree as long as both see the same pods.

use xxhash_rust::xxh64::xxh64;

/// Positions per endpoint on the ring (Skipper's fixed value).
pub const POSITIONS_PER_ENDPOINT: usize = 100;

/// Most distinct owners that [`Ring::clockwise`] yields; bounded so the walk needs no allocation.
pub const MAX_DISTINCT: usize = 16;

/// xxHash64 with seed 0 of `key`: the hash Skipper uses for keys and positions alike.
#[inline]
pub fn hash(key: &str) -> u64 {
    xxh64(key.as_bytes(), 0)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Position {
    hash: u64,
    member: u32,
}

/// An immutable ring over members `0..n`, member `i` being the `i`-th endpoint string given to
/// [`Ring::new`] (or the id given to [`Ring::with_ids`]).
#[derive(Clone, Debug)]
pub struct Ring {
    positions: Box<[Position]>,
}

impl Ring {
    /// Builds the ring of `endpoints`; member `i` is `endpoints[i]`.
    pub fn new<S: AsRef<str>>(endpoints: &[S]) -> Self {
        Self::with_ids(
            endpoints
                .iter()
                .enumerate()
                .map(|(i, e)| (index_u32(i), e.as_ref())),
        )
    }

    /// Builds the ring of `(id, endpoint)` pairs; lookups return the ids. Lets a ring over a subset
    /// of endpoints name members by their index in a larger table.
    pub fn with_ids<'a>(members: impl IntoIterator<Item = (u32, &'a str)>) -> Self {
        let mut positions = Vec::new();
        let mut buf = String::new();
        for (id, endpoint) in members {
            for j in 0..POSITIONS_PER_ENDPOINT {
                buf.clear();
                buf.push_str(endpoint);
                buf.push('-');
                push_decimal(&mut buf, j);
                positions.push(Position {
                    hash: hash(&buf),
                    member: id,
                });
            }
        }
        // Ties (a 64-bit collision) are ordered by member so that placement is deterministic;
        // Skipper's unstable sort leaves them unspecified.
        positions.sort_unstable();
        Self {
            positions: positions.into_boxed_slice(),
        }
    }

    /// True when the ring has no members.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// Number of positions (members × 100).
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    /// Index of the first position at or after `key_hash`, wrapping.
    #[inline]
    fn start(&self, key_hash: u64) -> usize {
        let i = self.positions.partition_point(|p| p.hash < key_hash);
        if i == self.positions.len() { 0 } else { i }
    }

    /// The owner of `key`, or `None` on an empty ring.
    #[inline]
    pub fn owner(&self, key: &str) -> Option<u32> {
        self.owner_of_hash(hash(key))
    }

    /// The owner of a precomputed key hash.
    #[inline]
    pub fn owner_of_hash(&self, key_hash: u64) -> Option<u32> {
        if self.positions.is_empty() {
            return None;
        }
        Some(self.positions[self.start(key_hash)].member)
    }

    /// The owner of `key` among members for which `candidate` holds: Skipper's rule for endpoints
    /// left out of a request's candidates. `None` when no member is a candidate.
    pub fn owner_among(&self, key: &str, mut candidate: impl FnMut(u32) -> bool) -> Option<u32> {
        if self.positions.is_empty() {
            return None;
        }
        let start = self.start(hash(key));
        let n = self.positions.len();
        (0..n)
            .map(|k| self.positions[(start + k) % n].member)
            .find(|&m| candidate(m))
    }

    /// Distinct members clockwise from the owner of `key_hash` (the owner first), at most
    /// [`MAX_DISTINCT`] of them. Allocation-free.
    #[inline]
    pub fn clockwise(&self, key_hash: u64) -> Clockwise<'_> {
        let start = if self.positions.is_empty() {
            0
        } else {
            self.start(key_hash)
        };
        Clockwise {
            ring: &self.positions,
            next: start,
            steps_left: self.positions.len(),
            seen: [0; MAX_DISTINCT],
            seen_len: 0,
        }
    }
}

/// Iterator over distinct ring members clockwise; see [`Ring::clockwise`].
#[derive(Debug)]
pub struct Clockwise<'a> {
    ring: &'a [Position],
    next: usize,
    steps_left: usize,
    seen: [u32; MAX_DISTINCT],
    seen_len: usize,
}

impl Iterator for Clockwise<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        while self.steps_left > 0 && self.seen_len < MAX_DISTINCT {
            let member = self.ring[self.next].member;
            self.next = (self.next + 1) % self.ring.len();
            self.steps_left -= 1;
            if !self.seen[..self.seen_len].contains(&member) {
                self.seen[self.seen_len] = member;
                self.seen_len += 1;
                return Some(member);
            }
        }
        None
    }
}

fn push_decimal(buf: &mut String, j: usize) {
    use std::fmt::Write;
    // Writing into a String cannot fail.
    let _ = write!(buf, "{j}");
}

fn index_u32(i: usize) -> u32 {
    // A ring of four billion endpoints is not a deployment; saturating keeps this total.
    u32::try_from(i).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::super::skipper_vectors::{HASHES, OWNERS, SETS, WITHOUT};
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn hash_is_skippers_xxhash64() {
        for &(input, expected) in HASHES {
            assert_eq!(hash(input), expected, "{input:?}");
        }
    }

    #[test]
    fn placement_matches_skipper_vectors() {
        let rings: Vec<Ring> = SETS.iter().map(|s| Ring::new(s)).collect();
        for &(set, key, owner) in OWNERS {
            let got = rings[set].owner(key).expect("non-empty ring") as usize;
            assert_eq!(SETS[set][got], owner, "set {set}, key {key:?}");
        }
        // Every set, every endpoint owns something in the vectors: the table is not degenerate.
        for (i, set) in SETS.iter().enumerate().take(3) {
            for e in *set {
                assert!(OWNERS.iter().any(|&(s, _, o)| s == i && o == *e), "{e}");
            }
        }
    }

    #[test]
    fn placement_is_independent_of_endpoint_order() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for &(set, key, owner) in OWNERS {
            let mut shuffled: Vec<&str> = SETS[set].to_vec();
            for i in (1..shuffled.len()).rev() {
                shuffled.swap(i, rng.random_range(0..=i));
            }
            let got = Ring::new(&shuffled).owner(key).expect("non-empty") as usize;
            assert_eq!(shuffled[got], owner);
        }
    }

    #[test]
    fn left_out_endpoints_are_passed_over_as_skipper_does() {
        for &(set, excluded, key, owner) in WITHOUT {
            let eps = SETS[set];
            let ring = Ring::new(eps);
            let got = ring
                .owner_among(key, |m| eps[m as usize] != excluded)
                .expect("a candidate") as usize;
            assert_eq!(eps[got], owner, "set {set}, key {key:?}");
            // The same endpoint is the next distinct owner clockwise when the owner is the one
            // left out, which is where a retry goes.
            let mut walk = ring.clockwise(hash(key)).map(|m| eps[m as usize]);
            let first = walk.next().expect("owner");
            if first == excluded {
                assert_eq!(walk.next(), Some(owner));
            } else {
                assert_eq!(first, owner);
            }
        }
    }

    #[test]
    fn empty_ring_owns_nothing() {
        let ring = Ring::new::<&str>(&[]);
        assert!(ring.is_empty());
        assert_eq!(ring.owner("P1"), None);
        assert_eq!(ring.owner_among("P1", |_| true), None);
        assert_eq!(ring.clockwise(1).next(), None);
    }

    #[test]
    fn wraps_past_the_last_position() {
        let ring = Ring::new(&["http://a:1", "http://b:1"]);
        let first = ring.positions[0].member;
        assert_eq!(ring.owner_of_hash(u64::MAX), Some(first));
        assert_eq!(ring.owner_of_hash(ring.positions[0].hash), Some(first));
        let last = ring.positions[ring.len() - 1];
        assert_eq!(ring.owner_of_hash(last.hash), Some(last.member));
    }

    /// Keys that move when one pod joins N pods: ideally 1/(N+1), and all of them to the new pod.
    #[test]
    fn scale_up_moves_about_one_over_n_plus_one() {
        let keys: Vec<String> = (0..20_000).map(|i| format!("P{i:07}")).collect();
        for seed in 0..24u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let n = 2 + (seed as usize % 14);
            let eps: Vec<String> = (0..=n)
                .map(|_| {
                    let ip: [u8; 2] = rng.random();
                    format!("http://10.{}.{}.{}:8080", seed, ip[0], ip[1])
                })
                .collect();
            let before = Ring::new(&eps[..n]);
            let after = Ring::new(&eps);
            let mut moved = 0usize;
            for k in &keys {
                let a = before.owner(k).expect("owner");
                let b = after.owner(k).expect("owner");
                if a != b {
                    assert_eq!(b as usize, n, "a key only ever moves to the new pod");
                    moved += 1;
                }
            }
            let share = moved as f64 / keys.len() as f64;
            let ideal = 1.0 / (n + 1) as f64;
            // 100 positions per pod give a few percent of arc-length spread; 10% relative holds
            // for the mean over seeds (checked below) and 35% per seed.
            assert!(
                (share - ideal).abs() <= 0.35 * ideal,
                "seed {seed}: n={n} moved {share:.4}, ideal {ideal:.4}"
            );
        }
    }

    #[test]
    fn scale_up_share_averages_to_one_over_n_plus_one_within_ten_percent() {
        let keys: Vec<String> = (0..10_000).map(|i| format!("K-{i}")).collect();
        for n in [3usize, 5, 8, 12] {
            let mut ratio_sum = 0.0;
            let seeds = 40u64;
            for seed in 0..seeds {
                let mut rng = ChaCha8Rng::seed_from_u64(seed * 1000 + n as u64);
                let eps: Vec<String> = (0..=n)
                    .map(|_| {
                        let ip: [u8; 3] = rng.random();
                        format!("http://10.{}.{}.{}:8080", ip[0], ip[1], ip[2])
                    })
                    .collect();
                let before = Ring::new(&eps[..n]);
                let after = Ring::new(&eps);
                let moved = keys
                    .iter()
                    .filter(|k| before.owner(k) != after.owner(k))
                    .count();
                ratio_sum += moved as f64 / keys.len() as f64 * (n + 1) as f64;
            }
            let mean_ratio = ratio_sum / seeds as f64;
            assert!(
                (mean_ratio - 1.0).abs() <= 0.10,
                "n={n}: moved {mean_ratio:.3} × 1/(N+1)"
            );
        }
    }

    proptest! {
        #[test]
        fn owner_is_first_position_at_or_after_the_key(key in "[A-Za-z0-9._-]{1,64}", n in 1usize..12) {
            let eps: Vec<String> = (0..n).map(|i| format!("http://10.0.0.{i}:8080")).collect();
            let ring = Ring::new(&eps);
            let h = hash(&key);
            // Reference: linear scan for the smallest hash >= h, else the smallest hash overall.
            let at_or_after = ring.positions.iter().filter(|p| p.hash >= h).min();
            let expected = at_or_after.or_else(|| ring.positions.iter().min()).map(|p| p.member);
            prop_assert_eq!(ring.owner(&key), expected);
        }

        #[test]
        fn clockwise_yields_each_member_once_owner_first(h in any::<u64>(), n in 1usize..30) {
            let eps: Vec<String> = (0..n).map(|i| format!("http://10.0.1.{i}:8080")).collect();
            let ring = Ring::new(&eps);
            let walk: Vec<u32> = ring.clockwise(h).collect();
            prop_assert_eq!(walk.len(), n.min(MAX_DISTINCT));
            prop_assert_eq!(Some(walk[0]), ring.owner_of_hash(h));
            let mut sorted = walk.clone();
            sorted.sort_unstable();
            sorted.dedup();
            prop_assert_eq!(sorted.len(), walk.len());
            // The second yielded member is what Skipper picks when the owner is left out.
            if n > 1 {
                let owner = walk[0];
                let skip = ring.positions.iter().position(|p| p.hash >= h).unwrap_or(0);
                let len = ring.positions.len();
                let next = (0..len).map(|k| ring.positions[(skip + k) % len].member).find(|&m| m != owner);
                prop_assert_eq!(Some(walk[1]), next);
            }
        }
    }
}
