//! Open-loop latency of `prapi products` (embedded store, every body cached) at fixed fractions of
//! its peak, measured in the same run.
//!
//! Closed-loop load (N connections, each sending when its last answer came) slows down with the
//! server and so never sees the queueing a slow moment causes: it hides the tail. Here requests
//! are sent at a constant rate on a fixed schedule, whatever the server does, and each latency is
//! taken from the request's *intended* send time, so a stall shows up in every request it delayed
//! (no coordinated omission). Percentiles come from an HdrHistogram (3 significant digits).
//!
//! Per scenario (single `GET /product-offers/{id}` in each media type, identity and gzip, and the
//! 100-id batch through `prapi batch` in front of the same products server):
//! 1. peak: closed loop, `PRAPI_BENCH_CONNECTIONS` (32) keep-alive connections, 2 s;
//! 2. open loop at 25 %, 50 % and 75 % of that peak, `PRAPI_BENCH_SECONDS` (3) each, after a
//!    0.5 s warm-up at the same rate: P50/P99/P99.9, the rate the generator reached, how late it
//!    sent (its own lag, a floor under every figure), and the CPU of the server's and the
//!    generator's threads.
//!
//! The generator: one pacing thread sleeps (`std::thread::sleep`, ~60 µs resolution, where
//! tokio's timer has 1 ms) to each intended time and spawns the request onto its own 2-thread
//! runtime, which runs a hyper client that opens as many connections as requests are in flight.
//! Server and generator share the machine's cores; their CPU is read per thread from
//! /proc/self/task, so both are reported.
//!
//! `cargo bench -p prapi-dataplane --bench latency` (`make bench-latency`; about 2.5 minutes).
//! `PRAPI_BENCH_PRODUCTS` (2000) sets the catalogue.

mod kit;
use kit::{env, listen, overload};

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prapi::batch::BatchConfig;
use prapi::cache::CacheConfig;
use prapi::clock::MonotonicClock;
use prapi::formats::MediaType;
use prapi::r#gen::GenConfig;
use prapi::http::server::Readiness;
use prapi::lb::{Balancer, BalancerConfig, ClientConfig, parse_endpoints};
use prapi::model::Country;
use prapi::run::{BatchServer, ProductsServer, load_events};
use prapi::store::Store;
use prapi::store::embedded::EmbeddedStore;
use tokio::runtime::{Handle, Runtime};

// The allocator of the `prapi` binary (src/main.rs), so the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// Thread names, by which CPU is told apart (/proc shows the first 15 bytes).
const SERVER_THREADS: &str = "srv-worker";
const GEN_THREADS: &str = "gen-worker";
const PACER_THREAD: &str = "gen-pacer";

fn runtime(name: &'static str, workers: usize) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(name)
        .enable_all()
        .build()
        .expect("runtime")
}

/// CPU time used so far by this process's threads, by thread name, from /proc/self/task.
fn cpu_by_thread() -> HashMap<String, Duration> {
    let mut out = HashMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(path.join("comm")),
            std::fs::read_to_string(path.join("schedstat")),
        ) else {
            continue;
        };
        let ns: u64 = stat
            .split(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        *out.entry(comm.trim().to_string()).or_default() += Duration::from_nanos(ns);
    }
    out
}

/// CPU used between two readings by threads whose name starts with `prefix`.
fn cpu_of(
    before: &HashMap<String, Duration>,
    after: &HashMap<String, Duration>,
    prefix: &str,
) -> Duration {
    let sum = |m: &HashMap<String, Duration>| -> Duration {
        m.iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| *v)
            .sum()
    };
    sum(after).saturating_sub(sum(before))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// One kind of request: its URLs (cycled) and headers.
#[derive(Clone)]
struct Scenario {
    name: String,
    urls: Arc<Vec<hyper::Uri>>,
    headers: Arc<Vec<(&'static str, &'static str)>>,
}

