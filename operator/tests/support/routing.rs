//! Route objects and the traffic a group reports, for the cluster tests of routing.

use super::wait_established;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use prapi_operator::crd::MarketGroup;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Skipper's RouteGroup resource.
pub fn route_groups() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("zalando.org", "v1", "RouteGroup"),
        "routegroups",
    )
}

/// Installs Skipper's RouteGroup CRD (tests/fixtures/routing/routegroup-crd.yaml) and waits until
/// it is established.
pub async fn install_routegroup_crd(client: &kube::Client) {
    let text = include_str!("../fixtures/routing/routegroup-crd.yaml");
    let crd: CustomResourceDefinition = serde_norway::from_str(text).expect("fixture parses");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "routegroups.zalando.org",
        &PatchParams::apply("prapi-operator-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("install the RouteGroup CRD fixture");
    wait_established(&crds, "routegroups.zalando.org").await;
}

/// The route object `name` of kind `ar` as JSON, if it exists.
pub async fn route(client: &kube::Client, ns: &str, ar: &ApiResource, name: &str) -> Option<Value> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, ar);
    api.get_opt(name)
        .await
        .expect("get route")
        .map(|o| serde_json::to_value(o).expect("route json"))
}

/// A weight map from pairs.
pub fn weights(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// The group's `(desired, actual, reason)` traffic for `country`.
pub fn traffic(mg: &MarketGroup, country: &str) -> Option<(i32, Option<i32>, Option<String>)> {
    mg.status
        .as_ref()?
        .traffic
        .iter()
        .find(|t| t.country == country)
        .map(|t| (t.desired, t.actual, t.reason.clone()))
}

/// The group as stored now.
pub async fn get(client: &kube::Client, ns: &str, name: &str) -> MarketGroup {
    Api::<MarketGroup>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .expect("get group")
}

/// RouteGroup routes of the first pool whose predicates mention `segment` (or none).
pub fn rg_weights(obj: &Value, segment: Option<&str>, path: &str) -> BTreeMap<String, i64> {
    obj["spec"]["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .find(|r| {
            r["path"] == path
                && r["predicates"]
                    .as_array()
                    .expect("predicates")
                    .iter()
                    .any(|p| {
                        p.as_str()
                            .is_some_and(|p| p.starts_with("Header(\"X-Traffic-Segment\""))
                    })
                    == segment.is_some()
        })
        .map(|r| {
            r["backends"]
                .as_array()
                .expect("backends")
                .iter()
                .map(|b| {
                    (
                        b["backendName"].as_str().expect("name").to_string(),
                        b["weight"].as_i64().expect("weight"),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A group spec of small pods: `countries` at `weight`, at least `products_min` products pods.
pub fn small(countries: &[&str], weight: i32, products_min: i32) -> Value {
    json!({
        "countries": countries,
        "traffic": {"weight": weight},
        "products": {"replicas": {"min": products_min, "max": 20},
                     "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "1Gi"}}},
        "batch": {"replicas": {"min": 1, "max": 10},
                  "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}}},
        "updater": {"resources": {"requests": {"cpu": "10m", "memory": "32Mi"}}},
    })
}
