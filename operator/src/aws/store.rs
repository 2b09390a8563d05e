//! The store step: observe the table, its autoscaling and the updater's lag; plan; execute. And the
//! cleanup that runs before a deleted group's finalizer goes.

use super::autoscaling::{ScalingApi, SdkScaling};
use super::dynamodb::{SdkTables, TableApi};
use super::error::AwsError;
use super::lag::{ConsumerGroupRef, KafkaLag, LagSource};
use super::model::*;
use super::planner::{self, AwsAction, StoreCondition};
use crate::crd;
use crate::plan::GroupPlan;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tracing::info;

/// The table a plan asks for.
pub fn table_spec(plan: &GroupPlan) -> TableSpec {
    let d = &plan.dynamodb;
    let range = |c: &crd::Capacity| CapacityRange {
        min: c.min,
        max: c.max,
        target_utilization: f64::from(c.target_utilization),
    };
    TableSpec {
        name: plan.table.clone(),
        group: format!("{}/{}", plan.owner.namespace, plan.owner.name),
        billing: match d.billing_mode {
            crd::BillingMode::Provisioned => Billing::Provisioned,
            crd::BillingMode::PayPerRequest => Billing::PayPerRequest,
        },
        read: range(&d.read),
        write: range(&d.write),
        bootstrap_write_capacity: d.bootstrap_write_capacity,
        bootstrap_lag_threshold: plan.updater.lag_threshold,
        deletion_policy: match d.deletion_policy {
            crd::DeletionPolicy::Retain => DeletionPolicy::Retain,
            crd::DeletionPolicy::Delete => DeletionPolicy::Delete,
        },
    }
}

/// The updater's consumer group of a plan.
pub fn consumer_group(plan: &GroupPlan) -> ConsumerGroupRef {
    ConsumerGroupRef {
        bootstrap_servers: plan.updater.bootstrap_servers.clone(),
        group: plan.updater.consumer_group.clone(),
        topics: vec![
            plan.updater.products_topic.clone(),
            plan.updater.offers_topic.clone(),
        ],
        security: plan.updater.kafka_client.as_ref().map(|k| k.secret.clone()),
    }
}

/// What a store reconcile found and did.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreOutcome {
    /// `StoreReady`.
    pub condition: StoreCondition,
    /// The table as observed before the actions.
    pub table: Option<TableState>,
    /// The updater's lag.
    pub lag: LagReading,
    /// Whether the bootstrap floor applies.
    pub bootstrapping: bool,
    /// When to look again, if sooner than the resync.
    pub requeue_after: Option<Duration>,
    /// What was done.
    pub executed: Vec<AwsAction>,
}

/// What a store cleanup did.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreCleanup {
    /// Nothing is left: the finalizer may go.
    pub done: bool,
    /// What was done.
    pub executed: Vec<AwsAction>,
}

/// The clock (controlled in tests).
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Observe → plan → execute against the three outside APIs.
#[derive(Clone)]
pub struct StoreStep {
    tables: Arc<dyn TableApi>,
    scaling: Arc<dyn ScalingApi>,
    lag: Arc<dyn LagSource>,
    clock: Clock,
}

impl std::fmt::Debug for StoreStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreStep").finish_non_exhaustive()
    }
}

/// AWS client settings.
#[derive(Clone, Debug, Default)]
pub struct AwsEndpoints {
    /// DynamoDB endpoint URL (None: the SDK's resolution, `AWS_ENDPOINT_URL_DYNAMODB`, ...).
    pub dynamodb: Option<String>,
    /// Application Auto Scaling endpoint URL.
    pub application_autoscaling: Option<String>,
    /// Region override.
    pub region: Option<String>,
    /// Static credentials `(key id, secret)`; None: the SDK's default chain.
    pub credentials: Option<(String, String)>,
}

impl StoreStep {
    /// A step on the given APIs.
    pub fn new(
        tables: Arc<dyn TableApi>,
        scaling: Arc<dyn ScalingApi>,
        lag: Arc<dyn LagSource>,
        clock: Clock,
    ) -> Self {
        Self {
            tables,
            scaling,
            lag,
            clock,
        }
    }

