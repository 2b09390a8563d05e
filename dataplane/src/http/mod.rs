//! HTTP plumbing shared by the serving components: connections (limits, timeouts, drain),
//! problem+json errors, overload protection, request headers (country, flow id, conditional and
//! encoding negotiation), the opt-in `X-Served-By` header.

pub mod caching;
pub mod chain;
pub mod connections;
pub mod headers;
pub mod openapi;
pub mod overload;
pub mod problem;
pub mod served_by;
pub mod server;
