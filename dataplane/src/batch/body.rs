//! The batch response body, `{"items":[...],"missing":[...],"failed":[...]}`, assembled from the
//! item bodies as the products pods sent them.
//!
//! Identity: the item bodies are copied between the framing bytes. Gzip: the body is a multi-member
//! gzip stream (RFC 1952 §2.2: a gzip file is a series of members, and decoders concatenate their
//! outputs). The item bodies are the pods' own pre-compressed members, copied as they are; the
//! framing between them is made of small members of our own. The head and the comma are constant
//! and compressed once per process; the tail is constant too unless some ids are missing or
//! failed, and then it is the only thing compressed per request. Nothing is ever decompressed.

use std::io::Write as _;
use std::sync::OnceLock;

use bytes::{BufMut, Bytes, BytesMut};
use flate2::Compression;
use flate2::write::GzEncoder;

use super::{Failure, Item};
use crate::model::ProductId;

const HEAD: &[u8] = br#"{"items":["#;
const COMMA: &[u8] = b",";
const EMPTY_TAIL: &[u8] = br#"],"missing":[],"failed":[]}"#;

/// `data` as one complete gzip member.
pub fn gzip_member(data: &[u8]) -> Bytes {
    let mut enc = GzEncoder::new(Vec::with_capacity(data.len() / 2 + 32), Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(data);
    Bytes::from(enc.finish().unwrap_or_default())
}

fn constant(cell: &'static OnceLock<Bytes>, data: &[u8]) -> Bytes {
    cell.get_or_init(|| gzip_member(data)).clone()
}

fn head_gz() -> Bytes {
    static CELL: OnceLock<Bytes> = OnceLock::new();
    constant(&CELL, HEAD)
}

fn comma_gz() -> Bytes {
    static CELL: OnceLock<Bytes> = OnceLock::new();
    constant(&CELL, COMMA)
}

fn empty_tail_gz() -> Bytes {
    static CELL: OnceLock<Bytes> = OnceLock::new();
    constant(&CELL, EMPTY_TAIL)
}

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

fn all_found(items: &[Item]) -> bool {
    items.iter().all(|i| matches!(i, Item::Found(_)))
}

/// The identity body: item bodies (identity coding) between the framing.
pub fn identity_body(ids: &[ProductId], items: &[Item]) -> Bytes {
    let tail = tail(ids, items);
    let len = HEAD.len() + found(items).map(|b| b.len() + 1).sum::<usize>() + tail.len();
    let mut out = BytesMut::with_capacity(len);
    out.put_slice(HEAD);
    for (n, b) in found(items).enumerate() {
        if n > 0 {
            out.put_slice(COMMA);
        }
        out.put_slice(b);
    }
    out.put_slice(&tail);
    out.freeze()
}

/// The gzip body: a multi-member stream that decodes to exactly [`identity_body`] when each
/// found item holds the gzip member of the corresponding identity body.
pub fn gzip_body(ids: &[ProductId], items: &[Item]) -> Bytes {
    let tail = if all_found(items) {
        empty_tail_gz()
    } else {
        gzip_member(&tail(ids, items))
    };
    let (head, comma) = (head_gz(), comma_gz());
    let len = head.len() + found(items).map(|b| b.len() + comma.len()).sum::<usize>() + tail.len();
    let mut out = BytesMut::with_capacity(len);
    out.put_slice(&head);
    for (n, b) in found(items).enumerate() {
        if n > 0 {
            out.put_slice(&comma);
        }
        out.put_slice(b);
    }
    out.put_slice(&tail);
    out.freeze()
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
    use flate2::read::MultiGzDecoder;
    use proptest::prelude::*;
    use serde_json::Value;
    use std::io::Read;

    fn pid(s: &str) -> ProductId {
        ProductId::parse(s).expect("valid id")
    }

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        MultiGzDecoder::new(data)
            .read_to_end(&mut out)
            .expect("valid multi-member gzip");
        out
    }

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
        let body = identity_body(&ids, &plain);
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
        assert_eq!(&identity_body(&ids, &plain)[..], expected);
        assert_eq!(gunzip(&gzip_body(&ids, &gz)), expected);
        assert_eq!(
            &identity_body(&[], &[])[..],
            br#"{"items":[],"missing":[],"failed":[]}"#
        );
        assert!(!no_endpoints(&[]));
        assert!(no_endpoints(&[Item::Failed(Failure::NoEndpoints)]));
        assert!(!no_endpoints(&[
            Item::Failed(Failure::NoEndpoints),
            Item::Missing
        ]));
    }

    /// The item members are in the gzip body byte for byte, between our framing members.
    #[test]
    fn gzip_body_passes_item_members_through() {
        let (ids, _, gz) = items_of(&[
            ("P1", Some(r#"{"a":1}"#)),
            ("M1", None),
            ("P2", Some(r#"{"b":"two"}"#)),
        ]);
        let body = gzip_body(&ids, &gz);
        let members: Vec<&Bytes> = found(&gz).collect();
        let mut expected = Vec::new();
        expected.extend_from_slice(&head_gz());
        expected.extend_from_slice(members[0]);
        expected.extend_from_slice(&comma_gz());
        expected.extend_from_slice(members[1]);
        expected.extend_from_slice(&gzip_member(br#"],"missing":["M1"],"failed":[]}"#));
        assert_eq!(&body[..], &expected[..]);
    }

    fn arb_item() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            3 => "[ -~]{0,300}".prop_map(|s| Some(serde_json::to_string(&s).expect("json string"))),
            1 => Just(None),
        ]
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
            let identity = identity_body(&ids, &plain);
            prop_assert_eq!(gunzip(&gzip_body(&ids, &gz)), identity.to_vec());
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
    }
}
