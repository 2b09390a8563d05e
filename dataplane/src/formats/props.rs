//! Property tests over random products and offers, for every media type.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::testdata::offer;
use super::{MediaType, render_product_offers, standard};
use crate::model::{Offer, ProductDoc};

const SKUS: [&str; 6] = ["S-1", "S-2", "S-3", "S-3x", "S-ü", "S-9"];
const MERCHANTS: [&str; 5] = ["m1", "m2", "m10", "shop.a", "Z-9"];
const CURRENCIES: [&str; 3] = ["EUR", "CHF", "PLN"];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[ a-zA-Z]{0,12}", any::<String>()]
}

/// A product document: simples over a small sku pool (repeats and skus without offers included),
/// sizes that repeat or are empty, optional media and brand, attribute keys that repeat.
fn product() -> impl Strategy<Value = Value> {
    let simple = (
        prop::sample::select(SKUS.to_vec()),
        prop_oneof![Just(""), Just("M"), Just("L"), Just("42 ⅔")],
    );
    let attribute = (
        prop_oneof![Just("color"), Just("fit"), Just("素材")],
        prop::collection::vec(text(), 0..3),
    );
    (
        text(),
        prop::option::of((text(), text())),
        prop::collection::vec(simple, 0..8),
        prop::collection::vec(prop::option::of("https://img\\.example/[a-z]{1,6}\\.jpg"), 0..3),
        prop::collection::vec(attribute, 0..6),
        any::<u64>(),
    )
        .prop_map(|(name, brand, simples, media, attributes, version)| {
            let mut p = json!({
                "id": "P1",
                "version": version,
                "name": name,
                "simples": simples.iter().map(|(sku, size)| json!({"sku": sku, "size": size})).collect::<Vec<_>>(),
                "media": media.iter().map(|url| match url {
                    Some(u) => json!({"url": u}),
                    None => json!({"type": "video"}),
                }).collect::<Vec<_>>(),
                "attributes": attributes.iter().map(|(k, v)| json!({"key": k, "values": v})).collect::<Vec<_>>(),
            });
            if let Some((code, name)) = brand {
                p["brand"] = json!({"code": code, "name": name});
            }
            p
        })
}

/// Offers with distinct (merchant, sku) keys, as one country holds them, in random order.
fn offers() -> impl Strategy<Value = Vec<Offer>> {
    let one = (
        prop::sample::select(MERCHANTS.to_vec()),
        prop::sample::select(SKUS.to_vec()),
        prop_oneof![0i64..100_000, 0i64..=i64::MAX],
        prop::sample::select(CURRENCIES.to_vec()),
        prop_oneof![Just(0u64), 1u64..5, Just(u64::MAX)],
    );
    prop::collection::vec(one, 0..16)
        .prop_map(|v| {
            v.into_iter()
                .map(|(m, s, a, c, st)| ((m, s), (a, c, st)))
                .collect::<BTreeMap<_, _>>()
                .into_iter()
                .map(|((m, s), (a, c, st))| offer("P1", m, s, a, c, st))
                .collect::<Vec<_>>()
        })
        .prop_shuffle()
}

fn render(media: MediaType, body: &[u8], offers: &[Offer]) -> Value {
    let out = render_product_offers(media, body, offers).expect("a valid product renders");
    serde_json::from_slice(&out).expect("output is JSON")
}

/// "123.45" back to minor units, checking the two-decimal shape on the way.
fn minor_units(s: &str) -> i64 {
    let (int, frac) = s.split_once('.').expect("a decimal point");
    assert_eq!(frac.len(), 2, "two decimals in {s}");
    let digits = format!("{int}{frac}");
    digits.parse::<i64>().expect("fits i64")
}

fn str_of(v: &Value) -> &str {
    v.as_str().expect("a string")
}

