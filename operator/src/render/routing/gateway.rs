//! Gateway API `HTTPRoute` (gateway.networking.k8s.io/v1) of one country.
//!
//! Per pool, two rules: the batch endpoints, matched by the exact paths `GET /products` and
//! `GET /product-offers` (a batch request is the collection path with `?ids=`; an exact path match
//! is core conformance, while a query-parameter "present" match would need the
//! implementation-specific RegularExpression type, and the batch Service answers a missing `ids`
//! with a clear 400), and the single-item endpoints, matched by the path prefixes `/products` and
//! `/product-offers` (Gateway API gives exact matches precedence over prefixes). Every match carries
//! `X-Country`, once per spelling of the code ([`spellings`]: values are compared exactly in core
//! conformance, and docs/api.md promises `DE` = `de`); segment pools add `X-Traffic-Segment`, so they win by having more header matches
//! and are also listed first. Backends are weighted `backendRefs` to the groups' Services.
//!
//! Gateway API has no load-balancing algorithm of its own. Where Envoy Gateway's
//! `BackendTrafficPolicy` is served, each HTTPRoute gets one ([`backend_traffic_policy`]): Envoy's
//! consistent hash on the request's `:path`, so a product's single-item lookups keep landing on
//! the same products pod (docs/load-balancing.md, "Gateway API").

use super::{COUNTRY_HEADER, CountryRoute, PoolRoute, RouteError, RouteOptions, SEGMENT_HEADER};
use serde_json::{Value, json};

/// API version of HTTPRoute.
pub const API_VERSION: &str = "gateway.networking.k8s.io/v1";
/// Gateway API's limits on one HTTPRoute.
pub const MAX_RULES: usize = 16;
/// Gateway API's limit on the matches of all rules of one HTTPRoute (exclusive).
pub const MAX_MATCHES: usize = 128;
/// Most backendRefs per rule.
pub const MAX_BACKENDS: usize = 16;
/// Paths of the batch endpoints (exact).
pub const BATCH_PATHS: [&str; 2] = ["/products", "/product-offers"];
/// Path prefixes of the single-item endpoints.
pub const ITEM_PREFIXES: [&str; 2] = ["/products", "/product-offers"];

/// Every spelling of a country code: `de`, `dE`, `De`, `DE`. Gateway API compares header values
/// exactly (a case-insensitive regular expression is implementation-specific), so
/// case-insensitivity in core conformance is one match per spelling.
pub fn spellings(country: &str) -> Vec<String> {
    let chars: Vec<char> = country.chars().collect();
    (0..1usize << chars.len())
        .map(|mask| {
            chars
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    if mask & (1 << (chars.len() - 1 - i)) == 0 {
                        c.to_ascii_lowercase()
                    } else {
                        c.to_ascii_uppercase()
                    }
                })
                .collect()
        })
        .collect()
}

fn headers(country: &str, segment: Option<&str>) -> Value {
    let mut h = vec![json!({"type": "Exact", "name": COUNTRY_HEADER, "value": country})];
    if let Some(s) = segment {
        h.push(json!({"type": "Exact", "name": SEGMENT_HEADER, "value": s}));
    }
    Value::Array(h)
}

fn rules(country: &str, pool: &PoolRoute, opts: &RouteOptions) -> [Value; 2] {
    let seg = pool.segment.as_deref();
    let spelled = spellings(country);
    let batch_matches: Vec<Value> = BATCH_PATHS
        .iter()
        .flat_map(|p| {
            spelled.iter().map(move |c| {
                json!({
                    "path": {"type": "Exact", "value": p},
                    "method": "GET",
                    "headers": headers(c, seg),
                })
            })
        })
        .collect();
    let item_matches: Vec<Value> = ITEM_PREFIXES
        .iter()
        .flat_map(|p| {
            spelled.iter().map(move |c| {
                json!({
                    "path": {"type": "PathPrefix", "value": p},
                    "headers": headers(c, seg),
                })
            })
        })
        .collect();
    let refs = |batch: bool| -> Vec<Value> {
        pool.backends
            .iter()
            .map(|b| {
                let svc = if batch { &b.batch } else { &b.products };
                json!({"kind": "Service", "name": svc.name, "port": svc.port, "weight": b.weight})
            })
            .collect()
    };
    let mut out = [
        json!({"matches": batch_matches, "backendRefs": refs(true)}),
        json!({"matches": item_matches, "backendRefs": refs(false)}),
    ];
    if let Some(r) = &opts.auth.gateway_extension_ref {
        for rule in &mut out {
            rule["filters"] = json!([{
                "type": "ExtensionRef",
                "extensionRef": {"group": r.group, "kind": r.kind, "name": r.name},
            }]);
        }
    }
    out
}

