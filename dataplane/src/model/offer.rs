//! Offers: a merchant's price and stock for one SKU of a product in one country.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ids::truncate;
use super::{Country, MAX_SKU_LEN, MerchantId, ProductId, ValidationError};

/// An ISO 4217 currency code (three upper-case letters).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    /// Parses a three-letter code; lower case is accepted and upper-cased.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let b = s.as_bytes();
        if b.len() == 3 && b.iter().all(u8::is_ascii_alphabetic) {
            Ok(Self([
                b[0].to_ascii_uppercase(),
                b[1].to_ascii_uppercase(),
                b[2].to_ascii_uppercase(),
            ]))
        } else {
            Err(ValidationError::new(
                "price.currency",
                format!("{:?} is not a three-letter ISO 4217 code", truncate(s)),
            ))
        }
    }

    /// The upper-case code.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A price in minor units (cents).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    /// Amount in minor units; never negative.
    pub amount: i64,
    /// Currency of the amount.
    pub currency: Currency,
}

/// What identifies an offer; versions order writes per key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OfferKey {
    /// The product the offer belongs to.
    pub product_id: ProductId,
    /// Country the offer is sold in.
    pub country: Country,
    /// The selling merchant.
    pub merchant_id: MerchantId,
    /// The SKU (a simple of the product).
    pub sku: String,
}

impl OfferKey {
    /// Validates a SKU: non-empty, at most 128 characters, no control characters.
    pub fn validate_sku(sku: &str) -> Result<(), ValidationError> {
        if sku.is_empty() || sku.chars().count() > MAX_SKU_LEN || sku.chars().any(char::is_control)
        {
            return Err(ValidationError::new(
                "sku",
                format!(
                    "{:?} must be 1-{MAX_SKU_LEN} printable characters",
                    truncate(sku)
                ),
            ));
        }
        Ok(())
    }
}

/// An offer as stored and served. Serializes to the standard offer body of docs/api.md
/// (`merchant_id`, `sku`, `price`, `stock`, `version`); product id and country are implied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// Identity of the offer.
    pub key: OfferKey,
    /// Version of the last write.
    pub version: u64,
    /// Current price.
    pub price: Price,
    /// Units in stock.
    pub stock: u64,
}

#[derive(Serialize, Deserialize)]
struct OfferBody<'a> {
    merchant_id: std::borrow::Cow<'a, str>,
    sku: std::borrow::Cow<'a, str>,
    price: Price,
    stock: u64,
    version: u64,
}

impl Offer {
    /// The standard body of one offer, as JSON (docs/api.md).
    pub fn to_body_json(&self) -> serde_json::Value {
        serde_json::json!({
            "merchant_id": self.key.merchant_id,
            "sku": self.key.sku,
            "price": self.price,
            "stock": self.stock,
            "version": self.version,
        })
    }

    /// Serializes the standard body (used by stores to keep offers as bytes).
    pub fn encode_body(&self) -> Vec<u8> {
        let body = OfferBody {
            merchant_id: self.key.merchant_id.as_str().into(),
            sku: self.key.sku.as_str().into(),
            price: self.price,
            stock: self.stock,
            version: self.version,
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }

    /// Reads back a body written by [`Offer::encode_body`] for the given product and country.
    pub fn decode_body(
        product_id: &ProductId,
        country: Country,
        bytes: &[u8],
    ) -> Result<Self, serde_json::Error> {
        let b: OfferBody<'_> = serde_json::from_slice(bytes)?;
        let merchant_id = MerchantId::parse(&b.merchant_id).map_err(serde::de::Error::custom)?;
        Ok(Offer {
            key: OfferKey {
                product_id: product_id.clone(),
                country,
                merchant_id,
                sku: b.sku.into_owned(),
            },
            version: b.version,
            price: b.price,
            stock: b.stock,
        })
    }

    /// Sort order of offers in every body: by (merchant_id, sku).
    pub fn sort(offers: &mut [Offer]) {
        offers.sort_by(|a, b| {
            (a.key.merchant_id.as_str(), a.key.sku.as_str())
                .cmp(&(b.key.merchant_id.as_str(), b.key.sku.as_str()))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_round_trip() {
        let o = Offer {
            key: OfferKey {
                product_id: ProductId::parse("P1").expect("id"),
                country: Country::parse("de").expect("country"),
                merchant_id: MerchantId::parse("m1").expect("merchant"),
                sku: "P1-40".into(),
            },
            version: 5,
            price: Price {
                amount: 5995,
                currency: Currency::parse("eur").expect("currency"),
            },
            stock: 3,
        };
        let bytes = o.encode_body();
        assert_eq!(
            std::str::from_utf8(&bytes).expect("utf8"),
            r#"{"merchant_id":"m1","sku":"P1-40","price":{"amount":5995,"currency":"EUR"},"stock":3,"version":5}"#
        );
        let back = Offer::decode_body(&o.key.product_id, o.key.country, &bytes).expect("decode");
        assert_eq!(back, o);
        assert_eq!(serde_json::to_vec(&o.to_body_json()).expect("json"), bytes);
    }

    #[test]
    fn currency_and_sku() {
        assert!(Currency::parse("EU").is_err());
        assert!(Currency::parse("E1R").is_err());
        assert!(OfferKey::validate_sku("").is_err());
        assert!(OfferKey::validate_sku("a\nb").is_err());
        assert!(OfferKey::validate_sku(&"x".repeat(129)).is_err());
        assert!(OfferKey::validate_sku("P1-40 ½").is_ok());
    }
}
