//! Whether the user the front proxy named may read a metric: asked of kube-apiserver's own
//! authorizer with a SubjectAccessReview (the delegated authorization every extension API server
//! does; the chart binds `system:auth-delegator` for it), the same RBAC that `kubectl auth
//! can-i get prapi_updater_consumer_lag.external.metrics.k8s.io` checks. Decisions are kept for a
//! few seconds: the HPA controller asks every 15 s per group.

use super::api::GROUP;
use super::api::VERSION;
use super::auth::Caller;
use async_trait::async_trait;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use std::time::Duration;

/// How long an access decision is reused.
const DECISION_TTL: Duration = Duration::from_secs(10);

/// Decides whether a caller may `get` a metric in a namespace.
#[async_trait]
pub trait Authorizer: Send + Sync {
    /// `Ok(true)` when allowed; `Err` with the reason when no decision could be had.
    async fn may_read(
        &self,
        caller: &Caller,
        namespace: &str,
        metric: &str,
    ) -> Result<bool, String>;
}

/// [`Authorizer`] by SubjectAccessReview.
pub struct ReviewAuthorizer {
    client: kube::Client,
    decisions: moka::future::Cache<(Caller, String, String), bool>,
}

impl ReviewAuthorizer {
    /// Reviews through `client`.
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            decisions: moka::future::Cache::builder()
                .time_to_live(DECISION_TTL)
                .max_capacity(10_000)
                .build(),
        }
    }
}

/// The review of `caller` getting `metric` in `namespace`.
pub fn review(caller: &Caller, namespace: &str, metric: &str) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(caller.user.clone()),
            groups: Some(caller.groups.clone()),
            resource_attributes: Some(ResourceAttributes {
                group: Some(GROUP.into()),
                version: Some(VERSION.into()),
                resource: Some(metric.into()),
                namespace: Some(namespace.into()),
                verb: Some("get".into()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    }
}

#[async_trait]
impl Authorizer for ReviewAuthorizer {
    async fn may_read(
        &self,
        caller: &Caller,
        namespace: &str,
        metric: &str,
    ) -> Result<bool, String> {
        let key = (caller.clone(), namespace.to_string(), metric.to_string());
        self.decisions
            .try_get_with(key, async {
                let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
                api.create(&PostParams::default(), &review(caller, namespace, metric))
                    .await
                    .map(|r| r.status.is_some_and(|s| s.allowed))
                    .map_err(|e| format!("SubjectAccessReview: {e}"))
            })
            .await
            .map_err(|e| e.as_ref().clone())
    }
}
