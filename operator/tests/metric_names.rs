//! Every metric name a reader or a machine is told about exists. The registries are built as each
//! subcommand builds them (`prapi products` with DynamoDB, `batch`, `updater` with DynamoDB,
//! `local`, and `prapi-operator run`: store, connection and component metrics in the same
//! registry, served by the same routers) and scraped through their `/metrics` routes; then every
//! name in docs/, the chart (ServiceMonitor, dashboard, rules) and the rendered autoscalers must
//! be one of the scraped series, and docs/metrics.md's reference table must be exactly the
//! scraped families.

use axum::Router;
use axum::body::Body;
use http_body_util::BodyExt;
use prapi::batch::BatchConfig;
use prapi::cache::CacheConfig;
use prapi::clock::MonotonicClock;
use prapi::http::connections::{ConnectionErrorLabels, ConnectionMetrics};
use prapi::http::overload::OverloadConfig;
use prapi::http::server::Readiness;
use prapi::lb::{Balancer, BalancerConfig, ClientConfig};
use prapi::run::{BatchServer, ProductsServer, updater_ops_router};
use prapi::store::Store;
use prapi::store::dynamodb::DynamoMetrics;
use prapi::store::dynamodb::metrics::ClientLabels;
use prapi::store::embedded::EmbeddedStore;
use prapi::updater::UpdaterMetrics;
use prapi::updater::metrics::PartitionLabels;
use prapi_operator::crd::{CountryTraffic, MarketGroupStatus};
use prapi_operator::metrics::Metrics;
use prapi_operator::render::autoscaling;
use prapi_operator::{offline, validate};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

/// A metric family as `# TYPE` announces it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Family {
    kind: String,
    help: String,
    /// The processes exporting it, in [`COMPONENTS`] order.
    exported_by: Vec<&'static str>,
}

/// The processes scraped, as docs/metrics.md names them.
const COMPONENTS: [&str; 5] = ["products", "batch", "updater", "local", "operator"];

async fn get(router: &Router, path: &str) -> (http::StatusCode, String) {
    let resp = router
        .clone()
        .oneshot(
            http::Request::get(path)
                .header("x-country", "de")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("response");
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        String::from_utf8(body.to_vec()).expect("utf-8 body"),
    )
}

async fn scrape(router: &Router) -> String {
    let (status, text) = get(router, "/metrics").await;
    assert_eq!(status, http::StatusCode::OK);
    text
}

fn countries() -> Vec<prapi::model::Country> {
    prapi::model::Country::parse_list("de,at").expect("countries")
}

fn products_server() -> ProductsServer {
    ProductsServer {
        countries: countries(),
        cache: CacheConfig::default(),
        overload: OverloadConfig::default(),
    }
}

/// The registry `open_store` leaves for `--store dynamodb`: the process registry plus the
/// DynamoDB client's and writer's metrics (returned too, to record into).
fn dynamodb_registry() -> (prometheus_client::registry::Registry, DynamoMetrics) {
    let mut registry = prapi::metrics::registry();
    let metrics = DynamoMetrics::default();
    metrics.register(&mut registry);
    (registry, metrics)
}

/// Records one of everything a store client records, so every family has a series.
fn record_store_calls(m: &DynamoMetrics) {
    m.requests_with("primary", "get", "ok");
    m.seconds
        .get_or_create(&ClientLabels { client: "primary" })
        .observe(0.001);
    m.writer.retry("throttled");
}

/// Records a connection error as the server does for a reset connection.
fn record_connection_error(m: &ConnectionMetrics) {
    m.errors
        .get_or_create(&ConnectionErrorLabels { reason: "io" })
        .inc();
}

