//! The routing step (I/O around the pure [`crate::render::routing`]): reads the namespace's
//! groups, their Deployments and the live route objects; computes the routing; applies the
//! route objects that changed (server-side apply, one field manager), deletes the ones no longer
//! wanted; reads them back for the status.
//!
//! Route objects are shared by the groups of a country, so any group's reconcile may write them;
//! a per-namespace lock keeps this process's reconciles from interleaving their read-compute-write.

use crate::cli::BackendTrafficPolicyChoice;
use crate::crd::MarketGroup;
use crate::discovery::Discovery;
use crate::plan::{Component, GroupPlan};
use crate::render::meta::{ANNOTATION_APPLIED_HASH, FIELD_MANAGER, stable_hash};
use crate::render::routing::{
    self, ComponentCapacity, GroupRouting, Live, Provider, ReportedShare, RouteOptions,
    RoutingPlan, ServiceRef, readback, shift::Floors,
};
use crate::render::workloads::HTTP_PORT;
use crate::status::{self, STORE_READY, WORKLOADS_READY};
use crate::validate;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use thiserror::Error;
use tracing::info;

/// Selector of the route objects the operator writes.
pub const ROUTES_SELECTOR: &str =
    "app.kubernetes.io/managed-by=prapi-operator,app.kubernetes.io/component=routing";

