//! `/healthz`, `/readyz` and `/metrics` of the operator ([`prapi_common::ops`]).

use crate::metrics::Metrics;
use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use prapi_common::ops::Readiness;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// The router: `/healthz` (process alive), `/readyz` (connected, and leading or standing by),
/// `/metrics` (Prometheus text format).
pub fn router(metrics: Arc<Metrics>, readiness: Readiness) -> Router {
    prapi_common::ops::router(
        move || metrics.encode(),
        readiness,
        || (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response(),
    )
}

/// Binds `addr` and serves until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    prapi_common::ops::serve(listener, router(metrics, readiness), shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(router: Router, path: &str) -> (StatusCode, String) {
        let resp = router
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("response");
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn health_readiness_and_metrics() {
        let metrics = Arc::new(Metrics::default());
        let readiness = Readiness::default();
        let r = router(metrics.clone(), readiness.clone());
        assert_eq!(get(r.clone(), "/healthz").await.0, StatusCode::OK);
        assert_eq!(
            get(r.clone(), "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        readiness.set(true);
        assert_eq!(get(r.clone(), "/readyz").await.0, StatusCode::OK);
        metrics.reconciled(std::time::Duration::from_millis(5), Some("InvalidSpec"));
        let (status, body) = get(r.clone(), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.contains("prapi_operator_reconcile_errors_total{reason=\"InvalidSpec\"} 1"),
            "{body}"
        );
        assert_eq!(get(r, "/nope").await.0, StatusCode::NOT_FOUND);
    }
}