/// The exposition of each component, scraped from the routers the subcommands serve. Families
/// with labels only appear once they have a series, so each component first serves a request of
/// each kind (or, where the work needs Kafka or DynamoDB, records what that work records).
async fn expositions() -> Vec<(&'static str, String)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).expect("store"));
    let (mut registry, products_store) = dynamodb_registry();
    record_store_calls(&products_store);
    record_connection_error(&ConnectionMetrics::new(&mut registry));
    let products = products_server()
        .router_with_registry(Arc::clone(&store), Readiness::default(), registry)
        .expect("products router");
    let balancer = Arc::new(Balancer::new(
        BalancerConfig::default(),
        Arc::new(MonotonicClock::new()),
    ));
    let mut registry = prapi::metrics::registry();
    record_connection_error(&ConnectionMetrics::new(&mut registry));
    let batch = BatchServer {
        countries: countries(),
        batch: BatchConfig::default(),
        client: ClientConfig::default(),
        overload: OverloadConfig::default(),
    }
    .router_with_registry(balancer, Readiness::default(), registry);
    let (registry, updater_store) = dynamodb_registry();
    record_store_calls(&updater_store);
    let updater_metrics = UpdaterMetrics::default();
    let updater = updater_ops_router(registry, &updater_metrics, Readiness::default());
    updater_metrics.count("received", 1);
    let partition = PartitionLabels {
        topic: "offers".into(),
        partition: 0,
    };
    updater_metrics
        .consumer_lag
        .get_or_create(&partition)
        .set(3);
    updater_metrics
        .committed_offset
        .get_or_create(&partition)
        .set(7);
    let mut registry = prapi::metrics::registry();
    record_connection_error(&ConnectionMetrics::new(&mut registry));
    let local = products_server()
        .router_with_batch(
            store,
            Readiness::default(),
            registry,
            BatchConfig::default(),
        )
        .expect("local router");
    let operator_metrics = Arc::new(Metrics::default());
    operator_metrics.reconciled(Duration::from_millis(3), Some("ApplyFailed"));
    operator_metrics.wrote("Deployment", "apply");
    operator_metrics.observe_group(
        "shop",
        "dach",
        &MarketGroupStatus {
            traffic: vec![CountryTraffic {
                country: "de".into(),
                desired: 100,
                actual: Some(40),
                reason: None,
            }],
            ..MarketGroupStatus::default()
        },
    );
    let operator = prapi_operator::http::router(operator_metrics, Readiness::default());
    for router in [&products, &local] {
        assert_eq!(
            get(router, "/products/P1").await.0,
            http::StatusCode::NOT_FOUND
        );
    }
    // Batch answers 503 without products pods, local 200: either way the batch was served.
    for router in [&batch, &local] {
        let (status, body) = get(router, "/products?ids=P1,P2").await;
        assert!(
            [http::StatusCode::OK, http::StatusCode::SERVICE_UNAVAILABLE].contains(&status),
            "{status}: {body}"
        );
    }
    let mut out = Vec::new();
    for (name, router) in COMPONENTS
        .into_iter()
        .zip([products, batch, updater, local, operator])
    {
        out.push((name, scrape(&router).await));
    }
    out
}

/// The families of all expositions, by name (as `# TYPE` writes it).
fn families(expositions: &[(&'static str, String)]) -> BTreeMap<String, Family> {
    let mut out: BTreeMap<String, Family> = BTreeMap::new();
    for (component, text) in expositions {
        let mut help: BTreeMap<&str, &str> = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, h) = rest.split_once(' ').unwrap_or((rest, ""));
                help.insert(name, h.trim_end_matches('.'));
            }
            let Some(rest) = line.strip_prefix("# TYPE ") else {
                continue;
            };
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            let family = out.entry(name.to_string()).or_insert_with(|| Family {
                kind: kind.to_string(),
                help: help.get(name).copied().unwrap_or_default().to_string(),
                exported_by: Vec::new(),
            });
            assert_eq!(family.kind, kind, "{name} has two types");
            family.exported_by.push(component);
        }
    }
    out
}

/// The series names a query can use for each family (`_total` of a counter, the `_bucket`,
/// `_sum` and `_count` of a histogram, the family itself).
fn series_names(name: &str, kind: &str) -> Vec<String> {
    match kind {
        "counter" => vec![format!("{name}_total")],
        "histogram" => ["", "_bucket", "_sum", "_count"]
            .iter()
            .map(|s| format!("{name}{s}"))
            .collect(),
        "info" => vec![format!("{name}_info")],
        _ => vec![name.to_string()],
    }
}

/// A name a text refers to: a series name, or a prefix written `prapi_cache_*`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Reference {
    Name(String),
    Prefix(String),
}

/// The one extractor of metric names, for docs, the chart's dashboard and rules and the rendered
/// autoscalers alike: every word starting with `prapi_` or `process_` (not part of a longer
/// word, nor a Rust path such as `prapi_common::ops` or a log directive such as
/// `prapi_dataplane=debug`); one ending in `_` or followed by `*` is a prefix.
fn referenced_names(text: &str) -> BTreeSet<Reference> {
    let bytes = text.as_bytes();
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i < bytes.len() {
        if !is_word(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && is_word(bytes[i]) {
            i += 1;
        }
        let word = &text[start..i];
        if !(word.starts_with("prapi_") || word.starts_with("process_")) {
            continue;
        }
        let rest = &text[i..];
        // A Rust path (`prapi_common::ops`) or a log directive (`prapi_dataplane=debug`): PromQL
        // never puts either right after a metric name.
        if rest.starts_with("::") || (rest.starts_with('=') && !rest.starts_with("==")) {
            continue;
        }
        if rest.starts_with('*') || word.ends_with('_') {
            out.insert(Reference::Prefix(word.to_string()));
        } else {
            out.insert(Reference::Name(word.to_string()));
        }
    }
    out
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Files under `dir` (recursively) whose name ends with one of `exts`.
fn files(dir: &Path, exts: &[&str], out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            files(&path, exts, out);
        } else if exts.iter().any(|e| path.to_string_lossy().ends_with(e)) {
            out.push(path);
        }
    }
}

