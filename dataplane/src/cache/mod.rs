//! Byte cache with refresh-ahead in front of the store (docs/architecture.md).
//!
//! Values are immutable [`Rendered`] bodies (identity and gzip, compressed once at load) weighed by
//! their bytes against a budget. A found value lives `ttl` (60 s); in its last `stale` seconds (15 s)
//! a hit still answers at once but also starts one background refresh, so hot keys are reloaded
//! before they expire and readers never wait for the store. Past `ttl` an entry is a miss.
//! Not-found is cached for `negative_ttl`. Concurrent misses of a key share one load; a load error
//! is handed to every request waiting on that load and is not cached.
//!
//! # Why refresh-ahead is built on top of moka
//!
//! moka (0.12) gives us the hard parts of a concurrent cache: a sharded map, byte-weighted
//! TinyLFU eviction, coalesced initialisation (`or_try_insert_with`, errors shared as `Arc<E>`),
//! serialised per-key compute (`and_compute_with`) and an eviction listener. It has no
//! refresh-after-write, and its clock cannot be replaced, so expiry by moka could not be tested
//! without sleeping. Hence:
//!
//! - Each entry records when its load started, by the injected [`Clock`]; every lookup judges
//!   its age with that clock ([`CacheConfig`] holds the rules, as pure functions). moka's own per-entry expiry
//!   is only a memory backstop set a little beyond ours, so it never decides what is served.
//! - An expired entry is removed with a compute that removes it only if it is still the *same*
//!   entry (pointer equality), then the lookup goes through moka's coalesced insert like any miss.
//!   So N requests that find one expired entry still cause one load, and a request that arrives
//!   late never throws away a value that was just loaded.
//! - A stale hit races for the entry's refresh gate (one atomic word); the single winner spawns a
//!   task that loads the key and swaps the new entry in, again only if the old one is still
//!   current (so an `invalidate`, an expiry or an eviction in between is never undone). A failed
//!   refresh keeps the old value and closes the gate for a pause that doubles per consecutive
//!   failure (capped at the stale window), so a dead store sees about one attempt per key per
//!   pause instead of one per request.
//!
//! The hit path is one moka lookup, one clock read, a relaxed counter increment and an `Arc`
//! clone: it allocates nothing beyond what moka's own housekeeping does, and no lock of ours is
//! ever held across an `.await`.
//!
//! Known limit: as with any get-or-insert cache, a miss load that is in flight while `invalidate`
//! runs inserts its result afterwards. Invalidate after the store write has landed and before the
//! next read you care about, or accept one TTL of the older value.

mod config;
mod entry;
mod metrics;
mod rendered;
#[cfg(test)]
mod tests;

use std::future::ready;
use std::hash::Hash;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::Expiry;
use moka::future::Cache;
use moka::notification::RemovalCause;
use moka::ops::compute::{CompResult, Op};

use crate::clock::Clock;
use crate::store::StoreError;
use config::Freshness;
pub use config::{CacheConfig, CacheConfigError};
use entry::Entry;
use metrics::SizeProbe;
pub use metrics::{CacheMetrics, CacheStats, EvictionCause};
pub use rendered::Rendered;

/// What a lookup found, and how much longer this cache serves that answer (what is left of the
/// entry's TTL, or of the negative TTL): responses advertise it as their `max-age`, so a client
/// or CDN never keeps an answer past the moment the cache itself stops serving it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The rendered body (shared; cloning it copies no bytes).
    Found(Arc<Rendered>, Duration),
    /// The store has no such item (possibly answered from the negative cache).
    NotFound(Duration),
}

/// Loads the value of a key from the store (and renders it). `Ok(None)` means "not found" and is
/// cached briefly; `Err` is never cached.
#[async_trait]
pub trait Loader<K: Sync>: Send + Sync + 'static {
    /// Reads and renders the value of `key`.
    async fn load(&self, key: &K) -> Result<Option<Rendered>, StoreError>;
}

/// What a key owns on the heap besides its inline size (an id's characters), so that its entry's
/// weight counts it: under a miss storm of distinct unknown ids, keys are a good part of what the
/// cache holds.
pub trait KeyHeap {
    /// Heap bytes owned by this key.
    fn heap_bytes(&self) -> usize;
}

impl KeyHeap for String {
    fn heap_bytes(&self) -> usize {
        self.capacity()
    }
}

/// A concurrent byte cache with stale-window refresh; see the module docs. Cheap to clone (all
/// clones share one cache).
pub struct ByteCache<K> {
    inner: Arc<Inner<K>>,
}

impl<K> Clone for ByteCache<K> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<K> {
    cache: Cache<K, Arc<Entry>>,
    loader: Arc<dyn Loader<K>>,
    clock: Arc<dyn Clock>,
    config: CacheConfig,
    metrics: CacheMetrics,
}

