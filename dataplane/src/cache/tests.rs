//! Behaviour tests of the byte cache, against a scripted, countable, gateable fake store and a
//! manual clock. Time only moves when a test advances it; nothing sleeps. The only wall-clock
//! bound is a hang guard in `eventually`, which fails a test that would otherwise never end.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::future::join_all;
use tokio::sync::watch;

use super::*;
use crate::clock::ManualClock;

/// What the fake store answers for a key.
#[derive(Debug, Clone, Copy)]
enum Reply {
    /// A body tagged with the version, padded to `size` bytes.
    Value {
        version: u32,
        size: usize,
    },
    Missing,
    Fail,
    Panic,
}

fn v(version: u32) -> Reply {
    Reply::Value { version, size: 0 }
}

/// A store that answers from a script, counts the reads it starts, and can hold every read at a
/// gate until the test opens it.
struct FakeStore {
    replies: Mutex<HashMap<String, Reply>>,
    reads: AtomicUsize,
    gate: watch::Sender<bool>,
}

impl FakeStore {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            replies: Mutex::new(HashMap::new()),
            reads: AtomicUsize::new(0),
            gate: watch::Sender::new(true),
        })
    }

    fn set(&self, key: &str, reply: Reply) {
        self.replies
            .lock()
            .expect("script lock")
            .insert(key.to_owned(), reply);
    }

    fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }

    /// Reads started from now on wait at the gate.
    fn close_gate(&self) {
        self.gate.send_replace(false);
    }

    fn open_gate(&self) {
        self.gate.send_replace(true);
    }
}

#[async_trait]
impl Loader<String> for FakeStore {
    async fn load(&self, key: &String) -> Result<Option<Rendered>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        // The answer is fixed when the read starts, as a real read sees the store at some moment.
        let reply = self
            .replies
            .lock()
            .expect("script lock")
            .get(key)
            .copied()
            .unwrap_or(Reply::Missing);
        let mut gate = self.gate.subscribe();
        gate.wait_for(|open| *open)
            .await
            .expect("the store outlives its reads");
        match reply {
            Reply::Value { version, size } => Ok(Some(render(key, version, size))),
            Reply::Missing => Ok(None),
            Reply::Fail => Err(StoreError::Unavailable(
                format!("scripted failure for {key}").into(),
            )),
            Reply::Panic => panic!("scripted panic for {key}"),
        }
    }
}

/// `"<key>@v<version>\n"` followed by incompressible padding up to `size` bytes.
fn render(key: &str, version: u32, size: usize) -> Rendered {
    let mut body = format!("{key}@v{version}\n").into_bytes();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ u64::from(version);
    while body.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        body.push(x.to_le_bytes()[0]);
    }
    Rendered::new(body, format!("\"{version}\""))
}

/// The tag line of a found body, or `"not found"`.
fn text(lookup: &Lookup) -> String {
    match lookup {
        Lookup::Found(r, _) => {
            let line = r.identity.split(|b| *b == b'\n').next().unwrap_or_default();
            String::from_utf8_lossy(line).into_owned()
        }
        Lookup::NotFound(_) => "not found".to_owned(),
    }
}

struct Harness {
    store: Arc<FakeStore>,
    clock: Arc<ManualClock>,
    cache: ByteCache<String>,
}

impl Harness {
    fn new(config: CacheConfig) -> Self {
        let store = FakeStore::new();
        let clock = Arc::new(ManualClock::new());
        let cache = ByteCache::new(config, store.clone(), clock.clone(), CacheMetrics::new());
        Self {
            store,
            clock,
            cache,
        }
    }

    fn with_defaults() -> Self {
        Self::new(CacheConfig::default())
    }

    async fn get(&self, key: &str) -> String {
        let lookup = self
            .cache
            .get(&key.to_owned())
            .await
            .expect("lookup succeeds");
        text(&lookup)
    }

    fn stats(&self) -> CacheStats {
        self.cache.metrics().snapshot()
    }

    fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// The entry currently cached for `key`, to watch its refresh gate.
    async fn entry(&self, key: &str) -> Arc<Entry> {
        self.cache
            .inner
            .cache
            .get(&key.to_owned())
            .await
            .expect("key is cached")
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// Waits by yielding until `done()` holds: the cache's own tasks run in between, and unlike the
/// integration tests' `eventually` nothing sleeps, so a unit test takes microseconds. The timeout
/// is a hang guard only.
async fn spin_until(what: &str, mut done: impl FnMut() -> bool) {
    let wait = async {
        while !done() {
            tokio::task::yield_now().await;
        }
    };
    if tokio::time::timeout(secs(30), wait).await.is_err() {
        panic!("gave up waiting for {what}");
    }
}

/// Waits until the background refresh of `entry` has finished (successfully or not).
async fn refresh_finished(entry: &Entry) {
    spin_until("the background refresh to finish", || {
        !entry.refresh().is_in_flight()
    })
    .await;
}

#[tokio::test]
async fn fresh_hits_are_served_without_store_reads_and_share_the_bytes() {
    let h = Harness::with_defaults();
    h.store.set("a", v(1));
    let key = "a".to_owned();
    let first = h.cache.get(&key).await.expect("load");
    h.advance(ms(44_999));
    let second = h.cache.get(&key).await.expect("hit");
    let (Lookup::Found(first, left_first), Lookup::Found(second, left_second)) = (first, second)
    else {
        panic!("expected values");
    };
    // Each lookup says what is left of the TTL at its time: the load happened at 0.
    assert_eq!((left_first, left_second), (ms(60_000), ms(15_001)));
    assert!(
        Arc::ptr_eq(&first, &second),
        "a hit hands out the cached Arc"
    );
    assert_eq!(h.store.reads(), 1);
    let stats = h.stats();
    assert_eq!((stats.misses, stats.loads, stats.hits), (1, 1, 1));
    assert_eq!((stats.stale_hits, stats.refreshes), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_hits_serve_the_old_value_and_start_exactly_one_refresh() {
    let h = Arc::new(Harness::with_defaults());
    h.store.set("a", v(1));
    assert_eq!(h.get("a").await, "a@v1");

    h.store.set("a", v(2));
    h.store.close_gate();
    h.advance(secs(50));
    // 100 concurrent stale hits: all answered at once with the old value, although the refresh
    // they triggered is held at the store's gate.
    let hits = join_all((0..100).map(|_| {
        let h = Arc::clone(&h);
        tokio::spawn(async move { h.get("a").await })
    }))
    .await;
    for hit in hits {
        assert_eq!(hit.expect("task"), "a@v1");
    }
    let stats = h.stats();
    assert_eq!(stats.refreshes, 1, "{stats:?}");
    assert_eq!((stats.hits, stats.stale_hits, stats.misses), (100, 100, 1));
    spin_until("the refresh to reach the store", || h.store.reads() == 2).await;

    let stale = h.entry("a").await;
    h.store.open_gate();
    refresh_finished(&stale).await;

    // The refreshed value is served, fresh (it was loaded at t=50), with no further reads.
    assert_eq!(h.get("a").await, "a@v2");
    h.advance(secs(44));
    assert_eq!(h.get("a").await, "a@v2");
    let stats = h.stats();
    assert_eq!((stats.refreshes, stats.refresh_failures), (1, 0));
    assert_eq!(h.store.reads(), 2);
    assert_eq!(stats.misses, 1);
    h.cache.run_pending_tasks().await;
    assert_eq!(h.stats().evicted_replaced, 1);
}

#[tokio::test]
async fn failed_refresh_keeps_the_stale_value_and_backs_off() {
    let h = Harness::with_defaults();
    h.store.set("a", v(1));
    assert_eq!(h.get("a").await, "a@v1");

    h.store.set("a", Reply::Fail);
    h.advance(secs(46));
    let entry = h.entry("a").await;
    assert_eq!(h.get("a").await, "a@v1");
    refresh_finished(&entry).await;
    assert_eq!((h.stats().refreshes, h.stats().refresh_failures), (1, 1));

    // Backing off: the next second of stale hits does not touch the store.
    assert_eq!(h.get("a").await, "a@v1");
    h.advance(ms(999));
    assert_eq!(h.get("a").await, "a@v1");
    assert_eq!(h.stats().refreshes, 1);
    assert_eq!(h.store.reads(), 2);

    // After 1 s one retry; it fails too, and the pause doubles to 2 s.
    h.advance(ms(1));
    assert_eq!(h.get("a").await, "a@v1");
    refresh_finished(&entry).await;
    assert_eq!((h.stats().refreshes, h.stats().refresh_failures), (2, 2));
    h.advance(ms(1_999));
    assert_eq!(h.get("a").await, "a@v1");
    assert_eq!(h.stats().refreshes, 2);

    // The store recovers; the next attempt after the pause replaces the value.
    h.store.set("a", v(2));
    h.advance(ms(1));
    assert_eq!(h.get("a").await, "a@v1");
    refresh_finished(&entry).await;
    assert_eq!(h.get("a").await, "a@v2");
    let stats = h.stats();
    assert_eq!((stats.refreshes, stats.refresh_failures), (3, 2));
    assert_eq!((stats.misses, stats.load_errors), (1, 0));
    assert_eq!(h.store.reads(), 4);
}

#[tokio::test]
async fn a_panicking_refresh_counts_as_failed_and_keeps_the_stale_value() {
    let h = Harness::with_defaults();
    h.store.set("a", v(1));
    assert_eq!(h.get("a").await, "a@v1");
    h.store.set("a", Reply::Panic);
    h.advance(secs(46));
    let entry = h.entry("a").await;
    assert_eq!(h.get("a").await, "a@v1");
    refresh_finished(&entry).await;
    assert_eq!(h.stats().refresh_failures, 1);
    assert_eq!(h.get("a").await, "a@v1");
    assert_eq!(h.stats().refreshes, 1, "backing off after the panic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_misses_of_a_key_cause_one_store_read() {
    let h = Arc::new(Harness::with_defaults());
    h.store.set("a", v(7));
    h.store.close_gate();
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let h = Arc::clone(&h);
            tokio::spawn(async move { h.get("a").await })
        })
        .collect();
    // Every request has missed and is waiting before the one read may finish.
    spin_until("64 misses", || h.stats().misses == 64).await;
    assert_eq!(h.store.reads(), 1);
    h.store.open_gate();
    for result in join_all(tasks).await {
        assert_eq!(result.expect("task"), "a@v7");
    }
    assert_eq!(h.store.reads(), 1);
    let stats = h.stats();
    assert_eq!((stats.misses, stats.loads, stats.hits), (64, 1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_lookups_of_an_expired_key_cause_one_store_read() {
    let h = Arc::new(Harness::with_defaults());
    h.store.set("a", v(1));
    assert_eq!(h.get("a").await, "a@v1");
    h.store.set("a", v(2));
    h.store.close_gate();
    h.advance(secs(60));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let h = Arc::clone(&h);
            tokio::spawn(async move { h.get("a").await })
        })
        .collect();
    spin_until("64 more misses", || h.stats().misses == 65).await;
    h.store.open_gate();
    for result in join_all(tasks).await {
        assert_eq!(result.expect("task"), "a@v2");
    }
    assert_eq!(h.store.reads(), 2);
    h.cache.run_pending_tasks().await;
    let stats = h.stats();
    assert_eq!((stats.loads, stats.refreshes), (2, 0));
    assert_eq!((stats.evicted_expired, stats.evicted_explicit), (1, 0));
}

#[tokio::test]
async fn past_the_ttl_is_a_miss() {
    let h = Harness::with_defaults();
    h.store.set("a", v(1));
    assert_eq!(h.get("a").await, "a@v1");
    h.store.set("a", v(2));
    h.advance(secs(60));
    assert_eq!(h.get("a").await, "a@v2");
    let stats = h.stats();
    assert_eq!((stats.misses, stats.loads, stats.hits), (2, 2, 0));
    assert_eq!(
        stats.refreshes, 0,
        "an expired entry is reloaded, not refreshed"
    );
    // The reloaded value starts a new life at t=60.
    h.advance(secs(44));
    assert_eq!(h.get("a").await, "a@v2");
    assert_eq!(h.stats().hits, 1);
    assert_eq!(h.store.reads(), 2);
}

#[tokio::test]
async fn ttl_is_counted_from_the_start_of_the_load() {
    let h = Arc::new(Harness::with_defaults());
    h.store.set("a", v(1));
    h.store.close_gate();
    let load = tokio::spawn({
        let h = Arc::clone(&h);
        async move { h.get("a").await }
    });
    spin_until("the read to start", || h.store.reads() == 1).await;
    h.advance(secs(10));
    h.store.open_gate();
    assert_eq!(load.await.expect("task"), "a@v1");
    // Loaded at t=0 though stored at t=10: stale from t=45, expired at t=60.
    h.advance(secs(35));
    assert_eq!(h.get("a").await, "a@v1");
    assert_eq!(h.stats().stale_hits, 1);
}

#[tokio::test]
async fn byte_budget_evicts_and_the_weight_stays_under_it() {
    const BODY: usize = 10_000;
    const KEYS: usize = 60;
    let budget: u64 = 200_000;
    let h = Harness::new(CacheConfig {
        max_bytes: budget,
        ..CacheConfig::default()
    });
    for i in 0..KEYS {
        let key = format!("k{i}");
        h.store.set(
            &key,
            Reply::Value {
                version: 1,
                size: BODY,
            },
        );
        assert_eq!(h.get(&key).await, format!("k{i}@v1"));
    }
    h.cache.run_pending_tasks().await;
    let stats = h.stats();
    // Incompressible 10 kB bodies weigh over 20 kB each (identity + gzip): 60 of them cannot fit.
    assert!(h.cache.weighted_size() <= budget, "{stats:?}");
    assert!(
        h.cache.weighted_size() > budget / 2,
        "the budget is used: {stats:?}"
    );
    assert!(stats.evicted_size > 0, "{stats:?}");
    assert_eq!(
        stats.evicted_size + h.cache.entry_count(),
        KEYS as u64,
        "every entry is either cached or counted as evicted: {stats:?}"
    );
    assert_eq!(stats.bytes, h.cache.weighted_size());
    assert_eq!(stats.entries, h.cache.entry_count());
    // An evicted key is simply loaded again.
    let evicted = (0..KEYS)
        .map(|i| format!("k{i}"))
        .find(|k| !h.cache.inner.cache.contains_key(k))
        .expect("some key was evicted");
    let reads = h.store.reads();
    assert_eq!(h.get(&evicted).await, format!("{evicted}@v1"));
    assert_eq!(h.store.reads(), reads + 1);
}

#[tokio::test]
async fn not_found_is_cached_for_the_negative_ttl_then_reloaded() {
    let h = Harness::with_defaults();
    assert_eq!(h.get("ghost").await, "not found");
    assert_eq!(h.get("ghost").await, "not found");
    assert_eq!(h.store.reads(), 1);

    // The item appears in the store; the cached "not found" still answers until 5 s have passed.
    h.store.set("ghost", v(1));
    h.advance(ms(4_999));
    assert_eq!(h.get("ghost").await, "not found");
    assert_eq!(h.store.reads(), 1);
    let stats = h.stats();
    assert_eq!((stats.hits, stats.stale_hits, stats.refreshes), (2, 0, 0));

    h.advance(ms(1));
    assert_eq!(h.get("ghost").await, "ghost@v1");
    assert_eq!(h.store.reads(), 2);
    let stats = h.stats();
    assert_eq!((stats.misses, stats.loads), (2, 2));
}

#[tokio::test]
async fn a_refresh_that_finds_the_item_deleted_caches_not_found() {
    let h = Harness::with_defaults();
    h.store.set("a", v(1));
    assert_eq!(h.get("a").await, "a@v1");
    h.store.set("a", Reply::Missing);
    h.advance(secs(50));
    let entry = h.entry("a").await;
    assert_eq!(h.get("a").await, "a@v1");
    refresh_finished(&entry).await;
    assert_eq!(h.get("a").await, "not found");
    h.advance(secs(5));
    h.store.set("a", v(2));
    assert_eq!(h.get("a").await, "a@v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn load_errors_reach_every_waiter_and_are_not_cached() {
    let h = Arc::new(Harness::with_defaults());
    h.store.set("a", Reply::Fail);
    h.store.close_gate();
    let key = "a".to_owned();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let h = Arc::clone(&h);
            let key = key.clone();
            tokio::spawn(async move { h.cache.get(&key).await })
        })
        .collect();
    spin_until("16 misses", || h.stats().misses == 16).await;
    h.store.open_gate();
    let errors: Vec<Arc<StoreError>> = join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("task").expect_err("the load failed"))
        .collect();
    assert!(
        errors.iter().all(|e| Arc::ptr_eq(e, &errors[0])),
        "one read, one shared error"
    );
    assert!(matches!(*errors[0], StoreError::Unavailable(_)));
    assert_eq!(h.store.reads(), 1);
    assert_eq!(h.stats().load_errors, 1);

    // Not cached: the next lookup reads again, and succeeds once the store does.
    let again = h.cache.get(&key).await;
    assert!(again.is_err());
    assert_eq!(h.store.reads(), 2);
    h.store.set("a", v(1));
    assert_eq!(h.get("a").await, "a@v1");
    let stats = h.stats();
    assert_eq!((stats.loads, stats.load_errors, stats.misses), (3, 2, 18));
    assert_eq!(stats.hits, 0);
}

#[tokio::test]
async fn invalidate_drops_the_value_and_counts_as_explicit() {
    let h = Harness::with_defaults();
    h.store.set("a", v(1));
    assert_eq!(h.get("a").await, "a@v1");
    h.store.set("a", v(2));
    h.cache.invalidate(&"a".to_owned()).await;
    assert_eq!(h.get("a").await, "a@v2");
    h.cache.run_pending_tasks().await;
    let stats = h.stats();
    assert_eq!((stats.evicted_explicit, stats.evicted_expired), (1, 0));
    assert_eq!(stats.loads, 2);
}

#[tokio::test]
async fn a_refresh_does_not_undo_an_invalidate() {
    let h = Harness::with_defaults();
    h.store.set("a", v(1));
    assert_eq!(h.get("a").await, "a@v1");
    h.store.set("a", v(2));
    h.store.close_gate();
    h.advance(secs(50));
    let stale = h.entry("a").await;
    assert_eq!(h.get("a").await, "a@v1");
    spin_until("the refresh read to start", || h.store.reads() == 2).await;

    // The key is invalidated while the refresh (which read v2) is in flight, and changes again.
    h.cache.invalidate(&"a".to_owned()).await;
    h.store.set("a", v(3));
    h.store.open_gate();
    refresh_finished(&stale).await;

    assert_eq!(h.get("a").await, "a@v3", "the refresh result was discarded");
    assert_eq!(h.store.reads(), 3);
}

#[test]
fn without_a_tokio_runtime_stale_hits_serve_and_skip_the_refresh() {
    let h = Harness::with_defaults();
    h.store.set("a", v(1));
    futures::executor::block_on(async {
        assert_eq!(h.get("a").await, "a@v1");
        h.advance(secs(50));
        assert_eq!(h.get("a").await, "a@v1");
        assert_eq!(h.get("a").await, "a@v1");
    });
    let stats = h.stats();
    assert_eq!((stats.stale_hits, stats.refreshes), (2, 0));
    assert_eq!(h.store.reads(), 1);
}

#[tokio::test]
async fn metrics_are_exported_with_what_happened() {
    let h = Harness::new(CacheConfig {
        max_bytes: 50_000,
        ..CacheConfig::default()
    });
    let mut registry = crate::metrics::registry();
    h.cache.metrics().register(&mut registry);

    h.store.set("a", v(1));
    // Heavier than the whole budget: loaded and served, but never admitted.
    h.store.set(
        "big",
        Reply::Value {
            version: 1,
            size: 60_000,
        },
    );
    h.get("a").await; // miss
    h.get("a").await; // hit
    h.get("nothing").await; // miss, not found
    h.get("nothing").await; // hit (negative)
    assert_eq!(h.get("big").await, "big@v1"); // miss
    h.advance(secs(50));
    let a = h.entry("a").await;
    h.get("a").await; // stale hit, refresh
    refresh_finished(&a).await;
    h.cache.run_pending_tasks().await;

    let stats = h.stats();
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    let expect = [
        "prapi_cache_hits_total 3".to_owned(),
        "prapi_cache_stale_hits_total 1".to_owned(),
        "prapi_cache_misses_total 3".to_owned(),
        "prapi_cache_loads_total 3".to_owned(),
        "prapi_cache_load_errors_total 0".to_owned(),
        "prapi_cache_refreshes_total 1".to_owned(),
        "prapi_cache_refresh_failures_total 0".to_owned(),
        "prapi_cache_evictions_total{cause=\"replaced\"} 1".to_owned(),
        "prapi_cache_evictions_total{cause=\"size\"} 1".to_owned(),
        format!("prapi_cache_size_bytes {}", h.cache.weighted_size()),
        format!("prapi_cache_entries {}", h.cache.entry_count()),
    ];
    for line in &expect {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        );
    }
    assert_eq!((stats.entries, stats.evicted_size), (2, 1), "{stats:?}");
    assert!(
        text.contains("# TYPE prapi_cache_size_bytes gauge"),
        "{text}"
    );
}

#[tokio::test]
async fn metrics_shared_by_two_caches_add_up_and_forget_dropped_caches() {
    let metrics = CacheMetrics::new();
    let store = FakeStore::new();
    store.set("a", v(1));
    let clock = Arc::new(ManualClock::new());
    let one: ByteCache<String> = ByteCache::new(
        CacheConfig::default(),
        store.clone(),
        clock.clone(),
        metrics.clone(),
    );
    let two: ByteCache<String> = ByteCache::new(
        CacheConfig::default(),
        store.clone(),
        clock,
        metrics.clone(),
    );
    one.get(&"a".to_owned()).await.expect("load");
    two.get(&"a".to_owned()).await.expect("load");
    one.run_pending_tasks().await;
    two.run_pending_tasks().await;
    let stats = metrics.snapshot();
    assert_eq!((stats.misses, stats.entries), (2, 2));
    assert_eq!(stats.bytes, one.weighted_size() + two.weighted_size());
    drop(two);
    assert_eq!(metrics.snapshot().entries, 1);
}

#[tokio::test]
async fn removing_an_expired_entry_spares_a_newer_one() {
    // A request that found an entry expired may get to remove it only after another request
    // has already reloaded the key: it must not throw the new value away.
    let h = Harness::with_defaults();
    h.store.set("a", v(1));
    assert_eq!(h.get("a").await, "a@v1");
    let expired = h.entry("a").await;
    h.store.set("a", v(2));
    h.advance(secs(60));
    assert_eq!(h.get("a").await, "a@v2");
    let key = "a".to_owned();
    h.cache.inner.remove_if_current(&key, &expired).await;
    assert_eq!(h.get("a").await, "a@v2");
    assert_eq!(h.store.reads(), 2, "the newer value survived");
    let current = h.entry("a").await;
    h.cache.inner.remove_if_current(&key, &current).await;
    assert!(!h.cache.inner.cache.contains_key(&key));
}

/// Inserts `keys` (through the fake store) and returns what the cache's weights grew by and the
/// heap bytes the inserts left allocated, counted by the test allocator after housekeeping.
fn weighed_and_kept(rt: &tokio::runtime::Runtime, h: &Harness, keys: &[String]) -> (u64, u64) {
    let before = h.cache.weighted_size();
    let info = allocation_counter::measure(|| {
        rt.block_on(async {
            for k in keys {
                h.cache.get(k).await.expect("lookup succeeds");
            }
            h.cache.run_pending_tasks().await;
        });
    });
    let kept = u64::try_from(info.bytes_current).expect("inserts keep memory");
    (h.cache.weighted_size() - before, kept)
}

#[test]
fn weights_cover_the_heap_each_entry_keeps() {
    // The byte budget holds only if every entry is charged at least what it keeps allocated:
    // its bodies, its key, our entry and moka's own per-entry records. Negative entries are all
    // overhead, which is what a miss storm of unknown ids fills the cache with.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let h = Harness::new(CacheConfig {
        max_bytes: 1 << 40,
        ..CacheConfig::default()
    });
    let keys =
        |prefix: &str| -> Vec<String> { (0..2000).map(|i| format!("{prefix}-{i:06}")).collect() };
    let found = keys("found");
    for k in &found {
        h.store.set(
            k,
            Reply::Value {
                version: 1,
                size: 3000,
            },
        );
    }
    // Once outside the measurements: moka sizes its frequency sketch and tables on first use.
    weighed_and_kept(&rt, &h, &keys("warm-up"));

    for (what, keys) in [("negative", keys("unknown")), ("found", found)] {
        let (weighed, kept) = weighed_and_kept(&rt, &h, &keys);
        let n = keys.len() as u64;
        assert!(
            weighed >= kept,
            "{what} entries: charged {} B each, keep {} B each",
            weighed / n,
            kept / n
        );
        // ... and not so much more that the budget holds far less than it says.
        assert!(
            weighed <= kept + kept / 4,
            "{what} entries: charged {} B each, keep only {} B each",
            weighed / n,
            kept / n
        );
    }
}
