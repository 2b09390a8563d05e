use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

const DAY: u64 = 86_400;

fn at(secs: u64) -> SystemTime {
    // A fixed UTC midnight, plus `secs`.
    SystemTime::UNIX_EPOCH + Duration::from_secs(20_000 * DAY + secs)
}

fn spec() -> TableSpec {
    TableSpec {
        name: "prapi-shop-eu".into(),
        group: "shop/eu".into(),
        billing: Billing::Provisioned,
        read: CapacityRange {
            min: 5,
            max: 1000,
            target_utilization: 70.0,
        },
        write: CapacityRange {
            min: 5,
            max: 1000,
            target_utilization: 70.0,
        },
        bootstrap_write_capacity: 4000,
        bootstrap_lag_threshold: 5000,
        deletion_policy: DeletionPolicy::Retain,
    }
}

fn table(read: i64, write: i64) -> TableState {
    TableState {
        arn: "arn:aws:dynamodb:us-east-1:000000000000:table/prapi-shop-eu".into(),
        status: "ACTIVE".into(),
        key_schema: vec![
            ("pk".into(), "HASH".into(), "S".into()),
            ("sk".into(), "RANGE".into(), "S".into()),
        ],
        billing: Billing::Provisioned,
        last_switch_to_pay_per_request: None,
        read_capacity: read,
        write_capacity: write,
        decreases_today: 0,
        last_decrease: None,
        tags: BTreeMap::from([
            (TAG_GROUP.to_string(), "shop/eu".to_string()),
            (TAG_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
            (TAG_BOOTSTRAPPED.to_string(), "true".to_string()),
        ]),
    }
}

fn scaling(read: (i64, i64), write: (i64, i64), s: &TableSpec) -> ScalingState {
    let policy = |d: Dimension, v: f64| PolicyState {
        name: d.policy_name(&s.name),
        target_value: Some(v),
        metric: Some(d.metric().into()),
    };
    ScalingState {
        targets: BTreeMap::from([
            (
                Dimension::Read,
                TargetState {
                    min: read.0,
                    max: read.1,
                },
            ),
            (
                Dimension::Write,
                TargetState {
                    min: write.0,
                    max: write.1,
                },
            ),
        ]),
        policies: BTreeMap::from([
            (
                Dimension::Read,
                vec![policy(Dimension::Read, s.read.target_utilization)],
            ),
            (
                Dimension::Write,
                vec![policy(Dimension::Write, s.write.target_utilization)],
            ),
        ]),
    }
}

fn observed(t: Option<TableState>, sc: ScalingState, lag: i64) -> AwsState {
    AwsState {
        table: t,
        scaling: sc,
        lag: LagReading::Known(lag),
    }
}

#[test]
fn a_missing_table_is_created_tagged_with_the_bootstrap_floor_while_lag_is_high() {
    let s = spec();
    let p = plan(&s, &observed(None, ScalingState::default(), 100_000), at(0));
    assert_eq!(
        p.actions,
        vec![AwsAction::CreateTable {
            billing: Billing::Provisioned,
            read: 5,
            write: 4000,
            tags: vec![
                ("prapi.dev/group".into(), "shop/eu".into()),
                ("prapi.dev/managed-by".into(), "prapi-operator".into())
            ],
        }]
    );
    assert_eq!((p.condition.ready, p.condition.reason), (false, "Creating"));
    assert!(p.bootstrapping);
    // Nothing to catch up on: created at the normal floor.
    let p = plan(&s, &observed(None, ScalingState::default(), 0), at(0));
    assert!(matches!(
        p.actions[0],
        AwsAction::CreateTable { write: 5, .. }
    ));
    let mut ppr = spec();
    ppr.billing = Billing::PayPerRequest;
    let p = plan(&ppr, &observed(None, ScalingState::default(), 0), at(0));
    assert!(matches!(
        p.actions[0],
        AwsAction::CreateTable {
            billing: Billing::PayPerRequest,
            ..
        }
    ));
}

#[test]
fn a_table_of_another_group_or_untagged_is_never_touched() {
    let s = spec();
    for tags in [
        BTreeMap::from([(TAG_GROUP.to_string(), "shop/other".to_string())]),
        BTreeMap::new(),
    ] {
        let mut t = table(1, 1);
        t.tags = tags;
        t.billing = Billing::PayPerRequest;
        let p = plan(
            &s,
            &observed(Some(t.clone()), scaling((1, 2), (1, 2), &s), 10),
            at(0),
        );
        assert!(p.actions.is_empty(), "{p:?}");
        assert_eq!(p.condition.reason, "TableNotOwned");
        assert!(!p.condition.ready);
        let mut del = spec();
        del.deletion_policy = DeletionPolicy::Delete;
        let c = cleanup(&del, &observed(Some(t), scaling((1, 2), (1, 2), &s), 0));
        assert!(c.actions.is_empty());
        assert!(c.done_after);
    }
}

#[test]
fn an_active_owned_table_gets_its_autoscaling_and_nothing_more() {
    let s = spec();
    let p = plan(
        &s,
        &observed(Some(table(5, 5)), ScalingState::default(), 0),
        at(0),
    );
    assert_eq!(
        p.actions,
        vec![
            AwsAction::RegisterTarget {
                dimension: Dimension::Read,
                min: 5,
                max: 1000
            },
            AwsAction::PutPolicy {
                dimension: Dimension::Read,
                name: "prapi-prapi-shop-eu-read".into(),
                target: 70.0
            },
            AwsAction::RegisterTarget {
                dimension: Dimension::Write,
                min: 5,
                max: 1000
            },
            AwsAction::PutPolicy {
                dimension: Dimension::Write,
                name: "prapi-prapi-shop-eu-write".into(),
                target: 70.0
            },
        ]
    );
    assert_eq!(
        (p.condition.ready, p.condition.reason),
        (true, "TableReady")
    );
    // Converged: nothing to do.
    let p = plan(
        &s,
        &observed(Some(table(5, 5)), scaling((5, 1000), (5, 1000), &s), 0),
        at(0),
    );
    assert!(p.actions.is_empty(), "{p:?}");
    // Capacity that autoscaling raised is left alone.
    let p = plan(
        &s,
        &observed(Some(table(700, 300)), scaling((5, 1000), (5, 1000), &s), 0),
        at(0),
    );
    assert!(p.actions.is_empty(), "{p:?}");
}

#[test]
fn changed_ranges_and_targets_update_targets_and_policies() {
    let mut s = spec();
    s.read.max = 2000;
    s.write.target_utilization = 50.0;
    let old = spec();
    let p = plan(
        &s,
        &observed(Some(table(5, 5)), scaling((5, 1000), (5, 1000), &old), 0),
        at(0),
    );
    assert_eq!(
        p.actions,
        vec![
            AwsAction::RegisterTarget {
                dimension: Dimension::Read,
                min: 5,
                max: 2000
            },
            AwsAction::PutPolicy {
                dimension: Dimension::Write,
                name: "prapi-prapi-shop-eu-write".into(),
                target: 50.0
            },
        ]
    );
    // A raised minimum raises the capacity at once.
    let mut s = spec();
    s.read.min = 50;
    let p = plan(
        &s,
        &observed(Some(table(5, 5)), scaling((50, 1000), (5, 1000), &s), 0),
        at(0),
    );
    assert_eq!(
        p.actions,
        vec![AwsAction::SetCapacity { read: 50, write: 5 }]
    );
}

#[test]
fn bootstrap_floor_is_raised_while_lag_is_high_and_restored_after() {
    let s = spec();
    let mut t = table(5, 5);
    t.tags.remove(TAG_BOOTSTRAPPED);
    // Lag high: floor 4000, target min 4000, StoreReady True BootstrapCapacity.
    let p = plan(
        &s,
        &observed(Some(t.clone()), scaling((5, 1000), (5, 1000), &s), 60_000),
        at(0),
    );
    assert_eq!(
        p.actions,
        vec![
            AwsAction::RegisterTarget {
                dimension: Dimension::Write,
                min: 4000,
                max: 4000
            },
            AwsAction::SetCapacity {
                read: 5,
                write: 4000
            },
        ]
    );
    assert_eq!(
        (p.condition.ready, p.condition.reason),
        (true, "BootstrapCapacity")
    );
    assert!(
        p.condition.message.contains("60000 messages behind"),
        "{}",
        p.condition.message
    );
    assert!(p.condition.message.contains("write capacity floor 4000"));
    // Unknown lag on a table not yet filled: still bootstrapping.
    let p = plan(
        &s,
        &AwsState {
            table: Some(t.clone()),
            scaling: scaling((5, 1000), (4000, 4000), &s),
            lag: LagReading::Unknown("broker down".into()),
        },
        at(0),
    );
    assert!(p.bootstrapping);
    // Caught up: tag, restore the range, lower to the maximum (first decrease of the day).
    t.write_capacity = 4000;
    let p = plan(
        &s,
        &observed(Some(t.clone()), scaling((5, 1000), (4000, 4000), &s), 10),
        at(0),
    );
    assert_eq!(
        p.actions,
        vec![
            AwsAction::TagTable {
                tags: vec![(TAG_BOOTSTRAPPED.into(), "true".into())]
            },
            AwsAction::RegisterTarget {
                dimension: Dimension::Write,
                min: 5,
                max: 1000
            },
            AwsAction::SetCapacity {
                read: 5,
                write: 1000
            },
        ]
    );
    assert_eq!(
        (p.condition.ready, p.condition.reason),
        (true, "TableReady")
    );
    // Once bootstrapped, a lag spike does not bring the floor back.
    let p = plan(
        &s,
        &observed(
            Some(table(5, 1000)),
            scaling((5, 1000), (5, 1000), &s),
            1_000_000,
        ),
        at(0),
    );
    assert!(p.actions.is_empty(), "{p:?}");
    assert!(p.condition.ready);
}

#[test]
fn decreases_keep_to_dynamodbs_budget() {
    let mut t = table(5, 5);
    let now = at(12 * 3600);
    t.decreases_today = 3;
    t.last_decrease = Some(now - Duration::from_secs(60));
    assert!(decrease_allowed(&t, now));
    t.decreases_today = 4;
    assert!(
        !decrease_allowed(&t, now),
        "free decreases used, last one a minute ago"
    );
    t.last_decrease = Some(now - Duration::from_secs(3600));
    assert!(decrease_allowed(&t, now), "an hour without a decrease");
    t.decreases_today = 27;
    assert!(!decrease_allowed(&t, now), "the daily maximum");
    // A new UTC day resets the counter.
    t.last_decrease = Some(at(0) - Duration::from_secs(60));
    assert!(decrease_allowed(&t, now));

    // Above a lowered maximum without budget: kept, checked again in an hour.
    let mut s = spec();
    s.write.max = 100;
    let mut t = table(5, 500);
    t.decreases_today = 4;
    t.last_decrease = Some(now - Duration::from_secs(10));
    let p = plan(
        &s,
        &observed(Some(t.clone()), scaling((5, 1000), (5, 100), &s), 0),
        now,
    );
    assert!(p.actions.is_empty(), "{p:?}");
    assert_eq!(p.requeue_after, Some(DECREASE_INTERVAL));
    assert!(p.condition.message.contains("decrease"));
    t.last_decrease = Some(now - Duration::from_secs(3601));
    let p = plan(
        &s,
        &observed(Some(t), scaling((5, 1000), (5, 100), &s), 0),
        now,
    );
    assert_eq!(
        p.actions,
        vec![AwsAction::SetCapacity {
            read: 5,
            write: 100
        }]
    );
}

#[test]
fn billing_switches_keep_to_the_limits_and_move_autoscaling_first() {
    let mut s = spec();
    s.billing = Billing::PayPerRequest;
    let mut t = table(5, 5);
    let p = plan(
        &s,
        &observed(Some(t.clone()), scaling((5, 1000), (5, 1000), &spec()), 0),
        at(0),
    );
    assert_eq!(
        p.actions,
        vec![
            AwsAction::DeletePolicy {
                dimension: Dimension::Read,
                name: "prapi-prapi-shop-eu-read".into()
            },
            AwsAction::DeregisterTarget {
                dimension: Dimension::Read
            },
            AwsAction::DeletePolicy {
                dimension: Dimension::Write,
                name: "prapi-prapi-shop-eu-write".into()
            },
            AwsAction::DeregisterTarget {
                dimension: Dimension::Write
            },
            AwsAction::SwitchBilling {
                to: Billing::PayPerRequest,
                read: 0,
                write: 0
            },
        ]
    );
    // Switched to on-demand 2 hours ago: the next switch waits 22 hours (no flapping).
    t.last_switch_to_pay_per_request = Some(at(0));
    let p = plan(
        &s,
        &observed(Some(t.clone()), ScalingState::default(), 0),
        at(2 * 3600),
    );
    assert!(p.actions.is_empty(), "{p:?}");
    assert!(p.condition.ready, "the table still serves");
    assert!(
        p.condition.message.contains("deferred for 79200s"),
        "{}",
        p.condition.message
    );
    assert_eq!(p.requeue_after, Some(Duration::from_secs(3600)));
    let p = plan(
        &s,
        &observed(Some(t.clone()), ScalingState::default(), 0),
        at(DAY),
    );
    assert!(matches!(
        p.actions[..],
        [AwsAction::SwitchBilling {
            to: Billing::PayPerRequest,
            ..
        }]
    ));

    // On-demand -> provisioned at any time, with the wanted floors; targets come next round.
    let s = spec();
    let mut t = table(0, 0);
    t.billing = Billing::PayPerRequest;
    t.last_switch_to_pay_per_request = Some(at(0));
    let p = plan(
        &s,
        &observed(Some(t.clone()), ScalingState::default(), 0),
        at(60),
    );
    assert_eq!(
        p.actions,
        vec![AwsAction::SwitchBilling {
            to: Billing::Provisioned,
            read: 5,
            write: 5
        }]
    );
    // Not while UPDATING.
    t.status = "UPDATING".into();
    let p = plan(&s, &observed(Some(t), ScalingState::default(), 0), at(60));
    assert!(p.actions.is_empty());
    assert_eq!(p.requeue_after, Some(SHORT_REQUEUE));
}

#[test]
fn creating_deleting_and_foreign_layouts_wait_or_refuse() {
    let s = spec();
    let mut t = table(5, 5);
    t.status = "CREATING".into();
    let p = plan(
        &s,
        &observed(Some(t.clone()), ScalingState::default(), 0),
        at(0),
    );
    assert_eq!((p.actions.len(), p.condition.reason), (0, "Creating"));
    t.status = "DELETING".into();
    let p = plan(
        &s,
        &observed(Some(t.clone()), ScalingState::default(), 0),
        at(0),
    );
    assert_eq!((p.actions.len(), p.condition.reason), (0, "TableDeleting"));
    let mut t = table(5, 5);
    t.key_schema = vec![("id".into(), "HASH".into(), "S".into())];
    let p = plan(&s, &observed(Some(t), ScalingState::default(), 0), at(0));
    assert_eq!(
        (p.actions.len(), p.condition.reason),
        (0, "TableLayoutMismatch")
    );
}

#[test]
fn cleanup_follows_the_deletion_policy() {
    let s = spec();
    let sc = scaling((5, 1000), (5, 1000), &s);
    let c = cleanup(&s, &observed(Some(table(5, 5)), sc.clone(), 0));
    assert_eq!(
        c.actions,
        vec![
            AwsAction::DeletePolicy {
                dimension: Dimension::Read,
                name: "prapi-prapi-shop-eu-read".into()
            },
            AwsAction::DeregisterTarget {
                dimension: Dimension::Read
            },
            AwsAction::DeletePolicy {
                dimension: Dimension::Write,
                name: "prapi-prapi-shop-eu-write".into()
            },
            AwsAction::DeregisterTarget {
                dimension: Dimension::Write
            }
        ]
    );
    // A policy of someone else on the table is not the operator's to delete.
    let mut foreign_policy = ScalingState::default();
    foreign_policy.policies.insert(
        Dimension::Read,
        vec![PolicyState {
            name: "team-policy".into(),
            target_value: Some(50.0),
            metric: None,
        }],
    );
    let c = cleanup(&s, &observed(Some(table(5, 5)), foreign_policy, 0));
    assert!(c.actions.is_empty(), "{c:?}");
    assert!(c.done_after);
    let mut del = spec();
    del.deletion_policy = DeletionPolicy::Delete;
    let c = cleanup(&del, &observed(Some(table(5, 5)), sc, 0));
    assert_eq!(c.actions.last(), Some(&AwsAction::DeleteTable));
    assert!(!c.done_after, "done once the table is gone");
    let mut t = table(5, 5);
    t.status = "DELETING".into();
    let c = cleanup(&del, &observed(Some(t.clone()), ScalingState::default(), 0));
    assert!(c.actions.is_empty() && !c.done_after);
    // A table being deleted may no longer list its tags (dynalite answers none): it is still
    // waited for, not taken for somebody else's table and left behind.
    t.tags.clear();
    let c = cleanup(&del, &observed(Some(t), ScalingState::default(), 0));
    assert!(c.actions.is_empty() && !c.done_after, "{c:?}");
    let c = cleanup(&del, &observed(None, ScalingState::default(), 0));
    assert!(c.actions.is_empty() && c.done_after);
}

proptest! {
    /// Whatever is observed, the plan never touches a foreign table, never decreases beyond the
    /// budget, and keeps capacities and ranges within 1..=40000 with min <= max.
    #[test]
    fn plans_stay_within_limits(
        read in 0i64..50_000, write in 0i64..50_000,
        rmin in 1i64..100, rmax in 100i64..50_000, wmin in 1i64..100, wmax in 100i64..50_000,
        boot in 1i64..50_000, lag in 0i64..100_000,
        decreases in 0i64..30, since_decrease in 0u64..10_000,
        provisioned in any::<bool>(), observed_provisioned in any::<bool>(),
        bootstrapped in any::<bool>(), ours in any::<bool>(),
    ) {
        let mut s = spec();
        s.read.min = rmin; s.read.max = rmax; s.write.min = wmin; s.write.max = wmax;
        s.bootstrap_write_capacity = boot;
        s.billing = if provisioned { Billing::Provisioned } else { Billing::PayPerRequest };
        let now = at(12 * 3600);
        let mut t = table(read, write);
        t.billing = if observed_provisioned { Billing::Provisioned } else { Billing::PayPerRequest };
        t.decreases_today = decreases;
        t.last_decrease = Some(now - Duration::from_secs(since_decrease));
        if !bootstrapped { t.tags.remove(TAG_BOOTSTRAPPED); }
        if !ours { t.tags.insert(TAG_GROUP.into(), "shop/other".into()); }
        let p = plan(&s, &observed(Some(t.clone()), ScalingState::default(), lag), now);
        if !ours { prop_assert!(p.actions.is_empty()); }
        for a in &p.actions {
            match a {
                AwsAction::SetCapacity { read: r, write: w } => {
                    // A value is either within the quota or the table's current one, unchanged
                    // (kept because DynamoDB allows no decrease now).
                    let ok = |v: i64, cur: i64| (1..=MAX_TABLE_CAPACITY).contains(&v) || v == cur;
                    prop_assert!(ok(*r, t.read_capacity) && ok(*w, t.write_capacity), "{a:?}");
                    if *r < t.read_capacity || *w < t.write_capacity {
                        prop_assert!(decrease_allowed(&t, now));
                    }
                }
                AwsAction::RegisterTarget { min, max, .. } => {
                    prop_assert!(*min >= 1 && min <= max && *max <= MAX_TABLE_CAPACITY);
                }
                AwsAction::SwitchBilling { to: Billing::PayPerRequest, .. } => {
                    prop_assert!(pay_per_request_allowed_at(&t, now).is_none());
                }
                AwsAction::DeleteTable | AwsAction::CreateTable { .. } => prop_assert!(false, "{a:?}"),
                _ => {}
            }
        }
        if ours {
            prop_assert_eq!(p.bootstrapping, !bootstrapped && lag > s.bootstrap_lag_threshold);
        }
    }
}
