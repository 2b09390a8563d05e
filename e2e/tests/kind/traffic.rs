//! Traffic shifted by editing a field, a new group gated until its table is filled, and a group
//! deleted, under a constant open-loop stream of requests through Skipper: the split as clients
//! see it, the order in which the operator grows capacity and moves traffic, and not one failed
//! request.

use std::io::Write as _;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{Api, DeleteParams};
use prapi_e2e::kit::{PATIENCE, eventually};
use serde_json::json;

use crate::stream::{Outcome, Stream, failures, found, latency_percentile};
use crate::support::*;

/// Requests per second of the stream (open loop).
const RATE: u32 = 150;

/// Requests measured at each step. The split of `n` requests at share `p` has a standard deviation
/// of sqrt(p(1-p)/n): at 50 % and 4,000 requests 0.79 points, so ±3 points is 3.8 deviations
/// (a false alarm about once in 7,000 steps).
const SAMPLE: u64 = 4000;

/// The tolerance on a step's measured split, in percentage points.
const TOLERANCE: f64 = 3.0;

/// How often the timeline is sampled.
const TIMELINE_TICK: Duration = Duration::from_millis(500);

/// The group whose pod answered, from its name (`<group>-products-<hash>-<hash>`).
fn group_of<'a>(outcome: &Outcome, groups: &[&'a str]) -> Option<&'a str> {
    let pod = outcome.served_by()?;
    groups
        .iter()
        .copied()
        .find(|g| pod.starts_with(&format!("{g}-products-")))
}

/// One sample of the timeline of a step.
#[derive(Debug)]
struct Sample {
    at: Duration,
    /// Per group: (products floor (HPA minReplicas), ready products replicas, actual weight).
    groups: Vec<(i32, i32, Option<i64>)>,
}

