//! What each subcommand does: wiring of stores, caches and servers. `main.rs` parses the command
//! line and calls one of these; tests call them too.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::batch::{BatchApi, BatchConfig, BatchMetrics, CacheSource, LbSource, LbStatsCollector};
use crate::cache::{ByteCache, CacheConfig, CacheMetrics};
use crate::cli::{
    BatchArgs, CacheArgs, GenArgs, LocalArgs, OverloadArgs, ProductsArgs, RingArgs, ServeArgs,
    StoreArgs, StoreKind, UpdaterArgs,
};
use crate::clock::MonotonicClock;
use crate::http::connections::{ConnectionMetrics, ServeConfig, Server};
use crate::http::headers::ServedCountries;
use crate::http::overload::{LifoLimiter, OverloadConfig};
use crate::http::served_by::served_by;
use crate::http::server::{
    Readiness, api_layers, ops_router, problem_for_405, serve, shutdown_signal,
};
use crate::lb::discovery::DEFAULT_DEBOUNCE;
use crate::lb::{
    Balancer, BalancerConfig, ClientConfig, LbClient, ServiceRef, hedge::HedgeConfig,
    use_static_endpoints, watch_endpoint_slices,
};
use crate::metrics::{HttpMetrics, MeteredStore};
use crate::model::{Country, Event, ProductId, Write};
use crate::products::{ProductsApi, StoreLoader};
use crate::store::Store;
use crate::store::dynamodb::{DynamoConfig, DynamoStore};
use crate::store::embedded::EmbeddedStore;
use crate::updater::{UpdaterConfig, UpdaterMetrics, run_updater};

/// How many writes go to the store in one `apply` while loading a catalogue (the updater's batch).
const LOAD_BATCH: usize = 250;

impl From<&CacheArgs> for CacheConfig {
    fn from(a: &CacheArgs) -> Self {
        CacheConfig {
            ttl: Duration::from_secs(a.cache_ttl_seconds),
            stale: Duration::from_secs(a.cache_stale_seconds),
            negative_ttl: Duration::from_secs(a.cache_negative_seconds),
            max_bytes: a.cache_max_bytes,
            ..CacheConfig::default()
        }
    }
}

impl From<&OverloadArgs> for OverloadConfig {
    fn from(a: &OverloadArgs) -> Self {
        OverloadConfig {
            max_concurrent: a.max_concurrent,
            max_queue: a.max_queue,
            queue_timeout: Duration::from_millis(a.queue_timeout_ms),
        }
    }
}

impl From<&ServeArgs> for ServeConfig {
    fn from(a: &ServeArgs) -> Self {
        ServeConfig {
            max_connections: a.max_connections,
            header_timeout: Duration::from_millis(a.header_timeout_ms),
            write_timeout: Duration::from_millis(a.write_timeout_ms),
            max_header_bytes: a.max_header_bytes,
            shutdown_delay: Duration::from_millis(a.shutdown_delay_ms),
            drain_timeout: Duration::from_millis(a.drain_timeout_ms),
        }
    }
}

/// The server of a component: its connection settings, the readiness it withdraws on shutdown,
/// its connection metrics.
fn server(args: &ServeArgs, readiness: Readiness, metrics: ConnectionMetrics) -> Server {
    Server {
        config: args.into(),
        readiness,
        metrics,
    }
}

/// The `--ops-listen` listener, when asked for.
async fn bind_ops(args: &ServeArgs) -> anyhow::Result<Option<TcpListener>> {
    match args.ops_listen {
        Some(addr) => Ok(Some(bind(addr).await?)),
        None => Ok(None),
    }
}

/// Everything needed to serve the products API.
pub struct ProductsServer {
    /// Countries served.
    pub countries: Vec<Country>,
    /// Cache settings.
    pub cache: CacheConfig,
    /// Overload settings.
    pub overload: OverloadConfig,
}

impl ProductsServer {
    /// Builds the router (API with middleware, plus `/healthz`, `/readyz`, `/metrics`) over `store`.
    pub fn router(
        self,
        store: Arc<dyn Store>,
        readiness: Readiness,
    ) -> anyhow::Result<axum::Router> {
        self.router_with_registry(store, readiness, crate::metrics::registry())
    }

    /// Like [`ProductsServer::router`], exporting `registry` too (store metrics registered by the
    /// caller, e.g. DynamoDB's per-client metrics).
    pub fn router_with_registry(
        self,
        store: Arc<dyn Store>,
        readiness: Readiness,
        registry: Registry,
    ) -> anyhow::Result<axum::Router> {
        self.build(store, readiness, registry, None)
    }

