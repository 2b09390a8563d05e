//! Status: conditions that keep their lastTransitionTime, and the summary of what was observed.
//!
//! Pure: the caller passes the observations and the clock, so the same inputs always give the same
//! status, and an unchanged group gives a status equal to the stored one (which is then not written).
//!
//! Semantics: `WorkloadsReady` means every component can serve (its Deployment is Available, which
//! stays true during a rolling update); `Progressing` means a rollout is under way; `Degraded` means
//! the operator hit an error or a rollout stalled. `Ready` is the conjunction of the readiness gates:
//! `WorkloadsReady`, plus `StoreReady` and `RoutingReady` once the steps that manage those report
//! them, plus the bootstrap gate while it serves no country yet (`Ready` False with reason
//! `Bootstrapping`: a new group whose table is still being filled). `Bootstrapped` says whether
//! every country is served; a running group waiting for an added country stays `Ready` (it serves
//! the others). `Degraded` deliberately does not clear `Ready`: an operator-side error must not look like the
//! group stopped serving (routing only sends traffic to Ready groups).

use crate::crd::{
    ComponentStatus, ComponentsStatus, CountryTraffic, MarketGroupStatus, TableStatus,
};
use crate::plan::Component;
use crate::render::routing::shift::Floors;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Condition type: the summary.
pub const READY: &str = "Ready";
/// Condition type: a rollout is under way.
pub const PROGRESSING: &str = "Progressing";
/// Condition type: the operator hit an error or a rollout stalled.
pub const DEGRADED: &str = "Degraded";
/// Condition type: every component's Deployment is available.
pub const WORKLOADS_READY: &str = "WorkloadsReady";
/// Condition type: the table exists and is usable (set by the store step).
pub const STORE_READY: &str = "StoreReady";
/// Condition type: the route to the group is applied (set by the routing step).
pub const ROUTING_READY: &str = "RoutingReady";
/// Condition type: the updater's autoscaler can scale (what its HPA or ScaledObject reports).
pub const AUTOSCALING_ACTIVE: &str = "AutoscalingActive";
/// Condition type: `spec.suspend` froze the group (True), or the operator reconciles it (False).
pub const SUSPENDED: &str = "Suspended";
/// Reason of `Suspended` True, and of `Ready` while suspended (so `kubectl get mg` shows it).
pub const SUSPENDED_REASON: &str = "Suspended";
/// Condition type: the table holds the catalogue of every country of the spec (the bootstrap
/// gate, [`crate::gate`]).
pub const BOOTSTRAPPED: &str = "Bootstrapped";

/// A condition's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// "True".
    True,
    /// "False".
    False,
    /// "Unknown".
    Unknown,
}

impl Status {
    /// The API string.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

/// A condition as a step reports it, before times and generations are attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionUpdate {
    /// Condition type.
    pub type_: String,
    /// Status.
    pub status: Status,
    /// CamelCase reason.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
}

impl ConditionUpdate {
    /// Builds an update.
    pub fn new(
        type_: &str,
        status: Status,
        reason: &str,
        message: impl Into<String>,
    ) -> ConditionUpdate {
        ConditionUpdate {
            type_: type_.into(),
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// Turns updates into conditions: a condition whose status did not change keeps its
/// lastTransitionTime; every condition carries `generation`. Conditions not updated are dropped.
pub fn merge_conditions(
    previous: &[Condition],
    updates: &[ConditionUpdate],
    generation: i64,
    now: Timestamp,
) -> Vec<Condition> {
    updates
        .iter()
        .map(|u| {
            let last_transition_time = previous
                .iter()
                .find(|p| p.type_ == u.type_ && p.status == u.status.as_str())
                .map(|p| p.last_transition_time.clone())
                .unwrap_or_else(|| Time(now));
            Condition {
                type_: u.type_.clone(),
                status: u.status.as_str().into(),
                reason: u.reason.clone(),
                message: u.message.clone(),
                observed_generation: Some(generation),
                last_transition_time,
            }
        })
        .collect()
}

/// How far a Deployment's rollout is (the checks of `kubectl rollout status`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rollout {
    /// Every replica runs the current template and is available.
    Complete,
    /// Under way; the message says what it waits for.
    InProgress(String),
    /// The Deployment controller gave up (progress deadline exceeded).
    Stalled(String),
}

/// Rollout state of a Deployment.
pub fn rollout(d: &Deployment) -> Rollout {
    let name = d.metadata.name.as_deref().unwrap_or("deployment");
    let generation = d.metadata.generation.unwrap_or(0);
    let Some(status) = d.status.as_ref() else {
        return Rollout::InProgress(format!("{name}: waiting for the Deployment controller"));
    };
    if status.observed_generation.unwrap_or(0) < generation {
        return Rollout::InProgress(format!(
            "{name}: waiting for the Deployment controller to observe generation {generation}"
        ));
    }
    if let Some(c) = status.conditions.iter().flatten().find(|c| {
        c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    }) {
        return Rollout::Stalled(format!(
            "{name}: rollout stalled: {}",
            c.message.as_deref().unwrap_or("progress deadline exceeded")
        ));
    }
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let replicas = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < want {
        return Rollout::InProgress(format!("{name}: {updated} of {want} replicas updated"));
    }
    if replicas > updated {
        return Rollout::InProgress(format!(
            "{name}: {} old replicas pending termination",
            replicas - updated
        ));
    }
    if available < updated {
        return Rollout::InProgress(format!(
            "{name}: {available} of {updated} updated replicas available"
        ));
    }
    Rollout::Complete
}

/// Whether a Deployment can serve: at least one replica is available.
///
/// Not the Deployment's own `Available` condition: that turns False whenever fewer than
/// `replicas - maxUnavailable` pods are available, which is the case for a few seconds every time
/// the HPA scales the Deployment up (1 -> 9 pods: 1 available of 9). A group that serves would
/// then count as not ready and be taken out of its routes exactly while it grows to take more
/// traffic; the routing tests on the real cluster caught that. Rollouts that do not progress are
/// reported by `Progressing` and `Degraded` instead.
pub fn available(d: &Deployment) -> bool {
    d.status
        .as_ref()
        .is_some_and(|s| s.available_replicas.unwrap_or(0) > 0)
}

/// Replica counts of a Deployment.
pub fn component_status(d: &Deployment) -> ComponentStatus {
    let s = d.status.clone().unwrap_or_default();
    ComponentStatus {
        desired: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0),
        replicas: s.replicas.unwrap_or(0),
        ready: s.ready_replicas.unwrap_or(0),
        updated: s.updated_replicas.unwrap_or(0),
        available: s.available_replicas.unwrap_or(0),
        hpa_floor: None,
    }
}

/// A problem the reconcile ran into, reported as `Degraded`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// CamelCase reason (`InvalidSpec`, `ApplyFailed`, ...).
    pub reason: String,
    /// What went wrong.
    pub message: String,
}

