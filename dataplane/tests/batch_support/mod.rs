//! Helpers of the batch and discovery tests: real `prapi` processes (killed by PID when dropped),
//! a catalogue loaded into embedded stores, and a raw HTTP client.
#![allow(dead_code)]

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use flate2::read::GzDecoder;
use prapi::r#gen::GenConfig;
use prapi::model::{Country, Event};
use prapi::run::load_events;
use prapi::store::Store;
use prapi::store::embedded::EmbeddedStore;
use reqwest::StatusCode;

pub const PRAPI: &str = env!("CARGO_BIN_EXE_prapi");
pub use prapi_e2e::kit::PATIENCE;

/// A child process, killed by its PID when dropped (also when the test fails).
pub struct Proc {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    log: std::path::PathBuf,
}

impl Proc {
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Starts `prapi <args> --listen 127.0.0.1:<free port>` and waits for `/readyz`; retries on a
/// new port when the process exits early (another process took the port in between).
pub async fn spawn_ready(dir: &Path, name: &str, args: &[String], env: &[(&str, &str)]) -> Proc {
    for attempt in 0..5 {
        let port = free_port();
        let log = dir.join(format!("{name}-{attempt}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(PRAPI)
            .args(args)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("PRAPI_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn prapi");
        let mut proc = Proc {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Ok(Some(status)) = proc.child.try_wait() {
                eprintln!(
                    "{name} exited ({status}) on attempt {attempt}:\n{}",
                    proc.log_text()
                );
                break;
            }
            let ready = reqwest::get(format!("{}/readyz", proc.base))
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK);
            if ready {
                return proc;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} not ready within {PATIENCE:?}:\n{}",
                proc.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    panic!("{name} could not be started");
}

pub async fn load_catalogue(dir: &Path) -> Vec<String> {
    let cfg = GenConfig {
        products: 120,
        countries: Country::parse_list("de,at").expect("countries"),
        seed: 5,
    };
    let store = EmbeddedStore::open(dir).expect("open store");
    load_events(&store, cfg.events().map(Ok), |_| {})
        .await
        .expect("load catalogue");
    // Two deleted products: present in the store as tombstones, missing to the API.
    let deletes: Vec<_> = ["GONE-1", "GONE-2"]
        .iter()
        .flat_map(|id| {
            [
                format!(r#"{{"type":"product","id":"{id}","version":1,"product":{{"name":"x"}}}}"#),
                format!(r#"{{"type":"product_deleted","id":"{id}","version":2}}"#),
            ]
        })
        .map(|l| Event::parse(l.as_bytes()).expect("event").into_write())
        .collect();
    store.apply(&deletes).await.expect("deletes");
    cfg.product_ids()
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create data dir");
    for entry in std::fs::read_dir(from).expect("read data dir") {
        let entry = entry.expect("dir entry");
        assert!(
            entry.file_type().expect("file type").is_file(),
            "flat store dir"
        );
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy store file");
    }
}

pub fn client() -> reqwest::Client {
    // No automatic decompression: the tests look at the bytes on the wire.
    reqwest::Client::builder()
        .no_gzip()
        .build()
        .expect("client")
}

pub async fn get(url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = client().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.expect("request")
}

/// Decodes one gzip member and fails when anything follows it: every body the API sends, batch
/// bodies included, is a single member (clients that read one member must get everything).
pub fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut decoder = GzDecoder::new(data);
    let mut out = Vec::new();
    decoder.read_to_end(&mut out).expect("valid gzip member");
    let rest = decoder.into_inner();
    assert!(
        rest.is_empty(),
        "{} bytes after the first gzip member",
        rest.len()
    );
    out
}
