//! The `MarketGroup` custom resource (docs/crd.md): spec with its defaults, status, and the CEL
//! rules the API server enforces.
//!
//! Every default lives in one place: the serde default functions below. The derive writes them into
//! the CRD schema (so the API server fills them in) and serde applies the same values when a manifest
//! is read offline (`prapi-operator render`). The CEL rules are evaluated by the API server and, with
//! the same rule text, client-side by [`crate::validate`].

use k8s_openapi::api::core::v1::{
    Affinity, EnvFromSource, EnvVar, LocalObjectReference, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// API group of the CRD.
pub const API_GROUP: &str = "prapi.dev";
/// API version of the CRD.
pub const API_VERSION: &str = "v1alpha1";

/// Longest group name: the longest child name is `<name>-products-headless` and Service names are
/// DNS-1035 labels of at most 63 characters.
pub const MAX_NAME_LEN: usize = 45;

/// Desired state of a market group: an isolated Product Read API deployment serving some countries.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "prapi.dev",
    version = "v1alpha1",
    kind = "MarketGroup",
    namespaced,
    status = "MarketGroupStatus",
    shortname = "mg",
    category = "prapi",
    derive = "PartialEq",
    doc = "A market group: an isolated Product Read API deployment (updater, products, batch) serving a set of countries.",
    printcolumn(
        name = "Countries",
        type_ = "string",
        json_path = ".spec.countries",
        description = "Countries served by this group"
    ),
    printcolumn(
        name = "Weight",
        type_ = "integer",
        json_path = ".spec.traffic.weight",
        description = "Traffic weight of each listed country not named in spec.traffic.countryWeights"
    ),
    printcolumn(
        name = "Actual",
        type_ = "string",
        json_path = ".status.actualWeight",
        description = "Traffic weight the routes give the group now: one figure when every country has the same, else the lowest and highest (e.g. 20-40)"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the group serves"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        description = "Why the group serves or does not"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(
        name = "Autoscaler",
        type_ = "string",
        json_path = ".status.updaterAutoscaler",
        description = "What scales the updater on its lag",
        priority = "1"
    ),
    printcolumn(
        name = "Table",
        type_ = "string",
        json_path = ".status.table.name",
        description = "The group's DynamoDB table",
        priority = "1"
    ),
    validation = Rule::new("self.metadata.name.size() <= 45").message(
        "metadata.name must be at most 45 characters (child names such as <name>-products-headless must stay DNS labels)"
    ),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message(
        "metadata.name must be a DNS-1035 label: lower-case letters, digits and '-', starting with a letter"
    ),
    validation = Rule::new("!has(self.spec.traffic) || !has(self.spec.traffic.countryWeights) || self.spec.traffic.countryWeights.all(k, self.spec.countries.exists(c, c.lowerAscii() == k))").message(
        "spec.traffic.countryWeights may only name countries of spec.countries"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct MarketGroupSpec {
    /// ISO 3166-1 alpha-2 codes of the countries this group serves (any case; stored and rendered lower-case).
    #[schemars(length(max = 250), inner(length(max = 8)))]
    #[x_kube(
        validation = Rule::new("size(self) > 0").message("spec.countries must list at least one country"),
        validation = Rule::new(crate::countries::alpha2_rule())
            .message("spec.countries must contain ISO 3166-1 alpha-2 country codes such as de or at"),
        validation = Rule::new("self.all(c, self.filter(d, d.lowerAscii() == c.lowerAscii()).size() == 1)")
            .message("spec.countries must not list a country twice (codes are compared case-insensitively)")
    )]
    pub countries: Vec<String>,

    /// Container image of the data plane; empty means the operator's default (`--default-image`).
    #[serde(default)]
    #[schemars(length(max = 512))]
    pub image: String,

    /// How much of each listed country's traffic this group takes.
    #[serde(default)]
    pub traffic: Traffic,

    /// The products component: serves single lookups from its cache.
    #[serde(default)]
    pub products: Products,

    /// The batch component: fans batch requests out to the products pods.
    #[serde(default)]
    pub batch: Batch,

    /// The updater: consumes Kafka and writes the group's table.
    #[serde(default)]
    pub updater: Updater,

    /// The group's DynamoDB table.
    #[serde(default)]
    pub dynamodb: DynamoDb,

    /// Logging of the data plane pods.
    #[serde(default)]
    pub logs: Logs,

    /// Pod settings shared by the three components (each component's `pod` overrides them).
    #[serde(default, skip_serializing_if = "PodSettings::is_empty")]
    pub pod: PodSettings,

    /// Freeze the group during an incident: while true the operator writes none of the group's
    /// children, leaves the routes of its countries as they are (their weights included) and only
    /// reports (`Suspended` condition); deleting the group still works. Setting it back to false
    /// resumes the reconcile, which then converges on the spec as it is.
    #[serde(default)]
    pub suspend: bool,
}

