//! The four media types of a product-offers body (docs/formats.md): the standard `application/json`
//! and the legacy alpha, beta and gamma formats, plus `Accept` negotiation between them.
//!
//! Everything here is a pure function of the stored bytes and the offers: the serving path renders
//! a body once per (id, country, media type) and caches the bytes, so these run on cache misses
//! only. Mapping rules and edge cases are documented in `docs/formats.md`.

use std::fmt;

use serde::{Serialize, Serializer};

use crate::model::{Offer, ProductDoc};

pub mod alpha;
pub mod beta;
pub mod gamma;
mod negotiate;
pub mod standard;

pub use negotiate::NotAcceptable;

/// The four media types of docs/formats.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaType {
    /// `application/json`: the standard body.
    Json,
    /// `application/x.alpha-format+json`: legacy event format.
    Alpha,
    /// `application/x.beta-format+json`: legacy event format keyed by simples.
    Beta,
    /// `application/x.gamma-format+json`: presentation format.
    Gamma,
}

impl MediaType {
    /// Every media type, in server preference order (used when a wildcard matches several).
    pub const ALL: [MediaType; 4] = [
        MediaType::Json,
        MediaType::Alpha,
        MediaType::Beta,
        MediaType::Gamma,
    ];

    /// The `Content-Type` value of bodies in this media type.
    pub fn content_type(self) -> &'static str {
        match self {
            MediaType::Json => "application/json",
            MediaType::Alpha => "application/x.alpha-format+json",
            MediaType::Beta => "application/x.beta-format+json",
            MediaType::Gamma => "application/x.gamma-format+json",
        }
    }

    /// A short lower-case name (`json`, `alpha`, `beta`, `gamma`) for cache keys, metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            MediaType::Json => "json",
            MediaType::Alpha => "alpha",
            MediaType::Beta => "beta",
            MediaType::Gamma => "gamma",
        }
    }
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.content_type())
    }
}

/// A product-offers body could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The stored product body is not JSON, or not an object with the fields a legacy format reads
    /// (for example `name` is a number). The store only holds bodies that were valid when written,
    /// so this means a corrupt item or a writer that broke the contract.
    #[error("stored product {product} cannot be rendered as {media}: {problem}: {source}")]
    InvalidProduct {
        /// The product id, as far as it can be told from the body or the offers.
        product: String,
        /// The media type that was asked for.
        media: MediaType,
        /// `is not valid JSON` or `has fields of the wrong type`.
        problem: &'static str,
        /// The parser's error, with line and column.
        source: serde_json::Error,
    },
    /// Serializing the output failed. Plain structs with string keys cannot fail to serialize, so
    /// this is a bug, reported rather than answered with an empty body.
    #[error("rendering product {product} as {media} failed: {source}")]
    Encode {
        /// The product id.
        product: String,
        /// The media type that was asked for.
        media: MediaType,
        /// The serializer's error.
        source: serde_json::Error,
    },
}

/// Renders a product-offers body in any media type. `offers` may be unsorted; output order is the
/// contract's. `product_body` is the stored product document (JSON with `id` and `version`).
///
/// The standard body embeds the stored bytes as they are and never fails; the legacy formats read
/// the document and fail with [`FormatError::InvalidProduct`] when it cannot be read.
pub fn render_product_offers(
    media: MediaType,
    product_body: &[u8],
    offers: &[Offer],
) -> Result<Vec<u8>, FormatError> {
    let render: fn(&ProductDoc, &[Offer]) -> serde_json::Result<Vec<u8>> = match media {
        MediaType::Json => return Ok(standard::product_offers(product_body, offers)),
        MediaType::Alpha => alpha::render,
        MediaType::Beta => beta::render,
        MediaType::Gamma => gamma::render,
    };
    let doc = parse_doc(media, product_body, offers)?;
    render(&doc, offers).map_err(|source| FormatError::Encode {
        product: doc.id.clone(),
        media,
        source,
    })
}

/// Reads the lenient product view, naming the product in the error when the body cannot be read.
fn parse_doc(
    media: MediaType,
    product_body: &[u8],
    offers: &[Offer],
) -> Result<ProductDoc, FormatError> {
    ProductDoc::from_slice(product_body).map_err(|source| {
        let problem = if source.is_data() {
            "has fields of the wrong type"
        } else {
            "is not valid JSON"
        };
        FormatError::InvalidProduct {
            product: product_id_for_error(product_body, offers),
            media,
            problem,
            source,
        }
    })
}

/// Error path only: the `id` of a body that is JSON but not a readable document, else the product
/// id of the offers, else a placeholder.
fn product_id_for_error(product_body: &[u8], offers: &[Offer]) -> String {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: Option<serde_json::Value>,
    }
    let from_body = serde_json::from_slice::<IdOnly>(product_body)
        .ok()
        .and_then(|d| d.id)
        .and_then(|id| id.as_str().map(str::to_owned));
    from_body
        .or_else(|| offers.first().map(|o| o.key.product_id.to_string()))
        .unwrap_or_else(|| "(unknown id)".to_owned())
}

/// Offers in the order of every body: by (merchant_id, sku), as [`Offer::sort`] orders them.
/// Borrows instead of cloning; a stable sort keeps equal keys in input order.
pub(crate) fn sorted_offers(offers: &[Offer]) -> Vec<&Offer> {
    let mut refs: Vec<&Offer> = offers.iter().collect();
    refs.sort_by(|a, b| offer_order(a).cmp(&offer_order(b)));
    refs
}

