use super::*;
use proptest::prelude::*;
use serde_json::json;

fn cap(available: i32, min: i32, max: i32) -> ComponentCapacity {
    ComponentCapacity {
        available,
        min,
        max,
    }
}

fn group(name: &str, countries: &[&str], weight: i32) -> GroupRouting {
    GroupRouting {
        namespace: "shop".into(),
        name: name.into(),
        uid: Some(format!("uid-{name}")),
        countries: countries.iter().map(|c| c.to_string()).collect(),
        weight,
        segment: String::new(),
        balance_factor: DEFAULT_BALANCE_FACTOR,
        hosts: Vec::new(),
        country_weights: BTreeMap::new(),
        ready: true,
        bootstrapping: Vec::new(),
        deleting: false,
        suspended: false,
        products_service: ServiceRef {
            name: format!("{name}-products"),
            port: 8080,
        },
        batch_service: ServiceRef {
            name: format!("{name}-batch"),
            port: 8080,
        },
        products: cap(2, 2, 20),
        batch: cap(2, 2, 10),
    }
}

fn weights(route: &CountryRoute, segment: Option<&str>) -> BTreeMap<String, i32> {
    route
        .pools
        .iter()
        .find(|p| p.segment.as_deref() == segment)
        .map(|p| {
            p.backends
                .iter()
                .map(|b| (b.group.clone(), b.weight))
                .collect()
        })
        .unwrap_or_default()
}

fn route<'a>(plan: &'a RoutingPlan, country: &str) -> &'a CountryRoute {
    plan.routes
        .iter()
        .find(|r| r.country == country)
        .unwrap_or_else(|| panic!("no route for {country} in {plan:#?}"))
}

fn share<'a>(plan: &'a RoutingPlan, group: &str, country: &str) -> &'a Share {
    plan.shares
        .get(group)
        .and_then(|s| s.iter().find(|s| s.country == country))
        .unwrap_or_else(|| panic!("no share of {group} in {country}"))
}

fn map(pairs: &[(&str, i32)]) -> BTreeMap<String, i32> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// What the cluster holds after applying `plan` with `provider` (rendered, then read back).
fn apply(plan: &RoutingPlan, provider: Provider) -> Live {
    let opts = RouteOptions {
        gateway: Some(("gw".into(), "public".into())),
        ..RouteOptions::default()
    };
    let objects: Vec<Value> = plan
        .routes
        .iter()
        .map(|r| {
            render_route(provider, "shop", r, &opts)
                .expect("renders")
                .expect("an object")
        })
        .collect();
    readback::live(provider, &objects, opts.gateway.as_ref())
}

const PROVIDERS: [Provider; 2] = [Provider::GatewayApi, Provider::Skipper];

#[test]
fn a_single_ready_group_takes_its_countries() {
    let plan = plan(&[group("a", &["de", "at"], 100)], &Applied::new());
    assert_eq!(
        plan.routes
            .iter()
            .map(|r| r.country.as_str())
            .collect::<Vec<_>>(),
        ["at", "de"]
    );
    assert_eq!(weights(route(&plan, "de"), None), map(&[("a", 100)]));
    assert!(plan.floors.is_empty(), "nothing to protect: {plan:?}");
    let s = share(&plan, "a", "de");
    assert_eq!((s.desired, s.planned, s.reason), (100, 100, None));
}

#[test]
fn shift_90_10_then_50_50_then_0_100_waits_for_the_growing_side() {
    for provider in PROVIDERS {
        let mut a = group("a", &["de"], 90);
        let mut b = group("b", &["de"], 10);
        a.products.available = 9;
        a.batch.available = 4;

        // 90/10 from nothing: applied at once (nobody carries traffic yet).
        let p = plan(&[a.clone(), b.clone()], &Applied::new());
        assert_eq!(weights(route(&p, "de"), None), map(&[("a", 90), ("b", 10)]));
        let live = apply(&p, provider);
        let ra = report("a", &p, &live);
        let rb = report("b", &p, &live);
        assert_eq!(
            (ra[0].desired, ra[0].actual, ra[0].reason),
            (90, Some(90), None)
        );
        assert_eq!(
            (rb[0].desired, rb[0].actual, rb[0].reason),
            (10, Some(10), None)
        );

        // 50/50: b grows 10 -> 50. Its floors come from a's replicas per percent:
        // products 9/90 * 50 = 5, batch 4/90 * 50 = 2.2 -> 3. b has 2 and 2: wait.
        a.weight = 50;
        b.weight = 50;
        let p = plan(&[a.clone(), b.clone()], &live.applied);
        assert_eq!(
            weights(route(&p, "de"), None),
            map(&[("a", 90), ("b", 10)]),
            "{provider:?}: the split must not change before b has its replicas"
        );
        assert_eq!(
            p.floors.get("b"),
            Some(&shift::Floors {
                products: 5,
                batch: 3
            })
        );
        assert!(
            !p.floors.contains_key("a"),
            "the shrinking side keeps its floors"
        );
        let sb = share(&p, "b", "de");
        assert_eq!(
            (sb.desired, sb.planned, sb.reason),
            (50, 10, Some(Reason::WaitingForCapacity))
        );
        assert_eq!(share(&p, "a", "de").reason, Some(Reason::ShiftPending));
        let live_waiting = apply(&p, provider);
        let rb = report("b", &p, &live_waiting);
        assert_eq!(
            (rb[0].desired, rb[0].actual, rb[0].reason),
            (50, Some(10), Some(Reason::WaitingForCapacity))
        );

        // b's raised floors are available: the split moves, floors kept until it is applied.
        b.products.available = 5;
        b.batch.available = 3;
        let p = plan(&[a.clone(), b.clone()], &live_waiting.applied);
        assert_eq!(weights(route(&p, "de"), None), map(&[("a", 50), ("b", 50)]));
        assert_eq!(p.floors.get("b").map(|f| f.products), Some(5));
        let live = apply(&p, provider);
        for g in ["a", "b"] {
            let r = report(g, &p, &live);
            assert_eq!(
                (r[0].desired, r[0].actual, r[0].reason),
                (50, Some(50), None)
            );
        }
        // Once applied, nothing grows: floors return to the spec.
        let p = plan(&[a.clone(), b.clone()], &live.applied);
        assert!(p.floors.is_empty(), "{p:?}");

        // 0/100: b grows 50 -> 100: products 5/50 * 100 = 10, batch 4/50 * 100 = 8.
        a.weight = 0;
        b.weight = 100;
        a.products.available = 5;
        let p = plan(&[a.clone(), b.clone()], &live.applied);
        assert_eq!(weights(route(&p, "de"), None), map(&[("a", 50), ("b", 50)]));
        assert_eq!(
            p.floors.get("b"),
            Some(&shift::Floors {
                products: 10,
                batch: 8
            })
        );
        b.products.available = 10;
        b.batch.available = 8;
        let p = plan(&[a.clone(), b.clone()], &live.applied);
        assert_eq!(weights(route(&p, "de"), None), map(&[("b", 100)]));
        let live = apply(&p, provider);
        let ra = report("a", &p, &live);
        assert_eq!(
            (ra[0].desired, ra[0].actual, ra[0].reason),
            (0, Some(0), None)
        );
        let rb = report("b", &p, &live);
        assert_eq!(
            (rb[0].desired, rb[0].actual, rb[0].reason),
            (100, Some(100), None)
        );
    }
}

