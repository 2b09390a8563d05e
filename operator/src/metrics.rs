//! Prometheus metrics of the operator (prometheus-client).

use crate::render::ChildKind;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::time::Duration;

/// Label set: outcome of a reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok` or `error`.
    pub result: String,
}

/// Label set: reason of an error.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// CamelCase reason (`ApplyFailed`, `InvalidSpec`, ...).
    pub reason: String,
}

/// Label set: a write to the API server.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// Kind written.
    pub kind: String,
    /// `apply`, `delete`, `status`, `finalizer` or `event`.
    pub verb: String,
}

/// All metrics, registered in one registry.
pub struct Metrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// Reconciles by result.
    pub reconciles: Family<ResultLabels, Counter>,
    /// Reconcile errors by reason.
    pub errors: Family<ReasonLabels, Counter>,
    /// Reconcile durations.
    pub duration: Histogram,
    /// Writes to the API server by kind and verb (0 while idle is the target).
    pub writes: Family<WriteLabels, Counter>,
    /// 1 while this instance leads.
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("prapi_operator");
        let reconciles = Family::<ResultLabels, Counter>::default();
        let errors = Family::<ReasonLabels, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let writes = Family::<WriteLabels, Counter>::default();
        let leader = Gauge::default();
        registry.register("reconciles", "Reconciles by result", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconcile errors by reason",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of a reconcile",
            duration.clone(),
        );
        registry.register(
            "writes",
            "Writes to the Kubernetes API by kind and verb",
            writes.clone(),
        );
        registry.register(
            "leader",
            "1 while this instance is the leader",
            leader.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            duration,
            writes,
            leader,
        }
    }
}

impl Metrics {
    /// Records one finished reconcile.
    pub fn reconciled(&self, took: Duration, error_reason: Option<&str>) {
        self.duration.observe(took.as_secs_f64());
        let result = if error_reason.is_some() {
            "error"
        } else {
            "ok"
        };
        self.reconciles
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
        if let Some(reason) = error_reason {
            self.errors
                .get_or_create(&ReasonLabels {
                    reason: reason.into(),
                })
                .inc();
        }
    }

    /// Records one write.
    pub fn wrote(&self, kind: &str, verb: &str) {
        self.writes
            .get_or_create(&WriteLabels {
                kind: kind.into(),
                verb: verb.into(),
            })
            .inc();
    }

    /// Records one write of a child kind.
    pub fn wrote_child(&self, kind: ChildKind, verb: &str) {
        self.wrote(&kind.kind(), verb);
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_metric_with_its_labels() {
        let m = Metrics::default();
        m.reconciled(Duration::from_millis(20), None);
        m.reconciled(Duration::from_millis(30), Some("ApplyFailed"));
        m.wrote_child(ChildKind::Deployment, "apply");
        m.leader.set(1);
        let text = m.encode();
        for line in [
            "prapi_operator_reconciles_total{result=\"ok\"} 1",
            "prapi_operator_reconciles_total{result=\"error\"} 1",
            "prapi_operator_reconcile_errors_total{reason=\"ApplyFailed\"} 1",
            "prapi_operator_reconcile_duration_seconds_count 2",
            "prapi_operator_writes_total{kind=\"Deployment\",verb=\"apply\"} 1",
            "prapi_operator_leader 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
