//! The products component: single products, offers and product-offers (docs/api.md), served from
//! the byte cache in front of a store.
//!
//! Every response body is rendered once per (resource, id, country, media type), compressed once,
//! and then served as shared bytes: a cache hit is a hash lookup, two header inserts and a
//! reference-count increment, whatever the media type.

use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use xxhash_rust::xxh64::Xxh64;

use crate::cache::{ByteCache, KeyHeap, Loader, Lookup, Rendered};
use crate::formats::{self, MediaType};
use crate::http::caching::{MaxAge, vary};
use crate::http::headers::{ServedCountries, accepts_gzip, if_none_match};
use crate::http::problem::{Problem, ProblemType};
use crate::model::{Country, Offer, ProductId, ValidationError};
use crate::store::{Store, StoreError};

/// Which document a cache entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    /// `GET /products/{id}`.
    Product,
    /// `GET /products/{id}/offers`.
    Offers,
    /// `GET /product-offers/{id}`.
    ProductOffers,
}

/// Cache key: one rendered body per (resource, id, country, media type).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// Which document.
    pub resource: Resource,
    /// The product.
    pub id: ProductId,
    /// The country (offers and product-offers only).
    pub country: Option<Country>,
    /// The media type of the body.
    pub media: MediaType,
}

impl KeyHeap for Key {
    fn heap_bytes(&self) -> usize {
        self.id.as_str().len()
    }
}

/// Loads and renders documents from a store for the cache.
pub struct StoreLoader {
    store: Arc<dyn Store>,
}

impl StoreLoader {
    /// A loader reading from `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

/// A weak ETag over what a body is made of: the resource, the media type and every version that
/// went into it. Weak because the identity and gzip bodies of one representation share it, and
/// because it must be the same on every pod for the same data (xxh64, not a per-process hasher).
fn etag(resource: Resource, media: MediaType, product_version: u64, offers: &[Offer]) -> String {
    let mut h = Xxh64::new(0);
    h.update(&[resource as u8, media as u8]);
    h.update(&product_version.to_le_bytes());
    for o in offers {
        h.update(o.key.merchant_id.as_str().as_bytes());
        h.update(&[0]);
        h.update(o.key.sku.as_bytes());
        h.update(&[0]);
        h.update(&o.version.to_le_bytes());
    }
    format!("W/\"{:016x}\"", h.digest())
}

#[async_trait]
impl Loader<Key> for StoreLoader {
    async fn load(&self, key: &Key) -> Result<Option<Rendered>, StoreError> {
        let country = match (key.resource, key.country) {
            (Resource::Product, _) => {
                let Some(p) = self.store.product(&key.id).await? else {
                    return Ok(None);
                };
                let tag = etag(Resource::Product, key.media, p.version, &[]);
                return Ok(Some(Rendered::new(p.body, tag)));
            }
            (_, Some(c)) => c,
            (_, None) => {
                return Err(StoreError::Backend(
                    format!("{:?} key without a country for {}", key.resource, key.id).into(),
                ));
            }
        };
        let po = self.store.product_offers(&key.id, country).await?;
        let Some(product) = po.product else {
            return Ok(None);
        };
        let tag = etag(key.resource, key.media, product.version, &po.offers);
        let body = match key.resource {
            Resource::Offers => formats::standard::offers(&key.id, country, &po.offers),
            _ => formats::render_product_offers(key.media, &product.body, &po.offers).map_err(
                |e| StoreError::Corrupt {
                    key: key.id.to_string(),
                    reason: e.to_string(),
                },
            )?,
        };
        Ok(Some(Rendered::new(body, tag)))
    }
}

/// The products API: cache, served countries, and the `Cache-Control` values of its answers.
pub struct ProductsApi {
    cache: ByteCache<Key>,
    countries: ServedCountries,
    max_age: MaxAge,
}

impl ProductsApi {
    /// Serves `countries` from `cache`.
    pub fn new(cache: ByteCache<Key>, countries: ServedCountries) -> Self {
        let config = cache.config();
        let max_age = MaxAge::up_to(config.ttl.max(config.negative_ttl));
        Self {
            cache,
            countries,
            max_age,
        }
    }

    /// The cache (for tests and metrics).
    pub fn cache(&self) -> &ByteCache<Key> {
        &self.cache
    }

