//! The domain view of a market group: the spec with every default and derived name resolved.
//!
//! Rendering works from this, never from the raw custom resource, so naming rules (table, consumer
//! group, child names) live in one place and the renderers stay free of Kubernetes plumbing.

use crate::crd::{DynamoDb, Hedging, LogFormat, PodSettings, Resources};
use prapi_common::kafka_client::KafkaClientSecret;
use std::collections::BTreeMap;

/// Everything the renderers need to know about one market group.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupPlan {
    /// The MarketGroup's identity.
    pub owner: Owner,
    /// Lower-case country codes, in the order the spec lists them.
    pub countries: Vec<String>,
    /// Data plane image.
    pub image: String,
    /// Traffic weight (0..=100) of each listed country.
    pub weight: i32,
    /// Traffic segment; empty for none.
    pub segment: String,
    /// Weights of single countries over `weight` (lower-case keys).
    pub country_weights: BTreeMap<String, i32>,
    /// Route host names (`spec.traffic.hosts`); empty for the operator's.
    pub hosts: Vec<String>,
    /// The products component.
    pub products: ProductsPlan,
    /// The batch component.
    pub batch: BatchPlan,
    /// The updater.
    pub updater: UpdaterPlan,
    /// DynamoDB table name.
    pub table: String,
    /// The table settings, as specified (used by the store step).
    pub dynamodb: DynamoDb,
    /// Variables every data plane container gets from the installation (`--data-plane-env`),
    /// after the operator's own `PRAPI_*` ones; names never start with `PRAPI_`.
    pub env: Vec<(String, String)>,
    /// Log format of the pods.
    pub log_format: LogFormat,
    /// Log filter of the pods (`PRAPI_LOG`).
    pub log_filter: String,
    /// The installation's balance factor (`--balance-factor`), for groups that set none.
    pub default_balance_factor: f64,
    /// The group's NetworkPolicies; `None` when the installation turned them off
    /// (`--network-policies false`).
    pub network_policy: Option<NetworkPolicyPlan>,
    /// Products and batch pods name themselves in an `X-Served-By` header
    /// (`--served-by-header`).
    pub served_by_header: bool,
    /// The products pods' DynamoDB read timeouts (`--store-read-timeout-ms` and
    /// `--store-fallback-read-timeout-ms`).
    pub store_timeouts: StoreTimeouts,
}

/// DynamoDB read timeouts of the products pods; `None`: the data plane's default (sized for
/// DynamoDB itself).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreTimeouts {
    /// Primary read attempt, milliseconds.
    pub read_ms: Option<u64>,
    /// Fallback read after a primary timeout or throttle, milliseconds.
    pub fallback_read_ms: Option<u64>,
}

/// Who may reach a group's pods (`--network-policies`, `--ingress-namespaces`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkPolicyPlan {
    /// Namespaces the ingress (Skipper, the Gateway's proxies) runs in: the only sources allowed
    /// on the API port besides the group's own batch pods. Empty: any source.
    pub ingress_namespaces: Vec<String>,
}

/// Identity of the MarketGroup that owns the rendered objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// Namespace of the group and all its children.
    pub namespace: String,
    /// Name of the group.
    pub name: String,
    /// UID, for owner references; absent when rendering a manifest offline.
    pub uid: Option<String>,
}

/// A replica range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaRange {
    /// Floor.
    pub min: i32,
    /// Ceiling.
    pub max: i32,
}

/// The products component.
#[derive(Clone, Debug, PartialEq)]
pub struct ProductsPlan {
    /// Replica range.
    pub replicas: ReplicaRange,
    /// CPU utilization target, percent.
    pub target_cpu_utilization: i32,
    /// Cache TTL, seconds.
    pub cache_ttl_seconds: i32,
    /// Stale window at the end of the TTL, seconds.
    pub cache_stale_seconds: i32,
    /// Cache budget, bytes.
    pub cache_max_bytes: u64,
    /// `spec.products.balanceFactor`; unset: the installation's ([`GroupPlan::balance_factor`]).
    pub balance_factor: Option<f64>,
    /// Container resources.
    pub resources: Resources,
    /// Pod settings: `spec.pod` merged with the component's own.
    pub pod: PodSettings,
}

/// The batch component.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchPlan {
    /// Replica range.
    pub replicas: ReplicaRange,
    /// CPU utilization target, percent.
    pub target_cpu_utilization: i32,
    /// Most ids per batch request.
    pub max_items: i32,
    /// Hedging.
    pub hedging: Hedging,
    /// Container resources.
    pub resources: Resources,
    /// Pod settings: `spec.pod` merged with the component's own.
    pub pod: PodSettings,
}

