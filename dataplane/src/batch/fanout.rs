//! Fan-out of a batch: every id looked up at once, answers collected in request order until all
//! are in or the deadline passes.

use std::time::Instant;

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use super::metrics::BatchMetrics;
use super::source::ItemSource;
use super::{Batch, Failure, Item};
use crate::model::ProductId;

/// Looks up every id of `ids` through `source` concurrently and returns their items in the order
/// of `ids`. Lookups still running at `deadline` are dropped (which cancels their requests) and
/// their ids count as failed ([`Failure::Deadline`]).
///
/// All lookups are polled by the calling task: an HTTP lookup only waits for its connection's task
/// to answer, so one task per batch is enough and spawns nothing.
pub async fn fan_out(
    source: &dyn ItemSource,
    batch: &Batch,
    ids: &[ProductId],
    deadline: tokio::time::Instant,
    metrics: &BatchMetrics,
) -> Vec<Item> {
    let mut items: Vec<Option<Item>> = (0..ids.len()).map(|_| None).collect();
    {
        let mut pending: FuturesUnordered<_> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| async move {
                let started = Instant::now();
                let item = source.fetch(batch, id).await;
                metrics.observe_lookup(started.elapsed());
                (i, item)
            })
            .collect();
        let collect = async {
            while let Some((i, item)) = pending.next().await {
                items[i] = Some(item);
            }
        };
        // On timeout the unfinished lookups are dropped with `pending` at the end of this block.
        let _ = tokio::time::timeout_at(deadline, collect).await;
    }
    items
        .into_iter()
        .map(|i| i.unwrap_or(Item::Failed(Failure::Deadline)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Kind;
    use crate::formats::MediaType;
    use async_trait::async_trait;
    use bytes::Bytes;
    use prometheus_client::registry::Registry;
    use std::sync::Mutex;
    use std::time::Duration;

    /// Answers after a delay named by the id: `S<ms>` found after `ms`, `M<ms>` missing after
    /// `ms`, `F<ms>` failed after `ms`. Records which lookups were dropped unfinished.
    #[derive(Default)]
    struct Scripted {
        dropped: Mutex<Vec<String>>,
    }

    struct OnDrop<'a> {
        id: String,
        done: bool,
        log: &'a Mutex<Vec<String>>,
    }

    impl Drop for OnDrop<'_> {
        fn drop(&mut self) {
            if !self.done {
                self.log
                    .lock()
                    .expect("lock")
                    .push(std::mem::take(&mut self.id));
            }
        }
    }

    #[async_trait]
    impl ItemSource for Scripted {
        async fn fetch(&self, _batch: &Batch, id: &ProductId) -> Item {
            let mut guard = OnDrop {
                id: id.to_string(),
                done: false,
                log: &self.dropped,
            };
            let (kind, ms) = id.as_str().split_at(1);
            let ms: u64 = ms.parse().expect("delay");
            tokio::time::sleep(Duration::from_millis(ms)).await;
            guard.done = true;
            match kind {
                "S" => Item::Found(Bytes::from(id.to_string())),
                "M" => Item::Missing,
                _ => Item::Failed(Failure::Transport),
            }
        }
    }

    fn ids(list: &[&str]) -> Vec<ProductId> {
        list.iter()
            .map(|s| ProductId::parse(s).expect("id"))
            .collect()
    }

    fn batch() -> Batch {
        Batch::new(Kind::Products, None, MediaType::Json, false, None)
    }

    #[tokio::test(start_paused = true)]
    async fn items_come_back_in_request_order_whatever_the_finishing_order() {
        let source = Scripted::default();
        let metrics = BatchMetrics::new(&mut Registry::default());
        let list = ids(&["S30", "M10", "S20", "F5", "S1"]);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        let items = fan_out(&source, &batch(), &list, deadline, &metrics).await;
        assert_eq!(
            items,
            vec![
                Item::Found(Bytes::from_static(b"S30")),
                Item::Missing,
                Item::Found(Bytes::from_static(b"S20")),
                Item::Failed(Failure::Transport),
                Item::Found(Bytes::from_static(b"S1")),
            ]
        );
        assert!(source.dropped.lock().expect("lock").is_empty());
    }

    /// Lookups still running at the deadline are cancelled and failed; the others are kept.
    #[tokio::test(start_paused = true)]
    async fn the_deadline_fails_what_is_unfinished_and_cancels_it() {
        let source = Scripted::default();
        let metrics = BatchMetrics::new(&mut Registry::default());
        let list = ids(&["S10", "S5000", "M20", "F3000"]);
        let start = tokio::time::Instant::now();
        let items = fan_out(
            &source,
            &batch(),
            &list,
            start + Duration::from_millis(100),
            &metrics,
        )
        .await;
        assert_eq!(
            items,
            vec![
                Item::Found(Bytes::from_static(b"S10")),
                Item::Failed(Failure::Deadline),
                Item::Missing,
                Item::Failed(Failure::Deadline),
            ]
        );
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        let mut dropped = source.dropped.lock().expect("lock").clone();
        dropped.sort();
        assert_eq!(dropped, ["F3000", "S5000"]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_batch_needs_no_lookup() {
        let metrics = BatchMetrics::new(&mut Registry::default());
        let items = fan_out(
            &Scripted::default(),
            &batch(),
            &[],
            tokio::time::Instant::now(),
            &metrics,
        )
        .await;
        assert!(items.is_empty());
    }
}