/// Logging of the data plane pods (docs/operations.md, "Logs").
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Logs {
    /// Line format: `Json` (one object per line, for log shippers) or `Text`.
    #[serde(default)]
    pub format: LogFormat,
    /// Which events are logged, in `RUST_LOG` syntax (`info`, `warn,prapi_dataplane=debug`); the
    /// pods read it from `PRAPI_LOG`.
    #[serde(default = "default_log_filter")]
    #[schemars(length(min = 1, max = 1024))]
    pub filter: String,
}

impl Default for Logs {
    fn default() -> Self {
        Self {
            format: LogFormat::default(),
            filter: default_log_filter(),
        }
    }
}

fn default_log_filter() -> String {
    "info".to_string()
}

/// Log line format of the data plane pods.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// Human-readable lines.
    Text,
}

/// Labels the operator sets on every pod; a pod setting may not set them (they select the pods).
pub const RESERVED_POD_LABELS: [&str; 5] = [
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
];

/// Prefix of the annotations the operator owns (`prapi.dev/config-hash`, ...).
pub const RESERVED_ANNOTATION_PREFIX: &str = "prapi.dev/";

/// Pod settings of the data plane Deployments: what a platform needs to place and wire pods
/// (variables, labels, scheduling, pull secrets). The operator's own labels, probes, security
/// context, resources and command line are not settable here, so they always win; docs/crd.md
/// ("Pod settings") gives the merge rules of `spec.pod` and a component's `pod`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodSettings {
    /// Extra environment variables of the container (names unique; `PRAPI_*` is the operator's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "env_list")]
    pub env: Vec<EnvVar>,
    /// Extra variable sources of the container (ConfigMaps, Secrets).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "list_of::<EnvFromSource, 16>")]
    pub env_from: Vec<EnvFromSource>,
    /// Extra pod labels; the `app.kubernetes.io/*` labels the operator selects pods by are refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "pod_labels")]
    pub labels: BTreeMap<String, String>,
    /// Extra pod annotations; the `prapi.dev/` prefix is the operator's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "pod_annotations")]
    pub annotations: BTreeMap<String, String>,
    /// Annotations of the component's ServiceAccount, e.g. `eks.amazonaws.com/role-arn` (each
    /// component has its own, so the updater's role may write the table while products and batch
    /// only read it).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "pod_annotations")]
    pub service_account_annotations: BTreeMap<String, String>,
    /// Node labels a pod's node must carry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "label_map")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the pods tolerate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "list_of::<Toleration, 32>")]
    #[x_kube(validation = Rule::new("self.all(t, !has(t.operator) || t.operator == 'Exists' || t.operator == 'Equal')")
        .message("tolerations[].operator must be Exists or Equal"))]
    pub tolerations: Vec<Toleration>,
    /// Node and pod (anti-)affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "undocumented::<Affinity>")]
    pub affinity: Option<Affinity>,
    /// How the pods spread over the cluster; unset keeps the operator's default (across zones,
    /// and across nodes for products and batch), `[]` spreads nothing. A constraint without a
    /// `labelSelector` gets the component's pod selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "list_of::<TopologySpreadConstraint, 8>")]
    #[x_kube(
        validation = Rule::new("self.all(c, c.maxSkew >= 1)")
            .message("topologySpreadConstraints[].maxSkew must be at least 1"),
        validation = Rule::new("self.all(c, c.whenUnsatisfiable == 'DoNotSchedule' || c.whenUnsatisfiable == 'ScheduleAnyway')")
            .message("topologySpreadConstraints[].whenUnsatisfiable must be DoNotSchedule or ScheduleAnyway")
    )]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    /// PriorityClass of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub priority_class_name: Option<String>,
    /// Secrets holding registry credentials for the image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "list_of::<LocalObjectReference, 16>")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
}