/// The updater.
#[derive(Clone, Debug, PartialEq)]
pub struct UpdaterPlan {
    /// Kafka bootstrap servers.
    pub bootstrap_servers: String,
    /// Topic of product events.
    pub products_topic: String,
    /// Topic of offer events.
    pub offers_topic: String,
    /// Dead-letter topic; empty for none.
    pub dead_letter_topic: String,
    /// Consumer group.
    pub consumer_group: String,
    /// Partitions per topic.
    pub partitions: i32,
    /// Lag (messages) per replica the autoscaler aims for.
    pub lag_threshold: i64,
    /// Replica ceiling: `maxReplicas` (default: partitions), never above partitions.
    pub max_replicas: i32,
    /// Scale-down stabilization window of the lag autoscaler, seconds.
    pub scale_down_stabilization_seconds: i32,
    /// Container resources.
    pub resources: Resources,
    /// Pod settings: `spec.pod` merged with the component's own.
    pub pod: PodSettings,
    /// `spec.updater.kafka.clientSecretName`; empty for plaintext without authentication.
    pub client_secret_name: String,
    /// That Secret as read when the plan was made ([`GroupPlan::with_kafka_client`]); `None`
    /// while it is not read (or there is none).
    pub kafka_client: Option<KafkaClientPlan>,
}

/// The group's Kafka client Secret as the operator read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaClientPlan {
    /// The Secret's name.
    pub secret_name: String,
    /// Its `metadata.resourceVersion`: in the updater's pod template, so a changed Secret rolls
    /// the updater (librdkafka reads its settings once, at start).
    pub resource_version: String,
    /// Its contents, checked.
    pub secret: KafkaClientSecret,
}

/// The three Deployments of a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    /// Kafka → table.
    Updater,
    /// Single lookups.
    Products,
    /// Batch lookups fanned out to products.
    Batch,
}

impl Component {
    /// All components, in rendering order.
    pub const ALL: [Component; 3] = [Component::Updater, Component::Products, Component::Batch];

    /// Lower-case name, used in object names, labels and the `prapi` subcommand.
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Updater => "updater",
            Component::Products => "products",
            Component::Batch => "batch",
        }
    }
}

impl GroupPlan {
    /// The plan with the installation's data plane variables.
    pub fn with_env(mut self, env: &[(String, String)]) -> Self {
        self.env = env.to_vec();
        self
    }

    /// The plan with the installation's balance factor for groups that set none.
    pub fn with_default_balance_factor(mut self, factor: f64) -> Self {
        self.default_balance_factor = factor;
        self
    }

    /// The balance factor of the products pods: the group's, else the installation's. Skipper's
    /// products routes and the batch component's ring both use it.
    pub fn balance_factor(&self) -> f64 {
        self.products
            .balance_factor
            .unwrap_or(self.default_balance_factor)
    }

    /// The plan with the installation's NetworkPolicy settings (`None`: no policies).
    pub fn with_network_policy(mut self, policy: Option<NetworkPolicyPlan>) -> Self {
        self.network_policy = policy;
        self
    }

    /// The plan with the group's Kafka client Secret, as read.
    pub fn with_kafka_client(mut self, client: Option<KafkaClientPlan>) -> Self {
        self.updater.kafka_client = client;
        self
    }

    /// Name of the updater's TriggerAuthentication (KEDA), when there is a Kafka client Secret.
    pub fn trigger_authentication_name(&self) -> String {
        self.component_name(Component::Updater)
    }

    /// The plan with the installation's `--served-by-header` choice.
    pub fn with_served_by_header(mut self, on: bool) -> Self {
        self.served_by_header = on;
        self
    }

    /// The plan with the installation's store timeouts.
    pub fn with_store_timeouts(mut self, timeouts: StoreTimeouts) -> Self {
        self.store_timeouts = timeouts;
        self
    }

    /// Name of a child object: `<group>-<suffix>`.
    pub fn child_name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.owner.name)
    }

    /// Name of a component's Deployment (also its Service, PDB and autoscaler).
    pub fn component_name(&self, c: Component) -> String {
        self.child_name(c.as_str())
    }

    /// The headless products Service that batch pods discover products pods through.
    pub fn products_headless_name(&self) -> String {
        self.child_name("products-headless")
    }

    /// A component's ServiceAccount (named like its Deployment).
    pub fn service_account_name(&self, c: Component) -> String {
        self.component_name(c)
    }

    /// The RoleBinding that lets batch pods read EndpointSlices.
    pub fn endpoint_reader_name(&self) -> String {
        self.child_name("endpointslice-reader")
    }

    /// The group's ConfigMap.
    pub fn config_map_name(&self) -> String {
        self.child_name("config")
    }

    /// A component's pod settings (shared and its own, merged).
    pub fn pod(&self, c: Component) -> &PodSettings {
        match c {
            Component::Updater => &self.updater.pod,
            Component::Products => &self.products.pod,
            Component::Batch => &self.batch.pod,
        }
    }

    /// Countries as the `--countries` flag takes them: `de,at`.
    pub fn countries_flag(&self) -> String {
        self.countries.join(",")
    }
}

/// Default table and consumer group name: `prapi-<namespace>-<name>`.
pub fn default_resource_name(namespace: &str, name: &str) -> String {
    format!("prapi-{namespace}-{name}")
}
