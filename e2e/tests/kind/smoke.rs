//! The smoke of the suite: prapi installed as users install it, one group serving as `prapi
//! local` does, two groups splitting a country, a segment group kept apart.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::process::Command;
use std::time::Instant;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, ListParams, LogParams};
use prapi_e2e::kit::eventually;
use prapi_e2e::workspace_root;
use serde_json::{Value, json};

use crate::support::*;

/// The operator as the chart installs it: two replicas Available, exactly one holding the leader
/// Lease (and reporting itself leader), no "forbidden" in either log, and no other RBAC bound to
/// its ServiceAccount than the chart declares.
#[tokio::test]
async fn operator_runs_two_replicas_one_leader_with_only_the_charts_rbac() {
    let Some(kind) = Kind::get().await else {
        return;
    };
    let ns = kind.operator_namespace();
    let release = kind.var("PRAPI_RELEASE");
    let deployments: Api<Deployment> = Api::namespaced(kind.client.clone(), ns);
    eventually(
        "the operator Deployment Available with 2 replicas",
        || async {
            let d = deployments.get(release).await.ok()?;
            let s = d.status?;
            (s.available_replicas == Some(2) && s.updated_replicas == Some(2)).then_some(())
        },
    )
    .await;

    let pods: Api<Pod> = Api::namespaced(kind.client.clone(), ns);
    let selector = format!("app.kubernetes.io/instance={release}");
    let names: BTreeSet<String> = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .expect("list operator pods")
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| p.name_any())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let leases: Api<Lease> = Api::namespaced(kind.client.clone(), ns);
    let holder = eventually("a leader", || async {
        let l = leases.get(release).await.ok()?;
        l.spec?.holder_identity.filter(|h| names.contains(h))
    })
    .await;
    // Each replica's own view, through the API server's pod proxy: exactly one says leader.
    let mut leaders = Vec::new();
    for pod in &names {
        let metrics = eventually(&format!("{pod}'s /metrics"), || async {
            pod_metrics(&kind, ns, pod, 8080).await.ok()
        })
        .await;
        if metrics.lines().any(|l| l == "prapi_operator_leader 1") {
            leaders.push(pod.clone());
        }
    }
    assert_eq!(leaders, vec![holder.clone()], "the Lease names {holder}");

    // What RBAC refuses reads `... is forbidden: User "system:serviceaccount:NS:NAME" cannot ...`
    // (in JSON logs with the quotes escaped); other 403s, such as writes into a namespace being
    // deleted, are not about privileges.
    let account = format!("system:serviceaccount:{ns}:{release}");
    for pod in &names {
        let log = pods
            .logs(pod, &LogParams::default())
            .await
            .expect("operator log");
        let denials: Vec<&str> = log
            .lines()
            .filter(|l| {
                l.contains("forbidden: User") && l.contains(&account) && l.contains("cannot")
            })
            .collect();
        assert!(
            denials.is_empty(),
            "RBAC refused {pod}:\n{}",
            denials.join("\n")
        );
    }

    // The chart's RBAC, rendered from the values it was installed with.
    let values = workspace_root().join("target/kind/values.yaml");
    let rendered = Command::new("helm")
        .args(["template", release])
        .arg(workspace_root().join("charts/prapi-operator"))
        .args(["--namespace", ns, "-f"])
        .arg(&values)
        .output()
        .expect("helm template (helm is on the kind env's PATH)");
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let text = String::from_utf8(rendered.stdout).expect("utf-8");
    let mut chart_rules = BTreeMap::new();
    let mut chart_bindings = BTreeSet::new();
    for doc in serde_norway::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc).expect("YAML");
        let name = v["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match v["kind"].as_str() {
            Some("ClusterRole") | Some("Role") => {
                chart_rules.insert(name, v["rules"].clone());
            }
            Some("ClusterRoleBinding") | Some("RoleBinding") => {
                chart_bindings.insert((v["kind"].as_str().unwrap_or_default().to_string(), name));
            }
            _ => {}
        }
    }
    let bound_to_operator = |subjects: &Option<Vec<k8s_openapi::api::rbac::v1::Subject>>| {
        subjects.iter().flatten().any(|s| {
            (s.kind == "ServiceAccount" && s.name == release && s.namespace.as_deref() == Some(ns))
                || (s.kind == "User" && s.name == account)
        })
    };
    let mut live_bindings = BTreeSet::new();
    let mut live_roles = Vec::new();
    for b in Api::<ClusterRoleBinding>::all(kind.client.clone())
        .list(&ListParams::default())
        .await
        .expect("list ClusterRoleBindings")
    {
        if bound_to_operator(&b.subjects) {
            live_bindings.insert(("ClusterRoleBinding".to_string(), b.name_any()));
            live_roles.push(("ClusterRole".to_string(), b.role_ref.name.clone(), None));
        }
    }
    for b in Api::<RoleBinding>::all(kind.client.clone())
        .list(&ListParams::default())
        .await
        .expect("list RoleBindings")
    {
        if bound_to_operator(&b.subjects) {
            live_bindings.insert(("RoleBinding".to_string(), b.name_any()));
            live_roles.push((
                b.role_ref.kind.clone(),
                b.role_ref.name.clone(),
                b.namespace(),
            ));
        }
    }
    assert_eq!(live_bindings, chart_bindings, "bindings of the operator");
    // A bound role is the chart's own (the same rules live as rendered), or one of Kubernetes'
    // default roles that the chart binds by convention (an extension API server's
    // `system:auth-delegator` and `extension-apiserver-authentication-reader`), which carry the
    // API server's bootstrapping label.
    const DEFAULT_ROLE_LABEL: (&str, &str) = ("kubernetes.io/bootstrapping", "rbac-defaults");
    for (role_kind, name, namespace) in live_roles {
        let (rules, labels) = match (role_kind.as_str(), namespace) {
            ("ClusterRole", _) => {
                let r = Api::<ClusterRole>::all(kind.client.clone())
                    .get(&name)
                    .await
                    .expect("bound ClusterRole");
                (serde_json::to_value(&r.rules), r.labels().clone())
            }
            (_, Some(rns)) => {
                let r = Api::<Role>::namespaced(kind.client.clone(), &rns)
                    .get(&name)
                    .await
                    .expect("bound Role");
                (serde_json::to_value(&r.rules), r.labels().clone())
            }
            (_, None) => panic!("a RoleBinding without a namespace"),
        };
        let rules = rules.expect("rules as JSON");
        match chart_rules.get(&name) {
            Some(chart) => assert_eq!(&rules, chart, "{name}: live rules differ from the chart's"),
            None => assert_eq!(
                labels.get(DEFAULT_ROLE_LABEL.0).map(String::as_str),
                Some(DEFAULT_ROLE_LABEL.1),
                "{role_kind} {name} is bound to the operator but is neither the chart's nor a Kubernetes default role"
            ),
        }
    }
}

