//! `prapi gen`: a deterministic, seeded sample catalogue of docs/events.md events as NDJSON.
//!
//! Every product is followed by its offers. Product `i` depends only on the seed and `i`, and its
//! offers in a country only on the seed, `i` and that country (each has its own ChaCha stream): a
//! smaller catalogue is a prefix of a larger one, and two market groups generating for different
//! countries get the same products and the same offers in the countries they share. Products look like real fashion products: about 1000 lines when pretty-printed and
//! 27–33 KB minified (within the 25–35 KB the benchmarks assume), with simples and sizes, media,
//! many attributes, long descriptions, localized texts, materials, a size chart and other nested
//! fields that the formats ignore and the API serves as-is. Offers come from 1–4 merchants per
//! country, in the country's currency; about one in five has stock 0.

use std::collections::VecDeque;
use std::io::{self, Write};

use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::model::Country;

mod words;

use words::*;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenConfig {
    /// Number of products.
    pub products: usize,
    /// Countries offers are generated for (products are country-less and go to every group).
    pub countries: Vec<Country>,
    /// Seed: the same config always gives the same bytes.
    pub seed: u64,
}

impl GenConfig {
    /// The product ids of this catalogue, in the order of its events, without generating them.
    pub fn product_ids(&self) -> Vec<String> {
        (0..self.products)
            .map(|i| identity(self.seed, i).id)
            .collect()
    }

    /// The events of this catalogue, one NDJSON line (without the newline) per item.
    pub fn events(&self) -> Events {
        let mut cfg = self.clone();
        // A country listed twice would repeat its offers; keep the first.
        let mut seen = Vec::with_capacity(cfg.countries.len());
        cfg.countries.retain(|c| {
            let first = !seen.contains(c);
            seen.push(*c);
            first
        });
        Events {
            cfg,
            next_product: 0,
            pending: VecDeque::new(),
        }
    }
}

/// What [`write_ndjson`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GenStats {
    /// Product events.
    pub products: u64,
    /// Offer events.
    pub offers: u64,
    /// Lines (events) in all.
    pub lines: u64,
    /// Bytes written, newlines included.
    pub bytes: u64,
}

/// Writes the catalogue as NDJSON (one event per line, `\n`-terminated) and says what it wrote.
pub fn write_ndjson(cfg: &GenConfig, out: impl Write) -> io::Result<GenStats> {
    // Stdout is line-buffered: without this, every event would be its own write(2).
    let mut out = io::BufWriter::with_capacity(1 << 16, out);
    let mut stats = GenStats::default();
    for line in cfg.events() {
        out.write_all(&line)?;
        out.write_all(b"\n")?;
        if line.starts_with(PRODUCT_PREFIX) {
            stats.products += 1;
        } else {
            stats.offers += 1;
        }
        stats.lines += 1;
        stats.bytes += line.len() as u64 + 1;
    }
    out.flush()?;
    Ok(stats)
}

const PRODUCT_PREFIX: &[u8] = br#"{"type":"product""#;

/// Iterator over the NDJSON lines of a catalogue (see [`GenConfig::events`]). Each item is one
/// JSON event without the trailing newline, parseable by [`crate::model::Event::parse`].
#[derive(Debug)]
pub struct Events {
    cfg: GenConfig,
    next_product: usize,
    pending: VecDeque<Vec<u8>>,
}

impl Iterator for Events {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        if self.pending.is_empty() && self.next_product < self.cfg.products {
            let i = self.next_product;
            self.next_product += 1;
            let product = generate(self.cfg.seed, i, &self.cfg.countries);
            self.pending.push_back(product.event);
            self.pending.extend(product.offers);
        }
        self.pending.pop_front()
    }
}

/// One generated product: its event line and its offer lines.
struct Generated {
    event: Vec<u8>,
    offers: Vec<Vec<u8>>,
}

/// The product document size the generator aims at, in bytes of minified JSON.
const TARGET_BYTES: std::ops::RangeInclusive<usize> = 27_000..=33_000;
/// The pretty-printed line count it aims at.
const TARGET_LINES: std::ops::RangeInclusive<usize> = 970..=1030;