    /// Looks a key up and answers with the cached bytes, 304, 404 or 503.
    pub async fn serve(&self, key: Key, headers: &HeaderMap) -> Response {
        let vary = vary(key.country.is_some());
        match self.cache.get(&key).await {
            Ok(Lookup::Found(r, left)) => {
                respond(&r, key.media, headers, self.max_age.header(left), vary)
            }
            Ok(Lookup::NotFound(left)) => {
                let mut resp = Problem::not_found(key.id.as_str()).into_response();
                let h = resp.headers_mut();
                h.insert(header::CACHE_CONTROL, self.max_age.header(left));
                h.insert(header::VARY, vary);
                resp
            }
            Err(e) => match &*e {
                StoreError::Corrupt { .. } => {
                    tracing::error!(error = %e, id = %key.id, "stored item cannot be served");
                    Problem::internal(format!("product {} cannot be rendered", key.id))
                        .into_response()
                }
                _ => {
                    tracing::warn!(error = %e, id = %key.id, "store unavailable and nothing cached");
                    Problem::new(
                        ProblemType::StoreUnavailable,
                        "the store is unavailable and the item is not cached",
                    )
                    .into_response()
                }
            },
        }
    }
}

/// The response for a cached body: 304 when `If-None-Match` matches, gzip bytes when accepted.
/// A 304 carries the `ETag`, `Vary` and `Cache-Control` the 200 would have (RFC 9110 §15.4.5).
pub fn respond(
    r: &Rendered,
    media: MediaType,
    headers: &HeaderMap,
    cache_control: HeaderValue,
    vary: HeaderValue,
) -> Response {
    let etag = r.etag_header.clone();
    if if_none_match(headers, &r.etag) {
        return (
            StatusCode::NOT_MODIFIED,
            [
                (header::ETAG, etag),
                (header::VARY, vary),
                (header::CACHE_CONTROL, cache_control),
            ],
        )
            .into_response();
    }
    let content_type = HeaderValue::from_static(media.content_type());
    if accepts_gzip(headers) {
        let enc = HeaderValue::from_static("gzip");
        (
            [
                (header::CONTENT_TYPE, content_type),
                (header::ETAG, etag),
                (header::VARY, vary),
                (header::CACHE_CONTROL, cache_control),
                (header::CONTENT_ENCODING, enc),
            ],
            r.gzip.clone(),
        )
            .into_response()
    } else {
        (
            [
                (header::CONTENT_TYPE, content_type),
                (header::ETAG, etag),
                (header::VARY, vary),
                (header::CACHE_CONTROL, cache_control),
            ],
            r.identity.clone(),
        )
            .into_response()
    }
}

/// Parses a path id, answering 400 with the reason.
pub fn parse_id(raw: &str) -> Result<ProductId, Problem> {
    ProductId::parse(raw).map_err(invalid_id)
}

fn invalid_id(e: ValidationError) -> Problem {
    Problem::new(ProblemType::InvalidProductId, e.to_string())
}

/// Negotiates among `allowed` media types, answering 406 listing them.
pub fn negotiate(headers: &HeaderMap, allowed: &[MediaType]) -> Result<MediaType, Problem> {
    let accept = headers
        .get(header::ACCEPT)
        .map(|v| v.to_str().unwrap_or("<not ASCII>"));
    MediaType::negotiate_among(accept, allowed).map_err(|_| {
        let supported: Vec<&str> = allowed.iter().map(|m| m.content_type()).collect();
        Problem::not_acceptable(accept.unwrap_or(""), &supported)
    })
}

const JSON_ONLY: &[MediaType] = &[MediaType::Json];

impl Resource {
    /// Whether the document differs per country (then `X-Country` is required), and the media
    /// types it is served in.
    fn shape(self) -> (bool, &'static [MediaType]) {
        match self {
            Resource::Product => (false, JSON_ONLY),
            Resource::Offers => (true, JSON_ONLY),
            Resource::ProductOffers => (true, &MediaType::ALL),
        }
    }
}

/// The cache key of a single-item request, or the problem that answers it: the path id (400),
/// the country where the document is per country (400), the negotiated media type (406), checked
/// in that order.
fn request_key(
    api: &ProductsApi,
    resource: Resource,
    id: String,
    headers: &HeaderMap,
) -> Result<Key, Problem> {
    let (per_country, media) = resource.shape();
    Ok(Key {
        resource,
        // The path's own buffer becomes the key's: one allocation per request fewer.
        id: ProductId::parse_owned(id).map_err(invalid_id)?,
        country: if per_country {
            Some(api.countries.require(headers)?)
        } else {
            None
        },
        media: negotiate(headers, media)?,
    })
}

/// The handler of `resource`'s route.
fn item(resource: Resource) -> MethodRouter<Arc<ProductsApi>> {
    get(
        move |State(api): State<Arc<ProductsApi>>,
              id: Result<Path<String>, PathRejection>,
              req: Request| async move {
            // The only way this one-segment path fails to extract is an id that does not
            // percent-decode to UTF-8 (`%FF`): an invalid id like any other, not axum's
            // plain-text 400.
            let Ok(Path(id)) = id else {
                return Problem::new(
                    ProblemType::InvalidProductId,
                    "the product id is not valid UTF-8 once percent-decoded",
                )
                .into_response();
            };
            let headers = req.headers();
            match request_key(&api, resource, id, headers) {
                Ok(key) => api.serve(key, headers).await,
                Err(p) => p.into_response(),
            }
        },
    )
}

/// The paths [`routes`] serves; docs/openapi.yaml documents each (`tests/openapi.rs` checks).
pub const PATHS: [&str; 3] = [
    "/products/{id}",
    "/products/{id}/offers",
    "/product-offers/{id}",
];

/// The single-item routes of docs/api.md (without middleware; see `http::server::api_layers`).
pub fn routes(api: Arc<ProductsApi>) -> Router {
    let [product_path, offers_path, product_offers_path] = PATHS;
    Router::new()
        .route(product_path, item(Resource::Product))
        .route(offers_path, item(Resource::Offers))
        .route(product_offers_path, item(Resource::ProductOffers))
        .with_state(api)
}