/// One group from docs/examples/one-group.yaml in a new namespace: Ready with real pods on the
/// kind nodes; events produced into Kafka reach DynamoDB through the updater pod; GETs through
/// Skipper answer byte for byte what `prapi local` answers for the same events; a batch through
/// Skipper returns every item; deleting the group removes its workloads.
#[tokio::test]
async fn one_group_serves_through_the_ingress_as_prapi_local_does() {
    let Some(kind) = Kind::get().await else {
        return;
    };
    let ns = test_namespace(&kind, "e2e-one").await;
    let topics = Topics::create(kind.var("KAFKA_BOOTSTRAP_SERVERS"), 4).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let countries = "de,at,ch";
    let catalogue = generate_catalogue(dir.path(), 40, countries);
    assert!(catalogue.product_ids.len() >= 40);
    produce(&topics, &catalogue, catalogue.product_ids.len()).await;

    let groups = example(&kind, "one-group.yaml", &topics);
    assert_eq!(groups.len(), 1);
    let name = apply_group(&kind.client, &ns, &groups[0]).await;
    wait_ready(&kind.client, &ns, &name).await;

    // Real pods, spread over the kind nodes, all Running and Ready.
    let pods: Api<Pod> = Api::namespaced(kind.client.clone(), &ns);
    let running = pods.list(&ListParams::default()).await.expect("pods");
    let nodes: BTreeSet<String> = running
        .items
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    for component in ["updater", "products", "batch"] {
        let prefix = format!("{name}-{component}-");
        assert!(
            running
                .items
                .iter()
                .any(|p| p.name_any().starts_with(&prefix)
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")),
            "no Running {component} pod"
        );
    }
    assert!(
        nodes
            .iter()
            .all(|n| n.starts_with(kind.var("PRAPI_KIND_CLUSTER")))
    );

    let local = Local::start(&catalogue, countries).await;
    let ingress = kind.ingress();
    // The last product produced: when it is served, the updater has written the catalogue.
    let last = catalogue.product_ids.last().expect("products").clone();
    let started = Instant::now();
    eventually("the last product through the ingress", || async {
        let a = get(
            &kind.http,
            &format!("{ingress}/product-offers/{last}"),
            &[("x-country", "de")],
        )
        .await?;
        (a.status == 200).then_some(())
    })
    .await;
    let _ = writeln!(
        std::io::stderr(),
        "catalogue served through Skipper {:.1}s after Ready",
        started.elapsed().as_secs_f64()
    );

    let media = [
        "application/json",
        "application/x.alpha-format+json",
        "application/x.beta-format+json",
        "application/x.gamma-format+json",
    ];
    let mut compared = 0;
    for (i, id) in catalogue.product_ids.iter().enumerate().step_by(4) {
        let country = ["de", "at", "ch"][i % 3];
        let accept = media[i % media.len()];
        for path in [
            format!("/products/{id}"),
            format!("/products/{id}/offers"),
            format!("/product-offers/{id}"),
        ] {
            let headers = [("x-country", country), ("accept", accept)];
            let want = get(&kind.http, &format!("{}{path}", local.url), &headers)
                .await
                .expect("prapi local answers");
            let status = want.status;
            let got = eventually(&format!("{path} through the ingress"), || {
                let url = format!("{ingress}{path}");
                let http = &kind.http;
                async move {
                    get(http, &url, &headers)
                        .await
                        .filter(|a| a.status == status)
                }
            })
            .await;
            assert_eq!(got, want, "{path} ({country}, {accept})");
            compared += 1;
        }
    }
    assert!(compared >= 30, "compared {compared}");

    // The updater pod wrote the events into the group's own table.
    let table = format!("prapi-{ns}-{name}");
    let dynamodb = kind.dynamodb();
    let stored = dynamodb
        .scan()
        .table_name(&table)
        .select(aws_sdk_dynamodb::types::Select::Count)
        .send()
        .await
        .expect("Scan the group's table")
        .count();
    assert!(stored > 0, "{table} is empty");

    // A batch through the ingress returns every item, as prapi local does.
    let ids: Vec<&str> = catalogue
        .product_ids
        .iter()
        .take(25)
        .map(String::as_str)
        .collect();
    let path = format!("/product-offers?ids={}", ids.join(","));
    let headers = [("x-country", "at")];
    let want = get(&kind.http, &format!("{}{path}", local.url), &headers)
        .await
        .expect("prapi local batch");
    let got = get(&kind.http, &format!("{ingress}{path}"), &headers)
        .await
        .expect("batch through the ingress");
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    let items = |a: &Answer| -> Value { serde_json::from_slice(&a.body).expect("batch is JSON") };
    assert_eq!(items(&got), items(&want));
    let body = String::from_utf8_lossy(&got.body);
    for id in &ids {
        assert!(body.contains(id), "{id} missing from the batch");
    }

    // Deleting the group removes it, its workloads and (deletionPolicy: Delete) its table; the
    // namespace goes with the test.
    marketgroups(&kind.client, &ns)
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete the MarketGroup");
    let deployments: Api<Deployment> = Api::namespaced(kind.client.clone(), &ns);
    eventually("the group and its Deployments gone", || async {
        let gone = matches!(
            marketgroups(&kind.client, &ns).get(&name).await,
            Err(kube::Error::Api(e)) if e.code == 404
        );
        let left = deployments.list(&ListParams::default()).await.ok()?;
        (gone && left.items.is_empty()).then_some(())
    })
    .await;
    match dynamodb.describe_table().table_name(&table).send().await {
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) => {}
        other => panic!("{table} left behind: {other:?}"),
    }
}

