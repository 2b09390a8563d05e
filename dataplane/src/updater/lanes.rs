//! Lanes: the updater's unit of ordering. Every write of a product id goes to the same lane, and a
//! lane applies one batch at a time, so one id is never in two concurrent writes and its writes
//! reach the store in the order they were consumed. Lanes batch adaptively: a lane takes what
//! has queued while its previous batch was being written (up to the batch size), and waits at
//! most the linger for more only when its queue is empty.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::metrics::UpdaterMetrics;
use super::offsets::{OffsetTracker, TopicPartition};
use crate::model::{ProductId, Write};
use crate::store::dynamodb::writer::Backoff;
use crate::store::{Store, StoreError};

/// The lane of a product id among `lanes` (FNV-1a: stable across processes and versions).
pub fn lane_of(id: &ProductId, lanes: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.as_str().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % lanes.max(1) as u64) as usize
}

/// One write on its way through a lane, with the message it came from.
#[derive(Debug)]
pub struct LaneItem {
    /// The write.
    pub write: Write,
    /// Source partition of the message.
    pub tp: TopicPartition,
    /// Source offset of the message.
    pub offset: i64,
}

/// Settings of the lanes.
#[derive(Debug, Clone, Copy)]
pub struct LaneConfig {
    /// Most writes in one batch handed to the store.
    pub batch_size: usize,
    /// How long an idle lane waits for more writes before applying a partial batch.
    pub linger: Duration,
    /// Backoff between attempts of a batch that failed with a hard error.
    pub backoff: Backoff,
    /// Attempts of a failing batch before the lane gives up (`None`: never; the Kafka updater
    /// waits for the cause to be fixed, a one-shot NDJSON load reports the error instead).
    pub max_attempts: Option<u32>,
}

