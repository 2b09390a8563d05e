//! What integration tests share beyond finding the environment (feature `kit`): one bound on
//! waiting ([`PATIENCE`]) and one way to wait ([`eventually`]), a client for the environment's
//! cluster ([`TestEnv::kube_client`]), and a namespace of the test's own that is deleted when the
//! test ends, also when it panics ([`TestNamespace`]); one reading of Prometheus text
//! ([`metric_sum`]).

use crate::{TestEnv, unique_name};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::ApiResource;
use kube::{Client, Config};
use serde_json::json;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Bound on waiting for the environment, so a broken one fails the test instead of hanging it.
/// Not a performance assertion: nothing is asserted about how long a wait took.
pub const PATIENCE: Duration = Duration::from_secs(180);

/// How often [`eventually`] looks again.
const POLL: Duration = Duration::from_millis(100);

/// Polls `check` until it returns `Some`, within [`PATIENCE`]; panics naming `what` otherwise.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_within(PATIENCE, what, check).await
}

/// Polls `check` until it returns `Some`, within `limit` (for waits that are part of what a test
/// proves, such as "within the lease duration").
pub async fn eventually_within<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    tokio::time::timeout(limit, async {
        loop {
            if let Some(v) = check().await {
                return v;
            }
            tokio::time::sleep(POLL).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("gave up waiting ({limit:?}): {what}"))
}

/// Picks rustls' process-wide crypto provider: kube brings ring and the AWS SDK aws-lc-rs, and
/// with both compiled in rustls cannot choose by itself. Installing twice is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client for the cluster of `kubeconfig`.
pub async fn kube_client_for(kubeconfig: &Path) -> Result<Client, kube::Error> {
    install_crypto_provider();
    let kubeconfig = Kubeconfig::read_from(kubeconfig).map_err(kube::Error::InferKubeconfig)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(kube::Error::InferKubeconfig)?;
    Client::try_from(config)
}

impl TestEnv {
    /// An admin client for the environment's cluster. Panics when it cannot be built: the
    /// environment said it is running.
    pub async fn kube_client(&self) -> Client {
        kube_client_for(&self.kubeconfig())
            .await
            .unwrap_or_else(|e| panic!("a client for the test environment's cluster: {e}"))
    }
}

/// A namespace of one test, named `<prefix>-<unique>`, deleted when dropped (on a thread and a
/// client of its own: the test's runtime may be unwinding). Tests run in parallel in one cluster,
/// so each works in its own.
#[derive(Debug)]
pub struct TestNamespace {
    name: String,
    kubeconfig: PathBuf,
    strip_finalizers: Vec<ApiResource>,
    delete_first: Vec<ApiResource>,
}

impl TestNamespace {
    /// Creates the namespace.
    pub async fn create(env: &TestEnv, client: &Client, prefix: &str) -> TestNamespace {
        Self::create_in(&env.kubeconfig(), client, prefix).await
    }

    /// Creates the namespace in the cluster of `kubeconfig` (`client`'s), for suites on a
    /// cluster other than the test environment's (kind).
    pub async fn create_in(kubeconfig: &Path, client: &Client, prefix: &str) -> TestNamespace {
        let name = unique_name(prefix);
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": name}})).expect("namespace");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
        TestNamespace {
            name,
            kubeconfig: kubeconfig.to_path_buf(),
            strip_finalizers: Vec::new(),
            delete_first: Vec::new(),
        }
    }

    /// Removes the finalizers of every object of `resource` in the namespace before deleting it:
    /// the controller that would remove them may be gone by then.
    pub fn strip_finalizers_of(mut self, resource: ApiResource) -> TestNamespace {
        self.strip_finalizers.push(resource);
        self
    }

    /// Deletes every object of `resource` in the namespace first and waits until they are gone
    /// (at most a minute) before deleting the namespace: their controller is running and its
    /// finalizers clean up what lives outside the cluster (a MarketGroup's table).
    pub fn delete_first(mut self, resource: ApiResource) -> TestNamespace {
        self.delete_first.push(resource);
        self
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Deletes the namespace now (what dropping does).
    async fn delete(
        client: &Client,
        name: &str,
        delete_first: &[ApiResource],
        strip_finalizers: &[ApiResource],
    ) {
        for resource in delete_first {
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), name, resource);
            let _ = api
                .delete_collection(&DeleteParams::default(), &ListParams::default())
                .await;
            let _ = tokio::time::timeout(Duration::from_secs(60), async {
                while api
                    .list_metadata(&ListParams::default())
                    .await
                    .is_ok_and(|l| !l.items.is_empty())
                {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            })
            .await;
        }
        for resource in strip_finalizers {
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), name, resource);
            if let Ok(list) = api.list_metadata(&ListParams::default()).await {
                for o in list.items {
                    let _ = api
                        .patch(
                            o.metadata.name.as_deref().unwrap_or_default(),
                            &PatchParams::default(),
                            &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
                        )
                        .await;
                }
            }
        }
        let _ = Api::<Namespace>::all(client.clone())
            .delete(name, &DeleteParams::background())
            .await;
    }
}

impl std::ops::Deref for TestNamespace {
    type Target = str;

    fn deref(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Display for TestNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let kubeconfig = self.kubeconfig.clone();
        let name = self.name.clone();
        let strip = std::mem::take(&mut self.strip_finalizers);
        let first = std::mem::take(&mut self.delete_first);
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(client) = kube_client_for(&kubeconfig).await {
                    TestNamespace::delete(&client, &name, &first, &strip).await;
                }
            });
        })
        .join();
    }
}

/// Sum of the samples of metric `name` in Prometheus text whose labels include all of `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let ok = labels
                .iter()
                .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")));
            ok.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}
