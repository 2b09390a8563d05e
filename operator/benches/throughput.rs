//! Operator throughput on the test environment, one bounded run: `make bench-operator` (which
//! starts the test environment around `cargo bench -p prapi-operator --bench throughput`).
//!
//! For each N of `PRAPI_BENCH_GROUPS` (default `25,50,100,200`), in namespaces of its own:
//!
//! 1. **Baseline**, the ceiling of this API server, its controllers, the scheduler and kwok: N
//!    MarketGroups are created and, with no operator running, the objects the operator would
//!    render for each (with the group's uid) are server-side applied by `PRAPI_BENCH_CONCURRENCY`
//!    workers (default 8, the operator's `--concurrency`), each doing one group at a time and its
//!    objects in turn, as the operator's reconciles do. Done when every Deployment has an
//!    available replica, which is all the operator's `Ready` waits for in the cluster.
//! 2. **Operator**: the release `prapi-operator run --concurrency C` leads, the same N groups are
//!    created by C workers, done when every group is `Ready` for its generation.
//! 3. **Idle** (`PRAPI_BENCH_IDLE_SECONDS`, default 30) once the operator has settled, and
//!    **restart**: SIGTERM, a new process, the time until it has reconciled N times and until it
//!    settles. Writes in both are counted by the API server (every resource but Leases: leader
//!    election and kwok's node heartbeats renew theirs) and by the operator itself.
//!
//! Requests are the API server's own `apiserver_request_total`, by verb, before and after each
//! phase: every client's (controllers, scheduler, kwok, this program's watches), so the operator's
//! share is its phase minus the baseline's. CPU seconds come from `/proc/PID/stat` of each process
//! (the test environment's PIDs from `target/testenv/pids`), RSS from `/proc/PID/status`.
//!
//! Each group asks for 20m CPU and one replica per component (`replicas.min: 1`), so 200 groups
//! fit the test environment's nodes; the run adds three kwok nodes of its own (deleted at the end)
//! so the pods of a namespace still being deleted never block the next phase.
#![allow(missing_docs)]

#[path = "../tests/support/mod.rs"]
mod support;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use prapi_e2e::{Part, TestEnv, unique_name};
use prapi_operator::crd::MarketGroup;
use prapi_operator::plan::NetworkPolicyPlan;
use prapi_operator::render::autoscaling::UpdaterAutoscaler;
use prapi_operator::render::meta::FIELD_MANAGER;
use prapi_operator::render::{Child, RenderOptions, render};
use prapi_operator::validate;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use support::{Operator, condition, eventually, metric_sum};

/// What the operator's binary gets for groups without an image (the cluster tests' value).
const IMAGE: &str = "prapi:test";
/// The API server's request verbs, and which of them write.
const VERBS: [&str; 9] = [
    "GET",
    "LIST",
    "WATCH",
    "POST",
    "PUT",
    "PATCH",
    "APPLY",
    "DELETE",
    "DELETECOLLECTION",
];
const WRITE_VERBS: [&str; 6] = [
    "POST",
    "PUT",
    "PATCH",
    "APPLY",
    "DELETE",
    "DELETECOLLECTION",
];
/// Resources whose writes the idle and restart windows report (Leases aside: see the module docs).
const WRITTEN_RESOURCES: [&str; 18] = [
    "marketgroups",
    "events",
    "serviceaccounts",
    "rolebindings",
    "configmaps",
    "services",
    "deployments",
    "poddisruptionbudgets",
    "networkpolicies",
    "horizontalpodautoscalers",
    "replicasets",
    "pods",
    "endpointslices",
    "endpoints",
    "nodes",
    "namespaces",
    "secrets",
    "serviceaccounttokens",
];
/// The test environment's processes whose CPU each phase reports.
const COMPONENTS: [&str; 5] = [
    "kube-apiserver",
    "etcd",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
];
/// Linux reports CPU times in `/proc` in USER_HZ, fixed at 100 for user space.
const TICKS_PER_SECOND: f64 = 100.0;
/// Pods each node of the run's own takes.
const BENCH_NODE_PODS: &str = "250";

