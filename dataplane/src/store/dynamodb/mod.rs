//! DynamoDB implementation of [`Store`] (docs/storage.md), one table per market group.
//!
//! Reads go to a primary client with a very short attempt timeout and no retries; on a timeout,
//! throttling or a transient failure they are repeated on a fallback client with a longer timeout
//! and a small retry budget. Writes go through the batched [`BatchWriter`] on a third client
//! whose retries the writer does itself (so they are counted and never give up). Layout and
//! version rules: [`layout`] and docs/storage.md.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, KeysAndAttributes,
    PutRequest, ScalarAttributeType, TableStatus, WriteRequest,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use prapi_common::table::KEYS;

use super::{ApplyOutcome, ProductOffers, Store, StoreError, StoredProduct};
use crate::model::{Country, Offer, ProductId, Write, WriteKey};
use crate::updater::WriterMetrics;
use crate::updater::writer::{BatchSink, BatchWriter, SinkError, WriterConfig};

pub mod layout;

use layout::{Decoded, Item};

/// Settings of the DynamoDB store.
#[derive(Debug, Clone)]
pub struct DynamoConfig {
    /// Table name.
    pub table: String,
    /// Create the table (in this layout, on-demand billing) when it does not exist.
    pub create_table: bool,
    /// Attempt timeout of the primary read client (no retries).
    pub primary_timeout: Duration,
    /// Attempt timeout of the fallback read client.
    pub fallback_timeout: Duration,
    /// Attempts of the fallback client, the first included.
    pub fallback_attempts: u32,
    /// Attempt timeout of one batch write or version lookup.
    pub write_timeout: Duration,
    /// Batched writer settings (in flight, backoff, version cache).
    pub writer: WriterConfig,
    /// Endpoint for every client; default: the SDK's (`AWS_ENDPOINT_URL_DYNAMODB`, ...).
    pub endpoint_url: Option<String>,
    /// Endpoint for the primary read client only (e.g. through a proxy in tests).
    pub primary_endpoint_url: Option<String>,
    /// Concurrent requests per client at start, to open connections and resolve credentials.
    pub warm_connections: usize,
    /// Region; default: the SDK's (`AWS_REGION`, profile, ...).
    pub region: Option<String>,
    /// Static access key id and secret instead of the SDK's credential chain (dynalite, tests).
    pub static_credentials: Option<(String, String)>,
}

impl DynamoConfig {
    /// Defaults of docs/storage.md for `table`.
    pub fn new(table: impl Into<String>) -> Self {
        Self {
            table: table.into(),
            create_table: false,
            primary_timeout: Duration::from_millis(10),
            fallback_timeout: Duration::from_millis(100),
            fallback_attempts: 3,
            write_timeout: Duration::from_secs(5),
            writer: WriterConfig::default(),
            endpoint_url: None,
            primary_endpoint_url: None,
            warm_connections: 4,
            region: None,
            static_credentials: None,
        }
    }
}

/// Labels of a request metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `primary`, `fallback` or `writer`.
    pub client: &'static str,
    /// `get`, `query`, `batch_write`, `batch_get`.
    pub op: &'static str,
    /// `ok`, `timeout`, `throttled`, `transient`, `error`.
    pub outcome: &'static str,
}

/// Labels of a latency metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClientLabels {
    /// `primary`, `fallback` or `writer`.
    pub client: &'static str,
}

/// Per-client metrics of the DynamoDB store.
#[derive(Debug)]
pub struct DynamoMetrics {
    /// Requests by client, operation and outcome.
    pub requests: Family<RequestLabels, Counter>,
    /// Request latency by client.
    pub seconds: Family<ClientLabels, Histogram>,
    /// Reads the primary could not answer and the fallback was asked.
    pub fallbacks: Counter,
    /// Metrics of the batched writer.
    pub writer: Arc<WriterMetrics>,
}

impl Default for DynamoMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            seconds: Family::new_with_constructor(|| {
                // 0.5 ms .. ~4 s
                Histogram::new(exponential_buckets(0.0005, 2.0, 14))
            }),
            fallbacks: Counter::default(),
            writer: Arc::new(WriterMetrics::default()),
        }
    }
}

