//! HTTP/1.1 client from batch to products pods: keep-alive pools per pod, a pod chosen by the
//! [`Balancer`], one retry on the next distinct owner, optional hedging within a budget.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, uri::PathAndQuery};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;

use super::balancer::{Backend, Balancer};
use super::endpoint::Endpoint;
use super::hedge::{HedgeConfig, Hedger};

/// Client parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientConfig {
    /// Time allowed for one attempt, response body included.
    pub attempt_timeout: Duration,
    /// Largest response body accepted.
    pub max_body_bytes: usize,
    /// Idle keep-alive connections kept per pod.
    pub max_idle_per_pod: usize,
    /// How long an idle connection is kept.
    pub idle_timeout: Duration,
    /// Hedging, off when `None`.
    pub hedge: Option<HedgeConfig>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            attempt_timeout: Duration::from_secs(2),
            max_body_bytes: 16 << 20,
            max_idle_per_pod: 256,
            idle_timeout: Duration::from_secs(90),
            hedge: None,
        }
    }
}

/// A lookup that could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum LbError {
    /// No products pods are known.
    #[error("no products endpoints are known")]
    NoEndpoints,
    /// The path is not a valid origin-form path.
    #[error("invalid request path {0:?}")]
    BadPath(String),
    /// The pod could not be reached or the exchange broke.
    #[error("request to {endpoint} failed: {source}")]
    Transport {
        /// The pod.
        endpoint: Endpoint,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The attempt took longer than allowed.
    #[error("request to {endpoint} timed out after {timeout:?}")]
    Timeout {
        /// The pod.
        endpoint: Endpoint,
        /// The limit.
        timeout: Duration,
    },
}

/// A products pod's answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// The pod that answered.
    pub endpoint: Endpoint,
    /// Requests sent for this lookup (1, or 2 after a retry or hedge).
    pub attempts: u8,
}

/// Balancing HTTP client.
#[derive(Debug)]
pub struct LbClient {
    balancer: Arc<Balancer>,
    http: Client<HttpConnector, Empty<Bytes>>,
    hedger: Option<Hedger>,
    config: ClientConfig,
    retries: AtomicU64,
    hedges: AtomicU64,
}

/// Counts of extra requests sent, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientStats {
    /// Retries on the next owner after a failure or 5xx.
    pub retries: u64,
    /// Hedged requests sent.
    pub hedges: u64,
    /// Lookups sent past their ring owner because it was over the bounded load.
    pub spills: u64,
}

type Attempt = Result<Reply, LbError>;

/// An answer worth returning: anything but a failure or a 5xx (which another pod may not give).
fn good(r: &Attempt) -> bool {
    matches!(r, Ok(reply) if !reply.status.is_server_error())
}

impl LbClient {
    /// A client over `balancer`'s pods.
    pub fn new(balancer: Arc<Balancer>, config: ClientConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(config.max_idle_per_pod)
            .pool_idle_timeout(config.idle_timeout)
            .build(connector);
        Self {
            balancer,
            http,
            hedger: config.hedge.map(Hedger::new),
            config,
            retries: AtomicU64::new(0),
            hedges: AtomicU64::new(0),
        }
    }

    /// Extra requests sent so far.
    pub fn stats(&self) -> ClientStats {
        ClientStats {
            retries: self.retries.load(Ordering::Relaxed),
            hedges: self.hedges.load(Ordering::Relaxed),
            spills: self.balancer.spills(),
        }
    }

    /// The balancer choosing pods.
    pub fn balancer(&self) -> &Arc<Balancer> {
        &self.balancer
    }

