//! Cache-hit throughput of `GET /products/{id}` for a ~30 KB product, next to two minimal axum
//! handlers: one returning the same body with only a content type (the floor any HTTP server on
//! this stack can reach), and one returning prapi's whole response — the same status, headers
//! and body, copied from one prapi answer — so that the cost of prapi's work per hit (routing,
//! negotiation, cache lookup, admission, metrics) is told apart from the cost of the headers the
//! API's contract sends (ETag, Vary, Cache-Control, flow id). All run in this process on loopback
//! and are measured in alternating rounds, so machine noise hits all; the figures to read are the
//! ratios, per round and their medians.
//!
//! `cargo bench -p prapi-dataplane --bench serve` (or `make bench`). Environment:
//! `PRAPI_BENCH_SECONDS` per round (default 3), `PRAPI_BENCH_ROUNDS` (3), `PRAPI_BENCH_CONNECTIONS` (32).

mod kit;
use kit::{env, listen};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::header;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prapi::cache::CacheConfig;
use prapi::r#gen::GenConfig;
use prapi::http::overload::OverloadConfig;
use prapi::http::server::Readiness;
use prapi::model::{Country, Event};
use prapi::run::{ProductsServer, load_events};
use prapi::store::Store;
use prapi::store::embedded::EmbeddedStore;

// The allocator of the `prapi` binary (src/main.rs), so the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Round {
    requests: u64,
    elapsed: Duration,
    p50_us: u64,
    p99_us: u64,
}

async fn drive(url: &str, connections: u64, duration: Duration) -> Round {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let uri: hyper::Uri = url.parse().expect("bench url");
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (client, stop, count, uri) = (client.clone(), stop.clone(), count.clone(), uri.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(1 << 16);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let resp = client.get(uri.clone()).await.expect("request");
                assert!(resp.status().is_success(), "{}", resp.status());
                let body = resp.into_body().collect().await.expect("body").to_bytes();
                assert!(body.len() > 20_000, "short body {}", body.len());
                lat.push(t.elapsed().as_micros() as u64);
                count.fetch_add(1, Ordering::Relaxed);
            }
            lat
        }));
    }
    let start = Instant::now();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("driver task"));
    }
    let elapsed = start.elapsed();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    Round {
        requests: count.load(Ordering::Relaxed),
        elapsed,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn main() {
    let seconds = env("PRAPI_BENCH_SECONDS", 3);
    let rounds = env("PRAPI_BENCH_ROUNDS", 3);
    let connections = env("PRAPI_BENCH_CONNECTIONS", 32);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path()).expect("store");
        let countries = Country::parse_list("de,at").expect("countries");
        let cfg = GenConfig { products: 5, countries: countries.clone(), seed: 1 };
        let first = cfg.events().next().expect("one event");
        let id = Event::parse(&first).expect("event").product_id().clone();
        load_events(&store, cfg.events().map(Ok), |_| {}).await.expect("load");
        let body = store.product(&id).await.expect("read").expect("product").body;

        let readiness = Readiness::default();
        readiness.set(true);
        let prapi_app = ProductsServer {
            countries,
            cache: CacheConfig {
                ttl: Duration::from_secs(3600),
                stale: Duration::from_secs(15),
                negative_ttl: Duration::from_secs(5),
                max_bytes: 256 << 20,
                ..CacheConfig::default()
            },
            overload: OverloadConfig { max_concurrent: 4096, max_queue: 4096, queue_timeout: Duration::from_secs(1) },
        }
        .router(Arc::new(store), readiness)
        .expect("router");
        let baseline_body = body.clone();
        let baseline_app = Router::new().route(
            "/products/{id}",
            get(move || {
                let b = baseline_body.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], b) }
            }),
        );
        let prapi_url = format!("{}/products/{id}", listen(prapi_app).await);
        let baseline_url = format!("{}/products/{id}", listen(baseline_app).await);
        // prapi's own answer, replayed: hyper adds date and content-length itself.
        let answer = Client::builder(TokioExecutor::new())
            .build_http::<Empty<Bytes>>()
            .get(prapi_url.parse().expect("bench url"))
            .await
            .expect("one prapi answer");
        let mut same_headers = answer.headers().clone();
        same_headers.remove(header::DATE);
        same_headers.remove(header::CONTENT_LENGTH);
        let same_body = answer.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(same_body, body, "prapi answers the stored document");
        let same_app = Router::new().route(
            "/products/{id}",
            get(move || {
                let (h, b) = (same_headers.clone(), same_body.clone());
                async move { (h, b) }
            }),
        );
        let same_url = format!("{}/products/{id}", listen(same_app).await);
        println!(
            "GET /products/{{id}} cache hit, {} B body, {connections} keep-alive connections, {rounds} rounds x {seconds}s each",
            body.len()
        );
        let d = Duration::from_secs(seconds);
        // Warm up both (first load fills the cache; connection pools open).
        drive(&prapi_url, connections, Duration::from_millis(500)).await;
        drive(&baseline_url, connections, Duration::from_millis(500)).await;
        drive(&same_url, connections, Duration::from_millis(500)).await;
        let rate = |r: &Round| r.requests as f64 / r.elapsed.as_secs_f64();
        let (mut to_bare, mut to_same) = (Vec::new(), Vec::new());
        for r in 0..rounds {
            let base = drive(&baseline_url, connections, d).await;
            let same = drive(&same_url, connections, d).await;
            let ours = drive(&prapi_url, connections, d).await;
            let (bq, sq, pq) = (rate(&base), rate(&same), rate(&ours));
            println!(
                "round {r}: bare {bq:>8.0} req/s (p50 {} us, p99 {} us) | same response {sq:>8.0} req/s (p50 {} us, p99 {} us) | prapi {pq:>8.0} req/s (p50 {} us, p99 {} us) | prapi/bare {:.3}, prapi/same {:.3}",
                base.p50_us,
                base.p99_us,
                same.p50_us,
                same.p99_us,
                ours.p50_us,
                ours.p99_us,
                pq / bq,
                pq / sq
            );
            to_bare.push(pq / bq);
            to_same.push(pq / sq);
        }
        println!(
            "median of {rounds} rounds: prapi/bare = {:.3}, prapi/same response = {:.3}",
            median(&mut to_bare),
            median(&mut to_same)
        );
    });
}
