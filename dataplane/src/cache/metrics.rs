//! Prometheus metrics of the byte cache (prometheus-client).
//!
//! Counters are bumped where things happen; the size gauges are read from moka at scrape time
//! (a collector), so they can never drift from what moka actually holds.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

/// Why an entry left the cache (moka's removal causes, plus our own expiry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EvictionCause {
    /// Pushed out (or not admitted) to keep the byte budget.
    Size,
    /// Past its TTL when removed: by the lookup that found it expired, or by moka's memory
    /// backstop (an `invalidate` of an already expired entry counts here too).
    Expired,
    /// Removed by [`ByteCache::invalidate`](super::ByteCache::invalidate).
    Explicit,
    /// Replaced by a newer value (a background refresh).
    Replaced,
}

impl EvictionCause {
    /// The label value, as it appears on `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            EvictionCause::Size => "size",
            EvictionCause::Expired => "expired",
            EvictionCause::Explicit => "explicit",
            EvictionCause::Replaced => "replaced",
        }
    }
}

impl EncodeLabelValue for EvictionCause {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
        fmt::Write::write_str(encoder, self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EvictionLabels {
    cause: EvictionCause,
}

/// Something that knows how much a cache holds right now (implemented by the cache internals).
pub(crate) trait SizeProbe: Send + Sync {
    /// Weighted size in bytes, as moka accounts it.
    fn weighted_size(&self) -> u64;
    /// Number of entries, as moka accounts it.
    fn entry_count(&self) -> u64;
}

/// The caches that report into one `CacheMetrics`. Weak, so metrics never keep a cache alive.
#[derive(Default)]
struct Probes(Mutex<Vec<Weak<dyn SizeProbe>>>);

impl Probes {
    fn add(&self, probe: Weak<dyn SizeProbe>) {
        let mut probes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        probes.retain(|p| p.strong_count() > 0);
        probes.push(probe);
    }

    /// (bytes, entries) summed over the live caches.
    fn totals(&self) -> (u64, u64) {
        let probes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        probes
            .iter()
            .filter_map(Weak::upgrade)
            .fold((0, 0), |(b, e), p| {
                (
                    b.saturating_add(p.weighted_size()),
                    e.saturating_add(p.entry_count()),
                )
            })
    }
}

/// Metrics of a [`ByteCache`](super::ByteCache). Cheap to clone (all handles are shared); pass
/// one to [`ByteCache::new`](super::ByteCache::new) and [`register`](CacheMetrics::register) it
/// once. Several caches may share one `CacheMetrics`: counters and sizes then add up.
#[derive(Clone)]
pub struct CacheMetrics {
    pub(crate) hits: Counter,
    pub(crate) stale_hits: Counter,
    pub(crate) misses: Counter,
    pub(crate) loads: Counter,
    pub(crate) load_errors: Counter,
    pub(crate) refreshes: Counter,
    pub(crate) refresh_failures: Counter,
    evictions: Family<EvictionLabels, Counter>,
    // Handles into `evictions`, made up front so the eviction listener never takes the family's lock.
    evicted_size: Counter,
    evicted_expired: Counter,
    evicted_explicit: Counter,
    evicted_replaced: Counter,
    probes: Arc<Probes>,
}

impl fmt::Debug for CacheMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheMetrics")
            .field("stats", &self.snapshot())
            .finish()
    }
}

impl Default for CacheMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl CacheMetrics {
    /// Fresh metrics, all zero.
    pub fn new() -> Self {
        let evictions = Family::<EvictionLabels, Counter>::default();
        let handle = |cause| evictions.get_or_create(&EvictionLabels { cause }).clone();
        Self {
            hits: Counter::default(),
            stale_hits: Counter::default(),
            misses: Counter::default(),
            loads: Counter::default(),
            load_errors: Counter::default(),
            refreshes: Counter::default(),
            refresh_failures: Counter::default(),
            evicted_size: handle(EvictionCause::Size),
            evicted_expired: handle(EvictionCause::Expired),
            evicted_explicit: handle(EvictionCause::Explicit),
            evicted_replaced: handle(EvictionCause::Replaced),
            evictions,
            probes: Arc::default(),
        }
    }

