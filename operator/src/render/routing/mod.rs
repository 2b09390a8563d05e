//! Routing across market groups (docs/operations.md): pure functions from the groups of a
//! namespace and the routes as they are applied to the routes that should be applied, the HPA
//! floors that must come first, and desired versus actual weight per group and country.
//!
//! A namespace is one routing domain: for each country, the groups of the namespace that list it
//! share its traffic by weight / sum. A group with a segment only takes requests carrying
//! `X-Traffic-Segment: <segment>`; those rules come ahead of the weighted ones. Every country gets
//! one route object named `prapi-<country>` ([`gateway`]: Gateway API `HTTPRoute`, [`skipper`]:
//! Skipper `RouteGroup`), which carries the whole country: changing a split is one atomic write.
//! [`readback`] turns the live objects back into applied weights, so `actual` is what the cluster
//! holds, not what the operator meant to write.
//!
//! A suspended group (`spec.suspend`) freezes the countries it serves or still carries: their
//! route objects are neither written nor deleted, so every group's weight there stays as applied
//! until the group resumes. A group being deleted thaws its countries, so that deletion (which
//! drains the group's share first) never waits for a resume.

pub mod gateway;
pub mod readback;
pub mod shift;
pub mod skipper;

use serde_json::Value;
use shift::{Floors, PoolDecision, PoolInput, decide_pool, has_capacity};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Header the ingress routes a request's country on (docs/api.md).
pub const COUNTRY_HEADER: &str = "X-Country";
/// Header that sends a request to the groups of a traffic segment.
pub const SEGMENT_HEADER: &str = "X-Traffic-Segment";
/// Label on every route object: the country it routes.
pub const LABEL_COUNTRY: &str = "prapi.dev/country";
/// Prefix of route object names: `prapi-<country>`.
pub const ROUTE_PREFIX: &str = "prapi-";
/// Default `consistentHashBalanceFactor` of the Skipper products backends.
pub const DEFAULT_BALANCE_FACTOR: f64 = 1.25;

/// Which kind of route object the operator writes (`--routing`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    /// Gateway API `HTTPRoute` (gateway.networking.k8s.io/v1).
    GatewayApi,
    /// Skipper `RouteGroup` (zalando.org/v1).
    Skipper,
    /// No routes: the operator leaves routing to someone else.
    None,
}

/// A Service a route sends traffic to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRef {
    /// Service name (in the group's namespace).
    pub name: String,
    /// Service port.
    pub port: i32,
}

/// Replicas of a serving component, as the shifting rules need them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ComponentCapacity {
    /// Replicas available now.
    pub available: i32,
    /// The HPA floor of the spec.
    pub min: i32,
    /// The HPA ceiling of the spec.
    pub max: i32,
}

/// One market group as routing sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupRouting {
    /// Namespace (the routing domain).
    pub namespace: String,
    /// Group name.
    pub name: String,
    /// UID, for the (non-controller) owner references of the route objects; None offline.
    pub uid: Option<String>,
    /// Lower-case country codes.
    pub countries: Vec<String>,
    /// Traffic weight 0..=100.
    pub weight: i32,
    /// Traffic segment; empty for none.
    pub segment: String,
    /// Balance factor of the group's products pods (`spec.products.balanceFactor` or the
    /// operator's `--balance-factor`).
    pub balance_factor: f64,
    /// Route host names of the group (`spec.traffic.hosts`); empty for the operator's.
    pub hosts: Vec<String>,
    /// Weights of single countries over `weight` (`spec.traffic.countryWeights`).
    pub country_weights: BTreeMap<String, i32>,
    /// Whether the group can serve (its workloads are available and its table exists).
    pub ready: bool,
    /// Countries the group lists whose bootstrap gate is closed: it is not ready for them.
    pub bootstrapping: Vec<String>,
    /// Whether the group is being deleted (its share drains to the others).
    pub deleting: bool,
    /// `spec.suspend`: the routes of its countries stay as they are.
    pub suspended: bool,
    /// The products Service.
    pub products_service: ServiceRef,
    /// The batch Service.
    pub batch_service: ServiceRef,
    /// Products replicas.
    pub products: ComponentCapacity,
    /// Batch replicas.
    pub batch: ComponentCapacity,
}

