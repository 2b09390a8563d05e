//! An in-memory table behind the batched writer, with an optional artificial latency per call:
//! the writer's tests and benchmarks run against it to measure the pipeline without a network.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use super::metrics::WriterMetrics;
use super::writer::{BatchSink, BatchWriter, SinkError, WriterConfig};
use crate::model::{Country, Offer, ProductId, Write, WriteKey};
use crate::store::{ApplyOutcome, ProductOffers, Store, StoreError, StoredProduct};

/// Waits `delay`, to within a few microseconds, the way a network reply arrives.
///
/// tokio's timer fires on whole-millisecond ticks and rounds deadlines up, so a plain 5 ms
/// `tokio::time::sleep` took 6.1 ms on average here, and finishing the wait on a blocking thread
/// added a thread hop that grew to 0.4 ms under load: a fake table built on either is slower than
/// the latency it claims, and the writer's benchmark would measure the timer. A timerfd is
/// precise and wakes the task through the runtime's epoll, as a DynamoDB response on a socket
/// does. Elsewhere (or if the timerfd cannot be made) it falls back to tokio's timer.
async fn call_delay(delay: Duration) {
    #[cfg(target_os = "linux")]
    if timerfd_delay(delay).await.is_ok() {
        return;
    }
    tokio::time::sleep(delay).await;
}

#[cfg(target_os = "linux")]
async fn timerfd_delay(delay: Duration) -> std::io::Result<()> {
    use rustix::time::{
        Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create,
        timerfd_settime,
    };
    use tokio::io::unix::AsyncFd;

    if delay.is_zero() {
        return Ok(());
    }
    let fd = timerfd_create(
        TimerfdClockId::Monotonic,
        TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
    )?;
    let value = Timespec {
        tv_sec: i64::try_from(delay.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(delay.subsec_nanos()),
    };
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    timerfd_settime(
        &fd,
        TimerfdTimerFlags::empty(),
        &Itimerspec {
            it_interval: zero,
            it_value: value,
        },
    )?;
    // Deprecated because an arbitrary `AsRawFd` may close or swap its descriptor while
    // registered; an `OwnedFd` owned by the `AsyncFd` cannot, and the safe constructor keeps this
    // crate free of `unsafe`.
    #[allow(deprecated)]
    let fd = AsyncFd::with_interest(fd, tokio::io::Interest::READABLE)?;
    loop {
        let mut ready = fd.readable().await?;
        let mut expirations = [0u8; 8];
        match rustix::io::read(ready.get_inner(), &mut expirations) {
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::AGAIN) => ready.clear_ready(),
            Err(e) => return Err(e.into()),
        }
    }
}

/// A table of the latest write per key (tombstones included).
#[derive(Debug, Default)]
pub struct MemoryTable {
    /// A B-tree rather than a hash map: a hash map's resize holds the lock for tens of
    /// milliseconds once it has 100 000s of items (58 ms measured), stalling every call in flight
    /// and making the benchmark measure the fake instead of the writer.
    items: std::sync::Mutex<BTreeMap<WriteKey, Write>>,
    write_delay: Duration,
    lookup_delay: Duration,
    write_calls: AtomicU64,
    write_nanos: AtomicU64,
}

impl MemoryTable {
    /// A table whose write calls take `write_delay` and version lookups `lookup_delay`.
    pub fn new(write_delay: Duration, lookup_delay: Duration) -> Self {
        Self {
            items: std::sync::Mutex::default(),
            write_delay,
            lookup_delay,
            write_calls: AtomicU64::new(0),
            write_nanos: AtomicU64::new(0),
        }
    }

    /// The stored write of `key`.
    pub fn get(&self, key: &WriteKey) -> Option<Write> {
        self.lock().get(key).cloned()
    }

    /// Write calls made so far and their mean duration (delay included): what a benchmark
    /// compares with the nominal delay to see how much of a slowdown is the table's.
    pub fn write_calls(&self) -> (u64, Duration) {
        let calls = self.write_calls.load(Ordering::Relaxed);
        let nanos = self.write_nanos.load(Ordering::Relaxed);
        (
            calls,
            Duration::from_nanos(nanos.checked_div(calls).unwrap_or(0)),
        )
    }

