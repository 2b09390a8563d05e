//! Prometheus metrics of the updater (the batched writer's are in `store::dynamodb::metrics`). Created unregistered (tests read
//! them directly); `register` adds them to the process registry that `/metrics` serves.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// An event outcome label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `received`, `filtered` (country not served), `invalid`, `applied`, `stale`.
    pub outcome: &'static str,
}

/// A topic partition label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    /// Kafka topic.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
}

fn latency_histogram() -> Histogram {
    // 1 ms .. ~16 s
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Metrics of the updater pipeline.
#[derive(Debug)]
pub struct UpdaterMetrics {
    /// Events by outcome.
    pub events: Family<OutcomeLabels, Counter>,
    /// Invalid messages sent to the dead-letter topic.
    pub dead_letters: Counter,
    /// Consumer lag per partition (messages behind the high watermark, from committed offsets).
    pub consumer_lag: Family<PartitionLabels, Gauge>,
    /// Last committed offset per partition.
    pub committed_offset: Family<PartitionLabels, Gauge>,
    /// Duration of applying one lane batch to the store.
    pub batch_seconds: Histogram,
    /// Lane batches that failed and are retried (progress of their partitions stops meanwhile).
    pub batch_failures: Counter,
}

impl Default for UpdaterMetrics {
    fn default() -> Self {
        Self {
            events: Family::default(),
            dead_letters: Counter::default(),
            consumer_lag: Family::default(),
            committed_offset: Family::default(),
            batch_seconds: latency_histogram(),
            batch_failures: Counter::default(),
        }
    }
}

impl UpdaterMetrics {
    /// Counts `n` events with `outcome`.
    pub fn count(&self, outcome: &'static str, n: u64) {
        if n > 0 {
            self.events
                .get_or_create(&OutcomeLabels { outcome })
                .inc_by(n);
        }
    }

    /// Events with `outcome` so far.
    pub fn counted(&self, outcome: &'static str) -> u64 {
        self.events.get_or_create(&OutcomeLabels { outcome }).get()
    }

    /// Registers under `updater_*`, which the process registry's `prapi` prefix makes
    /// `prapi_updater_*`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("updater");
        r.register("events", "Events by outcome", self.events.clone());
        r.register(
            "dead_letters",
            "Invalid messages sent to the dead-letter topic",
            self.dead_letters.clone(),
        );
        r.register(
            "consumer_lag",
            "Messages behind the partition's high watermark (from committed offsets)",
            self.consumer_lag.clone(),
        );
        r.register(
            "committed_offset",
            "Last committed offset per partition",
            self.committed_offset.clone(),
        );
        r.register(
            "batch_seconds",
            "Duration of applying one lane batch to the store",
            self.batch_seconds.clone(),
        );
        r.register(
            "batch_failures",
            "Lane batches that failed with a hard error and are retried",
            self.batch_failures.clone(),
        );
    }
}
