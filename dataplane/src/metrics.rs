//! Prometheus metrics shared by the serving components: HTTP latency by route and status, store
//! latency by operation, overload rejections. Each subcommand makes one [`registry`] at start (the
//! `prapi_` namespace), its components register their unprefixed names into it, and `/metrics`
//! encodes it after the build and process metrics every process exports
//! ([`prapi_common::metrics`]). docs/metrics.md lists every name.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::formats::MediaType;
use crate::http::overload::Rejected;
use crate::http::problem::PROBLEM_JSON;
use crate::model::{Country, Offer, ProductId, Write};
use crate::store::{ApplyOutcome, ProductOffers, Store, StoreError, StoredProduct};

/// Latency buckets from 50 µs to ~1.6 s: the serving path lives in the sub-millisecond range and
/// the interesting tail in the milliseconds.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// Labels of HTTP request metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// Route template, e.g. `/products/{id}` (never the raw path: ids would explode cardinality).
    pub route: &'static str,
    /// Status code.
    pub status: u16,
    /// The representation served ([`ServedMedia::as_label`]), read from the response's
    /// `Content-Type`, never from the request's `Accept`.
    pub media: &'static str,
}

/// The representation a response carries, as the `media` label of the request metrics: one of
/// the four media types, a problem+json error, or anything else (OpenAPI, empty bodies). A closed
/// set, so clients sending arbitrary `Accept` headers cannot grow the series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServedMedia {
    /// One of the API's media types.
    Api(MediaType),
    /// `application/problem+json`.
    Problem,
    /// Any other or no `Content-Type`.
    Other,
}

impl ServedMedia {
    /// Every value, in label order (`json`, `alpha`, `beta`, `gamma`, `problem`, `other`).
    pub const ALL: [ServedMedia; 6] = [
        ServedMedia::Api(MediaType::Json),
        ServedMedia::Api(MediaType::Alpha),
        ServedMedia::Api(MediaType::Beta),
        ServedMedia::Api(MediaType::Gamma),
        ServedMedia::Problem,
        ServedMedia::Other,
    ];

    /// From a response's `Content-Type` value (parameters such as `charset` ignored).
    pub fn of_content_type(value: Option<&[u8]>) -> ServedMedia {
        let Some(value) = value else {
            return ServedMedia::Other;
        };
        let essence = value.split(|b| *b == b';').next().unwrap_or_default();
        let essence = essence.trim_ascii();
        if essence.eq_ignore_ascii_case(PROBLEM_JSON.as_bytes()) {
            return ServedMedia::Problem;
        }
        MediaType::ALL
            .into_iter()
            .find(|m| essence.eq_ignore_ascii_case(m.content_type().as_bytes()))
            .map_or(ServedMedia::Other, ServedMedia::Api)
    }

    /// The label value.
    pub fn as_label(self) -> &'static str {
        match self {
            ServedMedia::Api(m) => m.name(),
            ServedMedia::Problem => "problem",
            ServedMedia::Other => "other",
        }
    }

    /// Position in [`ServedMedia::ALL`] (for per-value caches).
    pub fn index(self) -> usize {
        match self {
            ServedMedia::Api(MediaType::Json) => 0,
            ServedMedia::Api(MediaType::Alpha) => 1,
            ServedMedia::Api(MediaType::Beta) => 2,
            ServedMedia::Api(MediaType::Gamma) => 3,
            ServedMedia::Problem => 4,
            ServedMedia::Other => 5,
        }
    }
}

/// Labels of overload rejections.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    /// `queue_full` or `queue_timeout`.
    pub reason: &'static str,
}

/// HTTP serving metrics.
#[derive(Clone)]
pub struct HttpMetrics {
    /// Request duration by route, status and served media type.
    pub requests: Family<HttpLabels, Histogram, fn() -> Histogram>,
    /// Requests rejected by the overload limiter.
    pub rejected: Family<RejectLabels, Counter>,
    /// Requests holding a concurrency slot.
    pub in_flight: Gauge,
    /// Requests waiting for a slot.
    pub queued: Gauge,
}

