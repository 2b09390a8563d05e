//! Topics, messages and committed offsets on the test environment's Kafka.

use prapi_e2e::unique_name;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Creates `names`, each with `partitions` partitions.
pub async fn create_topics(bootstrap: &str, names: &[&str], partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1)))
        .collect();
    for r in admin
        .create_topics(&topics, &AdminOptions::new())
        .await
        .expect("create topics")
    {
        r.expect("topic created");
    }
}

/// Produces `n` messages to `topic`, message `i` to partition `i % partitions`, so each
/// partition's count is known.
pub async fn produce(bootstrap: &str, topic: &str, partitions: i32, n: usize) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("producer");
    for i in 0..n {
        let key = format!("P{i}");
        let partition = i32::try_from(i).expect("small") % partitions;
        producer
            .send(
                FutureRecord::to(topic)
                    .key(&key)
                    .payload("{}")
                    .partition(partition),
                TIMEOUT,
            )
            .await
            .expect("produce");
    }
}

/// A new topic of `partitions` partitions holding `n` messages; returns its name.
pub async fn topic_with(bootstrap: &str, partitions: i32, n: usize) -> String {
    let topic = unique_name("prapi-lag");
    create_topics(bootstrap, &[&topic], partitions).await;
    produce(bootstrap, &topic, partitions, n).await;
    topic
}

/// Commits `offsets` (partition, offset) of `topic` for `group`, as a consumer of it would.
pub fn commit(bootstrap: &str, group: &str, topic: &str, offsets: &[(i32, i64)]) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for (p, o) in offsets {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*o))
            .expect("offset");
    }
    c.commit(&tpl, CommitMode::Sync).expect("commit");
}

/// Commits the high watermark of every partition of `topic` for `group` (the updater caught up).
pub fn commit_all(bootstrap: &str, group: &str, topic: &str) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let md = c.fetch_metadata(Some(topic), TIMEOUT).expect("metadata");
    let offsets: Vec<(i32, i64)> = md.topics()[0]
        .partitions()
        .iter()
        .map(|p| {
            let (_, high) = c
                .fetch_watermarks(topic, p.id(), TIMEOUT)
                .expect("watermarks");
            (p.id(), high)
        })
        .collect();
    commit(bootstrap, group, topic, &offsets);
}
