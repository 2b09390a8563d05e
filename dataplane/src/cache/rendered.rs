//! The immutable value a cache entry holds: one response body, pre-rendered and pre-compressed.

use std::sync::Arc;

use bytes::Bytes;
use flate2::Compression;
use http::HeaderValue;

/// Immutable rendered bytes of one response body: identity and gzip (compressed once, at load)
/// plus its ETag. Cloning the byte fields is cheap (reference counted); the cache hands out
/// `Arc<Rendered>` so a hit copies no body bytes at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The body as served without content coding.
    pub identity: Bytes,
    /// The same body as one complete gzip member, served for `Accept-Encoding: gzip`. It is a
    /// joinable member ([`crate::gzip`]): batch responses splice it into one member with others.
    pub gzip: Bytes,
    /// The entity tag, quoted as it goes on the wire (e.g. `"v3"` or `W/"..."`).
    pub etag: Arc<str>,
    /// The same tag as a ready header value, so a hit does not re-validate and copy it.
    pub etag_header: HeaderValue,
}

impl Rendered {
    /// Wraps a rendered body, compressing it with gzip now so no request ever has to. Both
    /// bodies are kept in allocations of their exact length ([`crate::exact`]): a serializer's
    /// or a store client's spare room would otherwise live, unweighed, as long as the entry.
    pub fn new(identity: impl Into<Vec<u8>>, etag: impl Into<Arc<str>>) -> Rendered {
        let identity = crate::exact::bytes(identity);
        // The default level: a good ratio for JSON at a cost paid once per load, not per request.
        let gzip = crate::gzip::member(&identity, Compression::default());
        let etag: Arc<str> = etag.into();
        // An ETag is quoted visible ASCII; anything else would be a bug in the caller, and an
        // empty weak tag then never matches If-None-Match instead of failing the response.
        let etag_header =
            HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("W/\"\""));
        Rendered {
            identity,
            gzip,
            etag,
            etag_header,
        }
    }

    /// Bytes this value keeps alive: both bodies and the ETag (held twice: as text and as a
    /// header value). The cache weighs entries by it.
    pub fn byte_size(&self) -> usize {
        self.identity
            .len()
            .saturating_add(self.gzip.len())
            .saturating_add(self.etag.len())
            .saturating_add(self.etag_header.len())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use flate2::read::MultiGzDecoder;
    use proptest::prelude::*;

    use super::*;

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        MultiGzDecoder::new(data)
            .read_to_end(&mut out)
            .expect("valid gzip");
        out
    }

    #[test]
    fn gzip_round_trips_and_keeps_etag() {
        let body = Bytes::from_static(br#"{"id":"P1","version":3,"name":"Air Max 90"}"#);
        let r = Rendered::new(body.clone(), "\"v3\"");
        assert_eq!(gunzip(&r.gzip), body.as_ref());
        assert_eq!(&*r.etag, "\"v3\"");
        assert_eq!(r.identity, body);
        assert_eq!(
            r.byte_size(),
            body.len() + r.gzip.len() + 2 * "\"v3\"".len()
        );
    }

    #[test]
    fn bodies_keep_no_room_beyond_their_length() {
        // A serializer's doubled buffer, and a body cut from a store client's larger buffer.
        let mut grown = Vec::with_capacity(60_000);
        grown.extend((0..31_000u32).map(|i| b"{\"k\":1}, "[(i % 9) as usize]));
        let response = Bytes::from(grown.repeat(3));
        let sliced = response.slice(10..31_010);
        drop(response);
        for body in [Bytes::from(grown), sliced] {
            let len = body.len();
            let Rendered { identity, gzip, .. } = Rendered::new(body, "\"v\"");
            let gzip_len = gzip.len();
            assert_eq!(Vec::from(identity).capacity(), len);
            assert_eq!(Vec::from(gzip).capacity(), gzip_len);
        }
    }

    #[test]
    fn empty_body_is_a_valid_gzip_member() {
        let r = Rendered::new(Bytes::new(), "\"e\"");
        assert!(!r.gzip.is_empty());
        assert!(gunzip(&r.gzip).is_empty());
    }

    #[test]
    fn repetitive_json_compresses() {
        let body: String = (0..500)
            .map(|i| format!(r#"{{"sku":"P1-{i}","size":"{i}"}},"#))
            .collect();
        let r = Rendered::new(Bytes::from(body.clone()), "\"x\"");
        assert!(
            r.gzip.len() * 4 < body.len(),
            "{} vs {}",
            r.gzip.len(),
            body.len()
        );
    }

    proptest! {
        #[test]
        fn gzip_round_trips_any_bytes(body in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let r = Rendered::new(Bytes::from(body.clone()), "\"p\"");
            prop_assert_eq!(gunzip(&r.gzip), body);
        }

        #[test]
        fn gzip_is_joinable(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let r = Rendered::new(Bytes::from(body), "\"p\"");
            prop_assert!(crate::gzip::Part::parse(&r.gzip).is_some());
        }
    }
}
