//! The store, gate and routing steps inside the reconcile: after the workloads are applied, the
//! table is reconciled (`StoreReady`), the updater's lag decides the bootstrap gate
//! (`Bootstrapped`, [`crate::gate`]), then the routes of the namespace are written with the
//! group's open countries only (`RoutingReady`); what they read (the table, the updater's lag, the
//! desired versus actual traffic) goes into the status. On
//! deletion, the group's share drains first, then its routes' backends, autoscaling and (per
//! policy) table go.
//!
//! [`Steps`] holds whichever of the store and routing steps the flags turned on; the gate always
//! runs.

use super::error::Error;
use super::notices::{Notice, store_notices};
use crate::aws::lag::{KafkaLag, LagSource};
use crate::aws::store::{StoreOutcome, StoreStep, consumer_group, table_spec};
use crate::aws::{Billing, LagReading};
use crate::crd::{BootstrapStatus, CountryTraffic, MarketGroupStatus, TableStatus};
use crate::gate::{self, Gate};
use crate::plan::{Component, GroupPlan};
use crate::render::routing::{self, shift::Floors};
use crate::routes::{Fresh, GroupRoutes, RoutesStep};
use crate::status::{self, ConditionUpdate, ROUTING_READY, Readings, STORE_READY, Status};
use k8s_openapi::api::apps::v1::Deployment;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::warn;

/// While a traffic shift waits for replicas or a controller, look again this soon.
const SHIFT_RECHECK: Duration = Duration::from_secs(10);
/// While the group's share drains, look again this soon.
const DRAIN_RECHECK: Duration = Duration::from_secs(5);
/// How long a deleted group's backends stay after the last change to the routes that named it:
/// the ingress loads route objects on its own schedule (Skipper polls the API every 3 s), and a
/// route still sending requests to a Service that is gone answers them with 503.
pub const ROUTE_PROPAGATION: Duration = Duration::from_secs(6);
/// While the table or its autoscaling is being removed, look again this soon.
const TABLE_RECHECK: Duration = Duration::from_secs(2);
/// While the bootstrap gate waits for the updater, read its lag again this soon.
const GATE_RECHECK: Duration = Duration::from_secs(10);

/// What the steps observed, for the status and the requeue.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepsReport {
    /// `StoreReady`, when the store is managed.
    pub store: Option<ConditionUpdate>,
    /// `RoutingReady`, when routes are written.
    pub routing: Option<ConditionUpdate>,
    /// The table, the lag and the traffic as read this time.
    pub readings: Readings,
    /// Look again sooner than the resync.
    pub requeue_after: Option<Duration>,
    /// Events for what the steps did (the table created, capacity floors set).
    pub notices: Vec<Notice>,
    /// The bootstrap gate as decided.
    pub gate: Option<Gate>,
}

/// Progress of an external cleanup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanupProgress {
    /// Nothing left; the finalizer may go.
    Done,
    /// Still under way; check again after the given time.
    Pending(Duration),
}

/// Where the bootstrap gate reads the updater's lag, and where it opens.
#[derive(Clone)]
pub struct GateStep {
    /// Reads the lag when the store step did not.
    pub lag: Arc<dyn LagSource>,
    /// The most messages the updater may be behind for its countries to open
    /// (`--bootstrap-max-lag`).
    pub max_lag: i64,
}

impl Default for GateStep {
    fn default() -> Self {
        Self {
            lag: Arc::new(KafkaLag::default()),
            max_lag: gate::DEFAULT_MAX_LAG,
        }
    }
}

/// The table step (`--store aws`) and the routing step (`--routing`), each when turned on, and the
/// bootstrap gate.
#[derive(Default)]
pub struct Steps {
    store: Option<StoreStep>,
    routes: Option<RoutesStep>,
    gate: GateStep,
    /// Per deleting group (by UID): since when the routes have not named it, as far as this
    /// process has seen ([`route_release_wait`]).
    released: Mutex<HashMap<String, Instant>>,
}

impl Steps {
    /// The steps to run; `None` leaves one out.
    pub fn new(store: Option<StoreStep>, routes: Option<RoutesStep>, gate: GateStep) -> Steps {
        Steps {
            store,
            routes,
            gate,
            released: Mutex::default(),
        }
    }

    /// The HPA floors the routing asks of this group before its share rises.
    pub async fn floors(&self, plan: &GroupPlan) -> Option<Floors> {
        let routes = self.routes.as_ref()?;
        let fresh = Fresh {
            name: plan.owner.name.clone(),
            ready: None,
            open: None,
            deleting: false,
        };
        match routes.floors(&plan.owner.namespace, &fresh).await {
            Ok(f) => f,
            Err(e) => {
                warn!(group = %plan.owner.name, error = %e, "cannot compute HPA floors; using the spec's");
                None
            }
        }
    }

