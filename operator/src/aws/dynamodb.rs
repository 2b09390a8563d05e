//! DynamoDB's table API as the store step uses it: a trait and its aws-sdk-dynamodb implementation.

use super::error::AwsError;
use super::model::*;
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::describe_table::DescribeTableError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ProvisionedThroughput,
    ScalarAttributeType, Tag,
};
use prapi_common::table::KEYS;
use std::collections::BTreeMap;
use std::time::SystemTime;

const SERVICE: &str = "DynamoDB";

/// The table operations the store step needs.
#[async_trait]
pub trait TableApi: Send + Sync {
    /// The table with its tags; None when it does not exist.
    async fn describe(&self, name: &str) -> Result<Option<TableState>, AwsError>;
    /// Creates the table in the store's layout.
    async fn create(
        &self,
        name: &str,
        billing: Billing,
        read: i64,
        write: i64,
        tags: &[(String, String)],
    ) -> Result<(), AwsError>;
    /// Adds tags.
    async fn tag(&self, arn: &str, tags: &[(String, String)]) -> Result<(), AwsError>;
    /// Switches the capacity mode (capacities apply to Provisioned).
    async fn switch_billing(
        &self,
        name: &str,
        to: Billing,
        read: i64,
        write: i64,
    ) -> Result<(), AwsError>;
    /// Sets the provisioned throughput.
    async fn set_capacity(&self, name: &str, read: i64, write: i64) -> Result<(), AwsError>;
    /// Deletes the table.
    async fn delete(&self, name: &str) -> Result<(), AwsError>;
}

/// [`TableApi`] on aws-sdk-dynamodb.
#[derive(Clone, Debug)]
pub struct SdkTables {
    client: Client,
}

