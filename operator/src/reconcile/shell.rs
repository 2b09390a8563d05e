//! The I/O around the pure [`outcome`]: the controller's entry and error policy, the finalizer,
//! and every read and write a reconcile makes (children, steps, status, Events).

use super::context::Context;
use super::error::Error;
use super::notices::{Notice, RECONCILE, status_notices};
use super::outcome::{Group, Progress, outcome};
use super::steps::{CleanupProgress, previous_condition};
use crate::apply::{ApplyError, SyncReport};
use crate::cli::{PodMonitorChoice, UpdaterAutoscalerChoice};
use crate::crd::{API_GROUP, API_VERSION, BootstrapStatus, MarketGroup, MarketGroupStatus};
use crate::discovery::Discovery;
use crate::gate;
use crate::kafka_secret::{self, KafkaSecretProblem};
use crate::plan::{GroupPlan, KafkaClientPlan};
use crate::render::autoscaling::UpdaterAutoscaler;
use crate::render::meta::{FIELD_MANAGER, children_selector};
use crate::render::routing::shift::Floors;
use crate::render::{ChildKind, RenderOptions, render};
use crate::status;
use crate::validate;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{self, finalizer};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Finalizer the operator puts on every MarketGroup.
pub const FINALIZER: &str = "prapi.dev/cleanup";

/// The group as `namespace/name`, for logs and the backoff.
fn key_of(mg: &MarketGroup) -> String {
    format!("{}/{}", mg.namespace().unwrap_or_default(), mg.name_any())
}

/// Controller entry point: runs the finalizer helper around [`converge`] and [`finalize`].
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
            finalizer::Event::Apply(mg) => converge(mg, ctx.clone()).await,
            finalizer::Event::Cleanup(mg) => finalize(mg, ctx.clone()).await,
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

/// The group's plan with the operator's settings, or why its spec is invalid; the updater reads
/// with the consumer group the bootstrap gate chose ([`gate::replay`]), which comes with it.
fn plan(
    mg: &MarketGroup,
    ctx: &Context,
    ns: &str,
) -> Result<(GroupPlan, BootstrapStatus), validate::InvalidSpec> {
    validate::plan(mg, &ctx.settings.default_image, ns).map(|p| {
        let mut p = ctx
            .settings
            .data_plane
            .apply(p)
            .with_default_balance_factor(ctx.settings.balance_factor)
            .with_network_policy(ctx.settings.network_policy.clone());
        let bootstrap = gate::replay(&p.updater.consumer_group, &p.countries, mg.status.as_ref());
        p.updater.consumer_group = bootstrap.consumer_group.clone();
        (p, bootstrap)
    })
}

/// The group's Kafka client Secret, read and checked, when it names one.
async fn kafka_client(
    ctx: &Context,
    plan: &GroupPlan,
) -> Result<Option<KafkaClientPlan>, KafkaSecretProblem> {
    let name = &plan.updater.client_secret_name;
    if name.is_empty() {
        return Ok(None);
    }
    kafka_secret::read(&ctx.client, &plan.owner.namespace, name)
        .await
        .map(Some)
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
            if served(&ctx.discovery, ChildKind::ScaledObject).await? {
                UpdaterAutoscaler::Keda
            } else {
                UpdaterAutoscaler::ExternalMetricHpa
            }
        }
    })
}

/// Whether the API server serves KEDA's ScaledObject (`keda.sh/v1alpha1`), read now.
pub async fn keda_installed(client: &Client) -> Result<bool, Error> {
    served(
        &Discovery::uncached(client.clone()),
        ChildKind::ScaledObject,
    )
    .await
}

/// Whether the API server serves the Prometheus Operator's PodMonitor (`monitoring.coreos.com/v1`),
/// read now.
pub async fn pod_monitor_served(client: &Client) -> Result<bool, Error> {
    served(&Discovery::uncached(client.clone()), ChildKind::PodMonitor).await
}

/// Whether the API server serves `kind`, as `discovery` knows it.
async fn served(discovery: &Discovery, kind: ChildKind) -> Result<bool, Error> {
    discovery
        .served(&kind.api_resource())
        .await
        .map_err(|source| Error::Discovery {
            api: match kind {
                ChildKind::PodMonitor => "monitoring.coreos.com/v1 PodMonitor",
                _ => "keda.sh/v1alpha1 ScaledObject",
            },
            source,
        })
}