impl PodSettings {
    /// Nothing set.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// The schema of a Kubernetes type without its field descriptions: the pod settings embed several
/// large core types four times (shared and per component), and their descriptions alone would
/// take the CRD past the 256 KiB that client-side `kubectl apply` can store in its annotation.
/// `kubectl explain pod.spec` documents them.
fn undocumented<T: JsonSchema>(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                map.remove("description");
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut value = generator.subschema_for::<T>().to_value();
    strip(&mut value);
    schemars::Schema::try_from(value)
        .expect("a schema stays a JSON object without its descriptions")
}

/// A list of at most `MAX` Kubernetes `T`s (see [`undocumented`]).
fn list_of<T: JsonSchema, const MAX: usize>(
    generator: &mut schemars::SchemaGenerator,
) -> schemars::Schema {
    let item = undocumented::<T>(generator);
    schemars::json_schema!({"type": "array", "maxItems": MAX, "items": item})
}

/// CEL rule refusing the operator's pod labels in a label map.
fn reserved_labels_rule() -> String {
    let keys = RESERVED_POD_LABELS
        .iter()
        .map(|k| format!("'{k}'"))
        .collect::<Vec<_>>()
        .join(", ");
    format!("[{keys}].all(k, !(k in self))")
}

/// Label values as Kubernetes takes them: at most 63 characters, alphanumeric at both ends.
const LABEL_VALUE_PATTERN: &str = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";

fn label_map(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 64,
        "additionalProperties": {"type": "string", "maxLength": 63, "pattern": LABEL_VALUE_PATTERN}
    })
}

fn pod_labels(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = label_map(generator);
    schema.insert(
        "x-kubernetes-validations".into(),
        serde_json::json!([{
            "rule": reserved_labels_rule(),
            "message": "pod.labels must not set the operator's labels (app.kubernetes.io/name, instance, component, managed-by, part-of): they select the group's pods"
        }]),
    );
    schema
}

fn pod_annotations(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 64,
        "additionalProperties": {"type": "string", "maxLength": 4096},
        "x-kubernetes-validations": [{
            "rule": format!("self.all(k, !k.startsWith('{RESERVED_ANNOTATION_PREFIX}'))"),
            "message": format!("annotations must not use the {RESERVED_ANNOTATION_PREFIX} prefix: the operator owns it")
        }]
    })
}

/// Environment variables as a list keyed by name (the API server refuses a name given twice).
fn env_list(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let item = undocumented::<EnvVar>(generator);
    schemars::json_schema!({
        "type": "array",
        "maxItems": 64,
        "items": item,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["name"],
        "x-kubernetes-validations": [{
            "rule": "self.all(e, !e.name.startsWith('PRAPI_'))",
            "message": "pod.env must not set PRAPI_* variables: they carry the operator's own settings"
        }]
    })
}

/// Traffic share of the group.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Traffic {
    /// Share of each listed country: weight / sum of the weights of all groups serving that country.
    #[serde(default = "default_weight")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 100")
        .message("traffic.weight must be an integer between 0 and 100"))]
    pub weight: i32,

    /// Non-empty: only requests with `X-Traffic-Segment: <segment>` reach this group.
    #[serde(default)]
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self == '' || (self.size() <= 63 && self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'))")
        .message("traffic.segment must be empty or a DNS label: at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit"))]
    pub segment: String,

    /// Weight of single countries, over `weight` (a country not named here takes `weight`): moving
    /// one country between groups changes only the routes, not the pods (editing `countries`
    /// restarts every component). Keys are countries of `spec.countries`, in lower case.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "country_weights")]
    pub country_weights: BTreeMap<String, i32>,

    /// Host names the routes of the group's countries match (RouteGroup `hosts`, HTTPRoute
    /// `hostnames`); empty: the operator's `--route-hosts`, and with neither, any host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(max = 253)))]
    #[x_kube(validation = Rule::new(format!("self.all(h, h.matches('{HOST_PATTERN}'))"))
        .message("traffic.hosts must be lower-case DNS names such as api.example.com, optionally starting with *."))]
    pub hosts: Vec<String>,
}

/// A route host name: a lower-case DNS name, optionally a wildcard `*.` in front (what both
/// Skipper's `hosts` and Gateway API's `hostnames` take). Character classes instead of escapes,
/// so the pattern needs no quoting inside a CEL string.
pub const HOST_PATTERN: &str =
    "^([*][.])?[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

