//! Single-member gzip batches: what joining costs against the multi-member concatenation it
//! replaced, and what the joinable form costs per cache entry. One bounded run, ratios only.
//!
//! A generated catalogue (embedded store) is rendered as the products cache renders it:
//! `product-offers` in `de`, `application/json`. For each body there are two gzip forms:
//! - before: one member written by `GzEncoder::finish` at the default level (what the cache held);
//! - after: a joinable member (`prapi::gzip::member`, what the cache holds now).
//!
//! 1. Bytes per cache entry before and after (identity + gzip + ETag; the cache adds the same
//!    fixed overhead to both).
//! 2. CPU of assembling one 100-item gzip batch body on one thread, in alternating rounds:
//!    concatenation (the old body: the items' members copied between framing members, as the
//!    batch endpoint did) against the join (`batch::body::gzip_body`, one member). Target:
//!    join <= 2 x concatenation.
//!
//! `cargo bench -p prapi-dataplane --bench gzip` (part of `make bench`). Environment:
//! `PRAPI_BENCH_SECONDS` per measurement (default 2; 3 rounds of two), `PRAPI_BENCH_PRODUCTS`
//! (default 1000).

mod kit;
use kit::env;

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use prapi::batch::{Item, body};
use prapi::cache::{Loader, Rendered};
use prapi::formats::MediaType;
use prapi::r#gen::GenConfig;
use prapi::model::{Country, ProductId};
use prapi::products::{Key, Resource, StoreLoader};
use prapi::run::load_events;
use prapi::store::Store;
use prapi::store::embedded::EmbeddedStore;
use rand::SeedableRng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;

// The allocator of the `prapi` binary (src/main.rs), so the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A member as `GzEncoder::finish` writes it (the cache's form before single-member batches).
fn finished_member(data: &[u8], level: Compression) -> Bytes {
    let mut enc = GzEncoder::new(Vec::with_capacity(data.len() / 4 + 32), level);
    enc.write_all(data).expect("compress");
    Bytes::from(enc.finish().expect("compress"))
}

/// The old batch body: the items' members copied between framing members (head and comma
/// compressed once per process, the tail per request when ids are missing; here none are).
struct Concatenation {
    head: Bytes,
    comma: Bytes,
    tail: Bytes,
}

