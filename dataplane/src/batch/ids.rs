//! The `ids` query parameter of a batch request: decoded, counted, validated and deduplicated.
//! Pure, so every rule is tested without a server.

use std::collections::HashSet;

use crate::model::{MAX_ID_LEN, ProductId};

/// Why the ids of a batch request are not acceptable (each becomes a 400 problem).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdsError {
    /// No `ids` parameter, or only empty ones.
    #[error("the ids query parameter is missing or empty: expected ?ids=a,b,...")]
    Missing,
    /// More ids than the component accepts (counted as sent, duplicates included).
    #[error("{count} ids requested, at most {max} are accepted per request")]
    TooMany {
        /// Ids in the request.
        count: usize,
        /// The limit (`--max-items`).
        max: usize,
    },
    /// One of the ids is not a valid product id.
    #[error("id {position} of the list, {id:?}, is not a valid product id: {reason}")]
    Invalid {
        /// 1-based position in the list as sent.
        position: usize,
        /// The id as sent (shortened).
        id: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Parses the ids of a batch request from its raw query string.
///
/// Rules: every `ids` parameter counts (`?ids=a,b&ids=c` is `a,b,c`), values are
/// form-url-decoded (`%2C` is a comma); other parameters are ignored. The list as sent may hold
/// at most `max` ids, duplicates included, so the limit bounds the request, not what it happens
/// to deduplicate to. Every id must be a valid product id (an empty one, as in `a,,b` or a
/// trailing comma, is not). The result keeps the first occurrence of each id, in request order.
pub fn parse_ids(query: Option<&str>, max: usize) -> Result<Vec<ProductId>, IdsError> {
    let values: Vec<_> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(|(k, _)| k == "ids")
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
        .collect();
    if values.is_empty() {
        return Err(IdsError::Missing);
    }
    // Count before validating anything: an oversized request is refused at the cost of a scan.
    let count: usize = values.iter().map(|v| v.split(',').count()).sum();
    if count > max {
        return Err(IdsError::TooMany { count, max });
    }
    let mut seen: HashSet<&str> = HashSet::with_capacity(count);
    let mut out = Vec::with_capacity(count);
    let raw = values.iter().flat_map(|v| v.split(','));
    for (i, id) in raw.enumerate() {
        let parsed = ProductId::parse(id).map_err(|e| IdsError::Invalid {
            position: i + 1,
            id: id.chars().take(MAX_ID_LEN + 8).collect(),
            reason: e.reason,
        })?;
        if seen.insert(id) {
            out.push(parsed);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids(query: &str, max: usize) -> Result<Vec<String>, IdsError> {
        parse_ids(Some(query), max).map(|v| v.iter().map(|i| i.as_str().to_owned()).collect())
    }

    #[test]
    fn order_is_kept_and_duplicates_are_served_once() {
        assert_eq!(
            ids("ids=b,a,b,c,a", 100),
            Ok(vec!["b".into(), "a".into(), "c".into()])
        );
        assert_eq!(ids("ids=P1", 1), Ok(vec!["P1".into()]));
    }

    #[test]
    fn repeated_parameters_and_encoded_commas() {
        assert_eq!(
            ids("x=1&ids=a,b&y=2&ids=c%2Cd", 100),
            Ok(vec!["a".into(), "b".into(), "c".into(), "d".into()])
        );
        assert_eq!(ids("ids=P.1_-x", 100), Ok(vec!["P.1_-x".into()]));
    }

    #[test]
    fn missing_or_empty() {
        assert_eq!(parse_ids(None, 100), Err(IdsError::Missing));
        assert_eq!(ids("", 100), Err(IdsError::Missing));
        assert_eq!(ids("id=a", 100), Err(IdsError::Missing));
        assert_eq!(ids("ids=", 100), Err(IdsError::Missing));
        assert_eq!(ids("ids=&ids=", 100), Err(IdsError::Missing));
    }

    #[test]
    fn the_limit_counts_ids_as_sent() {
        let list = |n: usize| {
            (0..n)
                .map(|i| format!("P{i}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        assert_eq!(
            ids(&format!("ids={}", list(100)), 100).map(|v| v.len()),
            Ok(100)
        );
        assert_eq!(
            ids(&format!("ids={}", list(101)), 100),
            Err(IdsError::TooMany {
                count: 101,
                max: 100
            })
        );
        // Duplicates count: 101 copies of one id are 101 ids.
        let same = vec!["P1"; 101].join(",");
        assert_eq!(
            ids(&format!("ids={same}"), 100),
            Err(IdsError::TooMany {
                count: 101,
                max: 100
            })
        );
        // Over the limit wins over an invalid id: the request is refused before validating.
        assert!(matches!(
            ids("ids=a,b,bad id", 2),
            Err(IdsError::TooMany { count: 3, max: 2 })
        ));
    }

    #[test]
    fn invalid_ids_are_named_with_their_position() {
        match ids("ids=a,b%20c,d", 100) {
            Err(IdsError::Invalid { position, id, .. }) => {
                assert_eq!((position, id.as_str()), (2, "b c"));
            }
            other => panic!("{other:?}"),
        }
        for (q, pos) in [
            ("ids=a,,b", 2),
            ("ids=a,", 2),
            ("ids=,a", 1),
            ("ids=%C3%A9", 1),
            ("ids=a/b", 1),
        ] {
            assert!(
                matches!(ids(q, 100), Err(IdsError::Invalid { position, .. }) if position == pos),
                "{q}"
            );
        }
        let long = "x".repeat(65);
        let err = ids(&format!("ids={long}"), 100).expect_err("too long");
        assert!(err.to_string().contains("not a valid product id"), "{err}");
    }

    proptest! {
        /// For any list of valid ids within the limit: the result is the list without later
        /// duplicates, in order.
        #[test]
        fn dedup_keeps_first_occurrences_in_order(
            list in proptest::collection::vec("[A-Za-z0-9._-]{1,8}", 1..60),
        ) {
            let query = format!("ids={}", list.join(","));
            let got = ids(&query, 100).expect("valid list");
            let mut expected: Vec<String> = Vec::new();
            for id in &list {
                if !expected.contains(id) {
                    expected.push(id.clone());
                }
            }
            prop_assert_eq!(got, expected);
        }

        /// Any id outside the grammar is refused, wherever it sits in the list.
        #[test]
        fn one_bad_id_refuses_the_request(
            before in proptest::collection::vec("[a-z0-9]{1,5}", 0..5),
            bad in "[ !#$&'()*+/:;=?@\\[\\]]{1,3}",
            after in proptest::collection::vec("[a-z0-9]{1,5}", 0..5),
        ) {
            let mut list = before.clone();
            list.push(bad);
            list.extend(after);
            let encoded: Vec<String> = list
                .iter()
                .map(|s| form_urlencoded::byte_serialize(s.as_bytes()).collect())
                .collect();
            let query = format!("ids={}", encoded.join(","));
            let is_invalid_at = matches!(
                ids(&query, 100),
                Err(IdsError::Invalid { position, .. }) if position == before.len() + 1
            );
            prop_assert!(is_invalid_at);
        }
    }
}
