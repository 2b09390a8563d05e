//! The `prapi` command line (docs/cli.md). It is a contract: the operator renders these flags into
//! pods and tests parse its rendered command lines with [`Cli`]. Every flag also reads the
//! environment variable `PRAPI_<FLAG>` (upper case, dashes as underscores).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::model::Country;

/// `prapi`: the Product Read API data plane.
#[derive(Debug, Parser)]
#[command(
    name = "prapi",
    version,
    about = "Product Read API data plane",
    propagate_version = true
)]
pub struct Cli {
    /// Log format.
    #[arg(long, env = "PRAPI_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// The component to run.
    #[command(subcommand)]
    pub command: Command,
}

pub use prapi_common::logs::LogFormat;

/// One subcommand per component.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Everything in one process on an embedded store: load a catalogue, serve the API.
    Local(LocalArgs),
    /// Serve single products, offers and product-offers from a cache in front of a store.
    Products(ProductsArgs),
    /// Serve batch requests by fanning out to products pods.
    Batch(BatchArgs),
    /// Consume product and offer events from Kafka into the store.
    Updater(UpdaterArgs),
    /// Print a deterministic sample catalogue as NDJSON events.
    Gen(GenArgs),
    /// Print the owner endpoint of each product id read from stdin (Skipper-compatible ring).
    Ring(RingArgs),
}

/// A `--countries de,at` value: unique ISO 3166-1 alpha-2 codes, lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountryList(pub Vec<Country>);

impl std::str::FromStr for CountryList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Country::parse_list(s)
            .map(CountryList)
            .map_err(|e| e.to_string())
    }
}

impl std::fmt::Display for CountryList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for c in &self.0 {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            f.write_str(c.as_str())?;
        }
        Ok(())
    }
}

/// Parses a byte size: a plain number or one with a suffix `K`, `M`, `G` (powers of 1000) or
/// `Ki`, `Mi`, `Gi` (powers of 1024), as Kubernetes quantities are written (`512Mi`).
pub fn byte_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a byte size like 536870912 or 512Mi"))?;
    let mult: u64 = match unit {
        "" => 1,
        "K" | "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {s:?} (use K, M, G, Ki, Mi or Gi)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Cache settings (docs/api.md, "Caching and freshness").
#[derive(Debug, Clone, Args)]
pub struct CacheArgs {
    /// Seconds a cached body lives.
    #[arg(long, env = "PRAPI_CACHE_TTL_SECONDS", default_value_t = 60)]
    pub cache_ttl_seconds: u64,
    /// The last seconds of the TTL in which a hit is served and refreshed in the background.
    #[arg(long, env = "PRAPI_CACHE_STALE_SECONDS", default_value_t = 15)]
    pub cache_stale_seconds: u64,
    /// Seconds a not-found answer is cached.
    #[arg(long, env = "PRAPI_CACHE_NEGATIVE_SECONDS", default_value_t = 5)]
    pub cache_negative_seconds: u64,
    /// Byte budget of the cache (e.g. 536870912 or 512Mi).
    #[arg(long, env = "PRAPI_CACHE_MAX_BYTES", default_value = "512Mi", value_parser = byte_size)]
    pub cache_max_bytes: u64,
}

/// Overload protection settings.
#[derive(Debug, Clone, Args)]
pub struct OverloadArgs {
    /// Requests served concurrently.
    #[arg(long, env = "PRAPI_MAX_CONCURRENT", default_value_t = 512)]
    pub max_concurrent: usize,
    /// Requests waiting for a slot (newest first); beyond it the oldest is shed with 503.
    #[arg(long, env = "PRAPI_MAX_QUEUE", default_value_t = 1024)]
    pub max_queue: usize,
    /// Milliseconds a request may wait for a slot before a 503.
    #[arg(long, env = "PRAPI_QUEUE_TIMEOUT_MS", default_value_t = 100)]
    pub queue_timeout_ms: u64,
}

/// Connection limits, timeouts and the shutdown sequence of a serving component (docs/cli.md,
/// "Connections and shutdown").
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address of a second listener serving only `/healthz`, `/readyz` and `/metrics`, with its
    /// own connection cap, so probes get through when the API connections are all taken.
    #[arg(long, env = "PRAPI_OPS_LISTEN")]
    pub ops_listen: Option<SocketAddr>,
    /// API connections served at once (lowered to stay under the open file limit); more wait in
    /// the accept backlog.
    #[arg(long, env = "PRAPI_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// Milliseconds a connection has to send a complete request head, the first or the next one
    /// on a kept-alive connection (so also the idle timeout).
    #[arg(long, env = "PRAPI_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_timeout_ms: u64,
    /// Milliseconds a response write may make no progress (the client does not read) before the
    /// connection is closed.
    #[arg(long, env = "PRAPI_WRITE_TIMEOUT_MS", default_value_t = 10_000)]
    pub write_timeout_ms: u64,
    /// Longest request head in bytes; longer ones are answered 431 (414 for the request line).
    #[arg(long, env = "PRAPI_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,
    /// Milliseconds the component keeps serving, not ready, after SIGTERM (endpoint propagation).
    #[arg(long, env = "PRAPI_SHUTDOWN_DELAY_MS", default_value_t = 5_000)]
    pub shutdown_delay_ms: u64,
    /// Milliseconds open connections get to finish after that delay; then they are cut and the
    /// process exits.
    #[arg(long, env = "PRAPI_DRAIN_TIMEOUT_MS", default_value_t = 20_000)]
    pub drain_timeout_ms: u64,
}

