//! Command line of `prapi-operator` (docs/operator.md): `run | crd | render -f FILE`. Every flag
//! also reads the environment variable `PRAPI_<FLAG>`.

use crate::plan::GroupPlan;
use crate::render::routing::SkipperLifo;
use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use prapi_common::names::dns_label;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Image used when a MarketGroup does not name one.
pub const DEFAULT_IMAGE: &str = concat!("prapi:", env!("CARGO_PKG_VERSION"));

/// `prapi-operator`: reconciles MarketGroups into running Product Read API deployments.
#[derive(Debug, Parser)]
#[command(name = "prapi-operator", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the operator against the cluster of the current kubeconfig (or in-cluster config).
    Run(Box<RunArgs>),
    /// Print the MarketGroup CustomResourceDefinition as YAML.
    Crd,
    /// Print every object the operator would create for a MarketGroup manifest, offline.
    Render(RenderArgs),
}

/// How the updater is scaled on consumer lag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum UpdaterAutoscalerChoice {
    /// KEDA ScaledObject when the ScaledObject API is served, else an HPA on the External metric.
    Auto,
    /// Always a KEDA ScaledObject.
    Keda,
    /// Always an HPA on the External lag metric.
    Hpa,
}

/// Whether each group gets a Prometheus Operator PodMonitor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PodMonitorChoice {
    /// A PodMonitor when the PodMonitor API (monitoring.coreos.com/v1) is served.
    Auto,
    /// Always a PodMonitor (the reconcile fails where the API is not served).
    On,
    /// No PodMonitor; ones made before are deleted.
    Off,
}

/// Whether each country's HTTPRoute gets an Envoy Gateway BackendTrafficPolicy (consistent hash).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendTrafficPolicyChoice {
    /// A policy when the BackendTrafficPolicy API (gateway.envoyproxy.io/v1alpha1) is served.
    Auto,
    /// Always a policy (the route step fails where the API is not served).
    On,
    /// No policy; ones made before are deleted.
    Off,
}

/// Which routes the operator writes across groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RoutingChoice {
    /// Gateway API HTTPRoutes (needs --gateway).
    GatewayApi,
    /// Skipper RouteGroups.
    Skipper,
    /// No routes.
    None,
}

impl RoutingChoice {
    /// The renderer's provider.
    pub fn provider(self) -> crate::render::routing::Provider {
        use crate::render::routing::Provider;
        match self {
            RoutingChoice::GatewayApi => Provider::GatewayApi,
            RoutingChoice::Skipper => Provider::Skipper,
            RoutingChoice::None => Provider::None,
        }
    }
}

/// Whether the operator manages the groups' DynamoDB tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StoreChoice {
    /// DynamoDB tables and Application Auto Scaling through the AWS SDK (endpoints, region and
    /// credentials from the SDK's standard environment).
    Aws,
    /// Tables are managed elsewhere; no StoreReady condition.
    None,
}

/// Parses `--balance-factor`: a number from 1 to 100, as `spec.products.balanceFactor` allows.
pub fn parse_balance_factor(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(f) if (1.0..=100.0).contains(&f) => Ok(f),
        _ => Err(format!(
            "{s:?} is not a balance factor: a number from 1 to 100, e.g. 1.25"
        )),
    }
}

/// Parses a `--route-hosts` entry: a lower-case DNS name, optionally starting with `*.`.
pub fn parse_route_host(s: &str) -> Result<String, String> {
    let (wildcard, rest) = match s.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    if s.len() <= 253 && rest.split('.').all(dns_label) {
        Ok(format!("{}{rest}", if wildcard { "*." } else { "" }))
    } else {
        Err(format!(
            "{s:?} is not a host name such as api.example.com or *.example.com"
        ))
    }
}

