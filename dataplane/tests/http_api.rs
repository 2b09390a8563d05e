//! The products HTTP API over a real socket (docs/api.md): every status code, negotiation, gzip,
//! ETags, flow ids, problem bodies and overload behaviour. The API suite runs against both
//! stores: the embedded one and DynamoDB (dynalite, from the test environment).

mod support;

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use prapi::cache::CacheConfig;
use prapi::http::overload::OverloadConfig;
use prapi::http::server::{Readiness, serve};
use prapi::model::{Country, Event, Offer, ProductId, Write};
use prapi::run::ProductsServer;
use prapi::store::dynamodb::DynamoStore;
use prapi::store::embedded::EmbeddedStore;
use prapi::store::{ApplyOutcome, ProductOffers, Store, StoreError, StoredProduct};
use reqwest::StatusCode;
use serde_json::{Value, json};

const P1: &str = r#"{"type":"product","id":"P1","version":3,"product":{"id":"P1","name":"Air Max 90","brand":{"code":"NI1","name":"Nike"},"simples":[{"sku":"P1-40","size":"40"},{"sku":"P1-41","size":"41"}],"media":[{"url":"https://img.example/p1.jpg"}],"attributes":[{"key":"color","values":["white","red"]}],"care":{"wash":"30°C"}}}"#;

fn events() -> Vec<String> {
    let offer = |merchant: &str, sku: &str, country: &str, amount: i64, stock: u64| {
        format!(
            r#"{{"type":"offer","product_id":"P1","merchant_id":"{merchant}","country":"{country}","sku":"{sku}","version":5,"price":{{"amount":{amount},"currency":"EUR"}},"stock":{stock}}}"#
        )
    };
    vec![
        P1.to_string(),
        offer("m2", "P1-40", "de", 5995, 3),
        offer("m1", "P1-41", "de", 6495, 0),
        offer("m1", "P1-40", "de", 5795, 1),
        offer("m1", "P1-40", "at", 5895, 2),
        r#"{"type":"product","id":"P2","version":1,"product":{"name":"Plain"}}"#.to_string(),
        r#"{"type":"product","id":"P3","version":1,"product":{"name":"Gone"}}"#.to_string(),
        r#"{"type":"product_deleted","id":"P3","version":2}"#.to_string(),
    ]
}

async fn seeded_embedded() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open store");
    let writes: Vec<Write> = events()
        .iter()
        .map(|l| {
            Event::parse(l.as_bytes())
                .expect("valid event")
                .into_write()
        })
        .collect();
    store.apply(&writes).await.expect("seed");
    (dir, Arc::new(store))
}

fn overload(max_concurrent: usize, max_queue: usize, timeout_ms: u64) -> OverloadConfig {
    OverloadConfig {
        max_concurrent,
        max_queue,
        queue_timeout: Duration::from_millis(timeout_ms),
    }
}

async fn start(store: Arc<dyn Store>, overload: OverloadConfig) -> String {
    let readiness = Readiness::default();
    readiness.set(true);
    let app = ProductsServer {
        countries: Country::parse_list("de,at").expect("countries"),
        cache: CacheConfig {
            ttl: Duration::from_secs(60),
            stale: Duration::from_secs(15),
            negative_ttl: Duration::from_secs(5),
            max_bytes: 64 << 20,
            ..CacheConfig::default()
        },
        overload,
    }
    .router(store, readiness)
    .expect("router");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(serve(listener, app, std::future::pending()));
    format!("http://{addr}")
}

fn client() -> reqwest::Client {
    // No automatic decompression: the tests look at the bytes on the wire.
    reqwest::Client::builder()
        .no_gzip()
        .build()
        .expect("client")
}

