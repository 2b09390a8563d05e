//! The updater's consumer lag as an external metric: a small aggregated API server for
//! `external.metrics.k8s.io/v1beta1` inside `prapi-operator run`, so that the HPA the operator
//! renders for the updater works on a cluster with nothing else installed (no KEDA, no
//! Prometheus adapter).
//!
//! How a value reaches the HPA controller:
//!
//! 1. The `APIService v1beta1.external.metrics.k8s.io` (installed by the chart) tells
//!    kube-apiserver to forward that group to the operator's Service, port `https`.
//! 2. kube-apiserver forwards each request over TLS with its front-proxy client certificate and
//!    the caller in `X-Remote-*` headers; [`auth`] checks the certificate against the CA of the
//!    `kube-system/extension-apiserver-authentication` ConfigMap (re-read every
//!    [`REFRESH`]) and refuses everyone else; [`authz`] asks kube-apiserver whether the user it
//!    named may `get` the metric (SubjectAccessReview).
//! 3. [`api`] answers discovery and `GET .../namespaces/NS/prapi_updater_consumer_lag
//!    ?labelSelector=app_kubernetes_io_instance=GROUP` with the group's lag from [`readings`].
//!
//! Every replica serves, each reading lag itself (the leader is not special here), so the answer
//! does not depend on which replica the Service picked.
//!
//! The listener is a plain TLS accept loop (tokio-rustls) that hands each connection to hyper
//! with the verified peer's common name, because the handlers need it and axum's own `serve` does
//! not do TLS.

pub mod api;
pub mod auth;
pub mod authz;
pub mod readings;

use api::{ApiState, PeerName};
use auth::{FrontProxy, ServingCert, TrustError, server_config};
use axum::Extension;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

/// How often the front proxy's CA and the serving certificate files are read again (the API
/// server and cert-manager rotate them).
pub const REFRESH: Duration = Duration::from_secs(30);
/// Longest a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the serving certificate comes from.
#[derive(Clone, Debug)]
pub enum ServingSource {
    /// PEM files, read again at each refresh (a mounted Secret is updated in place).
    Files {
        /// Certificate chain.
        cert: PathBuf,
        /// Private key.
        key: PathBuf,
    },
    /// Generated once at start-up.
    SelfSigned(ServingCert),
}

impl ServingSource {
    /// The current certificate.
    pub fn load(&self) -> Result<ServingCert, anyhow::Error> {
        match self {
            ServingSource::Files { cert, key } => {
                let read = |p: &PathBuf| {
                    std::fs::read(p).map_err(|e| {
                        anyhow::Error::new(e).context(format!("reading {}", p.display()))
                    })
                };
                Ok(ServingCert::from_pem(&read(cert)?, &read(key)?)?)
            }
            ServingSource::SelfSigned(c) => Ok(c.clone()),
        }
    }
}

/// What the TLS settings were last built from: the front proxy and the serving chain.
type Trusted = (Option<FrontProxy>, Vec<Vec<u8>>);

/// The server: what the handlers share and the TLS settings new connections get.
pub struct Server {
    state: Arc<ApiState>,
    tls: arc_swap::ArcSwap<rustls::ServerConfig>,
    trusted: std::sync::Mutex<Option<Trusted>>,
}

impl Server {
    /// A server that recognises nobody until [`Server::trust`] is called.
    pub fn new(state: ApiState, serving: &ServingCert) -> Result<Arc<Self>, TrustError> {
        Ok(Arc::new(Self {
            tls: arc_swap::ArcSwap::from_pointee(server_config(serving, None)?),
            state: Arc::new(state),
            trusted: std::sync::Mutex::new(None),
        }))
    }

    /// Recognises `proxy` (none: nobody) and serves `serving` from the next connection on.
    /// Returns whether anything changed.
    pub fn trust(
        &self,
        proxy: Option<FrontProxy>,
        serving: &ServingCert,
    ) -> Result<bool, TrustError> {
        let key = (proxy.clone(), serving.chain.clone());
        if let Ok(t) = self.trusted.lock()
            && t.as_ref() == Some(&key)
        {
            return Ok(false);
        }
        self.tls
            .store(Arc::new(server_config(serving, proxy.as_ref())?));
        self.state.proxy.store(proxy.map(Arc::new));
        if let Ok(mut t) = self.trusted.lock() {
            *t = Some(key);
        }
        Ok(true)
    }