    /// GETs `path_and_query` from the pod that owns `key` (any pod, by power of two choices, when
    /// `key` is `None`), forwarding `headers`. A failure or 5xx is retried once on the next
    /// distinct owner; with hedging on, a keyed lookup slower than the latency percentile is also
    /// sent to the next owner (within the budget) and the first good answer wins.
    pub async fn get(
        &self,
        key: Option<&str>,
        path_and_query: &str,
        headers: &HeaderMap,
    ) -> Result<Reply, LbError> {
        let path = PathAndQuery::try_from(path_and_query)
            .ok()
            .filter(|p| p.as_str().starts_with('/'))
            .ok_or_else(|| LbError::BadPath(path_and_query.chars().take(200).collect()))?;
        if let Some(h) = &self.hedger {
            h.on_request();
        }
        let first = self.choose(key, None).ok_or(LbError::NoEndpoints)?;
        let (result, second_used) = self.first_try(key, &first, &path, headers).await;
        if good(&result) || second_used {
            return result;
        }
        let Some(second) = self.choose(key, Some(&first)) else {
            return result;
        };
        self.retries.fetch_add(1, Ordering::Relaxed);
        let mut retry = self.attempt(second, &path, headers).await;
        if let Ok(r) = &mut retry {
            r.attempts = 2;
        }
        retry
    }

    fn choose(&self, key: Option<&str>, exclude: Option<&Backend>) -> Option<Arc<Backend>> {
        match key {
            Some(k) => self.balancer.pick(k, exclude),
            None => self.balancer.pick_any(&mut rand::rng(), exclude),
        }
    }

    /// The first attempt, hedged when possible; also says whether a second pod was tried.
    async fn first_try(
        &self,
        key: Option<&str>,
        first: &Arc<Backend>,
        path: &PathAndQuery,
        headers: &HeaderMap,
    ) -> (Attempt, bool) {
        let primary = self.attempt(Arc::clone(first), path, headers);
        let (Some(key), Some(hedger)) = (key, &self.hedger) else {
            return (primary.await, false);
        };
        let Some(delay) = hedger.delay() else {
            return (primary.await, false);
        };
        let mut primary = pin!(primary);
        tokio::select! {
            r = &mut primary => return (r, false),
            () = tokio::time::sleep(delay) => {}
        }
        let other = match self.balancer.pick(key, Some(first)) {
            Some(other) if hedger.try_spend() => other,
            _ => return (primary.await, false),
        };
        self.hedges.fetch_add(1, Ordering::Relaxed);
        let mut hedge = pin!(self.attempt(other, path, headers));
        let mark = |mut r: Attempt| {
            if let Ok(reply) = &mut r {
                reply.attempts = 2;
            }
            r
        };
        tokio::select! {
            r = &mut primary => {
                if good(&r) { return (mark(r), true) }
                let h = hedge.await;
                (mark(if good(&h) { h } else { r }), true)
            }
            h = &mut hedge => {
                if good(&h) { return (mark(h), true) }
                let r = primary.await;
                (mark(if good(&r) { r } else { h }), true)
            }
        }
    }