impl SdkTables {
    /// Wraps a client.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

fn time(t: Option<&aws_sdk_dynamodb::primitives::DateTime>) -> Option<SystemTime> {
    t.and_then(|d| SystemTime::try_from(*d).ok())
}

fn tags(tags: &[(String, String)]) -> Result<Vec<Tag>, AwsError> {
    tags.iter()
        .map(|(k, v)| {
            Tag::builder()
                .key(k)
                .value(v)
                .build()
                .map_err(|e| build_error("TagResource", e))
        })
        .collect()
}

fn build_error(operation: &'static str, e: impl std::fmt::Display) -> AwsError {
    AwsError {
        service: SERVICE,
        operation,
        code: "RequestInvalid".into(),
        message: e.to_string(),
    }
}

fn throughput(read: i64, write: i64) -> Result<ProvisionedThroughput, AwsError> {
    ProvisionedThroughput::builder()
        .read_capacity_units(read)
        .write_capacity_units(write)
        .build()
        .map_err(|e| build_error("UpdateTable", e))
}

#[async_trait]
impl TableApi for SdkTables {
    async fn describe(&self, name: &str) -> Result<Option<TableState>, AwsError> {
        let out = match self.client.describe_table().table_name(name).send().await {
            Ok(out) => out,
            Err(e) => {
                if matches!(
                    e.as_service_error(),
                    Some(DescribeTableError::ResourceNotFoundException(_))
                ) {
                    return Ok(None);
                }
                return Err(AwsError::from_sdk(SERVICE, "DescribeTable", &e));
            }
        };
        let Some(t) = out.table else {
            return Ok(None);
        };
        let types: BTreeMap<String, String> = t
            .attribute_definitions()
            .iter()
            .map(|a| {
                (
                    a.attribute_name().to_string(),
                    a.attribute_type().as_str().to_string(),
                )
            })
            .collect();
        let key_schema = t
            .key_schema()
            .iter()
            .map(|k| {
                (
                    k.attribute_name().to_string(),
                    k.key_type().as_str().to_string(),
                    types.get(k.attribute_name()).cloned().unwrap_or_default(),
                )
            })
            .collect();
        let summary = t.billing_mode_summary();
        let billing = match summary.and_then(|s| s.billing_mode()) {
            Some(BillingMode::PayPerRequest) => Billing::PayPerRequest,
            _ => Billing::Provisioned,
        };
        let pt = t.provisioned_throughput();
        let arn = t.table_arn().unwrap_or_default().to_string();
        let mut state = TableState {
            status: t
                .table_status()
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|| "UNKNOWN".into()),
            key_schema,
            billing,
            last_switch_to_pay_per_request: time(
                summary.and_then(|s| s.last_update_to_pay_per_request_date_time()),
            ),
            read_capacity: pt.and_then(|p| p.read_capacity_units()).unwrap_or(0),
            write_capacity: pt.and_then(|p| p.write_capacity_units()).unwrap_or(0),
            decreases_today: pt.and_then(|p| p.number_of_decreases_today()).unwrap_or(0),
            last_decrease: time(pt.and_then(|p| p.last_decrease_date_time())),
            tags: BTreeMap::new(),
            arn: arn.clone(),
        };
        if !arn.is_empty() {
            let mut next: Option<String> = None;
            loop {
                let out = self
                    .client
                    .list_tags_of_resource()
                    .resource_arn(&arn)
                    .set_next_token(next.clone())
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk(SERVICE, "ListTagsOfResource", &e))?;
                for tag in out.tags() {
                    state
                        .tags
                        .insert(tag.key().to_string(), tag.value().to_string());
                }
                next = out.next_token().map(str::to_string);
                if next.is_none() {
                    break;
                }
            }
        }
        Ok(Some(state))
    }

    async fn create(
        &self,
        name: &str,
        billing: Billing,
        read: i64,
        write: i64,
        tag_list: &[(String, String)],
    ) -> Result<(), AwsError> {
        let key = |n: &str, k: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(n)
                .key_type(k)
                .build()
                .map_err(|e| build_error("CreateTable", e))
        };
        let attr = |n: &str| {
            AttributeDefinition::builder()
                .attribute_name(n)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(|e| build_error("CreateTable", e))
        };
        let mut req = self
            .client
            .create_table()
            .table_name(name)
            .set_key_schema(Some(
                KEYS.iter()
                    .map(|(n, role)| key(n, KeyType::from(role.as_str())))
                    .collect::<Result<_, _>>()?,
            ))
            .set_attribute_definitions(Some(
                KEYS.iter()
                    .map(|(n, _)| attr(n))
                    .collect::<Result<_, _>>()?,
            ))
            .set_tags(Some(tags(tag_list)?));
        req = match billing {
            Billing::PayPerRequest => req.billing_mode(BillingMode::PayPerRequest),
            Billing::Provisioned => req
                .billing_mode(BillingMode::Provisioned)
                .provisioned_throughput(throughput(read, write)?),
        };
        let out = req
            .send()
            .await
            .map_err(|e| AwsError::from_sdk(SERVICE, "CreateTable", &e))?;
        // Ownership rests on the tags, so make sure they are there before returning: some
        // DynamoDB implementations (dynalite) ignore CreateTable's Tags, and a table without
        // them would be left alone as foreign from then on.
        let Some(arn) = out.table_description.and_then(|t| t.table_arn) else {
            return Ok(());
        };
        let mut last = None;
        for _ in 0..40 {
            let present = self
                .client
                .list_tags_of_resource()
                .resource_arn(&arn)
                .send()
                .await
                .map(|o| {
                    tag_list
                        .iter()
                        .all(|(k, v)| o.tags().iter().any(|t| t.key() == k && t.value() == v))
                });
            match present {
                Ok(true) => return Ok(()),
                Ok(false) => match self.tag(&arn, tag_list).await {
                    Ok(()) => {}
                    Err(e) if e.code == "ResourceInUseException" => last = Some(e),
                    Err(e) => return Err(e),
                },
                Err(e) => last = Some(AwsError::from_sdk(SERVICE, "ListTagsOfResource", &e)),
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        Err(last.unwrap_or(AwsError {
            service: SERVICE,
            operation: "TagResource",
            code: "TagsNotApplied".into(),
            message: format!("table {name} was created but its tags did not stick"),
        }))
    }

    async fn tag(&self, arn: &str, tag_list: &[(String, String)]) -> Result<(), AwsError> {
        self.client
            .tag_resource()
            .resource_arn(arn)
            .set_tags(Some(tags(tag_list)?))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk(SERVICE, "TagResource", &e))?;
        Ok(())
    }

    async fn switch_billing(
        &self,
        name: &str,
        to: Billing,
        read: i64,
        write: i64,
    ) -> Result<(), AwsError> {
        let req = self.client.update_table().table_name(name);
        let req = match to {
            Billing::PayPerRequest => req.billing_mode(BillingMode::PayPerRequest),
            Billing::Provisioned => req
                .billing_mode(BillingMode::Provisioned)
                .provisioned_throughput(throughput(read, write)?),
        };
        req.send()
            .await
            .map_err(|e| AwsError::from_sdk(SERVICE, "UpdateTable", &e))?;
        Ok(())
    }

    async fn set_capacity(&self, name: &str, read: i64, write: i64) -> Result<(), AwsError> {
        self.client
            .update_table()
            .table_name(name)
            .provisioned_throughput(throughput(read, write)?)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk(SERVICE, "UpdateTable", &e))?;
        Ok(())
    }

    async fn delete(&self, name: &str) -> Result<(), AwsError> {
        match self.client.delete_table().table_name(name).send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let gone = e.as_service_error().is_some_and(|s| {
                    matches!(
                        s,
                        aws_sdk_dynamodb::operation::delete_table::DeleteTableError::ResourceNotFoundException(_)
                    )
                });
                if gone {
                    Ok(())
                } else {
                    Err(AwsError::from_sdk(SERVICE, "DeleteTable", &e))
                }
            }
        }
    }
}
