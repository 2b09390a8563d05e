//! Rendering: every child of a group, checked field by field, from the defaults and from a spec
//! that sets everything.

use clap::Parser;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    Affinity, Container, EnvFromSource, EnvVar, EnvVarSource, LocalObjectReference, NodeAffinity,
    NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PodSpec, SecretEnvSource,
    SecretKeySelector, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use prapi_operator::crd::MarketGroup;
use prapi_operator::offline;
use prapi_operator::plan::{Component, GroupPlan};
use prapi_operator::render::autoscaling::{self, UpdaterAutoscaler};
use prapi_operator::render::meta::{self, ANNOTATION_APPLIED_HASH, ANNOTATION_CONFIG_HASH};
use prapi_operator::render::workloads as w;
use prapi_operator::render::{ChildKind, RenderOptions, render};
use prapi_operator::validate;
use proptest::prelude::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;

const UID: &str = "0b7e2d3c-1111-2222-3333-444455556666";

fn group(yaml_spec: &str) -> MarketGroup {
    let text = format!(
        "apiVersion: prapi.dev/v1alpha1\nkind: MarketGroup\nmetadata:\n  name: dach\n  namespace: shop\n  uid: {UID}\nspec:\n{yaml_spec}"
    );
    offline::parse_manifests(&text).expect("parses").remove(0)
}

fn plan_of(yaml_spec: &str) -> GroupPlan {
    validate::plan(&group(yaml_spec), "prapi:test", "ignored").expect("valid spec")
}

fn default_plan() -> GroupPlan {
    plan_of("  countries: [de, AT]\n")
}

fn container(d: &Deployment) -> &Container {
    &pod(d).containers[0]
}

fn pod(d: &Deployment) -> &PodSpec {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod spec")
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn labels(component: Option<&str>) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "prapi".to_string()),
        ("app.kubernetes.io/instance".to_string(), "dach".to_string()),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "prapi-operator".to_string(),
        ),
        ("app.kubernetes.io/part-of".to_string(), "prapi".to_string()),
    ]);
    if let Some(c) = component {
        l.insert("app.kubernetes.io/component".into(), c.into());
    }
    l
}

#[test]
fn command_lines_follow_design_section_1() {
    let p = default_plan();
    assert_eq!(
        w::updater_args(&p),
        strings(&[
            "updater",
            "--kafka-bootstrap",
            "kafka:9092",
            "--products-topic",
            "products",
            "--offers-topic",
            "offers",
            "--group",
            "prapi-shop-dach",
            "--countries",
            "de,at",
            "--store",
            "dynamodb",
            "--table",
            "prapi-shop-dach",
        ])
    );
    assert_eq!(
        w::products_args(&p),
        strings(&[
            "products",
            "--listen",
            "0.0.0.0:8080",
            "--countries",
            "de,at",
            "--store",
            "dynamodb",
            "--table",
            "prapi-shop-dach",
            "--ops-listen",
            "0.0.0.0:9090",
            "--shutdown-delay-ms",
            "5000",
            "--drain-timeout-ms",
            "20000",
        ])
    );
    assert_eq!(
        w::batch_args(&p),
        strings(&[
            "batch",
            "--listen",
            "0.0.0.0:8080",
            "--countries",
            "de,at",
            "--products-service",
            "shop/dach-products-headless",
            "--ops-listen",
            "0.0.0.0:9090",
            "--shutdown-delay-ms",
            "5000",
            "--drain-timeout-ms",
            "20000",
        ])
    );
}

#[test]
fn command_lines_use_custom_names() {
    let p = plan_of(
        "  countries: [ch]\n  updater:\n    kafka: {bootstrapServers: 'k1:9092,k2:9092', productsTopic: p.t, offersTopic: o.t, consumerGroup: cg}\n  dynamodb: {table: my-table}\n",
    );
    let u = w::updater_args(&p);
    for (flag, value) in [
        ("--kafka-bootstrap", "k1:9092,k2:9092"),
        ("--products-topic", "p.t"),
        ("--offers-topic", "o.t"),
        ("--group", "cg"),
        ("--countries", "ch"),
        ("--table", "my-table"),
    ] {
        let i = u.iter().position(|a| a == flag).expect(flag);
        assert_eq!(u[i + 1], value, "{flag}");
    }
    assert!(
        w::products_args(&p)
            .windows(2)
            .any(|w| w == strings(&["--table", "my-table"]))
    );
}

#[test]
fn deployments_have_image_probes_resources_and_restricted_security() {
    let p = default_plan();
    for c in Component::ALL {
        let d = w::deployment(&p, c);
        let name = format!("dach-{}", c.as_str());
        assert_eq!(d.metadata.name.as_deref(), Some(name.as_str()));
        assert_eq!(d.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(d.metadata.labels.as_ref(), Some(&labels(Some(c.as_str()))));
        let owner = &d.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (
                owner.kind.as_str(),
                owner.name.as_str(),
                owner.uid.as_str(),
                owner.controller,
                owner.block_owner_deletion
            ),
            ("MarketGroup", "dach", UID, Some(true), Some(true))
        );
        assert_eq!(owner.api_version, "prapi.dev/v1alpha1");
        let spec = d.spec.as_ref().expect("spec");
        assert_eq!(spec.replicas, None, "the autoscaler owns replicas");
        let selector = BTreeMap::from([
            ("app.kubernetes.io/name".to_string(), "prapi".to_string()),
            ("app.kubernetes.io/instance".to_string(), "dach".to_string()),
            (
                "app.kubernetes.io/component".to_string(),
                c.as_str().to_string(),
            ),
        ]);
        assert_eq!(spec.selector.match_labels.as_ref(), Some(&selector));
        let tmeta = spec.template.metadata.as_ref().expect("template meta");
        assert_eq!(tmeta.labels.as_ref(), Some(&labels(Some(c.as_str()))));
        assert!(
            tmeta
                .annotations
                .as_ref()
                .expect("annotations")
                .contains_key(ANNOTATION_CONFIG_HASH)
        );

        let ctr = container(&d);
        assert_eq!(ctr.image.as_deref(), Some("prapi:test"));
        assert_eq!(ctr.command, Some(strings(&["prapi"])));
        assert_eq!(ctr.args.as_ref(), Some(&w::args(&p, c)));
        let port = &ctr.ports.as_ref().expect("ports")[0];
        assert_eq!(
            (port.name.as_deref(), port.container_port),
            (Some("http"), 8080)
        );
        let probe_path = |pr: &Option<k8s_openapi::api::core::v1::Probe>| {
            pr.as_ref()
                .and_then(|p| p.http_get.as_ref())
                .and_then(|h| h.path.clone())
        };
        assert_eq!(probe_path(&ctr.readiness_probe).as_deref(), Some("/readyz"));
        assert_eq!(probe_path(&ctr.liveness_probe).as_deref(), Some("/healthz"));
        assert_eq!(probe_path(&ctr.startup_probe).as_deref(), Some("/healthz"));
        // Serving components are probed on their ops listener (its own connection cap), the
        // updater on its one port.
        let ports: Vec<(Option<&str>, i32)> = ctr
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.as_deref(), p.container_port))
            .collect();
        let probe_port = |pr: &Option<k8s_openapi::api::core::v1::Probe>| {
            pr.as_ref()
                .and_then(|p| p.http_get.as_ref())
                .map(|h| h.port.clone())
        };
        let expected_probe_port = if c == Component::Updater {
            assert_eq!(ports, vec![(Some("http"), 8080)]);
            "http"
        } else {
            assert_eq!(ports, vec![(Some("http"), 8080), (Some("ops"), 9090)]);
            "ops"
        };
        for probe in [
            &ctr.readiness_probe,
            &ctr.liveness_probe,
            &ctr.startup_probe,
        ] {
            assert_eq!(
                probe_port(probe),
                Some(IntOrString::String(expected_probe_port.into())),
                "{c:?}"
            );
        }
        // The grace period covers the rendered shutdown delay and drain deadline (5 s + 20 s)
        // with margin, so the kubelet never kills a pod that drains within its deadline.
        let grace = pod(&d).termination_grace_period_seconds;
        assert_eq!(grace, Some(30), "{c:?}");
        if c != Component::Updater {
            let args = w::args(&p, c);
            let flag = |name: &str| -> i64 {
                let at = args.iter().position(|a| a == name).expect(name);
                args[at + 1].parse().expect("milliseconds")
            };
            let drained = (flag("--shutdown-delay-ms") + flag("--drain-timeout-ms")) / 1000;
            assert!(
                grace.is_some_and(|g| g > drained),
                "grace {grace:?} vs {drained} s"
            );
        }

        let sc = ctr.security_context.as_ref().expect("container security");
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(
            sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
            Some(strings(&["ALL"]))
        );
        let psc = pod(&d).security_context.as_ref().expect("pod security");
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.run_as_user, Some(65532));
        assert_eq!(
            psc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
            Some("RuntimeDefault")
        );
        // A read-only root filesystem needs a writable /tmp.
        assert_eq!(
            ctr.volume_mounts.as_ref().map(|v| v[0].mount_path.as_str()),
            Some("/tmp")
        );
        assert_eq!(
            pod(&d).service_account_name.as_deref(),
            Some(format!("dach-{}", c.as_str()).as_str()),
            "one ServiceAccount per component"
        );
        assert_eq!(
            pod(&d).automount_service_account_token,
            Some(c == Component::Batch),
            "only batch needs an API token"
        );
    }
}