    /// Number of items (tombstones included).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<WriteKey, Write>> {
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl BatchSink for MemoryTable {
    async fn write_batch(&self, writes: &[&Write]) -> Result<Vec<usize>, SinkError> {
        let started = std::time::Instant::now();
        if !self.write_delay.is_zero() {
            call_delay(self.write_delay).await;
        }
        {
            let mut items = self.lock();
            for w in writes {
                // Unconditional, as BatchWriteItem.
                items.insert(w.key(), (*w).clone());
            }
        }
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.write_calls.fetch_add(1, Ordering::Relaxed);
        self.write_nanos.fetch_add(nanos, Ordering::Relaxed);
        Ok(Vec::new())
    }

    async fn stored_versions(
        &self,
        keys: &[&WriteKey],
    ) -> Result<(HashMap<WriteKey, u64>, Vec<usize>), SinkError> {
        if !self.lookup_delay.is_zero() {
            call_delay(self.lookup_delay).await;
        }
        let items = self.lock();
        let found = keys
            .iter()
            .filter_map(|k| items.get(*k).map(|w| ((*k).clone(), w.version())))
            .collect();
        Ok((found, Vec::new()))
    }
}

/// A [`Store`] made of a [`MemoryTable`] and a [`BatchWriter`] over it (or over a layer on it).
pub struct BatchedStore {
    table: Arc<MemoryTable>,
    writer: BatchWriter,
}

impl BatchedStore {
    /// A store over `table`, writing through `sink` (the table itself, or a fault layer on it).
    pub fn new(
        table: Arc<MemoryTable>,
        sink: Arc<dyn BatchSink>,
        config: WriterConfig,
        metrics: Arc<WriterMetrics>,
    ) -> Self {
        Self {
            table,
            writer: BatchWriter::new(sink, config, metrics),
        }
    }

    /// The table.
    pub fn table(&self) -> &Arc<MemoryTable> {
        &self.table
    }

    /// The writer's metrics.
    pub fn metrics(&self) -> &Arc<WriterMetrics> {
        self.writer.metrics()
    }
}

#[async_trait]
impl Store for BatchedStore {
    async fn product(&self, id: &ProductId) -> Result<Option<StoredProduct>, StoreError> {
        Ok(match self.table.get(&WriteKey::Product(id.clone())) {
            Some(Write::Product { version, body, .. }) => Some(StoredProduct { version, body }),
            _ => None,
        })
    }

    async fn offers(&self, id: &ProductId, country: Country) -> Result<Vec<Offer>, StoreError> {
        let items = self.table.lock();
        let mut offers: Vec<Offer> = items
            .values()
            .filter_map(|w| match w {
                Write::Offer(o) if &o.key.product_id == id && o.key.country == country => {
                    Some(o.clone())
                }
                _ => None,
            })
            .collect();
        Offer::sort(&mut offers);
        Ok(offers)
    }

    async fn product_offers(
        &self,
        id: &ProductId,
        country: Country,
    ) -> Result<ProductOffers, StoreError> {
        Ok(ProductOffers {
            product: self.product(id).await?,
            offers: self.offers(id, country).await?,
        })
    }

    async fn apply(&self, writes: &[Write]) -> Result<ApplyOutcome, StoreError> {
        self.writer.write(writes).await
    }
}

#[cfg(test)]
mod tests {
    use super::super::faults::FaultySink;
    use super::super::writer::Backoff;
    use super::*;
    use crate::model::{Currency, MerchantId, OfferKey, Price};
    use bytes::Bytes;

    fn product(id: &str, version: u64) -> Write {
        Write::Product {
            id: ProductId::parse(id).expect("id"),
            version,
            body: Bytes::from(version.to_string()),
        }
    }

    fn offer(id: &str, n: u64, version: u64) -> Write {
        Write::Offer(Offer {
            key: OfferKey {
                product_id: ProductId::parse(id).expect("id"),
                country: Country::parse("de").expect("de"),
                merchant_id: MerchantId::parse("m").expect("m"),
                sku: format!("s{n}"),
            },
            version,
            price: Price {
                amount: 1,
                currency: Currency::parse("EUR").expect("EUR"),
            },
            stock: 1,
        })
    }