/// Parses a data plane variable, `NAME=VALUE`. Names follow Kubernetes' rule for environment
/// variables; the operator's own `PRAPI_*` variables cannot be overridden this way.
pub fn parse_env_var(s: &str) -> Result<(String, String), String> {
    let Some((name, value)) = s.split_once('=') else {
        return Err(format!("expected NAME=VALUE, got {s:?}"));
    };
    let valid_name = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || "-._".contains(c))
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
    if !valid_name {
        return Err(format!(
            "{name:?} is not a valid environment variable name (letters, digits, '-', '.', '_'; not starting with a digit)"
        ));
    }
    if name.starts_with("PRAPI_") {
        return Err(format!(
            "{name}: PRAPI_* variables are the operator's own (set them through the MarketGroup)"
        ));
    }
    Ok((name.to_string(), value.to_string()))
}

/// Parses a namespace name (an RFC 1123 label).
pub fn parse_namespace(s: &str) -> Result<String, String> {
    if dns_label(s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a namespace name (lower-case letters, digits and '-', at most 63)"
        ))
    }
}

/// Parses `NAMESPACE/NAME`.
pub fn parse_gateway(s: &str) -> Result<(String, String), String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_string(), name.to_string()))
        }
        _ => Err(format!("expected NAMESPACE/NAME, got {s:?}")),
    }
}

pub use prapi_common::logs::LogFormat;

/// Settings of this installation that every group's data plane pods get (`run` and `render`
/// take the same, so an offline render shows what the operator applies).
#[derive(Debug, Clone, Default, Args)]
pub struct DataPlaneArgs {
    /// A variable every data plane container gets, `NAME=VALUE` (repeatable; one per line in the
    /// environment variable): settings of this installation such as `AWS_REGION` or AWS service
    /// endpoints. Not for secrets (they end up in the Deployments); give pods cloud credentials
    /// through their ServiceAccount instead.
    #[arg(long = "data-plane-env", env = "PRAPI_DATA_PLANE_ENV", value_name = "NAME=VALUE", value_delimiter = '\n', value_parser = parse_env_var)]
    pub data_plane_env: Vec<(String, String)>,
    /// Products and batch pods name themselves (their pod name) in an `X-Served-By` header on
    /// every API response: for checking where the ingress places ids. Off by default (it tells
    /// clients how deployments are laid out).
    #[arg(long, env = "PRAPI_SERVED_BY_HEADER")]
    pub served_by_header: bool,
    /// Primary DynamoDB read timeout of the products pods, in milliseconds (their
    /// `--read-timeout-ms`); unset: the data plane's default, sized for DynamoDB. Raise it for a
    /// slower store such as a local DynamoDB emulator.
    #[arg(long, env = "PRAPI_STORE_READ_TIMEOUT_MS", value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub store_read_timeout_ms: Option<u64>,
    /// Fallback DynamoDB read timeout of the products pods, in milliseconds (their
    /// `--fallback-read-timeout-ms`); unset: the data plane's default.
    #[arg(long, env = "PRAPI_STORE_FALLBACK_READ_TIMEOUT_MS", value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub store_fallback_read_timeout_ms: Option<u64>,
}

impl DataPlaneArgs {
    /// The group's plan with these settings.
    pub fn apply(&self, plan: GroupPlan) -> GroupPlan {
        plan.with_env(&self.data_plane_env)
            .with_served_by_header(self.served_by_header)
            .with_store_timeouts(crate::plan::StoreTimeouts {
                read_ms: self.store_read_timeout_ms,
                fallback_read_ms: self.store_fallback_read_timeout_ms,
            })
    }
}