    /// Like [`ProductsServer::router_with_registry`], plus the batch endpoints, fanned out to this
    /// process's own cache (`prapi local`): in one process the products API is right here, so a
    /// batch item is the very bytes a single GET would get, with no HTTP hop and no ring in
    /// between.
    pub fn router_with_batch(
        self,
        store: Arc<dyn Store>,
        readiness: Readiness,
        registry: Registry,
        batch: BatchConfig,
    ) -> anyhow::Result<axum::Router> {
        self.build(store, readiness, registry, Some(batch))
    }

    fn build(
        self,
        store: Arc<dyn Store>,
        readiness: Readiness,
        mut registry: Registry,
        batch: Option<BatchConfig>,
    ) -> anyhow::Result<axum::Router> {
        self.cache.validate().context("invalid cache settings")?;
        let store: Arc<dyn Store> = Arc::new(MeteredStore::new(store, &mut registry));
        let cache_metrics = CacheMetrics::new();
        cache_metrics.register(&mut registry);
        let http_metrics = HttpMetrics::new(&mut registry);
        let cache = ByteCache::new(
            self.cache,
            Arc::new(StoreLoader::new(store)),
            Arc::new(MonotonicClock::new()),
            cache_metrics,
        );
        let countries = ServedCountries::new(self.countries);
        let api = Arc::new(ProductsApi::new(cache, countries.clone()));
        let mut routes = crate::products::routes(Arc::clone(&api));
        if let Some(config) = batch {
            let batch_api = BatchApi::new(
                Arc::new(CacheSource::new(api)),
                countries,
                config,
                BatchMetrics::new(&mut registry),
            );
            routes = routes.merge(crate::batch::routes(Arc::new(batch_api)));
        }
        let app = api_layers(routes, http_metrics, LifoLimiter::new(self.overload));
        Ok(app.merge(problem_for_405(
            ops_router(Arc::new(registry), readiness).merge(crate::http::openapi::routes()),
        )))
    }
}

/// Everything needed to serve the batch API in front of products pods.
pub struct BatchServer {
    /// Countries served.
    pub countries: Vec<Country>,
    /// Batch limits.
    pub batch: BatchConfig,
    /// Client to the products pods.
    pub client: ClientConfig,
    /// Overload settings.
    pub overload: OverloadConfig,
}

impl BatchServer {
    /// Builds the router (batch API with middleware, plus `/healthz`, `/readyz`, `/metrics`),
    /// fanning out to the pods that `balancer` knows.
    pub fn router(self, balancer: Arc<Balancer>, readiness: Readiness) -> axum::Router {
        self.router_with_registry(balancer, readiness, crate::metrics::registry())
    }

