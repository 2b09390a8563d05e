//! The HTTP side of `external.metrics.k8s.io/v1beta1`: the discovery documents kube-apiserver's
//! aggregator reads, and `GET /apis/external.metrics.k8s.io/v1beta1/namespaces/NS/METRIC` with a
//! `labelSelector`, answered with an `ExternalMetricValueList`.
//!
//! Errors are Kubernetes `Status` objects, not problem+json: the API server passes them through
//! to `kubectl` and the HPA controller, which read that shape.

use super::auth::{Caller, FrontProxy, authenticate};
use super::readings::{Groups, Readings, ServedGroup};
use crate::render::autoscaling::UPDATER_LAG_METRIC;
use axum::Router;
use axum::extract::{Extension, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    APIGroup, APIGroupList, APIResource, APIResourceList, GroupVersionForDiscovery, Status,
};
use k8s_openapi::jiff::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The API group served.
pub const GROUP: &str = "external.metrics.k8s.io";
/// Its one version.
pub const VERSION: &str = "v1beta1";

fn group_version() -> GroupVersionForDiscovery {
    GroupVersionForDiscovery {
        group_version: format!("{GROUP}/{VERSION}"),
        version: VERSION.into(),
    }
}

/// `GET /apis/external.metrics.k8s.io`.
pub fn api_group() -> APIGroup {
    APIGroup {
        name: GROUP.into(),
        versions: vec![group_version()],
        preferred_version: Some(group_version()),
        server_address_by_client_cidrs: None,
    }
}

/// `GET /apis`: the groups this server serves.
pub fn api_group_list() -> APIGroupList {
    APIGroupList {
        groups: vec![api_group()],
    }
}

/// The `/apis` document as kube-apiserver writes it: k8s-openapi gives every `APIGroup` its
/// `kind` and `apiVersion`, which the list's items do not carry.
fn group_list_json() -> Value {
    let mut doc = serde_json::to_value(api_group_list()).unwrap_or_default();
    if let Some(groups) = doc.get_mut("groups").and_then(Value::as_array_mut) {
        for g in groups.iter_mut().filter_map(Value::as_object_mut) {
            g.remove("kind");
            g.remove("apiVersion");
        }
    }
    doc
}

/// `GET /apis/external.metrics.k8s.io/v1beta1`: one namespaced resource per metric, read with
/// `get`, as kube-apiserver and `kubectl api-resources` expect of an external metrics API.
pub fn api_resource_list() -> APIResourceList {
    APIResourceList {
        group_version: format!("{GROUP}/{VERSION}"),
        resources: vec![APIResource {
            name: UPDATER_LAG_METRIC.into(),
            singular_name: String::new(),
            namespaced: true,
            kind: "ExternalMetricValueList".into(),
            verbs: vec!["get".into()],
            ..APIResource::default()
        }],
    }
}