#[test]
fn default_resources_per_component() {
    let p = default_plan();
    let res = |c| {
        let d = w::deployment(&p, c);
        let r = container(&d).resources.clone().expect("resources");
        let get =
            |m: &Option<
                BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
            >,
             k: &str| { m.as_ref().and_then(|m| m.get(k)).map(|q| q.0.clone()) };
        (
            get(&r.requests, "cpu"),
            get(&r.requests, "memory"),
            get(&r.limits, "memory"),
        )
    };
    let s = |v: &str| Some(v.to_string());
    assert_eq!(res(Component::Products), (s("500m"), s("1Gi"), s("1Gi")));
    assert_eq!(res(Component::Batch), (s("250m"), s("256Mi"), s("256Mi")));
    assert_eq!(res(Component::Updater), (s("250m"), s("256Mi"), s("256Mi")));
}

#[test]
fn serving_components_roll_without_losing_capacity_and_spread() {
    let p = default_plan();
    for c in [Component::Products, Component::Batch] {
        let d = w::deployment(&p, c);
        let ru = d
            .spec
            .as_ref()
            .and_then(|s| s.strategy.as_ref())
            .and_then(|s| s.rolling_update.as_ref())
            .expect("rolling update");
        assert_eq!(
            ru.max_unavailable,
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(0))
        );
    }
    let u = w::deployment(&p, Component::Updater);
    assert!(u.spec.as_ref().and_then(|s| s.strategy.as_ref()).is_none());
}

fn spread(key: &str, component: &str) -> TopologySpreadConstraint {
    TopologySpreadConstraint {
        max_skew: 1,
        topology_key: key.into(),
        when_unsatisfiable: "ScheduleAnyway".into(),
        label_selector: Some(LabelSelector {
            match_labels: Some(
                labels(Some(component))
                    .into_iter()
                    .filter(|(k, _)| !k.ends_with("managed-by") && !k.ends_with("part-of"))
                    .collect(),
            ),
            ..LabelSelector::default()
        }),
        match_label_keys: Some(strings(&["pod-template-hash"])),
        ..TopologySpreadConstraint::default()
    }
}

#[test]
fn by_default_every_component_spreads_across_zones_and_serving_ones_across_nodes() {
    let p = default_plan();
    let zone = "topology.kubernetes.io/zone";
    let node = "kubernetes.io/hostname";
    let got = |c| {
        pod(&w::deployment(&p, c))
            .topology_spread_constraints
            .clone()
    };
    assert_eq!(got(Component::Updater), Some(vec![spread(zone, "updater")]));
    assert_eq!(
        got(Component::Products),
        Some(vec![spread(zone, "products"), spread(node, "products")])
    );
    assert_eq!(
        got(Component::Batch),
        Some(vec![spread(zone, "batch"), spread(node, "batch")])
    );
    // `[]` spreads nothing; a given constraint without a selector gets the component's.
    let p = plan_of(
        "  countries: [de]
  pod:
    topologySpreadConstraints: []
  batch:
    pod:
      topologySpreadConstraints: [{maxSkew: 3, topologyKey: rack, whenUnsatisfiable: DoNotSchedule}]
",
    );
    let got = |c| {
        pod(&w::deployment(&p, c))
            .topology_spread_constraints
            .clone()
    };
    assert_eq!(got(Component::Updater), None);
    assert_eq!(got(Component::Products), None);
    let mut want = spread("rack", "batch");
    want.max_skew = 3;
    want.when_unsatisfiable = "DoNotSchedule".into();
    want.match_label_keys = None;
    assert_eq!(got(Component::Batch), Some(vec![want]));
}

fn env_var(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

/// The pod settings' part of a container's variables: those not from the operator's ConfigMap.
fn settings_env(d: &Deployment) -> Vec<EnvVar> {
    container(d)
        .env
        .iter()
        .flatten()
        .filter(|e| {
            e.value_from
                .as_ref()
                .and_then(|v| v.config_map_key_ref.as_ref())
                .is_none()
        })
        .cloned()
        .collect()
}

#[test]
fn shared_pod_settings_reach_every_component_field_by_field() {
    let p = plan_of(
        r#"  countries: [de]
  pod:
    env:
      - {name: AWS_REGION, value: eu-central-1}
      - name: TOKEN
        valueFrom: {secretKeyRef: {name: creds, key: token}}
    envFrom: [{secretRef: {name: more}}]
    labels: {team: catalogue}
    annotations: {example.com/owner: catalogue}
    serviceAccountAnnotations: {eks.amazonaws.com/role-arn: "arn:aws:iam::1:role/r"}
    nodeSelector: {kubernetes.io/arch: arm64}
    tolerations: [{key: dedicated, operator: Equal, value: prapi, effect: NoSchedule}]
    affinity:
      nodeAffinity:
        requiredDuringSchedulingIgnoredDuringExecution:
          nodeSelectorTerms:
            - matchExpressions: [{key: kubernetes.io/os, operator: In, values: [linux]}]
    topologySpreadConstraints:
      - {maxSkew: 2, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {team: catalogue}}}
    priorityClassName: prapi-serving
    imagePullSecrets: [{name: registry}]
"#,
    );
    let affinity = Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(vec![NodeSelectorRequirement {
                        key: "kubernetes.io/os".into(),
                        operator: "In".into(),
                        values: Some(strings(&["linux"])),
                    }]),
                    ..NodeSelectorTerm::default()
                }],
            }),
            ..NodeAffinity::default()
        }),
        ..Affinity::default()
    };
    for c in Component::ALL {
        let d = w::deployment(&p, c);
        let token = EnvVar {
            name: "TOKEN".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: "creds".into(),
                    key: "token".into(),
                    optional: None,
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        };
        assert_eq!(
            settings_env(&d),
            vec![env_var("AWS_REGION", "eu-central-1"), token],
            "{c:?}"
        );
        assert_eq!(
            container(&d).env_from,
            Some(vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: "more".into(),
                    optional: None
                }),
                ..EnvFromSource::default()
            }])
        );
        let template = d
            .spec
            .as_ref()
            .expect("spec")
            .template
            .metadata
            .clone()
            .expect("meta");
        let mut want_labels = labels(Some(c.as_str()));
        want_labels.insert("team".into(), "catalogue".into());
        assert_eq!(template.labels, Some(want_labels));
        let annotations = template.annotations.expect("annotations");
        assert_eq!(
            annotations.keys().collect::<Vec<_>>(),
            ["example.com/owner", ANNOTATION_CONFIG_HASH]
        );
        assert_eq!(annotations["example.com/owner"], "catalogue");
        let spec = pod(&d);
        assert_eq!(
            spec.node_selector,
            Some(BTreeMap::from([(
                "kubernetes.io/arch".into(),
                "arm64".into()
            )]))
        );
        assert_eq!(
            spec.tolerations,
            Some(vec![Toleration {
                key: Some("dedicated".into()),
                operator: Some("Equal".into()),
                value: Some("prapi".into()),
                effect: Some("NoSchedule".into()),
                toleration_seconds: None,
            }])
        );
        assert_eq!(spec.affinity, Some(affinity.clone()));
        let mut want_spread = spread("topology.kubernetes.io/zone", c.as_str());
        want_spread.max_skew = 2;
        want_spread.when_unsatisfiable = "DoNotSchedule".into();
        want_spread.match_label_keys = None;
        want_spread.label_selector = Some(LabelSelector {
            match_labels: Some(BTreeMap::from([("team".into(), "catalogue".into())])),
            ..LabelSelector::default()
        });
        assert_eq!(spec.topology_spread_constraints, Some(vec![want_spread]));
        assert_eq!(spec.priority_class_name.as_deref(), Some("prapi-serving"));
        assert_eq!(
            spec.image_pull_secrets,
            Some(vec![LocalObjectReference {
                name: "registry".into()
            }])
        );
    }
    for c in Component::ALL {
        assert_eq!(
            w::service_account(&p, c).metadata.annotations,
            Some(BTreeMap::from([(
                "eks.amazonaws.com/role-arn".into(),
                "arn:aws:iam::1:role/r".into()
            )]))
        );
    }
    // Without settings none of these fields is rendered.
    let bare = w::deployment(&default_plan(), Component::Products);
    let spec = pod(&bare);
    assert_eq!(
        (
            &spec.node_selector,
            &spec.tolerations,
            &spec.affinity,
            &spec.priority_class_name,
            &spec.image_pull_secrets,
            &container(&bare).env_from
        ),
        (&None, &None, &None, &None, &None, &None)
    );
    assert_eq!(
        w::service_account(&default_plan(), Component::Batch)
            .metadata
            .annotations,
        None
    );
}

