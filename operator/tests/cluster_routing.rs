//! Routing across groups on the test environment's cluster (real kube-apiserver with the Gateway
//! API CRDs, controller-manager with the HPA and Deployment controllers, kwok nodes), with the real
//! `prapi-operator run --routing ...`: route objects verified field by field for both providers
//! (Skipper's RouteGroup CRD from tests/fixtures/routing/routegroup-crd.yaml).

mod support;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{Api, DeleteParams, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use prapi_operator::crd::MarketGroup;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use support::routing::*;
use support::*;

/// The operator's flags for Gateway API routes on the test environment's Gateway.
const GATEWAY_API: [&str; 6] = [
    "--updater-autoscaler",
    "hpa",
    "--routing",
    "gateway-api",
    "--gateway",
    "infra/public",
];

fn http_routes() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
        "httproutes",
    )
}

/// Weights of the HTTPRoute's rules, by service name, per rule.
fn http_weights(obj: &Value) -> Vec<BTreeMap<String, i64>> {
    obj["spec"]["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| {
            r["backendRefs"]
                .as_array()
                .expect("backendRefs")
                .iter()
                .map(|b| {
                    (
                        b["name"].as_str().expect("name").to_string(),
                        b["weight"].as_i64().expect("weight"),
                    )
                })
                .collect()
        })
        .collect()
}

async fn hpa_min(client: &kube::Client, ns: &str, name: &str) -> Option<i32> {
    Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|h| h.spec.and_then(|s| s.min_replicas))
}

