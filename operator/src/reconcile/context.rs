//! What every reconcile shares: the client, the settings, the applier, the steps, the Event
//! recorder, the metrics, and each group's count of consecutive failures (for the backoff).

use super::steps::Steps;
use crate::apply::Applier;
use crate::cli::{PodMonitorChoice, UpdaterAutoscalerChoice};
use crate::discovery::Discovery;
use crate::metrics::Metrics;
use kube::Client;
use kube::runtime::events::Recorder;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Operator settings the reconciler needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Image for groups without spec.image.
    pub default_image: String,
    /// The installation's data plane settings (`--data-plane-env`, `--served-by-header`, store
    /// timeouts).
    pub data_plane: crate::cli::DataPlaneArgs,
    /// How the updater autoscaler is chosen.
    pub updater_autoscaler: UpdaterAutoscalerChoice,
    /// Whether groups get a PodMonitor.
    pub pod_monitor: PodMonitorChoice,
    /// Balance factor of groups that set none (`--balance-factor`).
    pub balance_factor: f64,
    /// Requeue period of a healthy group.
    pub resync: Duration,
    /// The groups' NetworkPolicies (`None`: off).
    pub network_policy: Option<crate::plan::NetworkPolicyPlan>,
}

/// Shared state of all reconciles.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Settings.
    pub settings: Settings,
    /// Applies and prunes children.
    pub applier: Applier,
    /// Publishes Events.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The store and routing steps the flags turned on.
    pub steps: Steps,
    /// Which optional APIs the cluster serves.
    pub discovery: Discovery,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// A context whose applier counts its writes in `metrics`.
    pub fn new(
        client: Client,
        settings: Settings,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        steps: Steps,
        discovery: Discovery,
    ) -> Self {
        let m = metrics.clone();
        Self {
            applier: Applier::new(
                client.clone(),
                Box::new(move |kind, verb| m.wrote_child(kind, verb)),
            ),
            client,
            settings,
            recorder,
            metrics,
            steps,
            discovery,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Delay before retrying `key` after its `n`th consecutive failure: 1 s doubling to 5 min.
    pub(super) fn next_backoff(&self, key: &str) -> Duration {
        let n = self
            .failures
            .lock()
            .map(|mut f| {
                let n = f.entry(key.to_string()).or_insert(0);
                *n = n.saturating_add(1);
                *n
            })
            .unwrap_or(1);
        backoff(n)
    }

    pub(super) fn reset_backoff(&self, key: &str) {
        if let Ok(mut f) = self.failures.lock() {
            f.remove(key);
        }
    }
}

/// Exponential backoff: 1 s for the first failure, doubling, at most 5 minutes.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << exp).min(Duration::from_secs(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_to_five_minutes() {
        let secs: Vec<u64> = (1..=12).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(backoff(0).as_secs(), 1);
        assert_eq!(backoff(u32::MAX).as_secs(), 300);
    }
}