#[test]
fn component_pod_settings_merge_over_the_shared_ones() {
    let p = plan_of(
        r#"  countries: [de]
  pod:
    env: [{name: A, value: shared}, {name: B, value: shared}]
    envFrom: [{configMapRef: {name: shared}}]
    labels: {team: catalogue, tier: shared}
    nodeSelector: {pool: general}
    tolerations: [{key: t, operator: Exists}]
    priorityClassName: shared
    imagePullSecrets: [{name: one}]
    serviceAccountAnnotations: {eks.amazonaws.com/role-arn: reader, example.com/team: catalogue}
  updater:
    pod:
      serviceAccountAnnotations: {eks.amazonaws.com/role-arn: writer}
      env: [{name: B, value: updater}, {name: C, value: updater}]
      envFrom: [{configMapRef: {name: updater}}]
      labels: {tier: updater}
      nodeSelector: {pool: batch-work}
      tolerations: [{key: t, operator: Exists}, {key: u, operator: Exists}]
      priorityClassName: low
      imagePullSecrets: [{name: one}, {name: two}]
"#,
    );
    // Each component's ServiceAccount gets its merged annotations: the updater its own role.
    let role = |c| {
        w::service_account(&p, c)
            .metadata
            .annotations
            .expect("annotations")
    };
    assert_eq!(
        role(Component::Updater),
        BTreeMap::from([
            ("eks.amazonaws.com/role-arn".into(), "writer".into()),
            ("example.com/team".into(), "catalogue".into())
        ])
    );
    for c in [Component::Products, Component::Batch] {
        assert_eq!(role(c)["eks.amazonaws.com/role-arn"], "reader");
    }
    let u = w::deployment(&p, Component::Updater);
    assert_eq!(
        settings_env(&u),
        vec![
            env_var("A", "shared"),
            env_var("B", "updater"),
            env_var("C", "updater")
        ]
    );
    let names = |d: &Deployment| -> Vec<String> {
        container(d)
            .env_from
            .iter()
            .flatten()
            .filter_map(|s| s.config_map_ref.as_ref().map(|r| r.name.clone()))
            .collect()
    };
    assert_eq!(names(&u), strings(&["shared", "updater"]));
    let labels_of = |d: &Deployment| {
        d.spec
            .as_ref()
            .expect("spec")
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .expect("labels")
    };
    assert_eq!(labels_of(&u)["tier"], "updater");
    assert_eq!(labels_of(&u)["team"], "catalogue");
    let spec = pod(&u);
    assert_eq!(
        spec.node_selector.as_ref().map(|m| m["pool"].as_str()),
        Some("batch-work")
    );
    let keys: Vec<_> = spec
        .tolerations
        .iter()
        .flatten()
        .filter_map(|t| t.key.clone())
        .collect();
    assert_eq!(keys, strings(&["t", "u"]));
    assert_eq!(spec.priority_class_name.as_deref(), Some("low"));
    let secrets: Vec<_> = spec
        .image_pull_secrets
        .iter()
        .flatten()
        .map(|s| s.name.clone())
        .collect();
    assert_eq!(secrets, strings(&["one", "two"]));
    // The other components keep the shared settings.
    for c in [Component::Products, Component::Batch] {
        let d = w::deployment(&p, c);
        assert_eq!(
            settings_env(&d),
            vec![env_var("A", "shared"), env_var("B", "shared")]
        );
        assert_eq!(names(&d), strings(&["shared"]));
        assert_eq!(labels_of(&d)["tier"], "shared");
        assert_eq!(pod(&d).priority_class_name.as_deref(), Some("shared"));
        assert_eq!(pod(&d).tolerations.as_ref().map(Vec::len), Some(1));
    }
}

#[test]
fn the_operators_labels_annotation_and_variables_win_over_pod_settings() {
    // The CRD refuses these keys; a plan built around it (an older CRD) still renders the
    // operator's values.
    let mut p = plan_of(
        "  countries: [de]
  pod:
    env: [{name: AWS_REGION, value: from-pod}]
",
    )
    .with_env(&[
        ("AWS_REGION".to_string(), "from-installation".to_string()),
        ("OTHER".to_string(), "kept".to_string()),
    ]);
    p.products
        .pod
        .labels
        .insert("app.kubernetes.io/component".into(), "mine".into());
    p.products
        .pod
        .annotations
        .insert(ANNOTATION_CONFIG_HASH.into(), "mine".into());
    let d = w::deployment(&p, Component::Products);
    let meta = d
        .spec
        .as_ref()
        .expect("spec")
        .template
        .metadata
        .clone()
        .expect("meta");
    assert_eq!(meta.labels, Some(labels(Some("products"))));
    assert_ne!(
        meta.annotations.expect("annotations")[ANNOTATION_CONFIG_HASH],
        "mine"
    );
    // The installation's variable is replaced in place by the group's; each name once.
    assert_eq!(
        settings_env(&d),
        vec![env_var("AWS_REGION", "from-pod"), env_var("OTHER", "kept")]
    );
    // Probes and the security context are the operator's whatever the settings say.
    let bare = w::deployment(&default_plan(), Component::Products);
    assert_eq!(
        container(&d).security_context,
        container(&bare).security_context
    );
    assert_eq!(
        container(&d).readiness_probe,
        container(&bare).readiness_probe
    );
    assert_eq!(pod(&d).security_context, pod(&bare).security_context);
}

