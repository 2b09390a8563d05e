//! Shared helpers of the store and updater integration tests: the test environment's endpoints,
//! a deterministic event generator, the independent model of what the table must hold, and a
//! reader of the whole table.
#![allow(dead_code, missing_docs, unused_imports)]

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::AttributeValue;
use prapi::store::dynamodb::DynamoConfig;
use prapi_e2e::Part;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

/// The Kafka and DynamoDB endpoints and credentials of the test environment (`make testenv`), in
/// a form a child process can be handed.
#[derive(Debug, Clone)]
pub struct Backends {
    pub kafka: String,
    pub dynamodb: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
}

impl Backends {
    /// A store configuration for `table` on this environment (created when missing).
    pub fn dynamo_config(&self, table: &str) -> DynamoConfig {
        let mut c = DynamoConfig::new(table);
        c.create_table = true;
        c.endpoint_url = Some(self.dynamodb.clone());
        c.region = Some(self.region.clone());
        c.static_credentials = Some((self.access_key.clone(), self.secret_key.clone()));
        c
    }

    /// A plain SDK client for checking the table from outside the store.
    pub fn client(&self) -> aws_sdk_dynamodb::Client {
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .endpoint_url(&self.dynamodb)
            .region(aws_sdk_dynamodb::config::Region::new(self.region.clone()))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                self.access_key.clone(),
                self.secret_key.clone(),
                None,
                None,
                "test",
            ))
            .build();
        aws_sdk_dynamodb::Client::from_conf(config)
    }

    /// The environment as one line, for a child process.
    pub fn encode(&self) -> String {
        [
            &self.kafka,
            &self.dynamodb,
            &self.region,
            &self.access_key,
            &self.secret_key,
        ]
        .map(String::as_str)
        .join("|")
    }

    /// Reads back [`Backends::encode`].
    pub fn decode(line: &str) -> Self {
        let parts: Vec<&str> = line.split('|').collect();
        let [kafka, dynamodb, region, access_key, secret_key] = parts[..] else {
            panic!("bad encoded test environment {line:?}");
        };
        Self {
            kafka: kafka.into(),
            dynamodb: dynamodb.into(),
            region: region.into(),
            access_key: access_key.into(),
            secret_key: secret_key.into(),
        }
    }
}

/// The test environment with Kafka (when `kafka`) and DynamoDB, or `None` when it is not running
/// (`prapi_e2e` prints why the test is skipped; under `make test` it panics instead).
pub fn env(kafka: bool) -> Option<Backends> {
    let mut parts = vec![Part::DynamoDb];
    if kafka {
        parts.push(Part::Kafka);
    }
    let env = prapi_e2e::TestEnv::get_for(&parts)?;
    Some(Backends {
        kafka: if kafka {
            env.kafka_bootstrap_servers().to_owned()
        } else {
            String::new()
        },
        dynamodb: env.dynamodb_endpoint().to_owned(),
        region: env.aws_region().to_owned(),
        access_key: env.aws_access_key_id().to_owned(),
        secret_key: env.aws_secret_access_key().to_owned(),
    })
}

/// A table or topic name unique to this run.
pub fn unique(prefix: &str) -> String {
    prapi_e2e::unique_name(prefix)
}

/// One generated event: Kafka key (product id), topic kind and JSON value.
#[derive(Debug, Clone)]
pub struct GenEvent {
    pub key: String,
    pub is_product: bool,
    pub json: String,
}

const COUNTRIES: [&str; 3] = ["de", "at", "fr"];
const MERCHANTS: [&str; 3] = ["m1", "m-2", "m.3"];

/// `n` events over `n / 20` products: product and offer upserts and deletes with increasing
/// versions (with gaps), older versions re-sent after newer ones, and exact duplicates. Every
/// event of a product is keyed by its id, so they share a partition.
pub fn generate(seed: u64, n: usize) -> Vec<GenEvent> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let products = (n / 20).max(1);
    // key -> versions emitted so far
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    let mut last: BTreeMap<String, GenEvent> = BTreeMap::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let p = format!("P{}", rng.random_range(0..products));
        let country = COUNTRIES[rng.random_range(0..COUNTRIES.len())];
        let merchant = MERCHANTS[rng.random_range(0..MERCHANTS.len())];
        let sku = format!("{p}-{}", 38 + rng.random_range(0..3));
        let roll = rng.random_range(0..100);
        let is_product = roll < 30;
        let key = if is_product {
            format!("{p}/product")
        } else {
            format!("{p}/{country}/{merchant}/{sku}")
        };
        let current = versions.get(&key).copied().unwrap_or(0);
        // 12%: an older version after a newer one; 4%: an exact duplicate.
        if (88..96).contains(&roll) || (roll >= 96 && current == 0) {
            if current > 1 {
                let older = rng.random_range(1..current);
                out.push(event(
                    &p, is_product, false, country, merchant, &sku, older, &mut rng,
                ));
            }
            continue;
        }
        if roll >= 96 {
            if let Some(e) = last.get(&key) {
                out.push(e.clone());
            }
            continue;
        }
        let version = current + rng.random_range(1..4);
        versions.insert(key.clone(), version);
        let delete = rng.random_range(0..100) < 15;
        let e = event(
            &p, is_product, delete, country, merchant, &sku, version, &mut rng,
        );
        last.insert(key, e.clone());
        out.push(e);
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn event(
    p: &str,
    is_product: bool,
    delete: bool,
    country: &str,
    merchant: &str,
    sku: &str,
    version: u64,
    rng: &mut ChaCha8Rng,
) -> GenEvent {
    let value = match (is_product, delete) {
        (true, false) => json!({"type":"product","id":p,"version":version,"product":{
            "name": format!("Shoe {}", rng.random_range(0..1000)),
            "brand": {"code":"NI1","name":"Nike"},
            "simples": [{"sku": format!("{p}-38"), "size":"38"}, {"sku": format!("{p}-39"), "size":"39"}],
            "extra": {"nested": [1, 2, rng.random_range(0..9)]}}}),
        (true, true) => json!({"type":"product_deleted","id":p,"version":version}),
        (false, false) => json!({"type":"offer","product_id":p,"merchant_id":merchant,
            "country": if rng.random_bool(0.2) { country.to_uppercase() } else { country.to_owned() },
            "sku":sku,"version":version,
            "price":{"amount":rng.random_range(100..20000),"currency":"EUR"},"stock":rng.random_range(0..5)}),
        (false, true) => json!({"type":"offer_deleted","product_id":p,"merchant_id":merchant,
            "country":country,"sku":sku,"version":version}),
    };
    GenEvent {
        key: p.to_owned(),
        is_product,
        json: value.to_string(),
    }
}