/// The texts that name metrics: docs and README, the chart, and the autoscalers the operator
/// renders (HPA on the External lag metric, KEDA ScaledObject).
fn referring_texts() -> Vec<(String, String)> {
    let root = repo();
    let mut paths = vec![root.join("README.md")];
    files(&root.join("docs"), &[".md", ".json", ".yaml"], &mut paths);
    files(
        &root.join("charts/prapi-operator"),
        &[".yaml", ".json", ".tpl", ".txt"],
        &mut paths,
    );
    let mut out: Vec<(String, String)> = paths
        .into_iter()
        .map(|p| {
            let text =
                std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (
                p.strip_prefix(&root).unwrap_or(&p).display().to_string(),
                text,
            )
        })
        .collect();
    let group = offline::parse_manifests(
        "apiVersion: prapi.dev/v1alpha1\nkind: MarketGroup\nmetadata: {name: dach, namespace: shop, uid: u1}\nspec: {countries: [de, at]}\n",
    )
    .expect("group")
    .remove(0);
    let plan = validate::plan(&group, "prapi:test", "ignored").expect("plan");
    out.push((
        "rendered updater HPA".into(),
        serde_json::to_string(&autoscaling::updater_lag_hpa(&plan)).expect("json"),
    ));
    out.push((
        "rendered updater ScaledObject".into(),
        autoscaling::updater_scaled_object(&plan).to_string(),
    ));
    out
}