    /// Like [`BatchServer::router`], exporting `registry` too (metrics registered by the caller).
    pub fn router_with_registry(
        self,
        balancer: Arc<Balancer>,
        readiness: Readiness,
        mut registry: Registry,
    ) -> axum::Router {
        let http_metrics = HttpMetrics::new(&mut registry);
        let client = Arc::new(LbClient::new(balancer, self.client));
        registry.register_collector(Box::new(LbStatsCollector(Arc::clone(&client))));
        let api = BatchApi::new(
            Arc::new(LbSource::new(client)),
            ServedCountries::new(self.countries),
            self.batch,
            BatchMetrics::new(&mut registry),
        );
        let routes = crate::batch::routes(Arc::new(api));
        let app = api_layers(routes, http_metrics, LifoLimiter::new(self.overload));
        app.merge(problem_for_405(ops_router(Arc::new(registry), readiness)))
    }
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

async fn open_store(args: &StoreArgs, registry: &mut Registry) -> anyhow::Result<Arc<dyn Store>> {
    match args.store {
        StoreKind::Embedded => {
            let dir = args
                .data_dir
                .as_deref()
                .context("--data-dir is required with --store embedded")?;
            Ok(Arc::new(EmbeddedStore::open(dir).with_context(|| {
                format!("opening store in {}", dir.display())
            })?))
        }
        StoreKind::Dynamodb => {
            let table = args
                .table
                .as_deref()
                .context("--table is required with --store dynamodb")?;
            let config = DynamoConfig {
                create_table: args.create_table,
                primary_timeout: Duration::from_millis(args.read_timeout_ms),
                fallback_timeout: Duration::from_millis(args.fallback_read_timeout_ms),
                ..DynamoConfig::new(table)
            };
            let store = DynamoStore::connect(config)
                .await
                .with_context(|| format!("connecting to DynamoDB table {table}"))?;
            store.metrics().register(registry);
            Ok(Arc::new(store))
        }
    }
}

/// `prapi products`.
pub async fn products(args: ProductsArgs) -> anyhow::Result<()> {
    let mut registry = crate::metrics::registry();
    let store = open_store(&args.store, &mut registry).await?;
    let connections = ConnectionMetrics::new(&mut registry);
    let readiness = Readiness::default();
    let app = ProductsServer {
        countries: args.countries.0.clone(),
        cache: (&args.cache).into(),
        overload: (&args.overload).into(),
    }
    .router_with_registry(store, readiness.clone(), registry)?;
    let app = served_by(app, args.served_by_header)?;
    let api = bind(args.listen).await?;
    let ops = bind_ops(&args.serve).await?;
    tracing::info!(listen = %args.listen, countries = %args.countries, "products serving");
    readiness.set(true);
    server(&args.serve, readiness, connections)
        .serve(api, ops, app, shutdown_signal())
        .await
        .context("serving")
}

/// Marks `readiness` as ready while `balancer` knows at least one products pod: a batch pod
/// without products pods can only answer 503, so it should not get traffic.
async fn track_readiness(balancer: Arc<Balancer>, readiness: Readiness) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let ready = !balancer.endpoints().is_empty();
        if ready != readiness.is_ready() {
            tracing::info!(ready, "batch readiness changed");
            readiness.set(ready);
        }
    }
}

/// `prapi batch`.
pub async fn batch(args: BatchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.max_items > 0, "--max-items must be at least 1");
    anyhow::ensure!(args.deadline_ms > 0, "--deadline-ms must be at least 1");
    anyhow::ensure!(
        args.attempt_timeout_ms > 0,
        "--attempt-timeout-ms must be at least 1"
    );
    if args.attempt_timeout_ms.saturating_mul(2) > args.deadline_ms {
        tracing::warn!(
            attempt_timeout_ms = args.attempt_timeout_ms,
            deadline_ms = args.deadline_ms,
            "a timed-out first attempt leaves no time for the retry on the next owner"
        );
    }
    let balancer = Arc::new(Balancer::new(
        BalancerConfig {
            balance_factor: args.balance_factor,
            ..BalancerConfig::default()
        },
        Arc::new(MonotonicClock::new()),
    ));
    let _watch = if args.endpoints.is_empty() {
        let raw = args
            .products_service
            .as_deref()
            .context("--products-service or --endpoints is required")?;
        let service = ServiceRef::parse(raw)?;
        // kube's TLS and the AWS SDK's are both compiled in, so rustls cannot choose a crypto
        // provider by itself. An error means one is installed already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = kube::Client::try_default()
            .await
            .context("connecting to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
        tracing::info!(
            service = raw,
            "watching the products service's EndpointSlices"
        );
        Some(AbortOnDrop(tokio::spawn(watch_endpoint_slices(
            client,
            service,
            None,
            Arc::clone(&balancer),
            DEFAULT_DEBOUNCE,
        ))))
    } else {
        use_static_endpoints(&balancer, &args.endpoints).context("--endpoints")?;
        None
    };
    let mut registry = crate::metrics::registry();
    let connections = ConnectionMetrics::new(&mut registry);
    let readiness = Readiness::default();
    let ready = AbortOnDrop(tokio::spawn(track_readiness(
        Arc::clone(&balancer),
        readiness.clone(),
    )));
    let app = BatchServer {
        countries: args.countries.0.clone(),
        batch: BatchConfig {
            max_items: args.max_items,
            deadline: Duration::from_millis(args.deadline_ms),
        },
        client: ClientConfig {
            attempt_timeout: Duration::from_millis(args.attempt_timeout_ms),
            hedge: args.hedge.hedge.then(|| HedgeConfig {
                percentile: args.hedge.hedge_percentile,
                budget: args.hedge.hedge_budget,
                ..HedgeConfig::default()
            }),
            ..ClientConfig::default()
        },
        overload: (&args.overload).into(),
    }
    .router_with_registry(balancer, readiness.clone(), registry);
    let app = served_by(app, args.served_by_header)?;
    tracing::info!(listen = %args.listen, countries = %args.countries, "batch serving");
    let api = bind(args.listen).await?;
    let ops = bind_ops(&args.serve).await?;
    // Readiness follows the known products pods (`track_readiness`) until the shutdown signal;
    // then the server withdraws it and the tracker must not put it back.
    let signal = async move {
        shutdown_signal().await;
        drop(ready);
    };
    server(&args.serve, readiness, connections)
        .serve(api, ops, app, signal)
        .await
        .context("serving")
}

