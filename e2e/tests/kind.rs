//! The e2e suite on kind (`make e2e`): prapi installed as users install it — images built from
//! the Dockerfiles, the chart installed with helm — on a real cluster whose pods run, with
//! Skipper as the ingress. Every request goes to 127.0.0.1 (the ingress, `prapi local`) or to the
//! kind network's gateway (Kafka, DynamoDB), both set up by `e2e/kind/up.sh`.
//!
//! Reads `target/kind/env` (or the process environment when `PRAPI_KIND=1`). Without it the tests
//! are skipped with a note, unless `PRAPI_REQUIRE_KIND=1` (set by `make e2e`), when they fail.
//! Every wait is bounded (the test kit's `PATIENCE`); each test removes the namespace and topics
//! it made.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Client, ResourceExt as _};
use prapi_e2e::kit::{eventually, kube_client_for};
use prapi_e2e::{parse_env_file, unique_name, workspace_root};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

/// The variable that makes the suite fail instead of skipping when kind is not up.
const REQUIRE_VAR: &str = "PRAPI_REQUIRE_KIND";

/// The kind environment as `e2e/kind/up.sh` wrote it.
struct Kind {
    vars: BTreeMap<String, String>,
    client: Client,
    http: reqwest::Client,
}

impl Kind {
    /// The environment, or `None` after saying why the test is skipped.
    async fn get() -> Option<Kind> {
        match Self::load().await {
            Ok(kind) => Some(kind),
            Err(reason) => {
                if std::env::var(REQUIRE_VAR).is_ok_and(|v| v == "1") {
                    panic!("the kind environment is required ({REQUIRE_VAR}=1): {reason}");
                }
                let _ = writeln!(
                    std::io::stderr(),
                    "skipped: kind environment not running (make kind-up): {reason}"
                );
                None
            }
        }
    }

    async fn load() -> Result<Kind, String> {
        let vars: BTreeMap<String, String> = if std::env::var("PRAPI_KIND").is_ok_and(|v| v == "1")
        {
            std::env::vars().collect()
        } else {
            let path = workspace_root().join("target/kind/env");
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            parse_env_file(&text).map_err(|e| format!("{}: {e}", path.display()))?
        };
        let kubeconfig = vars.get("KUBECONFIG").ok_or("no KUBECONFIG")?;
        let client = kube_client_for(Path::new(kubeconfig))
            .await
            .map_err(|e| format!("{kubeconfig}: {e}"))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Kind { vars, client, http })
    }

    fn var(&self, name: &str) -> &str {
        self.vars
            .get(name)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("{name} is not in the kind env file"))
    }

    fn ingress(&self) -> &str {
        self.var("PRAPI_INGRESS_URL")
    }

    fn operator_namespace(&self) -> &str {
        self.var("PRAPI_OPERATOR_NAMESPACE")
    }

    /// DynamoDB (dynalite) as the cluster's pods use it.
    fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(self.var("AWS_REGION").to_string()))
            .credentials_provider(Credentials::new(
                self.var("AWS_ACCESS_KEY_ID"),
                self.var("AWS_SECRET_ACCESS_KEY"),
                None,
                None,
                "kind",
            ))
            .endpoint_url(self.var("AWS_ENDPOINT_URL_DYNAMODB"))
            .build();
        aws_sdk_dynamodb::Client::from_conf(config)
    }
}

