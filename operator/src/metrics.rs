//! Prometheus metrics of the operator (prometheus-client): its own work (reconciles, errors,
//! writes, leadership) and, per group, what its status says (traffic weights desired and actual
//! per country, readiness), so a dashboard can draw a traffic shift over time. Exported after the
//! build and process metrics every prapi process has ([`prapi_common::metrics`]); docs/metrics.md
//! lists every name.
//!
//! The per-group labels (namespace, group, country) are bounded by the MarketGroups that exist and
//! the ISO country list; a deleted group's series are removed ([`Metrics::forget_group`]).

use crate::crd::MarketGroupStatus;
use crate::render::ChildKind;
use crate::status;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};
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

/// Label set: one group.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    /// The group's namespace.
    pub namespace: String,
    /// The group's name.
    pub group: String,
}

/// Label set: one country of one group.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CountryLabels {
    /// The group's namespace.
    pub namespace: String,
    /// The group's name.
    pub group: String,
    /// Lower-case ISO 3166-1 alpha-2 code.
    pub country: String,
}

/// All metrics, registered in one registry.
pub struct Metrics {
    /// The operator's own metrics, named `prapi_operator_*`.
    pub registry: Registry,
    /// Build and process metrics.
    process: Registry,
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
    /// Percent of a country's traffic the spec asks for, per group.
    pub desired_weight: Family<CountryLabels, Gauge>,
    /// Percent of a country's traffic the route in the cluster gives the group (absent while
    /// unknown).
    pub actual_weight: Family<CountryLabels, Gauge>,
    /// 1 while the group's `Ready` condition is True.
    pub group_ready: Family<GroupLabels, Gauge>,
    /// The countries each group has series for, to remove the ones it no longer lists.
    countries: Mutex<HashMap<GroupLabels, BTreeSet<String>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("prapi_operator");
        let desired_weight = Family::<CountryLabels, Gauge>::default();
        let actual_weight = Family::<CountryLabels, Gauge>::default();
        let group_ready = Family::<GroupLabels, Gauge>::default();
        registry.register(
            "group_desired_traffic_weight",
            "Percent of the country's traffic the group's spec asks for",
            desired_weight.clone(),
        );
        registry.register(
            "group_actual_traffic_weight",
            "Percent of the country's traffic the route in the cluster gives the group",
            actual_weight.clone(),
        );
        registry.register(
            "group_ready",
            "1 while the group's Ready condition is True",
            group_ready.clone(),
        );
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
            process: prapi_common::metrics::registry("prapi-operator"),
            reconciles,
            errors,
            duration,
            writes,
            leader,
            desired_weight,
            actual_weight,
            group_ready,
            countries: Mutex::default(),
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

    /// Sets the group's gauges from the status just computed for it.
    pub fn observe_group(&self, namespace: &str, group: &str, status: &MarketGroupStatus) {
        let key = GroupLabels {
            namespace: namespace.into(),
            group: group.into(),
        };
        let ready = status::is_true(Some(status), status::READY);
        self.group_ready.get_or_create(&key).set(i64::from(ready));
        let labels = |country: &str| CountryLabels {
            namespace: namespace.into(),
            group: group.into(),
            country: country.into(),
        };
        let now: BTreeSet<String> = status.traffic.iter().map(|t| t.country.clone()).collect();
        for t in &status.traffic {
            let l = labels(&t.country);
            self.desired_weight
                .get_or_create(&l)
                .set(i64::from(t.desired));
            match t.actual {
                Some(a) => {
                    self.actual_weight.get_or_create(&l).set(i64::from(a));
                }
                None => {
                    self.actual_weight.remove(&l);
                }
            }
        }
        let mut seen = self
            .countries
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let before = seen.insert(key, now.clone()).unwrap_or_default();
        for gone in before.difference(&now) {
            self.desired_weight.remove(&labels(gone));
            self.actual_weight.remove(&labels(gone));
        }
    }

    /// Removes a deleted group's series.
    pub fn forget_group(&self, namespace: &str, group: &str) {
        let key = GroupLabels {
            namespace: namespace.into(),
            group: group.into(),
        };
        self.group_ready.remove(&key);
        let countries = self
            .countries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key)
            .unwrap_or_default();
        for country in countries {
            let l = CountryLabels {
                namespace: namespace.into(),
                group: group.into(),
                country,
            };
            self.desired_weight.remove(&l);
            self.actual_weight.remove(&l);
        }
    }

    /// The text exposition: build and process metrics, then the operator's.
    pub fn encode(&self) -> String {
        prapi_common::metrics::encode(&[&self.process, &self.registry])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::CountryTraffic;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

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
            "prapi_build_info{binary=\"prapi-operator\",",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    fn traffic(country: &str, desired: i32, actual: Option<i32>) -> CountryTraffic {
        CountryTraffic {
            country: country.into(),
            desired,
            actual,
            reason: None,
        }
    }

    fn ready(s: &str) -> Condition {
        Condition {
            type_: status::READY.into(),
            status: s.into(),
            reason: "R".into(),
            message: String::new(),
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            observed_generation: None,
        }
    }

    /// The group series, sorted (a family's series come in hash order).
    fn series(text: &str) -> Vec<&str> {
        let mut v: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("prapi_operator_group_"))
            .collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn group_gauges_follow_the_status_and_go_with_the_group() {
        let m = Metrics::default();
        let mut st = MarketGroupStatus {
            conditions: vec![ready("False")],
            traffic: vec![traffic("de", 100, Some(20)), traffic("at", 50, None)],
            ..MarketGroupStatus::default()
        };
        m.observe_group("shop", "eu-next", &st);
        let text = m.encode();
        assert_eq!(
            series(&text),
            [
                r#"prapi_operator_group_actual_traffic_weight{namespace="shop",group="eu-next",country="de"} 20"#,
                r#"prapi_operator_group_desired_traffic_weight{namespace="shop",group="eu-next",country="at"} 50"#,
                r#"prapi_operator_group_desired_traffic_weight{namespace="shop",group="eu-next",country="de"} 100"#,
                r#"prapi_operator_group_ready{namespace="shop",group="eu-next"} 0"#,
            ]
        );
        // A step, Ready, and a country no longer listed.
        st.conditions = vec![ready("True")];
        st.traffic = vec![traffic("de", 100, Some(40))];
        m.observe_group("shop", "eu-next", &st);
        let text = m.encode();
        assert_eq!(
            series(&text),
            [
                r#"prapi_operator_group_actual_traffic_weight{namespace="shop",group="eu-next",country="de"} 40"#,
                r#"prapi_operator_group_desired_traffic_weight{namespace="shop",group="eu-next",country="de"} 100"#,
                r#"prapi_operator_group_ready{namespace="shop",group="eu-next"} 1"#,
            ]
        );
        m.forget_group("shop", "eu-next");
        assert_eq!(series(&m.encode()), Vec::<&str>::new());
    }
}