/// `prapi-operator run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Address of the HTTP server for /healthz, /readyz and /metrics.
    #[arg(long, env = "PRAPI_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Image for MarketGroups whose spec.image is empty.
    #[arg(long, env = "PRAPI_DEFAULT_IMAGE", default_value = DEFAULT_IMAGE)]
    pub default_image: String,
    /// Settings of this installation every group's data plane gets.
    #[command(flatten)]
    pub data_plane: DataPlaneArgs,
    /// The updater's autoscaler: auto-detect KEDA, or force one.
    #[arg(long, env = "PRAPI_UPDATER_AUTOSCALER", value_enum, default_value_t = UpdaterAutoscalerChoice::Auto)]
    pub updater_autoscaler: UpdaterAutoscalerChoice,
    /// A Prometheus Operator PodMonitor per group scraping its pods: auto-detect the
    /// PodMonitor API, or force it on or off.
    #[arg(long, env = "PRAPI_POD_MONITOR", value_enum, default_value_t = PodMonitorChoice::Auto)]
    pub pod_monitor: PodMonitorChoice,
    /// How long an answer of discovery (are KEDA, the PodMonitor API, Envoy Gateway's
    /// BackendTrafficPolicy served?) is kept: an add-on installed or removed is noticed by the
    /// first reconcile after that. 0 asks in every reconcile.
    #[arg(long, env = "PRAPI_DISCOVERY_CACHE_SECONDS", default_value_t = 10)]
    pub discovery_cache_seconds: u64,
    /// Reconcile the MarketGroups of these namespaces only (comma-separated or repeated); none:
    /// every namespace. Each listed namespace needs the operator's Role there (the chart's
    /// `watchNamespaces`).
    #[arg(long, env = "PRAPI_WATCH_NAMESPACES", value_delimiter = ',', value_parser = parse_namespace)]
    pub watch_namespaces: Vec<String>,
    /// Take part in leader election (only the leader reconciles).
    #[arg(long, env = "PRAPI_LEADER_ELECTION", default_value_t = true, action = ArgAction::Set)]
    pub leader_election: bool,
    /// Name of the coordination.k8s.io Lease used for leader election.
    #[arg(long, env = "PRAPI_LEASE_NAME", default_value = "prapi-operator")]
    pub lease_name: String,
    /// Namespace of the Lease (default: $POD_NAMESPACE, else `default`).
    #[arg(long, env = "PRAPI_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Seconds a leader's lease lasts without renewal: the failover time after a crash.
    #[arg(long, env = "PRAPI_LEASE_DURATION_SECONDS", default_value_t = 10)]
    pub lease_duration_seconds: u64,
    /// The leader renews this many seconds before its lease expires.
    #[arg(long, env = "PRAPI_LEASE_GRACE_SECONDS", default_value_t = 3)]
    pub lease_grace_seconds: u64,
    /// Identity in leader election and events (default: $HOSTNAME-<pid>).
    #[arg(long, env = "PRAPI_IDENTITY")]
    pub identity: Option<String>,
    /// Seconds between periodic re-checks of a group that is otherwise unchanged.
    #[arg(long, env = "PRAPI_RESYNC_SECONDS", default_value_t = 300)]
    pub resync_seconds: u64,
    /// Most MarketGroups reconciled at once (in each namespace of --watch-namespaces).
    #[arg(long, env = "PRAPI_CONCURRENCY", default_value_t = 8)]
    pub concurrency: u16,
    /// Log format.
    #[arg(long, env = "PRAPI_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Routes across groups: Gateway API HTTPRoutes, Skipper RouteGroups, or none.
    #[arg(long, env = "PRAPI_ROUTING", value_enum, default_value_t = RoutingChoice::None)]
    pub routing: RoutingChoice,
    /// The Gateway HTTPRoutes attach to, `NAMESPACE/NAME` (with --routing gateway-api).
    #[arg(long, env = "PRAPI_GATEWAY", value_parser = parse_gateway)]
    pub gateway: Option<(String, String)>,
    /// Balance factor of the products pods of groups that set no `spec.products.balanceFactor`:
    /// Skipper's consistentHashBalanceFactor on their routes and their batch component's ring.
    #[arg(long, env = "PRAPI_BALANCE_FACTOR", default_value_t = crate::render::routing::DEFAULT_BALANCE_FACTOR, value_parser = parse_balance_factor)]
    pub balance_factor: f64,
    /// Host names of the routes of countries whose groups set no `spec.traffic.hosts`
    /// (comma-separated); none: the routes match any host.
    #[arg(long, env = "PRAPI_ROUTE_HOSTS", value_delimiter = ',', value_parser = parse_route_host)]
    pub route_hosts: Vec<String>,
    /// Whether the operator manages the groups' DynamoDB tables and their autoscaling.
    #[arg(long, env = "PRAPI_STORE", value_enum, default_value_t = StoreChoice::None)]
    pub store: StoreChoice,
    /// The bootstrap gate: a group is routed for a country once its updater's consumer group is
    /// at most this many messages behind after it started reading for the country (and stays
    /// routed); docs/operator.md, "The bootstrap gate".
    #[arg(long, env = "PRAPI_BOOTSTRAP_MAX_LAG", default_value_t = crate::gate::DEFAULT_MAX_LAG, value_parser = clap::value_parser!(i64).range(0..))]
    pub bootstrap_max_lag: i64,
    /// Serve the updaters' consumer lag as `external.metrics.k8s.io/v1beta1` (the aggregated
    /// API the updater HPA reads; needs the chart's APIService).
    #[arg(long, env = "PRAPI_EXTERNAL_METRICS", default_value_t = true, action = ArgAction::Set)]
    pub external_metrics: bool,
    /// Address of the external metrics API's TLS listener.
    #[arg(
        long,
        env = "PRAPI_EXTERNAL_METRICS_LISTEN",
        default_value = "0.0.0.0:6443"
    )]
    pub external_metrics_listen: SocketAddr,
    /// PEM certificate chain of the external metrics API (re-read every 30 s); without it and
    /// --external-metrics-key-file a self-signed certificate is generated, which the APIService
    /// can only use with `insecureSkipTLSVerify`.
    #[arg(
        long,
        env = "PRAPI_EXTERNAL_METRICS_CERT_FILE",
        requires = "external_metrics_key_file"
    )]
    pub external_metrics_cert_file: Option<PathBuf>,
    /// PEM private key of the external metrics API.
    #[arg(
        long,
        env = "PRAPI_EXTERNAL_METRICS_KEY_FILE",
        requires = "external_metrics_cert_file"
    )]
    pub external_metrics_key_file: Option<PathBuf>,
    /// Longest a lag reading is served before Kafka is asked again, seconds.
    #[arg(
        long,
        env = "PRAPI_EXTERNAL_METRICS_LAG_MAX_AGE_SECONDS",
        default_value_t = 10
    )]
    pub external_metrics_lag_max_age_seconds: u64,
    /// An Envoy Gateway BackendTrafficPolicy per HTTPRoute, hashing on the path
    /// (`--routing gateway-api` only): auto-detect its API, or force it on or off.
    #[arg(long, env = "PRAPI_BACKEND_TRAFFIC_POLICY", value_enum, default_value_t = BackendTrafficPolicyChoice::Auto)]
    pub backend_traffic_policy: BackendTrafficPolicyChoice,
    /// A Skipper filter put first on every RouteGroup route: the ingress's token check, e.g.
    /// `oauthTokeninfoAnyScope("uid")` or `jwtValidation("https://issuer.example")`.
    #[arg(long, env = "PRAPI_SKIPPER_AUTH_FILTER")]
    pub skipper_auth_filter: Option<String>,
    /// Put Skipper's `fadeIn` (the batch component's 30 s curve) on the products routes
    /// (docs/load-balancing.md, "At the ingress").
    #[arg(long, env = "PRAPI_SKIPPER_FADE_IN", default_value_t = true, action = ArgAction::Set)]
    pub skipper_fade_in: bool,
    /// Put Skipper's `lifo` queue on every RouteGroup route (docs/load-balancing.md, "At the
    /// ingress").
    #[arg(long, env = "PRAPI_SKIPPER_LIFO", default_value_t = true, action = ArgAction::Set)]
    pub skipper_lifo: bool,
    /// `lifo`'s maxConcurrency: requests one Skipper instance passes on per route at once.
    #[arg(long, env = "PRAPI_SKIPPER_LIFO_MAX_CONCURRENCY", default_value_t = SkipperLifo::default().max_concurrency, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub skipper_lifo_max_concurrency: u32,
    /// `lifo`'s maxQueueSize: requests that wait beyond those (the newest is served first).
    #[arg(long, env = "PRAPI_SKIPPER_LIFO_MAX_QUEUE", default_value_t = SkipperLifo::default().max_queue, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub skipper_lifo_max_queue: u32,
    /// `lifo`'s timeout in milliseconds: a request that waited this long is answered 502.
    #[arg(long, env = "PRAPI_SKIPPER_LIFO_TIMEOUT_MS", default_value_t = SkipperLifo::default().timeout.as_millis() as u64, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub skipper_lifo_timeout_ms: u64,
    /// An implementation-specific HTTPRoute filter (`GROUP/KIND/NAME`, an ExtensionRef in the
    /// route's namespace) put on every rule: the Gateway implementation's token check.
    #[arg(long, env = "PRAPI_GATEWAY_AUTH_FILTER")]
    pub gateway_auth_filter: Option<crate::render::routing::ExtensionRef>,
    /// Give every group NetworkPolicies (docs/operator.md, "Permissions").
    #[arg(long, env = "PRAPI_NETWORK_POLICIES", default_value_t = true, action = ArgAction::Set)]
    pub network_policies: bool,
    /// Namespaces the ingress runs in, the only ones (with the group's batch pods) that may reach
    /// the API ports; none: any source.
    #[arg(long, env = "PRAPI_INGRESS_NAMESPACES", value_delimiter = ',')]
    pub ingress_namespaces: Vec<String>,
}

