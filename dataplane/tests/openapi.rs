//! docs/openapi.yaml is the contract client teams generate clients from; these tests pin it to
//! the code: the routes the routers serve are exactly the documented paths, every problem type
//! the code can emit is documented under its status, the served `/openapi.yaml` is the file, and
//! the responses of a running server (embedded store, generated catalogue) validate against the
//! documented schemas and headers, in every media type, found and not found, single and batch,
//! and for each error a request can provoke.

mod local_support;

use std::collections::{BTreeSet, HashMap};

use jsonschema::{Draft, Validator};
use local_support::get;
use prapi::http::problem::ProblemType;
use serde_json::{Value, json};

const TYPES: [&str; 4] = [
    "application/json",
    "application/x.alpha-format+json",
    "application/x.beta-format+json",
    "application/x.gamma-format+json",
];

/// The document, parsed, with compiled schemas of the responses seen so far.
struct Contract {
    doc: Value,
    validators: HashMap<String, Validator>,
}

impl Contract {
    fn load() -> Contract {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.yaml"))
                .expect("read docs/openapi.yaml");
        let doc: Value = serde_norway::from_str(&text).expect("docs/openapi.yaml is YAML");
        assert!(
            doc["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1.")),
            "OpenAPI 3.1"
        );
        Contract {
            doc,
            validators: HashMap::new(),
        }
    }

    /// Follows a local `$ref` (`#/components/...`), else the value itself.
    fn resolve<'a>(&'a self, v: &'a Value) -> &'a Value {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let pointer = r.strip_prefix('#').expect("local $ref");
                self.doc
                    .pointer(pointer)
                    .unwrap_or_else(|| panic!("dangling $ref {r}"))
            }
            None => v,
        }
    }

    fn paths(&self) -> BTreeSet<String> {
        self.doc["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .cloned()
            .collect()
    }

    /// The documented response of `GET path` with `status`.
    fn response(&self, path: &str, status: u16) -> &Value {
        let op = &self.doc["paths"][path]["get"];
        assert!(op.is_object(), "GET {path} is not documented");
        let r = &op["responses"][status.to_string()];
        assert!(
            !r.is_null(),
            "GET {path}: status {status} is not documented"
        );
        self.resolve(r)
    }

    /// A validator for `schema`, whose `$ref`s point into the document's components.
    fn compile(&self, schema: &Value) -> Validator {
        let mut root = schema.as_object().cloned().expect("schema object");
        root.insert("components".into(), self.doc["components"].clone());
        jsonschema::options()
            .with_draft(Draft::Draft202012)
            .build(&Value::Object(root))
            .unwrap_or_else(|e| panic!("schema does not compile: {e}: {schema}"))
    }

    /// Checks a response against the document: status, content type, body schema, headers.
    fn check(&mut self, path: &str, resp: &Response) {
        let what = format!("GET {} -> {}", resp.url, resp.status);
        let documented = self.response(path, resp.status).clone();
        for (name, header) in documented["headers"].as_object().into_iter().flatten() {
            let header = self.resolve(header).clone();
            let value = resp.headers.get(&name.to_ascii_lowercase());
            let always = matches!(
                name.as_str(),
                "Cache-Control" | "X-Flow-ID" | "ETag" | "Vary"
            );
            let Some(value) = value else {
                assert!(!always, "{what}: documented header {name} is missing");
                continue;
            };
            let schema = &header["schema"];
            let instance = if schema["type"] == "integer" {
                value.parse::<i64>().map_or(json!(value), |n| json!(n))
            } else {
                json!(value)
            };
            let v = self.compile(schema);
            assert!(
                v.is_valid(&instance),
                "{what}: header {name}: {value:?} does not match {schema}"
            );
        }
        let Some(content) = documented.get("content").and_then(Value::as_object) else {
            assert!(resp.body.is_empty(), "{what}: undocumented body");
            return;
        };
        let ct = resp
            .content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_owned();
        let Some(media) = content.get(&ct) else {
            panic!(
                "{what}: content type {ct:?} is not documented ({:?})",
                content.keys()
            );
        };
        let schema = media["schema"].clone();
        let body: Value = if ct.ends_with("json") {
            serde_json::from_slice(&resp.body).unwrap_or_else(|e| panic!("{what}: not JSON: {e}"))
        } else {
            json!(String::from_utf8_lossy(&resp.body))
        };
        let key = format!("{path} {} {ct}", resp.status);
        if !self.validators.contains_key(&key) {
            let v = self.compile(&schema);
            self.validators.insert(key.clone(), v);
        }
        let v = &self.validators[&key];
        let errors: Vec<String> = v
            .iter_errors(&body)
            .take(5)
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.is_empty(),
            "{what}: body does not match the documented schema: {errors:?}\n{body}"
        );
    }
}