impl Concatenation {
    fn new() -> Self {
        Self {
            head: finished_member(br#"{"items":["#, Compression::fast()),
            comma: finished_member(b",", Compression::fast()),
            tail: finished_member(br#"],"missing":[],"failed":[]}"#, Compression::fast()),
        }
    }

    fn body(&self, items: &[Item]) -> Bytes {
        let found = || {
            items.iter().filter_map(|i| match i {
                Item::Found(b) => Some(b),
                _ => None,
            })
        };
        let len = self.head.len()
            + found().map(|b| b.len() + self.comma.len()).sum::<usize>()
            + self.tail.len();
        let mut out = BytesMut::with_capacity(len);
        out.put_slice(&self.head);
        for (n, b) in found().enumerate() {
            if n > 0 {
                out.put_slice(&self.comma);
            }
            out.put_slice(b);
        }
        out.put_slice(&self.tail);
        out.freeze()
    }
}

/// CPU time of the calling thread, from /proc/thread-self/schedstat; `None` elsewhere.
fn thread_cpu() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(Duration::from_nanos(s.split(' ').next()?.parse().ok()?))
}

/// Calls `f` on batch numbers `0..count` in turn for `d`; CPU (or wall, without /proc) µs per
/// call.
fn measure<T>(d: Duration, count: usize, f: &dyn Fn(usize) -> T) -> f64 {
    for b in 0..count.min(3) {
        std::hint::black_box(f(b));
    }
    let (t0, w0) = (thread_cpu(), Instant::now());
    let mut n = 0u32;
    while n < 10 || w0.elapsed() < d {
        std::hint::black_box(f(n as usize % count));
        n += 1;
    }
    let spent = match (thread_cpu(), t0) {
        (Some(t1), Some(t0)) => t1 - t0,
        _ => w0.elapsed(),
    };
    spent.as_secs_f64() * 1e6 / f64::from(n)
}

fn gunzip_all(gz: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    MultiGzDecoder::new(gz).read_to_end(&mut out).expect("gzip");
    out
}

fn main() {
    let seconds = env("PRAPI_BENCH_SECONDS", 2);
    let products = env("PRAPI_BENCH_PRODUCTS", 1000) as usize;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let rendered: Vec<(ProductId, Rendered)> = rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path()).expect("store");
        let cfg = GenConfig {
            products,
            countries: Country::parse_list("de,at").expect("countries"),
            seed: 5,
        };
        load_events(&store, cfg.events().map(Ok), |_| {})
            .await
            .expect("load");
        let ids: Vec<ProductId> = cfg
            .product_ids()
            .iter()
            .map(|id| ProductId::parse(id).expect("generated id"))
            .collect();
        let store: Arc<dyn Store> = Arc::new(store);
        let loader = StoreLoader::new(store);
        let mut out = Vec::new();
        for id in ids {
            let key = Key {
                resource: Resource::ProductOffers,
                id: id.clone(),
                country: Country::parse("de").ok(),
                media: MediaType::Json,
            };
            if let Some(r) = loader.load(&key).await.expect("load") {
                out.push((id, r));
            }
        }
        out
    });

    // 1. Bytes per entry.
    let n = rendered.len() as f64;
    let (mut before, mut after, mut identity) = (0usize, 0usize, 0usize);
    let (mut min_delta, mut max_delta) = (i64::MAX, i64::MIN);
    let mut old_members = Vec::with_capacity(rendered.len());
    for (_, r) in &rendered {
        let old = finished_member(&r.identity, Compression::default());
        identity += r.identity.len();
        before += r.byte_size() - r.gzip.len() + old.len();
        after += r.byte_size();
        let delta = r.gzip.len() as i64 - old.len() as i64;
        min_delta = min_delta.min(delta);
        max_delta = max_delta.max(delta);
        old_members.push(old);
    }
    println!(
        "catalogue: {} product-offers bodies (de, json), {:.0} B identity on average",
        rendered.len(),
        identity as f64 / n
    );
    println!("\n1. cache bytes per entry (identity + gzip + ETag; plus the same fixed overhead)");
    println!(
        "   before (GzEncoder::finish member): {:>9.1} B",
        before as f64 / n
    );
    println!(
        "   after  (joinable member)         : {:>9.1} B",
        after as f64 / n
    );
    println!(
        "   gzip member growth: {:+.1} B on average (min {min_delta:+}, max {max_delta:+}), {:+.4} % of the entry",
        (after as f64 - before as f64) / n,
        100.0 * (after as f64 - before as f64) / before as f64
    );

    // 2. Assembly of 100-item batches.
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let idx: Vec<usize> = (0..rendered.len()).collect();
    let picks: Vec<Vec<usize>> = (0..32)
        .map(|_| {
            idx.choose_multiple(&mut rng, 100.min(idx.len()))
                .copied()
                .collect()
        })
        .collect();
    let ids: Vec<Vec<ProductId>> = picks
        .iter()
        .map(|p| p.iter().map(|&i| rendered[i].0.clone()).collect())
        .collect();
    let old_batches: Vec<Vec<Item>> = picks
        .iter()
        .map(|p| {
            p.iter()
                .map(|&i| Item::Found(old_members[i].clone()))
                .collect()
        })
        .collect();
    let new_batches: Vec<Vec<Item>> = picks
        .iter()
        .map(|p| {
            p.iter()
                .map(|&i| Item::Found(rendered[i].1.gzip.clone()))
                .collect()
        })
        .collect();
    let concat = Concatenation::new();
    let joined = body::gzip_body(&ids[0], &new_batches[0]).to_bytes();
    assert_eq!(
        gunzip_all(&joined),
        gunzip_all(&concat.body(&old_batches[0])),
        "both bodies decode to the same document"
    );
    println!(
        "\n2. one 100-item gzip batch body, one thread, {seconds} s per measurement, alternating rounds \
         (e.g. {} B concatenated, {} B joined)",
        concat.body(&old_batches[0]).len(),
        joined.len()
    );
    let d = Duration::from_secs(seconds);
    let mut ratios = Vec::new();
    for round in 1..=3 {
        let c = measure(d, old_batches.len(), &|b| concat.body(&old_batches[b]));
        let j = measure(d, new_batches.len(), &|b| {
            body::gzip_body(&ids[b], &new_batches[b])
        });
        ratios.push(j / c);
        println!(
            "   round {round}: concatenation {c:>7.1} us, join {j:>7.1} us: join / concatenation {:.2}",
            j / c
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "   join / concatenation: median {:.2} (target <= 2: {})",
        ratios[1],
        if ratios[1] <= 2.0 { "met" } else { "not met" }
    );
}