/// The first draws of a product's random stream, which its id is made of, and the stream to
/// go on with.
struct Identity {
    rng: ChaCha8Rng,
    brand: Brand,
    kind: Kind,
    color: ColorDef,
    id: String,
}

fn identity(seed: u64, index: usize) -> Identity {
    let mut rng = rng_for(seed, *b"product\0", index);
    let brand = *BRANDS.choose(&mut rng).unwrap_or(&BRANDS[0]);
    let kind = *KINDS.choose(&mut rng).unwrap_or(&KINDS[0]);
    let color = *COLORS.choose(&mut rng).unwrap_or(&COLORS[0]);
    let id = format!("{}{:06}-{}", brand.code, index, color.code);
    Identity {
        rng,
        brand,
        kind,
        color,
        id,
    }
}

fn generate(seed: u64, index: usize, countries: &[Country]) -> Generated {
    let Identity {
        mut rng,
        brand,
        kind,
        color,
        id,
    } = identity(seed, index);
    let version: u64 = rng.random_range(1..=40);
    // Whole euros; merchants and countries derive their prices from it.
    let base_price: i64 = rng.random_range(9..300);
    let mut doc = product_document(&mut rng, &id, brand, kind, color);

    // The document without its long texts is well under the byte target; the texts fill it up.
    let target = rng.random_range(TARGET_BYTES);
    let without_texts = serde_json::to_vec(&doc).map(|v| v.len()).unwrap_or(0);
    fill_texts(&mut rng, &mut doc, target.saturating_sub(without_texts));

    let skus: Vec<&str> = doc["simples"]
        .as_array()
        .map(|s| s.iter().filter_map(|s| s["sku"].as_str()).collect())
        .unwrap_or_default();
    let mut offers = Vec::new();
    for country in countries {
        let mut rng = rng_for(seed, country_domain(*country), index);
        offer_lines(&mut rng, &id, &skus, base_price, *country, &mut offers);
    }

    let event = json!({"type": "product", "id": id, "version": version, "product": doc});
    Generated {
        event: serde_json::to_vec(&event).unwrap_or_default(),
        offers,
    }
}

/// An independent random stream per (seed, domain, product): the product is the same whatever the
/// countries, and a country's offers are the same whatever the other countries.
fn rng_for(seed: u64, domain: [u8; 8], index: usize) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&domain);
    let mut rng = ChaCha8Rng::from_seed(key);
    rng.set_stream(index as u64);
    rng
}

fn country_domain(country: Country) -> [u8; 8] {
    let mut domain = *b"offers\0\0";
    domain[6..].copy_from_slice(country.as_str().as_bytes().get(..2).unwrap_or(b"??"));
    domain
}

