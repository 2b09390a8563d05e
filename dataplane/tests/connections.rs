//! Connection handling against hostile and broken clients, over real sockets: memory held for
//! clients that do not read, slowloris, the ops listener at the connection cap, shutdown with an
//! unfinished response, gauges after client resets, the HTTP layer's own answers (405, 431, bad
//! UTF-8 in a path) and echoed input. docs/cli.md, "Connections and shutdown", has the settings.
//!
//! The memory and shutdown tests run the `prapi` binary itself (`prapi local`), as a pod runs
//! it, and read its `/proc` entry; the others serve in this process so they can watch the
//! server's own counters.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use prapi::http::connections::{ConnectionMetrics, ServeConfig, Server};
use prapi::http::overload::OverloadConfig;
use prapi::http::server::Readiness;
use prapi::model::{Country, Offer, ProductId, Write};
use prapi::run::ProductsServer;
use prapi::store::{ApplyOutcome, ProductOffers, Store, StoreError, StoredProduct};
use prapi_e2e::kit::{eventually, eventually_within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// How long a test waits for something that the server bounds by its own settings (a few
/// seconds): generous, because these are bounds, not timings.
const BOUND: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------------------------
// A `prapi local` process.

/// A running `prapi local`, killed on drop.
struct LocalProcess {
    child: Child,
    base: String,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for LocalProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `prapi local` on a generated catalogue of `products` products with `args`.
fn start_local(products: usize, args: &[&str]) -> LocalProcess {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_prapi"))
        .args(["local", "--listen", "127.0.0.1:0", "--countries", "de,at"])
        .args(["--products", &products.to_string()])
        .arg("--data-dir")
        .arg(dir.path())
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn prapi local");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    // Reads stderr to the end (so the process never blocks on a full pipe) and hands over the
    // address it serves on.
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split(" on http://").nth(1) {
                let addr = rest.split(';').next().unwrap_or_default().to_string();
                let _ = tx.send(addr);
            }
        }
    });
    let addr = rx
        .recv_timeout(BOUND)
        .expect("prapi local did not start serving");
    let addr: SocketAddr = addr.parse().expect("listen address");
    LocalProcess {
        child,
        base: format!("http://{addr}"),
        addr,
        _dir: dir,
    }
}

/// Resident memory of process `pid`, in KiB, from `/proc/<pid>/status`.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// The value of the first `/metrics` sample line starting with `series`.
async fn metric(base: &str, series: &str) -> Option<f64> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A connection with a 4 KiB receive buffer that sends `GET path` and never reads: the server's
/// writes block almost at once.
async fn non_reading_client(addr: SocketAddr, path: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .set_recv_buffer_size(4096)
        .expect("small receive buffer");
    let mut stream = socket.connect(addr).await.expect("connect");
    let head = format!("GET {path} HTTP/1.1\r\nHost: prapi\r\nX-Country: de\r\n\r\n");
    stream.write_all(head.as_bytes()).await.expect("send");
    stream
}

/// `/products?ids=...` of 100 generated ids starting at `first` (ids are `P<n>`... as generated).
fn batch_path(ids: &[String], first: usize) -> String {
    let window: Vec<&str> = ids
        .iter()
        .cycle()
        .skip(first)
        .take(100)
        .map(String::as_str)
        .collect();
    format!("/products?ids={}", window.join(","))
}

fn generated_ids(products: usize) -> Vec<String> {
    prapi::r#gen::GenConfig {
        products,
        countries: Country::parse_list("de,at").expect("countries"),
        seed: 1,
    }
    .product_ids()
}

/// What 1,000 clients that send a 100-product batch (about 3 MB) and stop reading may add to
/// the server's resident memory: 48 KiB each, 48 MB in all (measured: about 10 MB). A response
/// is a chain of the cached item buffers, so a client pins its connection's buffers, not a copy
/// of its body; with bodies copied into one buffer per response, the same 1,000 clients added
/// 3.2 GB.
const RSS_CEILING_KIB_PER_CLIENT: u64 = 48;
const NON_READING_CLIENTS: usize = 1000;

