//! Client-side load balancing from batch to products pods (DESIGN §3).
//!
//! Placement is Skipper's `consistentHash` ([`ring`]) so a product id lands on the same pod
//! whether it arrives through the ingress or through batch, which keeps pod caches whole.

pub mod endpoint;
pub mod ring;
mod ring_command;
#[cfg(test)]
mod skipper_vectors;

pub use endpoint::{Endpoint, EndpointError, parse_endpoints};
pub use ring::Ring;
pub use ring_command::ring_command;
