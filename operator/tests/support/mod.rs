//! Helpers of the cluster tests: the cluster with the CRD installed, the operator as a real process
//! (killed by PID when dropped), the "operator and one Ready group" fixture, and metrics scraping.
//! Waiting, the client and namespaces come from [`prapi_e2e::kit`].

// Each test crate uses a part of the helpers and of what they re-export.
#![allow(dead_code, unused_imports)]

pub mod kafka;
pub mod routing;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::ApiResource;
use kube::{Client, CustomResourceExt};
pub use prapi_e2e::kit::{PATIENCE, TestNamespace, eventually, eventually_within, metric_sum};
use prapi_e2e::{Part, TestEnv};
use prapi_operator::crd::MarketGroup;
use prapi_operator::render::ChildKind;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The test environment's cluster, with the CRD installed.
pub struct Cluster {
    /// The environment.
    pub env: TestEnv,
    /// Admin client.
    pub client: Client,
}

/// The cluster, or `None` when the test environment is not running (the test is then skipped,
/// or fails under `make test`).
pub async fn cluster() -> Option<Cluster> {
    let env = TestEnv::get_for(&[Part::Kubernetes])?;
    let client = env.kube_client().await;
    install_crd(&client).await;
    Some(Cluster { env, client })
}

/// Applies the generated CRD (idempotent) and waits until it is established.
pub async fn install_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "marketgroups.prapi.dev",
        &PatchParams::apply("prapi-operator-tests").force(),
        &Patch::Apply(&MarketGroup::crd()),
    )
    .await
    .expect("the API server accepts the CRD (schema and CEL rules)");
    wait_established(&crds, "marketgroups.prapi.dev").await;
}

/// Waits until the CRD `name` is established (its kind can be served).
pub async fn wait_established(crds: &Api<CustomResourceDefinition>, name: &str) {
    eventually(&format!("CRD {name} established"), || async {
        let crd = crds.get(name).await.ok()?;
        crd.status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
            .then_some(())
    })
    .await;
}

impl Cluster {
    /// A fresh namespace for one test, deleted (MarketGroup finalizers first) when dropped.
    pub async fn namespace(&self, prefix: &str) -> TestNamespace {
        TestNamespace::create(&self.env, &self.client, prefix)
            .await
            .strip_finalizers_of(ApiResource::erase::<MarketGroup>(&()))
    }
}

/// The operator (with `flags`) watching a fresh namespace, and group `g` of `spec` once Ready.
pub struct ReadyGroup {
    /// The cluster.
    pub c: Cluster,
    /// The operator; dropped (killed) before the namespace goes.
    pub op: Operator,
    /// The group as it became Ready.
    pub mg: MarketGroup,
    /// The namespace.
    pub ns: TestNamespace,
}

/// [`ReadyGroup`] in a namespace named after `prefix`; `None` when the environment is not running.
pub async fn ready_group(prefix: &str, flags: &[&str], spec: Value) -> Option<ReadyGroup> {
    let c = cluster().await?;
    let ns = c.namespace(prefix).await;
    let op = Operator::start(&c.env, &ns, "op-a", flags);
    create_group(&c.client, &ns, &group(&ns, "g", spec)).await;
    let mg = wait_ready(&c.client, &ns, "g").await;
    Some(ReadyGroup { c, op, mg, ns })
}

/// A MarketGroup manifest in `ns`.
pub fn group(ns: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "prapi.dev/v1alpha1",
        "kind": "MarketGroup",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    })
}

