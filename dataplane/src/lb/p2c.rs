//! Power of two random choices, for requests without a key (nothing to keep cache-local).
//!
//! Two distinct candidates drawn at random, the less loaded wins: close to least-loaded without
//! every client herding onto the same least-loaded pod, and O(1).

use rand::Rng;

/// Picks among candidates `0..n` (leaving out `exclude`): two distinct ones at random, the one with
/// the lower `load` (the first drawn on a tie). `None` when no candidate is left.
pub fn p2c(
    n: usize,
    exclude: Option<usize>,
    rng: &mut impl Rng,
    mut load: impl FnMut(usize) -> f64,
) -> Option<usize> {
    let excluded = exclude.filter(|&x| x < n);
    let available = n - usize::from(excluded.is_some());
    // Draw among the available ones by skipping over the excluded index.
    let lift = |i: usize| match excluded {
        Some(x) if i >= x => i + 1,
        _ => i,
    };
    match available {
        0 => None,
        1 => Some(lift(0)),
        _ => {
            let a = rng.random_range(0..available);
            let mut b = rng.random_range(0..available - 1);
            if b >= a {
                b += 1;
            }
            let (a, b) = (lift(a), lift(b));
            Some(if load(b) < load(a) { b } else { a })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn prefers_the_less_loaded() {
        let loads = [0.0, 1.0, 2.0, 3.0, 4.0];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut count = [0usize; 5];
        let rounds = 50_000;
        for _ in 0..rounds {
            let i = p2c(5, None, &mut rng, |i| loads[i]).expect("a pick");
            count[i] += 1;
        }
        // The most loaded always meets a less loaded rival; the least loaded wins whenever drawn.
        assert_eq!(count[4], 0);
        assert!(count.windows(2).all(|w| w[0] > w[1]), "{count:?}");
        // Exact expectation for 2 distinct of 5: P(i) = (4 - i) / C(5,2) = (4 - i) / 10.
        for (i, c) in count.iter().enumerate() {
            let expected = (4 - i) as f64 / 10.0;
            assert!(
                (*c as f64 / rounds as f64 - expected).abs() < 0.01,
                "{count:?}"
            );
        }
    }

    #[test]
    fn two_candidates_always_give_the_less_loaded() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for _ in 0..100 {
            assert_eq!(p2c(2, None, &mut rng, |i| [5.0, 1.0][i]), Some(1));
        }
    }

    #[test]
    fn excluded_candidate_is_never_picked() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..1000 {
            let i = p2c(4, Some(1), &mut rng, |_| 0.0).expect("a pick");
            assert_ne!(i, 1);
            assert!(i < 4);
        }
        assert_eq!(p2c(2, Some(0), &mut rng, |_| 0.0), Some(1));
        assert_eq!(p2c(1, Some(0), &mut rng, |_| 0.0), None);
        assert_eq!(p2c(0, None, &mut rng, |_| 0.0), None);
        assert_eq!(p2c(1, None, &mut rng, |_| 0.0), Some(0));
        // An out-of-range exclusion excludes nothing.
        assert_eq!(p2c(1, Some(7), &mut rng, |_| 0.0), Some(0));
    }
}
