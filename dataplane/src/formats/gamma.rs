//! `application/x.gamma-format+json`, the presentation format (docs/formats.md):
//! `{"id","title","image","price":{"min","max","currency"}|null,"inStock","sizes":[...]}`.
//!
//! Edge cases:
//! - `title` joins brand name and name with one space; an empty (or blank) part is left out, so
//!   there is never a leading, trailing or double space from the join. Each part is trimmed.
//! - `image` is the URL of the first media item that has a non-empty one, else `null`.
//! - `price` covers offers with stock > 0. A range across currencies means nothing, so it is taken
//!   in the currency of the cheapest in-stock offer (by amount; equal amounts: the alphabetically
//!   first currency code, so the result does not depend on offer order), over the in-stock offers
//!   in that currency only. `null` when nothing is in stock.
//! - `inStock` is true when any offer has stock > 0, whatever its currency (so it is true exactly
//!   when `price` is not `null`).
//! - `sizes` are the size labels of simples with an in-stock offer (any currency) in product order,
//!   each label once; empty labels are left out. Offers whose sku is no simple add no size.

use std::collections::HashSet;
use std::fmt;

use serde::Serialize;
use serde::ser::Serializer;

use super::{TwoDecimals, to_json};
use crate::model::{Currency, Offer, ProductDoc};

#[derive(Serialize)]
struct Gamma<'a> {
    id: &'a str,
    title: Title<'a>,
    image: Option<&'a str>,
    price: Option<PriceRange>,
    #[serde(rename = "inStock")]
    in_stock: bool,
    sizes: Vec<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
struct PriceRange {
    min: TwoDecimals,
    max: TwoDecimals,
    currency: Currency,
}

/// Renders the gamma body of a product and its offers (in any order).
pub fn render(doc: &ProductDoc, offers: &[Offer]) -> serde_json::Result<Vec<u8>> {
    let in_stock: Vec<&Offer> = offers.iter().filter(|o| o.stock > 0).collect();
    let body = Gamma {
        id: &doc.id,
        title: Title {
            brand: doc.brand.name.trim(),
            name: doc.name.trim(),
        },
        image: doc
            .media
            .iter()
            .map(|m| m.url.as_str())
            .find(|url| !url.is_empty()),
        price: price_range(&in_stock),
        in_stock: !in_stock.is_empty(),
        sizes: sizes(doc, &in_stock),
    };
    to_json(&body, 256 + 8 * doc.simples.len())
}

/// The range over in-stock offers in the currency of the cheapest of them.
fn price_range(in_stock: &[&Offer]) -> Option<PriceRange> {
    let cheapest = in_stock.iter().min_by(|a, b| {
        (a.price.amount, a.price.currency.as_str())
            .cmp(&(b.price.amount, b.price.currency.as_str()))
    })?;
    let currency = cheapest.price.currency;
    let max = in_stock
        .iter()
        .filter(|o| o.price.currency == currency)
        .map(|o| o.price.amount)
        .max()
        .unwrap_or(cheapest.price.amount);
    Some(PriceRange {
        min: TwoDecimals(cheapest.price.amount),
        max: TwoDecimals(max),
        currency,
    })
}

/// Size labels of simples with an in-stock offer, in product order, each once, none empty.
fn sizes<'a>(doc: &'a ProductDoc, in_stock: &[&Offer]) -> Vec<&'a str> {
    if in_stock.is_empty() {
        return Vec::new();
    }
    let skus: HashSet<&str> = in_stock.iter().map(|o| o.key.sku.as_str()).collect();
    let mut seen: HashSet<&str> = HashSet::with_capacity(doc.simples.len());
    doc.simples
        .iter()
        .filter(|s| !s.size.is_empty() && skus.contains(s.sku.as_str()))
        .map(|s| s.size.as_str())
        .filter(|size| seen.insert(size))
        .collect()
}

/// "<brand> <name>" without a stray space when either is blank.
struct Title<'a> {
    brand: &'a str,
    name: &'a str,
}

impl fmt::Display for Title<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.brand)?;
        if !self.brand.is_empty() && !self.name.is_empty() {
            f.write_str(" ")?;
        }
        f.write_str(self.name)
    }
}

