//! Ring parity through the real ingress: Skipper's `consistentHash` (single GETs) and the batch
//! component's in-process ring place every id on the same products pod, the one `prapi ring`
//! computes over the live endpoints (docs/load-balancing.md).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt as _;
use kube::api::{Api, ListParams};
use prapi_e2e::kit::{eventually, metric_sum};
use serde_json::json;

use crate::support::*;

/// Products pods of the group: enough for a ring where most ids do not land on the first pod.
const PODS: i32 = 3;

/// The fade-in of new products pods: the batch component's (`FadeConfig`) and Skipper's
/// (`fadeIn`, which the operator renders with the same duration).
const FADE: Duration = Duration::from_secs(30);

/// Ids placed; none exists (a `404` from prapi names its pod as well as a `200` does).
const IDS: usize = 1000;

/// The sum of a metric's series on a pod, from its ops listener (port 9090, `--ops-listen`)
/// through the API server's pod proxy.
async fn pod_metric(kind: &Kind, ns: &str, pod: &str, metric: &str) -> f64 {
    let text = pod_metrics(kind, ns, pod, 9090)
        .await
        .unwrap_or_else(|e| panic!("{pod}'s /metrics: {e}"));
    metric_sum(&text, metric, &[])
}

/// A products pod's count of API requests (every route and status).
async fn api_requests(kind: &Kind, ns: &str, pod: &str) -> f64 {
    pod_metric(kind, ns, pod, "prapi_http_request_duration_seconds_count").await
}

/// The group's batch pods' lookups sent past their owner (bounded load) and retried.
async fn batch_diversions(kind: &Kind, ns: &str, group: &str) -> (f64, f64) {
    let mut out = (0.0, 0.0);
    for p in component_pods(kind, ns, group, "batch").await {
        let name = p.name_any();
        out.0 += pod_metric(kind, ns, &name, "prapi_lb_spills_total").await;
        out.1 += pod_metric(kind, ns, &name, "prapi_lb_retries_total").await;
    }
    out
}