impl GroupRouting {
    /// The group's weight in `country`: its `countryWeights` entry, else its `weight`.
    pub fn weight_in(&self, country: &str) -> i32 {
        self.country_weights
            .get(country)
            .copied()
            .unwrap_or(self.weight)
    }
}

/// Why a group's actual share differs from its desired share (or why it has none).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// The group is not Ready: it gets no traffic.
    NotReady,
    /// The group's table does not hold the country's catalogue yet: it gets none of its traffic.
    Bootstrapping,
    /// Every group of the country (or segment) has weight 0: no route.
    WeightsSumToZero,
    /// No group that should take the country's traffic is Ready, and nobody carries it.
    NoReadyGroup,
    /// The group keeps its applied share until a group that should take over is Ready.
    HeldUntilReplacementReady,
    /// Another group of the country is not Ready: the Ready ones carry its share meanwhile.
    PeerNotReady,
    /// The group's share rises once its raised HPA floors are available.
    WaitingForCapacity,
    /// The split changes once every growing group has its capacity.
    ShiftPending,
    /// The group is being deleted and still carries traffic until the others can take it.
    Draining,
    /// The route was written but its controller has not accepted it (yet).
    RoutePending,
    /// The route's controller rejected it.
    RouteNotAccepted,
    /// The operator routes nothing (`--routing none`).
    RoutingDisabled,
    /// A group serving the country is suspended: its route stays as it is.
    Suspended,
}

impl Reason {
    /// CamelCase form for status and conditions.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotReady => "NotReady",
            Reason::Bootstrapping => "Bootstrapping",
            Reason::WeightsSumToZero => "WeightsSumToZero",
            Reason::NoReadyGroup => "NoReadyGroup",
            Reason::HeldUntilReplacementReady => "HeldUntilReplacementReady",
            Reason::PeerNotReady => "PeerNotReady",
            Reason::WaitingForCapacity => "WaitingForCapacity",
            Reason::ShiftPending => "ShiftPending",
            Reason::Draining => "Draining",
            Reason::RoutePending => "RoutePending",
            Reason::RouteNotAccepted => "RouteNotAccepted",
            Reason::RoutingDisabled => "RoutingDisabled",
            Reason::Suspended => "Suspended",
        }
    }

    /// What it means, for messages.
    pub fn explain(self) -> &'static str {
        match self {
            Reason::NotReady => {
                "the group is not Ready (workloads available and table filled), so it gets no traffic"
            }
            Reason::Bootstrapping => {
                "the group's updater has not caught up for this country yet (bootstrap gate), so it gets none of its traffic"
            }
            Reason::WeightsSumToZero => {
                "every group serving the country has weight 0, so the country has no route"
            }
            Reason::NoReadyGroup => {
                "no group that should serve the country is Ready, so the country has no route yet"
            }
            Reason::HeldUntilReplacementReady => {
                "keeps its share until a group that should take it over is Ready"
            }
            Reason::PeerNotReady => {
                "another group serving the country is not Ready; the Ready groups carry its share meanwhile"
            }
            Reason::WaitingForCapacity => {
                "its share rises once its raised HPA floors have available replicas"
            }
            Reason::ShiftPending => "the split changes once the growing groups have their replicas",
            Reason::Draining => "being deleted; keeps its share until the other groups can take it",
            Reason::RoutePending => {
                "the route is written but its controller has not accepted this version yet"
            }
            Reason::RouteNotAccepted => "the route's controller did not accept it",
            Reason::RoutingDisabled => "the operator runs with --routing none",
            Reason::Suspended => {
                "a group serving the country is suspended (spec.suspend), so its route stays as it is"
            }
        }
    }
}

