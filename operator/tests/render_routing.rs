//! `prapi-operator render --routing ... --store aws` on the two-group fixture: the route objects
//! across the file's groups and the AWS actions of each table, offline.

use std::process::Command;

fn render(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_prapi-operator"))
        .arg("render")
        .arg("-f")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/routing/two-groups.yaml"
        ))
        .args(args)
        .env_remove("PRAPI_ROUTING")
        .env_remove("PRAPI_GATEWAY")
        .env_remove("PRAPI_STORE")
        .output()
        .expect("run prapi-operator render");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn docs(yaml: &str, kind: &str) -> Vec<serde_json::Value> {
    yaml.split("\n---\n")
        .filter_map(|d| {
            serde_norway::from_str::<serde_json::Value>(d.trim_start_matches("---\n")).ok()
        })
        .filter(|v| v["kind"] == kind)
        .collect()
}

#[test]
fn render_prints_http_routes_and_aws_actions_for_two_groups() {
    let (ok, out, err) = render(&[
        "--routing",
        "gateway-api",
        "--gateway",
        "infra/public",
        "--store",
        "aws",
    ]);
    assert!(ok, "{err}");
    let routes = docs(&out, "HTTPRoute");
    let names: Vec<&str> = routes
        .iter()
        .map(|r| r["metadata"]["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["prapi-at", "prapi-de"]);
    let de = &routes[1];
    // canary segment first (2 rules), then the weighted 90/10 pool.
    let rules = de["spec"]["rules"].as_array().expect("rules");
    assert_eq!(rules.len(), 4);
    assert_eq!(rules[0]["matches"][0]["headers"][1]["value"], "canary");
    assert_eq!(
        rules[3]["backendRefs"],
        serde_json::json!([
            {"kind": "Service", "name": "eu-main-products", "port": 8080, "weight": 90},
            {"kind": "Service", "name": "eu-next-products", "port": 8080, "weight": 10},
        ])
    );
    assert!(out.contains("# traffic shop/eu-next de: 10%"), "{out}");
    assert!(out.contains("# AWS actions for shop/eu-main (table prapi-shop-eu-main)"));
    assert!(out.contains("CreateTable { billing: Provisioned"));
    assert!(out.contains("CreateTable { billing: PayPerRequest"));
    assert!(out.contains("RegisterTarget { dimension: Write, min: 5, max: 1000 }"));
    // The workloads are still there.
    assert_eq!(docs(&out, "Deployment").len(), 9);
}

#[test]
fn render_prints_route_groups_and_needs_a_gateway_for_http_routes() {
    let (ok, out, err) = render(&["--routing", "skipper"]);
    assert!(ok, "{err}");
    assert_eq!(docs(&out, "RouteGroup").len(), 2);
    assert!(!out.contains("AWS actions"));
    let (ok, _, err) = render(&["--routing", "gateway-api"]);
    assert!(!ok);
    assert!(err.contains("--gateway NAMESPACE/NAME"), "{err}");
    let (ok, _, err) = render(&["--routing", "gateway-api", "--gateway", "public"]);
    assert!(!ok);
    assert!(err.contains("expected NAMESPACE/NAME"), "{err}");
}

/// The RouteGroups of the fixture, as a RouteGroup list, are the ones in
/// tests/fixtures/routing/two-groups.routegroups.json, which e2e/kind/chart-check.sh runs through
/// Skipper's own RouteGroup validator (every filter created from Skipper's registry): a filter
/// Skipper does not know, or wrong arguments, would make Skipper drop the route. Any change to the
/// rendered RouteGroups shows here first; regenerate the file with
/// `PRAPI_WRITE_FIXTURES=1 cargo test -p prapi-operator --test render_routing`.
#[test]
fn rendered_route_groups_are_the_ones_skipper_validated() {
    let (ok, out, err) = render(&["--routing", "skipper"]);
    assert!(ok, "{err}");
    let list = serde_json::json!({"items": docs(&out, "RouteGroup")});
    let rendered = format!("{}\n", serde_json::to_string_pretty(&list).expect("json"));
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/routing/two-groups.routegroups.json"
    );
    if std::env::var_os("PRAPI_WRITE_FIXTURES").is_some() {
        std::fs::write(path, &rendered).expect("write the fixture");
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == rendered,
        "{path} differs from the rendered RouteGroups; regenerate it with\n  \
         PRAPI_WRITE_FIXTURES=1 cargo test -p prapi-operator --test render_routing\n\
         and run e2e/kind/chart-check.sh (Skipper's validator)"
    );
    // The filters of the products and batch routes, as the validator sees them.
    let de = &list["items"][1];
    assert_eq!(de["metadata"]["name"], "prapi-de");
    assert_eq!(
        de["spec"]["routes"][2]["filters"],
        serde_json::json!([
            "lifo(1000, 1000, \"1s\")",
            "consistentHashKey(\"${id}\")",
            "consistentHashBalanceFactor(1.25)",
            "fadeIn(\"30s\", 2.5)"
        ])
    );
    assert_eq!(
        de["spec"]["routes"][3]["filters"],
        serde_json::json!(["lifo(1000, 1000, \"1s\")"])
    );
}