/// Aborts a background task when dropped, so a failing `run` function leaves nothing behind.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What loading a catalogue did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoadStats {
    /// Events read and written.
    pub events: u64,
    /// Lines that were not valid events (reported, skipped).
    pub invalid: u64,
    /// Writes that changed the store.
    pub applied: u64,
    /// Writes ignored as older than what was stored (e.g. reloading the same catalogue).
    pub stale: u64,
    /// Countries that have offers.
    pub countries: BTreeSet<Country>,
    /// The first product id seen (for the example commands).
    pub first_product: Option<ProductId>,
}

/// Loads NDJSON events into `store` through batched versioned writes. Invalid lines are counted
/// and reported with their line number, never fatal: one bad line must not hide a catalogue.
pub async fn load_events(
    store: &dyn Store,
    lines: impl Iterator<Item = std::io::Result<Vec<u8>>>,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<LoadStats> {
    let mut stats = LoadStats::default();
    let mut batch: Vec<Write> = Vec::with_capacity(LOAD_BATCH);
    for (n, line) in lines.enumerate() {
        let line = line.with_context(|| format!("reading line {}", n + 1))?;
        progress(line.len() as u64 + 1);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match Event::parse(&line) {
            Ok(event) => {
                stats.events += 1;
                if stats.first_product.is_none() {
                    stats.first_product = Some(event.product_id().clone());
                }
                let write = event.into_write();
                if let Some(c) = write.country() {
                    stats.countries.insert(c);
                }
                batch.push(write);
            }
            Err(e) => {
                stats.invalid += 1;
                if stats.invalid <= 10 {
                    tracing::warn!(line = n + 1, error = %e, "skipping invalid event");
                }
            }
        }
        if batch.len() >= LOAD_BATCH {
            flush(store, &mut batch, &mut stats).await?;
        }
    }
    flush(store, &mut batch, &mut stats).await?;
    Ok(stats)
}

async fn flush(
    store: &dyn Store,
    batch: &mut Vec<Write>,
    stats: &mut LoadStats,
) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let out = store.apply(batch).await.context("writing to the store")?;
    stats.applied += out.applied as u64;
    stats.stale += out.stale as u64;
    batch.clear();
    Ok(())
}

fn file_lines(
    path: &Path,
) -> anyhow::Result<(u64, impl Iterator<Item = std::io::Result<Vec<u8>>>)> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("opening catalogue {}", path.display()))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let reader = BufReader::with_capacity(1 << 20, file);
    Ok((len, reader.split(b'\n')))
}