impl Reason {
    /// Whether the reason stays reported when desired and actual agree (both 0): it says why
    /// there is no traffic at all.
    fn explains_no_route(self) -> bool {
        matches!(
            self,
            Reason::WeightsSumToZero
                | Reason::NoReadyGroup
                | Reason::NotReady
                | Reason::Bootstrapping
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Weights applied per country and segment ("" for the unsegmented pool), by group name.
pub type Applied = BTreeMap<String, BTreeMap<String, BTreeMap<String, i32>>>;

/// One weighted backend of a pool: a group's products and batch Services.
#[derive(Clone, Debug, PartialEq)]
pub struct Backend {
    /// Group name.
    pub group: String,
    /// Weight (> 0).
    pub weight: i32,
    /// The group's products Service.
    pub products: ServiceRef,
    /// The group's batch Service.
    pub batch: ServiceRef,
    /// The group's balance factor.
    pub balance_factor: f64,
}

/// The route of one pool of a country.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolRoute {
    /// The segment; None for the unsegmented (weighted) traffic.
    pub segment: Option<String>,
    /// Backends with weight > 0, by group name.
    pub backends: Vec<Backend>,
}

/// Everything routed for one country: segment pools first (by name), the unsegmented pool last.
#[derive(Clone, Debug, PartialEq)]
pub struct CountryRoute {
    /// Country code.
    pub country: String,
    /// Pools that have a route.
    pub pools: Vec<PoolRoute>,
    /// UIDs of the groups listing the country (owner references, so the object goes with the last).
    pub owners: Vec<(String, String)>,
    /// Host names of the groups listing the country, sorted; empty: the operator's `--route-hosts`.
    pub hosts: Vec<String>,
}

impl CountryRoute {
    /// The host names the route object matches: the groups' own, else the operator's.
    pub fn hosts<'a>(&'a self, opts: &'a RouteOptions) -> &'a [String] {
        if self.hosts.is_empty() {
            &opts.hosts
        } else {
            &self.hosts
        }
    }

    /// Name of the route object.
    pub fn object_name(&self) -> String {
        route_name(&self.country)
    }
}

/// `prapi-<country>`.
pub fn route_name(country: &str) -> String {
    format!("{ROUTE_PREFIX}{country}")
}

/// Desired and planned share of one group in one country.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Share {
    /// Country code.
    pub country: String,
    /// The segment the share is of (None: the unsegmented traffic).
    pub segment: Option<String>,
    /// Percent the spec asks for.
    pub desired: i32,
    /// Percent the route to apply gives it.
    pub planned: i32,
    /// Why planned differs from desired, or why there is no route.
    pub reason: Option<Reason>,
}

/// The routing of a namespace.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RoutingPlan {
    /// One entry per country that has a route, by country.
    pub routes: Vec<CountryRoute>,
    /// Countries that are routed now (applied) but should have no route object.
    pub remove: Vec<String>,
    /// Raised HPA floors by group (only groups whose share is about to rise).
    pub floors: BTreeMap<String, Floors>,
    /// Shares per group, by group then country.
    pub shares: BTreeMap<String, Vec<Share>>,
}