/// A failure of the routing step.
#[derive(Debug, Error)]
pub enum RoutesError {
    /// A Kubernetes call failed.
    #[error("{what}: {source}")]
    Kube {
        /// What was being done.
        what: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// A route could not be rendered.
    #[error(transparent)]
    Render(#[from] routing::RouteError),
}

impl RoutesError {
    /// CamelCase reason.
    pub fn reason(&self) -> &'static str {
        match self {
            RoutesError::Kube { .. } => "RouteApplyFailed",
            RoutesError::Render(_) => "RouteInvalid",
        }
    }
}

fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> RoutesError {
    let what = what.into();
    move |source| RoutesError::Kube { what, source }
}

/// What the reconciling group knows about itself better than its stored status.
#[derive(Clone, Debug, Default)]
pub struct Fresh {
    /// The group's name.
    pub name: String,
    /// Its readiness as just observed (None: use the stored status).
    pub ready: Option<bool>,
    /// Its bootstrapped countries as just decided (None: use the stored status).
    pub open: Option<Vec<String>>,
    /// Whether it is being deleted.
    pub deleting: bool,
}

/// The routing result for one group.
#[derive(Clone, Debug, Default)]
pub struct GroupRoutes {
    /// Shares as read back.
    pub shares: Vec<ReportedShare>,
    /// Whether the group still carries traffic anywhere (for draining).
    pub carries_traffic: bool,
    /// Whether this sync wrote or deleted a route object (the ingress has yet to load it).
    pub changed: bool,
}

/// The routing step.
pub struct RoutesStep {
    client: Client,
    discovery: Discovery,
    provider: Provider,
    options: RouteOptions,
    backend_traffic_policy: BackendTrafficPolicyChoice,
    default_image: String,
    store_managed: bool,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl RoutesStep {
    /// A step writing `provider` routes.
    pub fn new(
        client: Client,
        discovery: Discovery,
        provider: Provider,
        options: RouteOptions,
        backend_traffic_policy: BackendTrafficPolicyChoice,
        default_image: String,
        store_managed: bool,
    ) -> Self {
        Self {
            client,
            discovery,
            provider,
            options,
            backend_traffic_policy,
            default_image,
            store_managed,
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// The provider.
    pub fn provider(&self) -> Provider {
        self.provider
    }

    fn resource(&self) -> Option<ApiResource> {
        let (g, v, k, plural) = match self.provider {
            Provider::GatewayApi => ("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes"),
            Provider::Skipper => ("zalando.org", "v1", "RouteGroup", "routegroups"),
            Provider::None => return None,
        };
        Some(ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(g, v, k),
            plural,
        ))
    }

    fn lock(&self, ns: &str) -> Arc<tokio::sync::Mutex<()>> {
        match self.locks.lock() {
            Ok(mut m) => m.entry(ns.to_string()).or_default().clone(),
            Err(_) => Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// The groups of `ns` as routing sees them.
    async fn groups(&self, ns: &str, fresh: &Fresh) -> Result<Vec<GroupRouting>, RoutesError> {
        let groups: Api<MarketGroup> = Api::namespaced(self.client.clone(), ns);
        let list = groups
            .list(&ListParams::default())
            .await
            .map_err(kube_err(format!("listing MarketGroups in {ns}")))?;
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
        let deps = deployments
            .list(&ListParams::default().labels("app.kubernetes.io/managed-by=prapi-operator"))
            .await
            .map_err(kube_err(format!("listing Deployments in {ns}")))?;
        let available: BTreeMap<String, i32> = deps
            .items
            .iter()
            .map(|d| {
                (
                    d.name_any(),
                    d.status
                        .as_ref()
                        .and_then(|s| s.available_replicas)
                        .unwrap_or(0),
                )
            })
            .collect();
        let mut out = Vec::new();
        for mg in &list.items {
            let Ok(plan) = validate::plan(mg, &self.default_image, ns) else {
                continue;
            };
            let plan = plan.with_default_balance_factor(self.options.balance_factor);
            let stored_ready = status::is_true(mg.status.as_ref(), WORKLOADS_READY)
                && (!self.store_managed || status::is_true(mg.status.as_ref(), STORE_READY));
            let is_fresh = mg.name_any() == fresh.name;
            let ready = match (is_fresh, fresh.ready) {
                (true, Some(r)) => r,
                _ => stored_ready,
            };
            let open = match (is_fresh, &fresh.open) {
                (true, Some(o)) => o.clone(),
                _ => crate::gate::open_countries(mg.status.as_ref(), &plan.countries),
            };
            let deleting = mg.metadata.deletion_timestamp.is_some() || (is_fresh && fresh.deleting);
            let mut routing = group_routing(&plan, mg.uid(), ready, deleting, &available);
            routing.suspended = mg.spec.suspend;
            routing.bootstrapping = plan
                .countries
                .iter()
                .filter(|c| !open.contains(c))
                .cloned()
                .collect();
            out.push(routing);
        }
        Ok(out)
    }

    async fn live_objects(&self, ns: &str) -> Result<Vec<Value>, RoutesError> {
        let Some(ar) = self.resource() else {
            return Ok(Vec::new());
        };
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &ar);
        let list = api
            .list(&ListParams::default().labels(ROUTES_SELECTOR))
            .await
            .map_err(kube_err(format!("listing {} in {ns}", ar.plural)))?;
        list.items
            .into_iter()
            .map(|o| {
                serde_json::to_value(o).map_err(|e| {
                    RoutesError::Render(routing::RouteError::TooLarge {
                        country: String::new(),
                        what: format!("undecodable route object: {e}"),
                    })
                })
            })
            .collect()
    }

    /// The routing plan of `ns` as things stand (no writes): used for the HPA floors.
    pub async fn plan(&self, ns: &str, fresh: &Fresh) -> Result<RoutingPlan, RoutesError> {
        if self.provider == Provider::None {
            return Ok(RoutingPlan::default());
        }
        let groups = self.groups(ns, fresh).await?;
        let live = readback::live(
            self.provider,
            &self.live_objects(ns).await?,
            self.options.gateway.as_ref(),
        );
        Ok(routing::plan(&groups, &live.applied))
    }

    /// The floors `group` needs now.
    pub async fn floors(&self, ns: &str, fresh: &Fresh) -> Result<Option<Floors>, RoutesError> {
        Ok(self.plan(ns, fresh).await?.floors.get(&fresh.name).copied())
    }

    /// Computes and applies the routes of `ns`; returns what `fresh.name` reports.
    pub async fn sync(&self, ns: &str, fresh: &Fresh) -> Result<GroupRoutes, RoutesError> {
        let Some(ar) = self.resource() else {
            return Ok(GroupRoutes::default());
        };
        let lock = self.lock(ns);
        let _guard = lock.lock().await;
        let groups = self.groups(ns, fresh).await?;
        let objects = self.live_objects(ns).await?;
        let live = readback::live(self.provider, &objects, self.options.gateway.as_ref());
        let plan = routing::plan(&groups, &live.applied);
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &ar);
        let live_hash = applied_hashes(&objects);
        let mut changed = false;
        for route in &plan.routes {
            let Some(mut obj) = routing::render_route(self.provider, ns, route, &self.options)?
            else {
                continue;
            };
            let name = route.object_name();
            if !apply_changed(&api, &ar, ns, &name, &mut obj, &live_hash).await? {
                continue;
            }
            changed = true;
            let pools: Vec<String> = route
                .pools
                .iter()
                .map(|p| {
                    let backends: Vec<String> = p
                        .backends
                        .iter()
                        .map(|b| format!("{}={}", b.group, b.weight))
                        .collect();
                    format!(
                        "{}[{}]",
                        p.segment.as_deref().unwrap_or("*"),
                        backends.join(",")
                    )
                })
                .collect();
            info!(
                route = %format!("{ns}/{name}"),
                kind = %ar.kind,
                weights = %pools.join(" "),
                floors = ?plan.floors,
                "applied route"
            );
            tracing::debug!(
                route = %format!("{ns}/{name}"),
                groups = ?groups
                    .iter()
                    .map(|g| (&g.name, g.weight, &g.country_weights, g.ready, g.products, g.batch))
                    .collect::<Vec<_>>(),
                "inputs of the applied route"
            );
        }
        for country in &plan.remove {
            let name = routing::route_name(country);
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {
                    changed = true;
                    info!(route = %format!("{ns}/{name}"), "deleted route");
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(kube_err(format!("deleting {ns}/{name}"))(e)),
            }
        }
        // Read back what the cluster holds now.
        let after = self.live_objects(ns).await?;
        if self.provider == Provider::GatewayApi {
            self.sync_backend_traffic_policies(ns, &plan, &after)
                .await?;
        }
        let live: Live = readback::live(self.provider, &after, self.options.gateway.as_ref());
        let carries_traffic = live
            .applied
            .values()
            .flat_map(|pools| pools.values())
            .any(|pool| pool.get(&fresh.name).is_some_and(|w| *w > 0));
        Ok(GroupRoutes {
            shares: routing::report(&fresh.name, &plan, &live),
            carries_traffic,
            changed,
        })
    }
}

impl RoutesStep {
    /// Envoy Gateway's BackendTrafficPolicy of each HTTPRoute (`--backend-traffic-policy`):
    /// applied with the routes of `plan`, deleted once its route is gone (`routes` are the route
    /// objects the cluster holds now, those of suspended groups' countries included), all deleted
    /// when turned off.
    async fn sync_backend_traffic_policies(
        &self,
        ns: &str,
        plan: &RoutingPlan,
        routes: &[Value],
    ) -> Result<(), RoutesError> {
        let ar = backend_traffic_policies();
        let served = match self.backend_traffic_policy {
            BackendTrafficPolicyChoice::On => true,
            _ => self.discovery.served(&ar).await.map_err(kube_err(
                "discovering gateway.envoyproxy.io/v1alpha1 BackendTrafficPolicy",
            ))?,
        };
        let (render, prune) = policy_mode(self.backend_traffic_policy, served);
        if !prune {
            return Ok(());
        }
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &ar);
        let live = api
            .list(&ListParams::default().labels(ROUTES_SELECTOR))
            .await
            .map_err(kube_err(format!("listing {} in {ns}", ar.plural)))?;
        let live: Vec<Value> = live
            .items
            .into_iter()
            .filter_map(|o| serde_json::to_value(o).ok())
            .collect();
        let live_hash = applied_hashes(&live);
        let mut wanted: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        if render {
            wanted.extend(applied_hashes(routes).into_keys());
            for route in &plan.routes {
                let name = route.object_name();
                wanted.insert(name.clone());
                let mut obj = routing::gateway::backend_traffic_policy(ns, route);
                if apply_changed(&api, &ar, ns, &name, &mut obj, &live_hash).await? {
                    info!(policy = %format!("{ns}/{name}"), kind = %ar.kind, "applied route policy");
                }
            }
        }
        for name in live_hash.keys().filter(|n| !wanted.contains(*n)) {
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => {
                    info!(policy = %format!("{ns}/{name}"), kind = %ar.kind, "deleted route policy")
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(kube_err(format!("deleting {} {ns}/{name}", ar.kind))(e)),
            }
        }
        Ok(())
    }
}

/// Envoy Gateway's BackendTrafficPolicy resource.
pub fn backend_traffic_policies() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.envoyproxy.io", "v1alpha1", "BackendTrafficPolicy"),
        "backendtrafficpolicies",
    )
}

