//! Workload objects of a group: Deployments (updater, products, batch) with the command lines of
//! docs/cli.md, their Services, PodDisruptionBudgets, the ConfigMap, one ServiceAccount per
//! component, and the RoleBinding that lets batch pods discover products pods.

use super::meta::{self, ANNOTATION_CONFIG_HASH, object_meta, pod_selector, selector_labels};
use crate::crd::{LogFormat, Resources};
use crate::plan::{Component, GroupPlan};
use crate::pod_settings::merge_env;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapKeySelector, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, HTTPGetAction, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext, Service,
    ServiceAccount, ServicePort, ServiceSpec, TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// Port every data plane component serves HTTP (API, probes, metrics) on.
pub const HTTP_PORT: i32 = 8080;
/// Name of that port.
pub const HTTP_PORT_NAME: &str = "http";
/// Address the components listen on inside the pod.
pub const LISTEN_ADDR: &str = "0.0.0.0:8080";
/// Port of the ops listener of products and batch (`--ops-listen`): `/healthz`, `/readyz` and
/// `/metrics` with a connection cap of their own, so the probes are answered when the API
/// connections are all taken.
pub const OPS_PORT: i32 = 9090;
/// Name of that port.
pub const OPS_PORT_NAME: &str = "ops";
/// Address of the ops listener inside the pod.
pub const OPS_LISTEN_ADDR: &str = "0.0.0.0:9090";
/// `--shutdown-delay-ms` of products and batch: time to keep serving, not ready, after SIGTERM
/// while the endpoint removal reaches kube-proxy, the ingress and batch's load balancer.
pub const SHUTDOWN_DELAY_MS: u64 = 5_000;
/// `--drain-timeout-ms` of products and batch: time open connections get after that delay.
pub const DRAIN_TIMEOUT_MS: u64 = 20_000;
/// Seconds of `terminationGracePeriodSeconds` beyond delay + drain (the process's own exit).
pub const GRACE_MARGIN_SECONDS: i64 = 5;
/// `terminationGracePeriodSeconds` of the updater, whose shutdown is the consumer's drain.
pub const UPDATER_GRACE_SECONDS: i64 = 30;

/// `terminationGracePeriodSeconds` of a component: for products and batch the rendered shutdown
/// delay plus drain deadline plus a margin, so the kubelet never kills a pod that is draining
/// within its deadline.
pub fn termination_grace_seconds(component: Component) -> i64 {
    match component {
        Component::Updater => UPDATER_GRACE_SECONDS,
        Component::Products | Component::Batch => {
            let seconds = (SHUTDOWN_DELAY_MS + DRAIN_TIMEOUT_MS).div_ceil(1000);
            i64::try_from(seconds).unwrap_or(i64::MAX) + GRACE_MARGIN_SECONDS
        }
    }
}

/// The connection and shutdown flags of products and batch (docs/cli.md, "Connections and
/// shutdown").
fn serving_flags() -> [String; 6] {
    [
        "--ops-listen".to_string(),
        OPS_LISTEN_ADDR.to_string(),
        "--shutdown-delay-ms".to_string(),
        SHUTDOWN_DELAY_MS.to_string(),
        "--drain-timeout-ms".to_string(),
        DRAIN_TIMEOUT_MS.to_string(),
    ]
}

/// The ClusterRole the Helm chart ships for the batch pods' EndpointSlice reads (get, list,
/// watch `discovery.k8s.io` `endpointslices`). The operator binds it in a group's namespace and
/// holds `bind` on this one role only, so it never creates Roles and cannot grant anything else.
pub const ENDPOINT_READER_CLUSTER_ROLE: &str = "prapi-endpointslice-reader";

/// Volume of the updater's Kafka client Secret.
pub const KAFKA_CLIENT_VOLUME: &str = "kafka-client";
/// Where the updater's Kafka client Secret is mounted (`--kafka-client-secret-dir`), one file per
/// key, readable by the pod's group only.
pub const KAFKA_CLIENT_DIR: &str = "/etc/prapi/kafka-client";
/// Mode of those files: the owner (root) and the pod's `fsGroup` read them.
pub const KAFKA_CLIENT_FILE_MODE: i32 = 0o440;
/// Pod annotation of the updater with the Kafka client Secret's resourceVersion: a changed
/// Secret changes the pod template, so the updater restarts with it.
pub const ANNOTATION_KAFKA_CLIENT_VERSION: &str = "prapi.dev/kafka-client-secret-version";

