//! `prapi-operator run`: health server, leader election, the controller, graceful shutdown.

use crate::cli::RunArgs;
use crate::crd::MarketGroup;
use crate::discovery::Discovery;
use crate::http;
use crate::metrics::Metrics;
use crate::reconcile::{self, Context, Settings, Steps};
use crate::render::ChildKind;
use crate::render::meta::{FIELD_MANAGER, LABEL_MANAGED_BY};
use crate::scope::WatchScope;
use anyhow::{Context as _, bail};
use futures::{FutureExt, StreamExt};
use kube::api::{Api, DynamicObject, ListParams};
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Resource};
use kube_lease_manager::LeaseManagerBuilder;
use prapi_common::ops::Readiness;
use prapi_common::shutdown::shutdown_signal;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tracing::{debug, info, warn};

/// Picks rustls' process-wide crypto provider: kube brings ring and the AWS SDK aws-lc-rs, and
/// with both compiled in rustls cannot choose by itself. Installing twice is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Why the controller stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Signal,
    LostLeadership,
}

/// The routing and store steps the flags ask for.
pub async fn steps(
    client: &Client,
    discovery: &Discovery,
    args: &RunArgs,
) -> anyhow::Result<Steps> {
    use crate::cli::{RoutingChoice, StoreChoice};
    if args.routing == RoutingChoice::GatewayApi && args.gateway.is_none() {
        bail!("--routing gateway-api needs --gateway NAMESPACE/NAME");
    }
    let routes = (args.routing != RoutingChoice::None).then(|| {
        crate::routes::RoutesStep::new(
            client.clone(),
            discovery.clone(),
            args.routing.provider(),
            crate::render::routing::RouteOptions {
                gateway: args.gateway.clone(),
                balance_factor: args.balance_factor,
                hosts: args.route_hosts.clone(),
                auth: crate::render::routing::RouteAuth {
                    skipper_filter: args.skipper_auth_filter.clone(),
                    gateway_extension_ref: args.gateway_auth_filter.clone(),
                },
                skipper_fade_in: args.skipper_fade_in,
                skipper_lifo: args
                    .skipper_lifo
                    .then(|| crate::render::routing::SkipperLifo {
                        max_concurrency: args.skipper_lifo_max_concurrency,
                        max_queue: args.skipper_lifo_max_queue,
                        timeout: std::time::Duration::from_millis(args.skipper_lifo_timeout_ms),
                    }),
            },
            args.backend_traffic_policy,
            args.default_image.clone(),
            args.store == StoreChoice::Aws,
        )
    });
    let store = match args.store {
        StoreChoice::Aws => Some(
            crate::aws::store::StoreStep::from_sdk(crate::aws::store::AwsEndpoints::default())
                .await,
        ),
        _ => None,
    };
    let gate = reconcile::GateStep {
        max_lag: args.bootstrap_max_lag,
        ..reconcile::GateStep::default()
    };
    Ok(Steps::new(store, routes, gate))
}

/// Runs the controllers of every scope until `stop` fires.
async fn run_controller(
    client: Client,
    args: &RunArgs,
    ctx: Arc<Context>,
    stop: oneshot::Receiver<()>,
) {
    let stop = stop.shared();
    // Kubernetes watches one namespace or all of them: an allow-list gets a controller per
    // namespace, each with its own watches and caches, sharing the context and the stop signal.
    let scope = WatchScope::new(&args.watch_namespaces);
    let runs = scope.apis().into_iter().map(|ns| {
        let stop = stop.clone();
        controller(&client, args, ns)
            .with_config(controller::Config::default().concurrency(args.concurrency))
            .graceful_shutdown_on(async move {
                let _ = stop.await;
            })
            .run(reconcile::reconcile, reconcile::error_policy, ctx.clone())
            .boxed()
    });
    futures::stream::select_all(runs)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => debug!(group = %obj, "reconciled"),
                Err(e) => debug!(error = %e, "controller event"),
            }
        })
        .await;
}

/// The controller of the MarketGroups of `ns` (all namespaces: `None`) and their children.
fn controller(client: &Client, args: &RunArgs, ns: Option<&str>) -> Controller<MarketGroup> {
    let children =
        watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={FIELD_MANAGER}"));
    let controller = Controller::new(api::<MarketGroup>(client, ns), watcher::Config::default());
    // Routes are shared by the groups of a namespace: a change to one group (its weight, its
    // readiness, its deletion) must be seen by the others' reconciles, which own their HPA floors.
    let groups = controller.store();
    let routing = args.routing != crate::cli::RoutingChoice::None;
    let controller = controller.watches(
        api::<MarketGroup>(client, ns),
        watcher::Config::default(),
        move |mg: MarketGroup| {
            let ns = mg.metadata.namespace.clone();
            let name = mg.metadata.name.clone();
            let peers: Vec<kube::runtime::reflector::ObjectRef<MarketGroup>> = if routing {
                groups
                    .state()
                    .iter()
                    .filter(|g| g.metadata.namespace == ns && g.metadata.name != name)
                    .map(|g| kube::runtime::reflector::ObjectRef::from_obj(g.as_ref()))
                    .collect()
            } else {
                Vec::new()
            };
            peers
        },
    );
    // Every kind the groups own, so an edit or deletion of a child by someone else is repaired.
    ChildKind::watched().fold(controller, |c, kind| {
        let ar = kind.api_resource();
        let api = match ns {
            Some(ns) => Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar),
            None => Api::<DynamicObject>::all_with(client.clone(), &ar),
        };
        c.owns_with(api, ar, children.clone())
    })
}