/// Whether to render the group's PodMonitor, and whether to list (and prune) PodMonitors at all:
/// a forced `off` on a cluster that serves the API still removes the ones made before.
async fn pod_monitor(ctx: &Context) -> Result<(bool, bool), Error> {
    Ok(match ctx.settings.pod_monitor {
        PodMonitorChoice::On => (true, true),
        PodMonitorChoice::Auto => {
            let serves = served(&ctx.discovery, ChildKind::PodMonitor).await?;
            (serves, serves)
        }
        PodMonitorChoice::Off => (false, served(&ctx.discovery, ChildKind::PodMonitor).await?),
    })
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

/// A live group: validate, render, apply and prune, run the steps, write the status.
pub async fn converge(mg: Arc<MarketGroup>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = mg.namespace().ok_or(Error::MissingField("namespace"))?;
    let name = mg.name_any();
    // The controller's copy can be a step behind this operator's own last status write (its watch
    // event not delivered yet). The status is built on the stored one, and the bootstrap gate's
    // memory in it must never go back (a served country would be gated again): read the group.
    let mg = match Api::<MarketGroup>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&name)
        .await
    {
        Ok(Some(latest)) => Arc::new(latest),
        Ok(None) => return Ok(Action::await_change()),
        Err(e) => {
            warn!(group = %key_of(&mg), error = %e, "cannot read the group; using the watched copy");
            mg
        }
    };
    let uid = mg.uid().ok_or(Error::MissingField("uid"))?;
    let (deployments, progress) = match plan(&mg, &ctx, &ns) {
        // Suspended: read, never write (the status aside), whatever the spec says now.
        _ if mg.spec.suspend => {
            let stored = mg.status.as_ref();
            (
                list_deployments(&ctx.client, &ns, &name).await?,
                Progress::Suspended {
                    table: stored
                        .and_then(|s| s.table.as_ref())
                        .map(|t| t.name.clone()),
                    store: previous_condition(stored, status::STORE_READY),
                    routing: previous_condition(stored, status::ROUTING_READY),
                },
            )
        }
        Err(invalid) => (
            list_deployments(&ctx.client, &ns, &name).await?,
            Progress::Invalid(invalid),
        ),
        Ok((plan, bootstrap)) => match kafka_client(&ctx, &plan).await {
            Err(problem) => (
                list_deployments(&ctx.client, &ns, &name).await?,
                Progress::KafkaSecret {
                    table: plan.table,
                    problem,
                },
            ),
            Ok(client) => {
                let plan = plan.with_kafka_client(client);
                let floors = ctx.steps.floors(&plan).await;
                let floored = crate::routes::with_floors(&plan, floors);
                let applied_floors = Floors {
                    products: floored.products.replicas.min,
                    batch: floored.batch.replicas.min,
                };
                let recorded = mg.status.as_ref().and_then(|s| s.applied.as_deref());
                match sync(&ctx, &floored, &uid, recorded).await {
                    Ok((report, autoscaler)) => {
                        publish_sync_events(&ctx, &mg, &report).await;
                        let (steps, error) = ctx
                            .steps
                            .run(mg.status.as_ref(), &plan, bootstrap, &report.deployments)
                            .await;
                        publish_all(&ctx, &mg, &steps.notices).await;
                        let progress = Progress::Synced {
                            table: plan.table,
                            autoscaler,
                            steps,
                            error,
                            floors: applied_floors,
                            applied: report.fingerprint.clone(),
                        };
                        (report.deployments, progress)
                    }
                    Err(error) => {
                        // Report what went wrong from what exists now, then back off.
                        let deployments = list_deployments(&ctx.client, &ns, &name)
                            .await
                            .unwrap_or_default();
                        let progress = Progress::SyncFailed {
                            table: plan.table,
                            error,
                        };
                        (deployments, progress)
                    }
                }
            }
        },
    };
    let group = Group {
        name: &name,
        generation: mg.meta().generation.unwrap_or(0),
        stored_autoscaler: mg
            .status
            .as_ref()
            .and_then(|s| s.updater_autoscaler.as_deref()),
        deployments: &deployments,
        resync: ctx.settings.resync,
    };
    let (mut observed, next) = outcome(group, progress);
    if let Some(kind) = observed.updater_autoscaler.clone() {
        observed.autoscaling = Some(autoscaling_active(&ctx, &ns, &name, &kind).await);
    }
    let new_status = status::desired_status(mg.status.as_ref(), &observed, now());
    ctx.metrics.observe_group(&ns, &name, &new_status);
    publish_status_events(&ctx, &mg, mg.status.as_ref(), &new_status).await;
    write_status(&ctx, &mg, &new_status).await?;
    next
}

