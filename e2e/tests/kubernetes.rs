//! Kubernetes smoke tests: the control plane schedules and runs workloads on
//! kwok's fake nodes, garbage-collects owned objects and validates CRDs with CEL.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, ResourceExt as _};
use prapi_e2e::kit::{PATIENCE, TestNamespace, eventually};
use prapi_e2e::{Part, TestEnv, unique_name};
use serde_json::json;

/// A namespace of the test's own, usable once its default service account exists; deleted when
/// dropped.
async fn namespace(env: &TestEnv, client: &Client) -> TestNamespace {
    let ns = TestNamespace::create(env, client, "smoke").await;
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    eventually("default service account", || async {
        sas.get_opt("default").await.expect("get service account")
    })
    .await;
    ns
}

fn is_available(d: &Deployment, replicas: i32) -> bool {
    let Some(status) = &d.status else {
        return false;
    };
    let available = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Available" && c.status == "True");
    available
        && status.available_replicas == Some(replicas)
        && status.updated_replicas == Some(replicas)
}

fn pod_is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test]
async fn deployment_becomes_available_on_kwok_nodes_and_is_garbage_collected() {
    let Some(env) = TestEnv::get_for(&[Part::Kubernetes]) else {
        return;
    };
    let client = env.kube_client().await;
    let ns = namespace(&env, &client).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);

    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "registry.invalid/web:1"}]}
            }
        }
    }))
    .expect("deployment");
    let created = deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create deployment");
    let uid = created.uid().expect("uid");

    tokio::time::timeout(
        PATIENCE,
        await_condition(deployments.clone(), "web", |d: Option<&Deployment>| {
            d.is_some_and(|d| is_available(d, 3))
        }),
    )
    .await
    .expect("the deployment becomes Available with 3 replicas")
    .expect("watch the deployment");

    let selector = ListParams::default().labels("app=web");
    let listed = pods.list(&selector).await.expect("list pods");
    assert_eq!(listed.items.len(), 3);
    let nodes = env.kwok_nodes();
    for pod in &listed.items {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        assert!(
            node.as_ref().is_some_and(|n| nodes.contains(n)),
            "{} runs on a kwok node, not {node:?}",
            pod.name_any()
        );
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        assert_eq!(phase, Some("Running"), "{}", pod.name_any());
        assert!(pod_is_ready(pod), "{} is Ready", pod.name_any());
    }
    let rs = replica_sets
        .list(&selector)
        .await
        .expect("list replica sets");
    assert_eq!(rs.items.len(), 1);
    let owner = rs.items[0].owner_references();
    assert!(
        owner
            .iter()
            .any(|o| o.uid == uid && o.controller == Some(true)),
        "the ReplicaSet is owned by the Deployment: {owner:?}"
    );

    deployments
        .delete("web", &DeleteParams::background())
        .await
        .expect("delete deployment");
    tokio::time::timeout(
        PATIENCE,
        await_condition(deployments.clone(), "web", conditions::is_deleted(&uid)),
    )
    .await
    .expect("the deployment is deleted")
    .expect("watch the deployment");
    eventually("ReplicaSet and Pods garbage-collected", || async {
        let rs = replica_sets
            .list(&selector)
            .await
            .expect("list replica sets");
        let ps = pods.list(&selector).await.expect("list pods");
        (rs.items.is_empty() && ps.items.is_empty()).then_some(())
    })
    .await;

    drop(ns);
}

#[tokio::test]
async fn crd_cel_rule_rejects_an_invalid_object_with_the_rule_message() {
    let Some(env) = TestEnv::get_for(&[Part::Kubernetes]) else {
        return;
    };
    let client = env.kube_client().await;
    let group = format!("{}.e2e.prapi.test", unique_name("cel"));
    let crd_name = format!("ranges.{group}");
    let message = "spec.min must not be greater than spec.max";
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": crd_name},
        "spec": {
            "group": group,
            "names": {"kind": "Range", "plural": "ranges", "singular": "range", "listKind": "RangeList"},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {
                        "type": "object",
                        "required": ["min", "max"],
                        "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
                        "x-kubernetes-validations": [{"rule": "self.min <= self.max", "message": message}]
                    }}
                }}
            }]
        }
    }))
    .expect("crd");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &crd)
        .await
        .expect("create CRD");
    tokio::time::timeout(
        PATIENCE,
        await_condition(crds.clone(), &crd_name, conditions::is_crd_established()),
    )
    .await
    .expect("the CRD becomes Established")
    .expect("watch the CRD");

    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(&group, "v1", "Range"), "ranges");
    let ranges: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &resource);
    let object = |name: &str, min: i64, max: i64| {
        let mut o = DynamicObject::new(name, &resource);
        o.data = json!({"spec": {"min": min, "max": max}});
        o
    };

    // Established can precede the resource being served by a moment.
    let valid = object("valid", 1, 2);
    eventually("the new resource is served", || async {
        match ranges.create(&PostParams::default(), &valid).await {
            Ok(_) => Some(()),
            Err(kube::Error::Api(e)) if e.code == 404 => None,
            Err(e) => panic!("creating a valid object: {e}"),
        }
    })
    .await;

    match ranges
        .create(&PostParams::default(), &object("invalid", 3, 1))
        .await
    {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 422, "{e:?}");
            assert!(e.message.contains(message), "the rule's message: {e:?}");
        }
        other => panic!("an object breaking the CEL rule must be rejected, got {other:?}"),
    }
    assert!(
        ranges.get_opt("invalid").await.expect("get").is_none(),
        "the rejected object was not stored"
    );

    ranges
        .delete("valid", &DeleteParams::default())
        .await
        .expect("delete object");
    crds.delete(&crd_name, &DeleteParams::default())
        .await
        .expect("delete CRD");
}