impl Scenario {
    fn request(&self, i: u64) -> http::Request<Empty<Bytes>> {
        // A stride coprime to the catalogue size visits every id, not in storage order.
        let n = self.urls.len() as u64;
        let uri = self.urls[((i.wrapping_mul(7919)) % n) as usize].clone();
        let mut req = http::Request::get(uri);
        for (k, v) in self.headers.iter() {
            req = req.header(*k, *v);
        }
        req.body(Empty::new()).expect("request")
    }
}

/// One request, its whole body read; `false` when it failed (connection refused or reset, an
/// error status): under overload the server sheds connections, and that is a result to report.
async fn send(client: &HttpClient, req: http::Request<Empty<Bytes>>) -> bool {
    let Ok(resp) = client.request(req).await else {
        return false;
    };
    resp.status().is_success() && resp.into_body().collect().await.is_ok()
}

/// Closed loop: `connections` clients sending back to back for `d`; requests per second.
async fn peak(client: &HttpClient, scenario: &Scenario, connections: u64, d: Duration) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (client, scenario, stop, count) = (
            client.clone(),
            scenario.clone(),
            Arc::clone(&stop),
            Arc::clone(&count),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = c * 1_000_003;
            while !stop.load(Ordering::Relaxed) {
                if send(&client, scenario.request(i)).await {
                    count.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
        }));
    }
    let t0 = Instant::now();
    tokio::time::sleep(d).await;
    let sent = count.load(Ordering::Relaxed);
    let elapsed = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("peak task");
    }
    sent as f64 / elapsed.as_secs_f64()
}

/// What one open-loop run measured.
struct OpenLoop {
    /// Latency from intended send time to the last body byte, µs.
    latency: Histogram<u64>,
    /// How late the request was handed to the client (spawn to run), µs.
    lag: Histogram<u64>,
    sent: u64,
    /// Rate actually sent (requests over the time from the first to the last send).
    sent_rate: f64,
    /// Requests still unanswered 10 s after the schedule ended (then abandoned).
    unfinished: u64,
    /// Requests that failed (not in the histogram).
    failed: u64,
    server_cpu: Duration,
    gen_cpu: Duration,
    elapsed: Duration,
}