async fn sample(kind: &Kind, ns: &str, names: &[&str], country: &str, at: Duration) -> Sample {
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(kind.client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(kind.client.clone(), ns);
    let groups = marketgroups(&kind.client, ns);
    let mut out = Vec::new();
    for name in names {
        let products = format!("{name}-products");
        let floor = hpas
            .get(&products)
            .await
            .ok()
            .and_then(|h| h.spec?.min_replicas)
            .unwrap_or(0);
        let ready = deployments
            .get(&products)
            .await
            .ok()
            .and_then(|d| d.status?.ready_replicas)
            .unwrap_or(0);
        let actual = groups
            .get(name)
            .await
            .ok()
            .and_then(|g| traffic_of(&g, country)?.1);
        out.push((floor, ready, actual));
    }
    Sample { at, groups: out }
}

/// docs/examples/two-groups-90-10.yaml, both groups on the same catalogue, Germany moved from
/// `eu` to `eu-next` in the documented steps 100/0 → 90/10 → 50/50 → 0/100 by patching the
/// weights (the growing side first, so the country never has all weights at 0), then back to
/// 25/75, then `eu-next` deleted — all under a constant stream of single GETs of existing
/// products. At each step, once both statuses say desired = actual and the ingress has had time
/// to load the route, the next 4,000 requests split as the weights say (±3 points); before a
/// step moves traffic to `eu-next`, its products replicas are up to the floor the operator raised
/// (the timeline shows it); once `eu-next` is gone its table is too (`deletionPolicy: Delete`)
/// and `eu`'s is not; not one request fails over the whole sequence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_country_moves_between_groups_in_steps_without_a_failed_request() {
    let Some(kind) = Kind::get().await else {
        return;
    };
    let ns = test_namespace(&kind, "e2e-shift").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let catalogue = generate_catalogue(dir.path(), 60, "de,at");
    let topics = Topics::create(kind.var("KAFKA_BOOTSTRAP_SERVERS"), 4).await;
    produce(&topics, &catalogue, catalogue.product_ids.len()).await;
    let names = ["eu", "eu-next"];
    for mut g in example(&kind, "two-groups-90-10.yaml", &topics) {
        // eu starts with all of Germany on two products pods, so that eu-next has to grow
        // before it takes the whole country.
        if g["metadata"]["name"] == "eu" {
            g["spec"]["traffic"]["weight"] = json!(100);
            g["spec"]["products"]["replicas"]["min"] = json!(2);
        } else {
            g["spec"]["traffic"]["weight"] = json!(0);
        }
        apply_group(&kind.client, &ns, &g).await;
    }
    for name in names {
        wait_ready(&kind.client, &ns, name).await;
    }
    wait_traffic(&kind, &ns, "de", &[("eu", 100), ("eu-next", 0)]).await;
    // Both tables hold the catalogue before any request is sent: a product missing from the
    // group that answers would be a failed request.
    wait_table_holds(&kind, &format!("prapi-{ns}-eu"), &catalogue, &["de", "at"]).await;
    wait_table_holds(&kind, &format!("prapi-{ns}-eu-next"), &catalogue, &["de"]).await;
    let ids = &catalogue.product_ids;
    wait_country_routed(&kind, &catalogue, "de").await;

    let urls = ids
        .iter()
        .map(|id| format!("{}/product-offers/{id}", kind.ingress()))
        .collect();
    let headers = vec![("x-country".to_string(), "de".to_string())];
    let stream = Stream::start(kind.http.clone(), urls, headers, RATE, found);
    let mut report = Vec::new();
    let steps: [(i64, i64); 4] = [(90, 10), (50, 50), (0, 100), (25, 75)];
    for (eu, next) in steps {
        let total = eu + next;
        let (want_eu, want_next) = (
            (eu * 100 + total / 2) / total,
            100 - (eu * 100 + total / 2) / total,
        );
        let started = stream.elapsed();
        patch_spec(&kind, &ns, "eu-next", json!({"traffic": {"weight": next}})).await;
        patch_spec(&kind, &ns, "eu", json!({"traffic": {"weight": eu}})).await;
        let mut timeline = Vec::new();
        let give_up = Instant::now() + PATIENCE;
        let done = loop {
            let s = sample(&kind, &ns, &names, "de", stream.elapsed()).await;
            let reached = s.groups[0].2 == Some(want_eu) && s.groups[1].2 == Some(want_next);
            timeline.push(s);
            if reached {
                break stream.elapsed();
            }
            assert!(
                Instant::now() < give_up,
                "Germany not at {want_eu}/{want_next} in status within {PATIENCE:?}: {timeline:#?}"
            );
            tokio::time::sleep(TIMELINE_TICK).await;
        };
        // Capacity first: when eu-next's actual share rose, its products replicas were already
        // up to the highest floor the operator set for it during the step.
        let raised = timeline.iter().map(|s| s.groups[1].0).max().unwrap_or(0);
        let at_switch = timeline.last().expect("a sample");
        assert!(
            at_switch.groups[1].1 >= raised,
            "eu-next took {want_next} % with {} ready products pods, floor {raised}: {timeline:#?}",
            at_switch.groups[1].1
        );
        tokio::time::sleep(INGRESS_PROPAGATION).await;
        let from = stream.next_seq();
        let window = stream.window(from, SAMPLE).await;
        let to_next = window
            .iter()
            .filter(|o| group_of(o, &names) == Some("eu-next"))
            .count();
        let to_eu = window
            .iter()
            .filter(|o| group_of(o, &names) == Some("eu"))
            .count();
        assert_eq!(
            to_eu + to_next,
            window.len(),
            "answers not named by either group's products pods: {:?}",
            failures(&window)
        );
        let measured = 100.0 * to_next as f64 / window.len() as f64;
        assert!(
            (measured - want_next as f64).abs() <= TOLERANCE,
            "eu-next got {measured:.2} % of {} requests, {want_next} % wanted",
            window.len()
        );
        report.push(format!(
            "weights {eu}/{next}: status done {:.1}s after the patch; eu-next floor {raised}, {} ready at the switch; measured eu-next {measured:.2} % of {} (want {want_next} %); P50 {:?} P99 {:?}",
            (done - started).as_secs_f64(),
            at_switch.groups[1].1,
            window.len(),
            latency_percentile(&window, 0.5),
            latency_percentile(&window, 0.99),
        ));
        for s in &timeline {
            report.push(format!("  t={:.1}s {:?}", s.at.as_secs_f64(), s.groups));
        }
    }

    // Deleting eu-next under the stream: its share goes to eu first, then it goes away.
    let deleted_at = stream.elapsed();
    marketgroups(&kind.client, &ns)
        .delete("eu-next", &DeleteParams::default())
        .await
        .expect("delete eu-next");
    eventually("eu-next gone", || async {
        match marketgroups(&kind.client, &ns).get("eu-next").await {
            Err(kube::Error::Api(e)) if e.code == 404 => Some(()),
            _ => None,
        }
    })
    .await;
    let gone_at = stream.elapsed();
    // Its table went per its deletion policy (`Delete` in the example); eu's stays.
    let dynamodb = kind.dynamodb();
    eventually("eu-next's table deleted", || async {
        match dynamodb
            .describe_table()
            .table_name(format!("prapi-{ns}-eu-next"))
            .send()
            .await
        {
            Err(e) => e
                .as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception())
                .then_some(()),
            Ok(_) => None,
        }
    })
    .await;
    dynamodb
        .describe_table()
        .table_name(format!("prapi-{ns}-eu"))
        .send()
        .await
        .expect("eu's table is still there");
    wait_traffic(&kind, &ns, "de", &[("eu", 100)]).await;
    tokio::time::sleep(INGRESS_PROPAGATION).await;
    let from = stream.next_seq();
    let after = stream.window(from, 500).await;
    assert!(
        after.iter().all(|o| group_of(o, &names) == Some("eu")),
        "requests still reach eu-next after its deletion"
    );
    let all = stream.stop().await;
    let last_next = all
        .iter()
        .filter(|o| group_of(o, &names) == Some("eu-next"))
        .map(|o| o.sent)
        .max()
        .unwrap_or_default();
    // The finalizer goes once the routes no longer name eu-next; the ingress may take its
    // propagation time to load that.
    assert!(
        last_next <= gone_at + INGRESS_PROPAGATION,
        "eu-next answered at {last_next:?}, after it was gone at {gone_at:?}"
    );
    let failed = failures(&all);
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}",
        all.iter().filter(|o| o.failed()).count(),
        all.len()
    );
    report.push(format!(
        "eu-next deleted at {:.1}s, its last answer at {:.1}s, gone at {:.1}s; {} requests, 0 failed, P99 {:?}, P99.9 {:?}",
        deleted_at.as_secs_f64(),
        last_next.as_secs_f64(),
        gone_at.as_secs_f64(),
        all.len(),
        latency_percentile(&all, 0.99),
        latency_percentile(&all, 0.999),
    ));
    let _ = writeln!(std::io::stderr(), "{}", report.join("\n"));
}

