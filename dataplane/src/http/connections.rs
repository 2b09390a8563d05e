//! How the HTTP components hold their connections: accepted up to a cap, timed out when a client
//! stalls, and drained within a deadline on shutdown.
//!
//! A server exposed to clients it does not control must bound what each connection can cost.
//! `axum::serve` has no such bounds, so connections are served here through hyper's HTTP/1
//! connection builder directly:
//!
//! - **Header-read timeout** (`--header-timeout-ms`): a connection must deliver a complete request
//!   head within it, or it is closed (a slowloris client trickling header bytes holds nothing for
//!   long). Hyper starts this timer whenever the connection waits for a head, the first one or the
//!   next one on a kept-alive connection, so it is the **idle keep-alive timeout** as well: one
//!   timer, not two that could disagree.
//! - **Write timeout** (`--write-timeout-ms`): a response write that makes no progress for this
//!   long (the client stopped reading) closes the connection. Without it a client that sends a
//!   batch and never reads keeps the response alive for as long as it keeps the socket open.
//! - **Head size** (`--max-header-bytes`): a longer request head is answered `431` (a longer
//!   request line `414`) by hyper, without reaching the API.
//! - **Connection cap** (`--max-connections`): at most this many API connections are served at
//!   once. The cap is taken *before* accepting, so at the cap new connections wait in the kernel's
//!   accept backlog instead of being accepted and dropped, and the process never runs into its
//!   file descriptor limit (which would make `accept` fail for everything, probes included). At
//!   start the soft `RLIMIT_NOFILE` is raised to the hard limit ([`raise_fd_limit`]) and the cap
//!   is lowered, with a warning, if it would not leave room for the other descriptors.
//!
//! # Health under pressure: a separate ops listener
//!
//! When the API connections are all taken (by real load or by an attacker), the kubelet's probes
//! must still get through, or Kubernetes restarts a pod that is working. Two designs were
//! possible: a reserve of permits on the one listener, or a second listener. A reserve cannot
//! tell a probe from an attacker before the request head has arrived, so a client that opens
//! connections as fast as they are cut takes the reserve too. A second listener (`--ops-listen`)
//! with its own small cap ([`OPS_MAX_CONNECTIONS`]) that serves only `/healthz`, `/readyz` and
//! `/metrics` is not reachable through the API port at all: the operator points the probes and
//! the metrics scrape at it, and the group's NetworkPolicy leaves it to in-cluster callers. The
//! API port keeps serving the ops paths too, for tools that know only one port.
//!
//! # Shutdown
//!
//! On the shutdown signal (SIGTERM) the server: marks itself not ready (`/readyz` answers 503),
//! keeps serving for `--shutdown-delay-ms` while endpoints and load balancers stop sending new
//! requests, stops accepting and asks every connection to finish (kept-alive connections close
//! after their current response), and waits at most `--drain-timeout-ms` for them. Connections
//! still open then are cut, so the process exits within delay + drain, before the pod's
//! `terminationGracePeriodSeconds` runs out and the kubelet sends SIGKILL.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_io_timeout::TimeoutWriter;
use tower::ServiceExt;

use super::problem::Problem;
use prapi_common::ops::{PATHS as OPS_PATHS, Readiness};

/// Connections the ops listener serves at once: probes and scrapes need a handful.
pub const OPS_MAX_CONNECTIONS: usize = 64;

/// Descriptors kept free of the connection cap for everything else the process opens (store
/// files, the Kubernetes watch, connections to products pods, the ops listener's connections).
const OTHER_FDS: u64 = 256;

/// Hyper's smallest allowed connection buffer.
const MIN_BUF: usize = 8192;

/// Pause after a failed `accept` (out of descriptors, say) before trying again, so a persistent
/// failure does not spin a core.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Connection limits, timeouts and the shutdown sequence (docs/cli.md, "Connections and
/// shutdown").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeConfig {
    /// API connections served at once.
    pub max_connections: usize,
    /// Time a connection has to deliver a request head, first or next (the idle timeout too).
    pub header_timeout: Duration,
    /// Time a response write may make no progress before the connection is closed.
    pub write_timeout: Duration,
    /// Longest request head (request line and headers) accepted.
    pub max_header_bytes: usize,
    /// Time the server keeps serving, not ready, after the shutdown signal.
    pub shutdown_delay: Duration,
    /// Time open connections get to finish after the delay, before they are cut.
    pub drain_timeout: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            header_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            shutdown_delay: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(20),
        }
    }
}

