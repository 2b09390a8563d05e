//! Where a batch gets its items: products pods over HTTP through the client-side load balancer
//! (`prapi batch`), or the products cache of the same process (`prapi local`).

use std::sync::Arc;

use async_trait::async_trait;
use axum::http::{HeaderMap, StatusCode, header};
use bytes::Bytes;

use super::{Batch, Failure, Item};
use crate::cache::Lookup;
use crate::http::problem::PROBLEM_JSON;
use crate::lb::{LbClient, LbError};
use crate::model::ProductId;
use crate::products::{Key, ProductsApi};

/// Answers single lookups of a batch.
#[async_trait]
pub trait ItemSource: Send + Sync + 'static {
    /// The item of `id` in the batch's resource, media type and content coding.
    async fn fetch(&self, batch: &Batch, id: &ProductId) -> Item;
}

/// Products pods behind the load balancer: each id goes to its owner on the ring (the pod the
/// ingress sends single GETs of that id to), retried once on the next owner.
#[derive(Debug)]
pub struct LbSource {
    client: Arc<LbClient>,
}

impl LbSource {
    /// Fetches through `client`.
    pub fn new(client: Arc<LbClient>) -> Self {
        Self { client }
    }

    /// The client (for its statistics).
    pub fn client(&self) -> &Arc<LbClient> {
        &self.client
    }
}

#[async_trait]
impl ItemSource for LbSource {
    async fn fetch(&self, batch: &Batch, id: &ProductId) -> Item {
        let path = batch.kind().path(id);
        match self
            .client
            .get(Some(id.as_str()), &path, batch.forward_headers())
            .await
        {
            Ok(reply) => classify(reply.status, &reply.headers, reply.body, batch),
            Err(e) => {
                tracing::debug!(id = %id, error = %e, "batch lookup failed");
                Item::Failed(match e {
                    LbError::NoEndpoints => Failure::NoEndpoints,
                    LbError::Timeout { .. } => Failure::Timeout,
                    LbError::Transport { .. } => Failure::Transport,
                    LbError::BadPath(_) => Failure::Protocol,
                })
            }
        }
    }
}

/// The media type of a `Content-Type` value, without parameters.
fn essence(value: &[u8]) -> &[u8] {
    let end = value.iter().position(|&b| b == b';').unwrap_or(value.len());
    value[..end].trim_ascii()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// What a products pod's answer means for the batch.
///
/// - 200 in the negotiated media type and the requested content coding: the body is the item.
///   A gzip body must be valid gzip; one that is not a joinable member (a pod of an older
///   version) is decompressed and compressed again here, so the batch body can still be one
///   member. Anything else in a 200 is a protocol failure: mixing media types or codings would
///   corrupt the batch body.
/// - 404 with the API's `not-found` problem: the id is missing. Any other 404 (a wrong port, a
///   proxy) is a failure, so a misrouted batch does not claim that the catalogue is empty.
/// - Every other status is a failure (5xx were already retried once by the client).
pub fn classify(status: StatusCode, headers: &HeaderMap, body: Bytes, batch: &Batch) -> Item {
    match status {
        StatusCode::OK => {
            let media_ok = headers.get(header::CONTENT_TYPE).is_some_and(|v| {
                essence(v.as_bytes()).eq_ignore_ascii_case(batch.media().content_type().as_bytes())
            });
            let gzipped = headers
                .get(header::CONTENT_ENCODING)
                .is_some_and(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"gzip"));
            if !media_ok || gzipped != batch.gzip() {
                return Item::Failed(Failure::Protocol);
            }
            let body = if gzipped {
                crate::gzip::rejoinable(body)
            } else {
                Some(body).filter(|b| !b.is_empty())
            };
            body.map_or(Item::Failed(Failure::Protocol), Item::Found)
        }
        StatusCode::NOT_FOUND => {
            let problem = headers
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| essence(v.as_bytes()) == PROBLEM_JSON.as_bytes());
            if problem && contains(&body, b"/problems/not-found\"") {
                Item::Missing
            } else {
                Item::Failed(Failure::Status)
            }
        }
        _ => Item::Failed(Failure::Status),
    }
}

/// The products cache of this very process (`prapi local`): a batch item is the same cached
/// bytes a single GET would get, with no HTTP in between.
pub struct CacheSource {
    api: Arc<ProductsApi>,
}

impl CacheSource {
    /// Reads from `api`'s cache.
    pub fn new(api: Arc<ProductsApi>) -> Self {
        Self { api }
    }
}