/// Sends `rate` requests per second for `d` on a fixed schedule from a pacing thread.
fn open_loop(
    generator: &Handle,
    client: &HttpClient,
    scenario: &Scenario,
    rate: f64,
    d: Duration,
) -> OpenLoop {
    let hist = || Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    let latency = Arc::new(Mutex::new(hist()));
    let lag = Arc::new(Mutex::new(hist()));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let total = (rate * d.as_secs_f64()) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let cpu0 = cpu_by_thread();
    let start = Instant::now() + Duration::from_millis(1);
    let pacer = {
        let (generator, client, scenario) = (generator.clone(), client.clone(), scenario.clone());
        let (latency, lag, done, failed) = (
            Arc::clone(&latency),
            Arc::clone(&lag),
            Arc::clone(&done),
            Arc::clone(&failed),
        );
        std::thread::Builder::new()
            .name(PACER_THREAD.into())
            .spawn(move || {
                let mut last = start;
                for i in 0..total {
                    let intended = start + interval.mul_f64(i as f64);
                    let now = Instant::now();
                    if now < intended {
                        std::thread::sleep(intended - now);
                    }
                    last = Instant::now();
                    let req = scenario.request(i);
                    let (client, latency, lag, done, failed) = (
                        client.clone(),
                        Arc::clone(&latency),
                        Arc::clone(&lag),
                        Arc::clone(&done),
                        Arc::clone(&failed),
                    );
                    generator.spawn(async move {
                        let late = intended.elapsed().as_micros() as u64;
                        let ok = send(&client, req).await;
                        let took = intended.elapsed().as_micros() as u64;
                        lock(&lag).saturating_record(late.max(1));
                        if ok {
                            lock(&latency).saturating_record(took.max(1));
                        } else {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    });
                }
                last
            })
            .expect("pacer thread")
    };
    let last = pacer.join().expect("pacer");
    let deadline = Instant::now() + Duration::from_secs(10);
    while done.load(Ordering::Relaxed) < total && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = start.elapsed();
    let cpu1 = cpu_by_thread();
    let finished = done.load(Ordering::Relaxed);
    let latency = lock(&latency).clone();
    let lag = lock(&lag).clone();
    OpenLoop {
        latency,
        lag,
        sent: total,
        sent_rate: total as f64 / last.duration_since(start).as_secs_f64().max(1e-9),
        unfinished: total - finished,
        failed: failed.load(Ordering::Relaxed),
        server_cpu: cpu_of(&cpu0, &cpu1, SERVER_THREADS),
        gen_cpu: cpu_of(&cpu0, &cpu1, GEN_THREADS) + cpu_of(&cpu0, &cpu1, PACER_THREAD),
        elapsed,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts `prapi products` over a generated catalogue and `prapi batch` in front of it on
/// `server`; returns both base URLs and the product ids.
fn start_servers(
    server: &Runtime,
    products: usize,
) -> (String, String, Vec<String>, tempfile::TempDir) {
    server.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path()).expect("store");
        let countries = Country::parse_list("de,at").expect("countries");
        let cfg = GenConfig {
            products,
            countries: countries.clone(),
            seed: 5,
        };
        load_events(&store, cfg.events().map(Ok), |_| {})
            .await
            .expect("load");
        let store: Arc<dyn Store> = Arc::new(store);
        let ready = Readiness::default();
        ready.set(true);
        let cache = CacheConfig {
            ttl: Duration::from_secs(3600),
            stale: Duration::from_secs(15),
            negative_ttl: Duration::from_secs(5),
            max_bytes: 1 << 30,
            ..CacheConfig::default()
        };
        let app = ProductsServer {
            countries: countries.clone(),
            cache,
            overload: overload(),
        }
        .router(store, ready)
        .expect("products router");
        let products_base = listen(app).await;
        let balancer = Arc::new(Balancer::new(
            BalancerConfig::default(),
            Arc::new(MonotonicClock::new()),
        ));
        balancer.set_endpoints(&parse_endpoints(&[products_base.as_str()]).expect("endpoint"));
        let batch_app = BatchServer {
            countries,
            batch: BatchConfig {
                max_items: 100,
                deadline: Duration::from_secs(5),
            },
            client: ClientConfig {
                attempt_timeout: Duration::from_secs(2),
                ..ClientConfig::default()
            },
            overload: overload(),
        }
        .router(balancer, Readiness::default());
        let batch_base = listen(batch_app).await;
        (products_base, batch_base, cfg.product_ids(), dir)
    })
}

fn percentiles(h: &Histogram<u64>) -> (u64, u64, u64) {
    (
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
    )
}