    /// Runs the store, gate and routing steps for a group whose workloads were just applied (with
    /// the updater on `bootstrap.consumer_group`, from [`gate::replay`]). The first error is
    /// returned next to what was observed; a failed step keeps its previous condition.
    pub async fn run(
        &self,
        previous: Option<&MarketGroupStatus>,
        plan: &GroupPlan,
        bootstrap: BootstrapStatus,
        deployments: &BTreeMap<String, Deployment>,
    ) -> (StepsReport, Option<Error>) {
        let mut report = StepsReport::default();
        let mut error = None;
        let workloads_ready = Component::ALL.iter().all(|c| {
            deployments
                .get(&plan.component_name(*c))
                .is_some_and(status::available)
        });

        let mut store_ready = true;
        let mut lag = None;
        if let Some(store) = &self.store {
            match store
                .reconcile(&table_spec(plan), &consumer_group(plan))
                .await
            {
                Ok(out) => {
                    store_ready = out.condition.ready;
                    store_report(&mut report, plan, &out);
                    lag = Some(out.lag);
                }
                Err(e) => {
                    // An AWS error says nothing about whether the table serves: keep what was
                    // known, report the error as Degraded and retry with backoff.
                    let prev = previous_condition(previous, STORE_READY).unwrap_or_else(|| {
                        ConditionUpdate::new(
                            STORE_READY,
                            Status::Unknown,
                            &e.reason(),
                            e.to_string(),
                        )
                    });
                    store_ready = prev.status == Status::True;
                    report.store = Some(prev);
                    error = Some(Error::Store(e));
                }
            }
        }

        // One reading serves the store's capacity floor and the gate.
        let lag = match lag {
            Some(l) => l,
            None => self.gate.lag.lag(&consumer_group(plan)).await,
        };
        if let LagReading::Known(n) = lag {
            report.readings.updater_lag = Some(n);
        }
        let gate = gate::decide(bootstrap, &lag, self.gate.max_lag);
        if !gate::pending(&gate.status).is_empty() {
            report.requeue_after = Some(
                report
                    .requeue_after
                    .map_or(GATE_RECHECK, |d| d.min(GATE_RECHECK)),
            );
        }
        let open = gate.open().to_vec();
        report.gate = Some(gate);

        if let Some(routes) = &self.routes {
            let ready = workloads_ready && store_ready;
            let fresh = Fresh {
                name: plan.owner.name.clone(),
                ready: Some(ready),
                open: Some(open),
                deleting: false,
            };
            match routes.sync(&plan.owner.namespace, &fresh).await {
                Ok(r) => routing_report(&mut report, routes, ready, &r),
                Err(e) => {
                    report.routing = previous_condition(previous, ROUTING_READY);
                    error = error.or(Some(Error::Routes(e)));
                }
            }
        }
        (report, error)
    }

    /// Removes the group's external state, routes first: its share drains and its backends leave
    /// the routes, then its autoscaling targets and (per policy) its table go. Returns the Events
    /// for what it did too.
    pub async fn cleanup(&self, plan: &GroupPlan) -> Result<(CleanupProgress, Vec<Notice>), Error> {
        if let Some(routes) = &self.routes {
            let fresh = Fresh {
                name: plan.owner.name.clone(),
                ready: None,
                open: None,
                deleting: true,
            };
            let r = routes
                .sync(&plan.owner.namespace, &fresh)
                .await
                .map_err(|e| cleanup_error("routes", Error::Routes(e)))?;
            let key = plan
                .owner
                .uid
                .clone()
                .unwrap_or_else(|| format!("{}/{}", plan.owner.namespace, plan.owner.name));
            let mut released = self.released.lock().unwrap_or_else(|e| e.into_inner());
            if r.carries_traffic {
                released.remove(&key);
                // The others' floors rise first (their reconciles see this group deleting).
                return Ok((CleanupProgress::Pending(DRAIN_RECHECK), Vec::new()));
            }
            let now = Instant::now();
            let (since, wait) = route_release_wait(r.changed, released.get(&key).copied(), now);
            released.insert(key.clone(), since);
            if let Some(wait) = wait {
                // Keep its pods (and its table) until the ingress has loaded routes without it.
                return Ok((CleanupProgress::Pending(wait), Vec::new()));
            }
            released.remove(&key);
        }
        if let Some(store) = &self.store {
            let out = store
                .cleanup(&table_spec(plan))
                .await
                .map_err(|e| cleanup_error("table", Error::Store(e)))?;
            let notices = store_notices(&plan.table, &out.executed);
            if !out.done {
                return Ok((CleanupProgress::Pending(TABLE_RECHECK), notices));
            }
            return Ok((CleanupProgress::Done, notices));
        }
        Ok((CleanupProgress::Done, Vec::new()))
    }

    /// Whether any step is on (only then is there external state to clean up).
    pub fn any(&self) -> bool {
        self.store.is_some() || self.routes.is_some()
    }
}

