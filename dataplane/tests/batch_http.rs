//! The batch endpoints over HTTP against real processes: three `prapi products` on embedded stores
//! loaded with the same catalogue, and one `prapi batch` in front of them (docs/api.md, "Batches").
//! Every batch answer is checked against the single GETs of the same ids, byte for byte.

mod batch_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use batch_support::{PATIENCE, Proc, copy_dir, get, gunzip, load_catalogue, spawn_ready};
use prapi::model::Country;
use prapi::store::embedded::EmbeddedStore;
use reqwest::StatusCode;
use serde_json::Value;

const TYPES: [&str; 4] = [
    "application/json",
    "application/x.alpha-format+json",
    "application/x.beta-format+json",
    "application/x.gamma-format+json",
];

/// Three products processes on separate stores loaded with the same catalogue, and a batch
/// process in front of them.
struct Cluster {
    _dir: tempfile::TempDir,
    products: Vec<Proc>,
    batch: Proc,
    /// Product ids of the catalogue, in catalogue order.
    ids: Vec<String>,
}

impl Cluster {
    fn pods(&self) -> Vec<&str> {
        self.products.iter().map(|p| p.base.as_str()).collect()
    }

    async fn start(batch_flags: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ids = Vec::new();
        let mut products = Vec::new();
        for i in 0..3 {
            let data = dir.path().join(format!("data-{i}"));
            if i == 0 {
                // The store is closed again before the process opens it (redb locks its file).
                ids = load_catalogue(&data).await;
            } else {
                // The same catalogue: a copy of the first store's files.
                copy_dir(&dir.path().join("data-0"), &data);
            }
            let args: Vec<String> = [
                "products",
                "--countries",
                "de,at",
                "--store",
                "embedded",
                "--data-dir",
            ]
            .iter()
            .map(|s| s.to_string())
            .chain([data.display().to_string()])
            .collect();
            products.push(spawn_ready(dir.path(), &format!("products-{i}"), &args, &[]).await);
        }
        let endpoints: Vec<&str> = products.iter().map(|p| p.base.as_str()).collect();
        let mut args: Vec<String> = [
            "batch",
            "--countries",
            "de,at",
            "--endpoints",
            &endpoints.join(","),
            // Generous limits: a loaded machine must not turn into failed items.
            "--deadline-ms",
            "20000",
            "--attempt-timeout-ms",
            "8000",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(batch_flags.iter().map(|s| s.to_string()));
        let batch = spawn_ready(dir.path(), "batch", &args, &[]).await;
        Cluster {
            _dir: dir,
            products,
            batch,
            ids,
        }
    }
}

/// The identity batch body the single GETs of `ids` (deduplicated) imply, each single GET sent
/// to one of the products processes in turn.
async fn expected_body(
    pods: &[&str],
    path: &str,
    ids: &[&str],
    headers: &[(&str, &str)],
) -> Vec<u8> {
    let mut seen: Vec<&str> = Vec::new();
    let (mut items, mut missing) = (Vec::new(), Vec::new());
    for (n, id) in ids.iter().enumerate() {
        if seen.contains(id) {
            continue;
        }
        seen.push(id);
        let pod = pods[n % pods.len()];
        let resp = get(&format!("{pod}{path}/{id}"), headers).await;
        match resp.status() {
            StatusCode::OK => items.push(resp.bytes().await.expect("body").to_vec()),
            StatusCode::NOT_FOUND => missing.push(format!("\"{id}\"")),
            s => panic!("single GET {path}/{id}: {s}"),
        }
    }
    let mut body = br#"{"items":["#.to_vec();
    body.extend_from_slice(&items.join(&b","[..]));
    body.extend_from_slice(
        format!(r#"],"missing":[{}],"failed":[]}}"#, missing.join(",")).as_bytes(),
    );
    body
}

/// The gzip body of a single GET of product-offers `id` (any pod: compression is deterministic).
async fn single_gzip(pods: &[&str], id: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut h = headers.to_vec();
    h.push(("accept-encoding", "gzip"));
    let resp = get(&format!("{}/product-offers/{id}", pods[0]), &h).await;
    assert_eq!(resp.status(), StatusCode::OK, "single GET {id}");
    resp.bytes().await.expect("body").to_vec()
}

async fn batch(
    c: &Cluster,
    path: &str,
    ids: &[&str],
    headers: &[(&str, &str)],
) -> reqwest::Response {
    batch_at(&c.batch.base, path, ids, headers).await
}

async fn batch_at(
    base: &str,
    path: &str,
    ids: &[&str],
    headers: &[(&str, &str)],
) -> reqwest::Response {
    get(&format!("{base}{path}?ids={}", ids.join(",")), headers).await
}

async fn problem(resp: reqwest::Response, status: StatusCode, kind: &str) -> Value {
    assert_eq!(resp.status(), status);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let body: Value = resp.json().await.expect("problem json");
    assert_eq!(
        body["type"],
        format!("https://prapi.dev/problems/{kind}"),
        "{body}"
    );
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_answers_equal_the_single_gets() {
    let c = Cluster::start(&[]).await;
    let known: Vec<&str> = c.ids.iter().map(String::as_str).collect();

    // Found and missing mixed, duplicates, deleted products: products batch.
    let ids = [
        known[3], "nope-1", known[0], known[3], "GONE-1", known[7], "nope-1",
    ];
    let resp = batch(&c, "/products", &ids, &[("x-flow-id", "batch-flow-1")]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.headers()["x-flow-id"], "batch-flow-1");
    assert!(resp.headers().get("content-encoding").is_none());
    let body = resp.bytes().await.expect("body");
    let expected = expected_body(&c.pods(), "/products", &ids, &[]).await;
    assert_eq!(
        String::from_utf8_lossy(&body),
        String::from_utf8_lossy(&expected)
    );
    let doc: Value = serde_json::from_slice(&body).expect("batch JSON");
    assert_eq!(doc["items"].as_array().map(Vec::len), Some(3));
    assert_eq!(doc["missing"], serde_json::json!(["nope-1", "GONE-1"]));
    assert_eq!(doc["items"][0]["id"], known[3]);
    assert_eq!(doc["items"][1]["id"], known[0]);

    // Every media type of product-offers, identity and gzip; gzip decodes to exactly identity.
    let ids: Vec<&str> = known
        .iter()
        .step_by(3)
        .take(30)
        .copied()
        .chain(["nope-2"])
        .collect();
    for accept in TYPES {
        for country in ["de", "AT"] {
            let h = [("x-country", country), ("accept", accept)];
            let plain = batch(&c, "/product-offers", &ids, &h).await;
            assert_eq!(plain.status(), StatusCode::OK, "{accept}");
            let plain = plain.bytes().await.expect("body");
            let expected = expected_body(&c.pods(), "/product-offers", &ids, &h).await;
            assert_eq!(
                String::from_utf8_lossy(&plain),
                String::from_utf8_lossy(&expected),
                "{accept} {country}"
            );
            let gz_headers = [h[0], h[1], ("accept-encoding", "gzip")];
            let gz = batch(&c, "/product-offers", &ids, &gz_headers).await;
            assert_eq!(gz.status(), StatusCode::OK);
            assert_eq!(gz.headers()["content-encoding"], "gzip");
            let gz = gz.bytes().await.expect("body");
            assert_eq!(
                gunzip(&gz),
                plain.to_vec(),
                "{accept} {country}: gzip != identity"
            );
            // One member (gunzip refuses more), made of the pods' own compressed blocks: the
            // first item's single-GET member, without its header and end, is in the body as is.
            let single = single_gzip(&c.pods(), ids[0], &h).await;
            let blocks = &single[16..single.len() - 10];
            assert!(
                gz.windows(blocks.len()).any(|w| w == blocks),
                "{accept} {country}: the item's compressed blocks are not in the batch body"
            );
        }
    }

    // The limit: 100 ids are fine, 101 are not.
    let hundred: Vec<&str> = known.iter().take(100).copied().collect();
    let resp = batch(&c, "/products", &hundred, &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let doc: Value = resp.json().await.expect("json");
    assert_eq!(doc["items"].as_array().map(Vec::len), Some(100));
    assert_eq!(doc["failed"], serde_json::json!([]));
    let mut many = hundred.clone();
    many.push(known[100]);
    let body = problem(
        batch(&c, "/products", &many, &[]).await,
        StatusCode::BAD_REQUEST,
        "too-many-ids",
    )
    .await;
    assert!(
        body["detail"].as_str().is_some_and(|d| d.contains("101")),
        "{body}"
    );

    // Bad requests.
    let body = problem(
        batch(&c, "/products", &[known[0], "bad%20id"], &[]).await,
        StatusCode::BAD_REQUEST,
        "invalid-product-id",
    )
    .await;
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("bad id")),
        "{body}"
    );
    problem(
        get(&format!("{}/products", c.batch.base), &[]).await,
        StatusCode::BAD_REQUEST,
        "missing-ids",
    )
    .await;
    problem(
        batch(&c, "/product-offers", &[known[0]], &[]).await,
        StatusCode::BAD_REQUEST,
        "missing-country",
    )
    .await;
    problem(
        batch(&c, "/product-offers", &[known[0]], &[("x-country", "fr")]).await,
        StatusCode::MISDIRECTED_REQUEST,
        "country-not-served",
    )
    .await;
    problem(
        batch(
            &c,
            "/products",
            &[known[0]],
            &[("accept", "application/x.gamma-format+json")],
        )
        .await,
        StatusCode::NOT_ACCEPTABLE,
        "not-acceptable",
    )
    .await;

    // Metrics of the batch process.
    let metrics = get(&format!("{}/metrics", c.batch.base), &[])
        .await
        .text()
        .await
        .expect("metrics");
    for name in [
        "prapi_batch_items_total{kind=\"products\",outcome=\"found\"}",
        "prapi_batch_items_total{kind=\"products\",outcome=\"missing\"}",
        "prapi_batch_ids_bucket",
        "prapi_batch_fanout_duration_seconds_bucket",
        "prapi_batch_lookup_duration_seconds_bucket",
        "prapi_lb_retries_total",
    ] {
        assert!(metrics.contains(name), "{name} not in /metrics");
    }
    assert!(
        !metrics.contains("outcome=\"failed\""),
        "no item may have failed:\n{metrics}"
    );
}

async fn batch_count(base: &str) -> u64 {
    let m = get(&format!("{base}/metrics"), &[])
        .await
        .text()
        .await
        .expect("metrics");
    m.lines()
        .find(|l| l.starts_with("prapi_batch_ids_count{kind=\"product-offers\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
}

async fn wait_for_batches(base: &str, n: u64) {
    tokio::time::timeout(PATIENCE, async {
        while batch_count(base).await < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("fewer than {n} batches answered within {PATIENCE:?}"));
}

/// A products process killed while batches run: every id it owned is retried on the next owner,
/// so no batch lists anything in `failed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_products_process_fails_no_item() {
    let mut c = Cluster::start(&[]).await;
    let ids: Vec<String> = c.ids.iter().take(100).cloned().collect();
    let url = format!("{}/product-offers?ids={}", c.batch.base, ids.join(","));
    let expected_items = {
        let resp = get(&url, &[("x-country", "de")]).await;
        let doc: Value = resp.json().await.expect("json");
        assert_eq!(doc["failed"], serde_json::json!([]));
        doc["items"].as_array().map(Vec::len).expect("items")
    };
    assert_eq!(expected_items, 100);

    // Batches in a loop from two clients while one products process is killed.
    let stop = Arc::new(AtomicBool::new(false));
    let mut drivers = Vec::new();
    for _ in 0..2 {
        let (url, stop) = (url.clone(), Arc::clone(&stop));
        drivers.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let resp = get(&url, &[("x-country", "de"), ("accept-encoding", "gzip")]).await;
                assert_eq!(resp.status(), StatusCode::OK);
                let doc: Value =
                    serde_json::from_slice(&gunzip(&resp.bytes().await.expect("body")))
                        .expect("batch JSON");
                answers.push((
                    doc["items"].as_array().map_or(0, Vec::len),
                    doc["failed"].clone(),
                ));
            }
            answers
        }));
    }
    // Let a few batches through, kill one pod mid-stream, let more batches through.
    wait_for_batches(&c.batch.base, 6).await;
    c.products[1].kill();
    let after_kill = batch_count(&c.batch.base).await;
    wait_for_batches(&c.batch.base, after_kill + 10).await;
    stop.store(true, Ordering::Relaxed);
    let mut answers = Vec::new();
    for d in drivers {
        answers.extend(d.await.expect("driver"));
    }
    // The batch component counted the first request above too; every other batch it counted
    // is a driver's, and a driver awaits the one in flight when told to stop.
    assert!(
        answers.len() as u64 >= after_kill + 10 - 1,
        "{} batches answered, {} counted by the batch component after the kill",
        answers.len(),
        after_kill + 10
    );
    for (items, failed) in &answers {
        assert_eq!(failed, &serde_json::json!([]), "a batch listed failed ids");
        assert_eq!(*items, expected_items);
    }
    // The kill really was felt: lookups were retried on the next owner.
    let metrics = get(&format!("{}/metrics", c.batch.base), &[])
        .await
        .text()
        .await
        .expect("metrics");
    let retries: u64 = metrics
        .lines()
        .find(|l| l.starts_with("prapi_lb_retries_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("retries counter");
    assert!(
        retries > 0,
        "no retries after a products process was killed"
    );
}

/// `prapi local` serves the batch endpoints from its own cache: the same bytes as its single
/// GETs, in every media type, identity and gzip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_mode_batches_from_its_own_cache() {
    use prapi::batch::BatchConfig;
    use prapi::cache::CacheConfig;
    use prapi::http::overload::OverloadConfig;
    use prapi::http::server::{Readiness, serve};
    use prapi::run::ProductsServer;

    let dir = tempfile::tempdir().expect("tempdir");
    let ids = load_catalogue(dir.path()).await;
    let store = EmbeddedStore::open(dir.path()).expect("reopen store");
    let readiness = Readiness::default();
    readiness.set(true);
    let app = ProductsServer {
        countries: Country::parse_list("de,at").expect("countries"),
        cache: CacheConfig::default(),
        overload: OverloadConfig::default(),
    }
    .router_with_batch(
        Arc::new(store),
        readiness,
        prapi::metrics::registry(),
        BatchConfig {
            max_items: 5,
            deadline: Duration::from_secs(20),
        },
    )
    .expect("router");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(serve(listener, app, std::future::pending()));

    let list = [
        ids[2].as_str(),
        "GONE-2",
        ids[0].as_str(),
        ids[2].as_str(),
        ids[9].as_str(),
    ];
    for accept in TYPES {
        let h = [("x-country", "de"), ("accept", accept)];
        let plain = batch_at(&base, "/product-offers", &list, &h).await;
        assert_eq!(plain.status(), StatusCode::OK);
        let plain = plain.bytes().await.expect("body");
        let expected = expected_body(&[&base], "/product-offers", &list, &h).await;
        assert_eq!(
            String::from_utf8_lossy(&plain),
            String::from_utf8_lossy(&expected)
        );
        let gz = batch_at(
            &base,
            "/product-offers",
            &list,
            &[h[0], h[1], ("accept-encoding", "gzip")],
        )
        .await;
        assert_eq!(gz.headers()["content-encoding"], "gzip");
        assert_eq!(gunzip(&gz.bytes().await.expect("body")), plain.to_vec());
    }
    let plain = batch_at(&base, "/products", &list, &[])
        .await
        .bytes()
        .await
        .expect("body");
    assert_eq!(
        plain.to_vec(),
        expected_body(&[&base], "/products", &list, &[]).await
    );
    let doc: Value = serde_json::from_slice(&plain).expect("json");
    assert_eq!(doc["missing"], serde_json::json!(["GONE-2"]));
    // --max-items applies in local mode too (5 here).
    let six = [list.as_slice(), &["x"]].concat();
    problem(
        batch_at(&base, "/products", &six, &[]).await,
        StatusCode::BAD_REQUEST,
        "too-many-ids",
    )
    .await;
}