/// Which store backs a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// redb database in `--data-dir`.
    Embedded,
    /// DynamoDB table `--table` (endpoint and region from the AWS SDK's standard variables).
    Dynamodb,
}

/// Store selection (`--store embedded --data-dir DIR | --store dynamodb --table T [--create-table]`).
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Store backend.
    #[arg(long, env = "PRAPI_STORE", value_enum)]
    pub store: StoreKind,
    /// Data directory of the embedded store.
    #[arg(long, env = "PRAPI_DATA_DIR", required_if_eq("store", "embedded"))]
    pub data_dir: Option<PathBuf>,
    /// DynamoDB table.
    #[arg(long, env = "PRAPI_TABLE", required_if_eq("store", "dynamodb"))]
    pub table: Option<String>,
    /// Create the DynamoDB table in the store's layout if it is missing (development and tests;
    /// in a cluster the operator owns the table).
    #[arg(long, env = "PRAPI_CREATE_TABLE")]
    pub create_table: bool,
    /// Primary read attempt timeout in milliseconds (DynamoDB; no retries).
    #[arg(long, env = "PRAPI_READ_TIMEOUT_MS", default_value_t = 10)]
    pub read_timeout_ms: u64,
    /// Fallback read timeout in milliseconds (DynamoDB; after a primary timeout or throttle).
    #[arg(long, env = "PRAPI_FALLBACK_READ_TIMEOUT_MS", default_value_t = 100)]
    pub fallback_read_timeout_ms: u64,
}

/// `prapi local`.
#[derive(Debug, Clone, Args)]
pub struct LocalArgs {
    /// NDJSON events to load (docs/events.md); without it a sample catalogue is generated.
    #[arg(long, env = "PRAPI_CATALOGUE")]
    pub catalogue: Option<PathBuf>,
    /// Address to serve on.
    #[arg(long, env = "PRAPI_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Countries to serve [default: every country of the catalogue].
    #[arg(long, env = "PRAPI_COUNTRIES")]
    pub countries: Option<CountryList>,
    /// Data directory of the embedded store.
    #[arg(long, env = "PRAPI_DATA_DIR", default_value = "prapi-data")]
    pub data_dir: PathBuf,
    /// Products to generate when no catalogue is given.
    #[arg(long, env = "PRAPI_PRODUCTS", default_value_t = 1000)]
    pub products: usize,
    /// Seed of the generated catalogue.
    #[arg(long, env = "PRAPI_SEED", default_value_t = 1)]
    pub seed: u64,
    /// Cache settings.
    #[command(flatten)]
    pub cache: CacheArgs,
    /// Overload settings.
    #[command(flatten)]
    pub overload: OverloadArgs,
    /// Connections and shutdown.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// `prapi products`.
#[derive(Debug, Clone, Args)]
pub struct ProductsArgs {
    /// Address to serve on.
    #[arg(long, env = "PRAPI_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Countries this market group serves.
    #[arg(long, env = "PRAPI_COUNTRIES")]
    pub countries: CountryList,
    /// Store.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Cache settings.
    #[command(flatten)]
    pub cache: CacheArgs,
    /// Overload settings.
    #[command(flatten)]
    pub overload: OverloadArgs,
    /// Connections and shutdown.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Name the answering pod (this host's name) in an `X-Served-By` header on every API response
    /// (off: it tells clients how the deployment is laid out).
    #[arg(long, env = "PRAPI_SERVED_BY_HEADER")]
    pub served_by_header: bool,
}

/// `prapi batch`.
#[derive(Debug, Clone, Args)]
pub struct BatchArgs {
    /// Address to serve on.
    #[arg(long, env = "PRAPI_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Countries this market group serves.
    #[arg(long, env = "PRAPI_COUNTRIES")]
    pub countries: CountryList,
    /// Discover products pods from the EndpointSlices of this Service (`NAMESPACE/NAME`).
    #[arg(
        long,
        env = "PRAPI_PRODUCTS_SERVICE",
        conflicts_with = "endpoints",
        required_unless_present = "endpoints"
    )]
    pub products_service: Option<String>,
    /// Static products endpoints (`http://host:port,...`).
    #[arg(long, env = "PRAPI_ENDPOINTS", value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// Most ids in one batch request.
    #[arg(long, env = "PRAPI_MAX_ITEMS", default_value_t = 100)]
    pub max_items: usize,
    /// Milliseconds a batch may take; ids still unanswered then are listed in `failed`.
    #[arg(long, env = "PRAPI_DEADLINE_MS", default_value_t = 1000)]
    pub deadline_ms: u64,
    /// Milliseconds one lookup attempt on a products pod may take before it is retried on the
    /// next owner (keep it under half the deadline so the retry fits).
    #[arg(long, env = "PRAPI_ATTEMPT_TIMEOUT_MS", default_value_t = 300)]
    pub attempt_timeout_ms: u64,
    /// A products pod whose load exceeds this many times the average is passed over for the next
    /// owner on the ring: Skipper's `consistentHashBalanceFactor`, and the operator renders one
    /// value into both (docs/load-balancing.md). At least 1.
    #[arg(long, env = "PRAPI_BALANCE_FACTOR", default_value_t = 1.25, value_parser = balance_factor)]
    pub balance_factor: f64,
    /// Hedging of slow lookups (off by default).
    #[command(flatten)]
    pub hedge: HedgeArgs,
    /// Overload settings.
    #[command(flatten)]
    pub overload: OverloadArgs,
    /// Connections and shutdown.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Name the answering pod (this host's name) in an `X-Served-By` header on every API response
    /// (off: it tells clients how the deployment is laid out).
    #[arg(long, env = "PRAPI_SERVED_BY_HEADER")]
    pub served_by_header: bool,
}

