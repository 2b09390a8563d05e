//! Fault injection for batch sinks: makes a share of batch writes come back throttled or with
//! part of their items unprocessed, as a busy DynamoDB table does. Used by tests and chaos runs;
//! the writer above it must still store everything.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::writer::{BatchSink, SinkError};
use crate::model::{Write, WriteKey};

/// A [`BatchSink`] that fails a share of write calls.
pub struct FaultySink {
    inner: Arc<dyn BatchSink>,
    rate: f64,
    rng: std::sync::Mutex<ChaCha8Rng>,
    throttled: AtomicU64,
    partial: AtomicU64,
}

impl FaultySink {
    /// Wraps `inner`; a share `rate` (0..=1) of write calls fails, half of them throttled (nothing
    /// written) and half partially processed (the second half of the items is written later).
    pub fn new(inner: Arc<dyn BatchSink>, rate: f64, seed: u64) -> Self {
        Self {
            inner,
            rate: rate.clamp(0.0, 1.0),
            rng: std::sync::Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
            throttled: AtomicU64::new(0),
            partial: AtomicU64::new(0),
        }
    }

    /// Calls answered as throttled so far.
    pub fn throttled(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }

    /// Calls answered with unprocessed items so far.
    pub fn partial(&self) -> u64 {
        self.partial.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl BatchSink for FaultySink {
    async fn write_batch(&self, writes: &[&Write]) -> Result<Vec<usize>, SinkError> {
        let roll: f64 = self.rng.lock().unwrap_or_else(|p| p.into_inner()).random();
        if roll < self.rate / 2.0 {
            self.throttled.fetch_add(1, Ordering::Relaxed);
            return Err(SinkError::Throttled(
                "injected ProvisionedThroughputExceededException".into(),
            ));
        }
        if roll < self.rate && writes.len() > 1 {
            self.partial.fetch_add(1, Ordering::Relaxed);
            let half = writes.len() / 2;
            let unprocessed_inner = self.inner.write_batch(&writes[..half]).await?;
            let mut unprocessed: Vec<usize> = unprocessed_inner;
            unprocessed.extend(half..writes.len());
            return Ok(unprocessed);
        }
        self.inner.write_batch(writes).await
    }

    async fn stored_versions(
        &self,
        keys: &[&WriteKey],
    ) -> Result<(HashMap<WriteKey, u64>, Vec<usize>), SinkError> {
        self.inner.stored_versions(keys).await
    }
}
