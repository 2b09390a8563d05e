//! The DynamoDB store against the test environment's DynamoDB (dynalite): layout, version rules,
//! pagination, the batched writer under injected faults, and the two-client read path.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prapi::model::{Country, Currency, MerchantId, Offer, OfferKey, Price, ProductId, Write};
use prapi::store::dynamodb::DynamoStore;
use prapi::store::dynamodb::faults::FaultySink;
use prapi::store::dynamodb::writer::BatchSink;
use prapi::store::{Store, StoreError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn pid(s: &str) -> ProductId {
    ProductId::parse(s).expect("product id")
}

fn de() -> Country {
    Country::parse("de").expect("country")
}

fn offer(p: &str, country: &str, merchant: &str, sku: &str, version: u64, stock: u64) -> Offer {
    Offer {
        key: OfferKey {
            product_id: pid(p),
            country: Country::parse(country).expect("country"),
            merchant_id: MerchantId::parse(merchant).expect("merchant"),
            sku: sku.into(),
        },
        version,
        price: Price {
            amount: 1000 + i64::try_from(version).expect("small"),
            currency: Currency::parse("EUR").expect("currency"),
        },
        stock,
    }
}

fn product(p: &str, version: u64) -> Write {
    Write::Product {
        id: pid(p),
        version,
        body: Bytes::from(format!(r#"{{"id":"{p}","version":{version}}}"#)),
    }
}

#[tokio::test]
async fn reads_writes_and_version_rules() {
    let Some(env) = support::env(false) else {
        return;
    };
    let table = support::unique("store");
    let store = DynamoStore::connect(env.dynamo_config(&table))
        .await
        .expect("connect");

    let outcome = store
        .apply(&[
            product("P1", 3),
            Write::Offer(offer("P1", "de", "m2", "S1", 1, 4)),
            Write::Offer(offer("P1", "de", "m1", "S#2", 2, 0)),
            Write::Offer(offer("P1", "at", "m1", "S1", 1, 1)),
            Write::Offer(offer("P1", "de", "m2", "S1", 5, 7)),
            product("P1", 2),
        ])
        .await
        .expect("apply");
    assert_eq!(outcome.applied, 4, "{outcome:?}");
    assert_eq!(outcome.stale, 2, "{outcome:?}");

    let p = store
        .product(&pid("P1"))
        .await
        .expect("read")
        .expect("found");
    assert_eq!(p.version, 3);
    let offers = store.offers(&pid("P1"), de()).await.expect("offers");
    assert_eq!(
        offers,
        vec![
            offer("P1", "de", "m1", "S#2", 2, 0),
            offer("P1", "de", "m2", "S1", 5, 7)
        ]
    );
    let po = store.product_offers(&pid("P1"), de()).await.expect("po");
    assert_eq!(po.product, Some(p.clone()));
    assert_eq!(po.offers, offers);
    let at = store
        .product_offers(&pid("P1"), Country::parse("at").expect("at"))
        .await
        .expect("po at");
    assert_eq!(at.offers, vec![offer("P1", "at", "m1", "S1", 1, 1)]);
    assert!(store.product(&pid("P2")).await.expect("read").is_none());

    // Deletes leave tombstones that hide the item and stop older writes, also for a new store
    // instance that has not seen the keys (it asks the table).
    store
        .apply(&[
            Write::ProductDeleted {
                id: pid("P1"),
                version: 4,
            },
            Write::OfferDeleted {
                key: offer("P1", "de", "m2", "S1", 0, 0).key,
                version: 6,
            },
        ])
        .await
        .expect("deletes");
    let fresh = DynamoStore::connect(env.dynamo_config(&table))
        .await
        .expect("connect");
    let outcome = fresh
        .apply(&[
            product("P1", 3),
            Write::Offer(offer("P1", "de", "m2", "S1", 6, 9)),
            Write::Offer(offer("P1", "de", "m1", "S#2", 1, 9)),
        ])
        .await
        .expect("stale apply");
    assert_eq!((outcome.applied, outcome.stale), (0, 3));
    assert!(fresh.product(&pid("P1")).await.expect("read").is_none());
    let po = fresh.product_offers(&pid("P1"), de()).await.expect("po");
    assert_eq!(po.product, None);
    assert_eq!(po.offers, vec![offer("P1", "de", "m1", "S#2", 2, 0)]);
    // A newer version brings the product back.
    fresh.apply(&[product("P1", 5)]).await.expect("recreate");
    assert_eq!(
        fresh
            .product(&pid("P1"))
            .await
            .expect("read")
            .map(|p| p.version),
        Some(5)
    );
}

#[tokio::test]
async fn product_offers_follow_pages() {
    let Some(env) = support::env(false) else {
        return;
    };
    let table = support::unique("pages");
    let mut cfg = env.dynamo_config(&table);
    // 1 MB pages take dynalite longer than the serving timeouts; this test is about paging.
    cfg.fallback_timeout = Duration::from_secs(10);
    let store = DynamoStore::connect(cfg).await.expect("connect");
    // 1 MB is DynamoDB's page limit: offers with large SKUs make a product span several pages.
    let big = "x".repeat(120);
    let mut writes = vec![product("P9", 1)];
    for i in 0..6000 {
        writes.push(Write::Offer(offer(
            "P9",
            "de",
            &format!("m{i:05}"),
            &big,
            1,
            1,
        )));
    }
    writes.push(Write::Offer(offer("P9", "fr", "m1", "S", 1, 1)));
    for chunk in writes.chunks(250) {
        store.apply(chunk).await.expect("apply");
    }
    let po = store.product_offers(&pid("P9"), de()).await.expect("po");
    assert!(po.product.is_some());
    assert_eq!(po.offers.len(), 6000);
    assert!(
        po.offers
            .windows(2)
            .all(|w| w[0].key.merchant_id < w[1].key.merchant_id)
    );
    assert_eq!(
        store.offers(&pid("P9"), de()).await.expect("offers").len(),
        6000
    );
}

#[tokio::test]
async fn throttling_and_unprocessed_items_lose_nothing() {
    let Some(env) = support::env(false) else {
        return;
    };
    let table = support::unique("faults");
    let mut faulty: Option<Arc<FaultySink>> = None;
    let mut cfg = env.dynamo_config(&table);
    cfg.writer.backoff.base = Duration::from_millis(2);
    cfg.writer.backoff.cap = Duration::from_millis(50);
    let store = DynamoStore::connect_with(cfg, |sink| {
        let f = Arc::new(FaultySink::new(sink, 0.3, 7));
        faulty = Some(f.clone());
        f as Arc<dyn BatchSink>
    })
    .await
    .expect("connect");
    let faulty = faulty.expect("layer installed");

    let events = support::generate(11, 4000);
    let mut writes = Vec::new();
    for e in &events {
        let event = prapi::model::Event::parse(e.json.as_bytes()).expect("valid");
        writes.push(event.into_write());
    }
    // Batches as the updater's lanes form them: per product, in order.
    let mut by_lane: std::collections::BTreeMap<usize, Vec<Write>> = Default::default();
    for w in writes {
        by_lane
            .entry(prapi::updater::lanes::lane_of(w.product_id(), 8))
            .or_default()
            .push(w);
    }
    let lanes = by_lane.into_values().map(|ws| {
        let store = &store;
        async move {
            for chunk in ws.chunks(250) {
                store.apply(chunk).await.expect("apply under faults");
            }
        }
    });
    futures::future::join_all(lanes).await;

    let expected = support::model(&events, &["de", "at", "fr"]);
    let actual = support::table_state(&env.client(), &table).await;
    support::assert_same(&actual, &expected);
    let m = store.metrics().writer.clone();
    assert!(faulty.throttled() > 0 && faulty.partial() > 0);
    assert_eq!(m.retries_for("throttled"), faulty.throttled());
    assert!(m.retries_for("unprocessed") >= faulty.partial());
    assert!(m.unprocessed_items.get() > 0);
    assert_eq!(m.hard_errors.get(), 0);
}

/// A TCP proxy that holds every chunk from the client for `delay` before passing it on.
async fn slow_proxy(target: String, delay: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                let Ok(mut outbound) = TcpStream::connect(&target).await else {
                    return;
                };
                let (mut ri, mut wi) = inbound.split();
                let (mut ro, mut wo) = outbound.split();
                let up = async {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = ri.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        tokio::time::sleep(delay).await;
                        if wo.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                };
                let down = tokio::io::copy(&mut ro, &mut wi);
                let _ = tokio::join!(up, down);
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn slow_primary_reads_fall_back() {
    let Some(env) = support::env(false) else {
        return;
    };
    let table = support::unique("fallback");
    let target = env
        .dynamodb
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut cfg = env.dynamo_config(&table);
    cfg.primary_endpoint_url = Some(slow_proxy(target, Duration::from_millis(40)).await);
    // Generous for a loaded test machine: the point is that the fallback answers, not how fast.
    cfg.fallback_timeout = Duration::from_secs(2);
    let store = DynamoStore::connect(cfg).await.expect("connect");
    store
        .apply(&[
            product("P1", 1),
            Write::Offer(offer("P1", "de", "m1", "S", 1, 1)),
        ])
        .await
        .expect("apply");

    let m = store.metrics().clone();
    let before = m.requests_with("fallback", "get", "ok");
    for _ in 0..5 {
        let p = store
            .product(&pid("P1"))
            .await
            .expect("served by the fallback");
        assert_eq!(p.map(|p| p.version), Some(1));
    }
    let po = store.product_offers(&pid("P1"), de()).await.expect("po");
    assert_eq!(po.offers.len(), 1);
    assert_eq!(m.requests_with("fallback", "get", "ok") - before, 5);
    assert!(m.requests_with("primary", "get", "timeout") >= 5);
    assert!(m.requests_with("fallback", "query", "ok") >= 1);
    assert_eq!(m.requests_with("primary", "get", "ok"), 0);
}

#[tokio::test]
async fn missing_table_is_a_clear_error() {
    let Some(env) = support::env(false) else {
        return;
    };
    let table = support::unique("missing");
    let mut cfg = env.dynamo_config(&table);
    cfg.create_table = false;
    let err = DynamoStore::connect(cfg)
        .await
        .expect_err("no table, no --create-table");
    assert!(
        matches!(&err, StoreError::Backend(e) if e.to_string().contains(&table) && e.to_string().contains("--create-table")),
        "{err}"
    );
}
