//! The event schemas (docs/schemas/*.json) pinned to the parser (`Event::parse`), which is what
//! the updater and `prapi local` actually accept:
//!
//! - every schema-valid sample parses (generated catalogues, hand-written edge cases, and random
//!   mutations of valid events);
//! - every sample the parser refuses is schema-invalid too, except for the differences that
//!   docs/events.md documents ("Where the schemas and the parser differ"), each recognised here by
//!   a function named after it and checked to be real (schema-valid, refused by the parser);
//! - the country and sku rules are checked exhaustively against the parser's own functions.

use std::collections::BTreeMap;

use jsonschema::{Draft, Registry, Validator};
use prapi::r#gen::GenConfig;
use prapi::model::{Country, Event, OfferKey};
use proptest::prelude::*;
use serde_json::{Value, json};

const BASE: &str = "https://prapi.dev/schemas/";

/// Every schema file of docs/schemas, by file name.
fn schema_files() -> BTreeMap<String, Value> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/schemas");
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("docs/schemas") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&path).expect("read schema");
            let value: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                value["$id"],
                format!("{BASE}{name}"),
                "{name}: $id must name the file"
            );
            out.insert(name, value);
        }
    }
    out
}

/// A validator for `schema`, with every file of docs/schemas resolvable by its `$id`.
fn validator(schema: &Value) -> Validator {
    let files = schema_files();
    let registry = Registry::new()
        .extend(
            files
                .iter()
                .map(|(name, v)| (format!("{BASE}{name}"), v.clone())),
        )
        .expect("schema URIs")
        .prepare()
        .expect("schema registry");
    jsonschema::options()
        .with_draft(Draft::Draft202012)
        .with_registry(&registry)
        .build(schema)
        .unwrap_or_else(|e| panic!("schema does not compile: {e}"))
}

fn event_validator() -> Validator {
    validator(&json!({"$ref": format!("{BASE}event.json")}))
}

fn def(name: &str) -> Validator {
    validator(&json!({"$ref": format!("{BASE}common.json#/$defs/{name}")}))
}

fn parses(v: &Value) -> bool {
    Event::parse(v.to_string().as_bytes()).is_ok()
}

// The documented differences (docs/events.md, "Where the schemas and the parser differ").

/// A number the schema takes for an integer but written with a fraction or exponent (`3.0`):
/// JSON Schema cannot tell `3.0` from `3`; the parser wants an integer literal.
fn integral_float(v: &Value) -> bool {
    let is_float = |x: &Value| x.is_f64() && x.as_f64().is_some_and(|f| f.fract() == 0.0);
    is_float(&v["version"]) || is_float(&v["stock"]) || is_float(&v["price"]["amount"])
}

/// `product.id` present, valid, and different from the event's `id`: the schema cannot compare
/// two fields.
fn product_id_differs(v: &Value) -> bool {
    v["type"] == "product" && v["product"]["id"].is_string() && v["product"]["id"] != v["id"]
}

/// A product document larger than the store holds: JSON Schema cannot bound a document's size.
fn product_too_large(v: &Value) -> bool {
    v["type"] == "product" && v["product"].to_string().len() > prapi::model::MAX_PRODUCT_BYTES
}

fn documented_difference(v: &Value) -> bool {
    integral_float(v) || product_id_differs(v) || product_too_large(v)
}

fn catalogue() -> Vec<Value> {
    let cfg = GenConfig {
        products: 150,
        countries: Country::parse_list("de,at,ch,fr").expect("countries"),
        seed: 21,
    };
    cfg.events()
        .map(|line| serde_json::from_slice(&line).expect("generated JSON"))
        .collect()
}

fn offer() -> Value {
    json!({"type":"offer","product_id":"P1","merchant_id":"m1","country":"de","sku":"P1-40",
           "version":5,"price":{"amount":5995,"currency":"EUR"},"stock":3})
}

fn with(mut v: Value, pointer: &str, value: Value) -> Value {
    *v.pointer_mut(pointer)
        .unwrap_or_else(|| panic!("no {pointer}")) = value;
    v
}

fn without(mut v: Value, field: &str) -> Value {
    v.as_object_mut().expect("object").remove(field);
    v
}

#[test]
fn every_schema_file_compiles_and_its_examples_are_valid_events() {
    let files = schema_files();
    for name in [
        "common.json",
        "event.json",
        "product.json",
        "product_deleted.json",
        "offer.json",
        "offer_deleted.json",
    ] {
        assert!(files.contains_key(name), "docs/schemas/{name}");
    }
    let events = event_validator();
    for (name, schema) in &files {
        let own = validator(schema);
        for example in schema["examples"].as_array().into_iter().flatten() {
            assert!(own.is_valid(example), "{name}: example {example}");
            assert!(
                events.is_valid(example) && parses(example),
                "{name}: example {example}"
            );
        }
    }
}