#[tokio::test]
async fn non_reading_batch_clients_do_not_pin_their_responses() {
    // This process holds 1,000 sockets too: a soft limit of 1024 would not do.
    prapi::http::connections::raise_fd_limit();
    let products = 1000;
    // The write timeout is set far out: this measures what an unread response holds, not how
    // soon the server gives up on it.
    let server = start_local(
        products,
        &["--write-timeout-ms", "600000", "--max-connections", "2000"],
    );
    let ids = generated_ids(products);
    let client = reqwest::Client::new();
    // Warm the cache with every window the clients will ask for, so that what follows adds
    // only what the responses themselves hold.
    let windows: Vec<String> = (0..10).map(|w| batch_path(&ids, w * 100)).collect();
    for path in &windows {
        let resp = client
            .get(format!("{}{path}", server.base))
            .send()
            .await
            .expect("warm-up batch");
        assert_eq!(resp.status(), 200);
        let body = resp.bytes().await.expect("body");
        assert!(
            body.len() > 1_000_000,
            "a batch body is {} bytes",
            body.len()
        );
    }
    let pid = server.child.id();
    let before = rss_kib(pid);
    let mut clients = Vec::with_capacity(NON_READING_CLIENTS);
    for c in 0..NON_READING_CLIENTS {
        clients.push(non_reading_client(server.addr, &windows[c % windows.len()]).await);
    }
    // Every batch has been answered (its response is being written) once the server counts it.
    let answered = (windows.len() + NON_READING_CLIENTS) as f64;
    eventually(
        "every non-reading client's batch to be answered",
        || async {
            let n = metric(
                &server.base,
                r#"prapi_http_request_duration_seconds_count{route="/products",status="200",media="json"}"#,
            )
            .await?;
            (n >= answered).then_some(())
        },
    )
    .await;
    let after = rss_kib(pid);
    let added = after.saturating_sub(before);
    let ceiling = RSS_CEILING_KIB_PER_CLIENT * NON_READING_CLIENTS as u64;
    println!(
        "RSS {before} KiB -> {after} KiB with {NON_READING_CLIENTS} non-reading batch clients: +{added} KiB (ceiling +{ceiling} KiB)"
    );
    assert!(
        added <= ceiling,
        "{NON_READING_CLIENTS} non-reading clients added {added} KiB of RSS, over the ceiling of {ceiling} KiB"
    );
    drop(clients);
}

#[tokio::test]
async fn sigterm_with_an_unfinished_response_fails_readiness_then_exits_within_the_drain() {
    let mut server = start_local(
        200,
        &[
            "--shutdown-delay-ms",
            "3000",
            "--drain-timeout-ms",
            "1000",
            "--write-timeout-ms",
            "600000",
        ],
    );
    let ids = generated_ids(200);
    let _unfinished = non_reading_client(server.addr, &batch_path(&ids, 0)).await;
    eventually("the unfinished batch to be answered", || async {
        let n = metric(
            &server.base,
            r#"prapi_http_request_duration_seconds_count{route="/products",status="200",media="json"}"#,
        )
        .await?;
        (n >= 1.0).then_some(())
    })
    .await;
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    // During the shutdown delay: not ready, and still serving new connections.
    let client = reqwest::Client::new();
    eventually("/readyz to answer 503 after SIGTERM", || async {
        let r = client
            .get(format!("{}/readyz", server.base))
            .send()
            .await
            .ok()?;
        (r.status() == 503).then_some(())
    })
    .await;
    let single = client
        .get(format!("{}/products/{}", server.base, ids[0]))
        .send()
        .await
        .expect("served during the shutdown delay");
    assert_eq!(single.status(), 200);
    // The unfinished response cannot finish (nobody reads it); the drain deadline ends it.
    let exit = eventually_within(BOUND, "prapi to exit after SIGTERM", || {
        let exit = server.child.try_wait().expect("wait");
        async move { exit }
    })
    .await;
    assert!(exit.success(), "exit status {exit}");
}

// ---------------------------------------------------------------------------------------------
// Servers in this process.

/// A store whose reads never finish (a request stays in flight until its client goes away).
struct Stuck;

#[async_trait]
impl Store for Stuck {
    async fn product(&self, _: &ProductId) -> Result<Option<StoredProduct>, StoreError> {
        std::future::pending().await
    }
    async fn offers(&self, _: &ProductId, _: Country) -> Result<Vec<Offer>, StoreError> {
        std::future::pending().await
    }
    async fn product_offers(&self, _: &ProductId, _: Country) -> Result<ProductOffers, StoreError> {
        std::future::pending().await
    }
    async fn apply(&self, _: &[Write]) -> Result<ApplyOutcome, StoreError> {
        Ok(ApplyOutcome::default())
    }
}