impl ServeConfig {
    /// Seconds from the shutdown signal to exit at the latest (delay plus drain, rounded up): the
    /// least `terminationGracePeriodSeconds` that lets the drain finish.
    pub fn shutdown_seconds(&self) -> u64 {
        (self.shutdown_delay + self.drain_timeout)
            .as_millis()
            .div_ceil(1000) as u64
    }
}

/// Why a connection ended in an error, as the `reason` label of
/// `prapi_http_connection_errors_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionErrorLabels {
    /// `header_timeout`, `head_too_large` (answered 431 or 414), `malformed` (answered 400),
    /// `write_timeout`, `io`, `other`.
    pub reason: &'static str,
}

/// Connection metrics: errors by reason and open connections.
#[derive(Debug, Clone, Default)]
pub struct ConnectionMetrics {
    /// Connections that ended in an error, by reason.
    pub errors: Family<ConnectionErrorLabels, Counter>,
    /// API connections open now.
    pub open: Gauge,
}

impl ConnectionMetrics {
    /// New metrics, registered in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "http_connection_errors",
            "Connections closed on an error: timeouts, oversized or malformed request heads (answered by the HTTP layer before any route)",
            m.errors.clone(),
        );
        registry.register(
            "http_open_connections",
            "API connections open now",
            m.open.clone(),
        );
        m
    }

    fn count(&self, e: &hyper::Error) {
        let reason = if e.is_timeout() {
            "header_timeout"
        } else if e.is_parse_too_large() {
            "head_too_large"
        } else if e.is_parse() {
            "malformed"
        } else if io_kind(e) == Some(std::io::ErrorKind::TimedOut) {
            "write_timeout"
        } else if io_kind(e).is_some() {
            "io"
        } else {
            "other"
        };
        self.errors
            .get_or_create(&ConnectionErrorLabels { reason })
            .inc();
    }
}

fn io_kind(e: &hyper::Error) -> Option<std::io::ErrorKind> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        source = s.source();
    }
    None
}

/// Raises the soft limit of open files to the hard limit (where allowed) and returns the soft
/// limit in effect, `None` where it cannot be read.
pub fn raise_fd_limit() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let mut limit = getrlimit(Resource::Nofile);
        if limit.current < limit.maximum {
            let raised = rustix::process::Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => limit = getrlimit(Resource::Nofile),
                Err(e) => tracing::warn!(error = %e, "cannot raise the open file limit"),
            }
        }
        // `None` is unlimited.
        Some(limit.current.unwrap_or(u64::MAX))
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// `wanted`, lowered to leave [`OTHER_FDS`] descriptors of `fd_limit` for everything else.
pub fn connection_cap(wanted: usize, fd_limit: Option<u64>) -> usize {
    let Some(limit) = fd_limit else {
        return wanted;
    };
    let room = usize::try_from(limit.saturating_sub(OTHER_FDS)).unwrap_or(usize::MAX);
    if wanted > room {
        tracing::warn!(
            wanted,
            fd_limit = limit,
            cap = room.max(1),
            "--max-connections lowered to stay under the open file limit"
        );
    }
    wanted.min(room).max(1)
}

/// A server: its settings, the readiness it withdraws on shutdown, its metrics.
#[derive(Debug, Clone, Default)]
pub struct Server {
    /// Limits, timeouts, shutdown sequence.
    pub config: ServeConfig,
    /// Set to not ready when the shutdown signal arrives.
    pub readiness: Readiness,
    /// Connection metrics.
    pub metrics: ConnectionMetrics,
}

/// Which listener a connection came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Port {
    Api,
    Ops,
}

