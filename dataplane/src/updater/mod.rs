//! The updater: events from Kafka (or NDJSON) into a [`Store`], batched, at-least-once, in order
//! per product id. See docs/updater.md for the guarantees and how to operate it.
//!
//! ```text
//! Kafka poll thread ─route─► lane 0..n (by product id) ─batch─► Store::apply ─► offsets done
//!        ▲                                                                          │
//!        └────────────── commit the finished prefix per partition ◄─────────────────┘
//! ```

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use prapi_common::kafka_client::{KafkaClientSecret, client_config};
use tokio::sync::{mpsc, watch};

use crate::model::Country;
use crate::store::Store;

pub mod dispatch;
pub mod lanes;
pub mod metrics;
pub mod offsets;
pub mod source;

pub use metrics::UpdaterMetrics;

use crate::store::dynamodb::writer::Backoff;
use dispatch::Dispatcher;
use lanes::{LaneConfig, LaneItem};
use offsets::OffsetTracker;

/// Settings of `prapi updater` (docs/cli.md).
#[derive(Debug, Clone)]
pub struct UpdaterConfig {
    /// Kafka bootstrap servers, `host:port[,host:port]`.
    pub kafka_bootstrap: String,
    /// Topic of product events.
    pub products_topic: String,
    /// Topic of offer events.
    pub offers_topic: String,
    /// Consumer group.
    pub group: String,
    /// Countries whose offers this market group keeps (empty: all).
    pub countries: Vec<Country>,
    /// Where invalid messages go (none: they are only counted and logged).
    pub dead_letter_topic: Option<String>,
    /// Most writes per batch handed to the store (250 = 10 calls of 25).
    pub batch_size: usize,
    /// How long an idle lane waits to fill a batch.
    pub linger: Duration,
    /// Number of lanes (ordering units by product id).
    pub lanes: usize,
    /// How often finished offsets are committed.
    pub commit_interval: Duration,
    /// How long shutdown and revocation wait for unfinished writes.
    pub drain_timeout: Duration,
    /// Static group membership (`group.instance.id`), e.g. the pod name: a restarted member takes
    /// its partitions back without waiting for the session timeout.
    pub instance_id: Option<String>,
    /// TLS and SASL settings from the group's Secret (`--kafka-client-secret-dir`), for the
    /// consumer and the dead-letter producer alike.
    pub security: Option<KafkaClientSecret>,
}

impl UpdaterConfig {
    /// A configuration with the defaults of docs/cli.md and docs/updater.md.
    pub fn new(
        kafka_bootstrap: impl Into<String>,
        products_topic: impl Into<String>,
        offers_topic: impl Into<String>,
        group: impl Into<String>,
        countries: Vec<Country>,
    ) -> Self {
        Self {
            kafka_bootstrap: kafka_bootstrap.into(),
            products_topic: products_topic.into(),
            offers_topic: offers_topic.into(),
            group: group.into(),
            countries,
            dead_letter_topic: None,
            batch_size: 250,
            linger: Duration::from_millis(10),
            lanes: 32,
            commit_interval: Duration::from_millis(500),
            drain_timeout: Duration::from_secs(20),
            instance_id: None,
            security: None,
        }
    }

    fn lane_config(&self) -> LaneConfig {
        LaneConfig {
            batch_size: self.batch_size,
            linger: self.linger,
            backoff: Backoff {
                base: Duration::from_millis(100),
                cap: Duration::from_secs(30),
            },
            max_attempts: None,
        }
    }
}

/// The running lanes of a pipeline.
struct Lanes {
    senders: Vec<mpsc::Sender<LaneItem>>,
    tasks: Vec<tokio::task::JoinHandle<Result<(), crate::store::StoreError>>>,
    abort: watch::Sender<bool>,
}

fn start_lanes(
    count: usize,
    config: LaneConfig,
    store: &Arc<dyn Store>,
    tracker: &Arc<Mutex<OffsetTracker>>,
    metrics: &Arc<UpdaterMetrics>,
) -> Lanes {
    let (abort, abort_rx) = watch::channel(false);
    let mut senders = Vec::with_capacity(count);
    let mut tasks = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        let (tx, rx) = mpsc::channel(config.batch_size.max(1) * 2);
        senders.push(tx);
        tasks.push(tokio::spawn(lanes::run_lane(
            rx,
            store.clone(),
            tracker.clone(),
            config,
            metrics.clone(),
            abort_rx.clone(),
        )));
    }
    Lanes {
        senders,
        tasks,
        abort,
    }
}