struct Settings {
    groups: Vec<usize>,
    concurrency: usize,
    idle: Duration,
}

impl Settings {
    fn from_env() -> Settings {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let groups = var("PRAPI_BENCH_GROUPS")
            .unwrap_or_else(|| "25,50,100,200".into())
            .split(',')
            .map(|n| {
                n.trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=500).contains(n))
                    .unwrap_or_else(|| {
                        panic!("PRAPI_BENCH_GROUPS: {n:?} is not a count in 1..=500")
                    })
            })
            .collect();
        let concurrency = var("PRAPI_BENCH_CONCURRENCY").map_or(8, |c| {
            c.parse()
                .ok()
                .filter(|c| (1..=64).contains(c))
                .unwrap_or_else(|| panic!("PRAPI_BENCH_CONCURRENCY: {c:?} is not in 1..=64"))
        });
        let idle = var("PRAPI_BENCH_IDLE_SECONDS").map_or(30, |s| {
            s.parse()
                .ok()
                .filter(|s| (1..=600).contains(s))
                .unwrap_or_else(|| panic!("PRAPI_BENCH_IDLE_SECONDS: {s:?} is not in 1..=600"))
        });
        Settings {
            groups,
            concurrency,
            idle: Duration::from_secs(idle),
        }
    }
}

/// The bound on one phase: generous, so a broken environment fails the run instead of hanging.
fn phase_limit(groups: usize) -> Duration {
    Duration::from_secs(120 + 3 * groups as u64)
}

/// The API server's request counters and the CPU seconds of the processes, at one moment.
#[derive(Clone, Debug, Default)]
struct Snapshot {
    /// `apiserver_request_total` by verb (all resources).
    requests: BTreeMap<&'static str, f64>,
    /// Write verbs by resource, for [`WRITTEN_RESOURCES`].
    writes: BTreeMap<(&'static str, &'static str), f64>,
    /// CPU seconds by process.
    cpu: BTreeMap<String, f64>,
    at: Option<Instant>,
}

impl Snapshot {
    async fn take(client: &Client, operator: Option<u32>) -> Snapshot {
        let req = http::Request::get("/metrics")
            .body(Vec::new())
            .expect("request");
        let text = client
            .request_text(req)
            .await
            .expect("the API server's /metrics");
        let requests = VERBS
            .iter()
            .map(|v| {
                (
                    *v,
                    metric_sum(&text, "apiserver_request_total", &[("verb", v)]),
                )
            })
            .collect();
        let writes = WRITE_VERBS
            .iter()
            .flat_map(|v| WRITTEN_RESOURCES.iter().map(move |r| (*v, *r)))
            .map(|(v, r)| {
                let n = metric_sum(
                    &text,
                    "apiserver_request_total",
                    &[("verb", v), ("resource", r)],
                );
                ((v, r), n)
            })
            .collect();
        let mut cpu: BTreeMap<String, f64> = COMPONENTS
            .iter()
            .filter_map(|c| Some((c.to_string(), cpu_seconds(component_pid(c)?)?)))
            .collect();
        if let Some(pid) = operator
            && let Some(s) = cpu_seconds(pid)
        {
            cpu.insert("operator".into(), s);
        }
        Snapshot {
            requests,
            writes,
            cpu,
            at: Some(Instant::now()),
        }
    }

