//! The Events a reconcile publishes, derived purely from what changed, so that `kubectl describe
//! mg` tells the story of a traffic shift or an incident without anyone reading the operator's
//! logs:
//!
//! - from the status before and after ([`status_notices`]): Ready gained or lost, Degraded entered
//!   or its reason changed, the group suspended or resumed (`spec.suspend`), every step of a
//!   country's actual traffic weight (from → to, with the desired weight), every change of the
//!   products or batch HPA floor (raised ahead of a shift, lowered after it), the bootstrap gate
//!   starting to wait for countries and opening for them (`status.bootstrap`);
//! - from what the store step did ([`store_notices`]): the table created or deleted, its
//!   capacity floors (Application Auto Scaling minimums) set.
//!
//! The shell publishes each [`Notice`] with kube-runtime's events `Recorder`, which folds repeats
//! of one reason and action into one Event with a count, keeping the first note: a notice whose
//! note differs from one publish to the next (each weight step, each capacity floor) names what it
//! did in its action, so every step is its own Event.

use crate::aws::Billing;
use crate::aws::planner::AwsAction;
use crate::crd::MarketGroupStatus;
use crate::gate;
use crate::status;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// One Event to publish on the group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// A Warning Event (else Normal).
    pub warning: bool,
    /// CamelCase reason.
    pub reason: String,
    /// The action taken: `Reconcile`, or what this step did when its note varies.
    pub action: String,
    /// What happened, for a person.
    pub note: String,
}

/// The action of the notices whose note says all there is.
pub const RECONCILE: &str = "Reconcile";

impl Notice {
    fn normal(reason: &str, note: String) -> Notice {
        Notice {
            warning: false,
            reason: reason.into(),
            action: RECONCILE.into(),
            note,
        }
    }

    fn warning(reason: &str, note: String) -> Notice {
        Notice {
            warning: true,
            ..Notice::normal(reason, note)
        }
    }

    fn action(self, action: String) -> Notice {
        Notice { action, ..self }
    }
}

fn condition<'a>(s: Option<&'a MarketGroupStatus>, type_: &str) -> Option<&'a Condition> {
    s.and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
}

fn percent(p: Option<i32>) -> String {
    p.map_or_else(|| "unknown".to_string(), |p| format!("{p}%"))
}

/// The countries the bootstrap gate waits for.
fn waiting(s: Option<&MarketGroupStatus>) -> Vec<String> {
    s.and_then(|s| s.bootstrap.as_ref())
        .map(gate::pending)
        .unwrap_or_default()
}