impl DynamoMetrics {
    /// Requests so far with these labels.
    pub fn requests_with(
        &self,
        client: &'static str,
        op: &'static str,
        outcome: &'static str,
    ) -> u64 {
        self.requests
            .get_or_create(&RequestLabels {
                client,
                op,
                outcome,
            })
            .get()
    }

    fn record(
        &self,
        client: &'static str,
        op: &'static str,
        outcome: &'static str,
        started: Instant,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                client,
                op,
                outcome,
            })
            .inc();
        self.seconds
            .get_or_create(&ClientLabels { client })
            .observe(started.elapsed().as_secs_f64());
    }

    /// Registers under `prapi_dynamodb_*` (and the writer's under `prapi_writer_*`).
    pub fn register(&self, registry: &mut Registry) {
        self.writer.register(registry);
        let r = registry.sub_registry_with_prefix("prapi_dynamodb");
        r.register(
            "requests",
            "DynamoDB requests by client, operation and outcome",
            self.requests.clone(),
        );
        r.register(
            "request_seconds",
            "DynamoDB request latency by client",
            self.seconds.clone(),
        );
        r.register(
            "read_fallbacks",
            "Reads repeated on the fallback client",
            self.fallbacks.clone(),
        );
    }
}

fn outcome_of(e: &SinkError) -> &'static str {
    match e {
        SinkError::Throttled(_) => "throttled",
        SinkError::Transient(m) if m.starts_with("timeout") => "timeout",
        SinkError::Transient(_) => "transient",
        SinkError::Fatal(_) => "error",
    }
}

/// Classifies an SDK error: throttling and transient failures are retried, the rest is fatal.
fn classify<E>(e: &SdkError<E>) -> SinkError
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

fn client(
    base: &aws_config::SdkConfig,
    endpoint: Option<&str>,
    attempt_timeout: Duration,
    retry: RetryConfig,
) -> Client {
    let mut b = aws_sdk_dynamodb::config::Builder::from(base)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(attempt_timeout.max(Duration::from_millis(100)))
                .operation_attempt_timeout(attempt_timeout)
                .build(),
        )
        .retry_config(retry);
    if let Some(url) = endpoint {
        b = b.endpoint_url(url);
    }
    Client::from_conf(b.build())
}

/// The table's batch operations on the writer client.
struct DynamoSink {
    client: Client,
    table: String,
    metrics: Arc<DynamoMetrics>,
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

/// The DynamoDB store.
pub struct DynamoStore {
    primary: Client,
    fallback: Client,
    table: String,
    writer: BatchWriter,
    sink: Arc<dyn BatchSink>,
    metrics: Arc<DynamoMetrics>,
}

impl std::fmt::Debug for DynamoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoStore")
            .field("table", &self.table)
            .finish()
    }
}

impl DynamoStore {
    /// Connects: builds the three clients, checks (or creates) the table, warms connections.
    pub async fn connect(config: DynamoConfig) -> Result<Self, StoreError> {
        Self::connect_with(config, |sink| sink).await
    }