#[async_trait]
impl ItemSource for CacheSource {
    async fn fetch(&self, batch: &Batch, id: &ProductId) -> Item {
        let key = Key {
            resource: batch.kind().resource(),
            id: id.clone(),
            country: batch
                .kind()
                .needs_country()
                .then_some(batch.country())
                .flatten(),
            media: batch.media(),
        };
        match self.api.cache().get(&key).await {
            Ok(Lookup::Found(r, _)) => Item::Found(if batch.gzip() {
                r.gzip.clone()
            } else {
                r.identity.clone()
            }),
            Ok(Lookup::NotFound(_)) => Item::Missing,
            Err(e) => {
                tracing::warn!(id = %id, error = %e, "batch item not available from the store");
                Item::Failed(Failure::Store)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Kind;
    use crate::formats::MediaType;
    use crate::model::Country;
    use axum::http::HeaderValue;

    fn batch(media: MediaType, gzip: bool) -> Batch {
        Batch::new(
            Kind::ProductOffers,
            Country::parse("de").ok(),
            media,
            gzip,
            None,
        )
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    header::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    /// A joinable member of `{}`.
    fn gz() -> Bytes {
        crate::gzip::member(b"{}", flate2::Compression::default())
    }

    #[test]
    fn found_only_in_the_negotiated_type_and_coding() {
        let json = batch(MediaType::Json, false);
        let ok = |h: &[(&'static str, &'static str)], body: &[u8], b: &Batch| {
            classify(StatusCode::OK, &headers(h), Bytes::copy_from_slice(body), b)
        };
        let gz = gz();
        assert_eq!(
            ok(&[("content-type", "application/json")], b"{}", &json),
            Item::Found(Bytes::from_static(b"{}"))
        );
        assert_eq!(
            ok(
                &[("content-type", "Application/JSON; charset=utf-8")],
                b"{}",
                &json
            ),
            Item::Found(Bytes::from_static(b"{}"))
        );
        for (h, body) in [
            (
                &[("content-type", "application/x.gamma-format+json")][..],
                &b"{}"[..],
            ),
            (&[][..], b"{}"),
            (&[("content-type", "application/json")], b""),
            (
                &[
                    ("content-type", "application/json"),
                    ("content-encoding", "gzip"),
                ],
                &gz[..],
            ),
        ] {
            assert_eq!(ok(h, body, &json), Item::Failed(Failure::Protocol), "{h:?}");
        }
        let gamma_gz = batch(MediaType::Gamma, true);
        let h = [
            ("content-type", "application/x.gamma-format+json"),
            ("content-encoding", "gzip"),
        ];
        assert_eq!(ok(&h, &gz, &gamma_gz), Item::Found(gz.clone()));
        // A member that is not joinable (an older pod's) is made one, with the same content.
        let mut old = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut old, b"{}").expect("compress");
        let old = old.finish().expect("compress");
        let Item::Found(again) = ok(&h, &old, &gamma_gz) else {
            panic!("a valid member from an older pod is an item")
        };
        assert!(crate::gzip::Part::parse(&again).is_some());
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&again[..]), &mut plain)
            .expect("gzip");
        assert_eq!(plain, b"{}");
        // Asked for gzip: an identity body or a body that is not gzip is refused.
        assert_eq!(
            ok(&h, b"\x1f\x8b\x08 truncated", &gamma_gz),
            Item::Failed(Failure::Protocol)
        );
        assert_eq!(
            ok(&h[..1], b"{}", &gamma_gz),
            Item::Failed(Failure::Protocol)
        );
        assert_eq!(ok(&h, b"{}", &gamma_gz), Item::Failed(Failure::Protocol));
    }

    #[test]
    fn only_the_apis_not_found_means_missing() {
        let b = batch(MediaType::Json, false);
        let not_found = br#"{"type":"https://prapi.dev/problems/not-found","title":"Product not found","status":404,"detail":"no product"}"#;
        let problem = headers(&[("content-type", "application/problem+json")]);
        assert_eq!(
            classify(
                StatusCode::NOT_FOUND,
                &problem,
                Bytes::from_static(not_found),
                &b
            ),
            Item::Missing
        );
        let no_route = br#"{"type":"https://prapi.dev/problems/no-route","status":404}"#;
        assert_eq!(
            classify(
                StatusCode::NOT_FOUND,
                &problem,
                Bytes::from_static(no_route),
                &b
            ),
            Item::Failed(Failure::Status)
        );
        let plain = headers(&[("content-type", "text/plain")]);
        assert_eq!(
            classify(
                StatusCode::NOT_FOUND,
                &plain,
                Bytes::from_static(not_found),
                &b
            ),
            Item::Failed(Failure::Status)
        );
        for s in [400, 406, 421, 500, 503] {
            let status = StatusCode::from_u16(s).expect("status");
            assert_eq!(
                classify(status, &problem, Bytes::from_static(b"{}"), &b),
                Item::Failed(Failure::Status)
            );
        }
    }
}