    /// Accepts connections on `listener` until `shutdown` resolves.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) {
        let router = api::router(self.state.clone());
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            let (tcp, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: wait rather than spin.
                        warn!(error = %e, "external metrics API: accepting a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = &mut shutdown => break,
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(self.tls.load_full());
            let router = router.clone();
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        return debug!(%remote, error = %e, "external metrics API: TLS handshake failed");
                    }
                    Err(_) => {
                        return debug!(%remote, "external metrics API: TLS handshake timed out");
                    }
                };
                // rustls verified the chain against the front proxy's CA; only the name is left.
                let peer = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| auth::common_name(c));
                let service = TowerToHyperService::new(router.layer(Extension(PeerName(peer))));
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HANDSHAKE_TIMEOUT)
                    .serve_connection(TokioIo::new(tls), service);
                if let Err(e) = watcher.watch(conn).await {
                    debug!(%remote, error = %e, "external metrics API: connection ended");
                }
            });
        }
        if tokio::time::timeout(Duration::from_secs(5), graceful.shutdown())
            .await
            .is_err()
        {
            debug!("external metrics API: connections still open at shutdown");
        }
    }
}

/// Reads the front proxy's description from the cluster.
pub async fn read_front_proxy(client: &kube::Client) -> anyhow::Result<FrontProxy> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), auth::AUTH_CONFIG_MAP_NAMESPACE);
    let cm = api.get(auth::AUTH_CONFIG_MAP_NAME).await.map_err(|e| {
        anyhow::Error::new(e).context(format!(
            "reading {}/{}",
            auth::AUTH_CONFIG_MAP_NAMESPACE,
            auth::AUTH_CONFIG_MAP_NAME
        ))
    })?;
    Ok(FrontProxy::from_config_map(&cm.data.unwrap_or_default())?)
}

/// Keeps the server's trust and certificate current: now, then every [`REFRESH`], until
/// `shutdown`. A failed read keeps what was last read (and logs when that starts and stops).
pub async fn refresh(
    server: Arc<Server>,
    client: kube::Client,
    serving: ServingSource,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut last: Option<(Option<FrontProxy>, ServingCert)> = None;
    let mut failing = false;
    loop {
        let proxy = read_front_proxy(&client).await;
        let cert = serving.load();
        let outcome = match (proxy, cert) {
            (Ok(p), Ok(c)) => Ok((Some(p), c)),
            (Err(e), Ok(c)) => match &last {
                // Keep the CA last read; a new certificate still applies.
                Some((p, _)) => {
                    warn_once(&mut failing, &e);
                    Ok((p.clone(), c))
                }
                None => {
                    warn_once(&mut failing, &e);
                    Ok((None, c))
                }
            },
            (_, Err(e)) => Err(e),
        };
        match outcome {
            Ok((p, c)) => {
                if p.is_some() && failing {
                    info!("external metrics API: front proxy CA read again");
                    failing = false;
                }
                match server.trust(p.clone(), &c) {
                    Ok(true) => info!(
                        front_proxy_known = p.is_some(),
                        "external metrics API: TLS settings updated"
                    ),
                    Ok(false) => {}
                    Err(e) => {
                        warn!(error = %anyhow::Error::new(e), "external metrics API: keeping the previous TLS settings")
                    }
                }
                last = Some((p, c));
            }
            Err(e) => {
                warn!(error = %e, "external metrics API: keeping the previous serving certificate")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(REFRESH) => {}
            _ = &mut shutdown => return,
        }
    }
}

fn warn_once(failing: &mut bool, e: &anyhow::Error) {
    if !*failing {
        warn!(
            error = format!("{e:#}"),
            "external metrics API: cannot read the front proxy's CA; refusing every request until it can"
        );
        *failing = true;
    }
}
