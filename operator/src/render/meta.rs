//! Metadata shared by every child: names, the recommended labels, owner references.

use crate::crd::{API_GROUP, API_VERSION};
use crate::plan::{Component, GroupPlan};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use std::collections::BTreeMap;

/// The single field manager for everything the operator applies.
pub const FIELD_MANAGER: &str = "prapi-operator";
/// `app.kubernetes.io/name` of every child.
pub const APP_NAME: &str = "prapi";
/// `app.kubernetes.io/part-of` of every child.
pub const PART_OF: &str = "prapi";

/// Label: the application.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// Label: the market group.
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
/// Label: updater, products or batch.
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
/// Label: who manages the object (used to select objects for pruning).
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Label: the larger application.
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";

/// Annotation holding the hash of the object as last rendered; an unchanged hash skips the apply.
pub const ANNOTATION_APPLIED_HASH: &str = "prapi.dev/applied-hash";
/// Pod-template annotation holding the hash of the configuration the pods read, so a config change
/// rolls the pods.
pub const ANNOTATION_CONFIG_HASH: &str = "prapi.dev/config-hash";

/// Labels on every child of `plan`; `component` adds the component label.
pub fn labels(plan: &GroupPlan, component: Option<Component>) -> BTreeMap<String, String> {
    let mut l = selector_labels(plan, component);
    l.insert(LABEL_MANAGED_BY.into(), FIELD_MANAGER.into());
    l.insert(LABEL_PART_OF.into(), PART_OF.into());
    l
}

/// The stable subset of labels used in selectors (a Deployment's selector is immutable, so it
/// carries nothing that could ever change).
pub fn selector_labels(plan: &GroupPlan, component: Option<Component>) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        (LABEL_NAME.to_string(), APP_NAME.to_string()),
        (LABEL_INSTANCE.to_string(), plan.owner.name.clone()),
    ]);
    if let Some(c) = component {
        l.insert(LABEL_COMPONENT.into(), c.as_str().into());
    }
    l
}

/// Label selector matching a component's pods.
pub fn pod_selector(plan: &GroupPlan, component: Component) -> LabelSelector {
    LabelSelector {
        match_labels: Some(selector_labels(plan, Some(component))),
        ..LabelSelector::default()
    }
}

/// Label selector (string form) for every child of the group named `name`, used for pruning.
pub fn children_selector(name: &str) -> String {
    format!("{LABEL_MANAGED_BY}={FIELD_MANAGER},{LABEL_INSTANCE}={name}")
}

/// The controller owner reference to the MarketGroup, when its UID is known.
pub fn owner_references(plan: &GroupPlan) -> Option<Vec<OwnerReference>> {
    plan.owner.uid.as_ref().map(|uid| {
        vec![OwnerReference {
            api_version: format!("{API_GROUP}/{API_VERSION}"),
            kind: "MarketGroup".into(),
            name: plan.owner.name.clone(),
            uid: uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]
    })
}

/// Metadata of a child named `name`.
pub fn object_meta(plan: &GroupPlan, name: String, component: Option<Component>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(plan.owner.namespace.clone()),
        labels: Some(labels(plan, component)),
        owner_references: owner_references(plan),
        ..ObjectMeta::default()
    }
}

/// Stable 64-bit hash (hex) of bytes; stable across builds, unlike `std`'s hasher.
pub fn stable_hash(bytes: &[u8]) -> String {
    format!("{:016x}", xxhash_rust::xxh64::xxh64(bytes, 0))
}