/// Whether to render the BackendTrafficPolicies, and whether to list (and prune) them at all: a
/// forced `off` where the API is served still removes the ones made before; `on` where it is not
/// served fails at the apply (the step's error says so).
pub fn policy_mode(choice: BackendTrafficPolicyChoice, served: bool) -> (bool, bool) {
    match choice {
        BackendTrafficPolicyChoice::On => (true, true),
        BackendTrafficPolicyChoice::Auto => (served, served),
        BackendTrafficPolicyChoice::Off => (false, served),
    }
}

/// Applies `obj` (server-side, the operator's field manager) with the hash of what was rendered
/// in its applied-hash annotation, unless `live_hash` says the live object already has that hash;
/// returns whether it applied.
async fn apply_changed(
    api: &Api<DynamicObject>,
    ar: &ApiResource,
    ns: &str,
    name: &str,
    obj: &mut Value,
    live_hash: &BTreeMap<String, String>,
) -> Result<bool, RoutesError> {
    let hash = stable_hash(&serde_json::to_vec(&*obj).unwrap_or_default());
    if live_hash.get(name) == Some(&hash) {
        return Ok(false);
    }
    obj["metadata"]["annotations"] = serde_json::json!({ ANNOTATION_APPLIED_HASH: hash });
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&*obj),
    )
    .await
    .map_err(kube_err(format!("applying {} {ns}/{name}", ar.kind)))?;
    Ok(true)
}