/// A label selector of the equality form the HPA controller sends for a `matchLabels` selector
/// (`a=b,c==d`); set-based and negative requirements are refused rather than misread.
pub fn parse_selector(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once("==")
            .or_else(|| part.split_once('='))
            .ok_or_else(|| {
                format!("label selector {part:?}: only key=value requirements are supported")
            })?;
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() || k.ends_with('!') || v.contains(['=', '!', '(', ')', ' ']) {
            return Err(format!(
                "label selector {part:?}: only key=value requirements are supported"
            ));
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// Whether a series with `labels` matches every requirement.
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// One item of an `ExternalMetricValueList`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricValue {
    /// Labels of the series.
    pub labels: BTreeMap<String, String>,
    /// Messages behind.
    pub value: i64,
    /// When it was read.
    pub timestamp: Timestamp,
}

/// The `ExternalMetricValueList` document (`value` is a Kubernetes quantity: a decimal string).
pub fn value_list(metric: &str, values: &[MetricValue]) -> Value {
    json!({
        "kind": "ExternalMetricValueList",
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": {},
        "items": values.iter().map(|v| json!({
            "metricName": metric,
            "metricLabels": v.labels,
            "timestamp": v.timestamp.to_string(),
            "value": v.value.to_string(),
        })).collect::<Vec<_>>(),
    })
}

/// A Kubernetes `Status` error response.
pub fn status_error(code: StatusCode, reason: &str, message: String) -> Response {
    let status = Status {
        code: Some(i32::from(code.as_u16())),
        message: Some(message),
        reason: Some(reason.into()),
        status: Some("Failure".into()),
        ..Status::default()
    };
    json_response(code, &status)
}

fn json_response(code: StatusCode, body: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (code, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// What the handlers share.
pub struct ApiState {
    /// Where the groups come from.
    pub groups: Arc<dyn Groups>,
    /// Where their lag comes from.
    pub readings: Readings,
    /// Who may read which metric.
    pub authorizer: Arc<dyn super::authz::Authorizer>,
    /// The front proxy as last read (`None` until it is).
    pub proxy: arc_swap::ArcSwapOption<FrontProxy>,
}

/// The common name of the verified client certificate of the connection a request came on
/// (`None`: no certificate); put into each request by the listener.
#[derive(Clone, Debug, Default)]
pub struct PeerName(pub Option<String>);

async fn require_front_proxy(
    State(state): State<Arc<ApiState>>,
    Extension(peer): Extension<PeerName>,
    mut req: Request,
    next: Next,
) -> Response {
    let proxy = state.proxy.load();
    match authenticate(proxy.as_deref(), peer.0.as_deref(), req.headers()) {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(denied) => status_error(StatusCode::UNAUTHORIZED, "Unauthorized", denied.to_string()),
    }
}

#[derive(Deserialize)]
struct MetricQuery {
    #[serde(rename = "labelSelector", default)]
    label_selector: String,
}

async fn metric(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<MetricQuery>,
) -> Response {
    match state.authorizer.may_read(&caller, &namespace, &name).await {
        Ok(true) => {}
        Ok(false) => {
            return status_error(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!(
                    "user {:?} cannot get {GROUP}/{name} in namespace {namespace:?}",
                    caller.user
                ),
            );
        }
        Err(why) => {
            return status_error(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", why);
        }
    }
    if name != UPDATER_LAG_METRIC {
        return status_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("external metric {name:?} is not served here (only {UPDATER_LAG_METRIC})"),
        );
    }
    let selector = match parse_selector(&query.label_selector) {
        Ok(s) => s,
        Err(why) => return status_error(StatusCode::BAD_REQUEST, "BadRequest", why),
    };
    let groups = match state.groups.in_namespace(&namespace).await {
        Ok(g) => g,
        Err(e) => {
            return status_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                format!("listing the MarketGroups of {namespace}: {e}"),
            );
        }
    };
    let mut values = Vec::new();
    for ServedGroup { labels, consumer } in
        groups.into_iter().filter(|g| selects(&selector, &g.labels))
    {
        match state.readings.read(&consumer).await {
            Ok(r) => values.push(MetricValue {
                labels,
                value: r.lag,
                timestamp: Timestamp::try_from(r.at).unwrap_or(Timestamp::UNIX_EPOCH),
            }),
            // Zero would tell the HPA to scale down while the backlog may be growing.
            Err(why) => {
                tracing::debug!(group = %consumer.group, %why, "lag unknown");
                return status_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    format!("lag of consumer group {} is unknown: {why}", consumer.group),
                );
            }
        }
    }
    json_response(StatusCode::OK, &value_list(&name, &values))
}

/// The router: discovery and the metric, every path behind the front-proxy check.
pub fn router(state: Arc<ApiState>) -> Router {
    let discovery = |doc: Value| move || async move { json_response(StatusCode::OK, &doc) };
    // k8s-openapi adds `kind` and `apiVersion` when serializing; these types always serialize.
    fn docs(doc: &impl serde::Serialize) -> Value {
        serde_json::to_value(doc).unwrap_or_default()
    }
    Router::new()
        .route("/apis", get(discovery(group_list_json())))
        .route(
            &format!("/apis/{GROUP}"),
            get(discovery(docs(&api_group()))),
        )
        .route(
            &format!("/apis/{GROUP}/{VERSION}"),
            get(discovery(docs(&api_resource_list()))),
        )
        .route(
            &format!("/apis/{GROUP}/{VERSION}/namespaces/{{namespace}}/{{metric}}"),
            get(metric),
        )
        .fallback(|| async {
            status_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource".into(),
            )
        })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            require_front_proxy,
        ))
        .with_state(state)
}