    /// Registers every metric in `registry` (names start with `cache_`; give the registry a
    /// prefix such as `prapi` with `sub_registry_with_prefix` if wanted).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "cache_hits",
            "Lookups answered from the cache without waiting for the store (fresh or stale, found or not found)",
            self.hits.clone(),
        );
        registry.register(
            "cache_stale_hits",
            "Hits in the stale window: served at once, refreshed in the background (a subset of cache_hits)",
            self.stale_hits.clone(),
        );
        registry.register(
            "cache_misses",
            "Lookups that had to wait for a load from the store",
            self.misses.clone(),
        );
        registry.register(
            "cache_loads",
            "Store reads made for misses; concurrent misses of one key share one read",
            self.loads.clone(),
        );
        registry.register(
            "cache_load_errors",
            "Store reads for misses that failed (each failed read counted once, however many requests waited)",
            self.load_errors.clone(),
        );
        registry.register(
            "cache_refreshes",
            "Background refreshes started by stale hits",
            self.refreshes.clone(),
        );
        registry.register(
            "cache_refresh_failures",
            "Background refreshes that failed; the stale value was kept",
            self.refresh_failures.clone(),
        );
        registry.register(
            "cache_evictions",
            "Entries removed from the cache, by cause (size, expired, explicit, replaced)",
            self.evictions.clone(),
        );
        registry.register_collector(Box::new(SizeCollector {
            probes: Arc::clone(&self.probes),
        }));
    }

    /// The current values, for logs and tests.
    pub fn snapshot(&self) -> CacheStats {
        let (bytes, entries) = self.probes.totals();
        CacheStats {
            hits: self.hits.get(),
            stale_hits: self.stale_hits.get(),
            misses: self.misses.get(),
            loads: self.loads.get(),
            load_errors: self.load_errors.get(),
            refreshes: self.refreshes.get(),
            refresh_failures: self.refresh_failures.get(),
            evicted_size: self.evicted_size.get(),
            evicted_expired: self.evicted_expired.get(),
            evicted_explicit: self.evicted_explicit.get(),
            evicted_replaced: self.evicted_replaced.get(),
            bytes,
            entries,
        }
    }

    pub(crate) fn record_eviction(&self, cause: EvictionCause) {
        match cause {
            EvictionCause::Size => &self.evicted_size,
            EvictionCause::Expired => &self.evicted_expired,
            EvictionCause::Explicit => &self.evicted_explicit,
            EvictionCause::Replaced => &self.evicted_replaced,
        }
        .inc();
    }

    pub(crate) fn add_probe(&self, probe: Weak<dyn SizeProbe>) {
        self.probes.add(probe);
    }
}

/// A point-in-time copy of [`CacheMetrics`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache (including stale hits and cached not-found).
    pub hits: u64,
    /// Hits in the stale window (a subset of `hits`).
    pub stale_hits: u64,
    /// Lookups that waited for a load.
    pub misses: u64,
    /// Store reads for misses.
    pub loads: u64,
    /// Failed store reads for misses.
    pub load_errors: u64,
    /// Background refreshes started.
    pub refreshes: u64,
    /// Background refreshes that failed.
    pub refresh_failures: u64,
    /// Entries pushed out to keep the byte budget.
    pub evicted_size: u64,
    /// Entries removed past their TTL.
    pub evicted_expired: u64,
    /// Entries removed by `invalidate`.
    pub evicted_explicit: u64,
    /// Entries replaced by a refreshed value.
    pub evicted_replaced: u64,
    /// Weighted size of the cached entries in bytes (as of moka's last housekeeping).
    pub bytes: u64,
    /// Number of cached entries (as of moka's last housekeeping).
    pub entries: u64,
}

/// Reads the cache sizes at scrape time.
struct SizeCollector {
    probes: Arc<Probes>,
}

impl fmt::Debug for SizeCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SizeCollector").finish_non_exhaustive()
    }
}

impl Collector for SizeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let (bytes, entries) = self.probes.totals();
        let bytes = ConstGauge::new(i64::try_from(bytes).unwrap_or(i64::MAX));
        bytes.encode(encoder.encode_descriptor(
            "cache_size",
            "Weighted size of the cached entries (bodies, gzip, ETag, per-entry overhead)",
            Some(&Unit::Bytes),
            bytes.metric_type(),
        )?)?;
        let entries = ConstGauge::new(i64::try_from(entries).unwrap_or(i64::MAX));
        entries.encode(encoder.encode_descriptor(
            "cache_entries",
            "Number of cached entries",
            None,
            entries.metric_type(),
        )?)?;
        Ok(())
    }
}