/// The applied-hash annotation of each operator-written object, by name (objects without one are
/// left out; every object the operator writes has one).
fn applied_hashes(objects: &[Value]) -> BTreeMap<String, String> {
    let pointer = format!(
        "/metadata/annotations/{}",
        ANNOTATION_APPLIED_HASH.replace('/', "~1")
    );
    objects
        .iter()
        .filter_map(|o| {
            Some((
                o.pointer("/metadata/name")?.as_str()?.to_string(),
                o.pointer(&pointer)?.as_str()?.to_string(),
            ))
        })
        .collect()
}

/// A group's routing view from its plan.
pub fn group_routing(
    plan: &GroupPlan,
    uid: Option<String>,
    ready: bool,
    deleting: bool,
    available: &BTreeMap<String, i32>,
) -> GroupRouting {
    let avail = |c: Component| available.get(&plan.component_name(c)).copied().unwrap_or(0);
    GroupRouting {
        namespace: plan.owner.namespace.clone(),
        name: plan.owner.name.clone(),
        uid,
        countries: plan.countries.clone(),
        weight: plan.weight,
        segment: plan.segment.clone(),
        balance_factor: plan.balance_factor(),
        hosts: plan.hosts.clone(),
        country_weights: plan.country_weights.clone(),
        ready,
        bootstrapping: Vec::new(),
        deleting,
        suspended: false,
        products_service: ServiceRef {
            name: plan.component_name(Component::Products),
            port: HTTP_PORT,
        },
        batch_service: ServiceRef {
            name: plan.component_name(Component::Batch),
            port: HTTP_PORT,
        },
        products: ComponentCapacity {
            available: avail(Component::Products),
            min: plan.products.replicas.min,
            max: plan.products.replicas.max,
        },
        batch: ComponentCapacity {
            available: avail(Component::Batch),
            min: plan.batch.replicas.min,
            max: plan.batch.replicas.max,
        },
    }
}

