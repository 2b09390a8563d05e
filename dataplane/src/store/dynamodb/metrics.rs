//! Metrics of the DynamoDB store: requests by client (`primary` and `fallback` reads, the
//! `writer`), their latency, read fallbacks, and the batched writer's calls and retries.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::writer::SinkError;

/// Labels of a request metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `primary`, `fallback` or `writer`.
    pub client: &'static str,
    /// `get`, `query`, `batch_write`, `batch_get`.
    pub op: &'static str,
    /// `ok`, `timeout`, `throttled`, `transient`, `error`.
    pub outcome: &'static str,
}

/// Labels of a latency metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClientLabels {
    /// `primary`, `fallback` or `writer`.
    pub client: &'static str,
}

/// Per-client metrics of the DynamoDB store.
#[derive(Debug)]
pub struct DynamoMetrics {
    /// Requests by client, operation and outcome.
    pub requests: Family<RequestLabels, Counter>,
    /// Request latency by client.
    pub seconds: Family<ClientLabels, Histogram>,
    /// Reads the primary could not answer and the fallback was asked.
    pub fallbacks: Counter,
    /// Metrics of the batched writer.
    pub writer: Arc<WriterMetrics>,
}

impl Default for DynamoMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            seconds: Family::new_with_constructor(|| {
                // 0.5 ms .. ~4 s
                Histogram::new(exponential_buckets(0.0005, 2.0, 14))
            }),
            fallbacks: Counter::default(),
            writer: Arc::new(WriterMetrics::default()),
        }
    }
}

impl DynamoMetrics {
    /// Requests so far with these labels.
    pub fn requests_with(
        &self,
        client: &'static str,
        op: &'static str,
        outcome: &'static str,
    ) -> u64 {
        self.requests
            .get_or_create(&RequestLabels {
                client,
                op,
                outcome,
            })
            .get()
    }

    pub(super) fn record(
        &self,
        client: &'static str,
        op: &'static str,
        outcome: &'static str,
        started: Instant,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                client,
                op,
                outcome,
            })
            .inc();
        self.seconds
            .get_or_create(&ClientLabels { client })
            .observe(started.elapsed().as_secs_f64());
    }

    /// Registers under `dynamodb_*` (and the writer's under `writer_*`), which the process
    /// registry's `prapi` prefix makes `prapi_dynamodb_*` and `prapi_writer_*`.
    pub fn register(&self, registry: &mut Registry) {
        self.writer.register(registry);
        let r = registry.sub_registry_with_prefix("dynamodb");
        r.register(
            "requests",
            "DynamoDB requests by client, operation and outcome",
            self.requests.clone(),
        );
        r.register(
            "request_seconds",
            "DynamoDB request latency by client",
            self.seconds.clone(),
        );
        r.register(
            "read_fallbacks",
            "Reads repeated on the fallback client",
            self.fallbacks.clone(),
        );
    }
}

/// The outcome label of a failed call.
pub(super) fn outcome_of(e: &SinkError) -> &'static str {
    match e {
        SinkError::Throttled(_) => "throttled",
        SinkError::Transient(m) if m.starts_with("timeout") => "timeout",
        SinkError::Transient(_) => "transient",
        SinkError::Fatal(_) => "error",
    }
}

/// A retry reason label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Why the call was retried (`throttled`, `unprocessed`, `transient`, `lookup_*`).
    pub reason: &'static str,
}

/// Metrics of a [`super::writer::BatchWriter`].
#[derive(Debug)]
pub struct WriterMetrics {
    /// Batch write calls made.
    pub calls: Counter,
    /// Duration of one batch write call.
    pub call_seconds: Histogram,
    /// Retries by reason.
    pub retries: Family<ReasonLabels, Counter>,
    /// Items a batch write call returned as unprocessed.
    pub unprocessed_items: Counter,
    /// Calls that failed with an error retrying cannot fix.
    pub hard_errors: Counter,
    /// Items written.
    pub items_written: Counter,
    /// Writes skipped as not newer than what was stored or batched.
    pub items_stale: Counter,
}

impl Default for WriterMetrics {
    fn default() -> Self {
        Self {
            calls: Counter::default(),
            // 1 ms .. ~16 s
            call_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            retries: Family::default(),
            unprocessed_items: Counter::default(),
            hard_errors: Counter::default(),
            items_written: Counter::default(),
            items_stale: Counter::default(),
        }
    }
}

impl WriterMetrics {
    /// Counts one retry for `reason`.
    pub fn retry(&self, reason: &'static str) {
        self.retries.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Retries for `reason` so far.
    pub fn retries_for(&self, reason: &'static str) -> u64 {
        self.retries.get_or_create(&ReasonLabels { reason }).get()
    }

    /// Registers under `writer_*` (`prapi_writer_*` in the process registry).
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("writer");
        r.register("calls", "Batch write calls made", self.calls.clone());
        r.register(
            "call_seconds",
            "Duration of one batch write call",
            self.call_seconds.clone(),
        );
        r.register(
            "retries",
            "Batch write and version lookup retries, by reason",
            self.retries.clone(),
        );
        r.register(
            "unprocessed_items",
            "Items returned unprocessed by a batch write (retried)",
            self.unprocessed_items.clone(),
        );
        r.register(
            "hard_errors",
            "Batch writes failed with an error retrying cannot fix (progress stops)",
            self.hard_errors.clone(),
        );
        r.register("items_written", "Items written", self.items_written.clone());
        r.register(
            "items_stale",
            "Writes skipped as not newer than the stored or batched version",
            self.items_stale.clone(),
        );
    }
}