/// Runs one lane until its sender side is closed and everything received is applied, or until
/// `abort` turns true (then unfinished work is left unmarked, so its offsets are not committed).
/// Returns the store's error when a batch failed `max_attempts` times (its work stays unmarked).
pub async fn run_lane(
    mut rx: mpsc::Receiver<LaneItem>,
    store: Arc<dyn Store>,
    tracker: Arc<Mutex<OffsetTracker>>,
    config: LaneConfig,
    metrics: Arc<UpdaterMetrics>,
    mut abort: watch::Receiver<bool>,
) -> Result<(), StoreError> {
    let batch_size = config.batch_size.max(1);
    let mut writes: Vec<Write> = Vec::with_capacity(batch_size);
    let mut sources: Vec<(TopicPartition, i64)> = Vec::with_capacity(batch_size);
    loop {
        let Some(first) = rx.recv().await else {
            return Ok(());
        };
        writes.push(first.write);
        sources.push((first.tp, first.offset));
        let deadline = tokio::time::Instant::now() + config.linger;
        while writes.len() < batch_size {
            let next = match rx.try_recv() {
                Ok(item) => Some(item),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    tokio::time::timeout_at(deadline, rx.recv())
                        .await
                        .ok()
                        .flatten()
                }
            };
            let Some(item) = next else { break };
            writes.push(item.write);
            sources.push((item.tp, item.offset));
        }

        let started = Instant::now();
        let mut attempt: u32 = 0;
        loop {
            let result = tokio::select! {
                r = store.apply(&writes) => r,
                _ = abort.wait_for(|a| *a) => return Ok(()),
            };
            match result {
                Ok(outcome) => {
                    metrics.count("applied", outcome.applied as u64);
                    metrics.count("stale", outcome.stale as u64);
                    break;
                }
                Err(e) => {
                    metrics.batch_failures.inc();
                    attempt = attempt.saturating_add(1);
                    let (tp, offset) = &sources[0];
                    tracing::error!(
                        error = %e,
                        topic = %tp.topic,
                        partition = tp.partition,
                        offset,
                        writes = writes.len(),
                        attempt,
                        "applying a batch failed; its partitions stop advancing until it succeeds"
                    );
                    if config.max_attempts.is_some_and(|max| attempt >= max) {
                        return Err(e);
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(config.backoff.delay(attempt - 1)) => {}
                        _ = abort.wait_for(|a| *a) => return Ok(()),
                    }
                }
            }
        }
        metrics
            .batch_seconds
            .observe(started.elapsed().as_secs_f64());
        {
            let mut t = tracker.lock().unwrap_or_else(|p| p.into_inner());
            for (tp, offset) in &sources {
                t.done(tp, *offset);
            }
        }
        writes.clear();
        sources.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Country, Offer};
    use crate::store::{ApplyOutcome, ProductOffers, StoredProduct};
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// Fails every apply while `broken`, counting calls; stores nothing.
    #[derive(Default)]
    struct Broken {
        broken: AtomicBool,
        calls: AtomicUsize,
        applied: AtomicUsize,
    }

    #[async_trait]
    impl Store for Broken {
        async fn product(&self, _: &ProductId) -> Result<Option<StoredProduct>, StoreError> {
            Ok(None)
        }
        async fn offers(&self, _: &ProductId, _: Country) -> Result<Vec<Offer>, StoreError> {
            Ok(Vec::new())
        }
        async fn product_offers(
            &self,
            _: &ProductId,
            _: Country,
        ) -> Result<ProductOffers, StoreError> {
            Ok(ProductOffers::default())
        }
        async fn apply(&self, writes: &[Write]) -> Result<ApplyOutcome, StoreError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.broken.load(Ordering::SeqCst) {
                return Err(StoreError::Backend("table missing".into()));
            }
            self.applied.fetch_add(writes.len(), Ordering::SeqCst);
            Ok(ApplyOutcome {
                applied: writes.len(),
                stale: 0,
            })
        }
    }

    fn item(offset: i64) -> LaneItem {
        LaneItem {
            write: Write::ProductDeleted {
                id: ProductId::parse(&format!("P{offset}")).expect("id"),
                version: 1,
            },
            tp: TopicPartition {
                topic: Arc::from("products"),
                partition: 3,
            },
            offset,
        }
    }

    fn config(max_attempts: Option<u32>) -> LaneConfig {
        LaneConfig {
            batch_size: 10,
            linger: Duration::ZERO,
            backoff: Backoff {
                base: Duration::from_millis(1),
                cap: Duration::from_millis(5),
            },
            max_attempts,
        }
    }

    async fn wait_until(what: &str, f: impl Fn() -> bool) {
        for _ in 0..10_000 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("gave up waiting for {what}");
    }

    #[tokio::test]
    async fn a_failing_batch_holds_its_offsets_until_it_succeeds() {
        let store = Arc::new(Broken::default());
        store.broken.store(true, Ordering::SeqCst);
        let tracker = Arc::new(Mutex::new(OffsetTracker::new()));
        let metrics = Arc::new(UpdaterMetrics::default());
        let (tx, rx) = mpsc::channel(16);
        let (_abort, abort_rx) = watch::channel(false);
        let tp = item(0).tp;
        for o in 100..103 {
            tracker.lock().expect("lock").received(&tp, o);
            tx.send(item(o)).await.expect("send");
        }
        let lane = tokio::spawn(run_lane(
            rx,
            store.clone(),
            tracker.clone(),
            config(None),
            metrics.clone(),
            abort_rx,
        ));
        wait_until("three failed attempts", || {
            store.calls.load(Ordering::SeqCst) >= 3
        })
        .await;
        assert!(metrics.batch_failures.get() >= 3);
        assert_eq!(tracker.lock().expect("lock").committable(&tp), Some(100));
        assert_eq!(store.applied.load(Ordering::SeqCst), 0);

        store.broken.store(false, Ordering::SeqCst);
        wait_until("the batch to be written", || {
            tracker.lock().expect("lock").committable(&tp) == Some(103)
        })
        .await;
        assert_eq!(store.applied.load(Ordering::SeqCst), 3);
        drop(tx);
        lane.await.expect("join").expect("lane ends cleanly");
    }

    #[tokio::test]
    async fn a_bounded_lane_gives_up_with_the_error() {
        let store = Arc::new(Broken::default());
        store.broken.store(true, Ordering::SeqCst);
        let tracker = Arc::new(Mutex::new(OffsetTracker::new()));
        let (tx, rx) = mpsc::channel(16);
        let (_abort, abort_rx) = watch::channel(false);
        tx.send(item(7)).await.expect("send");
        let result = run_lane(
            rx,
            store.clone(),
            tracker,
            config(Some(4)),
            Arc::default(),
            abort_rx,
        )
        .await;
        assert!(matches!(result, Err(StoreError::Backend(e)) if e.to_string() == "table missing"));
        assert_eq!(store.calls.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn lanes_are_stable_and_spread() {
        let ids: Vec<ProductId> = (0..10_000)
            .map(|i| ProductId::parse(&format!("P{i}")).expect("id"))
            .collect();
        let mut counts = [0usize; 16];
        for id in &ids {
            let l = lane_of(id, 16);
            assert_eq!(l, lane_of(id, 16));
            counts[l] += 1;
        }
        // Each lane gets a fair share (expected 625).
        assert!(
            counts.iter().all(|&c| (450..800).contains(&c)),
            "{counts:?}"
        );
        assert_eq!(lane_of(&ids[0], 1), 0);
        assert_eq!(lane_of(&ids[0], 0), 0);
    }
}
