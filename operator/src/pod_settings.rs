//! Pod settings: `spec.pod` (shared) merged with a component's `pod` (override) into the settings
//! that component's Deployment gets.
//!
//! The rules, written once here and in docs/crd.md ("Pod settings"):
//! - maps (`labels`, `annotations`, `nodeSelector`, `serviceAccountAnnotations`): union by key,
//!   the component's value wins;
//! - `env`: the shared list, each variable the component also names replaced in place by the
//!   component's, then the component's new ones in its order;
//! - `envFrom`, `tolerations`: the shared list then the component's (a toleration given in both
//!   appears once); Kubernetes lets a later `envFrom` source win a key;
//! - `imagePullSecrets`: union by name, shared first;
//! - `affinity`, `topologySpreadConstraints`, `priorityClassName`: the component's when it sets
//!   one, else the shared one (whole values: half an affinity from each would mean neither).

use crate::crd::PodSettings;
use k8s_openapi::api::core::v1::EnvVar;
use std::collections::BTreeMap;

/// The settings a component gets: `shared` overridden by `component` (module docs).
pub fn merge(shared: &PodSettings, component: &PodSettings) -> PodSettings {
    PodSettings {
        env: merge_env(&shared.env, &component.env),
        env_from: concat(&shared.env_from, &component.env_from),
        labels: union(&shared.labels, &component.labels),
        annotations: union(&shared.annotations, &component.annotations),
        service_account_annotations: union(
            &shared.service_account_annotations,
            &component.service_account_annotations,
        ),
        node_selector: union(&shared.node_selector, &component.node_selector),
        tolerations: concat_distinct(&shared.tolerations, &component.tolerations),
        affinity: component
            .affinity
            .clone()
            .or_else(|| shared.affinity.clone()),
        topology_spread_constraints: component
            .topology_spread_constraints
            .clone()
            .or_else(|| shared.topology_spread_constraints.clone()),
        priority_class_name: component
            .priority_class_name
            .clone()
            .or_else(|| shared.priority_class_name.clone()),
        image_pull_secrets: {
            let mut out = shared.image_pull_secrets.clone();
            for s in &component.image_pull_secrets {
                if !out.iter().any(|o| o.name == s.name) {
                    out.push(s.clone());
                }
            }
            out
        },
    }
}

/// Variables by name: a later list's variable replaces an earlier one of the same name in place,
/// new names are appended. Used for every layer of a container's environment, so a name is never
/// listed twice (server-side apply refuses duplicate keys).
pub fn merge_env(base: &[EnvVar], over: &[EnvVar]) -> Vec<EnvVar> {
    let mut out = base.to_vec();
    for v in over {
        match out.iter_mut().find(|o| o.name == v.name) {
            Some(slot) => *slot = v.clone(),
            None => out.push(v.clone()),
        }
    }
    out
}

fn union(
    base: &BTreeMap<String, String>,
    over: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut out = base.clone();
    out.extend(over.iter().map(|(k, v)| (k.clone(), v.clone())));
    out
}

fn concat<T: Clone>(a: &[T], b: &[T]) -> Vec<T> {
    a.iter().chain(b).cloned().collect()
}

fn concat_distinct<T: Clone + PartialEq>(a: &[T], b: &[T]) -> Vec<T> {
    let mut out = a.to_vec();
    for x in b {
        if !out.contains(x) {
            out.push(x.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Affinity, LocalObjectReference, PodAffinity, Toleration, TopologySpreadConstraint,
    };

    fn var(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(value.into()),
            ..EnvVar::default()
        }
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn nothing_over_nothing_is_nothing_and_either_side_alone_is_kept() {
        let empty = PodSettings::default();
        assert_eq!(merge(&empty, &empty), empty);
        let some = PodSettings {
            env: vec![var("A", "1")],
            labels: map(&[("team", "a")]),
            tolerations: vec![Toleration {
                key: Some("t".into()),
                ..Toleration::default()
            }],
            affinity: Some(Affinity::default()),
            topology_spread_constraints: Some(vec![]),
            priority_class_name: Some("p".into()),
            image_pull_secrets: vec![LocalObjectReference { name: "r".into() }],
            ..PodSettings::default()
        };
        assert_eq!(merge(&some, &empty), some);
        assert_eq!(merge(&empty, &some), some);
    }

    #[test]
    fn maps_unite_with_the_component_winning_a_key() {
        let shared = PodSettings {
            labels: map(&[("a", "shared"), ("b", "shared")]),
            annotations: map(&[("x", "shared")]),
            node_selector: map(&[("pool", "shared")]),
            service_account_annotations: map(&[("role", "shared")]),
            ..PodSettings::default()
        };
        let component = PodSettings {
            labels: map(&[("b", "mine"), ("c", "mine")]),
            annotations: map(&[("y", "mine")]),
            node_selector: map(&[("pool", "mine")]),
            ..PodSettings::default()
        };
        let m = merge(&shared, &component);
        assert_eq!(
            m.labels,
            map(&[("a", "shared"), ("b", "mine"), ("c", "mine")])
        );
        assert_eq!(m.annotations, map(&[("x", "shared"), ("y", "mine")]));
        assert_eq!(m.node_selector, map(&[("pool", "mine")]));
        assert_eq!(m.service_account_annotations, map(&[("role", "shared")]));
    }

    #[test]
    fn env_is_replaced_in_place_by_name_and_extended() {
        assert_eq!(
            merge_env(
                &[var("A", "1"), var("B", "1"), var("C", "1")],
                &[var("D", "2"), var("B", "2")]
            ),
            vec![var("A", "1"), var("B", "2"), var("C", "1"), var("D", "2")]
        );
    }

    #[test]
    fn lists_concatenate_without_repeating_and_whole_values_are_replaced() {
        let t = |k: &str| Toleration {
            key: Some(k.into()),
            operator: Some("Exists".into()),
            ..Toleration::default()
        };
        let secret = |n: &str| LocalObjectReference { name: n.into() };
        let spread = |k: &str| TopologySpreadConstraint {
            topology_key: k.into(),
            ..TopologySpreadConstraint::default()
        };
        let shared = PodSettings {
            tolerations: vec![t("a"), t("b")],
            image_pull_secrets: vec![secret("x")],
            affinity: Some(Affinity {
                pod_affinity: Some(PodAffinity::default()),
                ..Affinity::default()
            }),
            topology_spread_constraints: Some(vec![spread("zone"), spread("node")]),
            priority_class_name: Some("shared".into()),
            ..PodSettings::default()
        };
        let component = PodSettings {
            tolerations: vec![t("b"), t("c")],
            image_pull_secrets: vec![secret("y"), secret("x")],
            affinity: Some(Affinity::default()),
            topology_spread_constraints: Some(vec![spread("rack")]),
            priority_class_name: Some("mine".into()),
            ..PodSettings::default()
        };
        let m = merge(&shared, &component);
        assert_eq!(m.tolerations, vec![t("a"), t("b"), t("c")]);
        assert_eq!(m.image_pull_secrets, vec![secret("x"), secret("y")]);
        assert_eq!(m.affinity, Some(Affinity::default()));
        assert_eq!(m.topology_spread_constraints, Some(vec![spread("rack")]));
        assert_eq!(m.priority_class_name.as_deref(), Some("mine"));
        // An explicit empty spread list is a choice and overrides the shared one.
        let none = PodSettings {
            topology_spread_constraints: Some(vec![]),
            ..PodSettings::default()
        };
        assert_eq!(
            merge(&shared, &none).topology_spread_constraints,
            Some(vec![])
        );
    }
}