#[test]
fn a_donor_still_scaling_up_counts_at_its_floor() {
    // a runs at its floor of 9 products pods for 90%, but only 1 is available yet (its HPA has
    // just scaled it up). b's floor for 50% must still be 9/90 * 50 = 5, not 1/90 * 50 -> 1,
    // or the split would move with b at 1 pod.
    let mut a = group("a", &["de"], 90);
    let mut b = group("b", &["de"], 10);
    a.products = cap(9, 9, 20);
    let p = plan(&[a.clone(), b.clone()], &Applied::new());
    let live = apply(&p, PROVIDERS[0]);
    a.products.available = 1;
    a.weight = 50;
    b.weight = 50;
    b.products = cap(1, 1, 20);
    let p = plan(&[a.clone(), b.clone()], &live.applied);
    assert_eq!(p.floors.get("b").map(|f| f.products), Some(5), "{p:?}");
    assert_eq!(weights(route(&p, "de"), None), map(&[("a", 90), ("b", 10)]));
    // More available than the floor counts as it is (the floor is only a lower bound).
    a.products.available = 18;
    let p = plan(&[a, b], &live.applied);
    assert_eq!(p.floors.get("b").map(|f| f.products), Some(10), "{p:?}");
}

#[test]
fn floors_are_capped_at_the_maximum() {
    let mut a = group("a", &["de"], 0);
    a.products.available = 500;
    a.batch.available = 500;
    let b = group("b", &["de"], 100);
    let applied = Applied::from([(
        "de".into(),
        BTreeMap::from([("".into(), map(&[("a", 100)]))]),
    )]);
    let p = plan(&[a, b], &applied);
    assert_eq!(
        p.floors.get("b"),
        Some(&shift::Floors {
            products: 20,
            batch: 10
        })
    );
}

#[test]
fn floors_add_up_over_countries_and_split_donors_over_theirs() {
    // a carries de and at with 8 products replicas: 4 per country. b takes all of de.
    let mut a = group("a", &["de", "at"], 100);
    a.products.available = 8;
    a.batch.available = 8;
    let mut b = group("b", &["de"], 100);
    b.products = cap(2, 2, 20);
    let mut a_de_zero = a.clone();
    a_de_zero.countries = vec!["at".into()];
    let applied = Applied::from([
        (
            "de".into(),
            BTreeMap::from([("".into(), map(&[("a", 100)]))]),
        ),
        (
            "at".into(),
            BTreeMap::from([("".into(), map(&[("a", 100)]))]),
        ),
    ]);
    let p = plan(&[a_de_zero.clone(), b.clone()], &applied);
    assert_eq!(p.floors.get("b").map(|f| f.products), Some(4));
    // de is held at a's weight until b has 4 replicas; a no longer lists de but holds it.
    assert_eq!(weights(route(&p, "de"), None), map(&[("a", 100)]));
}

#[test]
fn segment_rules_come_ahead_of_the_weighted_rules() {
    let a = group("a", &["de"], 100);
    let mut canary = group("canary", &["de"], 100);
    canary.segment = "canary".into();
    let mut beta = group("beta", &["de"], 100);
    beta.segment = "beta".into();
    let p = plan(&[a, canary, beta], &Applied::new());
    let r = route(&p, "de");
    let order: Vec<Option<&str>> = r.pools.iter().map(|p| p.segment.as_deref()).collect();
    assert_eq!(order, [Some("beta"), Some("canary"), None]);
    assert_eq!(weights(r, Some("canary")), map(&[("canary", 100)]));
    assert_eq!(weights(r, None), map(&[("a", 100)]));
    assert_eq!(share(&p, "canary", "de").segment.as_deref(), Some("canary"));
    assert_eq!(share(&p, "canary", "de").desired, 100);

    let opts = RouteOptions {
        gateway: Some(("gw".into(), "public".into())),
        ..RouteOptions::default()
    };
    let http = gateway::http_route("shop", r, &opts).expect("renders");
    let rules = http["spec"]["rules"].as_array().expect("rules");
    assert_eq!(rules.len(), 6);
    let segment_of = |rule: &Value| {
        rule["matches"][0]["headers"]
            .as_array()
            .expect("headers")
            .iter()
            .find(|h| h["name"] == SEGMENT_HEADER)
            .map(|h| h["value"].as_str().expect("value").to_string())
    };
    let segs: Vec<Option<String>> = rules.iter().map(segment_of).collect();
    assert_eq!(
        segs,
        [
            Some("beta".into()),
            Some("beta".into()),
            Some("canary".into()),
            Some("canary".into()),
            None,
            None
        ]
    );
    // Every match of a segment rule carries both headers; the weighted ones only the country,
    // in each of its spellings.
    for rule in rules {
        let matches = rule["matches"].as_array().expect("matches");
        assert_eq!(matches.len(), 8);
        for m in matches {
            let h = m["headers"].as_array().expect("headers");
            assert_eq!(
                (&h[0]["type"], &h[0]["name"]),
                (&json!("Exact"), &json!("X-Country"))
            );
            assert!(
                h[0]["value"]
                    .as_str()
                    .is_some_and(|v| v.eq_ignore_ascii_case("de"))
            );
            assert_eq!(h.len(), if segment_of(rule).is_some() { 2 } else { 1 });
        }
    }

    let rg = skipper::route_group("shop", r, &opts);
    let routes = rg["spec"]["routes"].as_array().expect("routes");
    assert_eq!(routes.len(), 15);
    let first_unsegmented = routes
        .iter()
        .position(|r| r["predicates"].as_array().map(Vec::len) == Some(1))
        .expect("weighted routes");
    assert_eq!(first_unsegmented, 10);
    assert!(routes[..10].iter().all(|r| {
        r["predicates"][1]
            .as_str()
            .is_some_and(|p| p.starts_with("Header(\"X-Traffic-Segment\", "))
    }));
    assert_eq!(
        routes[0]["predicates"],
        json!([
            "HeaderRegexp(\"X-Country\", \"(?i)^de$\")",
            "Header(\"X-Traffic-Segment\", \"beta\")"
        ])
    );
}