/// A products server in this process, on an API and an ops listener.
struct InProcess {
    api: SocketAddr,
    base: String,
    ops_base: String,
    metrics: ConnectionMetrics,
}

async fn serve_products(
    store: Arc<dyn Store>,
    overload: OverloadConfig,
    config: ServeConfig,
) -> InProcess {
    let mut registry = prapi::metrics::registry();
    let metrics = ConnectionMetrics::new(&mut registry);
    let readiness = Readiness::default();
    readiness.set(true);
    let app = ProductsServer {
        countries: Country::parse_list("de,at").expect("countries"),
        cache: Default::default(),
        overload,
    }
    .router_with_registry(store, readiness.clone(), registry)
    .expect("router");
    let api = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let ops = TcpListener::bind("127.0.0.1:0").await.expect("bind ops");
    let (api_addr, ops_addr) = (
        api.local_addr().expect("addr"),
        ops.local_addr().expect("addr"),
    );
    let server = Server {
        config,
        readiness,
        metrics: metrics.clone(),
    };
    tokio::spawn(server.serve(api, Some(ops), app, std::future::pending()));
    InProcess {
        api: api_addr,
        base: format!("http://{api_addr}"),
        ops_base: format!("http://{ops_addr}"),
        metrics,
    }
}

fn empty_store() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = prapi::store::embedded::EmbeddedStore::open(dir.path()).expect("store");
    (dir, Arc::new(store))
}

fn errors(metrics: &ConnectionMetrics, reason: &'static str) -> u64 {
    metrics
        .errors
        .get_or_create(&prapi::http::connections::ConnectionErrorLabels { reason })
        .get()
}