#[tokio::test]
async fn gateway_api_weights_90_10_then_50_50_then_0_100_with_the_growing_side_first() {
    let Some(c) = cluster().await else {
        return;
    };
    let ns = c.namespace("rt-gw").await;
    let op = Operator::start(&c.env, &ns, "op", &GATEWAY_API);
    // a runs 9 products pods for its 90%: one per 10%.
    create_group(&c.client, &ns, &group(&ns, "a", small(&["de"], 90, 9))).await;
    create_group(&c.client, &ns, &group(&ns, "b", small(&["de"], 10, 1))).await;
    wait_ready(&c.client, &ns, "a").await;
    wait_ready(&c.client, &ns, "b").await;

    let ar = http_routes();
    let r = eventually("HTTPRoute 90/10", || async {
        let r = route(&c.client, &ns, &ar, "prapi-de").await?;
        (http_weights(&r)[1] == weights(&[("a-products", 90), ("b-products", 10)])).then_some(r)
    })
    .await;
    assert_eq!(
        r["spec"]["parentRefs"],
        json!([{"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "infra", "name": "public"}])
    );
    assert_eq!(
        http_weights(&r),
        vec![
            weights(&[("a-batch", 90), ("b-batch", 10)]),
            weights(&[("a-products", 90), ("b-products", 10)])
        ]
    );
    let rules = r["spec"]["rules"].as_array().expect("rules");
    assert_eq!(
        rules[0]["matches"][0],
        json!({"path": {"type": "Exact", "value": "/products"}, "method": "GET",
               "headers": [{"type": "Exact", "name": "X-Country", "value": "de"}]})
    );
    // X-Country in every spelling: `DE` routes like `de`.
    assert_eq!(
        rules[0]["matches"][3]["headers"],
        json!([{"type": "Exact", "name": "X-Country", "value": "DE"}])
    );
    assert_eq!(
        rules[1]["matches"][4]["path"],
        json!({"type": "PathPrefix", "value": "/product-offers"})
    );
    assert_eq!(r["metadata"]["labels"]["prapi.dev/country"], "de");
    let owners: Vec<&str> = r["metadata"]["ownerReferences"]
        .as_array()
        .expect("owners")
        .iter()
        .map(|o| o["name"].as_str().expect("name"))
        .collect();
    assert_eq!(owners, ["a", "b"]);
    eventually("b reports 10/10", || async {
        (traffic(&get(&c.client, &ns, "b").await, "de") == Some((10, Some(10), None))).then_some(())
    })
    .await;

    // The donor estimate reads a's available replicas: let all 9 come up first.
    eventually("a runs 9 products pods", || async {
        let d = Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(c.client.clone(), &ns)
            .get("a-products")
            .await
            .ok()?;
        (d.status?.available_replicas? == 9).then_some(())
    })
    .await;

    // b's first floor is recorded before the shift: a group's first floor is its spec's, not a
    // change, so the Event below needs the 1 in b's status before the 5.
    eventually("b's status records its products floor of 1", || async {
        let b = get(&c.client, &ns, "b").await;
        (b.status?.components?.products.hpa_floor == Some(1)).then_some(())
    })
    .await;
    // 50/50: b's products floor rises to 50% x 9/90 = 5 first; the split moves once b has them.
    patch_group(
        &c.client,
        &ns,
        "a",
        json!({"spec": {"traffic": {"weight": 50}}}),
    )
    .await;
    patch_group(
        &c.client,
        &ns,
        "b",
        json!({"spec": {"traffic": {"weight": 50}}}),
    )
    .await;
    let r = eventually("HTTPRoute 50/50", || async {
        let r = route(&c.client, &ns, &ar, "prapi-de").await?;
        (http_weights(&r)[1] == weights(&[("a-products", 50), ("b-products", 50)])).then_some(r)
    })
    .await;
    assert_eq!(
        http_weights(&r)[0],
        weights(&[("a-batch", 50), ("b-batch", 50)])
    );
    // b's spec floor is 1 and the HPA has no CPU metrics here: b runs 5 products pods only
    // because its floor was raised to 5 before the split moved (the gate itself is unit-tested).
    let b_avail = Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(c.client.clone(), &ns)
        .get("b-products")
        .await
        .expect("b-products")
        .status
        .and_then(|s| s.available_replicas)
        .unwrap_or(0);
    assert!(b_avail >= 5, "b has {b_avail} products replicas");
    eventually(
        "both report 50/50 and b's floor returns to its spec",
        || async {
            let a = traffic(&get(&c.client, &ns, "a").await, "de");
            let b = traffic(&get(&c.client, &ns, "b").await, "de");
            (a == Some((50, Some(50), None))
                && b == Some((50, Some(50), None))
                && hpa_min(&c.client, &ns, "b-products").await == Some(1))
            .then_some(())
        },
    )
    .await;
    // b's floor went up ahead of the step and back after it, each change an Event (published
    // by the reconcile that lowered the HPA's minimum, right after it).
    eventually("b's HPA floor Events, up and down", || async {
        let floors = event_notes(&c.client, &ns, "b", "HPAFloorChanged").await;
        let up = floors
            .iter()
            .any(|n| n.starts_with("products HPA minimum 1 → 5 replicas"));
        let down = floors
            .iter()
            .any(|n| n.starts_with("products HPA minimum 5 → 1 replicas"));
        (up && down).then_some(())
    })
    .await;
    // The step is on b as an Event (from → to) and in the operator's gauges.
    let notes = shift_notes(&c.client, &ns, "b").await;
    assert!(
        notes.iter().any(|n| n.starts_with("de: ")
            && n.ends_with("→ 50% of the country's traffic (desired 50%)")),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n.ends_with("→ 10% of the country's traffic (desired 10%)")),
        "{notes:?}"
    );
    let namespace: &str = &ns;
    let b_de = [("namespace", namespace), ("group", "b"), ("country", "de")];
    eventually("the gauges say 50/50 for b", || async {
        let desired = op
            .metric("prapi_operator_group_desired_traffic_weight", &b_de)
            .await?;
        let actual = op
            .metric("prapi_operator_group_actual_traffic_weight", &b_de)
            .await?;
        (desired == 50.0 && actual == 50.0).then_some(())
    })
    .await;
    assert_eq!(
        op.metric(
            "prapi_operator_group_ready",
            &[("namespace", namespace), ("group", "b")]
        )
        .await,
        Some(1.0)
    );

    // 0/100: a leaves the route entirely.
    patch_group(
        &c.client,
        &ns,
        "a",
        json!({"spec": {"traffic": {"weight": 0}}}),
    )
    .await;
    patch_group(
        &c.client,
        &ns,
        "b",
        json!({"spec": {"traffic": {"weight": 100}}}),
    )
    .await;
    let r = eventually("HTTPRoute 0/100", || async {
        let r = route(&c.client, &ns, &ar, "prapi-de").await?;
        (http_weights(&r)[1] == weights(&[("b-products", 100)])).then_some(r)
    })
    .await;
    assert_eq!(http_weights(&r)[0], weights(&[("b-batch", 100)]));
    eventually("a reports desired 0, actual 0", || async {
        (traffic(&get(&c.client, &ns, "a").await, "de") == Some((0, Some(0), None))).then_some(())
    })
    .await;
}

/// The notes of the operator's `reason` Events on `group`.
async fn event_notes(client: &kube::Client, ns: &str, group: &str, reason: &str) -> Vec<String> {
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    let list = events.list(&Default::default()).await.expect("list events");
    list.items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(group)
        })
        .filter_map(|e| e.note)
        .collect()
}