/// `prapi local`.
pub async fn local(args: LocalArgs) -> anyhow::Result<()> {
    let store =
        Arc::new(EmbeddedStore::open(&args.data_dir).with_context(|| {
            format!("opening the embedded store in {}", args.data_dir.display())
        })?);
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let stats = match &args.catalogue {
        Some(path) => {
            let (len, lines) = file_lines(path)?;
            bar.set_length(len);
            bar.set_message(format!("loading {}", path.display()));
            load_events(store.as_ref(), lines, |n| bar.inc(n)).await?
        }
        None => {
            let countries = args.countries.as_ref().map_or_else(
                || Country::parse_list("de,at,ch").unwrap_or_default(),
                |c| c.0.clone(),
            );
            let cfg = crate::r#gen::GenConfig {
                products: args.products,
                countries,
                seed: args.seed,
            };
            bar.set_message(format!("generating {} products", args.products));
            let lines = cfg.events().map(Ok);
            load_events(store.as_ref(), lines, |n| bar.inc(n)).await?
        }
    };
    bar.finish_and_clear();
    let countries: Vec<Country> = match &args.countries {
        Some(c) => c.0.clone(),
        None if stats.countries.is_empty() => {
            anyhow::bail!("the catalogue has no offers, so no countries to serve; pass --countries")
        }
        None => stats.countries.iter().copied().collect(),
    };
    eprintln!(
        "loaded {} events ({} applied, {} already stored, {} invalid) into {}",
        stats.events,
        stats.applied,
        stats.stale,
        stats.invalid,
        store.path().display()
    );
    let mut registry = crate::metrics::registry();
    let connections = ConnectionMetrics::new(&mut registry);
    let readiness = Readiness::default();
    let app = ProductsServer {
        countries: countries.clone(),
        cache: (&args.cache).into(),
        overload: (&args.overload).into(),
    }
    .router_with_batch(store, readiness.clone(), registry, BatchConfig::default())?;
    let listener = bind(args.listen).await?;
    let base = format!("http://{}", listener.local_addr().unwrap_or(args.listen));
    let id = stats.first_product.as_ref().map_or("P1", ProductId::as_str);
    let country = countries.first().map_or("de", Country::as_str);
    eprintln!(
        "serving countries {} on {base}; try:",
        countries
            .iter()
            .map(Country::as_str)
            .collect::<Vec<_>>()
            .join(",")
    );
    eprintln!("  curl -s {base}/products/{id}");
    eprintln!("  curl -s -H 'X-Country: {country}' {base}/products/{id}/offers");
    eprintln!(
        "  curl -s -H 'X-Country: {country}' -H 'Accept: application/x.gamma-format+json' {base}/product-offers/{id}"
    );
    eprintln!("  curl -s -H 'X-Country: {country}' '{base}/product-offers?ids={id},no-such-id'");
    eprintln!("  curl -s {base}/metrics");
    let ops = bind_ops(&args.serve).await?;
    readiness.set(true);
    server(&args.serve, readiness, connections)
        .serve(listener, ops, app, shutdown_signal())
        .await
        .context("serving")
}

/// The updater's `/healthz`, `/readyz` and `/metrics`: its pipeline's metrics added to `registry`
/// (which holds the store's, with DynamoDB).
pub fn updater_ops_router(
    mut registry: Registry,
    metrics: &UpdaterMetrics,
    readiness: Readiness,
) -> axum::Router {
    metrics.register(&mut registry);
    ops_router(Arc::new(registry), readiness)
}

/// `prapi updater`: consumes Kafka into the store; serves `/healthz`, `/readyz` and `/metrics`
/// (including the per-partition consumer lag the autoscaler reads) on `--listen`.
pub async fn updater(args: UpdaterArgs) -> anyhow::Result<()> {
    // Read first: a Secret that cannot configure the client is a configuration error, reported
    // before anything else starts.
    let security = match &args.kafka_client_secret_dir {
        Some(dir) => Some(
            prapi_common::kafka_client::KafkaClientSecret::read_dir(dir)
                .with_context(|| format!("the Kafka client Secret in {}", dir.display()))?,
        ),
        None => None,
    };
    let mut registry = crate::metrics::registry();
    let store = open_store(&args.store, &mut registry).await?;
    let metrics = Arc::new(UpdaterMetrics::default());
    let readiness = Readiness::default();
    let listener = bind(args.listen).await?;
    let ops = updater_ops_router(registry, &metrics, readiness.clone());
    let ops_server = tokio::spawn(serve(listener, ops, std::future::pending()));
    let mut config = UpdaterConfig::new(
        args.kafka_bootstrap,
        args.products_topic,
        args.offers_topic,
        args.group,
        args.countries.0,
    );
    config.dead_letter_topic = args.dead_letter_topic;
    config.security = security;
    // Static membership per pod: a restarted pod takes its partitions back without a rebalance.
    config.instance_id = std::env::var("POD_NAME").ok().filter(|n| !n.is_empty());
    readiness.set(true);
    let result = run_updater(config, store, metrics, shutdown_signal()).await;
    ops_server.abort();
    result
}

/// `prapi gen`.
pub fn gen_catalogue(args: GenArgs) -> anyhow::Result<()> {
    let cfg = crate::r#gen::GenConfig {
        products: args.products,
        countries: args.countries.0,
        seed: args.seed,
    };
    let stdout = std::io::stdout().lock();
    let out = std::io::BufWriter::with_capacity(1 << 20, stdout);
    crate::r#gen::write_ndjson(&cfg, out).context("writing events to stdout")?;
    Ok(())
}

/// `prapi ring`.
pub fn ring(args: RingArgs) -> anyhow::Result<()> {
    let stdin = std::io::stdin().lock();
    let stdout = std::io::BufWriter::new(std::io::stdout().lock());
    crate::lb::ring_command(&args.endpoints, stdin, stdout).context("ring")
}
