//! Event sources: a Kafka consumer group (rdkafka, bundled librdkafka) and NDJSON lines.
//!
//! The Kafka consumer runs on its own thread: polling, the rebalance callback and commits are
//! synchronous librdkafka calls, and blocking there (for backpressure from full lanes, or to let
//! revoked partitions finish their writes before committing them) must not stall the async
//! runtime that the lanes and the store run on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::util::Timeout;
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

use super::dispatch::{Dispatcher, Incoming, Routed};
use super::lanes::LaneItem;
use super::metrics::{PartitionLabels, UpdaterMetrics};
use super::offsets::{OffsetTracker, TopicPartition};
use crate::store::dynamodb::writer::Backoff;

/// librdkafka callbacks: rebalances (finish and commit revoked partitions) and statistics
/// (consumer lag per partition).
pub struct KafkaContext {
    tracker: Arc<Mutex<OffsetTracker>>,
    metrics: Arc<UpdaterMetrics>,
    drain_timeout: Duration,
}

impl KafkaContext {
    /// A context sharing the pipeline's tracker and metrics.
    pub fn new(
        tracker: Arc<Mutex<OffsetTracker>>,
        metrics: Arc<UpdaterMetrics>,
        drain_timeout: Duration,
    ) -> Self {
        Self {
            tracker,
            metrics,
            drain_timeout,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OffsetTracker> {
        self.tracker.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ClientContext for KafkaContext {
    fn stats(&self, statistics: Statistics) {
        for (topic, t) in statistics.topics {
            for (partition, p) in t.partitions {
                // librdkafka reports an internal partition -1 and lag -1 while unknown.
                if partition >= 0 && p.consumer_lag >= 0 {
                    self.metrics
                        .consumer_lag
                        .get_or_create(&PartitionLabels {
                            topic: topic.clone(),
                            partition,
                        })
                        .set(p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for KafkaContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(list) = rebalance else {
            return;
        };
        let revoked: Vec<TopicPartition> = list
            .elements()
            .iter()
            .map(|e| TopicPartition {
                topic: Arc::from(e.topic()),
                partition: e.partition(),
            })
            .collect();
        // Let the revoked partitions' queued and in-flight writes finish, so that the next owner
        // starts right after them instead of writing them a second time concurrently with us.
        let deadline = Instant::now() + self.drain_timeout;
        loop {
            let busy: usize = {
                let t = self.lock();
                revoked.iter().map(|tp| t.in_progress(tp)).sum()
            };
            if busy == 0 {
                break;
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    busy,
                    "revoked partitions still have unfinished writes; committing the finished prefix"
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let commits: Vec<(TopicPartition, i64)> = {
            let mut t = self.lock();
            revoked
                .iter()
                .filter_map(|tp| t.remove(tp).map(|o| (tp.clone(), o)))
                .collect()
        };
        if let Err(e) = commit(consumer, &commits, CommitMode::Sync, &self.metrics) {
            tracing::warn!(error = %e, "commit of revoked partitions failed; they will be read again");
        }
        for tp in &revoked {
            let labels = PartitionLabels {
                topic: tp.topic.to_string(),
                partition: tp.partition,
            };
            self.metrics.consumer_lag.remove(&labels);
        }
        tracing::info!(partitions = revoked.len(), "partitions revoked");
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            tracing::info!(partitions = list.count(), "partitions assigned");
        }
    }
}

fn commit<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    commits: &[(TopicPartition, i64)],
    mode: CommitMode,
    metrics: &UpdaterMetrics,
) -> rdkafka::error::KafkaResult<()> {
    if commits.is_empty() {
        return Ok(());
    }
    let mut list = TopicPartitionList::with_capacity(commits.len());
    for (tp, offset) in commits {
        list.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*offset))?;
    }
    consumer.commit(&list, mode)?;
    for (tp, offset) in commits {
        metrics
            .committed_offset
            .get_or_create(&PartitionLabels {
                topic: tp.topic.to_string(),
                partition: tp.partition,
            })
            .set(*offset);
    }
    Ok(())
}

/// Where invalid messages go when a dead-letter topic is configured.
pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
    runtime: tokio::runtime::Handle,
    backoff: Backoff,
}

impl DeadLetters {
    /// A dead-letter producer for `topic` on `config` (the connection settings the consumer
    /// has too: bootstrap servers, TLS, SASL).
    pub fn new(
        mut config: ClientConfig,
        topic: String,
        runtime: tokio::runtime::Handle,
    ) -> anyhow::Result<Self> {
        let producer: FutureProducer = config
            .set("client.id", "prapi-updater-dead-letters")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create()
            .map_err(|e| anyhow::anyhow!("creating the dead-letter producer: {e}"))?;
        Ok(Self {
            producer,
            topic,
            runtime,
            backoff: Backoff::default(),
        })
    }

    /// Sends `msg` with the reason in headers, retrying until Kafka has it, then finishes the
    /// message. Until then the partition's commit does not pass it, so a crash cannot lose it.
    pub fn send(
        &self,
        msg: Incoming,
        reason: String,
        dispatcher: Arc<Dispatcher>,
        metrics: Arc<UpdaterMetrics>,
    ) {
        let producer = self.producer.clone();
        let topic = self.topic.clone();
        let backoff = self.backoff;
        self.runtime.spawn(async move {
            let partition = msg.tp.partition.to_string();
            let offset = msg.offset.to_string();
            let mut attempt = 0;
            loop {
                let headers = OwnedHeaders::new()
                    .insert(Header {
                        key: "prapi-error",
                        value: Some(reason.as_str()),
                    })
                    .insert(Header {
                        key: "prapi-source-topic",
                        value: Some(&*msg.tp.topic),
                    })
                    .insert(Header {
                        key: "prapi-source-partition",
                        value: Some(partition.as_str()),
                    })
                    .insert(Header {
                        key: "prapi-source-offset",
                        value: Some(offset.as_str()),
                    });
                let mut record: FutureRecord<'_, [u8], [u8]> =
                    FutureRecord::to(&topic).headers(headers);
                if let Some(k) = &msg.key {
                    record = record.key(k.as_slice());
                }
                if let Some(p) = &msg.payload {
                    record = record.payload(p.as_slice());
                }
                match producer
                    .send(record, Timeout::After(Duration::from_secs(10)))
                    .await
                {
                    Ok(_) => {
                        metrics.dead_letters.inc();
                        dispatcher.finish(&msg.tp, msg.offset);
                        return;
                    }
                    Err((e, _)) => {
                        tracing::warn!(error = %e, topic, "dead-letter send failed; retrying");
                        tokio::time::sleep(backoff.delay(attempt)).await;
                        attempt = attempt.saturating_add(1);
                    }
                }
            }
        });
    }
}

/// Settings of the Kafka source.
#[derive(Debug, Clone)]
pub struct KafkaSourceConfig {
    /// Topics to subscribe to.
    pub topics: Vec<String>,
    /// How often finished prefixes are committed.
    pub commit_interval: Duration,
    /// How long a shutdown or revocation waits for unfinished writes.
    pub drain_timeout: Duration,
}

/// Builds the consumer with the updater's fixed settings on top of `config`.
pub fn consumer(
    mut config: ClientConfig,
    context: KafkaContext,
) -> anyhow::Result<BaseConsumer<KafkaContext>> {
    config
        // Offsets are committed by us, only for finished prefixes.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("statistics.interval.ms", "1000");
    if config.get("auto.offset.reset").is_none() {
        config.set("auto.offset.reset", "earliest");
    }
    config
        .create_with_context(context)
        .map_err(|e| anyhow::anyhow!("creating the Kafka consumer: {e}"))
}

/// Polls until `stop`, routing messages into the lanes; then drains: closes the lanes, waits
/// (up to the drain timeout) for everything received to finish, commits, and leaves the group.
/// Runs on a dedicated thread.
#[allow(clippy::too_many_arguments)]
pub fn run_kafka(
    consumer: BaseConsumer<KafkaContext>,
    config: KafkaSourceConfig,
    dispatcher: Arc<Dispatcher>,
    lanes: Vec<mpsc::Sender<LaneItem>>,
    dead_letters: Option<DeadLetters>,
    metrics: Arc<UpdaterMetrics>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
        .map_err(|e| anyhow::anyhow!("subscribing to {topics:?}: {e}"))?;
    let tracker = dispatcher.tracker().clone();
    let mut last_commit = Instant::now();
    let mut result = Ok(());
    while !stop.load(Ordering::Relaxed) {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(e)) => {
                if is_fatal(&e) {
                    result = Err(anyhow::anyhow!("Kafka consumer failed: {e}"));
                    break;
                }
                tracing::warn!(error = %e, "Kafka consumer error");
            }
            Some(Ok(m)) => {
                let msg = Incoming {
                    tp: TopicPartition {
                        topic: Arc::from(m.topic()),
                        partition: m.partition(),
                    },
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().map(<[u8]>::to_vec),
                };
                drop(m);
                match dispatcher.route(msg) {
                    Routed::Lane(lane, item) => {
                        // Blocks while the lane is full: backpressure onto the consumer.
                        if lanes[lane].blocking_send(item).is_err() {
                            result = Err(anyhow::anyhow!("lane {lane} stopped"));
                            break;
                        }
                    }
                    Routed::Filtered => {}
                    Routed::Invalid(msg, reason) => match &dead_letters {
                        Some(dl) => dl.send(msg, reason, dispatcher.clone(), metrics.clone()),
                        None => dispatcher.finish(&msg.tp, msg.offset),
                    },
                }
            }
        }
        if last_commit.elapsed() >= config.commit_interval {
            let commits = tracker
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take_commits();
            if let Err(e) = commit(&consumer, &commits, CommitMode::Async, &metrics) {
                tracing::warn!(error = %e, "offset commit failed; retried with the next one");
            }
            last_commit = Instant::now();
        }
    }

    // Drain: no new messages; let the lanes finish what they hold.
    drop(lanes);
    let deadline = Instant::now() + config.drain_timeout;
    loop {
        let busy = tracker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .total_in_progress();
        if busy == 0 {
            break;
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                busy,
                "drain timed out; unfinished messages will be read again"
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let commits: Vec<(TopicPartition, i64)> = {
        let t = tracker.lock().unwrap_or_else(|p| p.into_inner());
        t.partitions()
            .into_iter()
            .filter_map(|tp| t.committable(&tp).map(|o| (tp, o)))
            .collect()
    };
    if let Err(e) = commit(&consumer, &commits, CommitMode::Sync, &metrics) {
        tracing::warn!(error = %e, "final offset commit failed; the uncommitted tail will be read again");
    }
    consumer.unsubscribe();
    result
}

fn is_fatal(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::Fatal
                | C::Authentication
                | C::GroupAuthorizationFailed
                | C::TopicAuthorizationFailed
        )
    )
}

/// Reads NDJSON events (one per line, blank lines skipped) into the lanes; invalid lines are
/// counted and logged with their line number. Offsets are line numbers in pseudo-partition
/// `ndjson/0`. Returns the number of lines read.
pub async fn read_ndjson<R: tokio::io::AsyncBufRead + Unpin>(
    reader: R,
    dispatcher: &Dispatcher,
    lanes: &[mpsc::Sender<LaneItem>],
) -> anyhow::Result<u64> {
    let tp = TopicPartition {
        topic: Arc::from("ndjson"),
        partition: 0,
    };
    let mut lines = reader.lines();
    let mut n: i64 = 0;
    while let Some(line) = lines
        .next_line()
        .await
        .map_err(|e| anyhow::anyhow!("reading NDJSON line {}: {e}", n + 1))?
    {
        n += 1;
        if line.trim().is_empty() {
            continue;
        }
        let msg = Incoming {
            tp: tp.clone(),
            offset: n,
            key: None,
            payload: Some(line.into_bytes()),
        };
        match dispatcher.route(msg) {
            Routed::Lane(lane, item) => {
                lanes[lane]
                    .send(item)
                    .await
                    .map_err(|_| anyhow::anyhow!("lane {lane} stopped"))?;
            }
            Routed::Filtered => {}
            Routed::Invalid(msg, _) => dispatcher.finish(&msg.tp, msg.offset),
        }
    }
    Ok(u64::try_from(n).unwrap_or_default())
}
