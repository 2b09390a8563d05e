//! RFC 9457 problem details: every error the API returns is `application/problem+json`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::caching::no_store;
use crate::model::truncate;

/// Media type of error bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Every problem type the API answers with: the closed list that docs/openapi.yaml documents (a
/// test checks that each one is there). The `type` URI is `https://prapi.dev/problems/<slug>`;
/// status and title are fixed per type, so clients can rely on either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProblemType {
    /// 400: a product id that is not 1–64 characters of `[A-Za-z0-9._-]`.
    InvalidProductId,
    /// 400: the endpoint needs `X-Country` and it is missing.
    MissingCountry,
    /// 400: `X-Country` is not an ISO 3166-1 alpha-2 code.
    InvalidCountry,
    /// 400: a batch without ids.
    MissingIds,
    /// 400: a batch with more ids than allowed.
    TooManyIds,
    /// 404: unknown or deleted product.
    NotFound,
    /// 404: no such endpoint.
    NoRoute,
    /// 405: the endpoint does not serve the method (`Allow` lists what it does).
    MethodNotAllowed,
    /// 406: nothing in `Accept` can be served.
    NotAcceptable,
    /// 421: this market group does not serve the country.
    CountryNotServed,
    /// 500: a stored item cannot be rendered.
    Internal,
    /// 503: no concurrency slot in time, or shed from a full queue.
    Overloaded,
    /// 503: the store failed and nothing is cached.
    StoreUnavailable,
    /// 503: a batch while no products pod is known.
    NoProductsEndpoints,
    /// 503: `/readyz` before the component is ready.
    NotReady,
}

impl ProblemType {
    /// Every type.
    pub const ALL: [ProblemType; 15] = [
        ProblemType::InvalidProductId,
        ProblemType::MissingCountry,
        ProblemType::InvalidCountry,
        ProblemType::MissingIds,
        ProblemType::TooManyIds,
        ProblemType::NotFound,
        ProblemType::NoRoute,
        ProblemType::MethodNotAllowed,
        ProblemType::NotAcceptable,
        ProblemType::CountryNotServed,
        ProblemType::Internal,
        ProblemType::Overloaded,
        ProblemType::StoreUnavailable,
        ProblemType::NoProductsEndpoints,
        ProblemType::NotReady,
    ];

    /// The stable slug, the last segment of the `type` URI.
    pub fn slug(self) -> &'static str {
        match self {
            ProblemType::InvalidProductId => "invalid-product-id",
            ProblemType::MissingCountry => "missing-country",
            ProblemType::InvalidCountry => "invalid-country",
            ProblemType::MissingIds => "missing-ids",
            ProblemType::TooManyIds => "too-many-ids",
            ProblemType::NotFound => "not-found",
            ProblemType::NoRoute => "no-route",
            ProblemType::MethodNotAllowed => "method-not-allowed",
            ProblemType::NotAcceptable => "not-acceptable",
            ProblemType::CountryNotServed => "country-not-served",
            ProblemType::Internal => "internal",
            ProblemType::Overloaded => "overloaded",
            ProblemType::StoreUnavailable => "store-unavailable",
            ProblemType::NoProductsEndpoints => "no-products-endpoints",
            ProblemType::NotReady => "not-ready",
        }
    }

    /// The HTTP status of every problem of this type.
    pub fn status(self) -> StatusCode {
        match self {
            ProblemType::InvalidProductId
            | ProblemType::MissingCountry
            | ProblemType::InvalidCountry
            | ProblemType::MissingIds
            | ProblemType::TooManyIds => StatusCode::BAD_REQUEST,
            ProblemType::NotFound | ProblemType::NoRoute => StatusCode::NOT_FOUND,
            ProblemType::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProblemType::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
            ProblemType::CountryNotServed => StatusCode::MISDIRECTED_REQUEST,
            ProblemType::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ProblemType::Overloaded
            | ProblemType::StoreUnavailable
            | ProblemType::NoProductsEndpoints
            | ProblemType::NotReady => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The short human title, the same for every occurrence of the type.
    pub fn title(self) -> &'static str {
        match self {
            ProblemType::InvalidProductId => "Invalid product id",
            ProblemType::MissingCountry => "Missing country",
            ProblemType::InvalidCountry => "Invalid country",
            ProblemType::MissingIds => "Missing ids",
            ProblemType::TooManyIds => "Too many ids",
            ProblemType::NotFound => "Product not found",
            ProblemType::NoRoute => "No such endpoint",
            ProblemType::MethodNotAllowed => "Method not allowed",
            ProblemType::NotAcceptable => "Not acceptable",
            ProblemType::CountryNotServed => "Country not served here",
            ProblemType::Internal => "Internal error",
            ProblemType::Overloaded
            | ProblemType::StoreUnavailable
            | ProblemType::NoProductsEndpoints
            | ProblemType::NotReady => "Service unavailable",
        }
    }

    /// The `type` URI.
    pub fn uri(self) -> String {
        format!("https://prapi.dev/problems/{}", self.slug())
    }
}

/// An error response: a [`ProblemType`] and what exactly was wrong with this request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// HTTP status (the type's).
    pub status: StatusCode,
    /// The problem type.
    pub kind: ProblemType,
    /// What went wrong in this request.
    pub detail: String,
    /// Seconds for `Retry-After` (every 503: the condition is expected to pass).
    pub retry_after: Option<u32>,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    type_: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
}

impl Problem {
    /// A problem of type `kind`.
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        let status = kind.status();
        Self {
            status,
            kind,
            detail: detail.into(),
            retry_after: (status == StatusCode::SERVICE_UNAVAILABLE).then_some(1),
        }
    }

    /// 400: the endpoint needs `X-Country` and it is missing.
    pub fn missing_country() -> Self {
        Self::new(
            ProblemType::MissingCountry,
            "this endpoint needs the X-Country header",
        )
    }

    /// 404: unknown product.
    pub fn not_found(id: &str) -> Self {
        Self::new(
            ProblemType::NotFound,
            format!("no product with id {:?}", truncate(id)),
        )
    }

    /// 404 for paths outside the API.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            ProblemType::NoRoute,
            format!("{} is not an endpoint of this API", truncate(path)),
        )
    }

    /// 406: nothing in `Accept` can be served; lists what can.
    pub fn not_acceptable(accept: &str, supported: &[&str]) -> Self {
        Self::new(
            ProblemType::NotAcceptable,
            format!(
                "cannot serve {:?}; supported media types: {}",
                truncate(accept),
                supported.join(", ")
            ),
        )
    }

    /// 421: this market group does not serve the requested country.
    pub fn country_not_served(country: &str, served: &str) -> Self {
        Self::new(
            ProblemType::CountryNotServed,
            format!(
                "this market group serves {served}, not {}",
                truncate(country)
            ),
        )
    }

    /// 500: a bug or corrupt data; details are logged, not leaked.
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::Internal, detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = Body {
            type_: self.kind.uri(),
            title: self.kind.title(),
            status: self.status.as_u16(),
            detail: &self.detail,
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut resp = (self.status, bytes).into_response();
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        // Errors are not for caches to keep; the one cacheable answer, `not-found`, is given
        // its max-age where the negative cache's remaining life is known (products).
        headers.insert(header::CACHE_CONTROL, no_store());
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}
