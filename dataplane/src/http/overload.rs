//! Overload protection: a concurrency limit with a LIFO wait queue and a queue timeout.
//!
//! Why LIFO: under overload a FIFO queue serves the requests that have waited longest, which are
//! the ones whose clients are most likely to have given up already; everyone ends up slow. Serving
//! the newest waiter first keeps most requests fast and lets the oldest time out (503 with
//! `Retry-After`, so well-behaved clients back off). When the queue is full the oldest waiter is
//! shed for the same reason.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

/// Limits and queueing for [`LifoLimiter`].
#[derive(Debug, Clone, Copy)]
pub struct OverloadConfig {
    /// Requests served concurrently.
    pub max_concurrent: usize,
    /// Requests waiting for a slot; beyond it the oldest waiter is shed.
    pub max_queue: usize,
    /// How long a request may wait for a slot.
    pub queue_timeout: Duration,
}

impl Default for OverloadConfig {
    fn default() -> Self {
        Self {
            max_concurrent: 512,
            max_queue: 1024,
            queue_timeout: Duration::from_millis(100),
        }
    }
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// The queue was full and this waiter was the oldest (or the queue has no room at all).
    #[error("overloaded: wait queue full")]
    QueueFull,
    /// Waited longer than the queue timeout.
    #[error("overloaded: no slot within the queue timeout")]
    Timeout,
}

impl Rejected {
    /// Label for metrics.
    pub fn as_label(self) -> &'static str {
        match self {
            Rejected::QueueFull => "queue_full",
            Rejected::Timeout => "queue_timeout",
        }
    }
}

#[derive(Debug, Default)]
struct State {
    in_flight: usize,
    /// Oldest at the front, newest at the back.
    waiters: VecDeque<(u64, oneshot::Sender<()>)>,
    next_id: u64,
}

#[derive(Debug)]
struct Inner {
    config: OverloadConfig,
    state: Mutex<State>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the counters half-updated (every critical
        // section is a few integer and queue operations), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a slot in `st` if one is free (the caller holds the lock and makes the permit).
    fn take_free_slot(&self, st: &mut State) -> bool {
        let free = st.in_flight < self.config.max_concurrent;
        if free {
            st.in_flight += 1;
        }
        free
    }

    fn release(&self) {
        let mut st = self.lock();
        // Hand the slot to the newest waiter still listening; `in_flight` stays the same.
        while let Some((_, tx)) = st.waiters.pop_back() {
            if tx.send(()).is_ok() {
                return;
            }
        }
        st.in_flight = st.in_flight.saturating_sub(1);
    }
}

/// The limiter. Clones share state.
#[derive(Debug, Clone)]
pub struct LifoLimiter {
    inner: Arc<Inner>,
}

/// A held slot; released on drop.
#[derive(Debug)]
pub struct Permit {
    inner: Arc<Inner>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.inner.release();
    }
}

impl LifoLimiter {
    /// A limiter with the given limits.
    pub fn new(config: OverloadConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// Requests holding a slot.
    pub fn in_flight(&self) -> usize {
        self.inner.lock().in_flight
    }

    /// Requests waiting for a slot.
    pub fn queued(&self) -> usize {
        self.inner.lock().waiters.len()
    }

    /// A slot if one is free now, without queueing.
    pub fn try_acquire(&self) -> Option<Permit> {
        let mut st = self.inner.lock();
        self.inner.take_free_slot(&mut st).then(|| self.permit())
    }

    /// Waits for a slot, newest waiters first, at most the queue timeout.
    pub async fn acquire(&self) -> Result<Permit, Rejected> {
        let (id, rx) = {
            let mut st = self.inner.lock();
            if self.inner.take_free_slot(&mut st) {
                return Ok(self.permit());
            }
            if self.inner.config.max_queue == 0 {
                return Err(Rejected::QueueFull);
            }
            if st.waiters.len() >= self.inner.config.max_queue {
                // Dropping the sender wakes the oldest waiter with QueueFull.
                st.waiters.pop_front();
            }
            let (tx, rx) = oneshot::channel();
            st.next_id += 1;
            let id = st.next_id;
            st.waiters.push_back((id, tx));
            (id, rx)
        };
        let mut rx = rx;
        match tokio::time::timeout(self.inner.config.queue_timeout, &mut rx).await {
            Ok(Ok(())) => Ok(self.permit()),
            Ok(Err(_)) => Err(Rejected::QueueFull),
            Err(_) => {
                let mut st = self.inner.lock();
                // A slot may have been handed over between the timer firing and taking the lock;
                // releases send under the lock, so this check is race-free. Use the slot rather
                // than leak it.
                if rx.try_recv().is_ok() {
                    return Ok(self.permit());
                }
                st.waiters.retain(|(w, _)| *w != id);
                Err(Rejected::Timeout)
            }
        }
    }

    fn permit(&self) -> Permit {
        Permit {
            inner: Arc::clone(&self.inner),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(max_concurrent: usize, max_queue: usize, timeout_ms: u64) -> LifoLimiter {
        LifoLimiter::new(OverloadConfig {
            max_concurrent,
            max_queue,
            queue_timeout: Duration::from_millis(timeout_ms),
        })
    }

    async fn wait_queued(l: &LifoLimiter, n: usize) {
        while l.queued() != n {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn newest_waiter_is_served_first() {
        let l = limiter(1, 10, 10_000);
        let first = l.acquire().await.expect("free slot");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..3 {
            let (l2, tx) = (l.clone(), tx.clone());
            tokio::spawn(async move {
                let p = l2.acquire().await;
                let _ = tx.send((i, p.is_ok()));
                drop(p);
            });
            wait_queued(&l, i + 1).await;
        }
        drop(first);
        let order: Vec<_> = [rx.recv().await, rx.recv().await, rx.recv().await]
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(order, vec![(2, true), (1, true), (0, true)]);
        assert_eq!(l.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn full_queue_sheds_the_oldest_and_timeouts_reject() {
        let l = limiter(1, 1, 50);
        let _held = l.acquire().await.expect("free slot");
        let oldest = tokio::spawn({
            let l = l.clone();
            async move { l.acquire().await.map(|_| ()) }
        });
        wait_queued(&l, 1).await;
        let newer = tokio::spawn({
            let l = l.clone();
            async move { l.acquire().await.map(|_| ()) }
        });
        assert_eq!(oldest.await.expect("task"), Err(Rejected::QueueFull));
        assert_eq!(newer.await.expect("task"), Err(Rejected::Timeout));
        assert_eq!(l.queued(), 0);
        assert_eq!(l.in_flight(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_waiters_do_not_leak_slots() {
        let l = limiter(1, 4, 10_000);
        let held = l.acquire().await.expect("free slot");
        let waiter = tokio::spawn({
            let l = l.clone();
            async move { l.acquire().await.map(|_| ()) }
        });
        wait_queued(&l, 1).await;
        waiter.abort();
        let _ = waiter.await;
        drop(held);
        assert_eq!(
            l.in_flight(),
            0,
            "slot handed to a cancelled waiter must come back"
        );
        let _again = l.acquire().await.expect("slot free again");
        assert!(limiter(1, 0, 1).acquire().await.is_ok());
    }
}
