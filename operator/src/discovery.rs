//! Whether the cluster serves an optional API (KEDA's ScaledObject, the Prometheus Operator's
//! PodMonitor, Envoy Gateway's BackendTrafficPolicy), asked of the API server's discovery.
//!
//! Every reconcile needs these answers, and a group takes several reconciles to become Ready, so
//! asking each time cost the API server two to three discovery reads per reconcile for answers
//! that change only when someone installs or removes an add-on. [`Discovery`] keeps each answer
//! for a while (`--discovery-cache-seconds`, 10 by default): an add-on installed or removed is
//! noticed by the first reconcile after that. A failed read is never kept.

use kube::Client;
use kube::core::ApiResource;
use std::time::Duration;

/// Discovery answers, each kept for a while (or not at all).
#[derive(Clone)]
pub struct Discovery {
    client: Client,
    /// `(apiVersion, plural)` → served; `None`: ask every time.
    served: Option<moka::future::Cache<(String, String), bool>>,
}

impl Discovery {
    /// Answers kept for `ttl` (zero: [`Discovery::uncached`]).
    pub fn new(client: Client, ttl: Duration) -> Self {
        if ttl.is_zero() {
            return Self::uncached(client);
        }
        Self {
            client,
            served: Some(
                moka::future::Cache::builder()
                    .time_to_live(ttl)
                    .max_capacity(64)
                    .build(),
            ),
        }
    }

    /// Every answer read from the API server when asked.
    pub fn uncached(client: Client) -> Self {
        Self {
            client,
            served: None,
        }
    }

    /// Whether the API server serves the resource `ar` (discovery of its group version; a group
    /// version it does not know is not served).
    pub async fn served(&self, ar: &ApiResource) -> Result<bool, kube::Error> {
        let Some(cache) = &self.served else {
            return api_served(&self.client, ar).await;
        };
        let key = (ar.api_version.clone(), ar.plural.clone());
        if let Some(served) = cache.get(&key).await {
            return Ok(served);
        }
        // Reconciles missing at the same moment each read once; the error keeps its cause.
        let served = api_served(&self.client, ar).await?;
        cache.insert(key, served).await;
        Ok(served)
    }
}

async fn api_served(client: &Client, ar: &ApiResource) -> Result<bool, kube::Error> {
    match client.list_api_group_resources(&ar.api_version).await {
        Ok(list) => Ok(list.resources.iter().any(|r| r.name == ar.plural)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}
