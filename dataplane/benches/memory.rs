//! Memory of the products cache against its own byte accounting, in one bounded run.
//!
//! The cache of `prapi products` (the same `ByteCache<Key>` and store loader, over an embedded
//! store loaded with a generated catalogue) is filled through its `get`, and the process's RSS is
//! read before and after. Each part runs in its own child process (this binary, re-executed), so
//! memory freed by one part cannot be reused, unseen, by the next.
//!
//! 1. `fill`: every product of the catalogue cached as `product-offers` in `de` in all four media
//!    types (each entry holds identity and gzip), 10k then 50k products: RSS growth per product
//!    against the bytes the entries hold (bodies, gzip members, ETags) and against the cache's
//!    weighted size (what its budget counts).
//! 2. `negatives`: distinct unknown ids into a cache with room for all of them: RSS growth per
//!    negative entry against the weight the cache charges for one.
//! 3. `storm`: a cache with a small budget, full of products, then a miss storm of distinct
//!    unknown ids from concurrent tasks: the weighted size after housekeeping and the RSS growth
//!    over the process before the cache, both against the budget.
//!
//! `cargo bench -p prapi-dataplane --bench memory` (`make bench-memory`). Environment:
//! `PRAPI_BENCH_MEMORY_PRODUCTS` (steps, default `10000,50000`), `PRAPI_BENCH_STORM_IDS` (300000),
//! `PRAPI_BENCH_STORM_MIB` (budget, 32). Needs about 6 GB of memory at 50k products.

mod kit;
use kit::env;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prapi::cache::{ByteCache, CacheConfig, CacheMetrics, Lookup};
use prapi::clock::MonotonicClock;
use prapi::formats::MediaType;
use prapi::r#gen::GenConfig;
use prapi::model::{Country, ProductId};
use prapi::products::{Key, Resource, StoreLoader};
use prapi::run::load_events;
use prapi::store::Store;
use prapi::store::embedded::EmbeddedStore;

// The allocator of the `prapi` binary (src/main.rs), so the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PART: &str = "PRAPI_BENCH_MEMORY_PART";

/// Resident set size of this process, from /proc/self/status (Linux only; the bench needs it).
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
}

fn key(id: &str, media: MediaType) -> Key {
    Key {
        resource: Resource::ProductOffers,
        id: ProductId::parse(id).expect("generated id"),
        country: Some(Country::parse("de").expect("country")),
        media,
    }
}

fn cache(store: &Arc<dyn Store>, max_bytes: u64) -> ByteCache<Key> {
    ByteCache::new(
        CacheConfig {
            ttl: Duration::from_secs(3600),
            stale: Duration::from_secs(15),
            negative_ttl: Duration::from_secs(3600),
            max_bytes,
            ..CacheConfig::default()
        },
        Arc::new(StoreLoader::new(Arc::clone(store))),
        Arc::new(MonotonicClock::new()),
        CacheMetrics::new(),
    )
}

/// An embedded store with `products` generated products (offers in de and at), and their ids.
async fn catalogue(dir: &std::path::Path, products: usize) -> (Arc<dyn Store>, Vec<String>) {
    let store = EmbeddedStore::open(dir).expect("store");
    let countries = Country::parse_list("de,at").expect("countries");
    let cfg = GenConfig {
        products,
        countries,
        seed: 7,
    };
    load_events(&store, cfg.events().map(Ok), |_| {})
        .await
        .expect("load");
    (Arc::new(store), cfg.product_ids())
}

/// Reads every product's offers once straight from the store, so the store's own page cache is
/// as warm (and as large) before the cache is measured as after.
async fn warm_store(store: &Arc<dyn Store>, ids: &[String]) {
    let de = Country::parse("de").expect("country");
    for id in ids {
        let id = ProductId::parse(id).expect("id");
        std::hint::black_box(store.product_offers(&id, de).await.expect("read"));
    }
}

/// Caches `ids` in every media type; returns the bytes the entries hold.
async fn fill(cache: &ByteCache<Key>, ids: &[String]) -> u64 {
    let mut held = 0u64;
    for id in ids {
        for media in MediaType::ALL {
            match cache.get(&key(id, media)).await.expect("load") {
                Lookup::Found(r, _) => held += r.byte_size() as u64,
                Lookup::NotFound(_) => panic!("{id} is in the catalogue"),
            }
        }
    }
    held
}

fn part_fill(steps: &[usize]) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let last = *steps.iter().max().expect("a step");
        let t = Instant::now();
        let (store, ids) = catalogue(dir.path(), last).await;
        warm_store(&store, &ids).await;
        println!(
            "1. fill: {last} products loaded into the embedded store and read once ({:.0} s)",
            t.elapsed().as_secs_f64()
        );
        let cache = cache(&store, 1 << 40);
        let before = rss();
        let (mut done, mut held) = (0usize, 0u64);
        println!(
            "   {:>8} {:>8} {:>12} {:>12} {:>12} {:>10} {:>10} {:>9} {:>9}",
            "products",
            "entries",
            "held",
            "weighted",
            "RSS growth",
            "held/prod",
            "RSS/prod",
            "RSS/held",
            "RSS/wtd"
        );
        for &step in steps {
            held += fill(&cache, &ids[done..step]).await;
            done = step;
            cache.run_pending_tasks().await;
            let grown = rss().saturating_sub(before) as f64;
            let weighted = cache.weighted_size() as f64;
            println!(
                "   {:>8} {:>8} {:>12} {:>12} {:>12} {:>10.0} {:>10.0} {:>9.3} {:>9.3}",
                step,
                cache.entry_count(),
                mib(held as f64),
                mib(weighted),
                mib(grown),
                held as f64 / step as f64,
                grown / step as f64,
                grown / held as f64,
                grown / weighted
            );
        }
    });
}