/// Everything but the long texts, with placeholders for them, sized to [`TARGET_LINES`].
fn product_document(
    rng: &mut ChaCha8Rng,
    id: &str,
    brand: Brand,
    kind: Kind,
    color: ColorDef,
) -> Value {
    let model = MODELS.choose(rng).unwrap_or(&MODELS[0]);
    let suffix = kind.suffixes.choose(rng).unwrap_or(&"");
    let name = [*model, kind.noun, *suffix]
        .iter()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ");

    let size_count = rng.random_range(kind.sizes.len().min(6)..=kind.sizes.len());
    let first = rng.random_range(0..=kind.sizes.len() - size_count);
    let sizes = &kind.sizes[first..first + size_count];
    let simples: Vec<Value> = sizes
        .iter()
        .enumerate()
        .map(|(k, size)| {
            json!({
                "sku": format!("{id}{:04}", 1000 + k),
                "size": size,
                "ean": ean(rng),
                "supplier_size": format!("{}{}", kind.size_system, size),
                "weight_grams": rng.random_range(150..1400),
                "dimensions_mm": {"length": rng.random_range(200..400), "width": rng.random_range(90..200), "height": rng.random_range(40..150)},
                "warehouse_codes": [format!("WH-{:02}", rng.random_range(1..30)), format!("WH-{:02}", rng.random_range(30..60))],
            })
        })
        .collect();

    let media: Vec<Value> = (0..rng.random_range(5..=9))
        .map(|k| {
            let role = MEDIA_ROLES[k % MEDIA_ROLES.len()];
            json!({
                "url": format!("https://img.example/{}/{role}-{k}.{}", id.to_lowercase(), if role == "video" { "mp4" } else { "jpg" }),
                "type": if role == "video" { "video" } else { "image" },
                "role": role,
                "width": 1800,
                "height": 2600,
                "alt": format!("{} {} – {}", brand.name, name, role),
            })
        })
        .collect();

    let size_chart: Vec<Value> = sizes
        .iter()
        .map(|size| {
            json!({
                "size": size,
                "length_mm": rng.random_range(220..320),
                "width_mm": rng.random_range(85..120),
                "uk": format!("{}", rng.random_range(3..13)),
                "us": format!("{}", rng.random_range(4..14)),
            })
        })
        .collect();

    let materials: Vec<Value> = kind
        .components
        .iter()
        .map(|component| {
            let first: u32 = rng.random_range(40..=100);
            let mut composition = vec![json!({"material": MATERIALS.choose(rng).unwrap_or(&"cotton"), "percentage": first})];
            if first < 100 {
                composition.push(json!({"material": MATERIALS.choose(rng).unwrap_or(&"polyester"), "percentage": 100 - first}));
            }
            json!({"component": component, "composition": composition})
        })
        .collect();

    let localized: Map<String, Value> = LOCALES
        .iter()
        .map(|l| {
            (
                l.locale.to_owned(),
                json!({
                    "name": format!("{} {} {}", brand.name, model, l.noun(kind)),
                    "description": "",
                    "bullet_points": [l.bullets[0], format!("{}: {}", l.material_word, MATERIALS.choose(rng).unwrap_or(&"cotton"))],
                }),
            )
        })
        .collect();

    let mut doc = json!({
        "id": id,
        "name": name,
        "brand": {"code": brand.code, "name": brand.name, "logo": format!("https://img.example/brands/{}.png", brand.code.to_lowercase())},
        "category": {"code": kind.category_code, "path": kind.path},
        "silhouette": kind.silhouette,
        "season": format!("{}{}", ["FS", "HW"].choose(rng).unwrap_or(&"FS"), rng.random_range(22..27)),
        "gender": kind.gender,
        "color": {"name": color.name, "family": color.family, "hex": color.hex, "code": color.code},
        "short_description": "",
        "description": "",
        "simples": simples,
        "media": media,
        "attributes": [],
        "materials": materials,
        "care_instructions": CARE.choose_multiple(rng, 4).collect::<Vec<_>>(),
        "size_chart": {"system": kind.size_system, "rows": size_chart},
        "localized": localized,
        "sustainability": {
            "certifications": CERTIFICATIONS.choose_multiple(rng, 2).collect::<Vec<_>>(),
            "recycled_share_percent": rng.random_range(0..60),
            "score": rng.random_range(1..=5),
        },
        "delivery": {"free_shipping": rng.random_bool(0.7), "days": {"min": 1, "max": rng.random_range(2..6)}, "returnable_days": 100},
        "related_products": (0..4).map(|_| format!("{}{:06}-{}", BRANDS.choose(rng).map_or("XX1", |b| b.code), rng.random_range(0..1_000_000), COLORS.choose(rng).map_or("A11", |c| c.code))).collect::<Vec<_>>(),
        "tags": TAGS.choose_multiple(rng, 5).collect::<Vec<_>>(),
        "family": [{
            "id": id,
            "color": color.name,
            "image": format!("https://img.example/{}/packshot-0.jpg", id.to_lowercase()),
            "is_current": true,
        }],
        "created_at": format!("20{}-{:02}-{:02}T{:02}:{:02}:00Z", rng.random_range(20..26), rng.random_range(1..13), rng.random_range(1..29), rng.random_range(0..24), rng.random_range(0..60)),
    });
    grow_to_line_target(rng, &mut doc, id, color);
    doc
}

