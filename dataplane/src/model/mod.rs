//! Domain model: ids, countries, offers, products and the events of docs/events.md.
//!
//! Everything that crosses a boundary (Kafka, NDJSON, HTTP paths, store rows) is parsed here into
//! validated types, so the rest of the data plane never re-checks an id or a country.

mod event;
mod ids;
mod offer;
mod product;

pub use event::{Event, EventError, MAX_PRODUCT_BYTES, MAX_VERSION, Write, WriteKey};
pub use ids::{Country, MAX_ID_LEN, MAX_SKU_LEN, MerchantId, ProductId, truncate};
pub use offer::{Currency, Offer, OfferKey, Price};
pub use product::ProductDoc;

/// A field that failed validation, with a message a client can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct ValidationError {
    /// Which field, in the words of the contract (`product id`, `country`, ...).
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl ValidationError {
    /// Builds an error for `field`.
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}
