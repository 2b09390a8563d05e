//! An in-memory table behind the batched writer, with an optional artificial latency per call:
//! the writer's tests and benchmarks run against it to measure the pipeline without a network.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::metrics::WriterMetrics;
use super::writer::{BatchSink, BatchWriter, SinkError, WriterConfig};
use crate::model::{Country, Offer, ProductId, Write, WriteKey};
use crate::store::{ApplyOutcome, ProductOffers, Store, StoreError, StoredProduct};

/// A table of the latest write per key (tombstones included).
#[derive(Debug, Default)]
pub struct MemoryTable {
    items: std::sync::Mutex<HashMap<WriteKey, Write>>,
    write_delay: Duration,
    lookup_delay: Duration,
}

impl MemoryTable {
    /// A table whose write calls take `write_delay` and version lookups `lookup_delay`.
    pub fn new(write_delay: Duration, lookup_delay: Duration) -> Self {
        Self {
            items: std::sync::Mutex::default(),
            write_delay,
            lookup_delay,
        }
    }

    /// The stored write of `key`.
    pub fn get(&self, key: &WriteKey) -> Option<Write> {
        self.lock().get(key).cloned()
    }

    /// Number of items (tombstones included).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<WriteKey, Write>> {
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl BatchSink for MemoryTable {
    async fn write_batch(&self, writes: &[&Write]) -> Result<Vec<usize>, SinkError> {
        if !self.write_delay.is_zero() {
            tokio::time::sleep(self.write_delay).await;
        }
        let mut items = self.lock();
        for w in writes {
            // Unconditional, as BatchWriteItem.
            items.insert(w.key(), (*w).clone());
        }
        Ok(Vec::new())
    }

    async fn stored_versions(
        &self,
        keys: &[&WriteKey],
    ) -> Result<(HashMap<WriteKey, u64>, Vec<usize>), SinkError> {
        if !self.lookup_delay.is_zero() {
            tokio::time::sleep(self.lookup_delay).await;
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
    use super::*;
    use crate::model::{Currency, MerchantId, OfferKey, Price};
    use crate::updater::faults::FaultySink;
    use crate::updater::writer::Backoff;
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
            matches!(&err, StoreError::Backend(m) if m.contains("AccessDenied")),
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
