//! `X-Served-By`: an opt-in response header naming the pod (its host name) that answered.
//!
//! Behind an ingress that balances on a consistent hash, "which pod answered this id?" is the
//! question that shows whether the ingress and the batch component place ids on the same ring
//! (docs/load-balancing.md). Pod names are not secrets, but they tell outsiders how a deployment
//! is laid out, so the header is off unless `--served-by-header` is given; when off, nothing of
//! this module is in the request path.

use axum::Router;
use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

/// The header's name.
pub const X_SERVED_BY: &str = "x-served-by";

/// Errors naming this host.
#[derive(Debug, thiserror::Error)]
pub enum ServedByError {
    /// The host name cannot be a header value (never the case for a Kubernetes pod name).
    #[error("the host name {0:?} is not a valid header value")]
    InvalidName(String),
}

/// `router` with every response carrying `X-Served-By: <host name>` when `enabled`.
pub fn served_by(router: Router, enabled: bool) -> Result<Router, ServedByError> {
    if !enabled {
        return Ok(router);
    }
    let name = host_name();
    let value = HeaderValue::from_str(&name).map_err(|_| ServedByError::InvalidName(name))?;
    Ok(router.layer(axum::middleware::from_fn_with_state(value, stamp)))
}

async fn stamp(State(name): State<HeaderValue>, req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    response.headers_mut().insert(X_SERVED_BY, name);
    response
}

/// This host's name: in a pod, the pod's name.
fn host_name() -> String {
    #[cfg(target_os = "linux")]
    {
        rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned()
    }
    #[cfg(not(target_os = "linux"))]
    {
        std::env::var("HOSTNAME").unwrap_or_else(|_| "unknown".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt as _;

    fn app() -> Router {
        Router::new().route("/p", get(|| async { "ok" }))
    }

    async fn header(router: Router) -> Option<HeaderValue> {
        let req = Request::builder()
            .uri("/p")
            .body(Body::empty())
            .expect("request");
        let res = router.oneshot(req).await.expect("infallible");
        res.headers().get(X_SERVED_BY).cloned()
    }

    #[tokio::test]
    async fn absent_unless_enabled() {
        let off = served_by(app(), false).expect("off");
        assert_eq!(header(off).await, None);
    }

    #[tokio::test]
    async fn names_this_host_when_enabled() {
        let on = served_by(app(), true).expect("on");
        let value = header(on).await.expect("the header");
        assert_eq!(value.to_str().expect("ascii"), host_name());
        assert!(!host_name().is_empty());
    }
}
