//! Client-side load balancing from batch to products pods (docs/load-balancing.md).
//!
//! Placement is Skipper's `consistentHash` ([`ring`]) so a product id lands on the same pod
//! whether it arrives through the ingress or through batch, which keeps pod caches whole.
//! [`balancer`] adds bounded load ([`load`]), fade-in of new pods ([`fadein`]) and power of two
//! choices for keyless requests ([`p2c`]); [`client`] sends the lookups with one retry and
//! optional [`hedge`]-ing; [`discovery`] keeps the pods current. Time comes from a [`crate::clock::Clock`] so tests control it.

pub mod balancer;
pub mod client;
pub mod discovery;
pub mod endpoint;
pub mod fadein;
pub mod hedge;
pub mod load;
pub mod p2c;
pub mod ring;
mod ring_command;
#[cfg(test)]
mod skipper_vectors;

pub use balancer::{Backend, Balancer, BalancerConfig, InFlight};
pub use client::{ClientConfig, ClientStats, LbClient, LbError, Reply};
pub use discovery::{ServiceRef, use_static_endpoints, watch_endpoint_slices};
pub use endpoint::{Endpoint, EndpointError, parse_endpoints};
pub use ring::Ring;
pub use ring_command::ring_command;