#[test]
fn valid_samples_are_schema_valid_and_parse() {
    let events = event_validator();
    let mut samples = catalogue();
    let p = json!({"type":"product","id":"P1","version":3,"product":{"name":"Air"}});
    samples.extend([
        p.clone(),
        with(p.clone(), "/product", json!({})),
        with(
            p.clone(),
            "/product",
            json!({"id":"P1","version":99,"extra":{"x":[1,null]}}),
        ),
        with(p.clone(), "/version", json!(prapi::model::MAX_VERSION)),
        with(p.clone(), "/id", json!("x".repeat(64))),
        with(p.clone(), "/id", json!("A.b_c-9")),
        json!({"type":"product_deleted","id":"P1","version":0}),
        offer(),
        with(offer(), "/country", json!("DE")),
        with(offer(), "/country", json!("aT")),
        with(offer(), "/price/currency", json!("chf")),
        with(offer(), "/price/amount", json!(i64::MAX)),
        with(offer(), "/stock", json!(0)),
        with(offer(), "/sku", json!("x".repeat(128))),
        with(offer(), "/sku", json!("Größe 42 ½")),
        {
            let mut o = offer();
            o["future_field"] = json!({"not": "known yet"});
            o
        },
        without(
            without(with(offer(), "/type", json!("offer_deleted")), "price"),
            "stock",
        ),
    ]);
    for s in &samples {
        assert!(events.is_valid(s), "schema refuses a valid event: {s}");
        assert!(parses(s), "parser refuses a schema-valid event: {s}");
    }
}

#[test]
fn invalid_samples_are_refused_by_both_or_the_difference_is_documented() {
    let events = event_validator();
    let p = json!({"type":"product","id":"P1","version":3,"product":{"name":"Air"}});
    let samples = [
        json!("not an object"),
        json!([1]),
        json!({"id":"P1"}),
        with(p.clone(), "/type", json!("nope")),
        with(p.clone(), "/type", json!(1)),
        without(p.clone(), "id"),
        without(p.clone(), "version"),
        without(p.clone(), "product"),
        with(p.clone(), "/id", json!("P 1")),
        with(p.clone(), "/id", json!("")),
        with(p.clone(), "/id", json!("x".repeat(65))),
        with(p.clone(), "/id", json!(7)),
        with(p.clone(), "/version", json!(-1)),
        with(p.clone(), "/version", json!(1.5)),
        with(p.clone(), "/version", json!("3")),
        with(p.clone(), "/version", json!(prapi::model::MAX_VERSION + 1)),
        with(p.clone(), "/version", json!(u64::MAX)),
        with(p.clone(), "/product", json!([])),
        with(p.clone(), "/product", json!({"id": 5})),
        with(offer(), "/country", json!("xx")),
        with(offer(), "/country", json!("deu")),
        with(offer(), "/merchant_id", json!("m/1")),
        with(offer(), "/sku", json!("")),
        with(offer(), "/sku", json!("a\u{7}b")),
        with(offer(), "/sku", json!("x".repeat(129))),
        with(offer(), "/stock", json!(-1)),
        with(offer(), "/price", json!(5995)),
        with(offer(), "/price/amount", json!(-5)),
        with(offer(), "/price/amount", json!(5.5)),
        with(offer(), "/price/currency", json!("EURO")),
        without(offer(), "price"),
        without(offer(), "sku"),
        with(offer(), "/product_id", json!("P1/2")),
        // The documented differences: schema-valid, refused by the parser.
        with(
            p.clone(),
            "/product",
            json!({"name": "x".repeat(prapi::model::MAX_PRODUCT_BYTES)}),
        ),
        with(p.clone(), "/version", json!(3.0)),
        with(offer(), "/stock", json!(1e1)),
        with(offer(), "/price/amount", json!(100.0)),
        with(p.clone(), "/product", json!({"id":"P2"})),
    ];
    let mut differences = 0;
    for s in &samples {
        assert!(!parses(s), "the parser accepts {s}");
        if documented_difference(s) {
            assert!(events.is_valid(s), "documented as schema-valid: {s}");
            differences += 1;
        } else {
            assert!(
                !events.is_valid(s),
                "schema accepts what the parser refuses: {s}"
            );
        }
    }
    assert_eq!(differences, 5);
}

