//! Render: pure functions from a [`GroupPlan`] to the desired child objects.
//!
//! Nothing here does I/O. [`render`] returns every object the group should have, each with the
//! hash annotation the applier compares before writing.

pub mod autoscaling;
pub mod meta;
pub mod monitoring;
pub mod network;
pub mod routing;
pub mod workloads;

use crate::plan::{Component, GroupPlan};
use autoscaling::UpdaterAutoscaler;
use kube::core::{ApiResource, GroupVersionKind};
use meta::ANNOTATION_APPLIED_HASH;
use serde::Serialize;
use serde_json::Value;
use thiserror::Error;

/// Kinds of object a market group owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChildKind {
    /// core/v1 ServiceAccount.
    ServiceAccount,
    /// rbac.authorization.k8s.io/v1 RoleBinding.
    RoleBinding,
    /// core/v1 ConfigMap.
    ConfigMap,
    /// core/v1 Service.
    Service,
    /// apps/v1 Deployment.
    Deployment,
    /// policy/v1 PodDisruptionBudget.
    PodDisruptionBudget,
    /// networking.k8s.io/v1 NetworkPolicy.
    NetworkPolicy,
    /// autoscaling/v2 HorizontalPodAutoscaler.
    HorizontalPodAutoscaler,
    /// keda.sh/v1alpha1 TriggerAuthentication.
    TriggerAuthentication,
    /// keda.sh/v1alpha1 ScaledObject.
    ScaledObject,
    /// monitoring.coreos.com/v1 PodMonitor.
    PodMonitor,
}

impl ChildKind {
    /// Every kind, in apply order (dependencies first: the ServiceAccount and RBAC before the pods
    /// that use them, the Deployments before their autoscalers).
    pub const ALL: [ChildKind; 11] = [
        ChildKind::ServiceAccount,
        ChildKind::RoleBinding,
        ChildKind::ConfigMap,
        ChildKind::Service,
        ChildKind::Deployment,
        ChildKind::PodDisruptionBudget,
        ChildKind::NetworkPolicy,
        ChildKind::HorizontalPodAutoscaler,
        ChildKind::TriggerAuthentication,
        ChildKind::ScaledObject,
        ChildKind::PodMonitor,
    ];

    /// Kinds served only where an add-on installed their CRD (KEDA, the Prometheus Operator):
    /// looked for per reconcile instead of watched.
    pub const OPTIONAL: [ChildKind; 3] = [
        ChildKind::TriggerAuthentication,
        ChildKind::ScaledObject,
        ChildKind::PodMonitor,
    ];

    /// Whether the kind is KEDA's.
    pub fn keda(self) -> bool {
        matches!(
            self,
            ChildKind::ScaledObject | ChildKind::TriggerAuthentication
        )
    }

    /// The kinds every cluster serves, which the operator watches: all but the
    /// [`ChildKind::OPTIONAL`] ones. The Helm chart's RBAC grants these (its test checks it).
    pub fn watched() -> impl Iterator<Item = ChildKind> {
        Self::ALL
            .into_iter()
            .filter(|k| !Self::OPTIONAL.contains(k))
    }

    /// Group, version and kind.
    pub fn gvk(self) -> GroupVersionKind {
        let (g, v, k) = match self {
            ChildKind::ServiceAccount => ("", "v1", "ServiceAccount"),
            ChildKind::RoleBinding => ("rbac.authorization.k8s.io", "v1", "RoleBinding"),
            ChildKind::ConfigMap => ("", "v1", "ConfigMap"),
            ChildKind::Service => ("", "v1", "Service"),
            ChildKind::Deployment => ("apps", "v1", "Deployment"),
            ChildKind::PodDisruptionBudget => ("policy", "v1", "PodDisruptionBudget"),
            ChildKind::NetworkPolicy => ("networking.k8s.io", "v1", "NetworkPolicy"),
            ChildKind::HorizontalPodAutoscaler => ("autoscaling", "v2", "HorizontalPodAutoscaler"),
            ChildKind::TriggerAuthentication => ("keda.sh", "v1alpha1", "TriggerAuthentication"),
            ChildKind::ScaledObject => ("keda.sh", "v1alpha1", "ScaledObject"),
            ChildKind::PodMonitor => ("monitoring.coreos.com", "v1", "PodMonitor"),
        };
        GroupVersionKind::gvk(g, v, k)
    }

    /// Plural resource name.
    pub fn plural(self) -> &'static str {
        match self {
            ChildKind::ServiceAccount => "serviceaccounts",
            ChildKind::RoleBinding => "rolebindings",
            ChildKind::ConfigMap => "configmaps",
            ChildKind::Service => "services",
            ChildKind::Deployment => "deployments",
            ChildKind::PodDisruptionBudget => "poddisruptionbudgets",
            ChildKind::NetworkPolicy => "networkpolicies",
            ChildKind::HorizontalPodAutoscaler => "horizontalpodautoscalers",
            ChildKind::TriggerAuthentication => "triggerauthentications",
            ChildKind::ScaledObject => "scaledobjects",
            ChildKind::PodMonitor => "podmonitors",
        }
    }

    /// The dynamic API resource for this kind.
    pub fn api_resource(self) -> ApiResource {
        ApiResource::from_gvk_with_plural(&self.gvk(), self.plural())
    }

    /// Kind name.
    pub fn kind(self) -> String {
        self.gvk().kind
    }
}