/// Grows the document to its line target the way real documents are long: with many attributes,
/// then colour variants of the same model, then more bullet points per locale. Each step only
/// adds what still fits, so the count lands within a few lines under the target.
fn grow_to_line_target(rng: &mut ChaCha8Rng, doc: &mut Value, id: &str, color: ColorDef) {
    let target = rng.random_range(TARGET_LINES);
    let mut lines = pretty_lines(doc);

    let mut keys: Vec<&(&str, &[&str])> = ATTRIBUTES.iter().collect();
    keys.shuffle(rng);
    // `{`, key, `"values": [`, values, `]`, `}`: five lines plus one per value; the first entry
    // also turns `"attributes": []` into two lines.
    let mut attributes = vec![json!({"key": "color", "values": [color.name, color.family]})];
    lines += 8;
    for (key, pool) in keys {
        let count = rng.random_range(1..=pool.len().min(5));
        let cost = 5 + count;
        if lines + cost > target {
            continue;
        }
        let values: Vec<&str> = pool.choose_multiple(rng, count).copied().collect();
        attributes.push(json!({"key": key, "values": values}));
        lines += cost;
    }
    if let Some(slot) = doc.get_mut("attributes") {
        *slot = Value::Array(attributes);
    }

    // Colour variants: `{`, four fields, `}`.
    let base = id.rsplit_once('-').map_or(id, |(b, _)| b);
    if let Some(Value::Array(family)) = doc.get_mut("family") {
        for other in COLORS.iter().filter(|c| c.code != color.code) {
            if lines + 6 > target {
                break;
            }
            family.push(json!({
                "id": format!("{base}-{}", other.code),
                "color": other.name,
                "image": format!("https://img.example/{}/packshot-0.jpg", format!("{base}-{}", other.code).to_lowercase()),
                "is_current": false,
            }));
            lines += 6;
        }
    }

    // Bullet points, one line each, round-robin over the locales.
    'bullets: for round in 1..LOCALES[0].bullets.len() {
        for l in &LOCALES {
            if lines >= target {
                break 'bullets;
            }
            if let Some(Value::Array(bullets)) =
                doc.pointer_mut(&format!("/localized/{}/bullet_points", l.locale))
            {
                bullets.push(Value::String(l.bullets[round].to_owned()));
                lines += 1;
            }
        }
    }
}

/// Lines of `serde_json::to_string_pretty` output: scalars and empty containers take one line,
/// other containers an opening and a closing line around their children.
pub(crate) fn pretty_lines(v: &Value) -> usize {
    match v {
        Value::Array(a) if !a.is_empty() => 2 + a.iter().map(pretty_lines).sum::<usize>(),
        Value::Object(o) if !o.is_empty() => 2 + o.values().map(pretty_lines).sum::<usize>(),
        _ => 1,
    }
}

/// Fills the text placeholders with about `budget` bytes: a third to the description, the rest to
/// the localized descriptions and the short description.
fn fill_texts(rng: &mut ChaCha8Rng, doc: &mut Value, budget: usize) {
    let short = budget.min(300);
    let main = budget.saturating_sub(short) / 3;
    let per_locale = budget.saturating_sub(short + main) / LOCALES.len();
    if let Some(slot) = doc.get_mut("short_description") {
        *slot = Value::String(text(rng, ENGLISH, short));
    }
    if let Some(slot) = doc.get_mut("description") {
        *slot = Value::String(text(rng, ENGLISH, main));
    }
    for l in LOCALES {
        if let Some(slot) = doc.pointer_mut(&format!("/localized/{}/description", l.locale)) {
            *slot = Value::String(text(rng, l.words, per_locale));
        }
    }
}

