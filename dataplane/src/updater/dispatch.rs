//! From a raw message to a lane: parse, validate, filter by country, pick the lane. Messages
//! that go nowhere (filtered, invalid) are finished here so they never hold back their
//! partition's commit.

use std::sync::{Arc, Mutex};

use super::lanes::{LaneItem, lane_of};
use super::metrics::UpdaterMetrics;
use super::offsets::{OffsetTracker, TopicPartition};
use crate::model::{Country, Event, EventError};

/// One consumed message.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// Where it came from.
    pub tp: TopicPartition,
    /// Its offset.
    pub offset: i64,
    /// Kafka key (the product id by contract).
    pub key: Option<Vec<u8>>,
    /// The event JSON.
    pub payload: Option<Vec<u8>>,
}

/// What became of a message.
#[derive(Debug)]
pub enum Routed {
    /// A write for lane `.0`.
    Lane(usize, LaneItem),
    /// An offer of a country this market group does not serve: dropped (and finished).
    Filtered,
    /// Not a valid event: the caller dead-letters it (if configured) and then finishes it.
    Invalid(Incoming, String),
}

/// Routes messages; shared by every source.
#[derive(Debug)]
pub struct Dispatcher {
    countries: Vec<Country>,
    lanes: usize,
    tracker: Arc<Mutex<OffsetTracker>>,
    metrics: Arc<UpdaterMetrics>,
}

impl Dispatcher {
    /// A dispatcher keeping offers of `countries` (empty: every country) over `lanes` lanes.
    pub fn new(
        countries: Vec<Country>,
        lanes: usize,
        tracker: Arc<Mutex<OffsetTracker>>,
        metrics: Arc<UpdaterMetrics>,
    ) -> Self {
        Self {
            countries,
            lanes: lanes.max(1),
            tracker,
            metrics,
        }
    }

    /// The offset tracker messages are recorded in.
    pub fn tracker(&self) -> &Arc<Mutex<OffsetTracker>> {
        &self.tracker
    }

    /// Records the message as received and decides where it goes.
    pub fn route(&self, msg: Incoming) -> Routed {
        self.metrics.count("received", 1);
        self.lock().received(&msg.tp, msg.offset);
        let parsed = match &msg.payload {
            None => Err("empty message (no value)".to_owned()),
            Some(p) => Event::parse(p).map_err(|e: EventError| e.to_string()),
        };
        let event = match parsed {
            Ok(e) => e,
            Err(reason) => {
                self.metrics.count("invalid", 1);
                tracing::warn!(
                    topic = %msg.tp.topic,
                    partition = msg.tp.partition,
                    offset = msg.offset,
                    %reason,
                    "invalid message skipped"
                );
                return Routed::Invalid(msg, reason);
            }
        };
        if let Some(key) = &msg.key
            && key.as_slice() != event.product_id().as_str().as_bytes()
        {
            // Ordering per id relies on the key; the event itself is valid, so apply it.
            self.metrics.count("key_mismatch", 1);
            tracing::warn!(
                topic = %msg.tp.topic,
                partition = msg.tp.partition,
                offset = msg.offset,
                product_id = %event.product_id(),
                "message key is not the product id; per-id order is not guaranteed for it"
            );
        }
        let write = event.into_write();
        if let Some(country) = write.country()
            && !self.countries.is_empty()
            && !self.countries.contains(&country)
        {
            self.metrics.count("filtered", 1);
            self.finish(&msg.tp, msg.offset);
            return Routed::Filtered;
        }
        let lane = lane_of(write.product_id(), self.lanes);
        Routed::Lane(
            lane,
            LaneItem {
                write,
                tp: msg.tp,
                offset: msg.offset,
            },
        )
    }

    /// Marks a message's work as finished.
    pub fn finish(&self, tp: &TopicPartition, offset: i64) {
        self.lock().done(tp, offset);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OffsetTracker> {
        self.tracker.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(offset: i64, payload: &str) -> Incoming {
        Incoming {
            tp: TopicPartition {
                topic: Arc::from("offers"),
                partition: 0,
            },
            offset,
            key: Some(b"P1".to_vec()),
            payload: Some(payload.as_bytes().to_vec()),
        }
    }

    #[test]
    fn routes_filters_and_rejects() {
        let tracker = Arc::new(Mutex::new(OffsetTracker::new()));
        let metrics = Arc::new(UpdaterMetrics::default());
        let d = Dispatcher::new(
            vec![Country::parse("de").expect("country")],
            8,
            tracker.clone(),
            metrics.clone(),
        );
        let offer = |c: &str| {
            format!(
                r#"{{"type":"offer","product_id":"P1","merchant_id":"m1","country":"{c}","sku":"S","version":1,"price":{{"amount":1,"currency":"EUR"}},"stock":0}}"#
            )
        };
        let Routed::Lane(lane, item) = d.route(msg(0, &offer("DE"))) else {
            panic!("a served country goes to a lane")
        };
        assert_eq!(lane, lane_of(item.write.product_id(), 8));
        assert!(matches!(d.route(msg(1, &offer("fr"))), Routed::Filtered));
        assert!(matches!(d.route(msg(2, "{oops")), Routed::Invalid(_, _)));
        assert!(matches!(
            d.route(msg(3, r#"{"type":"product_deleted","id":"P 1","version":1}"#)),
            Routed::Invalid(_, r) if r.contains("product id")
        ));
        let Routed::Lane(..) = d.route(msg(
            4,
            r#"{"type":"product_deleted","id":"P2","version":1}"#,
        )) else {
            panic!("products go to every group")
        };
        assert_eq!(metrics.counted("received"), 5);
        assert_eq!(metrics.counted("filtered"), 1);
        assert_eq!(metrics.counted("invalid"), 2);
        assert_eq!(metrics.counted("key_mismatch"), 1);
        // Offset 0 is still in a lane: nothing committable beyond it.
        let tp = item.tp.clone();
        assert_eq!(tracker.lock().expect("lock").committable(&tp), Some(0));
        d.finish(&tp, 0);
        d.finish(&tp, 2);
        d.finish(&tp, 3);
        d.finish(&tp, 4);
        assert_eq!(tracker.lock().expect("lock").committable(&tp), Some(5));
    }
}