impl<K> ByteCache<K>
where
    K: Hash + Eq + Clone + KeyHeap + Send + Sync + 'static,
{
    /// A cache that loads through `loader`, ages entries by `clock` and reports into `metrics`.
    /// Never fails: check user-supplied settings with [`CacheConfig::validate`] first.
    pub fn new(
        config: CacheConfig,
        loader: Arc<dyn Loader<K>>,
        clock: Arc<dyn Clock>,
        metrics: CacheMetrics,
    ) -> Self {
        let listener = {
            let metrics = metrics.clone();
            let clock = Arc::clone(&clock);
            move |_key: Arc<K>, entry: Arc<Entry>, cause: RemovalCause| {
                metrics.record_eviction(eviction_cause(&config, &*clock, &entry, cause));
            }
        };
        let cache = Cache::builder()
            .max_capacity(config.max_bytes)
            .weigher(|_key: &K, entry: &Arc<Entry>| entry.weight())
            .expire_after(Backstop(config))
            .eviction_listener(listener)
            .build();
        let inner = Arc::new(Inner {
            cache,
            loader,
            clock,
            config,
            metrics,
        });
        let probe: Weak<dyn SizeProbe> = Arc::downgrade(&inner) as Weak<Inner<K>>;
        inner.metrics.add_probe(probe);
        Self { inner }
    }

    /// The value of `key`: from the cache when fresh or stale (a stale hit also starts a
    /// background refresh), otherwise loaded, with concurrent misses of the key sharing one load.
    /// `Err` only when nothing usable is cached and the load failed.
    pub async fn get(&self, key: &K) -> Result<Lookup, Arc<StoreError>> {
        let inner = &*self.inner;
        if let Some(entry) = inner.cache.get(key).await {
            let now = inner.clock.now();
            match inner.config.freshness(entry.is_found(), entry.age(now)) {
                Freshness::Fresh => {
                    inner.metrics.hits.inc();
                    return Ok(inner.lookup(&entry, now));
                }
                Freshness::Stale => {
                    inner.metrics.hits.inc();
                    inner.metrics.stale_hits.inc();
                    self.refresh_ahead(key, &entry, now);
                    return Ok(inner.lookup(&entry, now));
                }
                Freshness::Expired => inner.remove_if_current(key, &entry).await,
            }
        }
        inner.metrics.misses.inc();
        let loaded = inner
            .cache
            .entry_by_ref(key)
            .or_try_insert_with(inner.load(key))
            .await?;
        Ok(inner.lookup(loaded.value(), inner.clock.now()))
    }

    /// Drops any cached value of `key`, so the next lookup loads it. (Async because moka's
    /// removal is; it does not wait for the store.)
    pub async fn invalidate(&self, key: &K) {
        self.inner.cache.invalidate(key).await;
    }

    /// Runs moka's pending housekeeping (evictions, size accounting, listener calls) now instead
    /// of at its own pace. For tests and for exact size readings.
    pub async fn run_pending_tasks(&self) {
        self.inner.cache.run_pending_tasks().await;
    }

    /// Weighted size in bytes as of the last housekeeping.
    pub fn weighted_size(&self) -> u64 {
        self.inner.cache.weighted_size()
    }

    /// Number of entries as of the last housekeeping.
    pub fn entry_count(&self) -> u64 {
        self.inner.cache.entry_count()
    }

    /// The settings this cache runs with.
    pub fn config(&self) -> &CacheConfig {
        &self.inner.config
    }

    /// The metrics this cache reports into.
    pub fn metrics(&self) -> &CacheMetrics {
        &self.inner.metrics
    }

    /// Starts the background refresh of a stale `entry` unless one is running or backing off.
    fn refresh_ahead(&self, key: &K, entry: &Arc<Entry>, now: Duration) {
        if !entry.refresh().try_begin(now) {
            return;
        }
        // Outside a tokio runtime there is nobody to run the refresh: keep serving the stale
        // value until it expires, then the miss path reloads it.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            entry.refresh().release();
            return;
        };
        self.inner.metrics.refreshes.inc();
        let refresh = Refresh {
            inner: Arc::clone(&self.inner),
            key: key.clone(),
            stale: Arc::clone(entry),
            finished: false,
        };
        runtime.spawn(refresh.run());
    }
}