/// Computes the routing of a namespace from its groups and what is applied now.
pub fn plan(groups: &[GroupRouting], applied: &Applied) -> RoutingPlan {
    let countries: BTreeSet<String> = groups
        .iter()
        .flat_map(|g| g.countries.iter().cloned())
        .chain(applied.keys().cloned())
        .collect();
    // Over how many countries each group carries traffic now (for the donor estimate).
    let mut carried: BTreeMap<&str, usize> = BTreeMap::new();
    for pools in applied.values() {
        let mut seen = BTreeSet::new();
        for pool in pools.values() {
            for (g, w) in pool {
                if *w > 0 && seen.insert(g.as_str()) {
                    *carried.entry(g.as_str()).or_insert(0) += 1;
                }
            }
        }
    }
    let countries_carried = |g: &str| carried.get(g).copied().unwrap_or(1);
    let frozen = frozen_countries(groups, applied, &countries);

    // A group is ready for a country only once its bootstrap gate opened for it.
    let views: BTreeMap<&str, Vec<GroupRouting>> = countries
        .iter()
        .map(|c| {
            let view = groups
                .iter()
                .map(|g| GroupRouting {
                    ready: g.ready && !g.bootstrapping.contains(c),
                    ..g.clone()
                })
                .collect();
            (c.as_str(), view)
        })
        .collect();

    // Pass 1: pools and their floors (a group's floors add up over its countries).
    let mut pools: Vec<(String, String, PoolInput<'_>)> = Vec::new();
    for country in &countries {
        let here = views.get(country.as_str()).map_or(&[][..], Vec::as_slice);
        let listing: Vec<&GroupRouting> = here
            .iter()
            .filter(|g| g.countries.iter().any(|c| c == country))
            .collect();
        let applied_country = applied.get(country);
        let segments: BTreeSet<&str> = listing
            .iter()
            .map(|g| g.segment.as_str())
            .chain(
                applied_country
                    .into_iter()
                    .flat_map(|p| p.keys().map(String::as_str)),
            )
            .collect();
        for segment in segments {
            let applied_pool = applied_country
                .and_then(|p| p.get(segment))
                .cloned()
                .unwrap_or_default();
            let mut members: Vec<&GroupRouting> = listing
                .iter()
                .copied()
                .filter(|g| g.segment == segment)
                .collect();
            // Groups that still carry this pool's traffic but no longer belong to it drain out.
            let mut leaving = BTreeSet::new();
            for g in here {
                let carries = applied_pool.get(&g.name).is_some_and(|w| *w > 0);
                if carries && !members.iter().any(|m| m.name == g.name) {
                    leaving.insert(g.name.clone());
                    members.push(g);
                }
            }
            if members.is_empty() {
                continue;
            }
            pools.push((
                country.clone(),
                segment.to_string(),
                PoolInput {
                    country: country.clone(),
                    members,
                    leaving,
                    applied: applied_pool,
                },
            ));
        }
    }
    let no_room = |_: &str| true;
    let mut floors: BTreeMap<String, Floors> = BTreeMap::new();
    // A frozen country shifts nothing, so it raises no floor.
    for (_, _, input) in pools.iter().filter(|(c, _, _)| !frozen.contains(c)) {
        let d = decide_pool(input, &no_room, &countries_carried);
        for (g, f) in d.floors {
            let e = floors.entry(g).or_default();
            e.products = e.products.max(f.products);
            e.batch = e.batch.max(f.batch);
        }
    }
    let by_name: BTreeMap<&str, &GroupRouting> =
        groups.iter().map(|g| (g.name.as_str(), g)).collect();
    let has_room = |g: &str| match (floors.get(g), by_name.get(g)) {
        (Some(f), Some(group)) => {
            has_capacity(f.products, group.products) && has_capacity(f.batch, group.batch)
        }
        _ => true,
    };

    // Pass 2: decisions with the capacity gate.
    let mut out = RoutingPlan::default();
    let mut routed: BTreeMap<String, Vec<PoolRoute>> = BTreeMap::new();
    let mut used_floors: BTreeMap<String, Floors> = BTreeMap::new();
    for (country, segment, input) in &pools {
        let decision: PoolDecision = decide_pool(input, &has_room, &countries_carried);
        if frozen.contains(country) {
            // What the spec asks for, next to what the route keeps giving.
            let kept = shift::shares(&input.applied);
            for g in &input.members {
                let desired = decision.desired.get(&g.name).copied().unwrap_or(0);
                let planned = kept.get(&g.name).copied().unwrap_or(0);
                out.shares.entry(g.name.clone()).or_default().push(Share {
                    country: country.clone(),
                    segment: (!segment.is_empty()).then(|| segment.clone()),
                    desired,
                    planned,
                    reason: (planned != desired).then_some(Reason::Suspended),
                });
            }
            continue;
        }
        for g in decision.floors.keys() {
            if let Some(f) = floors.get(g) {
                used_floors.insert(g.clone(), *f);
            }
        }
        let planned = shift::shares(&decision.weights);
        for g in &input.members {
            let desired = decision.desired.get(&g.name).copied().unwrap_or(0);
            let planned_pct = planned.get(&g.name).copied().unwrap_or(0);
            let reason = match decision.reasons.get(&g.name).copied() {
                // Ready but for this country's gate.
                Some(Reason::NotReady)
                    if g.bootstrapping.contains(country)
                        && by_name.get(g.name.as_str()).is_some_and(|o| o.ready) =>
                {
                    Some(Reason::Bootstrapping)
                }
                other => other,
            };
            let reason = match reason {
                // A reason only matters where it explains a difference, or a missing route.
                Some(r) if planned_pct == desired && !r.explains_no_route() => None,
                other => other,
            };
            out.shares.entry(g.name.clone()).or_default().push(Share {
                country: country.clone(),
                segment: (!segment.is_empty()).then(|| segment.clone()),
                desired,
                planned: planned_pct,
                reason,
            });
        }
        if decision.weights.is_empty() {
            continue;
        }
        let backends = decision
            .weights
            .iter()
            .filter_map(|(g, w)| {
                by_name.get(g.as_str()).map(|group| Backend {
                    group: g.clone(),
                    weight: *w,
                    products: group.products_service.clone(),
                    batch: group.batch_service.clone(),
                    balance_factor: group.balance_factor,
                })
            })
            .collect::<Vec<_>>();
        if backends.is_empty() {
            continue;
        }
        routed.entry(country.clone()).or_default().push(PoolRoute {
            segment: (!segment.is_empty()).then(|| segment.clone()),
            backends,
        });
    }
    for (country, mut pool_routes) in routed {
        // Segments (by name) ahead of the unsegmented pool.
        pool_routes.sort_by(|a, b| match (&a.segment, &b.segment) {
            (Some(x), Some(y)) => x.cmp(y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        });
        let owners = groups
            .iter()
            .filter(|g| g.countries.contains(&country))
            .filter_map(|g| g.uid.clone().map(|u| (g.name.clone(), u)))
            .collect();
        let hosts: BTreeSet<String> = groups
            .iter()
            .filter(|g| g.countries.contains(&country))
            .flat_map(|g| g.hosts.iter().cloned())
            .collect();
        out.routes.push(CountryRoute {
            country,
            pools: pool_routes,
            owners,
            hosts: hosts.into_iter().collect(),
        });
    }
    let kept: BTreeSet<&str> = out.routes.iter().map(|r| r.country.as_str()).collect();
    out.remove = applied
        .keys()
        .filter(|c| !kept.contains(c.as_str()) && !frozen.contains(c.as_str()))
        .cloned()
        .collect();
    out.floors = used_floors;
    out
}

/// The countries whose routes stay as applied: those a suspended group lists or carries traffic
/// in, unless a group there is being deleted.
fn frozen_countries(
    groups: &[GroupRouting],
    applied: &Applied,
    countries: &BTreeSet<String>,
) -> BTreeSet<String> {
    countries
        .iter()
        .filter(|country| {
            let carries = |g: &GroupRouting| {
                applied.get(*country).is_some_and(|pools| {
                    pools
                        .values()
                        .any(|p| p.get(&g.name).is_some_and(|w| *w > 0))
                })
            };
            let involved: Vec<&GroupRouting> = groups
                .iter()
                .filter(|g| g.countries.contains(*country) || carries(g))
                .collect();
            involved.iter().any(|g| g.suspended) && !involved.iter().any(|g| g.deleting)
        })
        .cloned()
        .collect()
}

/// A group's share as it is reported in its status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportedShare {
    /// Country code.
    pub country: String,
    /// Percent the spec asks for.
    pub desired: i32,
    /// Percent the applied route gives it; None while the route is not (accepted) in place.
    pub actual: Option<i32>,
    /// Why they differ.
    pub reason: Option<Reason>,
}

/// How a route object's controller took it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acceptance {
    /// No controller reports on it (no status for our parent): written is as good as it gets.
    Unreported,
    /// Accepted for the current generation.
    Accepted,
    /// Reported, but for an older generation.
    Pending,
    /// Rejected, with the controller's message.
    Rejected(String),
}

