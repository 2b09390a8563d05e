//! What clients see when products and batch pods go away under load: a rolling update (pods
//! drained one by one) and pods deleted or killed outright.

use std::io::Write as _;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams};
use prapi_e2e::kit::{PATIENCE, eventually};
use serde_json::json;

use crate::stream::{Outcome, Stream, complete_batch, failures, found, latency_percentile};
use crate::support::*;

/// Single GETs per second.
const SINGLE_RATE: u32 = 100;

/// Batches (20 ids each) per second.
const BATCH_RATE: u32 = 10;

/// Ids per batch of the batch stream.
const BATCH_IDS: usize = 20;

/// A loaded group of these scenarios and the two streams on it.
struct UnderLoad {
    name: String,
    singles: Stream,
    batches: Stream,
    /// Kept until the test ends: dropping them deletes the catalogue's files and topics.
    _catalogue_dir: tempfile::TempDir,
    _topics: Topics,
}

/// A 60-product catalogue for de/at/ch on new topics, a group serving it ([`loaded_group`]) and
/// the two streams started on it.
async fn under_load(kind: &Kind, ns: &str) -> UnderLoad {
    let dir = tempfile::tempdir().expect("temp dir");
    let catalogue = generate_catalogue(dir.path(), 60, "de,at,ch");
    let topics = Topics::create(kind.var("KAFKA_BOOTSTRAP_SERVERS"), 4).await;
    produce(&topics, &catalogue, catalogue.product_ids.len()).await;
    let name = loaded_group(kind, ns, &catalogue, &topics).await;
    let (singles, batches) = streams(kind, &catalogue);
    UnderLoad {
        name,
        singles,
        batches,
        _catalogue_dir: dir,
        _topics: topics,
    }
}

/// A group of one-group.yaml serving the whole `catalogue` from three products and two batch pods.
async fn loaded_group(kind: &Kind, ns: &str, catalogue: &Catalogue, topics: &Topics) -> String {
    let mut group = example(kind, "one-group.yaml", topics).remove(0);
    group["spec"]["products"]["replicas"] = json!({"min": 3, "max": 3});
    group["spec"]["batch"]["replicas"] = json!({"min": 2, "max": 2});
    let name = apply_group(&kind.client, ns, &group).await;
    wait_ready(&kind.client, ns, &name).await;
    wait_table_holds(
        kind,
        &format!("prapi-{ns}-{name}"),
        catalogue,
        &["de", "at", "ch"],
    )
    .await;
    for (component, n) in [("products", 3), ("batch", 2)] {
        wait_ready_replicas(kind, ns, &format!("{name}-{component}"), n).await;
    }
    tokio::time::sleep(INGRESS_PROPAGATION).await;
    wait_country_routed(kind, catalogue, "de").await;
    // Every product once through the ingress, so the streams start on warm caches: these
    // scenarios are about pods going away, not about a cold table read (each id lands on its
    // ring owner, the pod batch asks for it too).
    for id in &catalogue.product_ids {
        wait_status(
            kind,
            &format!("/product-offers/{id}"),
            &[("x-country", "de")],
            200,
        )
        .await;
    }
    name
}

/// Waits until Deployment `name` has `n` ready replicas, all of the current revision.
async fn wait_ready_replicas(kind: &Kind, ns: &str, name: &str, n: i32) {
    let deployments: Api<Deployment> = Api::namespaced(kind.client.clone(), ns);
    eventually(&format!("{name}: {n} ready, updated replicas"), || async {
        let d = deployments.get(name).await.ok()?;
        let generation = d.metadata.generation;
        let s = d.status?;
        (s.observed_generation == generation
            && s.ready_replicas == Some(n)
            && s.updated_replicas == Some(n)
            && s.replicas == Some(n))
        .then_some(())
    })
    .await;
}

/// The two streams of these scenarios: single GETs and batches of existing products in Germany.
fn streams(kind: &Kind, catalogue: &Catalogue) -> (Stream, Stream) {
    let ids = &catalogue.product_ids;
    let de = vec![("x-country".to_string(), "de".to_string())];
    let singles = ids
        .iter()
        .map(|id| format!("{}/product-offers/{id}", kind.ingress()))
        .collect();
    let batches = (0..ids.len())
        .map(|i| {
            let chunk: Vec<&str> = ids
                .iter()
                .cycle()
                .skip(i)
                .take(BATCH_IDS)
                .map(String::as_str)
                .collect();
            format!("{}/product-offers?ids={}", kind.ingress(), chunk.join(","))
        })
        .collect();
    (
        Stream::start(kind.http.clone(), singles, de.clone(), SINGLE_RATE, found),
        Stream::start(kind.http.clone(), batches, de, BATCH_RATE, complete_batch),
    )
}

fn summary(what: &str, outcomes: &[Outcome]) -> String {
    format!(
        "{what}: {} requests, {} failed, P50 {:?}, P99 {:?}",
        outcomes.len(),
        outcomes.iter().filter(|o| o.failed()).count(),
        latency_percentile(outcomes, 0.5),
        latency_percentile(outcomes, 0.99)
    )
}