/// Sentences from `words`, at most `bytes` long (UTF-8), cut at a word.
fn text(rng: &mut ChaCha8Rng, words: &[&str], bytes: usize) -> String {
    let mut out = String::with_capacity(bytes + 32);
    let mut sentence_left = 0;
    loop {
        let word = words.choose(rng).copied().unwrap_or("and");
        let capitalize = sentence_left == 0;
        if capitalize {
            sentence_left = rng.random_range(8..20);
        }
        sentence_left -= 1;
        let end = if sentence_left == 0 { "." } else { "" };
        let sep = if out.is_empty() { "" } else { " " };
        if out.len() + sep.len() + word.len() + end.len() > bytes {
            return out;
        }
        out.push_str(sep);
        if capitalize {
            let mut chars = word.chars();
            if let Some(c) = chars.next() {
                out.extend(c.to_uppercase());
                out.push_str(chars.as_str());
            }
        } else {
            out.push_str(word);
        }
        out.push_str(end);
    }
}

fn ean(rng: &mut ChaCha8Rng) -> String {
    format!("40{:011}", rng.random_range(0..100_000_000_000u64))
}

#[derive(Serialize)]
struct OfferEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    product_id: &'a str,
    merchant_id: &'a str,
    country: &'a str,
    sku: &'a str,
    version: u64,
    price: OfferPrice<'a>,
    stock: u64,
}

#[derive(Serialize)]
struct OfferPrice<'a> {
    amount: i64,
    currency: &'a str,
}

/// Offers of the product in one country: 1–4 merchants, each carrying most sizes at its own price.
fn offer_lines(
    rng: &mut ChaCha8Rng,
    id: &str,
    skus: &[&str],
    base_price: i64,
    country: Country,
    lines: &mut Vec<Vec<u8>>,
) {
    let (currency, rate_percent) = currency_of(country);
    let merchant_count = rng.random_range(1..=4);
    let merchants: Vec<&str> = MERCHANTS
        .choose_multiple(rng, merchant_count)
        .copied()
        .collect();
    for merchant in merchants {
        // Merchants differ by up to ±15 %; the rate converts to the local currency; shop prices
        // end in .95 or .99.
        let factor = rng.random_range(85..=115);
        let units = (base_price * factor * rate_percent / 10_000).max(1);
        let amount = (units - 1) * 100 + if rng.random_bool(0.5) { 95 } else { 99 };
        for sku in skus {
            if !rng.random_bool(0.8) {
                continue;
            }
            let stock = if rng.random_bool(0.2) {
                0
            } else {
                rng.random_range(1..=40)
            };
            let event = OfferEvent {
                kind: "offer",
                product_id: id,
                merchant_id: merchant,
                country: country.as_str(),
                sku,
                version: rng.random_range(1..=500),
                price: OfferPrice { amount, currency },
                stock,
            };
            lines.push(serde_json::to_vec(&event).unwrap_or_default());
        }
    }
}