fn main() {
    let seconds = env("PRAPI_BENCH_SECONDS", 3);
    let connections = env("PRAPI_BENCH_CONNECTIONS", 32);
    let products = env("PRAPI_BENCH_PRODUCTS", 2000) as usize;
    let server = runtime(SERVER_THREADS, 2);
    let generator = runtime(GEN_THREADS, 2);
    let (products_base, batch_base, ids, _dir) = start_servers(&server, products);
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    let mut scenarios = Vec::new();
    for gzip in [false, true] {
        for media in MediaType::ALL {
            let mut headers = vec![("x-country", "de"), ("accept", media.content_type())];
            if gzip {
                headers.push(("accept-encoding", "gzip"));
            }
            scenarios.push(Scenario {
                name: format!(
                    "single {:<5} {}",
                    media.name(),
                    if gzip { "gzip" } else { "identity" }
                ),
                urls: Arc::new(
                    ids.iter()
                        .map(|id| {
                            format!("{products_base}/product-offers/{id}")
                                .parse()
                                .expect("uri")
                        })
                        .collect(),
                ),
                headers: Arc::new(headers),
            });
        }
    }
    for gzip in [false, true] {
        let mut headers = vec![("x-country", "de")];
        if gzip {
            headers.push(("accept-encoding", "gzip"));
        }
        // 100 ids per batch, every id in as many batches, in a different company each time.
        let urls = (0..ids.len())
            .map(|b| {
                let pick: Vec<&str> = (0..100)
                    .map(|j| ids[(b * 100 + j * 37) % ids.len()].as_str())
                    .collect();
                format!("{batch_base}/product-offers?ids={}", pick.join(","))
                    .parse()
                    .expect("uri")
            })
            .collect();
        scenarios.push(Scenario {
            name: format!("batch 100 ids {}", if gzip { "gzip" } else { "identity" }),
            urls: Arc::new(urls),
            headers: Arc::new(headers),
        });
    }

    // Every body into the caches (and connection pools open) before anything is measured.
    generator.block_on(async {
        for s in &scenarios {
            for i in 0..s.urls.len() as u64 {
                assert!(
                    send(&client, s.request(i)).await,
                    "{}: warm-up request failed",
                    s.name
                );
            }
        }
    });

    println!(
        "open-loop latency, prapi products on the embedded store ({products} products, all cached), single GET /product-offers/{{id}} (de) and 100-id batches via prapi batch"
    );
    println!("load average at start: {}", load_average());
    println!(
        "{:<22} {:>9} {:>5} {:>9} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8}",
        "scenario",
        "peak/s",
        "load",
        "target/s",
        "sent %",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "lag p99",
        "srv CPU",
        "gen CPU"
    );
    let mut p99_at_half: HashMap<String, (f64, u64)> = HashMap::new();
    for s in &scenarios {
        let top = generator.block_on(peak(&client, s, connections, Duration::from_secs(2)));
        // Under heavy load from other jobs a slow scenario (batches) may complete nothing in the
        // peak window: there is then no rate to take fractions of.
        if top < 4.0 {
            println!(
                "{:<22} {top:>9.0}  (too few answers in the peak window: skipped)",
                s.name
            );
            continue;
        }
        for fraction in [0.25, 0.5, 0.75] {
            let rate = top * fraction;
            open_loop(
                generator.handle(),
                &client,
                s,
                rate,
                Duration::from_millis(500),
            );
            let r = open_loop(
                generator.handle(),
                &client,
                s,
                rate,
                Duration::from_secs(seconds),
            );
            let (p50, p99, p999) = percentiles(&r.latency);
            let secs = r.elapsed.as_secs_f64();
            println!(
                "{:<22} {:>9.0} {:>4.0}% {:>9.0} {:>7.1}% {:>8} {:>8} {:>9} {:>8} {:>7.0}% {:>7.0}%{}",
                s.name,
                top,
                fraction * 100.0,
                rate,
                100.0 * r.sent_rate / rate,
                p50,
                p99,
                p999,
                r.lag.value_at_quantile(0.99),
                100.0 * r.server_cpu.as_secs_f64() / secs,
                100.0 * r.gen_cpu.as_secs_f64() / secs,
                match (r.unfinished, r.failed) {
                    (0, 0) => String::new(),
                    (u, f) => format!("  ({f} of {} failed, {u} unanswered after 10 s)", r.sent),
                }
            );
            if fraction == 0.5 {
                p99_at_half.insert(s.name.clone(), (top, p99));
            }
        }
    }
    println!("load average at end: {}", load_average());
    println!(
        "\nlegacy / JSON (cost = JSON peak / legacy peak; latency = legacy P99 / JSON P99 at 50 % of each one's peak)"
    );
    for enc in ["identity", "gzip"] {
        let Some(json) = p99_at_half.get(&format!("single {:<5} {enc}", "json")) else {
            continue;
        };
        for media in MediaType::ALL.iter().filter(|m| **m != MediaType::Json) {
            let Some(legacy) = p99_at_half.get(&format!("single {:<5} {enc}", media.name())) else {
                continue;
            };
            println!(
                "  {:<5} {enc:<8}: cost {:.3}, P99 {:.3}",
                media.name(),
                json.0 / legacy.0,
                legacy.1 as f64 / json.1.max(1) as f64
            );
        }
    }
}