/// Reads until the server closes the connection (EOF or reset), discarding what comes.
async fn closed_by_server(mut stream: TcpStream) {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[tokio::test]
async fn slowloris_is_cut_at_the_header_timeout_and_health_answers_at_the_cap() {
    let (_dir, store) = empty_store();
    let cap = 100;
    let server = serve_products(
        store,
        OverloadConfig::default(),
        ServeConfig {
            max_connections: cap,
            header_timeout: Duration::from_millis(1000),
            ..ServeConfig::default()
        },
    )
    .await;
    // 500 connections that start a request head and never finish it.
    let mut attackers = Vec::new();
    for _ in 0..500 {
        let mut s = TcpStream::connect(server.api).await.expect("connect");
        s.write_all(b"GET /products/P1 HTTP/1.1\r\nHost: prapi\r\nX-Slow: ")
            .await
            .expect("partial head");
        attackers.push(s);
    }
    eventually("the API connections to reach the cap", || async {
        (server.metrics.open.get() == cap as i64).then_some(())
    })
    .await;
    // At the cap the API port accepts nothing more, but the ops listener answers.
    let health = reqwest::get(format!("{}/healthz", server.ops_base))
        .await
        .expect("healthz on the ops listener at the cap");
    assert_eq!(health.status(), 200);
    let ready = reqwest::get(format!("{}/readyz", server.ops_base))
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    let api_on_ops = reqwest::get(format!("{}/products/P1", server.ops_base))
        .await
        .expect("API path on the ops listener");
    assert_eq!(
        api_on_ops.status(),
        404,
        "the ops listener serves only ops paths"
    );
    // Every attacker is cut, each at the header timeout after it was accepted.
    tokio::time::timeout(
        BOUND,
        futures::future::join_all(attackers.into_iter().map(closed_by_server)),
    )
    .await
    .expect("every slowloris connection closed by the server");
    assert!(errors(&server.metrics, "header_timeout") >= 500);
    let after = reqwest::get(format!("{}/healthz", server.base))
        .await
        .expect("the API port serves again");
    assert_eq!(after.status(), 200);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_at_the_write_timeout() {
    let server = start_local(200, &["--write-timeout-ms", "500"]);
    let ids = generated_ids(200);
    let _stalled = non_reading_client(server.addr, &batch_path(&ids, 0)).await;
    eventually(
        "the stalled response to be cut at the write timeout",
        || async {
            let n = metric(
                &server.base,
                r#"prapi_http_connection_errors_total{reason="write_timeout"}"#,
            )
            .await?;
            (n >= 1.0).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn gauges_go_down_when_clients_reset_in_flight_and_queued_requests() {
    let server = serve_products(
        Arc::new(Stuck),
        OverloadConfig {
            max_concurrent: 1,
            max_queue: 16,
            queue_timeout: Duration::from_secs(600),
        },
        ServeConfig::default(),
    )
    .await;
    let gauges = |base: String| async move {
        let in_flight = metric(&base, "prapi_http_in_flight_requests ").await?;
        let queued = metric(&base, "prapi_http_queued_requests ").await?;
        Some((in_flight, queued))
    };
    let mut clients = Vec::new();
    for n in 0..5 {
        let mut s = TcpStream::connect(server.api).await.expect("connect");
        let head = format!("GET /products/P{n} HTTP/1.1\r\nHost: prapi\r\n\r\n");
        s.write_all(head.as_bytes()).await.expect("send");
        clients.push(s);
    }
    eventually("one request in flight and four queued", || async {
        let g = gauges(server.ops_base.clone()).await?;
        (g == (1.0, 4.0)).then_some(())
    })
    .await;
    for s in clients {
        // A zero linger makes the close a reset, as a client that gives up abruptly does.
        s.set_zero_linger().expect("linger");
        drop(s);
    }
    eventually("the gauges to go back to zero", || async {
        let g = gauges(server.ops_base.clone()).await?;
        (g == (0.0, 0.0)).then_some(())
    })
    .await;
}

/// Sends `head` on a new connection and returns the response's status and everything read.
async fn raw(addr: SocketAddr, head: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(head).await.expect("send");
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    // The server closes after these answers, or the head and a short body have come.
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.windows(4).any(|w| w == b"\r\n\r\n") && out.ends_with(b"}") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn the_http_layer_answers_with_problems_and_counts_what_it_refuses() {
    let (_dir, store) = empty_store();
    let server = serve_products(store, OverloadConfig::default(), ServeConfig::default()).await;
    let client = reqwest::Client::new();
    // 405 on every route, API and ops: a problem, with Allow.
    for path in ["/products/P1", "/product-offers/P1", "/healthz", "/metrics"] {
        let r = client
            .post(format!("{}{path}", server.base))
            .send()
            .await
            .expect("POST");
        assert_eq!(r.status(), 405, "{path}");
        let allow = r
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap_or("").to_string());
        assert!(
            allow.as_deref().is_some_and(|a| a.contains("GET")),
            "{path}: Allow {allow:?}"
        );
        assert_eq!(
            r.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "{path}"
        );
        let body: serde_json::Value = r.json().await.expect("problem");
        assert_eq!(
            body["type"],
            "https://prapi.dev/problems/method-not-allowed"
        );
        assert_eq!(body["status"], 405);
    }
    // An id that is not UTF-8 once decoded is an invalid id like any other.
    let r = client
        .get(format!("{}/products/%FF", server.base))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.expect("problem");
    assert_eq!(
        body["type"],
        "https://prapi.dev/problems/invalid-product-id"
    );
    // Echoed input is cut: a 10 KB path or Accept header does not come back whole.
    let long = "a".repeat(10_000);
    let r = client
        .get(format!("{}/{long}", server.base))
        .send()
        .await
        .expect("GET long path");
    assert_eq!(r.status(), 404);
    let detail = r.json::<serde_json::Value>().await.expect("problem")["detail"].to_string();
    assert!(detail.len() < 300, "detail of {} bytes", detail.len());
    let r = client
        .get(format!("{}/products/P1", server.base))
        .header("accept", format!("text/{long}"))
        .send()
        .await
        .expect("GET long Accept");
    assert_eq!(r.status(), 406);
    let detail = r.json::<serde_json::Value>().await.expect("problem")["detail"].to_string();
    assert!(detail.len() < 400, "detail of {} bytes", detail.len());
    // A head over --max-header-bytes is refused by the HTTP layer, and counted.
    let head = format!(
        "GET /products/P1 HTTP/1.1\r\nHost: prapi\r\nX-Big: {}\r\n\r\n",
        "b".repeat(60_000)
    );
    let (status, _) = raw(server.api, head.as_bytes()).await;
    assert_eq!(status, 431);
    eventually("the refused head to be counted", || async {
        (errors(&server.metrics, "head_too_large") >= 1).then_some(())
    })
    .await;
    let exported = metric(
        &server.ops_base,
        r#"prapi_http_connection_errors_total{reason="head_too_large"}"#,
    )
    .await;
    assert!(exported.is_some_and(|n| n >= 1.0), "exported {exported:?}");
}