    /// A step on the AWS SDK (configured from the environment, with `endpoints` overriding) and
    /// Kafka.
    pub async fn from_sdk(endpoints: AwsEndpoints) -> Self {
        use aws_config::timeout::TimeoutConfig;
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(Duration::from_secs(10))
                    .operation_timeout(Duration::from_secs(30))
                    .build(),
            );
        if let Some(r) = &endpoints.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        if let Some((id, secret)) = &endpoints.credentials {
            loader = loader.credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                id.clone(),
                secret.clone(),
                None,
                None,
                "prapi-operator",
            ));
        }
        let shared = loader.load().await;
        let mut ddb = aws_sdk_dynamodb::config::Builder::from(&shared);
        if let Some(url) = &endpoints.dynamodb {
            ddb = ddb.endpoint_url(url);
        }
        let mut aas = aws_sdk_applicationautoscaling::config::Builder::from(&shared);
        if let Some(url) = &endpoints.application_autoscaling {
            aas = aas.endpoint_url(url);
        }
        Self::new(
            Arc::new(SdkTables::new(aws_sdk_dynamodb::Client::from_conf(
                ddb.build(),
            ))),
            Arc::new(SdkScaling::new(
                aws_sdk_applicationautoscaling::Client::from_conf(aas.build()),
            )),
            Arc::new(KafkaLag::default()),
            Arc::new(SystemTime::now),
        )
    }

    /// The same step reading lag from `lag`.
    pub fn with_lag(mut self, lag: Arc<dyn LagSource>) -> Self {
        self.lag = lag;
        self
    }

    /// The same step on `clock`.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    async fn observe(
        &self,
        spec: &TableSpec,
        group: Option<&ConsumerGroupRef>,
    ) -> Result<AwsState, AwsError> {
        let table = self.tables.describe(&spec.name).await?;
        let scaling = self.scaling.describe(&spec.resource_id()).await?;
        let lag = match group {
            Some(g) => self.lag.lag(g).await,
            None => LagReading::Unknown("not read".into()),
        };
        Ok(AwsState {
            table,
            scaling,
            lag,
        })
    }

    async fn execute(
        &self,
        spec: &TableSpec,
        table: Option<&TableState>,
        action: &AwsAction,
    ) -> Result<(), AwsError> {
        let rid = spec.resource_id();
        match action {
            AwsAction::CreateTable {
                billing,
                read,
                write,
                tags,
            } => {
                self.tables
                    .create(&spec.name, *billing, *read, *write, tags)
                    .await
            }
            AwsAction::TagTable { tags } => {
                let arn = table.map(|t| t.arn.as_str()).unwrap_or_default();
                self.tables.tag(arn, tags).await
            }
            AwsAction::SwitchBilling { to, read, write } => {
                self.tables
                    .switch_billing(&spec.name, *to, *read, *write)
                    .await
            }
            AwsAction::SetCapacity { read, write } => {
                self.tables.set_capacity(&spec.name, *read, *write).await
            }
            AwsAction::RegisterTarget {
                dimension,
                min,
                max,
            } => self.scaling.register(&rid, *dimension, *min, *max).await,
            AwsAction::PutPolicy {
                dimension,
                name,
                target,
            } => {
                self.scaling
                    .put_policy(&rid, *dimension, name, *target)
                    .await
            }
            AwsAction::DeletePolicy { dimension, name } => {
                self.scaling.delete_policy(&rid, *dimension, name).await
            }
            AwsAction::DeregisterTarget { dimension } => {
                self.scaling.deregister(&rid, *dimension).await
            }
            AwsAction::DeleteTable => self.tables.delete(&spec.name).await,
        }
    }

    /// One reconcile of the group's table. An AWS error stops at the failing call (the caller
    /// reports it as `Degraded` and retries with backoff; every action is safe to repeat).
    pub async fn reconcile(
        &self,
        spec: &TableSpec,
        group: &ConsumerGroupRef,
    ) -> Result<StoreOutcome, AwsError> {
        let observed = self.observe(spec, Some(group)).await?;
        let plan = planner::plan(spec, &observed, (self.clock)());
        for action in &plan.actions {
            info!(table = %spec.name, ?action, "store action");
            self.execute(spec, observed.table.as_ref(), action).await?;
        }
        Ok(StoreOutcome {
            condition: plan.condition,
            table: observed.table,
            lag: observed.lag,
            bootstrapping: plan.bootstrapping,
            requeue_after: plan.requeue_after,
            executed: plan.actions,
        })
    }

    /// Cleanup for a deleted group: what it did, and whether nothing is left.
    pub async fn cleanup(&self, spec: &TableSpec) -> Result<StoreCleanup, AwsError> {
        let observed = self.observe(spec, None).await?;
        let plan = planner::cleanup(spec, &observed);
        for action in &plan.actions {
            info!(table = %spec.name, ?action, "store cleanup action");
            self.execute(spec, observed.table.as_ref(), action).await?;
        }
        info!(table = %spec.name, message = %plan.message, "store cleanup");
        Ok(StoreCleanup {
            done: plan.done_after,
            executed: plan.actions,
        })
    }

    /// The actions the step would take now (for `prapi-operator render`), without executing.
    pub async fn preview(
        &self,
        spec: &TableSpec,
        group: &ConsumerGroupRef,
    ) -> Result<planner::Plan, AwsError> {
        let observed = self.observe(spec, Some(group)).await?;
        Ok(planner::plan(spec, &observed, (self.clock)()))
    }
}
