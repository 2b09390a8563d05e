//! `application/x.alpha-format+json`, the legacy event format (docs/formats.md):
//! `{"sku","version","name","brand","attributes":{key: "v1, v2"},"offers":[{"merchant","sku","price","currency","quantity"}]}`.
//!
//! Edge cases: attributes that repeat a key are merged into one entry at the key's first position,
//! their values concatenated in product order (a JSON object cannot repeat a key, and dropping
//! values would lose data). Prices are always two decimals of the minor units, as the legacy
//! consumers expect, whatever the currency's ISO 4217 exponent.

use std::collections::HashMap;

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use super::{TwoDecimals, sorted_offers, to_json};
use crate::model::{Currency, Offer, ProductDoc};

#[derive(Serialize)]
struct Alpha<'a> {
    sku: &'a str,
    version: u64,
    name: &'a str,
    brand: &'a str,
    attributes: Attributes<'a>,
    offers: Offers<'a>,
}

#[derive(Serialize)]
struct AlphaOffer<'a> {
    merchant: &'a str,
    sku: &'a str,
    price: TwoDecimals,
    currency: Currency,
    quantity: u64,
}

/// Renders the alpha body of a product and its offers (in any order).
pub fn render(doc: &ProductDoc, offers: &[Offer]) -> serde_json::Result<Vec<u8>> {
    let body = Alpha {
        sku: &doc.id,
        version: doc.version,
        name: &doc.name,
        brand: &doc.brand.name,
        attributes: Attributes::merge(doc),
        offers: Offers(sorted_offers(offers)),
    };
    to_json(&body, 256 + 64 * doc.attributes.len() + 96 * offers.len())
}

/// Attributes grouped by key in order of first appearance; each group's value lists in product order.
struct Attributes<'a>(Vec<(&'a str, Vec<&'a [String]>)>);

impl<'a> Attributes<'a> {
    fn merge(doc: &'a ProductDoc) -> Self {
        let attributes = &doc.attributes;
        let mut groups: Vec<(&str, Vec<&[String]>)> = Vec::with_capacity(attributes.len());
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(attributes.len());
        for a in attributes {
            match index.get(a.key.as_str()) {
                Some(&i) => groups[i].1.push(&a.values),
                None => {
                    index.insert(&a.key, groups.len());
                    groups.push((&a.key, vec![&a.values]));
                }
            }
        }
        Self(groups)
    }
}

impl Serialize for Attributes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (key, lists) in &self.0 {
            map.serialize_entry(key, &Joined(lists))?;
        }
        map.end()
    }
}

/// Values joined by ", ", written straight into the output.
struct Joined<'a>(&'a [&'a [String]]);

impl std::fmt::Display for Joined<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for value in self.0.iter().flat_map(|list| list.iter()) {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            f.write_str(value)?;
        }
        Ok(())
    }
}

impl Serialize for Joined<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

struct Offers<'a>(Vec<&'a Offer>);

impl Serialize for Offers<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|o| AlphaOffer {
            merchant: o.key.merchant_id.as_str(),
            sku: &o.key.sku,
            price: TwoDecimals(o.price.amount),
            currency: o.price.currency,
            quantity: o.stock,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::testdata::*;

    fn alpha(product: &serde_json::Value, offers: &[Offer]) -> Vec<u8> {
        render(&doc(&product_body(product)), offers).expect("renders")
    }

