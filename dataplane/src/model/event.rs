//! Events of docs/events.md (Kafka values and NDJSON lines) and the store writes they become.

use bytes::Bytes;
use serde_json::{Map, Value};

use super::{Country, Currency, MerchantId, Offer, OfferKey, Price, ProductId, ValidationError};

/// Highest version an event may carry: 2^63 − 1. A write is applied only above the stored
/// version, so a key written at the very top of the range could never change again; this leaves
/// room above any real version (timestamps, sequence numbers) and fits a signed 64-bit integer,
/// which is what many producers (Java's `long`) have.
pub const MAX_VERSION: u64 = i64::MAX as u64;

/// Largest product document, in bytes as stored (compact JSON with `id` and `version` set).
/// DynamoDB refuses items over 400 KB (409,600 bytes, attribute names included); a product item
/// is the document plus its keys and version, well under 9,600 bytes. An event over it would fail
/// its write on every retry and stall its partition, so it is refused when parsed.
pub const MAX_PRODUCT_BYTES: usize = 400_000;

/// Why a message could not be turned into an event. Never fatal to a stream: callers count,
/// log and dead-letter it.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// Not JSON at all, or not an object.
    #[error("not a JSON object: {0}")]
    Json(#[from] serde_json::Error),
    /// `type` is missing or unknown.
    #[error("unknown event type {0:?} (expected product, offer, product_deleted or offer_deleted)")]
    UnknownType(String),
    /// A field is missing or invalid.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

/// A validated event.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A product was created or changed; `document` is the `product` object with `id` and `version` set.
    Product {
        /// Product id.
        id: ProductId,
        /// Version of this write.
        version: u64,
        /// The product document as it will be stored and served.
        document: Map<String, Value>,
    },
    /// An offer was created or changed.
    Offer(Offer),
    /// A product was deleted (offers are deleted by their own events).
    ProductDeleted {
        /// Product id.
        id: ProductId,
        /// Version of the delete.
        version: u64,
    },
    /// An offer was deleted.
    OfferDeleted {
        /// The offer's key.
        key: OfferKey,
        /// Version of the delete.
        version: u64,
    },
}

/// A versioned write a store applies (docs/storage.md): newer versions win, deletes leave
/// tombstones.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Store the product document `body` (JSON bytes) at `version`.
    Product {
        /// Product id.
        id: ProductId,
        /// Version.
        version: u64,
        /// Product document bytes.
        body: Bytes,
    },
    /// Delete the product at `version` (tombstone).
    ProductDeleted {
        /// Product id.
        id: ProductId,
        /// Version.
        version: u64,
    },
    /// Store an offer.
    Offer(Offer),
    /// Delete an offer at `version` (tombstone).
    OfferDeleted {
        /// The offer's key.
        key: OfferKey,
        /// Version.
        version: u64,
    },
}

/// The key a write's version is ordered by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WriteKey {
    /// The product item.
    Product(ProductId),
    /// One offer item.
    Offer(OfferKey),
}

impl Write {
    /// The key whose version order this write takes part in.
    pub fn key(&self) -> WriteKey {
        match self {
            Write::Product { id, .. } | Write::ProductDeleted { id, .. } => {
                WriteKey::Product(id.clone())
            }
            Write::Offer(o) => WriteKey::Offer(o.key.clone()),
            Write::OfferDeleted { key, .. } => WriteKey::Offer(key.clone()),
        }
    }

    /// The product this write belongs to (partitioning and lanes go by it).
    pub fn product_id(&self) -> &ProductId {
        match self {
            Write::Product { id, .. } | Write::ProductDeleted { id, .. } => id,
            Write::Offer(o) => &o.key.product_id,
            Write::OfferDeleted { key, .. } => &key.product_id,
        }
    }

    /// The version of this write.
    pub fn version(&self) -> u64 {
        match self {
            Write::Product { version, .. }
            | Write::ProductDeleted { version, .. }
            | Write::OfferDeleted { version, .. } => *version,
            Write::Offer(o) => o.version,
        }
    }

    /// The country of an offer write; `None` for product writes (they go to every market group).
    pub fn country(&self) -> Option<Country> {
        match self {
            Write::Offer(o) => Some(o.key.country),
            Write::OfferDeleted { key, .. } => Some(key.country),
            _ => None,
        }
    }
}

