//! The store and routing steps inside the reconcile pipeline: after the workloads are applied, the
//! table is reconciled (`StoreReady`), then the routes of the namespace (`RoutingReady`), and the
//! status gets the table, the updater's lag and the desired versus actual traffic. On deletion,
//! the group's share drains first, then its routes' backends, autoscaling and (per policy) table go.

use crate::aws::store::{StoreStep, consumer_group, table_spec};
use crate::aws::{Billing, LagReading};
use crate::crd::{CountryTraffic, MarketGroup, MarketGroupStatus, TableStatus};
use crate::plan::{Component, GroupPlan};
use crate::reconcile::{CleanupProgress, Context, Error, ExternalState};
use crate::render::routing::{self, shift::Floors};
use crate::routes::{Fresh, RoutesStep};
use crate::status::{self, ConditionUpdate, Problem, ROUTING_READY, STORE_READY, Status};
use async_trait::async_trait;
use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

/// What the steps observed, for the status.
#[derive(Clone, Debug, Default)]
pub struct StepsReport {
    /// `StoreReady`, when the store is managed.
    pub store: Option<ConditionUpdate>,
    /// `RoutingReady`, when routes are written.
    pub routing: Option<ConditionUpdate>,
    /// The table as observed.
    pub table: Option<TableStatus>,
    /// The updater's lag, when read.
    pub lag: Option<i64>,
    /// Desired and actual traffic per country.
    pub traffic: Option<Vec<CountryTraffic>>,
    /// Look again sooner than the resync.
    pub requeue_after: Option<Duration>,
}

impl StepsReport {
    /// Writes what the steps observed into `status`.
    pub fn fill(&self, status: &mut MarketGroupStatus) {
        if let Some(t) = &self.table {
            status.table = Some(t.clone());
        }
        if self.lag.is_some() {
            status.updater_lag = self.lag;
        }
        if let Some(t) = &self.traffic {
            status.traffic = t.clone();
        }
    }
}

/// `Degraded` for a step error: AWS errors carry their AWS error code as the reason.
pub fn problem(e: &Error) -> Problem {
    match e {
        Error::Store(aws) => Problem {
            reason: aws.reason(),
            message: aws.to_string(),
        },
        other => Problem {
            reason: other.reason().to_string(),
            message: other.to_string(),
        },
    }
}

/// The HPA floors the routing asks of this group before its share rises.
pub async fn floors(ctx: &Context, plan: &GroupPlan) -> Option<Floors> {
    let routes = ctx.routes.as_ref()?;
    let fresh = Fresh {
        name: plan.owner.name.clone(),
        ready: None,
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

fn previous(mg: &MarketGroup, type_: &str) -> Option<ConditionUpdate> {
    mg.status.as_ref().and_then(|s| {
        s.conditions.iter().find(|c| c.type_ == type_).map(|c| {
            let st = match c.status.as_str() {
                "True" => Status::True,
                "False" => Status::False,
                _ => Status::Unknown,
            };
            ConditionUpdate::new(type_, st, &c.reason, c.message.clone())
        })
    })
}

/// Runs the store and routing steps for a group whose workloads were just applied.
pub async fn run(
    ctx: &Context,
    mg: &MarketGroup,
    plan: &GroupPlan,
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
    if let Some(store) = &ctx.store {
        match store
            .reconcile(&table_spec(plan), &consumer_group(plan))
            .await
        {
            Ok(out) => {
                store_ready = out.condition.ready;
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
                report.table = Some(match &out.table {
                    Some(t) => TableStatus {
                        name: plan.table.clone(),
                        status: Some(t.status.clone()),
                        read_capacity: (t.billing == Billing::Provisioned)
                            .then_some(t.read_capacity),
                        write_capacity: (t.billing == Billing::Provisioned)
                            .then_some(t.write_capacity),
                    },
                    None => TableStatus {
                        name: plan.table.clone(),
                        ..TableStatus::default()
                    },
                });
                if let LagReading::Known(n) = out.lag {
                    report.lag = Some(n);
                }
                report.requeue_after = out.requeue_after;
            }
            Err(e) => {
                // An AWS error says nothing about whether the table serves: keep what was known,
                // report the error as Degraded and retry with backoff.
                let prev = previous(mg, STORE_READY).unwrap_or_else(|| {
                    ConditionUpdate::new(STORE_READY, Status::Unknown, &e.reason(), e.to_string())
                });
                store_ready = prev.status == Status::True;
                report.store = Some(prev);
                error = Some(Error::Store(e));
            }
        }
    }

    if let Some(routes) = &ctx.routes {
        let ready = workloads_ready && store_ready;
        let fresh = Fresh {
            name: plan.owner.name.clone(),
            ready: Some(ready),
            deleting: false,
        };
        match routes.sync(&plan.owner.namespace, &fresh).await {
            Ok(r) => {
                let (ok, reason, message) =
                    routing::routing_condition(routes.provider(), ready, &r.shares);
                report.routing = Some(ConditionUpdate::new(
                    ROUTING_READY,
                    if ok { Status::True } else { Status::False },
                    reason,
                    message,
                ));
                report.traffic = Some(
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
                // A shift waiting for replicas or a controller resolves on its own: look again soon.
                if r.shares.iter().any(|s| s.actual != Some(s.desired)) {
                    report.requeue_after = Some(
                        report
                            .requeue_after
                            .map_or(Duration::from_secs(10), |d| d.min(Duration::from_secs(10))),
                    );
                }
            }
            Err(e) => {
                report.routing = previous(mg, ROUTING_READY);
                if error.is_none() {
                    error = Some(Error::Routes(e));
                }
            }
        }
    }
    (report, error)
}

/// Drains the group's share and removes its backends from the routes (finalizer).
pub struct RoutesCleanup(pub Arc<RoutesStep>);

#[async_trait]
impl ExternalState for RoutesCleanup {
    fn name(&self) -> &str {
        "routes"
    }

    async fn cleanup(&self, plan: &GroupPlan) -> Result<CleanupProgress, String> {
        let fresh = Fresh {
            name: plan.owner.name.clone(),
            ready: None,
            deleting: true,
        };
        let r = self
            .0
            .sync(&plan.owner.namespace, &fresh)
            .await
            .map_err(|e| e.to_string())?;
        Ok(if r.carries_traffic {
            // The others' floors rise first (their reconciles see this group deleting).
            CleanupProgress::Pending(Duration::from_secs(5))
        } else {
            CleanupProgress::Done
        })
    }
}

/// Removes the group's autoscaling targets and, per policy, its table (finalizer).
pub struct StoreCleanup(pub Arc<StoreStep>);

#[async_trait]
impl ExternalState for StoreCleanup {
    fn name(&self) -> &str {
        "table"
    }

    async fn cleanup(&self, plan: &GroupPlan) -> Result<CleanupProgress, String> {
        match self.0.cleanup(&table_spec(plan)).await {
            Ok(true) => Ok(CleanupProgress::Done),
            Ok(false) => Ok(CleanupProgress::Pending(Duration::from_secs(2))),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// The group key, for logs.
pub fn key(mg: &MarketGroup) -> String {
    format!("{}/{}", mg.namespace().unwrap_or_default(), mg.name_any())
}
