//! Cache-hit throughput of `GET /products/{id}` for a ~30 KB product, next to a minimal axum handler
//! returning the same bytes (the floor any HTTP server on this stack can reach). Both run in this
//! process on loopback and are measured in alternating rounds, so machine noise hits both; the
//! figure to read is the ratio.
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
        println!(
            "GET /products/{{id}} cache hit, {} B body, {connections} keep-alive connections, {rounds} rounds x {seconds}s each",
            body.len()
        );
        let d = Duration::from_secs(seconds);
        // Warm up both (first load fills the cache; connection pools open).
        drive(&prapi_url, connections, Duration::from_millis(500)).await;
        drive(&baseline_url, connections, Duration::from_millis(500)).await;
        let (mut p, mut b) = (Vec::new(), Vec::new());
        for r in 0..rounds {
            let base = drive(&baseline_url, connections, d).await;
            let ours = drive(&prapi_url, connections, d).await;
            let (bq, pq) = (
                base.requests as f64 / base.elapsed.as_secs_f64(),
                ours.requests as f64 / ours.elapsed.as_secs_f64(),
            );
            println!(
                "round {r}: baseline {bq:>9.0} req/s (p50 {} us, p99 {} us) | prapi {pq:>9.0} req/s (p50 {} us, p99 {} us) | ratio {:.3}",
                base.p50_us,
                base.p99_us,
                ours.p50_us,
                ours.p99_us,
                pq / bq
            );
            b.push(bq);
            p.push(pq);
        }
        let (sb, sp): (f64, f64) = (b.iter().sum(), p.iter().sum());
        println!("total: baseline {:.0} req/s, prapi {:.0} req/s, prapi/baseline = {:.3}", sb / b.len() as f64, sp / p.len() as f64, sp / sb);
    });
}