impl Event {
    /// Parses and validates one event from JSON bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, EventError> {
        let value: Value = serde_json::from_slice(bytes)?;
        let Value::Object(mut obj) = value else {
            return Err(ValidationError::new("event", "must be a JSON object").into());
        };
        let kind = match obj.get("type") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => return Err(EventError::UnknownType(other.to_string())),
            None => return Err(ValidationError::new("type", "is missing").into()),
        };
        match kind.as_str() {
            "product" => {
                let id = ProductId::parse(str_field(&obj, "id")?)?;
                let version = version(&obj)?;
                let Some(Value::Object(mut document)) = obj.remove("product") else {
                    return Err(ValidationError::new("product", "must be a JSON object").into());
                };
                match document.get("id") {
                    None => {}
                    Some(Value::String(s)) if s == id.as_str() => {}
                    Some(other) => {
                        return Err(ValidationError::new(
                            "product.id",
                            format!("{other} does not match the event id {id:?}"),
                        )
                        .into());
                    }
                }
                document.insert("id".into(), Value::String(id.to_string()));
                document.insert("version".into(), Value::from(version));
                let size = stored_size(&document);
                if size > MAX_PRODUCT_BYTES {
                    return Err(ValidationError::new(
                        "product",
                        format!(
                            "is {size} bytes as stored; the most a product document may take is {MAX_PRODUCT_BYTES}"
                        ),
                    )
                    .into());
                }
                Ok(Event::Product {
                    id,
                    version,
                    document,
                })
            }
            "product_deleted" => Ok(Event::ProductDeleted {
                id: ProductId::parse(str_field(&obj, "id")?)?,
                version: version(&obj)?,
            }),
            "offer" => {
                let key = offer_key(&obj)?;
                let price = obj.get("price").and_then(Value::as_object).ok_or_else(|| {
                    ValidationError::new("price", "must be an object with amount and currency")
                })?;
                let amount = match price.get("amount") {
                    Some(Value::Number(n)) => n.as_i64().filter(|a| *a >= 0),
                    _ => None,
                }
                .ok_or_else(|| {
                    ValidationError::new(
                        "price.amount",
                        "must be a non-negative integer (minor units)",
                    )
                })?;
                let currency = Currency::parse(
                    price
                        .get("currency")
                        .and_then(Value::as_str)
                        .ok_or_else(|| ValidationError::new("price.currency", "is missing"))?,
                )?;
                let stock = match obj.get("stock") {
                    Some(Value::Number(n)) => n.as_u64(),
                    _ => None,
                }
                .ok_or_else(|| ValidationError::new("stock", "must be a non-negative integer"))?;
                Ok(Event::Offer(Offer {
                    key,
                    version: version(&obj)?,
                    price: Price { amount, currency },
                    stock,
                }))
            }
            "offer_deleted" => Ok(Event::OfferDeleted {
                key: offer_key(&obj)?,
                version: version(&obj)?,
            }),
            _ => Err(EventError::UnknownType(kind)),
        }
    }

    /// The store write this event becomes.
    pub fn into_write(self) -> Write {
        match self {
            Event::Product {
                id,
                version,
                document,
            } => {
                // Serializing a Map of Values cannot fail.
                let body = serde_json::to_vec(&document).unwrap_or_default();
                Write::Product {
                    id,
                    version,
                    body: Bytes::from(body),
                }
            }
            Event::Offer(o) => Write::Offer(o),
            Event::ProductDeleted { id, version } => Write::ProductDeleted { id, version },
            Event::OfferDeleted { key, version } => Write::OfferDeleted { key, version },
        }
    }

    /// The product id (Kafka key) of this event.
    pub fn product_id(&self) -> &ProductId {
        match self {
            Event::Product { id, .. } | Event::ProductDeleted { id, .. } => id,
            Event::Offer(o) => &o.key.product_id,
            Event::OfferDeleted { key, .. } => &key.product_id,
        }
    }
}

fn str_field<'a>(
    obj: &'a Map<String, Value>,
    field: &'static str,
) -> Result<&'a str, ValidationError> {
    obj.get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| ValidationError::new(field, "must be a string"))
}

fn version(obj: &Map<String, Value>) -> Result<u64, ValidationError> {
    let version = match obj.get("version") {
        Some(Value::Number(n)) => n.as_u64(),
        _ => None,
    }
    .ok_or_else(|| ValidationError::new("version", "must be a non-negative integer"))?;
    if version > MAX_VERSION {
        return Err(ValidationError::new(
            "version",
            format!("{version} is above the highest version, {MAX_VERSION} (2^63 - 1)"),
        ));
    }
    Ok(version)
}

/// Bytes of `document` as [`Event::into_write`] stores it, counted without building it.
fn stored_size(document: &Map<String, Value>) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a Map of Values to a sink that never fails cannot fail.
    let _ = serde_json::to_writer(&mut count, document);
    count.0
}

