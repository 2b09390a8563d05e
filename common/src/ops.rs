//! The operational endpoints every prapi process serves: `/healthz` (the process is alive),
//! `/readyz` (it is ready for its work) and `/metrics` (Prometheus text format), and serving a
//! router until shutdown.

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::TcpListener;

/// The paths [`router`] serves: `/healthz`, `/readyz`, `/metrics`.
pub const PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The content type of `/metrics`.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether a process is ready (`/readyz`). Cheap to clone; clones share the flag.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the process ready or not.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    /// Whether it is ready.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// `/healthz`, `/readyz` and `/metrics`. `metrics` encodes the registry on each scrape;
/// `not_ready` is the 503 answer of `/readyz` (each component words it its own way).
pub fn router<M>(metrics: M, readiness: Readiness, not_ready: fn() -> Response) -> Router
where
    M: Fn() -> String + Clone + Send + Sync + 'static,
{
    let [healthz, readyz, metrics_path] = PATHS;
    Router::new()
        .route(healthz, get(|| async { "ok\n" }))
        .route(
            readyz,
            get(move || {
                let ready = readiness.is_ready();
                async move {
                    if ready {
                        (StatusCode::OK, "ready\n").into_response()
                    } else {
                        not_ready()
                    }
                }
            }),
        )
        .route(
            metrics_path,
            get(move || {
                let body = metrics();
                async move {
                    (
                        [(header::CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS))],
                        body,
                    )
                }
            }),
        )
}

/// Serves `app` on `listener` until `shutdown` completes, then drains in-flight requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(router: Router, path: &str) -> (StatusCode, String, Option<String>) {
        let resp = router
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("response");
        let status = resp.status();
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (
            status,
            String::from_utf8_lossy(&body).into_owned(),
            content_type,
        )
    }

    fn unavailable() -> Response {
        (StatusCode::SERVICE_UNAVAILABLE, "not yet\n").into_response()
    }

    #[tokio::test]
    async fn health_follows_readiness_and_metrics_are_encoded_per_scrape() {
        let readiness = Readiness::default();
        let r = router(|| "# EOF\n".to_string(), readiness.clone(), unavailable);
        assert_eq!(get(r.clone(), "/healthz").await.0, StatusCode::OK);
        let (status, body, _) = get(r.clone(), "/readyz").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "not yet\n")
        );
        readiness.set(true);
        assert_eq!(get(r.clone(), "/readyz").await.0, StatusCode::OK);
        let (status, body, content_type) = get(r.clone(), "/metrics").await;
        assert_eq!(
            (status, body.as_str(), content_type.as_deref()),
            (StatusCode::OK, "# EOF\n", Some(OPENMETRICS))
        );
        assert_eq!(get(r, "/nope").await.0, StatusCode::NOT_FOUND);
    }
}