/// Creates a MarketGroup from raw JSON. A group whose spec names no Kafka of its own reads two
/// new, empty topics of the test environment's Kafka: its updater has nothing to catch up on, so
/// the bootstrap gate opens at the operator's first lag reading (the gate's own tests name topics
/// with a backlog).
pub async fn create_group(client: &Client, ns: &str, manifest: &Value) {
    let mut manifest = manifest.clone();
    if manifest
        .pointer("/spec/updater/kafka/bootstrapServers")
        .is_none()
    {
        let env = TestEnv::get_for(&[Part::Kafka]).expect("the test environment's Kafka");
        let bootstrap = env.kafka_bootstrap_servers().to_string();
        let products = prapi_e2e::unique_name("prapi-empty-products");
        let offers = prapi_e2e::unique_name("prapi-empty-offers");
        kafka::create_topics(&bootstrap, &[&products, &offers], 1).await;
        let kafka = &mut manifest["spec"]["updater"]["kafka"];
        kafka["bootstrapServers"] = json!(bootstrap);
        kafka["productsTopic"] = json!(products);
        kafka["offersTopic"] = json!(offers);
    }
    let mg: MarketGroup = serde_json::from_value(manifest).expect("valid MarketGroup JSON");
    Api::<MarketGroup>::namespaced(client.clone(), ns)
        .create(&Default::default(), &mg)
        .await
        .expect("create MarketGroup");
}

/// Merge-patches a MarketGroup's spec or metadata.
pub async fn patch_group(client: &Client, ns: &str, name: &str, patch: Value) {
    Api::<MarketGroup>::namespaced(client.clone(), ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch MarketGroup");
}

/// Makes the controller look at a group again without changing its spec.
pub async fn poke(client: &Client, ns: &str, name: &str, n: u32) {
    patch_group(
        client,
        ns,
        name,
        json!({"metadata": {"annotations": {"prapi.dev/test-poke": n.to_string()}}}),
    )
    .await;
}

/// The group, once its `Ready` condition is True for its current generation.
pub async fn wait_ready(client: &Client, ns: &str, name: &str) -> MarketGroup {
    let api: Api<MarketGroup> = Api::namespaced(client.clone(), ns);
    eventually(&format!("{ns}/{name} Ready"), || async {
        let mg = api.get(name).await.ok()?;
        let generation = mg.metadata.generation?;
        let status = mg.status.as_ref()?;
        (status.observed_generation == Some(generation)
            && condition(&mg, "Ready").is_some_and(|c| c.status == "True")
            && condition(&mg, "Progressing").is_some_and(|c| c.status == "False"))
        .then_some(mg.clone())
    })
    .await
}

/// A condition of the group's status.
pub fn condition<'a>(
    mg: &'a MarketGroup,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    mg.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// Every object of the group's children kinds carrying the group's labels, by (kind, name).
pub async fn children(
    client: &Client,
    ns: &str,
    group: &str,
    kinds: &[ChildKind],
) -> BTreeMap<(ChildKind, String), DynamicObject> {
    let mut out = BTreeMap::new();
    let lp = ListParams::default().labels(&prapi_operator::render::meta::children_selector(group));
    for &kind in kinds {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), ns, &kind.api_resource());
        let list = match api.list(&lp).await {
            Ok(l) => l,
            Err(kube::Error::Api(s)) if s.code == 404 => continue,
            Err(e) => panic!("list {kind:?}: {e}"),
        };
        let ar = kind.api_resource();
        for mut o in list.items {
            // List items come without their type; the rendered objects have it.
            o.types = Some(kube::core::TypeMeta {
                api_version: ar.api_version.clone(),
                kind: ar.kind.clone(),
            });
            let name = o.metadata.name.clone().unwrap_or_default();
            out.insert((kind, name), o);
        }
    }
    out
}

/// The kinds every cluster serves (without KEDA's), as the operator watches them.
pub fn core_kinds() -> Vec<ChildKind> {
    ChildKind::watched().collect()
}

