//! Safe shifting (docs/operations.md): which weights a country's route may carry now, given what
//! each group wants, whether it is Ready, what is applied and whether the growing side has the
//! replicas for its new share. Pure: every decision comes with its reason.
//!
//! The rules:
//! - a group that is not Ready gets no weight (it is dropped from the route at once: that is a
//!   safety removal, not a shift);
//! - before a group's share rises, its products and batch HPA floors are raised to the replicas its
//!   new share needs, estimated from the groups it takes the traffic from (their available replicas,
//!   or their floor when fewer are available, per percent of the country), capped at its maximum; the route changes only once the growing
//!   side has those replicas available, so the growing side is always in place before the
//!   shrinking side gives traffic away;
//! - when nobody who should take a country's traffic is Ready, the groups that carry it keep it
//!   (a group being deleted keeps its share until others can take it over).

use super::{ComponentCapacity, GroupRouting, Reason};
use std::collections::BTreeMap;

/// Largest-remainder percentages of `weights`: integers that sum to exactly 100 (or all 0 when the
/// weights sum to 0), each within one of its exact share. Ties go to the earlier entry.
pub fn percentages(weights: &[i64]) -> Vec<i32> {
    let total: i64 = weights.iter().map(|w| (*w).max(0)).sum();
    if total == 0 {
        return vec![0; weights.len()];
    }
    let mut out: Vec<i64> = Vec::with_capacity(weights.len());
    let mut remainders: Vec<(i64, usize)> = Vec::with_capacity(weights.len());
    for (i, w) in weights.iter().enumerate() {
        let scaled = (*w).max(0) * 100;
        out.push(scaled / total);
        remainders.push((scaled % total, i));
    }
    let assigned: i64 = out.iter().sum();
    // Biggest remainder first; equal remainders keep list order.
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, i) in remainders.into_iter().take((100 - assigned) as usize) {
        out[i] += 1;
    }
    out.into_iter().map(|p| p as i32).collect()
}

/// Replica floors of a group's serving components while its share rises.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Floors {
    /// Floor of the products HPA.
    pub products: i32,
    /// Floor of the batch HPA.
    pub batch: i32,
}

/// Raises `cap`'s floor to `need` replicas, within its range.
pub fn raised_floor(need: f64, cap: ComponentCapacity) -> i32 {
    let max = cap.max.max(cap.min);
    if !need.is_finite() || need <= 0.0 {
        return cap.min;
    }
    let need = need.ceil().min(f64::from(max)) as i32;
    need.clamp(cap.min, max)
}

/// Whether a component has the replicas its floor asks for. A floor at the spec minimum asks for
/// nothing extra (the group is Ready, so it already serves).
pub fn has_capacity(floor: i32, cap: ComponentCapacity) -> bool {
    floor <= cap.min || cap.available >= floor
}

/// One pool of a country (the unsegmented traffic, or one segment) as the shifting rules see it.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolInput<'a> {
    /// The country.
    pub country: String,
    /// The groups of the pool, including groups that still carry its traffic but no longer list
    /// the country (or moved to another segment): those are `leaving`.
    pub members: Vec<&'a GroupRouting>,
    /// Members that drain out of the pool: desired weight 0, like a group being deleted.
    pub leaving: std::collections::BTreeSet<String>,
    /// The weights currently applied (by group name; groups gone from the cluster may appear).
    pub applied: BTreeMap<String, i32>,
}

/// What the shifting rules decided for one pool.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PoolDecision {
    /// Desired percent per member (weight / sum, whether Ready or not).
    pub desired: BTreeMap<String, i32>,
    /// The weights to apply now (only groups with weight > 0); empty: no route for the pool.
    pub weights: BTreeMap<String, i32>,
    /// Why a member's share in `weights` differs from its desired share.
    pub reasons: BTreeMap<String, Reason>,
    /// For groups whose share rises: the floors they need before it may rise.
    pub floors: BTreeMap<String, Floors>,
}

impl PoolInput<'_> {
    fn drains(&self, g: &GroupRouting) -> bool {
        g.deleting || self.leaving.contains(&g.name)
    }

    fn desired_weight(&self, g: &GroupRouting) -> i64 {
        if self.drains(g) {
            0
        } else {
            i64::from(g.weight_in(&self.country).max(0))
        }
    }
}