/// `prapi-operator run`: connect, serve the ops endpoints, check access, build the context, run
/// the controller (as the leader, or alone), shut down.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    install_crypto_provider();
    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API (kubeconfig or in-cluster config)")?;
    let metrics = Arc::new(Metrics::default());
    let readiness = Readiness::default();
    let (server_stop, server) = spawn_ops_server(&args, metrics.clone(), readiness.clone());
    let external_metrics = spawn_external_metrics(&client, &args).await?;
    check_access(&client, &args).await?;
    let identity = identity(&args);
    let ctx = Arc::new(context(&client, &args, &identity, metrics.clone()).await?);
    let stop = if args.leader_election {
        run_as_leader(&client, &args, &identity, ctx, &metrics, &readiness).await?
    } else {
        run_alone(&client, &args, ctx, &metrics, &readiness).await
    };
    readiness.set(false);
    let _ = server_stop.send(());
    if let Some((stop, task)) = external_metrics {
        let _ = stop.send(true);
        if let Err(e) = task.await {
            warn!(error = %e, "external metrics API task failed");
        }
    }
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "health server failed"),
        Err(e) => warn!(error = %e, "health server task failed"),
    }
    match stop {
        Stop::Signal => {
            info!("shut down");
            Ok(())
        }
        // Exit non-zero so the pod restarts as a clean standby.
        Stop::LostLeadership => bail!("lost leadership"),
    }
}

/// Serves `/healthz`, `/readyz` and `/metrics` until the returned sender fires.
fn spawn_ops_server(
    args: &RunArgs,
    metrics: Arc<Metrics>,
    readiness: Readiness,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(http::serve(args.listen, metrics, readiness, async move {
        let _ = stop_rx.await;
    }));
    (stop_tx, server)
}

/// Binds the external metrics API and serves it (with its trust refresh) until the returned
/// sender fires; `None` when it is turned off.
async fn spawn_external_metrics(
    client: &Client,
    args: &RunArgs,
) -> anyhow::Result<Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>> {
    use crate::external_metrics::{self as em, ServingSource};
    if !args.external_metrics {
        return Ok(None);
    }
    let serving = match (
        &args.external_metrics_cert_file,
        &args.external_metrics_key_file,
    ) {
        (Some(cert), Some(key)) => ServingSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        _ => ServingSource::SelfSigned(em::auth::ServingCert::self_signed(vec![
            "localhost".into(),
        ])?),
    };
    let state = em::api::ApiState {
        groups: Arc::new(em::readings::ClusterGroups {
            client: client.clone(),
            scope: WatchScope::new(&args.watch_namespaces),
        }),
        readings: em::readings::Readings::new(
            Arc::new(crate::aws::lag::KafkaLag::default()),
            Duration::from_secs(args.external_metrics_lag_max_age_seconds),
        ),
        authorizer: Arc::new(em::authz::ReviewAuthorizer::new(client.clone())),
        proxy: arc_swap::ArcSwapOption::empty(),
    };
    let server = em::Server::new(state, &serving.load()?)?;
    let listener = tokio::net::TcpListener::bind(args.external_metrics_listen)
        .await
        .with_context(|| {
            format!(
                "binding the external metrics API to {}",
                args.external_metrics_listen
            )
        })?;
    info!(listen = %args.external_metrics_listen, "serving external.metrics.k8s.io/v1beta1");
    let (stop, stopped) = watch::channel(false);
    let wait = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let refresh = em::refresh(
        server.clone(),
        client.clone(),
        serving,
        wait(stopped.clone()),
    );
    let task = tokio::spawn(async move {
        tokio::join!(server.serve(listener, wait(stopped)), refresh);
    });
    Ok(Some((stop, task)))
}

/// Fails early and clearly when the CRD is missing or RBAC forbids reading the groups of a
/// watched namespace.
async fn check_access(client: &Client, args: &RunArgs) -> anyhow::Result<()> {
    for ns in WatchScope::new(&args.watch_namespaces).apis() {
        api::<MarketGroup>(client, ns)
            .list_metadata(&ListParams::default().limit(1))
            .await
            .with_context(|| {
                format!(
                    "listing MarketGroups in {} (is the CRD installed? does the operator's role allow it there?)",
                    ns.map_or("every namespace".to_string(), |ns| format!("namespace {ns}"))
                )
            })?;
    }
    Ok(())
}

