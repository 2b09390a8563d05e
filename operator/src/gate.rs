//! The bootstrap gate: a group is routed for a country only once its table holds that country's
//! catalogue, whatever `--store` mode the operator runs in (docs/operator.md, "The bootstrap
//! gate").
//!
//! "The table holds the catalogue" is measured the only way the operator can: the updater has
//! read the topics up to (nearly) their end since it started reading for the country. The
//! operator reads the lag of the updater's consumer group from Kafka; at or under `--bootstrap-
//! max-lag` the countries the group reads for are *bootstrapped*. That set is kept in the status
//! (`status.bootstrap`), so a country, once served, is never gated again by a later lag spike: a
//! running group must not drop out of its routes because its updater fell behind for a while.
//!
//! Adding a country replays it: the updater keeps only the offers of its own countries, so the
//! offers of an added country that were published before it was added never reached the table.
//! When `spec.countries` gains a country, [`replay`] moves the updater to a new consumer group
//! (`<group>-replay-<n>`), which starts from the earliest offset (the updater's
//! `auto.offset.reset`) and re-reads the topics; the added country stays gated until that group
//! has caught up. Offers of the countries already served are re-read too, but the table only
//! takes versions newer than what it holds, so serving them goes on unchanged. This is correct
//! only if the topics still hold the whole catalogue: compacted topics (or unlimited retention).
//!
//! Two pure steps around the one reading: [`replay`] before rendering (which consumer group the
//! updater uses), [`decide`] after the lag of that group is read (which countries open, the
//! `Bootstrapped` condition).

use crate::aws::LagReading;
use crate::crd::{BootstrapStatus, MarketGroupStatus};
use crate::status::{self, BOOTSTRAPPED, ConditionUpdate, Status};

/// Reason of `Bootstrapped` (and of `Ready` while no country is served yet) while the gate waits.
pub const BOOTSTRAPPING: &str = "Bootstrapping";
/// Reason of `Bootstrapped` once every country of the spec is served.
pub const CAUGHT_UP: &str = "CaughtUp";
/// Default of `--bootstrap-max-lag`: small against any catalogue, and above what a busy topic's
/// committed offsets trail by between two commits of the updater (every 500 ms).
pub const DEFAULT_MAX_LAG: i64 = 100;

/// The consumer group of the `replay`th growth of the country set of a group whose spec names
/// `base`.
pub fn replay_group(base: &str, replay: i64) -> String {
    if replay == 0 {
        base.to_string()
    } else {
        format!("{base}-replay-{replay}")
    }
}

fn sorted(countries: &[String]) -> Vec<String> {
    let mut v = countries.to_vec();
    v.sort();
    v.dedup();
    v
}

/// Before rendering: the consumer group the updater reads with and what is already
/// bootstrapped, from the spec's consumer group `base` and `countries` and the stored status.
///
/// - No gate memory yet: a group the operator already reported `Ready` (it served before the gate
///   existed) keeps its consumer group and is taken as bootstrapped; any other starts gated.
/// - A country the consumer group does not read for yet: a new consumer group (a replay).
/// - A country removed: it leaves the sets, so adding it back replays it (the updater stopped
///   writing its offers).
pub fn replay(
    base: &str,
    countries: &[String],
    previous: Option<&MarketGroupStatus>,
) -> BootstrapStatus {
    let countries = sorted(countries);
    let Some(prev) = previous.and_then(|s| s.bootstrap.as_ref()) else {
        let served = status::is_true(previous, status::READY);
        return BootstrapStatus {
            consumer_group: base.to_string(),
            replay: 0,
            bootstrapped: if served {
                countries.clone()
            } else {
                Vec::new()
            },
            countries,
        };
    };
    let grew = countries.iter().any(|c| !prev.countries.contains(c));
    let replay = prev.replay + i64::from(grew);
    BootstrapStatus {
        consumer_group: replay_group(base, replay),
        replay,
        bootstrapped: prev
            .bootstrapped
            .iter()
            .filter(|c| countries.contains(c))
            .cloned()
            .collect(),
        countries,
    }
}

/// What the gate decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gate {
    /// The gate's memory, for the status.
    pub status: BootstrapStatus,
    /// `Bootstrapped`.
    pub condition: ConditionUpdate,
}

impl Gate {
    /// The countries routed (bootstrapped).
    pub fn open(&self) -> &[String] {
        &self.status.bootstrapped
    }
}

/// The countries of `b` still waiting.
pub fn pending(b: &BootstrapStatus) -> Vec<String> {
    b.countries
        .iter()
        .filter(|c| !b.bootstrapped.contains(c))
        .cloned()
        .collect()
}