    /// What happened between `before` and `self`.
    fn since(&self, before: &Snapshot) -> Delta {
        let sub = |a: f64, b: Option<&f64>| a - b.copied().unwrap_or(0.0);
        Delta {
            requests: self
                .requests
                .iter()
                .map(|(k, v)| (*k, sub(*v, before.requests.get(k))))
                .collect(),
            writes: self
                .writes
                .iter()
                .map(|(k, v)| (*k, sub(*v, before.writes.get(k))))
                .filter(|(_, v)| *v > 0.0)
                .collect(),
            cpu: self
                .cpu
                .iter()
                .map(|(k, v)| (k.clone(), sub(*v, before.cpu.get(k))))
                .collect(),
            secs: match (self.at, before.at) {
                (Some(a), Some(b)) => a.duration_since(b).as_secs_f64(),
                _ => 0.0,
            },
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Delta {
    requests: BTreeMap<&'static str, f64>,
    writes: BTreeMap<(&'static str, &'static str), f64>,
    cpu: BTreeMap<String, f64>,
    secs: f64,
}

impl Delta {
    fn total(&self) -> f64 {
        self.requests.values().sum()
    }

    fn write_total(&self) -> f64 {
        WRITE_VERBS
            .iter()
            .map(|v| self.requests.get(v).copied().unwrap_or(0.0))
            .sum()
    }

    /// Writes of [`WRITTEN_RESOURCES`] as `verb resource: n` (empty: none).
    fn writes_text(&self) -> String {
        let parts: Vec<String> = self
            .writes
            .iter()
            .map(|((v, r), n)| format!("{v} {r}: {n}"))
            .collect();
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }

    fn per_group_text(&self, groups: usize) -> String {
        let n = groups as f64;
        let verbs: Vec<String> = self
            .requests
            .iter()
            .filter(|(_, v)| **v > 0.0)
            .map(|(k, v)| format!("{k} {:.1}", v / n))
            .collect();
        format!(
            "{:.1} requests/group ({:.1} writes): {}",
            self.total() / n,
            self.write_total() / n,
            verbs.join(", ")
        )
    }

    fn cpu_text(&self) -> String {
        let parts: Vec<String> = self
            .cpu
            .iter()
            .map(|(k, v)| format!("{k} {v:.1}"))
            .collect();
        format!("CPU s: {}", parts.join(", "))
    }
}

fn component_pid(name: &str) -> Option<u32> {
    let path = prapi_e2e::workspace_root().join(format!("target/testenv/pids/{name}.pid"));
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// User plus system CPU seconds of a process.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces): state is the
    // 3rd field of the line, utime and stime the 14th and 15th.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// A field of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The spec every group gets: the run's two empty topics (the bootstrap gate opens at the first
/// lag reading), small requests and one replica per component.
fn spec(bootstrap: &str, topics: &(String, String)) -> Value {
    let small = json!({"requests": {"cpu": "20m", "memory": "64Mi"}, "limits": {"memory": "1Gi"}});
    json!({
        "countries": ["de", "at"],
        "products": {"resources": small, "replicas": {"min": 1, "max": 2}},
        "batch": {"resources": small, "replicas": {"min": 1, "max": 2}},
        "updater": {"resources": small, "kafka": {
            "bootstrapServers": bootstrap, "productsTopic": topics.0, "offersTopic": topics.1,
        }},
    })
}

fn group_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("g{i:03}")).collect()
}

async fn create(api: &Api<MarketGroup>, ns: &str, name: &str, spec: &Value) -> MarketGroup {
    let mg: MarketGroup =
        serde_json::from_value(support::group(ns, name, spec.clone())).expect("MarketGroup");
    api.create(&PostParams::default(), &mg)
        .await
        .unwrap_or_else(|e| panic!("create MarketGroup {name}: {e}"))
}

/// What the operator applies for `mg` with its default flags (NetworkPolicies on, no ingress
/// namespaces, the HPA on lag since the test environment has no KEDA, no PodMonitor).
fn rendered(mg: &MarketGroup, ns: &str) -> Vec<Child> {
    let plan = validate::plan(mg, IMAGE, ns)
        .expect("a valid spec")
        .with_network_policy(Some(NetworkPolicyPlan::default()));
    render(
        &plan,
        RenderOptions {
            updater_autoscaler: UpdaterAutoscaler::ExternalMetricHpa,
            pod_monitor: false,
        },
    )
    .expect("renders")
}

/// Waits until `done` holds for `want` objects of `api` at once (a watch: no polling).
async fn wait_for<K>(api: Api<K>, want: usize, limit: Duration, what: &str, done: fn(&K) -> bool)
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let watch = async {
        let mut ok = BTreeSet::new();
        let mut stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(obj) = stream.try_next().await.expect("watch") {
            let name = obj.meta().name.clone().unwrap_or_default();
            if done(&obj) {
                ok.insert(name);
            } else {
                ok.remove(&name);
            }
            if ok.len() >= want {
                return;
            }
        }
    };
    tokio::time::timeout(limit, watch)
        .await
        .unwrap_or_else(|_| panic!("gave up waiting ({limit:?}): {what}"));
}

fn deployment_available(d: &Deployment) -> bool {
    d.status
        .as_ref()
        .is_some_and(|s| s.available_replicas.unwrap_or(0) > 0)
}

fn group_ready(mg: &MarketGroup) -> bool {
    let generation = mg.metadata.generation;
    mg.status
        .as_ref()
        .is_some_and(|s| s.observed_generation == generation)
        && condition(mg, "Ready").is_some_and(|c| c.status == "True")
        && condition(mg, "Progressing").is_some_and(|c| c.status == "False")
}

struct Run {
    client: Client,
    env: TestEnv,
    settings: Settings,
    spec: Value,
}

/// One phase's figures.
struct Phase {
    secs: f64,
    delta: Delta,
    load: String,
}

impl Phase {
    fn rate(&self, groups: usize) -> f64 {
        groups as f64 / self.secs
    }
}

impl Run {
    fn concurrency(&self) -> usize {
        self.settings.concurrency
    }