/// One group with three products pods. For 1,000 ids: the pod that answered each single GET
/// through Skipper (`X-Served-By`) is the owner `prapi ring` computes over the products Service's
/// ready endpoints; then each id is sent as a batch of its own through the ingress, and the batch
/// component looks it up on that same owner, except for the lookups its bounded load spills (it
/// counts them): each pod's request counter moves by the ids it owns, give or take the spills.
#[tokio::test]
async fn the_ingress_and_the_batch_component_place_ids_on_the_same_ring() {
    let Some(kind) = Kind::get().await else {
        return;
    };
    let ns = test_namespace(&kind, "e2e-ring").await;
    let topics = Topics::create(kind.var("KAFKA_BOOTSTRAP_SERVERS"), 4).await;
    let mut group = example(&kind, "one-group.yaml", &topics).remove(0);
    group["spec"]["products"]["replicas"] = json!({"min": PODS, "max": PODS});
    let name = apply_group(&kind.client, &ns, &group).await;
    wait_ready(&kind.client, &ns, &name).await;
    let products = format!("{name}-products");
    let deployments: Api<Deployment> = Api::namespaced(kind.client.clone(), &ns);
    eventually(&format!("{PODS} ready products pods"), || async {
        let d = deployments.get(&products).await.ok()?;
        (d.status?.ready_replicas == Some(PODS)).then_some(())
    })
    .await;

    // The live endpoints, as Skipper and the batch pods read them: the Service's EndpointSlices.
    let slices: Api<EndpointSlice> = Api::namespaced(kind.client.clone(), &ns);
    let endpoints: BTreeSet<String> = eventually("the products endpoints", || async {
        let list = slices
            .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={products}")))
            .await
            .ok()?;
        let mut out = BTreeSet::new();
        for s in &list.items {
            let port = s.ports.as_ref()?.first()?.port?;
            for e in &s.endpoints {
                if e.conditions.as_ref()?.ready == Some(true) {
                    out.extend(e.addresses.iter().map(|a| format!("http://{a}:{port}")));
                }
            }
        }
        (out.len() == PODS as usize).then_some(out)
    })
    .await;
    // From here the batch pods' discovery and Skipper's endpoint polling may take a moment to
    // add the last pod, which then fades in over FADE on both sides (docs/load-balancing.md,
    // "Fade-in"): keys move to it only gradually, so until then neither places every id on its
    // ring owner, by design.
    let fade_over = Instant::now() + FADE + INGRESS_PROPAGATION;
    let pod_endpoint: BTreeMap<String, String> = component_pods(&kind, &ns, &name, "products")
        .await
        .iter()
        .filter_map(|p| {
            let ip = p.status.as_ref()?.pod_ip.clone()?;
            let endpoint = endpoints
                .iter()
                .find(|e| e.starts_with(&format!("http://{ip}:")))?;
            Some((p.name_any(), endpoint.clone()))
        })
        .collect();
    assert_eq!(
        pod_endpoint.len(),
        PODS as usize,
        "{pod_endpoint:?} vs {endpoints:?}"
    );

    let ids: Vec<String> = (0..IDS).map(|i| format!("ring-{i:04}")).collect();
    let owners = ring_owners(&endpoints, &ids);

    // Skipper loads routes and endpoints by polling, each replica on its own: 20 answers in a
    // row from a products pod, then the propagation bound for the last endpoint to arrive.
    wait_ingress_converged(&kind, "/products/ring-probe", &[("x-country", "de")], |a| {
        a.status == 404 && a.content_type.as_deref() == Some("application/problem+json")
    })
    .await;
    tokio::time::sleep(INGRESS_PROPAGATION).await;
    tokio::time::sleep_until(fade_over.into()).await;
    let mut served = Vec::with_capacity(IDS);
    for id in &ids {
        let r = kind
            .http
            .get(format!("{}/products/{id}", kind.ingress()))
            .header("x-country", "de")
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {id}: {e}"));
        assert_eq!(r.status(), 404, "{id} does not exist");
        let pod = r
            .headers()
            .get(SERVED_BY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{id}: no {SERVED_BY} (the installation turns it on)"))
            .to_string();
        served.push(pod_endpoint.get(&pod).cloned().unwrap_or(pod));
    }
    let mismatched: Vec<_> = ids
        .iter()
        .zip(&served)
        .filter(|(id, pod)| owners.get(*id) != Some(pod))
        .collect();
    let per_pod = served
        .iter()
        .fold(BTreeMap::<&str, usize>::new(), |mut m, e| {
            *m.entry(e.as_str()).or_default() += 1;
            m
        });
    assert!(
        mismatched.is_empty(),
        "{} of {IDS} single GETs were answered by another pod than the ring's owner, e.g. {:?}",
        mismatched.len(),
        &mismatched[..mismatched.len().min(5)]
    );

    // The batch component: every id in a batch of its own, one at a time, so no pod ever has
    // more than one lookup in flight. Its ring still passes an owner that just spent much of the
    // last ~150 ms answering slow lookups (bounded load counts recent occupancy, weighted by
    // latency; docs/load-balancing.md): each such pick counts in `prapi_lb_spills_total` and
    // moves one request from its owner to another pod. Every other lookup must reach its owner.
    let mut before = BTreeMap::new();
    for p in pod_endpoint.keys() {
        before.insert(p.clone(), api_requests(&kind, &ns, p).await);
    }
    let (spills_before, retries_before) = batch_diversions(&kind, &ns, &name).await;
    for id in &ids {
        let url = format!("{}/products?ids={id}", kind.ingress());
        let a = get(&kind.http, &url, &[("x-country", "de")])
            .await
            .expect("a batch through the ingress");
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
        let v: serde_json::Value = serde_json::from_slice(&a.body).expect("batch JSON");
        assert_eq!(v["missing"], json!([id]), "{v}");
    }
    let (spills, retries) = batch_diversions(&kind, &ns, &name).await;
    let (spills, retries) = (spills - spills_before, retries - retries_before);
    assert_eq!(retries, 0.0, "lookups failed and were retried");
    let mut requests = 0.0;
    let mut off_owner = 0.0;
    let mut per_pod_batch = Vec::new();
    for (pod, endpoint) in &pod_endpoint {
        let owned = ids
            .iter()
            .filter(|id| owners.get(*id) == Some(endpoint))
            .count() as f64;
        let delta = api_requests(&kind, &ns, pod).await - before[pod];
        requests += delta;
        off_owner += (delta - owned).abs();
        per_pod_batch.push((pod.clone(), owned, delta));
    }
    assert_eq!(
        requests, IDS as f64,
        "one lookup per one-id batch: {per_pod_batch:?}"
    );
    // A spill takes one request from one pod and gives it to another: at most 2 off per spill.
    assert!(
        off_owner <= 2.0 * spills,
        "batch lookups off their owner beyond the {spills} spills: (pod, owned, requests) {per_pod_batch:?}"
    );
    // Spills are the exception with one lookup in flight; a ring that disagreed would show here.
    assert!(
        spills <= (IDS / 20) as f64,
        "{spills} of {IDS} lookups spilled: (pod, owned, requests) {per_pod_batch:?}"
    );
    let _ = writeln!(
        std::io::stderr(),
        "ring parity: {IDS} ids, Skipper = prapi ring for all; batch: every lookup on its owner \
         but {spills} spilled by bounded load; ids per pod {per_pod:?}"
    );
}

/// `prapi ring` over `endpoints`: the owner endpoint of each id.
fn ring_owners(endpoints: &BTreeSet<String>, ids: &[String]) -> BTreeMap<String, String> {
    let mut child = Command::new(prapi_bin())
        .arg("ring")
        .arg("--endpoints")
        .arg(endpoints.iter().cloned().collect::<Vec<_>>().join(","))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run prapi ring");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = ids.join("\n") + "\n";
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("prapi ring output");
    writer.join().expect("writer").expect("write ids");
    assert!(out.status.success(), "prapi ring failed");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let owners: BTreeMap<String, String> = text
        .lines()
        .filter_map(|l| {
            let (id, owner) = l.split_once('\t')?;
            Some((id.to_string(), owner.to_string()))
        })
        .collect();
    assert_eq!(owners.len(), ids.len(), "prapi ring answered every id");
    owners
}