impl Serialize for Title<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::testdata::*;

    fn gamma(product: &serde_json::Value, offers: &[Offer]) -> Vec<u8> {
        render(&doc(&product_body(product)), offers).expect("renders")
    }

    #[test]
    fn golden_no_offers() {
        assert_json_eq(
            &gamma(&air_max(), &[]),
            r#"{"id": "P1", "title": "Nike Air Max 90", "image": "https://img.example/p1.jpg",
                "price": null, "inStock": false, "sizes": []}"#,
        );
    }

    #[test]
    fn golden_offers_without_stock() {
        assert_json_eq(
            &gamma(&air_max(), &air_max_sold_out()),
            r#"{"id": "P1", "title": "Nike Air Max 90", "image": "https://img.example/p1.jpg",
                "price": null, "inStock": false, "sizes": []}"#,
        );
    }

    #[test]
    fn golden_several_merchants_and_sizes() {
        // 43 has only an out-of-stock offer; 42 comes from two simples but is listed once;
        // P2-99 is in stock but no simple, so it adds to the price range and to no size.
        assert_json_eq(
            &gamma(&runner(), &runner_offers()),
            r#"{"id": "P2", "title": "Salomon Trail Runner GTX", "image": "https://img.example/p2-front.jpg",
                "price": {"min": "0.05", "max": "90071992547409.93", "currency": "EUR"},
                "inStock": true, "sizes": ["41", "42", "44"]}"#,
        );
    }

    #[test]
    fn golden_missing_media_and_fields() {
        assert_json_eq(
            &gamma(&bare(), &bare_offers()),
            r#"{"id": "P3", "title": "", "image": null,
                "price": {"min": "10.00", "max": "10.00", "currency": "EUR"},
                "inStock": true, "sizes": ["One Size"]}"#,
        );
    }

    #[test]
    fn golden_unicode_names() {
        assert_json_eq(
            &gamma(&unicode(), &unicode_offers()),
            r#"{"id": "P4", "title": "Björn Borg Læder-Sneaker „Größe“ \"Ω\" \\ 👟",
                "image": "https://img.example/p4/größe.jpg",
                "price": {"min": "1299.00", "max": "1299.00", "currency": "SEK"},
                "inStock": true, "sizes": ["42 ⅔"]}"#,
        );
    }

    #[test]
    fn golden_edge_cases() {
        // Cheapest in-stock offer is CHF 15.00, so the range is over CHF offers only (the PLN one
        // is cheaper but sold out, the EUR ones are left out). P5-XL is in stock but has no size.
        assert_json_eq(
            &gamma(&edge_cases(), &edge_case_offers()),
            r#"{"id": "P5", "title": "Basic Tee", "image": "https://img.example/p5.jpg",
                "price": {"min": "15.00", "max": "25.00", "currency": "CHF"},
                "inStock": true, "sizes": ["S", "M", "L"]}"#,
        );
    }

    #[test]
    fn title_never_has_a_stray_space() {
        let title = |brand: &str, name: &str| {
            let product = serde_json::json!({"id": "P", "name": name, "brand": {"name": brand}});
            let out: serde_json::Value =
                serde_json::from_slice(&gamma(&product, &[])).expect("json");
            out["title"].as_str().expect("title").to_owned()
        };
        assert_eq!(title("Nike", "Air"), "Nike Air");
        assert_eq!(title("", "Air"), "Air");
        assert_eq!(title("Nike", ""), "Nike");
        assert_eq!(title("", ""), "");
        assert_eq!(title("  ", " Air "), "Air");
        assert_eq!(title(" Nike", "Air Max "), "Nike Air Max");
    }

    #[test]
    fn currency_tie_at_the_cheapest_amount_does_not_depend_on_order() {
        let a = offer("P", "m1", "s", 1000, "USD", 1);
        let b = offer("P", "m2", "s", 1000, "CHF", 1);
        let c = offer("P", "m3", "s", 3000, "CHF", 1);
        let d = offer("P", "m4", "s", 5000, "USD", 1);
        let want = Some(PriceRange {
            min: TwoDecimals(1000),
            max: TwoDecimals(3000),
            currency: Currency::parse("CHF").expect("chf"),
        });
        assert_eq!(price_range(&[&a, &b, &c, &d]), want);
        assert_eq!(price_range(&[&d, &c, &b, &a]), want);
        assert_eq!(price_range(&[]), None);
    }
}