/// A response, read whole.
struct Response {
    url: String,
    status: u16,
    content_type: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

async fn fetch(base: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let resp = get(base, path, headers).await;
    Response {
        url: path.to_owned(),
        status: resp.status().as_u16(),
        content_type: resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned(),
        headers: resp
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect(),
        body: resp.bytes().await.expect("body").to_vec(),
    }
}

/// Every string in `v` that is a problem type URI.
fn problem_uris(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::String(s) if s.starts_with("https://prapi.dev/problems/") => {
            out.insert(s.clone());
        }
        Value::Array(a) => a.iter().for_each(|x| problem_uris(x, out)),
        Value::Object(o) => o.values().for_each(|x| problem_uris(x, out)),
        _ => {}
    }
}

#[test]
fn the_documented_paths_are_exactly_the_served_routes() {
    let contract = Contract::load();
    let served: BTreeSet<String> = prapi::products::PATHS
        .iter()
        .chain(&prapi::batch::PATHS)
        .chain(&prapi::http::server::OPS_PATHS)
        .chain(&[prapi::http::openapi::PATH])
        .map(|p| p.to_string())
        .collect();
    assert_eq!(contract.paths(), served);
    for (path, item) in contract.doc["paths"].as_object().expect("paths") {
        let methods: Vec<&String> = item.as_object().expect("path item").keys().collect();
        assert_eq!(
            methods,
            ["get"],
            "{path}: the API serves GET (and HEAD) only"
        );
    }
}

#[test]
fn every_problem_type_is_documented_under_its_status() {
    let contract = Contract::load();
    let mut documented = BTreeSet::new();
    problem_uris(&contract.doc, &mut documented);
    let emitted: BTreeSet<String> = ProblemType::ALL.iter().map(|t| t.uri()).collect();
    assert_eq!(
        documented, emitted,
        "problem types in docs/openapi.yaml vs ProblemType::ALL"
    );
    // Wherever a response lists problem types, each one has that response's status.
    let by_uri: HashMap<String, u16> = ProblemType::ALL
        .iter()
        .map(|t| (t.uri(), t.status().as_u16()))
        .collect();
    let mut checked = 0;
    for (path, item) in contract.doc["paths"].as_object().expect("paths") {
        let responses = item["get"]["responses"].as_object().expect("responses");
        for (status, r) in responses {
            let mut types = BTreeSet::new();
            problem_uris(contract.resolve(r), &mut types);
            for t in types {
                assert_eq!(
                    by_uri[&t].to_string(),
                    *status,
                    "GET {path}: {t} is documented under {status}"
                );
                checked += 1;
            }
        }
    }
    let mut no_route = BTreeSet::new();
    problem_uris(
        &contract.doc["components"]["responses"]["NoRoute"],
        &mut no_route,
    );
    assert_eq!(no_route, BTreeSet::from([ProblemType::NoRoute.uri()]));
    assert!(
        checked > 20,
        "only {checked} documented problem types found under paths"
    );
}

#[test]
fn every_schema_of_the_document_compiles() {
    let contract = Contract::load();
    for (name, schema) in contract.doc["components"]["schemas"]
        .as_object()
        .expect("schemas")
    {
        let _ = contract.compile(schema);
        assert!(schema.is_object(), "{name}");
    }
}

