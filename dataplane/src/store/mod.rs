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

/// Why a store operation failed. The serving path turns these into 503s; writers retry them.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend did not answer in time or refused for load; worth retrying.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A stored item could not be decoded; the item is corrupt or from an incompatible writer.
    #[error("corrupt item for {key}: {reason}")]
    Corrupt {
        /// Which item.
        key: String,
        /// What was wrong.
        reason: String,
    },
    /// Any other backend failure, with context.
    #[error("store error: {0}")]
    Backend(String),
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