#[test]
fn config_map_carries_settings_without_flags_and_pods_read_them() {
    let p = plan_of(
        "  countries: [de]\n  products: {cache: {ttlSeconds: 30, staleSeconds: 5, maxBytes: 256Mi}, resources: {limits: {memory: 1Gi}}}\n  batch: {maxItems: 50}\n",
    );
    let cm = w::config_map(&p);
    assert_eq!(cm.metadata.name.as_deref(), Some("dach-config"));
    assert_eq!(cm.metadata.labels.as_ref(), Some(&labels(None)));
    let data = cm.data.clone().expect("data");
    let expect: BTreeMap<String, String> = [
        ("products.PRAPI_CACHE_TTL_SECONDS", "30"),
        ("products.PRAPI_CACHE_STALE_SECONDS", "5"),
        ("products.PRAPI_CACHE_MAX_BYTES", "268435456"),
        ("batch.PRAPI_MAX_ITEMS", "50"),
        ("batch.PRAPI_BALANCE_FACTOR", "1.25"),
        ("batch.PRAPI_HEDGE", "false"),
        ("batch.PRAPI_HEDGE_PERCENTILE", "0.95"),
        ("batch.PRAPI_HEDGE_BUDGET", "0.05"),
        ("updater.PRAPI_LISTEN", "0.0.0.0:8080"),
        ("updater.PRAPI_LOG", "info"),
        ("updater.PRAPI_LOG_FORMAT", "json"),
        ("products.PRAPI_LOG", "info"),
        ("products.PRAPI_LOG_FORMAT", "json"),
        ("batch.PRAPI_LOG", "info"),
        ("batch.PRAPI_LOG_FORMAT", "json"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(data, expect);
    // Every env var a container reads refers to a key that exists in this ConfigMap.
    for c in Component::ALL {
        let d = w::deployment(&p, c);
        let env = container(&d).env.clone().expect("env");
        assert!(!env.is_empty());
        for e in env {
            let r = e
                .value_from
                .and_then(|v| v.config_map_key_ref)
                .expect("from the ConfigMap");
            assert_eq!(r.name, "dach-config");
            assert!(data.contains_key(&r.key), "{} missing", r.key);
            assert_eq!(r.key, format!("{}.{}", c.as_str(), e.name));
        }
    }
}

#[test]
fn installation_env_follows_the_operators_own_in_every_container() {
    let env = vec![
        ("AWS_REGION".to_string(), "eu-central-1".to_string()),
        (
            "AWS_ENDPOINT_URL_DYNAMODB".to_string(),
            "http://dynamodb.local:8000".to_string(),
        ),
    ];
    let p = default_plan().with_env(&env);
    for c in Component::ALL {
        let d = w::deployment(&p, c);
        let all = container(&d).env.clone().expect("env");
        let (own, installation) = all.split_at(all.len() - env.len());
        assert!(!own.is_empty() && own.iter().all(|e| e.value_from.is_some()));
        let got: Vec<(String, Option<String>)> = installation
            .iter()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect();
        let want: Vec<(String, Option<String>)> = env
            .iter()
            .map(|(n, v)| (n.clone(), Some(v.clone())))
            .collect();
        assert_eq!(got, want, "{c:?}");
    }
    // Without any, the containers carry only the operator's variables.
    let bare = w::deployment(&default_plan(), Component::Products);
    assert!(
        container(&bare)
            .env
            .iter()
            .flatten()
            .all(|e| e.value_from.is_some())
    );
}

#[test]
fn pods_log_json_by_default_and_the_group_switches_format_and_filter() {
    let data = |p: &GroupPlan| w::config_map(p).data.expect("data");
    let d = data(&default_plan());
    for c in ["updater", "products", "batch"] {
        assert_eq!(d[&format!("{c}.PRAPI_LOG_FORMAT")], "json");
        assert_eq!(d[&format!("{c}.PRAPI_LOG")], "info");
    }
    let p = plan_of(
        "  countries: [de]\n  logs: {format: Text, filter: 'warn,prapi_dataplane=debug'}\n",
    );
    let d = data(&p);
    for c in ["updater", "products", "batch"] {
        assert_eq!(d[&format!("{c}.PRAPI_LOG_FORMAT")], "text");
        assert_eq!(d[&format!("{c}.PRAPI_LOG")], "warn,prapi_dataplane=debug");
    }
    // A filter the pods could not read is refused before anything is rendered.
    let err = validate::plan(
        &group("  countries: [de]\n  logs: {filter: 'info,=['}\n"),
        "i",
        "d",
    )
    .expect_err("bad filter");
    assert!(err.problems[0].starts_with("spec.logs.filter: "), "{err}");
}

#[test]
fn the_updater_sends_unparseable_messages_to_the_groups_dead_letter_topic() {
    assert!(!w::updater_args(&default_plan()).contains(&"--dead-letter-topic".to_string()));
    let p = plan_of("  countries: [de]\n  updater: {kafka: {deadLetterTopic: catalogue.dlq}}\n");
    let args = w::updater_args(&p);
    assert_eq!(
        args[args.len() - 2..],
        strings(&["--dead-letter-topic", "catalogue.dlq"])
    );
}

#[test]
fn one_balance_factor_drives_batch_and_hedging_is_off_until_enabled() {
    let data = |p: &GroupPlan| w::config_map(p).data.expect("data");
    // Unset: the installation's factor (the operator's --balance-factor).
    let d = data(&default_plan().with_default_balance_factor(1.5));
    assert_eq!(d["batch.PRAPI_BALANCE_FACTOR"], "1.5");
    assert_eq!(d["batch.PRAPI_HEDGE"], "false");
    // Set on the group: it wins, and the same value is what routing uses.
    let p = plan_of(
        "  countries: [de]\n  products: {balanceFactor: 2}\n  batch: {hedging: {enabled: true, percentile: 99, budgetPercent: 1}}\n",
    )
    .with_default_balance_factor(1.5);
    assert_eq!(p.balance_factor(), 2.0);
    let d = data(&p);
    assert_eq!(
        (
            d["batch.PRAPI_BALANCE_FACTOR"].as_str(),
            d["batch.PRAPI_HEDGE"].as_str(),
            d["batch.PRAPI_HEDGE_PERCENTILE"].as_str(),
            d["batch.PRAPI_HEDGE_BUDGET"].as_str()
        ),
        ("2", "true", "0.99", "0.01")
    );
    let routing = prapi_operator::routes::group_routing(&p, None, true, false, &BTreeMap::new());
    assert_eq!(routing.balance_factor, 2.0);
}

#[test]
fn served_by_header_is_turned_on_for_products_and_batch_only() {
    let on = default_plan().with_served_by_header(true);
    let off = default_plan();
    let var = "PRAPI_SERVED_BY_HEADER".to_string();
    for c in Component::ALL {
        let has = |p: &GroupPlan| {
            w::component_env(p, c)
                .into_iter()
                .find(|(k, _)| *k == var)
                .map(|(_, v)| v)
        };
        let want = (c != Component::Updater).then(|| "true".to_string());
        assert_eq!(has(&on), want, "{c:?} with --served-by-header");
        assert_eq!(has(&off), None, "{c:?} without it");
        // The ConfigMap carries it, so a change rolls the pods (config hash).
        if c != Component::Updater {
            assert_ne!(config_hash(&on, c), config_hash(&off, c), "{c:?}");
        } else {
            assert_eq!(config_hash(&on, c), config_hash(&off, c), "{c:?}");
        }
    }
}

#[test]
fn store_timeouts_reach_the_products_pods_only_when_set() {
    use prapi_operator::plan::StoreTimeouts;
    let env_of = |p: &GroupPlan, c: Component, name: &str| {
        w::component_env(p, c)
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    };
    let unset = default_plan();
    let both = default_plan().with_store_timeouts(StoreTimeouts {
        read_ms: Some(250),
        fallback_read_ms: Some(1000),
    });
    let fallback_only = default_plan().with_store_timeouts(StoreTimeouts {
        read_ms: None,
        fallback_read_ms: Some(700),
    });
    let read = "PRAPI_READ_TIMEOUT_MS";
    let fallback = "PRAPI_FALLBACK_READ_TIMEOUT_MS";
    // Unset: nothing rendered, the data plane's own defaults apply.
    assert_eq!(env_of(&unset, Component::Products, read), None);
    assert_eq!(env_of(&unset, Component::Products, fallback), None);
    assert_eq!(
        env_of(&both, Component::Products, read).as_deref(),
        Some("250")
    );
    assert_eq!(
        env_of(&both, Component::Products, fallback).as_deref(),
        Some("1000")
    );
    assert_eq!(env_of(&fallback_only, Component::Products, read), None);
    assert_eq!(
        env_of(&fallback_only, Component::Products, fallback).as_deref(),
        Some("700")
    );
    // Only products read the store; a change rolls them and nothing else.
    for c in [Component::Updater, Component::Batch] {
        assert_eq!(env_of(&both, c, read), None, "{c:?}");
        assert_eq!(config_hash(&both, c), config_hash(&unset, c), "{c:?}");
    }
    assert_ne!(
        config_hash(&both, Component::Products),
        config_hash(&unset, Component::Products)
    );
    // The installation flags parse into the same plan, and refuse zero.
    let cli = prapi_operator::cli::Cli::try_parse_from([
        "prapi-operator",
        "run",
        "--store-read-timeout-ms",
        "250",
        "--store-fallback-read-timeout-ms",
        "1000",
    ])
    .expect("parses");
    let prapi_operator::cli::Command::Run(args) = cli.command else {
        panic!("run")
    };
    assert_eq!(args.data_plane.apply(default_plan()), both);
    assert!(
        prapi_operator::cli::Cli::try_parse_from([
            "prapi-operator",
            "run",
            "--store-read-timeout-ms",
            "0"
        ])
        .is_err()
    );
}

fn config_hash(p: &GroupPlan, c: Component) -> String {
    w::deployment(p, c)
        .spec
        .and_then(|s| s.template.metadata)
        .and_then(|m| m.annotations)
        .and_then(|a| a.get(ANNOTATION_CONFIG_HASH).cloned())
        .expect("config hash")
}

#[test]
fn a_config_change_rolls_only_the_component_that_reads_it() {
    let a = default_plan();
    let b = plan_of("  countries: [de, AT]\n  products: {cache: {ttlSeconds: 90}}\n");
    assert_ne!(
        config_hash(&a, Component::Products),
        config_hash(&b, Component::Products)
    );
    assert_eq!(
        config_hash(&a, Component::Batch),
        config_hash(&b, Component::Batch)
    );
    assert_eq!(
        config_hash(&a, Component::Updater),
        config_hash(&b, Component::Updater)
    );
}

#[test]
fn services_and_headless_discovery_service() {
    let p = default_plan();
    for c in [Component::Products, Component::Batch] {
        let s = w::service(&p, c);
        assert_eq!(
            s.metadata.name.as_deref(),
            Some(format!("dach-{}", c.as_str()).as_str())
        );
        let spec = s.spec.expect("spec");
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        assert_eq!(spec.cluster_ip, None);
        assert_eq!(
            spec.selector
                .as_ref()
                .and_then(|s| s.get("app.kubernetes.io/component"))
                .map(String::as_str),
            Some(c.as_str())
        );
        assert_eq!(spec.ports.as_ref().map(|p| p[0].port), Some(8080));
    }
    let h = w::products_headless_service(&p);
    assert_eq!(h.metadata.name.as_deref(), Some("dach-products-headless"));
    let spec = h.spec.expect("spec");
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(
        spec.publish_not_ready_addresses, None,
        "default: ready pods only"
    );
    assert_eq!(
        spec.selector,
        w::service(&p, Component::Products)
            .spec
            .and_then(|s| s.selector)
    );
}

#[test]
fn disruption_budgets_take_one_pod_at_a_time() {
    let p = default_plan();
    for c in Component::ALL {
        let pdb = w::pod_disruption_budget(&p, c);
        let spec = pdb.spec.expect("spec");
        assert_eq!(
            spec.max_unavailable,
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
        );
        assert_eq!(spec.selector, Some(meta::pod_selector(&p, c)));
        assert_eq!(
            spec.unhealthy_pod_eviction_policy.as_deref(),
            Some("AlwaysAllow")
        );
    }
}

#[test]
fn batch_may_read_endpointslices_and_nothing_else() {
    let p = default_plan();
    for c in Component::ALL {
        let sa = w::service_account(&p, c);
        let name = format!("dach-{}", c.as_str());
        assert_eq!(sa.metadata.name.as_deref(), Some(name.as_str()));
        assert_eq!(sa.metadata.labels.as_ref(), Some(&labels(Some(c.as_str()))));
    }
    // A binding to the chart's fixed ClusterRole, not a Role of the operator's making.
    let rb = w::endpoint_reader_binding(&p);
    assert_eq!(rb.metadata.namespace.as_deref(), Some("shop"));
    assert_eq!(
        (rb.role_ref.kind.as_str(), rb.role_ref.name.as_str()),
        ("ClusterRole", "prapi-endpointslice-reader")
    );
    assert_eq!(rb.role_ref.name, w::ENDPOINT_READER_CLUSTER_ROLE);
    let subjects = rb.subjects.expect("subjects");
    assert_eq!(subjects.len(), 1);
    assert_eq!(
        (
            subjects[0].kind.as_str(),
            subjects[0].name.as_str(),
            subjects[0].namespace.as_deref()
        ),
        ("ServiceAccount", "dach-batch", Some("shop"))
    );
    // The chart's ClusterRole is exactly EndpointSlice reads.
    let chart = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../charts/prapi-operator/templates/endpointslice-reader.yaml"
    ))
    .expect("chart template");
    let body: String = chart
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.contains("{{"))
        .map(|l| format!("{l}\n"))
        .collect();
    let role: serde_json::Value = serde_norway::from_str(&body).expect("YAML");
    assert_eq!(role["metadata"]["name"], w::ENDPOINT_READER_CLUSTER_ROLE);
    assert_eq!(
        role["rules"],
        serde_json::json!([{"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]}])
    );
}

/// Who may reach each component: ops ports from anywhere, the API ports from the group's batch
/// pods (products) and the ingress namespaces, nothing else; and no policies when turned off.
#[test]
fn network_policies_admit_the_ingress_and_batch_only() {
    use prapi_operator::plan::NetworkPolicyPlan;
    use prapi_operator::render::network::network_policy;
    let p = default_plan();
    let rules = |c: Component, np: &NetworkPolicyPlan| {
        let policy = network_policy(&p, c, np);
        let name = format!("dach-{}", c.as_str());
        assert_eq!(policy.metadata.name.as_deref(), Some(name.as_str()));
        let spec = serde_json::to_value(policy.spec.expect("spec")).expect("json");
        assert_eq!(
            spec["podSelector"],
            serde_json::to_value(meta::pod_selector(&p, c)).expect("json")
        );
        assert_eq!(spec["policyTypes"], serde_json::json!(["Ingress"]));
        spec["ingress"].clone()
    };
    let any = |port: i32| serde_json::json!({"ports": [{"port": port, "protocol": "TCP"}]});
    let batch_pods = serde_json::json!({"podSelector": serde_json::to_value(meta::pod_selector(&p, Component::Batch)).expect("json")});
    let skipper = serde_json::json!({"namespaceSelector": {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["skipper", "gw"]}
    ]}});
    let from = |peers: serde_json::Value| serde_json::json!({"ports": [{"port": 8080, "protocol": "TCP"}], "from": peers});
    let ingress = NetworkPolicyPlan {
        ingress_namespaces: vec!["skipper".into(), "gw".into()],
    };
    assert_eq!(
        rules(Component::Updater, &ingress),
        serde_json::json!([any(8080)])
    );
    assert_eq!(
        rules(Component::Products, &ingress),
        serde_json::json!([any(9090), from(serde_json::json!([batch_pods, skipper]))])
    );
    assert_eq!(
        rules(Component::Batch, &ingress),
        serde_json::json!([any(9090), from(serde_json::json!([skipper]))])
    );
    // Without ingress namespaces the API ports are open, every other port still closed.
    let open = NetworkPolicyPlan::default();
    assert_eq!(
        rules(Component::Products, &open),
        serde_json::json!([any(9090), any(8080)])
    );
    assert_eq!(
        rules(Component::Batch, &open),
        serde_json::json!([any(9090), any(8080)])
    );
    // Turned off: none rendered.
    let off = default_plan().with_network_policy(None);
    let kinds: Vec<ChildKind> = render(
        &off,
        RenderOptions {
            updater_autoscaler: UpdaterAutoscaler::Keda,
            pod_monitor: false,
        },
    )
    .expect("renders")
    .into_iter()
    .map(|c| c.kind)
    .collect();
    assert!(!kinds.contains(&ChildKind::NetworkPolicy));
}