/// The HTTPRoute of a country.
pub fn http_route(
    namespace: &str,
    route: &CountryRoute,
    opts: &RouteOptions,
) -> Result<Value, RouteError> {
    let (gw_ns, gw_name) = opts.gateway.as_ref().ok_or(RouteError::NoGateway)?;
    if route.pools.len() * 2 > MAX_RULES {
        return Err(RouteError::TooLarge {
            country: route.country.clone(),
            what: format!(
                "{} traffic segments need {} HTTPRoute rules, at most {MAX_RULES} are allowed",
                route.pools.len().saturating_sub(1),
                route.pools.len() * 2
            ),
        });
    }
    let matches = route.pools.len() * (BATCH_PATHS.len() + ITEM_PREFIXES.len()) * 4;
    if matches >= MAX_MATCHES {
        return Err(RouteError::TooLarge {
            country: route.country.clone(),
            what: format!(
                "{} traffic segments need {matches} HTTPRoute matches (four spellings of the country per path), fewer than {MAX_MATCHES} are allowed",
                route.pools.len().saturating_sub(1)
            ),
        });
    }
    if let Some(p) = route.pools.iter().find(|p| p.backends.len() > MAX_BACKENDS) {
        return Err(RouteError::TooLarge {
            country: route.country.clone(),
            what: format!(
                "{} groups share one pool, an HTTPRoute rule takes at most {MAX_BACKENDS} backends",
                p.backends.len()
            ),
        });
    }
    let rules: Vec<Value> = route
        .pools
        .iter()
        .flat_map(|p| rules(&route.country, p, opts))
        .collect();
    let mut spec = json!({
        "parentRefs": [{
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "namespace": gw_ns,
            "name": gw_name,
        }],
        "rules": rules,
    });
    let hosts = route.hosts(opts);
    if !hosts.is_empty() {
        spec["hostnames"] = json!(hosts);
    }
    Ok(json!({
        "apiVersion": API_VERSION,
        "kind": "HTTPRoute",
        "metadata": super::route_metadata(namespace, route),
        "spec": spec,
    }))
}

/// API version of Envoy Gateway's BackendTrafficPolicy.
pub const BACKEND_TRAFFIC_POLICY_API_VERSION: &str = "gateway.envoyproxy.io/v1alpha1";
/// What Envoy hashes: the `:path` pseudo-header, the request's path with its query. Envoy Gateway
/// cannot hash a path segment (its consistent hash takes a source IP, headers, a cookie or query
/// parameters), so the whole path is the closest key to the product id.
pub const HASH_HEADER: &str = ":path";

/// Envoy Gateway's BackendTrafficPolicy for a country's HTTPRoute: named like the route, with its
/// labels and owners, targeting it, with a consistent hash on [`HASH_HEADER`]. It applies to every
/// rule of the route: single items hash by their path (one product's `/products/ID`,
/// `/products/ID/offers` and `/product-offers/ID` are three keys), batch requests by their whole
/// path and query (the batch pods hold no cache, so that only spreads them).
pub fn backend_traffic_policy(namespace: &str, route: &CountryRoute) -> Value {
    json!({
        "apiVersion": BACKEND_TRAFFIC_POLICY_API_VERSION,
        "kind": "BackendTrafficPolicy",
        "metadata": super::route_metadata(namespace, route),
        "spec": {
            "targetRefs": [{
                "group": "gateway.networking.k8s.io",
                "kind": "HTTPRoute",
                "name": route.object_name(),
            }],
            "loadBalancer": {
                "type": "ConsistentHash",
                "consistentHash": {"type": "Header", "header": {"name": HASH_HEADER}},
            },
        },
    })
}