#[test]
fn deleting_a_group_renormalizes_the_others_after_they_have_room() {
    let mut a = group("a", &["de"], 50);
    let mut b = group("b", &["de"], 25);
    let mut c = group("c", &["de"], 25);
    c.products.available = 4;
    c.batch.available = 2;
    let applied = Applied::from([(
        "de".into(),
        BTreeMap::from([("".into(), map(&[("a", 50), ("b", 25), ("c", 25)]))]),
    )]);
    c.deleting = true;
    // a: 50% -> 67%, b: 25% -> 33%; c's 4 replicas per 25%: a needs 67*4/25 = 10.7 -> 11.
    let p = plan(&[a.clone(), b.clone(), c.clone()], &applied);
    assert_eq!(
        weights(route(&p, "de"), None),
        map(&[("a", 50), ("b", 25), ("c", 25)])
    );
    assert_eq!(share(&p, "c", "de").reason, Some(Reason::Draining));
    assert_eq!(share(&p, "c", "de").desired, 0);
    assert_eq!(p.floors.get("a").map(|f| f.products), Some(11));
    assert_eq!(p.floors.get("b").map(|f| f.products), Some(6));
    a.products.available = 11;
    a.batch.available = 6;
    b.products.available = 6;
    b.batch.available = 3;
    let p = plan(&[a.clone(), b.clone(), c.clone()], &applied);
    assert_eq!(weights(route(&p, "de"), None), map(&[("a", 50), ("b", 25)]));
    let live = apply(&p, Provider::GatewayApi);
    assert_eq!(report("a", &p, &live)[0].actual, Some(67));
    assert_eq!(report("b", &p, &live)[0].actual, Some(33));
    assert_eq!(report("c", &p, &live)[0].actual, Some(0));
    assert_eq!(report("c", &p, &live)[0].reason, None);

    // Once c is gone from the cluster, the others stay re-normalized and nothing is left of c.
    let p = plan(&[a, b], &live.applied);
    assert_eq!(weights(route(&p, "de"), None), map(&[("a", 50), ("b", 25)]));
    assert!(!p.shares.contains_key("c"));
}

#[test]
fn the_last_group_of_a_country_removes_its_route() {
    let mut a = group("a", &["de"], 100);
    a.deleting = true;
    let applied = Applied::from([(
        "de".into(),
        BTreeMap::from([("".into(), map(&[("a", 100)]))]),
    )]);
    let p = plan(&[a], &applied);
    assert!(p.routes.is_empty());
    assert_eq!(p.remove, ["de"]);
    let p = plan(&[], &applied);
    assert_eq!(p.remove, ["de"]);
}

#[test]
fn a_group_that_is_not_ready_gets_actual_zero_with_a_reason() {
    for provider in PROVIDERS {
        let a = group("a", &["de"], 50);
        let mut b = group("b", &["de"], 50);
        b.ready = false;
        let p = plan(&[a.clone(), b.clone()], &Applied::new());
        assert_eq!(weights(route(&p, "de"), None), map(&[("a", 50)]));
        let live = apply(&p, provider);
        let rb = report("b", &p, &live);
        assert_eq!(
            (rb[0].desired, rb[0].actual, rb[0].reason),
            (50, Some(0), Some(Reason::NotReady))
        );
        let ra = report("a", &p, &live);
        assert_eq!(
            (ra[0].desired, ra[0].actual),
            (50, Some(100)),
            "a carries the country alone"
        );
        let (ok, reason, _) = routing_condition(provider, false, &rb);
        assert_eq!((ok, reason), (false, "NotReady"));
        let (ok, reason, msg) = routing_condition(provider, true, &ra);
        assert_eq!((ok, reason), (true, "Shifting"), "{msg}");

        // A Ready group that was routed and becomes unready is dropped at once.
        let applied = live.applied.clone();
        let mut b_ready = b.clone();
        b_ready.ready = true;
        let p = plan(&[a.clone(), b_ready.clone()], &applied);
        let live = apply(&p, provider);
        let mut a_down = a.clone();
        a_down.ready = false;
        let p = plan(&[a_down, b_ready], &live.applied);
        assert_eq!(weights(route(&p, "de"), None), map(&[("b", 50)]));
    }
}

#[test]
fn a_country_behind_the_bootstrap_gate_is_not_routed_to_its_group_and_the_others_are() {
    for provider in PROVIDERS {
        // a serves de and fr; b gained fr and has caught up for de only.
        let a = group("a", &["de", "fr"], 50);
        let mut b = group("b", &["de", "fr"], 50);
        b.bootstrapping = vec!["fr".into()];
        let p = plan(&[a.clone(), b.clone()], &Applied::new());
        assert_eq!(weights(route(&p, "de"), None), map(&[("a", 50), ("b", 50)]));
        assert_eq!(weights(route(&p, "fr"), None), map(&[("a", 50)]));
        let live = apply(&p, provider);
        let rb = report("b", &p, &live);
        let fr = rb.iter().find(|s| s.country == "fr").expect("fr");
        assert_eq!(
            (fr.desired, fr.actual, fr.reason),
            (50, Some(0), Some(Reason::Bootstrapping))
        );
        let de = rb.iter().find(|s| s.country == "de").expect("de");
        assert_eq!((de.desired, de.actual, de.reason), (50, Some(50), None));
        // b serves de: routed (shifting towards its fr share).
        let (ok, reason, msg) = routing_condition(provider, true, &rb);
        assert_eq!((ok, reason), (true, "Shifting"), "{msg}");
        assert!(
            msg.contains("fr: desired 50%, actual 0% (Bootstrapping"),
            "{msg}"
        );

        // The gate opens: fr is split like de.
        b.bootstrapping.clear();
        let p = plan(&[a.clone(), b.clone()], &live.applied);
        assert_eq!(weights(route(&p, "fr"), None), map(&[("a", 50), ("b", 50)]));
    }
}

#[test]
fn a_group_gated_for_every_country_is_not_routed_and_says_bootstrapping() {
    let mut a = group("a", &["de", "at"], 100);
    a.bootstrapping = vec!["at".into(), "de".into()];
    let p = plan(std::slice::from_ref(&a), &Applied::new());
    assert!(p.routes.is_empty(), "{p:?}");
    assert_eq!(share(&p, "a", "de").reason, Some(Reason::Bootstrapping));
    let ra = report("a", &p, &Live::default());
    let (ok, reason, msg) = routing_condition(Provider::Skipper, true, &ra);
    assert_eq!((ok, reason), (false, "Bootstrapping"), "{msg}");
    // Not Ready outranks the gate: the reason stays NotReady.
    a.ready = false;
    let p = plan(std::slice::from_ref(&a), &Applied::new());
    assert_eq!(share(&p, "a", "de").reason, Some(Reason::NotReady));
}

