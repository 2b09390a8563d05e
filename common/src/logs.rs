//! Log setup of every prapi binary: filtered by [`FILTER_VAR`] in `RUST_LOG` syntax (default
//! `info`), text or JSON lines on stderr.

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// The variable that filters logs, e.g. `PRAPI_LOG=info,kube=warn`. Not `RUST_LOG`, so that a
/// filter meant for another program in the same environment does not apply.
pub const FILTER_VAR: &str = "PRAPI_LOG";

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

/// Checks a filter in `RUST_LOG` syntax, as [`init`] will read it from [`FILTER_VAR`].
pub fn check_filter(filter: &str) -> Result<(), String> {
    EnvFilter::builder().parse(filter).map(drop).map_err(|e| {
        format!("{filter:?} is not a log filter such as info or warn,prapi_dataplane=debug: {e}")
    })
}

/// Installs the global tracing subscriber. A second call leaves the first in place and says so.
pub fn init(format: LogFormat) {
    let filter = match std::env::var(FILTER_VAR) {
        Ok(text) => EnvFilter::builder().parse(&text).unwrap_or_else(|e| {
            eprintln!("{FILTER_VAR}={text:?} is not a log filter ({e}); logging at info");
            EnvFilter::new("info")
        }),
        Err(_) => EnvFilter::new("info"),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if let Err(e) = result {
        eprintln!("logging already initialised: {e}");
    }
}
