//! The table layout of docs/storage.md as pure functions: keys, items and their decoding.
//!
//! One item per product (`sk = "product"`) and one per offer
//! (`sk = "offer#<country>#<merchant>#<sku>"`), all under the product id as partition key, so a
//! product with its offers in one country is one Query. Every write is a whole-item put: a delete
//! puts a tombstone (version, `t = true`, no body) so a late older write cannot resurrect the item.

use std::collections::HashMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use bytes::Bytes;

use crate::model::{Country, MerchantId, Offer, OfferKey, ProductId, Write, WriteKey};
use crate::store::StoreError;

/// Partition key attribute: the product id (string).
pub const PK: &str = prapi_common::table::PARTITION_KEY;
/// Sort key attribute (string): [`PRODUCT_SK`] or `offer#<country>#<merchant>#<sku>`.
pub const SK: &str = prapi_common::table::SORT_KEY;
/// Version of the last write (number).
pub const VERSION: &str = "v";
/// Body bytes (binary): the product document or the standard offer body. Absent on tombstones.
pub const BODY: &str = "b";
/// Present (boolean true) on tombstones.
pub const TOMBSTONE: &str = "t";

/// Sort key of the product item.
pub const PRODUCT_SK: &str = "product";
/// Prefix of every offer sort key.
pub const OFFER_PREFIX: &str = "offer#";

/// One DynamoDB item.
pub type Item = HashMap<String, AttributeValue>;

/// Sort key prefix of the offers of one country: `offer#de#`.
pub fn offer_country_prefix(country: Country) -> String {
    format!("{OFFER_PREFIX}{}#", country.as_str())
}

/// The sort key of an offer. Merchant ids cannot contain `#` and countries are two letters, so the
/// SKU is everything after the third `#` even when it contains `#` itself.
pub fn offer_sk(key: &OfferKey) -> String {
    format!(
        "{OFFER_PREFIX}{}#{}#{}",
        key.country.as_str(),
        key.merchant_id.as_str(),
        key.sku
    )
}

/// Partition and sort key of a write key.
pub fn key_strings(key: &WriteKey) -> (&str, String) {
    match key {
        WriteKey::Product(id) => (id.as_str(), PRODUCT_SK.to_owned()),
        WriteKey::Offer(k) => (k.product_id.as_str(), offer_sk(k)),
    }
}

/// The primary key attributes of a write key (for GetItem and BatchGetItem).
pub fn key_item(key: &WriteKey) -> Item {
    let (pk, sk) = key_strings(key);
    HashMap::from([
        (PK.to_owned(), AttributeValue::S(pk.to_owned())),
        (SK.to_owned(), AttributeValue::S(sk)),
    ])
}

/// The full item a write puts.
pub fn write_item(write: &Write) -> Item {
    let mut item = key_item(&write.key());
    item.insert(
        VERSION.to_owned(),
        AttributeValue::N(write.version().to_string()),
    );
    match write {
        Write::Product { body, .. } => {
            item.insert(BODY.to_owned(), AttributeValue::B(Blob::new(body.to_vec())));
        }
        Write::Offer(o) => {
            item.insert(
                BODY.to_owned(),
                AttributeValue::B(Blob::new(o.encode_body())),
            );
        }
        Write::ProductDeleted { .. } | Write::OfferDeleted { .. } => {
            item.insert(TOMBSTONE.to_owned(), AttributeValue::Bool(true));
        }
    }
    item
}

/// Parses the key attributes of an item back into a write key.
pub fn parse_key(item: &Item) -> Result<WriteKey, StoreError> {
    let pk = string_attr(item, PK, "?")?;
    let sk = string_attr(item, SK, pk)?;
    let corrupt = |reason: String| StoreError::Corrupt {
        key: format!("{pk}/{sk}"),
        reason,
    };
    let product_id = ProductId::parse(pk).map_err(|e| corrupt(e.to_string()))?;
    if sk == PRODUCT_SK {
        return Ok(WriteKey::Product(product_id));
    }
    let rest = sk
        .strip_prefix(OFFER_PREFIX)
        .ok_or_else(|| corrupt("sort key is neither product nor offer#...".into()))?;
    let mut parts = rest.splitn(3, '#');
    let (Some(country), Some(merchant), Some(sku)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(corrupt(
            "offer sort key needs country, merchant and sku".into(),
        ));
    };
    let country = Country::parse(country).map_err(|e| corrupt(e.to_string()))?;
    let merchant_id = MerchantId::parse(merchant).map_err(|e| corrupt(e.to_string()))?;
    OfferKey::validate_sku(sku).map_err(|e| corrupt(e.to_string()))?;
    Ok(WriteKey::Offer(OfferKey {
        product_id,
        country,
        merchant_id,
        sku: sku.to_owned(),
    }))
}

/// The version attribute of an item.
pub fn parse_version(item: &Item) -> Result<u64, StoreError> {
    let pk = string_attr(item, PK, "?").unwrap_or("?");
    let sk = string_attr(item, SK, pk).unwrap_or("?");
    match item.get(VERSION) {
        Some(AttributeValue::N(n)) => n.parse().map_err(|_| StoreError::Corrupt {
            key: format!("{pk}/{sk}"),
            reason: format!("version {n:?} is not an unsigned integer"),
        }),
        _ => Err(StoreError::Corrupt {
            key: format!("{pk}/{sk}"),
            reason: "version attribute missing".into(),
        }),
    }
}

/// Whether the item is a tombstone (reads treat it as absent).
pub fn is_tombstone(item: &Item) -> bool {
    matches!(item.get(TOMBSTONE), Some(AttributeValue::Bool(true)))
}