/// A setting of products and of batch changed under the two streams: both Deployments roll
/// (each pod fails readiness first, keeps serving through the drain delay, then stops), and not
/// one single GET or batch item fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_of_products_and_batch_fails_no_request() {
    let Some(kind) = Kind::get().await else {
        return;
    };
    let ns = test_namespace(&kind, "e2e-rollout").await;
    let UnderLoad {
        name,
        singles,
        batches,
        ..
    } = under_load(&kind, &ns).await;

    let pods_before: Vec<String> = component_pods(&kind, &ns, &name, "products")
        .await
        .iter()
        .chain(component_pods(&kind, &ns, &name, "batch").await.iter())
        .map(|p| p.name_any())
        .collect();
    let started = Instant::now();
    patch_spec(
        &kind,
        &ns,
        &name,
        json!({"products": {"cache": {"ttlSeconds": 45}}, "batch": {"maxItems": 90}}),
    )
    .await;
    // Rolled: every pod of before is gone and the new ones are ready.
    eventually("products and batch rolled", || async {
        let now: Vec<String> = component_pods(&kind, &ns, &name, "products")
            .await
            .iter()
            .chain(component_pods(&kind, &ns, &name, "batch").await.iter())
            .map(|p| p.name_any())
            .collect();
        now.iter().all(|p| !pods_before.contains(p)).then_some(())
    })
    .await;
    wait_ready_replicas(&kind, &ns, &format!("{name}-products"), 3).await;
    wait_ready_replicas(&kind, &ns, &format!("{name}-batch"), 2).await;
    // The old pods have finished draining and exited (the stream covers all of it).
    let pods: Api<Pod> = Api::namespaced(kind.client.clone(), &ns);
    for old in &pods_before {
        eventually(&format!("{old} gone"), || async {
            pods.get_opt(old).await.ok()?.is_none().then_some(())
        })
        .await;
    }
    let rolled = started.elapsed();
    tokio::time::sleep(INGRESS_PROPAGATION).await;
    let singles = singles.stop().await;
    let batches = batches.stop().await;
    let report = [
        format!("rolled in {:.1}s", rolled.as_secs_f64()),
        summary("single GETs", &singles),
        summary("batches", &batches),
    ];
    let _ = writeln!(std::io::stderr(), "rolling update: {}", report.join("; "));
    assert!(failures(&singles).is_empty(), "{:?}", failures(&singles));
    assert!(failures(&batches).is_empty(), "{:?}", failures(&batches));
}

/// Under the two streams, one products pod deleted (graceful), then another killed (`kubectl
/// delete --grace-period=0 --force`): no batch item fails (a lookup whose pod went away is retried
/// on the ring's next owner), and single GETs through the ingress fail, if at all, only until the
/// ingress has taken the killed pod out (reported; bounded by `RECOVERY`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn products_pods_deleted_and_killed_under_load() {
    /// The longest single GETs may fail after a kill: the endpoints controller and Skipper's
    /// 500 ms endpoint polling, with room for a loaded machine.
    const RECOVERY: Duration = Duration::from_secs(15);

    let Some(kind) = Kind::get().await else {
        return;
    };
    let ns = test_namespace(&kind, "e2e-kill").await;
    let UnderLoad {
        name,
        singles,
        batches,
        ..
    } = under_load(&kind, &ns).await;
    let pods: Api<Pod> = Api::namespaced(kind.client.clone(), &ns);
    let products = format!("{name}-products");

    let mut kills = Vec::new();
    for (how, params) in [
        ("deleted", DeleteParams::default()),
        (
            "killed",
            DeleteParams {
                grace_period_seconds: Some(0),
                ..DeleteParams::default()
            },
        ),
    ] {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let victim = component_pods(&kind, &ns, &name, "products").await[0].name_any();
        kills.push((how, victim.clone(), singles.elapsed()));
        pods.delete(&victim, &params)
            .await
            .unwrap_or_else(|e| panic!("delete {victim}: {e}"));
        eventually(&format!("{victim} gone"), || async {
            pods.get_opt(&victim).await.ok()?.is_none().then_some(())
        })
        .await;
        wait_ready_replicas(&kind, &ns, &products, 3).await;
    }
    tokio::time::sleep(RECOVERY).await;
    let singles = singles.stop().await;
    let batches = batches.stop().await;

    let failed_singles: Vec<&Outcome> = singles.iter().filter(|o| o.failed()).collect();
    let mut report = vec![
        summary("single GETs", &singles),
        summary("batches", &batches),
    ];
    for (how, pod, at) in &kills {
        let after: Vec<&&Outcome> = failed_singles
            .iter()
            .filter(|o| o.sent >= *at && o.sent < *at + PATIENCE)
            .collect();
        let window = after
            .iter()
            .map(|o| o.sent + o.latency - *at)
            .max()
            .unwrap_or_default();
        report.push(format!(
            "{pod} {how} at {:.1}s: {} single GETs failed, the last {:.2}s after",
            at.as_secs_f64(),
            after.len(),
            window.as_secs_f64()
        ));
    }
    let _ = writeln!(
        std::io::stderr(),
        "pods deleted and killed: {}",
        report.join("; ")
    );
    assert!(
        failures(&batches).is_empty(),
        "batch items failed: {:?}",
        failures(&batches)
    );
    let first_kill = kills[0].2;
    for o in &failed_singles {
        let recovering = kills
            .iter()
            .any(|(_, _, at)| o.sent >= *at && o.sent <= *at + RECOVERY);
        assert!(
            recovering || o.sent < first_kill,
            "a single GET failed outside the recovery after a kill: {:?}",
            failures(std::slice::from_ref(*o))
        );
    }
    assert!(
        failed_singles.iter().all(|o| o.sent >= first_kill),
        "failures before any pod went away: {:?}",
        failures(&singles)
    );
}