    async fn namespace(&self, prefix: &str) -> String {
        let name = unique_name(prefix);
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": name}})).expect("namespace");
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
        // Pods can be created once the namespace's default ServiceAccount exists.
        let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(self.client.clone(), &name);
        eventually("the namespace's default ServiceAccount", || async {
            sa.get_opt("default").await.ok().flatten().map(|_| ())
        })
        .await;
        name
    }

    /// Deletes the namespace (MarketGroup finalizers first: no operator runs any more) and waits
    /// until it is gone with its pods, so the next phase starts on a quiet cluster.
    async fn delete_namespace(&self, ns: &str) -> f64 {
        let started = Instant::now();
        let groups: Api<MarketGroup> = Api::namespaced(self.client.clone(), ns);
        let list = groups
            .list_metadata(&Default::default())
            .await
            .expect("list groups");
        for g in list.items {
            if g.metadata.finalizers.is_some_and(|f| !f.is_empty()) {
                groups
                    .patch(
                        g.metadata.name.as_deref().unwrap_or_default(),
                        &PatchParams::default(),
                        &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
                    )
                    .await
                    .expect("strip the finalizer");
            }
        }
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        namespaces
            .delete(ns, &DeleteParams::background())
            .await
            .expect("delete namespace");
        tokio::time::timeout(Duration::from_secs(600), async {
            while namespaces.get_opt(ns).await.ok().flatten().is_some() {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("namespace {ns} not gone after 600 s"));
        started.elapsed().as_secs_f64()
    }

    /// Creates the group, then server-side applies each of its objects in turn, as a reconcile of
    /// the operator does.
    async fn apply_group(
        &self,
        api: &Api<MarketGroup>,
        ns: &str,
        name: &str,
    ) -> (String, Vec<Child>) {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let mg = create(api, ns, name, &self.spec).await;
        let children = rendered(&mg, ns);
        for child in &children {
            let dynamic: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), ns, &child.kind.api_resource());
            dynamic
                .patch(&child.name, &params, &Patch::Apply(&child.object))
                .await
                .unwrap_or_else(|e| panic!("apply {:?} {}: {e}", child.kind, child.name));
        }
        (name.to_string(), children)
    }

