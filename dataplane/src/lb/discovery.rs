//! Where the products pods are: a static list, or the EndpointSlices of a Service (watched).
//!
//! EndpointSlices are read with Skipper's rules, so batch and the ingress see the same pods and
//! hence the same ring: an endpoint counts when it is ready (a missing condition means ready) and
//! not terminating; an address seen terminating in any slice is out even if another slice still
//! lists it ready; the first address of an endpoint is used; `serving` is ignored. Changes are
//! debounced (~2 s) so a rolling update rebuilds the ring a few times, not once per pod event.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{WatchStreamExt, reflector, watcher};

use super::balancer::Balancer;
use super::endpoint::{Endpoint, EndpointError, parse_endpoints};

/// Label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Default quiet time before a change is applied.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_secs(2);

/// A Service named as `NAMESPACE/NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRef {
    /// Namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
}

/// A discovery input that is not usable.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// `--products-service` is not `NAMESPACE/NAME` of DNS labels.
    #[error("invalid service {0:?}: expected NAMESPACE/NAME (lower-case DNS labels)")]
    BadService(String),
    /// A static endpoint is malformed.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
}

impl ServiceRef {
    /// Parses `NAMESPACE/NAME`, both RFC 1123 labels.
    pub fn parse(s: &str) -> Result<Self, DiscoveryError> {
        let bad = || DiscoveryError::BadService(s.chars().take(120).collect());
        let (ns, name) = s.split_once('/').ok_or_else(bad)?;
        if !prapi_common::names::dns_label(ns) || !prapi_common::names::dns_label(name) {
            return Err(bad());
        }
        Ok(Self {
            namespace: ns.to_string(),
            name: name.to_string(),
        })
    }
}

/// Sets a fixed list of pods on `balancer` (`--endpoints`).
pub fn use_static_endpoints(balancer: &Balancer, list: &[String]) -> Result<(), DiscoveryError> {
    balancer.set_endpoints(&parse_endpoints(list)?);
    Ok(())
}

/// The ready endpoints of a Service's slices, as `http://<ip>:<port>`, sorted.
///
/// The port is the slice's port named `port_name`, or, without a name, the slice's first port.
/// Slices without such a port, and addresses that are not IPs (FQDN slices), are skipped.
pub fn ready_endpoints<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    port_name: Option<&str>,
) -> Vec<Endpoint> {
    let mut terminating = std::collections::BTreeSet::new();
    let mut ready: BTreeMap<String, Endpoint> = BTreeMap::new();
    for slice in slices {
        let Some(port) = slice_port(slice, port_name) else {
            continue;
        };
        for ep in &slice.endpoints {
            let Some(address) = ep.addresses.first() else {
                continue;
            };
            let Ok(ip) = address.parse::<IpAddr>() else {
                continue;
            };
            let conditions = ep.conditions.as_ref();
            if terminating.contains(address) {
                continue;
            }
            if conditions.and_then(|c| c.terminating).unwrap_or(false) {
                terminating.insert(address.clone());
                ready.remove(address);
                continue;
            }
            if conditions.and_then(|c| c.ready).unwrap_or(true) {
                // SocketAddr's Display brackets IPv6, as Go's net.JoinHostPort does.
                let text = format!("http://{}", std::net::SocketAddr::new(ip, port));
                if let Ok(e) = Endpoint::parse(&text) {
                    ready.insert(address.clone(), e);
                }
            }
        }
    }
    let mut out: Vec<Endpoint> = ready.into_values().collect();
    out.sort();
    out.dedup();
    out
}

fn slice_port(slice: &EndpointSlice, port_name: Option<&str>) -> Option<u16> {
    let ports = slice.ports.as_ref()?;
    let port = match port_name {
        Some(name) => ports.iter().find(|p| p.name.as_deref() == Some(name))?,
        None => ports.first()?,
    };
    u16::try_from(port.port?).ok().filter(|&p| p != 0)
}

/// What a watch event means for the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A complete listing is in (start, or a relist after an error): apply now.
    Listed,
    /// A slice was added, changed or deleted: apply after the debounce.
    Changed,
    /// Nothing to do (a listing in progress, a watch error being retried).
    Nothing,
}

