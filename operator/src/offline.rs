//! `prapi-operator crd` and `prapi-operator render -f FILE`: offline, no cluster involved.

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
    updater_autoscaler: UpdaterAutoscaler,
) -> Result<String, OfflineError> {
    let mut out = String::new();
    for (i, mg) in parse_manifests(text)?.iter().enumerate() {
        let plan = validate::plan(mg, default_image, namespace).map_err(|problems| {
            OfflineError::Invalid {
                index: i + 1,
                name: mg.metadata.name.clone().unwrap_or_default(),
                problems,
            }
        })?;
        let children = render(&plan, RenderOptions { updater_autoscaler })
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
