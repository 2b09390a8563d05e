//! Fixtures shared by the golden tests of every media type: hand-written products and offers.

use serde_json::{Value, json};

use crate::model::{Country, Currency, MerchantId, Offer, OfferKey, Price, ProductDoc, ProductId};

/// An offer in `de`; the product id is taken as given so tests can mix products.
pub fn offer(
    product: &str,
    merchant: &str,
    sku: &str,
    amount: i64,
    currency: &str,
    stock: u64,
) -> Offer {
    Offer {
        key: OfferKey {
            product_id: ProductId::parse(product).expect("fixture product id"),
            country: Country::parse("de").expect("fixture country"),
            merchant_id: MerchantId::parse(merchant).expect("fixture merchant id"),
            sku: sku.to_owned(),
        },
        version: 1,
        price: Price {
            amount,
            currency: Currency::parse(currency).expect("fixture currency"),
        },
        stock,
    }
}

/// The stored bytes of a product document.
pub fn product_body(product: &Value) -> Vec<u8> {
    serde_json::to_vec(product).expect("fixture serializes")
}

/// The lenient view of stored bytes.
pub fn doc(body: &[u8]) -> ProductDoc {
    ProductDoc::from_slice(body).expect("fixture is a product document")
}

/// Compares rendered bytes with hand-written expected JSON. The expected text may be laid out
/// freely; it is minified (keeping key order) and then compared byte for byte, so key order,
/// number and string formatting all count.
#[track_caller]
pub fn assert_json_eq(actual: &[u8], expected: &str) {
    let expected: Value = serde_json::from_str(expected).expect("expected text is JSON");
    let expected = serde_json::to_string(&expected).expect("minifies");
    let actual = std::str::from_utf8(actual).expect("output is UTF-8");
    assert_eq!(
        actual, expected,
        "\n actual: {actual}\nexpected: {expected}"
    );
}

/// The smallest product used to check dispatch.
pub fn minimal_product() -> Value {
    json!({"id": "P1", "version": 1, "name": "Air", "simples": [{"sku": "P1-40", "size": "40"}]})
}

/// P1: the product of the worked example in docs/formats.md.
pub fn air_max() -> Value {
    json!({
        "id": "P1", "version": 3, "name": "Air Max 90",
        "brand": {"code": "NI1", "name": "Nike"},
        "simples": [{"sku": "P1-40", "size": "40"}, {"sku": "P1-41", "size": "41"}],
        "media": [{"url": "https://img.example/p1.jpg"}, {"url": "https://img.example/p1-side.jpg"}],
        "attributes": [
            {"key": "color", "values": ["white", "red"]},
            {"key": "upper_material", "values": ["leather"]}
        ],
        "description": "kept as-is, not read by the formats"
    })
}

/// P1 offers, none in stock, unsorted.
pub fn air_max_sold_out() -> Vec<Offer> {
    vec![
        offer("P1", "m2", "P1-40", 6400, "EUR", 0),
        offer("P1", "m1", "P1-41", 5995, "EUR", 0),
    ]
}

/// P2: several sizes, two simples sharing the size label "42".
pub fn runner() -> Value {
    json!({
        "id": "P2", "version": 17, "name": "Trail Runner GTX",
        "brand": {"code": "SA5", "name": "Salomon"},
        "simples": [
            {"sku": "P2-41", "size": "41"},
            {"sku": "P2-42", "size": "42"},
            {"sku": "P2-42W", "size": "42"},
            {"sku": "P2-43", "size": "43"},
            {"sku": "P2-44", "size": "44"}
        ],
        "media": [
            {"url": "https://img.example/p2-front.jpg", "type": "image"},
            {"url": "https://img.example/p2-back.jpg", "type": "image"}
        ],
        "attributes": [
            {"key": "color", "values": ["black"]},
            {"key": "size_system", "values": ["EU"]},
            {"key": "technology", "values": ["Gore-Tex", "Contagrip"]},
            {"key": "fit", "values": ["true to size"]}
        ]
    })
}

/// P2 offers from three merchants, unsorted: one out of stock, one whose sku is no simple of P2,
/// a five-cent price and an amount beyond 2^53.
pub fn runner_offers() -> Vec<Offer> {
    vec![
        offer("P2", "m2", "P2-44", 5, "EUR", 12),
        offer("P2", "m1", "P2-43", 14995, "EUR", 0),
        offer("P2", "zz-outlet", "P2-41", 9_007_199_254_740_993, "EUR", 1),
        offer("P2", "m1", "P2-42", 14995, "EUR", 5),
        offer("P2", "m2", "P2-42W", 13900, "EUR", 3),
        offer("P2", "m2", "P2-42", 13900, "EUR", 2),
        offer("P2", "m1", "P2-99", 9900, "EUR", 1),
    ]
}

/// P3: only id, version and one simple; no name, brand, media or attributes.
pub fn bare() -> Value {
    json!({"id": "P3", "version": 1, "simples": [{"sku": "P3-1", "size": "One Size"}]})
}

/// P3's single offer.
pub fn bare_offers() -> Vec<Offer> {
    vec![offer("P3", "m1", "P3-1", 1000, "EUR", 1)]
}

/// P4: non-ASCII everywhere, and characters JSON must escape.
pub fn unicode() -> Value {
    json!({
        "id": "P4", "version": 8, "name": "Læder-Sneaker „Größe“ \"Ω\" \\ 👟",
        "brand": {"code": "BJ0", "name": "Björn Borg"},
        "simples": [{"sku": "P4-42⅔", "size": "42 ⅔"}, {"sku": "P4-43⅓", "size": "43 ⅓"}],
        "media": [{"url": "https://img.example/p4/größe.jpg"}],
        "attributes": [{"key": "färg", "values": ["svart", "vit"]}, {"key": "素材", "values": ["革"]}]
    })
}

/// P4's offer, in SEK.
pub fn unicode_offers() -> Vec<Offer> {
    vec![offer("P4", "nordic.shop", "P4-42⅔", 129_900, "SEK", 4)]
}

/// P5: repeated attribute keys, an empty brand name, a first media item without a URL, a simple
/// without a size label.
pub fn edge_cases() -> Value {
    json!({
        "id": "P5", "version": 2, "name": "Basic Tee",
        "brand": {"code": "BT1", "name": ""},
        "simples": [
            {"sku": "P5-S", "size": "S"},
            {"sku": "P5-M", "size": "M"},
            {"sku": "P5-L", "size": "L"},
            {"sku": "P5-XL", "size": ""}
        ],
        "media": [{"type": "video"}, {"url": "https://img.example/p5.jpg"}],
        "attributes": [
            {"key": "color", "values": ["blue"]},
            {"key": "material", "values": ["cotton"]},
            {"key": "color", "values": ["navy", "blue"]},
            {"key": "empty", "values": []}
        ]
    })
}

/// P5 offers in three currencies: the cheapest in-stock one is in CHF; the cheapest overall (PLN)
/// is out of stock; one offer's sku is no simple of P5.
pub fn edge_case_offers() -> Vec<Offer> {
    vec![
        offer("P5", "m1", "P5-S", 1999, "EUR", 1),
        offer("P5", "m2", "P5-M", 1500, "CHF", 2),
        offer("P5", "m3", "P5-L", 1700, "CHF", 0),
        offer("P5", "m4", "P5-L", 2500, "CHF", 1),
        offer("P5", "m5", "P5-XL", 900, "PLN", 0),
        offer("P5", "m6", "P5-ghost", 100, "EUR", 0),
        offer("P5", "m7", "P5-XL", 4000, "EUR", 1),
    ]
}
