//! The batch response body, `{"items":[...],"missing":[...],"failed":[...]}`, assembled from the
//! item bodies as the products pods sent them.
//!
//! Both bodies are a [`Chain`]: the cached item buffers themselves with the framing between them,
//! never copied into one buffer (see [`crate::http::chain`] for why that bounds the memory of
//! clients that do not read). Identity: the item bodies between the framing bytes. Gzip: the body
//! is **one** gzip member, joined by [`crate::gzip::Joiner`] from the items' cached members (their
//! compressed blocks sent as they are, their CRC-32s combined) and the JSON framing between them
//! (stored uncompressed: a few bytes per item). Nothing is decompressed or compressed per
//! request, and clients that read only one gzip member (OkHttp, many zlib-based readers) get the
//! whole body.

use bytes::Bytes;

use super::{Failure, Item};
use crate::gzip::{Joiner, Part};
use crate::http::chain::Chain;
use crate::model::ProductId;

const HEAD: &[u8] = br#"{"items":["#;
const COMMA: &[u8] = b",";
const EMPTY_TAIL: &[u8] = br#"],"missing":[],"failed":[]}"#;

/// `],"missing":[...],"failed":[...]}` for the ids whose item is missing or failed.
fn tail(ids: &[ProductId], items: &[Item]) -> Vec<u8> {
    let mut out = Vec::with_capacity(EMPTY_TAIL.len() + 8 * ids.len());
    let mut list = |name: &[u8], pick: &dyn Fn(&Item) -> bool| {
        out.extend_from_slice(name);
        let mut first = true;
        for (id, _) in ids.iter().zip(items).filter(|(_, item)| pick(item)) {
            if !first {
                out.push(b',');
            }
            first = false;
            // Product ids are [A-Za-z0-9._-]: a JSON string needs no escaping.
            out.push(b'"');
            out.extend_from_slice(id.as_str().as_bytes());
            out.push(b'"');
        }
        out.push(b']');
    };
    list(br#"],"missing":["#, &|i| matches!(i, Item::Missing));
    list(br#","failed":["#, &|i| matches!(i, Item::Failed(_)));
    out.push(b'}');
    out
}

fn found(items: &[Item]) -> impl Iterator<Item = &Bytes> {
    items.iter().filter_map(|i| match i {
        Item::Found(b) => Some(b),
        _ => None,
    })
}

/// The identity body: item bodies (identity coding) between the framing.
pub fn identity_body(ids: &[ProductId], items: &[Item]) -> Chain {
    let mut out = Chain::with_capacity(2 * items.len() + 2);
    out.push(Bytes::from_static(HEAD));
    for (n, b) in found(items).enumerate() {
        if n > 0 {
            out.push(Bytes::from_static(COMMA));
        }
        out.push(b.clone());
    }
    out.push(Bytes::from(tail(ids, items)));
    out
}

/// The gzip body: one member that decodes to exactly [`identity_body`] when each found item
/// holds a joinable member ([`crate::gzip::member`]) of the corresponding identity body.
///
/// The batch sources hand over only joinable members ([`super::classify`] converts any other
/// gzip body, [`super::CacheSource`] serves the cache's own). Should an item still not be one,
/// it is answered as JSON `null` rather than corrupting the whole body, and logged.
pub fn gzip_body(ids: &[ProductId], items: &[Item]) -> Chain {
    let tail = tail(ids, items);
    let parts: Vec<Option<Part>> = found(items).map(Part::parse).collect();
    let literals = Joiner::literal_len(HEAD.len())
        + parts
            .iter()
            .map(|p| {
                Joiner::literal_len(COMMA.len())
                    + if p.is_none() {
                        Joiner::literal_len(4)
                    } else {
                        0
                    }
            })
            .sum::<usize>()
        + Joiner::literal_len(tail.len());
    let mut joiner = Joiner::with_capacity(parts.len(), literals);
    joiner.literal(HEAD);
    for (n, part) in parts.iter().enumerate() {
        if n > 0 {
            joiner.literal(COMMA);
        }
        match part {
            Some(p) => joiner.part(p),
            None => {
                tracing::error!(
                    item = n,
                    "batch item is not a joinable gzip member; sent as null"
                );
                joiner.literal(b"null");
            }
        }
    }
    joiner.literal(&tail);
    joiner.finish()
}

/// Counts of a batch's outcomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Items served.
    pub found: usize,
    /// Ids the store does not have.
    pub missing: usize,
    /// Ids that could not be answered.
    pub failed: usize,
}

impl Tally {
    /// Counts `items`.
    pub fn of(items: &[Item]) -> Self {
        items.iter().fold(Tally::default(), |mut t, i| {
            match i {
                Item::Found(_) => t.found += 1,
                Item::Missing => t.missing += 1,
                Item::Failed(_) => t.failed += 1,
            }
            t
        })
    }
}

/// Whether every item failed because no products pod is known (the batch is then refused with a
/// 503 rather than answered with everything in `failed`).
pub fn no_endpoints(items: &[Item]) -> bool {
    !items.is_empty()
        && items
            .iter()
            .all(|i| matches!(i, Item::Failed(Failure::NoEndpoints)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    fn pid(s: &str) -> ProductId {
        ProductId::parse(s).expect("valid id")
    }

    /// The body must be one gzip member: this fails if anything follows the first.
    use crate::gzip::tests::gunzip_one as gunzip;

    /// Identity and gzip items of `bodies`, as a products pod caches them.
    fn items_of(bodies: &[(&str, Option<&str>)]) -> (Vec<ProductId>, Vec<Item>, Vec<Item>) {
        let mut ids = Vec::new();
        let (mut plain, mut gz) = (Vec::new(), Vec::new());
        for (id, body) in bodies {
            ids.push(pid(id));
            match body {
                Some(b) => {
                    let r = crate::cache::Rendered::new(Bytes::from(b.to_string()), "W/\"x\"");
                    plain.push(Item::Found(r.identity.clone()));
                    gz.push(Item::Found(r.gzip.clone()));
                }
                None if id.starts_with('F') => {
                    plain.push(Item::Failed(Failure::Deadline));
                    gz.push(Item::Failed(Failure::Deadline));
                }
                None => {
                    plain.push(Item::Missing);
                    gz.push(Item::Missing);
                }
            }
        }
        (ids, plain, gz)
    }

    #[test]
    fn identity_body_lists_items_missing_and_failed_in_order() {
        let (ids, plain, _) = items_of(&[
            ("P2", Some(r#"{"id":"P2"}"#)),
            ("M1", None),
            ("P1", Some(r#"{"id":"P1","n":[1,2]}"#)),
            ("F1", None),
            ("M0", None),
        ]);
        let body = identity_body(&ids, &plain).to_bytes();
        assert_eq!(
            std::str::from_utf8(&body).expect("utf-8"),
            r#"{"items":[{"id":"P2"},{"id":"P1","n":[1,2]}],"missing":["M1","M0"],"failed":["F1"]}"#
        );
        assert_eq!(
            Tally::of(&plain),
            Tally {
                found: 2,
                missing: 2,
                failed: 1
            }
        );
    }

    #[test]
    fn nothing_found_is_still_a_document() {
        let (ids, plain, gz) = items_of(&[("M1", None), ("F2", None)]);
        let expected = br#"{"items":[],"missing":["M1"],"failed":["F2"]}"#;
        assert_eq!(&identity_body(&ids, &plain).to_bytes()[..], expected);
        assert_eq!(gunzip(&gzip_body(&ids, &gz).to_bytes()), expected);
        assert_eq!(
            &identity_body(&[], &[]).to_bytes()[..],
            br#"{"items":[],"missing":[],"failed":[]}"#
        );
        assert!(!no_endpoints(&[]));
        assert!(no_endpoints(&[Item::Failed(Failure::NoEndpoints)]));
        assert!(!no_endpoints(&[
            Item::Failed(Failure::NoEndpoints),
            Item::Missing
        ]));
    }

    /// The items' compressed blocks are in the gzip body byte for byte: nothing is recompressed.
    #[test]
    fn gzip_body_copies_the_items_compressed_blocks() {
        let (ids, _, gz) = items_of(&[
            ("P1", Some(r#"{"a":1}"#)),
            ("M1", None),
            ("P2", Some(r#"{"b":"two"}"#)),
        ]);
        let body = gzip_body(&ids, &gz).to_bytes();
        for member in found(&gz) {
            let blocks = &member[crate::gzip::MARKED_HEADER.len()..member.len() - 10];
            assert!(
                body.windows(blocks.len()).any(|w| w == blocks),
                "item blocks not found in the body"
            );
        }
        assert_eq!(
            gunzip(&body),
            br#"{"items":[{"a":1},{"b":"two"}],"missing":["M1"],"failed":[]}"#
        );
    }

    /// Every found item goes out as the cached buffer itself (identity) or a slice of it (gzip):
    /// a response copies nothing, so a client that does not read pins no memory of its own.
    #[tokio::test]
    async fn bodies_send_the_cached_buffers_without_copying() {
        use http_body_util::BodyExt;
        let (ids, plain, gz) = items_of(&[
            ("P1", Some(r#"{"a":1}"#)),
            ("M1", None),
            ("P2", Some(r#"{"b":"two"}"#)),
        ]);
        let frames = |mut body: Chain| async move {
            let mut out = Vec::new();
            while let Some(f) = body.frame().await {
                out.push(f.expect("infallible").into_data().expect("data"));
            }
            out
        };
        let sent = frames(identity_body(&ids, &plain)).await;
        for item in found(&plain) {
            assert!(
                sent.iter()
                    .any(|f| f.as_ptr() == item.as_ptr() && f.len() == item.len()),
                "identity item copied"
            );
        }
        let sent = frames(gzip_body(&ids, &gz)).await;
        for member in found(&gz) {
            let blocks = member
                .as_ptr()
                .wrapping_add(crate::gzip::MARKED_HEADER.len());
            assert!(
                sent.iter().any(|f| f.as_ptr() == blocks),
                "gzip item blocks copied"
            );
        }
    }

    #[test]
    fn an_item_that_is_not_joinable_becomes_null() {
        let ids = [pid("P1"), pid("P2")];
        let good = crate::cache::Rendered::new(Bytes::from_static(b"{}"), "W/\"x\"").gzip;
        let items = [
            Item::Found(good),
            Item::Found(Bytes::from_static(b"\x1f\x8b garbage")),
        ];
        assert_eq!(
            gunzip(&gzip_body(&ids, &items).to_bytes()),
            br#"{"items":[{},null],"missing":[],"failed":[]}"#
        );
    }

    fn arb_item() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            3 => "[ -~]{0,300}".prop_map(|s| Some(serde_json::to_string(&s).expect("json string"))),
            1 => Just(None),
        ]
    }

    /// Cached bodies as the products cache holds them: a pool built once, of the sizes and
    /// shapes the formats produce, so the random batches below pick among real parts.
    fn pool() -> &'static [(Bytes, Bytes)] {
        static POOL: std::sync::OnceLock<Vec<(Bytes, Bytes)>> = std::sync::OnceLock::new();
        POOL.get_or_init(|| {
            (0..12)
                .map(|i| {
                    let simples: Vec<String> = (0..i * 7)
                        .map(|s| format!(r#"{{"sku":"P{i}-{s}","size":"{}"}}"#, 36 + s % 12))
                        .collect();
                    let body = format!(
                        r#"{{"product":{{"id":"P{i}","name":"Shoe {i}","simples":[{}],"version":{i}}},"offers":[]}}"#,
                        simples.join(",")
                    );
                    let r = crate::cache::Rendered::new(Bytes::from(body), "W/\"x\"");
                    (r.identity.clone(), r.gzip.clone())
                })
                .collect()
        })
    }

    proptest! {
        /// Whatever the mix of outcomes and bodies, the gzip body decodes to exactly the identity
        /// body, and the identity body is JSON with the items in order.
        #[test]
        fn gzip_decodes_to_the_identity_body(
            entries in proptest::collection::vec(arb_item(), 0..40),
        ) {
            let named: Vec<(String, Option<String>)> = entries
                .iter()
                .enumerate()
                .map(|(i, b)| (format!("{}{i}", if i % 3 == 0 { "F" } else { "P" }), b.clone()))
                .collect();
            let borrowed: Vec<(&str, Option<&str>)> =
                named.iter().map(|(i, b)| (i.as_str(), b.as_deref())).collect();
            let (ids, plain, gz) = items_of(&borrowed);
            let identity = identity_body(&ids, &plain).to_bytes();
            prop_assert_eq!(gunzip(&gzip_body(&ids, &gz).to_bytes()), identity.to_vec());
            let doc: Value = serde_json::from_slice(&identity).expect("valid JSON");
            let items: Vec<Value> = named
                .iter()
                .filter_map(|(_, b)| b.as_ref())
                .map(|b| serde_json::from_str(b).expect("item JSON"))
                .collect();
            prop_assert_eq!(&doc["items"], &Value::Array(items));
            let t = Tally::of(&plain);
            prop_assert_eq!(doc["missing"].as_array().map(Vec::len), Some(t.missing));
            prop_assert_eq!(doc["failed"].as_array().map(Vec::len), Some(t.failed));
        }

        /// Random subsets of the cached parts, in random order (repeats included), between
        /// missing and failed ids: the single gzip member decodes to the identity body, byte for
        /// byte.
        #[test]
        fn any_subset_and_order_of_cached_parts_decodes_to_the_identity_body(
            picks in proptest::collection::vec(0usize..14, 0..60),
        ) {
            let (mut ids, mut plain, mut gz) = (Vec::new(), Vec::new(), Vec::new());
            for (n, pick) in picks.iter().enumerate() {
                ids.push(pid(&format!("I{n}")));
                match pool().get(*pick) {
                    Some((identity, member)) => {
                        plain.push(Item::Found(identity.clone()));
                        gz.push(Item::Found(member.clone()));
                    }
                    None if *pick % 2 == 0 => {
                        plain.push(Item::Missing);
                        gz.push(Item::Missing);
                    }
                    None => {
                        plain.push(Item::Failed(Failure::Timeout));
                        gz.push(Item::Failed(Failure::Timeout));
                    }
                }
            }
            prop_assert_eq!(gunzip(&gzip_body(&ids, &gz).to_bytes()), identity_body(&ids, &plain).to_bytes().to_vec());
        }
    }
}
