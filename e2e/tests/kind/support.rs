//! What the kind suite's tests share: the environment `e2e/kind/up.sh` wrote, the test's Kafka
//! topics and catalogue, MarketGroups from docs/examples, `prapi local` to compare with, and
//! requests through the ingress.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use prapi_e2e::kit::{TestNamespace, eventually, kube_client_for};
use prapi_e2e::{parse_env_file, unique_name, workspace_root};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

/// The variable that makes the suite fail instead of skipping when kind is not up.
const REQUIRE_VAR: &str = "PRAPI_REQUIRE_KIND";

/// The kind environment as `e2e/kind/up.sh` wrote it.
pub struct Kind {
    pub vars: BTreeMap<String, String>,
    pub client: Client,
    pub http: reqwest::Client,
}

impl Kind {
    /// The environment, or `None` after saying why the test is skipped.
    pub async fn get() -> Option<Kind> {
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

    pub fn var(&self, name: &str) -> &str {
        self.vars
            .get(name)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("{name} is not in the kind env file"))
    }

    pub fn ingress(&self) -> &str {
        self.var("PRAPI_INGRESS_URL")
    }

    pub fn operator_namespace(&self) -> &str {
        self.var("PRAPI_OPERATOR_NAMESPACE")
    }

    /// DynamoDB (dynalite) as the cluster's pods use it.
    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
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
pub fn prapi_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("PRAPI_BIN") {
        return bin.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from);
    let bin = target.join("debug/prapi");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo test --workspace --no-run` (make e2e does)",
        bin.display()
    );
    bin
}

pub fn marketgroups(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &marketgroup_resource())
}

fn marketgroup_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "prapi.dev",
        "v1alpha1",
        "MarketGroup",
    ))
}

/// A namespace of the test's own, deleted with everything in it when dropped: its MarketGroups
/// first (so the operator's finalizer removes their tables), then the rest.
pub async fn test_namespace(kind: &Kind, prefix: &str) -> TestNamespace {
    TestNamespace::create_in(Path::new(kind.var("KUBECONFIG")), &kind.client, prefix)
        .await
        .delete_first(marketgroup_resource())
}

/// Topics of a test, with `partitions` each, deleted when dropped.
pub struct Topics {
    pub bootstrap: String,
    pub products: String,
    pub offers: String,
}

impl Topics {
    pub async fn create(bootstrap: &str, partitions: i32) -> Topics {
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

pub fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("kafka admin client")
}

/// A generated catalogue: its NDJSON file and the product ids it holds.
pub struct Catalogue {
    pub path: PathBuf,
    pub events: Vec<Value>,
    pub product_ids: Vec<String>,
}

pub fn generate_catalogue(dir: &Path, products: u32, countries: &str) -> Catalogue {
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
pub async fn produce(topics: &Topics, catalogue: &Catalogue, products: usize) {
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
pub fn example(kind: &Kind, file: &str, topics: &Topics) -> Vec<Value> {
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

pub async fn apply_group(client: &Client, ns: &str, group: &Value) -> String {
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

pub fn condition<'a>(group: &'a DynamicObject, kind: &str) -> Option<&'a Value> {
    group.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

pub async fn wait_ready(client: &Client, ns: &str, name: &str) {
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
pub struct Local {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Local {
    pub async fn start(catalogue: &Catalogue, countries: &str) -> Local {
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
pub struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    pub etag: Option<String>,
    pub body: Vec<u8>,
}

pub async fn get(http: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> Option<Answer> {
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

/// Sends `n` GETs of `path` through the ingress with `headers`; counts the answers by status
/// (each 404 checked to be prapi's problem document).
pub async fn statuses(
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
pub async fn wait_status(kind: &Kind, path: &str, headers: &[(&str, &str)], status: u16) {
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
pub struct TwoCatalogues {
    _dir: tempfile::TempDir,
    pub catalogue: Catalogue,
    pub full: Topics,
    pub half: Topics,
}

impl TwoCatalogues {
    pub async fn produce(kind: &Kind, products: u32, countries: &str) -> TwoCatalogues {
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
    pub fn shared_and_full_only(&self) -> (String, String) {
        let ids = &self.catalogue.product_ids;
        (
            format!("/product-offers/{}", ids[0]),
            format!("/product-offers/{}", ids[ids.len() - 1]),
        )
    }
}

/// How long Skipper may take to apply a route or endpoint change written to the API server: it
/// polls every 500 ms (`-source-poll-timeout` in e2e/kind/manifests/skipper.yaml), each replica on
/// its own, and applies what it read at once. Four polls. A status saying the route object is
/// written (or an EndpointSlice listing a pod) is then at most this far ahead of the ingress.
pub const INGRESS_PROPAGATION: Duration = Duration::from_secs(2);

/// The header products pods name themselves in when the installation turns it on
/// (`dataPlane.servedByHeader`, which e2e/kind/up.sh sets).
pub const SERVED_BY: &str = "x-served-by";

/// A pod's Prometheus text from its `/metrics` on `port`, through the API server's pod proxy.
pub async fn pod_metrics(kind: &Kind, ns: &str, pod: &str, port: u16) -> kube::Result<String> {
    let req = http::Request::get(format!(
        "/api/v1/namespaces/{ns}/pods/{pod}:{port}/proxy/metrics"
    ))
    .body(Vec::new())
    .map_err(kube::Error::HttpError)?;
    kind.client.request_text(req).await
}

/// Label selector of a group's component pods (the operator's labels).
pub fn component_selector(group: &str, component: &str) -> String {
    format!("app.kubernetes.io/instance={group},app.kubernetes.io/component={component}")
}

/// The running (not terminating) pods of a group's component.
pub async fn component_pods(kind: &Kind, ns: &str, group: &str, component: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(kind.client.clone(), ns)
        .list(&ListParams::default().labels(&component_selector(group, component)))
        .await
        .expect("list pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// Patches `spec` of a MarketGroup with a JSON merge patch.
pub async fn patch_spec(kind: &Kind, ns: &str, group: &str, spec: Value) {
    marketgroups(&kind.client, ns)
        .patch(
            group,
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": spec })),
        )
        .await
        .unwrap_or_else(|e| panic!("patch {ns}/{group}: {e}"));
}

/// A group's `status.traffic` entry for `country`: (desired, actual).
pub fn traffic_of(group: &DynamicObject, country: &str) -> Option<(i64, Option<i64>)> {
    let entry = group.data["status"]["traffic"]
        .as_array()?
        .iter()
        .find(|t| t["country"] == country)?;
    Some((entry["desired"].as_i64()?, entry["actual"].as_i64()))
}

/// Waits until every group of `want` reports desired = actual = its percent of `country`.
pub async fn wait_traffic(kind: &Kind, ns: &str, country: &str, want: &[(&str, i64)]) {
    let groups = marketgroups(&kind.client, ns);
    eventually(&format!("{country} split {want:?} in status"), || async {
        for (name, percent) in want {
            let g = groups.get(name).await.ok()?;
            let (desired, actual) = traffic_of(&g, country)?;
            (desired == *percent && actual == Some(*percent)).then_some(())?;
        }
        Some(())
    })
    .await;
}

/// Waits until `table` holds an item for every product of `catalogue` and every offer of it in
/// `countries` (what the group's updater keeps; docs/storage.md: one item per key).
pub async fn wait_table_holds(kind: &Kind, table: &str, catalogue: &Catalogue, countries: &[&str]) {
    let keys: BTreeSet<String> = catalogue
        .events
        .iter()
        .filter_map(|e| match e["type"].as_str()? {
            "product" => Some(format!("{}/product", e["id"].as_str()?)),
            "offer" if countries.contains(&e["country"].as_str()?) => Some(format!(
                "{}/offer#{}#{}#{}",
                e["product_id"].as_str()?,
                e["country"].as_str()?,
                e["merchant_id"].as_str()?,
                e["sku"].as_str()?
            )),
            _ => None,
        })
        .collect();
    let dynamodb = kind.dynamodb();
    eventually(&format!("{table} holding {} items", keys.len()), || async {
        // A scan reads at most 1 MB a page: count every page.
        let mut pages = dynamodb
            .scan()
            .table_name(table)
            .select(aws_sdk_dynamodb::types::Select::Count)
            .into_paginator()
            .send();
        let mut n = 0;
        while let Some(page) = pages.next().await {
            n += usize::try_from(page.ok()?.count()).ok()?;
        }
        (n >= keys.len()).then_some(())
    })
    .await;
}

/// Waits until the ingress answers 200 for the catalogue's first product in `country`, 20 times
/// in a row: Skipper loads routes on its own schedule, each replica on its own, so a stream
/// started before would meet Skipper's own 404s.
pub async fn wait_country_routed(kind: &Kind, catalogue: &Catalogue, country: &str) {
    let path = format!("/product-offers/{}", catalogue.product_ids[0]);
    wait_ingress_converged(kind, &path, &[("x-country", country)], |a| a.status == 200).await;
}

/// Waits until `path` gets 20 answers in a row through the ingress that `accept` takes. Each
/// Skipper replica loads routes and endpoints on its own, so one good answer says only that one
/// replica is up to date; 20 in a row, each on a new connection, say they all are: kube-proxy
/// spreads connections, not requests, over the replicas, and 20 requests on one kept-alive
/// connection asked one replica only (a stream started after that met the other's 404s).
pub async fn wait_ingress_converged(
    kind: &Kind,
    path: &str,
    headers: &[(&str, &str)],
    accept: impl Fn(&Answer) -> bool,
) {
    let url = format!("{}{path}", kind.ingress());
    let fresh = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()
        .expect("an HTTP client");
    eventually(
        &format!("{path} {headers:?}: 20 answers in a row through the ingress"),
        || async {
            for _ in 0..20 {
                accept(&get(&fresh, &url, headers).await?).then_some(())?;
            }
            Some(())
        },
    )
    .await;
}