    /// Like [`DynamoStore::connect`], with the batch sink wrapped by `layer` (fault injection).
    pub async fn connect_with(
        config: DynamoConfig,
        layer: impl FnOnce(Arc<dyn BatchSink>) -> Arc<dyn BatchSink>,
    ) -> Result<Self, StoreError> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = &config.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some((key, secret)) = &config.static_credentials {
            loader = loader.credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                key.clone(),
                secret.clone(),
                None,
                None,
                "prapi-static",
            ));
        }
        let base = loader.load().await;
        let endpoint = config.endpoint_url.as_deref();
        let primary = client(
            &base,
            config.primary_endpoint_url.as_deref().or(endpoint),
            config.primary_timeout,
            RetryConfig::disabled(),
        );
        let fallback = client(
            &base,
            endpoint,
            config.fallback_timeout,
            RetryConfig::standard()
                .with_max_attempts(config.fallback_attempts.max(1))
                .with_initial_backoff(Duration::from_millis(5))
                .with_max_backoff(Duration::from_millis(50)),
        );
        let writer_client = client(
            &base,
            endpoint,
            config.write_timeout,
            RetryConfig::disabled(),
        );
        let metrics = Arc::new(DynamoMetrics::default());
        ensure_table(&writer_client, &config.table, config.create_table).await?;

        let sink: Arc<dyn BatchSink> = Arc::new(DynamoSink {
            client: writer_client.clone(),
            table: config.table.clone(),
            metrics: metrics.clone(),
        });
        let sink = layer(sink);
        let writer = BatchWriter::new(sink.clone(), config.writer, metrics.writer.clone());
        let store = Self {
            primary,
            fallback,
            table: config.table,
            writer,
            sink,
            metrics,
        };
        store.warm(config.warm_connections, &writer_client).await;
        Ok(store)
    }

    /// The store's metrics (per client, and the writer's).
    pub fn metrics(&self) -> &Arc<DynamoMetrics> {
        &self.metrics
    }

    /// The batch sink the writer uses (with any fault layer).
    pub fn sink(&self) -> &Arc<dyn BatchSink> {
        &self.sink
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Opens connections and resolves credentials on every client with cheap reads of a key
    /// that does not exist, so the first real read does not pay for them inside 10 ms. The
    /// warm-up reads get a generous timeout: a primary attempt cut at 10 ms would close the very
    /// connection it was opening.
    async fn warm(&self, n: usize, writer: &Client) {
        let warm = |c: &Client| {
            let c = c.clone();
            let table = self.table.clone();
            async move {
                let result = c
                    .get_item()
                    .table_name(table)
                    .key(layout::PK, AttributeValue::S("~warmup".into()))
                    .key(layout::SK, AttributeValue::S("~".into()))
                    .customize()
                    .config_override(
                        aws_sdk_dynamodb::config::Builder::default().timeout_config(
                            TimeoutConfig::builder()
                                .operation_attempt_timeout(Duration::from_secs(5))
                                .build(),
                        ),
                    )
                    .send()
                    .await;
                if let Err(e) = result {
                    tracing::warn!(error = %DisplayErrorContext(&e), "DynamoDB warm-up read failed");
                }
            }
        };
        let mut calls = Vec::new();
        for _ in 0..n.max(1) {
            calls.push(warm(&self.primary));
            calls.push(warm(&self.fallback));
            calls.push(warm(writer));
        }
        futures::future::join_all(calls).await;
    }

    /// Runs a read on the primary client, and on the fallback when the primary times out, is
    /// throttled or fails transiently.
    async fn read<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, SinkError>>,
    {
        let started = Instant::now();
        match f(self.primary.clone()).await {
            Ok(v) => {
                self.metrics.record("primary", op, "ok", started);
                return Ok(v);
            }
            Err(SinkError::Fatal(e)) => {
                self.metrics.record("primary", op, "error", started);
                return Err(StoreError::Backend(e));
            }
            Err(e) => self.metrics.record("primary", op, outcome_of(&e), started),
        }
        self.metrics.fallbacks.inc();
        let started = Instant::now();
        match f(self.fallback.clone()).await {
            Ok(v) => {
                self.metrics.record("fallback", op, "ok", started);
                Ok(v)
            }
            Err(e) => {
                self.metrics.record("fallback", op, outcome_of(&e), started);
                match e {
                    SinkError::Fatal(e) => Err(StoreError::Backend(e)),
                    SinkError::Throttled(e) | SinkError::Transient(e) => {
                        Err(StoreError::Unavailable(e))
                    }
                }
            }
        }
    }

    /// All items of a Query on `pk` with the sort key between `lo` and `hi` (or beginning with
    /// `lo` when `hi` is `None`), following `LastEvaluatedKey`.
    async fn query(
        client: Client,
        table: String,
        pk: String,
        lo: String,
        hi: Option<String>,
    ) -> Result<Vec<Item>, SinkError> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut q = client
                .query()
                .table_name(&table)
                .expression_attribute_names("#pk", layout::PK)
                .expression_attribute_names("#sk", layout::SK)
                .expression_attribute_values(":pk", AttributeValue::S(pk.clone()))
                .expression_attribute_values(":lo", AttributeValue::S(lo.clone()))
                .set_exclusive_start_key(start.take());
            q = match &hi {
                Some(hi) => q
                    .key_condition_expression("#pk = :pk AND #sk BETWEEN :lo AND :hi")
                    .expression_attribute_values(":hi", AttributeValue::S(hi.clone())),
                None => q.key_condition_expression("#pk = :pk AND begins_with(#sk, :lo)"),
            };
            let out = q.send().await.map_err(|e| classify(&e))?;
            items.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(items),
            }
        }
    }
}

