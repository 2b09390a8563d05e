//! Batch against single GETs, and the cost of gzip pass-through, in one bounded run.
//!
//! Three products servers (the products API, each with its own cache, over one embedded store
//! loaded with a generated catalogue) and a batch server fanning out to them through the
//! load balancer, all in this process on loopback, everything cached after a warm-up.
//!
//! 1. Latency: single `GET /product-offers/{id}` clients (each id sent to its ring owner, as the
//!    ingress does) and 100-id `GET /product-offers?ids=...` clients run at the same time;
//!    printed are single P50/P99/P99.9 and batch P50/P99 (target: batch P99 <= single P99.9),
//!    for the configured mix of connections and for a light one (2 single, 1 batch).
//! 2. Process CPU per batch over HTTP, gzip (pass-through) and identity, batch load only.
//! 3. CPU of assembling one 100-item gzip batch body on one thread: pass-through (the pods'
//!    members spliced with framing members, as `prapi batch` does) against decompressing every
//!    member and compressing the whole body again (the baseline, implemented only here).
//!
//! `cargo bench -p prapi-dataplane --bench batch` (part of `make bench`). Environment:
//! `PRAPI_BENCH_SECONDS` per phase (default 5), `PRAPI_BENCH_PRODUCTS` (2000),
//! `PRAPI_BENCH_SINGLE_CONNECTIONS` (8), `PRAPI_BENCH_BATCH_CONNECTIONS` (2).

mod kit;
use kit::{env, listen, overload};

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prapi::batch::{BatchConfig, Item, body};
use prapi::cache::CacheConfig;
use prapi::clock::MonotonicClock;
use prapi::r#gen::GenConfig;
use prapi::http::server::Readiness;
use prapi::lb::{Balancer, BalancerConfig, ClientConfig, Ring, parse_endpoints};
use prapi::model::{Country, ProductId};
use prapi::run::{BatchServer, ProductsServer, load_events};
use prapi::store::Store;
use prapi::store::embedded::EmbeddedStore;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

// The allocator of the `prapi` binary (src/main.rs), so the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

async fn fetch(client: &HttpClient, url: &str, gzip: bool) -> Bytes {
    let mut req = http::Request::get(url).header("x-country", "de");
    if gzip {
        req = req.header("accept-encoding", "gzip");
    }
    let resp = client
        .request(req.body(Empty::new()).expect("request"))
        .await
        .expect("response");
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    resp.into_body().collect().await.expect("body").to_bytes()
}

/// Requests from `make_url` on one keep-alive connection until `stop`; latencies in µs.
async fn drive(
    client: HttpClient,
    stop: Arc<AtomicBool>,
    gzip: bool,
    seed: u64,
    make_url: Arc<dyn Fn(&mut ChaCha8Rng) -> String + Send + Sync>,
) -> Vec<u64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut lat = Vec::with_capacity(1 << 14);
    while !stop.load(Ordering::Relaxed) {
        let url = make_url(&mut rng);
        let t = Instant::now();
        let body = fetch(&client, &url, gzip).await;
        std::hint::black_box(body);
        lat.push(t.elapsed().as_micros() as u64);
    }
    lat
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// Process CPU (user + system) so far, from /proc/self/stat in USER_HZ ticks (100 per second on
/// Linux); `None` elsewhere.
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.rsplit_once(") ")?.1;
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// CPU time of the calling thread, in ns, from /proc/thread-self/schedstat; `None` elsewhere.
fn thread_cpu() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(Duration::from_nanos(s.split(' ').next()?.parse().ok()?))
}

/// The baseline: every item member decompressed, the identity body built, the whole compressed
/// again at the cache's level (what a batch server would do without member pass-through).
fn recompress(ids: &[ProductId], items: &[Item]) -> Bytes {
    let plain: Vec<Item> = items
        .iter()
        .map(|i| match i {
            Item::Found(gz) => {
                let mut out = Vec::with_capacity(gz.len() * 6);
                GzDecoder::new(&gz[..])
                    .read_to_end(&mut out)
                    .expect("item member");
                Item::Found(Bytes::from(out))
            }
            other => other.clone(),
        })
        .collect();
    let identity = body::identity_body(ids, &plain).to_bytes();
    let mut enc = GzEncoder::new(
        Vec::with_capacity(identity.len() / 4),
        Compression::default(),
    );
    enc.write_all(&identity).expect("compress");
    Bytes::from(enc.finish().expect("compress"))
}