impl HttpMetrics {
    /// Creates the metrics and registers them.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            rejected: Family::default(),
            in_flight: Gauge::default(),
            queued: Gauge::default(),
        };
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route, status and served media type",
            m.requests.clone(),
        );
        // Both reasons exist from the start, so a rate over them is 0, not absent.
        for r in [Rejected::QueueFull, Rejected::Timeout] {
            let _ = m.rejected.get_or_create(&RejectLabels {
                reason: r.as_label(),
            });
        }
        registry.register(
            "http_overload_rejected",
            "Requests rejected by overload protection",
            m.rejected.clone(),
        );
        registry.register(
            "http_in_flight_requests",
            "Requests being served",
            m.in_flight.clone(),
        );
        registry.register(
            "http_queued_requests",
            "Requests waiting for a concurrency slot",
            m.queued.clone(),
        );
        m
    }
}

/// Labels of store metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    /// Store operation.
    pub op: &'static str,
    /// `ok` or `error`.
    pub outcome: &'static str,
}

/// A [`Store`] wrapper that records the latency and outcome of every call.
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    latency: Family<StoreLabels, Histogram, fn() -> Histogram>,
}

impl MeteredStore {
    /// Wraps `inner`, registering `store_operation_duration_seconds`.
    pub fn new(inner: Arc<dyn Store>, registry: &mut Registry) -> Self {
        let latency = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "store_operation_duration_seconds",
            "Store call latency",
            latency.clone(),
        );
        Self { inner, latency }
    }

    fn observe<T>(&self, op: &'static str, start: Instant, r: &Result<T, StoreError>) {
        let outcome = if r.is_ok() { "ok" } else { "error" };
        self.latency
            .get_or_create(&StoreLabels { op, outcome })
            .observe(start.elapsed().as_secs_f64());
    }
}

#[async_trait]
impl Store for MeteredStore {
    async fn product(&self, id: &ProductId) -> Result<Option<StoredProduct>, StoreError> {
        let t = Instant::now();
        let r = self.inner.product(id).await;
        self.observe("product", t, &r);
        r
    }

    async fn offers(&self, id: &ProductId, country: Country) -> Result<Vec<Offer>, StoreError> {
        let t = Instant::now();
        let r = self.inner.offers(id, country).await;
        self.observe("offers", t, &r);
        r
    }

    async fn product_offers(
        &self,
        id: &ProductId,
        country: Country,
    ) -> Result<ProductOffers, StoreError> {
        let t = Instant::now();
        let r = self.inner.product_offers(id, country).await;
        self.observe("product_offers", t, &r);
        r
    }

    async fn apply(&self, writes: &[Write]) -> Result<ApplyOutcome, StoreError> {
        let t = Instant::now();
        let r = self.inner.apply(writes).await;
        self.observe("apply", t, &r);
        r
    }
}

/// The registry of a `prapi` process: components register `http_…`, `updater_…` and so on, and
/// export `prapi_http_…`, `prapi_updater_…`.
pub fn registry() -> Registry {
    Registry::with_prefix("prapi")
}

/// Encodes `registry` in the Prometheus text format, without the process metrics (tests of one
/// component's metrics read this).
pub fn encode(registry: &Registry) -> String {
    prapi_common::metrics::encode(&[registry])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_served_media_label_comes_from_the_content_type_and_is_a_closed_set() {
        let cases: [(Option<&str>, &str); 12] = [
            (Some("application/json"), "json"),
            (Some("application/json; charset=utf-8"), "json"),
            (Some("Application/JSON"), "json"),
            (Some("application/x.alpha-format+json"), "alpha"),
            (Some("application/x.beta-format+json"), "beta"),
            (Some(" application/x.gamma-format+json ;q=1"), "gamma"),
            (Some("application/problem+json"), "problem"),
            (Some("application/yaml"), "other"),
            (Some("text/plain; version=0.0.4"), "other"),
            (Some("application/x.delta-format+json"), "other"),
            (Some(""), "other"),
            (None, "other"),
        ];
        for (value, label) in cases {
            let media = ServedMedia::of_content_type(value.map(str::as_bytes));
            assert_eq!(media.as_label(), label, "{value:?}");
            assert_eq!(ServedMedia::ALL[media.index()], media);
        }
        let labels: Vec<&str> = ServedMedia::ALL.iter().map(|m| m.as_label()).collect();
        assert_eq!(
            labels,
            ["json", "alpha", "beta", "gamma", "problem", "other"]
        );
    }
}