fn cleanup_error(what: &'static str, source: Error) -> Error {
    Error::Cleanup {
        what,
        source: Box::new(source),
    }
}

fn store_report(report: &mut StepsReport, plan: &GroupPlan, out: &StoreOutcome) {
    report.store = Some(ConditionUpdate::new(
        STORE_READY,
        if out.condition.ready {
            Status::True
        } else {
            Status::False
        },
        out.condition.reason,
        out.condition.message.clone(),
    ));
    report.readings.table = Some(match &out.table {
        Some(t) => TableStatus {
            name: plan.table.clone(),
            status: Some(t.status.clone()),
            read_capacity: (t.billing == Billing::Provisioned).then_some(t.read_capacity),
            write_capacity: (t.billing == Billing::Provisioned).then_some(t.write_capacity),
        },
        None => TableStatus {
            name: plan.table.clone(),
            ..TableStatus::default()
        },
    });
    report.requeue_after = out.requeue_after;
    report.notices = store_notices(&plan.table, &out.executed);
}

fn routing_report(report: &mut StepsReport, routes: &RoutesStep, ready: bool, r: &GroupRoutes) {
    let (ok, reason, message) = routing::routing_condition(routes.provider(), ready, &r.shares);
    report.routing = Some(ConditionUpdate::new(
        ROUTING_READY,
        if ok { Status::True } else { Status::False },
        reason,
        message,
    ));
    report.readings.traffic = Some(
        r.shares
            .iter()
            .map(|s| CountryTraffic {
                country: s.country.clone(),
                desired: s.desired,
                actual: s.actual,
                reason: s.reason.map(|r| r.as_str().to_string()),
            })
            .collect(),
    );
    if r.shares.iter().any(|s| s.actual != Some(s.desired)) {
        report.requeue_after = Some(
            report
                .requeue_after
                .map_or(SHIFT_RECHECK, |d| d.min(SHIFT_RECHECK)),
        );
    }
}

/// How much longer a deleting group's backends must stay, and since when the routes are known not
/// to name it: `changed` says this pass rewrote them, `since` is when an earlier pass first saw
/// them without the group. The route objects are shared by the groups of a country, so another
/// group's reconcile may have taken this group out of them a moment before this pass: "nothing to
/// change now" is not "loaded by the ingress". The wait counts from the first time this process
/// saw them without the group (after a restart, from then: longer, never shorter).
pub fn route_release_wait(
    changed: bool,
    since: Option<Instant>,
    now: Instant,
) -> (Instant, Option<Duration>) {
    let since = match since {
        Some(t) if !changed => t,
        _ => now,
    };
    let left = ROUTE_PROPAGATION.saturating_sub(now.saturating_duration_since(since));
    (since, (!left.is_zero()).then_some(left))
}

/// The condition of `type_` as `previous` has it, as an update that keeps it.
pub(super) fn previous_condition(
    previous: Option<&MarketGroupStatus>,
    type_: &str,
) -> Option<ConditionUpdate> {
    let c = previous?.conditions.iter().find(|c| c.type_ == type_)?;
    let st = match c.status.as_str() {
        "True" => Status::True,
        "False" => Status::False,
        _ => Status::Unknown,
    };
    Some(ConditionUpdate::new(
        type_,
        st,
        &c.reason,
        c.message.clone(),
    ))
}

#[cfg(test)]
mod tests {
    use super::{ROUTE_PROPAGATION, route_release_wait};
    use std::time::{Duration, Instant};

    #[test]
    fn a_deleted_groups_backends_stay_until_the_routes_have_been_without_it_long_enough() {
        let t0 = Instant::now();
        let secs = Duration::from_secs;
        // This pass took the group out of the routes: the whole wait, from now.
        assert_eq!(
            route_release_wait(true, None, t0),
            (t0, Some(ROUTE_PROPAGATION))
        );
        // Another group's reconcile took it out before this pass: unchanged now, yet the whole
        // wait, since this is the first time the routes are seen without it.
        assert_eq!(
            route_release_wait(false, None, t0),
            (t0, Some(ROUTE_PROPAGATION))
        );
        // Later passes count from that first sight.
        assert_eq!(
            route_release_wait(false, Some(t0), t0 + secs(2)),
            (t0, Some(ROUTE_PROPAGATION - secs(2)))
        );
        assert_eq!(
            route_release_wait(false, Some(t0), t0 + ROUTE_PROPAGATION),
            (t0, None)
        );
        assert_eq!(
            route_release_wait(false, Some(t0), t0 + secs(60)),
            (t0, None)
        );
        // A change after that starts the wait again.
        let t1 = t0 + secs(60);
        assert_eq!(
            route_release_wait(true, Some(t0), t1),
            (t1, Some(ROUTE_PROPAGATION))
        );
    }
}
