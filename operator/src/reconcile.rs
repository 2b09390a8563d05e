//! The reconcile pipeline: read → validate → render → apply and prune → status, plus the finalizer
//! that cleans up external state before a group goes away.

use crate::apply::{Applier, ApplyError, SyncReport};
use crate::cli::UpdaterAutoscalerChoice;
use crate::crd::{API_GROUP, API_VERSION, MarketGroup, MarketGroupStatus};
use crate::metrics::Metrics;
use crate::plan::{Component, GroupPlan};
use crate::render::autoscaling::UpdaterAutoscaler;
use crate::render::meta::{FIELD_MANAGER, children_selector};
use crate::render::{ChildKind, RenderError, RenderOptions, render};
use crate::status::{self, Observed, Problem};
use crate::validate::{self, InvalidSpec};
use async_trait::async_trait;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{self, finalizer};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;
use tracing::{info, warn};

/// Finalizer the operator puts on every MarketGroup.
pub const FINALIZER: &str = "prapi.dev/cleanup";

/// A reconcile error. Every variant backs off and retries.
#[derive(Debug, Error)]
pub enum Error {
    /// Applying or pruning children failed.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// Rendering failed.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// Writing the status failed.
    #[error("writing the status: {0}")]
    Status(#[source] kube::Error),
    /// Asking the API server whether KEDA is installed failed.
    #[error("discovering the KEDA ScaledObject API: {0}")]
    Discovery(#[source] kube::Error),
    /// The object lacks a field the API server always sets.
    #[error("the MarketGroup has no {0}")]
    MissingField(&'static str),
    /// Cleaning up external state failed.
    #[error("cleaning up {what}: {message}")]
    Cleanup {
        /// Which external state.
        what: String,
        /// What went wrong.
        message: String,
    },
    /// The store step (DynamoDB, Application Auto Scaling) failed.
    #[error(transparent)]
    Store(#[from] crate::aws::AwsError),
    /// The routing step failed.
    #[error(transparent)]
    Routes(#[from] crate::routes::RoutesError),
    /// Adding or removing the finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
}

impl Error {
    /// CamelCase reason for conditions, events and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Apply(e) => e.reason(),
            Error::Render(_) => "RenderFailed",
            Error::Status(_) => "StatusFailed",
            Error::Discovery(_) => "DiscoveryFailed",
            Error::MissingField(_) => "MissingField",
            Error::Cleanup { .. } => "CleanupFailed",
            Error::Store(_) => "AwsError",
            Error::Routes(e) => e.reason(),
            Error::Finalizer(e) => match e.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e.reason(),
                _ => "FinalizerFailed",
            },
        }
    }
}

/// Progress of an external cleanup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanupProgress {
    /// Nothing left; the finalizer may go.
    Done,
    /// Still under way; check again after the given time.
    Pending(Duration),
}

/// State a group owns outside the Kubernetes objects that garbage collection removes (routes,
/// autoscaling targets, the table). Each is cleaned up before the finalizer is removed.
#[async_trait]
pub trait ExternalState: Send + Sync {
    /// What it is, for messages.
    fn name(&self) -> &str;
    /// Removes (or releases, per policy) the group's state.
    async fn cleanup(&self, plan: &GroupPlan) -> Result<CleanupProgress, String>;
}

/// Operator settings the reconciler needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Image for groups without spec.image.
    pub default_image: String,
    /// Variables every data plane container gets (`--data-plane-env`).
    pub data_plane_env: Vec<(String, String)>,
    /// How the updater autoscaler is chosen.
    pub updater_autoscaler: UpdaterAutoscalerChoice,
    /// Requeue period of a healthy group.
    pub resync: Duration,
}

/// Shared state of all reconciles.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Settings.
    pub settings: Settings,
    /// Applies and prunes children.
    pub applier: Applier,
    /// Publishes Events.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// External state cleaned up by the finalizer (routes, autoscaling targets, table).
    pub external: Vec<Arc<dyn ExternalState>>,
    /// The table step (`--store aws`), if the operator manages tables.
    pub store: Option<Arc<crate::aws::store::StoreStep>>,
    /// The routing step (`--routing`), if the operator writes routes.
    pub routes: Option<Arc<crate::routes::RoutesStep>>,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// A context with no external state.
    pub fn new(
        client: Client,
        settings: Settings,
        recorder: Recorder,
        metrics: Arc<Metrics>,
    ) -> Self {
        let m = metrics.clone();
        Self {
            applier: Applier::new(
                client.clone(),
                Box::new(move |kind, verb| m.wrote_child(kind, verb)),
            ),
            client,
            settings,
            recorder,
            metrics,
            external: Vec::new(),
            store: None,
            routes: None,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Delay before retrying `key` after its `n`th consecutive failure: 1 s doubling to 5 min.
    fn next_backoff(&self, key: &str) -> Duration {
        let n = self
            .failures
            .lock()
            .map(|mut f| {
                let n = f.entry(key.to_string()).or_insert(0);
                *n = n.saturating_add(1);
                *n
            })
            .unwrap_or(1);
        backoff(n)
    }

    fn reset_backoff(&self, key: &str) {
        if let Ok(mut f) = self.failures.lock() {
            f.remove(key);
        }
    }
}

/// Exponential backoff: 1 s for the first failure, doubling, at most 5 minutes.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << exp).min(Duration::from_secs(300))
}