/// What one stored item means to a reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A live product.
    Product {
        /// Version of the stored write.
        version: u64,
        /// Document bytes.
        body: Bytes,
    },
    /// A live offer.
    Offer(Offer),
    /// A tombstone of either kind: absent for readers.
    Tombstone,
}

/// Decodes one item read from the table.
pub fn decode(item: &Item) -> Result<Decoded, StoreError> {
    let key = parse_key(item)?;
    let version = parse_version(item)?;
    if is_tombstone(item) {
        return Ok(Decoded::Tombstone);
    }
    let corrupt = |reason: &str| {
        let (pk, sk) = key_strings(&key);
        StoreError::Corrupt {
            key: format!("{pk}/{sk}"),
            reason: reason.to_owned(),
        }
    };
    let Some(AttributeValue::B(body)) = item.get(BODY) else {
        return Err(corrupt("live item without a binary body"));
    };
    match &key {
        WriteKey::Product(_) => Ok(Decoded::Product {
            version,
            body: Bytes::copy_from_slice(body.as_ref()),
        }),
        WriteKey::Offer(k) => {
            let offer = Offer::decode_body(&k.product_id, k.country, body.as_ref())
                .map_err(|e| corrupt(&format!("offer body: {e}")))?;
            if offer.key != *k {
                return Err(corrupt("offer body does not match its sort key"));
            }
            Ok(Decoded::Offer(offer))
        }
    }
}

fn string_attr<'a>(item: &'a Item, name: &str, pk: &str) -> Result<&'a str, StoreError> {
    match item.get(name) {
        Some(AttributeValue::S(s)) => Ok(s),
        _ => Err(StoreError::Corrupt {
            key: pk.to_owned(),
            reason: format!("attribute {name} missing or not a string"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Currency, Price};
    use proptest::prelude::*;

    fn offer(sku: &str, version: u64) -> Offer {
        Offer {
            key: OfferKey {
                product_id: ProductId::parse("P1").expect("id"),
                country: Country::parse("de").expect("country"),
                merchant_id: MerchantId::parse("m-1").expect("merchant"),
                sku: sku.into(),
            },
            version,
            price: Price {
                amount: 1999,
                currency: Currency::parse("EUR").expect("currency"),
            },
            stock: 2,
        }
    }

    #[test]
    fn items_round_trip_and_tombstones_read_as_absent() {
        let p = Write::Product {
            id: ProductId::parse("P1").expect("id"),
            version: 7,
            body: Bytes::from_static(br#"{"id":"P1","version":7}"#),
        };
        let item = write_item(&p);
        assert_eq!(item.get(SK), Some(&AttributeValue::S("product".into())));
        assert_eq!(
            decode(&item).expect("decode"),
            Decoded::Product {
                version: 7,
                body: Bytes::from_static(br#"{"id":"P1","version":7}"#)
            }
        );
        let o = offer("P1-40#x", 3);
        let item = write_item(&Write::Offer(o.clone()));
        assert_eq!(
            item.get(SK),
            Some(&AttributeValue::S("offer#de#m-1#P1-40#x".into()))
        );
        assert_eq!(decode(&item).expect("decode"), Decoded::Offer(o.clone()));
        let del = write_item(&Write::OfferDeleted {
            key: o.key.clone(),
            version: 9,
        });
        assert!(is_tombstone(&del));
        assert!(!del.contains_key(BODY));
        assert_eq!(parse_version(&del).expect("version"), 9);
        assert_eq!(decode(&del).expect("decode"), Decoded::Tombstone);
    }

    #[test]
    fn corrupt_items_are_errors_with_the_key() {
        let mut item = write_item(&Write::Offer(offer("S", 1)));
        item.insert(VERSION.into(), AttributeValue::N("-1".into()));
        assert!(
            matches!(decode(&item), Err(StoreError::Corrupt { key, .. }) if key == "P1/offer#de#m-1#S")
        );
        let mut item = write_item(&Write::Offer(offer("S", 1)));
        item.insert(SK.into(), AttributeValue::S("offer#de#m1".into()));
        assert!(matches!(decode(&item), Err(StoreError::Corrupt { .. })));
        let mut item = write_item(&Write::Offer(offer("S", 1)));
        item.remove(BODY);
        assert!(matches!(decode(&item), Err(StoreError::Corrupt { .. })));
        let mut item = write_item(&Write::Offer(offer("S", 1)));
        item.insert(SK.into(), AttributeValue::S("offer#de#m-1#T".into()));
        assert!(matches!(decode(&item), Err(StoreError::Corrupt { .. })));
    }

    proptest! {
        #[test]
        fn offer_keys_round_trip(
            merchant in "[A-Za-z0-9._-]{1,64}",
            sku in "[^\\p{Cc}]{1,40}",
            country in prop::sample::select(vec!["de", "at", "fr", "nl"]),
        ) {
            let key = WriteKey::Offer(OfferKey {
                product_id: ProductId::parse("P.1_x-2").expect("id"),
                country: Country::parse(country).expect("country"),
                merchant_id: MerchantId::parse(&merchant).expect("merchant"),
                sku,
            });
            prop_assert_eq!(parse_key(&key_item(&key)).expect("parse"), key.clone());
            // Offers of one country sort together, below the product item.
            let (_, sk) = key_strings(&key);
            prop_assert!(sk.starts_with(&offer_country_prefix(Country::parse(country).expect("country"))));
            prop_assert!(sk.as_str() < PRODUCT_SK);
        }
    }
}