impl<K> From<&watcher::Result<watcher::Event<K>>> for Change {
    fn from(ev: &watcher::Result<watcher::Event<K>>) -> Self {
        match ev {
            Ok(watcher::Event::InitDone) => Change::Listed,
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => Change::Changed,
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => Change::Nothing,
            Err(e) => {
                tracing::warn!(error = %e, "EndpointSlice watch failed; retrying with backoff");
                Change::Nothing
            }
        }
    }
}

/// Calls `apply` for every listing at once, and for changes once `delay` after the first change
/// since the last apply (later changes ride along, so a steady stream of changes still gets
/// applied every `delay`). Returns when `changes` ends, applying what is pending.
pub async fn debounce(
    changes: impl Stream<Item = Change>,
    delay: Duration,
    mut apply: impl FnMut(),
) {
    let mut changes = pin!(changes);
    let mut due: Option<tokio::time::Instant> = None;
    loop {
        let deadline = due.unwrap_or_else(tokio::time::Instant::now);
        tokio::select! {
            change = changes.next() => match change {
                None => {
                    if due.is_some() {
                        apply();
                    }
                    return;
                }
                Some(Change::Listed) => {
                    apply();
                    due = None;
                }
                Some(Change::Changed) => {
                    due.get_or_insert_with(|| tokio::time::Instant::now() + delay);
                }
                Some(Change::Nothing) => {}
            },
            () = tokio::time::sleep_until(deadline), if due.is_some() => {
                apply();
                due = None;
            }
        }
    }
}