/// The plan with its HPA floors raised to `floors` (within the spec's range).
pub fn with_floors(plan: &GroupPlan, floors: Option<Floors>) -> GroupPlan {
    let mut p = plan.clone();
    if let Some(f) = floors {
        p.products.replicas.min = f
            .products
            .clamp(p.products.replicas.min, p.products.replicas.max);
        p.batch.replicas.min = f.batch.clamp(p.batch.replicas.min, p.batch.replicas.max);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{BatchPlan, Owner, ProductsPlan, ReplicaRange, UpdaterPlan};

    fn plan() -> GroupPlan {
        GroupPlan {
            owner: Owner {
                namespace: "shop".into(),
                name: "eu".into(),
                uid: Some("u".into()),
            },
            countries: vec!["de".into(), "at".into()],
            image: "prapi:test".into(),
            weight: 40,
            segment: "canary".into(),
            hosts: Vec::new(),
            country_weights: Default::default(),
            products: ProductsPlan {
                replicas: ReplicaRange { min: 2, max: 20 },
                target_cpu_utilization: 70,
                cache_ttl_seconds: 60,
                cache_stale_seconds: 15,
                cache_max_bytes: 1,
                balance_factor: None,
                resources: Default::default(),
                pod: Default::default(),
            },
            batch: BatchPlan {
                replicas: ReplicaRange { min: 2, max: 10 },
                target_cpu_utilization: 70,
                max_items: 100,
                hedging: Default::default(),
                resources: Default::default(),
                pod: Default::default(),
            },
            updater: UpdaterPlan {
                bootstrap_servers: "k:9092".into(),
                products_topic: "p".into(),
                offers_topic: "o".into(),
                dead_letter_topic: String::new(),
                consumer_group: "g".into(),
                partitions: 12,
                lag_threshold: 5000,
                scale_down_stabilization_seconds: 300,
                max_replicas: 12,
                resources: Default::default(),
                pod: Default::default(),
                client_secret_name: String::new(),
                kafka_client: None,
            },
            table: "t".into(),
            dynamodb: Default::default(),
            env: Vec::new(),
            default_balance_factor: 1.25,
            log_format: Default::default(),
            log_filter: "info".into(),
            network_policy: None,
            served_by_header: false,
            store_timeouts: Default::default(),
        }
    }

    #[test]
    fn a_plan_maps_to_its_routing_view() {
        let available =
            BTreeMap::from([("eu-products".to_string(), 7), ("eu-batch".to_string(), 3)]);
        let g = group_routing(&plan(), Some("u".into()), true, false, &available);
        assert_eq!(g.countries, ["de", "at"]);
        assert_eq!((g.weight, g.segment.as_str()), (40, "canary"));
        assert_eq!(
            g.products_service,
            ServiceRef {
                name: "eu-products".into(),
                port: HTTP_PORT
            }
        );
        assert_eq!(g.batch_service.name, "eu-batch");
        assert_eq!(
            g.products,
            ComponentCapacity {
                available: 7,
                min: 2,
                max: 20
            }
        );
        assert_eq!(
            g.batch,
            ComponentCapacity {
                available: 3,
                min: 2,
                max: 10
            }
        );
    }

    #[test]
    fn floors_raise_the_hpa_minimum_within_the_range() {
        let p = plan();
        assert_eq!(with_floors(&p, None), p);
        let raised = with_floors(
            &p,
            Some(Floors {
                products: 5,
                batch: 40,
            }),
        );
        assert_eq!(raised.products.replicas, ReplicaRange { min: 5, max: 20 });
        assert_eq!(raised.batch.replicas, ReplicaRange { min: 10, max: 10 });
        let lower = with_floors(
            &p,
            Some(Floors {
                products: 1,
                batch: 1,
            }),
        );
        assert_eq!(lower.products.replicas.min, 2, "never below the spec");
    }

    #[test]
    fn backend_traffic_policies_follow_the_choice_and_the_api() {
        use BackendTrafficPolicyChoice::*;
        // (render, prune) for each choice, with the API served and not.
        assert_eq!(policy_mode(Auto, true), (true, true));
        assert_eq!(policy_mode(Auto, false), (false, false));
        assert_eq!(policy_mode(On, true), (true, true));
        assert_eq!(
            policy_mode(On, false),
            (true, true),
            "on: the apply says what is missing"
        );
        assert_eq!(
            policy_mode(Off, true),
            (false, true),
            "off: made before, deleted now"
        );
        assert_eq!(policy_mode(Off, false), (false, false));
    }

    #[test]
    fn applied_hashes_by_name_skip_objects_without_one() {
        let objects = [
            serde_json::json!({"metadata": {"name": "prapi-de", "annotations": {ANNOTATION_APPLIED_HASH: "h1"}}}),
            serde_json::json!({"metadata": {"name": "prapi-at"}}),
            serde_json::json!({"metadata": {"annotations": {ANNOTATION_APPLIED_HASH: "h2"}}}),
        ];
        assert_eq!(
            applied_hashes(&objects),
            BTreeMap::from([("prapi-de".to_string(), "h1".to_string())])
        );
    }
}