fn main() {
    let seconds = env("PRAPI_BENCH_SECONDS", 5);
    let products = env("PRAPI_BENCH_PRODUCTS", 2000) as usize;
    let singles = env("PRAPI_BENCH_SINGLE_CONNECTIONS", 8);
    let batchers = env("PRAPI_BENCH_BATCH_CONNECTIONS", 2);
    // The configured mix, then a light one (CPU not saturated), to show how the ratio moves.
    let mixes = [(singles, batchers), (2, 1)];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let phase = Duration::from_secs(seconds);
    let (ids, members) = rt.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path()).expect("store");
        let countries = Country::parse_list("de,at").expect("countries");
        let cfg = GenConfig { products, countries: countries.clone(), seed: 3 };
        load_events(&store, cfg.events().map(Ok), |_| {}).await.expect("load");
        let ids = cfg.product_ids();
        let store: Arc<dyn Store> = Arc::new(store);
        let cache = CacheConfig {
            ttl: Duration::from_secs(3600),
            stale: Duration::from_secs(15),
            negative_ttl: Duration::from_secs(5),
            max_bytes: 1 << 30,
            ..CacheConfig::default()
        };
        let mut pods = Vec::new();
        for _ in 0..3 {
            let ready = Readiness::default();
            ready.set(true);
            let app = ProductsServer { countries: countries.clone(), cache, overload: overload() }
                .router(Arc::clone(&store), ready)
                .expect("products router");
            pods.push(listen(app).await);
        }
        let endpoints = parse_endpoints(&pods).expect("endpoints");
        let balancer = Arc::new(Balancer::new(BalancerConfig::default(), Arc::new(MonotonicClock::new())));
        balancer.set_endpoints(&endpoints);
        let batch_app = BatchServer {
            countries,
            batch: BatchConfig { max_items: 100, deadline: Duration::from_secs(5) },
            client: ClientConfig { attempt_timeout: Duration::from_secs(2), ..ClientConfig::default() },
            overload: overload(),
        }
        .router(balancer, Readiness::default());
        let batch_base = listen(batch_app).await;
        let ring = Ring::new(&endpoints.iter().map(|e| e.as_str()).collect::<Vec<_>>());
        let owner_url: Vec<String> = ids
            .iter()
            .map(|id| {
                let owner = ring.owner(id).expect("owner") as usize;
                format!("{}/product-offers/{id}", endpoints[owner].as_str())
            })
            .collect();
        let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

        // Warm-up: every id through batch (fills each owner's cache) and once as a single GET.
        for chunk in ids.chunks(100) {
            fetch(&client, &format!("{batch_base}/product-offers?ids={}", chunk.join(",")), true).await;
        }
        for url in &owner_url {
            fetch(&client, url, true).await;
        }
        let one = fetch(&client, &owner_url[0], false).await.len();
        let one_gz = fetch(&client, &owner_url[0], true).await.len();
        let sample = &ids[..100];
        let batch_plain = fetch(&client, &format!("{batch_base}/product-offers?ids={}", sample.join(",")), false).await.len();
        let batch_gz = fetch(&client, &format!("{batch_base}/product-offers?ids={}", sample.join(",")), true).await.len();
        println!(
            "catalogue: {} products; product-offers (de, json) e.g. {one} B ({one_gz} B gzip); 100-id batch e.g. {batch_plain} B ({batch_gz} B gzip)",
            ids.len()
        );

        let ids_arc = Arc::new(ids.clone());
        let single_url: Arc<dyn Fn(&mut ChaCha8Rng) -> String + Send + Sync> = {
            let urls = Arc::new(owner_url.clone());
            Arc::new(move |rng: &mut ChaCha8Rng| urls[rng.random_range(0..urls.len())].clone())
        };
        let batch_url: Arc<dyn Fn(&mut ChaCha8Rng) -> String + Send + Sync> = {
            let (ids, base) = (Arc::clone(&ids_arc), batch_base.clone());
            Arc::new(move |rng: &mut ChaCha8Rng| {
                let pick: Vec<&str> = ids.choose_multiple(rng, 100).map(String::as_str).collect();
                format!("{base}/product-offers?ids={}", pick.join(","))
            })
        };
        let run = |n_single: u64, n_batch: u64, gzip: bool, d: Duration| {
            let (single_url, batch_url) = (Arc::clone(&single_url), Arc::clone(&batch_url));
            async move {
                let stop = Arc::new(AtomicBool::new(false));
                let (mut s_tasks, mut b_tasks) = (Vec::new(), Vec::new());
                for i in 0..n_single {
                    let c: HttpClient = Client::builder(TokioExecutor::new()).build_http();
                    s_tasks.push(tokio::spawn(drive(c, Arc::clone(&stop), gzip, i, Arc::clone(&single_url))));
                }
                for i in 0..n_batch {
                    let c: HttpClient = Client::builder(TokioExecutor::new()).build_http();
                    b_tasks.push(tokio::spawn(drive(c, Arc::clone(&stop), gzip, 1000 + i, Arc::clone(&batch_url))));
                }
                let cpu0 = process_cpu();
                let t0 = Instant::now();
                tokio::time::sleep(d).await;
                stop.store(true, Ordering::Relaxed);
                let (mut s, mut b) = (Vec::new(), Vec::new());
                for t in s_tasks {
                    s.extend(t.await.expect("single driver"));
                }
                for t in b_tasks {
                    b.extend(t.await.expect("batch driver"));
                }
                let elapsed = t0.elapsed();
                let cpu = process_cpu().zip(cpu0).map(|(a, b)| a.saturating_sub(b));
                s.sort_unstable();
                b.sort_unstable();
                (s, b, elapsed, cpu)
            }
        };

        // Mixed warm-up (connection pools, any spilled keys cached on their neighbour too).
        run(singles, batchers, true, Duration::from_secs(2)).await;

        println!("\n1. latency, gzip, single-GET and batch connections at once, {seconds} s per mix");
        for (n_single, n_batch) in mixes {
            let (s, b, elapsed, cpu) = run(n_single, n_batch, true, phase).await;
            let secs = elapsed.as_secs_f64();
            let busy = cpu.map_or(String::new(), |c| {
                format!(", process CPU {:.0}% of one core", 100.0 * c.as_secs_f64() / secs)
            });
            println!("   {n_single} single + {n_batch} batch connections{busy}");
            println!(
                "   single GET   : {:>6} req ({:>6.0}/s)  p50 {:>6} us  p99 {:>6} us  p99.9 {:>6} us",
                s.len(), s.len() as f64 / secs, pct(&s, 0.5), pct(&s, 0.99), pct(&s, 0.999)
            );
            println!(
                "   100-id batch : {:>6} req ({:>6.0}/s)  p50 {:>6} us  p99 {:>6} us  p99.9 {:>6} us",
                b.len(), b.len() as f64 / secs, pct(&b, 0.5), pct(&b, 0.99), pct(&b, 0.999)
            );
            let (bp99, sp999) = (pct(&b, 0.99), pct(&s, 0.999));
            println!(
                "   batch p99 / single p99.9 = {:.2} (target <= 1: {})",
                bp99 as f64 / sp999.max(1) as f64,
                if bp99 <= sp999 { "met" } else { "not met" }
            );
        }

        println!("\n2. process CPU per 100-id batch over HTTP ({batchers} batch connections, no single GETs; all components of this process)");
        for gzip in [true, false] {
            let (_, b, _, cpu) = run(0, batchers, gzip, phase).await;
            match cpu {
                Some(cpu) if !b.is_empty() => println!(
                    "   {:<8}: {:>6} batches, {:>7.0} us CPU per batch, p50 {} us",
                    if gzip { "gzip" } else { "identity" },
                    b.len(),
                    cpu.as_micros() as f64 / b.len() as f64,
                    pct(&b, 0.5)
                ),
                _ => println!("   (no /proc/self/stat: CPU not measured)"),
            }
        }

        // Items for phase 3: the pods' own gzip members of 100 ids.
        let mut members = Vec::new();
        for url in owner_url.iter().take(100) {
            members.push(Item::Found(fetch(&client, url, true).await));
        }
        let pids: Vec<ProductId> = ids.iter().take(100).map(|i| ProductId::parse(i).expect("id")).collect();
        (pids, members)
    });

    // 3. Assembly CPU on this thread, out of the runtime.
    let (a, b) = (
        body::gzip_body(&ids, &members).to_bytes(),
        recompress(&ids, &members),
    );
    let decode = |gz: &[u8]| {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(gz)
            .read_to_end(&mut out)
            .expect("gzip");
        out
    };
    assert_eq!(
        decode(&a),
        decode(&b),
        "both assemblies must decode to the same body"
    );
    // Long enough intervals that the scheduler's CPU accounting (updated at ticks and switches)
    // is exact to well under a percent.
    let measure = |f: &dyn Fn() -> usize| {
        for _ in 0..3 {
            std::hint::black_box(f());
        }
        let (t0, w0) = (thread_cpu(), Instant::now());
        let mut n = 0u32;
        while n < 5 || w0.elapsed() < Duration::from_secs(1) {
            std::hint::black_box(f());
            n += 1;
        }
        let per = |d: Duration| d.as_micros() as f64 / f64::from(n);
        (
            thread_cpu().zip(t0).map(|(t1, t0)| per(t1 - t0)),
            per(w0.elapsed()),
        )
    };
    let (pass_cpu, pass_wall) = measure(&|| body::gzip_body(&ids, &members).parts());
    let (re_cpu, re_wall) = measure(&|| recompress(&ids, &members).len());
    println!(
        "\n3. assembling one 100-item gzip body, one thread ({} B pass-through, {} B recompressed)",
        a.len(),
        b.len()
    );
    let show = |cpu: Option<f64>, wall: f64| match cpu {
        Some(c) => format!("{c:>8.0} us CPU ({wall:.0} us wall)"),
        None => format!("{wall:>8.0} us wall"),
    };
    println!("   pass-through          : {}", show(pass_cpu, pass_wall));
    println!("   decompress+recompress : {}", show(re_cpu, re_wall));
    if let (Some(p), Some(r)) = (pass_cpu, re_cpu) {
        println!("   recompress / pass-through = {:.0}x", r / p.max(1.0));
    }
}
