//! The bootstrap gate on the test environment (real kube-apiserver with kwok nodes, real Kafka),
//! with the real `prapi-operator run --routing skipper` and no store management: a group is routed
//! for a country only once its updater's consumer group has caught up, stays routed through a
//! later lag spike, and a country added to it is replayed under a new consumer group and routed
//! only once that group has caught up.
//!
//! kwok runs no container, so no updater consumes: the test commits the consumer group's offsets
//! itself, as the updater does once it has written what it read (docs/updater.md).

mod support;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::events::v1::Event;
use kube::api::Api;
use prapi_e2e::{Part, TestEnv, unique_name};
use prapi_operator::crd::{BootstrapStatus, MarketGroup};
use serde_json::json;
use support::kafka::{commit_all, create_topics, produce};
use support::routing::*;
use support::*;

/// `(reason, action)` of the operator's Events on `group` whose reason starts with `Bootstrap`.
async fn bootstrap_events(client: &kube::Client, ns: &str, group: &str) -> Vec<(String, String)> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let list = events.list(&Default::default()).await.expect("list events");
    list.items
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(group)
                && e.reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with("Bootstrap"))
        })
        .map(|e| (e.reason.unwrap_or_default(), e.action.unwrap_or_default()))
        .collect()
}

/// Waits for the operator's Event of `reason` and `action` on group `a`.
async fn wait_event(client: &kube::Client, ns: &str, reason: &str, action: &str) {
    let want = (reason.to_string(), action.to_string());
    eventually(&format!("the {reason} Event ({action})"), || async {
        bootstrap_events(client, ns, "a")
            .await
            .contains(&want)
            .then_some(())
    })
    .await;
}

fn bootstrap(mg: &MarketGroup) -> Option<BootstrapStatus> {
    mg.status.as_ref()?.bootstrap.clone()
}

fn is(mg: &MarketGroup, type_: &str, status: &str, reason: &str) -> bool {
    condition(mg, type_).is_some_and(|c| c.status == status && c.reason == reason)
}