impl Default for Traffic {
    fn default() -> Self {
        Self {
            weight: default_weight(),
            segment: String::new(),
            country_weights: BTreeMap::new(),
            hosts: Vec::new(),
        }
    }
}

fn country_weights(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 250,
        "additionalProperties": {"type": "integer", "format": "int32"},
        "x-kubernetes-validations": [{
            "rule": "self.all(c, self[c] >= 0 && self[c] <= 100)",
            "message": "traffic.countryWeights values must be integers between 0 and 100"
        }, {
            "rule": "self.all(c, c.matches('^[a-z]{2}$'))",
            "message": "traffic.countryWeights keys must be lower-case country codes such as de (so that no country is named twice)"
        }]
    })
}

fn default_weight() -> i32 {
    100
}

/// A replica range for an autoscaled component.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("self.min >= 1").message("replicas.min must be at least 1"),
    validation = Rule::new("self.min <= self.max").message("replicas.min must not be greater than replicas.max"),
    validation = Rule::new("self.max <= 1000").message("replicas.max must be at most 1000")
)]
pub struct Replicas {
    /// Fewest replicas (the autoscaler's floor).
    #[serde(default = "default_min_replicas")]
    pub min: i32,
    /// Most replicas (the autoscaler's ceiling).
    pub max: i32,
}

fn default_min_replicas() -> i32 {
    2
}

/// The products component.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(self.resources.limits) || !('memory' in self.resources.limits) || !isQuantity(self.cache.maxBytes) || quantity(string(self.resources.limits['memory'])).isGreaterThan(quantity(self.cache.maxBytes))"
).message("products.resources.limits.memory must be greater than products.cache.maxBytes (the cache lives in the pod's memory)"))]
pub struct Products {
    /// Replica range of the products Deployment.
    #[serde(default = "default_products_replicas")]
    pub replicas: Replicas,
    /// Average CPU utilization (percent of requests) the autoscaler aims for.
    #[serde(default = "default_cpu_target", rename = "targetCPUUtilization")]
    #[x_kube(validation = Rule::new("self >= 10 && self <= 100")
        .message("targetCPUUtilization must be between 10 and 100 (percent)"))]
    pub target_cpu_utilization: i32,
    /// The pod-local cache.
    #[serde(default)]
    pub cache: Cache,
    /// A products pod whose load exceeds this many times the average is passed over for the next
    /// owner of a product: used both by Skipper's `consistentHashBalanceFactor` on the products
    /// routes and by the batch component's ring. Unset: the operator's `--balance-factor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1.0 && self <= 100.0")
        .message("products.balanceFactor must be between 1 and 100 (1.25 lets a pod take 25% more than the average)"))]
    pub balance_factor: Option<f64>,
    /// Container resources of a products pod.
    #[serde(default = "default_products_resources")]
    pub resources: Resources,
    /// Pod settings of this component, over `spec.pod` (docs/crd.md, "Pod settings").
    #[serde(default, skip_serializing_if = "PodSettings::is_empty")]
    pub pod: PodSettings,
}

impl Default for Products {
    fn default() -> Self {
        Self {
            replicas: default_products_replicas(),
            target_cpu_utilization: default_cpu_target(),
            cache: Cache::default(),
            balance_factor: None,
            resources: default_products_resources(),
            pod: PodSettings::default(),
        }
    }
}

fn default_products_replicas() -> Replicas {
    Replicas { min: 2, max: 20 }
}

fn default_cpu_target() -> i32 {
    70
}

fn resources(cpu: &str, memory: &str) -> Resources {
    Resources {
        requests: BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.to_string())),
            ("memory".to_string(), Quantity(memory.to_string())),
        ]),
        limits: BTreeMap::from([("memory".to_string(), Quantity(memory.to_string()))]),
    }
}

