//! Pure planner: from the desired table and what AWS reports, the actions to take now and the
//! `StoreReady` condition.
//!
//! DynamoDB's limits it keeps to:
//! - Provisioned → on-demand at most once per 24 hours (DynamoDB allows up to four switches in a
//!   rolling 24 hours today and allowed one before: once per 24 hours satisfies both and cannot
//!   flap); on-demand → provisioned at any time.
//! - Capacity increases at any time; decreases only within DynamoDB's budget (4 a UTC day, then
//!   one more per hour without a decrease, 27 a day). The operator itself only lowers capacity to
//!   bring it under a lowered maximum (or after the bootstrap floor); everything else is left to
//!   Application Auto Scaling, so the two never fight (no decrease thrash).
//! - At most one UpdateTable per table at a time: nothing is updated while the table is not ACTIVE.
//!
//! Ownership: a table whose `prapi.dev/group` tag is not this group's is never touched, not even
//! its autoscaling.

use super::model::*;
use std::time::{Duration, SystemTime};

/// How long after a switch to on-demand the next one is allowed.
pub const PAY_PER_REQUEST_SWITCH_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// Decreases allowed per UTC day at any time.
pub const FREE_DECREASES_PER_DAY: i64 = 4;
/// Most decreases per UTC day.
pub const MAX_DECREASES_PER_DAY: i64 = 27;
/// After the free decreases, one more per this interval without a decrease.
pub const DECREASE_INTERVAL: Duration = Duration::from_secs(3600);
/// Requeue while the table is being created or updated.
pub const SHORT_REQUEUE: Duration = Duration::from_secs(5);

/// One change to make.
#[derive(Clone, Debug, PartialEq)]
pub enum AwsAction {
    /// CreateTable in the store's layout, tagged.
    CreateTable {
        /// Capacity mode.
        billing: Billing,
        /// Initial read units (Provisioned).
        read: i64,
        /// Initial write units (Provisioned).
        write: i64,
        /// Tags.
        tags: Vec<(String, String)>,
    },
    /// Adds tags to the table.
    TagTable {
        /// Tags.
        tags: Vec<(String, String)>,
    },
    /// UpdateTable to another capacity mode (with capacities when switching to Provisioned).
    SwitchBilling {
        /// The new mode.
        to: Billing,
        /// Read units (Provisioned).
        read: i64,
        /// Write units (Provisioned).
        write: i64,
    },
    /// UpdateTable of the provisioned throughput.
    SetCapacity {
        /// Read units.
        read: i64,
        /// Write units.
        write: i64,
    },
    /// RegisterScalableTarget (creates or updates).
    RegisterTarget {
        /// Dimension.
        dimension: Dimension,
        /// Minimum.
        min: i64,
        /// Maximum.
        max: i64,
    },
    /// PutScalingPolicy (target tracking; creates or updates).
    PutPolicy {
        /// Dimension.
        dimension: Dimension,
        /// Policy name.
        name: String,
        /// Target utilization, percent.
        target: f64,
    },
    /// DeleteScalingPolicy (before its target is deregistered: AWS would drop it with the
    /// target, emulators do not, and an orphaned policy would linger).
    DeletePolicy {
        /// Dimension.
        dimension: Dimension,
        /// Policy name.
        name: String,
    },
    /// DeregisterScalableTarget.
    DeregisterTarget {
        /// Dimension.
        dimension: Dimension,
    },
    /// DeleteTable.
    DeleteTable,
}

/// `StoreReady`'s reason while the table takes the bootstrap write floor (the updater is far
/// behind, typically filling a new table). The table serves meanwhile (`StoreReady` True): whether
/// it holds the catalogue is the bootstrap gate's question ([`crate::gate`]), not the table's.
pub const BOOTSTRAP_CAPACITY: &str = "BootstrapCapacity";

/// The `StoreReady` condition the plan leads to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreCondition {
    /// Whether the table can serve the group.
    pub ready: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// What it means here.
    pub message: String,
}

/// What to do now.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Actions, in order.
    pub actions: Vec<AwsAction>,
    /// The condition.
    pub condition: StoreCondition,
    /// Whether the write floor is the bootstrap floor.
    pub bootstrapping: bool,
    /// Check again after this long (a wait that ends on its own), if sooner than the resync.
    pub requeue_after: Option<Duration>,
}

fn condition(ready: bool, reason: &'static str, message: impl Into<String>) -> StoreCondition {
    StoreCondition {
        ready,
        reason,
        message: message.into(),
    }
}