/// After the lag of `b.consumer_group` is read: the countries it reads for are bootstrapped once
/// the lag is known and at most `max_lag`; an unknown lag opens nothing and closes nothing.
pub fn decide(mut b: BootstrapStatus, lag: &LagReading, max_lag: i64) -> Gate {
    if matches!(lag, LagReading::Known(n) if *n <= max_lag) {
        b.bootstrapped = b.countries.clone();
    }
    let condition = condition(&b, Some(lag), max_lag);
    Gate {
        status: b,
        condition,
    }
}

/// `Bootstrapped` for the gate's memory `b`; `lag`: this reconcile's reading (None: not read).
pub fn condition(b: &BootstrapStatus, lag: Option<&LagReading>, max_lag: i64) -> ConditionUpdate {
    let waiting = pending(b);
    if waiting.is_empty() {
        return ConditionUpdate::new(
            BOOTSTRAPPED,
            Status::True,
            CAUGHT_UP,
            format!(
                "the updater (consumer group {}) has caught up: the table holds the catalogue of {}",
                b.consumer_group,
                b.countries.join(", ")
            ),
        );
    }
    let why = match lag {
        Some(LagReading::Known(n)) => {
            format!("it is {n} messages behind (the gate opens at {max_lag} or fewer)")
        }
        Some(LagReading::Unknown(why)) => format!("its lag cannot be read ({why})"),
        None => "its lag was not read this time".to_string(),
    };
    let serving = if b.bootstrapped.is_empty() {
        String::new()
    } else {
        format!("; serving {}", b.bootstrapped.join(", "))
    };
    ConditionUpdate::new(
        BOOTSTRAPPED,
        Status::False,
        BOOTSTRAPPING,
        format!(
            "{} not routed until the updater (consumer group {}) has read the topics: {why}{serving}",
            waiting.join(", "),
            b.consumer_group
        ),
    )
}