/// Hedging of `prapi batch` (docs/load-balancing.md, "Hedging").
#[derive(Debug, Clone, Args)]
pub struct HedgeArgs {
    /// Ask a second products pod too when a lookup is slower than `--hedge-percentile`.
    #[arg(long, env = "PRAPI_HEDGE", default_value_t = false, action = clap::ArgAction::Set)]
    pub hedge: bool,
    /// Latency percentile after which a lookup is hedged, in (0, 1), e.g. 0.95.
    #[arg(long, env = "PRAPI_HEDGE_PERCENTILE", default_value_t = 0.95, value_parser = open_unit)]
    pub hedge_percentile: f64,
    /// Extra requests hedging may add, as a fraction of requests, in (0, 0.05].
    #[arg(long, env = "PRAPI_HEDGE_BUDGET", default_value_t = 0.05, value_parser = hedge_budget)]
    pub hedge_budget: f64,
}

/// `--balance-factor`: a finite number of at least 1.
pub fn balance_factor(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(f) if f.is_finite() && f >= 1.0 => Ok(f),
        _ => Err(format!(
            "{s:?} is not a balance factor: a number of at least 1, e.g. 1.25"
        )),
    }
}

fn open_unit(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(f) if f > 0.0 && f < 1.0 => Ok(f),
        _ => Err(format!(
            "{s:?} is not a percentile between 0 and 1 (exclusive), e.g. 0.95"
        )),
    }
}

fn hedge_budget(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 0.05 => Ok(f),
        _ => Err(format!(
            "{s:?} is not a hedge budget: more than 0 and at most 0.05"
        )),
    }
}

/// `prapi updater`.
#[derive(Debug, Clone, Args)]
pub struct UpdaterArgs {
    /// Kafka bootstrap servers (`HOST:PORT[,HOST:PORT]`).
    #[arg(long, env = "PRAPI_KAFKA_BOOTSTRAP")]
    pub kafka_bootstrap: String,
    /// Topic of product events.
    #[arg(long, env = "PRAPI_PRODUCTS_TOPIC")]
    pub products_topic: String,
    /// Topic of offer events.
    #[arg(long, env = "PRAPI_OFFERS_TOPIC")]
    pub offers_topic: String,
    /// Consumer group.
    #[arg(long, env = "PRAPI_GROUP")]
    pub group: String,
    /// Countries whose offers this market group keeps (products are kept for every group).
    #[arg(long, env = "PRAPI_COUNTRIES")]
    pub countries: CountryList,
    /// Topic for messages that cannot be parsed (none: count and log only).
    #[arg(long, env = "PRAPI_DEAD_LETTER_TOPIC")]
    pub dead_letter_topic: Option<String>,
    /// Directory of a mounted Secret with the Kafka client's TLS and SASL settings, one file per
    /// key (docs/updater.md, "Kafka security"); none: plaintext without authentication.
    #[arg(long, env = "PRAPI_KAFKA_CLIENT_SECRET_DIR")]
    pub kafka_client_secret_dir: Option<std::path::PathBuf>,
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, env = "PRAPI_LISTEN", default_value = "127.0.0.1:9090")]
    pub listen: SocketAddr,
    /// Store.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `prapi gen`.