    /// The baseline: create the groups and apply what the operator would, no operator running.
    async fn baseline(&self, groups: usize) -> (Phase, Vec<Child>) {
        let ns = self.namespace("bench-base").await;
        let api: Api<MarketGroup> = Api::namespaced(self.client.clone(), &ns);
        let names = group_names(groups);
        let before = Snapshot::take(&self.client, None).await;
        let load = load_average();
        let started = Instant::now();
        let available = tokio::spawn(wait_for(
            Api::<Deployment>::namespaced(self.client.clone(), &ns),
            groups * 3,
            phase_limit(groups),
            "every Deployment of the baseline available",
            deployment_available,
        ));
        let mut applied: Vec<(String, Vec<Child>)> = futures::stream::iter(names.iter())
            .map(|name| self.apply_group(&api, &ns, name))
            .buffer_unordered(self.concurrency())
            .collect()
            .await;
        available.await.expect("the baseline's watch");
        let secs = started.elapsed().as_secs_f64();
        let after = Snapshot::take(&self.client, None).await;
        let load = format!("{load} → {}", load_average());
        let gone = self.delete_namespace(&ns).await;
        println!("  (baseline namespace deleted in {gone:.0} s)");
        applied.sort_by(|a, b| a.0.cmp(&b.0));
        let first = applied
            .into_iter()
            .next()
            .map(|(_, c)| c)
            .unwrap_or_default();
        (
            Phase {
                secs,
                delta: after.since(&before),
                load,
            },
            first,
        )
    }
}

/// The operator phase, its idle minute and its restart.
struct OperatorRun {
    phase: Phase,
    rss_before_kib: u64,
    rss_ready_kib: u64,
    settle_secs: f64,
    idle: Delta,
    idle_operator_writes: f64,
    idle_reconciles: f64,
    restart_reconciled_secs: f64,
    restart_settled_secs: f64,
    restart: Delta,
    restart_operator_writes: f64,
    restart_reconciles: f64,
}

async fn wait_leader(op: &Operator) {
    op.wait_up().await;
    eventually("the operator leads", || async {
        (op.metric("prapi_operator_leader", &[]).await? == 1.0).then_some(())
    })
    .await;
}

async fn operator_counter(op: &Operator, name: &str) -> f64 {
    op.metric(name, &[]).await.unwrap_or(f64::NAN)
}

impl Run {
    async fn operator(&self, groups: usize, baseline_objects: &[Child]) -> OperatorRun {
        let ns = self.namespace("bench-op").await;
        let concurrency = self.concurrency().to_string();
        let flags = ["--concurrency", concurrency.as_str()];
        let mut op = Operator::start(&self.env, &ns, "op-a", &flags);
        wait_leader(&op).await;
        let rss_before_kib = status_kib(op.pid(), "VmRSS").unwrap_or(0);
        let api: Api<MarketGroup> = Api::namespaced(self.client.clone(), &ns);
        let names = group_names(groups);
        let before = Snapshot::take(&self.client, Some(op.pid())).await;
        let load = load_average();
        let started = Instant::now();
        let ready = tokio::spawn(wait_for(
            api.clone(),
            groups,
            phase_limit(groups),
            "every group Ready",
            group_ready,
        ));
        futures::stream::iter(names.iter())
            .for_each_concurrent(self.concurrency(), |name| {
                let (api, ns) = (&api, &ns);
                async move {
                    create(api, ns, name, &self.spec).await;
                }
            })
            .await;
        ready.await.expect("the groups' watch");
        let secs = started.elapsed().as_secs_f64();
        let after = Snapshot::take(&self.client, Some(op.pid())).await;
        let load = format!("{load} → {}", load_average());
        let rss_ready_kib = status_kib(op.pid(), "VmRSS").unwrap_or(0);

        // The baseline applied what the operator applies: the same objects.
        let live = support::children(
            &self.client,
            &ns,
            "g000",
            &prapi_operator::render::ChildKind::ALL,
        )
        .await;
        let live_keys: BTreeSet<_> = live.keys().cloned().collect();
        let baseline_keys: BTreeSet<_> = baseline_objects
            .iter()
            .map(|c| (c.kind, c.name.clone()))
            .collect();
        assert_eq!(
            live_keys, baseline_keys,
            "the baseline applies other objects"
        );
        // The baseline's objects name their own namespace and owner; rendered for this group, the
        // same function gives what the operator applied, field by field.
        let g000 = api.get("g000").await.expect("group g000");
        for child in rendered(&g000, &ns) {
            let have =
                serde_json::to_value(&live[&(child.kind, child.name.clone())]).expect("json");
            support::is_subset(&child.object, &have, &child.name)
                .expect("the operator's object is the baseline's rendering");
        }

        let settle_started = Instant::now();
        support::settled(&op).await;
        let settle_secs = settle_started.elapsed().as_secs_f64();
        let (w0, r0) = (
            operator_counter(&op, "prapi_operator_writes_total").await,
            operator_counter(&op, "prapi_operator_reconciles_total").await,
        );
        let idle_start = Snapshot::take(&self.client, Some(op.pid())).await;
        tokio::time::sleep(self.settings.idle).await;
        let idle_end = Snapshot::take(&self.client, Some(op.pid())).await;
        let idle_operator_writes = operator_counter(&op, "prapi_operator_writes_total").await - w0;
        let idle_reconciles = operator_counter(&op, "prapi_operator_reconciles_total").await - r0;

        assert!(op.terminate(), "the operator exits cleanly on SIGTERM");
        let restart_start = Snapshot::take(&self.client, None).await;
        let restarted = Instant::now();
        let op = Operator::start(&self.env, &ns, "op-b", &flags);
        wait_leader(&op).await;
        support::eventually_within(
            phase_limit(groups),
            "every group reconciled after the restart",
            || async {
                (op.metric("prapi_operator_reconciles_total", &[]).await? >= groups as f64)
                    .then_some(())
            },
        )
        .await;
        let restart_reconciled_secs = restarted.elapsed().as_secs_f64();
        let (restart_reconciles, restart_operator_writes) = support::settled(&op).await;
        // An empty sum of floats is -0.0: counted as 0.
        let (restart_reconciles, restart_operator_writes) =
            (restart_reconciles + 0.0, restart_operator_writes + 0.0);
        let restart_settled_secs = restarted.elapsed().as_secs_f64();
        let restart_end = Snapshot::take(&self.client, Some(op.pid())).await;
        drop(op);
        let gone = self.delete_namespace(&ns).await;
        println!("  (operator namespace deleted in {gone:.0} s)");
        OperatorRun {
            phase: Phase {
                secs,
                delta: after.since(&before),
                load,
            },
            rss_before_kib,
            rss_ready_kib,
            settle_secs,
            idle: idle_end.since(&idle_start),
            idle_operator_writes,
            idle_reconciles,
            restart_reconciled_secs,
            restart_settled_secs,
            restart: restart_end.since(&restart_start),
            restart_operator_writes,
            restart_reconciles,
        }
    }
}

/// Three kwok nodes of the run's own, for room: 200 groups are 600 pods, and the pods of the
/// previous phase's namespace may still be going.
async fn add_nodes(client: &Client) -> Vec<String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut names = Vec::new();
    for (i, zone) in ["zone-a", "zone-b", "zone-c"].iter().enumerate() {
        let name = format!("prapi-bench-node-{i}");
        let node = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "type": "kwok", "kubernetes.io/arch": "amd64", "kubernetes.io/os": "linux",
                    "kubernetes.io/hostname": name, "topology.kubernetes.io/zone": zone,
                },
            },
            "status": {
                "allocatable": {"cpu": "32", "memory": "256Gi", "pods": BENCH_NODE_PODS},
                "capacity": {"cpu": "32", "memory": "256Gi", "pods": BENCH_NODE_PODS},
            },
        });
        let node: Node = serde_json::from_value(node).expect("node");
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("create node {name}: {e}"),
        }
        names.push(name);
    }
    for name in &names {
        eventually(&format!("node {name} Ready (kwok)"), || async {
            let node = nodes.get(name).await.ok()?;
            node.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
                .then_some(())
        })
        .await;
    }
    names
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "-".into()
    }
}