/// docs/examples/two-groups-90-10.yaml: both groups Ready; Austria goes to `eu` alone, German
/// requests are split between the two. The groups hold different catalogues (eu-next only the
/// first half of the products), so a product of the second half answers 404 exactly when eu-next
/// served it: over 400 requests both answers occur (the chance that a 10 % share shows up in none
/// of 400 is below 1e-18). The precise split per step is the data-path suite's.
#[tokio::test]
async fn two_groups_split_a_country_and_keep_the_other_apart() {
    let Some(kind) = Kind::get().await else {
        return;
    };
    let ns = test_namespace(&kind, "e2e-split").await;
    let input = TwoCatalogues::produce(&kind, 20, "de,at").await;
    let next_topics = &input.half;
    let groups = example(&kind, "two-groups-90-10.yaml", &input.full);
    assert_eq!(groups.len(), 2);
    for mut g in groups {
        if g["metadata"]["name"] == "eu-next" {
            let kafka = &mut g["spec"]["updater"]["kafka"];
            kafka["productsTopic"] = json!(next_topics.products);
            kafka["offersTopic"] = json!(next_topics.offers);
        }
        apply_group(&kind.client, &ns, &g).await;
    }
    wait_ready(&kind.client, &ns, "eu").await;
    wait_ready(&kind.client, &ns, "eu-next").await;

    let (shared, eu_only) = input.shared_and_full_only();
    // Both groups have written their catalogues once the shared product answers everywhere.
    wait_status(&kind, &shared, &[("x-country", "at")], 200).await;
    eventually("both groups serving the shared product", || async {
        let counts = statuses(&kind, &shared, &[("x-country", "de")], 20).await;
        (counts.get(&200) == Some(&20)).then_some(())
    })
    .await;
    // Every Skipper replica has Austria's route before the sample (routes reach the ingress
    // eventually): 20 answers in a row from eu.
    wait_ingress_converged(&kind, &eu_only, &[("x-country", "at")], |a| a.status == 200).await;
    let at = statuses(&kind, &eu_only, &[("x-country", "at")], 100).await;
    assert_eq!(at, BTreeMap::from([(200, 100)]), "Austria is eu's alone");
    let de = statuses(&kind, &eu_only, &[("x-country", "de")], 400).await;
    let _ = writeln!(
        std::io::stderr(),
        "German requests for an eu-only product: {de:?}"
    );
    assert_eq!(
        de.keys().copied().collect::<Vec<_>>(),
        vec![200, 404],
        "{de:?}"
    );
    assert!(de[&200] > de[&404], "eu keeps the larger share: {de:?}");
}

