//! Scraping of a group's pods by the Prometheus Operator: one `PodMonitor`
//! (`monitoring.coreos.com/v1`) per group, rendered where that API is served (`--pod-monitor`).
//!
//! Products and batch serve `/metrics` on their ops port, the updater on its only (HTTP) port; the
//! HTTP port of products and batch serves the API, which has no `/metrics`, so the HTTP endpoint
//! keeps the updater's pods only. The pods' instance and component labels become the target labels
//! `app_kubernetes_io_instance` and `app_kubernetes_io_component`: what the chart's alerts and
//! dashboard group by.

use super::meta::{LABEL_COMPONENT, LABEL_INSTANCE, object_meta, selector_labels};
use super::workloads::{HTTP_PORT_NAME, OPS_PORT_NAME};
use crate::plan::{Component, GroupPlan};
use serde_json::{Value, json};

/// API version of the Prometheus Operator's PodMonitor.
pub const MONITORING_API_VERSION: &str = "monitoring.coreos.com/v1";
/// How often the pods are scraped.
pub const SCRAPE_INTERVAL: &str = "30s";
/// Path of the metrics on both ports.
pub const METRICS_PATH: &str = "/metrics";

/// The relabelling source label of a pod label (`app.kubernetes.io/component` →
/// `__meta_kubernetes_pod_label_app_kubernetes_io_component`).
fn pod_label_meta(label: &str) -> String {
    let sanitized: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("__meta_kubernetes_pod_label_{sanitized}")
}

/// The group's PodMonitor: every pod of the group, products and batch on their ops port, the
/// updater on its HTTP port.
pub fn pod_monitor(plan: &GroupPlan) -> Value {
    let meta = object_meta(plan, plan.owner.name.clone(), None);
    json!({
        "apiVersion": MONITORING_API_VERSION,
        "kind": "PodMonitor",
        "metadata": meta,
        "spec": {
            "selector": {"matchLabels": selector_labels(plan, None)},
            "podTargetLabels": [LABEL_INSTANCE, LABEL_COMPONENT],
            "podMetricsEndpoints": [
                {
                    "port": OPS_PORT_NAME,
                    "path": METRICS_PATH,
                    "interval": SCRAPE_INTERVAL,
                },
                {
                    "port": HTTP_PORT_NAME,
                    "path": METRICS_PATH,
                    "interval": SCRAPE_INTERVAL,
                    "relabelings": [{
                        "action": "keep",
                        "sourceLabels": [pod_label_meta(LABEL_COMPONENT)],
                        "regex": Component::Updater.as_str(),
                    }],
                },
            ],
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_labels_become_prometheus_meta_labels() {
        assert_eq!(
            pod_label_meta("app.kubernetes.io/component"),
            "__meta_kubernetes_pod_label_app_kubernetes_io_component"
        );
        assert_eq!(pod_label_meta("a-b"), "__meta_kubernetes_pod_label_a_b");
    }
}
