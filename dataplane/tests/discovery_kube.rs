//! Discovery of products pods from EndpointSlices against the test environment's kube-apiserver
//! (`make testenv`): the discovered set follows slices as endpoints are added, made not ready,
//! terminate and are removed; and `prapi batch --products-service` serves batches from the pods
//! it discovers. Skipped (visibly) without the environment; fails under `make test`.

mod batch_support;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use prapi::clock::MonotonicClock;
use prapi::lb::discovery::{DEFAULT_DEBOUNCE, SERVICE_NAME_LABEL};
use prapi::lb::{Balancer, BalancerConfig, ServiceRef, watch_endpoint_slices};
use prapi_e2e::kit::{PATIENCE, TestNamespace};
use prapi_e2e::{Part, TestEnv};
use serde_json::{Value, json};

/// A selector-less Service (so no Kubernetes controller manages its slices) named `name`.
async fn service(client: &Client, ns: &str, name: &str) {
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    }))
    .expect("service");
    Api::<Service>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &svc)
        .await
        .expect("create service");
}

/// An endpoint of a slice: address, ready, terminating (`None` leaves the condition unset).
type Ep<'a> = (&'a str, Option<bool>, Option<bool>);

fn slice(name: &str, service: &str, port: u16, endpoints: &[Ep<'_>]) -> EndpointSlice {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(addr, ready, terminating)| {
            let mut conditions = serde_json::Map::new();
            if let Some(r) = ready {
                conditions.insert("ready".into(), json!(r));
            }
            if let Some(t) = terminating {
                conditions.insert("terminating".into(), json!(t));
            }
            json!({"addresses": [addr], "conditions": conditions})
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": {
                SERVICE_NAME_LABEL: service,
                "endpointslice.kubernetes.io/managed-by": "prapi-tests",
            },
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": endpoints,
    }))
    .expect("endpoint slice")
}

/// Creates or replaces `slice`.
async fn put(api: &Api<EndpointSlice>, slice: EndpointSlice) {
    let name = slice.metadata.name.clone().expect("slice name");
    match api.get_opt(&name).await.expect("get slice") {
        Some(current) => {
            let mut next = slice;
            next.metadata.resource_version = current.metadata.resource_version;
            api.replace(&name, &PostParams::default(), &next)
                .await
                .expect("replace slice");
        }
        None => {
            api.create(&PostParams::default(), &slice)
                .await
                .expect("create slice");
        }
    }
}

