//! The batched writer: turns a batch of versioned writes into BatchWriteItem-sized calls.
//!
//! Per call at most [`MAX_BATCH_ITEMS`] distinct keys (duplicates collapse to the newest version),
//! at most `in_flight` calls at once across the whole writer, unprocessed items and throttling
//! retried with exponential backoff and full jitter until written. A hard error (the table is
//! missing, access denied, a malformed request) is returned to the caller, which stops that
//! batch's progress rather than skipping it.
//!
//! Stale writes: DynamoDB's BatchWriteItem cannot be conditional, so before writing the writer
//! learns the stored version of every key it has not seen (one BatchGetItem per 100 keys, cached
//! afterwards) and drops writes that are not newer. This keeps the rule of the embedded store
//! ("an older or equal version never replaces a newer one") for everything one writer does; see
//! docs/updater.md for the window that remains between two writers.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::{FuturesUnordered, StreamExt};
use rand::Rng;
use tokio::sync::Semaphore;

use super::metrics::WriterMetrics;
use crate::model::{Offer, Write, WriteKey};
use crate::store::{ApplyOutcome, StoreError};
use xxhash_rust::xxh3::Xxh3;

/// DynamoDB's limit of items per BatchWriteItem.
pub const MAX_BATCH_ITEMS: usize = 25;
/// DynamoDB's limit of keys per BatchGetItem.
pub const MAX_GET_KEYS: usize = 100;

/// Why a sink call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SinkError {
    /// Throttled by the table.
    #[error("throttled: {0}")]
    Throttled(String),
    /// Timeout, connection failure or a 5xx: worth retrying.
    #[error("transient: {0}")]
    Transient(String),
    /// Retrying cannot help (missing table, access denied, invalid request).
    #[error("{0}")]
    Fatal(String),
}

/// One table's batch operations, as the writer needs them. A call is one round trip.
#[async_trait]
pub trait BatchSink: Send + Sync + 'static {
    /// Puts the items of `writes` (at most [`MAX_BATCH_ITEMS`], distinct keys) in one call and
    /// returns the indices (into `writes`) of the items the table did not process.
    async fn write_batch(&self, writes: &[&Write]) -> Result<Vec<usize>, SinkError>;

    /// Stored versions (tombstones included) of at most [`MAX_GET_KEYS`] distinct keys in one
    /// call. Keys absent from the table are absent from the map; keys the table did not process
    /// are returned by index to be asked again.
    async fn stored_versions(
        &self,
        keys: &[&WriteKey],
    ) -> Result<(HashMap<WriteKey, u64>, Vec<usize>), SinkError>;
}

/// Exponential backoff with full jitter: attempt `n` sleeps a uniform time in `[0, min(cap, base·2ⁿ)]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling of the first retry's sleep.
    pub base: Duration,
    /// Largest ceiling of any sleep.
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(20),
            cap: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// The ceiling of the sleep before retry number `attempt` (0-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// A jittered sleep before retry number `attempt`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }
}

/// Settings of a [`BatchWriter`].
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Write calls in flight at once across the writer (docs/updater.md: 10).
    pub in_flight: usize,
    /// Version-lookup calls in flight at once.
    pub lookups_in_flight: usize,
    /// Backoff between retries.
    pub backoff: Backoff,
    /// Keys whose stored version is remembered (bounded; forgetting one costs one lookup).
    pub version_cache_entries: u64,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            in_flight: 10,
            lookups_in_flight: 10,
            backoff: Backoff::default(),
            version_cache_entries: 500_000,
        }
    }
}