/// The route objects as read back: applied weights and each country's acceptance.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Live {
    /// Weights per country and segment.
    pub applied: Applied,
    /// Acceptance per country.
    pub acceptance: BTreeMap<String, Acceptance>,
}

/// What a group reports, from its planned shares and the routes read back after applying.
pub fn report(group: &str, plan: &RoutingPlan, live: &Live) -> Vec<ReportedShare> {
    let Some(shares) = plan.shares.get(group) else {
        return Vec::new();
    };
    shares
        .iter()
        .map(|s| {
            let pool = live
                .applied
                .get(&s.country)
                .and_then(|p| p.get(s.segment.as_deref().unwrap_or("")));
            let actual_pct = pool
                .map(shift::shares)
                .map(|p| p.get(group).copied().unwrap_or(0))
                .unwrap_or(0);
            let acceptance = live
                .acceptance
                .get(&s.country)
                .cloned()
                .unwrap_or(Acceptance::Unreported);
            let (actual, reason) = match acceptance {
                Acceptance::Rejected(_) => (None, Some(Reason::RouteNotAccepted)),
                Acceptance::Pending => (None, Some(Reason::RoutePending)),
                Acceptance::Accepted | Acceptance::Unreported => {
                    let reason = if actual_pct == s.desired {
                        s.reason.filter(|r| r.explains_no_route())
                    } else {
                        // The plan's reason, or: the route holds something else than planned.
                        s.reason.or(Some(Reason::RoutePending))
                    };
                    (Some(actual_pct), reason)
                }
            };
            ReportedShare {
                country: s.country.clone(),
                desired: s.desired,
                actual,
                reason,
            }
        })
        .collect()
}

