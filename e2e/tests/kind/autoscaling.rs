//! Lag autoscaling with nothing else installed: the operator serves the updaters' consumer lag as
//! an External metric (`external.metrics.k8s.io`, through the API server's aggregation layer), the
//! updater's HPA scales on it, and a burst of events into a 4-partition topic is worked off by up
//! to four updaters, which go back to one once the lag is gone.
//!
//! The burst lasts until the HPA has acted. The HPA reads the metric once per sync (15 s) and the
//! operator serves a reading up to 10 s old, so a burst one updater works off within about 25 s
//! may never be seen: on a quiet machine one updater drained a single round of about 21,000
//! events before any reading showed it, and nothing scaled. So the suite produces round after
//! round (each the same catalogue again, which the updater stores idempotently) until the
//! updater's replicas rise, at most [`MAX_ROUNDS`].

use std::fmt;
use std::io::Write as _;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::api::Api;
use serde_json::json;

use crate::support::*;

/// Partitions of each topic: the updater's replica ceiling.
const PARTITIONS: i32 = 4;

/// Products of the burst; `prapi gen` gives each about 20 offers in one country, so the burst is
/// about 21 events per product.
const BURST_PRODUCTS: u32 = 1000;

/// Rounds of the burst at most (each about 21 events per product of [`BURST_PRODUCTS`]).
const MAX_ROUNDS: u32 = 12;

/// Lag (messages) one updater replica is expected to work off: the burst asks for far more than
/// [`PARTITIONS`] replicas, so the ceiling is what is tested.
const LAG_THRESHOLD: i64 = 500;

/// The updater's scale-down window: short, so the test sees the return to the floor.
const SCALE_DOWN_WINDOW_SECONDS: i32 = 20;

/// How often the timeline is sampled.
const TICK: Duration = Duration::from_secs(1);

/// The longest the scenario may take from the burst to the updater back at one replica: the
/// burst worked off (minutes at worst on this machine), the HPA's sync period (15 s), the window.
const BOUND: Duration = Duration::from_secs(480);

/// One sample of the timeline.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    /// Seconds since the burst started.
    at: f64,
    /// The group's lag as the External metric serves it (`None`: not served at that moment).
    lag: Option<i64>,
    /// Why the lag was not served (the API's answer), when it was not.
    lag_error: Option<String>,
    /// The updater Deployment's desired and ready replicas.
    replicas: i32,
    ready: i32,
    /// `AutoscalingActive` of the MarketGroup: status and reason.
    active: (String, String),
}

impl fmt::Display for Sample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "t={:>5.1}s lag={:>6} replicas={} ready={} AutoscalingActive={} ({})",
            self.at,
            self.lag.map_or("-".to_string(), |l| l.to_string()),
            self.replicas,
            self.ready,
            self.active.0,
            self.active.1
        )?;
        match &self.lag_error {
            Some(e) => write!(f, " [lag not served: {e}]"),
            None => Ok(()),
        }
    }
}

/// The group's total lag from the External metrics API, as the HPA controller reads it; the
/// API's answer when it serves none.
async fn served_lag(kind: &Kind, ns: &str, group: &str) -> Result<i64, String> {
    let req = http::Request::get(format!(
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/prapi_updater_consumer_lag?labelSelector=app_kubernetes_io_instance%3D{group}"
    ))
    .body(Vec::new())
    .map_err(|e| e.to_string())?;
    let list: serde_json::Value = kind.client.request(req).await.map_err(|e| e.to_string())?;
    list["items"]
        .as_array()
        .ok_or_else(|| format!("no items in {list}"))?
        .iter()
        // The operator writes each value as a plain decimal (docs/operator.md, "Lag autoscaling").
        .map(|i| i["value"].as_str()?.parse::<i64>().ok())
        .sum::<Option<i64>>()
        .ok_or_else(|| format!("a value that is not a decimal in {list}"))
}

/// The `Available` condition of the APIService that routes the External metrics API to the
/// operator, as `status reason: message` (what to look at when the metric is not served).
async fn metrics_api_service(kind: &Kind) -> String {
    let api: Api<APIService> = Api::all(kind.client.clone());
    match api.get("v1beta1.external.metrics.k8s.io").await {
        Ok(s) => s
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Available")
            .map_or("no Available condition".into(), |c| {
                format!(
                    "Available={} {}: {}",
                    c.status,
                    c.reason.unwrap_or_default(),
                    c.message.unwrap_or_default()
                )
            }),
        Err(e) => format!("reading it: {e}"),
    }
}