#[tokio::main]
async fn main() {
    let settings = Settings::from_env();
    let Some(env) = TestEnv::get_for(&[Part::Kubernetes, Part::Kafka]) else {
        eprintln!("the operator benchmark needs the test environment: make bench-operator");
        std::process::exit(1);
    };
    let Some(cluster) = support::cluster().await else {
        eprintln!("the operator benchmark needs the test environment: make bench-operator");
        std::process::exit(1);
    };
    let client = cluster.client.clone();
    let nodes = add_nodes(&client).await;
    let bootstrap = env.kafka_bootstrap_servers().to_string();
    let topics = (unique_name("bench-products"), unique_name("bench-offers"));
    support::kafka::create_topics(&bootstrap, &[&topics.0, &topics.1], 1).await;
    let run = Run {
        client: client.clone(),
        env,
        spec: spec(&bootstrap, &topics),
        settings,
    };
    println!(
        "operator throughput: groups {:?}, concurrency {}, idle window {} s, load average {}",
        run.settings.groups,
        run.concurrency(),
        run.settings.idle.as_secs(),
        load_average()
    );
    let mut rows = Vec::new();
    for &n in &run.settings.groups.clone() {
        println!("N = {n}");
        let (base, objects) = run.baseline(n).await;
        println!(
            "  baseline: {n} groups ({} objects each) applied and every Deployment available in {:.1} s = {:.2} groups/s; load {}",
            objects.len(),
            base.secs,
            base.rate(n),
            base.load
        );
        println!("    {}", base.delta.per_group_text(n));
        println!("    {}", base.delta.cpu_text());
        let op = run.operator(n, &objects).await;
        let p = &op.phase;
        let op_cpu = p.delta.cpu.get("operator").copied().unwrap_or(0.0);
        println!(
            "  operator: {n} groups Ready in {:.1} s = {:.2} groups/s, {} of the baseline; load {}",
            p.secs,
            p.rate(n),
            ratio(p.rate(n), base.rate(n)),
            p.load
        );
        println!("    {}", p.delta.per_group_text(n));
        println!(
            "    extra requests over the baseline: {:.1}/group ({:.1} writes)",
            (p.delta.total() - base.delta.total()) / n as f64,
            (p.delta.write_total() - base.delta.write_total()) / n as f64
        );
        println!("    {}", p.delta.cpu_text());
        println!(
            "    operator CPU {:.1} ms/group; RSS {} KiB idle → {} KiB Ready = {:.1} KiB/group; settled {:.1} s after Ready",
            op_cpu * 1000.0 / n as f64,
            op.rss_before_kib,
            op.rss_ready_kib,
            (op.rss_ready_kib as f64 - op.rss_before_kib as f64) / n as f64,
            op.settle_secs
        );
        println!(
            "  idle {:.0} s: operator writes {}, reconciles {}; API server writes (all clients, Leases aside): {}; {}",
            op.idle.secs,
            op.idle_operator_writes,
            op.idle_reconciles,
            op.idle.writes_text(),
            op.idle.cpu_text()
        );
        println!(
            "  restart: {n} reconciles {:.1} s after the start, settled at {:.1} s; operator writes {}, reconciles {}; API server writes (Leases aside): {}; {:.1} requests/group",
            op.restart_reconciled_secs,
            op.restart_settled_secs,
            op.restart_operator_writes,
            op.restart_reconciles,
            op.restart.writes_text(),
            op.restart.total() / n as f64,
        );
        rows.push((n, base, op));
    }
    println!();
    println!(
        "| groups | baseline s | baseline groups/s | operator s | operator groups/s | ratio | requests/group baseline → operator | writes/group baseline → operator | operator CPU ms/group | operator RSS KiB/group | idle writes | restart: reconciled s | restart writes |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (n, base, op) in &rows {
        let n = *n;
        let nf = n as f64;
        let p = &op.phase;
        println!(
            "| {n} | {:.1} | {:.2} | {:.1} | {:.2} | {} | {:.1} → {:.1} | {:.1} → {:.1} | {:.1} | {:.1} | {} (API server: {}) | {:.1} | {} (API server: {}) |",
            base.secs,
            base.rate(n),
            p.secs,
            p.rate(n),
            ratio(p.rate(n), base.rate(n)),
            base.delta.total() / nf,
            p.delta.total() / nf,
            base.delta.write_total() / nf,
            p.delta.write_total() / nf,
            p.delta.cpu.get("operator").copied().unwrap_or(0.0) * 1000.0 / nf,
            (op.rss_ready_kib as f64 - op.rss_before_kib as f64) / nf,
            op.idle_operator_writes,
            op.idle.writes.values().sum::<f64>(),
            op.restart_reconciled_secs,
            op.restart_operator_writes,
            op.restart.writes.values().sum::<f64>(),
        );
    }
    let nodes_api: Api<Node> = Api::all(client.clone());
    for name in nodes {
        let _ = nodes_api.delete(&name, &DeleteParams::default()).await;
    }
}