/// Binary inside the image.
pub const BINARY: &str = "prapi";
/// Non-root user and group the pods run as (the distroless `nonroot` id).
pub const RUN_AS: i64 = 65532;

/// Arguments of `prapi updater` (docs/cli.md), after the binary name.
pub fn updater_args(plan: &GroupPlan) -> Vec<String> {
    let u = &plan.updater;
    let mut args: Vec<String> = [
        "updater",
        "--kafka-bootstrap",
        &u.bootstrap_servers,
        "--products-topic",
        &u.products_topic,
        "--offers-topic",
        &u.offers_topic,
        "--group",
        &u.consumer_group,
        "--countries",
        &plan.countries_flag(),
        "--store",
        "dynamodb",
        "--table",
        &plan.table,
    ]
    .map(String::from)
    .to_vec();
    if !u.dead_letter_topic.is_empty() {
        args.extend([
            "--dead-letter-topic".to_string(),
            u.dead_letter_topic.clone(),
        ]);
    }
    // Only the directory is on the command line; what is in it stays in the Secret.
    if u.kafka_client.is_some() {
        args.extend([
            "--kafka-client-secret-dir".to_string(),
            KAFKA_CLIENT_DIR.to_string(),
        ]);
    }
    args
}

/// Arguments of `prapi products` (docs/cli.md), after the binary name.
pub fn products_args(plan: &GroupPlan) -> Vec<String> {
    [
        "products",
        "--listen",
        LISTEN_ADDR,
        "--countries",
        &plan.countries_flag(),
        "--store",
        "dynamodb",
        "--table",
        &plan.table,
    ]
    .map(String::from)
    .into_iter()
    .chain(serving_flags())
    .collect()
}

/// Arguments of `prapi batch` (docs/cli.md), after the binary name: products pods are discovered
/// through the EndpointSlices of the headless products Service.
pub fn batch_args(plan: &GroupPlan) -> Vec<String> {
    let service = format!("{}/{}", plan.owner.namespace, plan.products_headless_name());
    [
        "batch",
        "--listen",
        LISTEN_ADDR,
        "--countries",
        &plan.countries_flag(),
        "--products-service",
        &service,
    ]
    .map(String::from)
    .into_iter()
    .chain(serving_flags())
    .collect()
}

/// Arguments of a component's container.
pub fn args(plan: &GroupPlan, component: Component) -> Vec<String> {
    match component {
        Component::Updater => updater_args(plan),
        Component::Products => products_args(plan),
        Component::Batch => batch_args(plan),
    }
}

