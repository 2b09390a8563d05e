//! Serving plumbing every HTTP component shares: operational endpoints, the middleware stack of
//! API routes (flow id → metrics → overload), and graceful shutdown.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use super::headers::{X_FLOW_ID, flow_id, new_flow_id};
use super::overload::LifoLimiter;
use super::problem::Problem;
use crate::metrics::{HttpLabels, HttpMetrics, RejectLabels, encode};

/// Whether a component is ready for traffic (`/readyz`). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the component ready or not.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    /// Whether it is ready.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// `/healthz` (process alive), `/readyz` (ready for traffic) and `/metrics`.
pub fn ops_router(registry: Arc<Registry>, readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = readiness.is_ready();
                async move {
                    if ready {
                        (StatusCode::OK, "ready\n").into_response()
                    } else {
                        Problem::unavailable("not-ready", "starting up: not ready for traffic yet")
                            .into_response()
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let body = encode(&registry);
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static(
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            ),
                        )],
                        body,
                    )
                }
            }),
        )
}

/// Wraps API routes (and the problem+json 404 for unknown paths) in one middleware: flow id,
/// overload admission and latency metrics. One layer rather than three, because each
/// `from_fn` layer costs a boxed future per request on the hot path.
pub fn api_layers(routes: Router, metrics: HttpMetrics, limiter: LifoLimiter) -> Router {
    routes
        .fallback(|req: Request| async move { Problem::no_route(req.uri().path()) })
        .layer(middleware::from_fn_with_state(
            Arc::new((limiter, metrics)),
            api_middleware,
        ))
}

/// Route templates as `&'static str`, so labelling a request allocates nothing. Routes are a
/// fixed, small set, so leaking each distinct template once is bounded.
fn intern(route: &str) -> &'static str {
    static ROUTES: OnceLock<RwLock<HashSet<&'static str>>> = OnceLock::new();
    let routes = ROUTES.get_or_init(Default::default);
    if let Some(r) = routes.read().unwrap_or_else(|p| p.into_inner()).get(route) {
        return r;
    }
    let mut w = routes.write().unwrap_or_else(|p| p.into_inner());
    if let Some(r) = w.get(route) {
        return r;
    }
    let leaked: &'static str = Box::leak(route.to_owned().into_boxed_str());
    w.insert(leaked);
    leaked
}

async fn api_middleware(
    State(state): State<Arc<(LifoLimiter, HttpMetrics)>>,
    mut req: Request,
    next: Next,
) -> Response {
    let (limiter, metrics) = &*state;
    let start = Instant::now();
    // A request without a usable flow id gets one here, in its headers too, so handlers that
    // call other services (batch) forward the same id that is echoed.
    let flow = match flow_id(req.headers()) {
        Some(f) => f.clone(),
        None => {
            let f = new_flow_id();
            req.headers_mut().insert(X_FLOW_ID, f.clone());
            f
        }
    };
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| intern(m.as_str()));
    metrics.queued.inc();
    let admitted = limiter.acquire().await;
    metrics.queued.dec();
    let mut resp = match admitted {
        Ok(permit) => {
            metrics.in_flight.inc();
            let resp = next.run(req).await;
            metrics.in_flight.dec();
            drop(permit);
            resp
        }
        Err(rejected) => {
            metrics
                .rejected
                .get_or_create(&RejectLabels {
                    reason: rejected.as_label(),
                })
                .inc();
            Problem::unavailable("overloaded", rejected.to_string()).into_response()
        }
    };
    metrics
        .requests
        .get_or_create(&HttpLabels {
            route,
            status: resp.status().as_u16(),
        })
        .observe(start.elapsed().as_secs_f64());
    resp.headers_mut().insert(X_FLOW_ID, flow);
    resp
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

/// Completes on SIGTERM (how Kubernetes stops pods) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: draining in-flight requests");
}
