//! `prapi-operator crd` and `prapi-operator render -f FILE`: offline, no cluster involved.

use crate::cli::DataPlaneArgs;
use crate::crd::MarketGroup;
use crate::render::autoscaling::UpdaterAutoscaler;
use crate::render::{RenderOptions, render};
use crate::validate;
use kube::CustomResourceExt;
use serde::Deserialize;
use thiserror::Error;

/// Why a manifest could not be rendered.
#[derive(Debug, Error)]
pub enum OfflineError {
    /// Not YAML/JSON, or not a MarketGroup.
    #[error("document {index}: {message}")]
    Parse {
        /// 1-based document number.
        index: usize,
        /// What is wrong.
        message: String,
    },
    /// A MarketGroup that the API server would reject.
    #[error("document {index} ({name}) is invalid:\n  - {}", .problems.problems.join("\n  - "))]
    Invalid {
        /// 1-based document number.
        index: usize,
        /// Group name.
        name: String,
        /// The problems.
        problems: validate::InvalidSpec,
    },
    /// A MarketGroup whose rendering depends on a Secret offline rendering cannot read.
    #[error(
        "document {index} ({name}) names Kafka client Secret {secret}: what the updater's KEDA trigger and TriggerAuthentication hold depends on its keys, which only the operator reads; render it with the operator, or without spec.updater.kafka.clientSecretName"
    )]
    NeedsSecret {
        /// 1-based document number.
        index: usize,
        /// Group name.
        name: String,
        /// The Secret.
        secret: String,
    },
    /// The file has no document.
    #[error("no MarketGroup found")]
    Empty,
    /// Rendering or printing failed.
    #[error("{0}")]
    Output(String),
}

/// The CRD as YAML (what `crds/marketgroup.yaml` holds).
pub fn crd_yaml() -> Result<String, OfflineError> {
    serde_norway::to_string(&MarketGroup::crd()).map_err(|e| OfflineError::Output(e.to_string()))
}

/// Parses every document of `text` as a MarketGroup.
pub fn parse_manifests(text: &str) -> Result<Vec<MarketGroup>, OfflineError> {
    let mut out = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let index = i + 1;
        let value = serde_json::Value::deserialize(doc).map_err(|e| OfflineError::Parse {
            index,
            message: e.to_string(),
        })?;
        if value.is_null() {
            continue;
        }
        let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        let api_version = value
            .get("apiVersion")
            .and_then(|k| k.as_str())
            .unwrap_or("");
        if kind != "MarketGroup" || api_version != "prapi.dev/v1alpha1" {
            return Err(OfflineError::Parse {
                index,
                message: format!(
                    "expected apiVersion prapi.dev/v1alpha1, kind MarketGroup; found {api_version:?}, {kind:?}"
                ),
            });
        }
        let mg: MarketGroup = serde_json::from_value(value).map_err(|e| OfflineError::Parse {
            index,
            message: e.to_string(),
        })?;
        out.push(mg);
    }
    if out.is_empty() {
        return Err(OfflineError::Empty);
    }
    Ok(out)
}

/// Every object the operator would create for the MarketGroups in `text`, as multi-document YAML.
pub fn render_manifests(
    text: &str,
    namespace: &str,
    default_image: &str,
    data_plane: &DataPlaneArgs,
    updater_autoscaler: UpdaterAutoscaler,
) -> Result<String, OfflineError> {
    let mut out = String::new();
    for (i, mg) in parse_manifests(text)?.iter().enumerate() {
        let plan = validate::plan(mg, default_image, namespace)
            .map_err(|problems| OfflineError::Invalid {
                index: i + 1,
                name: mg.metadata.name.clone().unwrap_or_default(),
                problems,
            })
            .map(|plan| data_plane.apply(plan))?;
        if !plan.updater.client_secret_name.is_empty() {
            return Err(OfflineError::NeedsSecret {
                index: i + 1,
                name: plan.owner.name.clone(),
                secret: plan.updater.client_secret_name.clone(),
            });
        }
        let children = render(
            &plan,
            RenderOptions {
                updater_autoscaler,
                pod_monitor: false,
            },
        )
        .map_err(|e| OfflineError::Output(e.to_string()))?;
        for child in children {
            out.push_str("---\n");
            out.push_str(
                &serde_norway::to_string(&child.object)
                    .map_err(|e| OfflineError::Output(e.to_string()))?,
            );
        }
    }
    Ok(out)
}