/// Everything the status is derived from.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    /// `metadata.generation` of the MarketGroup.
    pub generation: i64,
    /// The three Deployments as last read (None: missing).
    pub deployments: [(Component, Option<&'a Deployment>); 3],
    /// The error of this reconcile, if any.
    pub problem: Option<Problem>,
    /// `StoreReady`, once a store step reports it.
    pub store: Option<ConditionUpdate>,
    /// `RoutingReady`, once a routing step reports it.
    pub routing: Option<ConditionUpdate>,
    /// Kind of the updater's autoscaler, if rendered.
    pub updater_autoscaler: Option<String>,
    /// The table name, if the spec resolved.
    pub table: Option<String>,
    /// What the store and routing steps read this time.
    pub readings: Readings,
    /// `AutoscalingActive`, once the updater's autoscaler was read.
    pub autoscaling: Option<ConditionUpdate>,
    /// `spec.suspend`: nothing was written this time.
    pub suspended: bool,
    /// The products and batch HPA minimums just applied (None: not applied this time, the
    /// stored ones stay).
    pub hpa_floors: Option<Floors>,
    /// The bootstrap gate as decided this time (None: not run; the stored memory stands).
    pub gate: Option<crate::gate::Gate>,
    /// The fingerprint of the children after this sync ([`crate::apply::fingerprint`]; None: not
    /// synced this time, the stored one stays).
    pub applied: Option<String>,
}

/// What the store and routing steps read: each replaces its field of the status, and one not
/// read this time (`None`: the step is off, or failed) keeps the stored value.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Readings {
    /// The table as observed.
    pub table: Option<TableStatus>,
    /// The updater's lag.
    pub updater_lag: Option<i64>,
    /// Desired and actual traffic per country.
    pub traffic: Option<Vec<CountryTraffic>>,
}

/// The condition updates for what was observed, in display order.
pub fn conditions(obs: &Observed<'_>) -> Vec<ConditionUpdate> {
    let mut missing = Vec::new();
    let mut unavailable = Vec::new();
    let mut in_progress = Vec::new();
    let mut stalled = Vec::new();
    for (component, d) in &obs.deployments {
        match d {
            None => missing.push(component.as_str()),
            Some(d) => {
                if !available(d) {
                    unavailable.push(component.as_str());
                }
                match rollout(d) {
                    Rollout::Complete => {}
                    Rollout::InProgress(m) => in_progress.push(m),
                    Rollout::Stalled(m) => stalled.push(m),
                }
            }
        }
    }
    let workloads = if !missing.is_empty() {
        ConditionUpdate::new(
            WORKLOADS_READY,
            Status::False,
            "DeploymentMissing",
            format!("not created yet: {}", missing.join(", ")),
        )
    } else if !unavailable.is_empty() {
        ConditionUpdate::new(
            WORKLOADS_READY,
            Status::False,
            "Unavailable",
            format!("no available replicas yet: {}", unavailable.join(", ")),
        )
    } else {
        ConditionUpdate::new(
            WORKLOADS_READY,
            Status::True,
            "Available",
            "updater, products and batch are available",
        )
    };
    let progressing = if !missing.is_empty() {
        ConditionUpdate::new(
            PROGRESSING,
            Status::True,
            "Creating",
            format!("creating: {}", missing.join(", ")),
        )
    } else if !stalled.is_empty() {
        ConditionUpdate::new(
            PROGRESSING,
            Status::False,
            "RolloutStalled",
            stalled.join("; "),
        )
    } else if !in_progress.is_empty() {
        ConditionUpdate::new(
            PROGRESSING,
            Status::True,
            "RollingOut",
            in_progress.join("; "),
        )
    } else {
        ConditionUpdate::new(
            PROGRESSING,
            Status::False,
            "Complete",
            "every component runs the current spec",
        )
    };
    let degraded = match (&obs.problem, stalled.is_empty()) {
        (Some(p), _) => ConditionUpdate::new(DEGRADED, Status::True, &p.reason, p.message.clone()),
        (None, false) => {
            ConditionUpdate::new(DEGRADED, Status::True, "RolloutStalled", stalled.join("; "))
        }
        (None, true) => ConditionUpdate::new(DEGRADED, Status::False, "AsExpected", "no errors"),
    };
    // The gate holds Ready back only while no country is served: a running group that waits for
    // an added country serves the others. It explains more than the routing it causes, so it
    // comes before `RoutingReady`.
    let unbootstrapped = obs
        .gate
        .as_ref()
        .filter(|g| g.open().is_empty() && g.condition.status != Status::True)
        .map(|g| &g.condition);
    let not_ready = |g: &&ConditionUpdate| g.status != Status::True;
    let blocking = std::iter::once(&workloads)
        .chain(obs.store.iter())
        .find(not_ready)
        .map(|g| (format!("{}NotReady", g.type_.trim_end_matches("Ready")), g))
        .or_else(|| unbootstrapped.map(|g| (crate::gate::BOOTSTRAPPING.to_string(), g)))
        .or_else(|| {
            obs.routing
                .iter()
                .find(not_ready)
                .map(|g| (format!("{}NotReady", g.type_.trim_end_matches("Ready")), g))
        });
    let mut ready = match blocking {
        None => ConditionUpdate::new(READY, Status::True, "Ready", "the market group serves"),
        Some((reason, g)) => ConditionUpdate::new(
            READY,
            Status::False,
            &reason,
            format!("{}: {}", g.type_, g.message),
        ),
    };
    let suspended = if obs.suspended {
        // Ready keeps saying whether the group serves; its reason says that nobody steers it.
        ready.reason = SUSPENDED_REASON.into();
        ready.message = format!("suspended (spec.suspend); {}", ready.message);
        ConditionUpdate::new(
            SUSPENDED,
            Status::True,
            SUSPENDED_REASON,
            "spec.suspend is true: the operator writes none of the group's objects and leaves the routes of its countries as they are",
        )
    } else {
        ConditionUpdate::new(
            SUSPENDED,
            Status::False,
            "Reconciling",
            "the operator reconciles the group",
        )
    };
    let mut out = vec![ready, progressing, degraded, suspended, workloads];
    out.extend(obs.store.clone());
    out.extend(obs.routing.clone());
    out.extend(obs.gate.as_ref().map(|g| g.condition.clone()));
    // Not a readiness gate: a group serves while its updater cannot scale.
    out.extend(obs.autoscaling.clone());
    out
}

