//! Embedded store on redb: `prapi local`, `prapi products --store embedded` and tests.
//!
//! redb is a crash-safe copy-on-write B-tree: a committed write transaction survives a crash, an
//! uncommitted one vanishes whole. Each [`Store::apply`] is one transaction, so a batch is either
//! durable or must be retried, which is what the updater's at-least-once delivery expects.
//!
//! Layout: two tables keyed by strings. `products` maps a product id to a record; `offers` maps
//! `<id>\0<country>\0<merchant>\0<sku>` to a record, so the offers of a product in one country are
//! one range scan. Ids, countries and merchants cannot contain `\0` (validated by the model) and a
//! SKU has no control characters, so keys never collide. A record is one tag byte (live or
//! tombstone), the version (8 bytes, big-endian) and the body. Tombstones stay, so a late older
//! write cannot resurrect a deleted item (docs/storage.md).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, ReadableTable, TableDefinition};

use super::{ApplyOutcome, ProductOffers, Store, StoreError, StoredProduct};
use crate::model::{Country, Offer, OfferKey, ProductId, Write};

const PRODUCTS: TableDefinition<&str, &[u8]> = TableDefinition::new("products");
const OFFERS: TableDefinition<&str, &[u8]> = TableDefinition::new("offers");

const LIVE: u8 = 1;
const TOMBSTONE: u8 = 0;
const HEADER: usize = 9;

/// The embedded store. Cheap to clone; all clones share one database file.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    path: PathBuf,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .finish()
    }
}

/// A decoded record: version, whether it is a tombstone, and the body bytes.
struct Record<'a> {
    version: u64,
    live: bool,
    body: &'a [u8],
}

fn decode<'a>(key: &str, raw: &'a [u8]) -> Result<Record<'a>, StoreError> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        key: key.to_owned(),
        reason: reason.to_owned(),
    };
    if raw.len() < HEADER {
        return Err(corrupt("record shorter than its header"));
    }
    let live = match raw[0] {
        LIVE => true,
        TOMBSTONE => false,
        _ => return Err(corrupt("unknown record tag")),
    };
    let mut v = [0u8; 8];
    v.copy_from_slice(&raw[1..HEADER]);
    Ok(Record {
        version: u64::from_be_bytes(v),
        live,
        body: &raw[HEADER..],
    })
}

fn encode(live: bool, version: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.push(if live { LIVE } else { TOMBSTONE });
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn offer_prefix(id: &ProductId, country: Country) -> String {
    format!("{id}\0{country}\0")
}

fn offer_key(key: &OfferKey) -> String {
    format!(
        "{}\0{}\0{}\0{}",
        key.product_id, key.country, key.merchant_id, key.sku
    )
}

fn backend(context: &str) -> impl Fn(redb::Error) -> StoreError + '_ {
    move |e| StoreError::backend(context, e)
}