/// Settings without a flag in docs/cli.md, handed to a component as `PRAPI_<FLAG>` environment
/// variables (every `prapi` flag also reads one) through the group's ConfigMap.
pub fn component_env(plan: &GroupPlan, component: Component) -> Vec<(String, String)> {
    let pairs: Vec<(&str, String)> = match component {
        // The updater's command line has no --listen; its probes and metrics need the port.
        Component::Updater => vec![("PRAPI_LISTEN", LISTEN_ADDR.to_string())],
        Component::Products => vec![
            (
                "PRAPI_CACHE_TTL_SECONDS",
                plan.products.cache_ttl_seconds.to_string(),
            ),
            (
                "PRAPI_CACHE_STALE_SECONDS",
                plan.products.cache_stale_seconds.to_string(),
            ),
            (
                "PRAPI_CACHE_MAX_BYTES",
                plan.products.cache_max_bytes.to_string(),
            ),
        ]
        .into_iter()
        .chain(
            [
                ("PRAPI_READ_TIMEOUT_MS", plan.store_timeouts.read_ms),
                (
                    "PRAPI_FALLBACK_READ_TIMEOUT_MS",
                    plan.store_timeouts.fallback_read_ms,
                ),
            ]
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?.to_string()))),
        )
        .collect(),
        Component::Batch => {
            let h = &plan.batch.hedging;
            vec![
                ("PRAPI_MAX_ITEMS", plan.batch.max_items.to_string()),
                ("PRAPI_BALANCE_FACTOR", plan.balance_factor().to_string()),
                ("PRAPI_HEDGE", h.enabled.to_string()),
                ("PRAPI_HEDGE_PERCENTILE", percent(h.percentile)),
                ("PRAPI_HEDGE_BUDGET", percent(h.budget_percent)),
            ]
        }
    };
    let log_format = match plan.log_format {
        LogFormat::Json => "json",
        LogFormat::Text => "text",
    };
    let logs = [
        (prapi_common::logs::FILTER_VAR, plan.log_filter.clone()),
        ("PRAPI_LOG_FORMAT", log_format.to_string()),
    ];
    let served_by = (plan.served_by_header && component != Component::Updater)
        .then(|| ("PRAPI_SERVED_BY_HEADER", "true".to_string()));
    logs.into_iter()
        .chain(pairs)
        .chain(served_by)
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// A percentage as the fraction the data plane's flags take: 95 → `0.95`.
fn percent(p: i32) -> String {
    format!("{}", f64::from(p) / 100.0)
}

/// ConfigMap key of a component's variable: `<component>.<VARIABLE>`.
pub fn config_key(component: Component, var: &str) -> String {
    format!("{}.{var}", component.as_str())
}

/// The group's ConfigMap: every component's settings that are not on its command line.
pub fn config_map(plan: &GroupPlan) -> ConfigMap {
    let data = Component::ALL
        .into_iter()
        .flat_map(|c| {
            component_env(plan, c)
                .into_iter()
                .map(move |(k, v)| (config_key(c, &k), v))
        })
        .collect::<BTreeMap<_, _>>();
    ConfigMap {
        metadata: object_meta(plan, plan.config_map_name(), None),
        data: Some(data),
        ..ConfigMap::default()
    }
}

fn http_probe(port: &str, path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(port.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn resource_requirements(r: &Resources) -> ResourceRequirements {
    ResourceRequirements {
        requests: (!r.requests.is_empty()).then(|| r.requests.clone()),
        limits: (!r.limits.is_empty()).then(|| r.limits.clone()),
        ..ResourceRequirements::default()
    }
}

/// The restricted Pod Security Standard, container level.
pub fn restricted_container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..SecurityContext::default()
    }
}

/// The restricted Pod Security Standard, pod level.
pub fn restricted_pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        fs_group: Some(RUN_AS),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

fn resources_of(plan: &GroupPlan, component: Component) -> &Resources {
    match component {
        Component::Updater => &plan.updater.resources,
        Component::Products => &plan.products.resources,
        Component::Batch => &plan.batch.resources,
    }
}