/// The routes across the manifest's groups (each taken as Ready, nothing applied yet) and, with
/// `store`, the AWS actions each group's table gets from nothing: the creation, then what follows
/// once the table is ACTIVE. Multi-document YAML; the AWS actions as comments.
pub fn render_extras(
    text: &str,
    namespace: &str,
    default_image: &str,
    provider: crate::render::routing::Provider,
    gateway: Option<(String, String)>,
    store: bool,
) -> Result<String, OfflineError> {
    use crate::aws::planner::{self, AwsAction};
    use crate::aws::{AwsState, LagReading, ScalingState, TAG_BOOTSTRAPPED, TableState};
    use crate::render::routing::{self, Applied, RouteOptions};
    let mut plans = Vec::new();
    for (i, mg) in parse_manifests(text)?.iter().enumerate() {
        plans.push(
            validate::plan(mg, default_image, namespace).map_err(|problems| {
                OfflineError::Invalid {
                    index: i + 1,
                    name: mg.metadata.name.clone().unwrap_or_default(),
                    problems,
                }
            })?,
        );
    }
    let mut out = String::new();
    if provider != routing::Provider::None {
        let mut namespaces: Vec<&str> = plans.iter().map(|p| p.owner.namespace.as_str()).collect();
        namespaces.sort_unstable();
        namespaces.dedup();
        let opts = RouteOptions {
            gateway,
            ..RouteOptions::default()
        };
        for ns in namespaces {
            let groups: Vec<routing::GroupRouting> = plans
                .iter()
                .filter(|p| p.owner.namespace == ns)
                .map(|p| {
                    let available = std::collections::BTreeMap::new();
                    crate::routes::group_routing(p, None, true, false, &available)
                })
                .collect();
            let plan = routing::plan(&groups, &Applied::new());
            for (group, shares) in &plan.shares {
                for s in shares {
                    out.push_str(&format!(
                        "# traffic {ns}/{group} {}{}: {}%{}\n",
                        s.country,
                        s.segment
                            .as_deref()
                            .map(|x| format!(" (segment {x})"))
                            .unwrap_or_default(),
                        s.planned,
                        s.reason.map(|r| format!(" ({r})")).unwrap_or_default()
                    ));
                }
            }
            for r in &plan.routes {
                let obj = routing::render_route(provider, ns, r, &opts)
                    .map_err(|e| OfflineError::Output(e.to_string()))?;
                if let Some(obj) = obj {
                    out.push_str("---\n");
                    out.push_str(
                        &serde_norway::to_string(&obj)
                            .map_err(|e| OfflineError::Output(e.to_string()))?,
                    );
                }
            }
        }
    }
    if store {
        let now = std::time::SystemTime::now();
        for p in &plans {
            let spec = crate::aws::store::table_spec(p);
            out.push_str(&format!(
                "# AWS actions for {} (table {}), from nothing:\n",
                spec.group, spec.name
            ));
            let lag = LagReading::Unknown("offline".into());
            let first = planner::plan(
                &spec,
                &AwsState {
                    table: None,
                    scaling: ScalingState::default(),
                    lag: lag.clone(),
                },
                now,
            );
            let mut n = 0;
            let mut line = |a: &AwsAction, out: &mut String| {
                n += 1;
                out.push_str(&format!("#   {n}. {a:?}\n"));
            };
            for a in &first.actions {
                line(a, &mut out);
            }
            // Once ACTIVE, tagged, and the updater caught up.
            let mut tags: std::collections::BTreeMap<String, String> =
                spec.tags().into_iter().collect();
            tags.insert(TAG_BOOTSTRAPPED.into(), "true".into());
            let (read, write) = match first.actions.first() {
                Some(AwsAction::CreateTable { read, write, .. }) => (*read, *write),
                _ => (0, 0),
            };
            let active = TableState {
                arn: format!("arn:aws:dynamodb:::table/{}", spec.name),
                status: "ACTIVE".into(),
                key_schema: vec![
                    ("pk".into(), "HASH".into(), "S".into()),
                    ("sk".into(), "RANGE".into(), "S".into()),
                ],
                billing: spec.billing,
                last_switch_to_pay_per_request: None,
                read_capacity: read,
                write_capacity: write,
                decreases_today: 0,
                last_decrease: None,
                tags,
            };
            let next = planner::plan(
                &spec,
                &AwsState {
                    table: Some(active),
                    scaling: ScalingState::default(),
                    lag: LagReading::Known(0),
                },
                now,
            );
            for a in &next.actions {
                line(a, &mut out);
            }
            out.push_str(&format!(
                "#   then StoreReady={} ({})\n",
                next.condition.ready, next.condition.reason
            ));
        }
    }
    Ok(out)
}