#[test]
fn weights_summing_to_zero_give_no_route_and_a_reason() {
    let a = group("a", &["de"], 0);
    let b = group("b", &["de", "at"], 0);
    let c = group("c", &["at"], 10);
    let p = plan(&[a, b, c], &Applied::new());
    assert!(p.routes.iter().all(|r| r.country != "de"));
    assert_eq!(weights(route(&p, "at"), None), map(&[("c", 10)]));
    assert_eq!(share(&p, "a", "de").reason, Some(Reason::WeightsSumToZero));
    let live = Live::default();
    let ra = report("a", &p, &live);
    let (ok, reason, msg) = routing_condition(Provider::Skipper, true, &ra);
    assert_eq!((ok, reason), (false, "WeightsSumToZero"));
    assert!(msg.contains("de: desired 0%"), "{msg}");
    // b serves at with weight 0: that is routed as desired (0%).
    let p2 = p.clone();
    let live = apply(&p2, Provider::Skipper);
    let rb = report("b", &p2, &live);
    let at = rb.iter().find(|s| s.country == "at").expect("at");
    assert_eq!((at.desired, at.actual, at.reason), (0, Some(0), None));
}

#[test]
fn nobody_ready_means_no_route_and_a_held_route_is_kept() {
    let mut a = group("a", &["de"], 100);
    a.ready = false;
    let p = plan(std::slice::from_ref(&a), &Applied::new());
    assert!(p.routes.is_empty());
    assert_eq!(share(&p, "a", "de").reason, Some(Reason::NotReady));

    // a (weight 0, Ready) carries de; b should take it but is not Ready: a keeps it.
    let mut a = group("a", &["de"], 0);
    a.ready = true;
    let mut b = group("b", &["de"], 100);
    b.ready = false;
    let applied = Applied::from([(
        "de".into(),
        BTreeMap::from([("".into(), map(&[("a", 100)]))]),
    )]);
    let p = plan(&[a, b], &applied);
    assert_eq!(weights(route(&p, "de"), None), map(&[("a", 100)]));
    assert_eq!(
        share(&p, "a", "de").reason,
        Some(Reason::HeldUntilReplacementReady)
    );
    assert_eq!(share(&p, "b", "de").reason, Some(Reason::NotReady));
}

#[test]
fn acceptance_is_read_from_the_route_status() {
    let gw = ("gw".to_string(), "public".to_string());
    let base =
        json!({"metadata": {"name": "prapi-de", "generation": 3, "labels": {LABEL_COUNTRY: "de"}}});
    assert_eq!(
        readback::http_route_acceptance(&base, Some(&gw)),
        Acceptance::Unreported
    );
    let with = |status: &str, observed: i64| {
        let mut o = base.clone();
        o["status"] = json!({"parents": [{
            "parentRef": {"name": "public", "namespace": "gw"},
            "controllerName": "example.com/gw",
            "conditions": [{"type": "Accepted", "status": status, "observedGeneration": observed,
                             "reason": "NotAllowedByListeners", "message": "no listener"}]
        }]});
        o
    };
    assert_eq!(
        readback::http_route_acceptance(&with("True", 3), Some(&gw)),
        Acceptance::Accepted
    );
    assert_eq!(
        readback::http_route_acceptance(&with("True", 2), Some(&gw)),
        Acceptance::Pending
    );
    assert_eq!(
        readback::http_route_acceptance(&with("False", 3), Some(&gw)),
        Acceptance::Rejected("NotAllowedByListeners: no listener".into())
    );
    let other = ("gw".to_string(), "internal".to_string());
    assert_eq!(
        readback::http_route_acceptance(&with("False", 3), Some(&other)),
        Acceptance::Unreported
    );

    // A rejected route reports no actual weight and makes RoutingReady false.
    let p = plan(&[group("a", &["de"], 100)], &Applied::new());
    let mut live = apply(&p, Provider::GatewayApi);
    live.acceptance
        .insert("de".into(), Acceptance::Rejected("x".into()));
    let r = report("a", &p, &live);
    assert_eq!(
        (r[0].actual, r[0].reason),
        (None, Some(Reason::RouteNotAccepted))
    );
    assert_eq!(
        routing_condition(Provider::GatewayApi, true, &r).1,
        "RouteNotAccepted"
    );
    live.acceptance.insert("de".into(), Acceptance::Pending);
    let r = report("a", &p, &live);
    assert_eq!(
        (r[0].actual, r[0].reason),
        (None, Some(Reason::RoutePending))
    );
    live.acceptance.insert("de".into(), Acceptance::Accepted);
    let r = report("a", &p, &live);
    assert_eq!((r[0].actual, r[0].reason), (Some(100), None));
    assert_eq!(
        routing_condition(Provider::GatewayApi, true, &r),
        (true, "Routed", "de: desired 100%, actual 100%".to_string())
    );
    // Nothing applied yet: actual 0 against a planned 100 is a pending route.
    let r = report("a", &p, &Live::default());
    assert_eq!(
        (r[0].actual, r[0].reason),
        (Some(0), Some(Reason::RoutePending))
    );
    assert_eq!(
        routing_condition(Provider::None, true, &r).1,
        "RoutingDisabled"
    );
}

#[test]
fn http_route_object() {
    let mut a = group("a", &["de"], 90);
    a.uid = Some("u1".into());
    let b = group("b", &["de"], 10);
    let p = plan(&[a, b], &Applied::new());
    let opts = RouteOptions {
        gateway: Some(("gw".into(), "public".into())),
        ..RouteOptions::default()
    };
    let obj = gateway::http_route("shop", route(&p, "de"), &opts).expect("renders");
    let spelled = ["de", "dE", "De", "DE"];
    let exact = |path: &str| -> Vec<Value> {
        spelled
            .iter()
            .map(|c| {
                json!({"path": {"type": "Exact", "value": path}, "method": "GET",
                       "headers": [{"type": "Exact", "name": "X-Country", "value": c}]})
            })
            .collect()
    };
    let prefix = |path: &str| -> Vec<Value> {
        spelled
            .iter()
            .map(|c| {
                json!({"path": {"type": "PathPrefix", "value": path},
                       "headers": [{"type": "Exact", "name": "X-Country", "value": c}]})
            })
            .collect()
    };
    let batch_matches: Vec<Value> = [exact("/products"), exact("/product-offers")].concat();
    let item_matches: Vec<Value> = [prefix("/products"), prefix("/product-offers")].concat();
    assert_eq!(
        obj,
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {
                "name": "prapi-de",
                "namespace": "shop",
                "labels": {
                    "app.kubernetes.io/name": "prapi",
                    "app.kubernetes.io/component": "routing",
                    "app.kubernetes.io/managed-by": "prapi-operator",
                    "app.kubernetes.io/part-of": "prapi",
                    "prapi.dev/country": "de",
                },
                "ownerReferences": [
                    {"apiVersion": "prapi.dev/v1alpha1", "kind": "MarketGroup", "name": "a", "uid": "u1"},
                    {"apiVersion": "prapi.dev/v1alpha1", "kind": "MarketGroup", "name": "b", "uid": "uid-b"},
                ],
            },
            "spec": {
                "parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "gw", "name": "public"}],
                "rules": [
                    {
                        "matches": batch_matches,
                        "backendRefs": [
                            {"kind": "Service", "name": "a-batch", "port": 8080, "weight": 90},
                            {"kind": "Service", "name": "b-batch", "port": 8080, "weight": 10},
                        ],
                    },
                    {
                        "matches": item_matches,
                        "backendRefs": [
                            {"kind": "Service", "name": "a-products", "port": 8080, "weight": 90},
                            {"kind": "Service", "name": "b-products", "port": 8080, "weight": 10},
                        ],
                    },
                ],
            }
        })
    );
    assert_eq!(
        gateway::http_route("shop", route(&p, "de"), &RouteOptions::default()),
        Err(RouteError::NoGateway)
    );
    assert!(obj["spec"].get("hostnames").is_none(), "no hosts: any host");
}