#[test]
fn cpu_autoscalers_for_products_and_batch() {
    let p = plan_of(
        "  countries: [de]\n  products: {replicas: {min: 3, max: 30}, targetCPUUtilization: 60}\n  batch: {replicas: {min: 4, max: 8}, targetCPUUtilization: 80}\n",
    );
    for (c, min, max, target) in [
        (Component::Products, 3, 30, 60),
        (Component::Batch, 4, 8, 80),
    ] {
        let hpa = autoscaling::cpu_hpa(&p, c);
        let spec = hpa.spec.expect("spec");
        assert_eq!(spec.scale_target_ref.kind, "Deployment");
        assert_eq!(spec.scale_target_ref.name, format!("dach-{}", c.as_str()));
        assert_eq!((spec.min_replicas, spec.max_replicas), (Some(min), max));
        let m = &spec.metrics.expect("metrics")[0];
        assert_eq!(m.type_, "Resource");
        let r = m.resource.as_ref().expect("resource");
        assert_eq!(r.name, "cpu");
        assert_eq!(
            (r.target.type_.as_str(), r.target.average_utilization),
            ("Utilization", Some(target))
        );
    }
}

#[test]
fn updater_hpa_scales_on_the_external_lag_metric() {
    let p = plan_of("  countries: [de]\n  updater: {lagThreshold: 2000, maxReplicas: 6}\n");
    let spec = autoscaling::updater_lag_hpa(&p).spec.expect("spec");
    assert_eq!(spec.scale_target_ref.name, "dach-updater");
    assert_eq!((spec.min_replicas, spec.max_replicas), (Some(1), 6));
    let m = &spec.metrics.expect("metrics")[0];
    assert_eq!(m.type_, "External");
    let e = m.external.as_ref().expect("external");
    assert_eq!(e.metric.name, "prapi_updater_consumer_lag");
    assert_eq!(
        e.metric
            .selector
            .as_ref()
            .and_then(|s| s.match_labels.clone()),
        Some(BTreeMap::from([(
            "app_kubernetes_io_instance".to_string(),
            "dach".to_string()
        )]))
    );
    assert_eq!(e.target.type_, "AverageValue");
    assert_eq!(
        e.target.average_value.as_ref().map(|q| q.0.as_str()),
        Some("2k"),
        "canonical, as the API server stores it"
    );
}

