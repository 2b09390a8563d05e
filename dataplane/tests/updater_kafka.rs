//! The updater against the test environment's Kafka and DynamoDB: convergence to an independently
//! computed model (with deletes and older versions arriving late), SIGKILL at random moments,
//! poison messages, and all of it over the secured listeners (SASL PLAIN, SASL SCRAM, mTLS) with
//! the settings read from a mounted Kafka client Secret.

mod support;

use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use prapi::model::Country;
use prapi::store::Store;
use prapi::store::dynamodb::DynamoStore;
use prapi::updater::{UpdaterConfig, UpdaterMetrics, run_updater};
use prapi_common::kafka_client::{KafkaClientSecret, client_config};
use rand::{Rng, SeedableRng};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use support::GenEvent;

const PARTITIONS: i32 = 4;
const COUNTRIES: [&str; 2] = ["de", "at"];

struct Topics {
    products: String,
    offers: String,
    dead: String,
    group: String,
    table: String,
}

fn topics(name: &str) -> Topics {
    let id = support::unique(name);
    Topics {
        products: format!("{id}-products"),
        offers: format!("{id}-offers"),
        dead: format!("{id}-dead"),
        group: format!("{id}-group"),
        table: id,
    }
}

/// Where and how the test's own clients connect: the plaintext listener, or a secured one with
/// the settings of its Secret (the updater under test gets the same).
struct Conn {
    bootstrap: String,
    security: Option<KafkaClientSecret>,
}

impl Conn {
    fn plain(bootstrap: &str) -> Self {
        Self {
            bootstrap: bootstrap.to_owned(),
            security: None,
        }
    }

    fn config(&self) -> ClientConfig {
        client_config(&self.bootstrap, self.security.as_ref())
    }
}

async fn create_topics(k: &Conn, t: &Topics) {
    let admin: AdminClient<DefaultClientContext> = k.config().create().expect("admin client");
    let new: Vec<NewTopic<'_>> = [&t.products, &t.offers, &t.dead]
        .iter()
        .map(|name| NewTopic::new(name, PARTITIONS, TopicReplication::Fixed(1)))
        .collect();
    for r in admin
        .create_topics(&new, &AdminOptions::new())
        .await
        .expect("create topics")
    {
        r.expect("topic created");
    }
}