async fn updater_args(client: &kube::Client, ns: &str, group: &str) -> Vec<String> {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .get_opt(&format!("{group}-updater"))
        .await
        .ok()
        .flatten()
        .and_then(|d| d.spec?.template.spec?.containers.first()?.args.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn countries_are_routed_once_the_updater_caught_up_and_an_added_country_is_replayed() {
    let Some(c) = cluster().await else { return };
    let Some(kafka_env) = TestEnv::get_for(&[Part::Kubernetes, Part::Kafka]) else {
        return;
    };
    let kafka = kafka_env.kafka_bootstrap_servers().to_string();
    install_routegroup_crd(&c.client).await;
    let ns = c.namespace("gate").await;
    let (products, offers) = (unique_name("prapi-gate-p"), unique_name("prapi-gate-o"));
    create_topics(&kafka, &[&products, &offers], 1).await;
    produce(&kafka, &products, 1, 20).await;
    produce(&kafka, &offers, 1, 20).await;
    let _op = Operator::start(
        &c.env,
        &ns,
        "op",
        &[
            "--updater-autoscaler",
            "hpa",
            "--routing",
            "skipper",
            "--bootstrap-max-lag",
            "0",
        ],
    );
    // b serves fr already (its topics are empty: nothing to catch up on).
    create_group(&c.client, &ns, &group(&ns, "b", small(&["fr"], 100, 1))).await;
    wait_ready(&c.client, &ns, "b").await;

    let mut spec = small(&["de"], 100, 1);
    spec["updater"]["kafka"] = json!({"bootstrapServers": kafka, "productsTopic": products,
                                      "offersTopic": offers, "partitions": 1});
    create_group(&c.client, &ns, &group(&ns, "a", spec)).await;
    let first = format!("prapi-{ns}-a");

    // 40 messages behind: its workloads serve, but nothing routes to it.
    let mg = eventually("a waits for its updater, 40 messages behind", || async {
        let mg = get(&c.client, &ns, "a").await;
        (mg.status.as_ref()?.updater_lag == Some(40)
            && is(&mg, "WorkloadsReady", "True", "Available")
            && is(&mg, "Bootstrapped", "False", "Bootstrapping")
            && is(&mg, "Ready", "False", "Bootstrapping")
            && is(&mg, "RoutingReady", "False", "Bootstrapping"))
        .then_some(mg)
    })
    .await;
    assert_eq!(
        bootstrap(&mg),
        Some(BootstrapStatus {
            consumer_group: first.clone(),
            replay: 0,
            countries: vec!["de".into()],
            bootstrapped: vec![],
        })
    );
    assert_eq!(
        traffic(&mg, "de"),
        Some((100, Some(0), Some("Bootstrapping".into())))
    );
    let message = &condition(&mg, "Bootstrapped")
        .expect("Bootstrapped")
        .message;
    assert!(
        message.contains("de not routed") && message.contains("40 messages behind"),
        "{message}"
    );
    let rg = route_groups();
    assert_eq!(route(&c.client, &ns, &rg, "prapi-de").await, None);
    wait_event(&c.client, &ns, "BootstrapStarted", "Bootstrap de").await;

    // The updater catches up.
    commit_all(&kafka, &first, &products);
    commit_all(&kafka, &first, &offers);
    eventually("RouteGroup de routes a", || async {
        let r = route(&c.client, &ns, &rg, "prapi-de").await?;
        (rg_weights(&r, None, "/products/:id") == weights(&[("a-products", 100)])).then_some(())
    })
    .await;
    let mg = eventually("a Ready and Bootstrapped", || async {
        let mg = get(&c.client, &ns, "a").await;
        (is(&mg, "Ready", "True", "Ready") && is(&mg, "Bootstrapped", "True", "CaughtUp"))
            .then_some(mg)
    })
    .await;
    assert_eq!(
        bootstrap(&mg).map(|b| b.bootstrapped),
        Some(vec!["de".to_string()])
    );
    wait_event(&c.client, &ns, "BootstrapFinished", "Bootstrapped de").await;

    // A lag spike does not close the gate again.
    produce(&kafka, &offers, 1, 5).await;
    let mg = eventually("a reads lag 5", || async {
        let mg = get(&c.client, &ns, "a").await;
        (mg.status.as_ref()?.updater_lag == Some(5)).then_some(mg)
    })
    .await;
    assert!(
        is(&mg, "Bootstrapped", "True", "CaughtUp"),
        "{:?}",
        mg.status
    );
    assert!(is(&mg, "Ready", "True", "Ready"), "{:?}", mg.status);
    let r = route(&c.client, &ns, &rg, "prapi-de")
        .await
        .expect("de route");
    assert_eq!(
        rg_weights(&r, None, "/products/:id"),
        weights(&[("a-products", 100)])
    );

    // fr added: the updater moves to a new consumer group that reads from the start; fr waits
    // while de goes on being served.
    patch_group(
        &c.client,
        &ns,
        "a",
        json!({"spec": {"countries": ["de", "fr"]}}),
    )
    .await;
    let replay = format!("{first}-replay-1");
    let mg = eventually("a replays for fr", || async {
        let mg = get(&c.client, &ns, "a").await;
        (bootstrap(&mg)?.consumer_group == replay
            && mg.status.as_ref()?.updater_lag == Some(45)
            && is(&mg, "Bootstrapped", "False", "Bootstrapping")
            && traffic(&mg, "fr") == Some((50, Some(0), Some("Bootstrapping".into()))))
        .then_some(mg)
    })
    .await;
    assert_eq!(
        bootstrap(&mg),
        Some(BootstrapStatus {
            consumer_group: replay.clone(),
            replay: 1,
            countries: vec!["de".into(), "fr".into()],
            bootstrapped: vec!["de".into()],
        })
    );
    assert!(is(&mg, "Ready", "True", "Ready"), "{:?}", mg.status);
    let args = updater_args(&c.client, &ns, "a").await;
    let flag = |f: &str| {
        args.iter()
            .position(|a| a == f)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    assert_eq!(flag("--group"), Some(replay.clone()), "{args:?}");
    assert_eq!(flag("--countries").as_deref(), Some("de,fr"), "{args:?}");
    let r = route(&c.client, &ns, &rg, "prapi-fr")
        .await
        .expect("fr route");
    assert_eq!(
        rg_weights(&r, None, "/products/:id"),
        weights(&[("b-products", 100)]),
        "fr stays with b while a replays"
    );
    let r = route(&c.client, &ns, &rg, "prapi-de")
        .await
        .expect("de route");
    assert_eq!(
        rg_weights(&r, None, "/products/:id"),
        weights(&[("a-products", 100)]),
        "de is still served by a"
    );
    wait_event(&c.client, &ns, "BootstrapStarted", "Bootstrap fr").await;

    // The replay catches up: fr is split between a and b by their weights (100 each).
    commit_all(&kafka, &replay, &products);
    commit_all(&kafka, &replay, &offers);
    eventually("RouteGroup fr routes a and b", || async {
        let r = route(&c.client, &ns, &rg, "prapi-fr").await?;
        (rg_weights(&r, None, "/products/:id")
            == weights(&[("a-products", 100), ("b-products", 100)]))
        .then_some(())
    })
    .await;
    eventually("a reports half of fr", || async {
        (traffic(&get(&c.client, &ns, "a").await, "fr") == Some((50, Some(50), None))).then_some(())
    })
    .await;
    let mg = eventually("a Bootstrapped for de and fr", || async {
        let mg = get(&c.client, &ns, "a").await;
        is(&mg, "Bootstrapped", "True", "CaughtUp").then_some(mg)
    })
    .await;
    assert_eq!(
        bootstrap(&mg).map(|b| b.bootstrapped),
        Some(vec!["de".to_string(), "fr".to_string()])
    );
    wait_event(&c.client, &ns, "BootstrapFinished", "Bootstrapped fr").await;
}