/// What one item of the table must be.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    pub version: u64,
    pub tombstone: bool,
    /// Parsed JSON body of live items.
    pub body: Option<Value>,
}

/// The table a correct updater leaves behind, computed from the events alone: per key the event
/// with the highest version (the first one of equal versions), offers only of `countries`.
pub fn model(events: &[GenEvent], countries: &[&str]) -> BTreeMap<(String, String), Expected> {
    let mut table: BTreeMap<(String, String), Expected> = BTreeMap::new();
    for e in events {
        let v: Value = serde_json::from_str(&e.json).expect("generated JSON");
        let version = v["version"].as_u64().expect("version");
        let kind = v["type"].as_str().expect("type");
        let (pk, sk, body) = match kind {
            "product" | "product_deleted" => {
                let id = v["id"].as_str().expect("id").to_owned();
                let body = (kind == "product").then(|| {
                    let mut doc = v["product"].clone();
                    doc["id"] = json!(id);
                    doc["version"] = json!(version);
                    doc
                });
                (id, "product".to_owned(), body)
            }
            _ => {
                let country = v["country"].as_str().expect("country").to_lowercase();
                if !countries.contains(&country.as_str()) {
                    continue;
                }
                let sk = format!(
                    "offer#{country}#{}#{}",
                    v["merchant_id"].as_str().expect("merchant"),
                    v["sku"].as_str().expect("sku")
                );
                let body = (kind == "offer").then(|| {
                    json!({"merchant_id": v["merchant_id"], "sku": v["sku"], "price": v["price"],
                           "stock": v["stock"], "version": version})
                });
                (v["product_id"].as_str().expect("pid").to_owned(), sk, body)
            }
        };
        let entry = table.entry((pk, sk));
        let new = Expected {
            version,
            tombstone: body.is_none(),
            body,
        };
        match entry {
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(new);
            }
            std::collections::btree_map::Entry::Occupied(mut slot) => {
                if version > slot.get().version {
                    slot.insert(new);
                }
            }
        }
    }
    table
}

/// Every item of `table`, as the model describes items.
pub async fn table_state(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> BTreeMap<(String, String), Expected> {
    let mut out = BTreeMap::new();
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("scan");
        for item in page.items() {
            let s = |k: &str| match item.get(k) {
                Some(AttributeValue::S(s)) => s.clone(),
                other => panic!("attribute {k} is {other:?}"),
            };
            let version = match item.get("v") {
                Some(AttributeValue::N(n)) => n.parse().expect("version number"),
                other => panic!("version is {other:?}"),
            };
            let tombstone = matches!(item.get("t"), Some(AttributeValue::Bool(true)));
            let body = match item.get("b") {
                Some(AttributeValue::B(b)) => {
                    Some(serde_json::from_slice(b.as_ref()).expect("body JSON"))
                }
                _ => None,
            };
            out.insert(
                (s("pk"), s("sk")),
                Expected {
                    version,
                    tombstone,
                    body,
                },
            );
        }
        match page.last_evaluated_key {
            Some(k) if !k.is_empty() => start = Some(k),
            _ => return out,
        }
    }
}

/// Asserts that the table equals the model, naming the first differences.
pub fn assert_same(
    actual: &BTreeMap<(String, String), Expected>,
    expected: &BTreeMap<(String, String), Expected>,
) {
    let mut diffs = Vec::new();
    for (k, e) in expected {
        match actual.get(k) {
            None => diffs.push(format!("missing {k:?}: expected {e:?}")),
            Some(a) if a != e => diffs.push(format!("{k:?}: expected {e:?}, found {a:?}")),
            Some(_) => {}
        }
    }
    for k in actual.keys() {
        if !expected.contains_key(k) {
            diffs.push(format!("unexpected item {k:?}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} of {} items differ from the model, e.g.:\n{}",
        diffs.len(),
        expected.len(),
        diffs
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

pub use prapi_e2e::kit::eventually_within;