/// The updater autoscaler for offline rendering (no cluster to detect KEDA in).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RenderAutoscaler {
    /// A KEDA ScaledObject.
    Keda,
    /// An HPA on the External lag metric.
    Hpa,
}

/// `prapi-operator render`.
#[derive(Debug, Clone, Args)]
pub struct RenderArgs {
    /// MarketGroup manifest (YAML or JSON, several documents allowed); `-` reads stdin.
    #[arg(short = 'f', long = "file", env = "PRAPI_FILE")]
    pub file: PathBuf,
    /// Namespace for manifests that name none.
    #[arg(long, env = "PRAPI_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Image for MarketGroups whose spec.image is empty.
    #[arg(long, env = "PRAPI_DEFAULT_IMAGE", default_value = DEFAULT_IMAGE)]
    pub default_image: String,
    /// Settings of this installation every group's data plane gets.
    #[command(flatten)]
    pub data_plane: DataPlaneArgs,
    /// The updater's autoscaler.
    #[arg(long, env = "PRAPI_UPDATER_AUTOSCALER", value_enum, default_value_t = RenderAutoscaler::Hpa)]
    pub updater_autoscaler: RenderAutoscaler,
    /// Also print the routes across the manifest's groups (every group taken as Ready).
    #[arg(long, env = "PRAPI_ROUTING", value_enum, default_value_t = RoutingChoice::None)]
    pub routing: RoutingChoice,
    /// The Gateway HTTPRoutes attach to, `NAMESPACE/NAME`.
    #[arg(long, env = "PRAPI_GATEWAY", value_parser = parse_gateway)]
    pub gateway: Option<(String, String)>,
    /// Also print the AWS actions for each group's table, starting from nothing.
    #[arg(long, env = "PRAPI_STORE", value_enum, default_value_t = StoreChoice::None)]
    pub store: StoreChoice,
}