/// The schema is stricter than the parser in one documented way: the product fields the legacy
/// formats read must have their types (the parser stores any object; those formats then answer
/// 500 for that product).
#[test]
fn the_schema_types_the_fields_the_formats_read() {
    let events = event_validator();
    let p = json!({"type":"product","id":"P1","version":3,"product":{"name":"Air"}});
    for bad in [
        json!({"name": 5}),
        json!({"brand": "Nike"}),
        json!({"simples": [{"sku": 1}]}),
        json!({"media": {"url": "x"}}),
        json!({"attributes": [{"key": "c", "values": "red"}]}),
    ] {
        let s = with(p.clone(), "/product", bad);
        assert!(parses(&s) && !events.is_valid(&s), "{s}");
    }
}

#[test]
fn the_country_rule_is_the_parsers_for_every_two_letter_code() {
    let country = def("country");
    let letters: Vec<char> = ('a'..='z').chain('A'..='Z').collect();
    let mut valid = 0;
    for a in &letters {
        for b in &letters {
            let code = format!("{a}{b}");
            let ok = Country::parse(&code).is_ok();
            assert_eq!(country.is_valid(&json!(code)), ok, "{code}");
            valid += usize::from(ok);
        }
    }
    assert_eq!(valid, 249 * 4, "249 codes in four case variants");
    for other in ["", "d", "deu", "1a", "ÄÖ", "d e"] {
        assert!(!country.is_valid(&json!(other)) && Country::parse(other).is_err());
    }
}

/// Random JSON values of every kind, for the mutations below.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e3f64..1e3).prop_map(Value::from),
        (0u32..1000).prop_map(|n| json!(f64::from(n))),
        "[ -~]{0,70}".prop_map(Value::from),
        "\\PC{0,10}".prop_map(Value::from),
        prop::sample::select(vec![
            "de", "DE", "xx", "", "P1", "EUR", "eur", "m1", "P1-40", "product", "offer"
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const FIELDS: [&str; 13] = [
    "/type",
    "/id",
    "/version",
    "/product",
    "/product/id",
    "/product/name",
    "/product_id",
    "/merchant_id",
    "/country",
    "/sku",
    "/price/amount",
    "/price/currency",
    "/stock",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Valid events with one field replaced by anything or removed: the schema and the parser
    /// agree, but for the documented differences (and the schema's stricter product fields).
    #[test]
    fn mutated_events_get_the_same_verdict(
        base in 0usize..4,
        field in prop::sample::select(FIELDS.to_vec()),
        value in prop::option::of(any_json()),
    ) {
        let p = json!({"type":"product","id":"P1","version":3,"product":{"name":"Air"}});
        let bases = [
            p,
            json!({"type":"product_deleted","id":"P1","version":4}),
            offer(),
            without(without(with(offer(), "/type", json!("offer_deleted")), "price"), "stock"),
        ];
        let mut event = bases[base].clone();
        let (parent, key) = field.rsplit_once('/').expect("pointer");
        let target = if parent.is_empty() { Some(&mut event) } else { event.pointer_mut(parent) };
        if let Some(Value::Object(obj)) = target {
            match value {
                Some(v) => { obj.insert(key.to_owned(), v); }
                None => { obj.remove(key); }
            }
        }
        let schema_ok = EVENTS.with(|v| v.is_valid(&event));
        let parser_ok = parses(&event);
        if schema_ok {
            prop_assert!(parser_ok || documented_difference(&event), "schema-valid, parser refuses: {}", event);
        }
        if !parser_ok {
            prop_assert!(!schema_ok || documented_difference(&event), "parser refuses, schema accepts: {}", event);
        }
        if parser_ok && !schema_ok {
            // Only the product document's typed fields may make the schema stricter.
            let mut untyped = event.clone();
            if let Some(doc) = untyped.get_mut("product").and_then(Value::as_object_mut) {
                for f in ["id", "name", "brand", "simples", "media", "attributes"] {
                    doc.remove(f);
                }
            }
            prop_assert!(EVENTS.with(|v| v.is_valid(&untyped)), "schema refuses a parsed event: {}", event);
        }
    }

    /// The sku rule against `OfferKey::validate_sku`, on any text.
    #[test]
    fn the_sku_rule_is_the_parsers(sku in "\\PC{0,3}[\\x00-\\x1f\\x7f-\\u{9f}]?\\PC{0,3}|.{120,135}") {
        let ok = OfferKey::validate_sku(&sku).is_ok();
        prop_assert_eq!(SKU.with(|v| v.is_valid(&json!(sku))), ok);
    }
}

thread_local! {
    static EVENTS: Validator = event_validator();
    static SKU: Validator = def("sku");
}