/// Products of the bootstrap scenario's catalogue (about 21 events each): enough that the new
/// group's updater needs a visible while to read them.
const BOOTSTRAP_PRODUCTS: u32 = 300;

/// docs/examples/two-groups-90-10.yaml: `eu` serves Germany alone under the stream; `eu-next` is
/// created on the same topics with an empty table and an equal weight. Until its updater has read
/// the topics, `eu-next` reports `Bootstrapped` False (`Bootstrapping`, with its lag) and gets no
/// request; then it takes its half (±3 points over 4,000 requests). Not one request fails, so
/// none was answered `404` from a table still being filled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_group_gets_traffic_only_once_its_table_is_filled() {
    let Some(kind) = Kind::get().await else {
        return;
    };
    let ns = test_namespace(&kind, "e2e-bootstrap").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let catalogue = generate_catalogue(dir.path(), BOOTSTRAP_PRODUCTS, "de");
    let topics = Topics::create(kind.var("KAFKA_BOOTSTRAP_SERVERS"), 4).await;
    produce(&topics, &catalogue, catalogue.product_ids.len()).await;
    let names = ["eu", "eu-next"];
    let mut groups = example(&kind, "two-groups-90-10.yaml", &topics);
    for g in &mut groups {
        g["spec"]["traffic"]["weight"] = json!(100);
    }
    let (eu, next) = (&groups[0], &groups[1]);
    assert_eq!(
        (&eu["metadata"]["name"], &next["metadata"]["name"]),
        (&json!("eu"), &json!("eu-next"))
    );
    apply_group(&kind.client, &ns, eu).await;
    wait_ready(&kind.client, &ns, "eu").await;
    wait_traffic(&kind, &ns, "de", &[("eu", 100)]).await;
    wait_table_holds(&kind, &format!("prapi-{ns}-eu"), &catalogue, &["de"]).await;
    wait_country_routed(&kind, &catalogue, "de").await;
    let urls = catalogue
        .product_ids
        .iter()
        .map(|id| format!("{}/product-offers/{id}", kind.ingress()))
        .collect();
    let headers = vec![("x-country".to_string(), "de".to_string())];
    let stream = Stream::start(kind.http.clone(), urls, headers, RATE, found);

    let applied_at = stream.elapsed();
    apply_group(&kind.client, &ns, next).await;
    // The gate as the group reports it, until it is open: every sample, so the report shows
    // what a `kubectl get` would have shown meanwhile.
    let mut seen: Vec<(Duration, String)> = Vec::new();
    let mut gated: Vec<(Duration, String)> = Vec::new();
    let give_up = Instant::now() + PATIENCE;
    let opened_at = loop {
        let at = stream.elapsed();
        let g = marketgroups(&kind.client, &ns).get("eu-next").await.ok();
        let c = g.as_ref().and_then(|g| condition(g, "Bootstrapped"));
        let fields = c.map(|c| {
            let field = |f: &str| c[f].as_str().unwrap_or_default().to_string();
            (field("status"), field("reason"), field("message"))
        });
        seen.push((at, format!("{fields:?}")));
        match fields {
            Some((status, _, _)) if status == "True" => break at,
            Some((status, reason, message)) if status == "False" => {
                assert_eq!(reason, "Bootstrapping", "eu-next: {c:?}");
                gated.push((at, message));
            }
            _ => {}
        }
        assert!(
            Instant::now() < give_up,
            "eu-next not bootstrapped within {PATIENCE:?}; samples: {seen:#?}"
        );
        tokio::time::sleep(TIMELINE_TICK).await;
    };
    let last_gated = gated
        .last()
        .map(|(at, _)| *at)
        .unwrap_or_else(|| panic!("eu-next was never seen Bootstrapping; samples: {seen:#?}"));
    wait_traffic(&kind, &ns, "de", &[("eu", 50), ("eu-next", 50)]).await;
    let split_at = stream.elapsed();
    tokio::time::sleep(INGRESS_PROPAGATION).await;
    let from = stream.next_seq();
    let window = stream.window(from, SAMPLE).await;
    let all = stream.stop().await;

    let to_next = window
        .iter()
        .filter(|o| group_of(o, &names) == Some("eu-next"))
        .count();
    let measured = 100.0 * to_next as f64 / window.len() as f64;
    let first_next = all
        .iter()
        .filter(|o| group_of(o, &names) == Some("eu-next"))
        .map(|o| o.sent)
        .min();
    let report = format!(
        "bootstrap: eu-next applied at {:.1}s, Bootstrapping in {} of {} samples (last {:.1}s: \
         {}), Bootstrapped at {:.1}s, 50/50 in status at {:.1}s, its first answer sent at {}; \
         measured eu-next {measured:.2} % of {} (want 50 %); {} requests, {} failed, P99 {:?}",
        applied_at.as_secs_f64(),
        gated.len(),
        seen.len(),
        last_gated.as_secs_f64(),
        gated.last().map_or("", |(_, m)| m.as_str()),
        opened_at.as_secs_f64(),
        split_at.as_secs_f64(),
        first_next.map_or("-".to_string(), |t| format!("{:.1}s", t.as_secs_f64())),
        window.len(),
        all.len(),
        all.iter().filter(|o| o.failed()).count(),
        latency_percentile(&all, 0.99),
    );
    let timeline: Vec<String> = seen
        .iter()
        .map(|(at, c)| format!("  t={:.1}s Bootstrapped {c}", at.as_secs_f64()))
        .collect();
    let _ = writeln!(std::io::stderr(), "{report}\n{}", timeline.join("\n"));
    let failed = failures(&all);
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    // The operator routes the group in the reconcile that writes its status, so a sample may read
    // the closed gate just as the route opens it: one tick of slack, no more.
    assert!(
        first_next.is_some_and(|t| t + TIMELINE_TICK >= last_gated),
        "eu-next answered while gated: {report}"
    );
    assert!(
        (measured - 50.0).abs() <= TOLERANCE,
        "eu-next got {measured:.2} % of {} requests once open, 50 % wanted",
        window.len()
    );
}

