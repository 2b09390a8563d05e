//! Serving plumbing every HTTP component shares: operational endpoints, the middleware stack of
//! API routes (flow id → metrics → overload), problem+json for methods a route does not serve,
//! and serving with the limits of [`super::connections`].

use std::collections::HashSet;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tracing::Instrument;

use tokio::net::TcpListener;

use super::connections::{ServeConfig, Server};
use super::headers::{X_FLOW_ID, flow_id, new_flow_id};
use super::overload::LifoLimiter;
use super::problem::{Problem, ProblemType};
use crate::metrics::{HttpLabels, HttpMetrics, RejectLabels, ServedMedia};

pub use prapi_common::ops::Readiness;

/// Serves `app` on `listener` with the default limits of [`Server`] until `shutdown`, then
/// drains (tests and benchmarks; the components configure a [`Server`]).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    Server {
        config: ServeConfig {
            shutdown_delay: std::time::Duration::ZERO,
            ..ServeConfig::default()
        },
        ..Server::default()
    }
    .serve(listener, None, app, shutdown)
    .await
}

/// Answers axum's bare `405` (no body, only `Allow`) as the `method-not-allowed` problem, for the
/// routes outside [`api_layers`] (ops, the OpenAPI document); the API routes get the same answer
/// from their own layer, without a second boxed future per request.
pub fn problem_for_405(app: Router) -> Router {
    app.layer(axum::middleware::map_response(
        |resp: Response| async move {
            if is_bare_405(&resp) {
                method_not_allowed(resp.headers().get(header::ALLOW).cloned())
            } else {
                resp
            }
        },
    ))
}

/// Whether `resp` is axum's own `405`: the status, and no body type of ours.
fn is_bare_405(resp: &Response) -> bool {
    resp.status() == StatusCode::METHOD_NOT_ALLOWED
        && !resp.headers().contains_key(header::CONTENT_TYPE)
}

/// The `method-not-allowed` problem. `allow` is known where the answer is made outside the route
/// (`Allow` is already set); inside [`api_layers`] it is not yet, and axum adds it to whatever
/// answer lacks it, so the header is there either way.
fn method_not_allowed(allow: Option<header::HeaderValue>) -> Response {
    let mut problem = Problem::new(
        ProblemType::MethodNotAllowed,
        "this endpoint does not serve this method; Allow lists the ones it serves",
    )
    .into_response();
    if let Some(a) = allow {
        problem.headers_mut().insert(header::ALLOW, a);
    }
    problem
}

/// The paths [`ops_router`] serves; docs/openapi.yaml documents each (`tests/openapi.rs` checks).
pub const OPS_PATHS: [&str; 3] = prapi_common::ops::PATHS;

/// `/healthz` (process alive), `/readyz` (ready for traffic) and `/metrics`; not ready answers
/// with a problem+json 503 like the API does.
pub fn ops_router(registry: Arc<Registry>, readiness: Readiness) -> Router {
    let process = Arc::new(prapi_common::metrics::registry("prapi"));
    prapi_common::ops::router(
        move || prapi_common::metrics::encode(&[&process, &registry]),
        readiness,
        || {
            Problem::new(
                ProblemType::NotReady,
                "starting up: not ready for traffic yet",
            )
            .into_response()
        },
    )
}

/// Wraps API routes (and the problem+json 404 for unknown paths) in one middleware: flow id,
/// overload admission and latency metrics.
///
/// A hand-written tower layer rather than `axum::middleware::from_fn`: `from_fn` clones the inner
/// route and boxes it into a `Next` on every request, which cost about 8 % of cache-hit
/// throughput in the `serve` benchmark. This one boxes the response future once.
pub fn api_layers(routes: Router, metrics: HttpMetrics, limiter: LifoLimiter) -> Router {
    routes
        .fallback(|req: Request| async move { Problem::no_route(req.uri().path()) })
        .layer(ApiLayer {
            shared: Arc::new(ApiShared { limiter, metrics }),
        })
}

/// What every wrapped route shares.
struct ApiShared {
    limiter: LifoLimiter,
    metrics: HttpMetrics,
}

/// The layer of [`api_layers`].
#[derive(Clone)]
struct ApiLayer {
    shared: Arc<ApiShared>,
}

impl<S> tower::Layer<S> for ApiLayer {
    type Service = ApiService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ApiService {
            inner,
            shared: Arc::clone(&self.shared),
            ok: Arc::default(),
        }
    }
}

