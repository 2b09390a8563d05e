//! Updater throughput, one bounded run: `make bench-updater` (or
//! `cargo bench -p prapi-dataplane --bench updater`).
//!
//! 1. The whole pipeline (NDJSON → lanes → batched writer) into an in-memory table whose every
//!    batch call (writes and version lookups) takes 5 ms, against the theoretical
//!    10 calls in flight × 25 items / 5 ms = 50 000 items/s.
//! 2. A naive writer on the same table: one item per call, one call at a time.
//! 3. The pipeline into DynamoDB (dynalite of the test environment, `make testenv`), when it runs.
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use prapi::model::{Event, Write};
use prapi::store::Store;
use prapi::store::dynamodb::memory::{BatchedStore, MemoryTable};
use prapi::store::dynamodb::writer::{BatchSink, WriterConfig};
use prapi::store::dynamodb::{DynamoConfig, DynamoStore};
use prapi::updater::{UpdaterMetrics, apply_ndjson};

// The allocator of the `prapi` binary (src/main.rs), so the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CALL: Duration = Duration::from_millis(5);

/// `n` offer events with distinct keys over n/10 products, as NDJSON.
fn events(n: usize) -> String {
    let mut out = String::with_capacity(n * 200);
    for i in 0..n {
        out.push_str(&format!(
            r#"{{"type":"offer","product_id":"P{}","merchant_id":"m{}","country":"de","sku":"S{}","version":{},"price":{{"amount":{},"currency":"EUR"}},"stock":{}}}"#,
            i / 10,
            i % 10,
            i % 7,
            1 + i % 5,
            100 + i % 9000,
            i % 4
        ));
        out.push('\n');
    }
    out
}