/// One desired child: its kind, name and full object (apiVersion, kind, metadata with the
/// applied-hash annotation, spec).
#[derive(Clone, Debug, PartialEq)]
pub struct Child {
    /// Kind.
    pub kind: ChildKind,
    /// Name (namespace is the group's).
    pub name: String,
    /// The object as it is applied.
    pub object: Value,
    /// Hash of the object without the annotation; equals its annotation.
    pub hash: String,
}

/// Rendering failed (only if a built-in type refuses to serialize, which would be a bug).
#[derive(Debug, Error)]
#[error("cannot render {kind:?} {name}: {source}")]
pub struct RenderError {
    kind: ChildKind,
    name: String,
    source: serde_json::Error,
}

/// How to render: choices that depend on the cluster rather than the spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RenderOptions {
    /// The updater's autoscaler.
    pub updater_autoscaler: UpdaterAutoscaler,
    /// Render the group's PodMonitor (where the Prometheus Operator's API is served).
    pub pod_monitor: bool,
}

fn child(kind: ChildKind, name: String, object: impl Serialize) -> Result<Child, RenderError> {
    let err = |source| RenderError {
        kind,
        name: name.clone(),
        source,
    };
    let mut object = serde_json::to_value(object).map_err(err)?;
    let gvk = kind.gvk();
    if let Some(map) = object.as_object_mut() {
        // Typed k8s-openapi objects serialize apiVersion/kind themselves; make sure they come
        // first and are present for the JSON-built ones too.
        let api_version = if gvk.group.is_empty() {
            gvk.version.clone()
        } else {
            format!("{}/{}", gvk.group, gvk.version)
        };
        map.shift_remove("apiVersion");
        map.shift_remove("kind");
        map.shift_insert(0, "apiVersion".into(), Value::String(api_version));
        map.shift_insert(1, "kind".into(), Value::String(gvk.kind));
    }
    let bytes = serde_json::to_vec(&object).map_err(err)?;
    let hash = meta::stable_hash(&bytes);
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        let annotations = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(a) = annotations.as_object_mut() {
            a.insert(ANNOTATION_APPLIED_HASH.into(), Value::String(hash.clone()));
        }
    }
    Ok(Child {
        kind,
        name,
        object,
        hash,
    })
}

/// Every object the group should have, in apply order.
pub fn render(plan: &GroupPlan, opts: RenderOptions) -> Result<Vec<Child>, RenderError> {
    use workloads as w;
    let mut out = Vec::new();
    for c in Component::ALL {
        out.push(child(
            ChildKind::ServiceAccount,
            plan.service_account_name(c),
            w::service_account(plan, c),
        )?);
    }
    out.extend([
        child(
            ChildKind::RoleBinding,
            plan.endpoint_reader_name(),
            w::endpoint_reader_binding(plan),
        )?,
        child(
            ChildKind::ConfigMap,
            plan.config_map_name(),
            w::config_map(plan),
        )?,
    ]);
    for c in [Component::Products, Component::Batch] {
        out.push(child(
            ChildKind::Service,
            plan.component_name(c),
            w::service(plan, c),
        )?);
    }
    out.push(child(
        ChildKind::Service,
        plan.products_headless_name(),
        w::products_headless_service(plan),
    )?);
    for c in Component::ALL {
        out.push(child(
            ChildKind::Deployment,
            plan.component_name(c),
            w::deployment(plan, c),
        )?);
    }
    for c in Component::ALL {
        out.push(child(
            ChildKind::PodDisruptionBudget,
            plan.component_name(c),
            w::pod_disruption_budget(plan, c),
        )?);
    }
    if let Some(np) = &plan.network_policy {
        for c in Component::ALL {
            out.push(child(
                ChildKind::NetworkPolicy,
                plan.component_name(c),
                network::network_policy(plan, c, np),
            )?);
        }
    }
    for c in [Component::Products, Component::Batch] {
        out.push(child(
            ChildKind::HorizontalPodAutoscaler,
            plan.component_name(c),
            autoscaling::cpu_hpa(plan, c),
        )?);
    }
    let updater = plan.component_name(Component::Updater);
    if opts.updater_autoscaler == UpdaterAutoscaler::Keda
        && let Some(auth) = autoscaling::updater_trigger_authentication(plan)
    {
        out.push(child(
            ChildKind::TriggerAuthentication,
            plan.trigger_authentication_name(),
            auth,
        )?);
    }
    out.push(match opts.updater_autoscaler {
        UpdaterAutoscaler::Keda => child(
            ChildKind::ScaledObject,
            updater,
            autoscaling::updater_scaled_object(plan),
        )?,
        UpdaterAutoscaler::ExternalMetricHpa => child(
            ChildKind::HorizontalPodAutoscaler,
            updater,
            autoscaling::updater_lag_hpa(plan),
        )?,
    });
    if opts.pod_monitor {
        out.push(child(
            ChildKind::PodMonitor,
            plan.owner.name.clone(),
            monitoring::pod_monitor(plan),
        )?);
    }
    Ok(out)
}
