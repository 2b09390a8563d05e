//! RFC 9457 problem details: every error the API returns is `application/problem+json`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Media type of error bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error response. `kind` is a stable slug that becomes the `type` URI and that clients can
/// match on; `detail` says what exactly was wrong with this request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable slug, e.g. `invalid-product-id`.
    pub kind: &'static str,
    /// Short human title, the same for every occurrence of the kind.
    pub title: &'static str,
    /// What went wrong in this request.
    pub detail: String,
    /// Seconds for `Retry-After` (503s).
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
    fn new(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            title,
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// 400: a malformed request (bad id, bad country, too many ids, ...).
    pub fn bad_request(kind: &'static str, title: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, kind, title, detail)
    }

    /// 400: the endpoint needs `X-Country` and it is missing.
    pub fn missing_country() -> Self {
        Self::bad_request(
            "missing-country",
            "Missing country",
            "this endpoint needs the X-Country header",
        )
    }

    /// 404: unknown product.
    pub fn not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Product not found",
            format!("no product with id {id:?}"),
        )
    }

    /// 404 for paths outside the API.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "no-route",
            "No such endpoint",
            format!("{path} is not an endpoint of this API"),
        )
    }

    /// 406: nothing in `Accept` can be served; lists what can.
    pub fn not_acceptable(accept: &str, supported: &[&str]) -> Self {
        Self::new(
            StatusCode::NOT_ACCEPTABLE,
            "not-acceptable",
            "Not acceptable",
            format!(
                "cannot serve {accept:?}; supported media types: {}",
                supported.join(", ")
            ),
        )
    }

    /// 421: this market group does not serve the requested country.
    pub fn country_not_served(country: &str, served: &str) -> Self {
        Self::new(
            StatusCode::MISDIRECTED_REQUEST,
            "country-not-served",
            "Country not served here",
            format!("this market group serves {served}, not {country}"),
        )
    }

    /// 503 with `Retry-After`: overloaded, or the store failed with nothing cached.
    pub fn unavailable(kind: &'static str, detail: impl Into<String>) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                kind,
                "Service unavailable",
                detail,
            )
        }
    }

    /// 500: a bug or corrupt data; details are logged, not leaked.
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            detail,
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = Body {
            type_: format!("https://prapi.dev/problems/{}", self.kind),
            title: self.title,
            status: self.status.as_u16(),
            detail: &self.detail,
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut resp = (self.status, bytes).into_response();
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}
