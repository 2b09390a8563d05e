//! Read → validate: checks a MarketGroup with the CRD's own CEL rules (the same rule text the API
//! server runs) and resolves it into a [`GroupPlan`].
//!
//! In a cluster the API server has already rejected invalid specs; this matters for
//! `prapi-operator render -f` (no API server involved) and guards against a CRD older than the
//! operator.

use crate::crd::MarketGroup;
use crate::plan::{
    BatchPlan, GroupPlan, NetworkPolicyPlan, Owner, ProductsPlan, ReplicaRange, UpdaterPlan,
    default_resource_name,
};
use crate::pod_settings::merge;
use crate::quantity;
use kube::CustomResourceExt;
use kube::core::cel::{CompiledSchema, Validator, compile_schema};
use std::fmt;
use std::sync::OnceLock;

/// A spec the operator cannot act on, with every reason found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSpec {
    /// One line per problem: `<field path>: <message>`.
    pub problems: Vec<String>,
}

impl fmt::Display for InvalidSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problems.join("; "))
    }
}

impl std::error::Error for InvalidSpec {}

impl InvalidSpec {
    fn one(problem: impl Into<String>) -> Self {
        Self {
            problems: vec![problem.into()],
        }
    }
}

/// The CRD schema as the API server sees it, compiled once.
fn compiled_schema() -> Result<&'static CompiledSchema, InvalidSpec> {
    static SCHEMA: OnceLock<Result<CompiledSchema, String>> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let crd = MarketGroup::crd();
            let schema = crd
                .spec
                .versions
                .first()
                .and_then(|v| v.schema.as_ref())
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .ok_or_else(|| "the generated CRD has no openAPIV3Schema".to_string())?;
            let value = serde_json::to_value(schema).map_err(|e| e.to_string())?;
            let compiled = compile_schema(&value);
            let errors: Vec<String> = compiled
                .compilation_errors()
                .iter()
                .map(|e| e.to_string())
                .collect();
            if errors.is_empty() {
                Ok(compiled)
            } else {
                Err(format!("CEL rules do not compile: {}", errors.join("; ")))
            }
        })
        .as_ref()
        .map_err(|e| InvalidSpec::one(format!("internal: {e}")))
}

/// Runs the CRD's CEL rules on `mg` (as it would be stored, defaults applied by serde).
pub fn check_cel(mg: &MarketGroup) -> Result<(), InvalidSpec> {
    let schema = compiled_schema()?;
    let value = serde_json::to_value(mg)
        .map_err(|e| InvalidSpec::one(format!("cannot serialize the MarketGroup: {e}")))?;
    Validator::new()
        .validate_compiled(schema, &value, None)
        .map_err(|errors| InvalidSpec {
            problems: errors
                .as_slice()
                .iter()
                .map(|e| {
                    if e.field_path.is_empty() {
                        e.message.clone()
                    } else {
                        format!("{}: {}", e.field_path, e.message)
                    }
                })
                .collect(),
        })
}

