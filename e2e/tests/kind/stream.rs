//! An open-loop stream of GETs through the ingress: what clients see while the cluster changes
//! under them (a weight shift, a rollout, a pod killed).
//!
//! Open loop: request `k` is sent at `start + k / rate` whether or not the earlier ones have
//! answered, each on a task of its own. A closed loop (send, wait, send) slows down exactly when
//! the system does, so it sends fewer requests into a bad moment and hides the failures this
//! suite counts (coordinated omission). Every request carries its sequence number, so a window of
//! the stream is "requests `k..k+n`", whatever order they answered in.
//!
//! The stream runs on the test's runtime: tests that use it take a multi-threaded one, so
//! reading answers never waits behind the test's own API calls.
//!
//! Bounded: at most [`MAX_DURATION`] of sending, each request bounded by the HTTP client's
//! timeout; dropping a stream stops it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prapi_e2e::kit::eventually_within;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The longest a stream sends: longer than any scenario, so a stuck test cannot run forever.
pub const MAX_DURATION: Duration = Duration::from_secs(15 * 60);

/// One request of the stream.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Its sequence number.
    pub seq: u64,
    /// When it was sent, since the stream started.
    pub sent: Duration,
    /// How long the answer took.
    pub latency: Duration,
    /// The answer, or why there was none (reset, timeout).
    pub reply: Result<Reply, String>,
}

/// An answer.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The pod that answered (`X-Served-By`), when the installation names it.
    pub served_by: Option<String>,
    /// What is wrong with the answer by the stream's [`Accept`] (`None`: a good answer).
    pub refused: Option<String>,
}

/// Whether an answer (status, body) is what a client wanted; `Err` says why not.
pub type Accept = fn(u16, &[u8]) -> Result<(), String>;

/// A single GET of an existing product: `200`.
pub fn found(status: u16, body: &[u8]) -> Result<(), String> {
    // A refusal names who refused and why: prapi's problem+json, or the ingress's own page.
    (status == 200).then_some(()).ok_or_else(|| {
        let excerpt = String::from_utf8_lossy(&body[..body.len().min(200)]);
        format!("status {status}: {excerpt}")
    })
}

/// A batch of existing products: `200` with every id in `items` (none `missing` or `failed`).
pub fn complete_batch(status: u16, body: &[u8]) -> Result<(), String> {
    /// Only the two lists are read: the items (most of the body) are skipped, not built, since
    /// the suite's client shares the machine with the cluster it measures.
    #[derive(serde::Deserialize)]
    struct Lists {
        missing: Option<Vec<serde_json::Value>>,
        failed: Option<Vec<serde_json::Value>>,
    }
    found(status, body)?;
    let lists: Lists = serde_json::from_slice(body).map_err(|e| format!("batch body: {e}"))?;
    for (list, ids) in [("missing", lists.missing), ("failed", lists.failed)] {
        match ids {
            Some(ids) if ids.is_empty() => {}
            Some(ids) => return Err(format!("{list}: {ids:?}")),
            None => return Err(format!("no {list} list")),
        }
    }
    Ok(())
}

impl Outcome {
    /// A failure as clients count it: no answer, or one the stream's [`Accept`] refused.
    pub fn failed(&self) -> bool {
        !matches!(&self.reply, Ok(r) if r.refused.is_none())
    }

    /// The pod that answered.
    pub fn served_by(&self) -> Option<&str> {
        self.reply.as_ref().ok()?.served_by.as_deref()
    }
}

/// A running stream.
pub struct Stream {
    started: Instant,
    rate: u32,
    outcomes: Arc<Mutex<Vec<Option<Outcome>>>>,
    stop: watch::Sender<bool>,
    sender: Option<tokio::task::JoinHandle<()>>,
}