/// The Events for the transition from `old` to `new`, in a stable order.
pub fn status_notices(old: Option<&MarketGroupStatus>, new: &MarketGroupStatus) -> Vec<Notice> {
    let mut out = Vec::new();
    let was_ready = status::is_true(old, status::READY);
    let ready = status::is_true(Some(new), status::READY);
    if ready && !was_ready {
        out.push(Notice::normal("Ready", "the market group serves".into()));
    } else if was_ready && !ready {
        let msg = condition(Some(new), status::READY)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        out.push(Notice::warning("NotReady", msg));
    }
    match (
        status::is_true(old, status::SUSPENDED),
        status::is_true(Some(new), status::SUSPENDED),
    ) {
        (false, true) => out.push(Notice::warning(
            "Suspended",
            "spec.suspend is true: the operator writes none of the group's objects and leaves the routes of its countries as they are until it is set back to false".into(),
        )),
        (true, false) => out.push(Notice::normal(
            "Resumed",
            "spec.suspend is false again: the operator converges the group on its spec".into(),
        )),
        _ => {}
    }
    let old_degraded = condition(old, status::DEGRADED).filter(|c| c.status == "True");
    if let Some(d) = condition(Some(new), status::DEGRADED).filter(|c| c.status == "True")
        && old_degraded.map(|o| (&o.reason, &o.message)) != Some((&d.reason, &d.message))
    {
        out.push(Notice::warning(&d.reason, d.message.clone()));
    }
    for t in &new.traffic {
        let before = old
            .and_then(|o| o.traffic.iter().find(|p| p.country == t.country))
            .and_then(|p| p.actual);
        // A weight first read back is a step too (from nothing to what the route gives); a
        // reading lost is not (the route did not change, the operator just could not tell).
        if let Some(now) = t.actual
            && before != Some(now)
        {
            out.push(
                Notice::normal(
                    "TrafficShifted",
                    format!(
                        "{}: {} → {} of the country's traffic (desired {}%)",
                        t.country,
                        percent(before),
                        percent(Some(now)),
                        t.desired
                    ),
                )
                .action(format!(
                    "ShiftTraffic {} {} to {now}",
                    t.country,
                    percent(before)
                )),
            );
        }
    }
    let floors = |s: Option<&MarketGroupStatus>| {
        let c = s.and_then(|s| s.components.as_ref());
        [
            ("products", c.and_then(|c| c.products.hpa_floor)),
            ("batch", c.and_then(|c| c.batch.hpa_floor)),
        ]
    };
    for ((component, before), (_, now)) in floors(old).into_iter().zip(floors(Some(new))) {
        // The first floor a group gets is its spec's, not a change.
        if let (Some(before), Some(now)) = (before, now)
            && before != now
        {
            let why = if now > before {
                "raised ahead of a traffic shift to the group, or by the spec"
            } else {
                "lowered after the shift, or by the spec"
            };
            out.push(
                Notice::normal(
                    "HPAFloorChanged",
                    format!("{component} HPA minimum {before} → {now} replicas ({why})"),
                )
                .action(format!("SetHPAFloor {component} {before} to {now}")),
            );
        }
    }
    // Opened: bootstrapped now and not before. Compared with what was open rather than with what
    // was waiting, so that a reconcile whose stored status is a step behind (the watch had not
    // delivered the last status write yet) still tells.
    let (was_waiting, now_waiting) = (waiting(old), waiting(Some(new)));
    let was_open = new
        .bootstrap
        .as_ref()
        .map(|b| gate::open_countries(old, &b.countries))
        .unwrap_or_default();
    let started: Vec<&str> = now_waiting
        .iter()
        .filter(|c| !was_waiting.contains(c))
        .map(String::as_str)
        .collect();
    let opened: Vec<&str> = new
        .bootstrap
        .iter()
        .flat_map(|b| b.bootstrapped.iter())
        .filter(|c| !was_open.contains(c))
        .map(String::as_str)
        .collect();
    if let Some(b) = new.bootstrap.as_ref().filter(|_| !started.is_empty()) {
        let countries = started.join(", ");
        out.push(
            Notice::normal(
                "BootstrapStarted",
                format!(
                    "{countries}: not routed until the updater (consumer group {}) has read the topics from the start",
                    b.consumer_group
                ),
            )
            .action(format!("Bootstrap {countries}")),
        );
    }
    if !opened.is_empty() {
        let countries = opened.join(", ");
        out.push(
            Notice::normal(
                "BootstrapFinished",
                format!("{countries}: the updater has caught up; routed from now on"),
            )
            .action(format!("Bootstrapped {countries}")),
        );
    }
    out
}