#[tokio::test]
async fn responses_of_a_running_server_match_the_document() {
    let local = local_support::start(60, 7).await;
    let base = local.base.as_str();
    let mut c = Contract::load();
    let missing = "no-such-product";
    let ids: Vec<&str> = local
        .ids
        .iter()
        .map(String::as_str)
        .chain([missing])
        .collect();
    let (mut found, mut not_found) = (0, 0);
    for id in &ids {
        for country in ["de", "AT"] {
            let r = fetch(base, &format!("/products/{id}"), &[]).await;
            c.check("/products/{id}", &r);
            let r = fetch(
                base,
                &format!("/products/{id}/offers"),
                &[("x-country", country)],
            )
            .await;
            c.check("/products/{id}/offers", &r);
            for accept in TYPES {
                let path = format!("/product-offers/{id}");
                let r = fetch(base, &path, &[("x-country", country), ("accept", accept)]).await;
                c.check("/product-offers/{id}", &r);
                match r.status {
                    200 => found += 1,
                    404 => not_found += 1,
                    s => panic!("{path}: {s}"),
                }
                // A conditional request with the ETag just served: 304 as documented.
                if let Some(etag) = r.headers.get("etag") {
                    let h = [
                        ("x-country", country),
                        ("accept", accept),
                        ("if-none-match", etag),
                    ];
                    let r = fetch(base, &path, &h).await;
                    assert_eq!(r.status, 304, "{path}");
                    c.check("/product-offers/{id}", &r);
                }
            }
        }
    }
    assert!(
        found > 100 && not_found >= 8,
        "{found} found, {not_found} not found"
    );

    // Batches: all ids in chunks, in every media type, with the missing one.
    for chunk in ids.chunks(40) {
        let q = chunk.join(",");
        let r = fetch(base, &format!("/products?ids={q}"), &[]).await;
        assert_eq!(r.status, 200);
        c.check("/products", &r);
        for accept in TYPES {
            let h = [("x-country", "de"), ("accept", accept)];
            let r = fetch(base, &format!("/product-offers?ids={q}"), &h).await;
            assert_eq!(r.status, 200);
            c.check("/product-offers", &r);
        }
    }

    // Every error a request can provoke here, each validated against its path's documentation.
    let id = ids[0];
    let too_many = vec![id; 101].join(",");
    // (documented path, request path, request headers, the problem it must give)
    type Provoked<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, ProblemType);
    let errors: Vec<Provoked> = vec![
        (
            "/products/{id}",
            "/products/bad%20id".into(),
            vec![],
            ProblemType::InvalidProductId,
        ),
        (
            "/products/{id}",
            format!("/products/{id}"),
            vec![("accept", "text/html")],
            ProblemType::NotAcceptable,
        ),
        (
            "/products/{id}/offers",
            format!("/products/{id}/offers"),
            vec![],
            ProblemType::MissingCountry,
        ),
        (
            "/products/{id}/offers",
            format!("/products/{id}/offers"),
            vec![("x-country", "xx")],
            ProblemType::InvalidCountry,
        ),
        (
            "/products/{id}/offers",
            format!("/products/{id}/offers"),
            vec![("x-country", "fr")],
            ProblemType::CountryNotServed,
        ),
        (
            "/product-offers/{id}",
            format!("/product-offers/{id}"),
            vec![("x-country", "de"), ("accept", "application/xml")],
            ProblemType::NotAcceptable,
        ),
        (
            "/products",
            "/products?ids=".into(),
            vec![],
            ProblemType::MissingIds,
        ),
        (
            "/products",
            format!("/products?ids={too_many}"),
            vec![],
            ProblemType::TooManyIds,
        ),
        (
            "/products",
            format!("/products?ids={id},,x"),
            vec![],
            ProblemType::InvalidProductId,
        ),
        (
            "/product-offers",
            format!("/product-offers?ids={id}"),
            vec![],
            ProblemType::MissingCountry,
        ),
        (
            "/product-offers",
            format!("/product-offers?ids={id}"),
            vec![("x-country", "fr")],
            ProblemType::CountryNotServed,
        ),
        (
            "/product-offers",
            format!("/product-offers?ids={id}"),
            vec![("x-country", "de"), ("accept", "text/html")],
            ProblemType::NotAcceptable,
        ),
    ];
    for (documented, path, headers, kind) in errors {
        let r = fetch(base, &path, &headers).await;
        c.check(documented, &r);
        let body: Value = serde_json::from_slice(&r.body).expect("problem");
        assert_eq!(body["type"], kind.uri(), "{path}");
    }
    // A path outside the API: the documented no-route problem.
    let r = fetch(base, "/no/such/endpoint", &[]).await;
    assert_eq!(r.status, 404);
    let no_route = c.doc["components"]["responses"]["NoRoute"]["content"]["application/problem+json"]["schema"].clone();
    let body: Value = serde_json::from_slice(&r.body).expect("problem");
    assert!(c.compile(&no_route).is_valid(&body), "{body}");
    assert_eq!(body["type"], ProblemType::NoRoute.uri());

    // Operational endpoints and the document itself.
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.yaml"] {
        let r = fetch(base, path, &[]).await;
        assert_eq!(r.status, 200, "{path}");
        c.check(path, &r);
    }
    let served = fetch(base, "/openapi.yaml", &[]).await;
    assert_eq!(served.content_type, "application/yaml");
    assert!(served.body == prapi::http::openapi::DOCUMENT.as_bytes());
    let file = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.yaml"))
        .expect("read docs/openapi.yaml");
    assert!(
        served.body == file,
        "the served document is docs/openapi.yaml"
    );
}
