//! Autoscalers: CPU-based HPAs for products and batch; the updater scaled on consumer lag, by a
//! KEDA ScaledObject (kafka triggers) where KEDA is installed, else by an HPA on an External metric.
//! A group with a Kafka client Secret gets a KEDA TriggerAuthentication that maps the Secret's
//! keys to the kafka scaler's parameters (docs/crd.md, "Kafka security").

use super::meta::object_meta;
use crate::plan::{Component, GroupPlan};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, ExternalMetricSource, HPAScalingRules, HorizontalPodAutoscaler,
    HorizontalPodAutoscalerBehavior, HorizontalPodAutoscalerSpec, MetricIdentifier, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use prapi_common::kafka_client::{self as kc, KafkaSecurity, SaslMechanism};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Name of the updater's consumer lag metric (exported by `prapi updater`, served to the HPA as an
/// External metric by a metrics adapter).
pub const UPDATER_LAG_METRIC: &str = "prapi_updater_consumer_lag";
/// Label the External metric is selected by: the Prometheus form of `app.kubernetes.io/instance`,
/// as the usual pod-label relabelling produces it.
pub const UPDATER_LAG_SELECTOR_LABEL: &str = "app_kubernetes_io_instance";
/// API version of KEDA's ScaledObject.
pub const KEDA_API_VERSION: &str = "keda.sh/v1alpha1";

/// How the updater is scaled on consumer lag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdaterAutoscaler {
    /// A KEDA ScaledObject with kafka triggers.
    Keda,
    /// An autoscaling/v2 HPA on the External lag metric.
    ExternalMetricHpa,
}

impl UpdaterAutoscaler {
    /// The kind of object that implements it (reported in the status).
    pub fn kind(self) -> &'static str {
        match self {
            UpdaterAutoscaler::Keda => "ScaledObject",
            UpdaterAutoscaler::ExternalMetricHpa => "HorizontalPodAutoscaler",
        }
    }
}

fn scale_target(plan: &GroupPlan, component: Component) -> CrossVersionObjectReference {
    CrossVersionObjectReference {
        api_version: Some("apps/v1".into()),
        kind: "Deployment".into(),
        name: plan.component_name(component),
    }
}

/// CPU-utilization HPA of a serving component (products or batch).
pub fn cpu_hpa(plan: &GroupPlan, component: Component) -> HorizontalPodAutoscaler {
    let (range, target) = match component {
        Component::Batch => (plan.batch.replicas, plan.batch.target_cpu_utilization),
        _ => (plan.products.replicas, plan.products.target_cpu_utilization),
    };
    HorizontalPodAutoscaler {
        metadata: object_meta(plan, plan.component_name(component), Some(component)),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: scale_target(plan, component),
            min_replicas: Some(range.min),
            max_replicas: range.max,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(target),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            ..HorizontalPodAutoscalerSpec::default()
        }),
        ..HorizontalPodAutoscaler::default()
    }
}