#[derive(Debug, Clone, Args)]
pub struct GenArgs {
    /// Number of products.
    #[arg(long, env = "PRAPI_PRODUCTS", default_value_t = 1000)]
    pub products: usize,
    /// Countries to generate offers for.
    #[arg(long, env = "PRAPI_COUNTRIES", default_value = "de,at")]
    pub countries: CountryList,
    /// Seed: the same seed gives the same bytes.
    #[arg(long, env = "PRAPI_SEED", default_value_t = 1)]
    pub seed: u64,
}

/// `prapi ring`.
#[derive(Debug, Clone, Args)]
pub struct RingArgs {
    /// Endpoints of the ring (`http://host:port,...`, as Skipper writes them).
    #[arg(long, env = "PRAPI_ENDPOINTS", value_delimiter = ',', required = true)]
    pub endpoints: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("prapi").chain(args.iter().copied()))
    }

    #[test]
    fn design_command_lines_parse() {
        for line in [
            "local",
            "local --catalogue c.ndjson --listen 127.0.0.1:9000 --countries de,at --data-dir d",
            "products --listen 0.0.0.0:8080 --countries de,at --store embedded --data-dir d",
            "products --listen 0.0.0.0:8080 --countries de --store dynamodb --table t --create-table",
            "batch --listen 0.0.0.0:8080 --countries de,at --products-service ns/products",
            "batch --countries de --endpoints http://127.0.0.1:1,http://127.0.0.1:2",
            "batch --countries de --endpoints http://127.0.0.1:1 --ops-listen 0.0.0.0:9090 --max-connections 100 --header-timeout-ms 500 --write-timeout-ms 500 --max-header-bytes 8192 --shutdown-delay-ms 0 --drain-timeout-ms 100",
            "updater --kafka-bootstrap k:9092 --products-topic p --offers-topic o --group g --countries de,at --store dynamodb --table t",
            "updater --kafka-bootstrap k:9092 --products-topic p --offers-topic o --group g --countries de --store embedded --data-dir d",
            "updater --kafka-bootstrap k:9093 --products-topic p --offers-topic o --group g --countries de --store embedded --data-dir d --kafka-client-secret-dir /etc/prapi/kafka-client",
            "gen --products 10 --countries de,at --seed 7",
            "ring --endpoints http://10.0.0.1:8080,http://10.0.0.2:8080",
        ] {
            let args: Vec<&str> = line.split(' ').collect();
            if let Err(e) = parse(&args) {
                panic!("{line}: {e}");
            }
        }
    }

    #[test]
    fn bad_command_lines_fail_with_the_reason() {
        let err = |line: &str| {
            let args: Vec<&str> = line.split(' ').collect();
            parse(&args).expect_err(line).to_string()
        };
        assert!(err("products --countries de --store dynamodb").contains("--table"));
        assert!(err("products --countries de --store embedded").contains("--data-dir"));
        assert!(err("products --countries xx --store embedded --data-dir d").contains("ISO 3166"));
        assert!(err("batch --countries de").contains("--products-service"));
        assert!(err("local --cache-max-bytes 5Zi").contains("unknown unit"));
    }

    #[test]
    fn batch_balance_factor_and_hedging_flags() {
        let batch = |extra: &str| {
            let mut args = vec!["batch", "--countries", "de", "--endpoints", "http://p:8080"];
            args.extend(extra.split_whitespace());
            match parse(&args).map(|c| c.command) {
                Ok(Command::Batch(b)) => Ok((
                    b.balance_factor,
                    b.hedge.hedge,
                    b.hedge.hedge_percentile,
                    b.hedge.hedge_budget,
                )),
                Ok(other) => panic!("{other:?}"),
                Err(e) => Err(e.to_string()),
            }
        };
        // Skipper's default factor, hedging off.
        assert_eq!(batch(""), Ok((1.25, false, 0.95, 0.05)));
        assert_eq!(
            batch("--balance-factor 2 --hedge true --hedge-percentile 0.99 --hedge-budget 0.01"),
            Ok((2.0, true, 0.99, 0.01))
        );
        for bad in [
            "--balance-factor 0.5",
            "--balance-factor NaN",
            "--hedge-percentile 1",
            "--hedge-percentile 0",
            "--hedge-budget 0.06",
            "--hedge-budget 0",
        ] {
            assert!(batch(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(byte_size("512Mi"), Ok(512 << 20));
        assert_eq!(byte_size("1G"), Ok(1_000_000_000));
        assert_eq!(byte_size("42"), Ok(42));
        assert!(byte_size("Mi").is_err());
        assert!(byte_size("99999999999999Gi").is_err());
    }
}