/// The `RoutingReady` condition of a group from what it reports: (status, reason, message).
pub fn routing_condition(
    provider: Provider,
    ready: bool,
    shares: &[ReportedShare],
) -> (bool, &'static str, String) {
    if provider == Provider::None {
        return (
            true,
            Reason::RoutingDisabled.as_str(),
            Reason::RoutingDisabled.explain().into(),
        );
    }
    let describe = |s: &ReportedShare| {
        format!(
            "{}: desired {}%, actual {}{}",
            s.country,
            s.desired,
            s.actual.map_or("none".into(), |a| format!("{a}%")),
            s.reason
                .map(|r| format!(" ({r}: {})", r.explain()))
                .unwrap_or_default()
        )
    };
    for blocking in [
        Reason::WeightsSumToZero,
        Reason::RouteNotAccepted,
        Reason::RoutePending,
    ] {
        let hit: Vec<String> = shares
            .iter()
            .filter(|s| s.reason == Some(blocking))
            .map(describe)
            .collect();
        if !hit.is_empty() {
            return (false, blocking.as_str(), hit.join("; "));
        }
    }
    if !ready {
        return (
            false,
            Reason::NotReady.as_str(),
            "the group gets traffic once it is Ready".into(),
        );
    }
    // A group whose every country waits for its gate is not routed at all yet.
    if !shares.is_empty()
        && shares
            .iter()
            .all(|s| s.reason == Some(Reason::Bootstrapping))
    {
        return (
            false,
            Reason::Bootstrapping.as_str(),
            shares.iter().map(describe).collect::<Vec<_>>().join("; "),
        );
    }
    let differing: Vec<String> = shares
        .iter()
        .filter(|s| s.actual != Some(s.desired))
        .map(describe)
        .collect();
    if differing.is_empty() {
        (
            true,
            "Routed",
            if shares.is_empty() {
                "no country to route".into()
            } else {
                shares.iter().map(describe).collect::<Vec<_>>().join("; ")
            },
        )
    } else {
        (true, "Shifting", differing.join("; "))
    }
}

/// Options of the route renderers.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteOptions {
    /// Gateway API parent: `(namespace, name)` of the Gateway.
    pub gateway: Option<(String, String)>,
    /// Balance factor of groups that set none (`--balance-factor`).
    pub balance_factor: f64,
    /// Host names of routes whose groups set none (`--route-hosts`); empty: any host.
    pub hosts: Vec<String>,
    /// The ingress's token check, added to every rendered route.
    pub auth: RouteAuth,
    /// Skipper's `lifo` queue on every RouteGroup route (`--skipper-lifo*`); None: no queue.
    pub skipper_lifo: Option<SkipperLifo>,
    /// Skipper's `fadeIn` on the products routes (`--skipper-fade-in`).
    pub skipper_fade_in: bool,
}

impl Default for RouteOptions {
    fn default() -> Self {
        Self {
            gateway: None,
            balance_factor: DEFAULT_BALANCE_FACTOR,
            hosts: Vec::new(),
            auth: RouteAuth::default(),
            skipper_lifo: Some(SkipperLifo::default()),
            skipper_fade_in: true,
        }
    }
}

