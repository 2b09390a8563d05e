//! The batch component: `GET /products?ids=a,b,...` and `GET /product-offers?ids=a,b,...`
//! (docs/api.md, "Batches"; docs/load-balancing.md).
//!
//! A batch is unpacked ([`ids`]), validated, fanned out as single lookups ([`fanout`]) to an
//! [`ItemSource`] — the products pods through the client-side load balancer in `prapi batch`, the
//! in-process cache in `prapi local` ([`source`]) — and aggregated in request order ([`body`]).
//! Item bodies are never parsed, decompressed or re-encoded: with `Accept-Encoding: gzip` the
//! response is the pods' pre-compressed gzip members spliced between small framing members.

pub mod body;
pub mod fanout;
pub mod ids;
pub mod metrics;
pub mod source;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;

use crate::formats::MediaType;
use crate::http::caching::{no_store, vary};
use crate::http::headers::{ServedCountries, X_COUNTRY, X_FLOW_ID, accepts_gzip, flow_id};
use crate::http::problem::{Problem, ProblemType};
use crate::model::{Country, ProductId};
use crate::products::{Resource, negotiate};
pub use fanout::fan_out;
pub use ids::{IdsError, parse_ids};
pub use metrics::{BatchMetrics, LbStatsCollector};
pub use source::{CacheSource, ItemSource, LbSource, classify};

/// Which batch endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `GET /products?ids=...`: product documents, one per id.
    Products,
    /// `GET /product-offers?ids=...`: product-offers in the negotiated media type.
    ProductOffers,
}

impl Kind {
    /// Label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Products => "products",
            Kind::ProductOffers => "product-offers",
        }
    }

    /// The single-item resource each id is looked up as.
    pub fn resource(self) -> Resource {
        match self {
            Kind::Products => Resource::Product,
            Kind::ProductOffers => Resource::ProductOffers,
        }
    }

    /// Whether the endpoint needs `X-Country`.
    pub fn needs_country(self) -> bool {
        matches!(self, Kind::ProductOffers)
    }

    /// The media types the endpoint offers.
    pub fn offered(self) -> &'static [MediaType] {
        match self {
            Kind::Products => &[MediaType::Json],
            Kind::ProductOffers => &MediaType::ALL,
        }
    }

    /// The single-item path of `id` on a products pod.
    pub fn path(self, id: &ProductId) -> String {
        match self {
            Kind::Products => format!("/products/{id}"),
            Kind::ProductOffers => format!("/product-offers/{id}"),
        }
    }
}

/// Why one id of a batch went to `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No products pod is known.
    NoEndpoints,
    /// The pods could not be reached, or the exchange broke (after the retry).
    Transport,
    /// A pod did not answer within the attempt timeout (after the retry).
    Timeout,
    /// The batch's overall deadline passed first.
    Deadline,
    /// A pod answered with a status other than 200 or the API's 404.
    Status,
    /// A pod answered 200 in another media type or content coding, or with an unusable body.
    Protocol,
    /// The store failed and the item was not cached (in-process source).
    Store,
}

impl Failure {
    /// Label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Failure::NoEndpoints => "no_endpoints",
            Failure::Transport => "transport",
            Failure::Timeout => "timeout",
            Failure::Deadline => "deadline",
            Failure::Status => "status",
            Failure::Protocol => "protocol",
            Failure::Store => "store",
        }
    }
}

/// The answer for one id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// The item body, in the batch's media type and content coding (a complete gzip member when
    /// the batch is gzip).
    Found(Bytes),
    /// The id is unknown or deleted.
    Missing,
    /// The id could not be answered.
    Failed(Failure),
}

/// What every lookup of one batch shares: endpoint, country, media type, coding, and the headers
/// forwarded to the products pods (built once per batch).
#[derive(Debug, Clone)]
pub struct Batch {
    kind: Kind,
    country: Option<Country>,
    media: MediaType,
    gzip: bool,
    forward: HeaderMap,
}

impl Batch {
    /// A batch of `kind`. The forwarded headers are `X-Country` (when given), `Accept` (the
    /// negotiated media type itself, so every pod serves the same one), `Accept-Encoding: gzip`
    /// when `gzip`, and `X-Flow-ID`.
    pub fn new(
        kind: Kind,
        country: Option<Country>,
        media: MediaType,
        gzip: bool,
        flow_id: Option<HeaderValue>,
    ) -> Self {
        let mut forward = HeaderMap::with_capacity(4);
        if let Some(v) = country.and_then(|c| HeaderValue::from_str(c.as_str()).ok()) {
            forward.insert(X_COUNTRY, v);
        }
        forward.insert(
            header::ACCEPT,
            HeaderValue::from_static(media.content_type()),
        );
        if gzip {
            forward.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        }
        if let Some(f) = flow_id {
            forward.insert(X_FLOW_ID, f);
        }
        Self {
            kind,
            country,
            media,
            gzip,
            forward,
        }
    }