#[tokio::test]
async fn every_metric_name_referred_to_is_exported() {
    let families = families(&expositions().await);
    let exported: BTreeSet<String> = families
        .iter()
        .flat_map(|(name, f)| series_names(name, &f.kind))
        .collect();
    // The names this test exists for, so that a broken scrape cannot pass it empty.
    for name in [
        "prapi_updater_consumer_lag",
        "prapi_writer_calls_total",
        "prapi_dynamodb_requests_total",
        "prapi_http_request_duration_seconds_bucket",
        "prapi_operator_reconciles_total",
        "prapi_build_info",
    ] {
        assert!(exported.contains(name), "{name} is not exported");
    }
    let mut missing = Vec::new();
    let mut checked = 0;
    for (source, text) in referring_texts() {
        for reference in referenced_names(&text) {
            checked += 1;
            let ok = match &reference {
                Reference::Name(n) => exported.contains(n),
                Reference::Prefix(p) => exported.iter().any(|n| n.starts_with(p.as_str())),
            };
            if !ok {
                missing.push(format!("{source}: {reference:?}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "referred to but not exported:\n{}",
        missing.join("\n")
    );
    assert!(checked > 30, "only {checked} references found");
}

/// Histograms that measure something other than time (sizes, counts).
const NOT_DURATIONS: [&str; 1] = ["prapi_batch_ids"];

#[tokio::test]
async fn every_histogram_but_sizes_is_in_seconds() {
    let families = families(&expositions().await);
    let histograms: Vec<&String> = families
        .iter()
        .filter(|(_, f)| f.kind == "histogram")
        .map(|(n, _)| n)
        .collect();
    for name in NOT_DURATIONS {
        assert!(histograms.iter().any(|h| *h == name), "{name} is gone");
    }
    let wrong: Vec<_> = histograms
        .iter()
        .filter(|n| !n.ends_with("_seconds") && !NOT_DURATIONS.contains(&n.as_str()))
        .collect();
    assert!(wrong.is_empty(), "histograms not in seconds: {wrong:?}");
    assert!(histograms.len() > 5, "only {histograms:?}");
}

/// The request histogram's `media` label: the representation served, a closed set (never the
/// client's `Accept`), and the one the dashboard splits latency by.
#[tokio::test]
async fn request_latency_is_labelled_by_the_served_media_type_from_a_closed_set() {
    const MEDIA: [&str; 6] = ["json", "alpha", "beta", "gamma", "problem", "other"];
    let mut seen = BTreeSet::new();
    for (component, text) in expositions().await {
        for line in text
            .lines()
            .filter(|l| l.starts_with("prapi_http_request_duration_seconds_count{"))
        {
            let media = line
                .split_once("media=\"")
                .and_then(|(_, rest)| rest.split_once('"'))
                .map(|(m, _)| m)
                .unwrap_or_else(|| panic!("{component}: no media label: {line}"));
            assert!(MEDIA.contains(&media), "{component}: media {media:?}");
            seen.insert(media.to_string());
        }
    }
    // The 404 of a missing product is problem+json; the local batch answers JSON.
    assert!(
        seen.contains("problem") && seen.contains("json"),
        "{seen:?}"
    );
    let dashboard =
        std::fs::read_to_string(repo().join("charts/prapi-operator/files/grafana-dashboard.json"))
            .expect("dashboard");
    assert!(
        dashboard
            .contains("sum by (le, route, media) (rate(prapi_http_request_duration_seconds_bucket"),
        "the dashboard's latency quantiles are split by media type"
    );
}

const TABLE_BEGIN: &str = "<!-- metrics-reference:begin -->\n";
const TABLE_END: &str = "<!-- metrics-reference:end -->";

/// The reference table of docs/metrics.md, as the scraped families make it.
fn reference_table(families: &BTreeMap<String, Family>) -> String {
    let mut out = String::from("| Metric | Type | Exported by | Meaning |\n|---|---|---|---|\n");
    for (name, f) in families {
        let shown = series_names(name, &f.kind).remove(0);
        let by = if f.exported_by.len() == COMPONENTS.len() {
            "all".to_string()
        } else {
            f.exported_by.join(", ")
        };
        out.push_str(&format!(
            "| `{shown}` | {} | {by} | {} |\n",
            f.kind,
            f.help.replace('|', "\\|")
        ));
    }
    out
}

#[tokio::test]
async fn docs_metrics_md_lists_exactly_the_exported_families() {
    let families = families(&expositions().await);
    let doc = std::fs::read_to_string(repo().join("docs/metrics.md")).expect("docs/metrics.md");
    let start = doc
        .find(TABLE_BEGIN)
        .expect("docs/metrics.md has the reference markers")
        + TABLE_BEGIN.len();
    let end = doc[start..].find(TABLE_END).expect("end marker") + start;
    let expected = reference_table(&families);
    assert!(
        doc[start..end] == expected,
        "docs/metrics.md's reference table differs from the registries; it should read:\n{expected}"
    );
}

#[test]
fn the_extractor_finds_names_prefixes_and_skips_other_words() {
    let got = referenced_names(
        "rate(prapi_http_request_duration_seconds_bucket{route=\"/x\"}[5m]) `prapi_cache_*` \
         use prapi_common::ops; a test_prapi_local_name; process_open_fds; `prapi_operator_`; RUST_LOG=warn,prapi_dataplane=debug; prapi_build_info==1",
    );
    assert_eq!(
        got,
        BTreeSet::from([
            Reference::Name("prapi_http_request_duration_seconds_bucket".into()),
            Reference::Prefix("prapi_cache_".into()),
            Reference::Name("process_open_fds".into()),
            Reference::Prefix("prapi_operator_".into()),
            Reference::Name("prapi_build_info".into()),
        ])
    );
}

/// The dashboard imports into Grafana: a dashboard model of a schema version Grafana 10 and later
/// migrate from, unique panel ids and positions inside the 24-column grid, every query on the
/// `datasource` variable it defines, and the same file under docs/ as in the chart.
#[test]
fn the_dashboard_is_an_importable_grafana_dashboard() {
    let path = repo().join("charts/prapi-operator/files/grafana-dashboard.json");
    let text = std::fs::read_to_string(&path).expect("dashboard");
    assert_eq!(
        std::fs::read_to_string(repo().join("docs/grafana-dashboard.json")).expect("docs copy"),
        text
    );
    let d: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let schema = d["schemaVersion"].as_i64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    assert!(
        d["uid"]
            .as_str()
            .is_some_and(|u| !u.is_empty() && u.len() <= 40)
    );
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(d["version"].is_u64());
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert!(
        vars.contains(&"datasource") && vars.contains(&"namespace"),
        "{vars:?}"
    );
    let panels = d["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut queries = 0;
    for p in panels {
        let id = p["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "panel id {id} twice");
        let g = &p["gridPos"];
        let (x, w, h) = (g["x"].as_u64(), g["w"].as_u64(), g["h"].as_u64());
        assert!(
            matches!((x, w, h), (Some(x), Some(w), Some(h)) if x + w <= 24 && h > 0),
            "panel {id}: gridPos {g}"
        );
        assert!(g["y"].is_u64(), "panel {id}: gridPos {g}");
        let kind = p["type"].as_str().expect("panel type");
        assert!(["row", "timeseries", "stat"].contains(&kind), "{kind}");
        if kind == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "panel {id}");
        for t in p["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().expect("expr");
            assert!(
                !expr.is_empty() && t["refId"].is_string(),
                "panel {id}: {t}"
            );
            assert_eq!(t["datasource"]["uid"], "${datasource}", "panel {id}");
            queries += 1;
        }
    }
    assert!(queries >= 20, "{queries} queries");
}
