//! The group's DynamoDB table and its capacity (docs/storage.md; docs/crd.md, spec.dynamodb;
//! docs/operations.md, "Capacity").
//!
//! - [`model`]: the domain: what the group wants ([`TableSpec`]), what AWS reports ([`AwsState`]).
//! - [`planner`]: pure: the actions that take the observed state towards the desired one, within
//!   DynamoDB's limits, and the `StoreReady` condition.
//! - [`dynamodb`], [`autoscaling`], [`lag`]: one trait per outside API with its SDK implementation
//!   (aws-sdk-dynamodb, aws-sdk-applicationautoscaling, rdkafka).
//! - [`store`]: observe → plan → execute, and the cleanup when the group is deleted.

pub mod autoscaling;
pub mod dynamodb;
pub mod error;
pub mod lag;
pub mod model;
pub mod planner;
pub mod store;

pub use error::AwsError;
pub use model::*;