/// The `prapi` binary `make e2e` builds (for `gen` and `local`).
fn prapi_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("PRAPI_BIN") {
        return bin.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from);
    let bin = target.join("debug/prapi");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p prapi-dataplane --bin prapi` (make e2e does)",
        bin.display()
    );
    bin
}

fn marketgroups(client: &Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("prapi.dev", "v1alpha1", "MarketGroup");
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk))
}

/// A namespace of the test's own, deleted (with everything in it) when dropped.
struct TestNamespace {
    kubeconfig: String,
    name: String,
}

impl TestNamespace {
    async fn create(kind: &Kind, prefix: &str) -> TestNamespace {
        let client = &kind.client;
        let name = unique_name(prefix);
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": name}})).expect("namespace");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
        TestNamespace {
            kubeconfig: kind.var("KUBECONFIG").to_string(),
            name,
        }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let (kubeconfig, name) = (self.kubeconfig.clone(), self.name.clone());
        // Drop cannot await: delete on a thread of its own (MarketGroups first, so the operator's
        // finalizer cleans their tables; the namespace takes the rest), with a client of that
        // thread's runtime: the test's client serves requests from a task of the test's runtime,
        // which is blocked here.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let Ok(client) = kube_client_for(Path::new(&kubeconfig)).await else {
                    return;
                };
                let groups = marketgroups(&client, &name);
                let _ = groups
                    .delete_collection(&DeleteParams::default(), &ListParams::default())
                    .await;
                let _ = tokio::time::timeout(Duration::from_secs(60), async {
                    while groups
                        .list(&ListParams::default())
                        .await
                        .is_ok_and(|l| !l.items.is_empty())
                    {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                })
                .await;
                let _ = Api::<Namespace>::all(client)
                    .delete(&name, &DeleteParams::default())
                    .await;
            });
        });
        let _ = done.join();
    }
}

/// Topics of a test, with `partitions` each, deleted when dropped.
struct Topics {
    bootstrap: String,
    products: String,
    offers: String,
}

impl Topics {
    async fn create(bootstrap: &str, partitions: i32) -> Topics {
        let topics = Topics {
            bootstrap: bootstrap.to_string(),
            products: unique_name("products"),
            offers: unique_name("offers"),
        };
        let admin = admin(bootstrap);
        let new = [
            NewTopic::new(&topics.products, partitions, TopicReplication::Fixed(1)),
            NewTopic::new(&topics.offers, partitions, TopicReplication::Fixed(1)),
        ];
        for r in admin
            .create_topics(&new, &AdminOptions::new())
            .await
            .expect("create topics")
        {
            r.expect("topic created");
        }
        topics
    }
}

impl Drop for Topics {
    fn drop(&mut self) {
        let (bootstrap, products, offers) = (
            self.bootstrap.clone(),
            self.products.clone(),
            self.offers.clone(),
        );
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let _ = admin(&bootstrap)
                    .delete_topics(&[&products, &offers], &AdminOptions::new())
                    .await;
            });
        });
        let _ = done.join();
    }
}

fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("kafka admin client")
}

/// A generated catalogue: its NDJSON file and the product ids it holds.
struct Catalogue {
    path: PathBuf,
    events: Vec<Value>,
    product_ids: Vec<String>,
}

fn generate_catalogue(dir: &Path, products: u32, countries: &str) -> Catalogue {
    let out = Command::new(prapi_bin())
        .args(["gen", "--products", &products.to_string()])
        .args(["--countries", countries, "--seed", "11"])
        .output()
        .expect("run prapi gen");
    assert!(
        out.status.success(),
        "prapi gen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir.join("catalogue.ndjson");
    std::fs::write(&path, &out.stdout).expect("write the catalogue");
    let events: Vec<Value> = out
        .stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("prapi gen writes JSON lines"))
        .collect();
    let product_ids = events
        .iter()
        .filter(|e| e["type"] == "product")
        .map(|e| e["id"].as_str().expect("product id").to_string())
        .collect();
    Catalogue {
        path,
        events,
        product_ids,
    }
}

/// Produces the catalogue's events as a producer system would: products and offers on their
/// topics, keyed by product id; only the events of the first `products` products.
async fn produce(topics: &Topics, catalogue: &Catalogue, products: usize) {
    let wanted: BTreeSet<&str> = catalogue
        .product_ids
        .iter()
        .take(products)
        .map(String::as_str)
        .collect();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &topics.bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let mut pending = Vec::new();
    for e in &catalogue.events {
        let (topic, key) = if e["type"] == "product" {
            (&topics.products, &e["id"])
        } else {
            (&topics.offers, &e["product_id"])
        };
        let key = key
            .as_str()
            .unwrap_or_else(|| panic!("event without a product id: {e}"));
        if !wanted.contains(key) {
            continue;
        }
        let payload = e.to_string();
        let record = FutureRecord::to(topic).key(key).payload(&payload);
        pending.push(producer.send_result(record).expect("queue the event"));
    }
    for p in pending {
        p.await.expect("delivery").expect("delivered");
    }
}

/// A MarketGroup manifest from docs/examples, pointed at the test's topics on the in-cluster
/// Kafka address.
fn example(kind: &Kind, file: &str, topics: &Topics) -> Vec<Value> {
    let path = workspace_root().join("docs/examples").join(file);
    let text = std::fs::read_to_string(&path).expect("read the example");
    let mut docs = Vec::new();
    for doc in serde_norway::Deserializer::from_str(&text) {
        let mut v: Value = serde::Deserialize::deserialize(doc).expect("example is YAML");
        let kafka = &mut v["spec"]["updater"]["kafka"];
        kafka["bootstrapServers"] = json!(kind.var("PRAPI_KAFKA_BOOTSTRAP_IN_CLUSTER"));
        kafka["productsTopic"] = json!(topics.products);
        kafka["offersTopic"] = json!(topics.offers);
        docs.push(v);
    }
    docs
}

async fn apply_group(client: &Client, ns: &str, group: &Value) -> String {
    let name = group["metadata"]["name"]
        .as_str()
        .expect("named")
        .to_string();
    marketgroups(client, ns)
        .patch(
            &name,
            &PatchParams::apply("prapi-e2e").force(),
            &Patch::Apply(group),
        )
        .await
        .expect("apply the MarketGroup");
    name
}

fn condition<'a>(group: &'a DynamicObject, kind: &str) -> Option<&'a Value> {
    group.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

async fn wait_ready(client: &Client, ns: &str, name: &str) {
    let groups = marketgroups(client, ns);
    let started = Instant::now();
    eventually(&format!("MarketGroup {ns}/{name} Ready"), || async {
        let g = groups.get(name).await.ok()?;
        (condition(&g, "Ready")?["status"] == "True").then_some(())
    })
    .await;
    let _ = writeln!(
        std::io::stderr(),
        "MarketGroup {ns}/{name} Ready after {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

/// `prapi local` serving the same catalogue on 127.0.0.1, stopped when dropped.
struct Local {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Local {
    async fn start(catalogue: &Catalogue, countries: &str) -> Local {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let listen = format!("127.0.0.1:{port}");
        let child = Command::new(prapi_bin())
            .args(["local", "--catalogue"])
            .arg(&catalogue.path)
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--listen", &listen, "--countries", countries])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start prapi local");
        let local = Local {
            child,
            url: format!("http://{listen}"),
            _dir: dir,
        };
        let http = reqwest::Client::new();
        eventually("prapi local ready", || async {
            let r = http
                .get(format!("{}/readyz", local.url))
                .send()
                .await
                .ok()?;
            r.status().is_success().then_some(())
        })
        .await;
        local
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a response is made of, for comparing two servers' answers.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: u16,
    content_type: Option<String>,
    etag: Option<String>,
    body: Vec<u8>,
}

async fn get(http: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> Option<Answer> {
    let mut req = http.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.ok()?;
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (status, content_type, etag) =
        (r.status().as_u16(), header("content-type"), header("etag"));
    let body = r.bytes().await.ok()?.to_vec();
    Some(Answer {
        status,
        content_type,
        etag,
        body,
    })
}

/// The operator as the chart installs it: two replicas Available, exactly one holding the leader
/// Lease (and reporting itself leader), no "forbidden" in either log, and no other RBAC bound to
/// its ServiceAccount than the chart declares.
#[tokio::test]
async fn operator_runs_two_replicas_one_leader_with_only_the_charts_rbac() {
    let Some(kind) = Kind::get().await else {
        return;
    };
    let ns = kind.operator_namespace();
    let release = kind.var("PRAPI_RELEASE");
    let deployments: Api<Deployment> = Api::namespaced(kind.client.clone(), ns);
    eventually(
        "the operator Deployment Available with 2 replicas",
        || async {
            let d = deployments.get(release).await.ok()?;
            let s = d.status?;
            (s.available_replicas == Some(2) && s.updated_replicas == Some(2)).then_some(())
        },
    )
    .await;

    let pods: Api<Pod> = Api::namespaced(kind.client.clone(), ns);
    let selector = format!("app.kubernetes.io/instance={release}");
    let names: BTreeSet<String> = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .expect("list operator pods")
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| p.name_any())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let leases: Api<Lease> = Api::namespaced(kind.client.clone(), ns);
    let holder = eventually("a leader", || async {
        let l = leases.get(release).await.ok()?;
        l.spec?.holder_identity.filter(|h| names.contains(h))
    })
    .await;
    // Each replica's own view, through the API server's pod proxy: exactly one says leader.
    let mut leaders = Vec::new();
    for pod in &names {
        let metrics = eventually(&format!("{pod}'s /metrics"), || async {
            let req = http::Request::get(format!(
                "/api/v1/namespaces/{ns}/pods/{pod}:8080/proxy/metrics"
            ))
            .body(Vec::new())
            .ok()?;
            kind.client.request_text(req).await.ok()
        })
        .await;
        if metrics.lines().any(|l| l == "prapi_operator_leader 1") {
            leaders.push(pod.clone());
        }
    }
    assert_eq!(leaders, vec![holder.clone()], "the Lease names {holder}");

    // What RBAC refuses reads `... is forbidden: User "system:serviceaccount:NS:NAME" cannot ...`
    // (in JSON logs with the quotes escaped); other 403s, such as writes into a namespace being
    // deleted, are not about privileges.
    let account = format!("system:serviceaccount:{ns}:{release}");
    for pod in &names {
        let log = pods
            .logs(pod, &LogParams::default())
            .await
            .expect("operator log");
        let denials: Vec<&str> = log
            .lines()
            .filter(|l| {
                l.contains("forbidden: User") && l.contains(&account) && l.contains("cannot")
            })
            .collect();
        assert!(
            denials.is_empty(),
            "RBAC refused {pod}:\n{}",
            denials.join("\n")
        );
    }

    // The chart's RBAC, rendered from the values it was installed with.
    let values = workspace_root().join("target/kind/values.yaml");
    let rendered = Command::new("helm")
        .args(["template", release])
        .arg(workspace_root().join("charts/prapi-operator"))
        .args(["--namespace", ns, "-f"])
        .arg(&values)
        .output()
        .expect("helm template (helm is on the kind env's PATH)");
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let text = String::from_utf8(rendered.stdout).expect("utf-8");
    let mut chart_rules = BTreeMap::new();
    let mut chart_bindings = BTreeSet::new();
    for doc in serde_norway::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc).expect("YAML");
        let name = v["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match v["kind"].as_str() {
            Some("ClusterRole") | Some("Role") => {
                chart_rules.insert(name, v["rules"].clone());
            }
            Some("ClusterRoleBinding") | Some("RoleBinding") => {
                chart_bindings.insert((v["kind"].as_str().unwrap_or_default().to_string(), name));
            }
            _ => {}
        }
    }
    let bound_to_operator = |subjects: &Option<Vec<k8s_openapi::api::rbac::v1::Subject>>| {
        subjects.iter().flatten().any(|s| {
            (s.kind == "ServiceAccount" && s.name == release && s.namespace.as_deref() == Some(ns))
                || (s.kind == "User" && s.name == account)
        })
    };
    let mut live_bindings = BTreeSet::new();
    let mut live_roles = Vec::new();
    for b in Api::<ClusterRoleBinding>::all(kind.client.clone())
        .list(&ListParams::default())
        .await
        .expect("list ClusterRoleBindings")
    {
        if bound_to_operator(&b.subjects) {
            live_bindings.insert(("ClusterRoleBinding".to_string(), b.name_any()));
            live_roles.push(("ClusterRole".to_string(), b.role_ref.name.clone(), None));
        }
    }
    for b in Api::<RoleBinding>::all(kind.client.clone())
        .list(&ListParams::default())
        .await
        .expect("list RoleBindings")
    {
        if bound_to_operator(&b.subjects) {
            live_bindings.insert(("RoleBinding".to_string(), b.name_any()));
            live_roles.push((
                b.role_ref.kind.clone(),
                b.role_ref.name.clone(),
                b.namespace(),
            ));
        }
    }
    assert_eq!(live_bindings, chart_bindings, "bindings of the operator");
    for (role_kind, name, namespace) in live_roles {
        let rules = match (role_kind.as_str(), namespace) {
            ("ClusterRole", _) => serde_json::to_value(
                Api::<ClusterRole>::all(kind.client.clone())
                    .get(&name)
                    .await
                    .expect("bound ClusterRole")
                    .rules,
            ),
            (_, Some(rns)) => serde_json::to_value(
                Api::<Role>::namespaced(kind.client.clone(), &rns)
                    .get(&name)
                    .await
                    .expect("bound Role")
                    .rules,
            ),
            (_, None) => panic!("a RoleBinding without a namespace"),
        }
        .expect("rules as JSON");
        assert_eq!(
            Some(&rules),
            chart_rules.get(&name),
            "{name}: live rules differ from the chart's"
        );
    }
}

/// One group from docs/examples/one-group.yaml in a new namespace: Ready with real pods on the
/// kind nodes; events produced into Kafka reach DynamoDB through the updater pod; GETs through
/// Skipper answer byte for byte what `prapi local` answers for the same events; a batch through
/// Skipper returns every item; deleting the group removes its workloads.
#[tokio::test]
async fn one_group_serves_through_the_ingress_as_prapi_local_does() {
    let Some(kind) = Kind::get().await else {
        return;
    };
    let ns = TestNamespace::create(&kind, "e2e-one").await;
    let topics = Topics::create(kind.var("KAFKA_BOOTSTRAP_SERVERS"), 4).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let countries = "de,at,ch";
    let catalogue = generate_catalogue(dir.path(), 40, countries);
    assert!(catalogue.product_ids.len() >= 40);
    produce(&topics, &catalogue, catalogue.product_ids.len()).await;

    let groups = example(&kind, "one-group.yaml", &topics);
    assert_eq!(groups.len(), 1);
    let name = apply_group(&kind.client, &ns.name, &groups[0]).await;
    wait_ready(&kind.client, &ns.name, &name).await;

    // Real pods, spread over the kind nodes, all Running and Ready.
    let pods: Api<Pod> = Api::namespaced(kind.client.clone(), &ns.name);
    let running = pods.list(&ListParams::default()).await.expect("pods");
    let nodes: BTreeSet<String> = running
        .items
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    for component in ["updater", "products", "batch"] {
        let prefix = format!("{name}-{component}-");
        assert!(
            running
                .items
                .iter()
                .any(|p| p.name_any().starts_with(&prefix)
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")),
            "no Running {component} pod"
        );
    }
    assert!(
        nodes
            .iter()
            .all(|n| n.starts_with(kind.var("PRAPI_KIND_CLUSTER")))
    );

    let local = Local::start(&catalogue, countries).await;
    let ingress = kind.ingress();
    // The last product produced: when it is served, the updater has written the catalogue.
    let last = catalogue.product_ids.last().expect("products").clone();
    let started = Instant::now();
    eventually("the last product through the ingress", || async {
        let a = get(
            &kind.http,
            &format!("{ingress}/product-offers/{last}"),
            &[("x-country", "de")],
        )
        .await?;
        (a.status == 200).then_some(())
    })
    .await;
    let _ = writeln!(
        std::io::stderr(),
        "catalogue served through Skipper {:.1}s after Ready",
        started.elapsed().as_secs_f64()
    );

    let media = [
        "application/json",
        "application/x.alpha-format+json",
        "application/x.beta-format+json",
        "application/x.gamma-format+json",
    ];
    let mut compared = 0;
    for (i, id) in catalogue.product_ids.iter().enumerate().step_by(4) {
        let country = ["de", "at", "ch"][i % 3];
        let accept = media[i % media.len()];
        for path in [
            format!("/products/{id}"),
            format!("/products/{id}/offers"),
            format!("/product-offers/{id}"),
        ] {
            let headers = [("x-country", country), ("accept", accept)];
            let want = get(&kind.http, &format!("{}{path}", local.url), &headers)
                .await
                .expect("prapi local answers");
            let status = want.status;
            let got = eventually(&format!("{path} through the ingress"), || {
                let url = format!("{ingress}{path}");
                let http = &kind.http;
                async move {
                    get(http, &url, &headers)
                        .await
                        .filter(|a| a.status == status)
                }
            })
            .await;
            assert_eq!(got, want, "{path} ({country}, {accept})");
            compared += 1;
        }
    }
    assert!(compared >= 30, "compared {compared}");

    // The updater pod wrote the events into the group's own table.
    let table = format!("prapi-{}-{name}", ns.name);
    let dynamodb = kind.dynamodb();
    let stored = dynamodb
        .scan()
        .table_name(&table)
        .select(aws_sdk_dynamodb::types::Select::Count)
        .send()
        .await
        .expect("Scan the group's table")
        .count();
    assert!(stored > 0, "{table} is empty");

    // A batch through the ingress returns every item, as prapi local does.
    let ids: Vec<&str> = catalogue
        .product_ids
        .iter()
        .take(25)
        .map(String::as_str)
        .collect();
    let path = format!("/product-offers?ids={}", ids.join(","));
    let headers = [("x-country", "at")];
    let want = get(&kind.http, &format!("{}{path}", local.url), &headers)
        .await
        .expect("prapi local batch");
    let got = get(&kind.http, &format!("{ingress}{path}"), &headers)
        .await
        .expect("batch through the ingress");
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    let items = |a: &Answer| -> Value { serde_json::from_slice(&a.body).expect("batch is JSON") };
    assert_eq!(items(&got), items(&want));
    let body = String::from_utf8_lossy(&got.body);
    for id in &ids {
        assert!(body.contains(id), "{id} missing from the batch");
    }

    // Deleting the group removes it, its workloads and (deletionPolicy: Delete) its table; the
    // namespace goes with the test.
    marketgroups(&kind.client, &ns.name)
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete the MarketGroup");
    let deployments: Api<Deployment> = Api::namespaced(kind.client.clone(), &ns.name);
    eventually("the group and its Deployments gone", || async {
        let gone = matches!(
            marketgroups(&kind.client, &ns.name).get(&name).await,
            Err(kube::Error::Api(e)) if e.code == 404
        );
        let left = deployments.list(&ListParams::default()).await.ok()?;
        (gone && left.items.is_empty()).then_some(())
    })
    .await;
    match dynamodb.describe_table().table_name(&table).send().await {
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) => {}
        other => panic!("{table} left behind: {other:?}"),
    }
}

/// Sends `n` GETs of `path` through the ingress with `headers`; counts the answers by status
/// (each 404 checked to be prapi's problem document).
async fn statuses(
    kind: &Kind,
    path: &str,
    headers: &[(&str, &str)],
    n: usize,
) -> BTreeMap<u16, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let a = get(&kind.http, &format!("{}{path}", kind.ingress()), headers)
            .await
            .unwrap_or_else(|| panic!("{path}: no answer through the ingress"));
        // A 404 counted here is prapi's "no such product", not the ingress finding no route.
        if a.status == 404 {
            assert_eq!(
                a.content_type.as_deref(),
                Some("application/problem+json"),
                "{path}: a 404 not from prapi: {}",
                String::from_utf8_lossy(&a.body)
            );
        }
        *counts.entry(a.status).or_insert(0) += 1;
    }
    counts
}

/// Waits until `path` answers `status` through the ingress with `headers`.
async fn wait_status(kind: &Kind, path: &str, headers: &[(&str, &str)], status: u16) {
    eventually(
        &format!("{path} {headers:?} answering {status}"),
        || async {
            let a = get(&kind.http, &format!("{}{path}", kind.ingress()), headers).await?;
            (a.status == status).then_some(())
        },
    )
    .await;
}

/// Two groups' Kafka input for telling them apart: one catalogue of `products` products for
/// `countries`, all of it on the first topics, only its first half on the second.
struct TwoCatalogues {
    _dir: tempfile::TempDir,
    catalogue: Catalogue,
    full: Topics,
    half: Topics,
}

impl TwoCatalogues {
    async fn produce(kind: &Kind, products: u32, countries: &str) -> TwoCatalogues {
        let bootstrap = kind.var("KAFKA_BOOTSTRAP_SERVERS");
        let dir = tempfile::tempdir().expect("temp dir");
        let catalogue = generate_catalogue(dir.path(), products, countries);
        let all = catalogue.product_ids.len();
        let (full, half) = (
            Topics::create(bootstrap, 4).await,
            Topics::create(bootstrap, 4).await,
        );
        produce(&full, &catalogue, all).await;
        produce(&half, &catalogue, all / 2).await;
        TwoCatalogues {
            _dir: dir,
            catalogue,
            full,
            half,
        }
    }

    /// A product both groups hold, and one only the full catalogue's group holds.
    fn shared_and_full_only(&self) -> (String, String) {
        let ids = &self.catalogue.product_ids;
        (
            format!("/product-offers/{}", ids[0]),
            format!("/product-offers/{}", ids[ids.len() - 1]),
        )
    }
}

/// docs/examples/two-groups-90-10.yaml: both groups Ready; Austria goes to `eu` alone, German
/// requests are split between the two. The groups hold different catalogues (eu-next only the
/// first half of the products), so a product of the second half answers 404 exactly when eu-next
/// served it: over 400 requests both answers occur (the chance that a 10 % share shows up in none
/// of 400 is below 1e-18). The precise split per step is the data-path suite's.
#[tokio::test]
async fn two_groups_split_a_country_and_keep_the_other_apart() {
    let Some(kind) = Kind::get().await else {
        return;
    };
    let ns = TestNamespace::create(&kind, "e2e-split").await;
    let input = TwoCatalogues::produce(&kind, 20, "de,at").await;
    let next_topics = &input.half;
    let groups = example(&kind, "two-groups-90-10.yaml", &input.full);
    assert_eq!(groups.len(), 2);
    for mut g in groups {
        if g["metadata"]["name"] == "eu-next" {
            let kafka = &mut g["spec"]["updater"]["kafka"];
            kafka["productsTopic"] = json!(next_topics.products);
            kafka["offersTopic"] = json!(next_topics.offers);
        }
        apply_group(&kind.client, &ns.name, &g).await;
    }
    wait_ready(&kind.client, &ns.name, "eu").await;
    wait_ready(&kind.client, &ns.name, "eu-next").await;

    let (shared, eu_only) = input.shared_and_full_only();
    // Both groups have written their catalogues once the shared product answers everywhere.
    wait_status(&kind, &shared, &[("x-country", "at")], 200).await;
    eventually("both groups serving the shared product", || async {
        let counts = statuses(&kind, &shared, &[("x-country", "de")], 20).await;
        (counts.get(&200) == Some(&20)).then_some(())
    })
    .await;
    // Every Skipper replica has Austria's route before the sample (routes reach the ingress
    // eventually): 20 answers in a row from eu.
    eventually("Austria's route in effect on the ingress", || async {
        for _ in 0..20 {
            let url = format!("{}{eu_only}", kind.ingress());
            let a = get(&kind.http, &url, &[("x-country", "at")]).await?;
            if a.status != 200 {
                return None;
            }
        }
        Some(())
    })
    .await;
    let at = statuses(&kind, &eu_only, &[("x-country", "at")], 100).await;
    assert_eq!(at, BTreeMap::from([(200, 100)]), "Austria is eu's alone");
    let de = statuses(&kind, &eu_only, &[("x-country", "de")], 400).await;
    let _ = writeln!(
        std::io::stderr(),
        "German requests for an eu-only product: {de:?}"
    );
    assert_eq!(
        de.keys().copied().collect::<Vec<_>>(),
        vec![200, 404],
        "{de:?}"
    );
    assert!(de[&200] > de[&404], "eu keeps the larger share: {de:?}");
}

/// docs/examples/segment-test-group.yaml next to one-group.yaml: requests with
/// `X-Traffic-Segment: canary` reach the canary group only, requests without it never do. The
/// canary group holds only the first half of the catalogue, so which group answered shows in the
/// status of a second-half product.
#[tokio::test]
async fn a_segment_group_gets_only_requests_with_its_header() {
    let Some(kind) = Kind::get().await else {
        return;
    };
    let ns = TestNamespace::create(&kind, "e2e-segment").await;
    let input = TwoCatalogues::produce(&kind, 20, "de,at,ch").await;
    let main = example(&kind, "one-group.yaml", &input.full);
    let canary = example(&kind, "segment-test-group.yaml", &input.half);
    let main_name = apply_group(&kind.client, &ns.name, &main[0]).await;
    let canary_name = apply_group(&kind.client, &ns.name, &canary[0]).await;
    wait_ready(&kind.client, &ns.name, &main_name).await;
    wait_ready(&kind.client, &ns.name, &canary_name).await;

    let (shared, main_only) = input.shared_and_full_only();
    let segment = [("x-country", "de"), ("x-traffic-segment", "canary")];
    wait_status(&kind, &shared, &segment, 200).await;
    wait_status(&kind, &main_only, &[("x-country", "de")], 200).await;
    // Routes reach the ingress eventually (the operator writes them once both groups are Ready,
    // each Skipper replica polls them): first every replica has the segment route, then a fresh
    // sample is measured.
    eventually("the segment route in effect on the ingress", || async {
        let counts = statuses(&kind, &main_only, &segment, 20).await;
        (counts.get(&404) == Some(&20)).then_some(())
    })
    .await;
    let with = statuses(&kind, &main_only, &segment, 250).await;
    assert_eq!(
        with,
        BTreeMap::from([(404, 250)]),
        "every segment request reached the canary"
    );
    let without = statuses(&kind, &main_only, &[("x-country", "de")], 250).await;
    assert_eq!(
        without,
        BTreeMap::from([(200, 250)]),
        "no other request did"
    );
}