proptest! {
    #[test]
    fn gamma_min_le_max_and_range_is_over_in_stock_offers_in_one_currency(
        p in product(), offers in offers()
    ) {
        let body = serde_json::to_vec(&p).expect("serializes");
        let g = render(MediaType::Gamma, &body, &offers);
        let in_stock: Vec<&Offer> = offers.iter().filter(|o| o.stock > 0).collect();
        prop_assert_eq!(g["inStock"].as_bool(), Some(!in_stock.is_empty()));
        if in_stock.is_empty() {
            prop_assert!(g["price"].is_null());
        } else {
            let min = minor_units(str_of(&g["price"]["min"]));
            let max = minor_units(str_of(&g["price"]["max"]));
            let currency = str_of(&g["price"]["currency"]);
            prop_assert!(min <= max, "{} > {}", min, max);
            let same: Vec<i64> = in_stock
                .iter()
                .filter(|o| o.price.currency.as_str() == currency)
                .map(|o| o.price.amount)
                .collect();
            prop_assert_eq!(same.iter().min().copied(), Some(min));
            prop_assert_eq!(same.iter().max().copied(), Some(max));
            // The currency is that of the cheapest in-stock offer.
            prop_assert!(in_stock.iter().all(|o| o.price.amount >= min));
        }
        // Sizes: unique, non-empty, each from a simple with an in-stock offer, in product order.
        let doc = ProductDoc::from_slice(&body).expect("doc");
        let want: Vec<&str> = {
            let mut seen = Vec::new();
            for s in &doc.simples {
                if !s.size.is_empty()
                    && in_stock.iter().any(|o| o.key.sku == s.sku)
                    && !seen.contains(&s.size.as_str())
                {
                    seen.push(s.size.as_str());
                }
            }
            seen
        };
        let got: Vec<&str> = g["sizes"].as_array().expect("sizes").iter().map(str_of).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn every_alpha_offer_is_a_stored_offer(p in product(), offers in offers()) {
        let body = serde_json::to_vec(&p).expect("serializes");
        let a = render(MediaType::Alpha, &body, &offers);
        let listed = a["offers"].as_array().expect("offers");
        prop_assert_eq!(listed.len(), offers.len());
        let mut previous: Option<(String, String)> = None;
        for o in listed {
            let (merchant, sku) = (str_of(&o["merchant"]), str_of(&o["sku"]));
            let stored = offers
                .iter()
                .find(|s| s.key.merchant_id.as_str() == merchant && s.key.sku == sku);
            prop_assert!(stored.is_some(), "{} is no stored offer", o);
            let stored = stored.expect("checked");
            prop_assert_eq!(minor_units(str_of(&o["price"])), stored.price.amount);
            prop_assert_eq!(str_of(&o["currency"]), stored.price.currency.as_str());
            prop_assert_eq!(o["quantity"].as_u64(), Some(stored.stock));
            let key = (merchant.to_owned(), sku.to_owned());
            prop_assert!(previous.as_ref().is_none_or(|p| *p < key), "not sorted at {:?}", key);
            previous = Some(key);
        }
    }

    #[test]
    fn beta_offers_sit_under_their_sku(p in product(), offers in offers()) {
        let body = serde_json::to_vec(&p).expect("serializes");
        let b = render(MediaType::Beta, &body, &offers);
        let doc = ProductDoc::from_slice(&body).expect("doc");
        let simples = b["simples"].as_array().expect("simples");
        prop_assert_eq!(simples.len(), doc.simples.len());
        for (rendered, simple) in simples.iter().zip(&doc.simples) {
            prop_assert_eq!(str_of(&rendered["sku"]), simple.sku.as_str());
            prop_assert_eq!(str_of(&rendered["size"]), simple.size.as_str());
            let listed = rendered["offers"].as_array().expect("offers");
            let mut expected: Vec<&Offer> = offers.iter().filter(|o| o.key.sku == simple.sku).collect();
            expected.sort_by(|a, b| a.key.merchant_id.cmp(&b.key.merchant_id));
            prop_assert_eq!(listed.len(), expected.len());
            for (l, e) in listed.iter().zip(expected) {
                prop_assert_eq!(str_of(&l["merchantId"]), e.key.merchant_id.as_str());
                prop_assert_eq!(l["priceCents"].as_i64(), Some(e.price.amount));
                prop_assert_eq!(str_of(&l["currency"]), e.price.currency.as_str());
                prop_assert_eq!(l["available"].as_bool(), Some(e.stock > 0));
            }
        }
    }

    #[test]
    fn standard_body_embeds_the_product_and_every_offer(p in product(), offers in offers()) {
        let body = serde_json::to_vec(&p).expect("serializes");
        let s = render(MediaType::Json, &body, &offers);
        prop_assert_eq!(&s["product"], &p);
        let listed = s["offers"].as_array().expect("offers");
        let mut sorted = offers.clone();
        Offer::sort(&mut sorted);
        let want: Vec<Value> = sorted.iter().map(Offer::to_body_json).collect();
        prop_assert_eq!(listed, &want);
        prop_assert_eq!(
            standard::product_offers(&body, &offers),
            render_product_offers(MediaType::Json, &body, &offers).expect("json")
        );
    }

    /// Output depends on the set of offers, not on the order they come in.
    #[test]
    fn output_does_not_depend_on_offer_order(
        p in product(), offers in offers(), seed in any::<u64>()
    ) {
        let body = serde_json::to_vec(&p).expect("serializes");
        let mut shuffled = offers.clone();
        // A cheap deterministic permutation: rotate and reverse by the seed.
        if !shuffled.is_empty() {
            let n = shuffled.len();
            shuffled.rotate_left((seed as usize) % n);
            if seed % 2 == 0 {
                shuffled.reverse();
            }
        }
        for media in MediaType::ALL {
            prop_assert_eq!(
                render_product_offers(media, &body, &offers).expect("renders"),
                render_product_offers(media, &body, &shuffled).expect("renders")
            );
        }
    }
}