async fn produce(k: &Conn, t: &Topics, events: &[GenEvent], poison: &[(usize, &str)]) {
    let producer: FutureProducer = k
        .config()
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    let mut pending = Vec::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        for (_, bad) in poison.iter().filter(|(at, _)| *at == i) {
            let record = FutureRecord::to(&t.offers).key("P1").payload(*bad);
            pending.push(producer.send_result(record).expect("queue poison"));
        }
        let topic = if e.is_product { &t.products } else { &t.offers };
        let mut record = FutureRecord::to(topic).key(&e.key).payload(&e.json);
        loop {
            match producer.send_result(record) {
                Ok(f) => {
                    pending.push(f);
                    break;
                }
                Err((_, back)) => {
                    // Local queue full: wait for deliveries.
                    record = back;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
    for f in pending {
        f.await.expect("delivery").expect("delivered");
    }
}

/// Messages committed by the group and messages in the topics, summed over partitions.
fn progress(k: &Conn, t: &Topics) -> Option<(i64, i64)> {
    let consumer: BaseConsumer = k
        .config()
        .set("group.id", &t.group)
        .create()
        .expect("lag consumer");
    let mut list = TopicPartitionList::new();
    for topic in [&t.products, &t.offers] {
        for p in 0..PARTITIONS {
            list.add_partition(topic, p);
        }
    }
    let committed = consumer
        .committed_offsets(list, Duration::from_secs(5))
        .ok()?;
    let (mut done, mut total) = (0, 0);
    for e in committed.elements() {
        let (low, high) = consumer
            .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(5))
            .ok()?;
        total += high - low;
        if let Offset::Offset(o) = e.offset() {
            done += o - low;
        }
    }
    Some((done, total))
}

/// Whether the group has committed every partition of the topics up to their end.
fn caught_up(k: &Conn, t: &Topics) -> bool {
    progress(k, t).is_some_and(|(done, total)| done >= total)
}

async fn wait_caught_up(k: &Conn, t: &Topics) {
    support::eventually_within(
        Duration::from_secs(600),
        "the group to commit every offset",
        || {
            let ok = caught_up(k, t);
            async move { ok.then_some(()) }
        },
    )
    .await;
}

fn updater_config(bootstrap: &str, t: &Topics) -> UpdaterConfig {
    let countries = COUNTRIES
        .iter()
        .map(|c| Country::parse(c).expect("country"))
        .collect();
    let mut c = UpdaterConfig::new(bootstrap, &t.products, &t.offers, &t.group, countries);
    c.instance_id = Some(format!("{}-member", t.group));
    c.commit_interval = Duration::from_millis(200);
    c
}

async fn store(env: &support::Backends, table: &str) -> Arc<dyn Store> {
    Arc::new(
        DynamoStore::connect(env.dynamo_config(table))
            .await
            .expect("connect"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_events_converge_to_the_model() {
    let Some(env) = support::env(true) else {
        return;
    };
    let t = topics("conv");
    create_topics(&Conn::plain(&env.kafka), &t).await;
    let events = support::generate(2024, 20_000);
    produce(&Conn::plain(&env.kafka), &t, &events, &[]).await;

    let store = store(&env, &t.table).await;
    let metrics = Arc::new(UpdaterMetrics::default());
    let mut registry = prapi::metrics::registry();
    metrics.register(&mut registry);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let updater = tokio::spawn(run_updater(
        updater_config(&env.kafka, &t),
        store,
        metrics.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    wait_caught_up(&Conn::plain(&env.kafka), &t).await;
    // The lag the autoscaler reads: one series per partition, all down to 0 once caught up
    // (librdkafka reports it every second).
    support::eventually_within(
        Duration::from_secs(60),
        "consumer lag 0 on all 8 partitions",
        || {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
            let lags: Vec<String> = text
                .lines()
                .filter(|l| l.starts_with("prapi_updater_consumer_lag{"))
                .map(str::to_owned)
                .collect();
            let done =
                lags.len() == 2 * PARTITIONS as usize && lags.iter().all(|l| l.ends_with(" 0"));
            async move { done.then_some(()) }
        },
    )
    .await;
    let _ = stop.send(());
    updater.await.expect("join").expect("updater ran");

    let expected = support::model(&events, &COUNTRIES);
    let actual = support::table_state(&env.client(), &t.table).await;
    support::assert_same(&actual, &expected);
    assert_eq!(metrics.counted("received"), 20_000);
    assert!(metrics.counted("filtered") > 0, "offers of fr are dropped");
    assert!(
        metrics.counted("stale") > 0,
        "late older versions are skipped"
    );
    assert_eq!(metrics.counted("invalid"), 0);
}

const CHILD_ENV: &str = "PRAPI_TEST_UPDATER_CHILD";

/// Not a test on its own: the updater process that `sigkill_at_random_moments_loses_nothing`
/// starts (as `--ignored --exact child_updater_process`) and kills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the updater child process of sigkill_at_random_moments_loses_nothing"]
async fn child_updater_process() {
    let spec =
        std::env::var(CHILD_ENV).expect("started by sigkill_at_random_moments_loses_nothing");
    let (env_line, names) = spec.split_once(',').expect("env,names");
    let env = support::Backends::decode(env_line);
    let parts: Vec<&str> = names.split(',').collect();
    let [products, offers, group, table] = parts[..] else {
        panic!("bad {CHILD_ENV}: {spec}");
    };
    let t = Topics {
        products: products.into(),
        offers: offers.into(),
        dead: String::new(),
        group: group.into(),
        table: table.into(),
    };
    let store = store(&env, &t.table).await;
    run_updater(
        updater_config(&env.kafka, &t),
        store,
        Arc::new(UpdaterMetrics::default()),
        std::future::pending(),
    )
    .await
    .expect("child updater");
}

fn spawn_child(env: &support::Backends, t: &Topics) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "child_updater_process",
            "--exact",
            "--nocapture",
            "--ignored",
        ])
        .env(
            CHILD_ENV,
            format!(
                "{},{},{},{},{}",
                env.encode(),
                t.products,
                t.offers,
                t.group,
                t.table
            ),
        )
        .spawn()
        .expect("spawn the updater child")
}

fn sigkill(child: &mut Child) {
    // SIGKILL: no drain, no commit, in-flight requests cut.
    child.kill().expect("kill");
    child.wait().expect("reap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_nothing() {
    let Some(env) = support::env(true) else {
        return;
    };
    let t = topics("kill");
    create_topics(&Conn::plain(&env.kafka), &t).await;
    let events = support::generate(77, 20_000);
    produce(&Conn::plain(&env.kafka), &t, &events, &[]).await;
    // The table exists before the children race to create it.
    drop(store(&env, &t.table).await);

    // Five random moments while consuming: when the committed share passes random thresholds
    // (plus a random delay, so the kill lands anywhere in a batch's life).
    let seed: u64 = rand::rng().random();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut thresholds: Vec<f64> = (0..5).map(|_| rng.random_range(0.05..0.9)).collect();
    thresholds.sort_by(f64::total_cmp);
    for (i, share) in thresholds.iter().enumerate() {
        let mut child = spawn_child(&env, &t);
        support::eventually_within(
            Duration::from_secs(600),
            "progress past the kill threshold",
            || {
                let p = progress(&Conn::plain(&env.kafka), &t);
                async move {
                    p.filter(|(done, total)| *done as f64 >= share * *total as f64)
                        .map(|_| ())
                }
            },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
        sigkill(&mut child);
        eprintln!(
            "seed {seed}: SIGKILL {} at {:.0}% committed",
            i + 1,
            share * 100.0
        );
    }
    let mut child = spawn_child(&env, &t);
    wait_caught_up(&Conn::plain(&env.kafka), &t).await;
    sigkill(&mut child);

    let expected = support::model(&events, &COUNTRIES);
    let actual = support::table_state(&env.client(), &t.table).await;
    support::assert_same(&actual, &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_skipped_counted_and_dead_lettered() {
    let Some(env) = support::env(true) else {
        return;
    };
    let t = topics("poison");
    create_topics(&Conn::plain(&env.kafka), &t).await;
    let events = support::generate(5, 2_000);
    let poison = [
        (0, "not json"),
        (10, r#"{"type":"offer","product_id":"P 1"}"#),
        (500, r#"{"type":"teleport","id":"P1","version":1}"#),
        (
            1999,
            r#"{"type":"product","id":"P1","version":-3,"product":{}}"#,
        ),
    ];
    produce(&Conn::plain(&env.kafka), &t, &events, &poison).await;

    let store = store(&env, &t.table).await;
    let metrics = Arc::new(UpdaterMetrics::default());
    let mut config = updater_config(&env.kafka, &t);
    config.dead_letter_topic = Some(t.dead.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let updater = tokio::spawn(run_updater(config, store, metrics.clone(), async move {
        let _ = stopped.await;
    }));
    wait_caught_up(&Conn::plain(&env.kafka), &t).await;
    let _ = stop.send(());
    updater.await.expect("join").expect("updater ran");

    assert_eq!(metrics.counted("invalid"), 4);
    assert_eq!(metrics.dead_letters.get(), 4);
    let expected = support::model(&events, &COUNTRIES);
    let actual = support::table_state(&env.client(), &t.table).await;
    support::assert_same(&actual, &expected);

    // The dead-letter topic holds the four messages as sent, with the reason.
    let seen = read_dead_letters(&Conn::plain(&env.kafka), &t.dead, poison.len()).await;
    let mut sent: Vec<String> = poison.iter().map(|(_, p)| (*p).to_owned()).collect();
    sent.sort();
    assert_eq!(seen, sent);
}

/// The payloads of the first `n` messages of the dead-letter `topic`, sorted; each must carry
/// the reason and source headers.
async fn read_dead_letters(k: &Conn, topic: &str, n: usize) -> Vec<String> {
    let consumer: BaseConsumer = k
        .config()
        .set("group.id", support::unique("dlq-reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < n && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let payload = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
            let headers = m.headers().expect("headers");
            let names: Vec<String> = headers.iter().map(|h| h.key.to_owned()).collect();
            assert!(names.contains(&"prapi-error".to_owned()), "{names:?}");
            assert!(
                names.contains(&"prapi-source-offset".to_owned()),
                "{names:?}"
            );
            seen.push(payload);
        }
    }
    seen.sort();
    seen
}

/// A client on `bootstrap` without the listener's settings: what the broker must refuse.
fn metadata_without_credentials(bootstrap: &str) -> Result<(), rdkafka::error::KafkaError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("consumer");
    consumer
        .fetch_metadata(None, Duration::from_secs(3))
        .map(|_| ())
}

/// The Secret as the updater pod sees it: one file per key in a mounted directory.
fn mounted_secret(dir: &std::path::Path, secret: &std::collections::BTreeMap<String, String>) {
    for (key, value) in secret {
        std::fs::write(dir.join(key), value).expect("write a Secret key");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_sasl_plain_sasl_scram_and_mtls_the_updater_consumes_and_dead_letters() {
    let Some(env) = support::env(true) else {
        return;
    };
    let listeners = prapi_e2e::TestEnv::get_for(&[prapi_e2e::Part::Kafka])
        .expect("Kafka was found a moment ago")
        .kafka_secured_listeners();
    for listener in listeners {
        let name = listener.name;
        // The listener refuses a client without the Secret's settings, so passing below proves
        // they were used.
        assert!(
            metadata_without_credentials(&listener.bootstrap_servers).is_err(),
            "{name}: the listener answers a client without credentials"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        mounted_secret(dir.path(), &listener.secret);
        let security = KafkaClientSecret::read_dir(dir.path()).expect("the listener's Secret");
        let k = Conn {
            bootstrap: listener.bootstrap_servers.clone(),
            security: Some(security.clone()),
        };
        let t = topics(name);
        create_topics(&k, &t).await;
        let events = support::generate(11, 300);
        let poison = [
            (3, "not json"),
            (200, r#"{"type":"teleport","id":"P1","version":1}"#),
        ];
        produce(&k, &t, &events, &poison).await;

        let store = store(&env, &t.table).await;
        let metrics = Arc::new(UpdaterMetrics::default());
        let mut config = updater_config(&listener.bootstrap_servers, &t);
        config.dead_letter_topic = Some(t.dead.clone());
        config.security = Some(security);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let updater = tokio::spawn(run_updater(config, store, metrics.clone(), async move {
            let _ = stopped.await;
        }));
        wait_caught_up(&k, &t).await;
        let _ = stop.send(());
        updater.await.expect("join").expect("updater ran");

        assert_eq!(metrics.counted("invalid"), 2, "{name}");
        assert_eq!(metrics.dead_letters.get(), 2, "{name}");
        let expected = support::model(&events, &COUNTRIES);
        let actual = support::table_state(&env.client(), &t.table).await;
        support::assert_same(&actual, &expected);
        let seen = read_dead_letters(&k, &t.dead, poison.len()).await;
        let mut sent: Vec<String> = poison.iter().map(|(_, p)| (*p).to_owned()).collect();
        sent.sort();
        assert_eq!(seen, sent, "{name}");
    }
}
