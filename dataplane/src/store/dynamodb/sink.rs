//! The writer's [`BatchSink`] on DynamoDB: BatchWriteItem and BatchGetItem on the writer client,
//! and the classification of SDK errors into what the writer retries and what it gives up on.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{KeysAndAttributes, PutRequest, WriteRequest};

use super::layout;
use super::metrics::{DynamoMetrics, outcome_of};
use super::writer::{BatchSink, SinkError};
use crate::model::{Write, WriteKey};

/// Classifies an SDK error: throttling and transient failures are retried, the rest is fatal.
pub(super) fn classify<E>(e: &SdkError<E>) -> SinkError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let text = DisplayErrorContext(e).to_string();
    match e {
        SdkError::TimeoutError(_) => SinkError::Transient(format!("timeout: {text}")),
        SdkError::DispatchFailure(f) if f.is_timeout() => {
            SinkError::Transient(format!("timeout: {text}"))
        }
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => SinkError::Transient(text),
        _ => {
            let code = e.code().unwrap_or_default();
            if matches!(
                code,
                "ProvisionedThroughputExceededException"
                    | "ThrottlingException"
                    | "RequestLimitExceeded"
                    | "LimitExceededException"
            ) {
                SinkError::Throttled(text)
            } else if e
                .raw_response()
                .is_some_and(|r| r.status().is_server_error())
                || code == "InternalServerError"
            {
                SinkError::Transient(text)
            } else {
                SinkError::Fatal(text)
            }
        }
    }
}

/// The table's batch operations on the writer client.
pub(super) struct DynamoSink {
    pub(super) client: Client,
    pub(super) table: String,
    pub(super) metrics: Arc<DynamoMetrics>,
}

#[async_trait]
impl BatchSink for DynamoSink {
    async fn write_batch(&self, writes: &[&Write]) -> Result<Vec<usize>, SinkError> {
        let mut requests = Vec::with_capacity(writes.len());
        let mut index: HashMap<(String, String), usize> = HashMap::with_capacity(writes.len());
        for (i, w) in writes.iter().enumerate() {
            let key = w.key();
            let (pk, sk) = layout::key_strings(&key);
            index.insert((pk.to_owned(), sk), i);
            let put = PutRequest::builder()
                .set_item(Some(layout::write_item(w)))
                .build()
                .map_err(|e| SinkError::Fatal(format!("building a put request: {e}")))?;
            requests.push(WriteRequest::builder().put_request(put).build());
        }
        let started = Instant::now();
        let result = self
            .client
            .batch_write_item()
            .request_items(&self.table, requests)
            .send()
            .await;
        let out = match result {
            Ok(out) => out,
            Err(e) => {
                let err = classify(&e);
                self.metrics
                    .record("writer", "batch_write", outcome_of(&err), started);
                return Err(err);
            }
        };
        self.metrics.record("writer", "batch_write", "ok", started);
        let mut unprocessed = Vec::new();
        if let Some(left) = out.unprocessed_items().and_then(|m| m.get(&self.table)) {
            for req in left {
                let Some(item) = req.put_request().map(PutRequest::item) else {
                    continue;
                };
                let key = layout::parse_key(item).map_err(|e| SinkError::Fatal(e.to_string()))?;
                let (pk, sk) = layout::key_strings(&key);
                match index.get(&(pk.to_owned(), sk)) {
                    Some(&i) => unprocessed.push(i),
                    None => {
                        return Err(SinkError::Fatal(
                            "UnprocessedItems names an item that was not sent".into(),
                        ));
                    }
                }
            }
        }
        Ok(unprocessed)
    }

    async fn stored_versions(
        &self,
        keys: &[&WriteKey],
    ) -> Result<(HashMap<WriteKey, u64>, Vec<usize>), SinkError> {
        let mut index: HashMap<(String, String), usize> = HashMap::with_capacity(keys.len());
        let mut request = KeysAndAttributes::builder()
            .consistent_read(true)
            .projection_expression("#pk, #sk, #v")
            .expression_attribute_names("#pk", layout::PK)
            .expression_attribute_names("#sk", layout::SK)
            .expression_attribute_names("#v", layout::VERSION);
        for (i, k) in keys.iter().enumerate() {
            let (pk, sk) = layout::key_strings(k);
            index.insert((pk.to_owned(), sk), i);
            request = request.keys(layout::key_item(k));
        }
        let request = request
            .build()
            .map_err(|e| SinkError::Fatal(format!("building a batch get: {e}")))?;
        let started = Instant::now();
        let out = match self
            .client
            .batch_get_item()
            .request_items(&self.table, request)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                let err = classify(&e);
                self.metrics
                    .record("writer", "batch_get", outcome_of(&err), started);
                return Err(err);
            }
        };
        self.metrics.record("writer", "batch_get", "ok", started);
        let mut found = HashMap::new();
        if let Some(items) = out.responses().and_then(|m| m.get(&self.table)) {
            for item in items {
                let key = layout::parse_key(item).map_err(|e| SinkError::Fatal(e.to_string()))?;
                let version =
                    layout::parse_version(item).map_err(|e| SinkError::Fatal(e.to_string()))?;
                found.insert(key, version);
            }
        }
        let mut unprocessed = Vec::new();
        if let Some(left) = out.unprocessed_keys().and_then(|m| m.get(&self.table)) {
            for item in left.keys() {
                let key = layout::parse_key(item).map_err(|e| SinkError::Fatal(e.to_string()))?;
                let (pk, sk) = layout::key_strings(&key);
                if let Some(&i) = index.get(&(pk.to_owned(), sk)) {
                    unprocessed.push(i);
                }
            }
        }
        Ok((found, unprocessed))
    }
}