/// Percent of each named weight in `weights` (by name).
pub fn shares(weights: &BTreeMap<String, i32>) -> BTreeMap<String, i32> {
    let names: Vec<&String> = weights.keys().collect();
    let w: Vec<i64> = weights.values().map(|w| i64::from(*w)).collect();
    names.into_iter().cloned().zip(percentages(&w)).collect()
}

/// The floors each growing member needs, from the replicas per percent of the members that give
/// traffic away (available, or their floor when fewer are available). `countries_carried` tells over how many countries a donor's replicas are
/// spread (its load is assumed to split evenly over the countries it carries).
fn growing_floors(
    members: &[&GroupRouting],
    current: &BTreeMap<String, i32>,
    next: &BTreeMap<String, i32>,
    countries_carried: &dyn Fn(&str) -> usize,
) -> BTreeMap<String, (f64, f64)> {
    let pct = |m: &BTreeMap<String, i32>, g: &str| m.get(g).copied().unwrap_or(0);
    let mut donor_pct = 0.0;
    let mut donor_products = 0.0;
    let mut donor_batch = 0.0;
    for g in members {
        let (cur, new) = (pct(current, &g.name), pct(next, &g.name));
        if cur > new {
            let spread = countries_carried(&g.name).max(1) as f64;
            donor_pct += f64::from(cur);
            // A donor's replicas count at least at its floor: right after it is created or
            // rescheduled, fewer are available than it will run, and sizing the growing side from
            // that dip would let the split move before the growing side can carry it.
            donor_products += f64::from(g.products.available.max(g.products.min).max(0)) / spread;
            donor_batch += f64::from(g.batch.available.max(g.batch.min).max(0)) / spread;
        }
    }
    let mut out = BTreeMap::new();
    if donor_pct <= 0.0 {
        return out;
    }
    for g in members {
        let (cur, new) = (pct(current, &g.name), pct(next, &g.name));
        if new > cur {
            let share = f64::from(new);
            out.insert(
                g.name.clone(),
                (
                    share * donor_products / donor_pct,
                    share * donor_batch / donor_pct,
                ),
            );
        }
    }
    out
}

