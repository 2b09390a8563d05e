//! Application Auto Scaling as the store step uses it: scalable targets and target-tracking
//! policies on the table's read and write capacity. A trait and its SDK implementation.

use super::error::AwsError;
use super::model::*;
use async_trait::async_trait;
use aws_sdk_applicationautoscaling::Client;
use aws_sdk_applicationautoscaling::types::{
    MetricType, PolicyType, PredefinedMetricSpecification, ScalableDimension, ServiceNamespace,
    TargetTrackingScalingPolicyConfiguration,
};

const SERVICE: &str = "ApplicationAutoScaling";

/// The autoscaling operations the store step needs (resource id `table/<name>`).
#[async_trait]
pub trait ScalingApi: Send + Sync {
    /// Targets and policies of the table.
    async fn describe(&self, resource_id: &str) -> Result<ScalingState, AwsError>;
    /// Registers (or updates) a scalable target.
    async fn register(
        &self,
        resource_id: &str,
        dimension: Dimension,
        min: i64,
        max: i64,
    ) -> Result<(), AwsError>;
    /// Puts a target-tracking policy on the predefined utilization metric.
    async fn put_policy(
        &self,
        resource_id: &str,
        dimension: Dimension,
        name: &str,
        target: f64,
    ) -> Result<(), AwsError>;
    /// Deletes a scaling policy (absent is fine).
    async fn delete_policy(
        &self,
        resource_id: &str,
        dimension: Dimension,
        name: &str,
    ) -> Result<(), AwsError>;
    /// Deregisters a target (absent is fine).
    async fn deregister(&self, resource_id: &str, dimension: Dimension) -> Result<(), AwsError>;
}

/// [`ScalingApi`] on aws-sdk-applicationautoscaling.
#[derive(Clone, Debug)]
pub struct SdkScaling {
    client: Client,
}

impl SdkScaling {
    /// Wraps a client.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

fn dimension_of(d: &ScalableDimension) -> Option<Dimension> {
    Dimension::ALL
        .into_iter()
        .find(|x| x.scalable_dimension() == d.as_str())
}

fn sdk_dimension(d: Dimension) -> ScalableDimension {
    ScalableDimension::from(d.scalable_dimension())
}

fn capacity(v: Option<i32>) -> i64 {
    i64::from(v.unwrap_or(0))
}

fn to_i32(operation: &'static str, v: i64) -> Result<i32, AwsError> {
    i32::try_from(v).map_err(|_| AwsError {
        service: SERVICE,
        operation,
        code: "RequestInvalid".into(),
        message: format!("capacity {v} out of range"),
    })
}

#[async_trait]
impl ScalingApi for SdkScaling {
    async fn describe(&self, resource_id: &str) -> Result<ScalingState, AwsError> {
        let mut state = ScalingState::default();
        let mut pages = self
            .client
            .describe_scalable_targets()
            .service_namespace(ServiceNamespace::Dynamodb)
            .resource_ids(resource_id)
            .into_paginator()
            .send();
        while let Some(out) = pages
            .try_next()
            .await
            .map_err(|e| AwsError::from_sdk(SERVICE, "DescribeScalableTargets", &e))?
        {
            for t in out.scalable_targets() {
                if t.resource_id() != resource_id {
                    continue;
                }
                if let Some(d) = dimension_of(t.scalable_dimension()) {
                    state.targets.insert(
                        d,
                        TargetState {
                            min: capacity(Some(t.min_capacity())),
                            max: capacity(Some(t.max_capacity())),
                        },
                    );
                }
            }
        }
        let mut pages = self
            .client
            .describe_scaling_policies()
            .service_namespace(ServiceNamespace::Dynamodb)
            .resource_id(resource_id)
            .into_paginator()
            .send();
        while let Some(out) = pages
            .try_next()
            .await
            .map_err(|e| AwsError::from_sdk(SERVICE, "DescribeScalingPolicies", &e))?
        {
            for p in out.scaling_policies() {
                if p.resource_id() != resource_id {
                    continue;
                }
                let Some(d) = dimension_of(p.scalable_dimension()) else {
                    continue;
                };
                let tt = p.target_tracking_scaling_policy_configuration();
                state.policies.entry(d).or_default().push(PolicyState {
                    name: p.policy_name().to_string(),
                    target_value: tt.map(|c| c.target_value()),
                    metric: tt
                        .and_then(|c| c.predefined_metric_specification())
                        .map(|m| m.predefined_metric_type().as_str().to_string()),
                });
            }
        }
        Ok(state)
    }

    async fn register(
        &self,
        resource_id: &str,
        dimension: Dimension,
        min: i64,
        max: i64,
    ) -> Result<(), AwsError> {
        self.client
            .register_scalable_target()
            .service_namespace(ServiceNamespace::Dynamodb)
            .resource_id(resource_id)
            .scalable_dimension(sdk_dimension(dimension))
            .min_capacity(to_i32("RegisterScalableTarget", min)?)
            .max_capacity(to_i32("RegisterScalableTarget", max)?)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk(SERVICE, "RegisterScalableTarget", &e))?;
        Ok(())
    }

    async fn put_policy(
        &self,
        resource_id: &str,
        dimension: Dimension,
        name: &str,
        target: f64,
    ) -> Result<(), AwsError> {
        let metric = PredefinedMetricSpecification::builder()
            .predefined_metric_type(MetricType::from(dimension.metric()))
            .build()
            .map_err(|e| AwsError {
                service: SERVICE,
                operation: "PutScalingPolicy",
                code: "RequestInvalid".into(),
                message: e.to_string(),
            })?;
        let config = TargetTrackingScalingPolicyConfiguration::builder()
            .target_value(target)
            .predefined_metric_specification(metric)
            .build()
            .map_err(|e| AwsError {
                service: SERVICE,
                operation: "PutScalingPolicy",
                code: "RequestInvalid".into(),
                message: e.to_string(),
            })?;
        self.client
            .put_scaling_policy()
            .service_namespace(ServiceNamespace::Dynamodb)
            .resource_id(resource_id)
            .scalable_dimension(sdk_dimension(dimension))
            .policy_name(name)
            .policy_type(PolicyType::TargetTrackingScaling)
            .target_tracking_scaling_policy_configuration(config)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk(SERVICE, "PutScalingPolicy", &e))?;
        Ok(())
    }

    async fn delete_policy(
        &self,
        resource_id: &str,
        dimension: Dimension,
        name: &str,
    ) -> Result<(), AwsError> {
        match self
            .client
            .delete_scaling_policy()
            .service_namespace(ServiceNamespace::Dynamodb)
            .resource_id(resource_id)
            .scalable_dimension(sdk_dimension(dimension))
            .policy_name(name)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let gone = e
                    .as_service_error()
                    .is_some_and(|s| s.is_object_not_found_exception());
                if gone {
                    Ok(())
                } else {
                    Err(AwsError::from_sdk(SERVICE, "DeleteScalingPolicy", &e))
                }
            }
        }
    }

    async fn deregister(&self, resource_id: &str, dimension: Dimension) -> Result<(), AwsError> {
        match self
            .client
            .deregister_scalable_target()
            .service_namespace(ServiceNamespace::Dynamodb)
            .resource_id(resource_id)
            .scalable_dimension(sdk_dimension(dimension))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let gone = e
                    .as_service_error()
                    .is_some_and(|s| s.is_object_not_found_exception());
                if gone {
                    Ok(())
                } else {
                    Err(AwsError::from_sdk(SERVICE, "DeregisterScalableTarget", &e))
                }
            }
        }
    }
}