/// The countries of a group that routes may send traffic to, from its stored status (for the
/// groups not being reconciled): the bootstrapped ones; a group without gate memory yet counts
/// as bootstrapped only if it was `Ready` (as [`replay`] adopts it).
pub fn open_countries(stored: Option<&MarketGroupStatus>, countries: &[String]) -> Vec<String> {
    replay("", countries, stored).bootstrapped
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn c(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn memory(group: &str, replay: i64, countries: &[&str], done: &[&str]) -> BootstrapStatus {
        BootstrapStatus {
            consumer_group: group.into(),
            replay,
            countries: c(countries),
            bootstrapped: c(done),
        }
    }

    fn stored(b: Option<BootstrapStatus>, ready: bool) -> MarketGroupStatus {
        MarketGroupStatus {
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                reason: "x".into(),
                message: String::new(),
                last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
                observed_generation: None,
            }],
            bootstrap: b,
            ..MarketGroupStatus::default()
        }
    }

    #[test]
    fn the_replay_group_is_the_spec_group_until_a_country_is_added() {
        assert_eq!(replay_group("prapi-shop-eu", 0), "prapi-shop-eu");
        assert_eq!(replay_group("prapi-shop-eu", 3), "prapi-shop-eu-replay-3");
    }

    #[test]
    fn a_new_group_starts_gated_on_the_spec_group() {
        for previous in [None, Some(stored(None, false))] {
            let b = replay("g", &c(&["de", "at", "de"]), previous.as_ref());
            assert_eq!(b, memory("g", 0, &["at", "de"], &[]));
        }
    }

    #[test]
    fn a_group_ready_before_the_gate_existed_is_adopted_as_bootstrapped() {
        let b = replay("g", &c(&["de", "at"]), Some(&stored(None, true)));
        assert_eq!(b, memory("g", 0, &["at", "de"], &["at", "de"]));
    }

    #[test]
    fn an_unchanged_country_set_keeps_the_group_and_what_is_bootstrapped() {
        let prev = stored(Some(memory("g-replay-2", 2, &["at", "de"], &["de"])), true);
        assert_eq!(
            replay("g", &c(&["de", "at"]), Some(&prev)),
            memory("g-replay-2", 2, &["at", "de"], &["de"])
        );
    }

    #[test]
    fn an_added_country_moves_the_updater_to_a_new_group_and_keeps_the_served_ones() {
        let prev = stored(Some(memory("g", 0, &["at", "de"], &["at", "de"])), true);
        assert_eq!(
            replay("g", &c(&["de", "at", "fr"]), Some(&prev)),
            memory("g-replay-1", 1, &["at", "de", "fr"], &["at", "de"])
        );
        // Added while another addition still replays: one more replay (the running one skipped
        // the new country's offers so far).
        let prev = stored(
            Some(memory("g-replay-1", 1, &["at", "de", "fr"], &["at", "de"])),
            true,
        );
        assert_eq!(
            replay("g", &c(&["de", "at", "fr", "ch"]), Some(&prev)),
            memory("g-replay-2", 2, &["at", "ch", "de", "fr"], &["at", "de"])
        );
    }

    #[test]
    fn a_removed_country_leaves_and_coming_back_is_a_replay() {
        let prev = stored(Some(memory("g", 0, &["at", "de"], &["at", "de"])), true);
        let removed = replay("g", &c(&["de"]), Some(&prev));
        assert_eq!(removed, memory("g", 0, &["de"], &["de"]));
        let back = replay("g", &c(&["de", "at"]), Some(&stored(Some(removed), true)));
        assert_eq!(back, memory("g-replay-1", 1, &["at", "de"], &["de"]));
    }

    #[test]
    fn a_changed_spec_group_carries_the_replay_count() {
        let prev = stored(Some(memory("old-replay-1", 1, &["de"], &["de"])), true);
        assert_eq!(
            replay("new", &c(&["de"]), Some(&prev)).consumer_group,
            "new-replay-1"
        );
    }

    /// Every combination of lag (unknown, above, at, below the gate) and memory (nothing served,
    /// some served, all served).
    #[test]
    fn the_gate_opens_only_on_a_known_lag_at_or_under_the_threshold_and_never_closes() {
        let lags = [
            (LagReading::Unknown("broker down".into()), false),
            (LagReading::Known(101), false),
            (LagReading::Known(100), true),
            (LagReading::Known(0), true),
        ];
        let memories = [
            memory("g", 0, &["at", "de"], &[]),
            memory("g-replay-1", 1, &["at", "de", "fr"], &["at", "de"]),
            memory("g", 0, &["at", "de"], &["at", "de"]),
        ];
        for (lag, caught_up) in &lags {
            for m in &memories {
                let gate = decide(m.clone(), lag, 100);
                let want: Vec<String> = if *caught_up {
                    m.countries.clone()
                } else {
                    m.bootstrapped.clone()
                };
                assert_eq!(gate.open(), want.as_slice(), "{lag:?} {m:?}");
                assert_eq!(
                    (gate.status.consumer_group.as_str(), gate.status.replay),
                    (m.consumer_group.as_str(), m.replay)
                );
                let all = gate.open().len() == m.countries.len();
                assert_eq!(
                    (gate.condition.status, gate.condition.reason.as_str()),
                    if all {
                        (Status::True, CAUGHT_UP)
                    } else {
                        (Status::False, BOOTSTRAPPING)
                    },
                    "{lag:?} {m:?}"
                );
                assert_eq!(gate.condition.type_, BOOTSTRAPPED);
            }
        }
    }

    #[test]
    fn the_condition_says_what_waits_why_and_what_is_served() {
        let m = memory("g-replay-1", 1, &["at", "de", "fr"], &["at", "de"]);
        assert_eq!(
            decide(m.clone(), &LagReading::Known(5000), 100)
                .condition
                .message,
            "fr not routed until the updater (consumer group g-replay-1) has read the topics: \
             it is 5000 messages behind (the gate opens at 100 or fewer); serving at, de"
        );
        assert_eq!(
            decide(
                memory("g", 0, &["de"], &[]),
                &LagReading::Unknown("topic offers not found".into()),
                0
            )
            .condition
            .message,
            "de not routed until the updater (consumer group g) has read the topics: \
             its lag cannot be read (topic offers not found)"
        );
        assert_eq!(
            condition(&m, None, 100).message,
            "fr not routed until the updater (consumer group g-replay-1) has read the topics: \
             its lag was not read this time; serving at, de"
        );
        assert_eq!(
            decide(m, &LagReading::Known(3), 100).condition.message,
            "the updater (consumer group g-replay-1) has caught up: the table holds the catalogue \
             of at, de, fr"
        );
    }

    #[test]
    fn routes_open_the_stored_groups_bootstrapped_countries() {
        let countries = c(&["de", "fr"]);
        assert!(open_countries(None, &countries).is_empty());
        assert_eq!(
            open_countries(Some(&stored(None, true)), &countries),
            c(&["de", "fr"])
        );
        let b = memory("g-replay-1", 1, &["de", "fr"], &["de"]);
        assert_eq!(
            open_countries(Some(&stored(Some(b), true)), &countries),
            c(&["de"])
        );
    }
}