/// Looks up `count` distinct unknown ids from `tasks` concurrent tasks.
async fn miss_storm(cache: &ByteCache<Key>, prefix: &str, count: usize, tasks: usize) {
    let mut handles = Vec::new();
    for t in 0..tasks {
        let (cache, prefix) = (cache.clone(), prefix.to_string());
        handles.push(tokio::spawn(async move {
            for i in (t..count).step_by(tasks) {
                let k = key(&format!("{prefix}-{i:08}"), MediaType::Json);
                let found = cache.get(&k).await.expect("lookup");
                assert!(matches!(found, Lookup::NotFound(_)), "unknown id found");
            }
        }));
    }
    for h in handles {
        h.await.expect("storm task");
    }
}

fn part_negatives(count: usize) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = catalogue(dir.path(), 100).await;
        let cache = cache(&store, 1 << 40);
        // One round first, so the process's one-off allocations (runtime, store) are not counted.
        miss_storm(&cache, "warm", 1000, 4).await;
        cache.run_pending_tasks().await;
        let (before, weighted0, entries0) = (rss(), cache.weighted_size(), cache.entry_count());
        miss_storm(&cache, "unknown", count, 4).await;
        cache.run_pending_tasks().await;
        let grown = rss().saturating_sub(before) as f64;
        let entries = (cache.entry_count() - entries0) as f64;
        let weighted = (cache.weighted_size() - weighted0) as f64;
        println!(
            "2. negatives: {count} distinct unknown ids, room for all: {entries:.0} entries, weight {:.0} B per entry, RSS growth {:.0} B per entry, RSS/weighted {:.3}",
            weighted / entries,
            grown / entries,
            grown / weighted
        );
    });
}

fn part_storm(count: usize, budget: u64) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, ids) = catalogue(dir.path(), 2000).await;
        warm_store(&store, &ids).await;
        let before = rss();
        let cache = cache(&store, budget);
        fill(&cache, &ids).await;
        cache.run_pending_tasks().await;
        let full = (cache.weighted_size(), cache.entry_count(), rss().saturating_sub(before));
        let t = Instant::now();
        // Sampled while the storm runs: moka applies evictions in batches, in between the
        // weighted size may pass the budget for a moment.
        let peak = Arc::new(AtomicU64::new(0));
        let sampler = {
            let (cache, peak) = (cache.clone(), Arc::clone(&peak));
            tokio::spawn(async move {
                loop {
                    peak.fetch_max(cache.weighted_size(), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };
        miss_storm(&cache, "storm", count, 16).await;
        sampler.abort();
        let storm_secs = t.elapsed().as_secs_f64();
        cache.run_pending_tasks().await;
        let grown = rss().saturating_sub(before) as f64;
        let weighted = cache.weighted_size();
        let stats = cache.metrics().snapshot();
        println!(
            "3. storm: budget {}, filled with products to {} ({} entries, RSS growth {})",
            mib(budget as f64),
            mib(full.0 as f64),
            full.1,
            mib(full.2 as f64)
        );
        println!(
            "   {count} distinct unknown ids from 16 tasks in {storm_secs:.1} s ({:.0} lookups/s): {} entries, weighted {} = {:.3} of the budget (peak seen during the storm {:.3}); RSS growth {} = {:.3} of the budget; evicted for size {}",
            count as f64 / storm_secs,
            cache.entry_count(),
            mib(weighted as f64),
            weighted as f64 / budget as f64,
            peak.load(Ordering::Relaxed) as f64 / budget as f64,
            mib(grown),
            grown / budget as f64,
            stats.evicted_size
        );
    });
}

fn main() {
    let steps: Vec<usize> = std::env::var("PRAPI_BENCH_MEMORY_PRODUCTS")
        .unwrap_or_else(|_| "10000,50000".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("PRAPI_BENCH_MEMORY_PRODUCTS: numbers")
        })
        .collect();
    let storm_ids = env("PRAPI_BENCH_STORM_IDS", 300_000) as usize;
    let budget = env("PRAPI_BENCH_STORM_MIB", 32) << 20;
    match std::env::var(PART).as_deref() {
        Ok("fill") => return part_fill(&steps),
        Ok("negatives") => return part_negatives(storm_ids),
        Ok("storm") => return part_storm(storm_ids, budget),
        _ => {}
    }
    println!(
        "RSS against the products cache's byte accounting (ProductOffers in de, 4 media types, identity + gzip per entry)"
    );
    let exe = std::env::current_exe().expect("own executable");
    for part in ["fill", "negatives", "storm"] {
        let status = Command::new(&exe)
            .env(PART, part)
            .status()
            .expect("run a part");
        assert!(status.success(), "part {part}: {status}");
    }
}