async fn ensure_table(client: &Client, table: &str, create: bool) -> Result<(), StoreError> {
    match client.describe_table().table_name(table).send().await {
        Ok(out) => {
            if out.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                return Ok(());
            }
        }
        Err(e) if e.code() == Some("ResourceNotFoundException") => {
            if !create {
                return Err(StoreError::Backend(format!(
                    "table {table} does not exist (create it, or pass --create-table)"
                )));
            }
            create_table(client, table).await?;
        }
        Err(e) => {
            return Err(StoreError::Backend(format!(
                "describing table {table}: {}",
                DisplayErrorContext(&e)
            )));
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
    let build_err = |e: aws_sdk_dynamodb::error::BuildError| StoreError::Backend(e.to_string());
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
        Err(e) => Err(StoreError::Backend(format!(
            "creating table {table}: {}",
            DisplayErrorContext(&e)
        ))),
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
            .map_err(|e| {
                StoreError::Backend(format!(
                    "describing table {table}: {}",
                    DisplayErrorContext(&e)
                ))
            })?;
        let status = out.table().and_then(|t| t.table_status()).cloned();
        if status == Some(TableStatus::Active) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(StoreError::Unavailable(format!(
                "table {table} is not ACTIVE after 120 s (status {status:?})"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn decode_offers(items: &[Item], country: Country) -> Result<ProductOffers, StoreError> {
    let mut result = ProductOffers::default();
    for item in items {
        match layout::decode(item)? {
            Decoded::Product { version, body } => {
                result.product = Some(StoredProduct { version, body });
            }
            Decoded::Offer(o) if o.key.country == country => result.offers.push(o),
            Decoded::Offer(_) | Decoded::Tombstone => {}
        }
    }
    Offer::sort(&mut result.offers);
    Ok(result)
}

#[async_trait]
impl Store for DynamoStore {
    async fn product(&self, id: &ProductId) -> Result<Option<StoredProduct>, StoreError> {
        let key = layout::key_item(&WriteKey::Product(id.clone()));
        let item = self
            .read("get", |c| {
                let key = key.clone();
                let table = self.table.clone();
                async move {
                    let out = c
                        .get_item()
                        .table_name(table)
                        .set_key(Some(key))
                        .send()
                        .await
                        .map_err(|e| classify(&e))?;
                    Ok(out.item)
                }
            })
            .await?;
        match item.as_ref().map(layout::decode).transpose()? {
            Some(Decoded::Product { version, body }) => Ok(Some(StoredProduct { version, body })),
            Some(Decoded::Offer(_)) => Err(StoreError::Corrupt {
                key: id.to_string(),
                reason: "product key holds an offer".into(),
            }),
            Some(Decoded::Tombstone) | None => Ok(None),
        }
    }

    async fn offers(&self, id: &ProductId, country: Country) -> Result<Vec<Offer>, StoreError> {
        let prefix = layout::offer_country_prefix(country);
        let items = self
            .read("query", |c| {
                Self::query(c, self.table.clone(), id.to_string(), prefix.clone(), None)
            })
            .await?;
        Ok(decode_offers(&items, country)?.offers)
    }

    async fn product_offers(
        &self,
        id: &ProductId,
        country: Country,
    ) -> Result<ProductOffers, StoreError> {
        // Offer keys of one country sort together just below "product": one range covers the
        // country's offers and the product (plus offers of countries sorting in between, which
        // are dropped; a group's table holds only its own countries).
        let lo = layout::offer_country_prefix(country);
        let items = self
            .read("query", |c| {
                Self::query(
                    c,
                    self.table.clone(),
                    id.to_string(),
                    lo.clone(),
                    Some(layout::PRODUCT_SK.to_owned()),
                )
            })
            .await?;
        decode_offers(&items, country)
    }

    async fn apply(&self, writes: &[Write]) -> Result<ApplyOutcome, StoreError> {
        self.writer.write(writes).await
    }
}