    /// The endpoint.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The country (product-offers).
    pub fn country(&self) -> Option<Country> {
        self.country
    }

    /// The negotiated media type of the items.
    pub fn media(&self) -> MediaType {
        self.media
    }

    /// Whether items (and the response) are gzip.
    pub fn gzip(&self) -> bool {
        self.gzip
    }

    /// Headers sent with every lookup.
    pub fn forward_headers(&self) -> &HeaderMap {
        &self.forward
    }
}

/// Batch limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Most ids per request (as sent, duplicates included).
    pub max_items: usize,
    /// Time allowed for all lookups of a batch; ids still unanswered then go to `failed`.
    pub deadline: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_items: 100,
            deadline: Duration::from_secs(1),
        }
    }
}

/// The batch API: where items come from, served countries, limits, metrics.
pub struct BatchApi {
    source: Arc<dyn ItemSource>,
    countries: ServedCountries,
    config: BatchConfig,
    metrics: BatchMetrics,
}

impl BatchApi {
    /// A batch API over `source`.
    pub fn new(
        source: Arc<dyn ItemSource>,
        countries: ServedCountries,
        config: BatchConfig,
        metrics: BatchMetrics,
    ) -> Self {
        Self {
            source,
            countries,
            config,
            metrics,
        }
    }

    /// Validates a batch request: ids, then country, then media type (the order of the single
    /// endpoints), each failure a problem.
    fn prepare(
        &self,
        kind: Kind,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<(Batch, Vec<ProductId>), Problem> {
        let ids = parse_ids(query, self.config.max_items).map_err(|e| {
            let kind = match e {
                IdsError::Missing => ProblemType::MissingIds,
                IdsError::TooMany { .. } => ProblemType::TooManyIds,
                IdsError::Invalid { .. } => ProblemType::InvalidProductId,
            };
            Problem::new(kind, e.to_string())
        })?;
        let country = if kind.needs_country() {
            Some(self.countries.require(headers)?)
        } else {
            None
        };
        let media = negotiate(headers, kind.offered())?;
        let batch = Batch::new(
            kind,
            country,
            media,
            accepts_gzip(headers),
            flow_id(headers).cloned(),
        );
        Ok((batch, ids))
    }

    /// Serves one batch request.
    pub async fn serve(&self, kind: Kind, query: Option<&str>, headers: &HeaderMap) -> Response {
        let (batch, ids) = match self.prepare(kind, query, headers) {
            Ok(p) => p,
            Err(p) => return p.into_response(),
        };
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.config.deadline;
        let items = fan_out(self.source.as_ref(), &batch, &ids, deadline, &self.metrics).await;
        self.metrics.observe_batch(kind, &items, started.elapsed());
        if body::no_endpoints(&items) {
            return Problem::new(
                ProblemType::NoProductsEndpoints,
                "no products pods are known to serve the batch",
            )
            .into_response();
        }
        let tally = body::Tally::of(&items);
        if tally.failed > 0 {
            let first = items.iter().find_map(|i| match i {
                Item::Failed(f) => Some(f.label()),
                _ => None,
            });
            tracing::warn!(
                kind = kind.label(),
                ids = ids.len(),
                failed = tally.failed,
                first_reason = first.unwrap_or(""),
                "batch items failed"
            );
        }
        let vary = vary(kind.needs_country());
        let json = HeaderValue::from_static("application/json");
        if batch.gzip() {
            (
                [
                    (header::CONTENT_TYPE, json),
                    (header::VARY, vary),
                    (header::CACHE_CONTROL, no_store()),
                    (header::CONTENT_ENCODING, HeaderValue::from_static("gzip")),
                ],
                axum::body::Body::new(body::gzip_body(&ids, &items)),
            )
                .into_response()
        } else {
            (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, json),
                    (header::VARY, vary),
                    (header::CACHE_CONTROL, no_store()),
                ],
                axum::body::Body::new(body::identity_body(&ids, &items)),
            )
                .into_response()
        }
    }
}

async fn products(State(api): State<Arc<BatchApi>>, req: Request) -> Response {
    api.serve(Kind::Products, req.uri().query(), req.headers())
        .await
}

async fn product_offers(State(api): State<Arc<BatchApi>>, req: Request) -> Response {
    api.serve(Kind::ProductOffers, req.uri().query(), req.headers())
        .await
}

/// The batch routes of docs/api.md (without middleware; see `http::server::api_layers`).
pub fn routes(api: Arc<BatchApi>) -> Router {
    let [products_path, product_offers_path] = PATHS;
    Router::new()
        .route(products_path, get(products))
        .route(product_offers_path, get(product_offers))
        .with_state(api)
}

/// The paths [`routes`] serves; docs/openapi.yaml documents each (`tests/openapi.rs` checks).
pub const PATHS: [&str; 2] = ["/products", "/product-offers"];