/// One route wrapped by [`ApiLayer`].
#[derive(Clone)]
struct ApiService<S> {
    inner: S,
    shared: Arc<ApiShared>,
    /// This route's label and its `200` latency histogram per served media type
    /// ([`ServedMedia::index`]), each resolved on its first `200`: a layer instance wraps one
    /// route, and looking the pair up in the metric family on every request (lock, hash, label
    /// clone) is the hot path's most common case.
    ok: Arc<[OnceLock<(&'static str, Histogram)>; ServedMedia::ALL.len()]>,
}

impl<S> tower::Service<Request> for ApiService<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
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
        let route = match self.ok.iter().find_map(OnceLock::get) {
            Some((route, _)) => route,
            None => req
                .extensions()
                .get::<MatchedPath>()
                .map_or("unmatched", |m| intern(m.as_str())),
        };
        // Every line logged while serving the request carries its flow id (the id is printable
        // ASCII by then, see `flow_id`). A span whose level is filtered out costs one check.
        let span = tracing::info_span!("request", flow_id = flow.to_str().unwrap_or_default());
        // Route futures are lazy: the handler runs only when polled, after admission.
        let handler = self.inner.call(req);
        let shared = Arc::clone(&self.shared);
        let ok = Arc::clone(&self.ok);
        Box::pin(
            async move {
                let ApiShared { limiter, metrics } = &*shared;
                // The queued gauge moves only for requests that wait: on the fast path it would be
                // two more contended atomic writes per request.
                // The gauges go down in drop guards: this future is dropped mid-way when the client
                // resets the connection, and a decrement after the `.await` would then never run.
                let admitted = match limiter.try_acquire() {
                    Some(permit) => Ok(permit),
                    None => {
                        let _queued = GaugeGuard::up(&metrics.queued);
                        limiter.acquire().await
                    }
                };
                let mut resp = match admitted {
                    Ok(permit) => {
                        let _in_flight = GaugeGuard::up(&metrics.in_flight);
                        let Ok(resp) = handler.await;
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
                        Problem::new(ProblemType::Overloaded, rejected.to_string()).into_response()
                    }
                };
                if is_bare_405(&resp) {
                    resp = method_not_allowed(None);
                }
                let seconds = start.elapsed().as_secs_f64();
                let status = resp.status().as_u16();
                let served = ServedMedia::of_content_type(
                    resp.headers()
                        .get(header::CONTENT_TYPE)
                        .map(|v| v.as_bytes()),
                );
                let media = served.as_label();
                if status == 200 {
                    ok[served.index()]
                        .get_or_init(|| {
                            let labels = HttpLabels {
                                route,
                                status,
                                media,
                            };
                            (route, metrics.requests.get_or_create(&labels).clone())
                        })
                        .1
                        .observe(seconds);
                } else {
                    metrics
                        .requests
                        .get_or_create(&HttpLabels {
                            route,
                            status,
                            media,
                        })
                        .observe(seconds);
                }
                resp.headers_mut().insert(X_FLOW_ID, flow);
                Ok(resp)
            }
            .instrument(span),
        )
    }
}

/// A gauge raised for as long as the guard lives.
struct GaugeGuard<'a>(&'a Gauge);

impl<'a> GaugeGuard<'a> {
    fn up(gauge: &'a Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
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

/// Completes on SIGTERM (how Kubernetes stops pods) or Ctrl-C, and says that draining starts.
pub async fn shutdown_signal() {
    prapi_common::shutdown::shutdown_signal().await;
    tracing::info!("shutting down: draining in-flight requests");
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use std::io::Write;
    use std::sync::Mutex;
    use tower::ServiceExt;

    /// Log lines written by the subscriber under test.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(lines: &Lines) -> Vec<serde_json::Value> {
        let bytes = lines.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        String::from_utf8(bytes)
            .expect("utf-8 logs")
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON log line"))
            .collect()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn every_line_logged_for_a_request_carries_its_flow_id() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let routes = Router::new().route(
            "/p",
            get(|| async {
                tracing::warn!("inside the handler");
                "ok"
            }),
        );
        let app = api_layers(
            routes,
            HttpMetrics::new(&mut Registry::default()),
            LifoLimiter::new(crate::http::overload::OverloadConfig::default()),
        );
        let given = Request::builder()
            .uri("/p")
            .header(X_FLOW_ID, "flow-given-1")
            .body(axum::body::Body::empty())
            .expect("request");
        let resp = app.clone().oneshot(given).await.expect("infallible");
        assert_eq!(resp.headers()[X_FLOW_ID], "flow-given-1");
        // Without one, the generated id is the one logged and echoed.
        let bare = Request::builder()
            .uri("/p")
            .body(axum::body::Body::empty())
            .expect("request");
        let resp = app.oneshot(bare).await.expect("infallible");
        let generated = resp.headers()[X_FLOW_ID]
            .to_str()
            .expect("ascii")
            .to_string();
        let flows: Vec<String> = logged(&lines)
            .iter()
            .filter(|l| l["fields"]["message"] == "inside the handler")
            .map(|l| l["span"]["flow_id"].as_str().unwrap_or("none").to_string())
            .collect();
        assert_eq!(flows, ["flow-given-1".to_string(), generated]);
    }
}