/// `AutoscalingActive` from the updater's autoscaler as read (`object`: its JSON, `None` when it
/// does not exist), so that why the updater cannot scale shows on the group. An HPA is active when
/// its `AbleToScale` and `ScalingActive` are True (the first one that is not gives the reason,
/// e.g. `FailedGetExternalMetric` when nothing serves the lag metric); a KEDA ScaledObject when
/// its `Ready` is True (`Active` only says whether there is work, so it goes into the message).
pub fn autoscaling_active(kind: &str, object: Option<&serde_json::Value>) -> ConditionUpdate {
    let name = |o: &serde_json::Value| {
        o.pointer("/metadata/name")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let Some(object) = object else {
        return ConditionUpdate::new(
            AUTOSCALING_ACTIVE,
            Status::Unknown,
            "AutoscalerMissing",
            format!("the updater's {kind} does not exist yet"),
        );
    };
    let conditions: Vec<(&str, Status, &str, &str)> = object
        .pointer("/status/conditions")
        .and_then(|c| c.as_array())
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let field = |f: &str| c.get(f).and_then(|v| v.as_str()).unwrap_or_default();
            let status = match field("status") {
                "True" => Status::True,
                "False" => Status::False,
                _ => Status::Unknown,
            };
            (!field("type").is_empty())
                .then(|| (field("type"), status, field("reason"), field("message")))
        })
        .collect();
    let find = |t: &str| conditions.iter().find(|c| c.0 == t);
    let reported = |c: &(&str, Status, &str, &str)| {
        let reason = if c.2.is_empty() { c.0 } else { c.2 };
        ConditionUpdate::new(
            AUTOSCALING_ACTIVE,
            c.1,
            reason,
            format!("{kind} {}: {}: {}", name(object), c.0, c.3),
        )
    };
    let gates: &[&str] = if kind == "ScaledObject" {
        &["Ready"]
    } else {
        &["AbleToScale", "ScalingActive"]
    };
    let mut waiting = Vec::new();
    for gate in gates {
        match find(gate) {
            Some(c) if c.1 != Status::True => return reported(c),
            Some(_) => {}
            None => waiting.push(*gate),
        }
    }
    if !waiting.is_empty() {
        return ConditionUpdate::new(
            AUTOSCALING_ACTIVE,
            Status::Unknown,
            "AutoscalerPending",
            format!(
                "{kind} {} has not reported {} yet",
                name(object),
                waiting.join(" and ")
            ),
        );
    }
    let last = gates.last().and_then(|g| find(g));
    let mut update = last.map(reported).unwrap_or_else(|| {
        ConditionUpdate::new(AUTOSCALING_ACTIVE, Status::True, "Active", String::new())
    });
    if kind == "ScaledObject"
        && let Some(active) = find("Active")
    {
        update.message = format!(
            "{}; Active={}: {}",
            update.message,
            active.1.as_str(),
            active.3
        );
    }
    update
}

