//! Batch metrics: request size, per-item outcome, fan-out and lookup latency, and the load
//! balancer's extra requests (retries, hedges).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::body::Tally;
use super::{Item, Kind};
use crate::lb::LbClient;

/// Labels by batch endpoint.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `products` or `product-offers`.
    pub kind: &'static str,
}

/// Labels of item outcomes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `products` or `product-offers`.
    pub kind: &'static str,
    /// `found`, `missing` or `failed`.
    pub outcome: &'static str,
}

/// Labels of item failures.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// See [`super::Failure::label`].
    pub reason: &'static str,
}

fn size_histogram() -> Histogram {
    // 1, 2, 4, ... 256 ids.
    Histogram::new(exponential_buckets(1.0, 2.0, 9))
}

fn latency_histogram() -> Histogram {
    // 50 µs to ~1.6 s, as the HTTP metrics.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// The batch component's metrics. Cheap to clone (shared handles).
#[derive(Clone, Debug)]
pub struct BatchMetrics {
    ids: Family<KindLabels, Histogram, fn() -> Histogram>,
    items: Family<OutcomeLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    fanout: Family<KindLabels, Histogram, fn() -> Histogram>,
    lookup: Histogram,
}

impl BatchMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            ids: Family::new_with_constructor(size_histogram as fn() -> Histogram),
            items: Family::default(),
            failures: Family::default(),
            fanout: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            lookup: latency_histogram(),
        };
        registry.register("batch_ids", "Distinct ids per batch request", m.ids.clone());
        registry.register(
            "batch_items",
            "Batch items by outcome (found, missing, failed)",
            m.items.clone(),
        );
        registry.register(
            "batch_item_failures",
            "Failed batch items by reason",
            m.failures.clone(),
        );
        registry.register(
            "batch_fanout_duration_seconds",
            "Time from the first lookup of a batch to its last answer (or the deadline)",
            m.fanout.clone(),
        );
        registry.register(
            "batch_lookup_duration_seconds",
            "Latency of one batch item lookup, retry included",
            m.lookup.clone(),
        );
        m
    }

    /// Records one lookup's latency.
    pub fn observe_lookup(&self, d: Duration) {
        self.lookup.observe(d.as_secs_f64());
    }

    /// Records a finished batch: its size, fan-out time and item outcomes.
    pub fn observe_batch(&self, kind: Kind, items: &[Item], fanout: Duration) {
        let kind = kind.label();
        self.ids
            .get_or_create(&KindLabels { kind })
            .observe(items.len() as f64);
        self.fanout
            .get_or_create(&KindLabels { kind })
            .observe(fanout.as_secs_f64());
        let t = Tally::of(items);
        for (outcome, n) in [
            ("found", t.found),
            ("missing", t.missing),
            ("failed", t.failed),
        ] {
            if n > 0 {
                self.items
                    .get_or_create(&OutcomeLabels { kind, outcome })
                    .inc_by(n as u64);
            }
        }
        for i in items {
            if let Item::Failed(f) = i {
                self.failures
                    .get_or_create(&FailureLabels { reason: f.label() })
                    .inc();
            }
        }
    }
}

/// Exposes the load balancer client's retry, hedge and spill counts as `prapi_lb_retries_total`,
/// `prapi_lb_hedges_total` and `prapi_lb_spills_total`, read at scrape time.
#[derive(Debug)]
pub struct LbStatsCollector(pub Arc<LbClient>);

impl Collector for LbStatsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.0.stats();
        for (name, help, value) in [
            (
                "lb_retries",
                "Lookups retried on the next owner after a failure or 5xx",
                stats.retries,
            ),
            (
                "lb_hedges",
                "Hedged lookups sent to a second pod",
                stats.hedges,
            ),
            (
                "lb_spills",
                "Lookups sent past their ring owner because it was over the bounded load",
                stats.spills,
            ),
        ] {
            let counter = ConstCounter::new(value);
            let m = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(m)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Failure;
    use crate::clock::ManualClock;
    use crate::lb::{Balancer, BalancerConfig, ClientConfig};
    use bytes::Bytes;

    #[test]
    fn outcomes_sizes_and_lb_counters_are_exported() {
        let mut registry = crate::metrics::registry();
        let m = BatchMetrics::new(&mut registry);
        let balancer = Arc::new(Balancer::new(
            BalancerConfig::default(),
            Arc::new(ManualClock::default()),
        ));
        let client = Arc::new(LbClient::new(balancer, ClientConfig::default()));
        registry.register_collector(Box::new(LbStatsCollector(client)));
        m.observe_batch(
            Kind::ProductOffers,
            &[
                Item::Found(Bytes::from_static(b"{}")),
                Item::Missing,
                Item::Failed(Failure::Deadline),
                Item::Found(Bytes::from_static(b"{}")),
            ],
            Duration::from_millis(3),
        );
        m.observe_lookup(Duration::from_micros(200));
        let text = crate::metrics::encode(&registry);
        for line in [
            r#"prapi_batch_items_total{kind="product-offers",outcome="found"} 2"#,
            r#"prapi_batch_items_total{kind="product-offers",outcome="missing"} 1"#,
            r#"prapi_batch_items_total{kind="product-offers",outcome="failed"} 1"#,
            r#"prapi_batch_item_failures_total{reason="deadline"} 1"#,
            r#"prapi_batch_ids_count{kind="product-offers"} 1"#,
            r#"prapi_batch_ids_sum{kind="product-offers"} 4.0"#,
            r#"prapi_batch_fanout_duration_seconds_count{kind="product-offers"} 1"#,
            "prapi_batch_lookup_duration_seconds_count 1",
            "prapi_lb_retries_total 0",
            "prapi_lb_hedges_total 0",
            "prapi_lb_spills_total 0",
        ] {
            assert!(text.contains(line), "{line} not in:\n{text}");
        }
    }
}