/// Watches the EndpointSlices of `service` and keeps `balancer`'s pods equal to their ready
/// endpoints (port `port_name`, or each slice's first port). Runs until the task is dropped; watch
/// errors are retried with backoff, keeping the last known pods meanwhile.
pub async fn watch_endpoint_slices(
    client: kube::Client,
    service: ServiceRef,
    port_name: Option<String>,
    balancer: Arc<Balancer>,
    delay: Duration,
) {
    let api: kube::Api<EndpointSlice> = kube::Api::namespaced(client, &service.namespace);
    let config =
        watcher::Config::default().labels(&format!("{SERVICE_NAME_LABEL}={}", service.name));
    let (reader, writer) = reflector::store();
    let events = reflector(writer, watcher(api, config)).default_backoff();
    let changes = events.map(|ev| Change::from(&ev));
    debounce(changes, delay, || {
        let slices = reader.state();
        let endpoints = ready_endpoints(slices.iter().map(|s| s.as_ref()), port_name.as_deref());
        tracing::info!(
            service = %format!("{}/{}", service.namespace, service.name),
            pods = endpoints.len(),
            "products endpoints updated"
        );
        balancer.set_endpoints(&endpoints);
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::{
        Endpoint as SliceEndpoint, EndpointConditions, EndpointPort,
    };
    use std::cell::RefCell;

    fn ep(addr: &str, ready: Option<bool>, terminating: Option<bool>) -> SliceEndpoint {
        SliceEndpoint {
            addresses: vec![addr.to_string()],
            conditions: (ready.is_some() || terminating.is_some()).then_some(EndpointConditions {
                ready,
                serving: None,
                terminating,
            }),
            ..Default::default()
        }
    }

    fn slice(ports: &[(&str, i32)], endpoints: Vec<SliceEndpoint>) -> EndpointSlice {
        EndpointSlice {
            address_type: "IPv4".into(),
            endpoints,
            ports: Some(
                ports
                    .iter()
                    .map(|&(name, port)| EndpointPort {
                        name: Some(name.to_string()),
                        port: Some(port),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn strs(eps: &[Endpoint]) -> Vec<&str> {
        eps.iter().map(Endpoint::as_str).collect()
    }

    #[test]
    fn ready_rules_follow_skipper() {
        let s = slice(
            &[("http", 8080)],
            vec![
                ep("10.0.0.1", None, None),             // no conditions: ready
                ep("10.0.0.2", Some(true), None),       // ready
                ep("10.0.0.3", Some(false), None),      // not ready
                ep("10.0.0.4", Some(true), Some(true)), // terminating wins
                ep("10.0.0.5", None, Some(false)),      // ready unset: ready
            ],
        );
        assert_eq!(
            strs(&ready_endpoints([&s], None)),
            [
                "http://10.0.0.1:8080",
                "http://10.0.0.2:8080",
                "http://10.0.0.5:8080"
            ]
        );
    }

    #[test]
    fn terminating_anywhere_wins_over_ready_elsewhere() {
        let a = slice(&[("http", 8080)], vec![ep("10.0.0.1", Some(true), None)]);
        let b = slice(
            &[("http", 8080)],
            vec![ep("10.0.0.1", Some(true), Some(true))],
        );
        assert!(ready_endpoints([&a, &b], None).is_empty());
        assert!(ready_endpoints([&b, &a], None).is_empty());
    }

    #[test]
    fn ports_by_name_or_first_and_ipv6_in_brackets() {
        let s = slice(
            &[("metrics", 9090), ("http", 8080)],
            vec![ep("10.0.0.1", None, None), ep("fd00::1", None, None)],
        );
        assert_eq!(
            strs(&ready_endpoints([&s], Some("http"))),
            ["http://10.0.0.1:8080", "http://[fd00::1]:8080"]
        );
        assert_eq!(
            strs(&ready_endpoints([&s], None)),
            ["http://10.0.0.1:9090", "http://[fd00::1]:9090"]
        );
        // No such port, or no ports at all: the slice gives nothing.
        assert!(ready_endpoints([&s], Some("grpc")).is_empty());
        let mut bare = s.clone();
        bare.ports = None;
        assert!(ready_endpoints([&bare], None).is_empty());
    }

    #[test]
    fn duplicates_across_slices_and_non_ip_addresses() {
        let a = slice(&[("http", 80)], vec![ep("10.0.0.1", None, None)]);
        let b = slice(
            &[("http", 80)],
            vec![ep("10.0.0.1", None, None), ep("pod.example", None, None)],
        );
        assert_eq!(
            strs(&ready_endpoints([&a, &b], None)),
            ["http://10.0.0.1:80"]
        );
        let empty = SliceEndpoint::default();
        let c = slice(&[("http", 80)], vec![empty]);
        assert!(ready_endpoints([&c], None).is_empty());
    }

    #[test]
    fn service_refs() {
        let s = ServiceRef::parse("shop/products").expect("valid");
        assert_eq!(
            (s.namespace.as_str(), s.name.as_str()),
            ("shop", "products")
        );
        for bad in [
            "products",
            "shop/",
            "/products",
            "Shop/products",
            "a/b/c",
            "-a/b",
        ] {
            assert!(ServiceRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn static_endpoints_reach_the_balancer() {
        let b = Balancer::new(
            super::super::balancer::BalancerConfig::default(),
            Arc::new(crate::clock::ManualClock::default()),
        );
        use_static_endpoints(
            &b,
            &["http://10.0.0.2:80".into(), "http://10.0.0.1:80".into()],
        )
        .expect("valid");
        assert_eq!(
            strs(&b.endpoints()),
            ["http://10.0.0.1:80", "http://10.0.0.2:80"]
        );
        assert!(use_static_endpoints(&b, &["10.0.0.1:80".into()]).is_err());
    }

    /// Debounce in tokio's paused time: listings apply at once, a burst of changes once, 2 s
    /// after its first event.
    #[tokio::test(start_paused = true)]
    async fn changes_are_debounced() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Change>();
        let applied: RefCell<Vec<Duration>> = RefCell::new(Vec::new());
        let start = tokio::time::Instant::now();
        let stream = tokio_stream_from(rx);
        let driver = async {
            let step = |d| tokio::time::sleep(Duration::from_millis(d));
            tx.send(Change::Listed).expect("send");
            step(10).await;
            for _ in 0..5 {
                tx.send(Change::Changed).expect("send");
                step(300).await; // a rolling update: one event every 300 ms
            }
            tx.send(Change::Nothing).expect("send");
            step(5000).await;
            tx.send(Change::Changed).expect("send");
            step(100).await;
            drop(tx);
        };
        let watch = debounce(stream, DEFAULT_DEBOUNCE, || {
            applied.borrow_mut().push(start.elapsed());
        });
        tokio::join!(driver, watch);
        let ms: Vec<u128> = applied.borrow().iter().map(|d| d.as_millis()).collect();
        // Listing at 0; the burst (10..1210 ms) applied once, 2 s after its first event; the
        // change at 6510 ms still pending when the stream ended at 6610 ms, applied then.
        assert_eq!(ms, [0, 2010, 6610]);
    }

    fn tokio_stream_from(
        mut rx: tokio::sync::mpsc::UnboundedReceiver<Change>,
    ) -> impl Stream<Item = Change> {
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}
