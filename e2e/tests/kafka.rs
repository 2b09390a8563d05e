//! Kafka smoke test: the broker stores messages, serves them to a consumer
//! group and keeps the group's committed offsets.

use std::collections::BTreeSet;

use futures::StreamExt as _;
use prapi_e2e::kit::PATIENCE;
use prapi_e2e::{Part, TestEnv, unique_name};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};

fn consumer(bootstrap: &str, group: &str, topic: &str) -> StreamConsumer {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .expect("create consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

/// Receives `n` messages, as (key, payload) pairs.
async fn receive(consumer: &StreamConsumer, n: usize) -> Vec<(String, String)> {
    let mut stream = consumer.stream();
    let mut got = Vec::new();
    while got.len() < n {
        let msg = tokio::time::timeout(PATIENCE, stream.next())
            .await
            .expect("a message within the patience bound")
            .expect("stream does not end")
            .expect("no consumer error");
        let key = String::from_utf8(msg.key().expect("key").to_vec()).expect("utf-8 key");
        let payload = msg
            .payload_view::<str>()
            .expect("payload")
            .expect("utf-8 payload");
        got.push((key, payload.to_owned()));
    }
    got
}

async fn produce(producer: &FutureProducer, topic: &str, prefix: &str, n: usize) {
    for i in 0..n {
        let key = format!("{prefix}-{i}");
        let payload = format!("payload of {key}");
        producer
            .send(
                FutureRecord::to(topic).key(&key).payload(&payload),
                PATIENCE,
            )
            .await
            .map_err(|(e, _)| e)
            .expect("delivery");
    }
}

#[tokio::test]
async fn produce_and_consume_with_a_consumer_group_and_committed_offsets() {
    let Some(env) = TestEnv::get_for(&[Part::Kafka]) else {
        return;
    };
    let bootstrap = env.kafka_bootstrap_servers();
    let topic = unique_name("smoke");
    let group = unique_name("smoke-group");

    // Topics are not auto-created in the test environment: create it.
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("create admin client");
    let results = admin
        .create_topics(
            &[NewTopic::new(&topic, 2, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(PATIENCE)),
        )
        .await
        .expect("create_topics request");
    for r in results {
        r.expect("topic created");
    }

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .create()
        .expect("create producer");
    produce(&producer, &topic, "first", 10).await;

    // The first member of the group reads everything and commits.
    {
        let c = consumer(bootstrap, &group, &topic);
        let got = receive(&c, 10).await;
        let keys: BTreeSet<_> = got.iter().map(|(k, _)| k.clone()).collect();
        let want: BTreeSet<_> = (0..10).map(|i| format!("first-{i}")).collect();
        assert_eq!(keys, want);
        for (k, p) in &got {
            assert_eq!(p, &format!("payload of {k}"));
        }
        c.commit_consumer_state(CommitMode::Sync).expect("commit");
        let committed = c.committed(PATIENCE).expect("committed offsets");
        let total: i64 = committed
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                other => panic!(
                    "partition {} has no committed offset: {other:?}",
                    e.partition()
                ),
            })
            .sum();
        assert_eq!(total, 10, "committed offsets cover the 10 messages");
        c.unsubscribe();
    }

    // A new member of the same group starts from the committed offsets: it
    // sees the committed position and only messages produced afterwards.
    produce(&producer, &topic, "second", 5).await;
    let c = consumer(bootstrap, &group, &topic);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&topic, 0);
    tpl.add_partition(&topic, 1);
    let committed = c
        .committed_offsets(tpl, PATIENCE)
        .expect("committed offsets of the group");
    let total: i64 = committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        })
        .sum();
    assert_eq!(
        total, 10,
        "the group's committed offsets survived its member"
    );
    let got = receive(&c, 5).await;
    let keys: BTreeSet<_> = got.iter().map(|(k, _)| k.clone()).collect();
    let want: BTreeSet<_> = (0..5).map(|i| format!("second-{i}")).collect();
    assert_eq!(keys, want, "nothing already committed is delivered again");

    admin
        .delete_topics(&[&topic], &AdminOptions::new())
        .await
        .expect("delete topic");
}