/// `(kind, name) -> what only a write by the operator changes`: the resourceVersion for kinds
/// without a status (no one else writes them), and for the others the operator's server-side-apply
/// entries in managedFields (their time and fields change whenever an apply changes anything, spec
/// or metadata). Status updates by controllers and the autoscalers' replica changes do not count.
pub async fn fingerprints(
    client: &Client,
    ns: &str,
    group: &str,
) -> BTreeMap<(ChildKind, String), String> {
    children(client, ns, group, &ChildKind::ALL)
        .await
        .into_iter()
        .map(|(k, o)| {
            let has_status = matches!(
                k.0,
                ChildKind::Deployment
                    | ChildKind::Service
                    | ChildKind::PodDisruptionBudget
                    | ChildKind::HorizontalPodAutoscaler
                    | ChildKind::ScaledObject
            );
            let fp = if has_status {
                let ours: Vec<String> = o
                    .metadata
                    .managed_fields
                    .iter()
                    .flatten()
                    .filter(|m| {
                        m.manager.as_deref() == Some(prapi_operator::render::meta::FIELD_MANAGER)
                    })
                    .map(|m| {
                        format!(
                            "{:?}/{:?}/{}",
                            m.operation,
                            m.time.as_ref().map(|t| t.0.to_string()),
                            serde_json::to_string(&m.fields_v1).unwrap_or_default()
                        )
                    })
                    .collect();
                format!("ours={ours:?}")
            } else {
                format!("rv={}", o.metadata.resource_version.unwrap_or_default())
            };
            (k, fp)
        })
        .collect()
}

/// Counts changes (after the initial listing) to objects of `kinds` in `ns` until `stop` fires:
/// every write that changed an object, by anyone.
pub async fn count_changes(
    client: Client,
    ns: String,
    kinds: Vec<ApiResourceKind>,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> BTreeMap<String, u64> {
    use futures::StreamExt;
    use kube::runtime::watcher;
    let mut streams = Vec::new();
    for (label, ar) in kinds {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
        let s = watcher::watcher(api, watcher::Config::default())
            .map(move |e| (label.clone(), e))
            .boxed();
        streams.push(s);
    }
    let mut merged = futures::stream::select_all(streams);
    let mut counts = BTreeMap::new();
    let mut ready = std::collections::BTreeSet::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            next = merged.next() => {
                let Some((label, event)) = next else { break };
                match event {
                    Ok(watcher::Event::InitDone) => { ready.insert(label); }
                    Ok(watcher::Event::Apply(_)) | Ok(watcher::Event::Delete(_)) if ready.contains(&label) => {
                        *counts.entry(label).or_insert(0) += 1;
                    }
                    _ => {}
                }
            }
        }
    }
    counts
}

/// A label and the API resource to watch.
pub type ApiResourceKind = (String, kube::core::ApiResource);

/// `(kind, name) -> resourceVersion` of the group's children.
pub async fn resource_versions(
    client: &Client,
    ns: &str,
    group: &str,
) -> BTreeMap<(ChildKind, String), String> {
    children(client, ns, group, &ChildKind::ALL)
        .await
        .into_iter()
        .map(|(k, o)| (k, o.metadata.resource_version.unwrap_or_default()))
        .collect()
}