async fn sample(kind: &Kind, ns: &str, group: &str, at: f64) -> Sample {
    let deployments: Api<Deployment> = Api::namespaced(kind.client.clone(), ns);
    let d = deployments
        .get(&format!("{group}-updater"))
        .await
        .unwrap_or_else(|e| panic!("the updater Deployment: {e}"));
    let replicas = d.spec.and_then(|s| s.replicas).unwrap_or(0);
    let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
    let g = marketgroups(&kind.client, ns)
        .get(group)
        .await
        .unwrap_or_else(|e| panic!("the MarketGroup: {e}"));
    let active = condition(&g, "AutoscalingActive")
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .unwrap_or_default();
    let (lag, lag_error) = match served_lag(kind, ns, group).await {
        Ok(l) => (Some(l), None),
        Err(e) => (None, Some(e)),
    };
    Sample {
        at,
        lag,
        lag_error,
        replicas,
        ready,
        active,
    }
}

/// docs/examples/one-group.yaml with a 4-partition topic, the updater's HPA on the External lag
/// metric (kind has no KEDA). A burst of about 21,000 events: the updater's replicas rise above
/// one and never above four, the served lag drains to 0, the replicas return to one, and
/// `AutoscalingActive` stays True throughout. The timeline goes to stderr (docs/e2e.md).
#[tokio::test]
async fn a_burst_scales_the_updater_up_to_the_partitions_and_back() {
    let Some(kind) = Kind::get().await else {
        return;
    };
    let ns = test_namespace(&kind, "e2e-lag").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let topics = Topics::create(kind.var("KAFKA_BOOTSTRAP_SERVERS"), PARTITIONS).await;
    let mut g = example(&kind, "one-group.yaml", &topics)
        .into_iter()
        .next()
        .expect("one group");
    g["spec"]["countries"] = json!(["de"]);
    g["spec"]["products"]["replicas"] = json!({"min": 1, "max": 1});
    g["spec"]["updater"]["lagThreshold"] = json!(LAG_THRESHOLD);
    g["spec"]["updater"]["scaleDownStabilizationSeconds"] = json!(SCALE_DOWN_WINDOW_SECONDS);
    let group = apply_group(&kind.client, &ns, &g).await;
    wait_ready(&kind.client, &ns, &group).await;
    let settled =
        |s: &Sample| s.replicas == 1 && s.ready == 1 && s.lag == Some(0) && s.active.0 == "True";
    let started = Instant::now();
    loop {
        let s = sample(&kind, &ns, &group, 0.0).await;
        if settled(&s) {
            break;
        }
        if started.elapsed() >= BOUND {
            panic!(
                "the idle group never settled at one updater, lag 0, AutoscalingActive True: {s}; \
                 the metrics APIService: {}",
                metrics_api_service(&kind).await
            );
        }
        tokio::time::sleep(TICK).await;
    }

    let catalogue = generate_catalogue(dir.path(), BURST_PRODUCTS, "de");
    let burst_at = Instant::now();
    let mut timeline: Vec<Sample> = Vec::new();
    let mut scaled_up = false;
    let mut rounds = 0;
    let mut produced = 0.0;
    loop {
        if !scaled_up && rounds < MAX_ROUNDS {
            produce(&topics, &catalogue, catalogue.product_ids.len()).await;
            rounds += 1;
            produced = burst_at.elapsed().as_secs_f64();
        }
        let s = sample(&kind, &ns, &group, burst_at.elapsed().as_secs_f64()).await;
        assert!(
            s.replicas <= PARTITIONS,
            "more updaters than partitions: {s}"
        );
        assert_eq!(
            s.active.0, "True",
            "AutoscalingActive not True during the burst: {s}"
        );
        scaled_up |= s.replicas > 1;
        let done = scaled_up && settled(&s);
        if timeline.last().is_none_or(|l| {
            (l.lag, l.replicas, l.ready, &l.active) != (s.lag, s.replicas, s.ready, &s.active)
        }) {
            timeline.push(s.clone());
        }
        if done {
            break;
        }
        assert!(
            burst_at.elapsed() < BOUND,
            "no scale up and back within {BOUND:?} ({rounds} rounds of {} events produced); \
             timeline:\n{}",
            catalogue.events.len(),
            timeline
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(TICK).await;
    }
    let peak = timeline.iter().map(|s| s.replicas).max().unwrap_or(0);
    let peak_lag = timeline.iter().filter_map(|s| s.lag).max().unwrap_or(0);
    let first =
        |f: &dyn Fn(&Sample) -> bool| timeline.iter().find(|s| f(s)).map_or(f64::NAN, |s| s.at);
    let _ = writeln!(
        std::io::stderr(),
        "lag autoscaling: {rounds} rounds of {} events produced in {produced:.1}s; peak lag {peak_lag}, peak replicas \
         {peak} (ceiling {PARTITIONS}); first scale-up at {:.1}s, lag 0 at {:.1}s, back to 1 \
         at {:.1}s (window {SCALE_DOWN_WINDOW_SECONDS}s)\n{}",
        catalogue.events.len(),
        first(&|s| s.replicas > 1),
        first(&|s| s.lag == Some(0) && s.at > produced),
        timeline.last().map_or(f64::NAN, |s| s.at),
        timeline
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
}