/// Updater HPA on the External lag metric: with an `AverageValue` target the HPA sums the lag of
/// every matching series and wants `ceil(lag / lagThreshold)` replicas.
pub fn updater_lag_hpa(plan: &GroupPlan) -> HorizontalPodAutoscaler {
    HorizontalPodAutoscaler {
        metadata: object_meta(
            plan,
            plan.component_name(Component::Updater),
            Some(Component::Updater),
        ),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: scale_target(plan, Component::Updater),
            min_replicas: Some(1),
            max_replicas: plan.updater.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "External".into(),
                external: Some(ExternalMetricSource {
                    metric: MetricIdentifier {
                        name: UPDATER_LAG_METRIC.into(),
                        selector: Some(LabelSelector {
                            match_labels: Some(BTreeMap::from([(
                                UPDATER_LAG_SELECTOR_LABEL.to_string(),
                                plan.owner.name.clone(),
                            )])),
                            ..LabelSelector::default()
                        }),
                    },
                    target: MetricTarget {
                        type_: "AverageValue".into(),
                        average_value: Some(Quantity(crate::quantity::canonical_integer(
                            plan.updater.lag_threshold,
                        ))),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            behavior: Some(HorizontalPodAutoscalerBehavior {
                scale_down: Some(HPAScalingRules {
                    stabilization_window_seconds: Some(
                        plan.updater.scale_down_stabilization_seconds,
                    ),
                    ..HPAScalingRules::default()
                }),
                ..HorizontalPodAutoscalerBehavior::default()
            }),
        }),
        ..HorizontalPodAutoscaler::default()
    }
}

/// Updater KEDA ScaledObject: one kafka trigger per topic (KEDA reads lag per topic; without a topic
/// it only sees topics the group already committed to, which misses a new group's backlog).
/// Idle consumers are not allowed, so the ceiling never exceeds the partitions.
pub fn updater_scaled_object(plan: &GroupPlan) -> Value {
    let u = &plan.updater;
    let meta = object_meta(
        plan,
        plan.component_name(Component::Updater),
        Some(Component::Updater),
    );
    let security = u.kafka_client.as_ref().map(|k| k.secret.security());
    let authentication = trigger_authentication_refs(plan);
    let trigger = |name: &str, topic: &str| {
        let mut trigger = json!({
            "type": "kafka",
            "name": name,
            "metadata": {
                "bootstrapServers": u.bootstrap_servers,
                "consumerGroup": u.consumer_group,
                "topic": topic,
                "lagThreshold": u.lag_threshold.to_string(),
                "allowIdleConsumers": "false",
                // A new group starts from the beginning, so its whole backlog counts as lag.
                "offsetResetPolicy": "earliest",
            }
        });
        if let Some(security) = security {
            // Not secret, so in the trigger; KEDA reads them there as from a TriggerAuthentication.
            if let Some(m) = security.mechanism {
                trigger["metadata"]["sasl"] = json!(keda_sasl(m));
            }
            if security.protocol.tls() {
                trigger["metadata"]["tls"] = json!("enable");
            }
        }
        if !authentication.is_empty() {
            trigger["authenticationRef"] = json!({"name": plan.trigger_authentication_name()});
        }
        trigger
    };
    json!({
        "apiVersion": KEDA_API_VERSION,
        "kind": "ScaledObject",
        "metadata": meta,
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": plan.component_name(Component::Updater),
            },
            "minReplicaCount": 1,
            "maxReplicaCount": u.max_replicas.min(u.partitions),
            // KEDA's cooldownPeriod only governs scaling to zero; the HPA it owns takes this.
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {"scaleDown": {
                "stabilizationWindowSeconds": u.scale_down_stabilization_seconds,
            }}}},
            "triggers": [
                trigger("products", &u.products_topic),
                trigger("offers", &u.offers_topic),
            ],
        }
    })
}

/// KEDA's name of a SASL mechanism (its kafka scaler's `sasl` parameter).
pub fn keda_sasl(m: SaslMechanism) -> &'static str {
    match m {
        SaslMechanism::Plain => "plaintext",
        SaslMechanism::ScramSha256 => "scram_sha256",
        SaslMechanism::ScramSha512 => "scram_sha512",
    }
}

/// `(KEDA kafka scaler parameter, Secret key)` for what the group's Kafka client Secret holds:
/// KEDA reads the values from the Secret itself, so none is copied into the object.
pub fn trigger_authentication_refs(plan: &GroupPlan) -> Vec<(&'static str, &'static str)> {
    let Some(k) = &plan.updater.kafka_client else {
        return Vec::new();
    };
    let KafkaSecurity {
        protocol,
        ca,
        client_certificate,
        key_password,
        ..
    } = k.secret.security();
    let mut refs = Vec::new();
    if protocol.sasl() {
        refs.extend([
            ("username", kc::SASL_USERNAME),
            ("password", kc::SASL_PASSWORD),
        ]);
    }
    if ca {
        refs.push(("ca", kc::CA_CERT));
    }
    if client_certificate {
        refs.extend([("cert", kc::CLIENT_CERT), ("key", kc::CLIENT_KEY)]);
    }
    if key_password {
        refs.push(("keyPassword", kc::CLIENT_KEY_PASSWORD));
    }
    refs
}

/// The updater's KEDA TriggerAuthentication: the credentials and certificates of the group's
/// Kafka client Secret, by reference. `None` when there is nothing to reference (no Secret, or
/// one with `security.protocol` `PLAINTEXT`, or `SSL` verified against the system's CAs).
pub fn updater_trigger_authentication(plan: &GroupPlan) -> Option<Value> {
    let k = plan.updater.kafka_client.as_ref()?;
    let refs = trigger_authentication_refs(plan);
    if refs.is_empty() {
        return None;
    }
    let meta = object_meta(
        plan,
        plan.trigger_authentication_name(),
        Some(Component::Updater),
    );
    let secret_target_ref: Vec<Value> = refs
        .into_iter()
        .map(|(parameter, key)| json!({"parameter": parameter, "name": k.secret_name, "key": key}))
        .collect();
    Some(json!({
        "apiVersion": KEDA_API_VERSION,
        "kind": "TriggerAuthentication",
        "metadata": meta,
        "spec": {"secretTargetRef": secret_target_ref},
    }))
}