impl<K> Inner<K>
where
    K: Hash + Eq + Clone + KeyHeap + Send + Sync + 'static,
{
    /// What `entry` answers at `now`.
    fn lookup(&self, entry: &Entry, now: Duration) -> Lookup {
        entry.lookup(self.config.remaining(entry.is_found(), entry.age(now)))
    }

    /// One store read, made into an entry. Runs once per coalesced miss.
    async fn load(&self, key: &K) -> Result<Arc<Entry>, StoreError> {
        let started = self.clock.now();
        self.metrics.loads.inc();
        match self.loader.load(key).await {
            Ok(value) => Ok(Arc::new(Entry::new(value, started, key_bytes(key)))),
            Err(error) => {
                self.metrics.load_errors.inc();
                Err(error)
            }
        }
    }

    /// Removes `seen` if it is still the entry of `key`; leaves a newer one alone.
    async fn remove_if_current(&self, key: &K, seen: &Arc<Entry>) {
        self.cache
            .entry_by_ref(key)
            .and_compute_with(|current| {
                ready(match current {
                    Some(current) if Arc::ptr_eq(current.value(), seen) => Op::Remove,
                    _ => Op::Nop,
                })
            })
            .await;
    }
}

impl<K> SizeProbe for Inner<K>
where
    K: Hash + Eq + Send + Sync + 'static,
{
    fn weighted_size(&self) -> u64 {
        self.cache.weighted_size()
    }

    fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }
}

/// A background refresh of one stale entry. If it ends without reporting (the loader panicked,
/// or the runtime shut down), dropping it counts as a failure so the gate reopens after a pause.
struct Refresh<K> {
    inner: Arc<Inner<K>>,
    key: K,
    stale: Arc<Entry>,
    finished: bool,
}

impl<K> Refresh<K>
where
    K: Hash + Eq + Clone + KeyHeap + Send + Sync + 'static,
{
    async fn run(mut self) {
        let inner = Arc::clone(&self.inner);
        let started = inner.clock.now();
        match inner.loader.load(&self.key).await {
            Ok(value) => {
                let fresh = Arc::new(Entry::new(value, started, key_bytes(&self.key)));
                let stale = &self.stale;
                let outcome = inner
                    .cache
                    .entry_by_ref(&self.key)
                    .and_compute_with(|current| {
                        ready(match current {
                            Some(current) if Arc::ptr_eq(current.value(), stale) => Op::Put(fresh),
                            _ => Op::Nop,
                        })
                    })
                    .await;
                if matches!(outcome, CompResult::ReplacedWith(_)) {
                    self.stale.refresh().superseded();
                } else {
                    self.stale.refresh().release();
                }
            }
            Err(error) => {
                let pause = self.fail();
                tracing::debug!(%error, ?pause, "background cache refresh failed; keeping the stale value");
            }
        }
        self.finished = true;
    }

    fn fail(&self) -> Duration {
        self.inner.metrics.refresh_failures.inc();
        self.stale
            .refresh()
            .failed(self.inner.clock.now(), &self.inner.config)
    }
}

impl<K> Drop for Refresh<K> {
    fn drop(&mut self) {
        if !self.finished {
            self.inner.metrics.refresh_failures.inc();
            self.stale
                .refresh()
                .failed(self.inner.clock.now(), &self.inner.config);
        }
    }
}

/// What a key weighs: its inline size (moka keeps it in an `Arc`) and what it owns.
fn key_bytes<K: KeyHeap>(key: &K) -> usize {
    size_of::<K>().saturating_add(key.heap_bytes())
}

/// moka's removal cause, except that an explicit removal of an entry that was past its TTL is
/// our own expiry (the lookup that found it expired removed it), not an `invalidate`.
fn eviction_cause(
    config: &CacheConfig,
    clock: &dyn Clock,
    entry: &Entry,
    cause: RemovalCause,
) -> EvictionCause {
    match cause {
        RemovalCause::Size => EvictionCause::Size,
        RemovalCause::Expired => EvictionCause::Expired,
        RemovalCause::Replaced => EvictionCause::Replaced,
        RemovalCause::Explicit => {
            match config.freshness(entry.is_found(), entry.age(clock.now())) {
                Freshness::Expired => EvictionCause::Expired,
                Freshness::Fresh | Freshness::Stale => EvictionCause::Explicit,
            }
        }
    }
}

/// moka's per-entry expiry as a memory backstop only (see [`CacheConfig::backstop`]); it is reset
/// when a refresh replaces the value.
struct Backstop(CacheConfig);

impl<K> Expiry<K, Arc<Entry>> for Backstop {
    fn expire_after_create(&self, _key: &K, entry: &Arc<Entry>, _at: Instant) -> Option<Duration> {
        Some(self.0.backstop(entry.is_found()))
    }

    fn expire_after_update(
        &self,
        _key: &K,
        entry: &Arc<Entry>,
        _at: Instant,
        _remaining: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.0.backstop(entry.is_found()))
    }
}