#[test]
fn updater_scale_down_window_reaches_the_hpa_and_the_scaled_object() {
    let window = |p: &GroupPlan| {
        let hpa = autoscaling::updater_lag_hpa(p)
            .spec
            .and_then(|s| s.behavior?.scale_down?.stabilization_window_seconds);
        let keda = autoscaling::updater_scaled_object(p)["spec"]["advanced"]
            ["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
            ["stabilizationWindowSeconds"]
            .as_i64();
        (hpa, keda)
    };
    // Kubernetes' own default unless the group sets one.
    assert_eq!(window(&default_plan()), (Some(300), Some(300)));
    let p = plan_of("  countries: [de]\n  updater: {scaleDownStabilizationSeconds: 30}\n");
    assert_eq!(window(&p), (Some(30), Some(30)));
    let p = plan_of("  countries: [de]\n  updater: {scaleDownStabilizationSeconds: 0}\n");
    assert_eq!(window(&p), (Some(0), Some(0)));
}

#[test]
fn updater_ceiling_defaults_to_partitions() {
    let p = plan_of("  countries: [de]\n  updater: {kafka: {partitions: 7}}\n");
    assert_eq!(p.updater.max_replicas, 7);
    assert_eq!(
        autoscaling::updater_lag_hpa(&p)
            .spec
            .map(|s| s.max_replicas),
        Some(7)
    );
    assert_eq!(
        autoscaling::updater_scaled_object(&p)["spec"]["maxReplicaCount"],
        json!(7)
    );
}

#[test]
fn keda_scaled_object_has_one_kafka_trigger_per_topic() {
    let p = plan_of(
        "  countries: [de]\n  updater: {lagThreshold: 1234, maxReplicas: 3, kafka: {bootstrapServers: 'k:9092', consumerGroup: cg, partitions: 12}}\n",
    );
    let so = autoscaling::updater_scaled_object(&p);
    assert_eq!(so["apiVersion"], json!("keda.sh/v1alpha1"));
    assert_eq!(so["kind"], json!("ScaledObject"));
    assert_eq!(so["metadata"]["name"], json!("dach-updater"));
    assert_eq!(so["metadata"]["ownerReferences"][0]["uid"], json!(UID));
    assert_eq!(
        so["spec"]["scaleTargetRef"],
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "dach-updater"})
    );
    assert_eq!(so["spec"]["minReplicaCount"], json!(1));
    assert_eq!(so["spec"]["maxReplicaCount"], json!(3));
    let triggers = so["spec"]["triggers"].as_array().expect("triggers");
    let topics: Vec<&Value> = triggers.iter().map(|t| &t["metadata"]["topic"]).collect();
    assert_eq!(topics, vec![&json!("products"), &json!("offers")]);
    for t in triggers {
        assert_eq!(t["type"], json!("kafka"));
        let m = &t["metadata"];
        assert_eq!(m["bootstrapServers"], json!("k:9092"));
        assert_eq!(m["consumerGroup"], json!("cg"));
        assert_eq!(m["lagThreshold"], json!("1234"));
        assert_eq!(m["allowIdleConsumers"], json!("false"));
    }
}

fn kinds_and_names(plan: &GroupPlan, opts: UpdaterAutoscaler) -> Vec<(ChildKind, String)> {
    render(
        plan,
        RenderOptions {
            updater_autoscaler: opts,
            pod_monitor: false,
        },
    )
    .expect("renders")
    .into_iter()
    .map(|c| (c.kind, c.name))
    .collect()
}

#[test]
fn render_lists_every_child_in_apply_order() {
    use ChildKind::*;
    let s = |k, n: &str| (k, n.to_string());
    let common = vec![
        s(ServiceAccount, "dach-updater"),
        s(ServiceAccount, "dach-products"),
        s(ServiceAccount, "dach-batch"),
        s(RoleBinding, "dach-endpointslice-reader"),
        s(ConfigMap, "dach-config"),
        s(Service, "dach-products"),
        s(Service, "dach-batch"),
        s(Service, "dach-products-headless"),
        s(Deployment, "dach-updater"),
        s(Deployment, "dach-products"),
        s(Deployment, "dach-batch"),
        s(PodDisruptionBudget, "dach-updater"),
        s(PodDisruptionBudget, "dach-products"),
        s(PodDisruptionBudget, "dach-batch"),
        s(NetworkPolicy, "dach-updater"),
        s(NetworkPolicy, "dach-products"),
        s(NetworkPolicy, "dach-batch"),
        s(HorizontalPodAutoscaler, "dach-products"),
        s(HorizontalPodAutoscaler, "dach-batch"),
    ];
    let mut hpa = common.clone();
    hpa.push(s(HorizontalPodAutoscaler, "dach-updater"));
    let mut keda = common;
    keda.push(s(ScaledObject, "dach-updater"));
    assert_eq!(
        kinds_and_names(&default_plan(), UpdaterAutoscaler::ExternalMetricHpa),
        hpa
    );
    assert_eq!(
        kinds_and_names(&default_plan(), UpdaterAutoscaler::Keda),
        keda
    );
}

