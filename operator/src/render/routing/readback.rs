//! Reads live route objects back into applied weights and acceptance, so the status reports what
//! the cluster holds. Only objects the operator wrote are read (label `prapi.dev/country`); a
//! backend is attributed to a group by its Service (HTTPRoute) or backend name (RouteGroup),
//! `<group>-products`.

use super::{Acceptance, Applied, LABEL_COUNTRY, Live, Provider, ROUTE_PREFIX, SEGMENT_HEADER};
use serde_json::Value;
use std::collections::BTreeMap;

/// Country a route object routes, from its label (or its name).
pub fn country_of(obj: &Value) -> Option<String> {
    let meta = obj.get("metadata")?;
    meta.get("labels")
        .and_then(|l| l.get(LABEL_COUNTRY))
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| {
            meta.get("name")
                .and_then(Value::as_str)
                .and_then(|n| n.strip_prefix(ROUTE_PREFIX))
                .map(str::to_string)
        })
}

fn group_of(products_name: &str) -> Option<&str> {
    products_name.strip_suffix("-products")
}

fn add(pool: &mut BTreeMap<String, i32>, name: Option<&str>, weight: Option<i64>) {
    if let Some(g) = name.and_then(group_of) {
        // Gateway API's default weight is 1; a missing weight means an equal share.
        let w = weight.unwrap_or(1).clamp(0, i64::from(i32::MAX)) as i32;
        *pool.entry(g.to_string()).or_insert(0) += w;
    }
}

/// Weights per segment of an HTTPRoute (from its single-item rules).
pub fn http_route_weights(obj: &Value) -> BTreeMap<String, BTreeMap<String, i32>> {
    let mut out: BTreeMap<String, BTreeMap<String, i32>> = BTreeMap::new();
    let rules = obj
        .pointer("/spec/rules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for rule in rules {
        let Some(first) = rule
            .get("matches")
            .and_then(Value::as_array)
            .and_then(|m| m.first())
        else {
            continue;
        };
        if first.pointer("/path/type").and_then(Value::as_str) != Some("PathPrefix") {
            continue;
        }
        let segment = first
            .get("headers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|h| h.get("name").and_then(Value::as_str) == Some(SEGMENT_HEADER))
            .and_then(|h| h.get("value").and_then(Value::as_str))
            .unwrap_or("")
            .to_string();
        let pool = out.entry(segment).or_default();
        for r in rule
            .get("backendRefs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            add(
                pool,
                r.get("name").and_then(Value::as_str),
                r.get("weight").and_then(Value::as_i64),
            );
        }
    }
    out
}

/// The segment in a Skipper predicate list, "" for none.
fn skipper_segment(predicates: &[Value]) -> String {
    let prefix = format!("Header(\"{SEGMENT_HEADER}\", \"");
    predicates
        .iter()
        .filter_map(Value::as_str)
        .find_map(|p| {
            p.strip_prefix(&prefix)
                .and_then(|rest| rest.strip_suffix("\")"))
                .map(str::to_string)
        })
        .unwrap_or_default()
}

/// Weights per segment of a RouteGroup (from its `/products/:id` routes).
pub fn route_group_weights(obj: &Value) -> BTreeMap<String, BTreeMap<String, i32>> {
    let mut out: BTreeMap<String, BTreeMap<String, i32>> = BTreeMap::new();
    let routes = obj
        .pointer("/spec/routes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for route in routes {
        if route.get("path").and_then(Value::as_str) != Some(super::skipper::ITEM_PATHS[0]) {
            continue;
        }
        let preds = route
            .get("predicates")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let pool = out.entry(skipper_segment(&preds)).or_default();
        for b in route
            .get("backends")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            add(
                pool,
                b.get("backendName").and_then(Value::as_str),
                b.get("weight").and_then(Value::as_i64),
            );
        }
    }
    out
}

/// Whether the controller of `gateway` accepted the HTTPRoute's current generation.
pub fn http_route_acceptance(obj: &Value, gateway: Option<&(String, String)>) -> Acceptance {
    let generation = obj.pointer("/metadata/generation").and_then(Value::as_i64);
    let parents = obj
        .pointer("/status/parents")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ours = parents.iter().find(|p| match gateway {
        Some((ns, name)) => {
            p.pointer("/parentRef/name").and_then(Value::as_str) == Some(name.as_str())
                && p.pointer("/parentRef/namespace")
                    .and_then(Value::as_str)
                    .is_none_or(|n| n == ns)
        }
        None => true,
    });
    let Some(parent) = ours else {
        return Acceptance::Unreported;
    };
    let accepted = parent
        .get("conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("Accepted"));
    let Some(c) = accepted else {
        return Acceptance::Pending;
    };
    let observed = c.get("observedGeneration").and_then(Value::as_i64);
    if let (Some(g), Some(o)) = (generation, observed)
        && o < g
    {
        return Acceptance::Pending;
    }
    match c.get("status").and_then(Value::as_str) {
        Some("True") => Acceptance::Accepted,
        Some("False") => Acceptance::Rejected(format!(
            "{}: {}",
            c.get("reason")
                .and_then(Value::as_str)
                .unwrap_or("NotAccepted"),
            c.get("message").and_then(Value::as_str).unwrap_or("")
        )),
        _ => Acceptance::Pending,
    }
}

/// Reads the live route objects of `provider` into weights and acceptance.
pub fn live(provider: Provider, objects: &[Value], gateway: Option<&(String, String)>) -> Live {
    let mut out = Live::default();
    for obj in objects {
        let Some(country) = country_of(obj) else {
            continue;
        };
        let (weights, acceptance) = match provider {
            Provider::GatewayApi => (http_route_weights(obj), http_route_acceptance(obj, gateway)),
            Provider::Skipper => (route_group_weights(obj), Acceptance::Unreported),
            Provider::None => continue,
        };
        let pools: &mut BTreeMap<String, BTreeMap<String, i32>> =
            out.applied.entry(country.clone()).or_default();
        for (segment, pool) in weights {
            pools.entry(segment).or_default().extend(pool);
        }
        out.acceptance.insert(country, acceptance);
    }
    out
}

/// Only the weights.
pub fn applied(provider: Provider, objects: &[Value]) -> Applied {
    live(provider, objects, None).applied
}
