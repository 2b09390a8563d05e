//! `prapi local` in this process: an embedded store loaded with a generated catalogue, served
//! over a real loopback socket by the products API with the batch endpoints, as `prapi local`
//! serves it.
#![allow(dead_code)]

use std::sync::Arc;

use prapi::batch::BatchConfig;
use prapi::cache::CacheConfig;
use prapi::r#gen::GenConfig;
use prapi::http::overload::OverloadConfig;
use prapi::http::server::{Readiness, serve};
use prapi::model::Country;
use prapi::run::{ProductsServer, load_events};
use prapi::store::Store;
use prapi::store::embedded::EmbeddedStore;

/// A running local server.
pub struct Local {
    _dir: tempfile::TempDir,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// Product ids of the catalogue, in catalogue order.
    pub ids: Vec<String>,
    /// The countries served.
    pub countries: Vec<Country>,
}

/// Serves a catalogue of `products` generated products with offers in `de` and `at`.
pub async fn start(products: usize, seed: u64) -> Local {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open store");
    let countries = Country::parse_list("de,at").expect("countries");
    let cfg = GenConfig {
        products,
        countries: countries.clone(),
        seed,
    };
    load_events(&store, cfg.events().map(Ok), |_| {})
        .await
        .expect("load catalogue");
    let ids = cfg.product_ids();
    let store: Arc<dyn Store> = Arc::new(store);
    let readiness = Readiness::default();
    readiness.set(true);
    let app = ProductsServer {
        countries: countries.clone(),
        cache: CacheConfig::default(),
        overload: OverloadConfig::default(),
    }
    .router_with_batch(
        store,
        readiness,
        prapi::metrics::registry(),
        BatchConfig::default(),
    )
    .expect("router");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(serve(listener, app, std::future::pending()));
    Local {
        _dir: dir,
        base: format!("http://{addr}"),
        ids,
        countries,
    }
}

/// A client that leaves bodies as they are on the wire (no automatic decompression).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_gzip()
        .build()
        .expect("client")
}

/// `GET base + path` with `headers`.
pub async fn get(base: &str, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = client().get(format!("{base}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.expect("request")
}