/// Compute resources of a component's container: a Kubernetes container's `resources` without claims.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(
    validation = Rule::new(
        "!has(self.requests) || !has(self.limits) || !('cpu' in self.requests) || !('cpu' in self.limits) || quantity(string(self.requests['cpu'])).compareTo(quantity(string(self.limits['cpu']))) <= 0"
    ).message("resources.requests.cpu must not be greater than resources.limits.cpu"),
    validation = Rule::new(
        "!has(self.requests) || !has(self.limits) || !('memory' in self.requests) || !('memory' in self.limits) || quantity(string(self.requests['memory'])).compareTo(quantity(string(self.limits['memory']))) <= 0"
    ).message("resources.requests.memory must not be greater than resources.limits.memory")
)]
pub struct Resources {
    /// Resources the scheduler reserves, e.g. `cpu: 500m`, `memory: 1Gi`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "quantity_map")]
    pub requests: BTreeMap<String, Quantity>,
    /// Most the container may use, e.g. `memory: 1Gi`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "quantity_map")]
    pub limits: BTreeMap<String, Quantity>,
}

/// Pattern of a Kubernetes quantity (as the API server's own CRDs declare it).
pub const QUANTITY_PATTERN: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

/// Schema of a resource list: resource name to quantity (int or string). Quantities are checked
/// by pattern, not CEL: a comprehension over a map costs more than the API server's CEL budget.
fn quantity_map(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 16,
        "additionalProperties": {
            "x-kubernetes-int-or-string": true,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN
        }
    })
}

fn default_products_resources() -> Resources {
    resources("500m", "1Gi")
}

/// Cache of the products pods (docs/api.md, "Caching and freshness").
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.ttlSeconds >= 1").message("cache.ttlSeconds must be at least 1"),
    validation = Rule::new("self.staleSeconds >= 0").message("cache.staleSeconds must not be negative"),
    validation = Rule::new("self.staleSeconds < self.ttlSeconds").message("cache.staleSeconds must be less than cache.ttlSeconds")
)]
pub struct Cache {
    /// Seconds an entry lives.
    #[serde(default = "default_ttl")]
    pub ttl_seconds: i32,
    /// The last seconds of the TTL in which a hit is served at once and refreshed in the background.
    #[serde(default = "default_stale")]
    pub stale_seconds: i32,
    /// Size budget of the cache, a Kubernetes quantity such as 512Mi.
    #[serde(default = "default_max_bytes")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))")
        .message("cache.maxBytes must be a positive quantity such as 512Mi"))]
    pub max_bytes: String,
}

impl Default for Cache {
    fn default() -> Self {
        Self {
            ttl_seconds: default_ttl(),
            stale_seconds: default_stale(),
            max_bytes: default_max_bytes(),
        }
    }
}

fn default_ttl() -> i32 {
    60
}

fn default_stale() -> i32 {
    15
}

fn default_max_bytes() -> String {
    "512Mi".to_string()
}

/// The batch component.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Batch {
    /// Replica range of the batch Deployment.
    #[serde(default = "default_batch_replicas")]
    pub replicas: Replicas,
    /// Average CPU utilization (percent of requests) the autoscaler aims for.
    #[serde(default = "default_cpu_target", rename = "targetCPUUtilization")]
    #[x_kube(validation = Rule::new("self >= 10 && self <= 100")
        .message("targetCPUUtilization must be between 10 and 100 (percent)"))]
    pub target_cpu_utilization: i32,
    /// Most ids in one batch request.
    #[serde(default = "default_max_items")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100")
        .message("batch.maxItems must be between 1 and 100"))]
    pub max_items: i32,
    /// Hedging of slow lookups on products pods (off by default).
    #[serde(default)]
    pub hedging: Hedging,
    /// Container resources of a batch pod.
    #[serde(default = "default_batch_resources")]
    pub resources: Resources,
    /// Pod settings of this component, over `spec.pod` (docs/crd.md, "Pod settings").
    #[serde(default, skip_serializing_if = "PodSettings::is_empty")]
    pub pod: PodSettings,
}

impl Default for Batch {
    fn default() -> Self {
        Self {
            replicas: default_batch_replicas(),
            target_cpu_utilization: default_cpu_target(),
            max_items: default_max_items(),
            hedging: Hedging::default(),
            resources: default_batch_resources(),
            pod: PodSettings::default(),
        }
    }
}