/// `AutoscalingActive` from the updater's autoscaler (of `kind`, as the status names it) as the
/// API server has it now.
async fn autoscaling_active(
    ctx: &Context,
    ns: &str,
    group: &str,
    kind: &str,
) -> status::ConditionUpdate {
    let child_kind = if kind == UpdaterAutoscaler::Keda.kind() {
        ChildKind::ScaledObject
    } else {
        ChildKind::HorizontalPodAutoscaler
    };
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), ns, &child_kind.api_resource());
    let name = format!("{group}-{}", crate::plan::Component::Updater.as_str());
    match api.get_opt(&name).await {
        Ok(object) => {
            let json = object.and_then(|o| serde_json::to_value(o).ok());
            status::autoscaling_active(kind, json.as_ref())
        }
        Err(e) => status::ConditionUpdate::new(
            status::AUTOSCALING_ACTIVE,
            status::Status::Unknown,
            "AutoscalerUnreadable",
            format!("reading {kind} {name}: {e}"),
        ),
    }
}

async fn sync(
    ctx: &Context,
    plan: &GroupPlan,
    uid: &str,
    recorded: Option<&str>,
) -> Result<(SyncReport, UpdaterAutoscaler), Error> {
    let autoscaler = updater_autoscaler(ctx).await?;
    let (render_pod_monitor, list_pod_monitors) = pod_monitor(ctx).await?;
    let desired = render(
        plan,
        RenderOptions {
            updater_autoscaler: autoscaler,
            pod_monitor: render_pod_monitor,
        },
    )?;
    // KEDA's objects (ScaledObjects, TriggerAuthentications) can only be listed (and pruned) where
    // KEDA is installed; when forced to HPA on a cluster with KEDA, stale ones must still go, so
    // check.
    let keda = match autoscaler {
        UpdaterAutoscaler::Keda => true,
        UpdaterAutoscaler::ExternalMetricHpa => {
            ctx.settings.updater_autoscaler != UpdaterAutoscalerChoice::Auto
                && served(&ctx.discovery, ChildKind::ScaledObject).await?
        }
    };
    let kinds: Vec<ChildKind> = ChildKind::ALL
        .into_iter()
        .filter(|k| match k {
            // KEDA installs both of its kinds' CRDs together.
            ChildKind::ScaledObject | ChildKind::TriggerAuthentication => keda,
            ChildKind::PodMonitor => list_pod_monitors,
            _ => true,
        })
        .collect();
    let report = ctx
        .applier
        .sync(
            &plan.owner.namespace,
            &plan.owner.name,
            uid,
            &desired,
            &kinds,
            recorded,
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

async fn publish(
    ctx: &Context,
    mg: &MarketGroup,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    match ctx.recorder.publish(&event, &mg.object_ref(&())).await {
        Ok(()) => ctx.metrics.wrote("Event", "event"),
        // Events are best effort: losing one must not fail the reconcile.
        Err(e) => warn!(group = %key_of(mg), error = %e, "could not publish event"),
    }
}

async fn publish_all(ctx: &Context, mg: &MarketGroup, notices: &[Notice]) {
    for n in notices {
        let type_ = if n.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        publish(ctx, mg, type_, &n.reason, &n.action, n.note.clone()).await;
    }
}

/// Events for the status transition ([`status_notices`]).
async fn publish_status_events(
    ctx: &Context,
    mg: &MarketGroup,
    old: Option<&MarketGroupStatus>,
    new: &MarketGroupStatus,
) {
    publish_all(ctx, mg, &status_notices(old, new)).await;
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
            RECONCILE,
            format!(
                "deleted objects no longer desired: {}",
                list(&report.pruned)
            ),
        )
        .await;
    }
}

/// Removes the steps' external state; `Some(delay)` while that is still under way.
async fn external_cleanup(mg: &MarketGroup, ctx: &Context) -> Result<Option<Duration>, Error> {
    let ns = mg.namespace().ok_or(Error::MissingField("namespace"))?;
    if !ctx.steps.any() {
        return Ok(None);
    }
    match plan(mg, ctx, &ns) {
        Ok((plan, _)) => {
            let (progress, notices) = ctx.steps.cleanup(&plan).await?;
            publish_all(ctx, mg, &notices).await;
            match progress {
                CleanupProgress::Done => Ok(None),
                CleanupProgress::Pending(after) => Ok(Some(after)),
            }
        }
        // Nothing external can have been created from a spec that never validated.
        Err(invalid) => {
            warn!(group = %key_of(mg), %invalid, "deleting a group with an invalid spec");
            Ok(None)
        }
    }
}

/// A deleted group: external state first, then the finalizer goes and Kubernetes garbage-collects
/// the children through their owner references.
pub async fn finalize(mg: Arc<MarketGroup>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = mg.namespace().ok_or(Error::MissingField("namespace"))?;
    if let Some(after) = external_cleanup(&mg, &ctx).await? {
        return Ok(Action::requeue(after));
    }
    ctx.applier.forget_group(&ns, &mg.name_any());
    ctx.metrics.forget_group(&ns, &mg.name_any());
    info!(group = %key_of(&mg), "cleaned up; children are garbage-collected");
    Ok(Action::await_change())
}