/// The notes of the operator's `TrafficShifted` Events on `group`.
async fn shift_notes(client: &kube::Client, ns: &str, group: &str) -> Vec<String> {
    event_notes(client, ns, group, "TrafficShifted").await
}

#[tokio::test]
async fn skipper_route_groups_segments_unready_groups_and_deletion() {
    let Some(c) = cluster().await else {
        return;
    };
    install_routegroup_crd(&c.client).await;
    let ns = c.namespace("rt-sk").await;
    let _op = Operator::start(
        &c.env,
        &ns,
        "op",
        &["--updater-autoscaler", "hpa", "--routing", "skipper"],
    );
    create_group(
        &c.client,
        &ns,
        &group(&ns, "a", small(&["de", "at"], 50, 1)),
    )
    .await;
    create_group(&c.client, &ns, &group(&ns, "b", small(&["de"], 25, 1))).await;
    create_group(&c.client, &ns, &group(&ns, "c", small(&["de"], 25, 1))).await;
    let mut canary = small(&["de"], 100, 1);
    canary["traffic"]["segment"] = json!("canary");
    create_group(&c.client, &ns, &group(&ns, "s", canary)).await;
    // A group that cannot become Ready: its products pods do not fit on any node.
    let mut stuck = small(&["at"], 50, 1);
    stuck["products"]["resources"] =
        json!({"requests": {"cpu": "500", "memory": "32Mi"}, "limits": {"memory": "1Gi"}});
    create_group(&c.client, &ns, &group(&ns, "stuck", stuck)).await;
    for g in ["a", "b", "c", "s"] {
        wait_ready(&c.client, &ns, g).await;
    }

    let ar = route_groups();
    let r = eventually("RouteGroup de 50/25/25 with the canary segment", || async {
        let r = route(&c.client, &ns, &ar, "prapi-de").await?;
        (rg_weights(&r, None, "/products/:id")
            == weights(&[("a-products", 50), ("b-products", 25), ("c-products", 25)])
            && !rg_weights(&r, Some("canary"), "/products/:id").is_empty())
        .then_some(r)
    })
    .await;
    let routes = r["spec"]["routes"].as_array().expect("routes");
    assert_eq!(routes.len(), 10, "5 canary routes, then 5 weighted ones");
    assert_eq!(
        routes[0],
        json!({
            "path": "/products/:id",
            "methods": ["GET", "HEAD"],
            "predicates": ["HeaderRegexp(\"X-Country\", \"(?i)^de$\")", "Header(\"X-Traffic-Segment\", \"canary\")"],
            "filters": [
                "lifo(1000, 1000, \"1s\")",
                "consistentHashKey(\"${id}\")",
                "consistentHashBalanceFactor(1.25)",
                "fadeIn(\"30s\", 2.5)"
            ],
            "backends": [{"backendName": "s-products", "weight": 100}],
        })
    );
    assert_eq!(
        routes[8]["backends"],
        json!([{"backendName": "a-batch", "weight": 50}, {"backendName": "b-batch", "weight": 25}, {"backendName": "c-batch", "weight": 25}])
    );
    assert_eq!(routes[8]["path"], "/products");
    let algorithms: BTreeMap<String, String> = r["spec"]["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| {
            (
                b["name"].as_str().expect("name").to_string(),
                b["algorithm"].as_str().expect("algorithm").to_string(),
            )
        })
        .collect();
    assert_eq!(algorithms["a-products"], "consistentHash");
    assert_eq!(algorithms["a-batch"], "powerOfRandomNChoices");
    assert_eq!(algorithms.len(), 8);

    // The stuck group is not Ready: Austria goes to a alone, stuck reports actual 0 with a reason
    // while its desired share stays.
    let r = eventually("RouteGroup at with a only", || async {
        let r = route(&c.client, &ns, &ar, "prapi-at").await?;
        (rg_weights(&r, None, "/products") == weights(&[("a-batch", 50)])).then_some(r)
    })
    .await;
    assert!(!r.to_string().contains("stuck-"), "{r}");
    eventually("stuck reports desired 50, actual 0, NotReady", || async {
        let mg = get(&c.client, &ns, "stuck").await;
        let routing = condition(&mg, "RoutingReady").map(|c| (c.status.clone(), c.reason.clone()));
        (traffic(&mg, "at") == Some((50, Some(0), Some("NotReady".into())))
            && routing == Some(("False".into(), "NotReady".into())))
        .then_some(())
    })
    .await;
    eventually("a reports 50 desired, 100 actual in at", || async {
        (traffic(&get(&c.client, &ns, "a").await, "at")
            == Some((50, Some(100), Some("PeerNotReady".into()))))
        .then_some(())
    })
    .await;

    // Deleting c drains it and re-normalizes a and b (67/33); the finalizer goes afterwards.
    Api::<MarketGroup>::namespaced(c.client.clone(), &ns)
        .delete("c", &DeleteParams::default())
        .await
        .expect("delete c");
    eventually("RouteGroup de without c", || async {
        let r = route(&c.client, &ns, &ar, "prapi-de").await?;
        (rg_weights(&r, None, "/products/:id")
            == weights(&[("a-products", 50), ("b-products", 25)])
            && !r.to_string().contains("c-products"))
        .then_some(())
    })
    .await;
    // Its pods outlive the route change by the ingress's reload time (ROUTE_PROPAGATION):
    // removing them at once would leave an ingress that has not reloaded yet sending requests
    // to a Service that is gone.
    assert!(
        Api::<MarketGroup>::namespaced(c.client.clone(), &ns)
            .get_opt("c")
            .await
            .expect("get c")
            .is_some(),
        "c was released as soon as the routes stopped naming it"
    );
    eventually("c is gone", || async {
        Api::<MarketGroup>::namespaced(c.client.clone(), &ns)
            .get_opt("c")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    eventually("a reports 67% of de (50 of 75)", || async {
        (traffic(&get(&c.client, &ns, "a").await, "de") == Some((67, Some(67), None))).then_some(())
    })
    .await;
    eventually("b reports 33% of de", || async {
        (traffic(&get(&c.client, &ns, "b").await, "de") == Some((33, Some(33), None))).then_some(())
    })
    .await;
}

fn condition_of(mg: &MarketGroup, type_: &str) -> Option<(String, String)> {
    mg.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

/// `spec.suspend` freezes a group: its spec edits reach none of its objects and the route of its
/// country keeps its weights, while its peer's reconciles go on; resumed, everything converges on
/// the edited spec; and a suspended group can still be deleted.
#[tokio::test]
async fn a_suspended_group_keeps_its_objects_and_routes_until_resumed() {
    let Some(c) = cluster().await else {
        return;
    };
    let ns = c.namespace("rt-suspend").await;
    let _op = Operator::start(&c.env, &ns, "op", &GATEWAY_API);
    create_group(&c.client, &ns, &group(&ns, "a", small(&["de"], 50, 1))).await;
    create_group(&c.client, &ns, &group(&ns, "b", small(&["de"], 50, 1))).await;
    wait_ready(&c.client, &ns, "a").await;
    wait_ready(&c.client, &ns, "b").await;
    let ar = http_routes();
    let fifty_fifty = weights(&[("a-products", 50), ("b-products", 50)]);
    eventually("HTTPRoute 50/50", || async {
        let r = route(&c.client, &ns, &ar, "prapi-de").await?;
        (http_weights(&r)[1] == fifty_fifty).then_some(())
    })
    .await;
    // Both report it: b's reconcile reads a's stored readiness, so until b reports 50/50 its
    // reconciles may still route de to b alone (a's status not written yet).
    eventually("a and b report 50/50", || async {
        let fifty = Some((50, Some(50), None));
        (traffic(&get(&c.client, &ns, "a").await, "de") == fifty
            && traffic(&get(&c.client, &ns, "b").await, "de") == fifty)
            .then_some(())
    })
    .await;

    // Suspend a.
    patch_group(&c.client, &ns, "a", json!({"spec": {"suspend": true}})).await;
    let mg = eventually("a reports Suspended", || async {
        let mg = get(&c.client, &ns, "a").await;
        (condition_of(&mg, "Suspended") == Some(("True".into(), "Suspended".into()))).then_some(mg)
    })
    .await;
    assert_eq!(
        condition_of(&mg, "Ready"),
        Some(("True".into(), "Suspended".into())),
        "Ready still says it serves; its reason says it is suspended"
    );
    assert_eq!(
        mg.status.as_ref().and_then(|s| s.actual_weight.as_deref()),
        Some("50")
    );
    let before = fingerprints(&c.client, &ns, "a").await;
    let route_before = route(&c.client, &ns, &ar, "prapi-de")
        .await
        .expect("prapi-de")["metadata"]["resourceVersion"]
        .clone();

    // Edit the suspended spec: weight, a country, the cache. Nothing of it may reach the cluster.
    patch_group(
        &c.client,
        &ns,
        "a",
        json!({"spec": {"traffic": {"weight": 20}, "countries": ["de", "at"],
                        "products": {"cache": {"ttlSeconds": 30}}}}),
    )
    .await;
    let generation = get(&c.client, &ns, "a").await.metadata.generation;
    eventually("a's status describes the edited generation", || async {
        let mg = get(&c.client, &ns, "a").await;
        (mg.status.as_ref()?.observed_generation == generation).then_some(())
    })
    .await;
    // b reconciles on: it sees the frozen route and says why its weight is not what the split
    // now asks (20/50 of de would give it 71%).
    poke(&c.client, &ns, "b", 1).await;
    eventually("b reports de frozen by the suspension", || async {
        let t = traffic(&get(&c.client, &ns, "b").await, "de")?;
        (t == (71, Some(50), Some("Suspended".into()))).then_some(())
    })
    .await;
    assert_eq!(
        fingerprints(&c.client, &ns, "a").await,
        before,
        "a's objects untouched"
    );
    let r = route(&c.client, &ns, &ar, "prapi-de")
        .await
        .expect("prapi-de");
    assert_eq!(
        r["metadata"]["resourceVersion"], route_before,
        "prapi-de untouched"
    );
    assert_eq!(http_weights(&r)[1], fifty_fifty);
    assert!(
        route(&c.client, &ns, &ar, "prapi-at").await.is_none(),
        "no route for at"
    );
    let notes = event_notes(&c.client, &ns, "a", "Suspended").await;
    assert!(
        notes.iter().any(|n| n.starts_with("spec.suspend is true")),
        "{notes:?}"
    );

    // Resume: the edited spec converges.
    patch_group(&c.client, &ns, "a", json!({"spec": {"suspend": false}})).await;
    eventually("a converges on 20 of 70 for de and takes at", || async {
        let mg = get(&c.client, &ns, "a").await;
        let de = traffic(&mg, "de")?;
        let at = traffic(&mg, "at")?;
        (de == (29, Some(29), None)
            && at == (100, Some(100), None)
            && condition_of(&mg, "Suspended") == Some(("False".into(), "Reconciling".into())))
        .then_some(())
    })
    .await;
    eventually("actual weight column says 29-100", || async {
        let mg = get(&c.client, &ns, "a").await;
        (mg.status?.actual_weight.as_deref() == Some("29-100")).then_some(())
    })
    .await;
    let r = route(&c.client, &ns, &ar, "prapi-de")
        .await
        .expect("prapi-de");
    // The route carries the weights (20 and 50), which are the 29/71 percents.
    assert_eq!(
        http_weights(&r)[1],
        weights(&[("a-products", 20), ("b-products", 50)])
    );
    assert!(route(&c.client, &ns, &ar, "prapi-at").await.is_some());
    let cm: Api<DynamicObject> = Api::namespaced_with(
        c.client.clone(),
        &ns,
        &prapi_operator::render::ChildKind::ConfigMap.api_resource(),
    );
    let data = cm.get("a-config").await.expect("configmap").data["data"].clone();
    assert_eq!(data["products.PRAPI_CACHE_TTL_SECONDS"], json!("30"));
    assert!(
        !event_notes(&c.client, &ns, "a", "Resumed").await.is_empty(),
        "a Resumed Event"
    );

    // Suspended again, then deleted: the finalizer's cleanup drains it and lets it go.
    patch_group(&c.client, &ns, "a", json!({"spec": {"suspend": true}})).await;
    eventually("a suspended again", || async {
        let mg = get(&c.client, &ns, "a").await;
        (condition_of(&mg, "Suspended")?.0 == "True").then_some(())
    })
    .await;
    Api::<MarketGroup>::namespaced(c.client.clone(), &ns)
        .delete("a", &DeleteParams::default())
        .await
        .expect("delete a");
    eventually("a deleted", || async {
        Api::<MarketGroup>::namespaced(c.client.clone(), &ns)
            .get_opt("a")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    // b alone in de's route (with its own weight, 50: all of the country).
    eventually("b takes all of de", || async {
        let r = route(&c.client, &ns, &ar, "prapi-de").await?;
        (http_weights(&r)[1] == weights(&[("b-products", 50)])).then_some(())
    })
    .await;
}

/// Each Deployment of `groups` as `(generation, pod template)`, by name.
async fn deployments(
    client: &kube::Client,
    ns: &str,
    groups: &[&str],
) -> BTreeMap<String, (Option<i64>, Value)> {
    let api = Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), ns);
    let mut out = BTreeMap::new();
    for g in groups {
        for component in ["updater", "products", "batch"] {
            let name = format!("{g}-{component}");
            let d = api.get(&name).await.expect("deployment");
            let template = serde_json::to_value(d.spec.map(|s| s.template)).expect("template json");
            out.insert(name, (d.metadata.generation, template));
        }
    }
    out
}

/// The `TrafficShifted` Events for `at` on a and on b.
async fn at_notes(client: &kube::Client, ns: &str) -> [Vec<String>; 2] {
    let mut out: [Vec<String>; 2] = Default::default();
    for (i, g) in ["a", "b"].into_iter().enumerate() {
        out[i] = shift_notes(client, ns, g)
            .await
            .into_iter()
            .filter(|n| n.starts_with("at: "))
            .collect();
        out[i].sort();
    }
    out
}

/// `spec.traffic.countryWeights` moves one country of two groups that both list it, without
/// touching `countries`: the route of `de` goes from a to b, `at` stays with a, both groups report
/// each country's own desired and actual weight, the move is a `TrafficShifted` Event per country
/// that moved, and no Deployment of either group is changed (same generation, same pod template:
/// no restart).
#[tokio::test]
async fn country_weights_move_one_country_without_restarting_either_group() {
    let Some(c) = cluster().await else {
        return;
    };
    install_routegroup_crd(&c.client).await;
    let ns = c.namespace("rt-cw").await;
    let _op = Operator::start(
        &c.env,
        &ns,
        "op",
        &["--updater-autoscaler", "hpa", "--routing", "skipper"],
    );
    // Both list both countries; b takes no traffic yet (weight 0).
    create_group(
        &c.client,
        &ns,
        &group(&ns, "a", small(&["de", "at"], 100, 2)),
    )
    .await;
    create_group(&c.client, &ns, &group(&ns, "b", small(&["de", "at"], 0, 2))).await;
    wait_ready(&c.client, &ns, "a").await;
    wait_ready(&c.client, &ns, "b").await;
    let ar = route_groups();
    for country in ["de", "at"] {
        eventually(&format!("{country} routed to a alone"), || async {
            let r = route(&c.client, &ns, &ar, &format!("prapi-{country}")).await?;
            (rg_weights(&r, None, "/products/:id") == weights(&[("a-products", 100)])).then_some(())
        })
        .await;
    }
    eventually("b reports 0/0 for both countries", || async {
        let b = get(&c.client, &ns, "b").await;
        (traffic(&b, "de") == Some((0, Some(0), None))
            && traffic(&b, "at") == Some((0, Some(0), None)))
        .then_some(())
    })
    .await;
    // at's Events of the setup: a's step to 100%, b's first 0%.
    let at_before = eventually("at's setup Events on a and b", || async {
        let notes = at_notes(&c.client, &ns).await;
        (notes[0].iter().any(|n| n.contains("→ 100% of"))
            && notes[1].iter().any(|n| n.contains("→ 0% of")))
        .then_some(notes)
    })
    .await;
    // The Deployments as they run once settled (each at its HPA's floor, rolled out): what the
    // move must leave as it is.
    eventually("the six Deployments settled", || async {
        let api = Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(c.client.clone(), &ns);
        for g in ["a", "b"] {
            for component in ["updater", "products", "batch"] {
                let d = api.get(&format!("{g}-{component}")).await.ok()?;
                let want = d.spec.as_ref()?.replicas?;
                let status = d.status.as_ref()?;
                let settled = status.observed_generation == d.metadata.generation
                    && status.available_replicas == Some(want)
                    && status.updated_replicas == Some(want);
                if !settled || (component == "products" && want != 2) {
                    return None;
                }
            }
        }
        Some(())
    })
    .await;
    let before = deployments(&c.client, &ns, &["a", "b"]).await;

    // Move de: b takes it, a gives it up; `countries` stays as it is.
    patch_group(
        &c.client,
        &ns,
        "b",
        json!({"spec": {"traffic": {"countryWeights": {"de": 100}}}}),
    )
    .await;
    patch_group(
        &c.client,
        &ns,
        "a",
        json!({"spec": {"traffic": {"countryWeights": {"de": 0}}}}),
    )
    .await;
    let r = eventually("de routed to b alone", || async {
        let r = route(&c.client, &ns, &ar, "prapi-de").await?;
        (rg_weights(&r, None, "/products/:id") == weights(&[("b-products", 100)])).then_some(r)
    })
    .await;
    assert_eq!(
        rg_weights(&r, None, "/products"),
        weights(&[("b-batch", 100)])
    );
    let r = route(&c.client, &ns, &ar, "prapi-at")
        .await
        .expect("prapi-at");
    assert_eq!(
        rg_weights(&r, None, "/products/:id"),
        weights(&[("a-products", 100)])
    );
    eventually("a and b report each country's own weight", || async {
        let a = get(&c.client, &ns, "a").await;
        let b = get(&c.client, &ns, "b").await;
        (traffic(&a, "de") == Some((0, Some(0), None))
            && traffic(&a, "at") == Some((100, Some(100), None))
            && traffic(&b, "de") == Some((100, Some(100), None))
            && traffic(&b, "at") == Some((0, Some(0), None))
            && a.status.as_ref()?.actual_weight.as_deref() == Some("0-100")
            && b.status.as_ref()?.actual_weight.as_deref() == Some("0-100"))
        .then_some(())
    })
    .await;
    // The two patches are two writes: a reconcile between them sees both groups at 100 and
    // shifts through 50/50, one Event per step; without one, a single step. Either way each
    // group's Events go from where it was to where it ends.
    let moved = |notes: &[String], from: u32, to: u32| {
        notes
            .iter()
            .any(|n| n.starts_with(&format!("de: {from}% → ")))
            && notes
                .iter()
                .any(|n| n.starts_with("de: ") && n.contains(&format!("→ {to}% ")))
    };
    eventually("the move of de is an Event on each group", || async {
        let a = shift_notes(&c.client, &ns, "a").await;
        let b = shift_notes(&c.client, &ns, "b").await;
        (moved(&a, 100, 0) && moved(&b, 0, 100)).then_some(())
    })
    .await;
    // at did not move: no Event for it beyond those of the setup.
    assert_eq!(at_notes(&c.client, &ns).await, at_before);
    // Both groups reconciled the edited generation: nothing of their pods changed.
    for g in ["a", "b"] {
        let generation = get(&c.client, &ns, g).await.metadata.generation;
        eventually(&format!("{g} observed its edited generation"), || async {
            let mg = get(&c.client, &ns, g).await;
            (mg.status.as_ref()?.observed_generation == generation).then_some(())
        })
        .await;
    }
    assert_eq!(
        deployments(&c.client, &ns, &["a", "b"]).await,
        before,
        "moving a country changed a Deployment"
    );
}

/// Envoy Gateway's BackendTrafficPolicy resource (its CRD is installed by the test environment,
/// from Envoy Gateway's Go module).
fn backend_traffic_policies() -> ApiResource {
    prapi_operator::routes::backend_traffic_policies()
}

/// Where Envoy Gateway's BackendTrafficPolicy is served (the test environment installs its real
/// CRD, so the API server checks each policy against Envoy Gateway's schema and CEL rules), each
/// country's HTTPRoute gets one hashing on the path (`--backend-traffic-policy auto`); a country
/// whose route goes loses its policy; and `--backend-traffic-policy off` deletes the rest while
/// the routes stay.
#[tokio::test]
async fn gateway_api_routes_get_envoy_gateway_hash_policies_where_served() {
    let Some(c) = cluster().await else {
        return;
    };
    let btp = backend_traffic_policies();
    assert!(
        prapi_operator::discovery::Discovery::uncached(c.client.clone())
            .served(&btp)
            .await
            .expect("discovery"),
        "the test environment serves gateway.envoyproxy.io/v1alpha1 BackendTrafficPolicy \
         (e2e/testenv/lib/k8s.sh installs it; restart an environment started before that)"
    );
    let ns = c.namespace("rt-btp").await;
    let mut op = Operator::start(&c.env, &ns, "op", &GATEWAY_API);
    create_group(
        &c.client,
        &ns,
        &group(&ns, "a", small(&["de", "at"], 100, 1)),
    )
    .await;
    wait_ready(&c.client, &ns, "a").await;
    let ar = http_routes();
    for country in ["de", "at"] {
        let name = format!("prapi-{country}");
        let policy = eventually(&format!("BackendTrafficPolicy {name}"), || async {
            route(&c.client, &ns, &btp, &name).await
        })
        .await;
        assert_eq!(
            policy["spec"],
            json!({
                "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": name}],
                // tableSize: the default of Envoy Gateway's own schema, filled in by the API server.
                "loadBalancer": {"type": "ConsistentHash", "consistentHash": {"type": "Header", "header": {"name": ":path"}, "tableSize": 65537}},
            })
        );
        assert_eq!(policy["metadata"]["labels"]["prapi.dev/country"], country);
        assert_eq!(policy["metadata"]["ownerReferences"][0]["name"], "a");
        assert!(route(&c.client, &ns, &ar, &name).await.is_some());
    }

    // at's weights sum to zero: its route goes, and its policy with it; de keeps both.
    patch_group(
        &c.client,
        &ns,
        "a",
        json!({"spec": {"traffic": {"countryWeights": {"at": 0}}}}),
    )
    .await;
    eventually("prapi-at's route and policy gone", || async {
        (route(&c.client, &ns, &ar, "prapi-at").await.is_none()
            && route(&c.client, &ns, &btp, "prapi-at").await.is_none())
        .then_some(())
    })
    .await;
    assert!(route(&c.client, &ns, &btp, "prapi-de").await.is_some());

    // Turned off: the policy made before goes, the route stays.
    assert!(op.terminate(), "the operator exits cleanly on SIGTERM");
    let mut flags = GATEWAY_API.to_vec();
    flags.extend(["--backend-traffic-policy", "off"]);
    let _op = Operator::start(&c.env, &ns, "op", &flags);
    poke(&c.client, &ns, "a", 1).await;
    eventually("prapi-de's policy deleted with the flag off", || async {
        route(&c.client, &ns, &btp, "prapi-de")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    assert!(route(&c.client, &ns, &ar, "prapi-de").await.is_some());
}