/// Hedging of the batch component (docs/load-balancing.md, "Hedging"): a lookup slower than a
/// latency percentile also asks the next owner, within a budget of extra requests.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Hedging {
    /// Whether slow lookups are hedged.
    #[serde(default)]
    pub enabled: bool,
    /// Latency percentile (percent) after which a lookup is hedged.
    #[serde(default = "default_hedge_percentile")]
    #[x_kube(validation = Rule::new("self >= 50 && self <= 99")
        .message("batch.hedging.percentile must be between 50 and 99 (percent)"))]
    pub percentile: i32,
    /// Most extra requests hedging may add, in percent of the lookups.
    #[serde(default = "default_hedge_budget")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 5")
        .message("batch.hedging.budgetPercent must be between 1 and 5"))]
    pub budget_percent: i32,
}

impl Default for Hedging {
    fn default() -> Self {
        Self {
            enabled: false,
            percentile: default_hedge_percentile(),
            budget_percent: default_hedge_budget(),
        }
    }
}

fn default_hedge_percentile() -> i32 {
    95
}

fn default_hedge_budget() -> i32 {
    5
}

fn default_batch_replicas() -> Replicas {
    Replicas { min: 2, max: 10 }
}

fn default_max_items() -> i32 {
    100
}

fn default_batch_resources() -> Resources {
    resources("250m", "256Mi")
}

/// The updater: Kafka consumer writing the group's table, scaled on consumer lag.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.maxReplicas) || self.maxReplicas >= 1").message("updater.maxReplicas must be at least 1"),
    validation = Rule::new("!has(self.maxReplicas) || self.maxReplicas <= self.kafka.partitions")
        .message("updater.maxReplicas must not be greater than updater.kafka.partitions (extra consumers would idle)")
)]
pub struct Updater {
    /// Where the events come from.
    #[serde(default)]
    pub kafka: Kafka,
    /// Consumer lag (messages) one replica is expected to work off; the autoscaler's target per replica.
    #[serde(default = "default_lag_threshold")]
    #[x_kube(validation = Rule::new("self >= 1").message("updater.lagThreshold must be at least 1"))]
    pub lag_threshold: i64,
    /// Most updater replicas; defaults to the number of partitions and is never above it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<i32>,
    /// How long the lag must have asked for fewer replicas before the autoscaler removes any
    /// (every scale step rebalances the consumer group, so it should not follow each dip).
    #[serde(default = "default_scale_down_stabilization_seconds")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 3600")
        .message("updater.scaleDownStabilizationSeconds must be between 0 and 3600"))]
    pub scale_down_stabilization_seconds: i32,
    /// Container resources of an updater pod.
    #[serde(default = "default_updater_resources")]
    pub resources: Resources,
    /// Pod settings of this component, over `spec.pod` (docs/crd.md, "Pod settings").
    #[serde(default, skip_serializing_if = "PodSettings::is_empty")]
    pub pod: PodSettings,
}

impl Default for Updater {
    fn default() -> Self {
        Self {
            kafka: Kafka::default(),
            lag_threshold: default_lag_threshold(),
            max_replicas: None,
            scale_down_stabilization_seconds: default_scale_down_stabilization_seconds(),
            resources: default_updater_resources(),
            pod: PodSettings::default(),
        }
    }
}

fn default_lag_threshold() -> i64 {
    5000
}

/// Kubernetes' own default for an HPA's scale-down window.
fn default_scale_down_stabilization_seconds() -> i32 {
    300
}

fn default_updater_resources() -> Resources {
    resources("250m", "256Mi")
}

