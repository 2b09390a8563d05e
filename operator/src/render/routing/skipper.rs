//! Skipper `RouteGroup` (zalando.org/v1) of one country.
//!
//! Backends: per group, `<group>-products` (type service, `consistentHash`) and `<group>-batch`
//! (type service, `powerOfRandomNChoices`). Routes per pool: the three single-item paths with the
//! product id as a path parameter, hashed with `consistentHashKey("${id}")` and a
//! `consistentHashBalanceFactor`, so a product lands on the same products pod as through batch's
//! in-process ring (docs/load-balancing.md: keyed on the product id alone); and the two batch
//! paths. The products routes also fade a new pod in with `fadeIn` (`--skipper-fade-in`) along the batch component's
//! curve (`prapi_common::fade_in`), so both paths warm a new pod's cache alike; batch's backends
//! use `powerOfRandomNChoices`, which Skipper cannot fade in (and batch pods hold no cache). Every
//! route queues with `lifo` when the operator's limits are set (`--skipper-lifo*`): under overload
//! Skipper serves the newest requests first instead of its unbounded FIFO. Every route carries `HeaderRegexp("X-Country", "(?i)^<country>$")` (case-insensitive, as
//! docs/api.md promises); segment routes add
//! `Header("X-Traffic-Segment", ...)`, which makes them more specific than the weighted routes
//! (Skipper prefers the route with more predicates), and they are listed first. Weights are the
//! route's backend weights, from which Skipper derives its traffic predicates.

use super::{COUNTRY_HEADER, CountryRoute, PoolRoute, RouteOptions, SEGMENT_HEADER, SkipperLifo};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

/// API version of RouteGroup.
pub const API_VERSION: &str = "zalando.org/v1";
/// Single-item paths; `:id` is the product id.
pub const ITEM_PATHS: [&str; 3] = [
    "/products/:id",
    "/products/:id/offers",
    "/product-offers/:id",
];
/// Batch paths.
pub const BATCH_PATHS: [&str; 2] = ["/products", "/product-offers"];

/// Name of a group's products backend.
pub fn products_backend(group: &str) -> String {
    format!("{group}-products")
}

/// Name of a group's batch backend.
pub fn batch_backend(group: &str) -> String {
    format!("{group}-batch")
}

/// Quotes a string as an eskip string argument.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// A duration as Go's `time.ParseDuration` reads it (what `fadeIn` and `lifo` take): whole
/// seconds as `30s`, anything finer in milliseconds.
fn go_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// `fadeIn` of the products routes: the batch component's duration and curve.
pub fn fade_in_filter() -> String {
    format!(
        "fadeIn({}, {})",
        quoted(&go_duration(prapi_common::fade_in::DURATION)),
        prapi_common::fade_in::EXPONENT
    )
}

/// `lifo(maxConcurrency, maxQueueSize, timeout)`.
pub fn lifo_filter(lifo: &SkipperLifo) -> String {
    format!(
        "lifo({}, {}, {})",
        lifo.max_concurrency,
        lifo.max_queue,
        quoted(&go_duration(lifo.timeout))
    )
}

/// `X-Country` is matched case-insensitively (docs/api.md: `DE` = `de`); the code is two ASCII
/// letters, so it needs no regexp quoting.
fn predicates(country: &str, segment: Option<&str>) -> Vec<String> {
    let mut p = vec![format!(
        "HeaderRegexp({}, {})",
        quoted(COUNTRY_HEADER),
        quoted(&format!("(?i)^{country}$"))
    )];
    if let Some(s) = segment {
        p.push(format!("Header({}, {})", quoted(SEGMENT_HEADER), quoted(s)));
    }
    p
}

/// The balance factor of a pool's products routes. A route has one `consistentHashBalanceFactor`
/// for all its backends, so groups sharing a pool with different factors get the largest (the
/// most lenient: no group's pods are held to less spread than it asked for).
fn pool_balance_factor(pool: &PoolRoute) -> f64 {
    pool.backends
        .iter()
        .map(|b| b.balance_factor)
        .fold(1.0, f64::max)
}

fn pool_routes(country: &str, pool: &PoolRoute, opts: &RouteOptions) -> Vec<Value> {
    let seg = pool.segment.as_deref();
    let balance_factor = pool_balance_factor(pool);
    let refs = |batch: bool| -> Vec<Value> {
        pool.backends
            .iter()
            .map(|b| {
                let name = if batch {
                    batch_backend(&b.group)
                } else {
                    products_backend(&b.group)
                };
                json!({"backendName": name, "weight": b.weight})
            })
            .collect()
    };
    // The token check runs first, so an unauthenticated request reaches no backend (nor a
    // queue slot); the queue next, so it bounds everything after it.
    let first: Vec<String> = opts
        .auth
        .skipper_filter
        .iter()
        .cloned()
        .chain(opts.skipper_lifo.as_ref().map(lifo_filter))
        .collect();
    let mut routes: Vec<Value> = ITEM_PATHS
        .iter()
        .map(|p| {
            let mut filters = first.clone();
            filters.push("consistentHashKey(\"${id}\")".to_string());
            filters.push(format!("consistentHashBalanceFactor({balance_factor})"));
            if opts.skipper_fade_in {
                filters.push(fade_in_filter());
            }
            json!({
                "path": p,
                "methods": ["GET", "HEAD"],
                "predicates": predicates(country, seg),
                "filters": filters,
                "backends": refs(false),
            })
        })
        .collect();
    routes.extend(BATCH_PATHS.iter().map(|p| {
        let mut route = json!({
            "path": p,
            "methods": ["GET", "HEAD"],
            "predicates": predicates(country, seg),
            "backends": refs(true),
        });
        if !first.is_empty() {
            route["filters"] = json!(first);
        }
        route
    }));
    routes
}

/// The RouteGroup of a country.
pub fn route_group(namespace: &str, route: &CountryRoute, opts: &RouteOptions) -> Value {
    let mut seen = BTreeSet::new();
    let mut backends = Vec::new();
    for b in route.pools.iter().flat_map(|p| &p.backends) {
        if !seen.insert(b.group.clone()) {
            continue;
        }
        backends.push(json!({
            "name": products_backend(&b.group),
            "type": "service",
            "serviceName": b.products.name,
            "servicePort": b.products.port,
            "algorithm": "consistentHash",
        }));
        backends.push(json!({
            "name": batch_backend(&b.group),
            "type": "service",
            "serviceName": b.batch.name,
            "servicePort": b.batch.port,
            "algorithm": "powerOfRandomNChoices",
        }));
    }
    let routes: Vec<Value> = route
        .pools
        .iter()
        .flat_map(|p| pool_routes(&route.country, p, opts))
        .collect();
    let mut spec = json!({
        "backends": backends,
        "routes": routes,
    });
    let hosts = route.hosts(opts);
    if !hosts.is_empty() {
        spec["hosts"] = json!(hosts);
    }
    json!({
        "apiVersion": API_VERSION,
        "kind": "RouteGroup",
        "metadata": super::route_metadata(namespace, route),
        "spec": spec,
    })
}

#[cfg(test)]
mod tests {
    use super::quoted;

    #[test]
    fn durations_are_written_as_go_parses_them() {
        use super::go_duration;
        use std::time::Duration;
        assert_eq!(go_duration(Duration::from_secs(30)), "30s");
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(go_duration(Duration::from_millis(1)), "1ms");
    }

    #[test]
    fn eskip_strings_are_escaped() {
        assert_eq!(quoted("de"), "\"de\"");
        assert_eq!(quoted("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}
