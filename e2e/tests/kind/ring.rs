//! Ring parity through the real ingress: Skipper's `consistentHash` places every id on the
//! products pod `prapi ring` computes over the live endpoints — the ring the batch component
//! uses in-process (docs/load-balancing.md; `prapi ring` and the batch component share the code,
//! and `lb/skipper_vectors.rs` pins it to Skipper's own vectors).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::process::{Command, Stdio};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt as _;
use kube::api::{Api, ListParams};
use prapi_e2e::kit::eventually;
use serde_json::json;

use crate::support::*;

/// Products pods of the group: enough for a ring where most ids do not land on the first pod.
const PODS: i32 = 3;

/// Ids placed; none exists (a `404` from prapi names its pod as well as a `200` does).
const IDS: usize = 1000;

/// One group with three products pods. For 1,000 ids: the pod that answered each single GET
/// through Skipper (`X-Served-By`) is the owner `prapi ring` computes over the products Service's
/// ready endpoints.
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

    let _ = writeln!(
        std::io::stderr(),
        "ring parity: {IDS} ids, Skipper = prapi ring for all; ids per pod {per_pod:?}"
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
