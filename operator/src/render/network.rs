//! A group's NetworkPolicies: who may reach its pods, one policy per component.
//!
//! - **updater**: serves nothing but its health and metrics port (`http`), open to any source
//!   (the kubelet's probes, Prometheus, the lag metric).
//! - **products**: the ops port (probes, metrics) from any source; the API port from the group's
//!   batch pods and the ingress.
//! - **batch**: the ops port from any source; the API port from the ingress.
//!
//! "The ingress" is the namespaces of `--ingress-namespaces`; without any, the API ports are open
//! to every source (the operator cannot know where the ingress runs), and the policies still close
//! every other port. They take effect where the cluster's network plugin enforces NetworkPolicies.

use super::meta::{object_meta, pod_selector};
use super::workloads::{HTTP_PORT, OPS_PORT};
use crate::plan::{Component, GroupPlan, NetworkPolicyPlan};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The label every namespace carries with its own name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

fn port(number: i32) -> Option<Vec<NetworkPolicyPort>> {
    Some(vec![NetworkPolicyPort {
        port: Some(IntOrString::Int(number)),
        protocol: Some("TCP".into()),
        ..NetworkPolicyPort::default()
    }])
}

/// A rule open to any source on `number`.
fn open(number: i32) -> NetworkPolicyIngressRule {
    NetworkPolicyIngressRule {
        ports: port(number),
        from: None,
    }
}

/// The API port rule: from `peers` and the ingress namespaces, or from any source when no
/// ingress namespace is named.
fn api(np: &NetworkPolicyPlan, mut peers: Vec<NetworkPolicyPeer>) -> NetworkPolicyIngressRule {
    if np.ingress_namespaces.is_empty() {
        return open(HTTP_PORT);
    }
    peers.push(NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: NAMESPACE_NAME_LABEL.into(),
                operator: "In".into(),
                values: Some(np.ingress_namespaces.clone()),
            }]),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    });
    NetworkPolicyIngressRule {
        ports: port(HTTP_PORT),
        from: Some(peers),
    }
}

/// The NetworkPolicy of `component`.
pub fn network_policy(
    plan: &GroupPlan,
    component: Component,
    np: &NetworkPolicyPlan,
) -> NetworkPolicy {
    let ingress = match component {
        Component::Updater => vec![open(HTTP_PORT)],
        Component::Products => {
            let batch = NetworkPolicyPeer {
                pod_selector: Some(pod_selector(plan, Component::Batch)),
                ..NetworkPolicyPeer::default()
            };
            vec![open(OPS_PORT), api(np, vec![batch])]
        }
        Component::Batch => vec![open(OPS_PORT), api(np, Vec::new())],
    };
    NetworkPolicy {
        metadata: object_meta(plan, plan.component_name(component), Some(component)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(pod_selector(plan, component)),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(ingress),
            ..NetworkPolicySpec::default()
        }),
    }
}