/// The Events for what the store step did to the group's `table`.
pub fn store_notices(table: &str, executed: &[AwsAction]) -> Vec<Notice> {
    executed
        .iter()
        .filter_map(|a| match a {
            AwsAction::CreateTable {
                billing,
                read,
                write,
                ..
            } => Some(Notice::normal(
                "TableCreated",
                match billing {
                    Billing::Provisioned => format!(
                        "created DynamoDB table {table} (provisioned: {read} read, {write} write units)"
                    ),
                    Billing::PayPerRequest => {
                        format!("created DynamoDB table {table} (on demand)")
                    }
                },
            )),
            AwsAction::DeleteTable => Some(Notice::normal(
                "TableDeleted",
                format!("deleted DynamoDB table {table} (deletionPolicy Delete)"),
            )),
            AwsAction::RegisterTarget {
                dimension,
                min,
                max,
            } => Some(
                Notice::normal(
                    "CapacityFloorChanged",
                    format!(
                        "{table}: {} capacity autoscaling between {min} and {max} units",
                        dimension.as_str()
                    ),
                )
                .action(format!(
                    "RegisterScalableTarget {} {min}-{max}",
                    dimension.as_str()
                )),
            ),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::Dimension;
    use crate::crd::{BootstrapStatus, CountryTraffic};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn cond(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            observed_generation: None,
        }
    }

    fn traffic(country: &str, desired: i32, actual: Option<i32>) -> CountryTraffic {
        CountryTraffic {
            country: country.into(),
            desired,
            actual,
            reason: None,
        }
    }

    fn st(conditions: Vec<Condition>, traffic: Vec<CountryTraffic>) -> MarketGroupStatus {
        MarketGroupStatus {
            conditions,
            traffic,
            ..MarketGroupStatus::default()
        }
    }

    fn reasons(n: &[Notice]) -> Vec<(&str, bool)> {
        n.iter().map(|n| (n.reason.as_str(), n.warning)).collect()
    }

    #[test]
    fn an_unchanged_status_publishes_nothing() {
        let s = st(
            vec![
                cond("Ready", "True", "Ready", ""),
                cond("Degraded", "True", "ApplyFailed", "boom"),
            ],
            vec![traffic("de", 50, Some(50)), traffic("at", 100, None)],
        );
        let s = MarketGroupStatus {
            bootstrap: boot("g", &["at", "de"], &["de"]),
            ..s
        };
        assert_eq!(status_notices(Some(&s), &s), vec![]);
    }

    #[test]
    fn each_weight_step_is_one_event_per_country_with_from_and_to() {
        let old = st(
            vec![],
            vec![
                traffic("de", 100, Some(20)),
                traffic("at", 100, Some(100)),
                traffic("ch", 100, Some(30)),
            ],
        );
        let new = st(
            vec![],
            vec![
                traffic("de", 100, Some(40)),
                traffic("at", 100, Some(100)),
                traffic("ch", 100, None),
                traffic("fr", 10, Some(10)),
            ],
        );
        let n = status_notices(Some(&old), &new);
        assert_eq!(
            n.iter().map(|n| n.note.as_str()).collect::<Vec<_>>(),
            [
                "de: 20% → 40% of the country's traffic (desired 100%)",
                "fr: unknown → 10% of the country's traffic (desired 10%)",
            ]
        );
        assert_eq!(reasons(&n), [("TrafficShifted", false); 2]);
        // Each step its own Event: the Recorder folds notices by reason and action.
        assert_eq!(
            n.iter().map(|n| n.action.as_str()).collect::<Vec<_>>(),
            ["ShiftTraffic de 20% to 40", "ShiftTraffic fr unknown to 10"]
        );
        // The first status of a group: every known weight is news.
        let n = status_notices(None, &new);
        assert_eq!(n.len(), 3, "{n:?}");
    }

    fn boot(group: &str, countries: &[&str], done: &[&str]) -> Option<BootstrapStatus> {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect();
        Some(BootstrapStatus {
            consumer_group: group.into(),
            replay: 0,
            countries: v(countries),
            bootstrapped: v(done),
        })
    }

    #[test]
    fn ready_and_degraded_transitions() {
        let before = st(vec![cond("Ready", "True", "Ready", "")], vec![]);
        let after = st(
            vec![
                cond(
                    "Ready",
                    "False",
                    "WorkloadsNotReady",
                    "products unavailable",
                ),
                cond("Degraded", "True", "ApplyFailed", "forbidden"),
            ],
            vec![],
        );
        let n = status_notices(Some(&before), &after);
        assert_eq!(reasons(&n), [("NotReady", true), ("ApplyFailed", true)]);
        assert_eq!(n[0].note, "products unavailable");
        // Same degradation with another message: published again; Ready back.
        let later = st(
            vec![
                cond("Ready", "True", "Ready", ""),
                cond("Degraded", "True", "ApplyFailed", "still forbidden"),
            ],
            vec![],
        );
        assert_eq!(
            reasons(&status_notices(Some(&after), &later)),
            [("Ready", false), ("ApplyFailed", true)]
        );
    }

    #[test]
    fn the_gate_publishes_when_it_starts_waiting_for_countries_and_when_it_opens_them() {
        let with = |b| MarketGroupStatus {
            bootstrap: b,
            ..MarketGroupStatus::default()
        };
        // A new group: both countries wait.
        let first = with(boot("g", &["at", "de"], &[]));
        let n = status_notices(None, &first);
        assert_eq!(reasons(&n), [("BootstrapStarted", false)]);
        assert_eq!(
            n[0].note,
            "at, de: not routed until the updater (consumer group g) has read the topics from the start"
        );
        assert_eq!(n[0].action, "Bootstrap at, de");
        // Still waiting: nothing new.
        assert_eq!(status_notices(Some(&first), &first), vec![]);
        // Caught up.
        let open = with(boot("g", &["at", "de"], &["at", "de"]));
        let n = status_notices(Some(&first), &open);
        assert_eq!(reasons(&n), [("BootstrapFinished", false)]);
        assert_eq!(
            n[0].note,
            "at, de: the updater has caught up; routed from now on"
        );
        // fr added: only fr starts; then it opens on its own.
        let replaying = with(boot("g-replay-1", &["at", "de", "fr"], &["at", "de"]));
        let n = status_notices(Some(&open), &replaying);
        assert_eq!(
            n.iter().map(|n| n.action.as_str()).collect::<Vec<_>>(),
            ["Bootstrap fr"]
        );
        let done = with(boot("g-replay-1", &["at", "de", "fr"], &["at", "de", "fr"]));
        let n = status_notices(Some(&replaying), &done);
        assert_eq!(
            n.iter().map(|n| n.action.as_str()).collect::<Vec<_>>(),
            ["Bootstrapped fr"]
        );
        // A waiting country removed is neither finished nor started.
        let removed = with(boot("g-replay-1", &["at", "de"], &["at", "de"]));
        assert_eq!(status_notices(Some(&replaying), &removed), vec![]);
        // An adopted group (served before the gate existed) publishes nothing.
        let ready_before = st(vec![cond("Ready", "True", "Ready", "")], vec![]);
        let adopted = MarketGroupStatus {
            conditions: ready_before.conditions.clone(),
            ..open.clone()
        };
        assert_eq!(status_notices(Some(&ready_before), &adopted), vec![]);
        // A group caught up at its first reading (empty topics): it opened.
        assert_eq!(
            reasons(&status_notices(None, &open)),
            [("BootstrapFinished", false)]
        );
        // The stored status a step behind (the replay's start not seen yet): fr still opened.
        let n = status_notices(Some(&open), &done);
        assert_eq!(
            n.iter().map(|n| n.action.as_str()).collect::<Vec<_>>(),
            ["Bootstrapped fr"]
        );
    }

    fn with_floors(products: Option<i32>, batch: Option<i32>) -> MarketGroupStatus {
        let c = |f| crate::crd::ComponentStatus {
            hpa_floor: f,
            ..Default::default()
        };
        MarketGroupStatus {
            components: Some(crate::crd::ComponentsStatus {
                updater: c(None),
                products: c(products),
                batch: c(batch),
            }),
            ..MarketGroupStatus::default()
        }
    }

    #[test]
    fn each_hpa_floor_change_is_one_event_with_from_and_to() {
        let n = status_notices(
            Some(&with_floors(Some(2), Some(2))),
            &with_floors(Some(5), Some(2)),
        );
        assert_eq!(reasons(&n), [("HPAFloorChanged", false)]);
        assert_eq!(
            n[0].note,
            "products HPA minimum 2 → 5 replicas (raised ahead of a traffic shift to the group, or by the spec)"
        );
        assert_eq!(n[0].action, "SetHPAFloor products 2 to 5");
        let n = status_notices(
            Some(&with_floors(Some(5), Some(3))),
            &with_floors(Some(2), Some(1)),
        );
        assert_eq!(
            n.iter().map(|n| n.action.as_str()).collect::<Vec<_>>(),
            ["SetHPAFloor products 5 to 2", "SetHPAFloor batch 3 to 1"]
        );
        assert!(
            n[1].note.contains("lowered after the shift"),
            "{}",
            n[1].note
        );
        // The first floors, and floors not read this time, are not changes.
        assert_eq!(status_notices(None, &with_floors(Some(5), Some(3))), vec![]);
        assert_eq!(
            status_notices(
                Some(&with_floors(None, None)),
                &with_floors(Some(5), Some(3))
            ),
            vec![]
        );
        let same = with_floors(Some(4), Some(4));
        assert_eq!(status_notices(Some(&same), &same), vec![]);
    }

    #[test]
    fn suspending_warns_and_resuming_is_normal() {
        let active = st(vec![cond("Suspended", "False", "Reconciling", "")], vec![]);
        let suspended = st(vec![cond("Suspended", "True", "Suspended", "")], vec![]);
        let n = status_notices(Some(&active), &suspended);
        assert_eq!(reasons(&n), [("Suspended", true)]);
        assert!(n[0].note.contains("spec.suspend is true"), "{}", n[0].note);
        assert_eq!(
            reasons(&status_notices(Some(&suspended), &active)),
            [("Resumed", false)]
        );
        // Created suspended: warned at once; never suspended: nothing.
        assert_eq!(
            reasons(&status_notices(None, &suspended)),
            [("Suspended", true)]
        );
        assert_eq!(status_notices(None, &active), vec![]);
        assert_eq!(status_notices(Some(&suspended), &suspended), vec![]);
    }

    #[test]
    fn store_actions_that_matter_to_a_person_become_events() {
        let n = store_notices(
            "shop-dach",
            &[
                AwsAction::CreateTable {
                    billing: Billing::Provisioned,
                    read: 5,
                    write: 4000,
                    tags: vec![],
                },
                AwsAction::RegisterTarget {
                    dimension: Dimension::Write,
                    min: 4000,
                    max: 40000,
                },
                AwsAction::SetCapacity { read: 5, write: 5 },
                AwsAction::DeleteTable,
            ],
        );
        assert_eq!(
            n.iter()
                .map(|n| (n.reason.as_str(), n.note.as_str()))
                .collect::<Vec<_>>(),
            [
                (
                    "TableCreated",
                    "created DynamoDB table shop-dach (provisioned: 5 read, 4000 write units)"
                ),
                (
                    "CapacityFloorChanged",
                    "shop-dach: write capacity autoscaling between 4000 and 40000 units"
                ),
                (
                    "TableDeleted",
                    "deleted DynamoDB table shop-dach (deletionPolicy Delete)"
                ),
            ]
        );
        assert_eq!(
            store_notices(
                "t",
                &[AwsAction::CreateTable {
                    billing: Billing::PayPerRequest,
                    read: 0,
                    write: 0,
                    tags: vec![]
                }]
            )[0]
            .note,
            "created DynamoDB table t (on demand)"
        );
    }
}