    async fn attempt(
        &self,
        backend: Arc<Backend>,
        path: &PathAndQuery,
        headers: &HeaderMap,
    ) -> Attempt {
        let endpoint = backend.endpoint().clone();
        let uri = format!("{}{}", endpoint.as_str(), path.as_str());
        let mut request =
            Request::get(uri)
                .body(Empty::<Bytes>::new())
                .map_err(|e| LbError::Transport {
                    endpoint: endpoint.clone(),
                    source: e.into(),
                })?;
        request.headers_mut().extend(
            headers
                .iter()
                .map(|(name, value)| (name.clone(), value.clone())),
        );
        // Latency for hedging is wall time as tokio sees it (the balancer's clock only drives
        // load windows and fade-ins, and may be a test's stopped clock).
        let started = tokio::time::Instant::now();
        let guard = self.balancer.start(backend);
        let max = self.config.max_body_bytes;
        let exchange = async {
            let response = self.http.request(request).await?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, max).collect().await?.to_bytes();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((parts, body))
        };
        let outcome = tokio::time::timeout(self.config.attempt_timeout, exchange).await;
        drop(guard);
        match outcome {
            Ok(Ok((parts, body))) => {
                if let Some(h) = &self.hedger {
                    h.record(started.elapsed(), self.balancer.clock().now_nanos());
                }
                Ok(Reply {
                    status: parts.status,
                    headers: parts.headers,
                    body,
                    endpoint,
                    attempts: 1,
                })
            }
            Ok(Err(source)) => Err(LbError::Transport { endpoint, source }),
            Err(_) => Err(LbError::Timeout {
                endpoint,
                timeout: self.config.attempt_timeout,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::balancer::BalancerConfig;
    use super::super::ring::Ring;
    use super::*;
    use crate::clock::{ManualClock, MonotonicClock};
    use axum::extract::{Path, State};
    use axum::routing::get;
    use std::sync::atomic::{AtomicU8, Ordering};

    const OK: u8 = 0;
    const UNAVAILABLE: u8 = 1;
    const SLOW: u8 = 2;

    /// A products stand-in on its own runtime, so killing it closes every connection at once.
    struct Pod {
        endpoint: Endpoint,
        mode: Arc<AtomicU8>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Pod {
        fn start() -> Self {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
            listener.set_nonblocking(true).expect("non-blocking");
            let addr = listener.local_addr().expect("local addr");
            let endpoint = Endpoint::parse(&format!("http://{addr}")).expect("endpoint");
            let mode = Arc::new(AtomicU8::new(OK));
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let name = endpoint.to_string();
            let state = (Arc::clone(&mode), name);
            let thread = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                    let app = axum::Router::new()
                        .route("/products/{id}", get(product))
                        .with_state(state);
                    tokio::select! {
                        r = axum::serve(listener, app) => r.expect("serve"),
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime cancels every connection task: the pod is gone.
                rt.shutdown_background();
            });
            Self {
                endpoint,
                mode,
                stop: Some(stop),
                thread: Some(thread),
            }
        }

        fn kill(&mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            if let Some(t) = self.thread.take() {
                t.join().expect("pod thread");
            }
        }
    }

    impl Drop for Pod {
        fn drop(&mut self) {
            self.kill();
        }
    }

    async fn product(
        State((mode, name)): State<(Arc<AtomicU8>, String)>,
        Path(id): Path<String>,
        headers: HeaderMap,
    ) -> (StatusCode, String) {
        let country = headers
            .get("x-country")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string();
        match mode.load(Ordering::SeqCst) {
            UNAVAILABLE => (StatusCode::SERVICE_UNAVAILABLE, "overloaded".into()),
            SLOW => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                (StatusCode::OK, format!("{name} {id} {country} (slow)"))
            }
            _ => (StatusCode::OK, format!("{name} {id} {country}")),
        }
    }

    /// Pods and a client whose balancer runs on a stopped clock: sequential lookups leave no
    /// occupancy behind, so every pick is the ring owner whatever the machine's speed.
    fn setup(n: usize, config: ClientConfig) -> (Vec<Pod>, LbClient) {
        let pods: Vec<Pod> = (0..n).map(|_| Pod::start()).collect();
        let clock = Arc::new(ManualClock::at(Duration::from_secs(100)));
        let balancer = Arc::new(Balancer::new(BalancerConfig::default(), clock));
        balancer.set_endpoints(&pods.iter().map(|p| p.endpoint.clone()).collect::<Vec<_>>());
        (pods, LbClient::new(balancer, config))
    }

    fn owner(pods: &[Pod], key: &str, without: Option<&Endpoint>) -> Endpoint {
        let eps: Vec<&str> = pods.iter().map(|p| p.endpoint.as_str()).collect();
        let ring = Ring::new(&eps);
        let m = ring
            .owner_among(key, |m| Some(&pods[m as usize].endpoint) != without)
            .expect("owner");
        pods[m as usize].endpoint.clone()
    }

    fn country_de() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-country", http::HeaderValue::from_static("de"));
        h
    }

    #[tokio::test]
    async fn keyed_lookups_reach_the_ring_owner() {
        let (pods, client) = setup(3, ClientConfig::default());
        for i in 0..30 {
            let id = format!("P{i}");
            let reply = client
                .get(Some(&id), &format!("/products/{id}"), &country_de())
                .await
                .expect("reply");
            let expected = owner(&pods, &id, None);
            assert_eq!(reply.status, StatusCode::OK);
            assert_eq!(reply.endpoint, expected);
            assert_eq!(reply.body, format!("{expected} {id} de"));
            assert_eq!(reply.attempts, 1);
        }
        // Keyless lookups go somewhere valid.
        let reply = client
            .get(None, "/products/X", &HeaderMap::new())
            .await
            .expect("reply");
        assert!(pods.iter().any(|p| p.endpoint == reply.endpoint));
    }

    #[tokio::test]
    async fn a_killed_pod_is_retried_on_the_next_owner() {
        let (mut pods, client) = setup(3, ClientConfig::default());
        let id = "P-killed";
        let path = format!("/products/{id}");
        let first = client
            .get(Some(id), &path, &country_de())
            .await
            .expect("reply");
        let victim = pods
            .iter_mut()
            .find(|p| p.endpoint == first.endpoint)
            .expect("owner pod");
        victim.kill();
        let dead = victim.endpoint.clone();
        let reply = client
            .get(Some(id), &path, &country_de())
            .await
            .expect("retried");
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.attempts, 2);
        // Where Skipper would send the id with the dead pod left out.
        assert_eq!(reply.endpoint, owner(&pods, id, Some(&dead)));
    }