async fn pipeline(store: Arc<dyn Store>, ndjson: &str) -> anyhow::Result<(f64, u64)> {
    let metrics = Arc::new(UpdaterMetrics::default());
    let started = Instant::now();
    let report = apply_ndjson(
        ndjson.as_bytes(),
        store,
        Vec::new(),
        64,
        250,
        metrics.clone(),
    )
    .await?;
    let secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(report.invalid == 0, "invalid bench events");
    Ok((secs, metrics.counted("applied")))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let theoretical = 10.0 * 25.0 / CALL.as_secs_f64();

    // The table alone: 10 callers writing 25 items per call back to back, no pipeline. What the
    // fake latency costs on this runtime and machine, and so the ceiling any writer can reach.
    let calib_table = Arc::new(MemoryTable::new(CALL, CALL));
    let calib_writes: Vec<Write> = events(250)
        .lines()
        .map(|l| Event::parse(l.as_bytes()).map(Event::into_write))
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    let callers: Vec<_> = (0..10)
        .map(|c| {
            let table = calib_table.clone();
            let chunk: Vec<Write> = calib_writes[c * 25..(c + 1) * 25].to_vec();
            tokio::spawn(async move {
                let refs: Vec<&Write> = chunk.iter().collect();
                for _ in 0..200 {
                    table.write_batch(&refs).await?;
                }
                Ok::<_, prapi::store::dynamodb::writer::SinkError>(())
            })
        })
        .collect();
    for c in callers {
        c.await??;
    }
    let calib_secs = started.elapsed().as_secs_f64();
    let (calib_calls, calib_mean) = calib_table.write_calls();
    println!(
        "table alone, 10 callers: {calib_calls} calls of 25 in {calib_secs:.2} s = {:.0} items/s \
         ({:.1}% of the theoretical {theoretical:.0}/s; {:.2} ms per call)",
        25.0 * calib_calls as f64 / calib_secs,
        100.0 * 25.0 * calib_calls as f64 / calib_secs / theoretical,
        1e3 * calib_mean.as_secs_f64()
    );

    let n = 200_000;
    let ndjson = events(n);
    let table = Arc::new(MemoryTable::new(CALL, CALL));
    let store = Arc::new(BatchedStore::new(
        table.clone(),
        table.clone(),
        WriterConfig::default(),
        Arc::default(),
    ));
    let (secs, applied) = pipeline(store.clone(), &ndjson).await?;
    anyhow::ensure!(
        applied as usize == n && table.len() == n,
        "lost writes: {applied} of {n}"
    );
    let rate = n as f64 / secs;
    let calls = store.metrics().calls.get();
    let (_, mean_call) = table.write_calls();
    println!(
        "batched, 5 ms per call:  {n} events in {secs:.2} s = {rate:.0} events/s \
         ({:.1}% of the theoretical {theoretical:.0}/s; {calls} write calls, {:.1} items/call, \
         {:.2} ms per call, {:.0}% of the write time in calls)",
        100.0 * rate / theoretical,
        n as f64 / calls as f64,
        1e3 * mean_call.as_secs_f64(),
        100.0 * calls as f64 * mean_call.as_secs_f64() / (10.0 * secs)
    );

    // The writer alone (writes parsed beforehand, 64 concurrent lanes of 250-write batches): what
    // the batching and in-flight limit give when parsing and routing are not in the way.
    let writes: Vec<Write> = ndjson
        .lines()
        .map(|l| Event::parse(l.as_bytes()).map(Event::into_write))
        .collect::<Result<_, _>>()?;
    let writer_table = Arc::new(MemoryTable::new(CALL, CALL));
    let writer_store = Arc::new(BatchedStore::new(
        writer_table.clone(),
        writer_table.clone(),
        WriterConfig::default(),
        Arc::default(),
    ));
    let mut lanes: Vec<Vec<Write>> = vec![Vec::new(); 64];
    for w in writes {
        lanes[prapi::updater::lanes::lane_of(w.product_id(), 64)].push(w);
    }
    let started = Instant::now();
    let tasks: Vec<_> = lanes
        .into_iter()
        .map(|lane| {
            let store = writer_store.clone();
            tokio::spawn(async move {
                for batch in lane.chunks(250) {
                    store.apply(batch).await?;
                }
                Ok::<_, prapi::store::StoreError>(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let writer_secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(writer_table.len() == n, "lost writes");
    let writer_rate = n as f64 / writer_secs;
    let (writer_calls, writer_mean) = writer_table.write_calls();
    println!(
        "writer alone, 5 ms/call: {n} writes in {writer_secs:.2} s = {writer_rate:.0} items/s \
         ({:.1}% of the theoretical {theoretical:.0}/s; {writer_calls} write calls, {:.2} ms per call, \
         {:.0}% of the write time in calls)",
        100.0 * writer_rate / theoretical,
        1e3 * writer_mean.as_secs_f64(),
        100.0 * writer_calls as f64 * writer_mean.as_secs_f64() / (10.0 * writer_secs)
    );

    // The same pipeline with no latency at all: the CPU ceiling of this build on this machine.
    let free_table = Arc::new(MemoryTable::new(Duration::ZERO, Duration::ZERO));
    let free = Arc::new(BatchedStore::new(
        free_table.clone(),
        free_table.clone(),
        WriterConfig::default(),
        Arc::default(),
    ));
    let (free_secs, _) = pipeline(free, &ndjson).await?;
    println!(
        "batched, no latency:     {n} events in {free_secs:.2} s = {:.0} events/s (CPU ceiling)",
        n as f64 / free_secs
    );

    let naive_n = 1_000;
    let naive_table = MemoryTable::new(CALL, Duration::ZERO);
    let writes: Vec<Write> = events(naive_n)
        .lines()
        .map(|l| Event::parse(l.as_bytes()).map(Event::into_write))
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    for w in &writes {
        naive_table
            .write_batch(&[w])
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let naive_secs = started.elapsed().as_secs_f64();
    let naive_rate = naive_n as f64 / naive_secs;
    println!(
        "naive, 1 item per call:  {naive_rate:.0} events/s (batched is {:.0}x faster; \
         one call takes {:.2} ms against the nominal {:.2} ms)",
        rate / naive_rate,
        1e3 * naive_secs / naive_n as f64,
        1e3 * CALL.as_secs_f64()
    );

    match prapi_e2e::TestEnv::load(&[prapi_e2e::Part::DynamoDb]) {
        Ok(env) => {
            let dn = 20_000;
            let mut config = DynamoConfig::new(prapi_e2e::unique_name("bench"));
            config.create_table = true;
            config.endpoint_url = Some(env.dynamodb_endpoint().to_owned());
            config.region = Some(env.aws_region().to_owned());
            config.static_credentials = Some((
                env.aws_access_key_id().to_owned(),
                env.aws_secret_access_key().to_owned(),
            ));
            let store: Arc<dyn Store> = Arc::new(DynamoStore::connect(config).await?);
            let (secs, applied) = pipeline(store, &events(dn)).await?;
            anyhow::ensure!(applied as usize == dn, "lost writes: {applied} of {dn}");
            println!(
                "dynamodb ({}): {dn} events in {secs:.2} s = {:.0} events/s",
                env.dynamodb_endpoint(),
                dn as f64 / secs
            );
        }
        Err(e) => println!("dynamodb: skipped ({e}; run make testenv)"),
    }
    Ok(())
}