fn key_of(mg: &MarketGroup) -> String {
    format!("{}/{}", mg.namespace().unwrap_or_default(), mg.name_any())
}

/// Controller entry point: runs the finalizer helper around [`apply`] and [`cleanup`].
pub async fn reconcile(mg: Arc<MarketGroup>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let ns = mg.namespace().ok_or(Error::MissingField("namespace"))?;
    let api: Api<MarketGroup> = Api::namespaced(ctx.client.clone(), &ns);
    let had_finalizer = mg.finalizers().iter().any(|f| f == FINALIZER);
    // kube's finalizer helper removes the finalizer whenever the cleanup returns Ok, so external
    // cleanup that is still under way (a route draining, a table being deleted) is waited for
    // here, before the helper runs.
    if had_finalizer && mg.meta().deletion_timestamp.is_some() {
        match external_cleanup(&mg, &ctx).await {
            Ok(Some(after)) => return Ok(Action::requeue(after)),
            Ok(None) => {}
            Err(e) => {
                ctx.metrics.reconciled(started.elapsed(), Some(e.reason()));
                return Err(e);
            }
        }
    }
    let result = finalizer(&api, FINALIZER, mg.clone(), |event| async {
        match event {
            finalizer::Event::Apply(mg) => apply(mg, ctx.clone()).await,
            finalizer::Event::Cleanup(mg) => cleanup(mg, ctx.clone()).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    if !had_finalizer && mg.meta().deletion_timestamp.is_none() && result.is_ok() {
        ctx.metrics.wrote("MarketGroup", "finalizer");
    }
    let error_reason = result.as_ref().err().map(Error::reason);
    ctx.metrics.reconciled(started.elapsed(), error_reason);
    if result.is_ok() {
        ctx.reset_backoff(&key_of(&mg));
    }
    result
}

/// Controller error policy: log, and retry with exponential backoff per group.
pub fn error_policy(mg: Arc<MarketGroup>, err: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.next_backoff(&key_of(&mg));
    warn!(group = %key_of(&mg), reason = err.reason(), error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn updater_autoscaler(ctx: &Context) -> Result<UpdaterAutoscaler, Error> {
    Ok(match ctx.settings.updater_autoscaler {
        UpdaterAutoscalerChoice::Keda => UpdaterAutoscaler::Keda,
        UpdaterAutoscalerChoice::Hpa => UpdaterAutoscaler::ExternalMetricHpa,
        UpdaterAutoscalerChoice::Auto => {
            if keda_installed(&ctx.client).await? {
                UpdaterAutoscaler::Keda
            } else {
                UpdaterAutoscaler::ExternalMetricHpa
            }
        }
    })
}

/// Whether the API server serves KEDA's ScaledObject (`keda.sh/v1alpha1`).
pub async fn keda_installed(client: &Client) -> Result<bool, Error> {
    match client.list_api_group_resources("keda.sh/v1alpha1").await {
        Ok(list) => Ok(list.resources.iter().any(|r| r.name == "scaledobjects")),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(Error::Discovery(e)),
    }
}

fn now() -> Timestamp {
    // The API stores condition times in whole seconds; compare like with like.
    Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Reads the group's Deployments (used when the spec is invalid and nothing is applied).
async fn list_deployments(
    client: &Client,
    ns: &str,
    group: &str,
) -> Result<BTreeMap<String, Deployment>, Error> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let list = api
        .list(&ListParams::default().labels(&children_selector(group)))
        .await
        .map_err(|source| {
            Error::Apply(ApplyError::List {
                kind: ChildKind::Deployment,
                source,
            })
        })?;
    Ok(list.items.into_iter().map(|d| (d.name_any(), d)).collect())
}

/// Apply branch: validate, render, apply and prune, write the status.
pub async fn apply(mg: Arc<MarketGroup>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = mg.namespace().ok_or(Error::MissingField("namespace"))?;
    let name = mg.name_any();
    let generation = mg.meta().generation.unwrap_or(0);
    let uid = mg.uid().ok_or(Error::MissingField("uid"))?;
    let plan = validate::plan(&mg, &ctx.settings.default_image, &ns)
        .map(|p| p.with_env(&ctx.settings.data_plane_env));
    let mut extra = crate::steps::StepsReport::default();

    let (deployments, problem, autoscaler, table, outcome) = match plan {
        Err(invalid) => {
            let deployments = list_deployments(&ctx.client, &ns, &name).await?;
            let problem = invalid_problem(&invalid);
            // A spec change triggers the next reconcile; retrying would change nothing.
            (
                deployments,
                Some(problem),
                None,
                None,
                Ok(Action::await_change()),
            )
        }
        Ok(plan) => {
            let floors = crate::steps::floors(&ctx, &plan).await;
            let synced = sync(&ctx, &crate::routes::with_floors(&plan, floors), &uid).await;
            match synced {
                Ok((report, autoscaler)) => {
                    publish_sync_events(&ctx, &mg, &report).await;
                    let (steps, err) =
                        crate::steps::run(&ctx, &mg, &plan, &report.deployments).await;
                    let requeue = steps
                        .requeue_after
                        .map_or(ctx.settings.resync, |r| r.min(ctx.settings.resync));
                    let (problem, outcome) = match err {
                        None => (None, Ok(Action::requeue(requeue))),
                        Some(e) => (Some(crate::steps::problem(&e)), Err(e)),
                    };
                    extra = steps;
                    (
                        report.deployments,
                        problem,
                        Some(autoscaler.kind().to_string()),
                        Some(plan.table.clone()),
                        outcome,
                    )
                }
                Err(e) => {
                    // Report what went wrong, from what exists now, then back off.
                    let deployments = list_deployments(&ctx.client, &ns, &name)
                        .await
                        .unwrap_or_default();
                    let problem = Problem {
                        reason: e.reason().to_string(),
                        message: e.to_string(),
                    };
                    let previous = mg
                        .status
                        .as_ref()
                        .and_then(|s| s.updater_autoscaler.clone());
                    (
                        deployments,
                        Some(problem),
                        previous,
                        Some(plan.table.clone()),
                        Err(e),
                    )
                }
            }
        }
    };

    let component = |c: Component| deployments.get(&format!("{name}-{}", c.as_str()));
    let observed = Observed {
        generation,
        deployments: Component::ALL.map(|c| (c, component(c))),
        problem,
        store: extra.store.clone(),
        routing: extra.routing.clone(),
        updater_autoscaler: autoscaler,
        table,
    };
    let mut new_status = status::desired_status(mg.status.as_ref(), &observed, now());
    extra.fill(&mut new_status);
    publish_status_events(&ctx, &mg, mg.status.as_ref(), &new_status).await;
    write_status(&ctx, &mg, &new_status).await?;
    outcome
}

fn invalid_problem(invalid: &InvalidSpec) -> Problem {
    Problem {
        reason: "InvalidSpec".into(),
        message: invalid.to_string(),
    }
}

async fn sync(
    ctx: &Context,
    plan: &GroupPlan,
    uid: &str,
) -> Result<(SyncReport, UpdaterAutoscaler), Error> {
    let autoscaler = updater_autoscaler(ctx).await?;
    let desired = render(
        plan,
        RenderOptions {
            updater_autoscaler: autoscaler,
        },
    )?;
    // ScaledObjects can only be listed (and pruned) where KEDA is installed; when forced to HPA on a
    // cluster with KEDA, stale ScaledObjects must still go, so check.
    let keda = match autoscaler {
        UpdaterAutoscaler::Keda => true,
        UpdaterAutoscaler::ExternalMetricHpa => {
            ctx.settings.updater_autoscaler != UpdaterAutoscalerChoice::Auto
                && keda_installed(&ctx.client).await?
        }
    };
    let kinds: Vec<ChildKind> = ChildKind::ALL
        .into_iter()
        .filter(|k| *k != ChildKind::ScaledObject || keda)
        .collect();
    let report = ctx
        .applier
        .sync(
            &plan.owner.namespace,
            &plan.owner.name,
            uid,
            &desired,
            &kinds,
        )
        .await?;
    if !report.applied.is_empty() || !report.pruned.is_empty() {
        info!(
            group = %format!("{}/{}", plan.owner.namespace, plan.owner.name),
            applied = report.applied.len(),
            unchanged = report.unchanged,
            pruned = report.pruned.len(),
            "synced children"
        );
    }
    Ok((report, autoscaler))
}

/// Writes the status if it differs from the stored one (server-side apply of the status
/// subresource with the operator's field manager).
async fn write_status(
    ctx: &Context,
    mg: &MarketGroup,
    status: &MarketGroupStatus,
) -> Result<(), Error> {
    if mg.status.as_ref() == Some(status) {
        return Ok(());
    }
    let ns = mg.namespace().ok_or(Error::MissingField("namespace"))?;
    let api: Api<MarketGroup> = Api::namespaced(ctx.client.clone(), &ns);
    let patch = json!({
        "apiVersion": format!("{API_GROUP}/{API_VERSION}"),
        "kind": "MarketGroup",
        "status": status,
    });
    api.patch_status(
        &mg.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::Status)?;
    ctx.metrics.wrote("MarketGroup", "status");
    Ok(())
}

async fn publish(ctx: &Context, mg: &MarketGroup, type_: EventType, reason: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    match ctx.recorder.publish(&event, &mg.object_ref(&())).await {
        Ok(()) => ctx.metrics.wrote("Event", "event"),
        // Events are best effort: losing one must not fail the reconcile.
        Err(e) => warn!(group = %key_of(mg), error = %e, "could not publish event"),
    }
}

fn condition<'a>(
    s: Option<&'a MarketGroupStatus>,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    s.and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
}

/// Events for important transitions: Ready gained or lost, Degraded entered or its reason changed.
async fn publish_status_events(
    ctx: &Context,
    mg: &MarketGroup,
    old: Option<&MarketGroupStatus>,
    new: &MarketGroupStatus,
) {
    let was_ready = status::is_true(old, status::READY);
    let ready = status::is_true(Some(new), status::READY);
    if ready && !was_ready {
        publish(
            ctx,
            mg,
            EventType::Normal,
            "Ready",
            "the market group serves".into(),
        )
        .await;
    } else if was_ready && !ready {
        let msg = condition(Some(new), status::READY)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        publish(ctx, mg, EventType::Warning, "NotReady", msg).await;
    }
    let old_degraded = condition(old, status::DEGRADED).filter(|c| c.status == "True");
    if let Some(d) = condition(Some(new), status::DEGRADED).filter(|c| c.status == "True")
        && old_degraded.map(|o| (&o.reason, &o.message)) != Some((&d.reason, &d.message))
    {
        publish(ctx, mg, EventType::Warning, &d.reason, d.message.clone()).await;
    }
}

/// Events for children created, changed or deleted.
async fn publish_sync_events(ctx: &Context, mg: &MarketGroup, report: &SyncReport) {
    let list = |v: &[(ChildKind, String)]| {
        v.iter()
            .map(|(k, n)| format!("{}/{n}", k.kind()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !report.pruned.is_empty() {
        publish(
            ctx,
            mg,
            EventType::Normal,
            "Pruned",
            format!(
                "deleted objects no longer desired: {}",
                list(&report.pruned)
            ),
        )
        .await;
    }
}

/// Runs the external cleanups in order; `Some(delay)` while one is still under way.
async fn external_cleanup(mg: &MarketGroup, ctx: &Context) -> Result<Option<Duration>, Error> {
    let ns = mg.namespace().ok_or(Error::MissingField("namespace"))?;
    if ctx.external.is_empty() {
        return Ok(None);
    }
    match validate::plan(mg, &ctx.settings.default_image, &ns)
        .map(|p| p.with_env(&ctx.settings.data_plane_env))
    {
        Ok(plan) => {
            for ext in &ctx.external {
                match ext.cleanup(&plan).await {
                    Ok(CleanupProgress::Done) => {}
                    Ok(CleanupProgress::Pending(after)) => return Ok(Some(after)),
                    Err(message) => {
                        return Err(Error::Cleanup {
                            what: ext.name().to_string(),
                            message,
                        });
                    }
                }
            }
        }
        // Nothing external can have been created from a spec that never validated.
        Err(invalid) => {
            warn!(group = %key_of(mg), %invalid, "deleting a group with an invalid spec")
        }
    }
    Ok(None)
}

/// Cleanup branch (the group is being deleted): external state first, then the finalizer goes and
/// Kubernetes garbage-collects the children through their owner references.
pub async fn cleanup(mg: Arc<MarketGroup>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = mg.namespace().ok_or(Error::MissingField("namespace"))?;
    if let Some(after) = external_cleanup(&mg, &ctx).await? {
        return Ok(Action::requeue(after));
    }
    ctx.applier.forget_group(&ns, &mg.name_any());
    info!(group = %key_of(&mg), "cleaned up; children are garbage-collected");
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_to_five_minutes() {
        let secs: Vec<u64> = (1..=12).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(backoff(0).as_secs(), 1);
        assert_eq!(backoff(u32::MAX).as_secs(), 300);
    }
}