async fn get(base: &str, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = client().get(format!("{base}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.expect("request")
}

async fn problem(resp: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(resp.status(), status);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let body: Value = resp.json().await.expect("problem json");
    assert_eq!(body["status"], status.as_u16());
    assert!(
        body["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("https://prapi.dev/problems/")),
        "{body}"
    );
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    body
}

/// The behaviour every store must give the API (run against each store).
async fn api_suite(store: Arc<dyn Store>) {
    let base = start(store, OverloadConfig::default()).await;

    // 200: the product document, as stored, with id and version set.
    let resp = get(&base, "/products/P1", &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert!(resp.headers().contains_key("x-flow-id"));
    let etag = resp.headers()["etag"].to_str().expect("etag").to_owned();
    let doc: Value = resp.json().await.expect("json");
    assert_eq!(doc["id"], "P1");
    assert_eq!(doc["version"], 3);
    assert_eq!(doc["care"]["wash"], "30°C", "unknown fields are kept as-is");

    // 304 on a matching If-None-Match; 200 on another tag.
    let resp = get(&base, "/products/P1", &[("if-none-match", &etag)]).await;
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(resp.headers()["etag"], etag.as_str());
    assert!(resp.bytes().await.expect("body").is_empty());
    assert_eq!(
        get(&base, "/products/P1", &[("if-none-match", "W/\"other\"")])
            .await
            .status(),
        StatusCode::OK
    );

    // X-Flow-ID echoed.
    let resp = get(&base, "/products/P1", &[("x-flow-id", "flow-42")]).await;
    assert_eq!(resp.headers()["x-flow-id"], "flow-42");
    let resp = get(&base, "/products/nope", &[("x-flow-id", "flow-43")]).await;
    assert_eq!(
        resp.headers()["x-flow-id"],
        "flow-43",
        "errors echo the flow id too"
    );

    // 404 for unknown and deleted products, and unknown paths.
    problem(
        get(&base, "/products/nope", &[]).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    problem(get(&base, "/products/P3", &[]).await, StatusCode::NOT_FOUND).await;
    problem(
        get(&base, "/product-offers/P3", &[("x-country", "de")]).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    problem(
        get(&base, "/nothing/here", &[]).await,
        StatusCode::NOT_FOUND,
    )
    .await;

    // 400: bad id, missing or malformed country.
    let body = problem(
        get(&base, "/products/bad%20id", &[]).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("product id")),
        "{body}"
    );
    let long = "x".repeat(65);
    problem(
        get(&base, &format!("/products/{long}"), &[]).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let body = problem(
        get(&base, "/products/P1/offers", &[]).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("X-Country")),
        "{body}"
    );
    problem(
        get(&base, "/product-offers/P1", &[("x-country", "deu")]).await,
        StatusCode::BAD_REQUEST,
    )
    .await;

    // 421: a country this market group does not serve.
    let body = problem(
        get(&base, "/products/P1/offers", &[("x-country", "fr")]).await,
        StatusCode::MISDIRECTED_REQUEST,
    )
    .await;
    assert!(
        body["detail"].as_str().is_some_and(|d| d.contains("de,at")),
        "{body}"
    );

    // Offers in the country, sorted by (merchant_id, sku).
    let resp = get(&base, "/products/P1/offers", &[("x-country", "DE")]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["product_id"], "P1");
    assert_eq!(body["country"], "de");
    let keys: Vec<(String, String)> = body["offers"]
        .as_array()
        .expect("offers")
        .iter()
        .map(|o| {
            (
                o["merchant_id"].as_str().unwrap_or("").into(),
                o["sku"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [("m1", "P1-40"), ("m1", "P1-41"), ("m2", "P1-40")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    assert_eq!(
        body["offers"][0],
        json!({"merchant_id":"m1","sku":"P1-40","price":{"amount":5795,"currency":"EUR"},"stock":1,"version":5})
    );
    let at: Value = get(&base, "/products/P1/offers", &[("x-country", "at")])
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(at["offers"].as_array().map(Vec::len), Some(1));
    // A product without offers has an empty list, not a 404.
    let p2: Value = get(&base, "/products/P2/offers", &[("x-country", "de")])
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(p2["offers"], json!([]));

    // Product-offers in each media type, chosen by Accept with q-values.
    let mut bodies = HashMap::new();
    for (accept, ct) in [
        (None, "application/json"),
        (Some("*/*"), "application/json"),
        (
            Some("application/x.alpha-format+json"),
            "application/x.alpha-format+json",
        ),
        (
            Some("application/x.beta-format+json"),
            "application/x.beta-format+json",
        ),
        (
            Some("application/x.gamma-format+json"),
            "application/x.gamma-format+json",
        ),
        (
            Some(
                "application/x.beta-format+json;q=0.5, application/x.gamma-format+json;q=0.8, text/html",
            ),
            "application/x.gamma-format+json",
        ),
        (
            Some("application/x.alpha-format+json;q=0, */*;q=0.1"),
            "application/json",
        ),
    ] {
        let headers: Vec<(&str, &str)> = std::iter::once(("x-country", "de"))
            .chain(accept.map(|a| ("accept", a)))
            .collect();
        let resp = get(&base, "/product-offers/P1", &headers).await;
        assert_eq!(resp.status(), StatusCode::OK, "{accept:?}");
        assert_eq!(resp.headers()["content-type"], ct, "{accept:?}");
        assert!(
            resp.headers()["vary"]
                .to_str()
                .is_ok_and(|v| v.contains("Accept"))
        );
        let body: Value = resp.json().await.expect("json");
        bodies.insert(ct, body);
    }
    assert_eq!(bodies["application/json"]["product"]["id"], "P1");
    assert_eq!(
        bodies["application/json"]["offers"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );
    assert_eq!(
        bodies["application/x.alpha-format+json"]["offers"][0]["price"],
        "57.95"
    );
    assert_eq!(
        bodies["application/x.alpha-format+json"]["attributes"]["color"],
        "white, red"
    );
    assert_eq!(
        bodies["application/x.beta-format+json"]["simples"][0]["offers"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    assert_eq!(
        bodies["application/x.gamma-format+json"],
        json!({"id":"P1","title":"Nike Air Max 90","image":"https://img.example/p1.jpg",
               "price":{"min":"57.95","max":"59.95","currency":"EUR"},"inStock":true,"sizes":["40"]})
    );

    // 406: nothing acceptable; the single product is only JSON.
    let body = problem(
        get(
            &base,
            "/product-offers/P1",
            &[("x-country", "de"), ("accept", "text/html")],
        )
        .await,
        StatusCode::NOT_ACCEPTABLE,
    )
    .await;
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("application/x.gamma-format+json")),
        "{body}"
    );
    problem(
        get(
            &base,
            "/products/P1",
            &[("accept", "application/x.alpha-format+json")],
        )
        .await,
        StatusCode::NOT_ACCEPTABLE,
    )
    .await;
    let resp = get(
        &base,
        "/products/P1",
        &[(
            "accept",
            "application/x.alpha-format+json, application/json;q=0.1",
        )],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);

    // gzip: pre-compressed bytes that decompress to exactly the identity body.
    for (path, country) in [("/products/P1", None), ("/product-offers/P1", Some("de"))] {
        let mut h = vec![];
        if let Some(c) = country {
            h.push(("x-country", c));
        }
        let plain = get(&base, path, &h).await.bytes().await.expect("body");
        h.push(("accept-encoding", "br;q=1, gzip;q=0.5"));
        let resp = get(&base, path, &h).await;
        assert_eq!(resp.headers()["content-encoding"], "gzip");
        let gz = resp.bytes().await.expect("body");
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut out)
            .expect("valid gzip");
        assert_eq!(Bytes::from(out), plain, "{path}");
        let resp = get(&base, path, &[("accept-encoding", "gzip;q=0")]).await;
        assert!(!resp.headers().contains_key("content-encoding"));
    }

    // Operational endpoints.
    assert_eq!(get(&base, "/healthz", &[]).await.status(), StatusCode::OK);
    assert_eq!(get(&base, "/readyz", &[]).await.status(), StatusCode::OK);
    let metrics = get(&base, "/metrics", &[])
        .await
        .text()
        .await
        .expect("metrics");
    assert!(
        metrics.contains("prapi_http_request_duration_seconds"),
        "{metrics}"
    );
    assert!(metrics.contains("route=\"/products/{id}\""), "{metrics}");
    // Latency by the representation served: each format asked for above, and the 406s' problem.
    for media in ["json", "alpha", "beta", "gamma", "problem"] {
        assert!(
            metrics.contains(&format!("media=\"{media}\"")),
            "{media}: {metrics}"
        );
    }
    assert!(
        metrics.contains("prapi_store_operation_duration_seconds"),
        "{metrics}"
    );
}

#[tokio::test]
async fn api_on_the_embedded_store() {
    let (_dir, store) = seeded_embedded().await;
    api_suite(store).await;
}

#[tokio::test]
async fn api_on_the_dynamodb_store() {
    let Some(env) = support::env(false) else {
        return;
    };
    let store = DynamoStore::connect(env.dynamo_config(&support::unique("http-api")))
        .await
        .expect("connect to DynamoDB");
    let writes: Vec<Write> = events()
        .iter()
        .map(|l| {
            Event::parse(l.as_bytes())
                .expect("valid event")
                .into_write()
        })
        .collect();
    store.apply(&writes).await.expect("seed");
    api_suite(Arc::new(store)).await;
}

/// A store that can be switched to failing, to see what the API does when DynamoDB is down.
struct FlakyStore {
    inner: Arc<dyn Store>,
    failing: AtomicBool,
}

impl FlakyStore {
    fn check(&self) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable("injected outage".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Store for FlakyStore {
    async fn product(&self, id: &ProductId) -> Result<Option<StoredProduct>, StoreError> {
        self.check()?;
        self.inner.product(id).await
    }
    async fn offers(&self, id: &ProductId, country: Country) -> Result<Vec<Offer>, StoreError> {
        self.check()?;
        self.inner.offers(id, country).await
    }
    async fn product_offers(
        &self,
        id: &ProductId,
        country: Country,
    ) -> Result<ProductOffers, StoreError> {
        self.check()?;
        self.inner.product_offers(id, country).await
    }
    async fn apply(&self, writes: &[Write]) -> Result<ApplyOutcome, StoreError> {
        self.check()?;
        self.inner.apply(writes).await
    }
}

#[tokio::test]
async fn store_outage_serves_the_cache_and_503s_the_rest() {
    let (_dir, inner) = seeded_embedded().await;
    let store = Arc::new(FlakyStore {
        inner,
        failing: AtomicBool::new(false),
    });
    let base = start(store.clone(), OverloadConfig::default()).await;
    assert_eq!(
        get(&base, "/products/P1", &[]).await.status(),
        StatusCode::OK
    );
    store.failing.store(true, Ordering::SeqCst);
    assert_eq!(
        get(&base, "/products/P1", &[]).await.status(),
        StatusCode::OK,
        "cached bodies survive an outage"
    );
    let resp = get(&base, "/products/P2", &[]).await;
    assert_eq!(resp.headers()["retry-after"], "1");
    let body = problem(resp, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body["type"], "https://prapi.dev/problems/store-unavailable");
    store.failing.store(false, Ordering::SeqCst);
    assert_eq!(
        get(&base, "/products/P2", &[]).await.status(),
        StatusCode::OK,
        "errors are not cached"
    );
}

/// A store whose reads wait for a gate, recording the order in which they started.
struct GatedStore {
    entered: Mutex<Vec<String>>,
    gate: tokio::sync::Semaphore,
}

impl GatedStore {
    async fn wait(&self, id: &ProductId) {
        if let Ok(mut e) = self.entered.lock() {
            e.push(id.to_string());
        }
        if let Ok(permit) = self.gate.acquire().await {
            permit.forget();
        }
    }
    fn entered(&self) -> Vec<String> {
        self.entered.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl Store for GatedStore {
    async fn product(&self, id: &ProductId) -> Result<Option<StoredProduct>, StoreError> {
        self.wait(id).await;
        Ok(Some(StoredProduct {
            version: 1,
            body: Bytes::from(format!(r#"{{"id":"{id}","version":1}}"#)),
        }))
    }
    async fn offers(&self, _: &ProductId, _: Country) -> Result<Vec<Offer>, StoreError> {
        Ok(vec![])
    }
    async fn product_offers(&self, _: &ProductId, _: Country) -> Result<ProductOffers, StoreError> {
        Ok(ProductOffers::default())
    }
    async fn apply(&self, _: &[Write]) -> Result<ApplyOutcome, StoreError> {
        Ok(ApplyOutcome::default())
    }
}

async fn until(mut f: impl FnMut() -> bool) {
    // Bounded: a broken limiter fails the test instead of hanging it.
    for _ in 0..2000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("condition not reached within 10 s");
}

async fn wait_queued(base: &str, n: usize) {
    let want = format!("prapi_http_queued_requests {n}\n");
    for _ in 0..2000 {
        let metrics = get(base, "/metrics", &[])
            .await
            .text()
            .await
            .expect("metrics");
        if metrics.contains(&want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let metrics = get(base, "/metrics", &[])
        .await
        .text()
        .await
        .expect("metrics");
    panic!("{n} requests never queued: {metrics}");
}

#[tokio::test]
async fn overload_serves_newest_waiters_first_and_sheds_with_503() {
    let store = Arc::new(GatedStore {
        entered: Mutex::new(vec![]),
        gate: tokio::sync::Semaphore::new(0),
    });
    let base = start(store.clone(), overload(1, 3, 5_000)).await;
    let spawn = |id: &str| {
        let (base, id) = (base.clone(), id.to_string());
        tokio::spawn(async move { get(&base, &format!("/products/{id}"), &[]).await.status() })
    };
    // A holds the only slot; B, C, D queue in that order; E pushes the oldest (B) out.
    let a = spawn("A");
    until(|| store.entered().len() == 1).await;
    let mut queued = vec![];
    for id in ["B", "C", "D"] {
        queued.push(spawn(id));
        // Wait until the request is parked in the queue before sending the next one.
        wait_queued(&base, queued.len()).await;
    }
    let e = spawn("E");
    assert_eq!(
        queued.remove(0).await.expect("B"),
        StatusCode::SERVICE_UNAVAILABLE,
        "oldest waiter shed"
    );
    // Release one store read at a time: the newest waiter goes next.
    for n in 2..=4 {
        store.gate.add_permits(1);
        until(|| store.entered().len() == n).await;
    }
    store.gate.add_permits(10);
    assert_eq!(store.entered(), ["A", "E", "D", "C"]);
    assert_eq!(a.await.expect("A"), StatusCode::OK);
    assert_eq!(e.await.expect("E"), StatusCode::OK);
    for q in queued {
        assert_eq!(q.await.expect("queued"), StatusCode::OK);
    }

    // A waiter that cannot get a slot within the queue timeout gets a 503 with Retry-After.
    let store = Arc::new(GatedStore {
        entered: Mutex::new(vec![]),
        gate: tokio::sync::Semaphore::new(0),
    });
    let base = start(store.clone(), overload(1, 3, 50)).await;
    let held = {
        let base = base.clone();
        tokio::spawn(async move { get(&base, "/products/X", &[]).await.status() })
    };
    until(|| store.entered().len() == 1).await;
    let resp = get(&base, "/products/Y", &[]).await;
    assert_eq!(resp.headers()["retry-after"], "1");
    let body = problem(resp, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body["type"], "https://prapi.dev/problems/overloaded");
    let metrics = get(&base, "/metrics", &[])
        .await
        .text()
        .await
        .expect("metrics");
    assert!(metrics.contains("reason=\"queue_timeout\""), "{metrics}");
    store.gate.add_permits(10);
    assert_eq!(held.await.expect("held"), StatusCode::OK);
}