/// Whether DynamoDB allows a decrease now.
pub fn decrease_allowed(t: &TableState, now: SystemTime) -> bool {
    let decreases = if same_utc_day(t.last_decrease, now) {
        t.decreases_today
    } else {
        0
    };
    if decreases < FREE_DECREASES_PER_DAY {
        return true;
    }
    if decreases >= MAX_DECREASES_PER_DAY {
        return false;
    }
    match t.last_decrease {
        Some(last) => now
            .duration_since(last)
            .is_ok_and(|d| d >= DECREASE_INTERVAL),
        None => true,
    }
}

fn same_utc_day(t: Option<SystemTime>, now: SystemTime) -> bool {
    let day = |x: SystemTime| {
        x.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() / 86_400)
            .ok()
    };
    // Without a last decrease, DynamoDB's counter is what it is: trust it.
    t.is_none_or(|t| day(t) == day(now))
}

/// When a switch to on-demand is allowed (None: now).
pub fn pay_per_request_allowed_at(t: &TableState, now: SystemTime) -> Option<SystemTime> {
    let last = t.last_switch_to_pay_per_request?;
    let at = last + PAY_PER_REQUEST_SWITCH_INTERVAL;
    (at > now).then_some(at)
}

/// Whether the table is still being filled (bootstrap floor applies), and a message about the lag.
pub fn bootstrapping(
    spec: &TableSpec,
    table: Option<&TableState>,
    lag: &LagReading,
) -> (bool, String) {
    let done = table.is_some_and(|t| t.tags.get(TAG_BOOTSTRAPPED).is_some_and(|v| v == "true"));
    match lag {
        LagReading::Known(n) if *n > spec.bootstrap_lag_threshold && !done => (
            true,
            format!(
                "the updater is {n} messages behind (threshold {}): filling the table",
                spec.bootstrap_lag_threshold
            ),
        ),
        LagReading::Known(n) => (false, format!("updater lag {n} messages")),
        LagReading::Unknown(why) if !done => (
            true,
            format!(
                "the updater's lag cannot be read ({why}): assuming the table is still being filled"
            ),
        ),
        LagReading::Unknown(why) => (false, format!("updater lag unknown ({why})")),
    }
}

/// The capacity range a dimension should have (bootstrap raises the write floor and, if needed,
/// the maximum with it).
pub fn wanted_range(spec: &TableSpec, dimension: Dimension, bootstrapping: bool) -> (i64, i64) {
    let clamp = |x: i64| x.clamp(1, MAX_TABLE_CAPACITY);
    match dimension {
        Dimension::Read => (
            clamp(spec.read.min),
            clamp(spec.read.max.max(spec.read.min)),
        ),
        Dimension::Write => {
            let (min, max) = (spec.write.min, spec.write.max.max(spec.write.min));
            if bootstrapping {
                let floor = min.max(spec.bootstrap_write_capacity);
                (clamp(floor), clamp(max.max(floor)))
            } else {
                (clamp(min), clamp(max))
            }
        }
    }
}

fn owned(spec: &TableSpec, t: &TableState) -> bool {
    t.tags.get(TAG_GROUP) == Some(&spec.group)
}

fn not_owned(spec: &TableSpec, t: &TableState) -> StoreCondition {
    condition(
        false,
        "TableNotOwned",
        format!(
            "table {} exists but is tagged {TAG_GROUP}={} instead of {}; it is left alone (tag it to adopt it, or choose another dynamodb.table)",
            spec.name,
            t.tags.get(TAG_GROUP).map_or("<none>", String::as_str),
            spec.group
        ),
    )
}

/// Removes the operator's policies and every target of the table.
fn deregister_all(spec: &TableSpec, scaling: &ScalingState) -> Vec<AwsAction> {
    let mut out = Vec::new();
    for d in Dimension::ALL {
        let ours = d.policy_name(&spec.name);
        for p in scaling.policies.get(&d).into_iter().flatten() {
            if p.name == ours {
                out.push(AwsAction::DeletePolicy {
                    dimension: d,
                    name: p.name.clone(),
                });
            }
        }
        if scaling.targets.contains_key(&d) {
            out.push(AwsAction::DeregisterTarget { dimension: d });
        }
    }
    out
}

