//! What responses tell clients and CDNs about caching them (`Cache-Control`, `Vary`).
//!
//! The pod's byte cache serves a body for at most its TTL after loading it (60 s by default);
//! that bound is what makes "an update is visible within a minute" true. A downstream cache
//! that kept a body for a fixed `max-age` on top would stretch the bound to TTL + max-age. So a
//! cached answer carries `max-age` = what is left of *its* entry's life in the pod's cache: a
//! client or CDN keeps it exactly until the pod itself would stop serving it, and the end-to-end
//! bound stays the TTL.
//!
//! | response | `Cache-Control` |
//! |---|---|
//! | 200 and 304 of single GETs | `public, max-age=<rest of the entry's TTL>` |
//! | 404 `not-found` | `public, max-age=<rest of the negative TTL>` (5 s by default) |
//! | other problems, batches | `no-store` |
//!
//! Batches are not cacheable: they are assembled per request from items of different ages, and
//! may list ids under `failed` for reasons that pass within a second. Other errors depend on the
//! moment (503) or are cheap to repeat (400, 406, 421), and some statuses (404, 405) would
//! otherwise be cached heuristically by default (RFC 9111 §4.2.2).
//!
//! `Vary` names every request header a body depends on: `Accept` and `Accept-Encoding`, plus
//! `X-Country` for the endpoints that need a country (a CDN must not hand `de` offers to `at`).

use std::time::Duration;

use axum::http::HeaderValue;

/// `Cache-Control: no-store`.
pub fn no_store() -> HeaderValue {
    HeaderValue::from_static("no-store")
}

/// `Vary` of an endpoint: with `X-Country` when it needs a country.
pub fn vary(needs_country: bool) -> HeaderValue {
    HeaderValue::from_static(if needs_country {
        "Accept, Accept-Encoding, X-Country"
    } else {
        "Accept, Accept-Encoding"
    })
}

/// The longest `max-age` advertised. Values beyond it are cut to it (a shorter `max-age` is
/// always safe), which keeps the table small whatever TTL is configured.
const MAX_AGE_LIMIT: u64 = 3600;

/// `Cache-Control: public, max-age=N` for every whole second up to a bound, built once: a cache
/// hit must not format or allocate a header.
#[derive(Debug, Clone)]
pub struct MaxAge {
    values: Vec<HeaderValue>,
}

impl MaxAge {
    /// Values for `max-age` 0 up to `longest` (whole seconds; at most an hour).
    pub fn up_to(longest: Duration) -> Self {
        let values = (0..=longest.as_secs().min(MAX_AGE_LIMIT))
            .map(|s| HeaderValue::from(PublicMaxAge(s)))
            .collect();
        Self { values }
    }

    /// The header for an answer the cache serves for `left` more: its whole seconds, rounded
    /// down (a client must not keep it longer than the pod would), at most the table's bound.
    pub fn header(&self, left: Duration) -> HeaderValue {
        let last = self.values.len().saturating_sub(1);
        let at = usize::try_from(left.as_secs()).map_or(last, |s| s.min(last));
        self.values.get(at).cloned().unwrap_or_else(no_store)
    }
}

/// `public, max-age=N` as header text.
struct PublicMaxAge(u64);

impl From<PublicMaxAge> for HeaderValue {
    fn from(v: PublicMaxAge) -> Self {
        // Digits and ASCII punctuation are always a valid header value.
        HeaderValue::from_str(&format!("public, max-age={}", v.0)).unwrap_or_else(|_| no_store())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(v: &HeaderValue) -> &str {
        v.to_str().expect("ascii")
    }

    #[test]
    fn max_age_is_the_whole_seconds_left_within_the_bound() {
        let t = MaxAge::up_to(Duration::from_secs(60));
        assert_eq!(text(&t.header(Duration::ZERO)), "public, max-age=0");
        assert_eq!(
            text(&t.header(Duration::from_millis(999))),
            "public, max-age=0"
        );
        assert_eq!(
            text(&t.header(Duration::from_millis(59_999))),
            "public, max-age=59"
        );
        assert_eq!(
            text(&t.header(Duration::from_secs(60))),
            "public, max-age=60"
        );
        // More than the table holds (a refresh can never give more than the TTL, but the
        // header must not depend on that) is cut to the bound.
        assert_eq!(
            text(&t.header(Duration::from_secs(61))),
            "public, max-age=60"
        );
        assert_eq!(text(&t.header(Duration::MAX)), "public, max-age=60");
        let long = MaxAge::up_to(Duration::from_secs(86_400));
        assert_eq!(
            text(&long.header(Duration::from_secs(7200))),
            "public, max-age=3600"
        );
        let zero = MaxAge::up_to(Duration::ZERO);
        assert_eq!(
            text(&zero.header(Duration::from_secs(5))),
            "public, max-age=0"
        );
    }
}