/// Skipper's `lifo(maxConcurrency, maxQueueSize, timeout)` on a route: per Skipper instance and
/// route, at most `max_concurrency` requests go on to the backends, up to `max_queue` more wait
/// and the newest waiter goes first; a waiter is answered 502 after `timeout`, and 503 when the
/// queue is full. The defaults only engage when a route of one Skipper instance has 1000
/// requests in flight, far above normal traffic (docs/load-balancing.md, "At the ingress").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SkipperLifo {
    /// Requests passed on to the backends at once.
    pub max_concurrency: u32,
    /// Requests waiting beyond those.
    pub max_queue: u32,
    /// Longest wait for a slot.
    pub timeout: std::time::Duration,
}

impl Default for SkipperLifo {
    fn default() -> Self {
        Self {
            max_concurrency: 1000,
            max_queue: 1000,
            timeout: std::time::Duration::from_secs(1),
        }
    }
}

/// The authentication hook on rendered routes: the ingress checks each request's token before it
/// reaches a group, so an installation whose API guidelines require OAuth2 gets it without any
/// change to the data plane (docs/operator.md, "Authentication on the routes").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteAuth {
    /// A Skipper filter put first on every RouteGroup route (`--skipper-auth-filter`), e.g.
    /// `oauthTokeninfoAnyScope("uid")` or `jwtValidation("https://issuer.example")`.
    pub skipper_filter: Option<String>,
    /// An implementation-specific HTTPRoute filter put on every rule (`--gateway-auth-filter
    /// GROUP/KIND/NAME`): `{type: ExtensionRef, extensionRef: {group, kind, name}}`, the Gateway
    /// API's way to attach an implementation's own filter object (a token check configured in it).
    pub gateway_extension_ref: Option<ExtensionRef>,
}

/// A Gateway API `LocalObjectReference` to an implementation-specific filter object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtensionRef {
    /// API group of the filter object (empty for the core group).
    pub group: String,
    /// Kind of the filter object.
    pub kind: String,
    /// Name of the filter object, in the route's namespace.
    pub name: String,
}

impl std::str::FromStr for ExtensionRef {
    type Err = String;

    /// Parses `GROUP/KIND/NAME` (`GROUP` may be empty: `/KIND/NAME`).
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [group, kind, name] if !kind.is_empty() && !name.is_empty() => Ok(ExtensionRef {
                group: (*group).to_string(),
                kind: (*kind).to_string(),
                name: (*name).to_string(),
            }),
            _ => Err(format!("expected GROUP/KIND/NAME, got {s:?}")),
        }
    }
}

/// Why a route cannot be rendered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Gateway API needs `--gateway NAMESPACE/NAME`.
    #[error("--routing gateway-api needs --gateway NAMESPACE/NAME")]
    NoGateway,
    /// More than an HTTPRoute can hold.
    #[error("country {country}: {what}")]
    TooLarge {
        /// Country.
        country: String,
        /// Which limit.
        what: String,
    },
}

/// The route object of a country for `provider` (None for [`Provider::None`]).
pub fn render_route(
    provider: Provider,
    namespace: &str,
    route: &CountryRoute,
    opts: &RouteOptions,
) -> Result<Option<Value>, RouteError> {
    match provider {
        Provider::GatewayApi => gateway::http_route(namespace, route, opts).map(Some),
        Provider::Skipper => Ok(Some(skipper::route_group(namespace, route, opts))),
        Provider::None => Ok(None),
    }
}

/// Metadata shared by route objects.
pub(crate) fn route_metadata(namespace: &str, route: &CountryRoute) -> Value {
    let owners: Vec<Value> = route
        .owners
        .iter()
        .map(|(name, uid)| {
            serde_json::json!({
                "apiVersion": "prapi.dev/v1alpha1",
                "kind": "MarketGroup",
                "name": name,
                "uid": uid,
            })
        })
        .collect();
    let mut meta = serde_json::json!({
        "name": route.object_name(),
        "namespace": namespace,
        "labels": {
            "app.kubernetes.io/name": "prapi",
            "app.kubernetes.io/component": "routing",
            "app.kubernetes.io/managed-by": "prapi-operator",
            "app.kubernetes.io/part-of": "prapi",
            LABEL_COUNTRY: route.country,
        },
    });
    if !owners.is_empty() {
        meta["ownerReferences"] = Value::Array(owners);
    }
    meta
}

#[cfg(test)]
mod tests;