/// The plan while the group exists.
pub fn plan(spec: &TableSpec, obs: &AwsState, now: SystemTime) -> Plan {
    let (boot, lag_message) = bootstrapping(spec, obs.table.as_ref(), &obs.lag);
    let Some(t) = &obs.table else {
        let (read, _) = wanted_range(spec, Dimension::Read, boot);
        let (write, _) = wanted_range(spec, Dimension::Write, boot);
        return Plan {
            actions: vec![AwsAction::CreateTable {
                billing: spec.billing,
                read,
                write,
                tags: spec.tags(),
            }],
            condition: condition(false, "Creating", format!("creating table {}", spec.name)),
            bootstrapping: boot,
            requeue_after: Some(SHORT_REQUEUE),
        };
    };
    if !owned(spec, t) {
        return Plan {
            actions: vec![],
            condition: not_owned(spec, t),
            bootstrapping: false,
            requeue_after: None,
        };
    }
    let waiting = |reason: &'static str, what: &str| Plan {
        actions: vec![],
        condition: condition(false, reason, format!("table {} is {what}", spec.name)),
        bootstrapping: boot,
        requeue_after: Some(SHORT_REQUEUE),
    };
    match t.status.as_str() {
        "CREATING" => return waiting("Creating", "being created"),
        "DELETING" => return waiting("TableDeleting", "being deleted"),
        "ACTIVE" | "UPDATING" => {}
        other => {
            return Plan {
                actions: vec![],
                condition: condition(
                    false,
                    "TableUnavailable",
                    format!("table {} is {other}", spec.name),
                ),
                bootstrapping: boot,
                requeue_after: None,
            };
        }
    }
    if let Some(problem) = t.layout_problem() {
        return Plan {
            actions: vec![],
            condition: condition(
                false,
                "TableLayoutMismatch",
                format!("table {}: {problem}", spec.name),
            ),
            bootstrapping: boot,
            requeue_after: None,
        };
    }

    let active = t.status == "ACTIVE";
    let mut actions = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut requeue_after = None;
    let caught_up_now = !boot && t.tags.get(TAG_BOOTSTRAPPED).is_none_or(|v| v != "true");
    if caught_up_now && matches!(obs.lag, LagReading::Known(_)) {
        actions.push(AwsAction::TagTable {
            tags: vec![(TAG_BOOTSTRAPPED.into(), "true".into())],
        });
    }

    match (spec.billing, t.billing) {
        (Billing::PayPerRequest, Billing::Provisioned) => {
            // Autoscaling must go first: it is invalid on an on-demand table.
            actions.extend(deregister_all(spec, &obs.scaling));
            match pay_per_request_allowed_at(t, now) {
                _ if !active => {
                    requeue_after = Some(SHORT_REQUEUE);
                    notes.push("switching to PayPerRequest once the table is ACTIVE".into());
                }
                None => actions.push(AwsAction::SwitchBilling {
                    to: Billing::PayPerRequest,
                    read: 0,
                    write: 0,
                }),
                Some(at) => {
                    let wait = at.duration_since(now).unwrap_or_default();
                    requeue_after = Some(wait.min(Duration::from_secs(3600)));
                    notes.push(format!(
                        "switch to PayPerRequest deferred for {}s: DynamoDB allows one switch to on-demand per 24 hours",
                        wait.as_secs()
                    ));
                }
            }
        }
        (Billing::Provisioned, Billing::PayPerRequest) => {
            if active {
                let (read, _) = wanted_range(spec, Dimension::Read, boot);
                let (write, _) = wanted_range(spec, Dimension::Write, boot);
                actions.push(AwsAction::SwitchBilling {
                    to: Billing::Provisioned,
                    read,
                    write,
                });
                // Autoscaling is registered once the table reports Provisioned.
                requeue_after = Some(SHORT_REQUEUE);
            } else {
                requeue_after = Some(SHORT_REQUEUE);
                notes.push("switching to Provisioned once the table is ACTIVE".into());
            }
        }
        (Billing::PayPerRequest, Billing::PayPerRequest) => {
            actions.extend(deregister_all(spec, &obs.scaling));
        }
        (Billing::Provisioned, Billing::Provisioned) => {
            let (read_range, write_range) = (
                wanted_range(spec, Dimension::Read, boot),
                wanted_range(spec, Dimension::Write, boot),
            );
            for (dimension, (min, max), cap) in [
                (Dimension::Read, read_range, spec.read),
                (Dimension::Write, write_range, spec.write),
            ] {
                let target = obs.scaling.targets.get(&dimension);
                if target != Some(&TargetState { min, max }) {
                    actions.push(AwsAction::RegisterTarget {
                        dimension,
                        min,
                        max,
                    });
                }
                let name = dimension.policy_name(&spec.name);
                let current = obs
                    .scaling
                    .policies
                    .get(&dimension)
                    .and_then(|ps| ps.iter().find(|p| p.name == name));
                let up_to_date = current.is_some_and(|p| {
                    p.target_value
                        .is_some_and(|v| (v - cap.target_utilization).abs() < 1e-9)
                        && p.metric.as_deref() == Some(dimension.metric())
                });
                if !up_to_date {
                    actions.push(AwsAction::PutPolicy {
                        dimension,
                        name,
                        target: cap.target_utilization,
                    });
                }
            }
            // Bring the capacity into the range: raise at once, lower only within the budget.
            let fit = |cur: i64, (min, max): (i64, i64)| cur.clamp(min, max);
            let (want_r, want_w) = (
                fit(t.read_capacity, read_range),
                fit(t.write_capacity, write_range),
            );
            if (want_r, want_w) != (t.read_capacity, t.write_capacity) {
                let decreasing = want_r < t.read_capacity || want_w < t.write_capacity;
                let (r, w) = if decreasing && !decrease_allowed(t, now) {
                    notes.push(
                        "capacity above the maximum stays until DynamoDB allows another decrease"
                            .into(),
                    );
                    requeue_after = Some(DECREASE_INTERVAL);
                    (want_r.max(t.read_capacity), want_w.max(t.write_capacity))
                } else {
                    (want_r, want_w)
                };
                if (r, w) != (t.read_capacity, t.write_capacity) {
                    if active {
                        actions.push(AwsAction::SetCapacity { read: r, write: w });
                    } else {
                        requeue_after = Some(SHORT_REQUEUE);
                    }
                }
            }
        }
    }

    let billing = match spec.billing {
        Billing::Provisioned => format!(
            "Provisioned, read {} / write {} units",
            t.read_capacity, t.write_capacity
        ),
        Billing::PayPerRequest => "PayPerRequest".to_string(),
    };
    let mut message = format!(
        "table {} is {} ({billing}); {lag_message}",
        spec.name, t.status
    );
    for n in &notes {
        message.push_str("; ");
        message.push_str(n);
    }
    let condition = if boot {
        let floor = match spec.billing {
            Billing::Provisioned => format!(
                "; write capacity floor {}",
                wanted_range(spec, Dimension::Write, true).0
            ),
            Billing::PayPerRequest => String::new(),
        };
        condition(true, BOOTSTRAP_CAPACITY, format!("{message}{floor}"))
    } else {
        condition(true, "TableReady", message)
    };
    Plan {
        actions,
        condition,
        bootstrapping: boot,
        requeue_after,
    }
}