/// A 128-bit fingerprint of a write's key, computed from borrowed fields.
///
/// The writer's per-key bookkeeping (deduplication, the version cache) runs for every write on
/// the hot path; keying it by the owned [`WriteKey`] meant three string allocations and a SipHash
/// over them per use, which was the largest CPU cost of the pipeline. Fields are length-prefixed,
/// so distinct keys differ in their input; two distinct keys sharing a 128-bit xxh3 is about as
/// likely as a hardware fault (≈ n²/2¹²⁹ for n keys).
pub fn key_fingerprint(write: &Write) -> u128 {
    fn field(h: &mut Xxh3, bytes: &[u8]) {
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    let mut h = Xxh3::new();
    match write {
        Write::Product { id, .. } | Write::ProductDeleted { id, .. } => {
            h.update(b"p");
            field(&mut h, id.as_str().as_bytes());
        }
        Write::Offer(Offer { key, .. }) | Write::OfferDeleted { key, .. } => {
            h.update(b"o");
            field(&mut h, key.product_id.as_str().as_bytes());
            field(&mut h, key.country.as_str().as_bytes());
            field(&mut h, key.merchant_id.as_str().as_bytes());
            field(&mut h, key.sku.as_bytes());
        }
    }
    h.digest128()
}

/// Collapses writes to one per key, keeping the newest version (the first of equal versions, as
/// the store keeps the first write of a version). Returns the kept writes in first-seen key order
/// and how many were dropped.
pub fn dedupe_newest(writes: &[Write]) -> (Vec<&Write>, usize) {
    let (kept, dropped) = dedupe_keyed(writes);
    (kept.into_iter().map(|(_, w)| w).collect(), dropped)
}

/// [`dedupe_newest`] with each kept write's [`key_fingerprint`].
fn dedupe_keyed(writes: &[Write]) -> (Vec<(u128, &Write)>, usize) {
    let mut index: HashMap<u128, usize> = HashMap::with_capacity(writes.len());
    let mut kept: Vec<(u128, &Write)> = Vec::with_capacity(writes.len());
    for w in writes {
        let fp = key_fingerprint(w);
        match index.entry(fp) {
            Entry::Occupied(e) => {
                let slot = &mut kept[*e.get()];
                if w.version() > slot.1.version() {
                    slot.1 = w;
                }
            }
            Entry::Vacant(e) => {
                e.insert(kept.len());
                kept.push((fp, w));
            }
        }
    }
    let dropped = writes.len() - kept.len();
    (kept, dropped)
}

/// Batched, bounded, retrying writer over a [`BatchSink`].
pub struct BatchWriter {
    sink: Arc<dyn BatchSink>,
    writes: Semaphore,
    lookups: Semaphore,
    backoff: Backoff,
    /// Stored version per [`key_fingerprint`]: what this writer wrote or looked up.
    versions: quick_cache::sync::Cache<u128, u64>,
    metrics: Arc<WriterMetrics>,
}

impl BatchWriter {
    /// A writer over `sink`, reporting to `metrics`.
    pub fn new(
        sink: Arc<dyn BatchSink>,
        config: WriterConfig,
        metrics: Arc<WriterMetrics>,
    ) -> Self {
        Self {
            sink,
            writes: Semaphore::new(config.in_flight.max(1)),
            lookups: Semaphore::new(config.lookups_in_flight.max(1)),
            backoff: config.backoff,
            versions: quick_cache::sync::Cache::new(
                usize::try_from(config.version_cache_entries).unwrap_or(usize::MAX),
            ),
            metrics,
        }
    }

    /// The metrics this writer reports to.
    pub fn metrics(&self) -> &Arc<WriterMetrics> {
        &self.metrics
    }

    /// Writes `writes` durably, skipping those not newer than what is stored. Returns only when
    /// every kept write is stored (retrying throttling and unprocessed items), or on a hard error;
    /// after an error the caller retries the whole batch (writing twice is harmless).
    pub async fn write(&self, writes: &[Write]) -> Result<ApplyOutcome, StoreError> {
        let (kept, duplicates) = dedupe_keyed(writes);
        let mut stale = duplicates;

        // The stored version of each kept write's key: `None` when nothing is stored.
        let mut stored: Vec<Option<u64>> = Vec::with_capacity(kept.len());
        let mut unknown: Vec<usize> = Vec::new();
        for (i, (fp, _)) in kept.iter().enumerate() {
            let cached = self.versions.get(fp);
            if cached.is_none() {
                unknown.push(i);
            }
            stored.push(cached);
        }
        if !unknown.is_empty() {
            let keys: Vec<WriteKey> = unknown.iter().map(|&i| kept[i].1.key()).collect();
            let found = self.lookup(&keys).await?;
            for (&i, key) in unknown.iter().zip(&keys) {
                if let Some(&v) = found.get(key) {
                    stored[i] = Some(v);
                    self.versions.insert(kept[i].0, v);
                }
            }
        }
        let (fresh_keys, fresh): (Vec<u128>, Vec<&Write>) = kept
            .iter()
            .zip(&stored)
            .filter(|((_, w), s)| s.is_none_or(|v| w.version() > v))
            .map(|((fp, w), _)| (*fp, *w))
            .unzip();
        stale += kept.len() - fresh.len();

        let mut calls: FuturesUnordered<_> =
            fresh
                .chunks(MAX_BATCH_ITEMS)
                .zip(fresh_keys.chunks(MAX_BATCH_ITEMS))
                .map(|(chunk, keys)| async move {
                    self.write_chunk(chunk).await.map(|()| (chunk, keys))
                })
                .collect();
        let mut first_error = None;
        while let Some(result) = calls.next().await {
            match result {
                Ok((written, keys)) => {
                    for (w, fp) in written.iter().zip(keys) {
                        self.versions.insert(*fp, w.version());
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        self.metrics.items_written.inc_by(fresh.len() as u64);
        self.metrics.items_stale.inc_by(stale as u64);
        Ok(ApplyOutcome {
            applied: fresh.len(),
            stale,
        })
    }

    /// Stored versions of `keys`, in calls of at most [`MAX_GET_KEYS`], retried until answered.
    async fn lookup(&self, keys: &[WriteKey]) -> Result<HashMap<WriteKey, u64>, StoreError> {
        let mut calls: FuturesUnordered<_> = keys
            .chunks(MAX_GET_KEYS)
            .map(|chunk| async move {
                let mut pending: Vec<&WriteKey> = chunk.iter().collect();
                let mut found = HashMap::new();
                let mut attempt = 0;
                while !pending.is_empty() {
                    let result = {
                        let _permit = self.lookups.acquire().await;
                        self.sink.stored_versions(&pending).await
                    };
                    match result {
                        Ok((versions, unprocessed)) => {
                            found.extend(versions);
                            if unprocessed.is_empty() {
                                break;
                            }
                            self.metrics.retry("lookup_unprocessed");
                            pending = unprocessed
                                .iter()
                                .filter_map(|&i| pending.get(i).copied())
                                .collect();
                        }
                        Err(e @ SinkError::Fatal(_)) => {
                            return Err(StoreError::backend("reading versions", e));
                        }
                        Err(SinkError::Throttled(_)) => self.metrics.retry("lookup_throttled"),
                        Err(SinkError::Transient(_)) => self.metrics.retry("lookup_transient"),
                    }
                    tokio::time::sleep(self.backoff.delay(attempt)).await;
                    attempt = attempt.saturating_add(1);
                }
                Ok(found)
            })
            .collect();
        let mut all = HashMap::with_capacity(keys.len());
        while let Some(result) = calls.next().await {
            all.extend(result?);
        }
        Ok(all)
    }

    /// Writes one chunk of distinct keys until every item is processed. Holds a write permit only
    /// while a call is on the wire, so backoff sleeps leave room for other chunks.
    async fn write_chunk(&self, chunk: &[&Write]) -> Result<(), StoreError> {
        let mut pending: Vec<&Write> = chunk.to_vec();
        let mut attempt = 0;
        loop {
            let result = {
                let _permit = self.writes.acquire().await;
                let started = Instant::now();
                let result = self.sink.write_batch(&pending).await;
                self.metrics
                    .call_seconds
                    .observe(started.elapsed().as_secs_f64());
                self.metrics.calls.inc();
                result
            };
            match result {
                Ok(unprocessed) if unprocessed.is_empty() => return Ok(()),
                Ok(unprocessed) => {
                    self.metrics.retry("unprocessed");
                    self.metrics
                        .unprocessed_items
                        .inc_by(unprocessed.len() as u64);
                    pending = unprocessed
                        .iter()
                        .filter_map(|&i| pending.get(i).copied())
                        .collect();
                    if pending.is_empty() {
                        return Ok(());
                    }
                }
                Err(e @ SinkError::Fatal(_)) => {
                    self.metrics.hard_errors.inc();
                    return Err(StoreError::backend("batch write", e));
                }
                Err(SinkError::Throttled(e)) => {
                    self.metrics.retry("throttled");
                    tracing::debug!(error = %e, attempt, "batch write throttled; backing off");
                }
                Err(SinkError::Transient(e)) => {
                    self.metrics.retry("transient");
                    tracing::warn!(error = %e, attempt, "batch write failed; backing off");
                }
            }
            tokio::time::sleep(self.backoff.delay(attempt)).await;
            attempt = attempt.saturating_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Country, Currency, MerchantId, Offer, OfferKey, Price, ProductId};
    use bytes::Bytes;
    use proptest::prelude::*;

    fn product(id: &str, version: u64) -> Write {
        Write::Product {
            id: ProductId::parse(id).expect("id"),
            version,
            body: Bytes::from(format!("{{\"v\":{version}}}")),
        }
    }

    fn offer(id: &str, sku: &str, version: u64) -> Write {
        Write::Offer(Offer {
            key: OfferKey {
                product_id: ProductId::parse(id).expect("id"),
                country: Country::parse("de").expect("country"),
                merchant_id: MerchantId::parse("m").expect("merchant"),
                sku: sku.into(),
            },
            version,
            price: Price {
                amount: 1,
                currency: Currency::parse("EUR").expect("currency"),
            },
            stock: version,
        })
    }

    #[test]
    fn dedupe_keeps_newest_and_first_of_equals() {
        let ws = vec![
            product("A", 3),
            offer("A", "s", 1),
            product("A", 5),
            product("A", 4),
            offer("A", "s", 1),
            product("B", 1),
        ];
        let (kept, dropped) = dedupe_newest(&ws);
        assert_eq!(dropped, 3);
        assert_eq!(kept.len(), 3);
        assert!(std::ptr::eq(kept[0], &ws[2]));
        assert!(std::ptr::eq(kept[1], &ws[1]));
        assert!(std::ptr::eq(kept[2], &ws[5]));
    }

    #[test]
    fn fingerprints_separate_fields_and_kinds() {
        // Same key, other version and payload: same fingerprint.
        assert_eq!(
            key_fingerprint(&offer("A", "s", 1)),
            key_fingerprint(&offer("A", "s", 9))
        );
        assert_eq!(
            key_fingerprint(&product("A", 1)),
            key_fingerprint(&product("A", 2))
        );
        let deleted = Write::ProductDeleted {
            id: ProductId::parse("A").expect("id"),
            version: 3,
        };
        assert_eq!(key_fingerprint(&product("A", 1)), key_fingerprint(&deleted));
        // A product and an offer never share a key; nor do keys whose fields only differ in
        // where one field ends and the next begins.
        assert_ne!(
            key_fingerprint(&product("A", 1)),
            key_fingerprint(&offer("A", "s", 1))
        );
        assert_ne!(
            key_fingerprint(&offer("AB", "C", 1)),
            key_fingerprint(&offer("A", "BC", 1))
        );
        assert_ne!(
            key_fingerprint(&offer("A", "s", 1)),
            key_fingerprint(&offer("B", "s", 1))
        );
    }

    #[test]
    fn backoff_grows_to_the_cap() {
        let b = Backoff {
            base: Duration::from_millis(10),
            cap: Duration::from_millis(100),
        };
        assert_eq!(b.ceiling(0), Duration::from_millis(10));
        assert_eq!(b.ceiling(3), Duration::from_millis(80));
        assert_eq!(b.ceiling(4), Duration::from_millis(100));
        assert_eq!(b.ceiling(1000), Duration::from_millis(100));
        for attempt in 0..40 {
            assert!(b.delay(attempt) <= b.ceiling(attempt));
        }
    }

    proptest! {
        #[test]
        fn dedupe_is_the_max_per_key(versions in prop::collection::vec((0u8..6, 0u64..20), 0..80)) {
            let ws: Vec<Write> = versions
                .iter()
                .map(|(k, v)| if k % 2 == 0 { product(&format!("P{k}"), *v) } else { offer("P0", &format!("s{k}"), *v) })
                .collect();
            let (kept, dropped) = dedupe_newest(&ws);
            prop_assert_eq!(kept.len() + dropped, ws.len());
            let mut max: HashMap<WriteKey, u64> = HashMap::new();
            for w in &ws {
                let e = max.entry(w.key()).or_insert(0);
                *e = (*e).max(w.version());
            }
            prop_assert_eq!(kept.len(), max.len());
            for w in kept {
                prop_assert_eq!(Some(&w.version()), max.get(&w.key()));
            }
        }

        #[test]
        fn fingerprints_are_equal_exactly_when_keys_are(
            a in ("[A-Z0-9]{1,4}", "[a-z0-9]{0,4}", any::<bool>()),
            b in ("[A-Z0-9]{1,4}", "[a-z0-9]{0,4}", any::<bool>()),
        ) {
            let make = |(id, sku, is_offer): &(String, String, bool)| {
                if *is_offer && !sku.is_empty() { offer(id, sku, 1) } else { product(id, 1) }
            };
            let (wa, wb) = (make(&a), make(&b));
            prop_assert_eq!(wa.key() == wb.key(), key_fingerprint(&wa) == key_fingerprint(&wb));
        }
    }
}