    #[test]
    fn golden_no_offers() {
        assert_json_eq(
            &alpha(&air_max(), &[]),
            r#"{
              "sku": "P1", "version": 3, "name": "Air Max 90", "brand": "Nike",
              "attributes": {"color": "white, red", "upper_material": "leather"},
              "offers": []
            }"#,
        );
    }

    #[test]
    fn golden_offers_without_stock() {
        assert_json_eq(
            &alpha(&air_max(), &air_max_sold_out()),
            r#"{
              "sku": "P1", "version": 3, "name": "Air Max 90", "brand": "Nike",
              "attributes": {"color": "white, red", "upper_material": "leather"},
              "offers": [
                {"merchant": "m1", "sku": "P1-41", "price": "59.95", "currency": "EUR", "quantity": 0},
                {"merchant": "m2", "sku": "P1-40", "price": "64.00", "currency": "EUR", "quantity": 0}
              ]
            }"#,
        );
    }

    #[test]
    fn golden_several_merchants_and_sizes() {
        assert_json_eq(
            &alpha(&runner(), &runner_offers()),
            r#"{
              "sku": "P2", "version": 17, "name": "Trail Runner GTX", "brand": "Salomon",
              "attributes": {
                "color": "black",
                "size_system": "EU",
                "technology": "Gore-Tex, Contagrip",
                "fit": "true to size"
              },
              "offers": [
                {"merchant": "m1", "sku": "P2-42", "price": "149.95", "currency": "EUR", "quantity": 5},
                {"merchant": "m1", "sku": "P2-43", "price": "149.95", "currency": "EUR", "quantity": 0},
                {"merchant": "m1", "sku": "P2-99", "price": "99.00", "currency": "EUR", "quantity": 1},
                {"merchant": "m2", "sku": "P2-42", "price": "139.00", "currency": "EUR", "quantity": 2},
                {"merchant": "m2", "sku": "P2-42W", "price": "139.00", "currency": "EUR", "quantity": 3},
                {"merchant": "m2", "sku": "P2-44", "price": "0.05", "currency": "EUR", "quantity": 12},
                {"merchant": "zz-outlet", "sku": "P2-41", "price": "90071992547409.93", "currency": "EUR", "quantity": 1}
              ]
            }"#,
        );
    }

    #[test]
    fn golden_missing_media_and_fields() {
        assert_json_eq(
            &alpha(&bare(), &bare_offers()),
            r#"{
              "sku": "P3", "version": 1, "name": "", "brand": "",
              "attributes": {},
              "offers": [
                {"merchant": "m1", "sku": "P3-1", "price": "10.00", "currency": "EUR", "quantity": 1}
              ]
            }"#,
        );
    }

    #[test]
    fn golden_unicode_names() {
        assert_json_eq(
            &alpha(&unicode(), &unicode_offers()),
            r#"{
              "sku": "P4", "version": 8, "name": "Læder-Sneaker „Größe“ \"Ω\" \\ 👟",
              "brand": "Björn Borg",
              "attributes": {"färg": "svart, vit", "素材": "革"},
              "offers": [
                {"merchant": "nordic.shop", "sku": "P4-42⅔", "price": "1299.00", "currency": "SEK", "quantity": 4}
              ]
            }"#,
        );
    }

    #[test]
    fn golden_duplicate_attribute_keys_are_merged_at_first_position() {
        assert_json_eq(
            &alpha(&edge_cases(), &edge_case_offers()),
            r#"{
              "sku": "P5", "version": 2, "name": "Basic Tee", "brand": "",
              "attributes": {"color": "blue, navy, blue", "material": "cotton", "empty": ""},
              "offers": [
                {"merchant": "m1", "sku": "P5-S", "price": "19.99", "currency": "EUR", "quantity": 1},
                {"merchant": "m2", "sku": "P5-M", "price": "15.00", "currency": "CHF", "quantity": 2},
                {"merchant": "m3", "sku": "P5-L", "price": "17.00", "currency": "CHF", "quantity": 0},
                {"merchant": "m4", "sku": "P5-L", "price": "25.00", "currency": "CHF", "quantity": 1},
                {"merchant": "m5", "sku": "P5-XL", "price": "9.00", "currency": "PLN", "quantity": 0},
                {"merchant": "m6", "sku": "P5-ghost", "price": "1.00", "currency": "EUR", "quantity": 0},
                {"merchant": "m7", "sku": "P5-XL", "price": "40.00", "currency": "EUR", "quantity": 1}
              ]
            }"#,
        );
    }
}