/// docs/examples/one-group.yaml: `X-Country` in any letter case reaches the group serving the
/// country (docs/api.md: case-insensitive); a country no group serves, and a request without
/// the header, match no route: the ingress answers `404` itself (docs/api.md, "Through the
/// ingress"), and no prapi pod sees them.
#[tokio::test]
async fn countries_reach_their_group_in_any_letter_case() {
    let Some(kind) = Kind::get().await else {
        return;
    };
    let ns = test_namespace(&kind, "e2e-countries").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let catalogue = generate_catalogue(dir.path(), 10, "de,at,ch");
    let topics = Topics::create(kind.var("KAFKA_BOOTSTRAP_SERVERS"), 4).await;
    produce(&topics, &catalogue, catalogue.product_ids.len()).await;
    let group = example(&kind, "one-group.yaml", &topics).remove(0);
    let name = apply_group(&kind.client, &ns, &group).await;
    wait_ready(&kind.client, &ns, &name).await;
    wait_table_holds(
        &kind,
        &format!("prapi-{ns}-{name}"),
        &catalogue,
        &["de", "at", "ch"],
    )
    .await;
    let path = format!("/product-offers/{}", catalogue.product_ids[0]);
    // Every Skipper replica has the group's routes and endpoints (each loads them on its own)
    // and the product is in the pod's cache: 20 answers in a row for each country.
    for country in ["de", "at", "ch"] {
        wait_country_routed(&kind, &catalogue, country).await;
    }
    let url = format!("{}{path}", kind.ingress());

    let prefix = format!("{name}-products-");
    let mut answered = Vec::new();
    for country in ["de", "DE", "De", "at", "AT", "aT", "ch", "CH", "Ch"] {
        for _ in 0..20 {
            let r = kind
                .http
                .get(&url)
                .header("x-country", country)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{country}: {e}"));
            let pod = r
                .headers()
                .get(SERVED_BY)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            assert_eq!(r.status(), 200, "X-Country: {country}");
            assert!(
                pod.starts_with(&prefix),
                "X-Country: {country} answered by {pod:?}"
            );
        }
        answered.push(country);
    }
    for (what, header) in [("an unserved country", Some("fr")), ("no X-Country", None)] {
        let mut req = kind.http.get(&url);
        if let Some(c) = header {
            req = req.header("x-country", c);
        }
        let r = req.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(r.status(), 404, "{what}");
        assert!(
            r.headers().get(SERVED_BY).is_none(),
            "{what} reached a prapi pod"
        );
    }
    let _ = writeln!(
        std::io::stderr(),
        "countries: 20 requests each for {answered:?} reached {name}; fr and no header: 404 from the ingress"
    );
}