#[test]
fn every_spelling_of_a_country_code() {
    assert_eq!(gateway::spellings("de"), ["de", "dE", "De", "DE"]);
    assert_eq!(gateway::spellings("AT"), ["at", "aT", "At", "AT"]);
}

#[test]
fn routes_carry_the_groups_hosts_or_the_operators() {
    let mut a = group("a", &["de", "at"], 50);
    a.hosts = vec!["api.example.com".into(), "*.shop.example".into()];
    let mut b = group("b", &["de"], 50);
    b.hosts = vec!["api.example.com".into(), "de.example.com".into()];
    let c = group("c", &["ch"], 100);
    let p = plan(&[a, b, c], &Applied::new());
    let opts = RouteOptions {
        gateway: Some(("gw".into(), "public".into())),
        hosts: vec!["default.example.com".into()],
        ..RouteOptions::default()
    };
    let union = json!(["*.shop.example", "api.example.com", "de.example.com"]);
    let http = |c| gateway::http_route("shop", route(&p, c), &opts).expect("renders");
    let rg = |c| skipper::route_group("shop", route(&p, c), &opts);
    assert_eq!(http("de")["spec"]["hostnames"], union);
    assert_eq!(rg("de")["spec"]["hosts"], union);
    assert_eq!(
        http("at")["spec"]["hostnames"],
        json!(["*.shop.example", "api.example.com"])
    );
    // A country none of whose groups names hosts gets the operator's.
    assert_eq!(
        http("ch")["spec"]["hostnames"],
        json!(["default.example.com"])
    );
    assert_eq!(rg("ch")["spec"]["hosts"], json!(["default.example.com"]));
}

#[test]
fn a_pool_shared_by_groups_with_different_balance_factors_uses_the_largest() {
    let mut a = group("a", &["de"], 50);
    a.balance_factor = 1.5;
    let mut b = group("b", &["de"], 50);
    b.balance_factor = 2.0;
    let p = plan(&[a.clone(), b], &Applied::new());
    let rg = skipper::route_group("shop", route(&p, "de"), &RouteOptions::default());
    assert_eq!(
        rg["spec"]["routes"][0]["filters"][2],
        "consistentHashBalanceFactor(2)"
    );
    let p = plan(&[a], &Applied::new());
    let rg = skipper::route_group("shop", route(&p, "de"), &RouteOptions::default());
    assert_eq!(
        rg["spec"]["routes"][0]["filters"][2],
        "consistentHashBalanceFactor(1.5)"
    );
}

#[test]
fn http_route_limits_are_enforced() {
    // Seven segments and the weighted pool: 8 pools × 4 paths × 4 spellings = 128 matches,
    // one more than Gateway API allows in one route.
    let mut groups = vec![group("main", &["de"], 100)];
    for i in 0..7 {
        let mut g = group(&format!("s{i}"), &["de"], 100);
        g.segment = format!("seg{i}");
        groups.push(g);
    }
    let p = plan(&groups, &Applied::new());
    let opts = RouteOptions {
        gateway: Some(("gw".into(), "public".into())),
        ..RouteOptions::default()
    };
    assert!(matches!(
        gateway::http_route("shop", route(&p, "de"), &opts),
        Err(RouteError::TooLarge { .. })
    ));
    let p = plan(&groups[..7], &Applied::new());
    assert!(gateway::http_route("shop", route(&p, "de"), &opts).is_ok());
    // Too many backends in one pool.
    let many: Vec<GroupRouting> = (0..17)
        .map(|i| group(&format!("g{i}"), &["de"], 1))
        .collect();
    let p = plan(&many, &Applied::new());
    assert!(matches!(
        gateway::http_route("shop", route(&p, "de"), &opts),
        Err(RouteError::TooLarge { .. })
    ));
}

#[test]
fn route_group_object() {
    let a = group("a", &["de"], 90);
    let b = group("b", &["de"], 10);
    let p = plan(&[a, b], &Applied::new());
    let obj = skipper::route_group("shop", route(&p, "de"), &RouteOptions::default());
    assert_eq!(obj["apiVersion"], "zalando.org/v1");
    assert_eq!(obj["kind"], "RouteGroup");
    assert_eq!(obj["metadata"]["name"], "prapi-de");
    assert_eq!(
        obj["spec"]["backends"],
        json!([
            {"name": "a-products", "type": "service", "serviceName": "a-products", "servicePort": 8080, "algorithm": "consistentHash"},
            {"name": "a-batch", "type": "service", "serviceName": "a-batch", "servicePort": 8080, "algorithm": "powerOfRandomNChoices"},
            {"name": "b-products", "type": "service", "serviceName": "b-products", "servicePort": 8080, "algorithm": "consistentHash"},
            {"name": "b-batch", "type": "service", "serviceName": "b-batch", "servicePort": 8080, "algorithm": "powerOfRandomNChoices"},
        ])
    );
    let routes = obj["spec"]["routes"].as_array().expect("routes");
    assert_eq!(routes.len(), 5);
    assert_eq!(
        routes[0],
        json!({
            "path": "/products/:id",
            "methods": ["GET", "HEAD"],
            "predicates": ["HeaderRegexp(\"X-Country\", \"(?i)^de$\")"],
            "filters": [
                "lifo(1000, 1000, \"1s\")",
                "consistentHashKey(\"${id}\")",
                "consistentHashBalanceFactor(1.25)",
                "fadeIn(\"30s\", 2.5)"
            ],
            "backends": [{"backendName": "a-products", "weight": 90}, {"backendName": "b-products", "weight": 10}],
        })
    );
    let paths: Vec<&str> = routes
        .iter()
        .map(|r| r["path"].as_str().expect("path"))
        .collect();
    assert_eq!(
        paths,
        [
            "/products/:id",
            "/products/:id/offers",
            "/product-offers/:id",
            "/products",
            "/product-offers"
        ]
    );
    assert_eq!(
        routes[3]["backends"],
        json!([{"backendName": "a-batch", "weight": 90}, {"backendName": "b-batch", "weight": 10}])
    );
    assert_eq!(routes[3]["filters"], json!(["lifo(1000, 1000, \"1s\")"]));
    assert_eq!(routes[4]["filters"], routes[3]["filters"]);
    for r in &routes[..3] {
        assert_eq!(r["filters"], routes[0]["filters"], "{r}");
    }
}