impl Stream {
    /// Starts sending `rate` GETs per second, cycling through `urls`, each with `headers`;
    /// `accept` judges each answer.
    pub fn start(
        http: reqwest::Client,
        urls: Vec<String>,
        headers: Vec<(String, String)>,
        rate: u32,
        accept: Accept,
    ) -> Stream {
        assert!(!urls.is_empty() && rate > 0);
        let started = Instant::now();
        let outcomes: Arc<Mutex<Vec<Option<Outcome>>>> = Arc::default();
        let (stop, mut stopped) = watch::channel(false);
        let sink = Arc::clone(&outcomes);
        let sender = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut inflight = JoinSet::new();
            for seq in 0u64.. {
                tokio::select! {
                    _ = stopped.changed() => break,
                    _ = tick.tick() => {}
                }
                if started.elapsed() > MAX_DURATION {
                    break;
                }
                sink.lock().expect("outcomes").push(None);
                let url = &urls[seq as usize % urls.len()];
                // Identity: the suite is a debug build sharing two cores with the cluster it
                // measures; inflating megabytes of gzip a second here delayed every answer it
                // timed (single GETs measured at a 3 s median while the pods answered in ms).
                let mut req = http
                    .get(url)
                    .header(reqwest::header::ACCEPT_ENCODING, "identity");
                for (k, v) in &headers {
                    req = req.header(k, v);
                }
                let sink = Arc::clone(&sink);
                inflight.spawn(async move {
                    let sent = started.elapsed();
                    let reply = match req.send().await {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            let served_by = r
                                .headers()
                                .get(crate::support::SERVED_BY)
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_string);
                            // The whole body: a reset halfway through is a failure too.
                            match r.bytes().await {
                                Ok(body) => Ok(Reply {
                                    served_by,
                                    refused: accept(status, &body).err(),
                                }),
                                Err(e) => Err(format!("body: {e}")),
                            }
                        }
                        Err(e) => Err(e.to_string()),
                    };
                    let latency = started.elapsed() - sent;
                    sink.lock().expect("outcomes")[seq as usize] = Some(Outcome {
                        seq,
                        sent,
                        latency,
                        reply,
                    });
                });
                // Reap finished tasks as we go, so the set stays as small as what is in flight.
                while inflight.try_join_next().is_some() {}
            }
            while inflight.join_next().await.is_some() {}
        });
        Stream {
            started,
            rate,
            outcomes,
            stop,
            sender: Some(sender),
        }
    }

    /// The sequence number of the next request to be sent.
    pub fn next_seq(&self) -> u64 {
        self.outcomes.lock().expect("outcomes").len() as u64
    }

    /// Time since the stream started (the clock of [`Outcome::sent`]).
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Requests `from..from + n`, once all of them have answered (or failed).
    pub async fn window(&self, from: u64, n: u64) -> Vec<Outcome> {
        let wait = Duration::from_secs(n / u64::from(self.rate) + 60);
        eventually_within(wait, &format!("requests {from}..{}", from + n), || async {
            let all = self.outcomes.lock().expect("outcomes");
            let range = all.get(from as usize..(from + n) as usize)?;
            range.iter().cloned().collect::<Option<Vec<_>>>()
        })
        .await
    }

    /// Stops sending and returns every request's outcome once all have answered.
    pub async fn stop(mut self) -> Vec<Outcome> {
        let _ = self.stop.send(true);
        if let Some(sender) = self.sender.take() {
            sender.await.expect("the stream's sender");
        }
        let all = std::mem::take(&mut *self.outcomes.lock().expect("outcomes"));
        all.into_iter().flatten().collect()
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if let Some(sender) = self.sender.take() {
            sender.abort();
        }
    }
}

/// Failures of `outcomes`, summarised for an assertion message: at most 10, with their time.
pub fn failures(outcomes: &[Outcome]) -> Vec<String> {
    outcomes
        .iter()
        .filter(|o| o.failed())
        .take(10)
        .map(|o| match &o.reply {
            Ok(r) => format!(
                "#{} at {:.1}s (answered by {} after {:?}): {}",
                o.seq,
                o.sent.as_secs_f64(),
                r.served_by.as_deref().unwrap_or("no prapi pod"),
                o.latency,
                r.refused.as_deref().unwrap_or("?")
            ),
            Err(e) => format!("#{} at {:.1}s: {e}", o.seq, o.sent.as_secs_f64()),
        })
        .collect()
}

/// Latency percentile `p` (0..=1) of the answered requests of `outcomes`.
pub fn latency_percentile(outcomes: &[Outcome], p: f64) -> Duration {
    let mut l: Vec<Duration> = outcomes
        .iter()
        .filter(|o| !o.failed())
        .map(|o| o.latency)
        .collect();
    if l.is_empty() {
        return Duration::ZERO;
    }
    l.sort_unstable();
    let i = ((l.len() - 1) as f64 * p).round() as usize;
    l[i]
}