/// Waits until the balancer's pods are exactly `expected`.
async fn wait_for(balancer: &Balancer, expected: &[&str], step: &str) {
    let result = tokio::time::timeout(PATIENCE, async {
        loop {
            let now: Vec<String> = balancer.endpoints().iter().map(|e| e.to_string()).collect();
            if now == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    if result.is_err() {
        panic!(
            "{step}: discovered {:?}, expected {expected:?} (after {PATIENCE:?})",
            balancer.endpoints()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovered_pods_follow_endpoint_slices() {
    let Some(env) = TestEnv::get_for(&[Part::Kubernetes]) else {
        return;
    };
    let client = env.kube_client().await;
    let ns = TestNamespace::create(&env, &client, "lbdisc").await;
    service(&client, ns.name(), "products").await;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns.name());
    // Another service's slice in the same namespace: never part of the ring.
    put(
        &slices,
        slice("other-a", "other", 8080, &[("10.9.9.9", None, None)]),
    )
    .await;
    put(
        &slices,
        slice(
            "products-a",
            "products",
            8080,
            &[("10.0.0.1", Some(true), None), ("10.0.0.2", None, None)],
        ),
    )
    .await;

    let balancer = Arc::new(Balancer::new(
        BalancerConfig::default(),
        Arc::new(MonotonicClock::new()),
    ));
    let service_ref = ServiceRef::parse(&format!("{}/products", ns.name())).expect("service ref");
    let watch = tokio::spawn(watch_endpoint_slices(
        client.clone(),
        service_ref,
        Some("http".into()),
        Arc::clone(&balancer),
        DEFAULT_DEBOUNCE,
    ));

    // The initial listing.
    wait_for(
        &balancer,
        &["http://10.0.0.1:8080", "http://10.0.0.2:8080"],
        "initial listing",
    )
    .await;

    // Pods added: one more in the first slice, and a second slice on another port.
    put(
        &slices,
        slice(
            "products-a",
            "products",
            8080,
            &[
                ("10.0.0.1", Some(true), None),
                ("10.0.0.2", None, None),
                ("10.0.0.3", Some(true), Some(false)),
            ],
        ),
    )
    .await;
    put(
        &slices,
        slice(
            "products-b",
            "products",
            9090,
            &[("10.0.1.1", Some(true), None)],
        ),
    )
    .await;
    let four = [
        "http://10.0.0.1:8080",
        "http://10.0.0.2:8080",
        "http://10.0.0.3:8080",
        "http://10.0.1.1:9090",
    ];
    wait_for(&balancer, &four, "pods added").await;

    // A pod made not ready leaves the ring.
    put(
        &slices,
        slice(
            "products-a",
            "products",
            8080,
            &[
                ("10.0.0.1", Some(true), None),
                ("10.0.0.2", Some(false), None),
                ("10.0.0.3", Some(true), Some(false)),
            ],
        ),
    )
    .await;
    wait_for(
        &balancer,
        &[four[0], four[2], four[3]],
        "10.0.0.2 not ready",
    )
    .await;

    // A terminating pod (still ready) leaves; a pod removed from its slice leaves.
    put(
        &slices,
        slice(
            "products-a",
            "products",
            8080,
            &[
                ("10.0.0.2", Some(true), None),
                ("10.0.0.3", Some(true), Some(true)),
            ],
        ),
    )
    .await;
    wait_for(
        &balancer,
        &["http://10.0.0.2:8080", four[3]],
        "10.0.0.1 removed, 10.0.0.3 terminating, 10.0.0.2 ready again",
    )
    .await;

    // A whole slice deleted.
    slices
        .delete("products-b", &DeleteParams::default())
        .await
        .expect("delete slice");
    wait_for(&balancer, &["http://10.0.0.2:8080"], "slice b deleted").await;

    watch.abort();
    drop(ns);
}

/// `prapi batch --products-service NAMESPACE/NAME` watches the Service's EndpointSlices with the
/// kubeconfig of its environment: without pods it is alive but not ready and answers batches with
/// 503; once a slice lists a ready pod it is ready; when the pods go, it is not ready again.
///
/// The pods here are addresses nobody listens on and no batch is sent to them: the API server
/// refuses loopback addresses in slices, and tests only talk to loopback. Fan-out to real
/// processes is covered by `batch_http.rs` (static endpoints) and the discovered set by the test
/// above; this test covers the wiring between them in the real binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_process_is_ready_only_with_discovered_pods() {
    let Some(env) = TestEnv::get_for(&[Part::Kubernetes]) else {
        return;
    };
    let client = env.kube_client().await;
    let ns = TestNamespace::create(&env, &client, "lbbatch").await;
    service(&client, ns.name(), "products").await;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns.name());

    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = env.kubeconfig().display().to_string();
    let port = batch_support::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let log = dir.path().join("batch.log");
    let out = std::fs::File::create(&log).expect("log");
    let child = std::process::Command::new(batch_support::PRAPI)
        .args([
            "batch",
            "--countries",
            "de",
            "--products-service",
            &format!("{}/products", ns.name()),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("PRAPI_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .spawn()
        .expect("spawn prapi batch");
    let _batch = KillOnDrop(child);
    let readyz = || async {
        reqwest::get(format!("{base}/readyz"))
            .await
            .map(|r| r.status().as_u16())
            .ok()
    };
    let wait_readyz = |want: u16, step: &'static str| {
        let log = log.clone();
        async move {
            tokio::time::timeout(PATIENCE, async {
                while readyz().await != Some(want) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{step}: /readyz never answered {want}:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        }
    };

    wait_readyz(503, "no slices yet").await;
    let resp = batch_support::get(&format!("{base}/products?ids=P1,P2"), &[]).await;
    assert_eq!(resp.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = resp.json().await.expect("problem");
    assert_eq!(
        body["type"],
        "https://prapi.dev/problems/no-products-endpoints"
    );

    put(
        &slices,
        slice(
            "products-a",
            "products",
            8080,
            &[
                ("10.0.0.1", Some(true), None),
                ("10.0.0.2", Some(false), None),
            ],
        ),
    )
    .await;
    wait_readyz(200, "a ready pod discovered").await;

    put(
        &slices,
        slice(
            "products-a",
            "products",
            8080,
            &[("10.0.0.1", Some(false), None)],
        ),
    )
    .await;
    wait_readyz(503, "the only pod not ready").await;
    drop(ns);
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