    #[tokio::test]
    async fn a_5xx_is_retried_and_a_second_failure_is_returned() {
        let (mut pods, client) = setup(2, ClientConfig::default());
        let id = "P5";
        let path = format!("/products/{id}");
        let first_owner = owner(&pods, id, None);
        let pod = pods
            .iter()
            .find(|p| p.endpoint == first_owner)
            .expect("owner pod");
        pod.mode.store(UNAVAILABLE, Ordering::SeqCst);
        let reply = client
            .get(Some(id), &path, &country_de())
            .await
            .expect("reply");
        assert_eq!(reply.status, StatusCode::OK);
        assert_ne!(reply.endpoint, first_owner);
        assert_eq!(reply.attempts, 2);
        assert_eq!(client.stats().retries, 1);
        // Only one retry: with every pod down the lookup fails instead of looping.
        for p in &mut pods {
            p.kill();
        }
        let err = client
            .get(Some(id), &path, &country_de())
            .await
            .expect_err("all down");
        assert!(matches!(err, LbError::Transport { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_slow_owner_is_hedged_to_the_next_owner() {
        let config = ClientConfig {
            attempt_timeout: Duration::from_secs(5),
            hedge: Some(HedgeConfig {
                // Only a lookup slower than every one before it is hedged, so priming keeps
                // most of the budget it earns.
                percentile: 0.9999,
                min_samples: 20,
                ..HedgeConfig::default()
            }),
            ..ClientConfig::default()
        };
        let (pods, client) = setup(3, config);
        // 200 quick lookups: a latency history and a budget of up to ten hedges.
        for i in 0..200 {
            let id = format!("Q{i}");
            client
                .get(Some(&id), &format!("/products/{id}"), &country_de())
                .await
                .expect("reply");
        }
        let id = "P-slow";
        let slow = owner(&pods, id, None);
        pods.iter()
            .find(|p| p.endpoint == slow)
            .expect("owner pod")
            .mode
            .store(SLOW, Ordering::SeqCst);
        let before = client.stats();
        let reply = client
            .get(Some(id), &format!("/products/{id}"), &country_de())
            .await
            .expect("hedged reply");
        assert_eq!(reply.endpoint, owner(&pods, id, Some(&slow)));
        assert_eq!(reply.attempts, 2);
        assert!(!String::from_utf8_lossy(&reply.body).ends_with("(slow)"));
        assert_eq!(client.stats().hedges, before.hedges + 1);
        assert_eq!(client.stats().retries, before.retries);
    }

    #[tokio::test]
    async fn no_pods_or_a_bad_path_are_errors() {
        let balancer = Arc::new(Balancer::new(
            BalancerConfig::default(),
            Arc::new(MonotonicClock::new()),
        ));
        let client = LbClient::new(balancer, ClientConfig::default());
        let e = client
            .get(Some("P1"), "/products/P1", &HeaderMap::new())
            .await
            .expect_err("no pods");
        assert!(matches!(e, LbError::NoEndpoints));
        let e = client
            .get(Some("P1"), "products/P1", &HeaderMap::new())
            .await
            .expect_err("relative path");
        assert!(matches!(e, LbError::BadPath(_)), "{e}");
    }
}