#[test]
fn every_child_has_type_meta_labels_owner_and_its_hash() {
    let children = render(
        &default_plan(),
        RenderOptions {
            updater_autoscaler: UpdaterAutoscaler::Keda,
            pod_monitor: false,
        },
    )
    .expect("renders");
    for c in children {
        let o = &c.object;
        let gvk = c.kind.gvk();
        let api_version = if gvk.group.is_empty() {
            gvk.version.clone()
        } else {
            format!("{}/{}", gvk.group, gvk.version)
        };
        assert_eq!(o["apiVersion"], json!(api_version), "{:?}", c.kind);
        assert_eq!(o["kind"], json!(gvk.kind));
        assert_eq!(o["metadata"]["name"], json!(c.name));
        assert_eq!(o["metadata"]["namespace"], json!("shop"));
        assert_eq!(
            o["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            json!("prapi-operator")
        );
        assert_eq!(
            o["metadata"]["labels"]["app.kubernetes.io/instance"],
            json!("dach")
        );
        assert_eq!(o["metadata"]["ownerReferences"][0]["uid"], json!(UID));
        assert_eq!(
            o["metadata"]["annotations"][ANNOTATION_APPLIED_HASH],
            json!(c.hash)
        );
        // The hash covers the object without its own annotation.
        let mut without = o.clone();
        let ann = without["metadata"]["annotations"]
            .as_object_mut()
            .expect("annotations");
        ann.remove(ANNOTATION_APPLIED_HASH);
        if ann.is_empty() {
            without["metadata"]
                .as_object_mut()
                .expect("meta")
                .remove("annotations");
        }
        assert_eq!(
            meta::stable_hash(&serde_json::to_vec(&without).expect("json")),
            c.hash
        );
    }
}

#[test]
fn offline_render_has_no_owner_reference_without_a_uid() {
    let mg = offline::parse_manifests(
        "apiVersion: prapi.dev/v1alpha1\nkind: MarketGroup\nmetadata: {name: g}\nspec: {countries: [de]}\n",
    )
    .expect("parses")
    .remove(0);
    let p = validate::plan(&mg, "img", "team-a").expect("valid");
    let children = render(
        &p,
        RenderOptions {
            updater_autoscaler: UpdaterAutoscaler::ExternalMetricHpa,
            pod_monitor: false,
        },
    )
    .expect("renders");
    for c in children {
        assert!(c.object["metadata"].get("ownerReferences").is_none());
        assert_eq!(c.object["metadata"]["namespace"], json!("team-a"));
    }
}

#[test]
fn render_manifests_rejects_other_kinds_and_empty_files() {
    let err = offline::render_manifests(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
        "d",
        "i",
        &Default::default(),
        UpdaterAutoscaler::Keda,
    )
    .expect_err("not a MarketGroup");
    assert!(
        err.to_string()
            .contains("expected apiVersion prapi.dev/v1alpha1, kind MarketGroup")
    );
    assert!(matches!(
        offline::render_manifests("", "d", "i", &Default::default(), UpdaterAutoscaler::Keda),
        Err(offline::OfflineError::Empty)
    ));
    let err = offline::render_manifests(
        "apiVersion: prapi.dev/v1alpha1\nkind: MarketGroup\nmetadata: {name: x}\nspec: {}\n",
        "d",
        "i",
        &Default::default(),
        UpdaterAutoscaler::Keda,
    )
    .expect_err("countries is required");
    assert!(err.to_string().contains("countries"), "{err}");
    let two = "apiVersion: prapi.dev/v1alpha1\nkind: MarketGroup\nmetadata: {name: a}\nspec: {countries: [de]}\n---\napiVersion: prapi.dev/v1alpha1\nkind: MarketGroup\nmetadata: {name: b}\nspec: {countries: [at]}\n";
    let out =
        offline::render_manifests(two, "d", "i", &Default::default(), UpdaterAutoscaler::Keda)
            .expect("two groups");
    assert!(out.contains("name: a-products") && out.contains("name: b-products"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Rendering is deterministic, and the hash of a child changes exactly when its object does.
    #[test]
    fn hashes_track_content(weight in 0i32..=100, ttl in 2i32..600, min in 1i32..5, extra in 0i32..20) {
        let spec = format!(
            "  countries: [de]\n  traffic: {{weight: {weight}}}\n  products: {{replicas: {{min: {min}, max: {}}}, cache: {{ttlSeconds: {ttl}, staleSeconds: 1}}}}\n",
            min + extra
        );
        let p = plan_of(&spec);
        let opts = RenderOptions { updater_autoscaler: UpdaterAutoscaler::ExternalMetricHpa, pod_monitor: false };
        let a = render(&p, opts).expect("renders");
        let b = render(&p, opts).expect("renders");
        prop_assert_eq!(&a, &b);
        let base = render(&default_plan(), opts).expect("renders");
        for (x, y) in a.iter().zip(base.iter()) {
            prop_assert_eq!(x.kind, y.kind);
            let same_object = {
                let strip = |v: &Value| {
                    let mut v = v.clone();
                    v["metadata"]["annotations"].as_object_mut().map(|a| a.remove(ANNOTATION_APPLIED_HASH));
                    v
                };
                strip(&x.object) == strip(&y.object)
            };
            prop_assert_eq!(x.hash == y.hash, same_object, "{:?} {}", x.kind, x.name);
        }
    }
}

/// The PodMonitor's endpoints that scrape `component`'s pods: the ones whose relabelling keeps
/// them (no `keep` rule, or one whose regex is the component).
fn endpoints_for(pm: &Value, component: Component) -> Vec<&Value> {
    pm["spec"]["podMetricsEndpoints"]
        .as_array()
        .expect("podMetricsEndpoints")
        .iter()
        .filter(|e| {
            e["relabelings"].as_array().into_iter().flatten().all(|r| {
                r["action"] != json!("keep")
                    || (r["sourceLabels"]
                        == json!(["__meta_kubernetes_pod_label_app_kubernetes_io_component"])
                        && r["regex"] == json!(component.as_str()))
            })
        })
        .collect()
}

#[test]
fn the_pod_monitor_scrapes_every_component_on_the_port_that_serves_its_metrics() {
    let p = default_plan();
    let children = render(
        &p,
        RenderOptions {
            updater_autoscaler: UpdaterAutoscaler::ExternalMetricHpa,
            pod_monitor: true,
        },
    )
    .expect("renders");
    let pms: Vec<&prapi_operator::render::Child> = children
        .iter()
        .filter(|c| c.kind == ChildKind::PodMonitor)
        .collect();
    assert_eq!(pms.len(), 1);
    let pm = &pms[0].object;
    assert_eq!(pms[0].name, "dach");
    assert_eq!(pm["apiVersion"], json!("monitoring.coreos.com/v1"));
    assert_eq!(pm["kind"], json!("PodMonitor"));
    assert_eq!(pm["metadata"]["namespace"], json!("shop"));
    assert_eq!(pm["metadata"]["ownerReferences"][0]["uid"], json!(UID));
    assert_eq!(
        pm["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        json!("prapi-operator")
    );
    // The alerts and the dashboard group by these target labels.
    assert_eq!(
        pm["spec"]["podTargetLabels"],
        json!(["app.kubernetes.io/instance", "app.kubernetes.io/component"])
    );
    let selector: BTreeMap<String, String> =
        serde_json::from_value(pm["spec"]["selector"]["matchLabels"].clone()).expect("selector");
    for c in Component::ALL {
        let d = w::deployment(&p, c);
        let template = d.spec.expect("spec").template;
        let pod_labels = template.metadata.expect("meta").labels.expect("labels");
        for (k, v) in &selector {
            assert_eq!(pod_labels.get(k), Some(v), "{c:?} pods carry {k}");
        }
        let container = &template.spec.expect("pod spec").containers[0];
        let ports: Vec<String> = container
            .ports
            .iter()
            .flatten()
            .filter_map(|p| p.name.clone())
            .collect();
        // Exactly one endpoint reaches each component, on a port its container has, at the
        // path its ops router serves.
        let reaching: Vec<&Value> = endpoints_for(pm, c)
            .into_iter()
            .filter(|e| ports.iter().any(|p| e["port"] == json!(p)))
            .collect();
        assert_eq!(
            reaching.len(),
            1,
            "{c:?}: {reaching:?} over ports {ports:?}"
        );
        let want_port = match c {
            Component::Updater => w::HTTP_PORT_NAME,
            Component::Products | Component::Batch => w::OPS_PORT_NAME,
        };
        assert_eq!(reaching[0]["port"], json!(want_port), "{c:?}");
        assert_eq!(reaching[0]["path"], json!("/metrics"));
    }
    // Off: no PodMonitor, everything else the same.
    let without: Vec<(ChildKind, String)> =
        kinds_and_names(&default_plan(), UpdaterAutoscaler::ExternalMetricHpa);
    let with: Vec<(ChildKind, String)> = children
        .iter()
        .filter(|c| c.kind != ChildKind::PodMonitor)
        .map(|c| (c.kind, c.name.clone()))
        .collect();
    assert_eq!(with, without);
}

/// A group whose updater connects with the Kafka client Secret `kafka-client` holding `pairs`.
fn secured_plan(pairs: &[(&str, &str)]) -> GroupPlan {
    let secret = prapi_common::kafka_client::KafkaClientSecret::parse(
        pairs.iter().map(|(k, v)| (*k, v.as_bytes())),
    )
    .expect("a valid Secret");
    plan_of("  countries: [de]\n  updater: {kafka: {clientSecretName: kafka-client}}\n")
        .with_kafka_client(Some(prapi_operator::plan::KafkaClientPlan {
            secret_name: "kafka-client".into(),
            resource_version: "4711".into(),
            secret,
        }))
}

const PEM_CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
const PEM_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n";
const SASL_SCRAM_MTLS: [(&str, &str); 8] = [
    ("security.protocol", "SASL_SSL"),
    ("sasl.mechanism", "SCRAM-SHA-512"),
    ("sasl.username", "kafka-user-1"),
    ("sasl.password", "hunter2"),
    ("ca.crt", PEM_CERT),
    ("tls.crt", PEM_CERT),
    ("tls.key", PEM_KEY),
    ("tls.key.password", "keypass"),
];

#[test]
fn the_kafka_client_secret_is_mounted_into_the_updater_only_and_named_by_its_directory() {
    use k8s_openapi::api::core::v1::{SecretVolumeSource, Volume, VolumeMount};
    let p = secured_plan(&SASL_SCRAM_MTLS);
    let args = w::updater_args(&p);
    assert_eq!(
        args[args.len() - 2..],
        strings(&["--kafka-client-secret-dir", "/etc/prapi/kafka-client"])
    );
    let d = w::deployment(&p, Component::Updater);
    assert_eq!(
        pod(&d).volumes.clone().expect("volumes"),
        vec![
            Volume {
                name: "tmp".into(),
                empty_dir: Some(Default::default()),
                ..Volume::default()
            },
            Volume {
                name: "kafka-client".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some("kafka-client".into()),
                    default_mode: Some(0o440),
                    optional: Some(false),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            },
        ]
    );
    assert_eq!(
        container(&d).volume_mounts.clone().expect("mounts"),
        vec![
            VolumeMount {
                name: "tmp".into(),
                mount_path: "/tmp".into(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "kafka-client".into(),
                mount_path: "/etc/prapi/kafka-client".into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ]
    );
    let annotations = d
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.clone())
        .expect("pod annotations");
    assert_eq!(
        annotations.get(w::ANNOTATION_KAFKA_CLIENT_VERSION),
        Some(&"4711".to_string())
    );
    // Products and batch do not talk to Kafka: nothing of the Secret reaches them.
    for c in [Component::Products, Component::Batch] {
        let d = w::deployment(&p, c);
        assert_eq!(pod(&d).volumes.as_ref().map(Vec::len), Some(1), "{c:?}");
        assert_eq!(container(&d).volume_mounts.as_ref().map(Vec::len), Some(1));
        assert!(!w::args(&p, c).iter().any(|a| a.contains("kafka-client")));
        let pod_annotations = d
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.clone())
            .unwrap_or_default();
        assert!(!pod_annotations.contains_key(w::ANNOTATION_KAFKA_CLIENT_VERSION));
    }
    // A changed Secret changes the updater's pod template (it restarts with the new settings).
    let mut changed = p.clone();
    if let Some(k) = changed.updater.kafka_client.as_mut() {
        k.resource_version = "4712".into();
    }
    assert_ne!(
        w::deployment(&changed, Component::Updater),
        w::deployment(&p, Component::Updater)
    );
    // No value of the Secret is in any object, the command lines, the variables or the ConfigMap.
    let all = render(
        &p,
        RenderOptions {
            updater_autoscaler: UpdaterAutoscaler::Keda,
            pod_monitor: false,
        },
    )
    .expect("renders");
    let text = serde_json::to_string(&all.iter().map(|c| &c.object).collect::<Vec<_>>())
        .expect("serialize");
    for secret in ["hunter2", "keypass", "MIIB", "MIGH", "kafka-user-1"] {
        assert!(!text.contains(secret), "{secret} is rendered");
    }
}

#[test]
fn without_a_kafka_client_secret_the_updater_has_no_secret_volume_flag_or_annotation() {
    let p = default_plan();
    let d = w::deployment(&p, Component::Updater);
    assert_eq!(pod(&d).volumes.as_ref().map(Vec::len), Some(1));
    assert!(
        !w::updater_args(&p)
            .iter()
            .any(|a| a == "--kafka-client-secret-dir")
    );
    assert!(autoscaling::updater_trigger_authentication(&p).is_none());
    let so = autoscaling::updater_scaled_object(&p);
    for t in so["spec"]["triggers"].as_array().expect("triggers") {
        assert!(t.get("authenticationRef").is_none());
        assert!(t["metadata"].get("sasl").is_none() && t["metadata"].get("tls").is_none());
    }
}

#[test]
fn keda_triggers_carry_sasl_and_tls_and_reference_a_trigger_authentication_of_the_secrets_keys() {
    // (Secret, the triggers' sasl and tls, the TriggerAuthentication's parameter → key).
    type Pairs = Vec<(&'static str, &'static str)>;
    let cases: Vec<(Pairs, Option<&str>, Option<&str>, Pairs)> = vec![
        (vec![("security.protocol", "PLAINTEXT")], None, None, vec![]),
        (
            vec![("security.protocol", "SSL")],
            None,
            Some("enable"),
            vec![],
        ),
        (
            vec![("security.protocol", "SSL"), ("ca.crt", PEM_CERT)],
            None,
            Some("enable"),
            vec![("ca", "ca.crt")],
        ),
        (
            vec![
                ("security.protocol", "SSL"),
                ("ca.crt", PEM_CERT),
                ("tls.crt", PEM_CERT),
                ("tls.key", PEM_KEY),
            ],
            None,
            Some("enable"),
            vec![("ca", "ca.crt"), ("cert", "tls.crt"), ("key", "tls.key")],
        ),
        (
            vec![
                ("security.protocol", "SASL_PLAINTEXT"),
                ("sasl.mechanism", "PLAIN"),
                ("sasl.username", "u"),
                ("sasl.password", "p"),
            ],
            Some("plaintext"),
            None,
            vec![("username", "sasl.username"), ("password", "sasl.password")],
        ),
        (
            vec![
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", "SCRAM-SHA-256"),
                ("sasl.username", "u"),
                ("sasl.password", "p"),
            ],
            Some("scram_sha256"),
            Some("enable"),
            vec![("username", "sasl.username"), ("password", "sasl.password")],
        ),
        (
            SASL_SCRAM_MTLS.to_vec(),
            Some("scram_sha512"),
            Some("enable"),
            vec![
                ("username", "sasl.username"),
                ("password", "sasl.password"),
                ("ca", "ca.crt"),
                ("cert", "tls.crt"),
                ("key", "tls.key"),
                ("keyPassword", "tls.key.password"),
            ],
        ),
    ];
    for (pairs, sasl, tls, refs) in cases {
        let p = secured_plan(&pairs);
        let so = autoscaling::updater_scaled_object(&p);
        let triggers = so["spec"]["triggers"].as_array().expect("triggers");
        assert_eq!(triggers.len(), 2);
        for t in triggers {
            let m = &t["metadata"];
            assert_eq!(m.get("sasl"), sasl.map(|s| json!(s)).as_ref(), "{pairs:?}");
            assert_eq!(m.get("tls"), tls.map(|s| json!(s)).as_ref(), "{pairs:?}");
            let auth_ref = (!refs.is_empty()).then(|| json!({"name": "dach-updater"}));
            assert_eq!(t.get("authenticationRef"), auth_ref.as_ref(), "{pairs:?}");
        }
        let ta = autoscaling::updater_trigger_authentication(&p);
        if refs.is_empty() {
            assert!(ta.is_none(), "{pairs:?}");
            continue;
        }
        let ta = ta.expect("a TriggerAuthentication");
        assert_eq!(ta["apiVersion"], json!("keda.sh/v1alpha1"));
        assert_eq!(ta["kind"], json!("TriggerAuthentication"));
        assert_eq!(ta["metadata"]["name"], json!("dach-updater"));
        assert_eq!(ta["metadata"]["namespace"], json!("shop"));
        assert_eq!(ta["metadata"]["labels"], json!(labels(Some("updater"))));
        assert_eq!(ta["metadata"]["ownerReferences"][0]["uid"], json!(UID));
        let want: Vec<Value> = refs
            .iter()
            .map(|(param, key)| json!({"parameter": param, "name": "kafka-client", "key": key}))
            .collect();
        assert_eq!(ta["spec"], json!({"secretTargetRef": want}), "{pairs:?}");
    }
}

#[test]
fn the_trigger_authentication_is_rendered_before_the_scaled_object_and_only_for_keda() {
    let p = secured_plan(&SASL_SCRAM_MTLS);
    let kinds = |opts| {
        let mut all = kinds_and_names(&p, opts);
        all.reverse();
        all.truncate(2);
        all
    };
    assert_eq!(
        kinds(UpdaterAutoscaler::Keda),
        vec![
            (ChildKind::ScaledObject, "dach-updater".to_string()),
            (ChildKind::TriggerAuthentication, "dach-updater".to_string()),
        ]
    );
    assert_eq!(
        kinds(UpdaterAutoscaler::ExternalMetricHpa)[0],
        (
            ChildKind::HorizontalPodAutoscaler,
            "dach-updater".to_string()
        )
    );
    assert!(
        !kinds(UpdaterAutoscaler::ExternalMetricHpa)
            .iter()
            .any(|(k, _)| *k == ChildKind::TriggerAuthentication)
    );
    assert!(ChildKind::TriggerAuthentication.keda());
    assert!(!ChildKind::watched().any(|k| k == ChildKind::TriggerAuthentication));
}

#[test]
fn offline_render_refuses_a_group_that_names_a_kafka_client_secret() {
    let text = "apiVersion: prapi.dev/v1alpha1\nkind: MarketGroup\nmetadata:\n  name: dach\nspec:\n  countries: [de]\n  updater: {kafka: {clientSecretName: kafka-client}}\n";
    let err = offline::render_manifests(
        text,
        "shop",
        "prapi:test",
        &Default::default(),
        UpdaterAutoscaler::Keda,
    )
    .expect_err("refused");
    assert!(
        err.to_string()
            .starts_with("document 1 (dach) names Kafka client Secret kafka-client:"),
        "{err}"
    );
}