/// Envoy Gateway's BackendTrafficPolicy of a country: named, labelled and owned like its
/// HTTPRoute, targeting it, hashing on the path.
#[test]
fn backend_traffic_policy_targets_the_country_route_with_a_path_hash() {
    let mut a = group("a", &["de"], 90);
    a.uid = Some("uid-a".into());
    let mut b = group("b", &["de"], 10);
    b.uid = Some("uid-b".into());
    let p = plan(&[a, b], &Applied::new());
    let r = route(&p, "de");
    let btp = gateway::backend_traffic_policy("shop", r);
    let opts = RouteOptions {
        gateway: Some(("gw".into(), "public".into())),
        ..RouteOptions::default()
    };
    let http = gateway::http_route("shop", r, &opts).expect("route");
    // Named, labelled and owned like the route it targets.
    assert_eq!(btp["metadata"], http["metadata"]);
    assert_eq!(
        btp["metadata"]["ownerReferences"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(btp["apiVersion"], "gateway.envoyproxy.io/v1alpha1");
    assert_eq!(btp["kind"], "BackendTrafficPolicy");
    assert_eq!(
        btp["spec"],
        json!({
            "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "prapi-de"}],
            "loadBalancer": {"type": "ConsistentHash", "consistentHash": {"type": "Header", "header": {"name": ":path"}}},
        })
    );
}

/// The queue follows the operator's limits, and without them the routes carry none; the fade-in
/// is the batch component's curve whatever the queue.
#[test]
fn lifo_follows_the_operator_and_fade_in_the_batch_curve() {
    let p = plan(&[group("a", &["de"], 100)], &Applied::new());
    let filters = |opts: &RouteOptions| -> Vec<Value> {
        let obj = skipper::route_group("shop", route(&p, "de"), opts);
        obj["spec"]["routes"]
            .as_array()
            .expect("routes")
            .iter()
            .map(|r| r.get("filters").cloned().unwrap_or(Value::Null))
            .collect()
    };
    let custom = RouteOptions {
        skipper_lifo: Some(SkipperLifo {
            max_concurrency: 50,
            max_queue: 7,
            timeout: std::time::Duration::from_millis(250),
        }),
        ..RouteOptions::default()
    };
    let f = filters(&custom);
    assert_eq!(
        f[0],
        json!([
            "lifo(50, 7, \"250ms\")",
            "consistentHashKey(\"${id}\")",
            "consistentHashBalanceFactor(1.25)",
            "fadeIn(\"30s\", 2.5)"
        ])
    );
    assert_eq!(f[3], json!(["lifo(50, 7, \"250ms\")"]));
    let off = RouteOptions {
        skipper_lifo: None,
        ..RouteOptions::default()
    };
    let f = filters(&off);
    assert_eq!(
        f[0],
        json!([
            "consistentHashKey(\"${id}\")",
            "consistentHashBalanceFactor(1.25)",
            "fadeIn(\"30s\", 2.5)"
        ])
    );
    assert_eq!(
        f[3],
        Value::Null,
        "batch routes without queue or token check have no filters"
    );
    assert_eq!(f[4], Value::Null);
    let no_fade = RouteOptions {
        skipper_fade_in: false,
        ..RouteOptions::default()
    };
    let f = filters(&no_fade);
    assert_eq!(
        f[0],
        json!([
            "lifo(1000, 1000, \"1s\")",
            "consistentHashKey(\"${id}\")",
            "consistentHashBalanceFactor(1.25)"
        ])
    );
    assert_eq!(f[3], json!(["lifo(1000, 1000, \"1s\")"]));
    // The fade-in is the data plane's: same duration, same exponent.
    assert_eq!(
        skipper::fade_in_filter(),
        format!(
            "fadeIn(\"{}s\", {})",
            prapi_common::fade_in::DURATION.as_secs(),
            prapi_common::fade_in::EXPONENT
        )
    );
}

fn arb_group(i: usize) -> impl Strategy<Value = GroupRouting> {
    (
        proptest::sample::subsequence(vec!["de", "at", "ch"], 1..=3),
        0i32..=100,
        prop_oneof![3 => Just(""), 1 => Just("canary")],
        any::<bool>(),
        prop::bool::weighted(0.15),
        0i32..30,
        proptest::sample::subsequence(vec!["de", "at", "ch"], 0..=3),
        proptest::collection::btree_map(
            prop_oneof![Just("de"), Just("at"), Just("ch")],
            0i32..=100,
            0..=2,
        ),
    )
        .prop_map(
            move |(countries, weight, segment, ready, deleting, avail, gated, own)| {
                let mut g = group(&format!("g{i}"), &countries, weight);
                // Country weights only for listed countries (the CRD refuses others).
                g.country_weights = own
                    .into_iter()
                    .filter(|(c, _)| countries.contains(c))
                    .map(|(c, w)| (c.to_string(), w))
                    .collect();
                g.bootstrapping = gated
                    .iter()
                    .filter(|c| countries.contains(c))
                    .map(|c| c.to_string())
                    .collect();
                g.segment = segment.to_string();
                g.ready = ready;
                g.deleting = deleting;
                g.products.available = avail;
                g.batch.available = avail / 2;
                g
            },
        )
}

fn arb_groups() -> impl Strategy<Value = Vec<GroupRouting>> {
    (0usize..5).prop_flat_map(|n| (0..n).map(arb_group).collect::<Vec<_>>())
}

fn arb_applied() -> impl Strategy<Value = Applied> {
    proptest::collection::btree_map(
        prop_oneof![
            Just("de".to_string()),
            Just("at".to_string()),
            Just("ch".to_string())
        ],
        proptest::collection::btree_map(
            prop_oneof![Just(String::new()), Just("canary".to_string())],
            proptest::collection::btree_map(
                (0usize..6).prop_map(|i| format!("g{i}")),
                0i32..=100,
                0..4,
            ),
            0..2,
        ),
        0..3,
    )
}

proptest! {
    #[test]
    fn routes_never_reach_an_unready_group_and_shares_add_up(
        groups in arb_groups(), applied in arb_applied()
    ) {
        let p = plan(&groups, &applied);
        let by_name: BTreeMap<&str, &GroupRouting> = groups.iter().map(|g| (g.name.as_str(), g)).collect();
        for r in &p.routes {
            prop_assert!(!r.pools.is_empty());
            let mut seen_main = false;
            for pool in &r.pools {
                prop_assert!(!seen_main, "segment pools come first");
                seen_main = pool.segment.is_none();
                prop_assert!(!pool.backends.is_empty());
                for b in &pool.backends {
                    let g = by_name.get(b.group.as_str()).expect("a backend is a known group");
                    prop_assert!(g.ready, "unready group {} routed", b.group);
                    prop_assert!(!g.bootstrapping.contains(&r.country), "{} routed in {} behind its gate", b.group, r.country);
                    prop_assert!(b.weight > 0);
                    let seg = pool.segment.clone().unwrap_or_default();
                    let member = g.countries.contains(&r.country) && g.segment == seg;
                    // Otherwise it is draining out of a pool it carried.
                    let draining = applied.get(&r.country).and_then(|a| a.get(&seg)).is_some_and(|p| p.get(&b.group).is_some_and(|w| *w > 0));
                    prop_assert!(member || draining, "{} routed in {} {:?}", b.group, r.country, pool.segment);
                }
            }
            prop_assert!(!p.remove.contains(&r.country));
        }
        for (g, shares) in &p.shares {
            let group = by_name[g.as_str()];
            for s in shares {
                prop_assert!((0..=100).contains(&s.desired));
                prop_assert!((0..=100).contains(&s.planned));
                if !group.ready || group.bootstrapping.contains(&s.country) { prop_assert_eq!(s.planned, 0); }
                if s.planned != s.desired { prop_assert!(s.reason.is_some(), "{g} {s:?} without a reason"); }
            }
        }
        for (g, f) in &p.floors {
            let group = by_name[g.as_str()];
            prop_assert!(f.products >= group.products.min && f.products <= group.products.max);
            prop_assert!(f.batch >= group.batch.min && f.batch <= group.batch.max);
        }
    }

    #[test]
    fn with_room_everywhere_the_route_is_the_desired_split_of_the_ready_groups(
        groups in arb_groups(), applied in arb_applied()
    ) {
        let groups: Vec<GroupRouting> = groups.into_iter().map(|mut g| {
            g.products.available = g.products.max;
            g.batch.available = g.batch.max;
            g
        }).collect();
        let p = plan(&groups, &applied);
        for r in &p.routes {
            for pool in &r.pools {
                let seg = pool.segment.as_deref().unwrap_or("");
                let expect: BTreeMap<String, i32> = groups.iter()
                    .filter(|g| g.countries.contains(&r.country) && g.segment == seg && g.ready && !g.bootstrapping.contains(&r.country) && !g.deleting && g.weight_in(&r.country) > 0)
                    .map(|g| (g.name.clone(), g.weight_in(&r.country)))
                    .collect();
                if !expect.is_empty() {
                    prop_assert_eq!(weights(r, pool.segment.as_deref()), expect);
                }
            }
        }
    }

    /// Each country's desired shares come from the groups' weights in that country alone: a
    /// member's share is its weight there (0 while deleted) over the pool's, and a group that only
    /// drains out of the pool wants none.
    #[test]
    fn desired_shares_use_each_countrys_own_weight(groups in arb_groups(), applied in arb_applied()) {
        let p = plan(&groups, &applied);
        for (name, shares) in &p.shares {
            for s in shares {
                let seg = s.segment.clone().unwrap_or_default();
                let members: Vec<&GroupRouting> = groups.iter()
                    .filter(|g| g.countries.contains(&s.country) && g.segment == seg)
                    .collect();
                let w: Vec<i64> = members.iter()
                    .map(|g| if g.deleting { 0 } else { i64::from(g.weight_in(&s.country)) })
                    .collect();
                let want = members.iter().position(|g| &g.name == name)
                    .map_or(0, |me| shift::percentages(&w)[me]);
                prop_assert_eq!(s.desired, want, "{} in {} {:?}", name, s.country, s.segment);
            }
        }
    }

    /// Changing one group's weight in one country leaves every other country's route as it is
    /// (with room everywhere, so no floor of the moved country holds another one back).
    #[test]
    fn a_country_weight_changes_no_other_countrys_route(
        groups in arb_groups(), applied in arb_applied(), pick in 0usize..5,
        country in prop_oneof![Just("de"), Just("at"), Just("ch")], w in 0i32..=100
    ) {
        let mut groups: Vec<GroupRouting> = groups.into_iter().map(|mut g| {
            g.products.available = g.products.max;
            g.batch.available = g.batch.max;
            g
        }).collect();
        let before = plan(&groups, &applied);
        let Some(g) = groups.get_mut(pick) else { return Ok(()) };
        if !g.countries.iter().any(|c| c == country) { return Ok(()) }
        g.country_weights.insert(country.to_string(), w);
        let after = plan(&groups, &applied);
        let others = |p: &RoutingPlan| -> Vec<CountryRoute> {
            p.routes.iter().filter(|r| r.country != country).cloned().collect()
        };
        prop_assert_eq!(others(&before), others(&after));
        let removed = |p: &RoutingPlan| -> Vec<String> {
            p.remove.iter().filter(|c| *c != country).cloned().collect()
        };
        prop_assert_eq!(removed(&before), removed(&after));
    }

    #[test]
    fn rendered_routes_read_back_to_their_weights(groups in arb_groups()) {
        let p = plan(&groups, &Applied::new());
        for provider in PROVIDERS {
            let live = apply(&p, provider);
            for r in &p.routes {
                for pool in &r.pools {
                    let seg = pool.segment.clone().unwrap_or_default();
                    let back = live.applied.get(&r.country).and_then(|a| a.get(&seg)).cloned().unwrap_or_default();
                    prop_assert_eq!(back, weights(r, pool.segment.as_deref()));
                }
            }
        }
    }
}

/// The authentication hook: the Skipper filter first on every route (before the hash filters, so
/// an unauthenticated request reaches no backend), the Gateway ExtensionRef on every rule, and
/// nothing added when unset (the routes above).
#[test]
fn the_auth_hook_guards_every_route() {
    let mut seg = group("s", &["de"], 100);
    seg.segment = "beta".into();
    let p = plan(&[group("a", &["de"], 100), seg], &Applied::new());
    let skipper_opts = RouteOptions {
        auth: RouteAuth {
            skipper_filter: Some("oauthTokeninfoAnyScope(\"uid\")".into()),
            gateway_extension_ref: None,
        },
        ..RouteOptions::default()
    };
    let obj = skipper::route_group("shop", route(&p, "de"), &skipper_opts);
    let routes = obj["spec"]["routes"].as_array().expect("routes");
    assert_eq!(routes.len(), 10, "5 routes for each of 2 pools");
    for r in routes {
        assert_eq!(r["filters"][0], "oauthTokeninfoAnyScope(\"uid\")", "{r}");
    }
    assert_eq!(
        routes[0]["filters"],
        json!([
            "oauthTokeninfoAnyScope(\"uid\")",
            "lifo(1000, 1000, \"1s\")",
            "consistentHashKey(\"${id}\")",
            "consistentHashBalanceFactor(1.25)",
            "fadeIn(\"30s\", 2.5)"
        ])
    );
    assert_eq!(
        routes[3]["filters"],
        json!([
            "oauthTokeninfoAnyScope(\"uid\")",
            "lifo(1000, 1000, \"1s\")"
        ])
    );
    let gateway_opts = RouteOptions {
        gateway: Some(("gw".into(), "public".into())),
        auth: RouteAuth {
            skipper_filter: None,
            gateway_extension_ref: Some(
                "filters.example.com/TokenCheck/oauth".parse().expect("ref"),
            ),
        },
        ..RouteOptions::default()
    };
    let obj = gateway::http_route("shop", route(&p, "de"), &gateway_opts).expect("route");
    let rules = obj["spec"]["rules"].as_array().expect("rules");
    assert_eq!(rules.len(), 4);
    for r in rules {
        assert_eq!(
            r["filters"],
            json!([{"type": "ExtensionRef", "extensionRef": {"group": "filters.example.com", "kind": "TokenCheck", "name": "oauth"}}])
        );
    }
    assert_eq!(
        "/Secret/x".parse::<ExtensionRef>(),
        Ok(ExtensionRef {
            group: String::new(),
            kind: "Secret".into(),
            name: "x".into()
        })
    );
    for bad in ["", "a/b", "a/b/c/d", "g//n", "g/k/"] {
        assert!(bad.parse::<ExtensionRef>().is_err(), "{bad:?}");
    }
}

/// What `applied` holds for the unsegmented pool of each country.
fn applied_of(countries: &[(&str, &[(&str, i32)])]) -> Applied {
    countries
        .iter()
        .map(|(c, weights)| {
            (
                c.to_string(),
                BTreeMap::from([(String::new(), map(weights))]),
            )
        })
        .collect()
}

#[test]
fn a_suspended_group_freezes_the_routes_of_its_countries() {
    let mut a = group("a", &["de"], 50);
    let b = group("b", &["de", "at"], 50);
    a.suspended = true;
    let applied = applied_of(&[("de", &[("a", 90), ("b", 10)]), ("at", &[("b", 100)])]);
    let p = plan(&[a.clone(), b.clone()], &applied);
    // de is neither written nor deleted; at (where a has no part) is routed as usual.
    assert_eq!(
        p.routes
            .iter()
            .map(|r| r.country.as_str())
            .collect::<Vec<_>>(),
        ["at"]
    );
    assert!(p.remove.is_empty(), "{p:?}");
    assert!(
        p.floors.is_empty(),
        "a frozen country shifts nothing: {p:?}"
    );
    let (sa, sb) = (share(&p, "a", "de"), share(&p, "b", "de"));
    assert_eq!(
        (sa.desired, sa.planned, sa.reason),
        (50, 90, Some(Reason::Suspended))
    );
    assert_eq!(
        (sb.desired, sb.planned, sb.reason),
        (50, 10, Some(Reason::Suspended))
    );
    assert_eq!(share(&p, "b", "at").reason, None);
    // The peer's report says why, and the group stays routable (Shifting, not blocked).
    let live = Live {
        applied: applied.clone(),
        ..Live::default()
    };
    let rb = report("b", &p, &live);
    assert_eq!(
        rb.iter()
            .map(|s| (s.country.as_str(), s.actual, s.reason))
            .collect::<Vec<_>>(),
        [
            ("at", Some(100), None),
            ("de", Some(10), Some(Reason::Suspended))
        ]
    );
    let (ok, reason, _) = routing_condition(Provider::GatewayApi, true, &rb);
    assert_eq!((ok, reason), (true, "Shifting"));

    // A country the suspended group dropped from its spec but still carries stays frozen too,
    // and one it newly lists but nobody routes yet gets no route.
    let mut a2 = group("a", &["fr"], 50);
    a2.suspended = true;
    let p = plan(&[a2, b.clone()], &applied);
    assert!(p.routes.iter().all(|r| r.country == "at"), "{p:?}");
    assert!(p.remove.is_empty());

    // Resumed: de is routed again, towards the spec's split.
    a.suspended = false;
    let p = plan(&[a, b], &applied);
    assert!(p.routes.iter().any(|r| r.country == "de"), "{p:?}");
    assert_ne!(share(&p, "b", "de").reason, Some(Reason::Suspended));
}

#[test]
fn deleting_a_group_thaws_its_countries_so_deletion_never_waits_for_a_resume() {
    let applied = applied_of(&[("de", &[("a", 50), ("b", 50)])]);
    // The suspended group itself is deleted: its share drains as for any deleted group.
    let mut a = group("a", &["de"], 50);
    a.suspended = true;
    a.deleting = true;
    let b = group("b", &["de"], 50);
    let p = plan(&[a.clone(), b.clone()], &applied);
    assert!(p.routes.iter().any(|r| r.country == "de"), "{p:?}");
    assert_eq!(share(&p, "a", "de").desired, 0);
    assert_ne!(share(&p, "a", "de").reason, Some(Reason::Suspended));
    // A peer of a suspended group is deleted: the same.
    a.deleting = false;
    let mut b_gone = b;
    b_gone.deleting = true;
    let p = plan(&[a, b_gone], &applied);
    assert!(p.routes.iter().any(|r| r.country == "de"), "{p:?}");
    assert_eq!(share(&p, "b", "de").desired, 0);
}

#[test]
fn a_country_weight_moves_one_country_without_touching_the_others() {
    let a = group("a", &["de", "at"], 50);
    let mut b = group("b", &["de", "at"], 50);
    b.country_weights = BTreeMap::from([("de".to_string(), 0)]);
    let p = plan(&[a.clone(), b.clone()], &Applied::new());
    assert_eq!(
        weights(route(&p, "de"), None),
        BTreeMap::from([("a".to_string(), 50)])
    );
    assert_eq!(
        weights(route(&p, "at"), None),
        BTreeMap::from([("a".to_string(), 50), ("b".to_string(), 50)])
    );
    let desired: Vec<(String, i32)> = p.shares["b"]
        .iter()
        .map(|s| (s.country.clone(), s.desired))
        .collect();
    assert_eq!(desired, [("at".to_string(), 50), ("de".to_string(), 0)]);
    // A country weight above the group's weight counts for that country alone.
    b.country_weights = BTreeMap::from([("at".to_string(), 100)]);
    assert_eq!((b.weight_in("at"), b.weight_in("de")), (100, 50));
    let p = plan(&[a, b], &Applied::new());
    let desired: BTreeMap<String, i32> = p.shares["b"]
        .iter()
        .map(|s| (s.country.clone(), s.desired))
        .collect();
    assert_eq!(
        desired,
        BTreeMap::from([("at".to_string(), 67), ("de".to_string(), 50)])
    );
}
