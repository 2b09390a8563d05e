//! What the data plane's benchmarks share: their settings from the environment, the overload
//! limits that keep admission out of the figures, and a server on a loopback port.
#![allow(dead_code)]

use std::time::Duration;

use axum::Router;
use prapi::http::overload::OverloadConfig;
use prapi::http::server::serve;

/// `name` from the environment as a number, `default` when unset or not a number.
pub fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Admission limits far above what a benchmark sends, so no request waits in or is refused by
/// the LIFO queue.
pub fn overload() -> OverloadConfig {
    OverloadConfig {
        max_concurrent: 8192,
        max_queue: 8192,
        queue_timeout: Duration::from_secs(5),
    }
}

/// Serves `app` on a free loopback port until the process ends; returns its base URL.
pub async fn listen(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(serve(listener, app, std::future::pending()));
    format!("http://{addr}")
}
