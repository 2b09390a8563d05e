//! The API contract, `docs/openapi.yaml`, compiled into the binary and served at
//! `/openapi.yaml` by `prapi products` and `prapi local`, so a client team can generate a client
//! from the very server it talks to. The test `tests/openapi.rs` keeps the document and the code
//! in step (routes, problem types, response bodies).

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::routing::get;

/// The document, as in the repository at build time.
pub const DOCUMENT: &str = include_str!("../../../docs/openapi.yaml");

/// Where it is served.
pub const PATH: &str = "/openapi.yaml";

/// The route serving [`DOCUMENT`]. Like the operational endpoints it is outside the API's
/// middleware: it is never queued and never counted as API traffic.
pub fn routes() -> Router {
    Router::new().route(
        PATH,
        get(|| async {
            (
                [
                    // RFC 9512's media type for YAML.
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/yaml"),
                    ),
                    // It changes only with a deployment.
                    (
                        header::CACHE_CONTROL,
                        HeaderValue::from_static("public, max-age=300"),
                    ),
                ],
                DOCUMENT,
            )
        }),
    )
}