/// Decides a pool's weights. `has_room(group)` says whether a growing group already has the
/// replicas of its (group-wide) floors; `countries_carried(group)` is the number of countries in
/// which the group currently carries traffic.
pub fn decide_pool(
    input: &PoolInput<'_>,
    has_room: &dyn Fn(&str) -> bool,
    countries_carried: &dyn Fn(&str) -> usize,
) -> PoolDecision {
    let members = &input.members;
    let desired_w: Vec<i64> = members.iter().map(|g| input.desired_weight(g)).collect();
    let desired: BTreeMap<String, i32> = members
        .iter()
        .map(|g| g.name.clone())
        .zip(percentages(&desired_w))
        .collect();
    let mut decision = PoolDecision {
        desired,
        ..PoolDecision::default()
    };
    if desired_w.iter().sum::<i64>() == 0 {
        for g in members {
            decision
                .reasons
                .insert(g.name.clone(), Reason::WeightsSumToZero);
        }
        // Groups being deleted still carrying traffic keep it until the others can take over:
        // with every weight at zero nobody can, so the drained route simply goes.
        return decision;
    }
    let target: BTreeMap<String, i32> = members
        .iter()
        .filter(|g| g.ready && input.desired_weight(g) > 0)
        .map(|g| (g.name.clone(), input.desired_weight(g) as i32))
        .collect();
    // What is applied, minus groups that must not get traffic (not Ready, or gone).
    let current: BTreeMap<String, i32> = members
        .iter()
        .filter(|g| g.ready)
        .filter_map(|g| {
            input
                .applied
                .get(&g.name)
                .filter(|w| **w > 0)
                .map(|w| (g.name.clone(), *w))
        })
        .collect();

    let not_ready_reasons = |d: &mut PoolDecision| {
        for g in members {
            if !g.ready && input.desired_weight(g) > 0 {
                d.reasons.insert(g.name.clone(), Reason::NotReady);
            }
        }
    };

    if target.is_empty() {
        // Nobody who should take the traffic is Ready: the Ready groups carrying it keep it.
        not_ready_reasons(&mut decision);
        if current.is_empty() {
            for g in members {
                decision
                    .reasons
                    .entry(g.name.clone())
                    .or_insert(Reason::NoReadyGroup);
            }
        } else {
            for g in current.keys() {
                decision
                    .reasons
                    .insert(g.clone(), Reason::HeldUntilReplacementReady);
            }
            decision.weights = current;
        }
        return decision;
    }

    let cur_pct = shares(&current);
    let new_pct = shares(&target);
    let needs = growing_floors(members, &cur_pct, &new_pct, countries_carried);
    for g in members {
        if let Some((p, b)) = needs.get(&g.name) {
            decision.floors.insert(
                g.name.clone(),
                Floors {
                    products: raised_floor(*p, g.products),
                    batch: raised_floor(*b, g.batch),
                },
            );
        }
    }
    let waiting: Vec<String> = decision
        .floors
        .keys()
        .filter(|g| !has_room(g.as_str()))
        .cloned()
        .collect();
    not_ready_reasons(&mut decision);
    if waiting.is_empty() || current.is_empty() {
        // Ready groups that carry more than their desired share because others are not Ready.
        let unready_share = members
            .iter()
            .any(|g| !g.ready && input.desired_weight(g) > 0);
        if unready_share {
            for g in target.keys() {
                decision
                    .reasons
                    .entry(g.clone())
                    .or_insert(Reason::PeerNotReady);
            }
        }
        decision.weights = target;
        if current.is_empty() {
            // Nothing to protect: nobody carries the traffic now.
            decision.floors.clear();
        }
    } else {
        for g in &waiting {
            decision
                .reasons
                .insert(g.clone(), Reason::WaitingForCapacity);
        }
        for g in members {
            if cur_pct.get(&g.name).copied().unwrap_or(0)
                != new_pct.get(&g.name).copied().unwrap_or(0)
            {
                decision
                    .reasons
                    .entry(g.name.clone())
                    .or_insert(Reason::ShiftPending);
            }
        }
        decision.weights = current;
    }
    for g in members {
        if input.drains(g) && decision.weights.get(&g.name).is_some_and(|w| *w > 0) {
            decision.reasons.insert(g.name.clone(), Reason::Draining);
        }
    }
    decision
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn percentages_round_to_exactly_one_hundred() {
        assert_eq!(percentages(&[90, 10]), vec![90, 10]);
        assert_eq!(percentages(&[1, 1, 1]), vec![34, 33, 33]);
        assert_eq!(percentages(&[0, 0]), vec![0, 0]);
        assert_eq!(percentages(&[0, 7]), vec![0, 100]);
        assert_eq!(percentages(&[]), Vec::<i32>::new());
        assert_eq!(percentages(&[2, 1]), vec![67, 33]);
    }

    proptest! {
        #[test]
        fn percentages_sum_to_100_and_stay_within_one_of_the_exact_share(
            weights in proptest::collection::vec(0i64..=100, 1..12)
        ) {
            let p = percentages(&weights);
            let total: i64 = weights.iter().sum();
            if total == 0 {
                prop_assert!(p.iter().all(|x| *x == 0));
            } else {
                prop_assert_eq!(p.iter().map(|x| i64::from(*x)).sum::<i64>(), 100);
                for (w, pct) in weights.iter().zip(&p) {
                    let exact = (*w as f64) * 100.0 / total as f64;
                    prop_assert!((f64::from(*pct) - exact).abs() < 1.0, "{w} -> {pct}, exact {exact}");
                    if *w == 0 { prop_assert_eq!(*pct, 0); }
                }
            }
        }

        #[test]
        fn raised_floor_stays_within_the_range(need in -10.0f64..5000.0, min in 1i32..50, extra in 0i32..50) {
            let cap = ComponentCapacity { available: 0, min, max: min + extra };
            let f = raised_floor(need, cap);
            prop_assert!(f >= min && f <= min + extra);
            if need > f64::from(min) && need <= f64::from(min + extra) {
                prop_assert_eq!(f, need.ceil() as i32);
            }
        }
    }

    #[test]
    fn raised_floor_handles_odd_needs() {
        let cap = ComponentCapacity {
            available: 3,
            min: 2,
            max: 10,
        };
        assert_eq!(raised_floor(f64::NAN, cap), 2);
        assert_eq!(raised_floor(f64::INFINITY, cap), 2);
        assert_eq!(raised_floor(4.2, cap), 5);
        assert_eq!(raised_floor(40.0, cap), 10);
        assert!(has_capacity(2, cap));
        assert!(has_capacity(3, cap));
        assert!(!has_capacity(4, cap));
    }
}
