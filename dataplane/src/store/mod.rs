//! Storage behind the caches: one trait, an embedded implementation (local mode, tests) and a
//! DynamoDB one (clusters). Both keep the version rules of docs/storage.md.

use async_trait::async_trait;
use bytes::Bytes;

use crate::model::{Country, Offer, ProductId, Write};

pub mod dynamodb;
pub mod embedded;

/// A product document as stored: the JSON body (with `id` and `version`) and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredProduct {
    /// Version of the write that produced `body`.
    pub version: u64,
    /// The product document, JSON bytes.
    pub body: Bytes,
}

/// A product with its offers in one country: what one product-offers read returns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProductOffers {
    /// The product, if it exists (not deleted).
    pub product: Option<StoredProduct>,
    /// Live offers in the country, sorted by (merchant_id, sku).
    pub offers: Vec<Offer>,
}

/// Any error, boxed: what a backend failure carries as its cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a store operation failed. The serving path turns these into 503s; writers retry them.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend did not answer in time or refused for load; worth retrying.
    #[error("store unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// A stored item could not be decoded; the item is corrupt or from an incompatible writer.
    #[error("corrupt item for {key}: {reason}")]
    Corrupt {
        /// Which item.
        key: String,
        /// What was wrong.
        reason: String,
    },
    /// Any other backend failure.
    #[error("store error: {0}")]
    Backend(#[source] BoxError),
}

impl StoreError {
    /// A backend failure while doing `context`, caused by `source`.
    pub fn backend(context: impl Into<String>, source: impl Into<BoxError>) -> StoreError {
        StoreError::Backend(Box::new(Caused::new(context, source)))
    }

    /// A failure worth retrying while doing `context`, caused by `source`.
    pub fn unavailable(context: impl Into<String>, source: impl Into<BoxError>) -> StoreError {
        StoreError::Unavailable(Box::new(Caused::new(context, source)))
    }
}

/// What was being done when `source` failed. Its message carries the whole chain of causes, as
/// logs and problem details show only the top message.
#[derive(Debug)]
pub struct Caused {
    context: String,
    source: BoxError,
}

impl Caused {
    /// `source`, while doing `context`.
    pub fn new(context: impl Into<String>, source: impl Into<BoxError>) -> Caused {
        Caused {
            context: context.into(),
            source: source.into(),
        }
    }
}

impl std::fmt::Display for Caused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.context, self.source)?;
        let mut next = self.source.source();
        while let Some(e) = next {
            write!(f, ": {e}")?;
            next = e.source();
        }
        Ok(())
    }
}

impl std::error::Error for Caused {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.source.as_ref())
    }
}

/// What a batch of writes did: each write is either applied or ignored as older than what is stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// Writes that changed the store.
    pub applied: usize,
    /// Writes skipped because an equal or newer version (or tombstone) was already stored.
    pub stale: usize,
}

/// The storage contract of the data plane.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The product document, or `None` when unknown or deleted.
    async fn product(&self, id: &ProductId) -> Result<Option<StoredProduct>, StoreError>;

    /// Live offers of the product in `country`, sorted by (merchant_id, sku).
    async fn offers(&self, id: &ProductId, country: Country) -> Result<Vec<Offer>, StoreError>;

    /// Product and offers in `country` in one read.
    async fn product_offers(
        &self,
        id: &ProductId,
        country: Country,
    ) -> Result<ProductOffers, StoreError>;

    /// Applies a batch of versioned writes. A write older than (or equal to) the stored version of
    /// its key, including a tombstone's, is ignored. Either the whole batch is durable when this
    /// returns `Ok`, or the caller must retry it (applying twice is harmless).
    async fn apply(&self, writes: &[Write]) -> Result<ApplyOutcome, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("disk full")]
    struct DiskFull;

    #[derive(Debug, thiserror::Error)]
    #[error("write failed")]
    struct WriteFailed(#[source] DiskFull);

    #[test]
    fn a_backend_error_says_the_whole_chain_and_keeps_its_cause() {
        let e = StoreError::backend("opening data/prapi.redb", WriteFailed(DiskFull));
        assert_eq!(
            e.to_string(),
            "store error: opening data/prapi.redb: write failed: disk full"
        );
        let caused = std::error::Error::source(&e).expect("the context");
        let cause = caused.source().expect("the cause");
        assert!(cause.downcast_ref::<WriteFailed>().is_some());
        assert!(cause.source().is_some_and(|c| c.is::<DiskFull>()));
    }

    #[test]
    fn an_unavailable_store_is_told_apart_from_a_broken_one() {
        let e = StoreError::unavailable("reading", "throttled");
        assert!(matches!(e, StoreError::Unavailable(_)));
        assert_eq!(e.to_string(), "store unavailable: reading: throttled");
    }
}