/// The status for what was observed, keeping transition times from `previous`.
pub fn desired_status(
    previous: Option<&MarketGroupStatus>,
    obs: &Observed<'_>,
    now: Timestamp,
) -> MarketGroupStatus {
    let prev_conditions = previous.map(|p| p.conditions.as_slice()).unwrap_or(&[]);
    let component = |c: Component| {
        obs.deployments
            .iter()
            .find(|(k, _)| *k == c)
            .and_then(|(_, d)| d.map(component_status))
            .unwrap_or_default()
    };
    let previous_table = previous.and_then(|p| p.table.clone());
    let previous_floor = |c: Component| {
        let comps = previous.and_then(|p| p.components.as_ref());
        comps.and_then(|s| match c {
            Component::Products => s.products.hpa_floor,
            Component::Batch => s.batch.hpa_floor,
            Component::Updater => None,
        })
    };
    let floor = |c: Component| match (obs.hpa_floors, c) {
        (Some(f), Component::Products) => Some(f.products),
        (Some(f), Component::Batch) => Some(f.batch),
        _ => previous_floor(c),
    };
    let component = |c: Component| ComponentStatus {
        hpa_floor: floor(c),
        ..component(c)
    };
    let traffic = obs
        .readings
        .traffic
        .clone()
        .or_else(|| previous.map(|p| p.traffic.clone()))
        .unwrap_or_default();
    // A reconcile that did not get to the gate keeps its memory and condition.
    let mut obs = obs.clone();
    if obs.gate.is_none()
        && let Some(b) = previous.and_then(|p| p.bootstrap.clone())
    {
        obs.gate = Some(crate::gate::Gate {
            condition: crate::gate::condition(&b, None, 0),
            status: b,
        });
    }
    let obs = &obs;
    MarketGroupStatus {
        observed_generation: Some(obs.generation),
        conditions: merge_conditions(prev_conditions, &conditions(obs), obs.generation, now),
        components: Some(ComponentsStatus {
            updater: component(Component::Updater),
            products: component(Component::Products),
            batch: component(Component::Batch),
        }),
        updater_autoscaler: obs.updater_autoscaler.clone(),
        table: obs.readings.table.clone().or_else(|| {
            obs.table.clone().map(|name| match previous_table {
                // Keep what the store step last observed about the same table.
                Some(t) if t.name == name => t,
                _ => TableStatus {
                    name,
                    ..TableStatus::default()
                },
            })
        }),
        updater_lag: obs
            .readings
            .updater_lag
            .or_else(|| previous.and_then(|p| p.updater_lag)),
        actual_weight: actual_weight(&traffic),
        traffic,
        bootstrap: obs.gate.as_ref().map(|g| g.status.clone()),
        applied: obs
            .applied
            .clone()
            .or_else(|| previous.and_then(|p| p.applied.clone())),
    }
}

/// The actual weights of `traffic` in one figure (`status.actualWeight`): `N` when every country
/// whose actual weight is known has `N`, `LOW-HIGH` when they differ, None when none is known.
pub fn actual_weight(traffic: &[CountryTraffic]) -> Option<String> {
    let known = traffic.iter().filter_map(|t| t.actual);
    let (low, high) = known.fold(None, |range, w| match range {
        None => Some((w, w)),
        Some((low, high)) => Some((w.min(low), w.max(high))),
    })?;
    Some(if low == high {
        low.to_string()
    } else {
        format!("{low}-{high}")
    })
}