fn offer_key(obj: &Map<String, Value>) -> Result<OfferKey, ValidationError> {
    let sku = str_field(obj, "sku")?;
    OfferKey::validate_sku(sku)?;
    Ok(OfferKey {
        product_id: ProductId::parse(str_field(obj, "product_id")?)?,
        country: Country::parse(str_field(obj, "country")?)?,
        merchant_id: MerchantId::parse(str_field(obj, "merchant_id")?)?,
        sku: sku.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(line: &str) -> String {
        match Event::parse(line.as_bytes()) {
            Err(EventError::Invalid(v)) => v.field.to_string(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn parses_the_four_kinds() {
        let p = Event::parse(
            br#"{"type":"product","id":"P1","version":3,"product":{"name":"Air","extra":{"x":1}}}"#,
        )
        .expect("product");
        let Write::Product { body, version, .. } = p.into_write() else {
            panic!("not a product write")
        };
        assert_eq!(version, 3);
        assert_eq!(
            &body[..],
            br#"{"name":"Air","extra":{"x":1},"id":"P1","version":3}"#
        );

        let o = Event::parse(br#"{"type":"offer","product_id":"P1","merchant_id":"m1","country":"DE","sku":"P1-40","version":5,"price":{"amount":5995,"currency":"EUR"},"stock":3}"#)
            .expect("offer");
        let Event::Offer(o) = o else {
            panic!("not an offer")
        };
        assert_eq!(o.key.country.as_str(), "de");
        assert_eq!(o.price.amount, 5995);

        assert!(matches!(
            Event::parse(br#"{"type":"product_deleted","id":"P1","version":4}"#),
            Ok(Event::ProductDeleted { version: 4, .. })
        ));
        assert!(matches!(
            Event::parse(br#"{"type":"offer_deleted","product_id":"P1","merchant_id":"m1","country":"de","sku":"P1-40","version":6}"#),
            Ok(Event::OfferDeleted { version: 6, .. })
        ));
    }

    /// Events the store could not hold, or whose key could never change again, are refused when
    /// parsed (so they are dead-lettered, never retried against the store).
    #[test]
    fn limits_of_size_and_version() {
        let product = |name_len: usize, version: u64| {
            format!(
                r#"{{"type":"product","id":"P1","version":{version},"product":{{"name":"{}"}}}}"#,
                "x".repeat(name_len)
            )
        };
        // `{"name":"…","id":"P1","version":1}` is the stored document: 32 bytes around the name.
        let overhead = r#"{"name":"","id":"P1","version":1}"#.len();
        assert!(Event::parse(product(MAX_PRODUCT_BYTES - overhead, 1).as_bytes()).is_ok());
        match Event::parse(product(MAX_PRODUCT_BYTES - overhead + 1, 1).as_bytes()) {
            Err(EventError::Invalid(v)) => {
                assert_eq!(v.field, "product");
                assert!(v.to_string().contains("400001 bytes"), "{v}");
            }
            other => panic!("oversized product accepted: {other:?}"),
        }
        assert!(Event::parse(product(1, MAX_VERSION).as_bytes()).is_ok());
        for v in [MAX_VERSION + 1, u64::MAX] {
            assert_eq!(field_of(&product(1, v)), "version", "version {v}");
            assert_eq!(
                field_of(&format!(
                    r#"{{"type":"product_deleted","id":"P1","version":{v}}}"#
                )),
                "version"
            );
        }
    }

    #[test]
    fn rejects_bad_events_with_the_field() {
        assert!(matches!(
            Event::parse(b"not json"),
            Err(EventError::Json(_))
        ));
        assert!(matches!(
            Event::parse(br#"{"type":"nope"}"#),
            Err(EventError::UnknownType(_))
        ));
        assert_eq!(field_of(r#"[1]"#), "event");
        assert_eq!(field_of(r#"{"id":"P1"}"#), "type");
        assert_eq!(
            field_of(r#"{"type":"product","id":"P 1","version":1,"product":{}}"#),
            "product id"
        );
        assert_eq!(
            field_of(r#"{"type":"product","id":"P1","version":-1,"product":{}}"#),
            "version"
        );
        assert_eq!(
            field_of(r#"{"type":"product","id":"P1","version":1.5,"product":{}}"#),
            "version"
        );
        assert_eq!(
            field_of(r#"{"type":"product","id":"P1","version":1,"product":[]}"#),
            "product"
        );
        assert_eq!(
            field_of(r#"{"type":"product","id":"P1","version":1,"product":{"id":"P2"}}"#),
            "product.id"
        );
        let offer = |patch: &str| {
            format!(
                r#"{{"type":"offer","product_id":"P1","merchant_id":"m1","country":"de","sku":"S","version":1,"price":{{"amount":1,"currency":"EUR"}},"stock":0,{patch}}}"#
            )
        };
        assert!(Event::parse(offer(r#""x":0"#).as_bytes()).is_ok());
        assert_eq!(field_of(&offer(r#""country":"xx""#)), "country");
        assert_eq!(field_of(&offer(r#""merchant_id":"m/1""#)), "merchant id");
        assert_eq!(field_of(&offer(r#""stock":-1"#)), "stock");
        assert_eq!(
            field_of(&offer(r#""price":{"amount":-5,"currency":"EUR"}"#)),
            "price.amount"
        );
        assert_eq!(
            field_of(&offer(r#""price":{"amount":5.5,"currency":"EUR"}"#)),
            "price.amount"
        );
        assert_eq!(
            field_of(&offer(r#""price":{"amount":5,"currency":"EURO"}"#)),
            "price.currency"
        );
        assert_eq!(field_of(&offer(r#""sku":"""#)), "sku");
    }
}