/// A component's Deployment. `spec.replicas` is left out: the component's autoscaler owns it.
pub fn deployment(plan: &GroupPlan, component: Component) -> Deployment {
    let name = plan.component_name(component);
    let env_pairs = component_env(plan, component);
    let config_hash = meta::stable_hash(
        env_pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect::<String>()
            .as_bytes(),
    );
    let operator_env = env_pairs.iter().map(|(k, _)| EnvVar {
        name: k.clone(),
        value_from: Some(EnvVarSource {
            config_map_key_ref: Some(ConfigMapKeySelector {
                name: plan.config_map_name(),
                key: config_key(component, k),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    });
    // Layers, later ones winning a name: the operator's settings, the installation's
    // (`--data-plane-env`), the group's pod settings. Neither of the last two may name a PRAPI_*
    // variable (refused at the flag and by the CRD), so the operator's settings stay in force.
    let installation_env: Vec<EnvVar> = plan
        .env
        .iter()
        .map(|(name, value)| EnvVar {
            name: name.clone(),
            value: Some(value.clone()),
            ..EnvVar::default()
        })
        .collect();
    let settings = plan.pod(component);
    let env = merge_env(
        &merge_env(&operator_env.collect::<Vec<_>>(), &installation_env),
        &settings.env,
    );
    let port = |name: &str, number: i32| ContainerPort {
        name: Some(name.into()),
        container_port: number,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    };
    // Serving components answer probes on their ops listener; the updater serves only the ops
    // endpoints, on its one port.
    let (ports, probe_port) = match component {
        Component::Updater => (vec![port(HTTP_PORT_NAME, HTTP_PORT)], HTTP_PORT_NAME),
        Component::Products | Component::Batch => (
            vec![
                port(HTTP_PORT_NAME, HTTP_PORT),
                port(OPS_PORT_NAME, OPS_PORT),
            ],
            OPS_PORT_NAME,
        ),
    };
    let (volumes, mounts) = pod_volumes(plan, component);
    let container = Container {
        name: component.as_str().into(),
        image: Some(plan.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec![BINARY.into()]),
        args: Some(args(plan, component)),
        env: Some(env),
        env_from: non_empty(&settings.env_from),
        ports: Some(ports),
        startup_probe: Some(http_probe(probe_port, "/healthz", 2, 60)),
        liveness_probe: Some(http_probe(probe_port, "/healthz", 10, 3)),
        readiness_probe: Some(http_probe(probe_port, "/readyz", 5, 3)),
        resources: Some(resource_requirements(resources_of(plan, component))),
        security_context: Some(restricted_container_security()),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    // Serving components must not lose capacity during a rollout (cold caches are expensive).
    let serving = component != Component::Updater;
    let strategy = serving.then(|| DeploymentStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateDeployment {
            max_surge: Some(IntOrString::String("25%".into())),
            max_unavailable: Some(IntOrString::Int(0)),
        }),
    });
    let spread = match &settings.topology_spread_constraints {
        None => default_spread(plan, component),
        Some(given) => given
            .iter()
            .map(|c| TopologySpreadConstraint {
                label_selector: c
                    .label_selector
                    .clone()
                    .or_else(|| Some(pod_selector(plan, component))),
                ..c.clone()
            })
            .collect(),
    };
    // The operator's labels and annotations go in last: they select the pods and roll them.
    let mut pod_labels = settings.labels.clone();
    pod_labels.extend(meta::labels(plan, Some(component)));
    let mut pod_annotations = settings.annotations.clone();
    pod_annotations.insert(ANNOTATION_CONFIG_HASH.to_string(), config_hash);
    if let (Component::Updater, Some(k)) = (component, &plan.updater.kafka_client) {
        pod_annotations.insert(
            ANNOTATION_KAFKA_CLIENT_VERSION.to_string(),
            k.resource_version.clone(),
        );
    }
    Deployment {
        metadata: object_meta(plan, name, Some(component)),
        spec: Some(DeploymentSpec {
            selector: pod_selector(plan, component),
            revision_history_limit: Some(3),
            strategy,
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(pod_annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(plan.service_account_name(component)),
                    // Only batch talks to the Kubernetes API (EndpointSlices).
                    automount_service_account_token: Some(component == Component::Batch),
                    security_context: Some(restricted_pod_security()),
                    termination_grace_period_seconds: Some(termination_grace_seconds(component)),
                    containers: vec![container],
                    topology_spread_constraints: non_empty(&spread),
                    node_selector: (!settings.node_selector.is_empty())
                        .then(|| settings.node_selector.clone()),
                    tolerations: non_empty(&settings.tolerations),
                    affinity: settings.affinity.clone(),
                    priority_class_name: settings.priority_class_name.clone(),
                    image_pull_secrets: non_empty(&settings.image_pull_secrets),
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// A component's volumes and the container's mounts: a writable `/tmp` (the root filesystem is
/// read-only) and, for the updater of a group with a Kafka client Secret, that Secret read-only
/// at [`KAFKA_CLIENT_DIR`].
pub fn pod_volumes(plan: &GroupPlan, component: Component) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mut volumes = vec![Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "tmp".into(),
        mount_path: "/tmp".into(),
        ..VolumeMount::default()
    }];
    if let (Component::Updater, Some(k)) = (component, &plan.updater.kafka_client) {
        volumes.push(Volume {
            name: KAFKA_CLIENT_VOLUME.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(k.secret_name.clone()),
                default_mode: Some(KAFKA_CLIENT_FILE_MODE),
                optional: Some(false),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: KAFKA_CLIENT_VOLUME.into(),
            mount_path: KAFKA_CLIENT_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    (volumes, mounts)
}

fn non_empty<T: Clone>(v: &[T]) -> Option<Vec<T>> {
    (!v.is_empty()).then(|| v.to_vec())
}

/// Topology key of the zone a node is in.
pub const ZONE_KEY: &str = "topology.kubernetes.io/zone";
/// Topology key of the node itself.
pub const HOSTNAME_KEY: &str = "kubernetes.io/hostname";

/// Spreading when the pod settings give none: every component across zones, the serving ones
/// also across nodes, so losing a zone or a node never takes a whole component. Both are
/// preferences (`ScheduleAnyway`): a cluster without zone labels or with one node still schedules.
pub fn default_spread(plan: &GroupPlan, component: Component) -> Vec<TopologySpreadConstraint> {
    let spread = |key: &str| TopologySpreadConstraint {
        max_skew: 1,
        topology_key: key.into(),
        when_unsatisfiable: "ScheduleAnyway".into(),
        label_selector: Some(pod_selector(plan, component)),
        // Count only the pods of the current rollout, so a rolling update does not skew it.
        match_label_keys: Some(vec!["pod-template-hash".into()]),
        ..TopologySpreadConstraint::default()
    };
    let mut out = vec![spread(ZONE_KEY)];
    if component != Component::Updater {
        out.push(spread(HOSTNAME_KEY));
    }
    out
}

fn http_service_port() -> ServicePort {
    ServicePort {
        name: Some(HTTP_PORT_NAME.into()),
        port: HTTP_PORT,
        target_port: Some(IntOrString::String(HTTP_PORT_NAME.into())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}

/// ClusterIP Service of a serving component (products or batch), the ingress backend.
pub fn service(plan: &GroupPlan, component: Component) -> Service {
    Service {
        metadata: object_meta(plan, plan.component_name(component), Some(component)),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector_labels(plan, Some(component))),
            ports: Some(vec![http_service_port()]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Headless products Service: its EndpointSlices list the ready products pods for batch's load
/// balancer.
pub fn products_headless_service(plan: &GroupPlan) -> Service {
    Service {
        metadata: object_meta(
            plan,
            plan.products_headless_name(),
            Some(Component::Products),
        ),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector_labels(plan, Some(Component::Products))),
            // Not-ready pods stay out of the EndpointSlices (the default; batch relies on it).
            ports: Some(vec![http_service_port()]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// PodDisruptionBudget of a component: voluntary disruptions take one pod at a time.
pub fn pod_disruption_budget(plan: &GroupPlan, component: Component) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: object_meta(plan, plan.component_name(component), Some(component)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(pod_selector(plan, component)),
            // A pod that is not ready anyway may always be evicted, so a crash-looping pod never
            // blocks a node drain.
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

/// A component's ServiceAccount: one per component, so each can get its own cloud role (the
/// updater writes the table; products and batch only read it).
pub fn service_account(plan: &GroupPlan, component: Component) -> ServiceAccount {
    ServiceAccount {
        metadata: ObjectMeta {
            annotations: {
                let annotations = &plan.pod(component).service_account_annotations;
                (!annotations.is_empty()).then(|| annotations.clone())
            },
            ..object_meta(plan, plan.service_account_name(component), Some(component))
        },
        ..ServiceAccount::default()
    }
}

/// Binds the chart's [`ENDPOINT_READER_CLUSTER_ROLE`] to the batch ServiceAccount, in the
/// group's namespace only.
pub fn endpoint_reader_binding(plan: &GroupPlan) -> RoleBinding {
    RoleBinding {
        metadata: object_meta(plan, plan.endpoint_reader_name(), Some(Component::Batch)),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: ENDPOINT_READER_CLUSTER_ROLE.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: plan.service_account_name(Component::Batch),
            namespace: Some(plan.owner.namespace.clone()),
            ..Subject::default()
        }]),
    }
}