/// Whether every field of `want` is in `have` with the same value (`have` may have more: server
/// defaults). Lists must have the same length and match element-wise.
pub fn is_subset(want: &Value, have: &Value, path: &str) -> Result<(), String> {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => {
            for (k, v) in w {
                let Some(hv) = h.get(k) else {
                    return Err(format!("{path}.{k} missing"));
                };
                is_subset(v, hv, &format!("{path}.{k}"))?;
            }
            Ok(())
        }
        (Value::Array(w), Value::Array(h)) => {
            if w.len() != h.len() {
                return Err(format!("{path}: {} items, live has {}", w.len(), h.len()));
            }
            for (i, (a, b)) in w.iter().zip(h).enumerate() {
                is_subset(a, b, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        _ if want == have => Ok(()),
        _ => Err(format!("{path}: want {want}, live {have}")),
    }
}

/// A `prapi-operator run` process, killed (by PID) when dropped.
pub struct Operator {
    child: Option<Child>,
    /// Its /metrics port.
    pub port: u16,
    /// Its external metrics API's TLS port.
    pub external_metrics_port: u16,
    /// Its identity in leader election.
    pub identity: String,
    /// Its log file.
    pub log: PathBuf,
}

/// A port for an operator to listen on. Taken below Linux's ephemeral range (32768–60999): the
/// port is only probed here and bound later by the operator, and a port from that range may be
/// given to any outgoing connection on the machine in between (a run saw "Address already in
/// use"). Each call probes the next port of this process's own walk through 20000–31999.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7_919) % SPAN;
    for _ in 0..SPAN {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(LOW + (start + step) % SPAN).expect("below 32000");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN)
}

fn log_dir() -> PathBuf {
    let dir = prapi_e2e::workspace_root().join("target/operator-test-logs");
    std::fs::create_dir_all(&dir).expect("log dir");
    dir
}

impl Operator {
    /// Starts the operator watching `ns` (lease in `ns` too), with extra flags.
    pub fn start(env: &TestEnv, ns: &str, identity: &str, extra: &[&str]) -> Operator {
        Self::start_with_env(env, ns, identity, extra, &[])
    }

    /// Like [`Operator::start`], with extra environment variables (e.g. AWS endpoints).
    pub fn start_with_env(
        env: &TestEnv,
        ns: &str,
        identity: &str,
        extra: &[&str],
        vars: &[(&str, &str)],
    ) -> Operator {
        Self::spawn(&env.kubeconfig(), ns, ns, identity, extra, vars)
    }

    /// Like [`Operator::start`], with the given kubeconfig (e.g. one that impersonates a
    /// ServiceAccount).
    pub fn start_as(kubeconfig: &Path, ns: &str, identity: &str, extra: &[&str]) -> Operator {
        Self::spawn(kubeconfig, ns, ns, identity, extra, &[])
    }

    /// Like [`Operator::start_as`], watching the namespaces of `watch` (comma-separated) with
    /// its lease in `lease_ns`.
    pub fn start_watching(
        kubeconfig: &Path,
        lease_ns: &str,
        watch: &str,
        identity: &str,
        extra: &[&str],
    ) -> Operator {
        Self::spawn(kubeconfig, lease_ns, watch, identity, extra, &[])
    }

    fn spawn(
        kubeconfig: &Path,
        ns: &str,
        watch: &str,
        identity: &str,
        extra: &[&str],
        vars: &[(&str, &str)],
    ) -> Operator {
        let port = free_port();
        let external_metrics_port = free_port();
        let log = log_dir().join(format!("{ns}-{identity}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let listen = format!("127.0.0.1:{port}");
        let external_metrics_listen = format!("127.0.0.1:{external_metrics_port}");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_prapi-operator"));
        cmd.args([
            "run",
            "--watch-namespaces",
            watch,
            "--lease-namespace",
            ns,
            "--identity",
            identity,
            "--listen",
            &listen,
            "--external-metrics-listen",
            &external_metrics_listen,
            "--default-image",
            "prapi:test",
        ])
        .args(extra);
        // A PodMonitor only for tests that ask: the PodMonitor CRD is cluster-wide, and a test
        // installing it must not change what the operators of the other tests render.
        if !extra.contains(&"--pod-monitor") {
            cmd.args(["--pod-monitor", "off"]);
        }
        // The test process may carry PRAPI_* variables of the environment; the operator gets only
        // its flags.
        for (k, _) in std::env::vars() {
            if k.starts_with("PRAPI_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(vars.iter().copied());
        cmd.env("KUBECONFIG", kubeconfig)
            .env(
                prapi_common::logs::FILTER_VAR,
                "info,kube_lease_manager=warn",
            )
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file);
        let child = cmd.spawn().expect("start prapi-operator");
        Operator {
            child: Some(child),
            port,
            external_metrics_port,
            identity: identity.to_string(),
            log,
        }
    }

    /// PID of the process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// SIGKILL: no cleanup, the lease is not released.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait for a clean exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        for _ in 0..300 {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }

    /// Peak resident set size (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// The /metrics text, if the server answers.
    pub async fn metrics(&self) -> Option<String> {
        http_get(self.port, "/metrics").await
    }

    /// Sum of the samples of `name` whose labels contain every `k="v"` of `labels`.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        Some(metric_sum(&self.metrics().await?, name, labels))
    }

    /// Waits until the operator serves /metrics.
    pub async fn wait_up(&self) {
        eventually(&format!("operator {} serving", self.identity), || async {
            self.metrics().await.map(|_| ())
        })
        .await;
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until the operator's reconcile and write counts stop moving (same over 2 s) and returns
/// them.
pub async fn settled(op: &Operator) -> (f64, f64) {
    tokio::time::timeout(PATIENCE, async {
        let mut last = None;
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let Some(m) = op.metrics().await else {
                continue;
            };
            let now = (
                metric_sum(&m, "prapi_operator_reconciles_total", &[]),
                metric_sum(&m, "prapi_operator_writes_total", &[]),
            );
            if last == Some(now) {
                return now;
            }
            last = Some(now);
        }
    })
    .await
    .expect("the operator settles")
}

/// A copy of the test environment's kubeconfig that impersonates ServiceAccount `ns/name`, written
/// under target/.
pub fn impersonating_kubeconfig(env: &TestEnv, ns: &str, name: &str) -> PathBuf {
    let text = std::fs::read_to_string(env.kubeconfig()).expect("read kubeconfig");
    let mut kc: Value = serde_norway::from_str(&text).expect("kubeconfig is YAML");
    let groups = json!([
        "system:serviceaccounts",
        format!("system:serviceaccounts:{ns}"),
        "system:authenticated"
    ]);
    for user in kc["users"].as_array_mut().expect("users") {
        user["user"]["as"] = json!(format!("system:serviceaccount:{ns}:{name}"));
        user["user"]["as-groups"] = groups.clone();
    }
    let path = log_dir().join(format!("{ns}-{name}.kubeconfig"));
    std::fs::write(&path, serde_norway::to_string(&kc).expect("yaml")).expect("write kubeconfig");
    path
}

/// Minimal HTTP/1.0 GET on loopback.
pub async fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200")
        .then(|| body.to_string())
        .or_else(|| head.starts_with("HTTP/1.1 200").then(|| body.to_string()))
}

/// The API server's own count of mutating requests (`apiserver_request_total`) for `resources`.
pub async fn apiserver_writes(client: &Client, resources: &[&str]) -> f64 {
    let req = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("request");
    let text = client.request_text(req).await.expect("apiserver /metrics");
    ["POST", "PUT", "PATCH", "APPLY", "DELETE"]
        .iter()
        .flat_map(|verb| resources.iter().map(move |r| (verb, r)))
        .map(|(verb, r)| {
            metric_sum(
                &text,
                "apiserver_request_total",
                &[("verb", verb), ("resource", r)],
            )
        })
        .sum()
}

/// A minimal CRD of an add-on's namespaced kind, any content accepted: enough for its API to be
/// served (what the operator detects).
fn addon_crd(group: &str, version: &str, kind: &str, plural: &str) -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {
            "group": group,
            "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(), "listKind": format!("{kind}List")},
            "scope": "Namespaced",
            "versions": [{
                "name": version, "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}
            }]
        }
    }))
    .expect("add-on CRD fixture")
}

/// KEDA's ScaledObject CRD.
pub fn keda_crd() -> CustomResourceDefinition {
    addon_crd("keda.sh", "v1alpha1", "ScaledObject", "scaledobjects")
}

/// KEDA's TriggerAuthentication CRD (KEDA installs it with the ScaledObject's).
pub fn trigger_authentication_crd() -> CustomResourceDefinition {
    addon_crd(
        "keda.sh",
        "v1alpha1",
        "TriggerAuthentication",
        "triggerauthentications",
    )
}

/// The Prometheus Operator's PodMonitor CRD.
pub fn pod_monitor_crd() -> CustomResourceDefinition {
    addon_crd("monitoring.coreos.com", "v1", "PodMonitor", "podmonitors")
}