/// Currency of a country and its rough rate to the euro, in percent.
fn currency_of(country: Country) -> (&'static str, i64) {
    match country.as_str() {
        "ch" | "li" => ("CHF", 95),
        "gb" => ("GBP", 85),
        "pl" => ("PLN", 430),
        "cz" => ("CZK", 2500),
        "se" => ("SEK", 1150),
        "dk" => ("DKK", 745),
        "no" => ("NOK", 1170),
        "hu" => ("HUF", 39000),
        "ro" => ("RON", 500),
        "us" => ("USD", 108),
        _ => ("EUR", 100),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Event, Write as StoreWrite};

    fn cfg(products: usize, countries: &str, seed: u64) -> GenConfig {
        GenConfig {
            products,
            countries: Country::parse_list(countries).expect("countries"),
            seed,
        }
    }

    fn catalogue(cfg: &GenConfig) -> (Vec<u8>, GenStats) {
        let mut out = Vec::new();
        let stats = write_ndjson(cfg, &mut out).expect("writing to a Vec cannot fail");
        (out, stats)
    }

    #[test]
    fn product_ids_are_those_of_the_product_events() {
        let cfg = cfg(40, "de,at", 3);
        let from_events: Vec<String> = cfg
            .events()
            .filter_map(|l| match crate::model::Event::parse(&l) {
                Ok(crate::model::Event::Product { id, .. }) => Some(id.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(cfg.product_ids(), from_events);
    }

    #[test]
    fn same_seed_same_bytes_different_seed_different_bytes() {
        let (a, _) = catalogue(&cfg(5, "de,at", 7));
        let (b, _) = catalogue(&cfg(5, "de,at", 7));
        let (c, _) = catalogue(&cfg(5, "de,at", 8));
        assert_eq!(a, b);
        assert_ne!(a, c);
        // Every product differs between the seeds, not only some.
        let products = |bytes: &[u8]| -> Vec<Vec<u8>> {
            bytes
                .split(|b| *b == b'\n')
                .filter(|l| l.starts_with(PRODUCT_PREFIX))
                .map(<[u8]>::to_vec)
                .collect()
        };
        for (x, y) in products(&a).iter().zip(products(&c)) {
            assert_ne!(*x, y);
        }
    }

    #[test]
    fn a_smaller_catalogue_is_a_prefix_of_a_larger_one() {
        let (small, _) = catalogue(&cfg(3, "de", 1));
        let (large, _) = catalogue(&cfg(6, "de", 1));
        assert!(large.starts_with(&small));
        assert!(large.len() > small.len());
    }

    #[test]
    fn products_and_a_countrys_offers_do_not_depend_on_the_other_countries() {
        let lines = |countries: &str| -> Vec<Vec<u8>> { cfg(4, countries, 5).events().collect() };
        let de = lines("de");
        let at_de_ch = lines("at,de,ch");
        let pick = |all: &[Vec<u8>], keep: &dyn Fn(&[u8]) -> bool| -> Vec<Vec<u8>> {
            all.iter().filter(|l| keep(l)).cloned().collect()
        };
        let is_product = |l: &[u8]| l.starts_with(PRODUCT_PREFIX);
        let in_de = |l: &[u8]| l.windows(14).any(|w| w == br#""country":"de""#);
        assert_eq!(pick(&de, &is_product), pick(&at_de_ch, &is_product));
        assert_eq!(pick(&de, &in_de), pick(&at_de_ch, &in_de));
        assert!(pick(&at_de_ch, &in_de).len() < at_de_ch.len() - 4);
        // Listing a country twice does not repeat its offers.
        let twice = GenConfig {
            products: 4,
            countries: vec![Country::parse("de").expect("de"); 2],
            seed: 5,
        };
        assert_eq!(twice.events().collect::<Vec<_>>(), de);
    }

    #[test]
    fn every_line_parses_and_stats_count_them() {
        let cfg = cfg(20, "de,at,ch,pl", 42);
        let (bytes, stats) = catalogue(&cfg);
        assert_eq!(stats.bytes, bytes.len() as u64);
        assert!(bytes.ends_with(b"\n"));
        let lines: Vec<&[u8]> = bytes
            .strip_suffix(b"\n")
            .unwrap_or(&bytes)
            .split(|b| *b == b'\n')
            .collect();
        assert_eq!(lines.len() as u64, stats.lines);
        assert_eq!(stats.products + stats.offers, stats.lines);
        assert_eq!(stats.products, 20);

        let mut products = 0;
        let mut offers = Vec::new();
        let mut current = None;
        for line in lines {
            match Event::parse(line)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(line)))
            {
                Event::Product { id, document, .. } => {
                    products += 1;
                    current = Some((id, document));
                }
                Event::Offer(o) => {
                    // Offers follow their product and name one of its simples.
                    let (id, document) = current.as_ref().expect("an offer after its product");
                    assert_eq!(&o.key.product_id, id);
                    let skus: Vec<&str> = document["simples"]
                        .as_array()
                        .expect("simples")
                        .iter()
                        .filter_map(|s| s["sku"].as_str())
                        .collect();
                    assert!(
                        skus.contains(&o.key.sku.as_str()),
                        "{} is no simple",
                        o.key.sku
                    );
                    offers.push(o);
                }
                other => panic!("unexpected event {other:?}"),
            }
        }
        assert_eq!(products, 20);
        assert_eq!(offers.len() as u64, stats.offers);

        // Offers cover every country, several merchants, and some are out of stock.
        for c in &cfg.countries {
            assert!(
                offers.iter().any(|o| o.key.country == *c),
                "no offer in {c}"
            );
        }
        let merchants: std::collections::HashSet<_> =
            offers.iter().map(|o| o.key.merchant_id.as_str()).collect();
        assert!(merchants.len() >= 4, "{merchants:?}");
        let sold_out = offers.iter().filter(|o| o.stock == 0).count();
        assert!(
            sold_out > 0 && sold_out < offers.len() / 2,
            "{sold_out} of {}",
            offers.len()
        );
        assert!(offers.iter().any(|o| o.price.currency.as_str() == "CHF"));
        assert!(offers.iter().any(|o| o.price.currency.as_str() == "PLN"));
        assert!(offers.iter().all(|o| o.price.amount > 0));
    }

    #[test]
    fn products_are_realistically_sized() {
        for line in cfg(40, "de", 3)
            .events()
            .filter(|l| l.starts_with(PRODUCT_PREFIX))
        {
            let event = Event::parse(&line).expect("parses");
            let Event::Product { ref document, .. } = event else {
                panic!("not a product")
            };
            let pretty = serde_json::to_string_pretty(document).expect("pretty");
            let lines = pretty.lines().count();
            assert_eq!(
                lines,
                pretty_lines(&serde_json::Value::Object(document.clone()))
            );
            assert!((950..=1050).contains(&lines), "{lines} lines");

            let StoreWrite::Product { body, .. } = event.into_write() else {
                panic!("not a product write")
            };
            assert!(
                (25_000..=35_000).contains(&body.len()),
                "{} bytes",
                body.len()
            );

            // The fields the formats read are all there.
            let doc = crate::model::ProductDoc::from_slice(&body).expect("a product document");
            assert!(
                !doc.name.is_empty() && !doc.brand.name.is_empty() && !doc.brand.code.is_empty()
            );
            assert!(doc.simples.len() >= 6 && doc.simples.iter().all(|s| !s.size.is_empty()));
            assert!(
                doc.media.len() >= 5 && doc.media.iter().all(|m| m.url.starts_with("https://"))
            );
            assert!(
                doc.attributes.len() >= 40,
                "{} attributes",
                doc.attributes.len()
            );
        }
    }

    #[test]
    fn write_errors_are_returned() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let err = write_ndjson(&cfg(2, "de", 1), Full).expect_err("the writer fails");
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
    }

    #[test]
    fn pretty_lines_counts_like_serde_json() {
        for v in [
            json!(1),
            json!([]),
            json!({}),
            json!([1, [2, []], {"a": {}}]),
            json!({"a": [1, 2], "b": {"c": null}, "d": "x"}),
        ] {
            let pretty = serde_json::to_string_pretty(&v).expect("pretty");
            assert_eq!(pretty_lines(&v), pretty.lines().count(), "{pretty}");
        }
    }

    #[test]
    fn no_countries_means_products_only_and_zero_products_means_nothing() {
        let (bytes, stats) = catalogue(&GenConfig {
            products: 2,
            countries: vec![],
            seed: 1,
        });
        assert_eq!((stats.products, stats.offers), (2, 0));
        assert_eq!(bytes.iter().filter(|b| **b == b'\n').count(), 2);
        let (bytes, stats) = catalogue(&cfg(0, "de", 1));
        assert!(bytes.is_empty());
        assert_eq!(stats, GenStats::default());
    }

    #[test]
    fn text_respects_its_byte_budget() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for budget in [0, 1, 10, 100, 5_000] {
            for words in [ENGLISH, LOCALES[5].words] {
                let t = text(&mut rng, words, budget);
                assert!(t.len() <= budget);
                assert!(
                    budget < 40 || t.len() + 40 > budget,
                    "{} of {budget}",
                    t.len()
                );
            }
        }
    }
}
