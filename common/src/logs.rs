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

/// Installs the global tracing subscriber. A second call leaves the first in place and says so.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env(FILTER_VAR).unwrap_or_else(|_| EnvFilter::new("info"));
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