/// Progress of the cleanup when the group is deleted.
#[derive(Clone, Debug, PartialEq)]
pub struct CleanupPlan {
    /// Actions, in order.
    pub actions: Vec<AwsAction>,
    /// Whether nothing is left to do after them (the finalizer may go once they succeeded).
    pub done_after: bool,
    /// What happens to the table.
    pub message: String,
}

/// The cleanup plan: autoscaling targets go; the table goes with policy `Delete`; a table that is
/// not the group's is left alone.
pub fn cleanup(spec: &TableSpec, obs: &AwsState) -> CleanupPlan {
    let Some(t) = &obs.table else {
        return CleanupPlan {
            actions: deregister_all(spec, &obs.scaling),
            done_after: true,
            message: format!("table {} does not exist", spec.name),
        };
    };
    // Checked before ownership: a table being deleted may no longer list its tags.
    if t.status == "DELETING" && spec.deletion_policy == DeletionPolicy::Delete {
        return CleanupPlan {
            actions: deregister_all(spec, &obs.scaling),
            done_after: false,
            message: format!("table {} is being deleted", spec.name),
        };
    }
    if !owned(spec, t) {
        return CleanupPlan {
            actions: vec![],
            done_after: true,
            message: format!("table {} is not this group's; left alone", spec.name),
        };
    }
    let mut actions = deregister_all(spec, &obs.scaling);
    match spec.deletion_policy {
        DeletionPolicy::Retain => CleanupPlan {
            actions,
            done_after: true,
            message: format!("table {} retained (deletionPolicy Retain)", spec.name),
        },
        DeletionPolicy::Delete => {
            let deletable = t.status == "ACTIVE";
            if deletable {
                actions.push(AwsAction::DeleteTable);
            }
            CleanupPlan {
                actions,
                done_after: false,
                message: format!("deleting table {} (deletionPolicy Delete)", spec.name),
            }
        }
    }
}

#[cfg(test)]
mod tests;