/// docs/examples/segment-test-group.yaml next to one-group.yaml: requests with
/// `X-Traffic-Segment: canary` reach the canary group only, requests without it never do. The
/// canary group holds only the first half of the catalogue, so which group answered shows in the
/// status of a second-half product.
#[tokio::test]
async fn a_segment_group_gets_only_requests_with_its_header() {
    let Some(kind) = Kind::get().await else {
        return;
    };
    let ns = test_namespace(&kind, "e2e-segment").await;
    let input = TwoCatalogues::produce(&kind, 20, "de,at,ch").await;
    let main = example(&kind, "one-group.yaml", &input.full);
    let canary = example(&kind, "segment-test-group.yaml", &input.half);
    let main_name = apply_group(&kind.client, &ns, &main[0]).await;
    let canary_name = apply_group(&kind.client, &ns, &canary[0]).await;
    wait_ready(&kind.client, &ns, &main_name).await;
    wait_ready(&kind.client, &ns, &canary_name).await;

    let (shared, main_only) = input.shared_and_full_only();
    let segment = [("x-country", "de"), ("x-traffic-segment", "canary")];
    wait_status(&kind, &shared, &segment, 200).await;
    wait_status(&kind, &main_only, &[("x-country", "de")], 200).await;
    // Routes reach the ingress eventually (the operator writes them once both groups are Ready,
    // each Skipper replica polls them): first every replica has the segment route, then a fresh
    // sample is measured.
    eventually("the segment route in effect on the ingress", || async {
        let counts = statuses(&kind, &main_only, &segment, 20).await;
        (counts.get(&404) == Some(&20)).then_some(())
    })
    .await;
    let with = statuses(&kind, &main_only, &segment, 500).await;
    assert_eq!(
        with,
        BTreeMap::from([(404, 500)]),
        "every segment request reached the canary"
    );
    let without = statuses(&kind, &main_only, &[("x-country", "de")], 500).await;
    assert_eq!(
        without,
        BTreeMap::from([(200, 500)]),
        "no other request did"
    );
}