fn offer_order(o: &Offer) -> (&str, &str) {
    (o.key.merchant_id.as_str(), o.key.sku.as_str())
}

/// Minor units as a decimal string with exactly two decimals (`5995` → `59.95`), by integer
/// arithmetic so that amounts beyond 2^53 stay exact. Serializes as a JSON string without an
/// intermediate allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TwoDecimals(pub i64);

impl fmt::Display for TwoDecimals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // unsigned_abs keeps i64::MIN representable.
        let abs = self.0.unsigned_abs();
        let sign = if self.0 < 0 { "-" } else { "" };
        write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

impl Serialize for TwoDecimals {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Serializes `value` into a buffer of roughly the expected size.
pub(crate) fn to_json<T: Serialize>(value: &T, capacity: usize) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(capacity);
    serde_json::to_writer(&mut out, value)?;
    Ok(out)
}

#[cfg(test)]
mod docs;
#[cfg(test)]
mod props;
#[cfg(test)]
pub(crate) mod testdata;

#[cfg(test)]
mod tests {
    use super::testdata::*;
    use super::*;

    #[test]
    fn two_decimals_is_exact_for_every_magnitude() {
        let cases: [(i64, &str); 10] = [
            (0, "0.00"),
            (1, "0.01"),
            (10, "0.10"),
            (99, "0.99"),
            (100, "1.00"),
            (5995, "59.95"),
            (1_250, "12.50"),
            // Beyond 2^53 a float would round; integer arithmetic does not.
            (9_007_199_254_740_993, "90071992547409.93"),
            (i64::MAX, "92233720368547758.07"),
            (-5, "-0.05"),
        ];
        for (amount, want) in cases {
            assert_eq!(TwoDecimals(amount).to_string(), want, "{amount}");
        }
        assert_eq!(TwoDecimals(i64::MIN).to_string(), "-92233720368547758.08");
        assert_eq!(
            serde_json::to_string(&TwoDecimals(5995)).expect("serializes"),
            r#""59.95""#
        );
    }

    #[test]
    fn sorted_offers_matches_offer_sort() {
        let offers = vec![
            offer("P1", "m2", "P1-41", 100, "EUR", 1),
            offer("P1", "m1", "P1-42", 100, "EUR", 1),
            offer("P1", "m1", "P1-40", 100, "EUR", 1),
            offer("P1", "m10", "P1-40", 100, "EUR", 1),
        ];
        let mut owned = offers.clone();
        Offer::sort(&mut owned);
        let refs: Vec<Offer> = sorted_offers(&offers).into_iter().cloned().collect();
        assert_eq!(refs, owned);
    }

    #[test]
    fn media_type_names() {
        let types: Vec<_> = MediaType::ALL.iter().map(|m| m.content_type()).collect();
        assert_eq!(
            types,
            [
                "application/json",
                "application/x.alpha-format+json",
                "application/x.beta-format+json",
                "application/x.gamma-format+json"
            ]
        );
        assert_eq!(
            MediaType::Gamma.to_string(),
            "application/x.gamma-format+json"
        );
        assert_eq!(MediaType::Beta.name(), "beta");
    }

    #[test]
    fn json_embeds_the_stored_bytes_even_when_legacy_formats_cannot_read_them() {
        // The standard body never re-parses: odd but valid bytes pass through untouched.
        let body = br#"{"id":"P1","version":2,"name":7}"#;
        let out = render_product_offers(MediaType::Json, body, &[]).expect("json never fails");
        assert_eq!(
            std::str::from_utf8(&out).expect("utf8"),
            r#"{"product":{"id":"P1","version":2,"name":7},"offers":[]}"#
        );
    }

    #[test]
    fn legacy_formats_name_the_product_when_the_body_is_unreadable() {
        let offers = [offer("P9", "m1", "P9-40", 100, "EUR", 1)];
        for media in [MediaType::Alpha, MediaType::Beta, MediaType::Gamma] {
            let err = render_product_offers(media, b"{not json", &offers).expect_err("not json");
            let msg = err.to_string();
            assert!(msg.contains("stored product P9"), "{msg}");
            assert!(msg.contains("is not valid JSON"), "{msg}");
            assert!(msg.contains(media.content_type()), "{msg}");

            let err = render_product_offers(media, br#"{"id":"P7","name":7}"#, &[])
                .expect_err("wrong type");
            let msg = err.to_string();
            assert!(msg.contains("stored product P7"), "{msg}");
            assert!(msg.contains("wrong type"), "{msg}");

            let err = render_product_offers(media, b"", &[]).expect_err("empty");
            assert!(err.to_string().contains("(unknown id)"), "{err}");
        }
    }

    #[test]
    fn render_dispatches_to_each_format() {
        let body = product_body(&minimal_product());
        let offers = [offer("P1", "m1", "P1-40", 5995, "EUR", 3)];
        assert_eq!(
            render_product_offers(MediaType::Alpha, &body, &offers).expect("alpha"),
            alpha::render(&doc(&body), &offers).expect("alpha")
        );
        assert_eq!(
            render_product_offers(MediaType::Beta, &body, &offers).expect("beta"),
            beta::render(&doc(&body), &offers).expect("beta")
        );
        assert_eq!(
            render_product_offers(MediaType::Gamma, &body, &offers).expect("gamma"),
            gamma::render(&doc(&body), &offers).expect("gamma")
        );
        assert_eq!(
            render_product_offers(MediaType::Json, &body, &offers).expect("json"),
            standard::product_offers(&body, &offers)
        );
    }
}
