//! The table itself: checked at connect, created in the store's layout when asked to (local and
//! test setups; in clusters the operator creates it), and waited for until ACTIVE.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
};
use prapi_common::table::KEYS;

use crate::store::StoreError;

/// Checks that `table` exists and is ACTIVE, creating it first if it is missing and `create`.
pub(super) async fn ensure_table(
    client: &Client,
    table: &str,
    create: bool,
) -> Result<(), StoreError> {
    match client.describe_table().table_name(table).send().await {
        Ok(out) => {
            if out.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                return Ok(());
            }
        }
        Err(e) if e.code() == Some("ResourceNotFoundException") => {
            if !create {
                return Err(StoreError::Backend(
                    format!("table {table} does not exist (create it, or pass --create-table)")
                        .into(),
                ));
            }
            create_table(client, table).await?;
        }
        Err(e) => {
            return Err(StoreError::backend(format!("describing table {table}"), e));
        }
    }
    wait_active(client, table).await
}

/// Creates `table` in the store's layout ([`prapi_common::table::KEYS`]), on-demand.
pub async fn create_table(client: &Client, table: &str) -> Result<(), StoreError> {
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
    };
    let attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
    };
    let build_err = |e| StoreError::backend(format!("building the request to create {table}"), e);
    let result = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .set_key_schema(Some(
            KEYS.iter()
                .map(|(name, role)| key(name, KeyType::from(role.as_str())))
                .collect::<Result<_, _>>()
                .map_err(build_err)?,
        ))
        .set_attribute_definitions(Some(
            KEYS.iter()
                .map(|(name, _)| attr(name))
                .collect::<Result<_, _>>()
                .map_err(build_err)?,
        ))
        .send()
        .await;
    match result {
        Ok(_) => {
            tracing::info!(table, "table created");
            Ok(())
        }
        // Someone else created it meanwhile.
        Err(e) if e.code() == Some("ResourceInUseException") => Ok(()),
        Err(e) => Err(StoreError::backend(format!("creating table {table}"), e)),
    }
}

async fn wait_active(client: &Client, table: &str) -> Result<(), StoreError> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| StoreError::backend(format!("describing table {table}"), e))?;
        let status = out.table().and_then(|t| t.table_status()).cloned();
        if status == Some(TableStatus::Active) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(StoreError::Unavailable(
                format!("table {table} is not ACTIVE after 120 s (status {status:?})").into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
