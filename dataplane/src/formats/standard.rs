//! The standard `application/json` bodies of docs/api.md for offers and product-offers.
//! (The single product body is the stored bytes as they are.)

use serde::Serialize;
use serde::ser::Serializer;

use super::{sorted_offers, to_json};
use crate::model::{Country, Offer, Price, ProductId};

/// The standard body of one offer, field for field what [`Offer::encode_body`] writes, borrowed.
#[derive(Serialize)]
struct OfferBody<'a> {
    merchant_id: &'a str,
    sku: &'a str,
    price: Price,
    stock: u64,
    version: u64,
}

/// A list of offers sorted by (merchant_id, sku), serialized without copying them.
struct SortedOffers<'a>(Vec<&'a Offer>);

impl Serialize for SortedOffers<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|o| OfferBody {
            merchant_id: o.key.merchant_id.as_str(),
            sku: &o.key.sku,
            price: o.price,
            stock: o.stock,
            version: o.version,
        }))
    }
}

// Only for offer bodies (string keys, plain fields), which cannot fail to serialize; an empty
// buffer would be the sign of a bug, never of bad input.
fn offers_json(value: &impl Serialize, capacity: usize) -> Vec<u8> {
    to_json(value, capacity).unwrap_or_default()
}

const OFFER_SIZE_HINT: usize = 100;

/// `{"product_id":..,"country":..,"offers":[...]}` with offers sorted by (merchant_id, sku).
pub fn offers(id: &ProductId, country: Country, offers: &[Offer]) -> Vec<u8> {
    #[derive(Serialize)]
    struct Body<'a> {
        product_id: &'a ProductId,
        country: Country,
        offers: SortedOffers<'a>,
    }
    let body = Body {
        product_id: id,
        country,
        offers: SortedOffers(sorted_offers(offers)),
    };
    offers_json(&body, 64 + OFFER_SIZE_HINT * offers.len())
}

/// `{"product": <product>, "offers": [...]}`. The stored product bytes are embedded as they are,
/// not parsed again: they were validated JSON when written, and copying is what keeps a miss cheap.
pub fn product_offers(product_body: &[u8], offers: &[Offer]) -> Vec<u8> {
    let mut out = Vec::with_capacity(product_body.len() + 32 + OFFER_SIZE_HINT * offers.len());
    out.extend_from_slice(b"{\"product\":");
    out.extend_from_slice(product_body);
    out.extend_from_slice(b",\"offers\":");
    out.extend_from_slice(&offers_json(
        &SortedOffers(sorted_offers(offers)),
        OFFER_SIZE_HINT * offers.len() + 2,
    ));
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::testdata::*;

    fn pid(s: &str) -> ProductId {
        ProductId::parse(s).expect("id")
    }

    fn de() -> Country {
        Country::parse("de").expect("country")
    }

    #[test]
    fn offer_body_matches_the_model_encoding() {
        for o in runner_offers().iter().chain(&unicode_offers()) {
            let ours = offers_json(&SortedOffers(vec![o]), 0);
            let mut model = b"[".to_vec();
            model.extend_from_slice(&o.encode_body());
            model.push(b']');
            assert_eq!(ours, model);
        }
    }

    #[test]
    fn golden_offers_empty() {
        assert_json_eq(
            &offers(&pid("P1"), de(), &[]),
            r#"{"product_id": "P1", "country": "de", "offers": []}"#,
        );
    }

    #[test]
    fn golden_offers_sorted_by_merchant_then_sku() {
        assert_json_eq(
            &offers(&pid("P2"), de(), &runner_offers()),
            r#"{"product_id": "P2", "country": "de", "offers": [
              {"merchant_id": "m1", "sku": "P2-42", "price": {"amount": 14995, "currency": "EUR"}, "stock": 5, "version": 1},
              {"merchant_id": "m1", "sku": "P2-43", "price": {"amount": 14995, "currency": "EUR"}, "stock": 0, "version": 1},
              {"merchant_id": "m1", "sku": "P2-99", "price": {"amount": 9900, "currency": "EUR"}, "stock": 1, "version": 1},
              {"merchant_id": "m2", "sku": "P2-42", "price": {"amount": 13900, "currency": "EUR"}, "stock": 2, "version": 1},
              {"merchant_id": "m2", "sku": "P2-42W", "price": {"amount": 13900, "currency": "EUR"}, "stock": 3, "version": 1},
              {"merchant_id": "m2", "sku": "P2-44", "price": {"amount": 5, "currency": "EUR"}, "stock": 12, "version": 1},
              {"merchant_id": "zz-outlet", "sku": "P2-41", "price": {"amount": 9007199254740993, "currency": "EUR"}, "stock": 1, "version": 1}
            ]}"#,
        );
    }

    #[test]
    fn golden_product_offers_embeds_stored_bytes_verbatim() {
        // Whitespace and key order of the stored bytes survive: they are not re-parsed.
        let stored = br#"{"id":"P1", "version":3,"name":"Air Max 90","z":1,"a":[]}"#;
        let out = product_offers(stored, &air_max_sold_out());
        assert_eq!(
            std::str::from_utf8(&out).expect("utf8"),
            concat!(
                r#"{"product":{"id":"P1", "version":3,"name":"Air Max 90","z":1,"a":[]},"offers":["#,
                r#"{"merchant_id":"m1","sku":"P1-41","price":{"amount":5995,"currency":"EUR"},"stock":0,"version":1},"#,
                r#"{"merchant_id":"m2","sku":"P1-40","price":{"amount":6400,"currency":"EUR"},"stock":0,"version":1}"#,
                "]}"
            )
        );
    }

    #[test]
    fn golden_product_offers_unicode_and_no_offers() {
        let stored = product_body(&unicode());
        let out = product_offers(&stored, &[]);
        let mut want = b"{\"product\":".to_vec();
        want.extend_from_slice(&stored);
        want.extend_from_slice(b",\"offers\":[]}");
        assert_eq!(out, want);
        let parsed: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(parsed["product"]["brand"]["name"], "Björn Borg");
    }
}