/// This instance's name in leader election and Events: `--identity`, or `$HOSTNAME-<pid>`.
fn identity(args: &RunArgs) -> String {
    args.identity.clone().unwrap_or_else(|| {
        format!(
            "{}-{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "prapi-operator".into()),
            std::process::id()
        )
    })
}

/// What every reconcile shares.
async fn context(
    client: &Client,
    args: &RunArgs,
    identity: &str,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Context> {
    let settings = Settings {
        default_image: args.default_image.clone(),
        data_plane: args.data_plane.clone(),
        updater_autoscaler: args.updater_autoscaler,
        pod_monitor: args.pod_monitor,
        balance_factor: args.balance_factor,
        resync: Duration::from_secs(args.resync_seconds.max(1)),
        network_policy: args
            .network_policies
            .then(|| crate::plan::NetworkPolicyPlan {
                ingress_namespaces: args.ingress_namespaces.clone(),
            }),
    };
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some(identity.to_string()),
        },
    );
    let discovery = Discovery::new(
        client.clone(),
        std::time::Duration::from_secs(args.discovery_cache_seconds),
    );
    let steps = steps(client, &discovery, args).await?;
    Ok(Context::new(
        client.clone(),
        settings,
        recorder,
        metrics,
        steps,
        discovery,
    ))
}

/// Stands by until this instance leads, runs the controller while it does, then releases the
/// lease.
async fn run_as_leader(
    client: &Client,
    args: &RunArgs,
    identity: &str,
    ctx: Arc<Context>,
    metrics: &Metrics,
    readiness: &Readiness,
) -> anyhow::Result<Stop> {
    let lease_ns = args
        .lease_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| "default".into());
    let manager = LeaseManagerBuilder::new(client.clone(), &args.lease_name)
        .with_namespace(&lease_ns)
        .with_identity(identity)
        .with_duration(args.lease_duration_seconds.max(2))
        .with_grace(
            args.lease_grace_seconds
                .min(args.lease_duration_seconds.saturating_sub(1)),
        )
        .build()
        .await
        .context("setting up leader election")?;
    let (mut leading, lease_task) = manager.watch().await;
    readiness.set(true);
    info!(%identity, lease = %format!("{lease_ns}/{}", args.lease_name), "waiting for leadership");
    let signal = shutdown_signal();
    tokio::pin!(signal);
    let stop = loop {
        if *leading.borrow_and_update() {
            break None;
        }
        tokio::select! {
            changed = leading.changed() => {
                if changed.is_err() {
                    bail!("leader election stopped unexpectedly");
                }
            }
            _ = &mut signal => break Some(Stop::Signal),
        }
    };
    let stop = match stop {
        Some(s) => s,
        None => {
            info!(%identity, "became the leader");
            metrics.leader.set(1);
            let stop = lead(client.clone(), args, ctx, &mut leading, signal).await;
            metrics.leader.set(0);
            stop
        }
    };
    // Closing the channel makes the lease task release the lease, so a standby takes over at
    // once instead of waiting for it to expire.
    drop(leading);
    match tokio::time::timeout(Duration::from_secs(5), lease_task).await {
        Ok(Ok(Ok(_))) => info!("lease released"),
        Ok(Ok(Err(e))) => warn!(error = %e, "releasing the lease"),
        Ok(Err(e)) => warn!(error = %e, "lease task failed"),
        Err(_) => warn!("releasing the lease timed out"),
    }
    Ok(stop)
}

/// Runs the controller without leader election until a signal arrives.
async fn run_alone(
    client: &Client,
    args: &RunArgs,
    ctx: Arc<Context>,
    metrics: &Metrics,
    readiness: &Readiness,
) -> Stop {
    readiness.set(true);
    metrics.leader.set(1);
    let (tx, rx) = oneshot::channel();
    let signal = tokio::spawn(async move {
        shutdown_signal().await;
        let _ = tx.send(());
    });
    run_controller(client.clone(), args, ctx, rx).await;
    signal.abort();
    Stop::Signal
}

/// Runs the controller while leading; returns when leadership is lost or a signal arrives.
async fn lead(
    client: Client,
    args: &RunArgs,
    ctx: Arc<Context>,
    leading: &mut watch::Receiver<bool>,
    signal: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> Stop {
    let (tx, rx) = oneshot::channel();
    let controller = run_controller(client, args, ctx, rx);
    tokio::pin!(controller);
    let why = tokio::select! {
        _ = &mut controller => return Stop::Signal,
        _ = signal => Stop::Signal,
        _ = async {
            loop {
                if leading.changed().await.is_err() || !*leading.borrow() {
                    break;
                }
            }
        } => Stop::LostLeadership,
    };
    if why == Stop::LostLeadership {
        warn!("lost leadership; stopping the controller");
    }
    let _ = tx.send(());
    controller.await;
    why
}