/// Checks every resource quantity's syntax (the API server does it with the schema's pattern,
/// which the CEL evaluator does not see).
fn check_quantities(mg: &MarketGroup) -> Result<(), InvalidSpec> {
    let spec = &mg.spec;
    let mut problems = Vec::new();
    for (component, resources) in [
        ("products", &spec.products.resources),
        ("batch", &spec.batch.resources),
        ("updater", &spec.updater.resources),
    ] {
        for (kind, list) in [
            ("requests", &resources.requests),
            ("limits", &resources.limits),
        ] {
            for (name, q) in list {
                if let Err(quantity::QuantityError::Malformed(_)) = quantity::to_bytes(&q.0) {
                    problems.push(format!(
                        "spec.{component}.resources.{kind}.{name}: {:?} is not a Kubernetes quantity such as 500m or 1Gi",
                        q.0
                    ));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(InvalidSpec { problems })
    }
}

/// Checks that no pod settings' `env` names a variable twice (the API server refuses it through the
/// schema's list-map keys, which the CEL evaluator does not see).
fn check_env_names(mg: &MarketGroup) -> Result<(), InvalidSpec> {
    let spec = &mg.spec;
    let mut problems = Vec::new();
    for (path, settings) in [
        ("spec.pod", &spec.pod),
        ("spec.products.pod", &spec.products.pod),
        ("spec.batch.pod", &spec.batch.pod),
        ("spec.updater.pod", &spec.updater.pod),
    ] {
        for (i, e) in settings.env.iter().enumerate() {
            if settings.env[..i].iter().any(|f| f.name == e.name) {
                problems.push(format!(
                    "{path}.env[{i}]: Duplicate value: {:?} (env is a list keyed by name)",
                    e.name
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(InvalidSpec { problems })
    }
}

/// Validates `mg` and resolves it into a plan. `default_image` fills an empty `spec.image`;
/// `default_namespace` is used when the manifest has none (offline rendering).
pub fn plan(
    mg: &MarketGroup,
    default_image: &str,
    default_namespace: &str,
) -> Result<GroupPlan, InvalidSpec> {
    let name = mg
        .metadata
        .name
        .clone()
        .ok_or_else(|| InvalidSpec::one("metadata.name: required"))?;
    check_cel(mg)?;
    let spec = &mg.spec;
    check_quantities(mg)?;
    check_env_names(mg)?;
    prapi_common::logs::check_filter(&spec.logs.filter)
        .map_err(|e| InvalidSpec::one(format!("spec.logs.filter: {e}")))?;
    let namespace = mg
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| default_namespace.to_string());
    let cache_max_bytes = quantity::to_bytes(&spec.products.cache.max_bytes)
        .map_err(|e| InvalidSpec::one(format!("spec.products.cache.maxBytes: {e}")))?;
    let kafka = &spec.updater.kafka;
    let image = if spec.image.is_empty() {
        default_image.to_string()
    } else {
        spec.image.clone()
    };
    let or_default = |s: &str| {
        if s.is_empty() {
            default_resource_name(&namespace, &name)
        } else {
            s.to_string()
        }
    };
    Ok(GroupPlan {
        countries: spec
            .countries
            .iter()
            .map(|c| c.to_ascii_lowercase())
            .collect(),
        image,
        weight: spec.traffic.weight,
        segment: spec.traffic.segment.clone(),
        hosts: spec.traffic.hosts.clone(),
        country_weights: spec
            .traffic
            .country_weights
            .iter()
            .map(|(c, w)| (c.to_ascii_lowercase(), *w))
            .collect(),
        products: ProductsPlan {
            replicas: ReplicaRange {
                min: spec.products.replicas.min,
                max: spec.products.replicas.max,
            },
            target_cpu_utilization: spec.products.target_cpu_utilization,
            cache_ttl_seconds: spec.products.cache.ttl_seconds,
            cache_stale_seconds: spec.products.cache.stale_seconds,
            cache_max_bytes,
            balance_factor: spec.products.balance_factor,
            resources: spec.products.resources.clone(),
            pod: merge(&spec.pod, &spec.products.pod),
        },
        batch: BatchPlan {
            replicas: ReplicaRange {
                min: spec.batch.replicas.min,
                max: spec.batch.replicas.max,
            },
            target_cpu_utilization: spec.batch.target_cpu_utilization,
            max_items: spec.batch.max_items,
            hedging: spec.batch.hedging.clone(),
            resources: spec.batch.resources.clone(),
            pod: merge(&spec.pod, &spec.batch.pod),
        },
        updater: UpdaterPlan {
            bootstrap_servers: kafka.bootstrap_servers.clone(),
            products_topic: kafka.products_topic.clone(),
            offers_topic: kafka.offers_topic.clone(),
            dead_letter_topic: kafka.dead_letter_topic.clone(),
            consumer_group: or_default(&kafka.consumer_group),
            partitions: kafka.partitions,
            lag_threshold: spec.updater.lag_threshold,
            scale_down_stabilization_seconds: spec.updater.scale_down_stabilization_seconds,
            max_replicas: spec
                .updater
                .max_replicas
                .unwrap_or(kafka.partitions)
                .min(kafka.partitions),
            resources: spec.updater.resources.clone(),
            pod: merge(&spec.pod, &spec.updater.pod),
            client_secret_name: kafka.client_secret_name.clone(),
            kafka_client: None,
        },
        table: or_default(&spec.dynamodb.table),
        dynamodb: spec.dynamodb.clone(),
        env: Vec::new(),
        default_balance_factor: crate::render::routing::DEFAULT_BALANCE_FACTOR,
        log_format: spec.logs.format,
        log_filter: spec.logs.filter.clone(),
        // On by default; the installation may turn them off or name the ingress namespaces.
        network_policy: Some(NetworkPolicyPlan::default()),
        served_by_header: false,
        store_timeouts: Default::default(),
        owner: Owner {
            namespace: namespace.clone(),
            name: name.clone(),
            uid: mg.metadata.uid.clone(),
        },
    })
}