impl Server {
    /// Serves `app` on `api` (and its ops paths on `ops`) until `shutdown` completes, then runs
    /// the shutdown sequence of the module docs.
    pub async fn serve(
        self,
        api: TcpListener,
        ops: Option<TcpListener>,
        app: Router,
        shutdown: impl Future<Output = ()> + Send,
    ) -> std::io::Result<()> {
        let Server {
            config,
            readiness,
            metrics,
        } = self;
        let cap = connection_cap(config.max_connections, raise_fd_limit());
        let api_permits = Arc::new(Semaphore::new(cap));
        let ops_permits = Arc::new(Semaphore::new(OPS_MAX_CONNECTIONS));
        let ops_app = ops_only(app.clone());
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_timeout)
            // Bounds the read buffer (a head is refused once it outgrows it) and what the write
            // buffer queues; response bodies are queued as the cached buffers, not copied.
            .max_buf_size(config.max_header_bytes.max(MIN_BUF))
            .max_header_size(config.max_header_bytes);
        let graceful = GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        let mut draining: Option<Pin<Box<tokio::time::Sleep>>> = None;
        loop {
            let accept_ops = async {
                match &ops {
                    Some(l) => accept(l, &ops_permits).await,
                    None => std::future::pending().await,
                }
            };
            let (port, accepted) = tokio::select! {
                () = &mut shutdown, if draining.is_none() => {
                    readiness.set(false);
                    tracing::info!(
                        delay_ms = config.shutdown_delay.as_millis() as u64,
                        "shutting down: not ready, serving on while endpoints update"
                    );
                    draining = Some(Box::pin(tokio::time::sleep(config.shutdown_delay)));
                    continue;
                }
                () = async { if let Some(d) = draining.as_mut() { d.await } else { std::future::pending().await } } => break,
                a = accept(&api, &api_permits) => (Port::Api, a),
                a = accept_ops => (Port::Ops, a),
            };
            let (stream, permit) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let mut io = TimeoutWriter::new(stream);
            io.set_timeout(Some(config.write_timeout));
            let service = TowerToHyperService::new(match port {
                Port::Api => app.clone(),
                Port::Ops => ops_app.clone(),
            });
            let conn = builder.serve_connection(TokioIo::new(Box::pin(io)), service);
            let conn = graceful.watch(conn);
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let counted = port == Port::Api;
                if counted {
                    metrics.open.inc();
                }
                if let Err(e) = conn.await {
                    metrics.count(&e);
                    tracing::debug!(error = %e, "connection closed on an error");
                }
                if counted {
                    metrics.open.dec();
                }
                drop(permit);
            });
        }
        // Closing the listeners now: new connections are refused while the open ones drain.
        drop(api);
        drop(ops);
        let open = graceful.count();
        tracing::info!(
            open,
            deadline_ms = config.drain_timeout.as_millis() as u64,
            "stopped accepting; draining open connections"
        );
        if tokio::time::timeout(config.drain_timeout, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("drain deadline passed with connections still open; cutting them");
        }
        Ok(())
    }
}

/// Waits for a permit of `permits`, then accepts one connection of `listener`.
async fn accept(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
) -> std::io::Result<(TcpStream, OwnedSemaphorePermit)> {
    // The semaphore is never closed, so acquiring only fails if that changes.
    let permit = Arc::clone(permits)
        .acquire_owned()
        .await
        .map_err(std::io::Error::other)?;
    let (stream, _) = listener.accept().await?;
    Ok((stream, permit))
}

/// `app` answering only the ops paths; every other path is the API's 404 problem.
fn ops_only(app: Router) -> Router {
    Router::new().fallback_service(tower::service_fn(move |req: Request| {
        let app = app.clone();
        async move {
            if OPS_PATHS.contains(&req.uri().path()) {
                app.oneshot(req).await
            } else {
                Ok::<Response, Infallible>(Problem::no_route(req.uri().path()).into_response())
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_for_other_descriptors() {
        assert_eq!(connection_cap(4096, None), 4096);
        assert_eq!(connection_cap(4096, Some(1_048_576)), 4096);
        assert_eq!(connection_cap(4096, Some(1024)), 1024 - 256);
        assert_eq!(connection_cap(4096, Some(100)), 1);
        assert_eq!(connection_cap(100, Some(u64::MAX)), 100);
    }

    #[test]
    fn shutdown_seconds_round_up() {
        let c = |delay_ms, drain_ms| ServeConfig {
            shutdown_delay: Duration::from_millis(delay_ms),
            drain_timeout: Duration::from_millis(drain_ms),
            ..ServeConfig::default()
        };
        assert_eq!(ServeConfig::default().shutdown_seconds(), 25);
        assert_eq!(c(0, 0).shutdown_seconds(), 0);
        assert_eq!(c(1, 0).shutdown_seconds(), 1);
        assert_eq!(c(1500, 2000).shutdown_seconds(), 4);
    }
}