/// Whether a condition of `type_` is True in `status`.
pub fn is_true(status: Option<&MarketGroupStatus>, type_: &str) -> bool {
    status.is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == "True")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentSpec, DeploymentStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).expect("valid time")
    }

    /// A Deployment of `want` replicas: `available` of them available, `updated` on the current
    /// template, observed generation `observed` (of generation 2).
    fn deployment(want: i32, updated: i32, available: i32, observed: i64) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("g-products".into()),
                generation: Some(2),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(want),
                ..DeploymentSpec::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(observed),
                replicas: Some(want.max(updated)),
                updated_replicas: Some(updated),
                ready_replicas: Some(available),
                available_replicas: Some(available),
                conditions: Some(vec![DeploymentCondition {
                    type_: "Available".into(),
                    status: if available > 0 { "True" } else { "False" }.into(),
                    ..DeploymentCondition::default()
                }]),
                ..DeploymentStatus::default()
            }),
        }
    }

    fn observed<'a>(ds: [Option<&'a Deployment>; 3]) -> Observed<'a> {
        Observed {
            generation: 2,
            deployments: [
                (Component::Updater, ds[0]),
                (Component::Products, ds[1]),
                (Component::Batch, ds[2]),
            ],
            problem: None,
            store: None,
            routing: None,
            updater_autoscaler: Some("HorizontalPodAutoscaler".into()),
            table: Some("prapi-ns-g".into()),
            readings: Readings::default(),
            autoscaling: None,
            suspended: false,
            hpa_floors: None,
            gate: None,
            applied: None,
        }
    }

    fn find<'a>(c: &'a [ConditionUpdate], type_: &str) -> &'a ConditionUpdate {
        c.iter()
            .find(|c| c.type_ == type_)
            .expect("condition present")
    }

    #[test]
    fn transition_time_changes_only_when_the_status_does() {
        let first = merge_conditions(
            &[],
            &[ConditionUpdate::new(
                READY,
                Status::False,
                "WorkloadsNotReady",
                "a",
            )],
            1,
            t(0),
        );
        assert_eq!(first[0].last_transition_time, Time(t(0)));
        // Same status, new reason, message and generation: time kept, the rest updated.
        let same = merge_conditions(
            &first,
            &[ConditionUpdate::new(READY, Status::False, "Other", "b")],
            2,
            t(10),
        );
        assert_eq!(same[0].last_transition_time, Time(t(0)));
        assert_eq!(
            (
                same[0].reason.as_str(),
                same[0].message.as_str(),
                same[0].observed_generation
            ),
            ("Other", "b", Some(2))
        );
        // Flip: new time.
        let flipped = merge_conditions(
            &same,
            &[ConditionUpdate::new(READY, Status::True, "Ready", "c")],
            2,
            t(20),
        );
        assert_eq!(flipped[0].last_transition_time, Time(t(20)));
        assert_eq!(flipped[0].status, "True");
    }

    #[test]
    fn a_deployment_scaling_up_still_serves() {
        // The HPA has just raised replicas 1 -> 9: one pod is available and the Deployment's own
        // `Available` condition is False (minimum availability not met). It still serves.
        let mut d = deployment(9, 9, 1, 2);
        if let Some(c) = d
            .status
            .as_mut()
            .and_then(|s| s.conditions.as_mut())
            .and_then(|c| c.first_mut())
        {
            c.status = "False".into();
            c.reason = Some("MinimumReplicasUnavailable".into());
        }
        assert!(available(&d));
        assert!(!available(&deployment(9, 9, 0, 2)));
        assert!(!available(&Deployment::default()));
    }

    #[test]
    fn rollout_follows_kubectl_rollout_status() {
        assert_eq!(rollout(&deployment(2, 2, 2, 2)), Rollout::Complete);
        assert!(
            matches!(rollout(&deployment(2, 2, 2, 1)), Rollout::InProgress(m) if m.contains("observe generation 2"))
        );
        assert!(
            matches!(rollout(&deployment(3, 1, 1, 2)), Rollout::InProgress(m) if m.contains("1 of 3 replicas updated"))
        );
        assert!(
            matches!(rollout(&deployment(2, 2, 1, 2)), Rollout::InProgress(m) if m.contains("1 of 2 updated replicas available"))
        );
        let mut old_pods = deployment(2, 2, 2, 2);
        if let Some(s) = old_pods.status.as_mut() {
            s.replicas = Some(3);
        }
        assert!(
            matches!(rollout(&old_pods), Rollout::InProgress(m) if m.contains("1 old replicas pending termination"))
        );
        let mut stalled = deployment(2, 1, 1, 2);
        if let Some(s) = stalled.status.as_mut() {
            s.conditions
                .get_or_insert_with(Vec::new)
                .push(DeploymentCondition {
                    type_: "Progressing".into(),
                    status: "False".into(),
                    reason: Some("ProgressDeadlineExceeded".into()),
                    message: Some("timed out".into()),
                    ..DeploymentCondition::default()
                });
        }
        assert!(matches!(rollout(&stalled), Rollout::Stalled(m) if m.contains("timed out")));
        let mut fresh = deployment(1, 0, 0, 0);
        fresh.status = None;
        assert!(matches!(rollout(&fresh), Rollout::InProgress(_)));
    }

    #[test]
    fn all_available_and_rolled_out_is_ready() {
        let d = deployment(2, 2, 2, 2);
        let c = conditions(&observed([Some(&d), Some(&d), Some(&d)]));
        let types: Vec<&str> = c.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(
            types,
            vec![READY, PROGRESSING, DEGRADED, SUSPENDED, WORKLOADS_READY]
        );
        assert_eq!(find(&c, READY).status, Status::True);
        assert_eq!(find(&c, WORKLOADS_READY).status, Status::True);
        assert_eq!(
            (
                find(&c, PROGRESSING).status,
                find(&c, PROGRESSING).reason.as_str()
            ),
            (Status::False, "Complete")
        );
        assert_eq!(
            (
                find(&c, DEGRADED).status,
                find(&c, DEGRADED).reason.as_str()
            ),
            (Status::False, "AsExpected")
        );
    }

    #[test]
    fn a_missing_deployment_is_not_ready_and_progressing() {
        let d = deployment(2, 2, 2, 2);
        let c = conditions(&observed([Some(&d), None, Some(&d)]));
        let w = find(&c, WORKLOADS_READY);
        assert_eq!(
            (w.status, w.reason.as_str()),
            (Status::False, "DeploymentMissing")
        );
        assert!(w.message.contains("products"));
        let r = find(&c, READY);
        assert_eq!(
            (r.status, r.reason.as_str()),
            (Status::False, "WorkloadsNotReady")
        );
        assert_eq!(
            (
                find(&c, PROGRESSING).status,
                find(&c, PROGRESSING).reason.as_str()
            ),
            (Status::True, "Creating")
        );
    }

    #[test]
    fn a_rolling_update_keeps_the_group_ready_but_progressing() {
        let done = deployment(2, 2, 2, 2);
        let rolling = deployment(2, 1, 2, 2);
        let c = conditions(&observed([Some(&done), Some(&rolling), Some(&done)]));
        assert_eq!(find(&c, READY).status, Status::True);
        let p = find(&c, PROGRESSING);
        assert_eq!((p.status, p.reason.as_str()), (Status::True, "RollingOut"));
    }

    #[test]
    fn no_available_replica_is_not_ready() {
        let done = deployment(2, 2, 2, 2);
        let none = deployment(2, 2, 0, 2);
        let c = conditions(&observed([Some(&none), Some(&done), Some(&done)]));
        let w = find(&c, WORKLOADS_READY);
        assert_eq!(
            (w.status, w.reason.as_str()),
            (Status::False, "Unavailable")
        );
        assert!(w.message.contains("updater"));
        assert_eq!(find(&c, READY).status, Status::False);
    }

    #[test]
    fn errors_degrade_without_clearing_ready() {
        let d = deployment(2, 2, 2, 2);
        let mut obs = observed([Some(&d), Some(&d), Some(&d)]);
        obs.problem = Some(Problem {
            reason: "ApplyFailed".into(),
            message: "applying Deployment g-products: boom".into(),
        });
        let c = conditions(&obs);
        let deg = find(&c, DEGRADED);
        assert_eq!(
            (deg.status, deg.reason.as_str()),
            (Status::True, "ApplyFailed")
        );
        assert!(deg.message.contains("boom"));
        assert_eq!(find(&c, READY).status, Status::True);
    }

    #[test]
    fn a_stalled_rollout_degrades() {
        let done = deployment(2, 2, 2, 2);
        let mut stalled = deployment(2, 1, 2, 2);
        if let Some(s) = stalled.status.as_mut() {
            s.conditions
                .get_or_insert_with(Vec::new)
                .push(DeploymentCondition {
                    type_: "Progressing".into(),
                    status: "False".into(),
                    reason: Some("ProgressDeadlineExceeded".into()),
                    ..DeploymentCondition::default()
                });
        }
        let c = conditions(&observed([Some(&done), Some(&stalled), Some(&done)]));
        assert_eq!(
            (
                find(&c, DEGRADED).status,
                find(&c, DEGRADED).reason.as_str()
            ),
            (Status::True, "RolloutStalled")
        );
        assert_eq!(
            (
                find(&c, PROGRESSING).status,
                find(&c, PROGRESSING).reason.as_str()
            ),
            (Status::False, "RolloutStalled")
        );
    }

    #[test]
    fn store_and_routing_gate_ready_once_reported() {
        let d = deployment(2, 2, 2, 2);
        let mut obs = observed([Some(&d), Some(&d), Some(&d)]);
        obs.store = Some(ConditionUpdate::new(
            STORE_READY,
            Status::False,
            "Bootstrapping",
            "lag 9000",
        ));
        obs.routing = Some(ConditionUpdate::new(
            ROUTING_READY,
            Status::True,
            "Applied",
            "route applied",
        ));
        let c = conditions(&obs);
        let r = find(&c, READY);
        assert_eq!(
            (r.status, r.reason.as_str()),
            (Status::False, "StoreNotReady")
        );
        assert!(r.message.contains("lag 9000"));
        assert_eq!(c.len(), 7);
        obs.store = Some(ConditionUpdate::new(
            STORE_READY,
            Status::True,
            "Active",
            "table active",
        ));
        assert_eq!(find(&conditions(&obs), READY).status, Status::True);
    }

    fn gate(countries: &[&str], done: &[&str]) -> crate::gate::Gate {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let status = crate::crd::BootstrapStatus {
            consumer_group: "g".into(),
            replay: 0,
            countries: v(countries),
            bootstrapped: v(done),
        };
        crate::gate::Gate {
            condition: crate::gate::condition(&status, None, 100),
            status,
        }
    }

    #[test]
    fn the_gate_holds_ready_back_only_while_no_country_is_served() {
        let d = deployment(2, 2, 2, 2);
        let mut obs = observed([Some(&d), Some(&d), Some(&d)]);
        // A new group: nothing served yet.
        obs.gate = Some(gate(&["at", "de"], &[]));
        let c = conditions(&obs);
        let r = find(&c, READY);
        assert_eq!(
            (r.status, r.reason.as_str()),
            (Status::False, "Bootstrapping")
        );
        assert!(
            r.message.starts_with("Bootstrapped: at, de not routed"),
            "{}",
            r.message
        );
        let b = find(&c, BOOTSTRAPPED);
        assert_eq!(
            (b.status, b.reason.as_str()),
            (Status::False, "Bootstrapping")
        );
        // The routes it is left out of say so too; Ready names the cause, the gate.
        obs.routing = Some(ConditionUpdate::new(
            ROUTING_READY,
            Status::False,
            "Bootstrapping",
            "de: desired 100%, actual 0%",
        ));
        assert_eq!(find(&conditions(&obs), READY).reason, "Bootstrapping");
        obs.routing = None;
        // A running group waiting for an added country: Ready (it serves de), not Bootstrapped.
        obs.gate = Some(gate(&["at", "de"], &["de"]));
        let c = conditions(&obs);
        assert_eq!(find(&c, READY).status, Status::True);
        assert_eq!(find(&c, BOOTSTRAPPED).status, Status::False);
        // All served.
        obs.gate = Some(gate(&["at", "de"], &["at", "de"]));
        let c = conditions(&obs);
        assert_eq!(find(&c, READY).status, Status::True);
        assert_eq!(
            (
                find(&c, BOOTSTRAPPED).status,
                find(&c, BOOTSTRAPPED).reason.as_str()
            ),
            (Status::True, "CaughtUp")
        );
        // An unavailable workload outranks the gate in Ready's reason.
        let none = deployment(2, 2, 0, 2);
        let mut obs = observed([Some(&none), Some(&d), Some(&d)]);
        obs.gate = Some(gate(&["de"], &[]));
        assert_eq!(find(&conditions(&obs), READY).reason, "WorkloadsNotReady");
    }

    #[test]
    fn a_reconcile_without_a_gate_decision_keeps_the_stored_memory() {
        let d = deployment(2, 2, 2, 2);
        let mut obs = observed([Some(&d), Some(&d), Some(&d)]);
        obs.gate = Some(gate(&["at", "de"], &["de"]));
        let first = desired_status(None, &obs, t(0));
        assert_eq!(first.bootstrap, Some(gate(&["at", "de"], &["de"]).status));
        // The sync failed: no decision this time; memory and condition stay.
        obs.gate = None;
        let again = desired_status(Some(&first), &obs, t(10));
        assert_eq!(again.bootstrap, first.bootstrap);
        let b = again
            .conditions
            .iter()
            .find(|c| c.type_ == BOOTSTRAPPED)
            .expect("Bootstrapped kept");
        assert_eq!(
            (b.status.as_str(), b.reason.as_str()),
            ("False", "Bootstrapping")
        );
        assert_eq!(b.last_transition_time, Time(t(0)));
    }

    #[test]
    fn an_unchanged_group_yields_an_equal_status() {
        let d = deployment(3, 3, 3, 2);
        let obs = observed([Some(&d), Some(&d), Some(&d)]);
        let first = desired_status(None, &obs, t(0));
        let again = desired_status(Some(&first), &obs, t(500));
        assert_eq!(first, again, "nothing changed, so nothing is written");
        assert_eq!(first.observed_generation, Some(2));
        assert!(
            first
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(2))
        );
        let comps = first.components.expect("components");
        assert_eq!(
            comps.products,
            ComponentStatus {
                desired: 3,
                replicas: 3,
                ready: 3,
                updated: 3,
                available: 3,
                hpa_floor: None,
            }
        );
        assert_eq!(first.table.map(|t| t.name), Some("prapi-ns-g".into()));
        assert_eq!(
            first.updater_autoscaler.as_deref(),
            Some("HorizontalPodAutoscaler")
        );
    }

    #[test]
    fn store_observations_survive_a_status_rebuild() {
        let d = deployment(1, 1, 1, 2);
        let obs = observed([Some(&d), Some(&d), Some(&d)]);
        let mut prev = desired_status(None, &obs, t(0));
        prev.table = Some(TableStatus {
            name: "prapi-ns-g".into(),
            status: Some("ACTIVE".into()),
            read_capacity: Some(5),
            write_capacity: Some(5),
        });
        prev.updater_lag = Some(42);
        let next = desired_status(Some(&prev), &obs, t(1));
        assert_eq!(next.table, prev.table);
        assert_eq!(next.updater_lag, Some(42));
        // A renamed table starts over.
        let mut renamed = obs.clone();
        renamed.table = Some("other".into());
        let next = desired_status(Some(&prev), &renamed, t(2));
        assert_eq!(
            next.table,
            Some(TableStatus {
                name: "other".into(),
                ..TableStatus::default()
            })
        );
    }

    #[test]
    fn readings_replace_what_the_status_had_and_absent_ones_keep_it() {
        let d = deployment(1, 1, 1, 2);
        let mut obs = observed([Some(&d), Some(&d), Some(&d)]);
        let mut prev = desired_status(None, &obs, t(0));
        prev.updater_lag = Some(42);
        prev.traffic = vec![CountryTraffic {
            country: "de".into(),
            desired: 100,
            actual: Some(100),
            reason: None,
        }];
        let read = TableStatus {
            name: "prapi-ns-g".into(),
            status: Some("UPDATING".into()),
            read_capacity: Some(7),
            write_capacity: Some(9),
        };
        obs.readings = Readings {
            table: Some(read.clone()),
            updater_lag: Some(7),
            traffic: Some(Vec::new()),
        };
        let next = desired_status(Some(&prev), &obs, t(1));
        assert_eq!(
            (next.table, next.updater_lag, next.traffic),
            (Some(read), Some(7), Vec::new())
        );
        obs.readings = Readings::default();
        let kept = desired_status(Some(&prev), &obs, t(2));
        assert_eq!(
            (kept.updater_lag, kept.traffic),
            (prev.updater_lag, prev.traffic)
        );
    }

    fn traffic(actual: &[Option<i32>]) -> Vec<CountryTraffic> {
        actual
            .iter()
            .zip(["de", "at", "ch"])
            .map(|(a, c)| CountryTraffic {
                country: c.into(),
                desired: 50,
                actual: *a,
                reason: None,
            })
            .collect()
    }

    #[test]
    fn the_actual_weight_is_one_figure_or_the_range_of_the_known_ones() {
        assert_eq!(actual_weight(&[]), None);
        assert_eq!(actual_weight(&traffic(&[None, None])), None);
        assert_eq!(actual_weight(&traffic(&[Some(40)])).as_deref(), Some("40"));
        assert_eq!(
            actual_weight(&traffic(&[Some(40), Some(40), Some(40)])).as_deref(),
            Some("40")
        );
        assert_eq!(
            actual_weight(&traffic(&[Some(40), Some(20), Some(100)])).as_deref(),
            Some("20-100")
        );
        assert_eq!(
            actual_weight(&traffic(&[Some(0), None, Some(0)])).as_deref(),
            Some("0")
        );
        // The status carries it next to the traffic it sums up.
        let d = deployment(1, 1, 1, 2);
        let mut obs = observed([Some(&d), Some(&d), Some(&d)]);
        obs.readings.traffic = Some(traffic(&[Some(30), Some(70)]));
        let st = desired_status(None, &obs, t(0));
        assert_eq!(st.actual_weight.as_deref(), Some("30-70"));
        obs.readings.traffic = None;
        assert_eq!(
            desired_status(Some(&st), &obs, t(1))
                .actual_weight
                .as_deref(),
            Some("30-70"),
            "kept with the traffic it sums up"
        );
    }

    #[test]
    fn a_suspended_group_says_so_in_suspended_and_in_ready_s_reason() {
        let d = deployment(2, 2, 2, 2);
        let mut obs = observed([Some(&d), Some(&d), Some(&d)]);
        let c = conditions(&obs);
        assert_eq!(
            (
                find(&c, SUSPENDED).status,
                find(&c, SUSPENDED).reason.as_str()
            ),
            (Status::False, "Reconciling")
        );
        assert_eq!(find(&c, READY).reason, "Ready");
        obs.suspended = true;
        let c = conditions(&obs);
        assert_eq!(
            (
                find(&c, SUSPENDED).status,
                find(&c, SUSPENDED).reason.as_str()
            ),
            (Status::True, "Suspended")
        );
        // Ready still says whether it serves.
        let r = find(&c, READY);
        assert_eq!((r.status, r.reason.as_str()), (Status::True, "Suspended"));
        assert_eq!(
            r.message,
            "suspended (spec.suspend); the market group serves"
        );
        let none = deployment(2, 2, 0, 2);
        let obs = Observed {
            suspended: true,
            ..observed([Some(&none), Some(&d), Some(&d)])
        };
        let r = find(&conditions(&obs), READY).clone();
        assert_eq!((r.status, r.reason.as_str()), (Status::False, "Suspended"));
        assert!(
            r.message.contains("no available replicas yet: updater"),
            "{}",
            r.message
        );
    }

    #[test]
    fn the_applied_fingerprint_of_a_sync_replaces_the_stored_one_and_is_kept_otherwise() {
        let d = deployment(2, 2, 2, 2);
        let stored = MarketGroupStatus {
            applied: Some("before".into()),
            ..MarketGroupStatus::default()
        };
        let mut obs = observed([Some(&d), Some(&d), Some(&d)]);
        assert_eq!(
            desired_status(Some(&stored), &obs, Timestamp::UNIX_EPOCH).applied,
            Some("before".into())
        );
        assert_eq!(
            desired_status(None, &obs, Timestamp::UNIX_EPOCH).applied,
            None
        );
        obs.applied = Some("after".into());
        assert_eq!(
            desired_status(Some(&stored), &obs, Timestamp::UNIX_EPOCH).applied,
            Some("after".into())
        );
    }

    #[test]
    fn hpa_floors_applied_replace_the_stored_ones_and_are_kept_otherwise() {
        let d = deployment(2, 2, 2, 2);
        let mut obs = observed([Some(&d), Some(&d), Some(&d)]);
        obs.hpa_floors = Some(Floors {
            products: 5,
            batch: 3,
        });
        let st = desired_status(None, &obs, t(0));
        let floors = |s: &MarketGroupStatus| {
            let c = s.components.clone().expect("components");
            (c.updater.hpa_floor, c.products.hpa_floor, c.batch.hpa_floor)
        };
        assert_eq!(floors(&st), (None, Some(5), Some(3)));
        obs.hpa_floors = None;
        let kept = desired_status(Some(&st), &obs, t(1));
        assert_eq!(floors(&kept), (None, Some(5), Some(3)));
        obs.hpa_floors = Some(Floors {
            products: 2,
            batch: 2,
        });
        assert_eq!(
            floors(&desired_status(Some(&kept), &obs, t(2))),
            (None, Some(2), Some(2))
        );
    }
}

