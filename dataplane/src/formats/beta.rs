//! `application/x.beta-format+json`, the legacy event format keyed by simples (docs/formats.md):
//! `{"productId","brandCode","title","simples":[{"sku","size","offers":[{"merchantId","priceCents","currency","available"}]}]}`.
//!
//! Edge cases: an offer whose sku is no simple of the product has no place in this format and is
//! left out (the standard and alpha bodies still show it). Simples that repeat a sku each list the
//! offers of that sku, since matching is by sku alone.

use serde::Serialize;
use serde::ser::Serializer;

use super::to_json;
use crate::model::{Currency, Offer, ProductDoc};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Beta<'a> {
    product_id: &'a str,
    brand_code: &'a str,
    title: &'a str,
    simples: Simples<'a>,
}

#[derive(Serialize)]
struct BetaSimple<'a> {
    sku: &'a str,
    size: &'a str,
    offers: SkuOffers<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BetaOffer<'a> {
    merchant_id: &'a str,
    price_cents: i64,
    currency: Currency,
    available: bool,
}

/// Renders the beta body of a product and its offers (in any order).
pub fn render(doc: &ProductDoc, offers: &[Offer]) -> serde_json::Result<Vec<u8>> {
    // One sort by (sku, merchant_id) puts each simple's offers in a contiguous, merchant-ordered
    // run that a binary search finds: no map, no per-simple allocation.
    let mut by_sku: Vec<&Offer> = offers.iter().collect();
    by_sku.sort_by(|a, b| {
        (a.key.sku.as_str(), a.key.merchant_id.as_str())
            .cmp(&(b.key.sku.as_str(), b.key.merchant_id.as_str()))
    });
    let body = Beta {
        product_id: &doc.id,
        brand_code: &doc.brand.code,
        title: &doc.name,
        simples: Simples {
            doc,
            by_sku: &by_sku,
        },
    };
    to_json(&body, 256 + 64 * doc.simples.len() + 80 * offers.len())
}

struct Simples<'a> {
    doc: &'a ProductDoc,
    by_sku: &'a [&'a Offer],
}

impl Serialize for Simples<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.doc.simples.iter().map(|simple| BetaSimple {
            sku: &simple.sku,
            size: &simple.size,
            offers: SkuOffers(offers_of(self.by_sku, &simple.sku)),
        }))
    }
}