/// Kafka source of the updater.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Kafka {
    /// Bootstrap servers, `host:port[,host:port...]`.
    #[serde(default = "default_bootstrap")]
    #[schemars(length(max = 1024))]
    #[x_kube(validation = Rule::new("self != ''").message("updater.kafka.bootstrapServers must not be empty"))]
    pub bootstrap_servers: String,
    /// Topic of product events.
    #[serde(default = "default_products_topic")]
    #[schemars(length(max = 249))]
    #[x_kube(validation = Rule::new("self.matches('^[a-zA-Z0-9._-]{1,249}$')")
        .message("updater.kafka.productsTopic must be a Kafka topic name: 1-249 of [a-zA-Z0-9._-]"))]
    pub products_topic: String,
    /// Topic of offer events.
    #[serde(default = "default_offers_topic")]
    #[schemars(length(max = 249))]
    #[x_kube(validation = Rule::new("self.matches('^[a-zA-Z0-9._-]{1,249}$')")
        .message("updater.kafka.offersTopic must be a Kafka topic name: 1-249 of [a-zA-Z0-9._-]"))]
    pub offers_topic: String,
    /// Topic the updater sends messages it cannot parse to; empty: none (they are counted and logged).
    #[serde(default)]
    #[schemars(length(max = 249))]
    #[x_kube(validation = Rule::new("self == '' || self.matches('^[a-zA-Z0-9._-]{1,249}$')")
        .message("updater.kafka.deadLetterTopic must be empty or a Kafka topic name: 1-249 of [a-zA-Z0-9._-]"))]
    pub dead_letter_topic: String,
    /// Consumer group; empty means `prapi-<namespace>-<name>`.
    #[serde(default)]
    #[schemars(length(max = 255))]
    pub consumer_group: String,
    /// Partitions of each topic: the most updater replicas that can do work.
    #[serde(default = "default_partitions")]
    #[x_kube(validation = Rule::new("self >= 1").message("updater.kafka.partitions must be at least 1"))]
    pub partitions: i32,
    /// Secret in the group's namespace with the Kafka client's TLS and SASL settings
    /// (`security.protocol`, `sasl.*`, `ca.crt`, `tls.crt`, `tls.key`; docs/crd.md, "Kafka
    /// security"); empty: plaintext without authentication.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self == '' || self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')")
        .message("updater.kafka.clientSecretName must be empty or a Secret name: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"))]
    pub client_secret_name: String,
}

impl Default for Kafka {
    fn default() -> Self {
        Self {
            bootstrap_servers: default_bootstrap(),
            products_topic: default_products_topic(),
            offers_topic: default_offers_topic(),
            dead_letter_topic: String::new(),
            consumer_group: String::new(),
            partitions: default_partitions(),
            client_secret_name: String::new(),
        }
    }
}

fn default_bootstrap() -> String {
    "kafka:9092".to_string()
}

fn default_products_topic() -> String {
    "products".to_string()
}

fn default_offers_topic() -> String {
    "offers".to_string()
}

fn default_partitions() -> i32 {
    12
}

/// The group's DynamoDB table (its lifecycle is managed by the store step).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DynamoDb {
    /// Table name; empty means `prapi-<namespace>-<name>`.
    #[serde(default)]
    #[schemars(length(max = 255))]
    #[x_kube(validation = Rule::new("self == '' || self.matches('^[a-zA-Z0-9_.-]{3,255}$')")
        .message("dynamodb.table must be empty or a DynamoDB table name: 3-255 of [a-zA-Z0-9_.-]"))]
    pub table: String,
    /// Capacity mode of the table.
    #[serde(default)]
    pub billing_mode: BillingMode,
    /// Read capacity range (Provisioned mode).
    #[serde(default)]
    pub read: Capacity,
    /// Write capacity range (Provisioned mode).
    #[serde(default)]
    pub write: Capacity,
    /// Write capacity floor while the updater catches up on a new table.
    #[serde(default = "default_bootstrap_wcu")]
    #[x_kube(validation = Rule::new("self >= 1").message("dynamodb.bootstrapWriteCapacity must be at least 1"))]
    pub bootstrap_write_capacity: i64,
    /// What happens to the table when the group is deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

impl Default for DynamoDb {
    fn default() -> Self {
        Self {
            table: String::new(),
            billing_mode: BillingMode::default(),
            read: Capacity::default(),
            write: Capacity::default(),
            bootstrap_write_capacity: default_bootstrap_wcu(),
            deletion_policy: DeletionPolicy::default(),
        }
    }
}

fn default_bootstrap_wcu() -> i64 {
    4000
}

/// DynamoDB capacity mode.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BillingMode {
    /// Provisioned capacity, autoscaled between `min` and `max`.
    #[default]
    Provisioned,
    /// On-demand capacity.
    PayPerRequest,
}

/// What deleting the group does to its table.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Keep the table.
    #[default]
    Retain,
    /// Delete the table.
    Delete,
}

/// A provisioned capacity range with its autoscaling target.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.min >= 1").message("capacity min must be at least 1"),
    validation = Rule::new("self.min <= self.max").message("capacity min must not be greater than max"),
    validation = Rule::new("self.max <= 40000").message("capacity max must be at most 40000 (DynamoDB's per-table default quota)"),
    validation = Rule::new("self.targetUtilization >= 20 && self.targetUtilization <= 90")
        .message("targetUtilization must be between 20 and 90 (percent, DynamoDB's range)")
)]
pub struct Capacity {
    /// Fewest capacity units.
    #[serde(default = "default_capacity_min")]
    pub min: i64,
    /// Most capacity units.
    #[serde(default = "default_capacity_max")]
    pub max: i64,
    /// Consumed/provisioned percentage the autoscaling aims for.
    #[serde(default = "default_capacity_target")]
    pub target_utilization: i32,
}