#[cfg(test)]
mod autoscaling_tests {
    use super::*;
    use serde_json::json;

    fn with(conditions: serde_json::Value) -> serde_json::Value {
        json!({"metadata": {"name": "dach-updater"}, "status": {"conditions": conditions}})
    }

    fn cond(t: &str, s: &str, r: &str, m: &str) -> serde_json::Value {
        json!({"type": t, "status": s, "reason": r, "message": m})
    }

    fn summary(u: ConditionUpdate) -> (Status, String, String) {
        assert_eq!(u.type_, AUTOSCALING_ACTIVE);
        (u.status, u.reason, u.message)
    }

    #[test]
    fn an_hpa_is_active_when_it_can_scale_and_reads_its_metric() {
        let hpa = "HorizontalPodAutoscaler";
        let able = cond(
            "AbleToScale",
            "True",
            "ReadyForNewScale",
            "recommended size matches",
        );
        assert_eq!(
            summary(autoscaling_active(hpa, None)),
            (
                Status::Unknown,
                "AutoscalerMissing".into(),
                "the updater's HorizontalPodAutoscaler does not exist yet".into()
            )
        );
        assert_eq!(
            summary(autoscaling_active(hpa, Some(&json!({"metadata": {"name": "dach-updater"}})))),
            (
                Status::Unknown,
                "AutoscalerPending".into(),
                "HorizontalPodAutoscaler dach-updater has not reported AbleToScale and ScalingActive yet".into()
            )
        );
        let missing_metric = cond(
            "ScalingActive",
            "False",
            "FailedGetExternalMetric",
            "unable to get external metric default/prapi_updater_consumer_lag",
        );
        assert_eq!(
            summary(autoscaling_active(hpa, Some(&with(json!([able.clone(), missing_metric]))))),
            (
                Status::False,
                "FailedGetExternalMetric".into(),
                "HorizontalPodAutoscaler dach-updater: ScalingActive: unable to get external metric default/prapi_updater_consumer_lag".into()
            )
        );
        let cannot = cond(
            "AbleToScale",
            "False",
            "FailedGetScale",
            "no scale subresource",
        );
        let active = cond(
            "ScalingActive",
            "True",
            "ValidMetricFound",
            "the HPA was able to compute",
        );
        assert_eq!(
            summary(autoscaling_active(
                hpa,
                Some(&with(json!([active.clone(), cannot])))
            ))
            .1,
            "FailedGetScale",
            "AbleToScale is checked first"
        );
        assert_eq!(
            summary(autoscaling_active(hpa, Some(&with(json!([able, active]))))),
            (
                Status::True,
                "ValidMetricFound".into(),
                "HorizontalPodAutoscaler dach-updater: ScalingActive: the HPA was able to compute"
                    .into()
            )
        );
    }

    #[test]
    fn a_scaled_object_is_active_when_ready() {
        let so = "ScaledObject";
        let ready = cond(
            "Ready",
            "True",
            "ScaledObjectReady",
            "ScaledObject is defined correctly",
        );
        let idle = cond("Active", "False", "ScalerNotActive", "no lag");
        assert_eq!(
            summary(autoscaling_active(so, Some(&with(json!([ready, idle]))))),
            (
                Status::True,
                "ScaledObjectReady".into(),
                "ScaledObject dach-updater: Ready: ScaledObject is defined correctly; Active=False: no lag".into()
            )
        );
        let broken = cond(
            "Ready",
            "False",
            "ScaledObjectCheckFailed",
            "kafka: unreachable",
        );
        assert_eq!(
            summary(autoscaling_active(so, Some(&with(json!([broken]))))).0,
            Status::False
        );
        // A condition without a reason reports its type.
        assert_eq!(
            summary(autoscaling_active(
                so,
                Some(&with(json!([cond("Ready", "Unknown", "", "")])))
            ))
            .1,
            "Ready"
        );
    }
}