impl EmbeddedStore {
    /// Opens (or creates) the database `prapi.redb` in `dir`, creating the directory.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::backend(format!("creating data dir {}", dir.display()), e))?;
        let path = dir.join("prapi.redb");
        let db = Database::create(&path)
            .map_err(|e| StoreError::backend(format!("opening {}", path.display()), e))?;
        // Create both tables up front so read transactions never see a missing table.
        let txn = db
            .begin_write()
            .map_err(|e| backend("begin write")(e.into()))?;
        {
            txn.open_table(PRODUCTS)
                .map_err(|e| backend("open products")(e.into()))?;
            txn.open_table(OFFERS)
                .map_err(|e| backend("open offers")(e.into()))?;
        }
        txn.commit().map_err(|e| backend("commit")(e.into()))?;
        Ok(Self {
            db: Arc::new(db),
            path,
        })
    }

    /// Where the database file lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs blocking redb work off the async runtime.
    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::backend("store task", e))?
    }

    fn read_product(db: &Database, id: &ProductId) -> Result<Option<StoredProduct>, StoreError> {
        let txn = db
            .begin_read()
            .map_err(|e| backend("begin read")(e.into()))?;
        let table = txn
            .open_table(PRODUCTS)
            .map_err(|e| backend("open products")(e.into()))?;
        let Some(raw) = table
            .get(id.as_str())
            .map_err(|e| backend("read product")(e.into()))?
        else {
            return Ok(None);
        };
        let rec = decode(id.as_str(), raw.value())?;
        Ok(rec.live.then(|| StoredProduct {
            version: rec.version,
            body: Bytes::copy_from_slice(rec.body),
        }))
    }

    fn read_offers(
        db: &Database,
        id: &ProductId,
        country: Country,
    ) -> Result<Vec<Offer>, StoreError> {
        let txn = db
            .begin_read()
            .map_err(|e| backend("begin read")(e.into()))?;
        let table = txn
            .open_table(OFFERS)
            .map_err(|e| backend("open offers")(e.into()))?;
        let prefix = offer_prefix(id, country);
        let mut offers = Vec::new();
        let range = table
            .range(prefix.as_str()..)
            .map_err(|e| backend("scan offers")(e.into()))?;
        for item in range {
            let (k, v) = item.map_err(|e| backend("scan offers")(e.into()))?;
            let key = k.value();
            if !key.starts_with(prefix.as_str()) {
                break;
            }
            let rec = decode(key, v.value())?;
            if rec.live {
                let offer =
                    Offer::decode_body(id, country, rec.body).map_err(|e| StoreError::Corrupt {
                        key: key.replace('\0', "/"),
                        reason: e.to_string(),
                    })?;
                offers.push(offer);
            }
        }
        // Keys sort by merchant then SKU already, but '\0' separators make that byte order, which is
        // the contract's order too; sort anyway so the contract does not hang on key encoding.
        Offer::sort(&mut offers);
        Ok(offers)
    }

    fn write_batch(db: &Database, writes: &[Write]) -> Result<ApplyOutcome, StoreError> {
        let txn = db
            .begin_write()
            .map_err(|e| backend("begin write")(e.into()))?;
        let mut outcome = ApplyOutcome::default();
        {
            let mut products = txn
                .open_table(PRODUCTS)
                .map_err(|e| backend("open products")(e.into()))?;
            let mut offers = txn
                .open_table(OFFERS)
                .map_err(|e| backend("open offers")(e.into()))?;
            for w in writes {
                let (table, key, live, body): (_, String, bool, Vec<u8>) = match w {
                    Write::Product { id, body, .. } => {
                        (&mut products, id.to_string(), true, body.to_vec())
                    }
                    Write::ProductDeleted { id, .. } => {
                        (&mut products, id.to_string(), false, Vec::new())
                    }
                    Write::Offer(o) => (&mut offers, offer_key(&o.key), true, o.encode_body()),
                    Write::OfferDeleted { key, .. } => {
                        (&mut offers, offer_key(key), false, Vec::new())
                    }
                };
                let stored = match table
                    .get(key.as_str())
                    .map_err(|e| backend("read for write")(e.into()))?
                {
                    Some(raw) => Some(decode(&key, raw.value())?.version),
                    None => None,
                };
                if stored.is_some_and(|v| v >= w.version()) {
                    outcome.stale += 1;
                    continue;
                }
                table
                    .insert(key.as_str(), encode(live, w.version(), &body).as_slice())
                    .map_err(|e| backend("write")(e.into()))?;
                outcome.applied += 1;
            }
        }
        txn.commit().map_err(|e| backend("commit")(e.into()))?;
        Ok(outcome)
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn product(&self, id: &ProductId) -> Result<Option<StoredProduct>, StoreError> {
        let id = id.clone();
        self.blocking(move |db| Self::read_product(db, &id)).await
    }

    async fn offers(&self, id: &ProductId, country: Country) -> Result<Vec<Offer>, StoreError> {
        let id = id.clone();
        self.blocking(move |db| Self::read_offers(db, &id, country))
            .await
    }

    async fn product_offers(
        &self,
        id: &ProductId,
        country: Country,
    ) -> Result<ProductOffers, StoreError> {
        let id = id.clone();
        self.blocking(move |db| {
            let product = Self::read_product(db, &id)?;
            let offers = if product.is_some() {
                Self::read_offers(db, &id, country)?
            } else {
                Vec::new()
            };
            Ok(ProductOffers { product, offers })
        })
        .await
    }

    async fn apply(&self, writes: &[Write]) -> Result<ApplyOutcome, StoreError> {
        if writes.is_empty() {
            return Ok(ApplyOutcome::default());
        }
        let writes = writes.to_vec();
        self.blocking(move |db| Self::write_batch(db, &writes))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Currency, MerchantId, Price};

    fn pid(s: &str) -> ProductId {
        ProductId::parse(s).expect("valid id")
    }

    fn de() -> Country {
        Country::parse("de").expect("country")
    }

    fn product(id: &str, version: u64, name: &str) -> Write {
        Write::Product {
            id: pid(id),
            version,
            body: Bytes::from(format!(
                r#"{{"id":"{id}","version":{version},"name":"{name}"}}"#
            )),
        }
    }

    fn okey(id: &str, country: Country, merchant: &str, sku: &str) -> OfferKey {
        OfferKey {
            product_id: pid(id),
            country,
            merchant_id: MerchantId::parse(merchant).expect("merchant"),
            sku: sku.into(),
        }
    }

    fn offer(id: &str, merchant: &str, sku: &str, version: u64, amount: i64) -> Write {
        Write::Offer(Offer {
            key: okey(id, de(), merchant, sku),
            version,
            price: Price {
                amount,
                currency: Currency::parse("EUR").expect("currency"),
            },
            stock: 1,
        })
    }

    async fn open() -> (tempfile::TempDir, EmbeddedStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        (dir, store)
    }

    async fn name_of(store: &EmbeddedStore, id: &str) -> Option<(u64, String)> {
        let p = store.product(&pid(id)).await.expect("read")?;
        let v: serde_json::Value = serde_json::from_slice(&p.body).expect("json");
        Some((p.version, v["name"].as_str().unwrap_or_default().to_owned()))
    }

    #[tokio::test]
    async fn newer_versions_win_regardless_of_arrival_order() {
        let (_d, s) = open().await;
        let out = s
            .apply(&[product("P1", 5, "five"), product("P1", 3, "three")])
            .await
            .expect("apply");
        assert_eq!(
            out,
            ApplyOutcome {
                applied: 1,
                stale: 1
            }
        );
        assert_eq!(name_of(&s, "P1").await, Some((5, "five".into())));
        // Equal version is a replay: ignored, not an overwrite.
        let out = s.apply(&[product("P1", 5, "other")]).await.expect("apply");
        assert_eq!(
            out,
            ApplyOutcome {
                applied: 0,
                stale: 1
            }
        );
        assert_eq!(name_of(&s, "P1").await, Some((5, "five".into())));
        s.apply(&[product("P1", 6, "six")]).await.expect("apply");
        assert_eq!(name_of(&s, "P1").await, Some((6, "six".into())));
    }

    #[tokio::test]
    async fn tombstones_block_older_writes_and_yield_to_newer() {
        let (_d, s) = open().await;
        s.apply(&[
            product("P1", 1, "one"),
            Write::ProductDeleted {
                id: pid("P1"),
                version: 4,
            },
        ])
        .await
        .expect("apply");
        assert_eq!(name_of(&s, "P1").await, None);
        let out = s.apply(&[product("P1", 3, "late")]).await.expect("apply");
        assert_eq!(
            out.stale, 1,
            "an older write must not resurrect a deleted product"
        );
        assert_eq!(name_of(&s, "P1").await, None);
        // A delete older than the live version is ignored too.
        s.apply(&[product("P1", 7, "back")]).await.expect("apply");
        s.apply(&[Write::ProductDeleted {
            id: pid("P1"),
            version: 6,
        }])
        .await
        .expect("apply");
        assert_eq!(name_of(&s, "P1").await, Some((7, "back".into())));
    }

    #[tokio::test]
    async fn offers_follow_the_same_rules_and_are_scoped_by_country_and_product() {
        let (_d, s) = open().await;
        let at = Country::parse("at").expect("at");
        let mut other_country = offer("P1", "m1", "S1", 1, 100);
        if let Write::Offer(o) = &mut other_country {
            o.key.country = at;
        }
        s.apply(&[
            product("P1", 1, "p"),
            offer("P1", "m2", "S1", 2, 200),
            offer("P1", "m1", "S2", 1, 110),
            offer("P1", "m1", "S1", 1, 100),
            offer("P1", "m1", "S1", 3, 130),
            offer("P10", "m1", "S1", 1, 999), // shares a key prefix with P1 as text
            other_country,
            Write::OfferDeleted {
                key: okey("P1", de(), "m2", "S1"),
                version: 5,
            },
            offer("P1", "m2", "S1", 4, 240), // older than the delete
        ])
        .await
        .expect("apply");
        let offers = s.offers(&pid("P1"), de()).await.expect("offers");
        let got: Vec<_> = offers
            .iter()
            .map(|o| {
                (
                    o.key.merchant_id.to_string(),
                    o.key.sku.clone(),
                    o.version,
                    o.price.amount,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("m1".into(), "S1".into(), 3, 130),
                ("m1".into(), "S2".into(), 1, 110)
            ]
        );
        assert_eq!(s.offers(&pid("P1"), at).await.expect("offers").len(), 1);
        let po = s.product_offers(&pid("P1"), de()).await.expect("po");
        assert_eq!(po.product.map(|p| p.version), Some(1));
        assert_eq!(po.offers, offers);
        let missing = s.product_offers(&pid("P2"), de()).await.expect("po");
        assert_eq!(missing, ProductOffers::default());
    }

    #[tokio::test]
    async fn data_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = EmbeddedStore::open(dir.path()).expect("open");
            s.apply(&[product("P1", 2, "kept")]).await.expect("apply");
        }
        let s = EmbeddedStore::open(dir.path()).expect("reopen");
        assert_eq!(name_of(&s, "P1").await, Some((2, "kept".into())));
    }

    #[test]
    fn corrupt_records_are_reported_not_served() {
        assert!(matches!(
            decode("k", b"\x01abc"),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            decode("k", b"\x07\0\0\0\0\0\0\0\x01"),
            Err(StoreError::Corrupt { .. })
        ));
        let raw = encode(true, 42, b"body");
        let rec = decode("k", &raw).expect("decode");
        assert_eq!((rec.version, rec.live, rec.body), (42, true, &b"body"[..]));
    }
}