    fn fast() -> WriterConfig {
        WriterConfig {
            backoff: Backoff {
                base: Duration::from_micros(100),
                cap: Duration::from_millis(2),
            },
            ..WriterConfig::default()
        }
    }

    #[tokio::test]
    async fn keeps_the_newest_across_batches_and_instances() {
        let table = Arc::new(MemoryTable::default());
        let store = BatchedStore::new(table.clone(), table.clone(), fast(), Arc::default());
        let o = store
            .apply(&[
                product("A", 5),
                product("A", 7),
                product("A", 6),
                offer("A", 1, 1),
            ])
            .await
            .expect("apply");
        assert_eq!((o.applied, o.stale), (2, 2));
        let o = store
            .apply(&[product("A", 6), offer("A", 1, 1), offer("A", 1, 2)])
            .await
            .expect("apply");
        assert_eq!((o.applied, o.stale), (1, 2));
        // A second writer knows nothing cached and asks the table.
        let other = BatchedStore::new(table.clone(), table.clone(), fast(), Arc::default());
        let o = other
            .apply(&[
                product("A", 7),
                Write::ProductDeleted {
                    id: ProductId::parse("A").expect("id"),
                    version: 10,
                },
            ])
            .await
            .expect("apply");
        assert_eq!((o.applied, o.stale), (1, 1));
        let id = ProductId::parse("A").expect("id");
        assert!(store.product(&id).await.expect("read").is_none());
        // The first writer still trusts its cache (7): an older write passes over the other
        // writer's tombstone. This is the two-writer window of docs/storage.md, kept on purpose
        // (the alternative is a read before every write).
        let o = store.apply(&[product("A", 9)]).await.expect("apply");
        assert_eq!((o.applied, o.stale), (1, 0));
        assert_eq!(
            store.product(&id).await.expect("read").map(|p| p.version),
            Some(9)
        );
    }

    #[tokio::test]
    async fn splits_into_calls_of_25_and_retries_faults_until_written() {
        let table = Arc::new(MemoryTable::default());
        let faulty = Arc::new(FaultySink::new(table.clone(), 0.3, 1));
        let metrics = Arc::new(WriterMetrics::default());
        let store = BatchedStore::new(table.clone(), faulty.clone(), fast(), metrics.clone());
        let writes: Vec<Write> = (0..1000).map(|i| offer("B", i, 1)).collect();
        for chunk in writes.chunks(250) {
            store.apply(chunk).await.expect("apply");
        }
        assert_eq!(table.len(), 1000);
        assert_eq!(metrics.items_written.get(), 1000);
        assert!(faulty.throttled() > 0 && faulty.partial() > 0);
        assert_eq!(metrics.retries_for("throttled"), faulty.throttled());
        assert_eq!(metrics.retries_for("unprocessed"), faulty.partial());
        // 40 calls of 25 plus one per fault.
        assert_eq!(
            metrics.calls.get(),
            40 + faulty.throttled() + faulty.partial()
        );
    }

    struct Refusing;

    #[async_trait]
    impl BatchSink for Refusing {
        async fn write_batch(&self, _: &[&Write]) -> Result<Vec<usize>, SinkError> {
            Err(SinkError::Fatal("AccessDeniedException".into()))
        }
        async fn stored_versions(
            &self,
            _: &[&WriteKey],
        ) -> Result<(HashMap<WriteKey, u64>, Vec<usize>), SinkError> {
            Ok((HashMap::new(), Vec::new()))
        }
    }

    #[tokio::test]
    async fn hard_errors_are_returned_not_retried() {
        let table = Arc::new(MemoryTable::default());
        let metrics = Arc::new(WriterMetrics::default());
        let store = BatchedStore::new(table.clone(), Arc::new(Refusing), fast(), metrics.clone());
        let writes: Vec<Write> = (0..30).map(|i| offer("C", i, 1)).collect();
        let err = store.apply(&writes).await.expect_err("refused");
        assert!(
            matches!(&err, StoreError::Backend(e) if e.to_string().contains("AccessDenied")),
            "{err}"
        );
        assert_eq!(
            metrics.hard_errors.get(),
            2,
            "both calls of the batch failed"
        );
        assert_eq!(metrics.items_written.get(), 0);
        assert!(table.is_empty());
    }
}