/// The run of `by_sku` (sorted by sku first) whose sku is `sku`.
fn offers_of<'a>(by_sku: &'a [&'a Offer], sku: &str) -> &'a [&'a Offer] {
    let start = by_sku.partition_point(|o| o.key.sku.as_str() < sku);
    let len = by_sku[start..].partition_point(|o| o.key.sku == sku);
    &by_sku[start..start + len]
}

struct SkuOffers<'a>(&'a [&'a Offer]);

impl Serialize for SkuOffers<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|o| BetaOffer {
            merchant_id: o.key.merchant_id.as_str(),
            price_cents: o.price.amount,
            currency: o.price.currency,
            available: o.stock > 0,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::testdata::*;

    fn beta(product: &serde_json::Value, offers: &[Offer]) -> Vec<u8> {
        render(&doc(&product_body(product)), offers).expect("renders")
    }

    #[test]
    fn golden_no_offers() {
        assert_json_eq(
            &beta(&air_max(), &[]),
            r#"{
              "productId": "P1", "brandCode": "NI1", "title": "Air Max 90",
              "simples": [
                {"sku": "P1-40", "size": "40", "offers": []},
                {"sku": "P1-41", "size": "41", "offers": []}
              ]
            }"#,
        );
    }

    #[test]
    fn golden_offers_without_stock() {
        assert_json_eq(
            &beta(&air_max(), &air_max_sold_out()),
            r#"{
              "productId": "P1", "brandCode": "NI1", "title": "Air Max 90",
              "simples": [
                {"sku": "P1-40", "size": "40", "offers": [
                  {"merchantId": "m2", "priceCents": 6400, "currency": "EUR", "available": false}
                ]},
                {"sku": "P1-41", "size": "41", "offers": [
                  {"merchantId": "m1", "priceCents": 5995, "currency": "EUR", "available": false}
                ]}
              ]
            }"#,
        );
    }

    #[test]
    fn golden_several_merchants_and_sizes() {
        // P2-99 is no simple of P2: left out.
        assert_json_eq(
            &beta(&runner(), &runner_offers()),
            r#"{
              "productId": "P2", "brandCode": "SA5", "title": "Trail Runner GTX",
              "simples": [
                {"sku": "P2-41", "size": "41", "offers": [
                  {"merchantId": "zz-outlet", "priceCents": 9007199254740993, "currency": "EUR", "available": true}
                ]},
                {"sku": "P2-42", "size": "42", "offers": [
                  {"merchantId": "m1", "priceCents": 14995, "currency": "EUR", "available": true},
                  {"merchantId": "m2", "priceCents": 13900, "currency": "EUR", "available": true}
                ]},
                {"sku": "P2-42W", "size": "42", "offers": [
                  {"merchantId": "m2", "priceCents": 13900, "currency": "EUR", "available": true}
                ]},
                {"sku": "P2-43", "size": "43", "offers": [
                  {"merchantId": "m1", "priceCents": 14995, "currency": "EUR", "available": false}
                ]},
                {"sku": "P2-44", "size": "44", "offers": [
                  {"merchantId": "m2", "priceCents": 5, "currency": "EUR", "available": true}
                ]}
              ]
            }"#,
        );
    }

    #[test]
    fn golden_missing_media_and_fields() {
        assert_json_eq(
            &beta(&bare(), &bare_offers()),
            r#"{
              "productId": "P3", "brandCode": "", "title": "",
              "simples": [
                {"sku": "P3-1", "size": "One Size", "offers": [
                  {"merchantId": "m1", "priceCents": 1000, "currency": "EUR", "available": true}
                ]}
              ]
            }"#,
        );
    }

    #[test]
    fn golden_unicode_names() {
        assert_json_eq(
            &beta(&unicode(), &unicode_offers()),
            r#"{
              "productId": "P4", "brandCode": "BJ0", "title": "Læder-Sneaker „Größe“ \"Ω\" \\ 👟",
              "simples": [
                {"sku": "P4-42⅔", "size": "42 ⅔", "offers": [
                  {"merchantId": "nordic.shop", "priceCents": 129900, "currency": "SEK", "available": true}
                ]},
                {"sku": "P4-43⅓", "size": "43 ⅓", "offers": []}
              ]
            }"#,
        );
    }

    #[test]
    fn golden_edge_cases() {
        // m6's P5-ghost matches no simple: left out. Currencies are carried per offer.
        assert_json_eq(
            &beta(&edge_cases(), &edge_case_offers()),
            r#"{
              "productId": "P5", "brandCode": "BT1", "title": "Basic Tee",
              "simples": [
                {"sku": "P5-S", "size": "S", "offers": [
                  {"merchantId": "m1", "priceCents": 1999, "currency": "EUR", "available": true}
                ]},
                {"sku": "P5-M", "size": "M", "offers": [
                  {"merchantId": "m2", "priceCents": 1500, "currency": "CHF", "available": true}
                ]},
                {"sku": "P5-L", "size": "L", "offers": [
                  {"merchantId": "m3", "priceCents": 1700, "currency": "CHF", "available": false},
                  {"merchantId": "m4", "priceCents": 2500, "currency": "CHF", "available": true}
                ]},
                {"sku": "P5-XL", "size": "", "offers": [
                  {"merchantId": "m5", "priceCents": 900, "currency": "PLN", "available": false},
                  {"merchantId": "m7", "priceCents": 4000, "currency": "EUR", "available": true}
                ]}
              ]
            }"#,
        );
    }

    #[test]
    fn simples_repeating_a_sku_each_list_its_offers() {
        let product = serde_json::json!({
            "id": "P6", "version": 1,
            "simples": [{"sku": "P6-1", "size": "M"}, {"sku": "P6-1", "size": "M (again)"}]
        });
        assert_json_eq(
            &beta(&product, &[offer("P6", "m1", "P6-1", 100, "EUR", 1)]),
            r#"{"productId": "P6", "brandCode": "", "title": "", "simples": [
              {"sku": "P6-1", "size": "M", "offers": [{"merchantId": "m1", "priceCents": 100, "currency": "EUR", "available": true}]},
              {"sku": "P6-1", "size": "M (again)", "offers": [{"merchantId": "m1", "priceCents": 100, "currency": "EUR", "available": true}]}
            ]}"#,
        );
    }

    #[test]
    fn offers_of_finds_exact_runs_only() {
        let offers = runner_offers();
        let mut by_sku: Vec<&Offer> = offers.iter().collect();
        by_sku.sort_by(|a, b| a.key.sku.cmp(&b.key.sku));
        // "P2-42" is a prefix of "P2-42W": the run must not spill over.
        let run: Vec<&str> = offers_of(&by_sku, "P2-42")
            .iter()
            .map(|o| o.key.sku.as_str())
            .collect();
        assert_eq!(run, ["P2-42", "P2-42"]);
        assert!(offers_of(&by_sku, "P2-40").is_empty());
        assert!(offers_of(&by_sku, "").is_empty());
        assert!(offers_of(&[], "P2-42").is_empty());
    }
}
