//! The updater group's consumer lag, read from Kafka: per partition, the high watermark minus the
//! group's committed offset (or minus the low watermark where nothing is committed yet: a new
//! group starts from the beginning), summed over the topics.

use super::model::LagReading;
use async_trait::async_trait;
use prapi_common::kafka_client::{KafkaClientSecret, client_config};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::time::Duration;

/// Which consumer group on which topics.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConsumerGroupRef {
    /// `host:port[,...]`.
    pub bootstrap_servers: String,
    /// Consumer group id.
    pub group: String,
    /// Topics it consumes.
    pub topics: Vec<String>,
    /// TLS and SASL settings of the group's Kafka client Secret (the updater's own); `Debug`
    /// shows no secret.
    pub security: Option<KafkaClientSecret>,
}

/// Reads consumer lag.
#[async_trait]
pub trait LagSource: Send + Sync {
    /// The group's lag; [`LagReading::Unknown`] with the reason when Kafka does not answer.
    async fn lag(&self, group: &ConsumerGroupRef) -> LagReading;
}

/// [`LagSource`] on rdkafka (librdkafka), one short-lived client per reading.
#[derive(Clone, Debug)]
pub struct KafkaLag {
    /// Timeout of each Kafka request.
    pub timeout: Duration,
}

impl Default for KafkaLag {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
        }
    }
}

/// How many request timeouts one whole reading may take (metadata, watermarks of each
/// partition, committed offsets) before it is given up.
const READING_BOUND_FACTOR: u32 = 3;

/// Lag of one partition: `high - committed`, or `high - low` when nothing is committed; never
/// negative.
pub fn partition_lag(low: i64, high: i64, committed: Option<i64>) -> i64 {
    let from = committed.unwrap_or(low).max(low);
    (high - from).max(0)
}

/// A client for `group`: committed offsets are read through a consumer that never subscribes,
/// so it does not join the group and does not disturb the updater's partition assignment.
fn client(group: &ConsumerGroupRef, timeout: Duration) -> Result<BaseConsumer, String> {
    client_config(&group.bootstrap_servers, group.security.as_ref())
        .set("group.id", &group.group)
        .set("enable.auto.commit", "false")
        .set("socket.timeout.ms", timeout.as_millis().to_string())
        .create()
        .map_err(|e| format!("creating a Kafka client: {e}"))
}

fn read(
    consumer: &BaseConsumer,
    group: &ConsumerGroupRef,
    timeout: Duration,
) -> Result<i64, String> {
    let mut tpl = TopicPartitionList::new();
    let mut watermarks = Vec::new();
    for topic in &group.topics {
        let md = consumer
            .fetch_metadata(Some(topic), timeout)
            .map_err(|e| format!("reading metadata of topic {topic}: {e}"))?;
        let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
            return Err(format!("topic {topic} not found"));
        };
        if let Some(err) = t.error() {
            return Err(format!("topic {topic}: {err:?}"));
        }
        for p in t.partitions() {
            tpl.add_partition(topic, p.id());
            let (low, high) = consumer
                .fetch_watermarks(topic, p.id(), timeout)
                .map_err(|e| format!("reading watermarks of {topic}/{}: {e}", p.id()))?;
            watermarks.push((topic.clone(), p.id(), low, high));
        }
    }
    let committed = consumer
        .committed_offsets(tpl, timeout)
        .map_err(|e| format!("reading committed offsets of group {}: {e}", group.group))?;
    let mut total = 0i64;
    for (topic, partition, low, high) in watermarks {
        let offset = committed
            .find_partition(&topic, partition)
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            });
        total = total.saturating_add(partition_lag(low, high, offset));
    }
    Ok(total)
}

#[async_trait]
impl LagSource for KafkaLag {
    async fn lag(&self, group: &ConsumerGroupRef) -> LagReading {
        let g = group.clone();
        let timeout = self.timeout;
        let (tx, rx) = tokio::sync::oneshot::channel();
        // The answer goes back before the client is dropped: librdkafka's destroy waits for its
        // threads (hundreds of milliseconds, and it can hang), which no reader should wait for.
        tokio::task::spawn_blocking(move || {
            let consumer = client(&g, timeout);
            let lag = consumer
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|c| read(c, &g, timeout));
            let _ = tx.send(lag);
            drop(consumer);
        });
        // Each request is bounded by `timeout`, but there are several of them: the reading as a
        // whole is bounded too, so a stuck client cannot hold the callers (an HPA poll, a
        // reconcile) for longer.
        match tokio::time::timeout(timeout * READING_BOUND_FACTOR, rx).await {
            Ok(Ok(Ok(n))) => LagReading::Known(n),
            Ok(Ok(Err(why))) => LagReading::Unknown(why),
            Ok(Err(_)) => LagReading::Unknown("lag reader failed before it answered".into()),
            Err(_) => LagReading::Unknown(format!(
                "Kafka did not answer within {:?}",
                timeout * READING_BOUND_FACTOR
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::partition_lag;

    #[test]
    fn partition_lag_counts_from_the_commit_or_the_start() {
        assert_eq!(partition_lag(0, 100, Some(40)), 60);
        assert_eq!(partition_lag(10, 100, None), 90);
        assert_eq!(
            partition_lag(50, 100, Some(20)),
            50,
            "commit below retention"
        );
        assert_eq!(partition_lag(0, 100, Some(120)), 0);
        assert_eq!(partition_lag(0, 0, None), 0);
    }
}