/// Runs the updater until `shutdown` completes, then drains gracefully: stops consuming, lets
/// the lanes finish (up to the drain timeout), commits the finished offsets and leaves the group.
/// Returns an error when Kafka fails fatally.
pub async fn run_updater(
    config: UpdaterConfig,
    store: Arc<dyn Store>,
    metrics: Arc<UpdaterMetrics>,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let tracker = Arc::new(Mutex::new(OffsetTracker::new()));
    let dispatcher = Arc::new(Dispatcher::new(
        config.countries.clone(),
        config.lanes,
        tracker.clone(),
        metrics.clone(),
    ));
    let mut kafka = client_config(&config.kafka_bootstrap, config.security.as_ref());
    kafka
        .set("group.id", &config.group)
        .set("client.id", "prapi-updater");
    if let Some(id) = &config.instance_id {
        kafka.set("group.instance.id", id);
    }
    let consumer = source::consumer(
        kafka,
        source::KafkaContext::new(tracker.clone(), metrics.clone(), config.drain_timeout),
    )?;
    let dead_letters = match &config.dead_letter_topic {
        Some(topic) => Some(source::DeadLetters::new(
            client_config(&config.kafka_bootstrap, config.security.as_ref()),
            topic.clone(),
            tokio::runtime::Handle::current(),
        )?),
        None => None,
    };
    let lanes = start_lanes(
        config.lanes,
        config.lane_config(),
        &store,
        &tracker,
        &metrics,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let source_config = source::KafkaSourceConfig {
        topics: vec![config.products_topic.clone(), config.offers_topic.clone()],
        commit_interval: config.commit_interval,
        drain_timeout: config.drain_timeout,
    };
    let poll = {
        let stop = stop.clone();
        let metrics = metrics.clone();
        let senders = lanes.senders;
        tokio::task::spawn_blocking(move || {
            source::run_kafka(
                consumer,
                source_config,
                dispatcher,
                senders,
                dead_letters,
                metrics,
                stop,
            )
        })
    };
    tracing::info!(
        topics = ?[&config.products_topic, &config.offers_topic],
        group = %config.group,
        "updater started"
    );
    tokio::pin!(poll);
    let polled = tokio::select! {
        r = &mut poll => Some(r),
        () = shutdown => None,
    };
    let result = match polled {
        Some(r) => r.context("the Kafka thread panicked")?,
        None => {
            tracing::info!("shutdown requested; draining");
            stop.store(true, Ordering::Relaxed);
            poll.await.context("the Kafka thread panicked")?
        }
    };
    // The Kafka thread has waited for the lanes (or given up); stop whatever is left.
    let _ = lanes.abort.send(true);
    for task in lanes.tasks {
        let _ = task.await;
    }
    result
}

/// What [`apply_ndjson`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NdjsonReport {
    /// Lines read.
    pub lines: u64,
    /// Lines that were not valid events.
    pub invalid: u64,
}

/// Applies NDJSON events from `reader` to `store` through the same lanes and writer path as
/// Kafka (for `prapi local --catalogue`, tools and benchmarks). Returns when all are stored.
pub async fn apply_ndjson<R: tokio::io::AsyncBufRead + Unpin>(
    reader: R,
    store: Arc<dyn Store>,
    countries: Vec<Country>,
    lane_count: usize,
    batch_size: usize,
    metrics: Arc<UpdaterMetrics>,
) -> anyhow::Result<NdjsonReport> {
    let tracker = Arc::new(Mutex::new(OffsetTracker::new()));
    let dispatcher = Dispatcher::new(countries, lane_count, tracker.clone(), metrics.clone());
    let invalid_before = metrics.counted("invalid");
    let config = LaneConfig {
        batch_size,
        linger: Duration::from_millis(1),
        backoff: Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(30),
        },
        // A one-shot load reports a store that keeps failing instead of waiting forever.
        max_attempts: Some(5),
    };
    let lanes = start_lanes(lane_count, config, &store, &tracker, &metrics);
    let read = source::read_ndjson(reader, &dispatcher, &lanes.senders).await;
    drop(lanes.senders);
    for task in lanes.tasks {
        task.await
            .context("a lane panicked")?
            .context("writing NDJSON events to the store")?;
    }
    let lines = read?;
    Ok(NdjsonReport {
        lines,
        invalid: metrics.counted("invalid") - invalid_before,
    })
}