impl Default for Capacity {
    fn default() -> Self {
        Self {
            min: default_capacity_min(),
            max: default_capacity_max(),
            target_utilization: default_capacity_target(),
        }
    }
}

fn default_capacity_min() -> i64 {
    5
}

fn default_capacity_max() -> i64 {
    1000
}

fn default_capacity_target() -> i32 {
    70
}

/// Observed state of a market group.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MarketGroupStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Progressing, Degraded, Suspended, WorkloadsReady, StoreReady, RoutingReady,
    /// AutoscalingActive.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".to_string()]))]
    pub conditions: Vec<Condition>,
    /// Replicas per component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub components: Option<ComponentsStatus>,
    /// Which autoscaler drives the updater: `ScaledObject` (KEDA) or `HorizontalPodAutoscaler`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updater_autoscaler: Option<String>,
    /// The group's table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<TableStatus>,
    /// Consumer lag of the updater's group, in messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updater_lag: Option<i64>,
    /// Desired and actual traffic weight per country.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["country".to_string()]))]
    pub traffic: Vec<CountryTraffic>,
    /// The actual weights of `traffic` in one figure, for `kubectl get`: `40` when every country
    /// whose weight is known has 40, `20-40` (lowest-highest) when they differ; absent while no
    /// country's actual weight is known (routing off, or no route applied yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual_weight: Option<String>,
    /// The bootstrap gate: which consumer group the updater reads with, and for which countries
    /// the table holds the catalogue (those are routed; the others wait).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<BootstrapStatus>,
    /// The operator's record of its last apply of the group's objects: one hash of its
    /// server-side-apply entries in their managedFields. An operator process that starts (a
    /// restart, a new leader) and finds the objects still so sends them nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<String>,
}

/// The bootstrap gate's memory (docs/operator.md, "The bootstrap gate"): a country is routed once
/// the updater has caught up after it started reading for it, and stays routed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapStatus {
    /// The consumer group the updater reads with (the operator renders it): the spec's, with
    /// `-replay-<n>` appended once the country set has grown `n` times.
    pub consumer_group: String,
    /// How many times a country was added: each addition re-reads the topics from the start under
    /// a new consumer group, so the added country's offers reach the table.
    #[serde(default)]
    pub replay: i64,
    /// The countries the consumer group reads for (sorted).
    #[serde(default)]
    pub countries: Vec<String>,
    /// The countries whose offers the table holds (sorted): routed, and never gated again while
    /// they stay in `spec.countries`.
    #[serde(default)]
    pub bootstrapped: Vec<String>,
}

/// Replicas of the three components.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ComponentsStatus {
    /// The updater Deployment.
    pub updater: ComponentStatus,
    /// The products Deployment.
    pub products: ComponentStatus,
    /// The batch Deployment.
    pub batch: ComponentStatus,
}

/// Replicas of one component's Deployment.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// Replicas the Deployment wants (set by its autoscaler).
    pub desired: i32,
    /// Pods that exist.
    pub replicas: i32,
    /// Pods that are ready.
    pub ready: i32,
    /// Pods running the current template.
    pub updated: i32,
    /// Pods available to serve.
    pub available: i32,
    /// The minimum the operator gives the component's HPA now: the spec's, raised while a traffic
    /// shift moves more of a country to the group (products and batch only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hpa_floor: Option<i32>,
}

/// The group's table as last observed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TableStatus {
    /// Table name.
    pub name: String,
    /// DynamoDB table status (ACTIVE, CREATING, ...), once observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Provisioned read capacity units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_capacity: Option<i64>,
    /// Provisioned write capacity units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_capacity: Option<i64>,
}

/// Traffic weight of one country.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CountryTraffic {
    /// Country code.
    pub country: String,
    /// Percent of the country's traffic this group should take.
    pub desired: i32,
    /// Percent the applied route gives it; absent until the group is Ready and the route applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual: Option<i32>,
    /// Why actual differs from desired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
