//! DynamoDB implementation of [`Store`] (docs/storage.md), one table per market group.
//!
//! Reads go to a primary client with a very short attempt timeout and no retries; on a timeout,
//! throttling or a transient failure they are repeated on a fallback client with a longer timeout
//! and a small retry budget. Writes go through the batched [`BatchWriter`] on a third client
//! whose retries the writer does itself (so they are counted and never give up). Layout and
//! version rules: [`layout`] and docs/storage.md.
//!
//! Here: the configuration, the clients and the read path. The rest by concern: [`writer`] (the
//! batched writer, backend-neutral) and [`sink`] (its calls on DynamoDB), [`table`] (checking and
//! creating the table), [`metrics`], and for tests and benches [`memory`] (an in-memory table
//! behind the same writer) and [`faults`] (fault injection).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{ApplyOutcome, ProductOffers, Store, StoreError, StoredProduct};
use crate::model::{Country, Offer, ProductId, Write, WriteKey};
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::AttributeValue;

pub mod faults;
pub mod layout;
pub mod memory;
pub mod metrics;
mod sink;
mod table;
pub mod writer;

pub use metrics::{DynamoMetrics, WriterMetrics};
pub use table::create_table;

use layout::{Decoded, Item};
use metrics::outcome_of;
use sink::{DynamoSink, classify};
use table::ensure_table;
use writer::{BatchSink, BatchWriter, SinkError, WriterConfig};

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
                return Err(StoreError::backend("reading", SinkError::Fatal(e)));
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
                    SinkError::Fatal(_) => Err(StoreError::backend("reading", e)),
                    SinkError::Throttled(_) | SinkError::Transient(_) => {
                        Err(StoreError::unavailable("reading", e))
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
